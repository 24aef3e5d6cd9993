//! Database plumbing shared by the registry reader and the data plane: where the cluster is, how a
//! connection is opened (plain on the local target's private socket, verified TLS elsewhere, RDS IAM
//! tokens as passwords on AWS), the connection pools, and the role hazards every role is checked for.
//!
//! This module knows no tenant and no request: it must not read tenant tables, take a tenant id, or
//! build SQL text. Tenant data is reached only through `tenancy::TenantTx`.

pub mod rds_iam;
pub mod roles;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

use crate::secrets::SecretError;

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
    /// Whether the server accepts a connection within `timeout` (a TCP connect, or the unix socket
    /// for a socket directory): no login, no statement. What readiness checks.
    pub async fn accepts_connections(&self, timeout: std::time::Duration) -> bool {
        let connect = async {
            if self.host.starts_with('/') {
                let path = format!("{}/.s.PGSQL.{}", self.host, self.port);
                tokio::net::UnixStream::connect(path).await.is_ok()
            } else {
                tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .is_ok()
            }
        };
        tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or(false)
    }

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
    tokens: rds_iam::TokenSource,
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
    #[error("tenant data store: {}", db_detail(.0))]
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
    /// One failure reported to every request whose row was in the same group commit.
    #[error("{0}")]
    Shared(std::sync::Arc<DataError>),
}

/// A pool's failure to hand out a connection, keeping the server's reason when it refused one.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> DataError {
    match e {
        deadpool_postgres::PoolError::Backend(db) => DataError::Db(db),
        other => DataError::Pool(other.to_string()),
    }
}

/// A driver error with what the server said (its Display alone is only "db error").
fn db_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// A connection pool for `config` (IAM token logins when `tokens` is given).
pub(crate) fn build_pool(
    config: tokio_postgres::Config,
    max_size: usize,
    endpoint: &DbEndpoint,
    tokens: Option<rds_iam::TokenSource>,
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
