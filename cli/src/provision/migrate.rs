//! `tenantctl migrate`: brings every active tenant of a deployment to the newest tenant migration, with
//! a bounded number of tenants in flight. Each tenant converges in its own transaction(s) from the spec
//! the registry holds, so a run is resumable and safe to repeat; one tenant's failure is reported and
//! the others go on.

use anyhow::{Context, Result};
use runtime::domain::TenantId;
use runtime::schema::latest_version;

use super::Target;
use super::apply::{Outcome, converge_tenant, ensure_control_plane};
use crate::manifest::TenantSpec;

/// Migrates every active tenant whose version is behind; `jobs` tenants at a time.
pub async fn migrate_all(
    target: &Target,
    jobs: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Outcome>> {
    ensure_control_plane(target).await?;
    let admin = target.admin().await?;
    let rows = admin
        .query(
            "SELECT t.tenant_id, t.spec, coalesce((SELECT max(version) FROM control.tenant_migrations m \
                                                    WHERE m.tenant_id = t.tenant_id), 0) \
               FROM control.tenants t WHERE t.status = 'active' ORDER BY t.tenant_id",
            &[],
        )
        .await
        .context("reading the registry")?;
    let latest = latest_version();
    let mut outcomes = Vec::new();
    let mut work = Vec::new();
    for row in rows {
        let raw: String = row.get(0);
        let id = TenantId::parse(&raw).map_err(|e| anyhow::anyhow!("registry row `{raw}`: {e}"))?;
        let version: i32 = row.get(2);
        if version >= latest {
            outcomes.push(Outcome {
                tenant: id,
                result: "unchanged",
                error: None,
            });
            continue;
        }
        match serde_json::from_value::<TenantSpec>(row.get(1)) {
            Ok(spec) => work.push(spec),
            Err(e) => outcomes.push(Outcome {
                tenant: id,
                result: "failed",
                error: Some(format!(
                    "the registry's copy of the spec cannot be read: {e}; re-apply its manifest"
                )),
            }),
        }
    }
    progress.set_length(work.len() as u64);
    // `jobs` lanes, each with its own admin connection, take tenants from a shared queue.
    let queue = std::sync::Mutex::new(work.into_iter());
    let lanes = (0..jobs.max(1)).map(|_| async {
        let mut done = Vec::new();
        let mut admin = match target.admin().await {
            Ok(a) => a,
            Err(e) => {
                let message = format!("{e:#}");
                while let Some(spec) = queue.lock().ok().and_then(|mut q| q.next()) {
                    done.push(Outcome {
                        tenant: spec.id,
                        result: "failed",
                        error: Some(message.clone()),
                    });
                }
                return done;
            }
        };
        while let Some(spec) = queue.lock().ok().and_then(|mut q| q.next()) {
            let result = converge_tenant(target, &mut admin, &spec).await;
            progress.inc(1);
            done.push(match result {
                Ok(()) => Outcome {
                    tenant: spec.id,
                    result: "migrated",
                    error: None,
                },
                Err(e) => Outcome {
                    tenant: spec.id,
                    result: "failed",
                    error: Some(format!("{e:#}")),
                },
            });
        }
        done
    });
    let results: Vec<Outcome> = futures_util::future::join_all(lanes)
        .await
        .into_iter()
        .flatten()
        .collect();
    progress.finish_and_clear();
    outcomes.extend(results);
    // Tenants already up to date did not converge: their ledgers get this month's partition and
    // the next twelve here (a tenant that converged just got them).
    for outcome in outcomes.iter_mut().filter(|o| o.result == "unchanged") {
        if let Err(e) = extend_partitions(target, &outcome.tenant).await {
            outcome.result = "failed";
            outcome.error = Some(format!("adding the ledger's monthly partitions: {e:#}"));
        }
    }
    outcomes.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(outcomes)
}

/// Adds the missing monthly partitions of `tenant`'s ledger for this month and the next
/// `LEDGER_MONTHS_AHEAD` (`usage_ledger_partitions`, as the migrator, where its data lives). A tenant
/// on a server of its own (a dedicated RDS instance) gets them at its next convergence.
async fn extend_partitions(target: &Target, tenant: &TenantId) -> Result<()> {
    let loc = super::offboard::locate(target, tenant).await?;
    if loc.host.is_some() {
        return Ok(());
    }
    let mut client = target.connect_admin(&loc.database).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "partition maintenance runs as the migrator, like a migration"
    )]
    let tx = client.transaction().await?;
    let base = minijinja::context! {
        migrator => target.namespace.migrator_role(), schema => loc.schema,
    };
    super::apply::add_ledger_partitions(&tx, &base).await?;
    tx.commit().await?;
    Ok(())
}
