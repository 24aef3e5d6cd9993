//! The thin handlers: extract, call one `service` function, map the result to the wire. Business logic
//! never sees axum types, and no handler reaches tenant data or a provider itself. Streams are
//! forwarded item by item as the service yields them (never collected first).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Tenant;
use crate::http::anthropic;
use crate::http::error::ApiError;
use crate::http::middleware::RequestId;
use crate::http::openai::{
    ChatChunk, ChunkChoice, Delta, ModelEntry, ModelList, Usage, WireFunction, WireToolCall,
    completion_json, embedding_json, parse_chat_request, parse_embedding_request,
};
use crate::models::ModelRouter;
use crate::models::chat::StreamEvent;
use crate::service;
use crate::service::chat::{MeteredStream, StreamItem};
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the registry, the usage store and the secret store all answer, else 503; the body
/// names each one's state (never a cause: that stays in the process's log).
pub async fn readiness(State(state): State<AppState>) -> Response {
    let r = service::health::readiness(
        &state.directory,
        &state.data,
        &state.secrets,
        state.auth.deployment_tenant(),
    )
    .await;
    let checks: serde_json::Map<String, serde_json::Value> = r
        .checks
        .iter()
        .map(|(name, state)| ((*name).to_owned(), json!(state)))
        .collect();
    if r.ready() {
        return Json(json!({"ready": true, "checks": checks})).into_response();
    }
    // Not ready: the one error shape, with the checks beside it.
    let failing: Vec<String> = r
        .failing()
        .map(|(name, state)| format!("{name} {state}"))
        .collect();
    let message = format!("not ready: {}", failing.join(", "));
    let mut response = (
        http::StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": {"message": message, "type": "server_error", "code": "not_ready"},
            "ready": false,
            "checks": checks,
        })),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(crate::http::error::ErrorParts { message });
    response
}

/// The OpenAPI document of this API, generated from the route table.
pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::http::openapi::document())
}

/// Who the verified token says the caller is: its tenant, subject, issuer, permissions and when
/// the token expires. Nothing here comes from the request but the token.
pub async fn me(tenant: Tenant) -> Json<serde_json::Value> {
    let record = tenant.record();
    let p = tenant.principal();
    let mut permissions: Vec<&str> = crate::http::routes::PERMISSIONS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| tenant.has_scope(name))
        .collect();
    permissions.sort_unstable();
    Json(json!({
        "object": "identity",
        "tenant": {
            "id": record.id.as_str(),
            "display_name": record.display_name,
            "tier": record.tier.as_str(),
        },
        "subject": p.subject,
        "issuer": p.issuer,
        "permissions": permissions,
        "token_expires_at": p.expires_at,
    }))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A body, or the reason it could not be read (too large: 413).
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

fn model_entries(tenant: &Tenant) -> Vec<ModelEntry> {
    let policy = &tenant.record().policy;
    let created = unix_now();
    let (prices, today) = (&tenant.record().prices, crate::domain::utc_today());
    let mut data: Vec<ModelEntry> = ModelRouter::permitted_models(policy, prices, &today)
        .into_iter()
        .map(|(model, provider)| ModelEntry {
            id: model.to_string(),
            object: "model",
            created,
            owned_by: provider.to_string(),
        })
        .collect();
    for (alias, target) in &policy.aliases {
        if ModelRouter::resolve(policy, prices, &today, alias.as_str()).is_ok() {
            data.push(ModelEntry {
                id: alias.to_string(),
                object: "model",
                created,
                owned_by: format!("alias:{target}"),
            });
        }
    }
    data
}

pub async fn list_models(tenant: Tenant) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: model_entries(&tenant),
    })
}

/// One model (or alias) of the tenant's policy; any other name is 404, the same whether or not the
/// model exists elsewhere.
pub async fn get_model(
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<ModelEntry>, ApiError> {
    model_entries(&tenant)
        .into_iter()
        .find(|m| m.id == id)
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// The tenant's budget after this call's hold, on every model-call response: what is left (integer
/// micro-USD) and, from 80% committed or held, a warning; the same for the caller's subject when
/// the tenant budgets per subject.
pub(crate) fn with_budget(mut response: Response, budgets: &service::Budgets) -> Response {
    let headers = response.headers_mut();
    let left = |b: &service::BudgetStatus| {
        http::HeaderValue::from(
            b.budget
                .0
                .saturating_sub(b.spent.0)
                .saturating_sub(b.held.0)
                .max(0),
        )
    };
    headers.insert(
        "x-tenantctl-budget-remaining-micro-usd",
        left(&budgets.tenant),
    );
    if budgets.tenant.warning() {
        headers.insert(
            "x-tenantctl-budget-warning",
            http::HeaderValue::from_static(
                "80% or more of this month's budget is committed or held",
            ),
        );
    }
    if let Some(subject) = &budgets.subject {
        headers.insert(
            "x-tenantctl-subject-budget-remaining-micro-usd",
            left(subject),
        );
        if subject.warning() {
            headers.insert(
                "x-tenantctl-subject-budget-warning",
                http::HeaderValue::from_static(
                    "80% or more of this subject's monthly budget is committed or held",
                ),
            );
        }
    }
    response
}

fn sse_response(stream: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

/// The call's identity: its request id and the client's `Idempotency-Key`, if sent (400 if it is
/// not a key).
pub(crate) fn call_of(
    request_id: uuid::Uuid,
    headers: &http::HeaderMap,
) -> Result<service::chat::Call, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("`Idempotency-Key` is not text".into()))
                .and_then(|k| service::IdempotencyKey::parse(k).map_err(ApiError::BadRequest))?,
        ),
    };
    Ok(service::chat::Call { request_id, key })
}

/// A plain chat call through the service, for either surface.
async fn complete(
    state: &AppState,
    tenant: &Tenant,
    call: &service::chat::Call,
    request: &crate::models::ChatRequest,
) -> Result<service::chat::Metered, ApiError> {
    let ledger = &state.ledger;
    service::chat::complete(&state.models, &state.data, ledger, tenant, call, request)
        .await
        .map_err(|e| ApiError::service(e, call.request_id))
}

/// A streamed chat call through the service, for either surface.
async fn stream(
    state: &AppState,
    tenant: &Tenant,
    call: &service::chat::Call,
    request: &crate::models::ChatRequest,
) -> Result<MeteredStream, ApiError> {
    let ledger = state.ledger.clone();
    service::chat::stream(&state.models, &state.data, ledger, tenant, call, request)
        .await
        .map_err(|e| ApiError::service(e, call.request_id))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call = call_of(request_id, &headers)?;
    let request = parse_chat_request(&body(raw)?).map_err(ApiError::BadRequest)?;
    let created = unix_now();
    // Responses are named after their ledger row, so a client's id finds the row finance sees.
    if !request.stream {
        let metered = complete(&state, &tenant, &call, &request).await?;
        let id = format!("chatcmpl-{}", metered.ledger_id.simple());
        let response = Json(completion_json(
            &id,
            created,
            &metered.model,
            &metered.completion,
        ))
        .into_response();
        return Ok(with_budget(response, &metered.budget));
    }
    let include_usage = request.include_usage;
    let metered = stream(&state, &tenant, &call, &request).await?;
    let id = format!("chatcmpl-{}", metered.ledger_id.simple());
    let budget = metered.budget;
    Ok(with_budget(
        sse_response(openai_frames(metered, id, created, include_usage)),
        &budget,
    ))
}

fn chunk(
    id: &str,
    created: u64,
    model: &str,
    delta: Delta<'_>,
    finish: Option<&'static str>,
) -> String {
    let c = ChatChunk {
        id,
        object: "chat.completion.chunk",
        created,
        model,
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
        }],
        usage: None,
    };
    format!(
        "data: {}\n\n",
        serde_json::to_string(&c).unwrap_or_default()
    )
}

/// The OpenAI SSE frames of a metered stream: a role chunk, each event as it arrives, the finish
/// chunk and (when asked) a usage chunk after the ledger commit, then `[DONE]`.
fn openai_frames(
    metered: MeteredStream,
    id: String,
    created: u64,
    include_usage: bool,
) -> impl futures_util::Stream<Item = String> + Send + 'static {
    let MeteredStream { model, items, .. } = metered;
    let first = chunk(
        &id,
        created,
        &model,
        Delta {
            role: Some("assistant"),
            content: Some(""),
            tool_calls: None,
        },
        None,
    );
    let rest = items.flat_map(move |item| {
        let frames: Vec<String> = match item {
            StreamItem::Event(StreamEvent::Text(t)) => vec![chunk(
                &id,
                created,
                &model,
                Delta {
                    content: Some(&t),
                    ..Delta::default()
                },
                None,
            )],
            StreamItem::Event(StreamEvent::ToolCall {
                index,
                id: call_id,
                name,
                arguments,
            }) => vec![chunk(
                &id,
                created,
                &model,
                Delta {
                    tool_calls: Some(vec![WireToolCall {
                        index: Some(index),
                        id: call_id.as_deref(),
                        kind: call_id.as_ref().map(|_| "function"),
                        function: WireFunction {
                            name: name.as_deref(),
                            arguments: &arguments,
                        },
                    }]),
                    ..Delta::default()
                },
                None,
            )],
            StreamItem::Event(StreamEvent::Finish(reason)) => {
                vec![chunk(&id, created, &model, Delta::default(), Some(reason.openai()))]
            }
            StreamItem::Event(StreamEvent::Usage(_) | StreamEvent::Reported(_)) => Vec::new(),
            StreamItem::Settled { usage, .. } => {
                let mut out = Vec::new();
                if include_usage {
                    let c = ChatChunk {
                        id: &id,
                        object: "chat.completion.chunk",
                        created,
                        model: &model,
                        choices: Vec::new(),
                        usage: Some(Usage::of(&usage)),
                    };
                    out.push(format!("data: {}\n\n", serde_json::to_string(&c).unwrap_or_default()));
                }
                out.push("data: [DONE]\n\n".to_owned());
                out
            }
            StreamItem::Failed(message) => vec![format!(
                "data: {}\n\n",
                json!({"error": {"message": message, "type": "server_error", "code": "stream_interrupted"}})
            )],
        };
        futures_util::stream::iter(frames)
    });
    futures_util::stream::once(async move { first }).chain(rest)
}

pub async fn embeddings(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let call = call_of(request_id, &headers)?;
    let (request, base64) = parse_embedding_request(&body(raw)?).map_err(ApiError::BadRequest)?;
    let (embeddings, model) = service::chat::embed(
        &state.models,
        &state.data,
        &state.ledger,
        &tenant,
        &call,
        &request,
    )
    .await
    .map_err(|e| ApiError::service(e, request_id))?;
    let data: Vec<serde_json::Value> = embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": embedding_json(v, base64)}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": embeddings.usage.input_tokens, "total_tokens": embeddings.usage.input_tokens},
    })))
}

/// `POST /v1/messages`: the Anthropic Messages surface over whichever provider serves the model.
pub async fn messages(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let call = call_of(request_id, &headers)?;
    let request = anthropic::parse_messages_request(&body(raw)?).map_err(ApiError::BadRequest)?;
    if !request.stream {
        let metered = complete(&state, &tenant, &call, &request).await?;
        let id = format!("msg_{}", metered.ledger_id.simple());
        let response = Json(anthropic::message_json(
            &id,
            &metered.model,
            &metered.completion,
        ))
        .into_response();
        return Ok(with_budget(response, &metered.budget));
    }
    let metered = stream(&state, &tenant, &call, &request).await?;
    let id = format!("msg_{}", metered.ledger_id.simple());
    let budget = metered.budget;
    Ok(with_budget(
        sse_response(anthropic_frames(metered, id)),
        &budget,
    ))
}

/// Anthropic's named events for a metered stream. Content blocks open as text or tool use arrives;
/// `message_delta` (stop reason, usage) and `message_stop` follow the ledger commit.
fn anthropic_frames(
    metered: MeteredStream,
    id: String,
) -> impl futures_util::Stream<Item = String> + Send + 'static {
    let MeteredStream { model, items, .. } = metered;
    let first = anthropic::message_start(&id, &model);
    // (open block index, its kind) and the stop reason held for message_delta.
    let mut block: Option<(u32, bool)> = None;
    let mut next_index: u32 = 0;
    let mut stop: &'static str = "end_turn";
    let rest = items.flat_map(move |item| {
        let mut out = Vec::new();
        let mut open = |out: &mut Vec<String>, tool: Option<(&Option<String>, &Option<String>)>, block: &mut Option<(u32, bool)>| {
            if let Some((i, _)) = block.take() {
                out.push(anthropic::event("content_block_stop", &json!({"type": "content_block_stop", "index": i})));
            }
            let index = next_index;
            next_index += 1;
            let content_block = match tool {
                None => json!({"type": "text", "text": ""}),
                Some((id, name)) => json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            };
            out.push(anthropic::event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
            ));
            *block = Some((index, tool.is_some()));
        };
        match item {
            StreamItem::Event(StreamEvent::Text(t)) => {
                if !matches!(block, Some((_, false))) {
                    open(&mut out, None, &mut block);
                }
                if let Some((i, _)) = block {
                    out.push(anthropic::event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}}),
                    ));
                }
            }
            StreamItem::Event(StreamEvent::ToolCall { id: call_id, name, arguments, .. }) => {
                if call_id.is_some() || !matches!(block, Some((_, true))) {
                    open(&mut out, Some((&call_id, &name)), &mut block);
                }
                if let (Some((i, _)), false) = (block, arguments.is_empty()) {
                    out.push(anthropic::event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                    ));
                }
            }
            StreamItem::Event(StreamEvent::Finish(reason)) => stop = reason.anthropic(),
            StreamItem::Event(StreamEvent::Usage(_) | StreamEvent::Reported(_)) => {}
            StreamItem::Settled { usage, .. } => {
                if block.is_none() {
                    open(&mut out, None, &mut block);
                }
                if let Some((i, _)) = block.take() {
                    out.push(anthropic::event("content_block_stop", &json!({"type": "content_block_stop", "index": i})));
                }
                out.push(anthropic::event(
                    "message_delta",
                    &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}),
                ));
                out.push(anthropic::event("message_stop", &json!({"type": "message_stop"})));
            }
            StreamItem::Failed(message) => {
                out.push(anthropic::event("error", &anthropic::error_json(500, &message)));
            }
        }
        futures_util::stream::iter(out)
    });
    futures_util::stream::once(async move { first }).chain(rest)
}

/// This calendar month's budget (UTC), in integer micro-USD, as `/v1/usage` and its report show it;
/// with `subject` (the caller's own) when the tenant budgets per subject.
fn budget_json(budgets: &service::Budgets, subject: &str) -> serde_json::Value {
    let mut out = budget_status_json(&budgets.tenant);
    if let (Some(b), Some(map)) = (&budgets.subject, out.as_object_mut()) {
        let mut s = budget_status_json(b);
        s["subject"] = json!(subject);
        map.insert("subject".into(), s);
    }
    out
}

/// One budget: its amount, the committed spend, the open holds, what remains, and the warning.
fn budget_status_json(b: &service::BudgetStatus) -> serde_json::Value {
    let left = b
        .budget
        .0
        .saturating_sub(b.spent.0)
        .saturating_sub(b.held.0);
    json!({
        "monthly_budget_micro_usd": b.budget.0,
        "spent_this_month_micro_usd": b.spent.0,
        "held_micro_usd": b.held.0,
        "remaining_micro_usd": left.max(0),
        "warning": b.warning(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    limit: Option<i64>,
    /// The last id of the previous page: the rows after it.
    after: Option<String>,
}

pub async fn usage(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let after = query
        .after
        .as_deref()
        .map(|a| {
            uuid::Uuid::try_parse(a).map_err(|_| {
                ApiError::BadRequest(
                    "`after` must be a ledger row's id (a UUID: the `last_id` of the previous page)"
                        .into(),
                )
            })
        })
        .transpose()?;
    let (page, totals, budget) = service::usage::recent(&state.data, &tenant, limit, after)
        .await
        .map_err(|e| ApiError::service(e, request_id))?;
    let first_id = page.entries.first().map(|e| e.id.to_string());
    let last_id = page.entries.last().map(|e| e.id.to_string());
    let limits = tenant.record().limits;
    // Written out as it is (the rows are not first turned into a JSON tree).
    Ok(Json(UsageList {
        object: "list",
        tenant: tenant.id().as_str(),
        totals,
        budget: budget_json(&budget, &tenant.principal().subject),
        rate_limits: json!({
            "requests_per_minute": limits.requests_per_minute,
            "tokens_per_minute": limits.tokens_per_minute,
        }),
        data: &page.entries,
        has_more: page.has_more,
        first_id,
        last_id,
    })
    .into_response())
}

/// `GET /v1/usage`'s body.
#[derive(serde::Serialize)]
struct UsageList<'a> {
    object: &'static str,
    tenant: &'a str,
    totals: service::usage::Totals,
    /// This calendar month (UTC), in integer micro-USD.
    budget: serde_json::Value,
    /// The limits the tenant runs under.
    rate_limits: serde_json::Value,
    data: &'a [service::usage::Entry],
    /// Cursor pagination, as OpenAI's lists: `after=<last_id>` asks for the next page.
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<service::usage::GroupBy>,
    format: Option<ReportFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
}

/// `GET /v1/usage/report`: the caller's tenant's usage over UTC days `from`..=`to` (`YYYY-MM-DD` or
/// a whole `YYYY-MM`; this month so far by default), by `day`, `model` or `subject`, with totals that
/// are the exact sum of the rows and this month's budget; `format=csv` for a spreadsheet.
pub async fn usage_report(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let by = query.group_by.unwrap_or(service::usage::GroupBy::Day);
    report_response(&state, &tenant, request_id, query, by).await
}

/// A report's query where the route fixes the grouping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<ReportFormat>,
}

impl ViewQuery {
    fn report(self) -> ReportQuery {
        ReportQuery {
            from: self.from,
            to: self.to,
            group_by: None,
            format: self.format,
        }
    }
}

macro_rules! usage_view {
    ($name:ident, $by:expr, $what:literal) => {
        #[doc = $what]
        pub async fn $name(
            State(state): State<AppState>,
            tenant: Tenant,
            Extension(RequestId(request_id)): Extension<RequestId>,
            query: Result<Query<ViewQuery>, axum::extract::rejection::QueryRejection>,
        ) -> Result<Response, ApiError> {
            let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
            report_response(&state, &tenant, request_id, query.report(), $by).await
        }
    };
}

usage_view!(
    usage_daily,
    service::usage::GroupBy::Day,
    "`GET /v1/usage/daily`: the report by UTC day."
);
usage_view!(
    usage_by_model,
    service::usage::GroupBy::Model,
    "`GET /v1/usage/models`: the report by model."
);
usage_view!(
    usage_by_subject,
    service::usage::GroupBy::Subject,
    "`GET /v1/usage/subjects`: the report by subject (the token's `sub`)."
);

async fn report_response(
    state: &AppState,
    tenant: &Tenant,
    request_id: uuid::Uuid,
    query: ReportQuery,
    by: service::usage::GroupBy,
) -> Result<Response, ApiError> {
    let today = crate::domain::utc_today();
    let range = service::usage::DayRange::parse(query.from.as_deref(), query.to.as_deref(), &today)
        .map_err(ApiError::BadRequest)?;
    let (report, budget) = service::usage::report(&state.data, tenant, range, by)
        .await
        .map_err(|e| ApiError::service(e, request_id))?;
    if query.format == Some(ReportFormat::Csv) {
        let name = format!(
            "usage-{}-{}-{}-by-{}.csv",
            tenant.id().as_str(),
            report.range.from,
            report.range.to,
            match by {
                service::usage::GroupBy::Day => "day",
                service::usage::GroupBy::Model => "model",
                service::usage::GroupBy::Subject => "subject",
            }
        );
        return Ok((
            [
                (
                    http::header::CONTENT_TYPE,
                    "text/csv; charset=utf-8".to_owned(),
                ),
                (
                    http::header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            crate::http::csv::report(&report),
        )
            .into_response());
    }
    Ok(Json(json!({
        "object": "usage.report",
        "tenant": tenant.id().as_str(),
        "cost_center": tenant.record().tags.get("cost-center"),
        "from": report.range.from,
        "to": report.range.to,
        "group_by": report.group_by,
        "currency": "USD",
        "unit": "micro_usd",
        "totals": report.totals,
        "budget": budget_json(&budget, &tenant.principal().subject),
        "data": report.rows,
    }))
    .into_response())
}

/// `GET /v1/usage/summary`: this month so far (UTC): totals, the models that made them, the
/// budget and the rate limits.
pub async fn usage_summary(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let today = crate::domain::utc_today();
    let range =
        service::usage::DayRange::parse(None, None, &today).map_err(ApiError::BadRequest)?;
    let (report, budget) =
        service::usage::report(&state.data, &tenant, range, service::usage::GroupBy::Model)
            .await
            .map_err(|e| ApiError::service(e, request_id))?;
    let limits = tenant.record().limits;
    Ok(Json(json!({
        "object": "usage.summary",
        "tenant": tenant.id().as_str(),
        "from": report.range.from,
        "to": report.range.to,
        "currency": "USD",
        "unit": "micro_usd",
        "totals": report.totals,
        "models": report.rows,
        "budget": budget_json(&budget, &tenant.principal().subject),
        "rate_limits": {
            "requests_per_minute": limits.requests_per_minute,
            "tokens_per_minute": limits.tokens_per_minute,
        },
    }))
    .into_response())
}

/// `GET /v1/me/usage`: the caller's own usage this month so far (UTC), by model: only its own
/// subject's rows, and its own budget when the tenant budgets per subject (never the tenant's).
pub async fn me_usage(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let today = crate::domain::utc_today();
    let range =
        service::usage::DayRange::parse(None, None, &today).map_err(ApiError::BadRequest)?;
    let (report, budget) = service::usage::own(&state.data, &tenant, range)
        .await
        .map_err(|e| ApiError::service(e, request_id))?;
    let subject = &tenant.principal().subject;
    Ok(Json(json!({
        "object": "usage.own",
        "tenant": tenant.id().as_str(),
        "subject": subject,
        "from": report.range.from,
        "to": report.range.to,
        "currency": "USD",
        "unit": "micro_usd",
        "totals": report.totals,
        "models": report.rows,
        "budget": budget.as_ref().map(budget_status_json),
    }))
    .into_response())
}

/// `GET /v1/budget`: this month's budget, committed spend and open holds (and the caller's
/// subject's, when the tenant budgets per subject).
pub async fn budget(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let budgets = service::usage::budgets(&state.data, &tenant)
        .await
        .map_err(|e| ApiError::service(e, request_id))?;
    let mut out = budget_json(&budgets, &tenant.principal().subject);
    out["object"] = json!("budget");
    out["month"] = json!(crate::domain::utc_today().get(..7).unwrap_or_default());
    Ok(Json(out))
}

fn limits_json(l: &crate::registry::TenantLimits) -> serde_json::Value {
    json!({
        "monthly_budget_micro_usd": l.monthly_budget.0,
        "per_subject_monthly_budget_micro_usd": l.subject_monthly_budget.map(|b| b.0),
        "requests_per_minute": l.requests_per_minute,
        "tokens_per_minute": l.tokens_per_minute,
    })
}

/// `GET /v1/limits`: what the tenant runs under (the registered limits, lowered by its own admins'
/// narrowing), what the platform registered, and the narrowing.
pub async fn limits(State(state): State<AppState>, tenant: Tenant) -> Json<serde_json::Value> {
    let (_, registered, narrowing) = service::narrowing::registered(&tenant);
    let mut out = limits_json(&tenant.record().limits);
    out["object"] = json!("limits");
    out["max_in_flight"] = json!(state.data.max_in_flight_per_tenant());
    out["registered"] = limits_json(&registered);
    out["narrowing"] = json!({
        "monthly_budget_micro_usd": narrowing.monthly_budget_micro_usd,
        "requests_per_minute": narrowing.requests_per_minute,
        "tokens_per_minute": narrowing.tokens_per_minute,
    });
    Json(out)
}

/// `GET /v1/policy`: the tenant's model policy as it is enforced (the registered policy without
/// the models its admins disabled), what the platform registered, and the disabled models.
pub async fn policy(tenant: Tenant) -> Json<serde_json::Value> {
    let (registered, _, narrowing) = service::narrowing::registered(&tenant);
    Json(json!({
        "object": "model_policy",
        "tenant": tenant.id().as_str(),
        "policy": tenant.record().policy,
        "registered": registered,
        "disabled_models": narrowing.disabled_models,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NarrowPolicy {
    /// Models of the registered policy this tenant does not use (replaces the list).
    disabled_models: Vec<String>,
}

/// `PUT /v1/policy`: disables models of the registered policy (never adds one).
pub async fn narrow_policy(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    crate::http::objects::JsonBody(b): crate::http::objects::JsonBody<NarrowPolicy>,
) -> Result<Response, ApiError> {
    service::narrowing::apply(
        state.control.as_ref(),
        &state.directory,
        &state.data,
        &tenant,
        request_id,
        service::narrowing::Change::Models(b.disabled_models),
    )
    .await
    .map_err(|e| ApiError::service(e, request_id))?;
    let tenant = state.directory.get(tenant.id()).map(|r| r.policy.clone());
    Ok(Json(json!({"object": "model_policy", "policy": tenant})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NarrowLimits {
    monthly_budget_micro_usd: Option<i64>,
    requests_per_minute: Option<u32>,
    tokens_per_minute: Option<u64>,
}

/// `PUT /v1/limits`: lowers the budget and rate limits (a field left out, or null, lowers nothing).
pub async fn narrow_limits(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    crate::http::objects::JsonBody(b): crate::http::objects::JsonBody<NarrowLimits>,
) -> Result<Response, ApiError> {
    service::narrowing::apply(
        state.control.as_ref(),
        &state.directory,
        &state.data,
        &tenant,
        request_id,
        service::narrowing::Change::Limits {
            monthly_budget_micro_usd: b.monthly_budget_micro_usd,
            requests_per_minute: b.requests_per_minute,
            tokens_per_minute: b.tokens_per_minute,
        },
    )
    .await
    .map_err(|e| ApiError::service(e, request_id))?;
    let limits = state
        .directory
        .get(tenant.id())
        .map(|r| limits_json(&r.limits));
    Ok(Json(json!({"object": "limits", "limits": limits})).into_response())
}

/// Any path no route has: 404 in the surface's error shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
