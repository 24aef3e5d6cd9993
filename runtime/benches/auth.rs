//! Benchmarks of the identity layer (issue 3; results in docs/benchmarks.md via `bench/auth.sh`).
//!
//! - `verify/cold_rs256`: what a token not seen before costs: decode, key lookup, RS256 signature
//!   check, claim checks. Compared with `openssl speed rsa2048` verify in the same run.
//! - `verify/warm_cached`: the same token again: bearer parsing, SHA-256 of the token, cache hit, key
//!   still-published check, tenant binding.
//! - `auth_layer/mix`: `Authenticator::authenticate` on one thread over a realistic mix: 90% repeat
//!   tokens of 200 users, 5% forged signatures (never cacheable), 5% garbage.

#![allow(
    clippy::expect_used,
    reason = "benchmark set-up: a failure should stop the run loudly"
)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runtime::auth::jwks::JwksSource;
use runtime::auth::signer::DevSigner;
use runtime::auth::{Authenticator, Credentials, DeploymentPolicy, IssuerConfig, jwt};
use runtime::registry::{IdentityBinding, TenantDirectory, TenantRecord};
use serde_json::json;

const NOW: i64 = 1_900_000_000;

fn setup() -> (DevSigner, Authenticator, TenantDirectory, IssuerConfig) {
    let signer = DevSigner::generate().expect("keygen");
    let issuer = IssuerConfig::new(
        "bench",
        "https://bench.example",
        JwksSource::File("unused".into()),
        "api",
    );
    let keys = HashMap::from([(signer.kid().to_owned(), signer.verifier_key().expect("key"))]);
    let auth =
        Authenticator::with_fixed_keys(vec![(issuer.clone(), keys)], DeploymentPolicy::default());
    let model = runtime::domain::ModelId::parse("mock-small").expect("model");
    let dir = TenantDirectory::new(vec![TenantRecord {
        id: runtime::domain::TenantId::parse("acme").expect("id"),
        display_name: "Acme".into(),
        tier: runtime::domain::Tier::Schema,
        identity: IdentityBinding {
            issuer: "bench".into(),
            audience: "api".into(),
            tenant_claim: "tenant_id".into(),
        },
        policy: runtime::registry::ModelPolicy::only(
            runtime::domain::ProviderId::Mock,
            vec![model],
        )
        .expect("one model"),
        db_role: "r".into(),
        db_name: "d".into(),
        read_only: false,
        suspended: false,
        limits: runtime::registry::TenantLimits {
            monthly_budget: runtime::domain::MicroUsd(1),
            subject_monthly_budget: None,
            requests_per_minute: 1,
            tokens_per_minute: 1,
        },
        prices: Default::default(),
        tags: Default::default(),
        registered: None,
    }]);
    (signer, auth, dir, issuer)
}

fn token(signer: &DevSigner, user: usize) -> String {
    signer.sign(
        &json!({"iss": "https://bench.example", "sub": format!("user-{user}"), "aud": "api",
        "iat": NOW - 10, "exp": NOW + 3000, "tenant_id": "acme", "scope": "models:read chat:write",
        "jti": format!("{user:08}")}),
    )
}

fn headers(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

fn bench(c: &mut Criterion) {
    let (signer, auth, dir, issuer) = setup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let key = signer.verifier_key().expect("key");
    let t = token(&signer, 0);

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cold_rs256", |b| {
        b.iter(|| {
            let u = jwt::decode(black_box(&t)).expect("decode");
            assert!(key.verify(u.signing_input.as_bytes(), &u.signature));
            black_box(jwt::check_claims(u.claims, &issuer, NOW).expect("claims"))
        })
    });
    let h = headers(&t);
    let creds = Credentials {
        headers: &h,
        query: None,
        gateway_claims: None,
    };
    rt.block_on(auth.authenticate(creds, &dir, NOW))
        .expect("warm-up");
    g.bench_function("warm_cached", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(auth.authenticate(creds, &dir, NOW))
                    .expect("ok"),
            )
        })
    });
    g.finish();

    // 200 users' tokens (warm after first use), forged signatures and garbage: 90 / 5 / 5.
    let users: Vec<http::HeaderMap> = (0..200).map(|u| headers(&token(&signer, u))).collect();
    let forger = DevSigner::generate().expect("keygen");
    let forged: Vec<http::HeaderMap> = (0..10)
        .map(|u| {
            let claims = json!({"iss": "https://bench.example", "sub": format!("x{u}"), "aud": "api", "iat": NOW, "exp": NOW + 60, "tenant_id": "acme"});
            let header = json!({"alg": "RS256", "kid": signer.kid()});
            headers(&forger.sign_parts(header.to_string().as_bytes(), claims.to_string().as_bytes()))
        })
        .collect();
    let garbage: Vec<http::HeaderMap> = (0..10)
        .map(|u| headers(&format!("garbage.{u}.token")))
        .collect();
    let mut mix: Vec<&http::HeaderMap> = Vec::with_capacity(200);
    for i in 0..200 {
        mix.push(match i % 20 {
            0 => &forged[i / 20],
            1 => &garbage[i / 20],
            _ => &users[i],
        });
    }
    let mut g = c.benchmark_group("auth_layer");
    g.throughput(Throughput::Elements(mix.len() as u64));
    g.bench_function("mix", |b| {
        b.iter(|| {
            for h in &mix {
                let creds = Credentials {
                    headers: h,
                    query: None,
                    gateway_claims: None,
                };
                let _ = black_box(rt.block_on(auth.authenticate(creds, &dir, NOW)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
