//! The executor: applies a `Plan`, one transaction per tenant, and drives the progress bar.
//!
//! A failing tenant does not stop the others; every outcome is reported. Each run is recorded in
//! the audit chain (`control.audit_events`; a failed run too, after its rollback).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use minijinja::context;
use runtime::domain::{Namespace, TenantId, Tier};
use runtime::schema::{TENANT_MIGRATIONS, TENANT_TABLE_GRANTS};
use runtime::secrets::{SecretName, generate_secret};
use serde::Serialize;

use super::Target;
use super::plan::{Action, Plan};
use crate::manifest::TenantSpec;
use crate::sql;

/// Connections one tenant role may hold at once (on every tier: a pool tenant has its own role too).
pub const TENANT_CONNECTION_LIMIT: i64 = 20;

/// What happened to one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub tenant: TenantId,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Creates `role` (LOGIN or NOLOGIN, every dangerous attribute off) unless it exists; returns whether
/// it was created.
async fn ensure_role(
    tx: &tokio_postgres::Transaction<'_>,
    role: &str,
    login: bool,
) -> Result<bool> {
    let exists = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some();
    if !exists {
        tx.batch_execute(&sql::render(
            "create-role.sql",
            context! { role => role, login => login },
        )?)
        .await
        .with_context(|| format!("creating role `{role}`"))?;
    }
    Ok(!exists)
}

/// Creates the migrator role (owner of every tenant schema, table and database; never logs in) unless it
/// exists, and lets a non-superuser admin (CREATEROLE, as on managed Postgres) act as it. A superuser
/// needs no membership.
async fn ensure_migrator(tx: &tokio_postgres::Transaction<'_>, ns: &Namespace) -> Result<()> {
    ensure_role(tx, &ns.migrator_role(), false).await?;
    let superuser: bool = tx
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if !superuser {
        tx.batch_execute(&sql::render(
            "grant-migrator.sql",
            context! { migrator => ns.migrator_role() },
        )?)
        .await
        .context("granting the migrator role to the admin role")?;
    }
    Ok(())
}

/// The cluster's databases no tenant has data in, which every role can reach by default.
const SHARED_DATABASES: [&str; 2] = ["postgres", "template1"];

/// Revokes PUBLIC's CONNECT and TEMP on `postgres` and `template1` (issue 9 item 5), so a tenant role
/// reaches no database but its own. Serialized cluster-wide by an advisory lock taken in `postgres`
/// (advisory locks are per database). An admin that neither is a superuser nor owns them cannot; then
/// this warns with the statement their owner must run, and carries on.
async fn close_shared_databases(target: &Target) -> Result<()> {
    const OPEN: &str = "SELECT datname::text FROM pg_database WHERE datname = ANY($1) \
         AND (has_database_privilege('public', datname, 'CONNECT') \
              OR has_database_privilege('public', datname, 'TEMPORARY')) ORDER BY 1";
    let names: Vec<String> = SHARED_DATABASES.iter().map(|d| (*d).to_owned()).collect();
    let admin = target.admin().await?;
    let open: Vec<String> = admin
        .query(OPEN, &[&names])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let may: bool = admin
        .query_one(
            "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
                 OR coalesce(bool_and(pg_has_role(current_user, datdba, 'USAGE')), false) \
               FROM pg_database WHERE datname = ANY($1)",
            &[&open],
        )
        .await?
        .get(0);
    if !may {
        tracing::warn!(databases = ?open, "PUBLIC may still connect to these databases, so every tenant role can; \
            their owner should run `REVOKE CONNECT, TEMPORARY ON DATABASE <name> FROM PUBLIC`");
        return Ok(());
    }
    let mut shared = target.connect_admin("postgres").await?;
    // Other sessions may change a database's ACL at the same moment ("tuple concurrently updated"):
    // the revocation is retried, a few times.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            #[expect(
                clippy::disallowed_methods,
                reason = "provisioning runs as the admin role, not as a tenant"
            )]
            let tx = shared.transaction().await?;
            advisory_lock(&tx, "tenantctl:shared-database-acl").await?;
            for row in tx.query(OPEN, &[&names]).await? {
                let database: String = row.get(0);
                tx.batch_execute(&sql::render(
                    "close-database.sql",
                    context! { database => database },
                )?)
                .await
                .with_context(|| format!("revoking PUBLIC's access to database `{database}`"))?;
            }
            tx.commit().await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 && format!("{e:#}").contains("concurrently updated") => {
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates the database and the control plane if they are missing (idempotent, one transaction).
pub async fn ensure_control_plane(target: &Target) -> Result<()> {
    target.ensure_database().await?;
    close_shared_databases(target).await?;
    let mut client = target.admin().await?;
    let ns = &target.namespace;
    let (password, new_secret) =
        ensure_secret(target, &SecretName::platform("db/runtime-password")?).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "provisioning runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    advisory_lock(&tx, "tenantctl:control-plane").await?;
    ensure_migrator(&tx, ns).await?;
    let runtime_role_created = ensure_role(&tx, &ns.runtime_role(), true).await?;
    if runtime_role_created || new_secret {
        tx.batch_execute(&sql::alter_role_password(&ns.runtime_role(), &password)?)
            .await?;
    }
    let ddl = sql::render(
        "control-plane.sql",
        context! {
            database => target.endpoint.dbname, migrator => ns.migrator_role(), runtime => ns.runtime_role(),
        },
    )?;
    tx.batch_execute(&ddl)
        .await
        .context("creating the control plane")?;
    tx.commit().await?;
    Ok(())
}

/// Applies every Create/Update in `plan`. `progress` is told after each tenant.
pub async fn apply(
    target: &Target,
    plan: &Plan,
    specs: &[TenantSpec],
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Outcome>> {
    ensure_control_plane(target).await?;
    if let Some(version) = crate::prices::import_builtin_if_none(target).await? {
        tracing::info!(version = %version, "the deployment had no price book: imported the built-in one");
    }
    let book = crate::prices::for_deployment(target).await?;
    let work: Vec<_> = plan
        .tenants
        .iter()
        .filter(|t| !matches!(t.action, Action::NoOp))
        .collect();
    progress.set_length(work.len() as u64);
    let mut outcomes = Vec::new();
    for tenant_plan in plan
        .tenants
        .iter()
        .filter(|t| matches!(t.action, Action::NoOp))
    {
        outcomes.push(Outcome {
            tenant: tenant_plan.tenant.clone(),
            result: "unchanged",
            error: None,
        });
    }
    let mut admin = target.admin().await?;
    for tenant_plan in work {
        progress.set_message(format!("tenant `{}`", tenant_plan.tenant));
        let outcome = match &tenant_plan.action {
            Action::Blocked(why) => Outcome {
                tenant: tenant_plan.tenant.clone(),
                result: "blocked",
                error: Some(why.clone()),
            },
            action => {
                let spec = specs.iter().find(|s| s.id == tenant_plan.tenant);
                let result = match spec {
                    Some(spec) => match crate::prices::unpriced(&book, spec) {
                        // Refused before anything is created: a tenant is never served a model
                        // nobody can charge for.
                        Some(why) => Err(anyhow::anyhow!(why)),
                        None => converge_tenant(target, &mut admin, spec).await,
                    },
                    None => Err(anyhow::anyhow!(
                        "no manifest for tenant `{}`",
                        tenant_plan.tenant
                    )),
                };
                match result {
                    Ok(()) => Outcome {
                        tenant: tenant_plan.tenant.clone(),
                        result: if *action == Action::Create {
                            "created"
                        } else {
                            "updated"
                        },
                        error: None,
                    },
                    Err(e) => {
                        let message = format!("{e:#}");
                        let _ =
                            audit(target, &tenant_plan.tenant, "apply", "failed", &message).await;
                        Outcome {
                            tenant: tenant_plan.tenant.clone(),
                            result: "failed",
                            error: Some(message),
                        }
                    }
                }
            }
        };
        progress.inc(1);
        outcomes.push(outcome);
    }
    progress.finish_and_clear();
    outcomes.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(outcomes)
}

pub fn actor() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "unknown".into());
    format!("tenantctl:{user}")
}

/// Appends one event to `tenant`'s audit chain (`control.audit_events`) in its own transaction:
/// who, which tenant, what, the outcome, details that never contain a secret. For an outcome
/// recorded after the action's own transaction rolled back (a failure).
pub async fn audit(
    target: &Target,
    tenant: &TenantId,
    action: &str,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    let mut client = target.admin().await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the audit trail is the control plane, not tenant data"
    )]
    let tx = client.transaction().await?;
    record(&tx, tenant, action, outcome, detail).await?;
    tx.commit().await?;
    Ok(())
}

/// Appends one event to `tenant`'s audit chain in `tx`, the action's own transaction: if the
/// event cannot be written, the action rolls back with it (security case 60).
pub async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    action: &str,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    record_on(
        tx,
        tenant,
        &format!("tenant/{tenant}"),
        action,
        outcome,
        detail,
    )
    .await
}

/// `record` for an action on something of the tenant's other than the tenant itself (`target`,
/// e.g. `secret/tenants/acme/providers/openai`).
pub async fn record_on(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    target: &str,
    action: &str,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    let actor = actor();
    runtime::audit::append(
        tx,
        &runtime::audit::Event {
            tenant: tenant.as_str(),
            actor: &actor,
            action,
            target,
            outcome,
            request_id: None,
            detail,
        },
    )
    .await
    .context("writing the audit event")?;
    Ok(())
}

/// Brings one tenant to its spec and records it in the registry. Safe to re-run at any point.
/// `admin` is an admin connection to the deployment database, reused across tenants (a new backend
/// per tenant would pay catalog-cache warm-up each time).
pub async fn converge_tenant(
    target: &Target,
    admin: &mut tokio_postgres::Client,
    spec: &TenantSpec,
) -> Result<()> {
    provision(target, admin, spec, Registry::Write).await
}

/// Whether provisioning writes the tenant's registry row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    Write,
    /// Provision the tier's resources only (a tier move switches the registry itself, later).
    Leave,
}

/// Creates or updates the resources of `spec`'s tier.
pub async fn provision(
    target: &Target,
    admin: &mut tokio_postgres::Client,
    spec: &TenantSpec,
    registry: Registry,
) -> Result<()> {
    match spec.tier {
        Tier::Schema => converge_schema(target, admin, spec, registry).await,
        Tier::Pool => converge_pool(target, admin, spec, registry).await,
        Tier::Dedicated => converge_dedicated(target, admin, spec, registry).await,
    }
}

/// Creates the password secret `name` unless it exists; returns it and whether it was created.
/// Outside any transaction and idempotent: a password created here and not yet used by a committed role
/// is simply reused by the next run.
async fn ensure_secret(
    target: &Target,
    name: &SecretName,
) -> Result<(secrecy::SecretString, bool)> {
    let created = !target.secrets.exists(name).await?;
    if created {
        target.secrets.put(name, &generate_secret()).await?;
    }
    Ok((target.secrets.get(name).await?, created))
}

/// Creates `role` as a LOGIN role if missing and sets its password from the secret when the role or
/// the secret is new; then refuses the role if it carries a dangerous attribute.
async fn ensure_login_role(
    tx: &tokio_postgres::Transaction<'_>,
    role: &str,
    password: &secrecy::SecretString,
    new_secret: bool,
) -> Result<()> {
    let created = ensure_role(tx, role, true).await?;
    if created || new_secret {
        tx.batch_execute(&sql::alter_role_password(role, password)?)
            .await?;
    }
    let needs_rds_iam: bool = tx
        .query_one(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') \
             THEN NOT pg_has_role($1, 'rds_iam', 'MEMBER') ELSE false END",
            &[&role],
        )
        .await?
        .get(0);
    if needs_rds_iam {
        tx.batch_execute(&sql::render(
            "grant-rds-iam.sql",
            context! { role => role },
        )?)
        .await
        .with_context(|| format!("granting rds_iam to `{role}`"))?;
    }
    Ok(())
}

/// Grants CONNECT on `database` to `role` unless it has it. Re-runs never touch the database's ACL;
/// first-time grants are serialized per database (concurrent GRANTs on one row fail).
async fn grant_connect(
    tx: &tokio_postgres::Transaction<'_>,
    role: &str,
    database: &str,
) -> Result<()> {
    let has: bool = tx
        .query_one(
            "SELECT has_database_privilege($1, $2, 'CONNECT')",
            &[&role, &database],
        )
        .await?
        .get(0);
    if !has {
        advisory_lock(tx, &format!("tenantctl:database-acl:{database}")).await?;
        tx.batch_execute(&sql::render(
            "grant-connect.sql",
            context! { role => role, database => database },
        )?)
        .await
        .with_context(|| format!("granting CONNECT on `{database}` to `{role}`"))?;
    }
    Ok(())
}

/// Refuses `role` if it has a dangerous attribute or a membership beyond those a tenant role (or, when
/// not `tenant_role`, a platform role) may have.
async fn refuse_dangerous_attributes(
    tx: &tokio_postgres::Transaction<'_>,
    namespace: &Namespace,
    role: &str,
    tenant_role: bool,
) -> Result<()> {
    // The same definition of "dangerous" the runtime's self-checks use.
    let allowed = runtime::db::roles::allowed_memberships(namespace, tenant_role);
    let hazards = runtime::db::roles::hazards_of(tx, role, &allowed).await?;
    if !hazards.is_empty() {
        anyhow::bail!(
            "role `{role}` has {}; a tenant role must not\nhint: a superuser must remove it (for an attribute: \
             `ALTER ROLE \"{role}\" NO<ATTRIBUTE>`; for a membership: `REVOKE <role> FROM \"{role}\"`) before \
             tenantctl continues",
            hazards.join(", ")
        );
    }
    Ok(())
}

/// Applies `migrations` newer than `applied` with the migrator role and search path `schema`, calling
/// `record` for each so the version is stored in the same transaction.
async fn run_migrations(
    tx: &tokio_postgres::Transaction<'_>,
    base: &minijinja::Value,
    applied: i32,
    record_sql: &'static str,
    tenant: Option<&str>,
) -> Result<()> {
    for m in TENANT_MIGRATIONS.iter().filter(|m| m.version > applied) {
        tx.batch_execute(&sql::render("migration-begin.sql", base.clone())?)
            .await?;
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("tenant migration {:04}_{}", m.version, m.name))?;
        tx.batch_execute(&sql::render("migration-end.sql", base.clone())?)
            .await?;
        match tenant {
            Some(t) => tx.execute(record_sql, &[&t, &m.version, &m.name]).await?,
            None => tx.execute(record_sql, &[&m.version, &m.name]).await?,
        };
    }
    Ok(())
}

/// The common tail of every tier's set-up inside its transaction: CONNECT on the database, no dangerous
/// attribute on the role, then the migrations newer than the version `applied_sql` reports.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per tier, each argument named"
)]
async fn grant_check_migrate(
    tx: &tokio_postgres::Transaction<'_>,
    base: &minijinja::Value,
    namespace: &Namespace,
    role: &str,
    database: &str,
    applied_sql: &'static str,
    record_sql: &'static str,
    tenant: Option<&str>,
) -> Result<()> {
    grant_connect(tx, role, database).await?;
    refuse_dangerous_attributes(tx, namespace, role, true).await?;
    let applied: i32 = match tenant {
        Some(t) => tx.query_one(applied_sql, &[&t]).await?.get(0),
        None => tx.query_one(applied_sql, &[]).await?.get(0),
    };
    run_migrations(tx, base, applied, record_sql, tenant).await?;
    add_ledger_partitions(tx, base).await
}

/// This month's ledger partition and the next `LEDGER_MONTHS_AHEAD` (tenant migration 0010), added
/// where missing, as the migrator in `base`'s schema (`migrator`, `schema`).
pub(super) async fn add_ledger_partitions(
    tx: &tokio_postgres::Transaction<'_>,
    base: &minijinja::Value,
) -> Result<()> {
    tx.batch_execute(&sql::render("migration-begin.sql", base.clone())?)
        .await?;
    tx.execute(
        "SELECT usage_ledger_partitions((now() AT TIME ZONE 'UTC')::date, $1)",
        &[&(runtime::schema::LEDGER_MONTHS_AHEAD + 1)],
    )
    .await
    .context("adding the ledger's monthly partitions")?;
    tx.batch_execute(&sql::render("migration-end.sql", base.clone())?)
        .await?;
    Ok(())
}

fn grants() -> Vec<minijinja::Value> {
    TENANT_TABLE_GRANTS
        .iter()
        .map(|(table, privileges)| context! { table => table, privileges => privileges })
        .collect()
}

/// Writes the registry row (status `active`, or `suspended` for a suspended tenant, which only
/// `tenantctl resume` changes: everything before it committed or commits with it) and
/// the audit record, then honours the crash-test failpoint, then commits.
async fn finish_tenant(
    tx: tokio_postgres::Transaction<'_>,
    spec: &TenantSpec,
    role: &str,
    schema: &str,
    database: &str,
    registry: Registry,
    host: DataHost<'_>,
) -> Result<()> {
    if registry == Registry::Leave {
        tx.commit()
            .await
            .context("committing the tenant's resources")?;
        return Ok(());
    }
    let spec_json = spec.canonical_json();
    let policy = serde_json::to_value(&spec.models)?;
    let tags = serde_json::to_value(&spec.tags)?;
    tx.execute(
        "INSERT INTO control.tenants (tenant_id, display_name, tier, status, issuer, audience, tenant_claim, \
             model_policy, monthly_budget_micro_usd, tags, spec, spec_hash, db_role, db_schema, db_name, \
             db_host, db_port) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (tenant_id) DO UPDATE SET display_name = EXCLUDED.display_name, \
             status = CASE WHEN control.tenants.status = 'suspended' THEN 'suspended' ELSE 'active' END, issuer = EXCLUDED.issuer, audience = EXCLUDED.audience, \
             tenant_claim = EXCLUDED.tenant_claim, model_policy = EXCLUDED.model_policy, \
             monthly_budget_micro_usd = EXCLUDED.monthly_budget_micro_usd, tags = EXCLUDED.tags, \
             spec = EXCLUDED.spec, spec_hash = EXCLUDED.spec_hash, db_role = EXCLUDED.db_role, \
             db_schema = EXCLUDED.db_schema, db_name = EXCLUDED.db_name, db_host = EXCLUDED.db_host, \
             db_port = EXCLUDED.db_port, updated_at = now()",
        &[
            &spec.id.as_str(),
            &spec.display_name,
            &spec.tier.as_str(),
            &spec.identity.issuer,
            &spec.identity.audience,
            &spec.identity.tenant_claim,
            &policy,
            &spec.monthly_budget.0,
            &tags,
            &spec_json,
            &spec.hash(),
            &role,
            &schema,
            &database,
            &host.map(|(h, _)| h),
            &host.map(|(_, p)| i32::from(p)),
        ],
    )
    .await?;
    record(&tx, &spec.id, "apply", "succeeded", &spec.hash()).await?;
    if std::env::var("TENANTCTL_FAILPOINT").as_deref() == Ok("tenant-before-commit") {
        // Test hook for crash-safety tests: hold the open transaction until the process is killed.
        eprintln!("failpoint tenant-before-commit reached for `{}`", spec.id);
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    tx.commit()
        .await
        .context("committing the tenant transaction")?;
    Ok(())
}

async fn lock_tenant(tx: &tokio_postgres::Transaction<'_>, spec: &TenantSpec) -> Result<()> {
    lock_tenant_id(tx, &spec.id).await
}

/// Takes the transaction-level advisory lock named `key` (released at commit or rollback).
pub async fn advisory_lock(tx: &tokio_postgres::Transaction<'_>, key: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&key],
    )
    .await?;
    Ok(())
}

/// Serializes every change to one tenant (apply, migrate, move, offboard) for the transaction.
pub async fn lock_tenant_id(tx: &tokio_postgres::Transaction<'_>, tenant: &TenantId) -> Result<()> {
    advisory_lock(tx, &format!("tenantctl:tenant:{tenant}")).await
}

/// Schema tier: role, schema, migrations, grants and registry row in one transaction.
async fn converge_schema(
    target: &Target,
    client: &mut tokio_postgres::Client,
    spec: &TenantSpec,
    registry: Registry,
) -> Result<()> {
    let ns = &target.namespace;
    let role = ns.tenant_role(&spec.id);
    let schema = Namespace::tenant_schema(&spec.id);
    let (password, new_secret) =
        ensure_secret(target, &SecretName::for_tenant(&spec.id, "db-password")?).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "provisioning runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    lock_tenant(&tx, spec).await?;
    ensure_login_role(&tx, &role, &password, new_secret).await?;
    // A schema created now has no migrations, whatever the registry remembers from another tier.
    let schema_existed = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?
        .is_some();
    if !schema_existed {
        tx.execute(
            "DELETE FROM control.tenant_migrations WHERE tenant_id = $1",
            &[&spec.id.as_str()],
        )
        .await?;
    }
    let base = context! {
        role => role, schema => schema, migrator => ns.migrator_role(), database => target.endpoint.dbname,
        connection_limit => TENANT_CONNECTION_LIMIT,
    };
    tx.batch_execute(&sql::render("schema-tier.sql", base.clone())?)
        .await
        .context("creating the tenant schema and role settings")?;
    grant_check_migrate(
        &tx,
        &base,
        ns,
        &role,
        &target.endpoint.dbname,
        "SELECT coalesce(max(version), 0) FROM control.tenant_migrations WHERE tenant_id = $1",
        "INSERT INTO control.tenant_migrations (tenant_id, version, name) VALUES ($1, $2, $3)",
        Some(spec.id.as_str()),
    )
    .await?;
    tx.batch_execute(&sql::render(
        "tenant-grants.sql",
        context! { role => role, schema => schema, grants => grants() },
    )?)
    .await
    .context("granting table privileges")?;
    finish_tenant(
        tx,
        spec,
        &role,
        &schema,
        &target.endpoint.dbname,
        registry,
        None,
    )
    .await
}

/// Pool tier: the pool group, schema, migrations and row-level security (idempotent, under a
/// deployment-wide lock), the tenant's own login role as a member of the group, and the tenant's
/// registry row, in one transaction.
async fn converge_pool(
    target: &Target,
    client: &mut tokio_postgres::Client,
    spec: &TenantSpec,
    registry: Registry,
) -> Result<()> {
    let ns = &target.namespace;
    let group = ns.pool_role();
    let role = ns.tenant_role(&spec.id);
    let tenant_version_sql =
        "SELECT coalesce(max(version), 0) FROM control.tenant_migrations WHERE tenant_id = $1";
    let (password, new_secret) =
        ensure_secret(target, &SecretName::for_tenant(&spec.id, "db-password")?).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "provisioning runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    advisory_lock(&tx, "tenantctl:pool").await?;
    lock_tenant(&tx, spec).await?;
    ensure_role(&tx, &group, false).await?;
    ensure_login_role(&tx, &role, &password, new_secret).await?;
    let base = context! {
        role => role, group => group, schema => "pool", migrator => ns.migrator_role(),
        database => target.endpoint.dbname, connection_limit => TENANT_CONNECTION_LIMIT,
        role_prefix => ns.tenant_role_prefix(), grants => grants(),
    };
    tx.batch_execute(&sql::render("pool-tier.sql", base.clone())?)
        .await
        .context("creating the pool schema and group")?;
    refuse_dangerous_attributes(&tx, ns, &group, false).await?;
    tx.batch_execute(&sql::render("pool-tenant.sql", base.clone())?)
        .await
        .context("setting up the tenant's pool role")?;
    grant_check_migrate(
        &tx,
        &base,
        ns,
        &role,
        &target.endpoint.dbname,
        "SELECT coalesce(max(version), 0) FROM control.pool_migrations",
        "INSERT INTO control.pool_migrations (version, name) VALUES ($1, $2)",
        None,
    )
    .await?;
    // The table grants belong to the group, never to a tenant's role.
    let group_grants = context! { role => group, schema => "pool", grants => grants() };
    tx.batch_execute(&sql::render("tenant-grants.sql", group_grants)?)
        .await
        .context("granting pool table privileges")?;
    tx.batch_execute(&sql::render("pool-rls.sql", base)?)
        .await
        .context("enabling row-level security on the pool tables")?;
    // Pool migrations ran once for the whole pool; what each needs per tenant runs now, fenced to
    // this tenant, for the versions this tenant has not reached yet.
    let tenant_version: i32 = tx
        .query_one(tenant_version_sql, &[&spec.id.as_str()])
        .await?
        .get(0);
    let backfills: Vec<_> = TENANT_MIGRATIONS
        .iter()
        .filter(|m| m.version > tenant_version)
        .filter_map(|m| m.pool_backfill.map(|b| (m, b)))
        .collect();
    if !backfills.is_empty() {
        super::offboard::fence_to_tenant(&tx, target, &spec.id).await?;
        for (m, backfill) in backfills {
            let failed = || {
                format!(
                    "tenant migration {:04}_{} for `{}`",
                    m.version, m.name, spec.id
                )
            };
            tx.batch_execute(backfill.lock).await.with_context(failed)?;
            for statement in backfill.statements {
                tx.execute(*statement, &[&spec.id.as_str()])
                    .await
                    .with_context(failed)?;
            }
        }
        tx.batch_execute("RESET ROLE").await?;
    }
    // The tenant's migration level is the pool's.
    tx.execute(
        "INSERT INTO control.tenant_migrations (tenant_id, version, name) \
         SELECT $1, version, name FROM control.pool_migrations ON CONFLICT DO NOTHING",
        &[&spec.id.as_str()],
    )
    .await?;
    finish_tenant(
        tx,
        spec,
        &role,
        "pool",
        &target.endpoint.dbname,
        registry,
        None,
    )
    .await
}

/// Dedicated tier: a database of the tenant's own. `CREATE DATABASE` cannot run in a transaction, so
/// the steps are: role (one transaction), database (if missing), everything inside it (one
/// transaction; migrations tracked in the database itself so a re-run resumes), registry row.
async fn converge_dedicated(
    target: &Target,
    client: &mut tokio_postgres::Client,
    spec: &TenantSpec,
    registry: Registry,
) -> Result<()> {
    // A tenant whose data is on its own instance (AWS) is never provisioned a second copy here.
    let own_host: Option<String> = client
        .query_opt(
            "SELECT db_host FROM control.tenants WHERE tenant_id = $1",
            &[&spec.id.as_str()],
        )
        .await?
        .and_then(|r| r.get(0));
    if let Some(host) = own_host {
        bail!(
            "tenant `{}` has its data on its own instance `{host}`, not on this server\nhint: run \
             `tenantctl apply --target aws` for it (that migrates its instance too)",
            spec.id
        );
    }
    provision_dedicated(target, client, spec, false).await?;
    record_dedicated(client, &target.namespace, spec, registry, None).await
}

/// The dedicated tier's resources on the server `data` reaches (the platform's server on the local
/// target; on AWS the tenant's own RDS instance, as its master user): the migrator role there when
/// `own_server` (a fresh server has none), the tenant's login role, its database and everything in it.
/// Safe to re-run; the control plane is not touched (`record_dedicated`).
pub async fn provision_dedicated(
    data: &Target,
    client: &mut tokio_postgres::Client,
    spec: &TenantSpec,
    own_server: bool,
) -> Result<()> {
    let target = data;
    let ns = &target.namespace;
    let role = ns.tenant_role(&spec.id);
    let schema = Namespace::tenant_schema(&spec.id);
    let database = ns.tenant_database(&spec.id);
    let (password, new_secret) =
        ensure_secret(target, &SecretName::for_tenant(&spec.id, "db-password")?).await?;
    {
        #[expect(
            clippy::disallowed_methods,
            reason = "provisioning runs as the admin role, not as a tenant"
        )]
        let tx = client.transaction().await?;
        lock_tenant(&tx, spec).await?;
        if own_server {
            ensure_migrator(&tx, ns).await?;
        }
        ensure_login_role(&tx, &role, &password, new_secret).await?;
        tx.commit().await?;
    }
    if own_server {
        close_shared_databases(target).await?;
    }
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&sql::render(
                "create-database.sql",
                context! { database => database, owner => ns.migrator_role() },
            )?)
            .await
            .with_context(|| format!("creating database `{database}`"))?;
    }
    let mut tenant_db = target.connect_admin(&database).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "provisioning runs as the admin role, not as a tenant"
    )]
    let tx = tenant_db.transaction().await?;
    let base = context! {
        role => role, schema => schema, migrator => ns.migrator_role(), database => database,
        connection_limit => TENANT_CONNECTION_LIMIT,
    };
    tx.batch_execute(&sql::render("dedicated-db.sql", base.clone())?)
        .await?;
    tx.batch_execute(&sql::render("schema-tier.sql", base.clone())?)
        .await
        .context("creating the tenant schema in its database")?;
    grant_check_migrate(
        &tx,
        &base,
        ns,
        &role,
        &database,
        "SELECT coalesce(max(version), 0) FROM tenantctl.migrations",
        "INSERT INTO tenantctl.migrations (version, name) VALUES ($1, $2)",
        None,
    )
    .await?;
    tx.batch_execute(&sql::render(
        "tenant-grants.sql",
        context! { role => role, schema => schema, grants => grants() },
    )?)
    .await?;
    tx.commit()
        .await
        .context("committing the tenant database")?;
    Ok(())
}

/// Where a tenant's data is when it is not on the platform's server: its own instance's host and port.
pub type DataHost<'a> = Option<(&'a str, u16)>;

/// The dedicated tier's control-plane part, behind `client`: the tenant's migration level (its
/// database's, which `provision_dedicated` brought to the newest) and its registry row, with `host`
/// when its data is on its own server.
pub async fn record_dedicated(
    client: &mut tokio_postgres::Client,
    ns: &Namespace,
    spec: &TenantSpec,
    registry: Registry,
    host: DataHost<'_>,
) -> Result<()> {
    let role = ns.tenant_role(&spec.id);
    let schema = Namespace::tenant_schema(&spec.id);
    let database = ns.tenant_database(&spec.id);
    #[expect(
        clippy::disallowed_methods,
        reason = "provisioning runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    lock_tenant(&tx, spec).await?;
    tx.execute(
        "INSERT INTO control.tenant_migrations (tenant_id, version, name) \
         SELECT $1, v.version, v.name FROM unnest($2::int[], $3::text[]) AS v(version, name) ON CONFLICT DO NOTHING",
        &[
            &spec.id.as_str(),
            &TENANT_MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>(),
            &TENANT_MIGRATIONS.iter().map(|m| m.name).collect::<Vec<_>>(),
        ],
    )
    .await?;
    finish_tenant(tx, spec, &role, &schema, &database, registry, host).await
}
