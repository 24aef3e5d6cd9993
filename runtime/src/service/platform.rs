//! The platform operator's actions: the tenants (list, get, suspend, resume), usage across every
//! tenant, and the price book. Only an `Operator` (a staff token for the platform audience) calls
//! these; tenant data is read through each tenant's own handle (`Operator::acting_for`), so even
//! here the database fences one tenant's reads from another's.

use serde::Serialize;

pub use crate::audit::{Record, verify as verify_chain};
use crate::auth::Operator;
use crate::domain::TenantId;
use crate::registry::{ControlPlane, PriceVersion, SuspendOutcome, TenantDirectory, TenantRecord};
use crate::service::ServiceError;
use crate::service::usage::{DayRange, GroupBy, Totals};
use crate::tenancy::DataPlane;

/// What an operator sees of a tenant: its registry entry, never its secrets or its data.
#[derive(Debug, Clone, Serialize)]
pub struct TenantSummary {
    pub object: &'static str,
    pub id: String,
    pub display_name: String,
    pub tier: &'static str,
    pub status: &'static str,
    pub issuer: String,
    pub audience: String,
    pub monthly_budget_micro_usd: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_subject_monthly_budget_micro_usd: Option<i64>,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    pub tags: std::collections::BTreeMap<String, String>,
}

fn summary(r: &TenantRecord) -> TenantSummary {
    TenantSummary {
        object: "tenant",
        id: r.id.to_string(),
        display_name: r.display_name.clone(),
        tier: r.tier.as_str(),
        status: if r.suspended {
            "suspended"
        } else if r.read_only {
            "read_only"
        } else {
            "active"
        },
        issuer: r.identity.issuer.clone(),
        audience: r.identity.audience.clone(),
        monthly_budget_micro_usd: r.limits.monthly_budget.0,
        per_subject_monthly_budget_micro_usd: r.limits.subject_monthly_budget.map(|b| b.0),
        requests_per_minute: r.limits.requests_per_minute,
        tokens_per_minute: r.limits.tokens_per_minute,
        tags: r.tags.clone(),
    }
}

fn parse_id(raw: &str) -> Result<TenantId, ServiceError> {
    TenantId::parse(raw).map_err(|_| {
        ServiceError::NotFound(format!(
            "no tenant `{}` in the registry",
            crate::domain::printable(raw)
        ))
    })
}

fn record(
    directory: &TenantDirectory,
    raw: &str,
) -> Result<std::sync::Arc<TenantRecord>, ServiceError> {
    let id = parse_id(raw)?;
    directory
        .get(&id)
        .ok_or_else(|| ServiceError::NotFound(format!("no tenant `{id}` in the registry")))
}

pub fn tenants(directory: &TenantDirectory) -> Vec<TenantSummary> {
    directory.records().iter().map(|r| summary(r)).collect()
}

pub fn tenant(directory: &TenantDirectory, raw: &str) -> Result<TenantSummary, ServiceError> {
    record(directory, raw).map(|r| summary(&r))
}

/// Suspends or resumes a tenant, audited in the platform's chain; this process serves the change
/// at once (others at their next registry refresh).
pub async fn set_suspended(
    control: Option<&ControlPlane>,
    directory: &TenantDirectory,
    operator: &Operator,
    raw: &str,
    suspend: bool,
    request_id: uuid::Uuid,
    reason: &str,
) -> Result<TenantSummary, ServiceError> {
    let Some(control) = control else {
        return Err(ServiceError::Conflict(
            "this deployment reads no registry; suspend and resume with `tenantctl suspend|resume`"
                .into(),
        ));
    };
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest(
            "`reason` must be at most 500 characters with no control characters".into(),
        ));
    }
    let id = parse_id(raw)?;
    let outcome = control
        .set_suspended(&id, suspend, &operator.actor(), request_id, reason)
        .await
        .map_err(ServiceError::internal)?;
    match outcome {
        SuspendOutcome::Unknown => {
            return Err(ServiceError::NotFound(format!(
                "no tenant `{id}` in the registry"
            )));
        }
        SuspendOutcome::Refused(status) => {
            return Err(ServiceError::Conflict(format!(
                "tenant `{id}` is `{status}`; only an active tenant is suspended and only a suspended one resumed"
            )));
        }
        SuspendOutcome::Changed | SuspendOutcome::AlreadyThere => {}
    }
    directory.replace(
        control
            .load_tenants()
            .await
            .map_err(ServiceError::internal)?,
    );
    tenant(directory, id.as_str())
}

/// One tenant's usage over a range: its totals, by model, and its cost-center tag.
#[derive(Debug, Clone, Serialize)]
pub struct TenantUsage {
    pub tenant: String,
    pub cost_center: Option<String>,
    pub totals: Totals,
    pub models: Vec<crate::service::usage::ReportRow>,
}

/// Tenants read at once by `usage` (each through its own handle and connection).
const CONCURRENT_TENANTS: usize = 8;

/// Every tenant's usage over `range`, each read through its own handle, with the sum.
pub async fn usage(
    data: &DataPlane,
    directory: &TenantDirectory,
    operator: &Operator,
    range: DayRange,
) -> Result<(Vec<TenantUsage>, Totals), ServiceError> {
    use futures_util::StreamExt as _;
    let records = directory.records();
    let reads: Vec<_> = records
        .iter()
        .map(|record| {
            let tenant = operator.acting_for(record.clone());
            let range = range.clone();
            async move {
                crate::service::usage::report(data, &tenant, range, GroupBy::Model)
                    .await
                    .map(|(report, _)| report)
            }
        })
        .collect();
    let reports: Vec<_> = futures_util::stream::iter(reads)
        .buffered(CONCURRENT_TENANTS)
        .collect()
        .await;
    let mut out = Vec::new();
    let mut sum = Totals::default();
    for (record, report) in records.iter().zip(reports) {
        let report = report?;
        sum = sum
            .checked_add(&report.totals)
            .ok_or_else(|| ServiceError::internal("a usage total overflowed 64 bits"))?;
        out.push(TenantUsage {
            tenant: record.id.to_string(),
            cost_center: record.tags.get("cost-center").cloned(),
            totals: report.totals,
            models: report.rows,
        });
    }
    Ok((out, sum))
}

/// One tenant's usage over `range`, by model, read through its own handle.
pub async fn tenant_usage(
    data: &DataPlane,
    directory: &TenantDirectory,
    operator: &Operator,
    raw: &str,
    range: DayRange,
) -> Result<crate::service::usage::Report, ServiceError> {
    let record = record(directory, raw)?;
    let tenant = operator.acting_for(record);
    let (report, _) = crate::service::usage::report(data, &tenant, range, GroupBy::Model).await?;
    Ok(report)
}

/// The platform's chain of a tenant of the registry (one the directory knows).
pub async fn platform_chain(
    control: Option<&ControlPlane>,
    directory: &TenantDirectory,
    raw: &str,
) -> Result<Vec<crate::audit::Record>, ServiceError> {
    let Some(control) = control else {
        return Err(ServiceError::Conflict(
            "this deployment reads no registry; read the chain with `tenantctl audit export`"
                .into(),
        ));
    };
    let record = record(directory, raw)?;
    control
        .platform_chain(&record.id)
        .await
        .map_err(ServiceError::internal)
}

pub async fn prices(control: Option<&ControlPlane>) -> Result<Vec<PriceVersion>, ServiceError> {
    let Some(control) = control else {
        return Err(ServiceError::Conflict(
            "this deployment reads no registry; list the price book with `tenantctl prices list`"
                .into(),
        ));
    };
    control
        .price_versions()
        .await
        .map_err(ServiceError::internal)
}

/// What `tenantctl status` last found of each tenant of the registry: a tenant never checked has
/// `checked_at: null`.
pub async fn checks(
    control: Option<&ControlPlane>,
    directory: &TenantDirectory,
) -> Result<Vec<serde_json::Value>, ServiceError> {
    let Some(control) = control else {
        return Err(ServiceError::Conflict(
            "this deployment reads no registry; run `tenantctl status`".into(),
        ));
    };
    let found = control
        .tenant_checks()
        .await
        .map_err(ServiceError::internal)?;
    let mut out: Vec<serde_json::Value> = directory
        .records()
        .iter()
        .map(|r| {
            found
                .iter()
                .find(|c| c["tenant"] == r.id.as_str())
                .cloned()
                .unwrap_or_else(|| {
                    serde_json::json!({"tenant": r.id.as_str(), "checked_by": null, "findings": null, "checked_at": null})
                })
        })
        .collect();
    out.sort_by(|a, b| a["tenant"].as_str().cmp(&b["tenant"].as_str()));
    Ok(out)
}

/// One tenant's usage in a month (its LLM spend, exact, from the ledger) and its AWS spend.
#[derive(Debug, Clone, Serialize)]
pub struct MonthSpend {
    #[serde(flatten)]
    pub llm: TenantUsage,
    /// As Cost Explorer reported it when `tenantctl cost report` last ran; `None` if never for
    /// this month.
    pub aws_cost_micro_usd: Option<i64>,
    pub aws_fetched_at: Option<String>,
}

/// Every tenant's usage in `month` (`YYYY-MM`, from the ledger; `usage` over that month) next to
/// its AWS spend (as last recorded), and the month's range and LLM totals.
pub async fn month_spend(
    data: &DataPlane,
    control: Option<&ControlPlane>,
    directory: &TenantDirectory,
    operator: &Operator,
    month: &str,
) -> Result<(Vec<MonthSpend>, DayRange, Totals), ServiceError> {
    let Some(control) = control else {
        return Err(ServiceError::Conflict(
            "this deployment reads no registry; run `tenantctl cost report`".into(),
        ));
    };
    let range = DayRange::parse(Some(month), Some(month), &crate::domain::utc_today())
        .map_err(ServiceError::BadRequest)?;
    let aws = control
        .aws_spend(month)
        .await
        .map_err(ServiceError::internal)?;
    let (llm, totals) = usage(data, directory, operator, range.clone()).await?;
    let spend = llm
        .into_iter()
        .map(|t| {
            let a = aws.iter().find(|(id, _, _)| *id == t.tenant);
            MonthSpend {
                aws_cost_micro_usd: a.map(|(_, v, _)| *v),
                aws_fetched_at: a.map(|(_, _, at)| at.clone()),
                llm: t,
            }
        })
        .collect();
    Ok((spend, range, totals))
}
