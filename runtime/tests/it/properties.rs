//! Property tests over the parsers that see attacker bytes first (issue 3, item 8; security case 18).
//! `cargo fuzz` needs a nightly toolchain that this project's machines cannot install, so these run the
//! same inputs through proptest on stable: arbitrary strings, arbitrary bytes in each token part,
//! arbitrary JSON in header and claims, arbitrary JWKS documents. The properties: no panic, oversized
//! input refused before decoding, and no mutation of a signed token ever verifies.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use proptest::prelude::*;
use runtime::auth::issuer::Alg;
use runtime::auth::jwks::{JwksSource, parse_jwks};
use runtime::auth::jwt::{self, DenyReason, MAX_TOKEN_BYTES, StrictObject};
use runtime::auth::signer::DevSigner;
use runtime::auth::{Authenticator, Credentials, DeploymentPolicy, IssuerConfig};
use runtime::registry::TenantDirectory;
use serde_json::{Value, json};

fn signer() -> &'static DevSigner {
    static SIGNER: OnceLock<DevSigner> = OnceLock::new();
    SIGNER.get_or_init(|| DevSigner::generate().unwrap())
}

fn issuer() -> IssuerConfig {
    IssuerConfig::new(
        "p",
        "https://p.example",
        JwksSource::File("unused".into()),
        "api",
    )
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn claim_object() -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        Just("iss".to_owned()),
        Just("sub".to_owned()),
        Just("aud".to_owned()),
        Just("exp".to_owned()),
        Just("iat".to_owned()),
        Just("nbf".to_owned()),
        Just("scope".to_owned()),
        Just("scp".to_owned()),
        Just("tenant_id".to_owned()),
        "[a-z]{1,6}",
    ];
    prop::collection::btree_map(names, json_value(), 0..10)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_arbitrary_strings(token in ".{0,512}") {
        let _ = jwt::decode(&token);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes_in_each_part(
        h in prop::collection::vec(any::<u8>(), 0..256),
        p in prop::collection::vec(any::<u8>(), 0..256),
        s in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let token = format!("{}.{}.{}", B64.encode(h), B64.encode(p), B64.encode(s));
        let _ = jwt::decode(&token);
    }

    #[test]
    fn decode_refuses_oversized_tokens_before_decoding(extra in 1usize..4096) {
        let token = "a".repeat(MAX_TOKEN_BYTES + extra);
        prop_assert_eq!(jwt::decode(&token).err(), Some(DenyReason::Malformed));
    }

    #[test]
    fn claim_checks_never_panic_on_arbitrary_claims(claims in claim_object(), now in any::<i64>()) {
        let obj: StrictObject = serde_json::from_value(claims).unwrap();
        let _ = jwt::check_claims(obj, &issuer(), now);
    }

    #[test]
    fn jwks_parsing_never_panics(doc in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_jwks(doc.to_string().as_bytes(), &[Alg::RS256, Alg::ES256]);
        let _ = parse_jwks(&bytes, &[Alg::RS256, Alg::ES256]);
        let wrapped = json!({"keys": [doc]});
        let _ = parse_jwks(wrapped.to_string().as_bytes(), &[Alg::RS256, Alg::ES256]);
    }

    #[test]
    fn strict_objects_never_panic_and_refuse_duplicates(key in "[a-z]{1,4}", a in json_value(), b in json_value()) {
        let text = format!("{{\"{key}\":{a},\"{key}\":{b}}}");
        prop_assert!(serde_json::from_str::<StrictObject>(&text).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Flipping any bit of a signed token (header, claims or signature) never yields an accepted token.
    #[test]
    fn no_single_bit_flip_of_a_signed_token_is_accepted(position in any::<prop::sample::Index>(), bit in 0u8..6) {
        let now = 1_800_000_000;
        let claims = json!({"iss": "https://p.example", "sub": "u", "aud": "api", "iat": now, "exp": now + 60, "tenant_id": "acme"});
        let token = signer().sign(&claims);
        let mut bytes = token.into_bytes();
        let i = position.index(bytes.len());
        if bytes[i] == b'.' {
            return Ok(());
        }
        // Flip within the base64url alphabet so the token still decodes as often as possible.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let pos = alphabet.iter().position(|c| *c == bytes[i]).unwrap();
        let flipped = alphabet[pos ^ (1 << bit)];
        bytes[i] = flipped;
        let mutated = String::from_utf8(bytes).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let keys = HashMap::from([(signer().kid().to_owned(), signer().verifier_key().unwrap())]);
        let auth = Authenticator::with_fixed_keys(vec![(issuer(), keys)], DeploymentPolicy::default());
        let dir = TenantDirectory::new(vec![]);
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {mutated}").parse().unwrap());
        let verdict = rt.block_on(auth.authenticate(Credentials { headers: &headers, query: None, gateway_claims: None }, &dir, now));
        // The only acceptable outcomes are refusals; the directory is empty, so even an unmutated token
        // would stop at `unknown_tenant` - a mutation must stop earlier, at or before the signature.
        let reason = verdict.err().map(|d| d.reason);
        prop_assert!(
            !matches!(reason, None | Some(DenyReason::UnknownTenant)),
            "mutation at {} was accepted as far as tenant binding: {:?}", i, reason
        );
    }
}

#[test]
fn an_unmutated_token_reaches_tenant_binding() {
    // Guards the property above against passing vacuously.
    let now = 1_800_000_000;
    let claims = json!({"iss": "https://p.example", "sub": "u", "aud": "api", "iat": now, "exp": now + 60, "tenant_id": "acme"});
    let token = signer().sign(&claims);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let keys = HashMap::from([(
        signer().kid().to_owned(),
        Arc::clone(&signer().verifier_key().unwrap()),
    )]);
    let auth = Authenticator::with_fixed_keys(vec![(issuer(), keys)], DeploymentPolicy::default());
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let verdict = rt.block_on(auth.authenticate(
        Credentials {
            headers: &headers,
            query: None,
            gateway_claims: None,
        },
        &TenantDirectory::new(vec![]),
        now,
    ));
    assert_eq!(
        verdict.err().map(|d| d.reason),
        Some(DenyReason::UnknownTenant)
    );
}
