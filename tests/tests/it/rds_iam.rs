//! IAM database authentication (issue 5 item 3): the token tenantctl makes for the platform's RDS is
//! exactly the one botocore (AWS's Python SDK, an independent SigV4 implementation) makes for the same
//! credentials, endpoint, user and time, and it is never made without TLS.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use secrecy::ExposeSecret;

fn parts(token: &str) -> (String, BTreeMap<String, String>) {
    let (base, query) = token.split_once('?').unwrap();
    let params = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (base.to_owned(), params)
}

#[test]
fn the_rds_token_matches_botocore_for_the_same_inputs() {
    let epoch = 1_795_953_600; // 2026-11-29T12:00:00Z
    let host = "tenantctl-prod.cluster-abc.eu-west-1.rds.amazonaws.com";
    for (user, session) in [
        ("tenantctl_admin", None),
        ("tenant user+1", Some("FwoGZXIvYXdzEXAMPLE/session+token=")),
    ] {
        // Keys generated for this test; never real.
        let key_id = "TESTKEYIDGENERATED01";
        let secret = "test/generated/secret/key/000000000000000";
        let creds = Credentials::new(key_id, secret, session.map(str::to_owned), None, "test");
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
        let ours =
            cli::aws::rds_iam::auth_token(host, 5432, user, "eu-west-1", &creds, time).unwrap();
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(cli::testing::repo_root().join("tests/clients/rds_token.py"))
            .args([host, "5432", user, "eu-west-1", &epoch.to_string()])
            .env("AWS_ACCESS_KEY_ID", key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("AWS_PROFILE");
        match session {
            Some(s) => cmd.env("AWS_SESSION_TOKEN", s),
            None => cmd.env_remove("AWS_SESSION_TOKEN"),
        };
        let out = cmd
            .output()
            .expect("python3 with boto3 is needed (pip install 'moto[server]' brings it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let (our_base, our_params) = parts(ours.expose_secret());
        let (their_base, their_params) = parts(&theirs);
        assert_eq!(our_base, their_base);
        assert_eq!(our_params, their_params, "{user}");
        assert_eq!(our_params["X-Amz-Expires"], "900");
        assert_eq!(our_params["Action"], "connect");
        assert!(our_params["X-Amz-Credential"].ends_with("%2Feu-west-1%2Frds-db%2Faws4_request"));
    }
}

#[tokio::test]
async fn iam_authentication_refuses_a_password_in_the_url_and_a_missing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("empty.pem");
    std::fs::write(&ca, "").unwrap();
    let with_password: tokio_postgres::Config = "postgres://admin:pw@db.example:5432/tenantctl"
        .parse()
        .unwrap();
    let err = cli::aws::rds_iam::IamAccess::new(with_password, &ca)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("remove the password"), "{err}");
    let Err(err) = cli::aws::rds_iam::tls(&ca) else {
        panic!("an empty CA bundle was accepted");
    };
    let err = err.to_string();
    assert!(err.contains("no usable certificate"), "{err}");
}

#[tokio::test]
async fn the_iam_admin_connection_sends_its_token_only_over_verified_tls() {
    use aws_credential_types::provider::SharedCredentialsProvider;
    use cli::provision::{AdminAccess, Target};
    let tls = cli::testing::tls_cluster();
    let ns = runtime::domain::Namespace::parse("tlstest").unwrap();
    // The role exists (RDS: `GRANT rds_iam`; here `hostssl ... trust` stands in for the token check).
    let peer = Target {
        namespace: ns.clone(),
        endpoint: runtime::db::DbEndpoint {
            host: tls.state.pg_run().display().to_string(),
            port: tls.port,
            dbname: "postgres".into(),
            tls_ca: None,
            iam_auth: false,
        },
        admin: AdminAccess::Peer {
            role: cli::local::cluster::ADMIN_ROLE.into(),
        },
        secrets: tls.state.secrets(&ns).unwrap(),
        secrets_dir: tls.state.secrets_dir(&ns),
    };
    peer.connect_admin("postgres")
        .await
        .unwrap()
        .batch_execute("CREATE ROLE iam_admin LOGIN CREATEROLE CREATEDB")
        .await
        .unwrap();
    let url: tokio_postgres::Config =
        format!("postgres://iam_admin@127.0.0.1:{}/postgres", tls.port)
            .parse()
            .unwrap();
    let creds = SharedCredentialsProvider::new(Credentials::new(
        "TESTKEYIDGENERATED01",
        "test/generated/secret/key/000000000000000",
        None,
        None,
        "test",
    ));
    let iam_target = |ca: &std::path::Path| Target {
        admin: AdminAccess::Iam(Box::new(
            cli::aws::rds_iam::IamAccess::from_parts(url.clone(), "eu-west-1", creds.clone(), ca)
                .unwrap(),
        )),
        endpoint: runtime::db::DbEndpoint {
            host: "127.0.0.1".into(),
            port: tls.port,
            dbname: "postgres".into(),
            tls_ca: None,
            iam_auth: false,
        },
        ..peer.clone()
    };
    // With the server's CA: connected, over TLS, as the IAM user.
    let client = iam_target(&tls.ca_pem)
        .connect_admin("postgres")
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT s.ssl, current_user::text FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the admin session is encrypted");
    assert_eq!(row.get::<_, String>(1), "iam_admin");
    // With a CA that did not sign the server's certificate: refused before any password is sent.
    let dir = tempfile::tempdir().unwrap();
    cli::testing::openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other CA",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
        ],
    );
    let err = iam_target(&dir.path().join("other.pem"))
        .connect_admin("postgres")
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
}
