//! Strict RS256 JWT verification (RFC 7515/7519, RFC 8725 best current practice).
//!
//! The token is parsed by hand: exactly three base64url parts, a header whose `alg` must be `RS256`
//! with a `kid`, no `crit`, no key-carrying headers (`jwk`, `jku`, `x5u`, `x5c`) and no duplicate
//! members; claims are typed strictly (`exp` an integer, `iss` a string). The unverified `iss` only picks
//! which trusted issuer's key cache to look in; nothing else from the token is trusted before the
//! signature verifies. This module must not log tokens or claim values.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Why a token was refused. The code is stable and safe to show; the details stay in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    MissingToken,
    MultipleTokens,
    Malformed,
    BadHeader,
    UnsupportedAlg,
    UnknownKey,
    BadSignature,
    BadClaims,
    Expired,
    NotYetValid,
    UntrustedIssuer,
    WrongAudience,
    UnknownTenant,
    TenantIssuerMismatch,
    InsufficientScope,
}

impl DenyReason {
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::MissingToken => "missing_token",
            DenyReason::MultipleTokens => "multiple_tokens",
            DenyReason::Malformed => "malformed_token",
            DenyReason::BadHeader => "bad_header",
            DenyReason::UnsupportedAlg => "unsupported_alg",
            DenyReason::UnknownKey => "unknown_key",
            DenyReason::BadSignature => "bad_signature",
            DenyReason::BadClaims => "bad_claims",
            DenyReason::Expired => "expired",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::UntrustedIssuer => "untrusted_issuer",
            DenyReason::WrongAudience => "wrong_audience",
            DenyReason::UnknownTenant => "unknown_tenant",
            DenyReason::TenantIssuerMismatch => "tenant_issuer_mismatch",
            DenyReason::InsufficientScope => "insufficient_scope",
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

/// A JSON object whose members are unique; a duplicate member is an error (RFC 8725 section 3.4 and
/// case 14 of the security cases).
#[derive(Debug, Default)]
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

/// A token split and decoded, signature not yet checked.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub kid: String,
    pub claims: StrictObject,
    signing_input: &'a str,
    signature: Vec<u8>,
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
    let alg = header.get("alg").and_then(Value::as_str);
    if alg != Some("RS256") {
        return Err(DenyReason::UnsupportedAlg);
    }
    for member in header.keys() {
        // Anything that could carry or point at a key, mark extensions critical, or change how the
        // payload is encoded is refused rather than ignored.
        if !matches!(member.as_str(), "alg" | "kid" | "typ" | "cty") {
            return Err(DenyReason::BadHeader);
        }
    }
    if header
        .get("typ")
        .is_some_and(|t| !matches!(t.as_str(), Some("JWT" | "at+jwt" | "application/at+jwt")))
    {
        return Err(DenyReason::BadHeader);
    }
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => k.clone(),
        _ => return Err(DenyReason::BadHeader),
    };
    let claims = decode_object(p)?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| DenyReason::Malformed)?;
    Ok(UnverifiedToken {
        kid,
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

    /// Checks the RS256 signature against `key`.
    pub fn verify_signature(&self, key: &super::jwks::RsaKey) -> Result<(), DenyReason> {
        RsaPublicKeyComponents {
            n: key.n.as_slice(),
            e: key.e.as_slice(),
        }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            self.signing_input.as_bytes(),
            &self.signature,
        )
        .map_err(|_| DenyReason::BadSignature)
    }
}

/// The registered claims after type checks. Issuer, audience and tenant binding are checked by the
/// caller, which knows the trusted issuers and the tenant directory.
#[derive(Debug, Clone)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
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

/// Type-checks the claims and the time window: `exp` required, `nbf`/`iat` not in the future, all
/// within `leeway` seconds.
pub fn check_claims(claims: StrictObject, now: i64, leeway: i64) -> Result<Claims, DenyReason> {
    let all = claims.0;
    let string = |name: &str| match all.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(DenyReason::BadClaims),
    };
    let iss = string("iss")?;
    let sub = string("sub")?;
    let aud = match all.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(DenyReason::BadClaims))
            .collect::<Result<_, _>>()?,
        _ => return Err(DenyReason::BadClaims),
    };
    let exp = int_claim(&all, "exp")?.ok_or(DenyReason::BadClaims)?;
    if now > exp.saturating_add(leeway) {
        return Err(DenyReason::Expired);
    }
    for name in ["nbf", "iat"] {
        if int_claim(&all, name)?.is_some_and(|t| t > now.saturating_add(leeway)) {
            return Err(DenyReason::NotYetValid);
        }
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
        Some(_) => return Err(DenyReason::BadClaims),
    }
    Ok(Claims {
        iss,
        sub,
        aud,
        exp,
        scopes,
        all,
    })
}
