//! `tenantctl move`: moves a tenant between isolation tiers (e.g. pool -> schema -> dedicated as its
//! contract hardens) while its API keeps answering.
//!
//! Steps: mark the tenant `read_only` (the runtime keeps serving reads and answers writes with 503 +
//! Retry-After) and wait one registry refresh; provision the destination tier; copy the rows
//! (idempotently); verify the copy equals the source row for row; switch the registry to the
//! destination and `active` in one transaction; wait one refresh so no runtime still reads the old
//! copy; copy any straggler rows; only then remove the old copy. A failure before the switch puts the
//! tenant back to `active` on its old tier; the old copy is never removed unverified.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use minijinja::context;
use runtime::domain::{Namespace, TenantId, Tier};
use runtime::schema::TENANT_DATA_TABLES;
use serde::Serialize;

use super::Target;
use super::apply::lock_tenant_id;
use super::apply::{Registry, provision};
use super::offboard::{
    Location, fence_to_tenant, locate, read_rows, remove_data_after, remove_data_in,
};
use crate::sql;

/// What a move did.
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    pub tenant: TenantId,
    pub from: Tier,
    pub to: Tier,
    pub rows: usize,
    pub stragglers: usize,
}

fn destination(target: &Target, tenant: &TenantId, tier: Tier) -> Location {
    let ns = &target.namespace;
    let database = match tier {
        Tier::Pool | Tier::Schema => target.endpoint.dbname.clone(),
        Tier::Dedicated => ns.tenant_database(tenant),
    };
    // The tenant keeps its own login role on every tier, so a move never changes who it logs in as.
    Location {
        tier,
        status: "active".into(),
        role: ns.tenant_role(tenant),
        schema: Namespace::data_schema(tier, tenant),
        database,
        host: None,
    }
}

async fn set_status(target: &Target, tenant: &TenantId, from: &str, to: &str) -> Result<()> {
    let admin = target.admin().await?;
    let n = admin
        .execute(
            "UPDATE control.tenants SET status = $3, updated_at = now() WHERE tenant_id = $1 AND status = $2",
            &[&tenant.as_str(), &from, &to],
        )
        .await?;
    if n != 1 {
        bail!("tenant `{tenant}` is not `{from}` (another move or offboarding in progress?)");
    }
    Ok(())
}

/// Inserts the source rows missing at the destination; returns how many source rows there were.
async fn copy(target: &Target, src: &Location, dst: &Location, tenant: &TenantId) -> Result<usize> {
    let mut total = 0;
    for table in TENANT_DATA_TABLES {
        let rows = read_rows(target, src, tenant, table).await?;
        total += rows.len();
        if rows.is_empty() {
            continue;
        }
        let json = format!("[{}]", rows.join(","));
        let mut client = target.connect_admin(&dst.database).await?;
        #[expect(
            clippy::disallowed_methods,
            reason = "maintenance runs as the admin role, not as a tenant"
        )]
        let tx = client.transaction().await?;
        if dst.tier == Tier::Pool {
            fence_to_tenant(&tx, target, tenant).await?;
        }
        tx.execute(
            &sql::render(
                "tenant-rows-insert.sql",
                context! { schema => dst.schema, table => table },
            )?,
            &[&json],
        )
        .await
        .with_context(|| format!("copying `{table}`"))?;
        tx.commit().await?;
    }
    Ok(total)
}

/// The destination must hold exactly the source's rows (compared as rendered JSON, row by row).
async fn verify(target: &Target, src: &Location, dst: &Location, tenant: &TenantId) -> Result<()> {
    for table in TENANT_DATA_TABLES {
        let a = read_rows(target, src, tenant, table).await?;
        let b = read_rows(target, dst, tenant, table).await?;
        if a != b {
            bail!(
                "verification failed for `{table}`: {} source row(s), {} copied; the old copy is kept",
                a.len(),
                b.len()
            );
        }
    }
    Ok(())
}

/// Moves `tenant` to tier `to`. `drain` is how long to wait for every runtime to see a registry change
/// (at least one registry refresh interval).
pub async fn move_tenant(
    target: &Target,
    tenant: &TenantId,
    to: Tier,
    drain: Duration,
) -> Result<MoveReport> {
    let src = locate(target, tenant).await?;
    if src.tier == to {
        return Ok(MoveReport {
            tenant: tenant.clone(),
            from: to,
            to,
            rows: 0,
            stragglers: 0,
        });
    }
    let mut spec = super::suspend::registered_spec(target, tenant).await?;
    spec.tier = to;
    let dst = destination(target, tenant, to);

    set_status(target, tenant, "active", "read_only").await?;
    tokio::time::sleep(drain).await;
    let copied = async {
        let mut admin = target.admin().await?;
        provision(target, &mut admin, &spec, Registry::Leave).await?;
        let rows = copy(target, &src, &dst, tenant).await?;
        verify(target, &src, &dst, tenant).await?;
        Ok::<_, anyhow::Error>(rows)
    }
    .await;
    let rows = match copied {
        Ok(rows) => rows,
        Err(e) => {
            set_status(target, tenant, "read_only", "active").await?;
            return Err(e.context(format!(
                "moving `{tenant}` failed before the switch; it stays on tier `{}`",
                src.tier
            )));
        }
    };

    // The switch: one transaction moves the registry to the destination and reopens writes.
    let mut client = target.admin().await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "maintenance runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    lock_tenant_id(&tx, tenant).await?;
    tx.execute(
        "UPDATE control.tenants SET tier = $2, db_role = $3, db_schema = $4, db_name = $5, spec = $6, \
                spec_hash = $7, status = 'active', updated_at = now() \
          WHERE tenant_id = $1 AND status = 'read_only'",
        &[
            &tenant.as_str(),
            &to.as_str(),
            &dst.role,
            &dst.schema,
            &dst.database,
            &spec.canonical_json(),
            &spec.hash(),
        ],
    )
    .await?;
    super::apply::record(
        &tx,
        tenant,
        "move",
        "succeeded",
        &format!("{} -> {to}, {rows} row(s)", src.tier),
    )
    .await?;
    tx.commit().await.context("switching the registry")?;

    // Let every runtime see the new location, catch rows a late writer put in the old copy, then
    // remove it. The tenant's role stays: every tier logs in as it.
    tokio::time::sleep(drain).await;
    let total = copy(target, &src, &dst, tenant).await?;
    let stragglers = total.saturating_sub(rows);
    let mut client = target.admin().await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "maintenance runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    remove_data_in(&tx, target, &src, tenant, Some(to)).await?;
    tx.commit().await?;
    remove_data_after(target, &src, tenant, Some(to)).await?;
    Ok(MoveReport {
        tenant: tenant.clone(),
        from: src.tier,
        to,
        rows,
        stragglers,
    })
}
