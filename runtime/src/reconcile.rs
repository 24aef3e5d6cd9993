//! Reconciling a tenant's ledger with its provider's cost export: the export's costs per UTC day
//! and model (OpenAI's and Anthropic's CSV formats), and the variance per day and model against the
//! ledger's own figures, with a tolerance. Used by `tenantctl usage reconcile` and by the platform
//! route that runs a reconciliation. Integers throughout: amounts are parsed digit by digit.
//!
//! This module does no IO and knows no HTTP or database.

use std::collections::BTreeMap;

use serde::Serialize;

/// One tenant's ledger for one day, provider and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    pub day: String,
    pub provider: String,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}

/// A month's first day (`YYYY-MM` -> `YYYY-MM-01`), or `None` when `month` is no month (UTC,
/// years 1970 to 9999).
pub fn month_first_day(month: &str) -> Option<String> {
    let ok = month.len() == 7
        && month.as_bytes()[4] == b'-'
        && month[..4]
            .parse::<u32>()
            .is_ok_and(|y| (1970..=9999).contains(&y))
        && month[5..]
            .parse::<u32>()
            .is_ok_and(|m| (1..=12).contains(&m));
    ok.then(|| format!("{month}-01"))
}

/// Decimal USD text (`12.34`, `0.000125`, `$1,234.5`) as micro-USD, exactly; a seventh decimal and
/// beyond rounds half up (providers report costs to more places than they bill).
pub fn usd_to_micro(text: &str) -> Option<i64> {
    let t = text.trim().trim_start_matches('$').replace(',', "");
    crate::pricing::usd_to_micro(&t, crate::pricing::Rounding::HalfUp)
}

/// A provider's model name as the ledger has it: a dated snapshot suffix (`-2024-07-18`,
/// `-20251001`) removed.
pub fn base_model(model: &str) -> String {
    let m = model.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if m.len() > 11 {
        let (head, tail) = m.split_at(m.len() - 11);
        let t = tail.as_bytes();
        if t[0] == b'-'
            && digits(&tail[1..5])
            && t[5] == b'-'
            && digits(&tail[6..8])
            && t[8] == b'-'
            && digits(&tail[9..])
        {
            return head.to_owned();
        }
    }
    if m.len() > 9 {
        let (head, tail) = m.split_at(m.len() - 9);
        if tail.starts_with('-') && digits(&tail[1..]) {
            return head.to_owned();
        }
    }
    m.to_owned()
}

/// An invoice's cost in micro-USD per (UTC day, model).
pub type InvoiceCosts = BTreeMap<(String, String), i64>;

/// The invoice's cost per (day, model), from an OpenAI-style or Anthropic-style CSV export.
///
/// OpenAI (the organization costs export): `start_time` (Unix seconds or `YYYY-MM-DD...`),
/// `line_item` (`<model>, <unit class>`), `amount_value` (USD). Anthropic (the console's cost
/// export): `usage_date_utc`, `model`, `cost_usd`. Other columns are ignored; a file with neither
/// set of columns is refused, naming both.
pub fn parse_invoice(text: &str, source: &str) -> Result<(String, InvoiceCosts), String> {
    let mut rows = parse_csv(text).into_iter();
    let header = rows.next().ok_or_else(|| format!("{source} is empty"))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (kind, day_col, model_col, cost_col) = if let (Some(d), Some(m), Some(c)) =
        (col("start_time"), col("line_item"), col("amount_value"))
    {
        ("openai", d, m, c)
    } else if let (Some(d), Some(m), Some(c)) =
        (col("usage_date_utc"), col("model"), col("cost_usd"))
    {
        ("anthropic", d, m, c)
    } else {
        return Err(format!(
            "{source} is not a recognised invoice export: its header is `{}`\n  fix: export costs from \
             the provider's console: OpenAI's has `start_time,line_item,amount_value`, Anthropic's \
             `usage_date_utc,model,cost_usd`",
            header.join(",")
        ));
    };
    let mut out: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (i, row) in rows.enumerate() {
        let line = i + 2;
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let field = |c: usize| row.get(c).map(String::as_str).unwrap_or_default();
        let day = invoice_day(field(day_col)).ok_or_else(|| {
            format!(
                "{source} line {line}: `{}` is not a day (Unix seconds or YYYY-MM-DD)",
                crate::domain::printable(field(day_col))
            )
        })?;
        let model = match kind {
            "openai" => field(model_col)
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned(),
            _ => field(model_col).to_owned(),
        };
        let cost = usd_to_micro(field(cost_col)).ok_or_else(|| {
            format!(
                "{source} line {line}: `{}` is not an amount in USD",
                crate::domain::printable(field(cost_col))
            )
        })?;
        let entry = out.entry((day, base_model(&model))).or_default();
        *entry = entry
            .checked_add(cost)
            .ok_or("an invoice total overflowed 64 bits")?;
    }
    Ok((kind.to_owned(), out))
}

fn invoice_day(text: &str) -> Option<String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        let mut day =
            crate::domain::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        day.truncate(10);
        return Some(day);
    }
    let day = t.get(..10)?;
    let b = day.as_bytes();
    (b[4] == b'-' && b[7] == b'-' && day.replace('-', "").bytes().all(|c| c.is_ascii_digit()))
        .then(|| day.to_owned())
}

/// A small RFC 4180 reader: quoted fields, doubled quotes, CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// One day and model of a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variance {
    pub day: String,
    pub model: String,
    pub requests: i64,
    pub ledger_micro_usd: i64,
    pub invoice_micro_usd: i64,
    /// Invoice minus ledger.
    pub variance_micro_usd: i64,
    /// The largest variance accepted for this line.
    pub tolerance_micro_usd: i64,
    /// `ok`, `over_tolerance`, `not_in_ledger` or `not_on_invoice`.
    pub status: &'static str,
}

/// The ledger (`ledger`, one tenant's month, for one provider) against the invoice, per day and
/// model. A line is within tolerance when |invoice - ledger| is at most its number of calls (the
/// ledger rounds each call up to a whole micro-USD) plus `tolerance` micro-USD.
pub fn reconcile(
    ledger: &[DayUsage],
    provider: &str,
    invoice: &BTreeMap<(String, String), i64>,
    tolerance: i64,
) -> Vec<Variance> {
    let mut ours: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for d in ledger.iter().filter(|d| d.provider == provider) {
        let e = ours.entry((d.day.clone(), d.model.clone())).or_default();
        e.0 = e.0.saturating_add(d.requests);
        e.1 = e.1.saturating_add(d.cost_micro_usd);
    }
    let keys: std::collections::BTreeSet<&(String, String)> =
        ours.keys().chain(invoice.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let (requests, ledger_cost) = ours.get(key).copied().unwrap_or_default();
            let invoice_cost = invoice.get(key).copied();
            let variance = invoice_cost.unwrap_or(0).saturating_sub(ledger_cost);
            let allowed = requests.saturating_add(tolerance.max(0));
            let status = match (ours.contains_key(key), invoice_cost) {
                (false, Some(_)) => "not_in_ledger",
                (true, None) if ledger_cost > allowed => "not_on_invoice",
                _ if variance.abs() > allowed => "over_tolerance",
                _ => "ok",
            };
            Variance {
                day: key.0.clone(),
                model: key.1.clone(),
                requests,
                ledger_micro_usd: ledger_cost,
                invoice_micro_usd: invoice_cost.unwrap_or(0),
                variance_micro_usd: variance,
                tolerance_micro_usd: allowed,
                status,
            }
        })
        .collect()
}
