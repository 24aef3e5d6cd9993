//! Tenant scope as a type: the tenant directory, and `TenantTx`, the only handle that reaches tenant data.
//!
//! **Invariant:** no handler opens a database connection; tenant data is reachable only through
//! `TenantTx::begin`, which takes a `Tenant` (built by the auth layer from a verified token) and checks
//! out a connection that logs in as that tenant's own database role. The database enforces the rest
//! (the role can use only its own schema). A `TenantTx` dropped without `commit` discards its
//! connection, so no transaction state is ever handed to the next request.
//!
//! This module must not accept a tenant id from anywhere but a `Tenant`, and must not build SQL text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::auth::Tenant;
use crate::domain::{Namespace, TenantId, Tier};
use crate::models::ModelPolicy;
use crate::secrets::{SecretError, SecretName, SecretStore};

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
}

impl TenantRecord {
    /// The schema the tenant's tables are in: `pool` for the pool tier, else the tenant's own.
    pub fn schema(&self) -> String {
        Namespace::data_schema(self.tier, &self.id)
    }
}

/// Where the Postgres cluster is: a host name or a unix socket directory, a port and a database; and,
/// for a server across a network (RDS), the CA bundle its certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbEndpoint {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    /// When set, every connection is TLS, verified against the certificates in this PEM file (the
    /// RDS bundle); without it connections are plain (the local target's private unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Log in with RDS IAM tokens (a fresh one per connection, from the AWS credential chain) instead
    /// of passwords from the secret store. Needs `tls_ca`: a token is never sent in the clear.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub iam_auth: bool,
}

impl DbEndpoint {
    /// A tokio-postgres config for `user`; the caller sets the password.
    pub fn config(&self, user: &str, application_name: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(user)
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(5));
        if self.tls_ca.is_some() {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        config
    }

    /// The TLS connector for this endpoint, if it uses TLS.
    pub fn tls(&self) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, DataError> {
        if self.iam_auth && self.tls_ca.is_none() {
            return Err(DataError::Tls(
                "IAM authentication needs `tls_ca`: a token is never sent without verified TLS"
                    .into(),
            ));
        }
        self.tls_ca.as_deref().map(verified_tls).transpose()
    }
}

/// Opens one connection with `config`, over `tls` when given (else plain), and drives it in a task whose
/// handle is returned (deadpool aborts it when the pooled client goes).
pub async fn connect(
    config: &tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    fn drive<S, T>(connection: tokio_postgres::Connection<S, T>) -> tokio::task::JoinHandle<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        })
    }
    match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls).await?;
            Ok((client, drive(connection)))
        }
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            Ok((client, drive(connection)))
        }
    }
}

/// Opens connections with a fresh RDS IAM token as the password, over verified TLS (a pooled
/// connection may be opened long after the pool, and a token lives 15 minutes).
struct IamConnect {
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tokens: crate::rds_iam::TokenSource,
    host: String,
    port: u16,
}

impl deadpool_postgres::Connect for IamConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let mut config = pg_config.clone();
        Box::pin(async move {
            let user = config.get_user().unwrap_or_default().to_owned();
            match self.tokens.token(&self.host, self.port, &user).await {
                Ok(token) => {
                    config.password(token.expose_secret().as_bytes());
                }
                // Connecting without a password fails with the server's own error, which is what the
                // pool can report; the cause is logged here.
                Err(e) => tracing::error!(error = %e, role = %user, "no RDS IAM token"),
            }
            connect(&config, Some(self.tls.clone())).await
        })
    }
}

/// A TLS connector trusting only the certificates in the PEM file `ca_file`.
pub fn verified_tls(
    ca_file: &std::path::Path,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DataError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let bad = |why: String| DataError::Tls(format!("`{}`: {why}", ca_file.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| bad(format!("cannot read the CA bundle: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad(
            "holds no usable certificate (use the RDS bundle, global-bundle.pem)".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("tenant data store: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("tenant connection pool: {0}")]
    Pool(String),
    #[error("tenant credentials: {0}")]
    Secret(#[from] SecretError),
    #[error("database TLS: {0}")]
    Tls(String),
    #[error("database IAM authentication: {0}")]
    Iam(String),
    #[error("database role `{role}` has {hazards}; refusing to use it (security case 34)")]
    UnsafeRole { role: String, hazards: String },
    /// The tenant already has its maximum of requests in flight in this process (fair share): the
    /// caller answers 429 with Retry-After, before any connection is checked out.
    #[error("tenant has {0} requests in flight, its maximum")]
    Busy(usize),
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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What makes a role unfit to reach tenant data (docs/security.md case 34):
/// superuser, BYPASSRLS, CREATEROLE, CREATEDB, REPLICATION, owning a table in a tenant or control
/// schema, or membership (direct or through other roles, whatever their INHERIT setting) in any role
/// but the ones listed in `$2` (`allowed_memberships`): so not in `pg_read_all_data`,
/// `pg_write_all_data`, `pg_signal_backend`, `rds_superuser`, the migrator or another tenant's role.
/// One row for role `$1`. Used by the runtime's startup self-check, by every tenant connection pool
/// before first use (as the tenant's own role), and by `tenantctl apply`, so all mean the same thing.
pub const ROLE_HAZARDS_SQL: &str = "SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication, \
        EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relowner = r.oid \
                   AND (n.nspname IN ('pool', 'control') OR starts_with(n.nspname, 't_'))), \
        ARRAY(SELECT m.rolname::text FROM pg_roles m \
               WHERE m.oid <> r.oid AND pg_has_role(r.oid, m.oid, 'MEMBER') \
                 AND m.rolname::text <> ALL ($2::text[]) ORDER BY 1) \
   FROM pg_roles r WHERE r.rolname = $1";

/// The attribute hazards, in the column order of `ROLE_HAZARDS_SQL` (the last column lists
/// memberships).
pub const ROLE_HAZARDS: [&str; 6] = [
    "SUPERUSER",
    "BYPASSRLS",
    "CREATEROLE",
    "CREATEDB",
    "REPLICATION",
    "ownership of tenant tables",
];

/// The roles a role may be a member of: `rds_iam` (how IAM logins work on RDS) and, for a tenant's
/// role, the pool group that holds the pool table grants. A tenant role of any tier may be in the
/// group: the pool policy admits only rows that map to the role itself, and a tier move keeps the role
/// a member until its old copy is gone. A platform role (the runtime's registry reader, the pool group
/// itself) may be in nothing else.
pub fn allowed_memberships(namespace: &Namespace, tenant_role: bool) -> Vec<String> {
    let mut allowed = vec!["rds_iam".to_owned()];
    if tenant_role {
        allowed.push(namespace.pool_role());
    }
    allowed
}

/// The hazards a `ROLE_HAZARDS_SQL` row reports, each named.
pub fn role_hazards_of(row: &tokio_postgres::Row) -> Vec<String> {
    let mut hazards: Vec<String> = ROLE_HAZARDS
        .iter()
        .enumerate()
        .filter(|(i, _)| row.get::<_, bool>(*i))
        .map(|(_, h)| (*h).to_owned())
        .collect();
    let memberships: Vec<String> = row.get(ROLE_HAZARDS.len());
    hazards.extend(
        memberships
            .into_iter()
            .map(|m| format!("membership in {m}")),
    );
    hazards
}

/// Fails when `role` exists and has any hazard (see `ROLE_HAZARDS_SQL`), over `client`.
pub async fn check_role_over(
    client: &tokio_postgres::Client,
    role: &str,
    allowed: &[String],
) -> Result<(), DataError> {
    let row = client
        .query_opt(ROLE_HAZARDS_SQL, &[&role, &allowed])
        .await?;
    match row.map(|r| role_hazards_of(&r)) {
        Some(h) if !h.is_empty() => Err(DataError::UnsafeRole {
            role: role.to_owned(),
            hazards: h.join(", "),
        }),
        _ => Ok(()),
    }
}

/// Reads the tenant registry as the runtime's read-only control-plane role.
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
        let rows = client
            .query(
                "SELECT tenant_id, display_name, tier, issuer, audience, tenant_claim, \
                        model_policy, db_role, coalesce(db_name, current_database()), status \
                   FROM control.tenants WHERE status IN ('active', 'read_only') ORDER BY tenant_id",
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
                Ok::<_, String>(TenantRecord {
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
                })
            })();
            match parsed {
                Ok(record) => out.push(record),
                Err(e) => tracing::error!(tenant = %crate::domain::printable(&raw_id), error = %e,
                    "skipping registry row the runtime cannot interpret"),
            }
        }
        Ok(out)
    }
}

fn build_pool(
    config: tokio_postgres::Config,
    max_size: usize,
    endpoint: &DbEndpoint,
    tokens: Option<crate::rds_iam::TokenSource>,
) -> Result<Pool, DataError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match (endpoint.tls()?, tokens) {
        (Some(tls), Some(tokens)) => Manager::from_connect(
            config,
            IamConnect {
                tls,
                tokens,
                host: endpoint.host.clone(),
                port: endpoint.port,
            },
            manager_config,
        ),
        (Some(tls), None) => Manager::from_config(config, tls, manager_config),
        (None, _) => Manager::from_config(config, NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DataError::Pool(e.to_string()))
}

/// A pool's identity: the role it logs in as, its database, and the schema its transactions pin.
type PoolKey = (String, String, String);

/// Per-tenant connection pools, created on first use with the tenant's own credentials from the secret
/// store. Counts every statement it runs, so tests can prove a denied request touched nothing.
#[derive(Debug)]
pub struct DataPlane {
    endpoint: DbEndpoint,
    secrets: SecretStore,
    /// Pools by (role, database, schema): one per tenant and location. At
    /// most `max_pools`; the least recently used pool is dropped first (its idle connections close
    /// with it, connections in use finish their transaction first).
    pools: Mutex<HashMap<PoolKey, (Pool, u64)>>,
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
    iam: tokio::sync::OnceCell<crate::rds_iam::TokenSource>,
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
        let pool = self.pool_for(tenant.record()).await?;
        #[expect(
            clippy::disallowed_methods,
            reason = "the hygiene probe reads settings, never tenant tables"
        )]
        let client = pool
            .get()
            .await
            .map_err(|e| DataError::Pool(e.to_string()))?;
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

    /// Connection pools currently kept.
    pub async fn pool_count(&self) -> usize {
        self.pools.lock().await.len()
    }

    /// Statements run through tenant handles since start.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    async fn pool_for(&self, record: &TenantRecord) -> Result<Pool, DataError> {
        let key = (
            record.db_role.clone(),
            record.db_name.clone(),
            record.schema(),
        );
        let tick = self.uses.fetch_add(1, Ordering::Relaxed);
        if let Some((pool, last)) = self.pools.lock().await.get_mut(&key) {
            *last = tick;
            return Ok(pool.clone());
        }
        // Built without holding the map lock: the secret fetch and the role check are network calls,
        // and other tenants' requests must not wait behind them.
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
        let pool = build_pool(config, self.max_connections_per_tenant, &endpoint, tokens)?;
        // Before first use, the role checks itself (security case 34): in a tenant's Lambda there is no
        // other role to ask, and the answer comes from the same catalogs either way.
        {
            #[expect(
                clippy::disallowed_methods,
                reason = "the role self-check, before the pool serves any tenant transaction"
            )]
            let client = pool
                .get()
                .await
                .map_err(|e| DataError::Pool(e.to_string()))?;
            check_role_over(
                &client,
                &record.db_role,
                &allowed_memberships(&self.namespace, true),
            )
            .await?;
        }
        let mut pools = self.pools.lock().await;
        if let Some((existing, last)) = pools.get_mut(&key) {
            // Another request built it meanwhile; keep one pool per key.
            *last = tick;
            return Ok(existing.clone());
        }
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
        pools.insert(key, (pool.clone(), tick));
        Ok(pool)
    }

    /// The token source for IAM logins, loaded from the AWS configuration chain once.
    async fn iam_tokens(&self) -> Result<crate::rds_iam::TokenSource, DataError> {
        self.iam
            .get_or_try_init(|| async {
                crate::rds_iam::TokenSource::from_environment()
                    .await
                    .map_err(|e| DataError::Iam(e.to_string()))
            })
            .await
            .cloned()
    }

    /// Drops the cached pool of a tenant (after a credential rotation or offboarding).
    pub async fn forget(&self, record: &TenantRecord) {
        self.pools.lock().await.remove(&(
            record.db_role.clone(),
            record.db_name.clone(),
            record.schema(),
        ));
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
    _admission: Admission,
}

impl TenantTx {
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
        if admission.tenant != *tenant.id() {
            return Err(DataError::Pool(
                "an admission of another tenant was offered".into(),
            ));
        }
        let pool = data.pool_for(tenant.record()).await?;
        #[expect(
            clippy::disallowed_methods,
            reason = "this is the one place that checks out tenant connections"
        )]
        let client = pool
            .get()
            .await
            .map_err(|e| DataError::Pool(e.to_string()))?;
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
        let tenant_id = match tenant.record().tier {
            Tier::Pool => tenant.id().as_str(),
            Tier::Schema | Tier::Dedicated => "",
        };
        let schema = tenant.record().schema();
        let params: [&(dyn ToSql + Sync); 2] = [&tenant_id, &schema];
        tokio::try_join!(
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            client.query(&set, &params),
        )?;
        Ok(tx)
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
        if !self.committed {
            if let Some(object) = self.client.take() {
                // Detach the connection from the pool and close it: the server rolls the transaction
                // back, and no half-finished transaction can be handed to another request.
                drop(Object::take(object));
            }
        }
    }
}
