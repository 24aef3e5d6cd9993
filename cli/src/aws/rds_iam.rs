//! IAM database authentication to the platform's RDS (issue 5 item 3): the admin connection's password
//! is a short-lived token, a SigV4-presigned `connect` request for the database user, made from the
//! standard AWS credential chain at each connection, sent only over TLS that verifies the server
//! against the RDS certificate bundle. No database password exists anywhere.
//!
//! Enabled with `TENANTCTL_DATABASE_AUTH=iam` (the URL then names host, port, user and database, and no
//! password) and `TENANTCTL_DATABASE_CA=<PEM bundle>` (AWS publishes the RDS bundle as
//! `global-bundle.pem`).

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use aws_credential_types::provider::SharedCredentialsProvider;
use runtime::db::rds_iam::TokenSource;
pub use runtime::db::rds_iam::{TOKEN_LIFETIME, auth_token};
use secrecy::SecretString;

/// The admin connection of the AWS target with IAM authentication.
#[derive(Clone)]
pub struct IamAccess {
    pub config: tokio_postgres::Config,
    tokens: TokenSource,
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for IamAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamAccess")
            .field("host", &self.config.get_hosts())
            .field("user", &self.config.get_user())
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// A TLS connector trusting only the certificates in `ca_file` (the RDS bundle).
pub fn tls(ca_file: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    runtime::db::verified_tls(ca_file).map_err(|e| {
        anyhow!("{e}\nhint: download the RDS bundle (global-bundle.pem) and point TENANTCTL_DATABASE_CA at it")
    })
}

impl IamAccess {
    /// From the admin URL (no password), the CA bundle, and the standard AWS configuration chain.
    pub async fn new(config: tokio_postgres::Config, ca_file: &Path) -> Result<Self> {
        if config.get_password().is_some() {
            bail!(
                "TENANTCTL_DATABASE_URL carries a password, but TENANTCTL_DATABASE_AUTH=iam makes one per connection\nhint: remove the password from the URL"
            );
        }
        if config.get_user().is_none() {
            bail!("TENANTCTL_DATABASE_URL names no user\nhint: postgres://USER@HOST:5432/DATABASE");
        }
        let tokens = TokenSource::from_environment()
            .await
            .map_err(|e| anyhow!("{e}\nhint: configure AWS credentials and AWS_REGION"))?;
        Self::with_tokens(config, tokens, ca_file)
    }

    /// From explicit parts (tests, or callers with their own credentials provider).
    pub fn from_parts(
        config: tokio_postgres::Config,
        region: &str,
        credentials: SharedCredentialsProvider,
        ca_file: &Path,
    ) -> Result<Self> {
        Self::with_tokens(config, TokenSource::new(region, credentials), ca_file)
    }

    fn with_tokens(
        mut config: tokio_postgres::Config,
        tokens: TokenSource,
        ca_file: &Path,
    ) -> Result<Self> {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        Ok(Self {
            config,
            tokens,
            tls: tls(ca_file)?,
        })
    }

    /// A fresh token for the configured host, port and user.
    pub async fn token(&self) -> Result<SecretString> {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => bail!("IAM authentication needs a TCP host in TENANTCTL_DATABASE_URL"),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or_default();
        Ok(self.tokens.token(&host, port, user).await?)
    }
}
