//! Shared set-up for the end-to-end tests: a deployment with the example tenants onboarded and the
//! runtime served on loopback, plus token minting (good tokens and hostile ones).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: an unexpected error should fail the test loudly"
)]

pub mod jwks_server;

use std::collections::BTreeMap;
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
    apply::apply(&target, &p, &specs, &indicatif_hidden())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let running = cli::serve::start(&target, &platform, cli::serve::Listen::loopback_any())
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
            "scope": "models:read chat:write usage:read",
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
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    // target/<profile>/deps/it-<hash> -> target/<profile>/tenant-runtime
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "runtime",
            "--bin",
            "tenant-runtime",
        ])
        .env(
            "CARGO_TARGET_DIR",
            profile_dir.parent().unwrap_or(profile_dir),
        )
        .current_dir(cli::testing::repo_root())
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build tenant-runtime: {e}"));
    assert!(status.success(), "building tenant-runtime failed");
    profile_dir.join("tenant-runtime")
}

/// A tenant record for an in-memory directory: `mock-small` only, bound to `issuer` and `audience`.
pub fn record(
    id: &str,
    issuer: &str,
    audience: &str,
    tenant_claim: &str,
) -> runtime::tenancy::TenantRecord {
    let model = runtime::domain::ModelId::parse("mock-small").unwrap_or_else(|e| panic!("{e}"));
    runtime::tenancy::TenantRecord {
        id: TenantId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        display_name: id.to_owned(),
        tier: runtime::domain::Tier::Schema,
        identity: runtime::tenancy::IdentityBinding {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            tenant_claim: tenant_claim.to_owned(),
        },
        policy: runtime::models::ModelPolicy {
            providers: BTreeMap::from([(runtime::domain::ProviderId::Mock, vec![model.clone()])]),
            default: model,
            aliases: BTreeMap::new(),
        },
        db_role: format!("x_t_{id}"),
        db_name: "x".into(),
        read_only: false,
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
    directory: &runtime::tenancy::TenantDirectory,
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
pub type Directory = Arc<runtime::tenancy::TenantDirectory>;

/// A local moto server (AWS API emulator) on a free loopback port; stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    pub url: String,
    _child: tokio::process::Child,
}

/// Starts `moto_server`.
pub async fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let child = tokio::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("moto is needed for the AWS tests: pip install 'moto[server]' (scripts/test.sh does): {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not start"
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
