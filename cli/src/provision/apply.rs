//! The executor: applies a `Plan`, one transaction per tenant, and drives the progress bar.
//!
//! A failing tenant does not stop the others; every outcome is reported. Each run is recorded in
//! `control.apply_log` (a failed run too, after its rollback).

use std::time::Duration;

use anyhow::{Context, Result};
use minijinja::context;
use runtime::domain::{Namespace, TenantId};
use runtime::schema::{TENANT_MIGRATIONS, TENANT_TABLE_GRANTS};
use runtime::secrets::{SecretName, generate_secret};
use serde::Serialize;

use super::Target;
use super::plan::{Action, Plan};
use crate::manifest::TenantSpec;
use crate::sql;

/// Connections one tenant role may hold at once.
const TENANT_CONNECTION_LIMIT: i64 = 20;

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

/// Creates the database and the control plane if they are missing (idempotent, one transaction).
pub async fn ensure_control_plane(target: &Target) -> Result<()> {
    target.ensure_database().await?;
    let mut client = target.admin().await?;
    let ns = &target.namespace;
    let runtime_secret = SecretName::platform("db/runtime-password")?;
    let new_secret = !target.secrets.exists(&runtime_secret).await?;
    if new_secret {
        target
            .secrets
            .put(&runtime_secret, &generate_secret())
            .await?;
    }
    let password = target.secrets.get(&runtime_secret).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "provisioning runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('tenantctl:control-plane', 0))",
        &[],
    )
    .await?;
    let mut runtime_role_created = false;
    for (role, login) in [(ns.migrator_role(), false), (ns.runtime_role(), true)] {
        runtime_role_created |= ensure_role(&tx, &role, login).await? && login;
    }
    // A non-superuser admin (CREATEROLE, as on managed Postgres) must be able to act as the migrator to
    // own schemas and tables. A superuser needs no membership.
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
                    Some(spec) => converge_tenant(target, spec).await,
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
                        let _ = log_failure(target, &tenant_plan.tenant, &message).await;
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

fn actor() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "unknown".into());
    format!("tenantctl:{user}")
}

async fn log_failure(target: &Target, tenant: &TenantId, message: &str) -> Result<()> {
    let client = target.admin().await?;
    client
        .execute(
            "INSERT INTO control.apply_log (id, tenant_id, action, outcome, detail, actor) \
             VALUES ($1, $2, 'apply', 'failed', $3, $4)",
            &[&uuid::Uuid::new_v4(), &tenant.as_str(), &message, &actor()],
        )
        .await?;
    Ok(())
}

/// Brings one tenant to its spec in one transaction. Safe to re-run at any point.
pub async fn converge_tenant(target: &Target, spec: &TenantSpec) -> Result<()> {
    let ns = &target.namespace;
    let role = ns.tenant_role(&spec.id);
    let schema = Namespace::tenant_schema(&spec.id);
    let secret = SecretName::for_tenant(&spec.id, "db-password")?;
    // Outside the transaction, idempotent: a password created here and not yet used by a committed
    // role is simply reused by the next run.
    let new_secret = !target.secrets.exists(&secret).await?;
    if new_secret {
        target.secrets.put(&secret, &generate_secret()).await?;
    }
    let password = target.secrets.get(&secret).await?;

    let mut client = target.admin().await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "provisioning runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('tenantctl:tenant:' || $1, 0))",
        &[&spec.id.as_str()],
    )
    .await?;
    let role_created = ensure_role(&tx, &role, true).await?;
    if role_created || new_secret {
        tx.batch_execute(&sql::alter_role_password(&role, &password)?)
            .await?;
    }
    let base = context! {
        role => role, schema => schema, migrator => ns.migrator_role(), database => target.endpoint.dbname,
        connection_limit => TENANT_CONNECTION_LIMIT,
    };
    tx.batch_execute(&sql::render("schema-tier.sql", base.clone())?)
        .await
        .context("creating the tenant schema and role settings")?;
    let dangerous: Vec<String> = tx
        .query(
            "SELECT a FROM pg_roles r, LATERAL (VALUES ('SUPERUSER', r.rolsuper), ('REPLICATION', r.rolreplication), \
                    ('BYPASSRLS', r.rolbypassrls)) AS attrs(a, on_) WHERE r.rolname = $1 AND attrs.on_",
            &[&role],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !dangerous.is_empty() {
        anyhow::bail!(
            "role `{role}` has {}; a tenant role must not\nhint: a superuser must run `ALTER ROLE \"{role}\" NO{}` before tenantctl continues",
            dangerous.join(", "),
            dangerous.join(" NO")
        );
    }
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM control.tenant_migrations WHERE tenant_id = $1",
            &[&spec.id.as_str()],
        )
        .await?
        .get(0);
    for m in TENANT_MIGRATIONS.iter().filter(|m| m.version > applied) {
        tx.batch_execute(&sql::render("migration-begin.sql", base.clone())?)
            .await?;
        tx.batch_execute(m.sql)
            .await
            .with_context(|| format!("tenant migration {:04}_{}", m.version, m.name))?;
        tx.batch_execute(&sql::render("migration-end.sql", base.clone())?)
            .await?;
        tx.execute(
            "INSERT INTO control.tenant_migrations (tenant_id, version, name) VALUES ($1, $2, $3)",
            &[&spec.id.as_str(), &m.version, &m.name],
        )
        .await?;
    }
    let grants: Vec<_> = TENANT_TABLE_GRANTS
        .iter()
        .map(|(table, privileges)| context! { table => table, privileges => privileges })
        .collect();
    tx.batch_execute(&sql::render(
        "tenant-grants.sql",
        context! { role => ns.tenant_role(&spec.id), schema => Namespace::tenant_schema(&spec.id), grants => grants },
    )?)
    .await
    .context("granting table privileges")?;
    let spec_json = spec.canonical_json();
    let policy = serde_json::to_value(&spec.models)?;
    let tags = serde_json::to_value(&spec.tags)?;
    // The registry row is written last: its `active` status means everything above committed with it.
    tx.execute(
        "INSERT INTO control.tenants (tenant_id, display_name, tier, status, issuer, audience, tenant_claim, \
             model_policy, monthly_budget_micro_usd, tags, spec, spec_hash, db_role, db_schema) \
         VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (tenant_id) DO UPDATE SET display_name = EXCLUDED.display_name, \
             status = 'active', issuer = EXCLUDED.issuer, audience = EXCLUDED.audience, \
             tenant_claim = EXCLUDED.tenant_claim, model_policy = EXCLUDED.model_policy, \
             monthly_budget_micro_usd = EXCLUDED.monthly_budget_micro_usd, tags = EXCLUDED.tags, \
             spec = EXCLUDED.spec, spec_hash = EXCLUDED.spec_hash, updated_at = now()",
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
            &ns.tenant_role(&spec.id),
            &Namespace::tenant_schema(&spec.id),
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO control.apply_log (id, tenant_id, action, outcome, detail, actor) \
         VALUES ($1, $2, 'apply', 'succeeded', $3, $4)",
        &[
            &uuid::Uuid::new_v4(),
            &spec.id.as_str(),
            &spec.hash(),
            &actor(),
        ],
    )
    .await?;
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
