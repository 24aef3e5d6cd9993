//! The edge-authentication table (issue 2; docs/security.md section A): each hostile request is
//! refused with 401 before any handler runs, with zero tenant-database statements and no ledger row.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use runtime::auth::signer::DevSigner;
use serde_json::{Value, json};
use tests::{Served, now, serve_examples};

fn b64(v: &[u8]) -> String {
    B64.encode(v)
}

/// A token with the given raw header and payload JSON text, RS256-signed by `signer`.
fn signed(signer: &DevSigner, header: &str, payload: &str) -> String {
    signer.sign_parts(header.as_bytes(), payload.as_bytes())
}

fn header(s: &Served) -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": s.signer.kid()})
}

fn with_header(s: &Served, extra: Value) -> String {
    let mut h = header(s);
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    signed(&s.signer, &h.to_string(), &s.claims("acme").to_string())
}

fn with_claims(s: &Served, edit: impl FnOnce(&mut Value)) -> String {
    let mut c = s.claims("acme");
    edit(&mut c);
    s.signer.sign(&c)
}

fn unsigned(alg: &str, s: &Served, signature: &str) -> String {
    let h = json!({"alg": alg, "typ": "JWT", "kid": s.signer.kid()});
    format!(
        "{}.{}.{signature}",
        b64(h.to_string().as_bytes()),
        b64(s.claims("acme").to_string().as_bytes())
    )
}

/// How a request carries its credentials.
enum Cred {
    None,
    Header(String),
    Bearer(String),
    TwoBearers(String, String),
    BearerAndQuery(String),
    /// A bearer header and a token in a cookie.
    BearerAndCookie(String, String),
    /// Only a cookie carrying a token.
    Cookie(String),
    /// A bearer header and an `x-api-key` (the Anthropic SDKs' header).
    BearerAndApiKey(String, String),
    /// Two `x-api-key` headers.
    TwoApiKeys(String, String),
}

async fn send(s: &Served, path: &str, cred: &Cred) -> reqwest::StatusCode {
    let url = match cred {
        Cred::BearerAndQuery(t) => format!("{}{path}?access_token={t}", s.base),
        _ => format!("{}{path}", s.base),
    };
    let mut req = if path == "/v1/chat/completions" {
        s.http
            .post(&url)
            .json(&json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}))
    } else {
        s.http.get(&url)
    };
    match cred {
        Cred::None => {}
        Cred::Header(v) if v.is_empty() => {
            req = req.header(
                "cookie",
                format!(
                    "access_token={}; session={}",
                    s.token("acme"),
                    s.token("acme")
                ),
            )
        }
        Cred::Header(v) => req = req.header("authorization", v),
        Cred::Bearer(t) | Cred::BearerAndQuery(t) => req = req.bearer_auth(t),
        Cred::TwoBearers(a, b) => {
            req = req
                .header("authorization", format!("Bearer {a}"))
                .header("authorization", format!("Bearer {b}"))
        }
        Cred::BearerAndCookie(a, b) => {
            req = req
                .bearer_auth(a)
                .header("cookie", format!("theme=dark; access_token={b}"))
        }
        Cred::Cookie(t) => req = req.header("cookie", format!("session={t}")),
        Cred::BearerAndApiKey(a, b) => req = req.bearer_auth(a).header("x-api-key", b),
        Cred::TwoApiKeys(a, b) => req = req.header("x-api-key", a).header("x-api-key", b),
    }
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn every_hostile_token_is_refused_with_401_and_no_side_effect() {
    let s = serve_examples().await;
    let good = s.token("acme");
    let other_good = s.token("globex");
    let attacker = DevSigner::generate().unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let other_parts: Vec<&str> = other_good.split('.').collect();
    let now = now();

    // HS256 signed with our RSA public key material as the HMAC secret (classic key confusion).
    let hs256 = |secret: &[u8]| {
        let h = json!({"alg": "HS256", "typ": "JWT", "kid": s.signer.kid()});
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(s.claims("acme").to_string().as_bytes())
        );
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    };
    let attacker_jwk = attacker.jwks()["keys"][0].clone();
    // A loopback listener that must never be contacted (jku/x5u).
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().unwrap());
    let claims_text = s.claims("acme").to_string();
    let dup = |member: &str, value: &str| {
        let inner = claims_text.trim_start_matches('{');
        format!("{{\"{member}\":{value},{inner}")
    };

    let cases: Vec<(&str, Cred)> = vec![
        ("case 1: no Authorization header", Cred::None),
        ("case 1: empty bearer", Cred::Header("Bearer ".into())),
        (
            "case 1: Basic scheme",
            Cred::Header("Basic dXNlcjpwYXNz".into()),
        ),
        (
            "case 2: alg none, empty signature",
            Cred::Bearer(unsigned("none", &s, "")),
        ),
        ("case 2: alg None", Cred::Bearer(unsigned("None", &s, ""))),
        ("case 2: alg NONE", Cred::Bearer(unsigned("NONE", &s, ""))),
        (
            "case 2: alg nOnE with a signature",
            Cred::Bearer(unsigned("nOnE", &s, parts[2])),
        ),
        (
            "case 3: HS256 keyed with the RSA modulus",
            Cred::Bearer(hs256(&s.signer.modulus())),
        ),
        (
            "case 3: HS256 keyed with the JWKS document",
            Cred::Bearer(hs256(s.signer.jwks().to_string().as_bytes())),
        ),
        (
            "case 4: HS256 with a blank secret",
            Cred::Bearer(hs256(b"")),
        ),
        (
            "case 4: ES256 with r=s=0",
            Cred::Bearer(unsigned("ES256", &s, &b64(&[0u8; 64]))),
        ),
        (
            "case 5: embedded jwk with the attacker's key",
            Cred::Bearer(signed(
                &attacker,
                &json!({"alg": "RS256", "kid": attacker.kid(), "jwk": attacker_jwk}).to_string(),
                &claims_text,
            )),
        ),
        (
            "case 5: embedded x5c",
            Cred::Bearer(signed(
                &attacker,
                &json!({"alg": "RS256", "kid": attacker.kid(), "x5c": ["MIIB"]}).to_string(),
                &claims_text,
            )),
        ),
        (
            "case 6: jku pointing at a loopback listener",
            Cred::Bearer(signed(
                &attacker,
                &json!({"alg": "RS256", "kid": attacker.kid(), "jku": trap_url}).to_string(),
                &claims_text,
            )),
        ),
        (
            "case 6: x5u pointing at a loopback listener",
            Cred::Bearer(signed(
                &attacker,
                &json!({"alg": "RS256", "kid": attacker.kid(), "x5u": trap_url}).to_string(),
                &claims_text,
            )),
        ),
        (
            "case 7: kid path traversal",
            Cred::Bearer(with_header(&s, json!({"kid": "../../dev/null"}))),
        ),
        (
            "case 7: kid SQL",
            Cred::Bearer(with_header(&s, json!({"kid": "x' UNION SELECT 'key"}))),
        ),
        (
            "case 7: kid 8 KB",
            Cred::Bearer(with_header(&s, json!({"kid": "k".repeat(8192)}))),
        ),
        (
            "case 7: kid with NUL",
            Cred::Bearer(with_header(&s, json!({"kid": "a\u{0}b"}))),
        ),
        (
            "case 7: kid not a string",
            Cred::Bearer(with_header(&s, json!({"kid": 7}))),
        ),
        (
            "case 8: payload byte edited",
            Cred::Bearer(format!(
                "{}.{}x.{}",
                parts[0],
                &parts[1][..parts[1].len() - 1],
                parts[2]
            )),
        ),
        (
            "case 8: signature stripped",
            Cred::Bearer(format!("{}.{}.", parts[0], parts[1])),
        ),
        (
            "case 8: another token's signature",
            Cred::Bearer(format!("{}.{}.{}", parts[0], parts[1], other_parts[2])),
        ),
        (
            "case 8: signed by another key under our kid",
            Cred::Bearer(signed(&attacker, &header(&s).to_string(), &claims_text)),
        ),
        (
            "case 9: expired beyond leeway",
            Cred::Bearer(with_claims(&s, |c| c["exp"] = json!(now - 31 - 30))),
        ),
        (
            "case 9: exp as string",
            Cred::Bearer(with_claims(&s, |c| {
                c["exp"] = json!((now + 600).to_string())
            })),
        ),
        (
            "case 9: exp as float",
            Cred::Bearer(with_claims(&s, |c| {
                c["exp"] = json!((now + 600) as f64 + 0.5)
            })),
        ),
        (
            "case 9: exp negative",
            Cred::Bearer(with_claims(&s, |c| c["exp"] = json!(-1))),
        ),
        (
            "case 9: exp missing",
            Cred::Bearer(with_claims(&s, |c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
        ),
        (
            "case 10: nbf in the future",
            Cred::Bearer(with_claims(&s, |c| c["nbf"] = json!(now + 300))),
        ),
        (
            "case 10: iat in the future",
            Cred::Bearer(with_claims(&s, |c| c["iat"] = json!(now + 300))),
        ),
        (
            "case 11: iss missing",
            Cred::Bearer(with_claims(&s, |c| {
                c.as_object_mut().unwrap().remove("iss");
            })),
        ),
        (
            "case 11: iss wrong",
            Cred::Bearer(with_claims(&s, |c| {
                c["iss"] = json!("https://evil.example")
            })),
        ),
        (
            "case 11: iss as array",
            Cred::Bearer(with_claims(&s, |c| {
                c["iss"] = json!([cli::devidp::DEV_ISSUER])
            })),
        ),
        (
            "case 11: iss with trailing slash",
            Cred::Bearer(with_claims(&s, |c| {
                c["iss"] = json!(format!("{}/", cli::devidp::DEV_ISSUER))
            })),
        ),
        (
            "case 11: iss case variant",
            Cred::Bearer(with_claims(&s, |c| {
                c["iss"] = json!(cli::devidp::DEV_ISSUER.to_uppercase())
            })),
        ),
        (
            "case 12: aud missing",
            Cred::Bearer(with_claims(&s, |c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
        ),
        (
            "case 12: aud of another API",
            Cred::Bearer(with_claims(&s, |c| c["aud"] = json!("billing-api"))),
        ),
        (
            "case 13: unknown crit",
            Cred::Bearer(with_header(&s, json!({"crit": ["exp"]}))),
        ),
        (
            "case 13: b64 false",
            Cred::Bearer(with_header(&s, json!({"b64": false, "crit": ["b64"]}))),
        ),
        (
            "case 14: duplicate tenant_id",
            Cred::Bearer(signed(
                &s.signer,
                &header(&s).to_string(),
                &dup("tenant_id", "\"globex\""),
            )),
        ),
        (
            "case 14: duplicate iss",
            Cred::Bearer(signed(
                &s.signer,
                &header(&s).to_string(),
                &dup("iss", "\"x\""),
            )),
        ),
        (
            "case 14: duplicate exp",
            Cred::Bearer(signed(
                &s.signer,
                &header(&s).to_string(),
                &dup("exp", "9999999999"),
            )),
        ),
        (
            "case 15: tenant claim missing",
            Cred::Bearer(with_claims(&s, |c| {
                c.as_object_mut().unwrap().remove("tenant_id");
            })),
        ),
        (
            "case 15: tenant claim not a string",
            Cred::Bearer(with_claims(&s, |c| c["tenant_id"] = json!(["acme"]))),
        ),
        (
            "case 15: tenant claim empty",
            Cred::Bearer(with_claims(&s, |c| c["tenant_id"] = json!(""))),
        ),
        (
            "case 15: tenant claim off-grammar",
            Cred::Bearer(with_claims(&s, |c| c["tenant_id"] = json!("ACME';--"))),
        ),
        (
            "case 15: unknown tenant",
            Cred::Bearer(with_claims(&s, |c| c["tenant_id"] = json!("initech"))),
        ),
        (
            "case 17: two Authorization headers",
            Cred::TwoBearers(good.clone(), other_good.clone()),
        ),
        (
            "case 17: header plus query token",
            Cred::BearerAndQuery(good.clone()),
        ),
        (
            "case 17: header plus a token in a cookie",
            Cred::BearerAndCookie(good.clone(), other_good.clone()),
        ),
        (
            "case 17: a valid token in a cookie only",
            Cred::Cookie(good.clone()),
        ),
        (
            "case 17: a bearer header plus an x-api-key",
            Cred::BearerAndApiKey(good.clone(), other_good.clone()),
        ),
        (
            "case 17: two x-api-key headers",
            Cred::TwoApiKeys(good.clone(), good.clone()),
        ),
        (
            "case 18: 64 KB token",
            Cred::Bearer(format!(
                "{}.{}.{}",
                parts[0],
                "A".repeat(64 * 1024),
                parts[2]
            )),
        ),
        (
            "case 18: invalid base64url",
            Cred::Bearer("!!!.???.***".into()),
        ),
        (
            "case 18: invalid UTF-8 in payload",
            Cred::Bearer(
                s.signer
                    .sign_parts(header(&s).to_string().as_bytes(), &[0xff, 0xfe, 0x7b]),
            ),
        ),
        ("case 19: quote in bearer", Cred::Bearer("abc'def".into())),
        (
            "case 19: SQL comment in bearer",
            Cred::Bearer("x;--".into()),
        ),
        (
            "case 19: pg_sleep in bearer",
            Cred::Bearer("');SELECT pg_sleep(8);--".into()),
        ),
    ];

    let ledger_before = s.ledger_rows("acme").await;
    let platform_keys = s.running.state.auth.keys("platform").unwrap().clone();
    let fetches_before = platform_keys
        .stats
        .attempts
        .load(std::sync::atomic::Ordering::SeqCst);
    for (name, cred) in &cases {
        for path in ["/v1/chat/completions", "/v1/usage", "/v1/models"] {
            let before = s.side_effects();
            let status = send(&s, path, cred).await;
            assert_eq!(status, 401, "{name} on {path}");
            assert_eq!(
                s.side_effects(),
                before,
                "{name} on {path}: a handler ran or a statement was executed"
            );
        }
    }
    assert_eq!(
        s.ledger_rows("acme").await,
        ledger_before,
        "no ledger row from a denied request"
    );
    assert!(
        trap.accept().is_err(),
        "case 6: the jku/x5u listener was contacted"
    );
    // case 5: nothing from a token header entered the key cache.
    assert!(platform_keys.current(attacker.kid()).is_none());
    // case 7/21: hostile kids cost at most one JWKS refetch per cooldown (30 s) across the whole table.
    let fetches = platform_keys
        .stats
        .attempts
        .load(std::sync::atomic::Ordering::SeqCst)
        - fetches_before;
    assert!(fetches <= 1, "{fetches} JWKS fetches during the table");
    // Denials are counted by reason.
    let counts = s.running.state.auth.denial_counts();
    assert!(
        counts.get("missing_token").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    assert!(
        counts.get("bad_signature").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );

    // The same good token is accepted (the table is not passing because everything fails).
    assert_eq!(
        send(&s, "/v1/models", &Cred::Bearer(good.clone())).await,
        200
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_without_the_route_scope_is_refused_with_403_before_the_handler() {
    let s = serve_examples().await;
    let token = with_claims(&s, |c| c["scope"] = json!("models:read"));
    let before = s.side_effects();
    assert_eq!(
        send(&s, "/v1/chat/completions", &Cred::Bearer(token.clone())).await,
        403
    );
    assert_eq!(
        send(&s, "/v1/usage", &Cred::Bearer(token.clone())).await,
        403
    );
    // No handler ran and nothing was written: a refusal only reads whether the tenant's admins
    // granted the subject the permission as a member (issue 12).
    assert_eq!(s.side_effects().1, before.1);
    assert_eq!(s.ledger_rows("acme").await, 0);
    assert_eq!(send(&s, "/v1/models", &Cred::Bearer(token)).await, 200);
    // Public routes need no token; unknown routes still need one (deny by default).
    assert_eq!(send(&s, "/healthz", &Cred::None).await, 200);
    assert_eq!(send(&s, "/v1/admin/tenants", &Cred::None).await, 401);
    s.running.stop().await.unwrap();
}
