//! The tenant's own usage: recent ledger rows and its totals, read through its `TenantTx`.

use crate::auth::Tenant;
use crate::metering::ledger::{self, Entry, Totals};
use crate::service::ServiceError;
use crate::tenancy::{DataPlane, TenantTx};

/// The `limit` most recent ledger rows of `tenant` (1..=1000) and its totals.
pub async fn recent(
    data: &DataPlane,
    tenant: &Tenant,
    limit: i64,
) -> Result<(Vec<Entry>, Totals), ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let out = ledger::recent(&tx, limit.clamp(1, 1000)).await?;
    tx.commit().await?;
    Ok(out)
}
