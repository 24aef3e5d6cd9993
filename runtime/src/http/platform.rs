//! Handlers of the platform routes (`/v1/platform/...`): the platform operator's. Each takes an
//! `Operator`, which only a staff token yields; a tenant's caller is refused before any of these
//! runs, and its attempt joins its tenant's audit chain (`middleware::require_permission`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Operator;
use crate::http::error::ApiError;
use crate::http::middleware::RequestId;
use crate::http::objects::JsonBody;
use crate::service;
use crate::state::AppState;

fn svc(request_id: uuid::Uuid) -> impl Fn(service::ServiceError) -> ApiError {
    move |e| ApiError::service(e, request_id)
}

pub async fn list_tenants(
    State(state): State<AppState>,
    _operator: Operator,
) -> Json<serde_json::Value> {
    let data = service::platform::tenants(&state.directory);
    Json(json!({"object": "list", "data": data, "has_more": false}))
}

pub async fn get_tenant(
    State(state): State<AppState>,
    _operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = service::platform::tenant(&state.directory, &id).map_err(svc(request_id))?;
    Ok(Json(t).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Why (kept in the platform's audit chain).
    #[serde(default)]
    reason: String,
}

async fn set_suspended(
    state: &AppState,
    operator: &Operator,
    request_id: uuid::Uuid,
    id: &str,
    suspend: bool,
    reason: &str,
) -> Result<Response, ApiError> {
    let t = service::platform::set_suspended(
        state.control.as_ref(),
        &state.directory,
        operator,
        id,
        suspend,
        request_id,
        reason,
    )
    .await
    .map_err(svc(request_id))?;
    Ok(Json(t).into_response())
}

pub async fn suspend_tenant(
    State(state): State<AppState>,
    operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Reason>,
) -> Result<Response, ApiError> {
    set_suspended(&state, &operator, request_id, &id, true, &b.reason).await
}

pub async fn resume_tenant(
    State(state): State<AppState>,
    operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Reason>,
) -> Result<Response, ApiError> {
    set_suspended(&state, &operator, request_id, &id, false, &b.reason).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

/// The days a usage route covers: `from`..=`to`, this month so far by default.
fn range_of(
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<service::usage::DayRange, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    service::usage::DayRange::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        &crate::domain::utc_today(),
    )
    .map_err(ApiError::BadRequest)
}

pub async fn platform_usage(
    State(state): State<AppState>,
    operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let range = range_of(q)?;
    let (tenants, totals) =
        service::platform::usage(&state.data, &state.directory, &operator, range.clone())
            .await
            .map_err(svc(request_id))?;
    Ok(Json(json!({
        "object": "platform.usage",
        "from": range.from,
        "to": range.to,
        "currency": "USD",
        "unit": "micro_usd",
        "totals": totals,
        "data": tenants,
    }))
    .into_response())
}

pub async fn tenant_usage(
    State(state): State<AppState>,
    operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let range = range_of(q)?;
    let report =
        service::platform::tenant_usage(&state.data, &state.directory, &operator, &id, range)
            .await
            .map_err(svc(request_id))?;
    Ok(Json(json!({
        "object": "usage.report",
        "tenant": id,
        "from": report.range.from,
        "to": report.range.to,
        "group_by": report.group_by,
        "currency": "USD",
        "unit": "micro_usd",
        "totals": report.totals,
        "data": report.rows,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainQuery {
    limit: Option<i64>,
    /// The `seq` of the previous page's last event.
    after: Option<i64>,
}

pub async fn list_platform_audit_events(
    State(state): State<AppState>,
    _operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    q: Result<Query<ChainQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let chain = service::platform::platform_chain(state.control.as_ref(), &state.directory, &id)
        .await
        .map_err(svc(request_id))?;
    let limit = usize::try_from(q.limit.unwrap_or(100).clamp(1, 1000)).unwrap_or(100);
    let after = q.after.unwrap_or(0);
    let page: Vec<&service::platform::Record> = chain
        .iter()
        .filter(|r| r.seq > after)
        .take(limit + 1)
        .collect();
    let has_more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    Ok(Json(json!({
        "object": "list",
        "data": page,
        "has_more": has_more,
        "first_id": page.first().map(|r| r.seq.to_string()),
        "last_id": page.last().map(|r| r.seq.to_string()),
    }))
    .into_response())
}

pub async fn verify_platform_audit_chain(
    State(state): State<AppState>,
    _operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let chain = service::platform::platform_chain(state.control.as_ref(), &state.directory, &id)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(match service::platform::verify_chain(&id, &chain) {
        Ok(head) => json!({"object": "audit.verification", "ok": true, "events": chain.len(), "head": head}),
        Err(b) => json!({"object": "audit.verification", "ok": false, "events": chain.len(), "broken_at": b.seq, "reason": b.reason}),
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileQuery {
    month: String,
    #[serde(default)]
    tolerance_micro_usd: i64,
}

/// `POST /v1/platform/tenants/{tenant_id}/reconciliations?month=YYYY-MM`: the provider's cost
/// export as the body (`Content-Type: text/csv`).
pub async fn start_reconciliation(
    State(state): State<AppState>,
    operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    q: Result<Query<ReconcileQuery>, QueryRejection>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let csv = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
        });
    if !csv {
        return Err(ApiError::BadRequest(
            "send the provider's cost export as the body with `Content-Type: text/csv`".into(),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the cost export is not UTF-8 text".into()))?;
    if text.contains('\0') {
        return Err(ApiError::BadRequest(
            "the cost export contains a NUL byte".into(),
        ));
    }
    let run = service::reconciliation::run(
        state.control.as_ref(),
        &state.data,
        &state.directory,
        &operator,
        &id,
        &q.month,
        q.tolerance_micro_usd,
        text,
        request_id,
    )
    .await
    .map_err(svc(request_id))?;
    Ok((http::StatusCode::CREATED, Json(run)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    tenant: Option<String>,
    limit: Option<i64>,
}

pub async fn list_reconciliation_runs(
    State(state): State<AppState>,
    _operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let runs = service::reconciliation::list(
        state.control.as_ref(),
        &state.directory,
        q.tenant.as_deref().filter(|t| !t.is_empty()),
        q.limit.unwrap_or(20),
    )
    .await
    .map_err(svc(request_id))?;
    Ok(Json(json!({"object": "list", "data": runs, "has_more": false})).into_response())
}

pub async fn get_reconciliation_run(
    State(state): State<AppState>,
    _operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = service::reconciliation::get(state.control.as_ref(), &id)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(run).into_response())
}

pub async fn list_price_versions(
    State(state): State<AppState>,
    _operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let versions = service::platform::prices(state.control.as_ref())
        .await
        .map_err(svc(request_id))?;
    Ok(Json(json!({"object": "list", "data": versions, "has_more": false})).into_response())
}

/// `GET /v1/platform/checks`: what `tenantctl status` last found of each tenant (its drift).
pub async fn list_checks(
    State(state): State<AppState>,
    _operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let checks = service::platform::checks(state.control.as_ref(), &state.directory)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(json!({"object": "list", "data": checks, "has_more": false})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthQuery {
    month: Option<String>,
}

/// `GET /v1/platform/spend?month=YYYY-MM`: `GET /v1/platform/usage` over the month (each tenant's
/// usage by model, and the sum), with each tenant's AWS spend (as `tenantctl cost report` last
/// read it from Cost Explorer).
pub async fn month_spend(
    State(state): State<AppState>,
    operator: Operator,
    Extension(RequestId(request_id)): Extension<RequestId>,
    q: Result<Query<MonthQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let month = q.month.unwrap_or_else(|| {
        crate::domain::utc_today()
            .get(..7)
            .unwrap_or_default()
            .to_owned()
    });
    if month.len() != 7 {
        return Err(ApiError::BadRequest(format!(
            "`month` is `{}`: use YYYY-MM (UTC)",
            crate::domain::printable(&month)
        )));
    }
    let (data, range, totals) = service::platform::month_spend(
        &state.data,
        state.control.as_ref(),
        &state.directory,
        &operator,
        &month,
    )
    .await
    .map_err(svc(request_id))?;
    Ok(Json(json!({
        "object": "platform.spend",
        "month": month,
        "from": range.from,
        "to": range.to,
        "currency": "USD",
        "unit": "micro_usd",
        "totals": totals,
        "data": data,
    }))
    .into_response())
}
