//! JSON Web Key Sets: parsing, and the per-issuer key cache with its lifecycle.
//!
//! Keys are found only through the trusted issuer's configured JWKS source, never through token
//! headers (`jku`, `x5u`, `jwk`, `x5c`). Only keys the issuer is allowed to use are kept: RSA of at
//! least 2048 bits for RS256, P-256 for ES256; `oct`, `use: enc` and mismatched `alg` are ignored.
//! A fetch that fails or yields no usable key never replaces a good set. Unknown `kid`s and failed
//! signatures trigger at most one fetch per cooldown (single-flight); a background task refreshes every
//! TTL; after `max_stale` without a successful fetch the issuer fails closed. This module must not log
//! key material or tokens.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::issuer::{Alg, JwksCacheConfig};

/// A verification key and the one algorithm it may be used with.
pub struct Jwk {
    pub alg: Alg,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Jwk {
    /// An RS256 key from its modulus and exponent (big-endian bytes).
    pub fn rsa(n: &[u8], e: &[u8]) -> Option<Self> {
        let n_bits = n.iter().skip_while(|b| **b == 0).count() * 8;
        if n_bits < 2048 {
            return None;
        }
        let key = RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .ok()?;
        Some(Self {
            alg: Alg::RS256,
            key,
        })
    }

    /// An ES256 key from its P-256 coordinates.
    pub fn ec_p256(x: &[u8], y: &[u8]) -> Option<Self> {
        if x.len() != 32 || y.len() != 32 {
            return None;
        }
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).ok()?;
        Some(Self {
            alg: Alg::ES256,
            key,
        })
    }

    /// Verifies `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// Where an issuer's keys come from. Written as a one-key map (`jwks: {url: https://...}`, or
/// `{"url": ...}` in JSON) or, in YAML, as a tag (`jwks: !url https://...`): both read the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// An `https` URL (or `http` on a loopback address when the issuer allows it).
    Url(String),
    /// A file with a JWKS document (development and tests).
    File(PathBuf),
}

impl<'de> Deserialize<'de> for JwksSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{EnumAccess, Error, MapAccess, VariantAccess, Visitor};
        struct Source;
        fn pick<E: Error>(key: &str, value: String) -> Result<JwksSource, E> {
            match key {
                "url" => Ok(JwksSource::Url(value)),
                "file" => Ok(JwksSource::File(PathBuf::from(value))),
                other => Err(E::unknown_variant(other, &["url", "file"])),
            }
        }
        impl<'de> Visitor<'de> for Source {
            type Value = JwksSource;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`url: <https URL>` or `file: <path>`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JwksSource, A::Error> {
                let Some((key, value)) = map.next_entry::<String, String>()? else {
                    return Err(A::Error::custom("name one of `url` or `file`"));
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom("name exactly one of `url` or `file`"));
                }
                pick(&key, value)
            }
            fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<JwksSource, A::Error> {
                let (key, variant): (String, _) = data.variant()?;
                pick(&key, variant.newtype_variant::<String>()?)
            }
        }
        d.deserialize_any(Source)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS document is not a JSON object with a `keys` array")]
    Malformed,
    #[error("JWKS document has no key this issuer may use")]
    NoUsableKey,
    #[error("JWKS URL `{0}` must be https (plain http is allowed only on loopback, when enabled)")]
    InsecureUrl(String),
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
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
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64(v: Option<&String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(v?).ok()
}

/// Parses a JWKS document into the keys an issuer allowed `allowed` algorithms may use, by `kid`.
pub fn parse_jwks(bytes: &[u8], allowed: &[Alg]) -> Result<HashMap<String, Arc<Jwk>>, JwksError> {
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|_| JwksError::Malformed)?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            continue;
        };
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let Some(kid) = jwk.kid.filter(|k| !k.is_empty() && k.len() <= 256) else {
            continue;
        };
        let key = match jwk.kty.as_str() {
            "RSA"
                if allowed.contains(&Alg::RS256)
                    && jwk.alg.as_deref().is_none_or(|a| a == "RS256") =>
            {
                match (b64(jwk.n.as_ref()), b64(jwk.e.as_ref())) {
                    (Some(n), Some(e)) => Jwk::rsa(&n, &e),
                    _ => None,
                }
            }
            "EC" if allowed.contains(&Alg::ES256)
                && jwk.crv.as_deref() == Some("P-256")
                && jwk.alg.as_deref().is_none_or(|a| a == "ES256") =>
            {
                match (b64(jwk.x.as_ref()), b64(jwk.y.as_ref())) {
                    (Some(x), Some(y)) => Jwk::ec_p256(&x, &y),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(key) = key {
            keys.insert(kid, Arc::new(key));
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(keys)
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Checks that a JWKS URL is https, or http to a loopback host when `allow_loopback_http`.
pub fn check_url(url: &str, allow_loopback_http: bool) -> Result<(), JwksError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| JwksError::InsecureUrl(url.to_owned()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_loopback_http && is_loopback(&parsed) => Ok(()),
        _ => Err(JwksError::InsecureUrl(url.to_owned())),
    }
}

/// The result of looking a `kid` up.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<Jwk>),
    /// Not in the current set (after at most one cooldown-limited refetch).
    Unknown,
    /// No successful fetch within `max_stale`: the issuer fails closed.
    Stale,
}

#[derive(Debug, Default)]
struct KeySet {
    keys: Arc<HashMap<String, Arc<Jwk>>>,
    fetched_at: Option<Instant>,
}

/// Fetch counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    /// Unix time (seconds) of the last fetch that gave a usable key set; 0: none yet.
    pub last_success_unix: AtomicU64,
}

/// One issuer's keys.
#[derive(Debug)]
pub struct KeyCache {
    issuer: String,
    source: JwksSource,
    allowed: Vec<Alg>,
    config: JwksCacheConfig,
    state: RwLock<KeySet>,
    last_on_demand: Mutex<Option<Instant>>,
    /// The HTTP client with the redirect policy and timeouts; `None` only for a fixed key set, which
    /// never fetches.
    client: Option<reqwest::Client>,
    pub stats: FetchStats,
}

impl KeyCache {
    /// A cache that has fetched nothing yet. Fails when its HTTP client cannot be built: a cache must
    /// never fetch keys without its redirect policy and timeouts (issue 9 item 8).
    pub fn new(
        issuer: &str,
        source: JwksSource,
        allowed: &[Alg],
        config: JwksCacheConfig,
        allow_loopback_http: bool,
    ) -> Result<Self, String> {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            // Follow at most 3 redirects, only on the same host and never down to plain http
            // (except loopback http when the issuer allows it).
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            let scheme_ok = attempt.url().scheme() == "https"
                || (allow_loopback_http && is_loopback(attempt.url()));
            if attempt.previous().len() <= 3 && same_host && scheme_ok {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            .redirect(policy)
            .build()
            .map_err(|e| format!("issuer `{issuer}`: cannot build the JWKS HTTP client: {e}"))?;
        Ok(Self::with_client(
            issuer,
            source,
            allowed,
            config,
            Some(client),
        ))
    }

    fn with_client(
        issuer: &str,
        source: JwksSource,
        allowed: &[Alg],
        config: JwksCacheConfig,
        client: Option<reqwest::Client>,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            source,
            allowed: allowed.to_vec(),
            config,
            state: RwLock::new(KeySet::default()),
            last_on_demand: Mutex::new(None),
            client,
            stats: FetchStats::default(),
        }
    }

    /// A cache over fixed keys that never fetches (tests and benchmarks).
    pub fn fixed(keys: HashMap<String, Arc<Jwk>>) -> Self {
        let cache = Self::with_client(
            "fixed",
            JwksSource::File(PathBuf::new()),
            &[Alg::RS256, Alg::ES256],
            JwksCacheConfig {
                ttl_secs: u64::MAX / 4,
                cooldown_secs: u64::MAX / 4,
                max_stale_secs: u64::MAX / 4,
                ..JwksCacheConfig::default()
            },
            None,
        );
        if let Ok(mut s) = cache.state.write() {
            *s = KeySet {
                keys: Arc::new(keys),
                fetched_at: Some(Instant::now()),
            };
        }
        cache
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<Jwk>>, JwksError> {
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
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
                let client = self
                    .client
                    .as_ref()
                    .ok_or_else(|| JwksError::Fetch("no HTTP client (a fixed key set)".into()))?;
                let mut resp = client
                    .get(url)
                    .header(
                        http::header::ACCEPT,
                        "application/jwk-set+json, application/json",
                    )
                    .send()
                    .await
                    .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
                if !resp.status().is_success() {
                    return Err(JwksError::Fetch(format!("HTTP {}", resp.status())));
                }
                if resp
                    .content_length()
                    .is_some_and(|n| n > self.config.max_bytes as u64)
                {
                    return Err(JwksError::Fetch("response too large".into()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?
                {
                    body.extend_from_slice(&chunk);
                    if body.len() > self.config.max_bytes {
                        return Err(JwksError::Fetch("response too large".into()));
                    }
                }
                body
            }
        };
        let keys = parse_jwks(&bytes, &self.allowed)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.stats.last_success_unix.store(now, Ordering::Relaxed);
        Ok(keys)
    }

    /// Fetches now; replaces the key set only with a good one. Returns the number of keys loaded.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        match self.fetch().await {
            Ok(keys) => {
                let n = keys.len();
                if let Ok(mut s) = self.state.write() {
                    *s = KeySet {
                        keys: Arc::new(keys),
                        fetched_at: Some(Instant::now()),
                    };
                }
                Ok(n)
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, error = %e, "JWKS fetch failed; keeping the last good key set");
                Err(e)
            }
        }
    }

    fn snapshot(&self) -> (Arc<HashMap<String, Arc<Jwk>>>, bool) {
        match self.state.read() {
            Ok(s) => {
                let fresh = s.fetched_at.is_some_and(|t| {
                    t.elapsed() <= Duration::from_secs(self.config.max_stale_secs)
                });
                (s.keys.clone(), fresh)
            }
            Err(_) => (Arc::new(HashMap::new()), false),
        }
    }

    /// The key currently cached for `kid`, without fetching (for the verified-token cache).
    pub fn current(&self, kid: &str) -> Option<Arc<Jwk>> {
        let (keys, fresh) = self.snapshot();
        if fresh { keys.get(kid).cloned() } else { None }
    }

    /// One on-demand fetch if the cooldown allows; single-flight across concurrent callers. Returns
    /// whether a fetch was made and succeeded.
    pub async fn refetch_on_demand(&self) -> bool {
        let mut last = self.last_on_demand.lock().await;
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(self.config.cooldown_secs)) {
            return false;
        }
        *last = Some(Instant::now());
        self.refresh().await.is_ok()
    }

    /// Finds the key for `kid`, refetching at most once per cooldown when it is unknown or the set is
    /// stale.
    pub async fn lookup(&self, kid: &str) -> Lookup {
        let (keys, fresh) = self.snapshot();
        if fresh && let Some(k) = keys.get(kid) {
            return Lookup::Found(k.clone());
        }
        self.refetch_on_demand().await;
        let (keys, fresh) = self.snapshot();
        if !fresh {
            return Lookup::Stale;
        }
        keys.get(kid)
            .cloned()
            .map_or(Lookup::Unknown, Lookup::Found)
    }

    /// Refreshes every TTL in the background for as long as the cache is alive.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let ttl = Duration::from_secs(self.config.ttl_secs);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl).await;
                let Some(cache) = weak.upgrade() else { break };
                let _ = cache.refresh().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_keys_the_issuer_may_use() {
        // docs/security.md case 25.
        let signer = crate::auth::signer::DevSigner::generate().unwrap();
        let good = signer.jwks()["keys"][0].clone();
        let n1024 = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let mut enc = good.clone();
        enc["use"] = "enc".into();
        enc["kid"] = "enc".into();
        let mut ps = good.clone();
        ps["alg"] = "PS256".into();
        ps["kid"] = "ps".into();
        let doc = serde_json::json!({"keys": [
            good,
            {"kty": "RSA", "kid": "short", "n": n1024, "e": "AQAB"},
            enc, ps,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])},
            "garbage"
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes(), &[Alg::RS256]).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec![signer.kid()]);
        assert!(matches!(
            parse_jwks(b"<html>", &[Alg::RS256]),
            Err(JwksError::Malformed)
        ));
        assert!(matches!(
            parse_jwks(b"{}", &[Alg::RS256]),
            Err(JwksError::Malformed)
        ));
        assert!(matches!(
            parse_jwks(b"{\"keys\":[]}", &[Alg::RS256]),
            Err(JwksError::NoUsableKey)
        ));
    }

    #[test]
    fn jwks_urls_must_be_https_or_allowed_loopback_http() {
        for (url, loopback_ok, ok) in [
            ("https://idp.example.com/jwks.json", false, true),
            ("http://127.0.0.1:8080/jwks", true, true),
            ("http://127.0.0.1:8080/jwks", false, false),
            ("http://localhost/jwks", true, true),
            ("http://[::1]/jwks", true, true),
            ("http://idp.example.com/jwks", true, false),
            ("file:///etc/passwd", true, false),
            ("not a url", true, false),
        ] {
            assert_eq!(
                check_url(url, loopback_ok).is_ok(),
                ok,
                "{url} {loopback_ok}"
            );
        }
    }
}
