//! The tenant registry as the runtime sees it: `TenantRecord` (identity binding, tier, model policy,
//! where the data is), the in-memory `TenantDirectory` the auth layer binds tokens through, and
//! `ControlPlane`, the read-only registry reader. The only owner of the runtime's registry SQL.
//!
//! This module must not reach tenant data, accept a tenant id from a request, or build SQL text.

pub mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::db::roles::check_role_over;
use crate::db::{DataError, DbEndpoint, build_pool};
use crate::domain::{Namespace, TenantId, Tier};
use crate::secrets::{SecretName, SecretStore};
pub use policy::ModelPolicy;

/// How a tenant's tokens are recognised: which trusted issuer, which audience, which claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityBinding {
    pub issuer: String,
    pub audience: String,
    pub tenant_claim: String,
}

/// One active tenant, as the control plane registry describes it (or, for a single-tenant deployment,
/// as its configuration carries it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRecord {
    pub id: TenantId,
    pub display_name: String,
    pub tier: Tier,
    pub identity: IdentityBinding,
    pub policy: ModelPolicy,
    /// The role the tenant's data is reached as: its own login role, on every tier.
    pub db_role: String,
    /// The database holding the tenant's data (its own for `dedicated`).
    pub db_name: String,
    /// While `tenantctl move` copies the tenant's data: reads are served, writes are refused (503).
    #[serde(default)]
    pub read_only: bool,
    /// Suspended (`tenantctl suspend`): its tokens are refused with 403 on every route.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    /// Its monthly budget and rate limits, from its manifest; enforced before every model call.
    pub limits: TenantLimits,
    /// What it is charged: the imported price book's versions with its negotiated prices. A model
    /// without a price here is refused.
    #[serde(default)]
    pub prices: crate::pricing::TenantPrices,
    /// Its cost-allocation tags, from its manifest (`cost-center` among them): stamped on every
    /// ledger row, as on its AWS resources.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// What the platform registered, before the tenant's own narrowing (`policy` and `limits` are
    /// the narrowed ones, which everything enforces); `None` when the tenant narrowed nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<Box<Registered>>,
}

/// The registered policy and limits, and the tenant's narrowing of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    pub policy: ModelPolicy,
    pub limits: TenantLimits,
    pub narrowing: policy::Narrowing,
}

impl TenantRecord {
    /// This record with `narrowing` applied: its policy without the disabled models, each limit the
    /// lower of the registered one and the tenant's own. Never wider than before.
    pub fn narrowed(mut self, narrowing: policy::Narrowing) -> TenantRecord {
        if narrowing.is_empty() {
            self.registered = None;
            return self;
        }
        let registered = Registered {
            policy: self.policy.clone(),
            limits: self.limits,
            narrowing: narrowing.clone(),
        };
        self.policy = self.policy.without(&narrowing.disabled_models);
        let l = &mut self.limits;
        if let Some(b) = narrowing.monthly_budget_micro_usd {
            l.monthly_budget = crate::domain::MicroUsd(l.monthly_budget.0.min(b.max(0)));
            if let Some(s) = l.subject_monthly_budget {
                l.subject_monthly_budget =
                    Some(crate::domain::MicroUsd(s.0.min(l.monthly_budget.0)));
            }
        }
        if let Some(r) = narrowing.requests_per_minute {
            l.requests_per_minute = l.requests_per_minute.min(r);
        }
        if let Some(t) = narrowing.tokens_per_minute {
            l.tokens_per_minute = l.tokens_per_minute.min(t);
        }
        self.registered = Some(Box::new(registered));
        self
    }
}

/// What a tenant may spend and how fast, as its manifest declares. The runtime passes these to the
/// database with every admission (the tenant's own role never stores or changes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Committed spend plus open holds may not exceed this in a calendar month (UTC).
    pub monthly_budget: crate::domain::MicroUsd,
    /// Each subject's (the token's `sub`) committed spend plus open holds may not exceed this in a
    /// calendar month either (`budget.per_subject_monthly_usd`); `None`: no budget per subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_monthly_budget: Option<crate::domain::MicroUsd>,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
}

/// What tenant `id` is charged under `book`: the prices of its own policy's models only (what its
/// calls can use; and a tenant's Lambda carries its record in 4 KB of environment).
pub fn prices_for(
    book: &crate::pricing::PriceBook,
    id: &str,
    policy: &ModelPolicy,
) -> crate::pricing::TenantPrices {
    book.for_tenant(id).retain(|provider, model| {
        policy
            .providers
            .get(&provider)
            .is_some_and(|p| p.models.iter().any(|m| m.as_str() == model))
    })
}

impl TenantRecord {
    /// The tags a ledger row carries: the manifest's, with `tenant` and `tier` as on its AWS
    /// resources (a JSON object).
    pub fn cost_tags(&self) -> String {
        let mut tags = self.tags.clone();
        tags.insert("tenant".into(), self.id.to_string());
        tags.insert("tier".into(), self.tier.as_str().into());
        serde_json::to_string(&tags).unwrap_or_else(|_| "{}".into())
    }

    /// The schema the tenant's tables are in: `pool` for the pool tier, else the tenant's own.
    pub fn schema(&self) -> String {
        Namespace::data_schema(self.tier, &self.id)
    }
}

/// The active tenants, refreshed from the control plane. Lookups are in memory, so a request refused
/// for an unknown tenant costs no database statement. With a maximum age set, a snapshot not refreshed
/// successfully within it is stale and serves nobody (503) until a refresh succeeds: a failed
/// control-plane read never keeps a suspended tenant served for longer than that bound.
#[derive(Debug)]
pub struct TenantDirectory {
    tenants: std::sync::RwLock<Arc<HashMap<TenantId, Arc<TenantRecord>>>>,
    refreshed_at: std::sync::RwLock<std::time::Instant>,
    max_stale: Option<Duration>,
}

impl Default for TenantDirectory {
    fn default() -> Self {
        Self {
            tenants: Default::default(),
            refreshed_at: std::sync::RwLock::new(std::time::Instant::now()),
            max_stale: None,
        }
    }
}

impl TenantDirectory {
    pub fn new(records: Vec<TenantRecord>) -> Self {
        let dir = Self::default();
        dir.replace(records);
        dir
    }

    /// Fails closed once the last successful `replace` is older than `max_stale`.
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = Some(max_stale);
        self
    }

    /// Swaps in a new snapshot (a successful refresh).
    pub fn replace(&self, records: Vec<TenantRecord>) {
        let map = records
            .into_iter()
            .map(|r| (r.id.clone(), Arc::new(r)))
            .collect();
        if let Ok(mut guard) = self.tenants.write() {
            *guard = Arc::new(map);
        }
        if let Ok(mut at) = self.refreshed_at.write() {
            *at = std::time::Instant::now();
        }
    }

    /// Whether the snapshot is past its maximum age (never, without one). A poisoned lock is stale.
    pub fn is_stale(&self) -> bool {
        let Some(max) = self.max_stale else {
            return false;
        };
        self.refreshed_at
            .read()
            .map_or(true, |at| at.elapsed() > max)
    }

    pub fn get(&self, id: &TenantId) -> Option<Arc<TenantRecord>> {
        self.tenants.read().ok()?.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.tenants.read().map(|t| t.len()).unwrap_or(0)
    }

    /// Every tenant of the snapshot, by id.
    pub fn records(&self) -> Vec<Arc<TenantRecord>> {
        let mut out: Vec<Arc<TenantRecord>> = self
            .tenants
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The control plane's functions that run with their owner's (the migrator's) rights: the only
/// registry changes the runtime's role may make, each with its search path pinned (security case
/// 35's catalog check covers them too).
pub const CONTROL_DEFINER_FUNCTIONS: &[&str] = &["tenant_narrow", "tenant_set_suspended"];

/// What a platform operator's suspension or resumption found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuspendOutcome {
    Changed,
    AlreadyThere,
    Unknown,
    /// The tenant's status forbids it (`read_only` during a move, `offboarded`).
    Refused(String),
}

/// One imported price book version.
#[derive(Debug, Clone, Serialize)]
pub struct PriceVersion {
    pub version: String,
    pub effective_from: String,
    pub digest: String,
    pub imported_by: String,
    pub imported_at: String,
    pub body: serde_json::Value,
}

/// Reads the tenant registry as the runtime's control-plane role. That role changes a tenant's row
/// only through the two functions of `CONTROL_DEFINER_FUNCTIONS` (suspension; a tenant's own
/// narrowing), and may add (never change) audit events and reconciliation runs.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pool: Pool,
}

impl ControlPlane {
    pub async fn connect(
        endpoint: &DbEndpoint,
        role: &str,
        secrets: &SecretStore,
        password_secret: &SecretName,
    ) -> Result<Self, DataError> {
        let password = secrets.get(password_secret).await?;
        let mut config = endpoint.config(role, "tenant-runtime-control");
        config.password(password.expose_secret().as_bytes());
        Ok(Self {
            pool: build_pool(config, 2, endpoint, None)?,
        })
    }

    /// One checked-out control-plane connection.
    async fn client(&self) -> Result<Object, DataError> {
        #[expect(
            clippy::disallowed_methods,
            reason = "the control plane is not tenant data"
        )]
        self.pool
            .get()
            .await
            .map_err(|e| DataError::Pool(e.to_string()))
    }

    /// Fails when `role` exists and has any hazard (see `ROLE_HAZARDS_SQL`) beyond `allowed`
    /// memberships.
    pub async fn check_role(&self, role: &str, allowed: &[String]) -> Result<(), DataError> {
        let client = self.client().await?;
        check_role_over(&client, role, allowed).await
    }

    /// Fails when the group `role` (the pool group) can log in: its members' rows are fenced by their
    /// own login role, and a session as the group itself must be impossible, not merely empty.
    pub async fn check_group(&self, role: &str) -> Result<(), DataError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await?;
        if row.is_some_and(|r| r.get::<_, bool>(0)) {
            return Err(DataError::UnsafeRole {
                role: role.to_owned(),
                hazards: "LOGIN (a group must never log in)".into(),
            });
        }
        Ok(())
    }

    /// Loads every active tenant. Rows the runtime cannot interpret are skipped with an error log,
    /// never served with defaults.
    pub async fn load_tenants(&self) -> Result<Vec<TenantRecord>, DataError> {
        let client = self.client().await?;
        let book = self.load_prices(&client).await?;
        let rows = client
            .query(
                "SELECT tenant_id, display_name, tier, issuer, audience, tenant_claim, \
                        model_policy, db_role, coalesce(db_name, current_database()), status, \
                        monthly_budget_micro_usd, \
                        (spec #>> '{rate_limits,requests_per_minute}')::bigint, \
                        (spec #>> '{rate_limits,tokens_per_minute}')::bigint, tags, \
                        (spec #>> '{subject_monthly_budget}')::bigint, narrowing \
                   FROM control.tenants WHERE status IN ('active', 'read_only', 'suspended') ORDER BY tenant_id",
                &[],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let raw_id: String = row.get(0);
            let parsed = (|| {
                let id = TenantId::parse(&raw_id).map_err(|e| e.to_string())?;
                let tier = Tier::parse(row.get::<_, &str>(2)).map_err(|e| e.to_string())?;
                let policy: ModelPolicy =
                    serde_json::from_value(row.get::<_, serde_json::Value>(6))
                        .map_err(|e| e.to_string())?;
                let prices = prices_for(&book, &raw_id, &policy);
                Ok::<_, String>(
                    TenantRecord {
                        id,
                        display_name: row.get(1),
                        tier,
                        identity: IdentityBinding {
                            issuer: row.get(3),
                            audience: row.get(4),
                            tenant_claim: row.get(5),
                        },
                        policy,
                        db_role: row.get(7),
                        db_name: row.get(8),
                        read_only: row.get::<_, &str>(9) == "read_only",
                        suspended: row.get::<_, &str>(9) == "suspended",
                        limits: TenantLimits {
                            monthly_budget: crate::domain::MicroUsd(row.get(10)),
                            requests_per_minute: row
                                .get::<_, Option<i64>>(11)
                                .and_then(|n| u32::try_from(n).ok())
                                .ok_or("rate_limits.requests_per_minute missing from the spec")?,
                            tokens_per_minute: row
                                .get::<_, Option<i64>>(12)
                                .and_then(|n| u64::try_from(n).ok())
                                .ok_or("rate_limits.tokens_per_minute missing from the spec")?,
                            subject_monthly_budget: row
                                .get::<_, Option<i64>>(14)
                                .map(crate::domain::MicroUsd),
                        },
                        prices,
                        tags: serde_json::from_value(row.get::<_, serde_json::Value>(13))
                            .map_err(|e| format!("tags: {e}"))?,
                        registered: None,
                    }
                    .narrowed(
                        serde_json::from_value(row.get::<_, serde_json::Value>(15))
                            .map_err(|e| format!("narrowing: {e}"))?,
                    ),
                )
            })();
            match parsed {
                Ok(record) => out.push(record),
                Err(e) => tracing::error!(tenant = %crate::domain::printable(&raw_id), error = %e,
                    "skipping registry row the runtime cannot interpret"),
            }
        }
        Ok(out)
    }

    /// Suspends (`suspend`) or resumes `tenant` for a platform operator, with the event in the
    /// platform's chain in the same transaction (`control.tenant_set_suspended`; see
    /// `CONTROL_DEFINER_FUNCTIONS`). Refusals are recorded too.
    pub async fn set_suspended(
        &self,
        tenant: &TenantId,
        suspend: bool,
        actor: &str,
        request_id: uuid::Uuid,
        reason: &str,
    ) -> Result<SuspendOutcome, DataError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let answer: String = tx
            .query_one(
                "SELECT control.tenant_set_suspended($1, $2)",
                &[&tenant.as_str(), &suspend],
            )
            .await?
            .get(0);
        let outcome = match answer.as_str() {
            "changed" => SuspendOutcome::Changed,
            "already" => SuspendOutcome::AlreadyThere,
            "unknown" => return Ok(SuspendOutcome::Unknown),
            _ => SuspendOutcome::Refused(answer.clone()),
        };
        let event = crate::audit::Event {
            tenant: tenant.as_str(),
            actor,
            action: if suspend { "suspend" } else { "resume" },
            target: &format!("tenant/{}", tenant.as_str()),
            outcome: match &outcome {
                SuspendOutcome::Changed => "succeeded",
                SuspendOutcome::AlreadyThere => "unchanged",
                _ => "refused",
            },
            request_id: Some(request_id),
            detail: &match &outcome {
                SuspendOutcome::Refused(status) => format!("the tenant is `{status}`; {reason}"),
                _ => reason.to_owned(),
            },
        };
        crate::audit::append(&tx, &event).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Keeps a reconciliation run (a record: never changed).
    pub async fn store_run(&self, run: &serde_json::Value) -> Result<(), DataError> {
        let text = |k: &str| run[k].as_str().unwrap_or_default().to_owned();
        let id = uuid::Uuid::try_parse(&text("id"))
            .map_err(|e| DataError::Pool(format!("a run's id: {e}")))?;
        self.client()
            .await?
            .execute(
                "INSERT INTO control.reconciliation_runs (id, tenant_id, month, provider, \
                 tolerance_micro_usd, lines, over_tolerance, invoice_sha256, ran_by, request_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &id,
                    &text("tenant"),
                    &text("month"),
                    &text("provider"),
                    &run["tolerance_micro_usd"].as_i64().unwrap_or(0),
                    &run["lines"],
                    &i32::try_from(run["over_tolerance"].as_i64().unwrap_or(0)).unwrap_or(i32::MAX),
                    &text("invoice_sha256"),
                    &text("ran_by"),
                    &text("request_id"),
                ],
            )
            .await?;
        Ok(())
    }

    /// Reconciliation runs, newest first (one tenant's, when given), each as JSON; with its lines
    /// when `id` names one run.
    pub async fn runs(
        &self,
        tenant: Option<&TenantId>,
        id: Option<uuid::Uuid>,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, DataError> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        let rows = self
            .client()
            .await?
            .query(
                "SELECT json_build_object('id', id, 'object', 'reconciliation_run', 'tenant', tenant_id, \
                        'month', month, 'provider', provider, 'tolerance_micro_usd', tolerance_micro_usd, \
                        'over_tolerance', over_tolerance, 'invoice_sha256', invoice_sha256, \
                        'ran_by', ran_by, 'request_id', request_id, \
                        'ran_at', to_char(ran_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                        'lines', CASE WHEN $2::uuid IS NULL THEN NULL ELSE lines END)::jsonb \
                   FROM control.reconciliation_runs \
                  WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::uuid IS NULL OR id = $2) \
                  ORDER BY ran_at DESC, id LIMIT $3",
                &[&tenant, &id, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// What `tenantctl status` last found of each tenant (`control.tenant_checks`), by tenant.
    pub async fn tenant_checks(&self) -> Result<Vec<serde_json::Value>, DataError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT json_build_object('tenant', tenant_id, 'checked_by', checked_by, \
                        'findings', findings, \
                        'checked_at', to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::jsonb \
                   FROM control.tenant_checks ORDER BY tenant_id COLLATE \"C\"",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A month's AWS spend per tenant as `tenantctl cost report` last read it: tenant, micro-USD
    /// and when it was read.
    pub async fn aws_spend(&self, month: &str) -> Result<Vec<(String, i64, String)>, DataError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant_id, cost_micro_usd, \
                        to_char(fetched_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                   FROM control.aws_spend WHERE month = $1 ORDER BY tenant_id COLLATE \"C\"",
                &[&month],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The platform's audit chain of `tenant`, oldest first (the runtime's role reads it; it never
    /// changes an event).
    pub async fn platform_chain(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<crate::audit::Record>, DataError> {
        let client = self.client().await?;
        Ok(crate::audit::chain(&**client, tenant.as_str()).await?)
    }

    /// The imported price book's versions, oldest first: version, the day it applies from, its
    /// digest, who imported it and when.
    pub async fn price_versions(&self) -> Result<Vec<PriceVersion>, DataError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT version, effective_from::text, digest, imported_by, \
                        to_char(imported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), body \
                   FROM control.price_versions ORDER BY effective_from",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PriceVersion {
                version: r.get(0),
                effective_from: r.get(1),
                digest: r.get(2),
                imported_by: r.get(3),
                imported_at: r.get(4),
                body: r.get(5),
            })
            .collect())
    }

    /// Stores `tenant`'s own narrowing of its registered policy and limits for one of its admins,
    /// with the event in the platform's chain in the same transaction (`control.tenant_narrow`).
    /// `false` when the tenant is not active in the registry.
    pub async fn narrow(
        &self,
        tenant: &TenantId,
        narrowing: &policy::Narrowing,
        actor: &str,
        action: &str,
        request_id: uuid::Uuid,
    ) -> Result<bool, DataError> {
        let body = serde_json::to_value(narrowing)
            .map_err(|e| DataError::Pool(format!("narrowing: {e}")))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed: bool = tx
            .query_one(
                "SELECT control.tenant_narrow($1, $2)",
                &[&tenant.as_str(), &body],
            )
            .await?
            .get(0);
        if !changed {
            return Ok(false);
        }
        crate::audit::append(
            &tx,
            &crate::audit::Event {
                tenant: tenant.as_str(),
                actor,
                action,
                target: &format!("tenant/{}", tenant.as_str()),
                outcome: "succeeded",
                request_id: Some(request_id),
                detail: &body.to_string(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The imported price book (`tenantctl prices import`), oldest version first. A version the
    /// runtime cannot read fails the load: prices are never guessed.
    async fn load_prices(&self, client: &Object) -> Result<crate::pricing::PriceBook, DataError> {
        let rows = client
            .query(
                "SELECT body FROM control.price_versions ORDER BY effective_from",
                &[],
            )
            .await?;
        let mut versions = Vec::with_capacity(rows.len());
        for row in rows {
            let version =
                serde_json::from_value(row.get::<_, serde_json::Value>(0)).map_err(|e| {
                    DataError::Pool(format!("a price book version cannot be read: {e}"))
                })?;
            versions.push(version);
        }
        Ok(crate::pricing::PriceBook { versions })
    }
}
