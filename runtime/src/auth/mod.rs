//! Identity at the edge: one layer over the whole router, deny by default.
//!
//! `require_auth` runs before routing for every request except the public routes of
//! `routes::ROUTES`. It verifies the bearer token (see `jwt`), binds the tenant to its issuer and
//! audience through the `TenantDirectory`, and stores a `Tenant` in the request. Handlers take the
//! `Tenant` extractor, which rejects when it is absent, so a route that somehow escaped the layer still
//! fails closed. `require_permission` then checks the route's permission from the one route table.
//!
//! **Invariant:** the verified token is the only source of tenant identity; nothing in a body, query or
//! header other than `Authorization` is read here. This module must not touch the database.

pub mod jwks;
pub mod jwt;
pub mod signer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::TenantId;
use crate::error::ApiError;
use crate::server::AppState;
use crate::tenancy::{TenantDirectory, TenantRecord};
use jwks::{JwksSource, KeyCache};
use jwt::DenyReason;

/// A trusted issuer as configured by the platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuerConfig {
    /// The name tenant manifests bind to (`platform` is the default issuer).
    pub name: String,
    /// The exact `iss` value.
    pub issuer: String,
    pub jwks: JwksSource,
}

#[derive(Debug)]
struct TrustedIssuer {
    name: String,
    issuer: String,
    keys: KeyCache,
}

/// Verifies bearer tokens against the trusted issuers and binds them to tenants.
#[derive(Debug)]
pub struct Authenticator {
    issuers: Vec<TrustedIssuer>,
    leeway_secs: i64,
    denials: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    verified: AtomicU64,
    admitted: AtomicU64,
}

impl Authenticator {
    /// Loads every issuer's keys; an issuer whose keys cannot be loaded stops startup.
    pub async fn load(issuers: &[IssuerConfig], leeway_secs: i64) -> Result<Self, jwks::JwksError> {
        let mut trusted = Vec::with_capacity(issuers.len());
        for cfg in issuers {
            trusted.push(TrustedIssuer {
                name: cfg.name.clone(),
                issuer: cfg.issuer.clone(),
                keys: KeyCache::load(cfg.jwks.clone(), Duration::from_secs(30)).await?,
            });
        }
        Ok(Self::from_parts(trusted, leeway_secs))
    }

    /// An authenticator over fixed keys (tests).
    pub fn with_fixed_keys(
        issuers: Vec<(
            String,
            String,
            std::collections::HashMap<String, jwks::RsaKey>,
        )>,
        leeway_secs: i64,
    ) -> Self {
        let trusted = issuers
            .into_iter()
            .map(|(name, issuer, keys)| TrustedIssuer {
                name,
                issuer,
                keys: KeyCache::fixed(keys),
            })
            .collect();
        Self::from_parts(trusted, leeway_secs)
    }

    fn from_parts(issuers: Vec<TrustedIssuer>, leeway_secs: i64) -> Self {
        Self {
            issuers,
            leeway_secs,
            denials: std::sync::Mutex::new(BTreeMap::new()),
            verified: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
        }
    }

    /// Denials counted by reason code since start.
    pub fn denial_counts(&self) -> BTreeMap<&'static str, u64> {
        self.denials.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Requests that passed authentication and the permission check, i.e. reached a handler.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    fn count_denial(&self, reason: DenyReason) {
        if let Ok(mut m) = self.denials.lock() {
            *m.entry(reason.code()).or_default() += 1;
        }
    }

    /// Authenticates one request from its headers and query string.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        directory: &TenantDirectory,
        now: i64,
    ) -> Result<Tenant, (DenyReason, Option<String>)> {
        let token = bearer_token(headers, query).map_err(|r| (r, None))?;
        let unverified = jwt::decode(token).map_err(|r| (r, None))?;
        let issuer = unverified
            .issuer_hint()
            .and_then(|iss| self.issuers.iter().find(|i| i.issuer == iss))
            .ok_or((DenyReason::UntrustedIssuer, None))?;
        let issuer_name = Some(issuer.name.clone());
        let key = issuer
            .keys
            .key(&unverified.kid)
            .await
            .ok_or((DenyReason::UnknownKey, issuer_name.clone()))?;
        unverified
            .verify_signature(&key)
            .map_err(|r| (r, issuer_name.clone()))?;
        let claims = jwt::check_claims(unverified.claims, now, self.leeway_secs)
            .map_err(|r| (r, issuer_name.clone()))?;
        let record = bind_tenant(&claims.all, &issuer.name, directory)
            .await
            .map_err(|r| (r, issuer_name.clone()))?;
        if !claims.aud.iter().any(|a| *a == record.identity.audience) {
            return Err((DenyReason::WrongAudience, issuer_name));
        }
        self.verified.fetch_add(1, Ordering::Relaxed);
        Ok(Tenant(Arc::new(Principal {
            record,
            subject: claims.sub,
            issuer: issuer.name.clone(),
            scopes: claims.scopes,
            expires_at: claims.exp,
        })))
    }
}

/// Finds the tenant the token names, through the claims the tenants bound to this issuer declared.
async fn bind_tenant(
    claims: &BTreeMap<String, Value>,
    issuer_name: &str,
    directory: &TenantDirectory,
) -> Result<Arc<TenantRecord>, DenyReason> {
    let tenants = directory.snapshot().await;
    let mut claim_names: Vec<&str> = tenants
        .values()
        .filter(|t| t.identity.issuer == issuer_name)
        .map(|t| t.identity.tenant_claim.as_str())
        .collect();
    claim_names.sort_unstable();
    claim_names.dedup();
    let mut found: Option<&Arc<TenantRecord>> = None;
    for claim in claim_names {
        let Some(value) = claims.get(claim) else {
            continue;
        };
        let raw = value.as_str().ok_or(DenyReason::BadClaims)?;
        let id = TenantId::parse(raw).map_err(|_| DenyReason::UnknownTenant)?;
        let record = tenants.get(&id).ok_or(DenyReason::UnknownTenant)?;
        if record.identity.issuer != issuer_name || record.identity.tenant_claim != claim {
            return Err(DenyReason::TenantIssuerMismatch);
        }
        if found.is_some_and(|f| f.id != record.id) {
            return Err(DenyReason::BadClaims);
        }
        found = Some(record);
    }
    found.cloned().ok_or(DenyReason::UnknownTenant)
}

/// Extracts the one bearer token. Two `Authorization` headers, a token in the query string, or any
/// scheme but `Bearer` is refused: tokens are never accepted from URLs.
fn bearer_token<'h>(headers: &'h HeaderMap, query: Option<&str>) -> Result<&'h str, DenyReason> {
    if query.is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("access_token"))
        })
    }) {
        return Err(DenyReason::MultipleTokens);
    }
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(DenyReason::MissingToken)?;
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

/// The verified caller: tenant (with its registry record), subject, issuer and scopes.
#[derive(Debug)]
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
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Tenant>()
            .cloned()
            .ok_or(ApiError::Unauthenticated(DenyReason::MissingToken))
    }
}

/// The request id of this request (set by `assign_request_id`).
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub uuid::Uuid);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Middleware: authenticate every non-public request before routing.
pub async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if crate::routes::is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let outcome = state
        .auth
        .authenticate(
            req.headers(),
            req.uri().query(),
            &state.directory,
            unix_now(),
        )
        .await;
    match outcome {
        Ok(tenant) => {
            req.extensions_mut().insert(tenant);
            next.run(req).await
        }
        Err((reason, issuer)) => {
            state.auth.count_denial(reason);
            let request_id = req.extensions().get::<RequestId>().map(|r| r.0);
            tracing::info!(
                reason = reason.code(),
                route = %req.uri().path(),
                issuer = issuer.as_deref().unwrap_or("-"),
                request_id = ?request_id,
                "request denied"
            );
            ApiError::Unauthenticated(reason).into_response()
        }
    }
}

/// Route middleware: the route's permission from `routes::ROUTES` must be among the token's scopes.
/// A route without an entry is refused.
pub async fn require_permission(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let Some(spec) = matched.and_then(|m| crate::routes::lookup(&method, m.as_str())) else {
        return ApiError::Forbidden("route_not_permitted").into_response();
    };
    let Some(permission) = spec.permission else {
        state.auth.admitted.fetch_add(1, Ordering::Relaxed);
        return next.run(req).await;
    };
    let allowed = req
        .extensions()
        .get::<Tenant>()
        .is_some_and(|t| t.0.scopes.iter().any(|s| s == permission));
    if allowed {
        state.auth.admitted.fetch_add(1, Ordering::Relaxed);
        next.run(req).await
    } else {
        state.auth.count_denial(DenyReason::InsufficientScope);
        ApiError::Forbidden("insufficient_scope").into_response()
    }
}

/// Middleware: give every request an id, echoed in `x-request-id`.
pub async fn assign_request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4();
    req.extensions_mut().insert(RequestId(id));
    let mut response = next.run(req).await;
    if let Ok(value) = http::HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
