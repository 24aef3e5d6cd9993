//! The one route table, and the thin handlers it names.
//!
//! Every route is declared once in `ROUTES` with the permission it needs; `app()` builds the router from
//! this table, the auth layer reads public routes from it, and the permission layer looks routes up in
//! it. A route with `permission: None` is public. Handlers extract, call one domain function, and map
//! the result; business logic never sees axum types.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http::Method;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{RequestId, Tenant};
use crate::error::ApiError;
use crate::models::ModelRouter;
use crate::openai::{
    AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta,
    ModelEntry, ModelList, Usage,
};
use crate::server::AppState;
use crate::tenancy::TenantTx;

/// One route: method, path, the permission (token scope) it needs, and its handler.
#[derive(Debug)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    /// `None` marks a public route (no token needed). Public routes must not take path parameters.
    pub permission: Option<&'static str>,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// The permission scopes tokens can carry.
pub const PERMISSIONS: &[&str] = &["models:read", "chat:write", "usage:read"];

pub static ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: Method::GET,
        path: "/healthz",
        permission: None,
        handler: || get(healthz),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/models",
        permission: Some("models:read"),
        handler: || get(list_models),
    },
    RouteSpec {
        method: Method::POST,
        path: "/v1/chat/completions",
        permission: Some("chat:write"),
        handler: || post(chat_completions),
    },
    RouteSpec {
        method: Method::GET,
        path: "/v1/usage",
        permission: Some("usage:read"),
        handler: || get(usage),
    },
];

/// Whether `(method, path)` is a public route. Exact match only: public routes take no parameters.
pub fn is_public(method: &Method, path: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.permission.is_none() && r.method == method && r.path == path)
}

/// The table entry for a matched route.
pub fn lookup(method: &Method, matched_path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| {
        r.path == matched_path
            && (r.method == method || (method == Method::HEAD && r.method == Method::GET))
    })
}

async fn healthz() -> &'static str {
    "ok"
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn list_models(tenant: Tenant) -> Json<ModelList> {
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

async fn chat_completions(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = ChatRequest::parse(&body).map_err(ApiError::BadRequest)?;
    let metered =
        crate::chat::complete(&state.models, &state.data, &tenant, request_id, &request).await?;
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
struct UsageQuery {
    limit: Option<i64>,
}

async fn usage(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let tx = TenantTx::begin(&state.data, &tenant)
        .await
        .map_err(|e| ApiError::data(e, Some(request_id)))?;
    let (entries, totals) = crate::ledger::recent(&tx, limit)
        .await
        .map_err(|e| ApiError::internal(e, Some(request_id)))?;
    tx.commit()
        .await
        .map_err(|e| ApiError::internal(e, Some(request_id)))?;
    Ok(Json(json!({
        "object": "list",
        "tenant": tenant.id().as_str(),
        "totals": totals,
        "data": entries,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_known_permission_and_public_routes_take_no_parameters() {
        // Invariant: every route has an entry in one permission table; public routes are listed there.
        for r in ROUTES {
            match r.permission {
                Some(p) => assert!(
                    PERMISSIONS.contains(&p),
                    "{} uses unknown permission {p}",
                    r.path
                ),
                None => assert!(
                    !r.path.contains('{'),
                    "public route {} takes parameters",
                    r.path
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method.clone(), r.path)),
                "duplicate route {}",
                r.path
            );
        }
    }
}
