//! Provider adapters, one file each, behind one enum for static dispatch.
//!
//! A provider turns messages into a `Completion` with token usage. Providers must not meter, log
//! prompts, or read secrets other than through the values the router hands them.

pub mod mock;

use crate::domain::ModelId;
use crate::models::ChatMessage;

/// What a provider returns: the reply text and the usage it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub finish_reason: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider failed: {0}")]
    Upstream(String),
}

/// Static dispatch over the providers this build knows.
#[derive(Debug)]
pub enum Provider<'a> {
    Mock(&'a mock::MockProvider),
}

impl Provider<'_> {
    pub async fn complete(
        &self,
        model: &ModelId,
        messages: &[ChatMessage],
        max_tokens: Option<u32>,
    ) -> Result<Completion, ProviderError> {
        match self {
            Provider::Mock(p) => Ok(p.complete(model, messages, max_tokens)),
        }
    }
}
