//! The thin handlers: extract, call one `service` function, map the result to the wire. Business logic
//! never sees axum types, and no handler reaches tenant data or a provider itself.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Tenant;
use crate::http::error::ApiError;
use crate::http::middleware::RequestId;
use crate::http::openai::{
    AssistantMessage, ChatChunk, ChatCompletion, Choice, ChunkChoice, Delta, ModelEntry, ModelList,
    Usage, parse_chat_request,
};
use crate::models::ModelRouter;
use crate::service;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn list_models(tenant: Tenant) -> Json<ModelList> {
    let policy = &tenant.record().policy;
    let created = unix_now();
    let mut data: Vec<ModelEntry> = ModelRouter::permitted_models(policy)
        .into_iter()
        .map(|(model, provider)| ModelEntry {
            id: model.to_string(),
            object: "model",
            created,
            owned_by: provider.to_string(),
        })
        .collect();
    for (alias, target) in &policy.aliases {
        data.push(ModelEntry {
            id: alias.to_string(),
            object: "model",
            created,
            owned_by: format!("alias:{target}"),
        });
    }
    Json(ModelList {
        object: "list",
        data,
    })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_chat_request(&body).map_err(ApiError::BadRequest)?;
    let metered =
        service::chat::complete(&state.models, &state.data, &tenant, request_id, &request)
            .await
            .map_err(|e| ApiError::service(e, request_id))?;
    let id = format!("chatcmpl-{}", metered.ledger_id.simple());
    let created = unix_now();
    let c = &metered.completion;
    let usage = || Usage {
        prompt_tokens: c.input_tokens,
        completion_tokens: c.output_tokens,
        total_tokens: c.input_tokens + c.output_tokens,
    };
    if !request.stream {
        return Ok(Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: metered.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: c.content.clone(),
                },
                finish_reason: c.finish_reason,
            }],
            usage: usage(),
        })
        .into_response());
    }
    // Stream the already-metered completion as server-sent events, a word per chunk.
    let chunk = |delta: Delta, finish: Option<&'static str>, usage: Option<Usage>| {
        let c = ChatChunk {
            id: id.clone(),
            object: "chat.completion.chunk",
            created,
            model: metered.model.clone(),
            choices: if usage.is_some() {
                Vec::new()
            } else {
                vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish,
                }]
            },
            usage,
        };
        format!(
            "data: {}\n\n",
            serde_json::to_string(&c).unwrap_or_default()
        )
    };
    let mut frames = vec![chunk(
        Delta {
            role: Some("assistant"),
            content: Some(String::new()),
        },
        None,
        None,
    )];
    for (i, word) in c.content.split(' ').enumerate() {
        let text = if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        frames.push(chunk(
            Delta {
                role: None,
                content: Some(text),
            },
            None,
            None,
        ));
    }
    frames.push(chunk(Delta::default(), Some(c.finish_reason), None));
    if request.include_usage {
        frames.push(chunk(Delta::default(), None, Some(usage())));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e, Some(request_id)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    limit: Option<i64>,
}

pub async fn usage(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let (entries, totals) = service::usage::recent(&state.data, &tenant, limit)
        .await
        .map_err(|e| ApiError::service(e, request_id))?;
    Ok(Json(json!({
        "object": "list",
        "tenant": tenant.id().as_str(),
        "totals": totals,
        "data": entries,
    })))
}
