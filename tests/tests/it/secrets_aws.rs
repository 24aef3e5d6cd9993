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
