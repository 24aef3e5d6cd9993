//! Shared set-up for the end-to-end tests: a deployment with the example tenants onboarded and the
//! runtime served on loopback, plus token minting (good tokens and hostile ones).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: an unexpected error should fail the test loudly"
)]

pub mod jwks_server;
pub mod mock_provider;

use std::sync::Arc;

use cli::manifest::{TenantSpec, load_all};
use cli::provision::{Target, apply, observe, plan};
use runtime::auth::signer::DevSigner;
use runtime::domain::TenantId;
use serde_json::{Value, json};

/// A served deployment with `acme` and `globex` onboarded.
#[derive(Debug)]
pub struct Served {
    pub target: Target,
    pub specs: Vec<TenantSpec>,
    pub running: cli::serve::Running,
    pub signer: DevSigner,
    pub base: String,
    pub http: reqwest::Client,
}

pub async fn serve_examples() -> Served {
    serve_with(cli::platform::Platform::builtin(), |_| {}).await
}

/// Onboards the example tenants (after `edit`) under `platform` and serves them.
pub async fn serve_with(
    platform: cli::platform::Platform,
    edit: impl Fn(&mut TenantSpec),
) -> Served {
    serve_on(platform, edit, cli::serve::Listen::loopback_any()).await
}

/// `serve_with`, listening where `listen` says.
pub async fn serve_on(
    platform: cli::platform::Platform,
    edit: impl Fn(&mut TenantSpec),
    listen: cli::serve::Listen,
) -> Served {
    let target = cli::testing::deployment();
    let mut specs: Vec<TenantSpec> =
        load_all(&[cli::testing::repo_root().join("tenants")], &platform)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_iter()
            .map(|(_, s)| s)
            .collect();
    specs.iter_mut().for_each(edit);
    target
        .ensure_database()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ids: Vec<TenantId> = specs.iter().map(|s| s.id.clone()).collect();
    let observed = observe::observe(&target, observe::Scope::Only(&ids))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let p = plan::plan(
        &specs,
        &observed,
        &target.namespace,
        &target.endpoint.dbname,
    );
    let outcomes = apply::apply(&target, &p, &specs, &indicatif_hidden())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    if let Some(o) = outcomes.iter().find(|o| o.result == "failed") {
        panic!("tenant `{}` failed to apply: {:?}", o.tenant, o.error);
    }
    let running = cli::serve::start(&target, &platform, listen)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let signer = cli::devidp::signer(&target.secrets)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let base = format!("http://{}", running.api_addr);
    Served {
        target,
        specs,
        running,
        signer,
        base,
        http: reqwest::Client::new(),
    }
}

fn indicatif_hidden() -> indicatif::ProgressBar {
    indicatif::ProgressBar::hidden()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Served {
    /// Good claims for `tenant` with every scope.
    pub fn claims(&self, tenant: &str) -> Value {
        let now = now();
        json!({
            "iss": cli::devidp::DEV_ISSUER, "sub": format!("user-of-{tenant}"), "aud": "tenantctl-api",
            "iat": now, "nbf": now, "exp": now + 600, "tenant_id": tenant,
            "scope": "me:read models:read chat:write embeddings:write usage:read",
        })
    }

    pub fn token(&self, tenant: &str) -> String {
        self.signer.sign(&self.claims(tenant))
    }

    /// The dev identity provider's address (it keeps serving after `running.stop` only until dropped).
    pub fn running_idp(&self) -> std::net::SocketAddr {
        self.running.idp_addr
    }

    /// Statements run through tenant handles and requests admitted to handlers so far.
    pub fn side_effects(&self) -> (u64, u64) {
        (
            self.running.state.data.statements(),
            self.running.state.auth.admitted(),
        )
    }

    /// Ledger rows of `tenant`, read as the admin (not through the API), wherever its tier keeps them.
    pub async fn ledger_rows(&self, tenant: &str) -> i64 {
        let admin = self
            .target
            .admin()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let row = admin
            .query_one(
                "SELECT tier, coalesce(db_name, current_database()) FROM control.tenants WHERE tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap_or_else(|e| panic!("tenant {tenant} is not onboarded: {e}"));
        let (tier, db): (String, String) = (row.get(0), row.get(1));
        let client = if tier == "dedicated" {
            self.target
                .connect_admin(&db)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"))
        } else {
            admin
        };
        let sql = match (tier.as_str(), tenant) {
            ("pool", _) => "SELECT count(*) FROM pool.usage_ledger WHERE tenant_id = $1",
            (_, "acme") => "SELECT count(*) FROM t_acme.usage_ledger WHERE tenant_id = $1",
            (_, "globex") => "SELECT count(*) FROM t_globex.usage_ledger WHERE tenant_id = $1",
            (_, other) => panic!("no ledger query for {other}"),
        };
        client
            .query_one(sql, &[&tenant])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0)
    }
}

/// Builds (if needed) and returns the `tenant-runtime` binary of this workspace.
pub fn runtime_binary() -> std::path::PathBuf {
    workspace_binary("runtime", "tenant-runtime")
}

/// Builds `bin` of `package` into the target directory of this test binary and returns its path.
fn workspace_binary(package: &str, bin: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    // target/<profile>/deps/it-<hash> -> target/<profile>/<bin>
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().unwrap_or(profile_dir),
        )
        .current_dir(cli::testing::repo_root())
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {bin}: {e}"));
    assert!(status.success(), "building {bin} failed");
    profile_dir.join(bin)
}

/// A tenant record for an in-memory directory: `mock-small` only, bound to `issuer` and `audience`.
pub fn record(
    id: &str,
    issuer: &str,
    audience: &str,
    tenant_claim: &str,
) -> runtime::registry::TenantRecord {
    let model = runtime::domain::ModelId::parse("mock-small").unwrap_or_else(|e| panic!("{e}"));
    runtime::registry::TenantRecord {
        id: TenantId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        display_name: id.to_owned(),
        tier: runtime::domain::Tier::Schema,
        identity: runtime::registry::IdentityBinding {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            tenant_claim: tenant_claim.to_owned(),
        },
        policy: runtime::registry::ModelPolicy::only(
            runtime::domain::ProviderId::Mock,
            vec![model],
        )
        .expect("one model"),
        db_role: format!("x_t_{id}"),
        db_name: "x".into(),
        read_only: false,
        suspended: false,
        limits: runtime::registry::TenantLimits {
            monthly_budget: runtime::domain::MicroUsd(1_000_000_000),
            subject_monthly_budget: None,
            requests_per_minute: 1_000_000,
            tokens_per_minute: 1_000_000_000,
        },
        prices: cli::prices::builtin().for_tenant(id),
        tags: [("cost-center".to_owned(), format!("cc-{id}"))].into(),
        registered: None,
    }
}

/// Good claims for `tenant` from `iss` to `aud`, valid for ten minutes.
pub fn claims_for(iss: &str, aud: &str, tenant: &str) -> Value {
    let now = now();
    json!({"iss": iss, "sub": "user-1", "aud": aud, "iat": now, "nbf": now, "exp": now + 600,
           "tenant_id": tenant, "scope": "models:read"})
}

/// Authenticates `token` against `auth` with only an `Authorization` header.
pub async fn check(
    auth: &runtime::auth::Authenticator,
    directory: &runtime::registry::TenantDirectory,
    token: &str,
) -> Result<String, runtime::auth::jwt::DenyReason> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    auth.authenticate(
        runtime::auth::Credentials {
            headers: &headers,
            query: None,
            gateway_claims: None,
        },
        directory,
        now(),
    )
    .await
    .map(|t| t.id().to_string())
    .map_err(|d| d.reason)
}

/// Shared handle type for directories in tests.
pub type Directory = Arc<runtime::registry::TenantDirectory>;

/// A local moto server (AWS API emulator) on a free loopback port; stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    pub url: String,
    _child: tokio::process::Child,
}

/// Starts `moto_server`.
pub async fn moto() -> Moto {
    moto_with(&[]).await
}

/// Starts `moto_server` with extra environment (the shim's test switches, see the script).
pub async fn moto_with(env: &[(&str, String)]) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    // moto's own server plus one CloudFormation attribute it lacks (see the script).
    let mut child = tokio::process::Command::new("python3")
        .arg(cli::testing::repo_root().join("tests/clients/moto_server.py"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(
            // moto's tracebacks, for a failing test to read: $TMPDIR/tenantctl-moto-<port>.log
            std::fs::File::create(std::env::temp_dir().join(format!("tenantctl-moto-{port}.log")))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("python3 with moto is needed for the AWS tests: pip install 'moto[server]' (scripts/test.sh does): {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "moto did not start (exit {:?}); is it installed? pip install 'moto[server]' (scripts/test.sh does)",
            child.try_wait().ok().flatten()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Moto {
        url: format!("http://127.0.0.1:{port}"),
        _child: child,
    }
}

impl Moto {
    /// The environment an AWS SDK process needs to talk to this moto (test credentials only).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_REGION", "eu-west-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// A Secrets Manager store on this moto.
    pub async fn secret_store(&self) -> runtime::secrets::AwsSecretStore {
        use aws_sdk_secretsmanager::config::{Credentials, Region};
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .endpoint_url(&self.url)
            .load()
            .await;
        runtime::secrets::AwsSecretStore::new(&config)
    }
}

/// Builds `tenantctl` (next to this test binary) and returns its path.
pub fn tenantctl_binary() -> std::path::PathBuf {
    workspace_binary("cli", "tenantctl")
}

/// The first column of every row `sql` returns, as text (audit and registry checks).
pub async fn column(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// An `aws-smithy-mocks` interceptor answering with `rules` (in any order).
pub fn mock_interceptor(
    rules: &[&aws_smithy_mocks::Rule],
) -> aws_smithy_mocks::MockResponseInterceptor {
    let mut interceptor = aws_smithy_mocks::MockResponseInterceptor::new()
        .rule_mode(aws_smithy_mocks::RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    interceptor
}

/// An awsQuery error response as CloudFormation sends it (parsed by the SDK's real deserializer).
pub fn cfn_error(code: &str, message: &str) -> aws_smithy_runtime_api::http::Response {
    let body = format!(
        "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    );
    aws_smithy_runtime_api::http::Response::new(
        aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap_or_else(|e| panic!("{e}")),
        aws_smithy_types::body::SdkBody::from(body),
    )
}

/// A CloudFormation client whose calls are answered by `rules` (what `mock_client!` does; the macro
/// needs a newer SDK than this lockfile's).
pub fn mocked_cfn(rules: &[&aws_smithy_mocks::Rule]) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::from_conf(
        aws_sdk_cloudformation::Config::builder()
            .with_test_defaults()
            .region(aws_sdk_cloudformation::config::Region::new("eu-west-1"))
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(mock_interceptor(rules))
            .build(),
    )
}

/// The platform's RDS, stood in for by `target`'s cluster: an admin URL with a managed database's
/// master-user rights only (`external_admin_url`), and the `rds_iam` role RDS predefines (tenantctl
/// grants it to the roles it creates there).
pub async fn rds_stand_in(target: &cli::provision::Target) -> String {
    let url = external_admin_url(target).await;
    target
        .connect_admin("postgres")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE rds_iam NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    url
}

/// An admin URL for `target`'s cluster with a password login and only CREATEROLE + CREATEDB, as a
/// managed database's master user has (a stand-in for the platform's RDS, which cannot run here).
pub async fn external_admin_url(target: &cli::provision::Target) -> String {
    use secrecy::ExposeSecret;
    let role = format!("{}_extadmin", target.namespace);
    let password = runtime::secrets::generate_secret();
    let admin = target
        .connect_admin("postgres")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    admin
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN CREATEROLE CREATEDB"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // It may connect to `postgres` (to create its database), as RDS's master user may; PUBLIC may not.
    // Concurrent GRANTs on one database row can fail with "tuple concurrently updated": retry.
    for attempt in 0.. {
        match admin
            .batch_execute(&format!("GRANT CONNECT ON DATABASE postgres TO \"{role}\""))
            .await
        {
            Ok(()) => break,
            Err(e) if attempt < 20 => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    admin
        .batch_execute(
            &cli::sql::alter_role_password(&role, &password).unwrap_or_else(|e| panic!("{e:#}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let socket = cli::testing::cluster()
        .state
        .pg_run()
        .display()
        .to_string()
        .replace('/', "%2F");
    format!(
        "postgres://{role}:{}@{socket}:{}/{}",
        password.expose_secret(),
        cli::local::cluster::PORT,
        target.namespace
    )
}

/// Cost Explorer's `UpdateCostAllocationTagsStatus` (moto lacks it), over real HTTP in the AWS JSON 1.1
/// protocol. Keys in `not_visible` are refused the way AWS refuses a key billing has not seen yet.
#[derive(Debug, Clone)]
pub struct FakeCostExplorer {
    pub url: String,
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    pub not_visible: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

/// Starts the fake on a loopback port.
pub async fn fake_cost_explorer() -> FakeCostExplorer {
    use axum::http::HeaderMap;
    let fake = FakeCostExplorer {
        url: String::new(),
        calls: Default::default(),
        not_visible: Default::default(),
    };
    let state = fake.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let json = [("content-type", "application/x-amz-json-1.1")];
                if target != "AWSInsightsIndexService.UpdateCostAllocationTagsStatus" {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        json,
                        format!(r#"{{"__type":"UnknownOperationException","message":"{target}"}}"#),
                    );
                }
                let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let keys: Vec<String> = req["CostAllocationTagsStatus"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["TagKey"].as_str().map(str::to_owned))
                    .collect();
                if keys.len() > 20 {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        json,
                        r#"{"__type":"ValidationException","message":"at most 20 entries"}"#.into(),
                    );
                }
                let hidden = state.not_visible.lock().map(|s| s.clone()).unwrap_or_default();
                let errors: Vec<serde_json::Value> = keys
                    .iter()
                    .filter(|k| hidden.contains(*k))
                    .map(|k| serde_json::json!({"TagKey": k, "Code": "TagKeysNotFoundException", "Message": "Tag keys not found"}))
                    .collect();
                if let Ok(mut calls) = state.calls.lock() {
                    calls.push(keys);
                }
                (
                    axum::http::StatusCode::OK,
                    json,
                    serde_json::json!({"Errors": errors}).to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeCostExplorer {
        url: format!("http://{addr}"),
        ..fake
    }
}

/// Runs `tests/clients/moto_fixture.py` against `moto` and returns its stdout.
pub fn moto_fixture(moto: &Moto, args: &[&str]) -> String {
    let script = cli::testing::repo_root().join("tests/clients/moto_fixture.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&moto.url)
        .args(args)
        .envs(moto.env())
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 with boto3 is needed (pip install 'moto[server]'): {e}")
        });
    assert!(
        out.status.success(),
        "moto_fixture {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
