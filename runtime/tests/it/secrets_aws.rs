//! The AWS Secrets Manager backend against a local moto server (issue 5 item 2; security cases 49-52
//! in part): values round-trip, tenant secrets are tagged with their tenant, an overwrite is a new
//! version, deletion is scheduled (not immediate), and writing a secret that is scheduled for deletion
//! restores it instead of failing, so re-onboarding within the recovery window works.

use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{Credentials, Region};
use runtime::secrets::{AwsSecretStore, SecretError, SecretName, SecretStore, generate_secret};
use secrecy::ExposeSecret;

struct Moto {
    url: String,
    _child: tokio::process::Child,
}

async fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "moto is needed for the AWS tests: pip install 'moto[server]' (scripts/test.sh does)",
        );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto {
        url: format!("http://127.0.0.1:{port}"),
        _child: child,
    }
}

async fn store(m: &Moto) -> AwsSecretStore {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(&m.url)
        .load()
        .await;
    AwsSecretStore::new(&config)
}

#[tokio::test]
async fn secrets_round_trip_are_tagged_and_restorable_within_the_recovery_window() {
    let m = moto().await;
    let aws = store(&m).await;
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
