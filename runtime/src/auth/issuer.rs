//! Trusted issuer configuration: which identity providers the platform trusts, and the exact rules each
//! one's tokens must meet.
//!
//! Every field has a conservative default: RS256 only, a small explicit leeway, a one-day maximum token
//! lifetime, https JWKS. `IssuerConfig::check` refuses configurations that would weaken the edge
//! (http JWKS off loopback, a leeway over five minutes, an empty audience list, unknown algorithms).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::jwks::JwksSource;

/// Signature algorithms an issuer may be allowed to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    ES256,
}

impl Alg {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "RS256" => Some(Alg::RS256),
            "ES256" => Some(Alg::ES256),
            _ => None,
        }
    }
}

/// How a roles claim maps to route permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// The claim holding an array of role names (e.g. `roles`, `groups`).
    pub claim: String,
    /// Role name -> permissions it grants: permission names (`usage:read`) or built-in tenant roles
    /// (`role:tenant_member`, `role:tenant_finance`, `role:tenant_admin`; see `auth::roles`).
    pub permissions: BTreeMap<String, Vec<String>>,
}

/// JWKS cache timings and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksCacheConfig {
    /// How often the key set is refreshed in the background.
    #[serde(default = "d_ttl")]
    pub ttl_secs: u64,
    /// The minimum time between two fetches triggered by unknown `kid`s or failed signatures.
    #[serde(default = "d_cooldown")]
    pub cooldown_secs: u64,
    /// How long the last good key set is used while the JWKS endpoint fails; then the issuer fails
    /// closed (503) until a fetch succeeds.
    #[serde(default = "d_max_stale")]
    pub max_stale_secs: u64,
    /// Per-fetch time limit.
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Largest accepted JWKS document.
    #[serde(default = "d_max_bytes")]
    pub max_bytes: usize,
}

fn d_ttl() -> u64 {
    300
}
fn d_cooldown() -> u64 {
    30
}
fn d_max_stale() -> u64 {
    6 * 3600
}
fn d_timeout() -> u64 {
    3000
}
fn d_max_bytes() -> usize {
    256 * 1024
}

impl Default for JwksCacheConfig {
    fn default() -> Self {
        Self {
            ttl_secs: d_ttl(),
            cooldown_secs: d_cooldown(),
            max_stale_secs: d_max_stale(),
            timeout_ms: d_timeout(),
            max_bytes: d_max_bytes(),
        }
    }
}

/// How the web console signs a person in with this issuer: OpenID Connect's authorization code
/// flow with PKCE (S256), as a public client. The values are the issuer's (its discovery document's
/// `authorization_endpoint` and `token_endpoint`, and the client it registered for the console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleClient {
    /// Where the browser is sent to sign in (https, or http on loopback with `allow_loopback_http`).
    pub authorization_endpoint: String,
    /// Where the console exchanges the code for tokens (the same rule).
    pub token_endpoint: String,
    /// The client id the issuer registered for the console; the id token's `aud`.
    pub client_id: String,
    /// The authorization request parameter that asks for an access token for the tenant's audience
    /// (`resource` per RFC 8707, or `audience` for providers that use that name). Unset: none is
    /// sent, and the issuer must give the console's client tokens for that audience by itself.
    #[serde(default)]
    pub audience_parameter: Option<String>,
    /// Send the tenant id asked for (or `platform` for staff) as `login_hint`, for an issuer whose
    /// login page uses it to choose the organisation (the dev identity provider does). Off by
    /// default: most providers take `login_hint` for a user name.
    #[serde(default)]
    pub send_login_hint: bool,
    /// Scopes to ask for besides `openid` (space-separated), for an issuer that grants the API's
    /// permissions as scopes only when they are asked for (e.g. `me:read models:read usage:read`).
    #[serde(default)]
    pub scope: Option<String>,
}

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The name tenant manifests bind to (`platform` is the platform's own issuer).
    pub name: String,
    /// The exact `iss` value (compared byte for byte: no case folding, no trailing-slash tolerance).
    pub issuer: String,
    pub jwks: JwksSource,
    /// `aud` values this issuer's tokens may carry for this platform; each tenant binds to one.
    pub audiences: Vec<String>,
    #[serde(default = "d_algs")]
    pub algorithms: Vec<Alg>,
    /// The claim that carries the tenant id: a top-level claim name (`tenant_id`,
    /// `https://example.com/tenant`), or a dotted path into an object claim (`o.id`).
    #[serde(default = "d_claim")]
    pub tenant_claim: String,
    /// If set, the JOSE `typ` header must be this (e.g. `at+jwt`, RFC 9068).
    #[serde(default)]
    pub required_typ: Option<String>,
    /// Largest accepted `exp - iat`.
    #[serde(default = "d_lifetime")]
    pub max_lifetime_secs: i64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "d_leeway")]
    pub leeway_secs: i64,
    #[serde(default)]
    pub roles: Option<RolesConfig>,
    #[serde(default)]
    pub jwks_cache: JwksCacheConfig,
    /// Allows a plain-http JWKS URL on a loopback address (local development only).
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// Browser sign-in to the web console with this issuer. Unset: its users cannot sign in to
    /// the console (the API is unaffected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleClient>,
}

fn d_algs() -> Vec<Alg> {
    vec![Alg::RS256]
}
fn d_claim() -> String {
    "tenant_id".into()
}
fn d_lifetime() -> i64 {
    24 * 3600
}
fn d_leeway() -> i64 {
    30
}

impl IssuerConfig {
    /// A config with every default, for `name` / `issuer` / `jwks` / one audience.
    pub fn new(name: &str, issuer: &str, jwks: JwksSource, audience: &str) -> Self {
        Self {
            name: name.into(),
            issuer: issuer.into(),
            jwks,
            audiences: vec![audience.into()],
            algorithms: d_algs(),
            tenant_claim: d_claim(),
            required_typ: None,
            max_lifetime_secs: d_lifetime(),
            leeway_secs: d_leeway(),
            roles: None,
            jwks_cache: JwksCacheConfig::default(),
            allow_loopback_http: false,
            console: None,
        }
    }

    /// Refuses settings that would weaken verification. The message names the field.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(format!(
                "issuer name `{}` must be 1-40 characters of a-z, 0-9 and `-`",
                self.name
            ));
        }
        if self.issuer.is_empty() {
            return Err(format!(
                "issuer `{}`: `issuer` must not be empty",
                self.name
            ));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(format!(
                "issuer `{}`: `audiences` must list at least one non-empty audience",
                self.name
            ));
        }
        if self.algorithms.is_empty() {
            return Err(format!(
                "issuer `{}`: `algorithms` must not be empty",
                self.name
            ));
        }
        if !(0..=300).contains(&self.leeway_secs) {
            return Err(format!(
                "issuer `{}`: `leeway_secs` must be 0-300",
                self.name
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&self.max_lifetime_secs) {
            return Err(format!(
                "issuer `{}`: `max_lifetime_secs` must be 60-604800",
                self.name
            ));
        }
        if self.tenant_claim.is_empty() {
            return Err(format!(
                "issuer `{}`: `tenant_claim` must not be empty",
                self.name
            ));
        }
        let c = &self.jwks_cache;
        if c.cooldown_secs == 0
            || c.ttl_secs == 0
            || c.max_stale_secs < c.ttl_secs
            || c.max_bytes == 0
        {
            return Err(format!(
                "issuer `{}`: `jwks_cache` needs ttl_secs > 0, cooldown_secs > 0, max_stale_secs >= ttl_secs",
                self.name
            ));
        }
        if let JwksSource::Url(url) = &self.jwks {
            super::jwks::check_url(url, self.allow_loopback_http)
                .map_err(|e| format!("issuer `{}`: {e}", self.name))?;
        }
        if let Some(c) = &self.console {
            for (field, url) in [
                ("authorization_endpoint", &c.authorization_endpoint),
                ("token_endpoint", &c.token_endpoint),
            ] {
                super::jwks::check_url(url, self.allow_loopback_http)
                    .map_err(|e| format!("issuer `{}`: `console.{field}`: {e}", self.name))?;
            }
            if c.client_id.is_empty() {
                return Err(format!(
                    "issuer `{}`: `console.client_id` must not be empty",
                    self.name
                ));
            }
        }
        if let Some(roles) = &self.roles {
            for (role, entries) in &roles.permissions {
                for entry in entries {
                    super::roles::check_entry(entry).map_err(|e| {
                        format!("issuer `{}`: `roles.permissions.{role}`: {e}", self.name)
                    })?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roles_mapping_naming_a_platform_role_or_no_role_is_refused_naming_it() {
        let with = |entry: &str| {
            let mut c = IssuerConfig::new(
                "corp",
                "https://idp.example",
                JwksSource::Url("https://idp.example/jwks.json".into()),
                "tenantctl-api",
            );
            c.roles = Some(RolesConfig {
                claim: "groups".into(),
                permissions: BTreeMap::from([("staff".into(), vec![entry.into()])]),
            });
            c.check()
        };
        assert_eq!(with("role:tenant_admin"), Ok(()));
        assert_eq!(with("usage:read"), Ok(()));
        assert_eq!(with("role:platform_operator"), Ok(()));
        let e = with("role:superuser").unwrap_err();
        assert!(e.contains("names no built-in role"), "{e}");
    }
}
