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

/// The secret holding the key new tokens are signed with.
const CURRENT: &str = "dev-idp/signing-key";
/// The secret holding the key the last rotation replaced: still published, so tokens it signed
/// verify until `tenantctl local retire-idp-key` removes it.
const PREVIOUS: &str = "dev-idp/previous-signing-key";

/// Loads the signing key, creating it on first use.
pub async fn signer(secrets: &SecretStore) -> Result<DevSigner> {
    let name = SecretName::platform(CURRENT)?;
    if secrets.exists(&name).await? {
        return DevSigner::from_pkcs8(&secrets.get(&name).await?)
            .context("the dev identity provider's key in the secret store is damaged");
    }
    let signer = DevSigner::generate()?;
    secrets.put(&name, &signer.export_pkcs8()?).await?;
    Ok(signer)
}

/// The key the last rotation replaced, if it is still published.
async fn previous(secrets: &SecretStore) -> Result<Option<DevSigner>> {
    let name = SecretName::platform(PREVIOUS)?;
    if !secrets.exists(&name).await? {
        return Ok(None);
    }
    DevSigner::from_pkcs8(&secrets.get(&name).await?)
        .context("the dev identity provider's previous key in the secret store is damaged")
        .map(Some)
}

/// The published key set: the current key, then the previous one while it is kept.
pub async fn published(secrets: &SecretStore) -> Result<Value> {
    let mut keys = vec![signer(secrets).await?.jwks()["keys"][0].clone()];
    if let Some(p) = previous(secrets).await? {
        keys.push(p.jwks()["keys"][0].clone());
    }
    Ok(json!({ "keys": keys }))
}

/// What a rotation or retirement did, by key id.
#[derive(Debug, serde::Serialize)]
pub struct Keys {
    /// The key id new tokens carry.
    pub current: String,
    /// The key id still published for tokens signed before the rotation, if any.
    pub previous: Option<String>,
}

/// Rotates the signing key: a new key signs from now on, the current one becomes the previous
/// (replacing an older previous key, whose tokens stop verifying), and both are published.
pub async fn rotate(secrets: &SecretStore) -> Result<Keys> {
    let old = signer(secrets).await?;
    let new = DevSigner::generate()?;
    secrets
        .put(&SecretName::platform(PREVIOUS)?, &old.export_pkcs8()?)
        .await?;
    secrets
        .put(&SecretName::platform(CURRENT)?, &new.export_pkcs8()?)
        .await?;
    Ok(Keys {
        current: new.kid().to_owned(),
        previous: Some(old.kid().to_owned()),
    })
}

/// Stops publishing the previous key: tokens it signed are refused once a runtime's key cache
/// refreshes (within the issuer's `jwks_cache.ttl_secs`), or at once by a restarted runtime.
pub async fn retire(secrets: &SecretStore) -> Result<(Keys, Option<String>)> {
    let retired = previous(secrets).await?.map(|p| p.kid().to_owned());
    secrets.delete(&SecretName::platform(PREVIOUS)?).await?;
    Ok((
        Keys {
            current: signer(secrets).await?.kid().to_owned(),
            previous: None,
        },
        retired,
    ))
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

/// Serves the JWKS on `listener` until `shutdown` resolves. The set is read from the secret store
/// on every fetch, so a rotation by another `tenantctl` process is published at once; a set that
/// cannot be read is a 503, which a runtime's key cache treats as a failed refresh (it keeps the
/// keys it has).
pub async fn serve_jwks(
    listener: tokio::net::TcpListener,
    secrets: SecretStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        JWKS_PATH,
        get(move || {
            let secrets = secrets.clone();
            async move {
                match published(&secrets).await {
                    Ok(jwks) => Ok(Json(jwks)),
                    Err(e) => {
                        tracing::warn!(error = %e, "the dev identity provider cannot read its keys");
                        Err(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                    }
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The JWKS URL for a bound IdP address.
pub fn jwks_url(addr: SocketAddr) -> String {
    format!("http://{addr}{JWKS_PATH}")
}
