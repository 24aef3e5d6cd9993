//! The web console under `/console`: server-rendered pages for tenant members, admins and finance,
//! and for the platform's operators and finance.
//!
//! **No backdoor.** A page holds no privilege of its own: its session is the caller's access token
//! (sealed in an `HttpOnly`, `SameSite=Strict` cookie), and every figure on it comes from calling
//! this runtime's API in-process with that token, through the same edge, permission check, tenant
//! binding and audit as any client's request (`Signed::get`). A page the token may not read shows
//! the API's refusal. Writes are forms, each checked for its CSRF token and its origin, then sent
//! to the API the same way. Sign-in is OpenID Connect's authorization code flow with PKCE against
//! the tenant's own trusted issuer (`signin`).
//!
//! Every console response carries a strict Content-Security-Policy (no script at all; styles from
//! this origin only), `no-store`, and refuses framing.

pub mod html;
mod pages;
pub mod seal;
mod signin;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::auth::jwt::DenyReason;
use crate::auth::{Caller, Credentials, Denial, unix_now};
use crate::http::middleware::RequestId;
use crate::state::{AppState, ConsoleSettings};

pub use pages::*;
pub use signin::{callback, login, logout};

/// The session cookie: the caller's access token, sealed.
pub const SESSION_COOKIE: &str = "tenantctl_console";
/// The sign-in cookie: the state, nonce and PKCE verifier of a sign-in in progress, sealed.
pub const SIGNIN_COOKIE: &str = "tenantctl_console_signin";
/// The prefix of every console path.
pub const PREFIX: &str = "/console";

/// The API router without the console's routes: what the console's pages call in-process.
#[derive(Clone, Debug)]
pub struct ConsoleApi(pub Router);

/// What a session cookie seals: the token (its own `exp` bounds the session) and the CSRF token.
#[derive(Serialize, Deserialize)]
struct Session {
    token: String,
    csrf: String,
}

/// A signed-in console request: who the token says the caller is, and how to call the API as it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub caller: Caller,
    token: String,
    /// The form token writes must carry.
    pub csrf: String,
    api: Router,
    request_id: uuid::Uuid,
    settings: Arc<ConsoleSettings>,
}

/// An API call the console made that did not succeed: the API's status, code and message.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Signed {
    /// Calls the API as the signed-in caller: `method` on `uri` (path and query) with an optional
    /// JSON body. A success's headers and body; a refusal as the API's status, code and message.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<(HeaderMap, bytes::Bytes), ApiFailure> {
        let internal = |message: String| ApiFailure {
            status: 500,
            code: "console_error".into(),
            message,
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header("x-request-id", self.request_id.to_string());
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                axum::body::Body::from(b.to_string())
            }
            None => axum::body::Body::empty(),
        };
        let req = req.body(body).map_err(|e| internal(e.to_string()))?;
        let response = self
            .api
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| internal(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 64 << 20)
            .await
            .map_err(|e| internal(e.to_string()))?;
        if !parts.status.is_success() {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ApiFailure {
                status: parts.status.as_u16(),
                code: v["error"]["code"].as_str().unwrap_or("error").to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or("the API refused the request")
                    .to_owned(),
            });
        }
        Ok((parts.headers, bytes))
    }

    /// `GET uri` as JSON.
    pub async fn get(&self, uri: &str) -> Result<Value, ApiFailure> {
        let (_, bytes) = self.call(Method::GET, uri, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiFailure {
            status: 500,
            code: "console_error".into(),
            message: format!("the API's answer to {uri} is not JSON: {e}"),
        })
    }

    /// Whether the caller is one of the platform's operators.
    pub fn is_operator(&self) -> bool {
        matches!(self.caller, Caller::Operator(_))
    }

    /// Whether the token carries `permission` (the navigation shows what it may open; the API
    /// decides what it may read, including roles the tenant's admins granted).
    pub fn may(&self, permission: &str) -> bool {
        match &self.caller {
            Caller::Tenant(t) => t.has_scope(permission),
            Caller::Operator(o) => o.has_scope(permission),
        }
    }

    /// Who is signed in, as the header shows it.
    pub fn who(&self) -> (String, String) {
        match &self.caller {
            Caller::Tenant(t) => (
                t.principal().subject.clone(),
                format!("{} ({})", t.record().display_name, t.id().as_str()),
            ),
            Caller::Operator(o) => (o.principal().subject.clone(), "platform staff".into()),
        }
    }

    /// Refuses a write that is not this session's own form: the CSRF token must match, and the
    /// browser's `Sec-Fetch-Site` and `Origin`, when sent, must be this origin.
    pub fn check_write(
        &self,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
    ) -> Result<(), Box<Response>> {
        let refuse = |why: &str| {
            Box::new(pages::error_page(
                StatusCode::FORBIDDEN,
                "This form was not accepted",
                why,
                "reload the page and submit the form again",
            ))
        };
        if !form_csrf.is_some_and(|c| seal::same(c, &self.csrf)) {
            return Err(refuse(
                "the form's CSRF token is missing or is not this session's",
            ));
        }
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
            && site != "same-origin"
        {
            return Err(refuse("the request came from another site"));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
            && origin != self.settings.public_url
        {
            return Err(refuse("the request came from another origin"));
        }
        Ok(())
    }
}

/// The named cookie's value, if the request carries exactly one.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// A `Set-Cookie` value: `HttpOnly`, the given `SameSite`, `Secure` unless on loopback http.
fn set_cookie(
    settings: &ConsoleSettings,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: i64,
) -> HeaderValue {
    let secure = if settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={}{secure}",
        max_age.max(0)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` that ends the session.
fn clear_session(settings: &ConsoleSettings) -> HeaderValue {
    set_cookie(settings, SESSION_COOKIE, "", PREFIX, "Strict", 0)
}

/// Verifies `token` exactly as the API's edge verifies a bearer token (the console's sign-in and
/// every console request): expiry, issuer keys (a retired key fails), binding, suspension.
async fn verify_token(state: &AppState, token: &str, now: i64) -> Result<Caller, Denial> {
    let mut headers = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Denial::from(DenyReason::Malformed))?;
    headers.insert(header::AUTHORIZATION, bearer);
    state
        .auth
        .authenticate_caller(
            Credentials {
                headers: &headers,
                query: None,
                gateway_claims: None,
            },
            &state.directory,
            now,
        )
        .await
}

/// Why a request is not signed in.
#[derive(Debug)]
pub enum NotSigned {
    /// The console is not configured on this deployment.
    NotServed,
    /// No session, or one that no longer verifies: sign in (again), the session cookie cleared.
    SignIn(&'static str, Arc<ConsoleSettings>),
}

impl IntoResponse for NotSigned {
    fn into_response(self) -> Response {
        match self {
            NotSigned::NotServed => crate::http::error::ApiError::NotFound.into_response(),
            NotSigned::SignIn(why, settings) => {
                let mut r = (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, format!("{PREFIX}?signed_out={why}"))],
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::SET_COOKIE, clear_session(&settings));
                r
            }
        }
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = NotSigned;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NotSigned> {
        let settings = state.console.clone().ok_or(NotSigned::NotServed)?;
        let ConsoleApi(api) = parts
            .extensions
            .get::<ConsoleApi>()
            .cloned()
            .ok_or(NotSigned::NotServed)?;
        let signed_out = |why| NotSigned::SignIn(why, settings.clone());
        let sealed = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(|| signed_out("none"))?;
        let session: Session = seal::open(&settings.session_key, SESSION_COOKIE, sealed)
            .ok_or_else(|| signed_out("invalid"))?;
        // The same verification every API request gets: a token that expired, was signed by a
        // retired key, or whose tenant was suspended ends the session here.
        let caller = verify_token(state, &session.token, unix_now())
            .await
            .map_err(|d| {
                signed_out(if d.reason == DenyReason::Expired {
                    "expired"
                } else {
                    "rejected"
                })
            })?;
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(uuid::Uuid::new_v4, |r| r.0);
        Ok(Signed {
            caller,
            token: session.token,
            csrf: session.csrf,
            api,
            request_id,
            settings,
        })
    }
}

/// The console's Content-Security-Policy for these issuers (fixed for the process's life): no
/// script, styles and images from this origin, and forms only to it and to the issuers'
/// authorization endpoints (a sign-in form's redirect there is held to `form-action`).
pub fn content_security_policy(auth: &crate::auth::Authenticator) -> HeaderValue {
    let mut form_action = String::from("'self'");
    for name in auth.issuer_names() {
        if let Some(c) = auth.issuer(name).and_then(|i| i.console.as_ref())
            && let Ok(u) = url::Url::parse(&c.authorization_endpoint)
        {
            let origin = u.origin().ascii_serialization();
            if !form_action.contains(&origin) {
                form_action.push(' ');
                form_action.push_str(&origin);
            }
        }
    }
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// Middleware over every console response: the Content-Security-Policy (`csp`, from
/// `content_security_policy`) and the other headers a page of money and identities should carry.
/// Other paths pass untouched.
pub async fn headers(State(csp): State<HeaderValue>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(PREFIX) {
        return next.run(req).await;
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Form fields of an `application/x-www-form-urlencoded` body, in order (a field may repeat).
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl Signed {
    /// A write's form fields, once `check_write` accepted it (the refusal page otherwise).
    pub fn write_form(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, Box<Response>> {
        let fields = form(body);
        self.check_write(headers, field(&fields, "csrf"))?;
        Ok(fields)
    }
}

/// The first value of field `name`.
pub fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
