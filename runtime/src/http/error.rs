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
    #[error("{0}")]
    BadRequest(String),
    /// The tenant has too much in flight (fair share); the client should retry after a second.
    #[error("too many requests: {0}")]
    TooManyRequests(&'static str),
    /// Temporarily unable (the code says why); the client should retry after a few seconds.
    #[error("temporarily unavailable: {0}")]
    Unavailable(&'static str),
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
            ApiError::Unavailable(code) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                (*code).to_owned(),
                "temporarily unavailable; retry shortly".to_owned(),
            ),
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
