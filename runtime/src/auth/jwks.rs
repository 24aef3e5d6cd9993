//! JSON Web Key Sets: parsing, per-issuer caching and fetching.
//!
//! Only RSA signing keys of at least 2048 bits with a `kid` are kept; `oct`, EC, `use: enc` and
//! short keys are ignored. Keys are found only through the trusted issuer's configured JWKS source,
//! never through token headers (`jku`, `x5u`, `jwk`, `x5c`). A fetch that fails or yields no usable key
//! never replaces a good set. This module must not log key material or tokens.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

/// An RSA public key ready for RS256 verification.
#[derive(Debug, Clone)]
pub struct RsaKey {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// An `https` URL, or `http` on a loopback address (dev only).
    Url(String),
    /// A file with a JWKS document (dev and tests).
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS document is not valid JSON with a `keys` array")]
    Malformed,
    #[error("JWKS document has no usable RS256 key (RSA, >= 2048 bits, with `kid`)")]
    NoUsableKey,
    #[error("JWKS URL `{0}` must be https, or http on a loopback address")]
    InsecureUrl(String),
    #[error("fetching JWKS from `{url}` failed: {reason}")]
    Fetch { url: String, reason: String },
    #[error("reading JWKS file `{path}`: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// Parses a JWKS document into the usable RS256 keys it holds, by `kid`.
pub fn parse_jwks(bytes: &[u8]) -> Result<HashMap<String, RsaKey>, JwksError> {
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|_| JwksError::Malformed)?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            continue;
        };
        if jwk.kty != "RSA"
            || jwk.use_.as_deref().is_some_and(|u| u != "sig")
            || jwk.alg.as_deref().is_some_and(|a| a != "RS256")
        {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
            continue;
        };
        let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
            continue;
        };
        let n_bits = n.iter().skip_while(|b| **b == 0).count() * 8;
        if n_bits < 2048 || kid.is_empty() || kid.len() > 256 {
            continue;
        }
        keys.insert(kid, RsaKey { n, e });
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(keys)
}

/// Checks that a JWKS URL is https, or http to a loopback host.
pub fn check_url(url: &str) -> Result<(), JwksError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| JwksError::InsecureUrl(url.to_owned()))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(JwksError::InsecureUrl(url.to_owned())),
    }
}

/// One issuer's key cache. Unknown `kid`s trigger at most one refetch per `cooldown`.
#[derive(Debug)]
pub struct KeyCache {
    source: JwksSource,
    keys: RwLock<Arc<HashMap<String, RsaKey>>>,
    last_fetch: Mutex<Option<Instant>>,
    cooldown: Duration,
    client: reqwest::Client,
}

const MAX_JWKS_BYTES: usize = 256 * 1024;

impl KeyCache {
    /// Loads the keys once; a source that yields no usable key is an error at startup.
    pub async fn load(source: JwksSource, cooldown: Duration) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Fetch {
                url: String::new(),
                reason: e.to_string(),
            })?;
        let cache = Self {
            source,
            keys: RwLock::new(Arc::new(HashMap::new())),
            last_fetch: Mutex::new(None),
            cooldown,
            client,
        };
        let keys = cache.fetch().await?;
        *cache.keys.write().await = Arc::new(keys);
        *cache.last_fetch.lock().await = Some(Instant::now());
        Ok(cache)
    }

    /// A cache over fixed keys (tests).
    pub fn fixed(keys: HashMap<String, RsaKey>) -> Self {
        Self {
            source: JwksSource::File(PathBuf::new()),
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: Mutex::new(Some(Instant::now())),
            cooldown: Duration::MAX,
            client: reqwest::Client::new(),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, RsaKey>, JwksError> {
        let bytes = match &self.source {
            JwksSource::File(path) => {
                tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::File {
                        path: path.clone(),
                        source,
                    })?
            }
            JwksSource::Url(url) => {
                check_url(url)?;
                let fetch_err = |reason: String| JwksError::Fetch {
                    url: url.clone(),
                    reason,
                };
                let mut resp = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| fetch_err(e.without_url().to_string()))?;
                if !resp.status().is_success() {
                    return Err(fetch_err(format!("HTTP {}", resp.status())));
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| fetch_err(e.without_url().to_string()))?
                {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_JWKS_BYTES {
                        return Err(fetch_err("response larger than 256 KiB".into()));
                    }
                }
                body
            }
        };
        parse_jwks(&bytes)
    }

    /// Finds the key for `kid`, refetching once per cooldown when it is unknown.
    pub async fn key(&self, kid: &str) -> Option<RsaKey> {
        if let Some(k) = self.keys.read().await.get(kid) {
            return Some(k.clone());
        }
        {
            let mut last = self.last_fetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < self.cooldown) {
                return None;
            }
            *last = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => *self.keys.write().await = Arc::new(keys),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refetch failed; keeping the last good key set")
                }
            }
        }
        self.keys.read().await.get(kid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_rsa_signing_keys_of_2048_bits_or_more() {
        let n2048 = URL_SAFE_NO_PAD.encode([0xC5u8; 256]);
        let n1024 = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "good", "n": n2048, "e": "AQAB"},
            {"kty": "RSA", "kid": "short", "n": n1024, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n2048, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": n2048, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "n": n2048, "e": "AQAB"},
            "garbage"
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["good"]);
        assert!(matches!(parse_jwks(b"<html>"), Err(JwksError::Malformed)));
        assert!(matches!(
            parse_jwks(b"{\"keys\":[]}"),
            Err(JwksError::NoUsableKey)
        ));
    }

    #[test]
    fn jwks_urls_must_be_https_or_loopback_http() {
        for (url, ok) in [
            ("https://idp.example.com/jwks.json", true),
            ("http://127.0.0.1:8080/jwks", true),
            ("http://localhost/jwks", true),
            ("http://[::1]/jwks", true),
            ("http://idp.example.com/jwks", false),
            ("file:///etc/passwd", false),
            ("not a url", false),
        ] {
            assert_eq!(check_url(url).is_ok(), ok, "{url}");
        }
    }
}
