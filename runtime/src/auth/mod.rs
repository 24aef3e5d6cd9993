//! Identity at the edge: one layer over the whole router, deny by default.
//!
//! `Authenticator::authenticate` is called by the HTTP layer (`http::middleware::require_auth`) before
//! routing for every request except the public routes of `http::routes::ROUTES`. It takes the one bearer token, verifies it against the trusted issuer named by its `iss` (see
//! `jwt`, `jwks`, `issuer`), binds it to a tenant through the issuer's tenant claim and the
//! `TenantDirectory` (the tenant must be bound to that issuer and audience), applies the deployment's
//! rules (a per-tenant deployment serves only its tenant; behind API Gateway the authorizer's claims must
//! agree), and returns the `Tenant`, which only this module can build. This module holds no axum type.
//!
//! **Invariant:** the verified token is the only source of tenant identity; nothing but the
//! `Authorization` header (and the gateway's own claims, for comparison only) is read here. This module
//! must not touch the database, log a token, or fetch keys from anywhere a token names.

pub mod cache;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod roles;
pub mod signer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::TenantId;
use crate::registry::{TenantDirectory, TenantRecord};
pub use issuer::{Alg, ConsoleClient, IssuerConfig, JwksCacheConfig, RolesConfig};
use jwks::{Jwk, KeyCache, Lookup};
use jwt::{Claims, DenyReason};

/// Rules of one deployment of the runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentPolicy {
    /// A deployment for one tenant (a tenant's Lambda) refuses every other tenant's tokens.
    #[serde(default)]
    pub tenant: Option<TenantId>,
    /// Behind API Gateway's JWT authorizer: the request must carry the authorizer's claims, and they
    /// must agree with the token this runtime verified itself.
    #[serde(default)]
    pub require_gateway_authorizer: bool,
    /// The platform's own staff: tokens of this issuer for this audience are operators, not
    /// tenants (they carry no tenant claim), and reach the platform routes only. Unset: no token is
    /// an operator. A single-tenant deployment (`tenant`) refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformAccess>,
}

/// Which tokens are the platform staff's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformAccess {
    /// A trusted issuer's name.
    pub issuer: String,
    /// The audience staff tokens carry; never a tenant's.
    pub audience: String,
}

/// The prefix of the platform routes' permissions: never held by a tenant's token, whatever it
/// carries (such scopes are dropped when a token is bound to a tenant).
pub const PLATFORM_PREFIX: &str = "platform:";

#[derive(Debug)]
struct TrustedIssuer {
    config: IssuerConfig,
    keys: Arc<KeyCache>,
}

/// Counters the auth layer keeps (exported as metrics).
#[derive(Debug, Default)]
pub struct AuthMetrics {
    denials: [AtomicU64; DenyReason::ALL.len()],
    /// Requests that reached a handler.
    pub admitted: AtomicU64,
    /// Full signature verifications performed.
    pub verifications: AtomicU64,
    /// Requests served from the verified-token cache.
    pub cache_hits: AtomicU64,
}

/// A refused request: the reason, and the issuer if one was identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub issuer: Option<String>,
}

impl From<DenyReason> for Denial {
    fn from(reason: DenyReason) -> Self {
        Self {
            reason,
            issuer: None,
        }
    }
}

/// What `authenticate` looks at: the headers, the query string, and API Gateway's authorizer claims.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub gateway_claims: Option<&'a HashMap<String, String>>,
}

/// Verifies bearer tokens against the trusted issuers and binds them to tenants.
#[derive(Debug)]
pub struct Authenticator {
    issuers: Vec<TrustedIssuer>,
    cache: cache::VerifiedCache,
    policy: DeploymentPolicy,
    pub metrics: AuthMetrics,
}

const CACHE_CAPACITY: usize = 50_000;

impl Authenticator {
    /// The one tenant this deployment serves (a tenant's Lambda), if it serves only one.
    pub fn deployment_tenant(&self) -> Option<&TenantId> {
        self.policy.tenant.as_ref()
    }

    /// Checks every issuer's configuration, loads its keys and starts its background refresh. An issuer
    /// whose keys cannot be fetched yet fails closed (503) until a fetch succeeds; startup goes on.
    pub async fn load(issuers: &[IssuerConfig], policy: DeploymentPolicy) -> Result<Self, String> {
        let mut trusted = Vec::with_capacity(issuers.len());
        for config in issuers {
            config.check()?;
            if trusted.iter().any(|t: &TrustedIssuer| {
                t.config.name == config.name || t.config.issuer == config.issuer
            }) {
                return Err(format!("issuer `{}` is configured twice", config.name));
            }
            let keys = Arc::new(KeyCache::new(
                &config.name,
                config.jwks.clone(),
                &config.algorithms,
                config.jwks_cache.clone(),
                config.allow_loopback_http,
            )?);
            if let Err(e) = keys.refresh().await {
                tracing::error!(issuer = %config.name, error = %e, "no keys for this issuer yet; its tokens are refused until a fetch succeeds");
            }
            keys.spawn_refresher();
            trusted.push(TrustedIssuer {
                config: config.clone(),
                keys,
            });
        }
        if let Some(p) = &policy.platform {
            let Some(t) = trusted.iter().find(|t| t.config.name == p.issuer) else {
                return Err(format!(
                    "`deployment.platform.issuer` names `{}`, which is no trusted issuer",
                    p.issuer
                ));
            };
            if !t.config.audiences.contains(&p.audience) {
                return Err(format!(
                    "`deployment.platform.audience` `{}` is not among issuer `{}`'s audiences",
                    p.audience, p.issuer
                ));
            }
        }
        Ok(Self::from_parts(trusted, policy))
    }

    /// An authenticator over fixed keys that never fetch (tests and benchmarks).
    pub fn with_fixed_keys(
        issuers: Vec<(IssuerConfig, HashMap<String, Arc<Jwk>>)>,
        policy: DeploymentPolicy,
    ) -> Self {
        let trusted = issuers
            .into_iter()
            .map(|(config, keys)| TrustedIssuer {
                config,
                keys: Arc::new(KeyCache::fixed(keys)),
            })
            .collect();
        Self::from_parts(trusted, policy)
    }

    fn from_parts(issuers: Vec<TrustedIssuer>, policy: DeploymentPolicy) -> Self {
        Self {
            issuers,
            cache: cache::VerifiedCache::new(CACHE_CAPACITY),
            policy,
            metrics: AuthMetrics::default(),
        }
    }

    /// The key cache of issuer `name` (metrics and tests).
    pub fn keys(&self, name: &str) -> Option<&Arc<KeyCache>> {
        self.issuers
            .iter()
            .find(|i| i.config.name == name)
            .map(|i| &i.keys)
    }

    /// Which tokens are the platform staff's, if any are.
    pub fn platform_access(&self) -> Option<&PlatformAccess> {
        self.policy.platform.as_ref()
    }

    /// The configuration of issuer `name`.
    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers
            .iter()
            .find(|i| i.config.name == name)
            .map(|i| &i.config)
    }

    /// Verifies an OpenID Connect id token of issuer `name` (the console's sign-in): signed by one
    /// of that issuer's keys with an allowed algorithm, `iss` the issuer's, `aud` the console's
    /// `client_id`, within its lifetime, and carrying the `nonce` the sign-in sent. Returns its
    /// `sub`. The id token proves who signed in; it is never a credential for the API.
    pub async fn verify_id_token(
        &self,
        name: &str,
        token: &str,
        client_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<String, Denial> {
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.name == name)
            .ok_or(DenyReason::UntrustedIssuer)?;
        let deny = |reason| Denial {
            reason,
            issuer: Some(issuer.config.name.clone()),
        };
        let t = jwt::decode(token).map_err(deny)?;
        if t.issuer_hint() != Some(issuer.config.issuer.as_str()) {
            return Err(deny(DenyReason::UntrustedIssuer));
        }
        if !issuer.config.algorithms.contains(&t.alg) {
            return Err(deny(DenyReason::UnsupportedAlg));
        }
        let key = match issuer.keys.lookup(&t.kid).await {
            Lookup::Found(k) => k,
            Lookup::Unknown => return Err(deny(DenyReason::UnknownKey)),
            Lookup::Stale => return Err(deny(DenyReason::KeysUnavailable)),
        };
        if key.alg != t.alg || !key.verify(t.signing_input.as_bytes(), &t.signature) {
            return Err(deny(DenyReason::BadSignature));
        }
        let mut rules = issuer.config.clone();
        rules.audiences = vec![client_id.to_owned()];
        rules.required_typ = None;
        let claims = jwt::check_claims(t.claims, &rules, now).map_err(deny)?;
        if claims.all.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(deny(DenyReason::BadClaims));
        }
        Ok(claims.sub)
    }

    /// The configured issuers' names.
    pub fn issuer_names(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| i.config.name.as_str())
    }

    /// Denials counted by reason code since start.
    pub fn denial_counts(&self) -> BTreeMap<&'static str, u64> {
        DenyReason::ALL
            .iter()
            .zip(&self.metrics.denials)
            .map(|(r, n)| (r.code(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Requests that reached a handler.
    pub fn admitted(&self) -> u64 {
        self.metrics.admitted.load(Ordering::Relaxed)
    }

    pub fn count_denial(&self, reason: DenyReason) {
        if let Some(i) = DenyReason::ALL.iter().position(|r| *r == reason) {
            self.metrics.denials[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Full verification of a token not in the cache: header, issuer, key, signature, claims.
    async fn verify(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(usize, String, Arc<Jwk>, Arc<Claims>), Denial> {
        let t = jwt::decode(token)?;
        let index = t
            .issuer_hint()
            .and_then(|iss| self.issuers.iter().position(|i| i.config.issuer == iss))
            .ok_or(DenyReason::UntrustedIssuer)?;
        let issuer = &self.issuers[index];
        let deny = |reason| Denial {
            reason,
            issuer: Some(issuer.config.name.clone()),
        };
        if !issuer.config.algorithms.contains(&t.alg) {
            return Err(deny(DenyReason::UnsupportedAlg));
        }
        if let Some(required) = &issuer.config.required_typ
            && !jwt::typ_matches(t.typ.as_deref(), required)
        {
            return Err(deny(DenyReason::BadType));
        }
        let mut key = match issuer.keys.lookup(&t.kid).await {
            Lookup::Found(k) => k,
            Lookup::Unknown => return Err(deny(DenyReason::UnknownKey)),
            Lookup::Stale => return Err(deny(DenyReason::KeysUnavailable)),
        };
        if key.alg != t.alg {
            return Err(deny(DenyReason::UnsupportedAlg));
        }
        self.metrics.verifications.fetch_add(1, Ordering::Relaxed);
        let input = t.signing_input.as_bytes();
        if !key.verify(input, &t.signature) {
            // The issuer may have put new material under the same `kid`: one cooldown-limited refetch.
            let rotated = issuer.keys.refetch_on_demand().await
                && issuer
                    .keys
                    .current(&t.kid)
                    .filter(|k| {
                        !Arc::ptr_eq(k, &key) && k.alg == t.alg && k.verify(input, &t.signature)
                    })
                    .map(|k| key = k)
                    .is_some();
            if !rotated {
                return Err(deny(DenyReason::BadSignature));
            }
        }
        let claims = jwt::check_claims(t.claims, &issuer.config, now).map_err(deny)?;
        Ok((index, t.kid, key, Arc::new(claims)))
    }

    /// Authenticates one request at time `now` (unix seconds) as a tenant's caller; an operator's
    /// token is refused here (`WrongAudience`).
    pub async fn authenticate(
        &self,
        credentials: Credentials<'_>,
        directory: &TenantDirectory,
        now: i64,
    ) -> Result<Tenant, Denial> {
        match self
            .authenticate_caller(credentials, directory, now)
            .await?
        {
            Caller::Tenant(t) => Ok(t),
            Caller::Operator(_) => Err(DenyReason::WrongAudience.into()),
        }
    }

    /// Authenticates one request at time `now` (unix seconds): a tenant's caller, or (with
    /// `DeploymentPolicy::platform`) one of the platform's operators.
    pub async fn authenticate_caller(
        &self,
        credentials: Credentials<'_>,
        directory: &TenantDirectory,
        now: i64,
    ) -> Result<Caller, Denial> {
        let token = bearer_token(credentials.headers, credentials.query)?;
        let hash = cache::token_hash(token);
        let cached = self.cache.get(&hash).filter(|e| {
            let issuer = &self.issuers[e.issuer];
            now <= e.claims.exp.saturating_add(issuer.config.leeway_secs)
                && issuer
                    .keys
                    .current(&e.kid)
                    .is_some_and(|k| Arc::ptr_eq(&k, &e.key))
        });
        let (index, claims) = match cached {
            Some(e) => {
                self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                (e.issuer, e.claims)
            }
            None => {
                self.cache.remove(&hash);
                let (index, kid, key, claims) = self.verify(token, now).await?;
                self.cache
                    .insert(hash, index, kid, key, claims.clone(), now);
                (index, claims)
            }
        };
        let issuer = &self.issuers[index];
        let deny = |reason| Denial {
            reason,
            issuer: Some(issuer.config.name.clone()),
        };
        if let Some(platform) = &self.policy.platform
            && claims.aud.contains(&platform.audience)
        {
            // A staff token: from the platform's issuer only, naming no tenant, and never in
            // a deployment that serves one tenant.
            if issuer.config.name != platform.issuer {
                return Err(deny(DenyReason::WrongAudience));
            }
            if jwt::claim_at(&claims.all, &issuer.config.tenant_claim).is_some() {
                return Err(deny(DenyReason::BadClaims));
            }
            if self.policy.tenant.is_some() {
                return Err(deny(DenyReason::WrongDeployment));
            }
            check_gateway(
                credentials.gateway_claims,
                &claims,
                &issuer.config,
                self.policy.require_gateway_authorizer,
            )
            .map_err(deny)?;
            return Ok(Caller::Operator(Operator(Arc::new(OperatorPrincipal {
                subject: claims.sub.clone(),
                issuer: issuer.config.name.clone(),
                scopes: claims
                    .scopes
                    .iter()
                    .filter(|s| s.starts_with(PLATFORM_PREFIX))
                    .cloned()
                    .collect(),
                expires_at: claims.exp,
            }))));
        }
        let record = bind_tenant(&claims, &issuer.config, directory).map_err(deny)?;
        if !claims.aud.iter().any(|a| *a == record.identity.audience) {
            return Err(deny(DenyReason::WrongAudience));
        }
        if self.policy.tenant.as_ref().is_some_and(|t| *t != record.id) {
            return Err(deny(DenyReason::WrongDeployment));
        }
        check_gateway(
            credentials.gateway_claims,
            &claims,
            &issuer.config,
            self.policy.require_gateway_authorizer,
        )
        .map_err(deny)?;
        // A tenant's caller never holds a platform permission, whatever its token says.
        let scopes = if claims.scopes.iter().any(|s| s.starts_with(PLATFORM_PREFIX)) {
            claims
                .scopes
                .iter()
                .filter(|s| !s.starts_with(PLATFORM_PREFIX))
                .cloned()
                .collect()
        } else {
            claims.scopes.clone()
        };
        Ok(Caller::Tenant(Tenant(Arc::new(Principal {
            record,
            subject: claims.sub.clone(),
            issuer: issuer.config.name.clone(),
            scopes,
            expires_at: claims.exp,
        }))))
    }
}

/// Who a verified token is.
#[derive(Debug, Clone)]
pub enum Caller {
    Tenant(Tenant),
    Operator(Operator),
}

/// One of the platform's operators, verified from a staff token (`DeploymentPolicy::platform`).
#[derive(Debug)]
pub struct OperatorPrincipal {
    pub subject: String,
    pub issuer: String,
    /// Its `platform:` permissions only.
    pub scopes: Vec<String>,
    pub expires_at: i64,
}

/// The extractor platform handlers take. Only the auth layer can build one.
#[derive(Debug, Clone)]
pub struct Operator(Arc<OperatorPrincipal>);

impl Operator {
    pub fn principal(&self) -> &OperatorPrincipal {
        &self.0
    }

    pub fn has_scope(&self, permission: &str) -> bool {
        self.0.scopes.iter().any(|s| s == permission)
    }

    /// Who acted, as audit events name it: `issuer/subject`.
    pub fn actor(&self) -> String {
        format!("{}/{}", self.0.issuer, self.0.subject)
    }

    /// A handle on `record`'s data for this operator: reads through that tenant's own role, as any
    /// caller of that tenant does, with no tenant permission at all (the platform routes decide
    /// what it reads). Its subject is the operator's, prefixed `platform:`.
    pub fn acting_for(&self, record: Arc<TenantRecord>) -> Tenant {
        Tenant(Arc::new(Principal {
            record,
            subject: format!("{PLATFORM_PREFIX}{}", self.0.subject),
            issuer: self.0.issuer.clone(),
            scopes: Vec::new(),
            expires_at: self.0.expires_at,
        }))
    }
}

/// Finds the tenant the token names through the issuer's tenant claim; the tenant must be bound to
/// this issuer.
fn bind_tenant(
    claims: &Claims,
    issuer: &IssuerConfig,
    directory: &TenantDirectory,
) -> Result<Arc<TenantRecord>, DenyReason> {
    let value = jwt::claim_at(&claims.all, &issuer.tenant_claim).ok_or(DenyReason::BadClaims)?;
    let raw = value.as_str().ok_or(DenyReason::BadClaims)?;
    let id = TenantId::parse(raw).map_err(|_| DenyReason::BadClaims)?;
    // A registry copy older than its bound may be serving a tenant suspended since: fail closed.
    if directory.is_stale() {
        return Err(DenyReason::RegistryUnavailable);
    }
    let record = directory.get(&id).ok_or(DenyReason::UnknownTenant)?;
    if record.identity.issuer != issuer.name {
        return Err(DenyReason::TenantIssuerMismatch);
    }
    // Only a token its own issuer signed learns that its tenant is suspended.
    if record.suspended {
        return Err(DenyReason::TenantSuspended);
    }
    Ok(record)
}

/// Behind API Gateway's JWT authorizer, the claims the gateway verified must be the ones we verified.
fn check_gateway(
    gateway: Option<&HashMap<String, String>>,
    claims: &Claims,
    issuer: &IssuerConfig,
    required: bool,
) -> Result<(), DenyReason> {
    let Some(gateway) = gateway else {
        return if required {
            Err(DenyReason::AuthorizerMismatch)
        } else {
            Ok(())
        };
    };
    let agrees = |name: &str, ours: &str| gateway.get(name).is_some_and(|g| g == ours);
    if !agrees("iss", &claims.iss) || !agrees("sub", &claims.sub) {
        return Err(DenyReason::AuthorizerMismatch);
    }
    let ours = jwt::claim_at(&claims.all, &issuer.tenant_claim).and_then(Value::as_str);
    if let (Some(theirs), Some(ours)) = (gateway.get(&issuer.tenant_claim), ours)
        && theirs != ours
    {
        return Err(DenyReason::AuthorizerMismatch);
    }
    Ok(())
}

/// Extracts the one bearer token. Two `Authorization` headers, a token in the query string, or any
/// scheme but `Bearer` is refused: tokens are never accepted from URLs.
fn bearer_token<'h>(headers: &'h HeaderMap, query: Option<&str>) -> Result<&'h str, DenyReason> {
    if query.is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.split('=').next().is_some_and(|k| {
                k.eq_ignore_ascii_case("access_token") || k.eq_ignore_ascii_case("token")
            })
        })
    }) {
        return Err(DenyReason::MultipleTokens);
    }
    // A token in a cookie is never a credential, and next to a bearer header it is a second token.
    let cookie_token = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| {
            pair.split_once('=')
                .is_some_and(|(_, v)| looks_like_jwt(v.trim()))
        });
    // Anthropic's SDKs send their credential as `x-api-key`: the same bearer token, carried there.
    // Either header, never both, and never twice.
    let mut api_keys = headers.get_all("x-api-key").iter();
    let api_key = api_keys.next();
    if api_keys.next().is_some() {
        return Err(DenyReason::MultipleTokens);
    }
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        if cookie_token {
            return Err(DenyReason::MultipleTokens);
        }
        let key = api_key.ok_or(DenyReason::MissingToken)?;
        let key = key.to_str().map_err(|_| DenyReason::Malformed)?;
        if key.is_empty() || key.contains(' ') {
            return Err(DenyReason::Malformed);
        }
        return Ok(key);
    };
    if cookie_token || api_key.is_some() {
        return Err(DenyReason::MultipleTokens);
    }
    if values.next().is_some() {
        return Err(DenyReason::MultipleTokens);
    }
    let value = value.to_str().map_err(|_| DenyReason::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(DenyReason::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(DenyReason::MissingToken);
    }
    if token.is_empty() || token.contains(' ') {
        return Err(DenyReason::Malformed);
    }
    Ok(token)
}

/// Three non-empty base64url segments, the first starting as a JSON object does (`eyJ`).
fn looks_like_jwt(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The verified caller: tenant (with its registry record), subject, issuer and permissions.
#[derive(Debug, Clone)]
pub struct Principal {
    record: Arc<TenantRecord>,
    pub subject: String,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub expires_at: i64,
}

/// The extractor handlers take. Only the auth layer can build one, from a verified token.
#[derive(Debug, Clone)]
pub struct Tenant(Arc<Principal>);

impl Tenant {
    pub fn id(&self) -> &TenantId {
        &self.0.record.id
    }

    pub fn record(&self) -> &TenantRecord {
        &self.0.record
    }

    pub fn principal(&self) -> &Principal {
        &self.0
    }

    /// Whether the token carried `permission` among its scopes (or the caller's tenant granted it
    /// through `with_granted`).
    pub fn has_scope(&self, permission: &str) -> bool {
        self.0.scopes.iter().any(|s| s == permission)
    }

    /// This caller with `permissions` added: what its own tenant's admins granted its subject as a
    /// member (read from the tenant's own tier). The tenant, subject and issuer stay the token's.
    pub fn with_granted(&self, permissions: &[&str]) -> Tenant {
        let mut p = (*self.0).clone();
        for perm in permissions {
            if !p.scopes.iter().any(|s| s == perm) {
                p.scopes.push((*perm).to_owned());
            }
        }
        Tenant(Arc::new(p))
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
