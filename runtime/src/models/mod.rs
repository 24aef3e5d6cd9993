//! The model router: maps a tenant's request to a model its policy permits, and calls the provider.
//!
//! `ModelRouter` is the only path from a request to a provider; it refuses anything outside the tenant's
//! `ModelPolicy` (exact names and declared aliases only; no provider prefixes, case folding or URLs).
//! Metering happens in the caller (`chat` module) around `ModelRouter::complete`; this module must not
//! touch the database or read secrets itself.

pub mod pricing;
pub mod providers;

use crate::domain::{ModelId, ProviderId};
use crate::registry::ModelPolicy;
use pricing::Price;
use providers::{Completion, Provider, ProviderError};

/// One chat message after normalisation (content parts joined to text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A validated chat request.
#[derive(Debug)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
}

/// A resolved route: which provider and model serve a request, and at what price.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: ProviderId,
    pub model: ModelId,
    pub price: &'static Price,
    pub price_book_version: &'static str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("model `{0}` is not permitted for this tenant")]
    NotPermitted(String),
    #[error("model `{0}` has no price in price book `{1}`")]
    Unpriced(String, &'static str),
}

/// Routes requests within one tenant's policy. Named `ModelRouter`, never `Router` (that is axum's).
#[derive(Debug, Default, Clone)]
pub struct ModelRouter {
    mock: providers::mock::MockProvider,
}

impl ModelRouter {
    /// Resolves the requested model name (or alias, or the literal `default`) inside `policy`.
    pub fn resolve(&self, policy: &ModelPolicy, requested: &str) -> Result<Route, RouteError> {
        let not_permitted = || RouteError::NotPermitted(crate::domain::printable(requested));
        let name = ModelId::parse(requested).map_err(|_| not_permitted())?;
        let target = if name.as_str() == "default" {
            &policy.default
        } else {
            policy.aliases.get(&name).unwrap_or(&name)
        };
        let (provider, _) = policy
            .providers
            .iter()
            .find(|(_, models)| models.contains(target))
            .ok_or_else(not_permitted)?;
        let price = pricing::CURRENT
            .price(*provider, target.as_str())
            .ok_or_else(|| RouteError::Unpriced(target.to_string(), pricing::CURRENT.version))?;
        Ok(Route {
            provider: *provider,
            model: target.clone(),
            price,
            price_book_version: pricing::CURRENT.version,
        })
    }

    /// Every model (and alias) the policy permits, in a stable order.
    pub fn permitted_models(policy: &ModelPolicy) -> Vec<(ModelId, ProviderId)> {
        let mut out: Vec<_> = policy
            .providers
            .iter()
            .flat_map(|(p, models)| models.iter().map(move |m| (m.clone(), *p)))
            .collect();
        out.sort();
        out
    }

    /// Calls the provider behind `route`. Callers must write the ledger row for the returned usage.
    pub async fn complete(
        &self,
        route: &Route,
        messages: &[ChatMessage],
        max_tokens: Option<u32>,
    ) -> Result<Completion, ProviderError> {
        let provider = match route.provider {
            ProviderId::Mock => Provider::Mock(&self.mock),
        };
        provider.complete(&route.model, messages, max_tokens).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn policy() -> ModelPolicy {
        ModelPolicy {
            providers: BTreeMap::from([(
                ProviderId::Mock,
                vec![ModelId::parse("mock-small").unwrap()],
            )]),
            default: ModelId::parse("mock-small").unwrap(),
            aliases: BTreeMap::from([(
                ModelId::parse("fast").unwrap(),
                ModelId::parse("mock-small").unwrap(),
            )]),
        }
    }

    #[track_caller]
    fn check(requested: &str, want: Result<&str, ()>) {
        let got = ModelRouter::default()
            .resolve(&policy(), requested)
            .map(|r| r.model.to_string())
            .map_err(|_| ());
        assert_eq!(got.as_deref().map_err(|_| ()), want, "{requested}");
    }

    #[test]
    fn resolves_only_inside_the_policy() {
        // docs/security.md case 54: aliases, case variants and provider prefixes never widen the policy.
        check("mock-small", Ok("mock-small"));
        check("fast", Ok("mock-small"));
        check("default", Ok("mock-small"));
        check("mock-large", Err(()));
        check("MOCK-SMALL", Err(()));
        check("mock/mock-small", Err(()));
        check("http://evil.example/v1", Err(()));
        check("", Err(()));
    }
}
