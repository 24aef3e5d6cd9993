//! The audit trail: append-only, hash-chained per tenant (`control.audit_events`).
//!
//! Every privileged action appends its event in the transaction that makes the change, so an event
//! that cannot be written rolls the action back (security case 60). Each event's `hash` is the
//! SHA-256 of its canonical encoding, which includes the previous event's hash (`prev_hash`; 64
//! zeros for a tenant's first): an edit, insertion or removal anywhere but the end breaks the chain
//! at that row, and `verify` names it (case 61). The canonical encoding is the event as a JSON object
//! without `hash`, keys sorted, no whitespace: exactly what `jq -cS 'del(.hash)'` prints for a line
//! of `export`, so an auditor can check an export with `jq` and `sha256sum` alone (docs/security.md).
//! Events carry who, which tenant, what, on what, the outcome and the request id, and never a
//! secret or a prompt (case 62): callers pass names, versions and hashes, not values.
//!
//! This module owns the audit SQL; it must not know HTTP or the CLI.

use serde::Serialize;
use tokio_postgres::GenericClient;

/// The `prev_hash` of a tenant's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The encoding's version, part of every hash.
pub const FORMAT: i64 = 1;

/// An event to append.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The tenant whose chain it joins.
    pub tenant: &'a str,
    /// Who acted (`tenantctl:<user>`, or a token's `issuer/subject`).
    pub actor: &'a str,
    /// What was done (`apply`, `move`, `offboard`, `suspend`, `secret.put`, ...).
    pub action: &'a str,
    /// What it was done to (`tenant/acme`, `secret/tenants/acme/providers/openai`).
    pub target: &'a str,
    /// `succeeded`, `failed`, `denied`, or a step's result (`created`, `stack_deleted`): lowercase
    /// words.
    pub outcome: &'a str,
    /// The request's id, when an HTTP request did it.
    pub request_id: Option<uuid::Uuid>,
    /// What else a reader needs (a spec hash, counts, a reason): never a secret or a prompt.
    pub detail: &'a str,
}

/// A stored event, as `export` writes it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    pub v: i64,
    pub tenant_id: String,
    pub seq: i64,
    /// UTC, microseconds: `2026-12-01T22:47:49.123456Z`.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// Empty when no HTTP request did it.
    pub request_id: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Text as it is recorded: DEL (U+007F) becomes U+FFFD, the one character `jq` and `serde_json`
/// escape differently, so the canonical encoding is the same whoever prints it.
fn clean(text: &str) -> String {
    text.replace('\u{7f}', "\u{fffd}")
}

impl Record {
    /// The canonical encoding: every field but `hash`, keys sorted, no whitespace.
    pub fn canonical(&self) -> String {
        let value = serde_json::json!({
            "action": self.action,
            "actor": self.actor,
            "at": self.at,
            "detail": self.detail,
            "outcome": self.outcome,
            "prev_hash": self.prev_hash,
            "request_id": self.request_id,
            "seq": self.seq,
            "target": self.target,
            "tenant_id": self.tenant_id,
            "v": self.v,
        });
        // Sorted whatever map order this build's serde_json keeps.
        let map = value.as_object().cloned().unwrap_or_default();
        let sorted: std::collections::BTreeMap<String, serde_json::Value> =
            map.into_iter().collect();
        serde_json::to_string(&sorted).unwrap_or_default()
    }

    /// The hash its fields give (what `hash` must be).
    pub fn computed_hash(&self) -> String {
        hex(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.canonical().as_bytes())
                .as_ref(),
        )
    }

    /// `event` as the link after the chain's head (`prev_seq` and `prev_hash`, both `None` for an
    /// empty chain), written at `at` (UTC, microseconds).
    pub fn link(
        event: &Event<'_>,
        prev_seq: Option<i64>,
        prev_hash: Option<String>,
        at: String,
    ) -> Record {
        let mut record = Record {
            v: FORMAT,
            tenant_id: clean(event.tenant),
            seq: prev_seq.unwrap_or(0) + 1,
            at,
            actor: clean(event.actor),
            action: clean(event.action),
            target: clean(event.target),
            outcome: clean(event.outcome),
            request_id: event.request_id.map(|r| r.to_string()).unwrap_or_default(),
            detail: clean(event.detail),
            prev_hash: prev_hash.unwrap_or_else(|| GENESIS.to_owned()),
            hash: String::new(),
        };
        record.hash = record.computed_hash();
        record
    }

    /// The twelve parameters of `INSERT` (and `tenant_chain::INSERT`), in their order.
    pub fn insert_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            &self.tenant_id,
            &self.seq,
            &self.at,
            &self.actor,
            &self.action,
            &self.target,
            &self.outcome,
            &self.request_id,
            &self.detail,
            &self.prev_hash,
            &self.hash,
            &self.v,
        ]
    }

    /// A row of `CHAIN`'s (or `tenant_chain::PAGE`'s) columns.
    pub fn from_row(r: &tokio_postgres::Row) -> Record {
        Record {
            v: r.get(0),
            tenant_id: r.get(1),
            seq: r.get(2),
            at: r.get(3),
            actor: r.get(4),
            action: r.get(5),
            target: r.get(6),
            outcome: r.get(7),
            request_id: r.get(8),
            detail: r.get(9),
            prev_hash: r.get(10),
            hash: r.get(11),
        }
    }

    /// The line `export` writes: every field, keys sorted.
    pub fn export_line(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        let map = value.as_object().cloned().unwrap_or_default();
        let sorted: std::collections::BTreeMap<String, serde_json::Value> =
            map.into_iter().collect();
        serde_json::to_string(&sorted).unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('tenantctl.audit:' || $1, 0))";
/// The chain's head (after the lock, so a concurrent append's commit is seen) and the time, in one
/// round trip.
const HEAD: &str = "SELECT h.seq, h.hash, to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                           'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                      FROM (SELECT 1) one \
                      LEFT JOIN LATERAL (SELECT seq, hash FROM control.audit_events \
                                          WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1) h ON true";
const INSERT: &str = "INSERT INTO control.audit_events \
                      (tenant_id, seq, at, actor, action, target, outcome, request_id, detail, \
                       prev_hash, hash, v) \
                      VALUES ($1, $2, $3::text::timestamptz, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
const CHAIN: &str = "SELECT v, tenant_id, seq, \
                            to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                            actor, action, target, outcome, request_id, detail, prev_hash, hash \
                       FROM control.audit_events WHERE tenant_id = $1 ORDER BY seq";
const TENANTS: &str = "SELECT DISTINCT tenant_id FROM control.audit_events ORDER BY 1";

/// Appends `event` to its tenant's chain in `tx` (the action's own transaction: the event commits
/// or rolls back with it). Concurrent appends to one tenant's chain wait for each other.
pub async fn append(
    tx: &tokio_postgres::Transaction<'_>,
    event: &Event<'_>,
) -> Result<Record, tokio_postgres::Error> {
    tx.execute(LOCK, &[&event.tenant]).await?;
    let head = tx.query_one(HEAD, &[&event.tenant]).await?;
    let record = Record::link(event, head.get(0), head.get(1), head.get(2));
    tx.execute(INSERT, &record.insert_params()).await?;
    Ok(record)
}

/// `tenant`'s chain, oldest first.
pub async fn chain<C: GenericClient + Sync>(
    client: &C,
    tenant: &str,
) -> Result<Vec<Record>, tokio_postgres::Error> {
    Ok(client
        .query(CHAIN, &[&tenant])
        .await?
        .iter()
        .map(Record::from_row)
        .collect())
}

/// The statements of a tenant's own chain, in its own tier (tenant migration 0014's
/// `audit_events`): what the API's privileged routes append, as the tenant's own role, through its
/// tenant handle (names resolve in the tenant's pinned schema). The same events, encoding and
/// verification as the platform's chain.
pub mod tenant_chain {
    /// Taken first: concurrent appends to one chain wait for each other.
    pub const LOCK: &str =
        "SELECT pg_advisory_xact_lock(hashtextextended('tenantctl.tenant-audit:' || $1, 0))";
    /// The head and the time, after the lock.
    pub const HEAD: &str = "SELECT h.seq, h.hash, to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                               'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                          FROM (SELECT 1) one \
                          LEFT JOIN LATERAL (SELECT seq, hash FROM audit_events \
                                              WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1) h ON true";
    pub const INSERT: &str = "INSERT INTO audit_events \
                          (tenant_id, id, seq, at, actor, action, target, outcome, request_id, \
                           detail, prev_hash, hash, v) \
                          VALUES ($1, gen_random_uuid(), $2, $3::text::timestamptz, $4, $5, $6, $7, \
                                  $8, $9, $10, $11, $12)";
    /// Events after `$2` (a seq), oldest first, at most `$3`, filtered by action (`$4`, a prefix),
    /// outcome (`$5`) and actor (`$6`) when given.
    pub const PAGE: &str = "SELECT v, tenant_id, seq, \
                                to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                                actor, action, target, outcome, request_id, detail, prev_hash, hash \
                           FROM audit_events \
                          WHERE tenant_id = $1 AND seq > $2 \
                            AND ($4::text IS NULL OR starts_with(action, $4)) \
                            AND ($5::text IS NULL OR outcome = $5) \
                            AND ($6::text IS NULL OR actor = $6) \
                          ORDER BY seq LIMIT $3";
    pub const ONE: &str = "SELECT v, tenant_id, seq, \
                               to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                               actor, action, target, outcome, request_id, detail, prev_hash, hash \
                          FROM audit_events WHERE tenant_id = $1 AND seq = $2";
    pub const CHAIN: &str = "SELECT v, tenant_id, seq, \
                                 to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                                 actor, action, target, outcome, request_id, detail, prev_hash, hash \
                            FROM audit_events WHERE tenant_id = $1 ORDER BY seq";
}

/// Every tenant that has a chain.
pub async fn tenants<C: GenericClient + Sync>(
    client: &C,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query(TENANTS, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The first link of a chain that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain of `{tenant}` is broken at event {seq}: {reason}")]
pub struct Broken {
    pub tenant: String,
    pub seq: i64,
    pub reason: String,
}

/// Checks a chain (oldest first): numbered 1, 2, 3...; each names the previous one's hash; each
/// hash is its fields' hash. Returns the head (its last event's hash, to be kept elsewhere: the
/// chain alone cannot show that events were removed from its end) or the first broken link.
pub fn verify(tenant: &str, records: &[Record]) -> Result<Option<String>, Broken> {
    let mut prev = GENESIS.to_owned();
    for (i, r) in records.iter().enumerate() {
        let want_seq = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        let broken = |reason: String| Broken {
            tenant: tenant.to_owned(),
            seq: r.seq,
            reason,
        };
        if r.seq != want_seq {
            return Err(broken(format!(
                "expected event {want_seq} here (an event is missing or was added)"
            )));
        }
        if r.tenant_id != tenant {
            return Err(broken(format!("it names tenant `{}`", r.tenant_id)));
        }
        if r.prev_hash != prev {
            return Err(broken(
                "it does not name the previous event's hash (an event before it was changed, removed or inserted)".into(),
            ));
        }
        if r.computed_hash() != r.hash {
            return Err(broken(
                "its fields do not give its hash (it was changed after it was written)".into(),
            ));
        }
        prev = r.hash.clone();
    }
    Ok(records.last().map(|r| r.hash.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: i64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for seq in 1..=n {
            let mut r = Record {
                v: FORMAT,
                tenant_id: "acme".into(),
                seq,
                at: format!("2026-12-01T00:00:0{seq}.000000Z"),
                actor: "tenantctl:ops".into(),
                action: "apply".into(),
                target: "tenant/acme".into(),
                outcome: "succeeded".into(),
                request_id: String::new(),
                detail: format!("step {seq} \"quoted\" \t tab"),
                prev_hash: out.last().map_or(GENESIS.to_owned(), |p| p.hash.clone()),
                hash: String::new(),
            };
            r.hash = r.computed_hash();
            out.push(r);
        }
        out
    }

    #[test]
    fn a_whole_chain_verifies_and_any_edit_is_named_where_it_is() {
        let chain = chain_of(4);
        assert_eq!(verify("acme", &chain), Ok(Some(chain[3].hash.clone())));
        assert_eq!(verify("acme", &[]), Ok(None));
        let at = |c: Vec<Record>| verify("acme", &c).unwrap_err().seq;
        let mut edited = chain.clone();
        edited[1].detail = "something else".into();
        assert_eq!(at(edited), 2, "a changed field");
        let mut rehashed = chain.clone();
        rehashed[1].detail = "something else".into();
        rehashed[1].hash = rehashed[1].computed_hash();
        assert_eq!(
            at(rehashed),
            3,
            "a changed and rehashed event breaks the next link"
        );
        let mut removed = chain.clone();
        removed.remove(1);
        assert_eq!(at(removed), 3, "a removed event");
        let mut other = chain.clone();
        other[0].tenant_id = "globex".into();
        assert_eq!(at(other), 1);
    }

    #[test]
    fn the_canonical_encoding_is_sorted_compact_and_what_jq_prints() {
        let r = &chain_of(1)[0];
        let c = r.canonical();
        assert!(c.starts_with("{\"action\":\"apply\",\"actor\":"), "{c}");
        assert!(!c.contains("\"hash\""));
        assert!(c.contains("\\t") && c.contains("\\\"quoted\\\""));
        assert_eq!(clean("a\u{7f}b"), "a\u{fffd}b");
        // The export line is the canonical encoding with `hash` in its sorted place.
        let line: serde_json::Value = serde_json::from_str(&r.export_line()).unwrap();
        assert_eq!(line["hash"], r.hash.as_str());
    }
}
