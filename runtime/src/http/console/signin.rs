//! Browser sign-in: OpenID Connect's authorization code flow with PKCE (S256), the console being a
//! public client of the caller's own trusted issuer.
//!
//! `login` looks the tenant up, takes its issuer's `console` client (a tenant whose issuer has none
//! cannot sign in here; the message does not tell an unknown tenant from that), and sends the
//! browser to the issuer with a fresh `state`, `nonce` and code challenge, kept sealed in a
//! short-lived cookie bound to the callback path. `callback` checks the `state`, exchanges the code
//! with the verifier, verifies the id token (signature, issuer, audience, nonce), then verifies the
//! access token exactly as the API will and checks it is for the tenant asked for. Only then is the
//! session cookie set.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pages::error_page;
use super::{PREFIX, SESSION_COOKIE, SIGNIN_COOKIE, Session, Signed, seal, set_cookie};
use crate::auth::{Caller, unix_now};
use crate::domain::TenantId;
use crate::state::AppState;

/// How long a sign-in may take between leaving for the issuer and coming back.
const SIGNIN_SECS: i64 = 600;

/// A sign-in in progress, sealed in `SIGNIN_COOKIE`.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    issuer: String,
    /// The tenant asked for, or `None` for platform staff.
    tenant: Option<String>,
    exp: i64,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    tenant: Option<String>,
    staff: Option<String>,
}

/// The `Set-Cookie` that ends a sign-in in progress.
fn clear_signin(settings: &crate::state::ConsoleSettings) -> HeaderValue {
    set_cookie(
        settings,
        SIGNIN_COOKIE,
        "",
        &format!("{PREFIX}/callback"),
        "Lax",
        0,
    )
}

fn callback_url(public_url: &str) -> String {
    format!("{public_url}{PREFIX}/callback")
}

/// `GET /console/login?tenant=<id>` (or `?staff=1`): starts a sign-in with the issuer.
pub async fn login(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let Some(settings) = state.console.clone() else {
        return crate::http::error::ApiError::NotFound.into_response();
    };
    let refuse = |what: &str| {
        error_page(
            StatusCode::BAD_REQUEST,
            "Cannot sign in",
            &format!(
                "cannot sign in to `{what}` here: it is not a tenant of this platform, or its identity provider has no console sign-in configured"
            ),
            "check the tenant id, or ask your platform operator to configure `console` for your issuer",
        )
    };
    let (issuer_name, audience, tenant) = if q.staff.is_some() {
        match state.auth.platform_access() {
            Some(p) => (p.issuer.clone(), p.audience.clone(), None),
            None => return refuse("platform staff"),
        }
    } else {
        let raw = q.tenant.as_deref().unwrap_or_default().trim();
        let Ok(id) = TenantId::parse(raw) else {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Cannot sign in",
                "the tenant id is empty or not one (lowercase letters, digits and `-`)",
                "type your organisation's tenant id, e.g. `acme`",
            );
        };
        match state.directory.get(&id) {
            Some(r) if !r.suspended => (
                r.identity.issuer.clone(),
                r.identity.audience.clone(),
                Some(id.as_str().to_owned()),
            ),
            _ => return refuse(id.as_str()),
        }
    };
    let Some(client) = state
        .auth
        .issuer(&issuer_name)
        .and_then(|i| i.console.clone())
    else {
        return refuse(tenant.as_deref().unwrap_or("platform staff"));
    };
    let (Some(state_value), Some(nonce), Some(verifier)) = (
        seal::random_token(24),
        seal::random_token(24),
        seal::random_token(48),
    ) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot sign in",
            "the system's random number generator failed",
            "try again",
        );
    };
    let pending = Pending {
        state: state_value,
        nonce,
        verifier,
        issuer: issuer_name,
        tenant: tenant.clone(),
        exp: unix_now() + SIGNIN_SECS,
    };
    let Ok(mut url) = url::Url::parse(&client.authorization_endpoint) else {
        return refuse(tenant.as_deref().unwrap_or("platform staff"));
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", &callback_url(&settings.public_url))
            .append_pair(
                "scope",
                &match client
                    .scope
                    .as_deref()
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                {
                    Some(extra) => format!("openid {extra}"),
                    None => "openid".to_owned(),
                },
            )
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &seal::s256(&pending.verifier))
            .append_pair("code_challenge_method", "S256");
        if client.send_login_hint {
            q.append_pair("login_hint", tenant.as_deref().unwrap_or("platform"));
        }
        if let Some(p) = &client.audience_parameter {
            q.append_pair(p, &audience);
        }
    }
    let Some(sealed) = seal::seal(&settings.session_key, SIGNIN_COOKIE, &pending) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot sign in",
            "the sign-in could not be sealed",
            "try again; if it persists, check the console's session key",
        );
    };
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response();
    // `Lax`: the issuer sends the browser back with a top-level navigation from its own site.
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            &settings,
            SIGNIN_COOKIE,
            &sealed,
            &format!("{PREFIX}/callback"),
            "Lax",
            SIGNIN_SECS,
        ),
    );
    r
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// `GET /console/callback`: the issuer sends the browser back here with a code.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(settings) = state.console.clone() else {
        return crate::http::error::ApiError::NotFound.into_response();
    };
    let fail = |why: String| {
        let mut r = error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            &why,
            "start again from the sign-in page",
        );
        r.headers_mut()
            .append(header::SET_COOKIE, clear_signin(&settings));
        r
    };
    let Some(pending) = super::cookie(&headers, SIGNIN_COOKIE)
        .and_then(|c| seal::open::<Pending>(&settings.session_key, SIGNIN_COOKIE, c))
    else {
        return fail("no sign-in is in progress in this browser (or it was changed)".into());
    };
    let now = unix_now();
    if pending.exp <= now {
        return fail("the sign-in took longer than 10 minutes".into());
    }
    if !q
        .state
        .as_deref()
        .is_some_and(|s| seal::same(s, &pending.state))
    {
        return fail("the `state` the issuer returned is not this sign-in's".into());
    }
    if let Some(e) = &q.error {
        return fail(format!(
            "the identity provider refused: {e}{}",
            q.error_description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ));
    }
    let Some(code) = q.code.as_deref() else {
        return fail("the issuer returned no code".into());
    };
    let Some(client) = state
        .auth
        .issuer(&pending.issuer)
        .and_then(|i| i.console.clone())
    else {
        return fail("the issuer of this sign-in is no longer configured for the console".into());
    };
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &callback_url(&settings.public_url))
        .append_pair("client_id", &client.client_id)
        .append_pair("code_verifier", &pending.verifier)
        .finish();
    let answer = http_client()
        .post(&client.token_endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await;
    let tokens: Value = match answer {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(e) => return fail(format!("the token endpoint's answer is not JSON: {e}")),
        },
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            return fail(format!(
                "the token endpoint refused the code ({status} {})",
                v["error"].as_str().unwrap_or("error")
            ));
        }
        Err(e) => return fail(format!("the token endpoint cannot be reached: {e}")),
    };
    let (Some(access), Some(id_token)) =
        (tokens["access_token"].as_str(), tokens["id_token"].as_str())
    else {
        return fail("the token endpoint returned no access token or no id token".into());
    };
    let signed_in = match state
        .auth
        .verify_id_token(
            &pending.issuer,
            id_token,
            &client.client_id,
            &pending.nonce,
            now,
        )
        .await
    {
        Ok(sub) => sub,
        Err(d) => return fail(format!("the id token was refused: {}", d.reason.code())),
    };
    let caller = match super::verify_token(&state, access, now).await {
        Ok(c) => c,
        Err(d) => {
            return fail(format!(
                "the access token is not accepted by this API: {}",
                d.reason.code()
            ));
        }
    };
    let (subject, expires_at) = match (&caller, &pending.tenant) {
        (Caller::Tenant(t), Some(want)) if t.id().as_str() == want => {
            (t.principal().subject.clone(), t.principal().expires_at)
        }
        (Caller::Operator(o), None) => (o.principal().subject.clone(), o.principal().expires_at),
        (Caller::Tenant(t), _) => {
            return fail(format!(
                "you signed in as a user of `{}`, not of the tenant you asked for",
                t.id().as_str()
            ));
        }
        (Caller::Operator(_), Some(_)) => {
            return fail("you signed in as platform staff, not as a user of the tenant".into());
        }
    };
    if subject != signed_in {
        return fail("the id token and the access token name different users".into());
    }
    let Some(csrf) = seal::random_token(24) else {
        return fail("the system's random number generator failed".into());
    };
    let session = Session {
        token: access.to_owned(),
        csrf,
    };
    let Some(sealed) = seal::seal(&settings.session_key, SESSION_COOKIE, &session) else {
        return fail("the session could not be sealed".into());
    };
    // A page, not a redirect: the browser arrived from the issuer's site, and a `SameSite=Strict`
    // cookie is only sent once a navigation starts on this site.
    let mut r = super::pages::frame(
        None,
        "Signed in",
        "",
        "<p>Signed in. <a href=\"/console\">Continue to the console</a>.</p>".into(),
    );
    r.headers_mut()
        .insert(header::REFRESH, HeaderValue::from_static("0;url=/console"));
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &settings,
            SESSION_COOKIE,
            &sealed,
            PREFIX,
            "Strict",
            expires_at - now,
        ),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, clear_signin(&settings));
    r
}

/// `POST /console/logout`: ends the session (its form carries the CSRF token).
pub async fn logout(signed: Signed, headers: HeaderMap, body: bytes::Bytes) -> Response {
    if let Err(r) = signed.write_form(&headers, &body) {
        return *r;
    }
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("{PREFIX}?signed_out=bye"))],
    )
        .into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, super::clear_session(&signed.settings));
    r
}
