//! Identity interop with independent implementations (issue 3): a certified OpenID Provider (npm
//! `oidc-provider`) issuing RFC 9068 access tokens with the client-credentials grant, and PyJWT minting
//! valid and invalid tokens that our verifier must judge the same way.

use std::process::Stdio;

use runtime::auth::IssuerConfig;
use runtime::auth::jwks::JwksSource;
use runtime::registry::IdentityBinding;
use serde_json::{Value, json};
use tests::serve_with;
use tokio::io::AsyncBufReadExt;

const API: &str = "urn:tenantctl:api";

fn bind(spec: &mut cli::manifest::TenantSpec, issuer: &str) {
    spec.identity = IdentityBinding {
        issuer: issuer.into(),
        audience: API.into(),
        tenant_claim: "tenant_id".into(),
    };
}

fn platform_with(issuer: IssuerConfig) -> cli::platform::Platform {
    let mut platform = cli::platform::Platform::builtin();
    issuer.check().unwrap();
    platform.issuers.push(issuer);
    platform
}

async fn models(s: &tests::Served, token: &str) -> u16 {
    s.http
        .get(format!("{}/v1/models", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn access_tokens_from_oidc_provider_are_accepted_and_other_resources_refused() {
    let dir = cli::testing::repo_root().join("tests/idp");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed: run `npm ci --prefix tests/idp` (scripts/test.sh does)"
    );
    let secret = runtime::secrets::generate_secret();
    use secrecy::ExposeSecret;
    let mut idp = tokio::process::Command::new("node")
        .arg(dir.join("provider.mjs"))
        .env("IDP_CLIENT_SECRET", secret.expose_secret())
        .env("IDP_API_RESOURCE", API)
        .env("IDP_OTHER_RESOURCE", "urn:billing:api")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the OpenID Provider interop test (Node.js 20 or newer)");
    let mut lines = tokio::io::BufReader::new(idp.stdout.take().unwrap()).lines();
    let ready: Value = serde_json::from_str(
        &lines
            .next_line()
            .await
            .unwrap()
            .expect("the provider exited"),
    )
    .unwrap();
    let issuer_url = ready["issuer"].as_str().unwrap().to_owned();
    let mut issuer = IssuerConfig::new(
        "oidc",
        &issuer_url,
        JwksSource::Url(ready["jwks_uri"].as_str().unwrap().into()),
        API,
    );
    issuer.allow_loopback_http = true;
    issuer.required_typ = Some("at+jwt".into());
    issuer.max_lifetime_secs = 3600;
    let s = serve_with(platform_with(issuer), |spec| bind(spec, "oidc")).await;

    let token_for = |client: &'static str, resource: &'static str| {
        let (http, endpoint, secret) = (
            s.http.clone(),
            ready["token_endpoint"].as_str().unwrap().to_owned(),
            secret.expose_secret().to_owned(),
        );
        async move {
            let body = format!(
                "grant_type=client_credentials&resource={}&scope=models%3Aread%20chat%3Awrite%20usage%3Aread",
                resource.replace(':', "%3A")
            );
            let r = http
                .post(endpoint)
                .basic_auth(client, Some(secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "token request failed");
            let v: Value = r.json().await.unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let acme = token_for("acme-service", API).await;
    assert_eq!(acme.split('.').count(), 3, "a JWT access token");
    assert_eq!(models(&s, &acme).await, 200);
    let r = s
        .http
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth(&acme)
        .json(&json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let usage: Value = s
        .http
        .get(format!("{}/v1/usage", s.base))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["tenant"], "acme");
    assert_eq!(usage["data"][0]["subject"], "acme-service");
    let globex = token_for("globex-service", API).await;
    let usage: Value = s
        .http
        .get(format!("{}/v1/usage", s.base))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            usage["tenant"].as_str(),
            usage["totals"]["requests"].as_i64()
        ),
        (Some("globex"), Some(0))
    );
    // The same provider's token for another resource server is refused.
    let other = token_for("acme-service", "urn:billing:api").await;
    assert_eq!(models(&s, &other).await, 401);
    // And a dev-IdP token for a tenant bound to `oidc` is refused (case 16).
    assert_eq!(models(&s, &s.token("acme")).await, 401);
    s.running.stop().await.unwrap();
    idp.kill().await.unwrap();
}

#[tokio::test]
async fn the_verifier_agrees_with_pyjwt_on_valid_and_invalid_tokens() {
    let work = tempfile::tempdir().unwrap();
    let jwks = work.path().join("jwks.json");
    let script = cli::testing::repo_root().join("tests/clients/pyjwt_tokens.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&jwks)
        .args(["https://pyjwt.test", API, "acme"])
        .output()
        .await
        .expect("python3 is needed for the PyJWT interop test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "PyJWT is missing: run `pip install pyjwt cryptography` (scripts/test.sh does)\n{stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cases.len() >= 15);
    let issuer = IssuerConfig::new("pyjwt", "https://pyjwt.test", JwksSource::File(jwks), API);
    let s = serve_with(platform_with(issuer), |spec| bind(spec, "pyjwt")).await;
    for case in &cases {
        let want = if case["accept"].as_bool().unwrap() {
            200
        } else {
            401
        };
        assert_eq!(
            models(&s, case["token"].as_str().unwrap()).await,
            want,
            "{}",
            case["name"]
        );
    }
    s.running.stop().await.unwrap();
}
