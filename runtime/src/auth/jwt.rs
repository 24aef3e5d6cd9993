//! Strict JWT parsing and claim checks (RFC 7515/7519, RFC 8725 best current practice, RFC 9068).
//!
//! The token is parsed by hand: exactly three base64url parts; a header with `alg` and `kid`, where the
//! only other members allowed are `typ`, `cty`, `x5t` and `x5t#S256` (no `crit`, `b64`, `jwk`, `jku`,
//! `x5u`, `x5c`); no duplicate members in header or claims; claims typed strictly (`exp` an integer,
//! `iss` a string). The unverified `iss` only picks which trusted issuer's keys to look in. This module
//! must not log tokens or claim values.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::issuer::{Alg, IssuerConfig};

/// Why a request was refused. The code is stable and safe to show; details stay in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    MissingToken,
    MultipleTokens,
    Malformed,
    BadHeader,
    UnsupportedAlg,
    BadType,
    UnknownKey,
    KeysUnavailable,
    RegistryUnavailable,
    BadSignature,
    BadClaims,
    Expired,
    NotYetValid,
    LifetimeTooLong,
    UntrustedIssuer,
    WrongAudience,
    UnknownTenant,
    TenantIssuerMismatch,
    WrongDeployment,
    AuthorizerMismatch,
    InsufficientScope,
    /// A valid token of a suspended tenant (403 on every route).
    TenantSuspended,
}

impl DenyReason {
    pub const ALL: &'static [DenyReason] = &[
        DenyReason::MissingToken,
        DenyReason::MultipleTokens,
        DenyReason::Malformed,
        DenyReason::BadHeader,
        DenyReason::UnsupportedAlg,
        DenyReason::BadType,
        DenyReason::UnknownKey,
        DenyReason::KeysUnavailable,
        DenyReason::RegistryUnavailable,
        DenyReason::BadSignature,
        DenyReason::BadClaims,
        DenyReason::Expired,
        DenyReason::NotYetValid,
        DenyReason::LifetimeTooLong,
        DenyReason::UntrustedIssuer,
        DenyReason::WrongAudience,
        DenyReason::UnknownTenant,
        DenyReason::TenantIssuerMismatch,
        DenyReason::WrongDeployment,
        DenyReason::AuthorizerMismatch,
        DenyReason::InsufficientScope,
        DenyReason::TenantSuspended,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DenyReason::MissingToken => "missing_token",
            DenyReason::MultipleTokens => "multiple_tokens",
            DenyReason::Malformed => "malformed_token",
            DenyReason::BadHeader => "bad_header",
            DenyReason::UnsupportedAlg => "unsupported_alg",
            DenyReason::BadType => "bad_type",
            DenyReason::UnknownKey => "unknown_key",
            DenyReason::KeysUnavailable => "keys_unavailable",
            DenyReason::RegistryUnavailable => "registry_unavailable",
            DenyReason::BadSignature => "bad_signature",
            DenyReason::BadClaims => "bad_claims",
            DenyReason::Expired => "expired",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::LifetimeTooLong => "lifetime_too_long",
            DenyReason::UntrustedIssuer => "untrusted_issuer",
            DenyReason::WrongAudience => "wrong_audience",
            DenyReason::UnknownTenant => "unknown_tenant",
            DenyReason::TenantIssuerMismatch => "tenant_issuer_mismatch",
            DenyReason::WrongDeployment => "wrong_deployment",
            DenyReason::AuthorizerMismatch => "authorizer_mismatch",
            DenyReason::InsufficientScope => "insufficient_scope",
            DenyReason::TenantSuspended => "tenant_suspended",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A JSON object whose members are unique; a duplicate member is an error (RFC 8725 section 3.4).
#[derive(Debug, Default, Clone)]
pub struct StrictObject(pub BTreeMap<String, Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if out.insert(key, value).is_some() {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                }
                Ok(StrictObject(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn decode_object(part: &str) -> Result<StrictObject, DenyReason> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DenyReason::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| DenyReason::Malformed)
}

/// A token split and decoded; its signature is not yet checked.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub alg: Alg,
    pub kid: String,
    pub typ: Option<String>,
    pub claims: StrictObject,
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, enforcing the header rules.
pub fn decode(token: &str) -> Result<UnverifiedToken<'_>, DenyReason> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(DenyReason::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DenyReason::Malformed);
    };
    let header = decode_object(h)?.0;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::parse)
        .ok_or(DenyReason::UnsupportedAlg)?;
    if header.keys().any(|m| {
        !matches!(
            m.as_str(),
            "alg" | "kid" | "typ" | "cty" | "x5t" | "x5t#S256"
        )
    }) {
        // Anything that could carry or point at a key, mark extensions critical, or change how the
        // payload is encoded is refused rather than ignored.
        return Err(DenyReason::BadHeader);
    }
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(DenyReason::BadHeader),
    };
    let kid = match header.get("kid") {
        // Printable ASCII only: a `kid` with control characters or non-ASCII is malformed on its face
        // and must not cost a JWKS refetch.
        Some(Value::String(k))
            if !k.is_empty() && k.len() <= 256 && k.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            k.clone()
        }
        _ => return Err(DenyReason::BadHeader),
    };
    let claims = decode_object(p)?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| DenyReason::Malformed)?;
    Ok(UnverifiedToken {
        alg,
        kid,
        typ,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

impl UnverifiedToken<'_> {
    /// The `iss` claim, used only to choose the issuer's key cache.
    pub fn issuer_hint(&self) -> Option<&str> {
        self.claims.0.get("iss").and_then(Value::as_str)
    }
}

/// Whether a `typ` header value is `required` (case-insensitive; `application/` may be omitted).
pub fn typ_matches(actual: Option<&str>, required: &str) -> bool {
    let norm = |t: &str| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(t)
    };
    actual.is_some_and(|a| norm(a) == norm(required))
}

/// The verified, typed claims.
#[derive(Debug, Clone)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub scopes: Vec<String>,
    pub all: BTreeMap<String, Value>,
}

fn int_claim(claims: &BTreeMap<String, Value>, name: &str) -> Result<Option<i64>, DenyReason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(DenyReason::BadClaims),
        Some(_) => Err(DenyReason::BadClaims),
    }
}

/// Type-checks the claims against `issuer`'s policy at time `now`: `iss`, `sub`, `aud`, `exp` and `iat`
/// required; `nbf`/`iat` not in the future and `exp` not past, each within the leeway; `exp - iat` at
/// most the issuer's maximum lifetime; `aud` one of the issuer's audiences.
pub fn check_claims(
    claims: StrictObject,
    issuer: &IssuerConfig,
    now: i64,
) -> Result<Claims, DenyReason> {
    let all = claims.0;
    let leeway = issuer.leeway_secs;
    let string = |name: &str| match all.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(DenyReason::BadClaims),
    };
    let iss = string("iss")?;
    if iss != issuer.issuer {
        return Err(DenyReason::UntrustedIssuer);
    }
    let sub = string("sub")?;
    let aud: Vec<String> = match all.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(DenyReason::BadClaims))
            .collect::<Result<_, _>>()?,
        _ => return Err(DenyReason::BadClaims),
    };
    if !aud.iter().any(|a| issuer.audiences.contains(a)) {
        return Err(DenyReason::WrongAudience);
    }
    let exp = int_claim(&all, "exp")?.ok_or(DenyReason::BadClaims)?;
    let iat = int_claim(&all, "iat")?.ok_or(DenyReason::BadClaims)?;
    if now > exp.saturating_add(leeway) {
        return Err(DenyReason::Expired);
    }
    if iat > now.saturating_add(leeway)
        || int_claim(&all, "nbf")?.is_some_and(|t| t > now.saturating_add(leeway))
    {
        return Err(DenyReason::NotYetValid);
    }
    if exp.saturating_sub(iat) > issuer.max_lifetime_secs || iat < 0 || exp <= iat {
        return Err(DenyReason::LifetimeTooLong);
    }
    let mut scopes: Vec<String> = match all.get("scope") {
        None => Vec::new(),
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(DenyReason::BadClaims),
    };
    match all.get("scp") {
        None => {}
        Some(Value::Array(items)) => {
            for v in items {
                scopes.push(v.as_str().ok_or(DenyReason::BadClaims)?.to_owned());
            }
        }
        Some(Value::String(s)) => {
            scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned))
        }
        Some(_) => return Err(DenyReason::BadClaims),
    }
    if let Some(roles) = &issuer.roles {
        match all.get(&roles.claim) {
            None => {}
            Some(Value::Array(items)) => {
                for v in items {
                    let role = v.as_str().ok_or(DenyReason::BadClaims)?;
                    if let Some(perms) = roles.permissions.get(role) {
                        // `role:<name>` entries grant a built-in role's bundle (checked when the
                        // issuer was configured; an unknown one grants nothing).
                        for entry in perms {
                            if let Some(granted) = super::roles::expand(entry) {
                                scopes.extend(granted.into_iter().map(str::to_owned));
                            }
                        }
                    }
                }
            }
            Some(_) => return Err(DenyReason::BadClaims),
        }
    }
    scopes.sort();
    scopes.dedup();
    Ok(Claims {
        iss,
        sub,
        aud,
        exp,
        iat,
        scopes,
        all,
    })
}

/// The value at `path` in the claims: a top-level member named `path`, else a dotted path into
/// object claims (`o.id`).
pub fn claim_at<'a>(claims: &'a BTreeMap<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[track_caller]
    fn check_decode(header: &str, payload: &str, want: Result<(), DenyReason>) {
        let token = format!("{}.{}.c2ln", b64(header), b64(payload));
        assert_eq!(decode(&token).map(|_| ()), want, "{header} {payload}");
    }

    #[test]
    fn header_rules() {
        let p = r#"{"iss":"i"}"#;
        check_decode(r#"{"alg":"RS256","kid":"k"}"#, p, Ok(()));
        check_decode(
            r#"{"alg":"RS256","kid":"k","typ":"at+jwt","x5t":"x"}"#,
            p,
            Ok(()),
        );
        check_decode(r#"{"alg":"ES256","kid":"k"}"#, p, Ok(()));
        check_decode(
            r#"{"alg":"none","kid":"k"}"#,
            p,
            Err(DenyReason::UnsupportedAlg),
        );
        check_decode(
            r#"{"alg":"HS256","kid":"k"}"#,
            p,
            Err(DenyReason::UnsupportedAlg),
        );
        check_decode(
            r#"{"alg":"rs256","kid":"k"}"#,
            p,
            Err(DenyReason::UnsupportedAlg),
        );
        check_decode(r#"{"alg":"RS256"}"#, p, Err(DenyReason::BadHeader));
        check_decode(
            r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#,
            p,
            Err(DenyReason::BadHeader),
        );
        check_decode(
            r#"{"alg":"RS256","kid":"k","jku":"http://x"}"#,
            p,
            Err(DenyReason::BadHeader),
        );
        check_decode(
            r#"{"alg":"RS256","kid":"k","typ":7}"#,
            p,
            Err(DenyReason::BadHeader),
        );
        check_decode(
            r#"{"alg":"RS256","kid":"k","alg":"RS256"}"#,
            p,
            Err(DenyReason::Malformed),
        );
        check_decode(
            r#"{"alg":"RS256","kid":"k"}"#,
            r#"{"iss":"a","iss":"b"}"#,
            Err(DenyReason::Malformed),
        );
        check_decode(
            r#"{"alg":"RS256","kid":"k"}"#,
            r#"["not","an","object"]"#,
            Err(DenyReason::Malformed),
        );
    }

    #[test]
    fn typ_comparison_follows_rfc_7515() {
        assert!(typ_matches(Some("at+jwt"), "at+jwt"));
        assert!(typ_matches(Some("application/at+jwt"), "at+jwt"));
        assert!(typ_matches(Some("AT+JWT"), "application/at+jwt"));
        assert!(!typ_matches(Some("JWT"), "at+jwt"));
        assert!(!typ_matches(None, "at+jwt"));
    }

    #[test]
    fn claims_at_paths() {
        let claims: BTreeMap<String, Value> = serde_json::from_str(
            r#"{"tenant_id":"a","https://x.example/tenant":"b","o":{"id":"c"},"org.id":"d"}"#,
        )
        .unwrap();
        assert_eq!(claim_at(&claims, "tenant_id"), Some(&Value::from("a")));
        assert_eq!(
            claim_at(&claims, "https://x.example/tenant"),
            Some(&Value::from("b"))
        );
        assert_eq!(claim_at(&claims, "o.id"), Some(&Value::from("c")));
        assert_eq!(claim_at(&claims, "org.id"), Some(&Value::from("d")));
        assert_eq!(claim_at(&claims, "o.missing"), None);
    }
}
