//! The ledger's write path: durable before the response, without one fsync per request.
//!
//! **Group commit** (a long-running process serving many requests): a request hands its row to its
//! tenant's queue and waits for the commit that contains it. While one commit of a tenant is in
//! flight, the rows of that tenant's other requests gather behind it; when it returns, they are
//! written together, as one statement in one transaction of the tenant's own (`TenantTx`), and
//! every request in the batch hears the result. The window is therefore the commit in flight: a
//! lone request waits for nothing but its own commit, and under load a row waits at most for the
//! commit ahead of it plus its own. Batches never mix tenants (nor two locations of one tenant,
//! during a tier move): the database fences each one as it fences a single row. Back-pressure is
//! the tenant's admission: a request holds its in-flight slot until its row is committed, so a
//! tenant whose commits fall behind gets 429 for new requests, and a queue never holds more rows
//! than the tenant has requests in flight.
//!
//! The commit runs in a task of its own, so a request that goes away while it waits (the client
//! disconnected) cannot take rows of other requests down with it; its own row is still written.
//! If a batch fails, its rows are retried one by one, so one bad row fails only its own request.
//!
//! **Direct commit** (a tenant's Lambda, one request at a time): the request writes its own row in
//! one round trip and no task is ever left holding a row when the instance freezes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::db::DataError;
use crate::domain::TenantId;
use crate::metering::ledger::{self, NewEntry};
use crate::metering::limits::Gate;
use crate::tenancy::{Admission, DataPlane, Lane};

/// How ledger rows reach the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitMode {
    /// `group` when the runtime serves many tenants, `direct` in a single-tenant deployment (a
    /// tenant's Lambda).
    #[default]
    Auto,
    /// Rows of concurrent requests of one tenant share a commit.
    Group,
    /// Each request commits its own row.
    Direct,
}

impl CommitMode {
    /// Whether rows share commits, in a single-tenant deployment or not.
    pub fn groups(self, single_tenant: bool) -> bool {
        match self {
            CommitMode::Auto => !single_tenant,
            CommitMode::Group => true,
            CommitMode::Direct => false,
        }
    }
}

/// The rows of one tenant at one location (role, database, schema).
type QueueKey = (TenantId, String, String, String);

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A commit task owns this queue.
    flushing: bool,
}

struct Pending {
    tenant: Tenant,
    admission: Admission,
    entry: NewEntry,
    done: oneshot::Sender<Result<(), Arc<DataError>>>,
}

/// Writes ledger rows, by group or direct commit.
pub struct LedgerWriter {
    data: Arc<DataPlane>,
    /// Admissions of the calls whose rows this writer commits (leased where rows are grouped).
    gate: Gate,
    group: bool,
    max_batch: usize,
    queues: std::sync::Mutex<HashMap<QueueKey, Queue>>,
    commits: AtomicU64,
    rows: AtomicU64,
    /// Time spent in commits, summed (with `commits`, the mean durable commit as the runtime sees it).
    commit_micros: AtomicU64,
    /// Rows of calls that produced tokens and cost nothing (a zero price, or a pricing bug).
    zero_cost: AtomicU64,
    /// Rows whose provider-reported cost differs from ours.
    cost_differs: AtomicU64,
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter")
            .field("group", &self.group)
            .field("max_batch", &self.max_batch)
            .field("commits", &self.commits())
            .field("rows", &self.rows())
            .finish_non_exhaustive()
    }
}

impl LedgerWriter {
    /// A writer over `data`; `single_tenant` resolves `CommitMode::Auto`.
    pub fn new(data: Arc<DataPlane>, mode: CommitMode, single_tenant: bool) -> Self {
        Self {
            gate: Gate::new(data.clone(), mode.groups(single_tenant)),
            data,
            group: mode.groups(single_tenant),
            max_batch: 256,
            queues: std::sync::Mutex::new(HashMap::new()),
            commits: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            zero_cost: AtomicU64::new(0),
            cost_differs: AtomicU64::new(0),
        }
    }

    /// The data plane rows are written through.
    pub fn data_plane(&self) -> &DataPlane {
        &self.data
    }

    /// The admissions of model calls: in a long-running process (where rows are grouped) busy
    /// tenants are admitted from leases; in a tenant's Lambda every call on its own.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Whether rows of concurrent requests share commits.
    pub fn is_group(&self) -> bool {
        self.group
    }

    /// Commits made since start (a batch is one commit).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Rows waiting for a commit to start (not yet in one).
    pub fn queued(&self) -> usize {
        self.queues().values().map(|q| q.pending.len()).sum()
    }

    /// Rows committed since start.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Rows written for calls that produced tokens at zero cost, since start.
    pub fn zero_cost_rows(&self) -> u64 {
        self.zero_cost.load(Ordering::Relaxed)
    }

    /// Rows written whose provider-reported cost differs from ours, since start.
    pub fn cost_differs_rows(&self) -> u64 {
        self.cost_differs.load(Ordering::Relaxed)
    }

    /// Microseconds spent in successful commits since start.
    pub fn commit_micros(&self) -> u64 {
        self.commit_micros.load(Ordering::Relaxed)
    }

    /// Appends `entry` for `tenant` (admitted by `admission`, held until the row is committed) and
    /// returns once it is durable.
    pub async fn record(
        self: &Arc<Self>,
        tenant: &Tenant,
        admission: Admission,
        entry: NewEntry,
    ) -> Result<Uuid, DataError> {
        let handed = std::time::Instant::now();
        let usage = (
            entry.model.to_string(),
            entry.input_tokens,
            entry.output_tokens,
            entry.cost.0,
        );
        let committed = self.record_inner(tenant, admission, entry).await;
        if committed.is_ok() {
            let m = &crate::telemetry::METRICS;
            m.ledger_write_duration
                .observe(handed.elapsed().as_secs_f64());
            m.usage(tenant.id().as_str(), &usage.0, usage.1, usage.2, usage.3);
        }
        committed
    }

    async fn record_inner(
        self: &Arc<Self>,
        tenant: &Tenant,
        admission: Admission,
        entry: NewEntry,
    ) -> Result<Uuid, DataError> {
        let id = entry.id;
        if entry.cost.0 == 0 && entry.output_tokens + entry.input_tokens > 0 {
            // Finance wants to hear of tokens nobody pays for: a zero price, or a bug.
            self.zero_cost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(tenant = %tenant.id(), model = %entry.model, provider = %entry.provider.as_str(),
                "a call produced tokens and costs nothing");
        }
        if let Some(theirs) = entry.provider_cost.filter(|c| *c != entry.cost) {
            // Our price book and the provider disagree: the row keeps both, finance decides.
            self.cost_differs.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(tenant = %tenant.id(), model = %entry.model, provider = %entry.provider.as_str(),
                ours_micro_usd = entry.cost.0, provider_micro_usd = theirs.0,
                "the provider's cost of a call differs from the price book's");
        }
        if !self.group {
            let started = std::time::Instant::now();
            ledger::record_once(&self.data, tenant, &admission, Lane::Calls, &[&entry]).await?;
            self.count(1, started);
            return Ok(id);
        }
        let record = tenant.record();
        let key = (
            tenant.id().clone(),
            record.db_role.clone(),
            record.db_name.clone(),
            record.schema(),
        );
        let (done, committed) = oneshot::channel();
        let start = {
            let mut queues = self.queues();
            let queue = queues.entry(key.clone()).or_default();
            queue.pending.push(Pending {
                tenant: tenant.clone(),
                admission,
                entry,
                done,
            });
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start {
            tokio::spawn(self.clone().flush(key));
        }
        match committed.await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => Err(DataError::Shared(e)),
            Err(_) => Err(DataError::Pool(
                "the ledger writer stopped before the row was committed".into(),
            )),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<QueueKey, Queue>> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, rows: u64, started: std::time::Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.commit_micros.fetch_add(micros, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Commits the queue of `key` batch by batch until it is empty, then lets the next request
    /// start a new task.
    async fn flush(self: Arc<Self>, key: QueueKey) {
        // If this task dies (a panic, the runtime shutting down), the queue is dropped with it: the
        // waiting requests hear an error instead of waiting for ever, and the next row starts over.
        struct Release<'a>(&'a LedgerWriter, &'a QueueKey, bool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.queues().remove(self.1);
                }
            }
        }
        let mut release = Release(&self, &key, false);
        loop {
            let batch: Vec<Pending> = {
                let mut queues = self.queues();
                let Some(queue) = queues.get_mut(&key) else {
                    release.2 = true;
                    return;
                };
                if queue.pending.is_empty() {
                    queues.remove(&key);
                    release.2 = true;
                    return;
                }
                let n = queue.pending.len().min(self.max_batch);
                queue.pending.drain(..n).collect()
            };
            self.commit(batch).await;
        }
    }

    async fn commit(&self, batch: Vec<Pending>) {
        let first = &batch[0];
        let entries: Vec<&NewEntry> = batch.iter().map(|p| &p.entry).collect();
        let started = std::time::Instant::now();
        let written = ledger::record_once(
            &self.data,
            &first.tenant,
            &first.admission,
            Lane::Ledger,
            &entries,
        )
        .await;
        match written {
            Ok(()) => {
                self.count(batch.len() as u64, started);
                for p in batch {
                    let _ = p.done.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch
                    .into_iter()
                    .next()
                    .map(|p| p.done.send(Err(Arc::new(e))));
            }
            Err(e) => {
                // One row may be what failed (a duplicate id, a check): write each on its own so
                // only its request fails. A row that did commit (the batch failed after COMMIT was
                // sent) is refused by its primary key, never written twice.
                tracing::warn!(rows = batch.len(), error = %e, "a ledger batch failed; writing its rows one by one");
                for p in batch {
                    let started = std::time::Instant::now();
                    let one = ledger::record_once(
                        &self.data,
                        &p.tenant,
                        &p.admission,
                        Lane::Ledger,
                        &[&p.entry],
                    )
                    .await;
                    if one.is_ok() {
                        self.count(1, started);
                    }
                    let _ = p.done.send(one.map_err(Arc::new));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CommitMode;

    #[test]
    fn a_tenants_lambda_commits_directly_and_a_shared_runtime_groups_unless_told() {
        assert!(
            !CommitMode::Auto.groups(true),
            "a Lambda holds no row in a task"
        );
        assert!(CommitMode::Auto.groups(false));
        assert!(CommitMode::Group.groups(true) && CommitMode::Group.groups(false));
        assert!(!CommitMode::Direct.groups(true) && !CommitMode::Direct.groups(false));
        let parsed: CommitMode = serde_json::from_str("\"direct\"").unwrap();
        assert_eq!(parsed, CommitMode::Direct);
    }
}
