//! Tenant scope as a type: `DataPlane` (per-tenant pools, fair-share admission) and `TenantTx`, the
//! only handle that reaches tenant data.
//!
//! **Invariant:** no handler opens a database connection; tenant data is reachable only through
//! `TenantTx::begin`, which takes a `Tenant` (built by the auth layer from a verified token) and checks
//! out a connection that logs in as that tenant's own database role. The database enforces the rest
//! (the role can use only its own schema, or its own pool rows). A `TenantTx` dropped without `commit`
//! discards its connection, so no transaction state is ever handed to the next request.
//!
//! This module must not accept a tenant id from anywhere but a `Tenant`, and must not build SQL text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::{Object, Pool};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;

use crate::auth::Tenant;
use crate::db::DataError;
use crate::db::roles::{allowed_memberships, check_role_over};
use crate::db::{DbEndpoint, build_pool, rds_iam};
use crate::domain::{Namespace, TenantId, Tier};
use crate::registry::TenantRecord;
use crate::secrets::{SecretName, SecretStore};

/// A pool's identity: the role it logs in as, its database, and the schema its transactions pin.
type PoolKey = (String, String, String, Lane);

/// Which of a tenant's pools a statement uses. The ledger's group commit has a connection of its
/// own, so a tenant's durable commits never queue behind its calls' admissions for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Admissions and every other statement of a request (`max_connections_per_tenant`).
    Calls,
    /// The ledger writer's batches (one connection).
    Ledger,
}

/// A pool built once however many requests ask for it at the same time (each build connects, and a
/// tenant role's connection limit would refuse a crowd of them).
type PoolCell = Arc<tokio::sync::OnceCell<Pool>>;

/// What `DataPlane::pool_usage` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub pools: usize,
    /// Connections open, in use or idle.
    pub size: usize,
    /// Idle connections.
    pub available: usize,
}

/// Per-tenant connection pools, created on first use with the tenant's own credentials from the secret
/// store. Counts every statement it runs, so tests can prove a denied request touched nothing.
#[derive(Debug)]
pub struct DataPlane {
    endpoint: DbEndpoint,
    secrets: SecretStore,
    /// Pools by (role, database, schema, lane): one per tenant, location and lane. At
    /// most `max_pools`; the least recently used pool is dropped first (its idle connections close
    /// with it, connections in use finish their transaction first).
    pools: Mutex<HashMap<PoolKey, (PoolCell, u64)>>,
    uses: AtomicU64,
    max_pools: std::sync::atomic::AtomicUsize,
    namespace: Namespace,
    statements: Arc<AtomicU64>,
    max_connections_per_tenant: usize,
    /// Requests one tenant may have in flight at once (`admit`), so a tenant's burst queues on its
    /// own admissions and never on other tenants' connections.
    max_in_flight_per_tenant: usize,
    admissions: std::sync::Mutex<HashMap<TenantId, Arc<tokio::sync::Semaphore>>>,
    /// RDS IAM token source, when the endpoint logs in with IAM (loaded on first use).
    iam: tokio::sync::OnceCell<rds_iam::TokenSource>,
}

impl DataPlane {
    pub fn new(endpoint: DbEndpoint, secrets: SecretStore, namespace: Namespace) -> Self {
        Self {
            endpoint,
            secrets,
            pools: Mutex::new(HashMap::new()),
            uses: AtomicU64::new(0),
            max_pools: std::sync::atomic::AtomicUsize::new(256),
            namespace,
            statements: Arc::new(AtomicU64::new(0)),
            max_connections_per_tenant: 4,
            max_in_flight_per_tenant: 32,
            admissions: std::sync::Mutex::new(HashMap::new()),
            iam: tokio::sync::OnceCell::new(),
        }
    }

    /// Caps the connections of each tenant's pool (default 4).
    pub fn with_max_connections_per_tenant(mut self, max: usize) -> Self {
        self.max_connections_per_tenant = max.max(1);
        self
    }

    /// Caps the requests one tenant may have in flight at once (default 32).
    pub fn with_max_in_flight_per_tenant(mut self, max: usize) -> Self {
        self.max_in_flight_per_tenant = max.max(1);
        self
    }

    /// The database endpoint tenant data is reached at.
    pub fn endpoint(&self) -> &DbEndpoint {
        &self.endpoint
    }

    /// The per-tenant in-flight cap.
    pub fn max_in_flight_per_tenant(&self) -> usize {
        self.max_in_flight_per_tenant
    }

    /// Admits one request of `tenant`, or refuses it at once with `DataError::Busy` when the tenant
    /// already has its maximum in flight (security case 58, issue 9 item 4). Held for the whole
    /// request (a chat takes it before the model call), it costs no connection and no statement.
    pub fn admit(&self, tenant: &Tenant) -> Result<Admission, DataError> {
        let semaphore = {
            let mut map = self
                .admissions
                .lock()
                .map_err(|_| DataError::Pool("admission table poisoned".into()))?;
            map.entry(tenant.id().clone())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Semaphore::new(self.max_in_flight_per_tenant))
                })
                .clone()
        };
        let permit = semaphore
            .try_acquire_owned()
            .map_err(|_| DataError::Busy(self.max_in_flight_per_tenant))?;
        Ok(Admission {
            tenant: tenant.id().clone(),
            _permit: permit,
        })
    }

    /// Checks out a connection from `tenant`'s pool outside any `TenantTx` and reports what it carries:
    /// its backend, any `app.tenant_id`, and whether a transaction is still open on it. A connection
    /// handed out clean has no tenant and no open transaction (security cases 36-38); tests and
    /// health checks read it, and it reaches no tenant data.
    pub async fn probe(&self, tenant: &Tenant) -> Result<ConnectionProbe, DataError> {
        let pool = self.pool_for(tenant.record(), Lane::Calls).await?;
        #[expect(
            clippy::disallowed_methods,
            reason = "the hygiene probe reads settings, never tenant tables"
        )]
        let client = pool.get().await.map_err(crate::db::pool_error)?;
        let row = client
            .query_one(
                "SELECT pg_backend_pid(), coalesce(current_setting('app.tenant_id', true), '')",
                &[],
            )
            .await?;
        // A savepoint exists only inside a transaction block: outside one it is refused (25P01).
        let in_transaction = match client.batch_execute("SAVEPOINT tenantctl_probe").await {
            Ok(()) => {
                client
                    .batch_execute("RELEASE SAVEPOINT tenantctl_probe")
                    .await?;
                true
            }
            Err(e)
                if e.code()
                    == Some(&tokio_postgres::error::SqlState::NO_ACTIVE_SQL_TRANSACTION) =>
            {
                false
            }
            Err(e) => return Err(e.into()),
        };
        Ok(ConnectionProbe {
            backend_pid: row.get(0),
            tenant_setting: Some(row.get::<_, String>(1)).filter(|s| !s.is_empty()),
            in_transaction,
        })
    }

    /// Caps the number of connection pools kept (default 256).
    pub fn set_max_pools(&self, max: usize) {
        self.max_pools.store(max.max(1), Ordering::Relaxed);
    }

    /// The pools kept and their connections (for metrics).
    pub async fn pool_usage(&self) -> PoolUsage {
        let pools = self.pools.lock().await;
        let mut usage = PoolUsage {
            pools: pools.len(),
            ..PoolUsage::default()
        };
        for (cell, _) in pools.values() {
            if let Some(pool) = cell.get() {
                let status = pool.status();
                usage.size += status.size;
                usage.available += status.available;
            }
        }
        usage
    }

    /// Connection pools currently kept.
    pub async fn pool_count(&self) -> usize {
        self.pools.lock().await.len()
    }

    /// Statements run through tenant handles since start.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    async fn pool_for(&self, record: &TenantRecord, lane: Lane) -> Result<Pool, DataError> {
        let key = (
            record.db_role.clone(),
            record.db_name.clone(),
            record.schema(),
            lane,
        );
        let tick = self.uses.fetch_add(1, Ordering::Relaxed);
        let cell = {
            let mut pools = self.pools.lock().await;
            if !pools.contains_key(&key) {
                while pools.len() >= self.max_pools.load(Ordering::Relaxed) {
                    let Some(oldest) = pools
                        .iter()
                        .min_by_key(|(_, (_, last))| *last)
                        .map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    pools.remove(&oldest);
                }
            }
            let (cell, last) = pools
                .entry(key)
                .or_insert_with(|| (PoolCell::default(), tick));
            *last = tick;
            cell.clone()
        };
        // Built without holding the map lock (the secret fetch and the role check are network
        // calls, and other tenants' requests must not wait behind them), once per key: requests of
        // the same tenant wait for the one build. A failed build leaves the cell empty for a retry.
        cell.get_or_try_init(|| self.build(record, lane))
            .await
            .cloned()
    }

    async fn build(&self, record: &TenantRecord, lane: Lane) -> Result<Pool, DataError> {
        let mut endpoint = self.endpoint.clone();
        endpoint.dbname = record.db_name.clone();
        let mut config = endpoint.config(&record.db_role, "tenant-runtime");
        let tokens = if endpoint.iam_auth {
            let tokens = self.iam_tokens().await?;
            // Fail here, with the reason, rather than at every connection attempt.
            tokens
                .token(&endpoint.host, endpoint.port, &record.db_role)
                .await
                .map_err(|e| DataError::Iam(e.to_string()))?;
            Some(tokens)
        } else {
            // Every tier logs in as the tenant's own role with the tenant's own password.
            let password = self
                .secrets
                .get(&SecretName::for_tenant(&record.id, "db-password")?)
                .await?;
            config.password(password.expose_secret().as_bytes());
            None
        };
        let size = match lane {
            Lane::Calls => self.max_connections_per_tenant,
            Lane::Ledger => 1,
        };
        let pool = build_pool(config, size, &endpoint, tokens)?;
        // Before first use, the role checks itself (security case 34): in a tenant's Lambda there is no
        // other role to ask, and the answer comes from the same catalogs either way.
        {
            #[expect(
                clippy::disallowed_methods,
                reason = "the role self-check, before the pool serves any tenant transaction"
            )]
            let client = pool.get().await.map_err(crate::db::pool_error)?;
            check_role_over(
                &client,
                &record.db_role,
                &allowed_memberships(&self.namespace, true),
            )
            .await?;
        }
        Ok(pool)
    }

    /// The token source for IAM logins, loaded from the AWS configuration chain once.
    async fn iam_tokens(&self) -> Result<rds_iam::TokenSource, DataError> {
        self.iam
            .get_or_try_init(|| async {
                rds_iam::TokenSource::from_environment()
                    .await
                    .map_err(|e| DataError::Iam(e.to_string()))
            })
            .await
            .cloned()
    }

    /// Drops the cached pool of a tenant (after a credential rotation or offboarding).
    pub async fn forget(&self, record: &TenantRecord) {
        let mut pools = self.pools.lock().await;
        for lane in [Lane::Calls, Lane::Ledger] {
            pools.remove(&(
                record.db_role.clone(),
                record.db_name.clone(),
                record.schema(),
                lane,
            ));
        }
    }
}

/// One admitted request of one tenant (`DataPlane::admit`); its slot frees when it drops.
#[derive(Debug)]
pub struct Admission {
    tenant: TenantId,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What `DataPlane::probe` found on a pooled connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionProbe {
    pub backend_pid: i32,
    pub tenant_setting: Option<String>,
    pub in_transaction: bool,
}

/// A transaction that can reach one tenant's data and nothing else.
#[derive(Debug)]
pub struct TenantTx {
    client: Option<Object>,
    tenant: TenantId,
    committed: bool,
    statements: Arc<AtomicU64>,
    /// The request's admission; `None` only inside `call_once`, whose caller holds it.
    _admission: Option<Admission>,
}

impl TenantTx {
    /// A connection of `tenant`'s pool, for a request `admission` admitted for that same tenant.
    async fn checkout(
        data: &DataPlane,
        tenant: &Tenant,
        admission: &Admission,
        lane: Lane,
    ) -> Result<Object, DataError> {
        if admission.tenant != *tenant.id() {
            return Err(DataError::Pool(
                "an admission of another tenant was offered".into(),
            ));
        }
        let pool = data.pool_for(tenant.record(), lane).await?;
        #[expect(
            clippy::disallowed_methods,
            reason = "this is the one place that checks out tenant connections"
        )]
        pool.get().await.map_err(crate::db::pool_error)
    }

    /// The transaction-local settings of `tenant`'s transactions: `app.tenant_id` (the pool tier's
    /// second check) and the pinned search path.
    fn settings(tenant: &Tenant) -> (&str, String) {
        let tenant_id = match tenant.record().tier {
            Tier::Pool => tenant.id().as_str(),
            Tier::Schema | Tier::Dedicated => "",
        };
        (tenant_id, tenant.record().schema())
    }

    /// Opens a transaction as `tenant`'s own database role, admitting the request first.
    pub async fn begin(data: &DataPlane, tenant: &Tenant) -> Result<Self, DataError> {
        let admission = data.admit(tenant)?;
        Self::begin_admitted(data, tenant, admission).await
    }

    /// Opens a transaction for a request `admission` already admitted (so a request that must not be
    /// refused halfway, after its model call, is refused before it instead).
    pub async fn begin_admitted(
        data: &DataPlane,
        tenant: &Tenant,
        admission: Admission,
    ) -> Result<Self, DataError> {
        let client = Self::checkout(data, tenant, &admission, Lane::Calls).await?;
        Self::open(data, tenant, client, Some(admission)).await
    }

    /// BEGIN and the settings on `client`, a connection of `tenant`'s pool.
    async fn open(
        data: &DataPlane,
        tenant: &Tenant,
        client: Object,
        admission: Option<Admission>,
    ) -> Result<Self, DataError> {
        let tx = Self {
            client: Some(client),
            tenant: tenant.id().clone(),
            committed: false,
            statements: data.statements.clone(),
            _admission: admission,
        };
        // Both settings are transaction-local (`is_local = true`): gone at COMMIT or ROLLBACK, never
        // left on the connection for the next checkout (security cases 36-38), directly or behind a
        // transaction-pooling PgBouncer. The search path pins names to the schema the registry points
        // at, whatever the role's default (which a tier move changes while it provisions the
        // destination). The pool tier's `app.tenant_id` is the second, agreeing check of its row-level
        // security (the first is the login role). BEGIN and the settings are pipelined: one round trip.
        tx.statements.fetch_add(2, Ordering::Relaxed);
        let client = tx.client()?;
        let set = client
            .prepare_cached(
                "SELECT set_config('app.tenant_id', $1, true), set_config('search_path', $2, true)",
            )
            .await?;
        let (tenant_id, schema) = Self::settings(tenant);
        let params: [&(dyn ToSql + Sync); 2] = [&tenant_id, &schema];
        tokio::try_join!(
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            client.query(&set, &params),
        )?;
        Ok(tx)
    }

    /// One call of a tenant-schema function that sets the transaction's tenant settings itself
    /// (`tenant_admit`, `tenant_release`, `ledger_append`: their first two parameters are the
    /// tenant's id and the schema the registry points at, given here from `tenant`, never by the
    /// caller), as `tenant`'s role, in a transaction of its own: one message and one reply, where an
    /// explicit transaction takes four of each. The function's name resolves on the role's default
    /// search path (its own schema, or `pool`); whichever copy runs, it works on the schema passed
    /// in. Where the name does not resolve (the tenant's code changed its role's default, or a tier
    /// move is provisioning), the call runs in an ordinary pinned transaction instead. `admission`
    /// is the caller's, kept until this returns.
    pub async fn call_once(
        data: &DataPlane,
        tenant: &Tenant,
        admission: &Admission,
        lane: Lane,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, DataError> {
        let client = Self::checkout(data, tenant, admission, lane).await?;
        data.statements.fetch_add(1, Ordering::Relaxed);
        let (tenant_id, schema) = (tenant.id().as_str(), tenant.record().schema());
        let mut all: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(params.len() + 2);
        all.push(&tenant_id);
        all.push(&schema);
        all.extend_from_slice(params);
        let result = match client.prepare_cached(sql).await {
            Ok(statement) => client.query(&statement, &all).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // Whatever the failure left on it, this connection serves nobody else.
                drop(Object::take(client));
                if e.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) {
                    return Err(e.into());
                }
                // The function is not where the connection's search path looks: the role's default
                // was tampered with, or (at execution) it named a schema a tier move has since
                // dropped. Nothing ran; run it again in a transaction that pins the schema itself.
                tracing::warn!(tenant = %tenant.id(), error = %e,
                    "a tenant function is not on the connection's search path; ran it pinned");
                let client = Self::checkout(data, tenant, admission, lane).await?;
                let tx = Self::open(data, tenant, client, None).await?;
                let rows = tx.query(sql, &all).await?;
                tx.commit().await?;
                Ok(rows)
            }
        }
    }

    /// The tenant this transaction belongs to (for `tenant_id` columns).
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn client(&self) -> Result<&Object, DataError> {
        self.client
            .as_ref()
            .ok_or_else(|| DataError::Pool("transaction already finished".into()))
    }

    async fn simple(&self, sql: &'static str) -> Result<(), DataError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.client()?.batch_execute(sql).await?;
        Ok(())
    }

    /// Runs a static query with bind parameters.
    pub async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, DataError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        let client = self.client()?;
        // Static SQL only, so the per-connection statement cache saves a parse round trip per query.
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    /// Runs a static statement with bind parameters; returns the rows affected.
    pub async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DataError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        let client = self.client()?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.execute(&statement, params).await?)
    }

    pub async fn commit(mut self) -> Result<(), DataError> {
        self.simple("COMMIT").await?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        if !self.committed
            && let Some(object) = self.client.take()
        {
            // Detach the connection from the pool and close it: the server rolls the transaction
            // back, and no half-finished transaction can be handed to another request.
            drop(Object::take(object));
        }
    }
}
