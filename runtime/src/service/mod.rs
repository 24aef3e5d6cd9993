//! One plain async function per business action, called by the HTTP handlers: no axum types in,
//! a `ServiceError` out. Each action is the whole rule (chat: admission -> policy -> provider ->
//! ledger), so no handler can skip a step.

pub mod audit_trail;
pub mod chat;
pub mod conversations;
pub mod credentials;
pub mod health;
pub mod members;
pub mod narrowing;
pub mod platform;
pub mod reconciliation;
pub mod templates;
pub mod usage;

pub use crate::metering::idempotency::IdempotencyKey;
pub use crate::metering::limits::{BudgetStatus, Budgets, Refusal};

/// Why a business action failed; the HTTP layer maps each variant to a status once.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The tenant's data is being moved between tiers; writes are refused for a moment.
    #[error("tenant is read-only while its data moves")]
    ReadOnly,
    /// The tenant has its maximum of requests in flight (fair share).
    #[error("tenant has {0} requests in flight, its maximum")]
    Busy(usize),
    #[error("model `{0}` is not permitted for this tenant")]
    ModelNotPermitted(String),
    /// The tenant's price book has no price for the model: refused before any upstream call.
    #[error("{0}")]
    ModelUnpriced(String),
    /// The request asks for something its policy or its provider refuses (the text says what).
    #[error("{0}")]
    BadRequest(String),
    /// The provider failed (after retries and fallbacks); the message is already scrubbed.
    #[error("{0}")]
    Provider(crate::models::providers::ProviderError),
    /// The call's idempotency key was claimed by the call with this request id (a retry): refused
    /// before anything was spent.
    #[error("the idempotency key was used by request {0}")]
    IdempotencyConflict(uuid::Uuid),
    /// The tenant's rate limits or budget refused the call before anything was spent.
    #[error("refused by the tenant's limits: {0:?}")]
    Refused(Refusal),
    /// The request conflicts with what exists (the text says what, and what to do instead).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this, whatever its permissions (the text says why).
    #[error("{0}")]
    Forbidden(String),
    /// The object the request names is not the tenant's (whether it exists elsewhere is never said).
    #[error("{0}")]
    NotFound(String),
    /// Anything else: the cause goes to the log, never to the client.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ServiceError::Internal(cause.to_string())
    }
}

impl From<crate::db::DataError> for ServiceError {
    fn from(error: crate::db::DataError) -> Self {
        match error {
            crate::db::DataError::Busy(n) => ServiceError::Busy(n),
            other => ServiceError::internal(other),
        }
    }
}
