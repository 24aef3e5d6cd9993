//! The HTTP layers around every route: a request id, authentication before routing (deny by
//! default, public routes from the one table), the per-route permission check, and the `Tenant`
//! extractor, which rejects when the auth layer stored no tenant, so a route that escaped the layer
//! still fails closed. This module decides nothing itself: it asks `auth` and the route table.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::auth::jwt::DenyReason;
use crate::auth::{Caller, Credentials, Denial, Operator, Tenant, unix_now};
use crate::http::anthropic;
use crate::http::error::{ApiError, ErrorParts};
use crate::state::AppState;

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Operator>()
            .cloned()
            .ok_or(ApiError::Forbidden("insufficient_scope"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Tenant>()
            .cloned()
            .ok_or(ApiError::Unauthenticated(DenyReason::MissingToken))
    }
}

/// The request id of this request (set by `assign_request_id`).
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub uuid::Uuid);

/// API Gateway's JWT-authorizer claims, when the request came through Lambda.
fn gateway_claims(req: &Request) -> Option<HashMap<String, String>> {
    match req
        .extensions()
        .get::<lambda_http::request::RequestContext>()?
    {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => ctx
            .authorizer
            .as_ref()?
            .jwt
            .as_ref()
            .map(|j| j.claims.clone()),
        _ => None,
    }
}

/// Middleware: authenticate every non-public request before routing.
pub async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if crate::http::routes::is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let gateway = gateway_claims(&req);
    let outcome = state
        .auth
        .authenticate_caller(
            Credentials {
                headers: req.headers(),
                query: req.uri().query(),
                gateway_claims: gateway.as_ref(),
            },
            &state.directory,
            unix_now(),
        )
        .await;
    match outcome {
        Ok(Caller::Tenant(tenant)) => {
            req.extensions_mut().insert(tenant.clone());
            let mut response = next.run(req).await;
            // Who the request acted as, for the access log (an `Arc` clone; never serialized).
            response.extensions_mut().insert(tenant);
            response
        }
        Ok(Caller::Operator(operator)) => {
            req.extensions_mut().insert(operator.clone());
            let mut response = next.run(req).await;
            response.extensions_mut().insert(operator);
            response
        }
        Err(Denial { reason, issuer }) => {
            state.auth.count_denial(reason);
            let request_id = req.extensions().get::<RequestId>().map(|r| r.0);
            tracing::info!(
                reason = reason.code(),
                route = %req.uri().path(),
                issuer = issuer.as_deref().unwrap_or("-"),
                request_id = ?request_id,
                "request denied"
            );
            ApiError::Unauthenticated(reason).into_response()
        }
    }
}

/// Route middleware: the route's permission from `routes::ROUTES` must be among the caller's
/// permissions. A route without an entry is refused.
pub async fn require_permission(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let Some(matched) = matched else {
        return ApiError::Forbidden("route_not_permitted").into_response();
    };
    let Some(spec) = crate::http::routes::lookup(&method, matched.as_str()) else {
        // A path of the table with a method it does not take: 405 naming the methods it does.
        let allowed = crate::http::routes::methods_of(matched.as_str());
        if allowed.is_empty() {
            return ApiError::Forbidden("route_not_permitted").into_response();
        }
        let mut response = ApiError::MethodNotAllowed.into_response();
        if let Ok(v) = http::HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(http::header::ALLOW, v);
        }
        return response;
    };
    let Some(permission) = spec.permission else {
        state.auth.metrics.admitted.fetch_add(1, Ordering::Relaxed);
        return next.run(req).await;
    };
    // A platform route admits an operator holding its permission, and nobody else; an operator
    // reaches no tenant route (it has no tenant).
    if let Some(operator) = req.extensions().get::<Operator>() {
        if permission.starts_with(crate::auth::PLATFORM_PREFIX) && operator.has_scope(permission) {
            state.auth.metrics.admitted.fetch_add(1, Ordering::Relaxed);
            return next.run(req).await;
        }
        state.auth.count_denial(DenyReason::InsufficientScope);
        return ApiError::Forbidden("insufficient_scope").into_response();
    }
    let Some(tenant) = req.extensions().get::<Tenant>().cloned() else {
        state.auth.count_denial(DenyReason::InsufficientScope);
        return ApiError::Forbidden("insufficient_scope").into_response();
    };
    let platform_route = permission.starts_with(crate::auth::PLATFORM_PREFIX);
    if !platform_route && tenant.has_scope(permission) {
        state.auth.metrics.admitted.fetch_add(1, Ordering::Relaxed);
        return next.run(req).await;
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map_or_else(uuid::Uuid::new_v4, |r| r.0);
    if platform_route {
        // A tenant's caller at a platform route: refused, and the attempt joins its tenant's chain
        // (security case 30). No member role can grant a platform permission.
        state.auth.count_denial(DenyReason::InsufficientScope);
        let target = req.uri().path().to_owned();
        if let Err(e) = crate::service::audit_trail::denied(
            &state.data,
            &tenant,
            spec.operation_id,
            &target,
            request_id,
            "a tenant's caller at a platform route",
        )
        .await
        {
            tracing::error!(request_id = %request_id, error = %e, "a denied attempt could not be audited");
        }
        return ApiError::Forbidden("insufficient_scope").into_response();
    }
    // Not in the token: the roles the tenant's admins granted this subject may hold it. Read only
    // when the token falls short, so a token that carries its permissions costs no statement.
    match crate::service::members::granted_permissions(&state.data, &tenant).await {
        Ok(granted) if granted.contains(&permission) => {
            let mut req = req;
            req.extensions_mut().insert(tenant.with_granted(&granted));
            state.auth.metrics.admitted.fetch_add(1, Ordering::Relaxed);
            return next.run(req).await;
        }
        Ok(_) => {}
        Err(e) => return ApiError::service(e, request_id).into_response(),
    }
    state.auth.count_denial(DenyReason::InsufficientScope);
    if crate::http::routes::PRIVILEGED.contains(&permission) {
        // A refused attempt at a privileged action is an event of the tenant's chain (case 30);
        // if it cannot be written, the refusal still stands and the cause is logged.
        let target = req.uri().path().to_owned();
        let reason = format!("the caller holds no `{permission}`");
        if let Err(e) = crate::service::audit_trail::denied(
            &state.data,
            &tenant,
            spec.operation_id,
            &target,
            request_id,
            &reason,
        )
        .await
        {
            tracing::error!(request_id = %request_id, error = %e, "a denied attempt could not be audited");
        }
    }
    ApiError::Forbidden("insufficient_scope").into_response()
}

/// A client's `x-request-id`, when it is a UUID in its hyphenated form (anything else is ignored
/// and a new id assigned: the id reaches logs and the ledger, so only a UUID is taken).
fn incoming_request_id(req: &Request) -> Option<uuid::Uuid> {
    let text = req.headers().get("x-request-id")?.to_str().ok()?;
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text).ok()
}

/// Middleware: give every request an id (the client's, when well formed), echoed in
/// `x-request-id` on every response.
pub async fn assign_request_id(mut req: Request, next: Next) -> Response {
    let id = incoming_request_id(&req).unwrap_or_else(uuid::Uuid::new_v4);
    req.extensions_mut().insert(RequestId(id));
    let mut response = next.run(req).await;
    if let Ok(value) = http::HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Middleware: a URI carrying a NUL byte (`%00`, in its path or query) is refused with 400 before
/// anything reads it: no stored text may hold one (PostgreSQL refuses it), and no name means one.
pub async fn refuse_nul(req: Request, next: Next) -> Response {
    let has_nul = req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().as_bytes().windows(3).any(|w| w == b"%00"));
    if has_nul {
        return ApiError::BadRequest(
            "the request's path or query contains a NUL byte (`%00`); remove it".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// Middleware: every error response leaves in its surface's error shape, whoever produced it (a
/// handler, the auth layer, axum's own rejections): Anthropic's on `/v1/messages`, OpenAI's
/// (`{"error": {"message", "type", "code"}}`) everywhere else, so SDKs raise their typed exceptions.
pub async fn shape_errors(req: Request, next: Next) -> Response {
    // The console's pages answer people: their errors are pages, not the API's JSON.
    if crate::http::routes::is_console(req.uri().path()) {
        return next.run(req).await;
    }
    let anthropic_surface = req.uri().path() == "/v1/messages";
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0);
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let parts = response.extensions().get::<ErrorParts>().cloned();
    let response = match (parts, anthropic_surface) {
        // Already in OpenAI's shape.
        (Some(_), false) => response,
        (Some(parts), true) => reshape(
            response,
            &anthropic::error_json(status.as_u16(), &parts.message),
        ),
        (None, surface) => {
            // Not one of ours (axum's own 404/405/413...): say what the status means.
            let message = status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase();
            let body = if surface {
                anthropic::error_json(status.as_u16(), &message)
            } else {
                serde_json::json!({"error": {"message": message, "type": if status.is_server_error() { "server_error" } else { "invalid_request_error" }, "code": status.as_u16().to_string()}})
            };
            reshape(response, &body)
        }
    };
    with_request_id(response, request_id).await
}

/// The largest error body given its request id (error bodies are small; a larger one is left as
/// it is).
const ERROR_BODY_MAX: usize = 64 * 1024;

/// An error body with the request's id in it: inside `error` (OpenAI's shape), or beside it
/// (Anthropic's, which carries `request_id` at the top), so every error names its request.
async fn with_request_id(response: Response, request_id: Option<uuid::Uuid>) -> Response {
    let Some(id) = request_id else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, ERROR_BODY_MAX).await {
        Ok(b) => b,
        Err(_) => {
            return Response::from_parts(parts, axum::body::Body::from("internal error"));
        }
    };
    let mut json: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    let id = serde_json::Value::String(id.to_string());
    if json.get("type").and_then(|t| t.as_str()) == Some("error") {
        json["request_id"] = id;
    } else if let Some(error) = json.get_mut("error").and_then(|e| e.as_object_mut()) {
        error.insert("request_id".into(), id);
    }
    let mut parts = parts;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(json.to_string()))
}

/// What a status says happened, for the access log.
fn outcome(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        401 | 403 => "denied",
        402 | 429 => "refused",
        400..=499 => "invalid",
        _ => "error",
    }
}

/// Middleware: one structured line per request (target `access`): the operation id from the route
/// table (never the raw path, which may carry ids), the tenant and subject the token named, the
/// outcome, status, latency and request id. No token, no body, no query.
pub async fn access_log(req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let operation = crate::http::routes::operation_for(req.method(), req.uri().path())
        .map_or("unknown", |r| r.operation_id);
    let method = static_method(req.method());
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0);
    // The request's root span: a child of the caller's `traceparent`; the tenant is recorded on it
    // once the token is verified.
    let span = tracing::info_span!(
        "request",
        otel.name = operation,
        otel.kind = "server",
        http.request.method = method,
        http.route = operation,
        http.response.status_code = tracing::field::Empty,
        tenant.id = tracing::field::Empty,
        tenant.tier = tracing::field::Empty,
        request.id = %request_id.map(|r| r.to_string()).unwrap_or_default(),
    );
    crate::telemetry::set_parent(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    // The auth layer leaves the verified tenant on the response.
    let who = response.extensions().get::<Tenant>();
    let operator = response.extensions().get::<Operator>();
    let (tenant, subject) = match (who, operator) {
        (Some(t), _) => (t.id().as_str(), t.principal().subject.as_str()),
        (None, Some(o)) => ("(platform)", o.principal().subject.as_str()),
        (None, None) => ("-", "-"),
    };
    let tier = match (who, operator) {
        (Some(t), _) => t.record().tier.as_str(),
        (None, Some(_)) => "platform",
        (None, None) => "none",
    };
    span.record("http.response.status_code", status.as_u16());
    if tier != "none" {
        span.record("tenant.id", tenant);
        span.record("tenant.tier", tier);
    }
    crate::telemetry::METRICS
        .http_request_duration
        .get_or_create(&crate::telemetry::HttpLabels {
            route: operation,
            method,
            tier,
            status: status_class(status),
        })
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        target: "access",
        operation,
        tenant = %crate::domain::printable(tenant),
        subject = %crate::domain::printable(subject),
        outcome = outcome(status),
        status = status.as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        request_id = %request_id.map(|r| r.to_string()).unwrap_or_default(),
        "request"
    );
    response
}

/// The method as a fixed word (a label value; anything unusual is `other`).
fn static_method(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(s: http::StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn reshape(response: Response, body: &serde_json::Value) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// Middleware: a request whose declared body is over the limit is answered 413 only after what the
/// client sends has been read and discarded (up to four times the limit, for at most five seconds),
/// so the client hears the 413 instead of finding the connection reset mid-upload.
pub async fn drain_oversized(req: Request, next: Next) -> Response {
    use futures_util::StreamExt as _;
    let limit = crate::http::MAX_BODY_BYTES as u64;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|n| n <= limit) {
        return next.run(req).await;
    }
    let mut body = req.into_body().into_data_stream();
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len() as u64;
            if seen > 4 * limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    ApiError::PayloadTooLarge.into_response()
}
