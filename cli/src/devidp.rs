//! The development identity provider of the local target: an RS256 key in the secret store, its JWKS
//! served on loopback, token minting (`tenantctl token`), and an OpenID Connect authorization code
//! flow with PKCE for the web console: discovery, a login page, and a token endpoint.
//!
//! The login page asks for no password: anyone who can reach the loopback port can sign in as any
//! user and role, exactly as anyone who can run `tenantctl token` can mint one. It is for local
//! evaluation; production tenants sign in with their own issuer. Its protocol is held to the rules
//! a real provider keeps: registered client and redirect URIs only (an unknown one is never
//! redirected to), S256 only, codes single-use, bound to client, redirect URI and challenge, and
//! valid for 60 seconds.
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
    serve_jwks_with(listener, secrets, axum::Router::new(), shutdown).await
}

/// `extra` routes, and the JWKS.
async fn serve_jwks_with(
    listener: tokio::net::TcpListener,
    secrets: SecretStore,
    extra: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = extra.route(
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

/// The console's client id at the dev identity provider.
pub const CONSOLE_CLIENT_ID: &str = "tenantctl-console";
/// How long an authorization code may wait to be exchanged.
pub const CODE_TTL_SECS: i64 = 60;
/// How long the access tokens it gives the console live.
const CONSOLE_TOKEN_SECS: i64 = 3600;

/// An authorization code waiting for its exchange.
#[derive(Debug)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    subject: String,
    access_token: String,
    expires_at: i64,
}

/// The OpenID Connect side of the dev identity provider: the console's registered redirect URIs,
/// the registry it reads tenants' bindings from (set once the runtime has loaded it), and the
/// codes not yet exchanged.
#[derive(Debug)]
pub struct Oidc {
    /// This provider's base URL (`http://127.0.0.1:<port>`).
    pub base: String,
    redirect_uris: Vec<String>,
    directory: std::sync::OnceLock<std::sync::Arc<runtime::registry::TenantDirectory>>,
    codes: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
}

impl Oidc {
    pub fn new(base: String, redirect_uris: Vec<String>) -> Self {
        Self {
            base,
            redirect_uris,
            directory: std::sync::OnceLock::new(),
            codes: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The registry tenants are looked up in (the runtime's copy).
    pub fn use_directory(&self, directory: std::sync::Arc<runtime::registry::TenantDirectory>) {
        let _ = self.directory.set(directory);
    }

    /// The console client the runtime's issuer configuration names.
    pub fn console_client(&self) -> runtime::auth::ConsoleClient {
        runtime::auth::ConsoleClient {
            authorization_endpoint: format!("{}/authorize", self.base),
            token_endpoint: format!("{}/token", self.base),
            client_id: CONSOLE_CLIENT_ID.to_owned(),
            audience_parameter: None,
            send_login_hint: true,
            scope: None,
        }
    }
}

fn unix_now() -> i64 {
    runtime::auth::unix_now()
}

fn page(status: axum::http::StatusCode, title: &str, body: &str) -> axum::response::Response {
    page_to(status, title, &[], body)
}

/// A page whose form may lead (by the provider's redirect) to `origins` as well as here.
fn page_to(
    status: axum::http::StatusCode,
    title: &str,
    origins: &[String],
    body: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let esc = runtime::http::console::html::esc;
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {}; frame-ancestors 'none'",
        origins.join(" ")
    );
    (
        status,
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (axum::http::header::CONTENT_SECURITY_POLICY, csp),
            (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} - tenantctl dev identity provider</title><style>body{{font:15px system-ui,sans-serif;margin:40px;max-width:560px}}label{{display:block;margin-top:12px;font-weight:600}}input,select,button{{font:inherit;padding:4px 8px}}button{{margin-top:16px}}.note{{color:#444}}</style></head><body><h1>{}</h1>{body}</body></html>",
            esc(title),
            esc(title)
        ),
    )
        .into_response()
}

/// Where an authorization request's errors go: back to the client once its client id and
/// redirect URI are the registered ones; before that, only to this provider's own page.
fn authorize_error(
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => {
            return page(
                axum::http::StatusCode::BAD_REQUEST,
                "Sign-in refused",
                description,
            );
        }
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error)
            .append_pair("error_description", description);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    (
        axum::http::StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, url.to_string())],
    )
        .into_response()
}

type Params = std::collections::HashMap<String, String>;

/// What the provider's handlers share: its OpenID Connect state and the secret store (its key).
type IdpState = axum::extract::State<(std::sync::Arc<Oidc>, SecretStore)>;

/// Checks an authorization request. `Err` is the response: a page when the client or redirect
/// URI is not registered, else a redirect carrying the error.
#[allow(clippy::result_large_err)]
fn check_authorize(oidc: &Oidc, p: &Params) -> Result<(), axum::response::Response> {
    let esc = runtime::http::console::html::esc;
    let get = |k: &str| p.get(k).map(String::as_str);
    if get("client_id") != Some(CONSOLE_CLIENT_ID) {
        return Err(page(
            axum::http::StatusCode::BAD_REQUEST,
            "Sign-in refused",
            &format!(
                "<p>unknown client <code>{}</code>: this provider knows only <code>{CONSOLE_CLIENT_ID}</code></p>",
                esc(get("client_id").unwrap_or_default())
            ),
        ));
    }
    let redirect = get("redirect_uri").unwrap_or_default();
    if !oidc.redirect_uris.iter().any(|r| r == redirect) {
        return Err(page(
            axum::http::StatusCode::BAD_REQUEST,
            "Sign-in refused",
            &format!(
                "<p>the redirect URI <code>{}</code> is not registered for this client (registered: <code>{}</code>); nothing was redirected</p>",
                esc(redirect),
                esc(&oidc.redirect_uris.join(" "))
            ),
        ));
    }
    let state = get("state");
    let fail = |e: &str, d: &str| Err(authorize_error(redirect, state, e, d));
    if get("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "only the authorization code flow (response_type=code) is offered",
        );
    }
    if !get("scope").is_some_and(|s| s.split(' ').any(|x| x == "openid")) {
        return fail("invalid_scope", "the scope must include openid");
    }
    if get("code_challenge_method") != Some("S256") {
        return fail(
            "invalid_request",
            "PKCE is required with code_challenge_method=S256 (plain is refused)",
        );
    }
    let challenge = get("code_challenge").unwrap_or_default();
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        );
    }
    if get("nonce").is_none_or(str::is_empty) {
        return fail("invalid_request", "a nonce is required");
    }
    Ok(())
}

/// The roles the login page offers: the built-in tenant roles, then the platform's.
fn roles() -> Vec<&'static str> {
    runtime::auth::roles::TENANT_ROLES
        .iter()
        .chain(runtime::auth::roles::PLATFORM_ROLES)
        .map(|(r, _)| *r)
        .collect()
}

async fn authorize_page(
    axum::extract::State((oidc, _)): IdpState,
    axum::extract::Query(p): axum::extract::Query<Params>,
) -> axum::response::Response {
    let esc = runtime::http::console::html::esc;
    if let Err(r) = check_authorize(&oidc, &p) {
        return r;
    }
    let mut hidden = String::new();
    for k in [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ] {
        if let Some(v) = p.get(k) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(v)
            ));
        }
    }
    let hint = p.get("login_hint").map(String::as_str).unwrap_or_default();
    let staff = hint == "platform";
    let options: String = roles()
        .iter()
        .filter(|r| r.starts_with("platform_") == staff)
        .map(|r| format!("<option value=\"{r}\">{r}</option>"))
        .collect();
    let tenant = if staff {
        String::new()
    } else {
        format!(
            "<label for=\"tenant\">Tenant</label><input id=\"tenant\" name=\"tenant\" value=\"{}\" required>",
            esc(hint)
        )
    };
    // The login form's answer redirects to the client's registered redirect URI.
    let origins: Vec<String> = oidc
        .redirect_uris
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization())
        .collect();
    page_to(
        axum::http::StatusCode::OK,
        "Sign in",
        &origins,
        &format!(
            "<p class=\"note\">The local development identity provider: no password; pick who to be. Production tenants sign in with their own identity provider.</p><form method=\"post\" action=\"/authorize\">{hidden}{tenant}<label for=\"subject\">User</label><input id=\"subject\" name=\"subject\" required maxlength=\"100\" autocomplete=\"username\"><label for=\"role\">Role</label><select id=\"role\" name=\"role\">{options}</select><br><button type=\"submit\" id=\"sign-in\">Sign in</button></form>"
        ),
    )
}

async fn authorize_submit(
    axum::extract::State((oidc, secrets)): IdpState,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let p: Params = url::form_urlencoded::parse(&body).into_owned().collect();
    if let Err(r) = check_authorize(&oidc, &p) {
        return r;
    }
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    let (redirect, state) = (get("redirect_uri"), p.get("state").map(String::as_str));
    let subject = get("subject").trim();
    if subject.is_empty() || subject.len() > 100 || subject.chars().any(char::is_control) {
        return authorize_error(
            redirect,
            state,
            "invalid_request",
            "the user name must be 1-100 printable characters",
        );
    }
    let role = get("role");
    let Some(scopes) = runtime::auth::roles::TENANT_ROLES
        .iter()
        .chain(runtime::auth::roles::PLATFORM_ROLES)
        .find(|(r, _)| *r == role)
        .map(|(_, perms)| perms.to_vec())
    else {
        return authorize_error(redirect, state, "invalid_request", "unknown role");
    };
    let scopes: Vec<String> = scopes.into_iter().map(str::to_owned).collect();
    let signer = match signer(&secrets).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the dev identity provider cannot read its key");
            return authorize_error(
                redirect,
                state,
                "server_error",
                "the provider cannot read its signing key",
            );
        }
    };
    let access_token = if role.starts_with("platform_") {
        mint_operator(&signer, subject, &scopes, CONSOLE_TOKEN_SECS)
    } else {
        let Ok(tenant) = TenantId::parse(get("tenant").trim()) else {
            return authorize_error(
                redirect,
                state,
                "invalid_request",
                "the tenant id is not one",
            );
        };
        let record = oidc.directory.get().and_then(|d| d.get(&tenant));
        match record {
            Some(r) if r.identity.issuer == crate::platform::PLATFORM_ISSUER => mint(
                &signer,
                &r.identity,
                &tenant,
                subject,
                &scopes,
                CONSOLE_TOKEN_SECS,
            ),
            _ => {
                return authorize_error(
                    redirect,
                    state,
                    "access_denied",
                    "this provider signs in no user of that tenant (it is unknown, or bound to another issuer)",
                );
            }
        }
    };
    let Some(code) = runtime::http::console::seal::random_token(32) else {
        return authorize_error(
            redirect,
            state,
            "server_error",
            "the random number generator failed",
        );
    };
    let now = unix_now();
    if let Ok(mut codes) = oidc.codes.lock() {
        codes.retain(|_, g| g.expires_at > now);
        codes.insert(
            code.clone(),
            Grant {
                client_id: get("client_id").to_owned(),
                redirect_uri: redirect.to_owned(),
                challenge: get("code_challenge").to_owned(),
                nonce: get("nonce").to_owned(),
                subject: subject.to_owned(),
                access_token,
                expires_at: now + CODE_TTL_SECS,
            },
        );
    }
    let Ok(mut url) = url::Url::parse(redirect) else {
        return page(
            axum::http::StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "bad redirect URI",
        );
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    (
        axum::http::StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, url.to_string())],
    )
        .into_response()
}

fn token_error(error: &str, description: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        axum::http::StatusCode::BAD_REQUEST,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /token`: the code, exchanged once, by the client it was issued to, for the redirect URI it
/// was issued for, with the verifier of its challenge.
async fn token(
    axum::extract::State((oidc, secrets)): IdpState,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let p: Params = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return token_error(
            "unsupported_grant_type",
            "only authorization_code is offered",
        );
    }
    // Taken out at once: a code is used once, whether this exchange succeeds or not.
    let grant = oidc
        .codes
        .lock()
        .ok()
        .and_then(|mut c| c.remove(get("code")));
    let Some(grant) = grant else {
        return token_error("invalid_grant", "the code is unknown or was already used");
    };
    let now = unix_now();
    if grant.expires_at <= now {
        return token_error("invalid_grant", "the code expired (codes live 60 seconds)");
    }
    if get("client_id") != grant.client_id {
        return token_error("invalid_grant", "the code was issued to another client");
    }
    if get("redirect_uri") != grant.redirect_uri {
        return token_error(
            "invalid_grant",
            "the redirect_uri is not the one the code was issued for",
        );
    }
    let verifier = get("code_verifier");
    if !(43..=128).contains(&verifier.len())
        || !runtime::http::console::seal::same(
            &runtime::http::console::seal::s256(verifier),
            &grant.challenge,
        )
    {
        return token_error(
            "invalid_grant",
            "the code_verifier does not match the code_challenge",
        );
    }
    let signer = match signer(&secrets).await {
        Ok(s) => s,
        Err(_) => return token_error("server_error", "the provider cannot read its signing key"),
    };
    let id_token = signer.sign(&json!({
        "iss": DEV_ISSUER,
        "sub": grant.subject,
        "aud": grant.client_id,
        "iat": now,
        "exp": now + 300,
        "nonce": grant.nonce,
    }));
    (
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (axum::http::header::PRAGMA, "no-cache"),
        ],
        Json(json!({
            "access_token": grant.access_token,
            "id_token": id_token,
            "token_type": "Bearer",
            "expires_in": CONSOLE_TOKEN_SECS,
        })),
    )
        .into_response()
}

/// The OpenID Provider metadata (discovery).
fn discovery(oidc: &Oidc) -> Value {
    json!({
        "issuer": DEV_ISSUER,
        "authorization_endpoint": format!("{}/authorize", oidc.base),
        "token_endpoint": format!("{}/token", oidc.base),
        "jwks_uri": format!("{}{JWKS_PATH}", oidc.base),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid"],
    })
}

/// Serves the JWKS and the OpenID Connect endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    secrets: SecretStore,
    oidc: std::sync::Arc<Oidc>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let meta = discovery(&oidc);
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let meta = meta.clone();
                async move { Json(meta) }
            }),
        )
        .route("/authorize", get(authorize_page).post(authorize_submit))
        .route("/token", axum::routing::post(token))
        .with_state((oidc, secrets.clone()));
    serve_jwks_with(listener, secrets, app, shutdown).await
}

/// The JWKS URL for a bound IdP address.
pub fn jwks_url(addr: SocketAddr) -> String {
    format!("http://{addr}{JWKS_PATH}")
}
