//! The AWS Secrets Manager backend against a local moto server (issue 5 item 2; security cases 49-52
//! in part): values round-trip, tenant secrets are tagged with their tenant, an overwrite is a new
//! version, deletion is scheduled (not immediate), and writing a secret that is scheduled for deletion
//! restores it instead of failing, so re-onboarding within the recovery window works.

use runtime::secrets::{SecretError, SecretName, SecretStore, generate_secret};
use secrecy::ExposeSecret;
use tests::moto;

#[tokio::test]
async fn secrets_round_trip_are_tagged_and_restorable_within_the_recovery_window() {
    let m = moto().await;
    let aws = m.secret_store().await;
    let s = SecretStore::Aws(aws.clone());
    let name = SecretName::parse("tenants/acme/db-password").unwrap();
    assert!(!s.exists(&name).await.unwrap());
    assert!(matches!(s.get(&name).await, Err(SecretError::NotFound(_))));

    let v1 = generate_secret();
    s.put(&name, &v1).await.unwrap();
    assert!(s.exists(&name).await.unwrap());
    assert_eq!(
        s.get(&name).await.unwrap().expose_secret(),
        v1.expose_secret()
    );
    let tags = aws.tags(&name).await.unwrap();
    assert!(tags.contains(&("tenant".into(), "acme".into())), "{tags:?}");
    assert!(
        tags.contains(&("managed-by".into(), "tenantctl".into())),
        "{tags:?}"
    );

    let v2 = generate_secret();
    s.put(&name, &v2).await.unwrap();
    assert_eq!(
        s.get(&name).await.unwrap().expose_secret(),
        v2.expose_secret(),
        "an overwrite is a new version"
    );

    // Offboarding schedules deletion; re-onboarding within the window restores instead of failing.
    s.delete(&name).await.unwrap();
    assert!(
        !s.exists(&name).await.unwrap(),
        "scheduled for deletion counts as absent"
    );
    let v3 = generate_secret();
    s.put(&name, &v3).await.unwrap();
    assert!(s.exists(&name).await.unwrap());
    assert_eq!(
        s.get(&name).await.unwrap().expose_secret(),
        v3.expose_secret()
    );

    // Deleting what does not exist is not an error; platform secrets carry no tenant tag.
    s.delete(&SecretName::parse("tenants/ghost/db-password").unwrap())
        .await
        .unwrap();
    let platform = SecretName::platform("db/runtime-password").unwrap();
    s.put(&platform, &generate_secret()).await.unwrap();
    assert!(
        !aws.tags(&platform)
            .await
            .unwrap()
            .iter()
            .any(|(k, _)| k == "tenant")
    );
    // Errors name the call and the secret, never a value.
    let err = format!(
        "{:?}",
        s.get(&SecretName::parse("tenants/acme/missing").unwrap())
            .await
            .unwrap_err()
    );
    assert!(!err.contains(v3.expose_secret()));
}

#[tokio::test]
async fn provider_keys_from_secrets_manager_rotate_mid_run_and_outlive_the_store_only_until_their_ttl()
 {
    // docs/security.md cases 50 and 51, against Secrets Manager (moto): a key rotated in the store
    // is used without a restart (the provider's 401 makes the router read it again); when the store
    // goes down the cached key serves until its TTL, then calls fail closed with no upstream call and
    // never with another key.
    use std::sync::Arc;
    use std::time::Duration;

    use runtime::domain::{ModelId, ProviderId, TenantId};
    use runtime::models::chat::{ChatMessage, ChatRequest, Role};
    use runtime::models::providers::{ProviderError, UpstreamConfig};
    use runtime::models::{ModelRouter, key_name};
    use runtime::registry::ModelPolicy;
    use runtime::registry::policy::Endpoint;
    use runtime::secrets::cache::SecretCache;
    use tests::mock_provider::{Config, MockProvider};

    let m = moto().await;
    let store = SecretStore::Aws(m.secret_store().await);
    let mock = MockProvider::start(Config::default()).await;
    let tenant = TenantId::parse("acme").unwrap();
    let name = key_name(&tenant, ProviderId::Openai).unwrap();
    let (k1, k2) = (generate_secret(), generate_secret());
    store.put(&name, &k1).await.unwrap();
    let ttl = Duration::from_secs(2);
    let router = ModelRouter::new(
        UpstreamConfig::default(),
        Arc::new(SecretCache::new(store.clone(), ttl)),
    )
    .unwrap();
    let mut policy = ModelPolicy::only(
        ProviderId::Openai,
        vec![ModelId::parse("gpt-4o-mini").unwrap()],
    )
    .unwrap();
    policy
        .providers
        .get_mut(&ProviderId::Openai)
        .unwrap()
        .endpoint = Endpoint {
        base_url: Some(format!("{}/v1", mock.url())),
        ..Endpoint::default()
    };
    let routes = ModelRouter::plan(
        &policy,
        &cli::prices::builtin().for_tenant("acme"),
        "gpt-4o-mini",
    )
    .unwrap();
    let request = ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage::text(Role::User, "hi")],
        ..ChatRequest::default()
    };
    router.complete(&tenant, &routes, &request).await.unwrap();

    // Rotated mid-run in Secrets Manager; the provider now accepts only the new key.
    store.put(&name, &k2).await.unwrap();
    mock.accept_only(&[k2.expose_secret()]);
    router.complete(&tenant, &routes, &request).await.unwrap();
    let seen: Vec<String> = mock
        .received()
        .into_iter()
        .filter_map(|r| r.credential)
        .collect();
    assert_eq!(
        seen,
        [k1.expose_secret(), k1.expose_secret(), k2.expose_secret()].map(str::to_owned),
        "the old key once more, refused, then the rotated key"
    );

    // The store goes down: the key read just now serves until its TTL ...
    drop(m);
    router.complete(&tenant, &routes, &request).await.unwrap();
    assert_eq!(mock.received().len(), 4);
    // ... and then the call fails closed before reaching the provider.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let err = router
        .complete(&tenant, &routes, &request)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::KeyUnavailable(_)), "{err:?}");
    assert_eq!(
        mock.received().len(),
        4,
        "no upstream call without a current key"
    );
}
