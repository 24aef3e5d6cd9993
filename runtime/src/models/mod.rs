//! The model router: maps a tenant's request to a model its policy permits, fetches the tenant's own
//! key for that provider, and calls the provider (with retries, one key refresh on 401, and the
//! policy's fallbacks).
//!
//! `ModelRouter` is the only path from a request to a provider; it refuses anything outside the
//! tenant's `ModelPolicy` (exact names and declared aliases only; no provider prefixes, case folding
//! or URLs; blocked providers and endpoints outside the residency pin never), and calls only the
//! endpoints that policy declares. A tenant's key is read by a name built from the tenant's
//! `TenantId` (`tenants/<id>/providers/<provider>`), never from request input, and no other key is
//! ever substituted. Metering happens in the caller (`service::chat`); this module must not touch
//! the database.

pub mod chat;
pub mod providers;
pub mod scrub;

use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;

use crate::domain::{ModelId, ProviderId, TenantId};
use crate::pricing::{self, Rates, TenantPrices};
use crate::registry::ModelPolicy;
use crate::registry::policy::Endpoint;
use crate::secrets::cache::SecretCache;
use crate::secrets::{SecretError, SecretName};
pub use chat::{ChatMessage, ChatRequest};
use chat::{Completion, EmbeddingRequest, Embeddings};
use providers::{Call, EventStream, Provider, ProviderError, Upstream, UpstreamConfig};

/// A resolved route: which provider and model serve a request, where, and at what price.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: ProviderId,
    pub model: ModelId,
    /// The name sent upstream (a Bedrock inference profile, an Azure deployment name, else the model).
    pub upstream_model: String,
    pub endpoint: Endpoint,
    pub price: Rates,
    /// The price book version the call is charged by (`<version>+negotiated` for a tenant's own).
    pub price_book_version: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("model `{0}` is not permitted for this tenant")]
    NotPermitted(String),
    /// The tenant's price book (the version effective today) has no price for the model.
    #[error("model `{0}` has no price in price book {1}")]
    Unpriced(String, String),
    #[error("`max_tokens` {asked} is above this tenant's limit of {max} per request")]
    TooManyTokens { asked: u32, max: u32 },
}

/// Routes requests within one tenant's policy. Named `ModelRouter`, never `Router` (that is axum's).
#[derive(Debug, Clone)]
pub struct ModelRouter {
    upstream: Upstream,
    keys: Arc<SecretCache>,
}

/// The secret name of `tenant`'s key for `provider`.
pub fn key_name(tenant: &TenantId, provider: ProviderId) -> Result<SecretName, SecretError> {
    SecretName::for_tenant(tenant, &format!("providers/{}", provider.as_str()))
}

impl ModelRouter {
    pub fn new(config: UpstreamConfig, keys: Arc<SecretCache>) -> Result<Self, String> {
        Ok(Self {
            upstream: Upstream::new(config)?,
            keys,
        })
    }

    /// Signs AWS calls (Bedrock) with `credentials` instead of the standard chain.
    pub fn with_aws_credentials(
        self,
        credentials: aws_credential_types::provider::SharedCredentialsProvider,
    ) -> Self {
        Self {
            upstream: self.upstream.with_aws_credentials(credentials),
            ..self
        }
    }

    /// The key cache (for tests and metrics).
    pub fn keys(&self) -> &SecretCache {
        &self.keys
    }

    /// Resolves the requested model name (or alias, or the literal `default`) inside `policy`,
    /// priced by `prices` as of `day` (UTC, `YYYY-MM-DD`).
    pub fn resolve(
        policy: &ModelPolicy,
        prices: &TenantPrices,
        day: &str,
        requested: &str,
    ) -> Result<Route, RouteError> {
        let not_permitted = || RouteError::NotPermitted(crate::domain::printable(requested));
        let name = ModelId::parse(requested).map_err(|_| not_permitted())?;
        let target = if name.as_str() == "default" {
            &policy.default
        } else {
            policy.aliases.get(&name).unwrap_or(&name)
        };
        Self::route_to(policy, prices, day, target).ok_or_else(not_permitted)?
    }

    /// The route to `model`, if the policy allows it (provider not blocked, region inside the pin).
    fn route_to(
        policy: &ModelPolicy,
        prices: &TenantPrices,
        day: &str,
        model: &ModelId,
    ) -> Option<Result<Route, RouteError>> {
        let (provider, allowed) = policy.provider_of(model)?;
        if !policy.region_allowed(allowed.endpoint.region.as_deref()) {
            return None;
        }
        let version = prices.at(day);
        let Some((price, price_book_version)) =
            version.and_then(|v| v.price(provider, model.as_str()))
        else {
            let book = version.map_or_else(
                || format!("(none is effective on {day})"),
                |v| format!("`{}`", v.version),
            );
            return Some(Err(RouteError::Unpriced(model.to_string(), book)));
        };
        let upstream_model = allowed
            .endpoint
            .inference_profiles
            .get(model)
            .or_else(|| allowed.endpoint.deployments.get(model))
            .cloned()
            .unwrap_or_else(|| model.to_string());
        Some(Ok(Route {
            provider,
            model: model.clone(),
            upstream_model,
            endpoint: allowed.endpoint.clone(),
            price,
            price_book_version,
        }))
    }

    /// The route for `requested` and then its fallbacks, each inside the policy and priced by the
    /// tenant's price book version of today (a fallback without a price is left out).
    pub fn plan(
        policy: &ModelPolicy,
        prices: &TenantPrices,
        requested: &str,
    ) -> Result<Vec<Route>, RouteError> {
        let day = pricing::today();
        let first = Self::resolve(policy, prices, &day, requested)?;
        let mut routes = vec![first];
        for model in policy.fallbacks.get(&routes[0].model).into_iter().flatten() {
            if let Some(Ok(route)) = Self::route_to(policy, prices, &day, model) {
                routes.push(route);
            }
        }
        Ok(routes)
    }

    /// The output-token cap for a request: its own `max_tokens`, refused above the policy's limit,
    /// and the policy's limit when it set none.
    pub fn max_tokens(policy: &ModelPolicy, asked: Option<u32>) -> Result<Option<u32>, RouteError> {
        match (asked, policy.max_tokens_per_request) {
            (Some(asked), Some(max)) if asked > max => {
                Err(RouteError::TooManyTokens { asked, max })
            }
            (Some(asked), _) => Ok(Some(asked)),
            (None, max) => Ok(max),
        }
    }

    /// Every model the policy permits and the tenant's prices price on `day`, in a stable order.
    pub fn permitted_models(
        policy: &ModelPolicy,
        prices: &TenantPrices,
        day: &str,
    ) -> Vec<(ModelId, ProviderId)> {
        let mut out: Vec<_> = policy
            .providers
            .keys()
            .flat_map(|p| {
                policy.providers[p]
                    .models
                    .iter()
                    .filter(|m| Self::route_to(policy, prices, day, m).is_some_and(|r| r.is_ok()))
                    .map(move |m| (m.clone(), *p))
            })
            .collect();
        out.sort();
        out
    }

    async fn key(
        &self,
        tenant: &TenantId,
        provider: &Provider,
        id: ProviderId,
    ) -> Result<Option<SecretString>, ProviderError> {
        let optional = matches!(id, ProviderId::OpenaiCompatible);
        if !provider.needs_key() && !optional {
            return Ok(None);
        }
        let name =
            key_name(tenant, id).map_err(|e| ProviderError::KeyUnavailable(e.to_string()))?;
        match self.keys.get(&name).await {
            Ok(key) => Ok(Some(key)),
            Err(SecretError::NotFound(_)) if optional => Ok(None),
            Err(SecretError::NotFound(_)) => Err(ProviderError::KeyUnavailable(format!(
                "no key for provider `{id}` is stored for this tenant (`tenantctl secret put {tenant} providers/{id}`)"
            ))),
            Err(e) => Err(ProviderError::KeyUnavailable(e.to_string())),
        }
    }

    /// Runs `op` against `route` with the tenant's key; on 401/403 re-reads the key once (it may
    /// have been rotated) and tries again.
    async fn with_key<T, F, Fut>(
        &self,
        tenant: &TenantId,
        route: &Route,
        op: F,
    ) -> Result<T, ProviderError>
    where
        F: Fn(Provider, Option<SecretString>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let provider = Provider::for_id(route.provider);
        let started = Instant::now();
        let key = self.key(tenant, &provider, route.provider).await?;
        match op(provider, key.clone()).await {
            Err(ProviderError::Unauthorized { .. }) if key.is_some() => {
                let name = key_name(tenant, route.provider)
                    .map_err(|e| ProviderError::KeyUnavailable(e.to_string()))?;
                let fresh = self
                    .keys
                    .refresh(&name, started)
                    .await
                    .map_err(|e| ProviderError::KeyUnavailable(e.to_string()))?;
                op(provider, Some(fresh)).await
            }
            other => other,
        }
    }

    /// Tries each route in order until one succeeds; a route's failure moves on only when it is
    /// retryable (the provider is down or rate-limited), never after bytes reached the client.
    async fn first_success<T, F, Fut>(
        &self,
        tenant: &TenantId,
        routes: &[Route],
        operation: &'static str,
        op: F,
    ) -> Result<(Route, T), ProviderError>
    where
        F: Fn(Route, Provider, Option<SecretString>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut last = ProviderError::Unavailable("no route".into());
        for route in routes {
            let started = Instant::now();
            let result = self
                .with_key(tenant, route, |p, k| op(route.clone(), p, k))
                .await;
            crate::telemetry::METRICS.upstream(
                route.provider.as_str(),
                operation,
                result.is_ok(),
                started.elapsed(),
            );
            match result {
                Ok(value) => return Ok((route.clone(), value)),
                Err(e) if e.is_retryable() || matches!(e, ProviderError::KeyUnavailable(_)) => {
                    tracing::warn!(provider = %route.provider, model = %route.model, error = %e, "provider failed; trying the next fallback if any");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// One call's view of `route`, with the tenant's key.
    fn call<'a>(&'a self, route: &'a Route, key: Option<&'a SecretString>) -> Call<'a> {
        Call {
            model: &route.model,
            upstream_model: &route.upstream_model,
            endpoint: &route.endpoint,
            key,
            http: &self.upstream,
        }
    }

    /// A non-streamed completion through the first route that answers. Callers must write the
    /// ledger row for the returned usage against the returned route.
    pub async fn complete(
        &self,
        tenant: &TenantId,
        routes: &[Route],
        request: &ChatRequest,
    ) -> Result<(Route, Completion), ProviderError> {
        use tracing::Instrument as _;
        let span = gen_ai_span("chat", routes);
        let done = self
            .first_success(tenant, routes, "chat", |route, provider, key| async move {
                provider
                    .complete(self.call(&route, key.as_ref()), request)
                    .await
            })
            .instrument(span.clone())
            .await;
        if let Ok((route, c)) = &done {
            record_gen_ai(&span, route, &c.usage);
        }
        done
    }

    /// A streamed completion: returns once a provider accepted the request, with its events.
    pub async fn stream(
        &self,
        tenant: &TenantId,
        routes: &[Route],
        request: &ChatRequest,
    ) -> Result<(Route, EventStream), ProviderError> {
        use tracing::Instrument as _;
        let span = gen_ai_span("chat", routes);
        let done = self
            .first_success(
                tenant,
                routes,
                "stream",
                |route, provider, key| async move {
                    provider
                        .stream(self.call(&route, key.as_ref()), request)
                        .await
                },
            )
            .instrument(span.clone())
            .await;
        if let Ok((route, _)) = &done {
            span.record("gen_ai.response.model", route.model.as_str());
        }
        done
    }

    /// Embeddings through the first route that answers.
    pub async fn embed(
        &self,
        tenant: &TenantId,
        routes: &[Route],
        request: &EmbeddingRequest,
    ) -> Result<(Route, Embeddings), ProviderError> {
        use tracing::Instrument as _;
        let span = gen_ai_span("embeddings", routes);
        let done = self
            .first_success(
                tenant,
                routes,
                "embeddings",
                |route, provider, key| async move {
                    provider
                        .embed(self.call(&route, key.as_ref()), request)
                        .await
                },
            )
            .instrument(span.clone())
            .await;
        if let Ok((route, e)) = &done {
            record_gen_ai(&span, route, &e.usage);
        }
        done
    }
}

/// A model call's span, named and attributed by the OpenTelemetry GenAI semantic conventions
/// (`{operation} {model}`, `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`;
/// the response model and usage are recorded when known). No prompt or answer is ever recorded.
fn gen_ai_span(operation: &'static str, routes: &[Route]) -> tracing::Span {
    let (provider, model) = routes
        .first()
        .map_or(("none", ""), |r| (r.provider.as_str(), r.model.as_str()));
    tracing::info_span!(
        "gen_ai",
        otel.name = %format!("{operation} {model}"),
        otel.kind = "client",
        gen_ai.operation.name = operation,
        gen_ai.provider.name = provider,
        gen_ai.request.model = model,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    )
}

fn record_gen_ai(span: &tracing::Span, route: &Route, usage: &chat::Usage) {
    span.record("gen_ai.response.model", route.model.as_str());
    span.record("gen_ai.usage.input_tokens", usage.input_tokens);
    span.record("gen_ai.usage.output_tokens", usage.output_tokens);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::policy::ProviderPolicy;
    use std::collections::BTreeMap;

    fn policy() -> ModelPolicy {
        ModelPolicy {
            providers: BTreeMap::from([(
                ProviderId::Mock,
                ProviderPolicy {
                    models: vec![ModelId::parse("mock-small").unwrap()],
                    endpoint: Endpoint::default(),
                },
            )]),
            default: ModelId::parse("mock-small").unwrap(),
            aliases: BTreeMap::from([(
                ModelId::parse("fast").unwrap(),
                ModelId::parse("mock-small").unwrap(),
            )]),
            fallbacks: BTreeMap::new(),
            blocked_providers: Vec::new(),
            max_tokens_per_request: Some(100),
            residency: Vec::new(),
        }
    }

    fn prices() -> TenantPrices {
        TenantPrices {
            versions: vec![pricing::TenantVersion {
                version: "test".into(),
                effective_from: "2000-01-01".into(),
                prices: vec![pricing::Price {
                    provider: ProviderId::Mock,
                    model: "mock-small".into(),
                    input_per_mtok: crate::domain::MicroUsd(1),
                    output_per_mtok: crate::domain::MicroUsd(2),
                    per_request: crate::domain::MicroUsd(0),
                    cached_input_per_mtok: None,
                    cache_write_per_mtok: None,
                    reasoning_per_mtok: None,
                }],
                negotiated: Vec::new(),
            }],
        }
    }

    #[track_caller]
    fn check(policy: &ModelPolicy, requested: &str, want: Result<&str, ()>) {
        let got = ModelRouter::resolve(policy, &prices(), "2026-01-01", requested)
            .map(|r| r.model.to_string())
            .map_err(|_| ());
        assert_eq!(got.as_deref().map_err(|_| ()), want, "{requested}");
    }

    #[test]
    fn resolves_only_inside_the_policy() {
        // docs/security.md case 54: aliases, case variants and provider prefixes never widen the policy.
        let p = policy();
        check(&p, "mock-small", Ok("mock-small"));
        check(&p, "fast", Ok("mock-small"));
        check(&p, "default", Ok("mock-small"));
        check(&p, "mock-large", Err(()));
        check(&p, "MOCK-SMALL", Err(()));
        check(&p, "mock/mock-small", Err(()));
        check(&p, "http://evil.example/v1", Err(()));
        check(&p, "", Err(()));
    }

    #[test]
    fn blocked_providers_and_endpoints_outside_the_residency_pin_are_never_routed_to() {
        let mut blocked = policy();
        blocked.blocked_providers.push(ProviderId::Mock);
        check(&blocked, "mock-small", Err(()));
        let mut pinned = policy();
        pinned.residency = vec!["eu-west-1".into()];
        check(&pinned, "mock-small", Err(()));
        pinned
            .providers
            .get_mut(&ProviderId::Mock)
            .unwrap()
            .endpoint
            .region = Some("eu-west-1".into());
        check(&pinned, "mock-small", Ok("mock-small"));
        assert!(ModelRouter::permitted_models(&blocked, &prices(), "2026-01-01").is_empty());
    }

    #[test]
    fn a_model_without_a_price_on_the_day_is_never_routed_to() {
        let p = policy();
        let none = TenantPrices::default();
        assert!(matches!(
            ModelRouter::resolve(&p, &none, "2026-01-01", "mock-small"),
            Err(RouteError::Unpriced(m, _)) if m == "mock-small"
        ));
        assert!(matches!(
            ModelRouter::resolve(&p, &prices(), "1999-12-31", "mock-small"),
            Err(RouteError::Unpriced(..))
        ));
        assert!(ModelRouter::permitted_models(&p, &none, "2026-01-01").is_empty());
        assert_eq!(
            ModelRouter::permitted_models(&p, &prices(), "2026-01-01").len(),
            1
        );
    }

    #[test]
    fn the_token_cap_refuses_above_it_and_fills_in_when_unset() {
        let p = policy();
        assert_eq!(ModelRouter::max_tokens(&p, None), Ok(Some(100)));
        assert_eq!(ModelRouter::max_tokens(&p, Some(50)), Ok(Some(50)));
        assert_eq!(
            ModelRouter::max_tokens(&p, Some(101)),
            Err(RouteError::TooManyTokens {
                asked: 101,
                max: 100
            })
        );
    }
}
