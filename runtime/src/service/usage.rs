//! The tenant's own usage: recent ledger rows and its totals, and reports over a range of UTC days,
//! read through its `TenantTx`.

use crate::auth::Tenant;
use crate::metering::ledger::{self, Page};
pub use crate::metering::ledger::{Entry, GroupBy, ReportRow, Totals};
use crate::metering::limits;
use crate::service::Budgets;
use crate::service::ServiceError;
use crate::tenancy::{DataPlane, TenantTx};

/// The `limit` most recent ledger rows of `tenant` (1..=1000), its totals, and its budget this month
/// (and its caller's subject's, when it budgets per subject).
pub async fn recent(
    data: &DataPlane,
    tenant: &Tenant,
    limit: i64,
    after: Option<uuid::Uuid>,
) -> Result<(Page, Totals, Budgets), ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    // Sent together: the connection pipelines them (one wait, not one per query).
    let (page, budget) = tokio::try_join!(
        ledger::recent(&tx, limit.clamp(1, 1000), after),
        limits::budgets(&tx, tenant)
    )?;
    let Some((page, totals)) = page else {
        return Err(ServiceError::NotFound(format!(
            "`after`: no ledger row `{}` in this tenant",
            after.map(|a| a.to_string()).unwrap_or_default()
        )));
    };
    tx.commit().await?;
    Ok((page, totals, budget))
}

/// `tenant`'s budget this month (and its caller's subject's, when it budgets per subject).
pub async fn budgets(data: &DataPlane, tenant: &Tenant) -> Result<Budgets, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let b = limits::budgets(&tx, tenant).await?;
    tx.commit().await?;
    Ok(b)
}

/// The longest range one report covers.
pub const MAX_REPORT_DAYS: i64 = 366;

/// A range of whole UTC days, both ends included, as `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DayRange {
    pub from: String,
    pub to: String,
}

/// A civil date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Day {
    year: i64,
    month: i64,
    day: i64,
}

impl Day {
    fn days_in_month(year: i64, month: i64) -> i64 {
        match month {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// `YYYY-MM-DD`, or `YYYY-MM` (its first day, or with `last` its last).
    fn parse(text: &str, last: bool) -> Option<Day> {
        let mut parts = text.split('-');
        let year: i64 = parts.next().filter(|p| p.len() == 4)?.parse().ok()?;
        let month: i64 = parts.next().filter(|p| p.len() == 2)?.parse().ok()?;
        let day = match parts.next() {
            Some(p) if p.len() == 2 => Some(p.parse::<i64>().ok()?),
            Some(_) => return None,
            None => None,
        };
        if parts.next().is_some() || !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
            return None;
        }
        let max = Self::days_in_month(year, month);
        let day = day.unwrap_or(if last { max } else { 1 });
        (1..=max).contains(&day).then_some(Day { year, month, day })
    }

    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    fn ordinal(self) -> i64 {
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (self.month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn text(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl DayRange {
    /// The range `from`..=`to` (`YYYY-MM-DD`, or a whole month as `YYYY-MM`); by default from the
    /// first of this month (UTC) to `today`. Refused, with what to send instead, when a date is not
    /// one, the range is reversed, or it spans more than `MAX_REPORT_DAYS`.
    pub fn parse(from: Option<&str>, to: Option<&str>, today: &str) -> Result<Self, String> {
        let bad = |name: &str, value: &str| {
            format!("`{name}` is `{value}`, not a date: use YYYY-MM-DD or YYYY-MM (UTC)")
        };
        let today_day =
            Day::parse(today, false).ok_or_else(|| format!("today is not a date: {today}"))?;
        let to_day = match to {
            Some(t) => Day::parse(t, true).ok_or_else(|| bad("to", t))?,
            None => today_day,
        };
        let from_day = match from {
            Some(f) => Day::parse(f, false).ok_or_else(|| bad("from", f))?,
            None => Day {
                day: 1,
                ..to_day.min(today_day)
            },
        };
        if from_day > to_day {
            return Err(format!(
                "`from` ({}) is after `to` ({}): send the earlier day first",
                from_day.text(),
                to_day.text()
            ));
        }
        let days = to_day.ordinal() - from_day.ordinal() + 1;
        if days > MAX_REPORT_DAYS {
            return Err(format!(
                "the range covers {days} days, more than {MAX_REPORT_DAYS}: ask for it in parts"
            ));
        }
        Ok(DayRange {
            from: from_day.text(),
            to: to_day.text(),
        })
    }
}

/// A usage report: its groups, their totals (the exact sum of the groups) and this month's budget.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub range: DayRange,
    pub group_by: GroupBy,
    pub rows: Vec<ReportRow>,
    pub totals: Totals,
}

/// The exact sum of `rows` (an overflow is an error, never a wrap).
fn totals_of(rows: &[ReportRow]) -> Result<Totals, ServiceError> {
    rows.iter()
        .try_fold(Totals::default(), |t, r| t.checked_add(&r.into()))
        .ok_or_else(|| ServiceError::internal("a usage total overflowed 64 bits"))
}

/// `tenant`'s usage over `range`, grouped by `by`, with its budget this month, in one snapshot.
pub async fn report(
    data: &DataPlane,
    tenant: &Tenant,
    range: DayRange,
    by: GroupBy,
) -> Result<(Report, Budgets), ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let (rows, budget) = tokio::try_join!(
        ledger::report(&tx, &range.from, &range.to, by),
        limits::budgets(&tx, tenant)
    )?;
    tx.commit().await?;
    let totals = totals_of(&rows)?;
    Ok((
        Report {
            range,
            group_by: by,
            rows,
            totals,
        },
        budget,
    ))
}

/// The caller's own usage over `range` by model (its subject's rows only), with its own budget
/// this month when the tenant budgets per subject.
pub async fn own(
    data: &DataPlane,
    tenant: &Tenant,
    range: DayRange,
) -> Result<(Report, Option<crate::service::BudgetStatus>), ServiceError> {
    let subject = tenant.principal().subject.clone();
    let tx = TenantTx::begin(data, tenant).await?;
    let (rows, budget) = tokio::try_join!(
        ledger::subject_by_model(&tx, &subject, &range.from, &range.to),
        limits::budgets(&tx, tenant)
    )?;
    tx.commit().await?;
    let totals = totals_of(&rows)?;
    Ok((
        Report {
            range,
            group_by: GroupBy::Model,
            rows,
            totals,
        },
        budget.subject,
    ))
}

#[cfg(test)]
mod tests {
    use super::DayRange;

    fn range(from: &str, to: &str) -> DayRange {
        DayRange {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn ranges_take_days_or_whole_months_and_default_to_this_month() {
        let today = "2026-12-15";
        assert_eq!(
            DayRange::parse(None, None, today),
            Ok(range("2026-12-01", "2026-12-15"))
        );
        assert_eq!(
            DayRange::parse(Some("2024-02"), Some("2024-02"), today),
            Ok(range("2024-02-01", "2024-02-29"))
        );
        assert_eq!(
            DayRange::parse(Some("2025-02"), Some("2025-03-03"), today),
            Ok(range("2025-02-01", "2025-03-03"))
        );
        assert_eq!(
            DayRange::parse(Some("2025-01-01"), Some("2025-12-31"), today),
            Ok(range("2025-01-01", "2025-12-31"))
        );
        assert_eq!(
            DayRange::parse(None, Some("2026-10"), today),
            Ok(range("2026-10-01", "2026-10-31"))
        );
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let today = "2026-12-15";
        for (from, to, says) in [
            (
                "2026-02-30",
                "2026-03-01",
                "`from` is `2026-02-30`, not a date",
            ),
            ("2026-13", "2026-12", "`from` is `2026-13`"),
            ("26-01-01", "2026-12", "not a date"),
            ("2026-1-1", "2026-12", "not a date"),
            ("2026-12-02", "2026-12-01", "is after `to`"),
            ("2024-01-01", "2025-01-01", "367 days"),
            ("2026-01-01", "2026-01-01T00:00", "`to` is"),
        ] {
            let e = DayRange::parse(Some(from), Some(to), today).unwrap_err();
            assert!(e.contains(says), "{from}..{to}: {e}");
        }
        assert!(DayRange::parse(Some("2025-01-01"), Some("2025-12-31"), today).is_ok());
    }
}
