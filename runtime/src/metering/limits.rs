//! Admissions against the tenant's budget and rate limits, before any model call.
//!
//! One statement as the tenant's own role (`tenant_admit`, tenant migration 0005) refills the
//! tenant's request and token buckets, refuses when either is empty (with the wait), then refuses
//! when the month's committed spend plus open holds plus this call's worst case would pass the
//! budget, and otherwise holds the worst case. The state is in the database, so every runtime
//! process (and every Lambda instance) of the tenant shares one budget and one limit. The limits are
//! the registry's, passed with every call; the tenant's role stores none it could raise.
//!
//! A hold is settled by the call's ledger row (same id; the ledger's trigger deletes the hold in the
//! statement that adds the cost), released by `release` when the call failed before producing
//! anything, and expires after `HOLD_SECS` if neither happened (a process killed mid-call). If the
//! database cannot be reached the call is refused: never served unmetered.

use uuid::Uuid;

use crate::auth::Tenant;
use crate::db::DataError;
use crate::domain::MicroUsd;
use crate::tenancy::{Admission, DataPlane, Lane, TenantTx};

/// This month's committed spend and open holds (`tenant_budget_state`, as admissions read them).
const STATUS: &str = "SELECT spent, held FROM tenant_budget_state($1, now())";

/// How long an unsettled hold keeps its budget: longer than any plain call the upstream timeouts
/// allow. A stream running longer loses its hold (its ledger row still charges all it produced).
pub const HOLD_SECS: i32 = 900;

/// The budget as the admission found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BudgetStatus {
    pub budget: MicroUsd,
    /// Committed spend this calendar month (UTC).
    pub spent: MicroUsd,
    /// Open holds, this call's included when it was admitted.
    pub held: MicroUsd,
}

impl BudgetStatus {
    /// At or past the warning threshold (80% of the budget committed or held).
    pub fn warning(&self) -> bool {
        i128::from(self.spent.0) + i128::from(self.held.0) >= i128::from(self.budget.0) * 4 / 5
    }
}

/// Why an admission was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Requests per minute used up; retry after this many milliseconds.
    Requests { retry_after_ms: u64 },
    /// Tokens per minute used up; retry after this many milliseconds.
    Tokens { retry_after_ms: u64 },
    /// The call's worst case does not fit in what is left of the month's budget.
    Budget {
        status: BudgetStatus,
        worst_case: MicroUsd,
    },
}

const ADMIT: &str = "SELECT verdict, retry_after_ms, spent, held \
                       FROM tenant_admit($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const RELEASE: &str = "SELECT tenant_release($1, $2, $3)";

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Admits a call of `tenant` whose worst case costs `worst_case` and that sends about `tokens`
/// tokens, holding `worst_case` under `hold` (the id its ledger row will have).
pub async fn admit(
    data: &DataPlane,
    tenant: &Tenant,
    admission: &Admission,
    hold: Uuid,
    worst_case: MicroUsd,
    tokens: u64,
) -> Result<Result<BudgetStatus, Refusal>, DataError> {
    let limits = tenant.record().limits;
    let rpm = i32::try_from(limits.requests_per_minute.max(1)).unwrap_or(i32::MAX);
    let tpm = clamp(limits.tokens_per_minute.max(1));
    let rows = TenantTx::call_once(
        data,
        tenant,
        admission,
        Lane::Calls,
        ADMIT,
        &[
            &hold,
            &worst_case.0.max(0),
            &limits.monthly_budget.0,
            &HOLD_SECS,
            &rpm,
            &tpm,
            &clamp(tokens),
        ],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| DataError::Pool("tenant_admit returned no row".into()))?;
    let verdict: &str = row.get(0);
    let retry_after_ms = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
    let status = BudgetStatus {
        budget: limits.monthly_budget,
        spent: MicroUsd(row.get(2)),
        held: MicroUsd(row.get(3)),
    };
    Ok(match verdict {
        "ok" => Ok(status),
        "requests" => Err(Refusal::Requests { retry_after_ms }),
        "tokens" => Err(Refusal::Tokens { retry_after_ms }),
        "budget" => Err(Refusal::Budget { status, worst_case }),
        other => {
            return Err(DataError::Pool(format!("tenant_admit answered `{other}`")));
        }
    })
}

/// Releases `hold` (the call failed before anything was produced or recorded).
pub async fn release(
    data: &DataPlane,
    tenant: &Tenant,
    admission: &Admission,
    hold: Uuid,
) -> Result<(), DataError> {
    TenantTx::call_once(data, tenant, admission, Lane::Calls, RELEASE, &[&hold]).await?;
    Ok(())
}

/// The tenant's budget (`budget`, from its record) now, read in `tx` (what `/v1/usage` shows).
pub async fn status(tx: &TenantTx, budget: MicroUsd) -> Result<BudgetStatus, DataError> {
    let rows = tx.query(STATUS, &[&tx.tenant().as_str()]).await?;
    let row = rows
        .first()
        .ok_or_else(|| DataError::Pool("the budget status returned no row".into()))?;
    Ok(BudgetStatus {
        budget,
        spent: MicroUsd(row.get(0)),
        held: MicroUsd(row.get(1)),
    })
}
