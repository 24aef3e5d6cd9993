//! Provisioning on a Postgres target: observe what exists, plan (pure), apply (converge per tenant).
//!
//! **Invariant:** a tenant's apply is one database transaction (roles, schema, grants, migrations and
//! the registry row commit together, with the registry status written last), so a crash at any point
//! leaves either the old state or the new one. The only work outside it is creating the tenant's
//! password in the secret store, which is idempotent and reused by the next run.

pub mod apply;
pub mod migrate;
pub mod moves;
pub mod observe;
pub mod offboard;
pub mod plan;
pub mod saved;
pub mod suspend;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use runtime::db::DbEndpoint;
use runtime::domain::Namespace;
use runtime::secrets::SecretStore;
use secrecy::ExposeSecret;

/// How tenantctl reaches Postgres as its admin role.
#[derive(Debug, Clone)]
pub enum AdminAccess {
    /// The local cluster: peer authentication over its private socket.
    Peer { role: String },
    /// Any server, from `TENANTCTL_DATABASE_URL` (credentials stay in the environment).
    Url(Box<tokio_postgres::Config>),
    /// The AWS target's RDS with IAM authentication: a fresh token per connection, over verified TLS.
    Iam(Box<crate::aws::rds_iam::IamAccess>),
}

/// One deployment: a database on a server, its namespace and its secret store.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: Namespace,
    pub endpoint: DbEndpoint,
    pub admin: AdminAccess,
    pub secrets: SecretStore,
    pub secrets_dir: PathBuf,
}

impl Target {
    fn admin_config(&self, dbname: &str) -> tokio_postgres::Config {
        match &self.admin {
            AdminAccess::Peer { role } => {
                let mut c = self.endpoint.config(role, "tenantctl");
                c.dbname(dbname);
                c
            }
            AdminAccess::Url(config) => {
                let mut c = (**config).clone();
                c.dbname(dbname).application_name("tenantctl");
                if self.endpoint.tls_ca.is_some() {
                    c.ssl_mode(tokio_postgres::config::SslMode::Require);
                }
                c
            }
            AdminAccess::Iam(iam) => {
                let mut c = iam.config.clone();
                c.dbname(dbname).application_name("tenantctl");
                c
            }
        }
    }

    /// Connects as the admin role to `dbname`: a fresh IAM token over verified TLS (AWS target with
    /// IAM), verified TLS (an endpoint with a CA bundle), or plain (the local cluster's socket).
    pub async fn connect_admin(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let mut config = self.admin_config(dbname);
        let host = &self.endpoint.host;
        let (tls, failure) = match &self.admin {
            AdminAccess::Iam(iam) => {
                config.password(iam.token().await?.expose_secret());
                (
                    Some(iam.tls.clone()),
                    format!(
                        "cannot connect to `{host}` (database `{dbname}`) with IAM authentication over TLS\n\
                         hint: the user needs `GRANT rds_iam`, the caller `rds-db:connect` on it, and TENANTCTL_DATABASE_CA the RDS bundle"
                    ),
                )
            }
            _ => match self.endpoint.tls()? {
                Some(tls) => (
                    Some(tls),
                    format!(
                        "cannot connect over TLS to `{host}` (database `{dbname}`) as the admin role"
                    ),
                ),
                None => (
                    None,
                    format!(
                        "cannot connect to Postgres at `{host}` (database `{dbname}`) as the admin role\n\
                         hint: is the local cluster running? try `tenantctl local start`"
                    ),
                ),
            },
        };
        let (client, _task) = runtime::db::connect(&config, tls).await.context(failure)?;
        Ok(client)
    }

    /// Creates the deployment database if it does not exist. An existing one is found by connecting
    /// to it, so an admin needs `postgres` only to create it.
    pub async fn ensure_database(&self) -> Result<()> {
        if self.admin().await.is_ok() {
            return Ok(());
        }
        let client = self.connect_admin("postgres").await?;
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&self.endpoint.dbname],
            )
            .await?
            .is_some();
        if !exists {
            let sql = format!(
                "CREATE DATABASE {}",
                crate::sql::quote_ident(&self.endpoint.dbname).map_err(anyhow::Error::msg)?
            );
            client
                .batch_execute(&sql)
                .await
                .with_context(|| format!("cannot create database `{}`", self.endpoint.dbname))?;
        }
        Ok(())
    }

    /// Connects as admin to the deployment database.
    pub async fn admin(&self) -> Result<tokio_postgres::Client> {
        self.connect_admin(&self.endpoint.dbname).await
    }
}

/// Parses `TENANTCTL_DATABASE_URL` into an admin config and endpoint.
pub fn target_from_url(
    url: &str,
    namespace: Namespace,
    secrets: SecretStore,
    secrets_dir: PathBuf,
) -> Result<Target> {
    let config: tokio_postgres::Config = url
        .parse()
        .context("`TENANTCTL_DATABASE_URL` is not a valid Postgres URL (postgres://user:password@host:port/db)")?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => bail!("`TENANTCTL_DATABASE_URL` names no host"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap_or("tenantctl").to_owned();
    Ok(Target {
        namespace,
        endpoint: DbEndpoint {
            host,
            port,
            dbname,
            tls_ca: None,
            iam_auth: false,
        },
        admin: AdminAccess::Url(Box::new(config)),
        secrets,
        secrets_dir,
    })
}

/// Records what `by` (`tenantctl status`) found of each tenant, replacing its last record: the
/// platform's console shows it (`GET /v1/platform/checks`) without reaching the deployment itself.
pub async fn record_checks(
    admin: &tokio_postgres::Client,
    by: &str,
    checks: &[(String, Vec<serde_json::Value>)],
) -> Result<()> {
    for (tenant, findings) in checks {
        admin
            .execute(
                "INSERT INTO control.tenant_checks (tenant_id, checked_by, findings, checked_at) \
                 VALUES ($1, $2, $3, now()) \
                 ON CONFLICT (tenant_id) DO UPDATE \
                 SET checked_by = excluded.checked_by, findings = excluded.findings, \
                     checked_at = excluded.checked_at",
                &[tenant, &by, &serde_json::Value::Array(findings.clone())],
            )
            .await
            .with_context(|| format!("recording the check of `{tenant}`"))?;
    }
    Ok(())
}

/// Records a month's AWS spend per tenant as Cost Explorer reported it (`tenantctl cost report`),
/// replacing that month's last record: the platform's console shows it next to the LLM spend.
pub async fn record_aws_spend(
    admin: &tokio_postgres::Client,
    month: &str,
    spend: &std::collections::BTreeMap<String, i64>,
) -> Result<()> {
    for (tenant, micro) in spend {
        admin
            .execute(
                "INSERT INTO control.aws_spend (month, tenant_id, cost_micro_usd, fetched_at) \
                 VALUES ($1, $2, $3, now()) \
                 ON CONFLICT (month, tenant_id) DO UPDATE \
                 SET cost_micro_usd = excluded.cost_micro_usd, fetched_at = excluded.fetched_at",
                &[&month, tenant, micro],
            )
            .await
            .with_context(|| format!("recording the AWS spend of `{tenant}` in {month}"))?;
    }
    Ok(())
}
