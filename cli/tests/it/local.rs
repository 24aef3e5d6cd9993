//! The local target against a real Postgres cluster: onboarding, idempotence, isolation between tenant
//! roles, and convergence after a crash (issue 2).

use std::path::PathBuf;

use cli::manifest::{TenantSpec, load_all};
use cli::provision::plan::{Action, plan};
use cli::provision::{Target, apply, observe};
use runtime::domain::{Namespace, TenantId};
use runtime::secrets::SecretName;
use secrecy::ExposeSecret;

fn examples() -> Vec<TenantSpec> {
    load_all(
        &[cli::testing::repo_root().join("tenants")],
        &cli::platform::Platform::builtin(),
    )
    .unwrap()
    .into_iter()
    .map(|(_, s)| s)
    .collect()
}

async fn plan_for(target: &Target, specs: &[TenantSpec]) -> cli::provision::plan::Plan {
    target.ensure_database().await.unwrap();
    let ids: Vec<TenantId> = specs.iter().map(|s| s.id.clone()).collect();
    let observed = observe::observe(target, observe::Scope::Only(&ids))
        .await
        .unwrap();
    plan(specs, &observed, &target.namespace, &target.endpoint.dbname)
}

async fn apply_all(target: &Target, specs: &[TenantSpec]) -> Vec<apply::Outcome> {
    let p = plan_for(target, specs).await;
    apply::apply(target, &p, specs, &indicatif::ProgressBar::hidden())
        .await
        .unwrap()
}

/// Connects as a tenant's own role with its stored password.
async fn connect_as_tenant(target: &Target, tenant: &str) -> tokio_postgres::Client {
    let id = TenantId::parse(tenant).unwrap();
    let password = target
        .secrets
        .get(&SecretName::for_tenant(&id, "db-password").unwrap())
        .await
        .unwrap();
    let mut config = target
        .endpoint
        .config(&target.namespace.tenant_role(&id), "test");
    config.password(password.expose_secret().as_bytes());
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn onboards_two_tenants_and_a_second_apply_changes_nothing() {
    let target = cli::testing::deployment();
    let specs = examples();
    let outcomes = apply_all(&target, &specs).await;
    let results: Vec<_> = outcomes
        .iter()
        .map(|o| (o.tenant.to_string(), o.result))
        .collect();
    assert_eq!(
        results,
        vec![("acme".into(), "created"), ("globex".into(), "created")]
    );

    let again = plan_for(&target, &specs).await;
    assert!(
        !again.has_changes(),
        "second plan must be empty:\n{}",
        again.render()
    );
    assert!(again.tenants.iter().all(|t| t.action == Action::NoOp));
    let outcomes = apply_all(&target, &specs).await;
    assert!(outcomes.iter().all(|o| o.result == "unchanged"));

    let admin = target.admin().await.unwrap();
    let rows = admin
        .query(
            "SELECT tenant_id, status FROM control.tenants ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let registry: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        registry,
        vec![
            ("acme".into(), "active".into()),
            ("globex".into(), "active".into())
        ]
    );
}

#[tokio::test]
async fn a_changed_manifest_updates_only_the_registry() {
    let target = cli::testing::deployment();
    let mut specs = examples();
    apply_all(&target, &specs).await;
    specs[1].monthly_budget = runtime::domain::MicroUsd(1);
    let p = plan_for(&target, &specs).await;
    assert_eq!(p.tenants[0].action, Action::NoOp);
    assert_eq!(p.tenants[1].action, Action::Update);
    assert_eq!(p.tenants[1].changes.len(), 1, "{}", p.render());
    let outcomes = apply_all(&target, &specs).await;
    assert_eq!(outcomes[1].result, "updated");
    let admin = target.admin().await.unwrap();
    let budget: i64 = admin
        .query_one(
            "SELECT monthly_budget_micro_usd FROM control.tenants WHERE tenant_id = 'globex'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(budget, 1);
}

#[tokio::test]
async fn tenant_a_role_cannot_reach_tenant_b_schema_or_the_control_plane() {
    // docs/security.md case 46 (schema tier) and case 59 (ledger is append-only for the app role).
    let target = cli::testing::deployment();
    apply_all(&target, &examples()).await;
    let acme = connect_as_tenant(&target, "acme").await;
    acme.simple_query("SELECT count(*) FROM usage_ledger")
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM t_globex.usage_ledger",
        "SELECT count(*) FROM control.tenants",
        "CREATE TABLE public.x (i int)",
        "CREATE TABLE t_acme.x (i int)",
        "DELETE FROM usage_ledger",
        "UPDATE usage_ledger SET cost_micro_usd = 0",
        "TRUNCATE usage_ledger",
        "SET ROLE tenantctl_admin",
    ] {
        let err = acme.simple_query(sql).await.expect_err(sql);
        let code = err.code().map(|c| c.code().to_owned());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "{sql}: want permission denied, got {err}"
        );
    }
    // The role's search path is pinned to its own schema.
    let row = acme.query_one("SHOW search_path", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "t_acme");
    // Its prepared statements get generic plans (no re-planning over the ledger's partitions).
    let row = acme.query_one("SHOW plan_cache_mode", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "force_generic_plan");
    // And its attributes are the minimal ones (docs/security.md case 34).
    let admin = target.admin().await.unwrap();
    let role = target
        .namespace
        .tenant_role(&TenantId::parse("acme").unwrap());
    let attrs = admin
        .query_one(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolbypassrls, rolreplication FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    for i in 0..6 {
        assert!(
            !attrs.get::<_, bool>(i),
            "attribute {i} of {role} must be off"
        );
    }
}

fn tenantctl() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    cmd.arg("--state-dir")
        .arg(cli::testing::cluster().state.root())
        .arg("--no-progress")
        .env_remove("TENANTCTL_DATABASE_URL")
        .env_remove("TENANTCTL_FAILPOINT");
    cmd
}

fn manifests_dir() -> PathBuf {
    cli::testing::repo_root().join("tenants")
}

#[tokio::test]
async fn kill_9_in_the_middle_of_an_apply_leaves_nothing_half_applied_and_a_rerun_converges() {
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    // Hold the first tenant's transaction open right before commit, then kill -9 the process.
    let mut child = tenantctl()
        .args(["--namespace", &ns, "apply"])
        .arg(manifests_dir())
        .env("TENANTCTL_FAILPOINT", "tenant-before-commit")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reached = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("failpoint tenant-before-commit reached"))
    })
    .await
    .unwrap();
    assert!(reached, "the apply never reached the failpoint");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    // Nothing of the killed tenant committed: no registry row, no role, no schema.
    let admin = target.admin().await.unwrap();
    let tenants: i64 = admin
        .query_one("SELECT count(*) FROM control.tenants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenants, 0);
    let acme_role = target
        .namespace
        .tenant_role(&TenantId::parse("acme").unwrap());
    let roles: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = $1",
            &[&acme_role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        roles, 0,
        "the role must have rolled back with the transaction"
    );
    let schemas: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&Namespace::tenant_schema(&TenantId::parse("acme").unwrap())],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);

    // A re-run converges, and the one after that has nothing to do.
    let out = tenantctl()
        .args(["--namespace", &ns, "apply"])
        .arg(manifests_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "acme: created\nglobex: created\n"
    );
    let out = tenantctl()
        .args(["--namespace", &ns, "plan"])
        .arg(manifests_dir())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("Plan: 0 to create, 0 to update, 2 unchanged")
    );
    // The tenant's stored password is the one its role accepts.
    connect_as_tenant(&target, "acme")
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
}

#[tokio::test]
async fn apply_refuses_to_continue_with_a_tenant_role_that_gained_bypassrls() {
    // docs/security.md case 34: a tenant role with a dangerous attribute is never silently accepted.
    let target = cli::testing::deployment();
    let mut specs = examples();
    apply_all(&target, &specs).await;
    let role = target
        .namespace
        .tenant_role(&TenantId::parse("acme").unwrap());
    let admin = target.admin().await.unwrap();
    admin
        .batch_execute(&format!("ALTER ROLE \"{role}\" BYPASSRLS"))
        .await
        .unwrap();
    specs[0].monthly_budget = runtime::domain::MicroUsd(7);
    let outcomes = apply_all(&target, &specs).await;
    assert_eq!(outcomes[0].result, "failed");
    let error = outcomes[0].error.as_deref().unwrap();
    assert!(
        error.contains("has BYPASSRLS; a tenant role must not"),
        "{error}"
    );
    // Nothing of that apply committed.
    let budget: i64 = admin
        .query_one(
            "SELECT monthly_budget_micro_usd FROM control.tenants WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(budget, 7);
    let failures: i64 = admin
        .query_one("SELECT count(*) FROM control.audit_events WHERE tenant_id = 'acme' AND outcome = 'failed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 1, "a failed apply is recorded");
}

#[tokio::test]
async fn concurrent_appends_to_one_tenants_audit_chain_never_fork_it() {
    // docs/security.md case 61: the chain is locked while it grows, so appends racing for one
    // tenant each get the next number and name the event before them.
    let target = cli::testing::deployment();
    let specs = examples();
    apply_all(&target, &specs).await;
    let acme = TenantId::parse("acme").unwrap();
    let appends: Vec<_> = (0..12)
        .map(|i| {
            let (target, acme) = (target.clone(), acme.clone());
            tokio::spawn(async move {
                cli::provision::apply::audit(&target, &acme, "test", "succeeded", &format!("n{i}"))
                    .await
            })
        })
        .collect();
    for a in appends {
        a.await.unwrap().unwrap();
    }
    let admin = target.admin().await.unwrap();
    let chain = runtime::audit::chain(&admin, "acme").await.unwrap();
    assert_eq!(chain.len(), 13, "apply's event and the twelve");
    assert!(runtime::audit::verify("acme", &chain).is_ok(), "{chain:?}");
}
