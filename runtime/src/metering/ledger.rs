//! The usage ledger: one row per model call, written through the tenant's own `TenantTx`.
//!
//! Rows are append-only for the tenant role (it holds SELECT and INSERT only). Money is integer
//! micro-USD priced against a named price book version. Every read also filters on the handle's own
//! `tenant_id`: redundant with the tier's fence, and it lets every tier use the same indexes.

use serde::Serialize;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::db::DataError;
use crate::domain::{MicroUsd, ModelId, ProviderId};
use crate::tenancy::{Admission, DataPlane, Lane, TenantTx};

/// A row to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The row's id, chosen by the caller (a streamed reply names it before the row exists).
    pub id: Uuid,
    pub request_id: Uuid,
    pub subject: String,
    pub provider: ProviderId,
    pub model: ModelId,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: MicroUsd,
    pub price_book_version: String,
    pub outcome: Outcome,
    /// The token counts were made here (the provider reported none).
    pub usage_estimated: bool,
    /// Parts of `input_tokens` read from and written to the provider's prompt cache.
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    /// Part of `output_tokens` that was reasoning.
    pub reasoning_tokens: u64,
    /// The provider's id for the call, its usage object as sent (JSON) and its own cost.
    pub provider_request_id: Option<String>,
    pub provider_usage: Option<String>,
    pub provider_cost: Option<MicroUsd>,
    /// The tenant's cost-allocation tags from its manifest, at the time of the call (a JSON object).
    pub cost_tags: String,
    /// When the row was made: its month's partition, and with `id` its key, so a row written again
    /// (a batch retried after its COMMIT was sent) is refused, never counted twice.
    pub created_at: std::time::SystemTime,
}

/// How a metered call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Complete,
    /// The client went away mid-stream; the tokens produced until then are charged.
    Cancelled,
    /// The provider broke the stream off; the tokens produced until then are charged.
    UpstreamCut,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Cancelled => "cancelled",
            Outcome::UpstreamCut => "upstream_cut",
        }
    }
}

/// A row as `/v1/usage` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: Uuid,
    pub tenant_id: String,
    pub request_id: Uuid,
    pub subject: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
    pub price_book_version: String,
    pub outcome: String,
    pub usage_estimated: bool,
    pub created_at: String,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub provider_request_id: Option<String>,
    pub provider_usage: Option<serde_json::Value>,
    pub provider_cost_micro_usd: Option<i64>,
    /// The provider's cost and ours differ (finance looks at these rows).
    pub cost_differs: bool,
    pub cost_tags: serde_json::Value,
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Many rows in one statement: one array per column (one plan whatever the batch size).
const APPEND: &str = "SELECT ledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                      $14, $15, $16, $17, $18, $19, $20, $21)";

/// Appends `entries`, all of `tenant`, in one statement committed durably on its own
/// (`ledger_append` through `TenantTx::call_once`: one message, one reply), under `admission`, which
/// the caller keeps until this returns. All rows or none.
pub async fn record_once(
    data: &DataPlane,
    tenant: &Tenant,
    admission: &Admission,
    lane: Lane,
    entries: &[&NewEntry],
) -> Result<(), DataError> {
    let column = |f: fn(&NewEntry) -> &str| entries.iter().map(|e| f(e)).collect::<Vec<&str>>();
    let ids: Vec<Uuid> = entries.iter().map(|e| e.id).collect();
    let request_ids: Vec<Uuid> = entries.iter().map(|e| e.request_id).collect();
    let subjects = column(|e| &e.subject);
    let providers = column(|e| e.provider.as_str());
    let models = column(|e| e.model.as_str());
    let input: Vec<i64> = entries.iter().map(|e| tokens(e.input_tokens)).collect();
    let output: Vec<i64> = entries.iter().map(|e| tokens(e.output_tokens)).collect();
    let cost: Vec<i64> = entries.iter().map(|e| e.cost.0).collect();
    let versions = column(|e| &e.price_book_version);
    let outcomes = column(|e| e.outcome.as_str());
    let estimated: Vec<bool> = entries.iter().map(|e| e.usage_estimated).collect();
    let cached: Vec<i64> = entries
        .iter()
        .map(|e| tokens(e.cached_input_tokens))
        .collect();
    let cache_write: Vec<i64> = entries
        .iter()
        .map(|e| tokens(e.cache_write_tokens))
        .collect();
    let reasoning: Vec<i64> = entries.iter().map(|e| tokens(e.reasoning_tokens)).collect();
    let provider_ids: Vec<Option<&str>> = entries
        .iter()
        .map(|e| e.provider_request_id.as_deref())
        .collect();
    let provider_usage: Vec<Option<&str>> = entries
        .iter()
        .map(|e| e.provider_usage.as_deref())
        .collect();
    let provider_cost: Vec<Option<i64>> = entries
        .iter()
        .map(|e| e.provider_cost.map(|c| c.0))
        .collect();
    let tags = column(|e| &e.cost_tags);
    let created: Vec<std::time::SystemTime> = entries.iter().map(|e| e.created_at).collect();
    TenantTx::call_once(
        data,
        tenant,
        admission,
        lane,
        APPEND,
        &[
            &ids,
            &request_ids,
            &subjects,
            &providers,
            &models,
            &input,
            &output,
            &cost,
            &versions,
            &outcomes,
            &estimated,
            &cached,
            &cache_write,
            &reasoning,
            &provider_ids,
            &provider_usage,
            &provider_cost,
            &tags,
            &created,
        ],
    )
    .await?;
    Ok(())
}

/// The columns of a ledger row as `Entry` reads them.
macro_rules! entry_columns {
    () => {
        "id, tenant_id, request_id, subject, provider, model, input_tokens, output_tokens, \
         cost_micro_usd, price_book_version, outcome, usage_estimated, \
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         cached_input_tokens, cache_write_tokens, reasoning_tokens, provider_request_id, \
         provider_usage, provider_cost_micro_usd, cost_differs, cost_tags"
    };
}

const RECENT: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM usage_ledger WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $2"
);

/// The page after the row `$3` in the same order (newest first, ties by id).
const RECENT_AFTER: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM usage_ledger l WHERE tenant_id = $1 \
       AND EXISTS (SELECT 1 FROM usage_ledger c WHERE c.tenant_id = $1 AND c.id = $3 \
                    AND (l.created_at < c.created_at OR (l.created_at = c.created_at AND l.id > c.id))) \
     ORDER BY created_at DESC, id LIMIT $2"
);

/// Whether the row `$2` is the tenant's.
const ROW_EXISTS: &str = "SELECT 1 FROM usage_ledger WHERE tenant_id = $1 AND id = $2";

const ALL_TIME_TOTALS: &str = "SELECT coalesce(sum(requests), 0)::bigint, coalesce(sum(input_tokens), 0)::bigint, \
                                      coalesce(sum(output_tokens), 0)::bigint, coalesce(sum(cost_micro_usd), 0)::bigint \
                                 FROM usage_daily WHERE tenant_id = $1";

/// One page of the tenant's ledger, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Whether rows follow this page (ask for them with `after` = its last id).
    pub has_more: bool,
}

/// Up to `limit` rows of the tenant in `tx`, newest first: the newest, or those after the row
/// `after` (`None` when `after` is no row of this tenant: whether another tenant has one is never
/// told); and the all-time totals.
pub async fn recent(
    tx: &TenantTx,
    limit: i64,
    after: Option<uuid::Uuid>,
) -> Result<Option<(Page, Totals)>, DataError> {
    let tenant = tx.tenant().as_str();
    let fetch = limit.saturating_add(1);
    // The rows (one more than asked, to know whether more follow), the cursor's own row, and the
    // totals from the daily rows the ledger's trigger keeps (one row per day, never a scan of the
    // ledger), sent together: the connection pipelines them.
    let totals_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tenant];
    let (rows, totals, found) = match after {
        None => {
            let page_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenant, &fetch];
            let (rows, totals) = tokio::try_join!(
                tx.query(RECENT, &page_params),
                tx.query(ALL_TIME_TOTALS, &totals_params)
            )?;
            (rows, totals, true)
        }
        Some(cursor) => {
            let page_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&tenant, &fetch, &cursor];
            let exists_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenant, &cursor];
            let (rows, totals, found) = tokio::try_join!(
                tx.query(RECENT_AFTER, &page_params),
                tx.query(ALL_TIME_TOTALS, &totals_params),
                tx.query(ROW_EXISTS, &exists_params)
            )?;
            (rows, totals, !found.is_empty())
        }
    };
    if !found {
        return Ok(None);
    }
    let has_more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    let rows = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
    let entries = rows
        .iter()
        .map(|r| Entry {
            id: r.get(0),
            tenant_id: r.get(1),
            request_id: r.get(2),
            subject: r.get(3),
            provider: r.get(4),
            model: r.get(5),
            input_tokens: r.get(6),
            output_tokens: r.get(7),
            cost_micro_usd: r.get(8),
            price_book_version: r.get(9),
            outcome: r.get(10),
            usage_estimated: r.get(11),
            created_at: r.get(12),
            cached_input_tokens: r.get(13),
            cache_write_tokens: r.get(14),
            reasoning_tokens: r.get(15),
            provider_request_id: r.get(16),
            provider_usage: r.get(17),
            provider_cost_micro_usd: r.get(18),
            cost_differs: r.get(19),
            cost_tags: r.get(20),
        })
        .collect();
    let t = totals
        .first()
        .map(|r| Totals {
            requests: r.get(0),
            input_tokens: r.get(1),
            output_tokens: r.get(2),
            cost_micro_usd: r.get(3),
        })
        .unwrap_or_default();
    Ok(Some((Page { entries, has_more }, t)))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}

impl Totals {
    /// `self + other`, field by field; `None` if a sum overflows 64 bits (never a wrap).
    pub fn checked_add(&self, other: &Totals) -> Option<Totals> {
        Some(Totals {
            requests: self.requests.checked_add(other.requests)?,
            input_tokens: self.input_tokens.checked_add(other.input_tokens)?,
            output_tokens: self.output_tokens.checked_add(other.output_tokens)?,
            cost_micro_usd: self.cost_micro_usd.checked_add(other.cost_micro_usd)?,
        })
    }
}

impl From<&ReportRow> for Totals {
    fn from(r: &ReportRow) -> Self {
        Totals {
            requests: r.requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_micro_usd: r.cost_micro_usd,
        }
    }
}

/// How a usage report groups the tenant's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Day,
    Model,
    Subject,
}

/// One group of a usage report; the key fields its grouping names are set, the others absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}

/// The tenant's usage on the UTC days `from..=to` (`YYYY-MM-DD`, already checked), grouped. By day and
/// by model it reads the per-day totals the ledger's trigger keeps; by subject it sums the ledger's
/// rows of those days in the database (integer sums, one row per group, ordered by the group's key).
pub async fn report(
    tx: &TenantTx,
    from: &str,
    to: &str,
    by: GroupBy,
) -> Result<Vec<ReportRow>, DataError> {
    let sql = match by {
        GroupBy::Day => {
            "SELECT to_char(day, 'YYYY-MM-DD'), NULL::text, requests, input_tokens, output_tokens, \
                    cost_micro_usd \
               FROM usage_daily \
              WHERE tenant_id = $1 AND day >= CAST($2::text AS date) AND day <= CAST($3::text AS date) \
              ORDER BY day"
        }
        GroupBy::Model => {
            // From the per-day totals by model (tenant migration 0007), not the ledger's rows.
            "SELECT provider, model, sum(requests)::bigint, sum(input_tokens)::bigint, \
                    sum(output_tokens)::bigint, sum(cost_micro_usd)::bigint \
               FROM usage_daily_models \
              WHERE tenant_id = $1 AND day >= CAST($2::text AS date) AND day <= CAST($3::text AS date) \
              GROUP BY provider, model ORDER BY provider COLLATE \"C\", model COLLATE \"C\""
        }
        GroupBy::Subject => {
            "SELECT subject, NULL::text, count(*)::bigint, coalesce(sum(input_tokens), 0)::bigint, \
                    coalesce(sum(output_tokens), 0)::bigint, coalesce(sum(cost_micro_usd), 0)::bigint \
               FROM usage_ledger \
              WHERE tenant_id = $1 \
                AND created_at >= CAST($2::text AS date)::timestamp AT TIME ZONE 'UTC' \
                AND created_at < (CAST($3::text AS date) + 1)::timestamp AT TIME ZONE 'UTC' \
              GROUP BY subject ORDER BY subject COLLATE \"C\""
        }
    };
    let rows = tx.query(sql, &[&tx.tenant().as_str(), &from, &to]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (a, b): (String, Option<String>) = (r.get(0), r.get(1));
            let mut row = ReportRow {
                requests: r.get(2),
                input_tokens: r.get(3),
                output_tokens: r.get(4),
                cost_micro_usd: r.get(5),
                ..ReportRow::default()
            };
            match by {
                GroupBy::Day => row.day = Some(a),
                GroupBy::Model => (row.provider, row.model) = (Some(a), b),
                GroupBy::Subject => row.subject = Some(a),
            }
            row
        })
        .collect())
}

/// One subject's usage on the UTC days `from..=to`, by model (the caller's own: `GET /v1/me/usage`),
/// summed in the database over the ledger's rows (the index on tenant, subject and time).
pub async fn subject_by_model(
    tx: &TenantTx,
    subject: &str,
    from: &str,
    to: &str,
) -> Result<Vec<ReportRow>, DataError> {
    let rows = tx
        .query(
            "SELECT provider, model, count(*)::bigint, coalesce(sum(input_tokens), 0)::bigint, \
                    coalesce(sum(output_tokens), 0)::bigint, coalesce(sum(cost_micro_usd), 0)::bigint \
               FROM usage_ledger \
              WHERE tenant_id = $1 AND subject = $4 \
                AND created_at >= CAST($2::text AS date)::timestamp AT TIME ZONE 'UTC' \
                AND created_at < (CAST($3::text AS date) + 1)::timestamp AT TIME ZONE 'UTC' \
              GROUP BY provider, model ORDER BY provider COLLATE \"C\", model COLLATE \"C\"",
            &[&tx.tenant().as_str(), &from, &to, &subject],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ReportRow {
            provider: Some(r.get(0)),
            model: Some(r.get(1)),
            requests: r.get(2),
            input_tokens: r.get(3),
            output_tokens: r.get(4),
            cost_micro_usd: r.get(5),
            ..ReportRow::default()
        })
        .collect())
}
