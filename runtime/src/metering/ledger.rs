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
use crate::tenancy::{Admission, DataPlane, TenantTx};

/// A row to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// The row's id, chosen by the caller (a streamed reply names it before the row exists).
    pub id: Uuid,
    pub request_id: Uuid,
    pub subject: &'a str,
    pub provider: ProviderId,
    pub model: &'a ModelId,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: MicroUsd,
    pub price_book_version: &'a str,
    pub outcome: Outcome,
    /// The token counts were made here (the provider reported none).
    pub usage_estimated: bool,
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
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const INSERT: &str = "INSERT INTO usage_ledger (id, tenant_id, request_id, subject, provider, model, \
             input_tokens, output_tokens, cost_micro_usd, price_book_version, outcome, usage_estimated) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// The INSERT's parameters for `entry`: `names` are the tenant, provider, model and outcome as
/// text, `tokens` the counts as the table's integers.
fn params<'a>(
    entry: &'a NewEntry<'_>,
    names: &'a [&'a str; 4],
    tokens: &'a [i64; 2],
) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 12] {
    [
        &entry.id,
        &names[0],
        &entry.request_id,
        &entry.subject,
        &names[1],
        &names[2],
        &tokens[0],
        &tokens[1],
        &entry.cost.0,
        &entry.price_book_version,
        &names[3],
        &entry.usage_estimated,
    ]
}

fn names<'a>(entry: &'a NewEntry<'_>, tenant: &'a str) -> [&'a str; 4] {
    [
        tenant,
        entry.provider.as_str(),
        entry.model.as_str(),
        entry.outcome.as_str(),
    ]
}

/// Appends one row in `tx`; returns its id.
pub async fn record(tx: &TenantTx, entry: &NewEntry<'_>) -> Result<Uuid, DataError> {
    let counts = [tokens(entry.input_tokens), tokens(entry.output_tokens)];
    let names = names(entry, tx.tenant().as_str());
    tx.execute(INSERT, &params(entry, &names, &counts)).await?;
    Ok(entry.id)
}

/// Appends one row in a transaction of its own, committed durably in one round trip (the model
/// call's path: `TenantTx::execute_once`); returns its id.
pub async fn record_once(
    data: &DataPlane,
    tenant: &Tenant,
    admission: Admission,
    entry: &NewEntry<'_>,
) -> Result<Uuid, DataError> {
    let counts = [tokens(entry.input_tokens), tokens(entry.output_tokens)];
    let names = names(entry, tenant.id().as_str());
    TenantTx::execute_once(
        data,
        tenant,
        admission,
        INSERT,
        &params(entry, &names, &counts),
    )
    .await?;
    Ok(entry.id)
}

/// The newest `limit` rows and the all-time totals of the tenant in `tx`.
pub async fn recent(tx: &TenantTx, limit: i64) -> Result<(Vec<Entry>, Totals), DataError> {
    let rows = tx
        .query(
            "SELECT id, tenant_id, request_id, subject, provider, model, input_tokens, \
                    output_tokens, cost_micro_usd, price_book_version, outcome, usage_estimated, \
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
               FROM usage_ledger WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $2",
            &[&tx.tenant().as_str(), &limit],
        )
        .await?;
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
        })
        .collect();
    // From the daily totals the ledger's trigger keeps: one row per day, never a scan of the ledger.
    let totals = tx
        .query(
            "SELECT coalesce(sum(requests), 0)::bigint, coalesce(sum(input_tokens), 0)::bigint, \
                    coalesce(sum(output_tokens), 0)::bigint, coalesce(sum(cost_micro_usd), 0)::bigint \
               FROM usage_daily WHERE tenant_id = $1",
            &[&tx.tenant().as_str()],
        )
        .await?;
    let t = totals
        .first()
        .map(|r| Totals {
            requests: r.get(0),
            input_tokens: r.get(1),
            output_tokens: r.get(2),
            cost_micro_usd: r.get(3),
        })
        .unwrap_or_default();
    Ok((entries, t))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}
