//! The tenant's own usage: recent ledger rows and its totals, read through its `TenantTx`.

use crate::auth::Tenant;
use crate::metering::ledger::{self, Entry, Totals};
use crate::metering::limits;
use crate::service::BudgetStatus;
use crate::service::ServiceError;
use crate::tenancy::{DataPlane, TenantTx};

/// The `limit` most recent ledger rows of `tenant` (1..=1000), its totals, and its budget this month.
pub async fn recent(
    data: &DataPlane,
    tenant: &Tenant,
    limit: i64,
) -> Result<(Vec<Entry>, Totals, BudgetStatus), ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let (entries, totals) = ledger::recent(&tx, limit.clamp(1, 1000)).await?;
    let budget = limits::status(&tx, tenant.record().limits.monthly_budget).await?;
    tx.commit().await?;
    Ok((entries, totals, budget))
}
