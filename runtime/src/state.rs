//! The composition root: `RuntimeConfig` (the runtime's whole configuration) and `AppState`, built
//! from it (secret store, registry, authenticator, data plane, model router). This module wires; it
//! must not hold business logic or know HTTP.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Authenticator, DeploymentPolicy, IssuerConfig};
use crate::db::DbEndpoint;
use crate::metering::writer::{CommitMode, LedgerWriter};
use crate::models::ModelRouter;
use crate::models::providers::UpstreamConfig;
use crate::registry::{ControlPlane, TenantDirectory};
use crate::secrets::cache::SecretCache;
use crate::secrets::{LocalSecretStore, SecretName, SecretStore};
use crate::tenancy::DataPlane;

/// Everything a request may need, shared.
#[derive(Debug, Clone)]
pub struct AppState {
    pub auth: Arc<Authenticator>,
    pub directory: Arc<TenantDirectory>,
    pub data: Arc<DataPlane>,
    /// Ledger rows reach the database through it (group commit, or direct on a tenant's Lambda).
    pub ledger: Arc<LedgerWriter>,
    pub models: ModelRouter,
    /// The secret store behind a TTL cache: provider keys are read through it on the request path.
    pub secrets: Arc<SecretCache>,
    /// The registry, where one is read (not in a single-tenant deployment): the platform routes'.
    pub control: Option<ControlPlane>,
    /// The web console's settings, when it is served (`RuntimeConfig::console`).
    pub console: Option<Arc<ConsoleSettings>>,
}

/// The web console's settings, read at startup.
#[derive(Debug)]
pub struct ConsoleSettings {
    /// The runtime's base URL as browsers reach it (no trailing slash).
    pub public_url: String,
    /// Whether cookies are `Secure`: always, but on a plain-http loopback URL (local evaluation).
    pub secure_cookies: bool,
    /// The key session cookies are sealed with (64 hex digits: AES-256-GCM).
    pub session_key: secrecy::SecretString,
}

/// Serving the web console (`/console`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The runtime's base URL as browsers reach it: `https://...`, or `http://127.0.0.1:<port>` on
    /// loopback. The sign-in's redirect URI is `<public_url>/console/callback` (register it with
    /// the issuer); cookies are `Secure` unless this is plain http on loopback.
    pub public_url: String,
    /// The secret holding the key session cookies are sealed with: 64 hex digits (32 random
    /// bytes). Every instance of the runtime must read the same one.
    #[serde(default = "default_session_key_secret")]
    pub session_key_secret: String,
}

/// The secret `ConsoleConfig::session_key_secret` names by default.
pub const CONSOLE_SESSION_KEY: &str = "platform/console/session-key";

fn default_session_key_secret() -> String {
    CONSOLE_SESSION_KEY.to_owned()
}

impl ConsoleConfig {
    /// Checks the URL and reads the session key: a console that cannot seal sessions is not served.
    async fn load(&self, secrets: &SecretStore) -> Result<ConsoleSettings, StartupError> {
        let url = url::Url::parse(&self.public_url).map_err(|e| {
            StartupError::Config(format!(
                "`console.public_url` `{}` is not a URL ({e}): use https://<host> (or http://127.0.0.1:<port> on loopback)",
                self.public_url
            ))
        })?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        let secure_cookies = match url.scheme() {
            "https" => true,
            "http" if loopback => false,
            _ => {
                return Err(StartupError::Config(format!(
                    "`console.public_url` `{}` must be https (plain http only on loopback): session cookies off loopback are `Secure`",
                    self.public_url
                )));
            }
        };
        if url.path() != "/" || url.query().is_some() {
            return Err(StartupError::Config(format!(
                "`console.public_url` `{}` must be a bare origin (no path or query): the console is served under `/console`",
                self.public_url
            )));
        }
        let name = SecretName::parse(&self.session_key_secret)?;
        let key = secrets.get(&name).await?;
        {
            use secrecy::ExposeSecret as _;
            let k = key.expose_secret();
            if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StartupError::Config(format!(
                    "the console's session key `{}` is not 64 hex digits: store 32 random bytes there as hex (`tenantctl serve` creates it on the local target)",
                    self.session_key_secret
                )));
            }
        }
        Ok(ConsoleSettings {
            public_url: self.public_url.trim_end_matches('/').to_owned(),
            secure_cookies,
            session_key: key,
        })
    }
}

/// The runtime's configuration (JSON). Holds no secret: credentials are read from the secret store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Deployment namespace (prefix of the database role names).
    pub namespace: crate::domain::Namespace,
    pub database: DbEndpoint,
    /// Directory of the local secret store (used when `secret_store` is `local`).
    #[serde(default)]
    pub secrets_dir: std::path::PathBuf,
    /// Where secrets come from: `local` (the directory above) or `aws` (Secrets Manager, through the
    /// standard AWS configuration chain; `AWS_ENDPOINT_URL` is honoured).
    #[serde(default)]
    pub secret_store: SecretStoreKind,
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub deployment: DeploymentPolicy,
    #[serde(default = "default_refresh")]
    pub registry_refresh_secs: u64,
    /// How long the runtime may serve from its last good copy of the registry when refreshes fail;
    /// past it every tenant request gets 503 `registry_unavailable` until a refresh succeeds. At least
    /// twice the refresh interval.
    #[serde(default = "default_max_stale")]
    pub registry_max_stale_secs: u64,
    /// Database connections each tenant's pool may hold in this process (a Lambda instance needs
    /// few: it serves one request at a time).
    #[serde(default = "default_connections")]
    pub max_connections_per_tenant: usize,
    /// Requests one tenant may have in flight in this process; beyond it, 429 with Retry-After
    /// before any connection is checked out or any model is called (fair share).
    #[serde(default = "default_in_flight")]
    pub max_in_flight_per_tenant: usize,
    /// A single-tenant deployment (a tenant's Lambda on AWS): the tenant's registry record itself.
    /// The runtime then needs no control-plane credential (its role may read only `tenants/<id>/`
    /// secrets, security case 64); it serves only this tenant, reaching its data as the tenant's
    /// database role (with RDS IAM tokens when `database.iam_auth`, else `tenants/<id>/db-password`).
    /// `deployment.tenant` must name the same tenant.
    #[serde(default)]
    pub tenant: Option<crate::registry::TenantRecord>,
    /// How long a provider key read from the secret store is used before it is read again (a
    /// rotation takes effect within it; a provider 401 re-reads at once). If the store cannot be
    /// read after it, calls needing the key answer 503 until it can.
    #[serde(default = "default_key_ttl")]
    pub provider_key_ttl_secs: u64,
    /// Timeouts and retries of calls to model providers.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// How ledger rows are committed: `group` (concurrent requests of a tenant share a durable
    /// commit; each still waits for the commit holding its row), `direct` (one commit per request),
    /// or `auto` (the default: `direct` when `tenant` is set, a Lambda serving one request at a
    /// time, `group` otherwise).
    #[serde(default)]
    pub ledger_commit: CommitMode,
    /// The web console (`/console`). Unset: it is not served (its routes answer 404).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
}

/// Which secret store backend the runtime uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretStoreKind {
    #[default]
    Local,
    Aws,
}

fn default_refresh() -> u64 {
    5
}

fn default_max_stale() -> u64 {
    30
}

fn default_connections() -> usize {
    4
}

fn default_in_flight() -> usize {
    32
}

fn default_key_ttl() -> u64 {
    60
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("trusted issuers: {0}")]
    Issuers(String),
    #[error("secret store: {0}")]
    Secrets(#[from] crate::secrets::SecretError),
    #[error("control plane: {0}")]
    Data(#[from] crate::db::DataError),
    #[error("configuration: {0}")]
    Config(String),
}

impl AppState {
    /// Connects to the control plane, loads the tenant directory and issuer keys, and starts the
    /// background registry refresh.
    pub async fn from_config(config: &RuntimeConfig) -> Result<Self, StartupError> {
        let secrets = match config.secret_store {
            SecretStoreKind::Local => {
                SecretStore::Local(LocalSecretStore::open(&config.secrets_dir)?)
            }
            SecretStoreKind::Aws => {
                SecretStore::Aws(crate::secrets::AwsSecretStore::from_environment().await)
            }
        };
        let cache = Arc::new(SecretCache::new(
            secrets.clone(),
            Duration::from_secs(config.provider_key_ttl_secs.max(1)),
        ));
        let models =
            ModelRouter::new(config.upstream, cache.clone()).map_err(StartupError::Config)?;
        let console = match &config.console {
            Some(c) => Some(Arc::new(c.load(&secrets).await?)),
            None => None,
        };
        if let Some(record) = &config.tenant {
            let mut state = Self::single_tenant(config, record, secrets, cache, models).await?;
            state.console = console;
            return Ok(state);
        }
        let control = ControlPlane::connect(
            &config.database,
            &config.namespace.runtime_role(),
            &secrets,
            &SecretName::platform("db/runtime-password")?,
        )
        .await?;
        // Startup self-check (security case 34): refuse to run with a role that could bypass isolation.
        let platform_role = crate::db::roles::allowed_memberships(&config.namespace, false);
        control
            .check_role(&config.namespace.runtime_role(), &platform_role)
            .await?;
        control
            .check_role(&config.namespace.pool_role(), &platform_role)
            .await?;
        control.check_group(&config.namespace.pool_role()).await?;
        if config.registry_max_stale_secs < 2 * config.registry_refresh_secs.max(1) {
            return Err(StartupError::Config(format!(
                "`registry_max_stale_secs` ({}) must be at least twice `registry_refresh_secs` ({})",
                config.registry_max_stale_secs, config.registry_refresh_secs
            )));
        }
        let directory = Arc::new(
            TenantDirectory::new(control.load_tenants().await?)
                .with_max_stale(Duration::from_secs(config.registry_max_stale_secs)),
        );
        let auth = Authenticator::load(&config.issuers, config.deployment.clone())
            .await
            .map_err(StartupError::Issuers)?;
        let refresh = Duration::from_secs(config.registry_refresh_secs.max(1));
        let weak = Arc::downgrade(&directory);
        let data = DataPlane::new(config.database.clone(), secrets, config.namespace.clone())
            .with_max_connections_per_tenant(config.max_connections_per_tenant)
            .with_max_in_flight_per_tenant(config.max_in_flight_per_tenant);
        let refresher = control.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                let Some(directory) = weak.upgrade() else {
                    break;
                };
                match refresher.load_tenants().await {
                    Ok(records) => directory.replace(records),
                    Err(e) => {
                        tracing::warn!(error = %e, "registry refresh failed; serving the last snapshot until it is too old")
                    }
                }
            }
        });
        let data = Arc::new(data);
        Ok(Self {
            auth: Arc::new(auth),
            directory,
            ledger: Arc::new(LedgerWriter::new(data.clone(), config.ledger_commit, false)),
            data,
            models,
            secrets: cache,
            control: Some(control),
            console,
        })
    }
}

impl AppState {
    /// A deployment serving exactly `record`, from configuration alone (no control plane).
    async fn single_tenant(
        config: &RuntimeConfig,
        record: &crate::registry::TenantRecord,
        secrets: SecretStore,
        cache: Arc<SecretCache>,
        models: ModelRouter,
    ) -> Result<Self, StartupError> {
        if config.deployment.tenant.as_ref() != Some(&record.id) {
            return Err(StartupError::Config(format!(
                "`tenant` is `{}` but `deployment.tenant` is not the same tenant; a single-tenant deployment must be pinned to it",
                record.id
            )));
        }
        let auth = Authenticator::load(&config.issuers, config.deployment.clone())
            .await
            .map_err(StartupError::Issuers)?;
        let data = Arc::new(
            DataPlane::new(config.database.clone(), secrets, config.namespace.clone())
                .with_max_connections_per_tenant(config.max_connections_per_tenant)
                .with_max_in_flight_per_tenant(config.max_in_flight_per_tenant),
        );
        Ok(Self {
            auth: Arc::new(auth),
            directory: Arc::new(TenantDirectory::new(vec![record.clone()])),
            ledger: Arc::new(LedgerWriter::new(data.clone(), config.ledger_commit, true)),
            data,
            models,
            secrets: cache,
            control: None,
            console: None,
        })
    }
}
