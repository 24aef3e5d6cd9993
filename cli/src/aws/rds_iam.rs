//! IAM database authentication to the platform's RDS (issue 5 item 3): the admin connection's password
//! is a short-lived token, a SigV4-presigned `connect` request for the database user, made from the
//! standard AWS credential chain at each connection, sent only over TLS that verifies the server
//! against the RDS certificate bundle. No database password exists anywhere.
//!
//! Enabled with `TENANTCTL_DATABASE_AUTH=iam` (the URL then names host, port, user and database, and no
//! password) and `TENANTCTL_DATABASE_CA=<PEM bundle>` (AWS publishes the RDS bundle as
//! `global-bundle.pem`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use secrecy::SecretString;

/// How long a token is accepted by RDS (tokens are made per connection, so this only bounds the
/// connect handshake).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The token for `user` at `host:port` in `region`, signed with `credentials` at `time`:
/// `host:port/?Action=connect&DBUser=...&X-Amz-...` (a presigned URL without its scheme).
pub fn auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<SecretString> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| anyhow!("signing parameters: {e}"))?
        .into();
    let url = format!(
        "https://{host}:{port}/?Action=connect&DBUser={}",
        encode(user)
    );
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| anyhow!("the token request: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| anyhow!("signing the token: {e}"))?
        .into_parts();
    let mut request = http::Request::builder()
        .method("GET")
        .uri(&url)
        .body(())
        .context("the token request")?;
    instructions.apply_to_request_http1x(&mut request);
    let signed = request.uri().to_string();
    Ok(SecretString::from(
        signed
            .strip_prefix("https://")
            .unwrap_or(&signed)
            .to_owned(),
    ))
}

/// The admin connection of the AWS target with IAM authentication.
#[derive(Clone)]
pub struct IamAccess {
    pub config: tokio_postgres::Config,
    pub region: String,
    credentials: SharedCredentialsProvider,
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for IamAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamAccess")
            .field("host", &self.config.get_hosts())
            .field("user", &self.config.get_user())
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A TLS connector trusting only the certificates in `ca_file` (the RDS bundle).
pub fn tls(ca_file: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    runtime::tenancy::verified_tls(ca_file).map_err(|e| {
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
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| anyhow!("no AWS region is configured\nhint: set AWS_REGION"))?;
        let credentials = sdk.credentials_provider().ok_or_else(|| {
            anyhow!(
                "no AWS credentials are configured\nhint: use a profile, SSO, or the environment"
            )
        })?;
        let mut config = config;
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        Ok(Self {
            config,
            region,
            credentials,
            tls: tls(ca_file)?,
        })
    }

    /// From explicit parts (tests, or callers with their own credentials provider).
    pub fn from_parts(
        mut config: tokio_postgres::Config,
        region: &str,
        credentials: SharedCredentialsProvider,
        ca_file: &Path,
    ) -> Result<Self> {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
        Ok(Self {
            config,
            region: region.to_owned(),
            credentials,
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
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| anyhow!("AWS credentials: {e}"))?;
        auth_token(
            &host,
            port,
            user,
            &self.region,
            &credentials,
            SystemTime::now(),
        )
    }
}
