//! Per-issuer token policy (issue 3): required `typ`, maximum lifetime, explicit leeway, roles
//! mapping, tenant claim paths, ES256 when explicitly allowed, issuer binding (case 16), per-tenant
//! deployments, and agreement with API Gateway's authorizer. Driven through `Authenticator` directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use runtime::auth::jwks::{Jwk, JwksSource};
use runtime::auth::jwt::DenyReason;
use runtime::auth::signer::DevSigner;
use runtime::auth::{Alg, Authenticator, Credentials, DeploymentPolicy, IssuerConfig, RolesConfig};
use runtime::registry::TenantDirectory;
use serde_json::{Value, json};
use tests::{now, record};

const AUD: &str = "api://tenantctl";

struct Fixture {
    signer: DevSigner,
    partner: DevSigner,
    auth: Authenticator,
    dir: TenantDirectory,
}

fn issuer(name: &str, iss: &str) -> IssuerConfig {
    IssuerConfig::new(name, iss, JwksSource::File("unused".into()), AUD)
}

fn fixture(edit: impl FnOnce(&mut IssuerConfig), policy: DeploymentPolicy) -> Fixture {
    let signer = DevSigner::generate().unwrap();
    let partner = DevSigner::generate().unwrap();
    let mut main = issuer("main", "https://main.example");
    edit(&mut main);
    let claim = main.tenant_claim.clone();
    let keys = |s: &DevSigner| HashMap::from([(s.kid().to_owned(), s.verifier_key().unwrap())]);
    let auth = Authenticator::with_fixed_keys(
        vec![
            (main, keys(&signer)),
            (issuer("partner", "https://partner.example"), keys(&partner)),
        ],
        policy,
    );
    let dir = TenantDirectory::new(vec![
        record("acme", "main", AUD, &claim),
        record("globex", "main", AUD, &claim),
        record("initech", "partner", AUD, "tenant_id"),
    ]);
    Fixture {
        signer,
        partner,
        auth,
        dir,
    }
}

fn claims() -> Value {
    let now = now();
    json!({"iss": "https://main.example", "sub": "u1", "aud": AUD, "iat": now, "exp": now + 600, "tenant_id": "acme"})
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = claims();
    edit(&mut c);
    c
}

fn sign_with_typ(signer: &DevSigner, typ: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": "RS256", "kid": signer.kid()});
    if let Some(t) = typ {
        header["typ"] = json!(t);
    }
    signer.sign_parts(header.to_string().as_bytes(), claims.to_string().as_bytes())
}

async fn run(
    f: &Fixture,
    token: &str,
    gateway: Option<&HashMap<String, String>>,
) -> Result<(String, Vec<String>), DenyReason> {
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    f.auth
        .authenticate(
            Credentials {
                headers: &headers,
                query: None,
                gateway_claims: gateway,
            },
            &f.dir,
            now(),
        )
        .await
        .map(|t| (t.id().to_string(), t.principal().scopes.clone()))
        .map_err(|d| d.reason)
}

#[track_caller]
fn expect(
    got: Result<(String, Vec<String>), DenyReason>,
    want: Result<&str, DenyReason>,
    name: &str,
) {
    assert_eq!(
        got.map(|(t, _)| t).as_deref().map_err(|e| *e),
        want,
        "{name}"
    );
}

#[tokio::test]
async fn claim_and_lifetime_rules_table() {
    let f = fixture(|_| {}, DeploymentPolicy::default());
    let n = now();
    let cases: Vec<(&str, Value, Result<&str, DenyReason>)> = vec![
        ("valid", claims(), Ok("acme")),
        (
            "case 9: expired within leeway (30 s) is accepted",
            with(|c| {
                c["iat"] = json!(n - 600);
                c["exp"] = json!(n - 29);
            }),
            Ok("acme"),
        ),
        (
            "case 9: expired by leeway + 1 s",
            with(|c| {
                c["iat"] = json!(n - 600);
                c["exp"] = json!(n - 31);
            }),
            Err(DenyReason::Expired),
        ),
        (
            "exp not after iat",
            with(|c| c["exp"] = json!(n)),
            Err(DenyReason::LifetimeTooLong),
        ),
        (
            "case 9: exp huge",
            with(|c| c["exp"] = json!(i64::MAX)),
            Err(DenyReason::LifetimeTooLong),
        ),
        (
            "case 10: lifetime above the maximum",
            with(|c| c["exp"] = json!(n + 24 * 3600 + 1)),
            Err(DenyReason::LifetimeTooLong),
        ),
        (
            "case 10: lifetime at the maximum",
            with(|c| c["exp"] = json!(n + 24 * 3600)),
            Ok("acme"),
        ),
        (
            "case 10: nbf beyond skew",
            // 10 s past the 30 s skew: a loaded machine's slow run cannot bring it inside.
            with(|c| c["nbf"] = json!(n + 40)),
            Err(DenyReason::NotYetValid),
        ),
        (
            "case 10: nbf within skew",
            with(|c| c["nbf"] = json!(n + 29)),
            Ok("acme"),
        ),
        (
            "case 10: iat beyond skew",
            with(|c| c["iat"] = json!(n + 40)),
            Err(DenyReason::NotYetValid),
        ),
        (
            "iat missing",
            with(|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            Err(DenyReason::BadClaims),
        ),
        (
            "sub missing",
            with(|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            Err(DenyReason::BadClaims),
        ),
        (
            "sub not a string",
            with(|c| c["sub"] = json!(7)),
            Err(DenyReason::BadClaims),
        ),
        (
            "case 12: aud of another API",
            with(|c| c["aud"] = json!("api://billing")),
            Err(DenyReason::WrongAudience),
        ),
        (
            "case 12: aud list containing ours",
            with(|c| c["aud"] = json!(["api://billing", AUD])),
            Ok("acme"),
        ),
        (
            "case 12: an ID token (aud is the client id)",
            with(|c| c["aud"] = json!("spa-client-id")),
            Err(DenyReason::WrongAudience),
        ),
        (
            "case 11: iss trailing slash",
            with(|c| c["iss"] = json!("https://main.example/")),
            Err(DenyReason::UntrustedIssuer),
        ),
        (
            "case 15: suspended or unknown tenant",
            with(|c| c["tenant_id"] = json!("hooli")),
            Err(DenyReason::UnknownTenant),
        ),
        (
            "case 16: tenant bound to another issuer",
            with(|c| c["tenant_id"] = json!("initech")),
            Err(DenyReason::TenantIssuerMismatch),
        ),
    ];
    for (name, c, want) in cases {
        expect(run(&f, &f.signer.sign(&c), None).await, want, name);
    }
    // case 16, the other way round: the partner issuer's valid token claiming a tenant bound to `main`.
    let partner_claims = with(|c| c["iss"] = json!("https://partner.example"));
    expect(
        run(&f, &f.partner.sign(&partner_claims), None).await,
        Err(DenyReason::TenantIssuerMismatch),
        "case 16: partner token claiming acme",
    );
    let own = with(|c| {
        c["iss"] = json!("https://partner.example");
        c["tenant_id"] = json!("initech");
    });
    expect(
        run(&f, &f.partner.sign(&own), None).await,
        Ok("initech"),
        "partner token for its own tenant",
    );
    // The partner's key cannot sign for `main` (keys are per issuer).
    let forged = f.partner.sign_parts(
        json!({"alg": "RS256", "kid": f.signer.kid()})
            .to_string()
            .as_bytes(),
        claims().to_string().as_bytes(),
    );
    expect(
        run(&f, &forged, None).await,
        Err(DenyReason::BadSignature),
        "another issuer's key under our kid",
    );
}

#[tokio::test]
async fn required_typ_is_enforced_when_configured() {
    let f = fixture(
        |i| i.required_typ = Some("at+jwt".into()),
        DeploymentPolicy::default(),
    );
    for (typ, want) in [
        (Some("at+jwt"), Ok("acme")),
        (Some("application/at+jwt"), Ok("acme")),
        (Some("JWT"), Err(DenyReason::BadType)),
        (None, Err(DenyReason::BadType)),
    ] {
        expect(
            run(&f, &sign_with_typ(&f.signer, typ, &claims()), None).await,
            want,
            &format!("typ {typ:?}"),
        );
    }
}

#[tokio::test]
async fn roles_map_to_permissions_and_tenant_claims_can_be_namespaced_or_nested() {
    let roles = RolesConfig {
        claim: "groups".into(),
        permissions: BTreeMap::from([
            (
                "llm-users".into(),
                vec!["models:read".into(), "chat:write".into()],
            ),
            ("finance".into(), vec!["usage:read".into()]),
            ("accounts".into(), vec!["role:tenant_finance".into()]),
            ("owners".into(), vec!["role:tenant_admin".into()]),
        ]),
    };
    let f = fixture(
        |i| {
            i.roles = Some(roles);
            i.tenant_claim = "https://tenantctl.example/tenant".into();
        },
        DeploymentPolicy::default(),
    );
    let c = with(|c| {
        c.as_object_mut().unwrap().remove("tenant_id");
        c["https://tenantctl.example/tenant"] = json!("globex");
        c["groups"] = json!(["llm-users", "unknown-group"]);
        c["scope"] = json!("usage:read");
    });
    let (tenant, scopes) = run(&f, &f.signer.sign(&c), None).await.unwrap();
    assert_eq!(tenant, "globex");
    assert_eq!(scopes, vec!["chat:write", "models:read", "usage:read"]);
    // Issue 12 item 1: a group mapped to a built-in role gets its whole bundle, nothing more.
    for (group, want) in [
        (
            "accounts",
            vec!["audit:read", "me:read", "policy:read", "usage:read"],
        ),
        (
            "owners",
            vec![
                "audit:read",
                "chat:write",
                "conversations:read",
                "conversations:write",
                "credentials:read",
                "credentials:write",
                "embeddings:write",
                "me:read",
                "members:read",
                "members:write",
                "models:read",
                "policy:read",
                "policy:write",
                "templates:read",
                "templates:write",
                "usage:read",
            ],
        ),
    ] {
        let c = with(|c| {
            c.as_object_mut().unwrap().remove("tenant_id");
            c["https://tenantctl.example/tenant"] = json!("globex");
            c["groups"] = json!([group]);
            c.as_object_mut().unwrap().remove("scope");
        });
        let (_, scopes) = run(&f, &f.signer.sign(&c), None).await.unwrap();
        assert_eq!(scopes, want, "{group}");
    }
    // The default claim is not consulted for this issuer.
    expect(
        run(&f, &f.signer.sign(&claims()), None).await,
        Err(DenyReason::BadClaims),
        "tenant_id is not this issuer's claim",
    );
    let bad_roles = with(|c| {
        c["https://tenantctl.example/tenant"] = json!("acme");
        c["groups"] = json!("llm-users");
    });
    expect(
        run(&f, &f.signer.sign(&bad_roles), None).await,
        Err(DenyReason::BadClaims),
        "roles claim must be an array",
    );

    let nested = fixture(
        |i| i.tenant_claim = "o.id".into(),
        DeploymentPolicy::default(),
    );
    let c = with(|c| c["o"] = json!({"id": "acme", "rol": "admin"}));
    expect(
        run(&nested, &nested.signer.sign(&c), None).await,
        Ok("acme"),
        "Clerk-style nested claim",
    );
}

#[tokio::test]
async fn es256_is_accepted_only_where_explicitly_allowed() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = ec.public_key().as_ref().to_vec();
    let jwk = Arc::new(Jwk::ec_p256(&point[1..33], &point[33..65]).unwrap());
    let es256 = |claims: &Value, sig: Option<Vec<u8>>| {
        let header = json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = sig.unwrap_or_else(|| ec.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec());
        format!("{input}.{}", B64.encode(sig))
    };
    let mut only_rs = issuer("main", "https://main.example");
    let mut with_es = only_rs.clone();
    with_es.algorithms = vec![Alg::RS256, Alg::ES256];
    only_rs.algorithms = vec![Alg::RS256];
    let dir = TenantDirectory::new(vec![record("acme", "main", AUD, "tenant_id")]);
    for (config, want_valid) in [
        (only_rs, Err(DenyReason::UnsupportedAlg)),
        (with_es, Ok("acme")),
    ] {
        let f = Fixture {
            signer: DevSigner::generate().unwrap(),
            partner: DevSigner::generate().unwrap(),
            auth: Authenticator::with_fixed_keys(
                vec![(config, HashMap::from([("ec-1".to_owned(), jwk.clone())]))],
                DeploymentPolicy::default(),
            ),
            dir: TenantDirectory::new(vec![]),
        };
        let f = Fixture {
            dir: TenantDirectory::new(vec![record("acme", "main", AUD, "tenant_id")]),
            ..f
        };
        expect(
            run(&f, &es256(&claims(), None), None).await,
            want_valid,
            "ES256 signed",
        );
        // case 4: ES256 with r = s = 0 never verifies.
        let zero = run(&f, &es256(&claims(), Some(vec![0u8; 64])), None).await;
        assert!(zero.is_err(), "r=s=0 accepted");
    }
    let _ = dir;
}

#[tokio::test]
async fn a_per_tenant_deployment_refuses_other_tenants() {
    let policy = DeploymentPolicy {
        tenant: Some(runtime::domain::TenantId::parse("acme").unwrap()),
        require_gateway_authorizer: false,
        platform: None,
    };
    let f = fixture(|_| {}, policy);
    expect(
        run(&f, &f.signer.sign(&claims()), None).await,
        Ok("acme"),
        "its own tenant",
    );
    let globex = with(|c| c["tenant_id"] = json!("globex"));
    expect(
        run(&f, &f.signer.sign(&globex), None).await,
        Err(DenyReason::WrongDeployment),
        "another tenant",
    );
}

#[tokio::test]
async fn behind_api_gateway_the_authorizer_claims_must_agree_with_the_verified_token() {
    let policy = DeploymentPolicy {
        tenant: None,
        require_gateway_authorizer: true,
        platform: None,
    };
    let f = fixture(|_| {}, policy);
    let token = f.signer.sign(&claims());
    let gw = |edit: &dyn Fn(&mut HashMap<String, String>)| {
        let mut m = HashMap::from([
            ("iss".to_owned(), "https://main.example".to_owned()),
            ("sub".to_owned(), "u1".to_owned()),
            ("tenant_id".to_owned(), "acme".to_owned()),
        ]);
        edit(&mut m);
        m
    };
    expect(
        run(&f, &token, Some(&gw(&|_| {}))).await,
        Ok("acme"),
        "claims agree",
    );
    expect(
        run(&f, &token, None).await,
        Err(DenyReason::AuthorizerMismatch),
        "no authorizer context",
    );
    expect(
        run(
            &f,
            &token,
            Some(&gw(&|m| {
                m.insert("sub".into(), "u2".into());
            })),
        )
        .await,
        Err(DenyReason::AuthorizerMismatch),
        "another subject",
    );
    expect(
        run(
            &f,
            &token,
            Some(&gw(&|m| {
                m.insert("tenant_id".into(), "globex".into());
            })),
        )
        .await,
        Err(DenyReason::AuthorizerMismatch),
        "another tenant",
    );
    expect(
        run(
            &f,
            &token,
            Some(&gw(&|m| {
                m.insert("iss".into(), "https://evil.example".into());
            })),
        )
        .await,
        Err(DenyReason::AuthorizerMismatch),
        "another issuer",
    );
}
