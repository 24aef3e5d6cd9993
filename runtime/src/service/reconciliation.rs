//! Reconciliation runs for platform operators and finance: a tenant's month, read through its own
//! handle, against its provider's cost export (`runtime::reconcile`), per day and model; each run
//! kept in the registry (`control.reconciliation_runs`) with who ran it and the export's digest.

use serde_json::json;
use tokio_postgres::types::ToSql;

use crate::auth::Operator;
use crate::reconcile::{DayUsage, parse_invoice, reconcile};
use crate::registry::{ControlPlane, TenantDirectory};
use crate::service::ServiceError;
use crate::tenancy::{DataPlane, TenantTx};

/// The tenant's month (`$2`, its first day) by day, provider and model, from the per-day totals.
const MONTH: &str = "SELECT to_char(day, 'YYYY-MM-DD'), provider, model, requests, input_tokens, \
     output_tokens, cost_micro_usd FROM usage_daily_models \
     WHERE tenant_id = $1 AND day >= CAST($2::text AS date) \
       AND day < (CAST($2::text AS date) + interval '1 month')::date \
     ORDER BY day, provider COLLATE \"C\", model COLLATE \"C\"";

/// `YYYY-MM` (UTC), checked.
pub fn check_month(month: &str) -> Result<(), String> {
    crate::reconcile::month_first_day(month)
        .map(|_| ())
        .ok_or_else(|| {
            format!(
                "`month` `{}` is not a month: use YYYY-MM (UTC), e.g. 2026-12",
                crate::domain::printable(month)
            )
        })
}

fn no_registry() -> ServiceError {
    ServiceError::Conflict(
        "this deployment reads no registry; reconcile with `tenantctl usage reconcile`".into(),
    )
}

/// Runs one reconciliation of tenant `raw`'s `month` against `invoice` (the export's text) and
/// keeps it.
#[expect(
    clippy::too_many_arguments,
    reason = "one business action, each argument a distinct input"
)]
pub async fn run(
    control: Option<&ControlPlane>,
    data: &DataPlane,
    directory: &TenantDirectory,
    operator: &Operator,
    raw: &str,
    month: &str,
    tolerance: i64,
    invoice: &str,
    request_id: uuid::Uuid,
) -> Result<serde_json::Value, ServiceError> {
    let control = control.ok_or_else(no_registry)?;
    check_month(month).map_err(ServiceError::BadRequest)?;
    if tolerance < 0 {
        return Err(ServiceError::BadRequest(
            "`tolerance_micro_usd` must not be negative".into(),
        ));
    }
    let summary = crate::service::platform::tenant(directory, raw)?;
    let record = crate::registry::TenantDirectory::get(
        directory,
        &crate::domain::TenantId::parse(&summary.id).map_err(ServiceError::internal)?,
    )
    .ok_or_else(|| ServiceError::NotFound(format!("no tenant `{}` in the registry", summary.id)))?;
    let (provider, costs) =
        parse_invoice(invoice, "the invoice export").map_err(ServiceError::BadRequest)?;
    let costs = costs
        .into_iter()
        .filter(|((day, _), _)| day.starts_with(month))
        .collect();
    let tenant = operator.acting_for(record);
    let first = format!("{month}-01");
    let tx = TenantTx::begin(data, &tenant).await?;
    let params: [&(dyn ToSql + Sync); 2] = [&tx.tenant().as_str(), &first];
    let rows = tx.query(MONTH, &params).await?;
    tx.commit().await?;
    let ledger = day_usage(&rows);
    let lines = reconcile(&ledger, &provider, &costs, tolerance);
    let over = lines.iter().filter(|l| l.status != "ok").count();
    let digest: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, invoice.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let run = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "object": "reconciliation_run",
        "tenant": summary.id,
        "month": month,
        "provider": provider,
        "tolerance_micro_usd": tolerance,
        "over_tolerance": over,
        "invoice_sha256": digest,
        "ran_by": operator.actor(),
        "request_id": request_id.to_string(),
        "lines": lines,
    });
    control
        .store_run(&run)
        .await
        .map_err(ServiceError::internal)?;
    Ok(run)
}

pub async fn list(
    control: Option<&ControlPlane>,
    directory: &TenantDirectory,
    tenant: Option<&str>,
    limit: i64,
) -> Result<Vec<serde_json::Value>, ServiceError> {
    let control = control.ok_or_else(no_registry)?;
    let tenant = match tenant {
        Some(raw) => Some(
            crate::domain::TenantId::parse(&crate::service::platform::tenant(directory, raw)?.id)
                .map_err(ServiceError::internal)?,
        ),
        None => None,
    };
    control
        .runs(tenant.as_ref(), None, limit.clamp(1, 100))
        .await
        .map_err(ServiceError::internal)
}

pub async fn get(
    control: Option<&ControlPlane>,
    raw: &str,
) -> Result<serde_json::Value, ServiceError> {
    let control = control.ok_or_else(no_registry)?;
    let not_found = || {
        ServiceError::NotFound(format!(
            "no reconciliation run `{}`",
            crate::domain::printable(raw)
        ))
    };
    let id = uuid::Uuid::try_parse(raw).map_err(|_| not_found())?;
    control
        .runs(None, Some(id), 1)
        .await
        .map_err(ServiceError::internal)?
        .into_iter()
        .next()
        .ok_or_else(not_found)
}

/// Rows of (day, provider, model, requests, input, output, cost), as the ledger's month query and
/// `tenantctl usage`'s both answer them.
pub fn day_usage(rows: &[tokio_postgres::Row]) -> Vec<DayUsage> {
    rows.iter()
        .map(|r| DayUsage {
            day: r.get(0),
            provider: r.get(1),
            model: r.get(2),
            requests: r.get(3),
            input_tokens: r.get(4),
            output_tokens: r.get(5),
            cost_micro_usd: r.get(6),
        })
        .collect()
}
