//! Finance's view of the ledger: `tenantctl usage report` (a month, per tenant, cost-center, provider
//! and model, with totals that add up exactly) and `tenantctl usage reconcile` (a tenant's month
//! against its provider's invoice export, per day and model, with the variance and a non-zero exit
//! beyond the tolerance).
//!
//! Every figure is an integer: micro-USD and tokens, summed in the database and added here with
//! overflow checks. Invoice amounts (decimal USD text) are parsed digit by digit, never through a
//! float.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use minijinja::context;
use runtime::domain::{TenantId, Tier};
use runtime::http::csv::cell;
use serde::Serialize;

use crate::provision::Target;
use crate::provision::offboard::{Location, fence_to_tenant, locate};
use crate::sql;

/// `YYYY-MM`, checked; its first day as `YYYY-MM-01`.
pub fn month_start(month: &str) -> Result<String> {
    runtime::reconcile::month_first_day(month).with_context(|| {
        format!("`--month {month}` is not a month: use YYYY-MM (UTC), e.g. 2026-12")
    })
}

pub use runtime::reconcile::DayUsage;

/// `tenant`'s ledger for the month starting `first_day`, read as the admin where its data lives.
pub async fn month_of(
    target: &Target,
    loc: &Location,
    tenant: &TenantId,
    first_day: &str,
) -> Result<Vec<DayUsage>> {
    let rows = read_month(target, loc, tenant, first_day, "tenant-usage-month.sql").await?;
    Ok(day_usage(&rows))
}

/// Runs the month query `template` (parameters: the tenant, the month's first day) against
/// `tenant`'s data where it lives, as the admin, a pool tenant fenced to its own rows.
async fn read_month(
    target: &Target,
    loc: &Location,
    tenant: &TenantId,
    first_day: &str,
    template: &str,
) -> Result<Vec<tokio_postgres::Row>> {
    let mut client = target.connect_admin(&loc.database).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "finance reports read as the admin role, one tenant at a time"
    )]
    let tx = client.transaction().await?;
    if loc.tier == Tier::Pool {
        fence_to_tenant(&tx, target, tenant).await?;
    }
    let query = sql::render(template, context! { schema => loc.schema })?;
    let rows = tx
        .query(&query, &[&tenant.as_str(), &first_day])
        .await
        .with_context(|| format!("reading the ledger of tenant `{tenant}`"))?;
    tx.commit().await?;
    Ok(rows)
}

use runtime::service::reconciliation::day_usage;

/// A tenant's rows of a month whose provider-reported cost differs from ours, per provider and
/// model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostDiffers {
    pub tenant: String,
    pub provider: String,
    pub model: String,
    pub rows: i64,
    /// Ours (what the tenant is charged, by the price book).
    pub cost_micro_usd: i64,
    /// The provider's own, as it reported it on those calls.
    pub provider_cost_micro_usd: i64,
}

fn cost_differs_rows(tenant: &TenantId, rows: &[tokio_postgres::Row]) -> Vec<CostDiffers> {
    rows.iter()
        .map(|r| CostDiffers {
            tenant: tenant.to_string(),
            provider: r.get(0),
            model: r.get(1),
            rows: r.get(2),
            cost_micro_usd: r.get(3),
            provider_cost_micro_usd: r.get(4),
        })
        .collect()
}

/// `tenant`'s rows of the month starting `first_day` where the provider's cost differs from ours,
/// read as the admin where its data lives (the retained store once it is offboarded).
pub async fn cost_differs_of(
    target: &Target,
    loc: Option<&Location>,
    tenant: &TenantId,
    first_day: &str,
) -> Result<Vec<CostDiffers>> {
    let Some(loc) = loc else {
        let rows = target
            .admin()
            .await?
            .query(
                "SELECT provider, model, count(*)::bigint, sum(cost_micro_usd)::bigint, \
                        sum(provider_cost_micro_usd)::bigint \
                   FROM control.usage_retained \
                  WHERE tenant_id = $1 AND provider_cost_micro_usd <> cost_micro_usd \
                    AND created_at >= CAST($2::text AS date)::timestamp AT TIME ZONE 'UTC' \
                    AND created_at < (CAST($2::text AS date) + interval '1 month')::timestamp AT TIME ZONE 'UTC' \
                  GROUP BY 1, 2 ORDER BY provider COLLATE \"C\", model COLLATE \"C\"",
                &[&tenant.as_str(), &first_day],
            )
            .await
            .with_context(|| format!("reading the retained usage of tenant `{tenant}`"))?;
        return Ok(cost_differs_rows(tenant, &rows));
    };
    let rows = read_month(target, loc, tenant, first_day, "tenant-cost-differs.sql").await?;
    Ok(cost_differs_rows(tenant, &rows))
}

/// An offboarded tenant's month from the retained usage store (what its ledger held when it left).
pub async fn retained_month_of(
    target: &Target,
    tenant: &TenantId,
    first_day: &str,
) -> Result<Vec<DayUsage>> {
    let admin = target.admin().await?;
    let rows = admin
        .query(
            "SELECT to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD'), provider, model, \
                    count(*)::bigint, coalesce(sum(input_tokens), 0)::bigint, \
                    coalesce(sum(output_tokens), 0)::bigint, coalesce(sum(cost_micro_usd), 0)::bigint \
               FROM control.usage_retained \
              WHERE tenant_id = $1 \
                AND created_at >= CAST($2::text AS date)::timestamp AT TIME ZONE 'UTC' \
                AND created_at < (CAST($2::text AS date) + interval '1 month')::timestamp AT TIME ZONE 'UTC' \
              GROUP BY 1, 2, 3 ORDER BY 1, provider COLLATE \"C\", model COLLATE \"C\"",
            &[&tenant.as_str(), &first_day],
        )
        .await
        .with_context(|| format!("reading the retained usage of tenant `{tenant}`"))?;
    Ok(day_usage(&rows))
}

/// One line of the month's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportLine {
    pub tenant: String,
    pub cost_center: String,
    pub provider: String,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}

/// Sums of a set of lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sums {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}

impl Sums {
    fn add(&mut self, requests: i64, input: i64, output: i64, cost: i64) -> Result<()> {
        let overflow = || anyhow::anyhow!("a report total overflowed 64 bits");
        self.requests = self.requests.checked_add(requests).ok_or_else(overflow)?;
        self.input_tokens = self.input_tokens.checked_add(input).ok_or_else(overflow)?;
        self.output_tokens = self
            .output_tokens
            .checked_add(output)
            .ok_or_else(overflow)?;
        self.cost_micro_usd = self.cost_micro_usd.checked_add(cost).ok_or_else(overflow)?;
        Ok(())
    }
}

/// A month's usage over the deployment.
#[derive(Debug, Clone, Serialize)]
pub struct MonthReport {
    pub month: String,
    pub currency: &'static str,
    pub unit: &'static str,
    pub lines: Vec<ReportLine>,
    /// Every tenant the report covers (those without usage this month at zero).
    pub by_tenant: BTreeMap<String, Sums>,
    /// Each tenant's cost-center.
    pub cost_centers: BTreeMap<String, String>,
    pub by_cost_center: BTreeMap<String, Sums>,
    pub totals: Sums,
    /// Rows whose provider-reported cost differs from ours (charged by ours), per tenant, provider
    /// and model.
    pub cost_differs: Vec<CostDiffers>,
}

/// The tenants a report covers: every tenant in the registry, with its cost-center tag and whether
/// it is offboarded (its ledger is then in the retained usage store until its retention ends).
async fn tenants(
    target: &Target,
    only: Option<&TenantId>,
) -> Result<Vec<(TenantId, String, bool)>> {
    let admin = target.admin().await?;
    let exists: bool = admin
        .query_one("SELECT to_regclass('control.tenants') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        bail!("this deployment has no registry yet\nhint: `tenantctl apply` creates it");
    }
    let rows = admin
        .query(
            "SELECT tenant_id, coalesce(tags ->> 'cost-center', ''), status = 'offboarded' \
               FROM control.tenants WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY tenant_id",
            &[&only.map(TenantId::as_str)],
        )
        .await?;
    if let Some(t) = only
        && rows.is_empty()
    {
        bail!("tenant `{t}` is not in the registry\nhint: `tenantctl status` lists the tenants");
    }
    rows.iter()
        .map(|r| {
            let id: String = r.get(0);
            Ok((
                TenantId::parse(&id)
                    .map_err(|e| anyhow::anyhow!("registry tenant `{id}`: {}", e.0))?,
                r.get(1),
                r.get(2),
            ))
        })
        .collect()
}

/// The month's report: one line per tenant, provider and model, and totals by tenant, by
/// cost-center and overall, each the exact sum of its lines.
pub async fn report(target: &Target, month: &str, only: Option<&TenantId>) -> Result<MonthReport> {
    let first = month_start(month)?;
    let mut lines = Vec::new();
    let (mut by_tenant, mut cost_centers) = (BTreeMap::new(), BTreeMap::new());
    let mut cost_differs = Vec::new();
    for (tenant, cost_center, offboarded) in tenants(target, only).await? {
        let days = if offboarded {
            cost_differs.extend(cost_differs_of(target, None, &tenant, &first).await?);
            retained_month_of(target, &tenant, &first).await?
        } else {
            let loc = locate(target, &tenant).await?;
            cost_differs.extend(cost_differs_of(target, Some(&loc), &tenant, &first).await?);
            month_of(target, &loc, &tenant, &first).await?
        };
        if offboarded && days.is_empty() {
            continue;
        }
        by_tenant.insert(tenant.to_string(), Sums::default());
        cost_centers.insert(tenant.to_string(), cost_center.clone());
        let mut per_model: BTreeMap<(String, String), Sums> = BTreeMap::new();
        for d in days {
            per_model.entry((d.provider, d.model)).or_default().add(
                d.requests,
                d.input_tokens,
                d.output_tokens,
                d.cost_micro_usd,
            )?;
        }
        for ((provider, model), s) in per_model {
            lines.push(ReportLine {
                tenant: tenant.to_string(),
                cost_center: cost_center.clone(),
                provider,
                model,
                requests: s.requests,
                input_tokens: s.input_tokens,
                output_tokens: s.output_tokens,
                cost_micro_usd: s.cost_micro_usd,
            });
        }
    }
    let mut by_cost_center = BTreeMap::new();
    let mut totals = Sums::default();
    for l in &lines {
        for sums in [
            by_tenant
                .entry(l.tenant.clone())
                .or_insert_with(Sums::default),
            by_cost_center
                .entry(l.cost_center.clone())
                .or_insert_with(Sums::default),
            &mut totals,
        ] {
            sums.add(
                l.requests,
                l.input_tokens,
                l.output_tokens,
                l.cost_micro_usd,
            )?;
        }
    }
    Ok(MonthReport {
        month: month.to_owned(),
        currency: "USD",
        unit: "micro_usd",
        lines,
        by_tenant,
        cost_centers,
        by_cost_center,
        totals,
        cost_differs,
    })
}

impl MonthReport {
    /// One line per tenant, provider and model (no total line: a column's sum is the total).
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "month,tenant,cost_center,provider,model,requests,input_tokens,output_tokens,cost_micro_usd\n",
        );
        for l in &self.lines {
            for text in [
                &self.month,
                &l.tenant,
                &l.cost_center,
                &l.provider,
                &l.model,
            ] {
                cell(&mut out, text);
                out.push(',');
            }
            let _ = writeln!(
                out,
                "{},{},{},{}",
                l.requests, l.input_tokens, l.output_tokens, l.cost_micro_usd
            );
        }
        out
    }

    /// A table for people, with USD.
    pub fn text(&self) -> String {
        let mut out = format!("usage for {} (UTC)\n", self.month);
        let _ = writeln!(
            out,
            "{:<20} {:<14} {:<18} {:<28} {:>9} {:>12} {:>12} {:>16}",
            "tenant", "cost-center", "provider", "model", "requests", "input", "output", "cost"
        );
        for l in &self.lines {
            let _ = writeln!(
                out,
                "{:<20} {:<14} {:<18} {:<28} {:>9} {:>12} {:>12} {:>16}",
                l.tenant,
                l.cost_center,
                l.provider,
                l.model,
                l.requests,
                l.input_tokens,
                l.output_tokens,
                usd(l.cost_micro_usd)
            );
        }
        for (name, sums) in [
            ("by cost-center", &self.by_cost_center),
            ("by tenant", &self.by_tenant),
        ] {
            let _ = writeln!(out, "{name}:");
            for (k, s) in sums {
                let _ = writeln!(
                    out,
                    "  {k:<32} {:>9} requests {:>16}",
                    s.requests,
                    usd(s.cost_micro_usd)
                );
            }
        }
        let _ = writeln!(
            out,
            "total: {} requests, {} input and {} output tokens, {}",
            self.totals.requests,
            self.totals.input_tokens,
            self.totals.output_tokens,
            usd(self.totals.cost_micro_usd)
        );
        if !self.cost_differs.is_empty() {
            let _ = writeln!(
                out,
                "calls whose provider-reported cost differs from ours (charged by ours):"
            );
            for d in &self.cost_differs {
                let _ = writeln!(
                    out,
                    "  {:<20} {:<18} {:<28} {:>9} rows  ours {:>16}  provider's {:>16}",
                    d.tenant,
                    d.provider,
                    d.model,
                    d.rows,
                    usd(d.cost_micro_usd),
                    usd(d.provider_cost_micro_usd)
                );
            }
        }
        out
    }
}

/// Micro-USD as decimal USD text (`1234567` -> `1.234567`), exactly; negative amounts keep their sign.
pub fn usd_text(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

fn usd(micro: i64) -> String {
    format!("${}", usd_text(micro))
}

pub use runtime::reconcile::{InvoiceCosts, Variance, base_model, reconcile, usd_to_micro};

/// The invoice's cost per (day, model), from an OpenAI-style or Anthropic-style CSV export
/// (`runtime::reconcile::parse_invoice` says which columns each has).
pub fn read_invoice(path: &Path) -> Result<(String, InvoiceCosts)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the invoice export `{}`", path.display()))?;
    runtime::reconcile::parse_invoice(&text, &format!("`{}`", path.display()))
        .map_err(anyhow::Error::msg)
}

/// Reads `tenant`'s month and reconciles it against `invoice_file`; the variances and whether any is
/// beyond tolerance.
pub async fn reconcile_file(
    target: &Target,
    tenant: &TenantId,
    month: &str,
    invoice_file: &Path,
    tolerance: i64,
) -> Result<(String, Vec<Variance>)> {
    let first = month_start(month)?;
    let (provider, invoice) = read_invoice(invoice_file)?;
    let invoice: BTreeMap<(String, String), i64> = invoice
        .into_iter()
        .filter(|((day, _), _)| day.starts_with(month))
        .collect();
    let loc = locate(target, tenant).await?;
    let ledger = month_of(target, &loc, tenant, &first).await?;
    Ok((
        provider.clone(),
        reconcile(&ledger, &provider, &invoice, tolerance),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_usd_reads_back_as_the_same_text() {
        for m in [0, 1, 999_999, 1_000_000, 12_345_679, -250_000] {
            assert_eq!(usd_to_micro(&usd_text(m)), Some(m), "{m}");
        }
        assert_eq!(usd_text(-250_000), "-0.250000");
    }

    #[test]
    fn usd_text_becomes_micro_usd_exactly() {
        for (text, want) in [
            ("0", Some(0)),
            ("12.34", Some(12_340_000)),
            ("0.000125", Some(125)),
            ("$1,234.5", Some(1_234_500_000)),
            ("0.0000005", Some(1)),
            ("0.0000004", Some(0)),
            (".5", Some(500_000)),
            ("-0.25", Some(-250_000)),
            ("1e-3", Some(1_000)),
            ("abc", None),
            ("", None),
            ("1.2.3", None),
        ] {
            assert_eq!(usd_to_micro(text), want, "{text}");
        }
    }

    #[test]
    fn dated_snapshots_match_the_ledgers_model_names() {
        assert_eq!(base_model("gpt-4o-mini-2024-07-18"), "gpt-4o-mini");
        assert_eq!(base_model("claude-haiku-4-5-20251001"), "claude-haiku-4-5");
        assert_eq!(base_model("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(base_model("mock-small"), "mock-small");
    }

    #[test]
    fn variances_are_per_day_and_model_and_sums_of_parts_equal_totals() {
        let ledger = vec![
            DayUsage {
                day: "2026-12-01".into(),
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
                requests: 10,
                input_tokens: 100,
                output_tokens: 100,
                cost_micro_usd: 1_000,
            },
            DayUsage {
                day: "2026-12-02".into(),
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
                requests: 5,
                input_tokens: 1,
                output_tokens: 1,
                cost_micro_usd: 500,
            },
        ];
        let invoice = BTreeMap::from([
            (("2026-12-01".to_owned(), "gpt-4o-mini".to_owned()), 995),
            (("2026-12-02".to_owned(), "gpt-4o-mini".to_owned()), 900),
            (("2026-12-03".to_owned(), "gpt-4o".to_owned()), 10),
        ]);
        let v = reconcile(&ledger, "openai", &invoice, 0);
        let status: Vec<&str> = v.iter().map(|v| v.status).collect();
        assert_eq!(status, ["ok", "over_tolerance", "not_in_ledger"]);
        assert_eq!(v[1].variance_micro_usd, 400);
        let total: i64 = v.iter().map(|v| v.variance_micro_usd).sum();
        let invoice_total: i64 = invoice.values().sum();
        let ledger_total: i64 = ledger.iter().map(|d| d.cost_micro_usd).sum();
        assert_eq!(total, invoice_total - ledger_total);
    }

    #[test]
    fn csv_exports_of_both_providers_are_read_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let openai = dir.path().join("openai.csv");
        std::fs::write(
            &openai,
            "start_time,end_time,line_item,project_id,amount_value,amount_currency\n\
             1796083200,1796169600,\"gpt-4o-mini-2024-07-18, input\",proj_1,0.000150,usd\n\
             1796083200,1796169600,\"gpt-4o-mini-2024-07-18, output\",proj_1,0.0006,usd\n",
        )
        .unwrap();
        let (kind, rows) = read_invoice(&openai).unwrap();
        assert_eq!(kind, "openai");
        assert_eq!(
            rows,
            BTreeMap::from([(("2026-12-01".to_owned(), "gpt-4o-mini".to_owned()), 750)])
        );
        let anthropic = dir.path().join("anthropic.csv");
        std::fs::write(
            &anthropic,
            "usage_date_utc,model,workspace,cost_usd\n2026-12-01,claude-haiku-4-5-20251001,Default,1.25\n",
        )
        .unwrap();
        let (kind, rows) = read_invoice(&anthropic).unwrap();
        assert_eq!(kind, "anthropic");
        assert_eq!(rows.values().sum::<i64>(), 1_250_000);
        let other = dir.path().join("other.csv");
        std::fs::write(&other, "date,cost\n2026-12-01,1\n").unwrap();
        let e = format!("{:#}", read_invoice(&other).unwrap_err());
        assert!(
            e.contains("not a recognised invoice export")
                && e.contains("start_time,line_item,amount_value"),
            "{e}"
        );
        let bad = dir.path().join("bad.csv");
        std::fs::write(
            &bad,
            "usage_date_utc,model,cost_usd\n2026-12-01,m,1,5\n2026-12-01,m,one\n",
        )
        .unwrap();
        let e = format!("{:#}", read_invoice(&bad).unwrap_err());
        assert!(
            e.contains("line 3") && e.contains("`one` is not an amount"),
            "{e}"
        );
    }
}

/// The first day of the month after `month` (`YYYY-MM`), `YYYY-MM-DD`.
pub fn next_month_start(month: &str) -> Result<String> {
    month_start(month)?;
    let (y, m): (u32, u32) = (month[..4].parse()?, month[5..].parse()?);
    Ok(if m == 12 {
        format!("{:04}-01-01", y + 1)
    } else {
        format!("{y:04}-{:02}-01", m + 1)
    })
}

/// One tenant's month: its LLM spend from the ledger next to its AWS spend from Cost Explorer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostLine {
    pub tenant: String,
    pub cost_center: String,
    pub llm_micro_usd: i64,
    pub aws_micro_usd: i64,
    pub total_micro_usd: i64,
}

/// What each tenant really cost in a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostReport {
    pub month: String,
    pub unit: &'static str,
    pub lines: Vec<CostLine>,
    /// AWS spend tagged with a tenant the registry does not have (or has offboarded).
    pub aws_other_tenants_micro_usd: i64,
    /// AWS spend on resources without the tenant tag (the platform's shared resources).
    pub aws_untagged_micro_usd: i64,
    pub llm_total_micro_usd: i64,
    pub aws_total_micro_usd: i64,
}

/// Joins the month's usage report with AWS spend by tenant tag (`aws`, from
/// `aws::costs::month_by_tag`): one line per tenant, and the AWS spend no tenant of the report owns.
pub fn cost_report(usage: &MonthReport, aws: &BTreeMap<String, i64>) -> Result<CostReport> {
    let overflow = || anyhow::anyhow!("a cost total overflowed 64 bits");
    let mut cost_centers: BTreeMap<&str, &str> = BTreeMap::new();
    for l in &usage.lines {
        cost_centers.insert(&l.tenant, &l.cost_center);
    }
    let mut tenants: std::collections::BTreeSet<&str> =
        usage.by_tenant.keys().map(String::as_str).collect();
    tenants.extend(
        aws.keys()
            .map(String::as_str)
            .filter(|t| usage.by_tenant.contains_key(*t)),
    );
    let mut lines = Vec::new();
    let (mut llm_total, mut aws_total) = (0i64, 0i64);
    for t in &tenants {
        let llm = usage.by_tenant.get(*t).map_or(0, |s| s.cost_micro_usd);
        let aws_spend = aws.get(*t).copied().unwrap_or(0);
        llm_total = llm_total.checked_add(llm).ok_or_else(overflow)?;
        aws_total = aws_total.checked_add(aws_spend).ok_or_else(overflow)?;
        lines.push(CostLine {
            tenant: (*t).to_owned(),
            cost_center: usage.cost_centers.get(*t).cloned().unwrap_or_default(),
            llm_micro_usd: llm,
            aws_micro_usd: aws_spend,
            total_micro_usd: llm.checked_add(aws_spend).ok_or_else(overflow)?,
        });
    }
    let untagged = aws.get("").copied().unwrap_or(0);
    let mut other = 0i64;
    for (k, v) in aws {
        if !k.is_empty() && !tenants.contains(k.as_str()) {
            other = other.checked_add(*v).ok_or_else(overflow)?;
        }
    }
    Ok(CostReport {
        month: usage.month.clone(),
        unit: "micro_usd",
        lines,
        aws_other_tenants_micro_usd: other,
        aws_untagged_micro_usd: untagged,
        llm_total_micro_usd: llm_total,
        aws_total_micro_usd: aws_total
            .checked_add(untagged)
            .and_then(|t| t.checked_add(other))
            .ok_or_else(overflow)?,
    })
}

impl CostReport {
    pub fn csv(&self) -> String {
        let mut out =
            String::from("month,tenant,cost_center,llm_micro_usd,aws_micro_usd,total_micro_usd\n");
        for l in &self.lines {
            for text in [&self.month, &l.tenant, &l.cost_center] {
                cell(&mut out, text);
                out.push(',');
            }
            let _ = writeln!(
                out,
                "{},{},{}",
                l.llm_micro_usd, l.aws_micro_usd, l.total_micro_usd
            );
        }
        out
    }

    pub fn text(&self) -> String {
        let mut out = format!("what each tenant cost in {} (UTC)\n", self.month);
        let _ = writeln!(
            out,
            "{:<20} {:<14} {:>16} {:>16} {:>16}",
            "tenant", "cost-center", "LLM (ledger)", "AWS (tagged)", "total"
        );
        for l in &self.lines {
            let _ = writeln!(
                out,
                "{:<20} {:<14} {:>16} {:>16} {:>16}",
                l.tenant,
                l.cost_center,
                usd(l.llm_micro_usd),
                usd(l.aws_micro_usd),
                usd(l.total_micro_usd)
            );
        }
        let _ = writeln!(
            out,
            "AWS spend of no tenant here: {} tagged with other tenants, {} untagged (shared)",
            usd(self.aws_other_tenants_micro_usd),
            usd(self.aws_untagged_micro_usd)
        );
        let _ = write!(
            out,
            "total: LLM {}, AWS {}",
            usd(self.llm_total_micro_usd),
            usd(self.aws_total_micro_usd)
        );
        out
    }
}

/// What a purge removed (or, in a dry run, would remove) for one tenant from one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub tenant: String,
    /// `ledger` (a tenant's own ledger, rows older than its retention) or `retained` (an offboarded
    /// tenant's usage past its retention day).
    pub store: &'static str,
    pub rows: i64,
    /// The oldest removed row's UTC day.
    pub oldest: String,
}

/// Removes ledger rows past retention: each tenant's own rows older than its manifest's
/// `retention.usage_days`, and offboarded tenants' retained usage past its day. Daily totals are
/// kept (they hold no per-call data). With `dry_run` every removal is rolled back, so the figures are
/// exactly what a real run would remove now.
pub async fn purge(target: &Target, dry_run: bool) -> Result<Vec<Purged>> {
    let mut out = Vec::new();
    let mut admin = target.admin().await?;
    let rows = admin
        .query(
            "SELECT tenant_id, (spec #>> '{retention_days}')::int FROM control.tenants \
              WHERE status <> 'offboarded' ORDER BY tenant_id",
            &[],
        )
        .await
        .context("reading the registry")?;
    for row in rows {
        let id: String = row.get(0);
        let days: Option<i32> = row.get(1);
        let tenant =
            TenantId::parse(&id).map_err(|e| anyhow::anyhow!("registry tenant `{id}`: {}", e.0))?;
        let days =
            days.with_context(|| format!("tenant `{tenant}` has no retention.usage_days"))?;
        let loc = locate(target, &tenant).await?;
        let mut client = target.connect_admin(&loc.database).await?;
        #[expect(
            clippy::disallowed_methods,
            reason = "retention maintenance runs as the admin role, one tenant at a time"
        )]
        let tx = client.transaction().await?;
        if loc.tier == Tier::Pool {
            fence_to_tenant(&tx, target, &tenant).await?;
        }
        let query = sql::render("tenant-ledger-purge.sql", context! { schema => loc.schema })?;
        let r = tx
            .query_one(&query, &[&tenant.as_str(), &days])
            .await
            .with_context(|| format!("purging the ledger of tenant `{tenant}`"))?;
        let removed: i64 = r.get(0);
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        if removed > 0 {
            out.push(Purged {
                tenant: tenant.to_string(),
                store: "ledger",
                rows: removed,
                oldest: r.get(1),
            });
        }
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "retention maintenance runs as the admin role"
    )]
    let tx = admin.transaction().await?;
    let rows = tx
        .query(
            "WITH removed AS (DELETE FROM control.usage_retained WHERE retain_until < current_date \
                              RETURNING tenant_id, created_at) \
             SELECT tenant_id, count(*)::bigint, \
                    to_char(min(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') \
               FROM removed GROUP BY tenant_id ORDER BY tenant_id",
            &[],
        )
        .await
        .context("purging the retained usage")?;
    for r in rows {
        out.push(Purged {
            tenant: r.get(0),
            store: "retained",
            rows: r.get(1),
            oldest: r.get(2),
        });
    }
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(out)
}
