//! The runtime's one error type at the HTTP boundary: each variant maps, in one match, to a status, a
//! stable error code and a log level.
//!
//! A 5xx body says "internal error" plus the request id; the cause goes to the log only. Messages never
//! contain tokens, secrets, prompts or another tenant's values.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::auth::jwt::DenyReason;
use crate::models::providers::ProviderError;
use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid token. The body carries only the stable reason code.
    #[error("unauthenticated: {0}")]
    Unauthenticated(DenyReason),
    /// Authenticated, not allowed (the code says which rule).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("model `{0}` is not permitted for this tenant")]
    ModelNotPermitted(String),
    /// The request's `Idempotency-Key` was used by another call (a retry): refused, not served again.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// Authenticated and permitted, and still refused by a rule the message names.
    #[error("{0}")]
    Refused(String),
    /// The model has no price for the tenant: refused, never billed at zero.
    #[error("{0}")]
    ModelUnpriced(String),
    #[error("{0}")]
    BadRequest(String),
    /// The tenant has too much in flight (fair share); the client should retry after a second.
    #[error("too many requests: {0}")]
    TooManyRequests(&'static str),
    /// The tenant's rate limit is used up (`code` says which); retry after the given seconds.
    #[error("{message}")]
    RateLimited {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// The call's worst case does not fit in the tenant's remaining monthly budget.
    #[error("{0}")]
    BudgetExceeded(String),
    /// Temporarily unable (the code says why); the client should retry after a few seconds.
    #[error("temporarily unavailable: {0}")]
    Unavailable(&'static str),
    /// No route at this path.
    #[error("not found")]
    NotFound,
    /// No such object in the caller's tenant (the message names what was asked for).
    #[error("{0}")]
    ObjectNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    /// The model provider failed (after retries and fallbacks); the message is scrubbed.
    #[error("{0}")]
    Provider(ProviderError),
    #[error("internal error: {cause}")]
    Internal {
        cause: String,
        request_id: Option<uuid::Uuid>,
    },
}

impl ApiError {
    /// A business action's failure, in the HTTP layer's terms.
    pub fn service(error: ServiceError, request_id: uuid::Uuid) -> Self {
        match error {
            ServiceError::ReadOnly => ApiError::Unavailable("tenant_read_only"),
            ServiceError::Busy(_) => ApiError::TooManyRequests("tenant_busy"),
            ServiceError::ModelNotPermitted(m) => ApiError::ModelNotPermitted(m),
            ServiceError::ModelUnpriced(m) => ApiError::ModelUnpriced(m),
            ServiceError::IdempotencyConflict(holder) => ApiError::Conflict(
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was used by request {holder} in the last 24 hours, so this \
                 call was not made again (and not charged); send a new key for a new call"
                ),
            ),
            ServiceError::BadRequest(m) => ApiError::BadRequest(m),
            ServiceError::Provider(e) => {
                tracing::warn!(request_id = %request_id, error = %e, "provider call failed");
                ApiError::Provider(e)
            }
            ServiceError::Refused(refusal) => refused(&refusal),
            ServiceError::NotFound(m) => ApiError::ObjectNotFound(m),
            ServiceError::Conflict(m) => ApiError::Conflict("conflict", m),
            ServiceError::Forbidden(m) => ApiError::Refused(m),
            ServiceError::Internal(cause) => ApiError::internal(cause, Some(request_id)),
        }
    }

    pub fn internal(cause: impl std::fmt::Display, request_id: Option<uuid::Uuid>) -> Self {
        ApiError::Internal {
            cause: cause.to_string(),
            request_id,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code, message) = match &self {
            ApiError::Unauthenticated(DenyReason::KeysUnavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "authentication_error",
                DenyReason::KeysUnavailable.code().to_owned(),
                "the identity provider's keys are unavailable; retry later".to_owned(),
            ),
            ApiError::Unauthenticated(DenyReason::RegistryUnavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                DenyReason::RegistryUnavailable.code().to_owned(),
                "the tenant registry could not be read recently; retry later".to_owned(),
            ),
            ApiError::Unauthenticated(DenyReason::TenantSuspended) => (
                StatusCode::FORBIDDEN,
                "permission_error",
                DenyReason::TenantSuspended.code().to_owned(),
                "this tenant is suspended; its platform operator can resume it (`tenantctl resume`)"
                    .to_owned(),
            ),
            ApiError::Unauthenticated(reason) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                reason.code().to_owned(),
                "invalid or missing credentials".to_owned(),
            ),
            ApiError::Forbidden(code) => (
                StatusCode::FORBIDDEN,
                "permission_error",
                (*code).to_owned(),
                "not permitted".to_owned(),
            ),
            ApiError::ModelNotPermitted(_) => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "model_not_permitted".to_owned(),
                self.to_string(),
            ),
            ApiError::Conflict(code, msg) => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                (*code).to_owned(),
                msg.clone(),
            ),
            ApiError::Refused(msg) => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "forbidden".to_owned(),
                msg.clone(),
            ),
            ApiError::ModelUnpriced(msg) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "model_not_priced".to_owned(),
                msg.clone(),
            ),
            ApiError::BadRequest(msg) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request".to_owned(),
                msg.clone(),
            ),
            ApiError::TooManyRequests(code) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                (*code).to_owned(),
                "too many requests in flight for this tenant; retry shortly".to_owned(),
            ),
            ApiError::RateLimited { code, message, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                (*code).to_owned(),
                message.clone(),
            ),
            ApiError::BudgetExceeded(message) => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "budget_exceeded".to_owned(),
                message.clone(),
            ),
            ApiError::Unavailable(code) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                (*code).to_owned(),
                "temporarily unavailable; retry shortly".to_owned(),
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found_error",
                "not_found".to_owned(),
                "no such route".to_owned(),
            ),
            ApiError::ObjectNotFound(message) => (
                StatusCode::NOT_FOUND,
                "not_found_error",
                "not_found".to_owned(),
                message.clone(),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed".to_owned(),
                "method not allowed on this route".to_owned(),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large".to_owned(),
                "request body too large".to_owned(),
            ),
            ApiError::Provider(e) => provider_parts(e),
            ApiError::Internal { cause, request_id } => {
                tracing::error!(request_id = ?request_id, cause = %cause, "internal error");
                let id = request_id.map(|r| r.to_string()).unwrap_or_default();
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error".to_owned(),
                    format!("internal error (request id {id})"),
                )
            }
        };
        let mut response = (
            status,
            Json(json!({"error": {"message": message, "type": kind, "code": code}})),
        )
            .into_response();
        response.extensions_mut().insert(ErrorParts {
            message: message.clone(),
        });
        if let ApiError::Provider(ProviderError::RateLimited {
            retry_after: Some(after),
        }) = &self
            && let Ok(v) = http::HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(http::header::RETRY_AFTER, v);
            return response;
        }
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = &self
        {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(*retry_after_secs),
            );
            return response;
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A refusal by the tenant's limits, with what was used up and how to get past it.
fn refused(refusal: &crate::service::Refusal) -> ApiError {
    use crate::service::Refusal;
    let secs = |ms: &u64| ms.div_ceil(1000).max(1);
    match refusal {
        Refusal::Requests { retry_after_ms } => ApiError::RateLimited {
            code: "rate_limit_requests",
            message: format!(
                "this tenant's requests per minute are used up; retry in {} s (the limit is `rate_limits.requests_per_minute` in the tenant's manifest)",
                secs(retry_after_ms)
            ),
            retry_after_secs: secs(retry_after_ms),
        },
        Refusal::Tokens { retry_after_ms } => ApiError::RateLimited {
            code: "rate_limit_tokens",
            message: format!(
                "this tenant's model tokens per minute are used up; retry in {} s (the limit is `rate_limits.tokens_per_minute` in the tenant's manifest)",
                secs(retry_after_ms)
            ),
            retry_after_secs: secs(retry_after_ms),
        },
        Refusal::Budget { status, worst_case } => ApiError::BudgetExceeded(format!(
            "this call could cost up to {worst_case}, more than is left of the tenant's monthly budget ({} committed and {} held by calls in flight, of {}); lower max_tokens, or raise `budget.monthly_usd` in the tenant's manifest",
            status.spent, status.held, status.budget
        )),
        Refusal::SubjectBudget {
            subject,
            status,
            worst_case,
        } => ApiError::BudgetExceeded(format!(
            "this call could cost up to {worst_case}, more than is left of the monthly budget of subject `{}` ({} committed and {} held by its calls in flight, of {}); lower max_tokens, or raise `budget.per_subject_monthly_usd` in the tenant's manifest",
            crate::domain::printable(subject),
            status.spent,
            status.held,
            status.budget
        )),
    }
}

/// What an error response said, kept on the response so the outer layer can re-render it in the
/// surface's own shape (Anthropic's on `/v1/messages`).
#[derive(Debug, Clone)]
pub struct ErrorParts {
    pub message: String,
}

/// A provider failure as (status, type, code, message). Provider text is already scrubbed.
fn provider_parts(e: &ProviderError) -> (StatusCode, &'static str, String, String) {
    match e {
        ProviderError::Unauthorized { .. } => (
            StatusCode::BAD_GATEWAY,
            "server_error",
            "provider_auth_failed".into(),
            "the model provider refused this tenant's key; an operator must rotate it".into(),
        ),
        ProviderError::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "provider_rate_limited".into(),
            "the model provider is rate limiting this tenant; retry later".into(),
        ),
        ProviderError::Rejected { status, message } => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "provider_rejected_request".into(),
            format!("the model provider rejected the request (HTTP {status}): {message}"),
        ),
        ProviderError::Unsupported(what) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "unsupported".into(),
            what.to_string(),
        ),
        ProviderError::KeyUnavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "provider_key_unavailable".into(),
            "this tenant's provider key cannot be read right now; retry later".into(),
        ),
        ProviderError::Unavailable(_) | ProviderError::Protocol(_) | ProviderError::Cut(_) => (
            StatusCode::BAD_GATEWAY,
            "server_error",
            "provider_error".into(),
            "the model provider failed; retry later".into(),
        ),
    }
}
