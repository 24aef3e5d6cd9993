//! The development identity provider of the local target: an RS256 key in the secret store, its JWKS
//! served on loopback, and token minting (`tenantctl token`).
//!
//! For local evaluation only; production tenants bind to a real issuer. The private key never leaves
//! the secret store except into this process's memory.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Json;
use axum::routing::get;
use runtime::auth::signer::DevSigner;
use runtime::domain::TenantId;
use runtime::registry::IdentityBinding;
use runtime::secrets::{SecretName, SecretStore};
use serde_json::{Value, json};

/// The `iss` of tokens the dev identity provider mints.
pub const DEV_ISSUER: &str = "urn:tenantctl:dev-idp";
/// The audience of the platform staff's tokens (`tenantctl token --operator`).
pub const OPERATOR_AUDIENCE: &str = "tenantctl-platform";
/// The path its JWKS is served at.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Loads the signing key, creating it on first use.
pub async fn signer(secrets: &SecretStore) -> Result<DevSigner> {
    let name = SecretName::platform("dev-idp/signing-key")?;
    if secrets.exists(&name).await? {
        return DevSigner::from_pkcs8(&secrets.get(&name).await?)
            .context("the dev identity provider's key in the secret store is damaged");
    }
    let signer = DevSigner::generate()?;
    secrets.put(&name, &signer.export_pkcs8()?).await?;
    Ok(signer)
}

/// The claims every dev token carries: this issuer, `subject`, `audience`, `scopes`, valid from now
/// for `ttl_secs`.
fn claims(subject: &str, audience: &str, scopes: &[String], ttl_secs: i64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    json!({
        "iss": DEV_ISSUER,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_secs,
        "jti": uuid::Uuid::new_v4().to_string(),
        "scope": scopes.join(" "),
    })
}

/// Mints an access token for `tenant` as the tenant's identity binding expects it.
pub fn mint(
    signer: &DevSigner,
    binding: &IdentityBinding,
    tenant: &TenantId,
    subject: &str,
    scopes: &[String],
    ttl_secs: i64,
) -> String {
    let mut claims = claims(subject, &binding.audience, scopes, ttl_secs);
    if let Value::Object(map) = &mut claims {
        map.insert(
            binding.tenant_claim.clone(),
            Value::String(tenant.to_string()),
        );
    }
    signer.sign(&claims)
}

/// Mints an access token for one of the platform's operators: the operator audience, no tenant
/// claim, `platform:` scopes.
pub fn mint_operator(
    signer: &DevSigner,
    subject: &str,
    scopes: &[String],
    ttl_secs: i64,
) -> String {
    signer.sign(&claims(subject, OPERATOR_AUDIENCE, scopes, ttl_secs))
}

/// Serves the JWKS on `listener` until `shutdown` resolves.
pub async fn serve_jwks(
    listener: tokio::net::TcpListener,
    jwks: Value,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(JWKS_PATH, get(move || async move { Json(jwks) }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The JWKS URL for a bound IdP address.
pub fn jwks_url(addr: SocketAddr) -> String {
    format!("http://{addr}{JWKS_PATH}")
}
