//! `RawManifest`: the manifest exactly as written (serde, `deny_unknown_fields`), with the JSON Schema
//! editors validate against. Shape only: every rule about values lives in `spec`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// A tenant manifest, format version 1 (`tenants/<id>.yaml`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tenantctl tenant manifest v1")]
pub struct RawManifest {
    /// Manifest format version. Must be `1`.
    pub version: u32,
    /// Tenant id: 3-40 characters of `a-z`, `0-9` and `-`, starting with a letter. Never changes.
    #[schemars(regex(pattern = r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){2,39}$"))]
    pub id: String,
    /// Human-readable name, 1-100 characters.
    pub display_name: String,
    /// Isolation tier of the tenant's data.
    pub tier: RawTier,
    /// How the tenant's tokens are recognised. Defaults to the platform issuer.
    #[serde(default)]
    pub identity: RawIdentity,
    /// Which models the tenant may call.
    pub models: RawModels,
    /// Monthly spending limit.
    pub budget: RawBudget,
    /// Request and token rate limits.
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    /// Cost-allocation tags; `cost-center` is required. `tenant` and `tier` are set by tenantctl.
    pub tags: BTreeMap<String, String>,
    /// How long usage records are kept.
    pub retention: RawRetention,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawTier {
    /// Rows in shared tables, isolated by row-level security.
    Pool,
    /// A schema and a login role per tenant.
    Schema,
    /// A database (an RDS instance on AWS) per tenant.
    Dedicated,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Name of a trusted issuer in platform configuration.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The `aud` value the tenant's tokens must carry; one of the issuer's audiences (default: its
    /// first).
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim that carries the tenant id. It is set per issuer in `platform.yaml`; if given here it
    /// must match.
    #[serde(default)]
    pub tenant_claim: Option<String>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        Self {
            issuer: default_issuer(),
            audience: None,
            tenant_claim: None,
        }
    }
}

fn default_issuer() -> String {
    "platform".into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    /// Allowed models, by provider: `{ mock: [mock-small, mock-large] }`, or with the endpoint the
    /// provider is reached at: `{ openai: { models: [gpt-4o-mini], endpoint: { region: us } } }`.
    pub providers: BTreeMap<String, RawProvider>,
    /// The model used when a request asks for `default`. Must be allowed (or an alias).
    pub default: String,
    /// Extra names for allowed models: `{ fast: mock-small }`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Models tried in order when a model's provider is down or rate-limited (before any byte
    /// reached the client): `{ gpt-4o-mini: [claude-haiku-4-5] }`. Each must be an allowed model.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Providers this tenant must never reach; listing one of them under `providers` is an error.
    #[serde(default)]
    pub blocked_providers: Vec<String>,
    /// The most output tokens one request may ask for (a request asking more is refused with 400;
    /// one asking none is capped at this).
    #[serde(default)]
    pub max_tokens_per_request: Option<u32>,
    /// Regions the tenant's prompts may be processed in; every provider endpoint must declare a
    /// `region` in this list, and no route or fallback leaves it.
    #[serde(default)]
    pub residency: Vec<String>,
}

/// A provider's allowed models, with or without its endpoint.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawProvider {
    Models(Vec<String>),
    Full {
        models: Vec<String>,
        #[serde(default)]
        endpoint: RawEndpoint,
    },
}

/// Where a provider is reached. Nothing in a request can change it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// Base URL of the API (`https://...`; `http://` only for a self-hosted server on a private
    /// network). Defaults to the provider's public API.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The region the endpoint processes prompts in (checked against `residency`).
    #[serde(default)]
    pub region: Option<String>,
    /// Azure OpenAI: the deployment serving each model: `{ gpt-4o-mini: my-deployment }`.
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// Azure OpenAI: the `api-version` to call.
    #[serde(default)]
    pub api_version: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Monthly budget in US dollars, as a quoted decimal string (`"2500.00"`); never a float.
    /// Enforced before every model call: a call whose worst case does not fit in what is left of the
    /// month (UTC) is refused with 402.
    pub monthly_usd: RawMoney,
    /// Optional: each subject's (the token's `sub`: one user or service of the tenant) monthly
    /// budget in US dollars, as a quoted decimal string, at most `monthly_usd`. Enforced before
    /// every model call like the tenant's budget (402 naming the subject's budget); committed spend
    /// plus open holds of one subject never pass it in a calendar month (UTC).
    #[serde(default)]
    pub per_subject_monthly_usd: Option<RawMoney>,
}

/// Money as written. Only text (or a whole number) is accepted; a float is refused.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawMoney {
    Text(String),
    Whole(u64),
    #[schemars(skip)]
    Float(f64),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    /// Requests per minute, 1-1,000,000. Default 600. Enforced for the tenant across all runtime
    /// processes (429 with Retry-After).
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// Model tokens per minute, 1-1,000,000,000. Default 100,000. Enforced like the request limit:
    /// estimated input tokens at admission, produced tokens when the call is recorded.
    #[serde(default = "default_tpm")]
    pub tokens_per_minute: u64,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        Self {
            requests_per_minute: default_rpm(),
            tokens_per_minute: default_tpm(),
        }
    }
}

fn default_rpm() -> u32 {
    600
}
fn default_tpm() -> u64 {
    100_000
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Days usage records are kept, 1-3650.
    pub usage_days: u32,
}

/// The JSON Schema of the manifest, as checked in at `docs/manifest.schema.json`.
pub fn json_schema() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(RawManifest)).unwrap_or_default();
    let mut text = serde_json::to_string_pretty(&super::canonical(&schema)).unwrap_or_default();
    text.push('\n');
    text
}
