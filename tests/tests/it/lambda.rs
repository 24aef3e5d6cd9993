//! The runtime's Lambda entry (issue 2): the real `tenant-runtime` binary, started with
//! `AWS_LAMBDA_RUNTIME_API`, serves API Gateway (HTTP API, payload 2.0) events through the same app.
//!
//! AWS Lambda itself cannot run here, so this test plays the Lambda Runtime API (the documented HTTP
//! protocol between the Lambda service and a custom runtime) on a loopback port.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tests::serve_examples;
use tokio::sync::{Mutex, mpsc};

#[derive(Clone)]
struct RuntimeApi {
    events: Arc<Mutex<mpsc::Receiver<(String, Value)>>>,
    responses: mpsc::Sender<(String, Value)>,
}

async fn next(State(api): State<RuntimeApi>) -> (HeaderMap, axum::Json<Value>) {
    let Some((id, event)) = api.events.lock().await.recv().await else {
        // No more events: park the runtime's long poll until the test kills it.
        let never: std::convert::Infallible = std::future::pending().await;
        match never {}
    };
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    let deadline = (tests::now() + 30) * 1000;
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-1:123456789012:function:tenant-acme"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".parse().unwrap(),
    );
    (headers, axum::Json(event))
}

async fn respond(
    State(api): State<RuntimeApi>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> &'static str {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = api.responses.send((id, value)).await;
    "ok"
}

fn event(method: &str, path: &str, token: Option<&str>) -> Value {
    event_with_authorizer(method, path, token, None)
}

/// An event as API Gateway sends it after its JWT authorizer accepted the token (`claims`).
fn event_with_authorizer(
    method: &str,
    path: &str,
    token: Option<&str>,
    claims: Option<Value>,
) -> Value {
    let mut headers =
        json!({"host": "abc123.execute-api.eu-west-1.amazonaws.com", "user-agent": "test"});
    if let Some(t) = token {
        headers["authorization"] = json!(format!("Bearer {t}"));
    }
    let mut ev = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123", "requestId": "req-1", "routeKey": "$default", "stage": "$default",
            "time": "29/Nov/2026:09:00:00 +0000", "timeEpoch": 1_795_940_000_000_i64,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "test"}
        },
        "isBase64Encoded": false
    });
    if let Some(claims) = claims {
        ev["requestContext"]["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    ev
}

/// The claims API Gateway's JWT authorizer passes on for a token of `tenant` and `sub`.
fn claims_of(tenant: &str, sub: &str) -> Value {
    json!({"iss": cli::devidp::DEV_ISSUER, "sub": sub, "tenant_id": tenant, "aud": "tenantctl-api"})
}

/// The runtime config for the served deployment, with `extra` merged in.
fn config(s: &tests::Served, extra: Value) -> Value {
    let mut config = json!({
        "namespace": s.target.namespace,
        "database": s.target.endpoint,
        "secrets_dir": s.target.secrets_dir,
        "issuers": cli::platform::Platform::builtin().runtime_issuers(&cli::devidp::jwks_url(s.running.idp_addr)),
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

/// Starts `tenant-runtime` as a Lambda with `config` (inline, as a Lambda's environment carries it)
/// and `env`, sends each event, checks each status.
async fn run_lambda(
    config: Value,
    env: Vec<(&'static str, String)>,
    cases: Vec<(&str, Value, u16)>,
) {
    let binary = tokio::task::spawn_blocking(tests::runtime_binary)
        .await
        .unwrap();
    let (event_tx, event_rx) = mpsc::channel(8);
    let (resp_tx, mut resp_rx) = mpsc::channel(8);
    let api = RuntimeApi {
        events: Arc::new(Mutex::new(event_rx)),
        responses: resp_tx,
    };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(respond),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runtime_api = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut child = tokio::process::Command::new(&binary);
    child
        .env("TENANTCTL_RUNTIME_CONFIG_JSON", config.to_string())
        .envs(env);
    let mut child = child
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "tenant-acme")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/tenant-acme")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for (i, (name, ev, want)) in cases.iter().enumerate() {
        let id = format!("invocation-{i}");
        event_tx.send((id.clone(), ev.clone())).await.unwrap();
        let (got_id, resp) = tokio::select! {
            r = resp_rx.recv() => r.unwrap(),
            status = child.wait() => panic!("{name}: tenant-runtime exited ({:?}) instead of answering", status),
            _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("{name}: no response from the Lambda runtime"),
        };
        assert_eq!(got_id, id);
        assert_eq!(resp["statusCode"], *want, "{name}: {resp}");
        if *want == 200 {
            let body: Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["object"], "list", "{name}");
        }
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_runtime_binary_serves_api_gateway_events_when_started_as_a_lambda() {
    let s = serve_examples().await;
    let token = s.token("acme");
    let cases = vec![
        (
            "models with a token",
            event("GET", "/v1/models", Some(&token)),
            200,
        ),
        (
            "models without a token",
            event("GET", "/v1/models", None),
            401,
        ),
        (
            "models with a forged token",
            event("GET", "/v1/models", Some("a.b.c")),
            401,
        ),
        (
            "usage with a token",
            event("GET", "/v1/usage", Some(&token)),
            200,
        ),
    ];
    run_lambda(config(&s, json!({})), vec![], cases).await;
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_lambda_behind_the_jwt_authorizer_checks_the_authorizer_claims_and_its_tenant() {
    // Issue 3 item 4: the runtime verifies the token itself, requires the gateway's claims to agree,
    // and a Lambda deployed for `acme` refuses every other tenant.
    let s = serve_examples().await;
    let acme = s.token("acme");
    let globex = s.token("globex");
    let cases = vec![
        (
            "acme token, agreeing authorizer claims",
            event_with_authorizer(
                "GET",
                "/v1/models",
                Some(&acme),
                Some(claims_of("acme", "user-of-acme")),
            ),
            200,
        ),
        (
            "acme token, no authorizer context",
            event("GET", "/v1/models", Some(&acme)),
            401,
        ),
        (
            "acme token, authorizer saw another subject",
            event_with_authorizer(
                "GET",
                "/v1/models",
                Some(&acme),
                Some(claims_of("acme", "mallory")),
            ),
            401,
        ),
        (
            "acme token, authorizer saw another tenant",
            event_with_authorizer(
                "GET",
                "/v1/models",
                Some(&acme),
                Some(claims_of("globex", "user-of-acme")),
            ),
            401,
        ),
        (
            "globex token at acme's Lambda",
            event_with_authorizer(
                "GET",
                "/v1/models",
                Some(&globex),
                Some(claims_of("globex", "user-of-globex")),
            ),
            401,
        ),
    ];
    run_lambda(
        config(
            &s,
            json!({"deployment": {"tenant": "acme", "require_gateway_authorizer": true}}),
        ),
        vec![],
        cases,
    )
    .await;
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn on_lambda_the_runtime_reads_every_credential_from_secrets_manager() {
    // Issue 5: the runtime's secrets come from AWS Secrets Manager (here a local moto), not from disk.
    let s = serve_examples().await;
    let moto = tests::moto().await;
    let aws = moto.secret_store().await;
    for name in [
        "platform/db/runtime-password",
        "tenants/acme/db-password",
        "tenants/globex/db-password",
    ] {
        let name = runtime::secrets::SecretName::parse(name).unwrap();
        let value = s.target.secrets.get(&name).await.unwrap();
        runtime::secrets::SecretStore::Aws(aws.clone())
            .put(&name, &value)
            .await
            .unwrap();
    }
    // An empty local directory: if the runtime looked on disk it could not even start.
    let empty = tempfile::tempdir().unwrap();
    let token = s.token("acme");
    let cases = vec![
        ("models", event("GET", "/v1/models", Some(&token)), 200),
        (
            "usage (the tenant's database password from Secrets Manager)",
            event("GET", "/v1/usage", Some(&token)),
            200,
        ),
        ("no token", event("GET", "/v1/models", None), 401),
    ];
    let cfg = config(
        &s,
        json!({"secret_store": "aws", "secrets_dir": empty.path()}),
    );
    run_lambda(cfg, moto.env(), cases).await;
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn under_cargo_lambda_watch_the_runtime_answers_its_tenant_and_refuses_another() {
    // Issue 5's Lambda smoke: the runtime's Lambda binary run by `cargo lambda watch` (PyPI
    // `cargo-lambda`, the standard local Lambda emulator), invoked over HTTP with API Gateway v2
    // payloads carrying the authorizer's JWT claims and the bearer token.
    let s = serve_examples().await;
    let binary = tokio::task::spawn_blocking(tests::runtime_binary)
        .await
        .unwrap();
    let target_dir = binary
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &s,
        json!({"deployment": {"tenant": "acme", "require_gateway_authorizer": true}}),
    );
    let mut watch = tokio::process::Command::new("cargo")
        .args([
            "lambda",
            "watch",
            "--ignore-changes",
            "--quiet",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
            "-p",
            "runtime",
            "--bin",
            "tenant-runtime",
        ])
        .current_dir(cli::testing::repo_root())
        .env("TENANTCTL_RUNTIME_CONFIG_JSON", cfg.to_string())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cargo-lambda is needed: pip install cargo-lambda (scripts/test.sh does)");
    // Drain its stderr (a full pipe would block it), keeping the text for a failure message.
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(mut stderr) = watch.stderr.take() {
        let log = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = log.lock() {
                    l.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(status)) = watch.try_wait() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "cargo lambda watch exited ({status}): {}\n(install it: pip install cargo-lambda)",
                log.lock().unwrap()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cargo lambda watch did not listen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acme = s.token("acme");
    let globex = s.token("globex");
    let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/tenant-runtime/invocations");
    let http = reqwest::Client::new();
    for (name, ev, want) in [
        (
            "acme's token at acme's function",
            event_with_authorizer(
                "GET",
                "/v1/models",
                Some(&acme),
                Some(claims_of("acme", "user-of-acme")),
            ),
            200,
        ),
        (
            "globex's token at acme's function",
            event_with_authorizer(
                "GET",
                "/v1/models",
                Some(&globex),
                Some(claims_of("globex", "user-of-globex")),
            ),
            401,
        ),
        (
            "no token",
            event_with_authorizer("GET", "/v1/models", None, None),
            401,
        ),
    ] {
        let resp = http
            .post(&url)
            .json(&ev)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "{name}: invoke {}",
            resp.status()
        );
        let out: Value = resp.json().await.unwrap();
        assert_eq!(out["statusCode"], want, "{name}: {out}");
        if want == 200 {
            let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
            let ids: Vec<&str> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap())
                .collect();
            assert!(ids.contains(&"mock-small"), "{name}: {body}");
        }
    }
    watch.kill().await.unwrap();
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_tenant_stack_configures_a_single_tenant_lambda_that_reaches_its_data_over_tls() {
    // The runtime configuration the tenant template renders (TENANTCTL_RUNTIME_CONFIG_JSON) starts the real
    // Lambda binary as a single-tenant deployment: no control-plane credential (case 64), pinned to its
    // tenant behind the gateway's authorizer, its data reached as the tenant's database user with an RDS
    // IAM token over verified TLS; for the schema tier and for the pool tier (which has its own login
    // role too, so its IAM policy names only that user). A TLS-only cluster stands in for RDS (`hostssl ... trust`: the token
    // itself is proven equal to botocore's in rds_iam.rs); only the host, port, CA path and the dev
    // issuer's JWKS address are changed from what the template says.
    let s = serve_examples().await;
    let tls = cli::testing::tls_cluster();
    let platform = cli::platform::Platform::builtin();
    for tier in [runtime::domain::Tier::Schema, runtime::domain::Tier::Pool] {
        let ns = runtime::domain::Namespace::parse(&format!("lambda{tier}")).unwrap();
        let mut spec = cli::manifest::TenantSpec::from_file(
            &cli::testing::repo_root().join("tenants/acme.yaml"),
            &platform,
        )
        .unwrap();
        spec.tier = tier;
        let target = cli::provision::Target {
            namespace: ns.clone(),
            endpoint: runtime::db::DbEndpoint {
                host: tls.state.pg_run().display().to_string(),
                port: tls.port,
                dbname: ns.to_string(),
                tls_ca: None,
                iam_auth: false,
            },
            admin: cli::provision::AdminAccess::Peer {
                role: cli::local::cluster::ADMIN_ROLE.into(),
            },
            secrets: tls.state.secrets(&ns).unwrap(),
            secrets_dir: tls.state.secrets_dir(&ns),
        };
        cli::provision::apply::ensure_control_plane(&target)
            .await
            .unwrap();
        let mut admin = target.admin().await.unwrap();
        cli::provision::apply::converge_tenant(&target, &mut admin, &spec)
            .await
            .unwrap();

        let rendered =
            cli::aws::render_tenant(&spec, &ns, "test", &platform, cli::aws::Arch::X86_64).unwrap();
        let template: Value = serde_norway::from_str(&rendered.body).unwrap();
        let sub = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
            ["TENANTCTL_RUNTIME_CONFIG_JSON"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .replace("${DatabaseEndpoint}", "127.0.0.1");
        assert!(!sub.contains("${"), "one substitution only: {sub}");
        let mut cfg: Value = serde_json::from_str(&sub).unwrap();
        assert_eq!(cfg["secret_store"], "aws");
        assert_eq!(cfg["deployment"]["tenant"], "acme");
        assert_eq!(cfg["deployment"]["require_gateway_authorizer"], true);
        assert_eq!(cfg["database"]["tls_ca"], cli::aws::LAMBDA_RDS_CA);
        assert_eq!(cfg["database"]["iam_auth"], true);
        cfg["database"]["port"] = json!(tls.port);
        cfg["database"]["tls_ca"] = json!(tls.ca_pem);
        cfg["issuers"] =
            json!(platform.runtime_issuers(&cli::devidp::jwks_url(s.running.idp_addr)));
        // No secret store is reachable: the function must need none to serve its tenant.
        let empty = tempfile::tempdir().unwrap();
        cfg["secret_store"] = json!("local");
        cfg["secrets_dir"] = json!(empty.path().join("store"));

        let acme = s.token("acme");
        let globex = s.token("globex");
        let mut admin = s.claims("acme");
        admin["scope"] = json!("credentials:write");
        let admin = s.signer.sign(&admin);
        let cases = vec![
            (
                // Its role may only read its secrets: the change is refused, naming the command.
                "a credential change at acme's function",
                event_with_authorizer(
                    "DELETE",
                    "/v1/credentials/mock",
                    Some(&admin),
                    Some(claims_of("acme", "user-of-acme")),
                ),
                409,
            ),
            (
                "acme's usage, read as acme's database user over TLS",
                event_with_authorizer(
                    "GET",
                    "/v1/usage",
                    Some(&acme),
                    Some(claims_of("acme", "user-of-acme")),
                ),
                200,
            ),
            (
                "globex at acme's function",
                event_with_authorizer(
                    "GET",
                    "/v1/usage",
                    Some(&globex),
                    Some(claims_of("globex", "user-of-globex")),
                ),
                401,
            ),
        ];
        // Test credentials for signing the IAM tokens (never real).
        let env = vec![
            ("AWS_ACCESS_KEY_ID", "TESTKEYIDGENERATED01".to_owned()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "test/generated/secret/key/000000000000000".to_owned(),
            ),
            ("AWS_REGION", "eu-west-1".to_owned()),
        ];
        run_lambda(cfg, env, cases).await;
    }
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_single_tenant_deployment_must_be_pinned_to_its_tenant() {
    let platform = cli::platform::Platform::builtin();
    let ns = runtime::domain::Namespace::parse("pinning").unwrap();
    let spec = cli::manifest::TenantSpec::from_file(
        &cli::testing::repo_root().join("tenants/acme.yaml"),
        &platform,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |spec: &cli::manifest::TenantSpec, pin: &str| runtime::RuntimeConfig {
        namespace: ns.clone(),
        database: runtime::db::DbEndpoint {
            host: "127.0.0.1".into(),
            port: 1,
            dbname: "none".into(),
            tls_ca: None,
            iam_auth: false,
        },
        secrets_dir: dir.path().join("store"),
        secret_store: runtime::state::SecretStoreKind::Local,
        issuers: vec![],
        deployment: runtime::auth::DeploymentPolicy {
            tenant: Some(runtime::domain::TenantId::parse(pin).unwrap()),
            require_gateway_authorizer: true,
            platform: None,
        },
        registry_refresh_secs: 5,
        registry_max_stale_secs: 30,
        max_connections_per_tenant: 4,
        max_in_flight_per_tenant: 32,
        tenant: Some(cli::aws::tenant_record(spec, &ns, &cli::prices::builtin())),
        provider_key_ttl_secs: 60,
        upstream: Default::default(),
        ledger_commit: Default::default(),
        console: None,
    };
    let err = runtime::AppState::from_config(&config(&spec, "globex"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("pinned"), "{err}");
}
