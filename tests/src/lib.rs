//! Shared set-up for the end-to-end tests: a deployment with the example tenants onboarded and the
//! runtime served on loopback, plus token minting (good tokens and hostile ones).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test code: an unexpected error should fail the test loudly"
)]

use std::net::SocketAddr;

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
    let target = cli::testing::deployment();
    let specs: Vec<TenantSpec> = load_all(&[cli::testing::repo_root().join("tenants")])
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    target
        .ensure_database()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ids: Vec<TenantId> = specs.iter().map(|s| s.id.clone()).collect();
    let observed = observe::observe(&target, &ids)
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
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    let running = cli::serve::start(&target, loopback, loopback)
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

    /// Statements run through tenant handles and requests admitted to handlers so far.
    pub fn side_effects(&self) -> (u64, u64) {
        (
            self.running.state.data.statements(),
            self.running.state.auth.admitted(),
        )
    }

    /// Ledger rows of `tenant`, read as the admin (not through the API).
    pub async fn ledger_rows(&self, tenant: &str) -> i64 {
        let admin = self
            .target
            .admin()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let rows = admin
            .query(
                "SELECT count(*) FROM control.tenants t WHERE t.tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows[0].get::<_, i64>(0), 1, "tenant {tenant} is onboarded");
        let sql = match tenant {
            "acme" => "SELECT count(*) FROM t_acme.usage_ledger",
            "globex" => "SELECT count(*) FROM t_globex.usage_ledger",
            other => panic!("no ledger query for {other}"),
        };
        admin
            .query_one(sql, &[])
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
