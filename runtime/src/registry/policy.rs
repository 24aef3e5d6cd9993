//! A tenant's model policy as the registry stores it (JSON written by `tenantctl`, read by the
//! runtime): per provider the endpoint it is reached at and the models allowed there, a default,
//! aliases, fallbacks, blocked providers, a per-request token cap and a data-residency pin. The model
//! router enforces it; this module only describes it, checks that it is coherent, and does no IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{ModelId, ProviderId};

/// What a tenant may call. Everything outside it is refused before any upstream call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicy {
    pub providers: BTreeMap<ProviderId, ProviderPolicy>,
    pub default: ModelId,
    #[serde(default)]
    pub aliases: BTreeMap<ModelId, ModelId>,
    /// Models tried, in order, when a model's provider fails before the first byte reached the
    /// client; each must itself be in the policy (and so inside the residency pin).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallbacks: BTreeMap<ModelId, Vec<ModelId>>,
    /// Providers this tenant must never reach, whatever else the policy says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_providers: Vec<ProviderId>,
    /// The most output tokens one request may ask for; a request without `max_tokens` is capped at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_request: Option<u32>,
    /// The regions the tenant's prompts may be processed in; empty means unpinned. Every provider's
    /// endpoint must declare a region inside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residency: Vec<String>,
}

/// One provider in a tenant's policy: where it is reached, and which models there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderPolicy {
    pub models: Vec<ModelId>,
    #[serde(default)]
    pub endpoint: Endpoint,
}

/// Where a provider is reached. Only these fields steer traffic: nothing in a request can.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The API's base URL (`https://api.openai.com/v1`, `https://<resource>.openai.azure.com`, a
    /// self-hosted server's `/v1`); defaults to the provider's public API where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The region the endpoint processes prompts in (checked against the residency pin; the AWS
    /// region for Bedrock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Azure OpenAI: the deployment name serving each model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<ModelId, String>,
    /// Azure OpenAI: the `api-version` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Bedrock: the application inference profile each model is called through, so the tenant's
    /// spend carries its cost-allocation tags in the AWS bill. Set by tenantctl on the AWS target
    /// (from the tenant's stack), never by a manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inference_profiles: BTreeMap<ModelId, String>,
}

/// A provider policy as written: either just the model list (`mock: [mock-small]`) or the full form
/// with an endpoint.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawProviderPolicy {
    Models(Vec<ModelId>),
    Full {
        models: Vec<ModelId>,
        #[serde(default)]
        endpoint: Endpoint,
    },
}

impl<'de> Deserialize<'de> for ProviderPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match RawProviderPolicy::deserialize(d)? {
            RawProviderPolicy::Models(models) => ProviderPolicy {
                models,
                endpoint: Endpoint::default(),
            },
            RawProviderPolicy::Full { models, endpoint } => ProviderPolicy { models, endpoint },
        })
    }
}

/// What a tenant's own admins took away from its registered policy and limits (`PUT /v1/policy`,
/// `PUT /v1/limits`), kept in the registry beside what the platform registered. It can only take
/// away: the loader applies it as "the registered models minus these" and "the lower of the two"
/// (`TenantRecord::narrowed`), so no value of it widens anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Narrowing {
    /// Models of the registered policy the tenant does not use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_models: Vec<ModelId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget_micro_usd: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

impl Narrowing {
    pub fn is_empty(&self) -> bool {
        *self == Narrowing::default()
    }
}

impl ModelPolicy {
    /// This policy without `disabled` models: they leave their providers' lists, and aliases and
    /// fallbacks naming them go with them. The default is never removed (the API refuses to
    /// disable it).
    pub fn without(&self, disabled: &[ModelId]) -> ModelPolicy {
        let mut p = self.clone();
        let off = |m: &ModelId| disabled.contains(m) && *m != self.default;
        for provider in p.providers.values_mut() {
            provider.models.retain(|m| !off(m));
        }
        p.aliases.retain(|_, target| !off(target));
        p.fallbacks.retain(|m, _| !off(m));
        for chain in p.fallbacks.values_mut() {
            chain.retain(|m| !off(m));
        }
        p.fallbacks.retain(|_, chain| !chain.is_empty());
        p
    }

    /// Every model the policy names at a provider.
    pub fn models(&self) -> Vec<&ModelId> {
        self.providers
            .values()
            .flat_map(|p| p.models.iter())
            .collect()
    }

    /// A policy allowing exactly `models` at `provider` (default endpoint), defaulting to the first.
    /// Returns `None` for an empty list.
    pub fn only(provider: ProviderId, models: Vec<ModelId>) -> Option<Self> {
        Some(Self {
            default: models.first()?.clone(),
            providers: BTreeMap::from([(
                provider,
                ProviderPolicy {
                    models,
                    endpoint: Endpoint::default(),
                },
            )]),
            aliases: BTreeMap::new(),
            fallbacks: BTreeMap::new(),
            blocked_providers: Vec::new(),
            max_tokens_per_request: None,
            residency: Vec::new(),
        })
    }

    /// The provider a model is allowed at (exact name), unless that provider is blocked.
    pub fn provider_of(&self, model: &ModelId) -> Option<(ProviderId, &ProviderPolicy)> {
        self.providers
            .iter()
            .find(|(_, p)| p.models.contains(model))
            .filter(|(id, _)| !self.blocked_providers.contains(id))
            .map(|(id, p)| (*id, p))
    }

    /// Whether `region` satisfies the residency pin.
    pub fn region_allowed(&self, region: Option<&str>) -> bool {
        self.residency.is_empty() || region.is_some_and(|r| self.residency.iter().any(|a| a == r))
    }

    /// The policy's own coherence, as one list of problems (manifest field path, what is wrong).
    /// `tenantctl` refuses a manifest with any; the router refuses the same things at call time.
    pub fn problems(&self) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        let path = |segments: &[&str]| -> Vec<String> {
            segments.iter().map(|s| (*s).to_owned()).collect()
        };
        for (id, p) in &self.providers {
            let at = |rest: &[&str]| {
                let mut v = path(&["models", "providers", id.as_str()]);
                v.extend(rest.iter().map(|s| (*s).to_owned()));
                v
            };
            if self.blocked_providers.contains(id) {
                out.push((
                    at(&[]),
                    format!(
                        "provider `{id}` is listed in `blocked_providers`; remove one of the two"
                    ),
                ));
            }
            if !self.region_allowed(p.endpoint.region.as_deref()) {
                out.push((
                    at(&["endpoint", "region"]),
                    format!(
                        "the endpoint must declare a region inside `residency` ({})",
                        self.residency.join(", ")
                    ),
                ));
            }
            if let Some(url) = &p.endpoint.base_url
                && let Err(why) = check_base_url(url)
            {
                out.push((at(&["endpoint", "base_url"]), why));
            }
            match id {
                ProviderId::AzureOpenai => {
                    if p.endpoint.base_url.is_none() {
                        out.push((
                            at(&["endpoint", "base_url"]),
                            "Azure OpenAI needs the resource URL (`https://<resource>.openai.azure.com`)".into(),
                        ));
                    }
                    if p.endpoint.api_version.is_none() {
                        out.push((
                            at(&["endpoint", "api_version"]),
                            "Azure OpenAI needs an `api_version` (e.g. `2024-10-21`)".into(),
                        ));
                    }
                    for m in &p.models {
                        if !p.endpoint.deployments.contains_key(m) {
                            out.push((
                                at(&["endpoint", "deployments"]),
                                format!("model `{m}` has no deployment name"),
                            ));
                        }
                    }
                }
                ProviderId::Bedrock if p.endpoint.region.is_none() => {
                    out.push((
                        at(&["endpoint", "region"]),
                        "Bedrock needs the AWS region it is called in (e.g. `eu-west-1`)".into(),
                    ));
                }
                ProviderId::OpenaiCompatible if p.endpoint.base_url.is_none() => {
                    out.push((
                        at(&["endpoint", "base_url"]),
                        "a self-hosted server needs its base URL (e.g. `http://vllm.internal:8000/v1`)".into(),
                    ));
                }
                _ => {}
            }
        }
        for (model, chain) in &self.fallbacks {
            if self.provider_of(model).is_none() {
                out.push((
                    path(&["models", "fallbacks", model.as_str()]),
                    format!("`{model}` is not a model of this policy"),
                ));
            }
            for f in chain {
                if self.provider_of(f).is_none() {
                    out.push((
                        path(&["models", "fallbacks", model.as_str()]),
                        format!("fallback `{f}` is not a model of this policy; a fallback never leaves it"),
                    ));
                }
            }
        }
        if self.max_tokens_per_request == Some(0) {
            out.push((
                path(&["models", "max_tokens_per_request"]),
                "must be at least 1".into(),
            ));
        }
        out
    }
}

/// A provider base URL: `https://` (or `http://` for a self-hosted server on a private network),
/// with a host, and no credentials, query or fragment in it.
pub fn check_base_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an http(s) URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; keys come from the secret store".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or a fragment".into());
    }
    Ok(())
}
