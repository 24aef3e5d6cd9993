//! Admissions against the tenant's budget and rate limits, before any model call.
//!
//! One statement as the tenant's own role (`tenant_admit`, tenant migration 0005) refills the
//! tenant's request and token buckets, refuses when either is empty (with the wait), then refuses
//! when the month's committed spend plus open holds plus what is asked would pass the budget, and
//! otherwise holds it. The state is in the database, so every runtime process (and every Lambda
//! instance) of the tenant shares one budget and one limit. The limits are the registry's, passed
//! with every call; the tenant's role stores none it could raise.
//!
//! **Own holds.** A call admitted on its own holds its worst case under the id its ledger row will
//! have; the ledger's trigger deletes the hold in the statement that adds the cost, `release` gives
//! it back when the call failed before producing anything, and it expires after `HOLD_SECS` if
//! neither happened (a process killed mid-call).
//!
//! **Leases.** A process that admits more than `LEASE_FROM_RATE` calls a second for one tenant (and
//! is not a tenant's Lambda) stops asking the database for each: one statement leases it a slice (a
//! quarter of a second of the tenant's request rate and token rate at most, and budget for that many
//! worst cases, capped by the database at a sixteenth of what the month has left), held in the
//! database under the lease's own id, and the process admits calls from it in memory. A call's ledger
//! row moves its real cost into committed spend; the process then counts the cost against the lease
//! and gives the rest of the call's worst case back to it. A lease is good for `LEASE_MILLIS`;
//! renewing it (one statement) resizes its hold to what the process's calls in flight still need plus
//! a new slice and hands back the requests and tokens it did not use. A second after the tenant's
//! last call the process shrinks the hold to its calls in flight, and to nothing once none are left:
//! so the tenant's limits stay exact across processes (a process can only admit what the database
//! gave it), and holds never outlive the calls they cover for more than about a second.
//!
//! **Subjects.** A tenant whose manifest sets `budget.per_subject_monthly_usd` has each subject's
//! (the token's `sub`) month budgeted too: every hold names its subject, the admission refuses a
//! call whose worst case does not fit in what is left of either budget (tenant migration 0011), and
//! leases are taken per subject (a slice is sized by the smaller of the two budgets' rest), so one
//! subject's slice never admits another's calls.
//!
//! If the database cannot be reached the call is refused: never served unmetered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::auth::Tenant;
use crate::db::DataError;
use crate::domain::{MicroUsd, TenantId};
use crate::registry::TenantLimits;
use crate::tenancy::{Admission, DataPlane, Lane, TenantTx};

/// This month's committed spend and open holds (`tenant_budget_state`, as admissions read them).
const STATUS: &str = "SELECT spent, held FROM tenant_budget_state($1, now())";

/// The same for one subject (`tenant_subject_budget_state`, tenant migration 0011).
const SUBJECT_STATUS: &str = "SELECT spent, held FROM tenant_subject_budget_state($1, $2, now())";

/// How long an unsettled hold keeps its budget: longer than any plain call the upstream timeouts
/// allow. A stream running longer loses its hold (its ledger row still charges all it produced).
pub const HOLD_SECS: i32 = 900;

/// How long a lease admits calls before it is renewed.
pub const LEASE_MILLIS: u64 = 1000;

/// Calls a second of one tenant in one process from which the process leases.
pub const LEASE_FROM_RATE: u32 = 16;

/// The most requests one lease takes.
const MAX_LEASED_REQUESTS: u32 = 4096;

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

/// The tenant's budget and, when it budgets per subject, the caller's subject's, as one call or
/// report found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub tenant: BudgetStatus,
    pub subject: Option<BudgetStatus>,
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
    /// The call's worst case does not fit in what is left of its subject's monthly budget.
    SubjectBudget {
        subject: String,
        status: BudgetStatus,
        worst_case: MicroUsd,
    },
}

impl Refusal {
    /// The refusal as a fixed word (a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Requests { .. } => "requests",
            Refusal::Tokens { .. } => "tokens",
            Refusal::Budget { .. } => "budget",
            Refusal::SubjectBudget { .. } => "subject_budget",
        }
    }
}

const ADMIT: &str = "SELECT verdict, retry_after_ms, spent, held, amount, requests, tokens, \
                            subject_spent, subject_held \
                       FROM tenant_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                                         $15, $16, $17)";
const RELEASE: &str = "SELECT tenant_release($1, $2, $3)";

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What one `tenant_admit` statement asks for.
struct Ask {
    hold: Uuid,
    amount_min: i64,
    amount_want: i64,
    requests_min: i32,
    requests_want: i32,
    requests_back: i32,
    tokens_min: i64,
    tokens_want: i64,
    tokens_back: i64,
}

/// What it granted.
struct Grant {
    spent: i64,
    held: i64,
    amount: i64,
    requests: i32,
    tokens: i64,
    subject_spent: i64,
    subject_held: i64,
}

/// The subject a call of `tenant` is budgeted as, and its budget (`None` without one).
fn subject_of(tenant: &Tenant) -> Option<(&str, MicroUsd)> {
    let budget = tenant.record().limits.subject_monthly_budget?;
    Some((tenant.principal().subject.as_str(), budget))
}

async fn ask(
    data: &DataPlane,
    tenant: &Tenant,
    admission: &Admission,
    limits: TenantLimits,
    a: &Ask,
) -> Result<Result<Grant, Refusal>, DataError> {
    let rpm = i32::try_from(limits.requests_per_minute.max(1)).unwrap_or(i32::MAX);
    let tpm = clamp(limits.tokens_per_minute.max(1));
    let subject = subject_of(tenant);
    let subject_name = subject.map(|(s, _)| s);
    let subject_budget = subject.map(|(_, b)| b.0);
    let rows = TenantTx::call_once(
        data,
        tenant,
        admission,
        Lane::Calls,
        ADMIT,
        &[
            &a.hold,
            &a.amount_min.max(0),
            &a.amount_want.max(a.amount_min).max(0),
            &limits.monthly_budget.0,
            &HOLD_SECS,
            &rpm,
            &tpm,
            &a.requests_min,
            &a.requests_want.max(a.requests_min),
            &a.requests_back.max(0),
            &a.tokens_min.max(0),
            &a.tokens_want.max(a.tokens_min).max(0),
            &a.tokens_back.max(0),
            &subject_name,
            &subject_budget,
        ],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| DataError::Pool("tenant_admit returned no row".into()))?;
    let verdict: &str = row.get(0);
    let retry_after_ms = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
    let grant = Grant {
        spent: row.get(2),
        held: row.get(3),
        amount: row.get(4),
        requests: row.get(5),
        tokens: row.get(6),
        subject_spent: row.get(7),
        subject_held: row.get(8),
    };
    Ok(match verdict {
        "ok" => Ok(grant),
        "requests" => Err(Refusal::Requests { retry_after_ms }),
        "tokens" => Err(Refusal::Tokens { retry_after_ms }),
        "budget" => Err(Refusal::Budget {
            status: BudgetStatus {
                budget: limits.monthly_budget,
                spent: MicroUsd(grant.spent),
                held: MicroUsd(grant.held),
            },
            worst_case: MicroUsd(a.amount_min),
        }),
        "subject_budget" => Err(Refusal::SubjectBudget {
            subject: subject_name.unwrap_or_default().to_owned(),
            status: BudgetStatus {
                budget: subject.map(|(_, b)| b).unwrap_or_default(),
                spent: MicroUsd(grant.subject_spent),
                held: MicroUsd(grant.subject_held),
            },
            worst_case: MicroUsd(a.amount_min),
        }),
        other => {
            return Err(DataError::Pool(format!("tenant_admit answered `{other}`")));
        }
    })
}

/// A tenant's lease in this process: its location (and its subject, when the tenant budgets per
/// subject), the lease's hold id, and its state.
type LeaseKey = (TenantId, String, String, String, Option<String>);

/// Leases kept before idle ones are dropped (a tenant budgeting per subject has one per busy subject).
const LEASES_KEPT: usize = 1024;

#[derive(Debug)]
pub struct Lease {
    id: Uuid,
    state: std::sync::Mutex<LeaseState>,
    /// Renewals and returns, one at a time.
    renewing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// Calls of the tenant admitted in the current second, and when that second started.
    window: Option<Instant>,
    window_calls: u32,
    previous_window_calls: u32,
    /// Until when the slice admits calls (`None`: no slice).
    valid_until: Option<Instant>,
    /// The lease's hold in the database, as last granted.
    held: i64,
    /// Worst cases of the calls admitted and not yet settled or released.
    reserved: i64,
    /// Real costs of calls settled since the last grant (committed spend, and still in `held`).
    settled: i64,
    requests: u32,
    tokens: i64,
    /// The month's spend and the other holds as the last grant saw them.
    spent_seen: i64,
    others_held: i64,
    /// The same for the lease's subject (when the tenant budgets per subject).
    subject_spent_seen: i64,
    subject_others_held: i64,
    /// A task gives the lease back once it goes quiet.
    returning: bool,
}

impl LeaseState {
    fn lock(m: &std::sync::Mutex<LeaseState>) -> std::sync::MutexGuard<'_, LeaseState> {
        // Plain numbers: a panic while holding the lock leaves nothing half-done worth refusing.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call of the tenant; whether the tenant is busy enough here to lease.
    fn count(&mut self, now: Instant) -> bool {
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            Some(start) if now.duration_since(start) < Duration::from_secs(2) => {
                self.previous_window_calls = self.window_calls;
                self.window = Some(now);
                self.window_calls = 0;
            }
            _ => {
                self.previous_window_calls = 0;
                self.window = Some(now);
                self.window_calls = 0;
            }
        }
        self.window_calls = self.window_calls.saturating_add(1);
        self.window_calls.max(self.previous_window_calls) >= LEASE_FROM_RATE
            || self.valid_until.is_some()
    }

    /// Whether nothing of the lease is in use: no slice, no hold, no call, no give-back running,
    /// and no call counted for two seconds.
    fn idle(&self, now: Instant) -> bool {
        self.valid_until.is_none()
            && self.held == 0
            && self.reserved == 0
            && !self.returning
            && self
                .window
                .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(2))
    }

    /// Admits a call from the slice, if it is still good and covers the call.
    fn take(
        &mut self,
        now: Instant,
        worst: i64,
        tokens: i64,
        limits: TenantLimits,
    ) -> Option<Budgets> {
        let good = self.valid_until.is_some_and(|t| now < t);
        if !good || self.requests == 0 || self.tokens < tokens.max(1) {
            return None;
        }
        if self.held - self.reserved - self.settled < worst {
            return None;
        }
        self.requests -= 1;
        self.tokens -= tokens;
        self.reserved += worst;
        Some(self.budgets(limits))
    }

    fn budgets(&self, limits: TenantLimits) -> Budgets {
        let tenant = BudgetStatus {
            budget: limits.monthly_budget,
            spent: MicroUsd(self.spent_seen + self.settled),
            held: MicroUsd(self.others_held + self.reserved),
        };
        let subject = limits.subject_monthly_budget.map(|budget| BudgetStatus {
            budget,
            spent: MicroUsd(self.subject_spent_seen + self.settled),
            held: MicroUsd(self.subject_others_held + self.reserved),
        });
        Budgets { tenant, subject }
    }
}

/// A call's claim on the budget: its own hold in the database, or a part of its process's lease.
/// Settle it with the call's cost once its ledger row is committed, or release it when the call
/// failed before anything was produced. Dropped unsettled (its request went away, so whether a row
/// was written is unknown), a leased call counts at its worst case until the lease is renewed.
#[derive(Debug)]
pub struct Hold {
    claim: Option<Claim>,
}

#[derive(Debug)]
enum Claim {
    Own(Uuid),
    Leased { lease: Arc<Lease>, worst: i64 },
}

impl Hold {
    /// The call's ledger row is committed at `cost` (an own hold was settled by the row itself).
    pub fn settled(mut self, cost: MicroUsd) {
        if let Some(Claim::Leased { lease, worst }) = self.claim.take() {
            let mut s = LeaseState::lock(&lease.state);
            s.reserved -= worst;
            s.settled += cost.0.max(0);
        }
    }

    /// The call failed before producing anything and no row was written: its worst case is free
    /// again (an own hold is deleted, best effort: an unreleased hold expires).
    pub async fn release(mut self, data: &DataPlane, tenant: &Tenant) {
        match self.claim.take() {
            Some(Claim::Leased { lease, worst }) => {
                LeaseState::lock(&lease.state).reserved -= worst;
            }
            Some(Claim::Own(id)) => {
                let released = match data.admit(tenant) {
                    Ok(admission) => {
                        TenantTx::call_once(data, tenant, &admission, Lane::Calls, RELEASE, &[&id])
                            .await
                            .map(|_| ())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = released {
                    tracing::warn!(error = %e, "a budget hold could not be released; it expires on its own");
                }
            }
            None => {}
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(Claim::Leased { lease, worst }) = self.claim.take() {
            let mut s = LeaseState::lock(&lease.state);
            s.reserved -= worst;
            s.settled += worst;
        }
    }
}

/// An admitted call: the budget as its admission saw it (and its subject's, when the tenant
/// budgets per subject), and its hold.
#[derive(Debug)]
pub struct Admitted {
    pub budgets: Budgets,
    pub hold: Hold,
}

/// Admits model calls: each on its own, or from leases for the tenants this process is busy with.
#[derive(Debug)]
pub struct Gate {
    data: Arc<DataPlane>,
    leasing: bool,
    leases: std::sync::Mutex<HashMap<LeaseKey, Arc<Lease>>>,
    /// Calls admitted from a lease, without a statement.
    local: AtomicU64,
    /// `tenant_admit` statements run (own holds, lease grants, renewals and returns).
    statements: Arc<AtomicU64>,
}

impl Gate {
    /// A gate over `data`; `leasing` off admits every call on its own (a tenant's Lambda serves one
    /// call at a time and keeps no task running between them).
    pub fn new(data: Arc<DataPlane>, leasing: bool) -> Self {
        Self {
            data,
            leasing,
            leases: std::sync::Mutex::new(HashMap::new()),
            local: AtomicU64::new(0),
            statements: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Calls admitted from a lease since start.
    pub fn local_admissions(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }

    /// Admission statements run since start.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Admits a call of `tenant` whose worst case costs `worst_case` and that sends about `tokens`
    /// tokens; `call` is the id its ledger row will have (and its own hold's, if it gets one).
    pub async fn admit(
        &self,
        tenant: &Tenant,
        admission: &Admission,
        call: Uuid,
        worst_case: MicroUsd,
        tokens: u64,
    ) -> Result<Result<Admitted, Refusal>, DataError> {
        let limits = tenant.record().limits;
        let worst = worst_case.0.max(0);
        let tokens = clamp(tokens);
        let per_second = u64::from(limits.requests_per_minute) / 60;
        let leasable = self.leasing
            && per_second >= 4
            && limits.tokens_per_minute / 60
                >= 4 * u64::try_from(tokens.max(1)).unwrap_or(u64::MAX);
        if leasable {
            let lease = self.lease_for(tenant);
            let busy = {
                let mut s = LeaseState::lock(&lease.state);
                let now = Instant::now();
                let busy = s.count(now);
                if let Some(budgets) = s.take(now, worst, tokens, limits) {
                    drop(s);
                    self.local.fetch_add(1, Ordering::Relaxed);
                    return Ok(Ok(Admitted {
                        budgets,
                        hold: Hold {
                            claim: Some(Claim::Leased { lease, worst }),
                        },
                    }));
                }
                busy
            };
            if busy {
                // Boxed: the renewal's state is rare and large, and stays off every call's future.
                return Box::pin(self.renew(tenant, admission, lease, limits, worst, tokens)).await;
            }
        }
        self.statements.fetch_add(1, Ordering::Relaxed);
        let granted = ask(
            &self.data,
            tenant,
            admission,
            limits,
            &Ask {
                hold: call,
                amount_min: worst,
                amount_want: worst,
                requests_min: 1,
                requests_want: 1,
                requests_back: 0,
                tokens_min: tokens,
                tokens_want: tokens,
                tokens_back: 0,
            },
        )
        .await?;
        Ok(granted.map(|g| Admitted {
            budgets: Budgets {
                tenant: BudgetStatus {
                    budget: limits.monthly_budget,
                    spent: MicroUsd(g.spent),
                    held: MicroUsd(g.held),
                },
                subject: limits.subject_monthly_budget.map(|budget| BudgetStatus {
                    budget,
                    spent: MicroUsd(g.subject_spent),
                    held: MicroUsd(g.subject_held),
                }),
            },
            hold: Hold {
                claim: Some(Claim::Own(call)),
            },
        }))
    }

    fn lease_for(&self, tenant: &Tenant) -> Arc<Lease> {
        let record = tenant.record();
        let key = (
            tenant.id().clone(),
            record.db_role.clone(),
            record.db_name.clone(),
            record.schema(),
            subject_of(tenant).map(|(s, _)| s.to_owned()),
        );
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.len() >= LEASES_KEPT && !leases.contains_key(&key) {
            // Bounded: many subjects each busy once leave no lease behind once they are idle.
            let now = Instant::now();
            leases.retain(|_, l| Arc::strong_count(l) > 1 || !LeaseState::lock(&l.state).idle(now));
        }
        leases
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Lease {
                    id: Uuid::new_v4(),
                    state: std::sync::Mutex::new(LeaseState::default()),
                    renewing: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Takes a new slice for `lease` (one statement; calls arriving meanwhile wait for it) and
    /// admits the call from it.
    async fn renew(
        &self,
        tenant: &Tenant,
        admission: &Admission,
        lease: Arc<Lease>,
        limits: TenantLimits,
        worst: i64,
        tokens: i64,
    ) -> Result<Result<Admitted, Refusal>, DataError> {
        let renewing = lease.renewing.lock().await;
        let admitted = |lease: Arc<Lease>, budgets: Budgets| {
            Ok(Ok(Admitted {
                budgets,
                hold: Hold {
                    claim: Some(Claim::Leased { lease, worst }),
                },
            }))
        };
        let (a, settled_before, spawn) = {
            let mut s = LeaseState::lock(&lease.state);
            // Another call renewed while this one waited.
            if let Some(status) = s.take(Instant::now(), worst, tokens, limits) {
                self.local.fetch_add(1, Ordering::Relaxed);
                drop(s);
                drop(renewing);
                return admitted(lease, status);
            }
            let rate = s.window_calls.max(s.previous_window_calls);
            let want = (u64::from(limits.requests_per_minute) / 240)
                .min(u64::from(rate.max(LEASE_FROM_RATE)) * 2)
                .clamp(1, u64::from(MAX_LEASED_REQUESTS)) as i32;
            let tokens_want = tokens
                .saturating_mul(i64::from(want))
                .min(clamp(limits.tokens_per_minute / 240))
                .max(tokens);
            let a = Ask {
                hold: lease.id,
                amount_min: s.reserved + worst,
                amount_want: (s.reserved + worst)
                    .saturating_add(worst.saturating_mul(i64::from(want - 1))),
                requests_min: 1,
                requests_want: want,
                requests_back: i32::try_from(s.requests).unwrap_or(i32::MAX),
                tokens_min: tokens,
                tokens_want,
                tokens_back: s.tokens.max(0),
            };
            // What the slice had left goes back with this statement.
            s.requests = 0;
            s.tokens = 0;
            s.valid_until = None;
            let spawn = !std::mem::replace(&mut s.returning, true);
            (a, s.settled, spawn)
        };
        if spawn {
            tokio::spawn(give_back(
                self.data.clone(),
                self.statements.clone(),
                tenant.clone(),
                lease.clone(),
            ));
        }
        self.statements.fetch_add(1, Ordering::Relaxed);
        let granted = ask(&self.data, tenant, admission, limits, &a).await?;
        let g = match granted {
            Ok(g) => g,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let status = {
            let mut s = LeaseState::lock(&lease.state);
            s.held = g.amount;
            s.settled -= settled_before;
            s.spent_seen = g.spent;
            s.others_held = g.held - g.amount;
            s.subject_spent_seen = g.subject_spent;
            s.subject_others_held = g.subject_held - g.amount;
            s.requests = u32::try_from(g.requests.max(1) - 1).unwrap_or(0);
            s.tokens = g.tokens - tokens;
            s.reserved += worst;
            s.valid_until = Some(Instant::now() + Duration::from_millis(LEASE_MILLIS));
            s.budgets(limits)
        };
        drop(renewing);
        admitted(lease, status)
    }
}

/// Gives a lease back once it goes quiet: every `LEASE_MILLIS`, if no renewal kept it in use, its
/// hold shrinks to what its calls in flight still need (nothing, once none are left) and its unused
/// requests and tokens return to the tenant's buckets. Ends when the hold is gone.
async fn give_back(
    data: Arc<DataPlane>,
    statements: Arc<AtomicU64>,
    tenant: Tenant,
    lease: Arc<Lease>,
) {
    let limits = tenant.record().limits;
    let mut failures = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(LEASE_MILLIS)).await;
        let _renewing = lease.renewing.lock().await;
        let (a, settled_before) = {
            let mut s = LeaseState::lock(&lease.state);
            if s.valid_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            if s.held == 0 && s.reserved == 0 && s.requests == 0 && s.tokens <= 0 {
                s.returning = false;
                s.valid_until = None;
                return;
            }
            let a = Ask {
                hold: lease.id,
                amount_min: s.reserved,
                amount_want: s.reserved,
                requests_min: 0,
                requests_want: 0,
                requests_back: i32::try_from(s.requests).unwrap_or(i32::MAX),
                tokens_min: 0,
                tokens_want: 0,
                tokens_back: s.tokens.max(0),
            };
            s.requests = 0;
            s.tokens = 0;
            s.valid_until = None;
            (a, s.settled)
        };
        statements.fetch_add(1, Ordering::Relaxed);
        let returned = match data.admit(&tenant) {
            Ok(admission) => ask(&data, &tenant, &admission, limits, &a).await,
            Err(e) => Err(e),
        };
        let mut s = LeaseState::lock(&lease.state);
        match returned {
            Ok(Ok(g)) => {
                failures = 0;
                s.held = g.amount;
                s.settled -= settled_before;
                if g.amount == 0 && s.reserved == 0 {
                    s.returning = false;
                    return;
                }
            }
            Ok(Err(_)) | Err(_) => {
                // A return asks for no more than the calls in flight hold, so only a failure to
                // reach the database lands here: try again; the hold expires if nothing succeeds.
                failures += 1;
                if failures == 1 {
                    tracing::warn!(tenant = %tenant.id(), "a budget lease could not be given back yet");
                }
                // A minute of failures (the location moved away, the database is down): stop; the
                // hold expires on its own.
                if failures >= 60 {
                    s.returning = false;
                    return;
                }
            }
        }
    }
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

/// The tenant's budget and the caller's subject's now, read in `tx` (what `/v1/usage` shows).
pub async fn budgets(tx: &TenantTx, tenant: &Tenant) -> Result<Budgets, DataError> {
    // Pipelined on the transaction's connection.
    let (tenant_status, subject) = tokio::try_join!(
        status(tx, tenant.record().limits.monthly_budget),
        subject_status(tx, tenant)
    )?;
    Ok(Budgets {
        tenant: tenant_status,
        subject,
    })
}

/// The caller's own subject budget now, read in `tx`, when its tenant budgets per subject (what
/// `/v1/usage` shows next to the tenant's).
async fn subject_status(tx: &TenantTx, tenant: &Tenant) -> Result<Option<BudgetStatus>, DataError> {
    let Some((subject, budget)) = subject_of(tenant) else {
        return Ok(None);
    };
    let rows = tx
        .query(SUBJECT_STATUS, &[&tx.tenant().as_str(), &subject])
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DataError::Pool("the subject's budget status returned no row".into()))?;
    Ok(Some(BudgetStatus {
        budget,
        spent: MicroUsd(row.get(0)),
        held: MicroUsd(row.get(1)),
    }))
}
