//! The JWKS lifecycle (issue 3; docs/security.md section B, cases 20-27), against a real JWKS endpoint
//! on loopback whose answers the test controls and whose requests it counts.

use std::time::Duration;

use runtime::auth::jwks::JwksSource;
use runtime::auth::jwt::DenyReason;
use runtime::auth::signer::DevSigner;
use runtime::auth::{Authenticator, DeploymentPolicy, IssuerConfig, JwksCacheConfig};
use runtime::registry::TenantDirectory;
use serde_json::json;
use tests::jwks_server::{JwksServer, Mode, jwks_of};
use tests::{check, claims_for, record};

const ISS: &str = "https://idp.test.example";
const AUD: &str = "api://tenantctl";

fn issuer(url: &str, cache: JwksCacheConfig) -> IssuerConfig {
    let mut config = IssuerConfig::new("idp", ISS, JwksSource::Url(url.to_owned()), AUD);
    config.allow_loopback_http = true;
    config.jwks_cache = cache;
    config
}

fn cache(ttl: u64, cooldown: u64, max_stale: u64) -> JwksCacheConfig {
    JwksCacheConfig {
        ttl_secs: ttl,
        cooldown_secs: cooldown,
        max_stale_secs: max_stale,
        timeout_ms: 500,
        max_bytes: 64 * 1024,
    }
}

fn directory() -> TenantDirectory {
    TenantDirectory::new(vec![record("acme", "idp", AUD, "tenant_id")])
}

async fn authenticator(server: &JwksServer, cache: JwksCacheConfig) -> Authenticator {
    Authenticator::load(&[issuer(&server.url, cache)], DeploymentPolicy::default())
        .await
        .unwrap()
}

fn token(signer: &DevSigner) -> String {
    signer.sign(&claims_for(ISS, AUD, "acme"))
}

#[tokio::test]
async fn case_20_a_new_kid_triggers_one_refetch_then_succeeds_and_a_cached_kid_none() {
    let (old, new) = (
        DevSigner::generate().unwrap(),
        DevSigner::generate().unwrap(),
    );
    let server = JwksServer::start(jwks_of(&[&old])).await;
    let auth = authenticator(&server, cache(3600, 30, 7200)).await;
    let dir = directory();
    assert_eq!(server.hits(), 1, "the initial load");
    assert_eq!(check(&auth, &dir, &token(&old)).await, Ok("acme".into()));
    assert_eq!(server.hits(), 1, "a cached kid costs no fetch");
    server.set(Mode::Serve(jwks_of(&[&old, &new]))).await;
    assert_eq!(check(&auth, &dir, &token(&new)).await, Ok("acme".into()));
    assert_eq!(server.hits(), 2, "exactly one refetch for the new kid");
    assert_eq!(check(&auth, &dir, &token(&new)).await, Ok("acme".into()));
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn case_21_a_thousand_unknown_kids_cost_at_most_one_fetch_per_cooldown() {
    let signer = DevSigner::generate().unwrap();
    let server = JwksServer::start(jwks_of(&[&signer])).await;
    let auth = authenticator(&server, cache(3600, 60, 7200)).await;
    let dir = directory();
    let mut tasks = Vec::new();
    let auth = std::sync::Arc::new(auth);
    let dir = std::sync::Arc::new(dir);
    for i in 0..1000 {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("random-{i}-{}", uuid::Uuid::new_v4())});
        let t = signer.sign_parts(
            header.to_string().as_bytes(),
            claims_for(ISS, AUD, "acme").to_string().as_bytes(),
        );
        let (auth, dir) = (auth.clone(), dir.clone());
        tasks.push(tokio::spawn(async move { check(&auth, &dir, &t).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(DenyReason::UnknownKey));
    }
    assert!(
        server.hits() <= 2,
        "initial load + at most one refetch, got {}",
        server.hits()
    );
}

#[tokio::test]
async fn case_22_a_key_removed_from_the_jwks_stops_working_within_ttl_plus_cooldown() {
    let (a, b) = (
        DevSigner::generate().unwrap(),
        DevSigner::generate().unwrap(),
    );
    let server = JwksServer::start(jwks_of(&[&a, &b])).await;
    let auth = authenticator(&server, cache(1, 1, 60)).await;
    let dir = directory();
    let t = token(&a);
    assert_eq!(check(&auth, &dir, &t).await, Ok("acme".into()));
    server.set(Mode::Serve(jwks_of(&[&b]))).await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // TTL (1 s) + cooldown (1 s) + slack
    // The same token, already verified and cached, is refused now that its key is gone.
    assert_eq!(check(&auth, &dir, &t).await, Err(DenyReason::UnknownKey));
    assert_eq!(check(&auth, &dir, &token(&b)).await, Ok("acme".into()));
}

#[tokio::test]
async fn case_23_same_kid_new_material_refetches_once_new_verifies_old_fails() {
    let (old, new) = (
        DevSigner::generate().unwrap(),
        DevSigner::generate().unwrap(),
    );
    // Publish `new`'s key under `old`'s kid.
    let mut doc = jwks_of(&[&new]);
    doc["keys"][0]["kid"] = json!(old.kid());
    let server = JwksServer::start(jwks_of(&[&old])).await;
    let auth = authenticator(&server, cache(3600, 1, 7200)).await;
    let dir = directory();
    let old_token = token(&old);
    assert_eq!(check(&auth, &dir, &old_token).await, Ok("acme".into()));
    server.set(Mode::Serve(doc)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the cooldown
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": old.kid()});
    let new_token = new.sign_parts(
        header.to_string().as_bytes(),
        claims_for(ISS, AUD, "acme").to_string().as_bytes(),
    );
    assert_eq!(check(&auth, &dir, &new_token).await, Ok("acme".into()));
    assert_eq!(server.hits(), 2, "one refetch");
    assert_eq!(
        check(&auth, &dir, &old_token).await,
        Err(DenyReason::BadSignature)
    );
}

#[tokio::test]
async fn case_24_a_failing_jwks_keeps_the_good_set_until_max_stale_then_fails_closed() {
    let (good, other) = (
        DevSigner::generate().unwrap(),
        DevSigner::generate().unwrap(),
    );
    let server = JwksServer::start(jwks_of(&[&good])).await;
    let auth = authenticator(&server, cache(1, 1, 4)).await;
    let dir = directory();
    let t = token(&good);
    assert_eq!(check(&auth, &dir, &t).await, Ok("acme".into()));
    let bad_answers = [
        Mode::Status(500),
        Mode::Serve(json!({})),
        Mode::Body("<html>login</html>"),
        Mode::Serve(json!({"keys": [{"kty": "oct", "kid": "x", "k": "c2VjcmV0"}]})),
        Mode::Oversized,
        Mode::Slow(Duration::from_secs(2), jwks_of(&[&other])),
    ];
    for mode in bad_answers {
        server.set(mode.clone()).await;
        let keys = auth.keys("idp").unwrap();
        assert!(
            keys.refresh().await.is_err(),
            "{mode:?} must not be accepted"
        );
        // Still the good set: the cached key works (fresh token, so no verified-token cache hit).
        let fresh = good.sign(&claims_for(ISS, AUD, "acme"));
        assert_eq!(
            check(&auth, &dir, &fresh).await,
            Ok("acme".into()),
            "{mode:?}"
        );
    }
    server.set(Mode::Status(503)).await;
    tokio::time::sleep(Duration::from_millis(4500)).await; // past max-stale without a good fetch
    assert_eq!(
        check(&auth, &dir, &t).await,
        Err(DenyReason::KeysUnavailable)
    );
    // Recovery: the endpoint comes back, the next on-demand fetch restores service.
    server.set(Mode::Serve(jwks_of(&[&good]))).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        check(&auth, &dir, &good.sign(&claims_for(ISS, AUD, "acme"))).await,
        Ok("acme".into())
    );
}

#[tokio::test]
async fn case_25_unusable_entries_are_ignored_and_never_replace_the_set() {
    let signer = DevSigner::generate().unwrap();
    let server = JwksServer::start(jwks_of(&[&signer])).await;
    let auth = authenticator(&server, cache(3600, 1, 7200)).await;
    let mut rsa_enc = jwks_of(&[&signer])["keys"][0].clone();
    rsa_enc["use"] = json!("enc");
    let short = json!({"kty": "RSA", "kid": "short", "n": "xcXFxcXFxcXFxcXFxcXFxQ", "e": "AQAB"});
    let ec = json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    server
        .set(Mode::Serve(
            json!({"keys": [rsa_enc, short, ec, {"kty": "oct", "kid": "h", "k": "YQ"}]}),
        ))
        .await;
    assert!(auth.keys("idp").unwrap().refresh().await.is_err());
    assert_eq!(
        check(&auth, &directory(), &token(&signer)).await,
        Ok("acme".into())
    );
}

#[tokio::test]
async fn case_26_redirects_off_host_are_refused_and_plain_http_is_refused_off_loopback() {
    let signer = DevSigner::generate().unwrap();
    let target = JwksServer::start(jwks_of(&[&signer])).await;
    // Same machine, different host name: off-host.
    let redirecting = JwksServer::start(json!({})).await;
    redirecting
        .set(Mode::RedirectTo(format!(
            "http://localhost:{}/jwks.json",
            target.addr.port()
        )))
        .await;
    let auth = authenticator(&redirecting, cache(3600, 1, 7200)).await;
    assert_eq!(target.hits(), 0, "the off-host redirect was not followed");
    assert_eq!(
        check(&auth, &directory(), &token(&signer)).await,
        Err(DenyReason::KeysUnavailable)
    );
    // A plain-http JWKS URL is refused by configuration unless it is loopback and explicitly allowed.
    let mut config = issuer("http://idp.test.example/jwks.json", cache(3600, 1, 7200));
    assert!(config.check().is_err());
    config.allow_loopback_http = false;
    config.jwks = JwksSource::Url(target.url.clone());
    assert!(config.check().is_err());
}

#[tokio::test]
async fn case_27_during_rotation_the_previous_key_works_until_it_is_removed() {
    let (previous, next) = (
        DevSigner::generate().unwrap(),
        DevSigner::generate().unwrap(),
    );
    let server = JwksServer::start(jwks_of(&[&previous])).await;
    let auth = authenticator(&server, cache(1, 1, 60)).await;
    let dir = directory();
    server.set(Mode::Serve(jwks_of(&[&previous, &next]))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        check(&auth, &dir, &token(&previous)).await,
        Ok("acme".into())
    );
    assert_eq!(check(&auth, &dir, &token(&next)).await, Ok("acme".into()));
    server.set(Mode::Serve(jwks_of(&[&next]))).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        check(&auth, &dir, &token(&previous)).await,
        Err(DenyReason::UnknownKey)
    );
    assert_eq!(check(&auth, &dir, &token(&next)).await, Ok("acme".into()));
}
