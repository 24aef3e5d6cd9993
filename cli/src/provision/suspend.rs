//! `tenantctl suspend` and `tenantctl resume`: a tenant's status in the registry, changed with its
//! audit row in one transaction.
//!
//! What a suspension reaches, and how fast: every multi-tenant runtime stops serving the tenant at its
//! next registry refresh (`registry_refresh_secs`; it fails closed after `registry_max_stale_secs`
//! without one); on AWS the command then redeploys the tenant's stack with no reserved concurrency, so
//! API Gateway refuses every request before the function runs (`aws::fleet::set_serving`). `apply`
//! keeps a suspended tenant suspended. Suspension deletes nothing.

use anyhow::{Context, Result, bail};
use runtime::domain::TenantId;

use super::Target;
use super::apply::lock_tenant_id;

/// What a suspend or resume found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Changed,
    AlreadyThere,
}

/// Sets `tenant`'s status from `from` to `to` (both `active`/`suspended`), auditing who and why.
async fn transition(
    target: &Target,
    tenant: &TenantId,
    from: &str,
    to: &str,
    action: &str,
    reason: &str,
) -> Result<Change> {
    let mut client = target.admin().await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the registry is the control plane, not tenant data"
    )]
    let tx = client.transaction().await?;
    lock_tenant_id(&tx, tenant).await?;
    let status: String = tx
        .query_opt(
            "SELECT status FROM control.tenants WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await
        .context("reading the registry")?
        .with_context(|| {
            format!("tenant `{tenant}` is not in the registry\nhint: `tenantctl status` lists the tenants")
        })?
        .get(0);
    if status == to {
        return Ok(Change::AlreadyThere);
    }
    if status != from {
        bail!(
            "tenant `{tenant}` is `{status}`, not `{from}`{}",
            match status.as_str() {
                "read_only" =>
                    "\nhint: a tier move is in progress; wait for `tenantctl move` to finish",
                "offboarded" =>
                    "\nhint: an offboarded tenant has no data left to serve; onboarding it again is explicit: `tenantctl apply --reactivate`",
                _ => "",
            }
        );
    }
    tx.execute(
        "UPDATE control.tenants SET status = $2, updated_at = now() WHERE tenant_id = $1",
        &[&tenant.as_str(), &to],
    )
    .await?;
    super::apply::record(&tx, tenant, action, "succeeded", reason).await?;
    tx.commit().await.context("committing the status change")?;
    Ok(Change::Changed)
}

/// Suspends an active tenant: its requests are refused (401 `unknown_tenant`), its data is kept.
pub async fn suspend(target: &Target, tenant: &TenantId, reason: &str) -> Result<Change> {
    transition(target, tenant, "active", "suspended", "suspend", reason).await
}

/// Resumes a suspended tenant.
pub async fn resume(target: &Target, tenant: &TenantId, reason: &str) -> Result<Change> {
    transition(target, tenant, "suspended", "active", "resume", reason).await
}

/// The registry's copy of a tenant's spec (what the AWS target renders its stack from).
pub async fn registered_spec(
    target: &Target,
    tenant: &TenantId,
) -> Result<crate::manifest::TenantSpec> {
    let raw: serde_json::Value = target
        .admin()
        .await?
        .query_opt(
            "SELECT spec FROM control.tenants WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await?
        .with_context(|| format!("tenant `{tenant}` is not in the registry"))?
        .get(0);
    serde_json::from_value(raw).context("reading the registry's copy of the spec")
}
