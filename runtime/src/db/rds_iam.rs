//! RDS IAM database authentication tokens: a SigV4-presigned `connect` request for a database user,
//! made from AWS credentials, valid 15 minutes, used as the password of one connection (over TLS only).
//! Shared by the runtime (tenant logins on Lambda) and tenantctl (the AWS target's admin connection).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use secrecy::SecretString;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("RDS IAM token: {0}")]
pub struct TokenError(String);

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
) -> Result<SecretString, TokenError> {
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
        .map_err(|e| TokenError(format!("signing parameters: {e}")))?
        .into();
    let url = format!(
        "https://{host}:{port}/?Action=connect&DBUser={}",
        encode(user)
    );
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| TokenError(format!("the token request: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| TokenError(format!("signing the token: {e}")))?
        .into_parts();
    let mut request = http::Request::builder()
        .method("GET")
        .uri(&url)
        .body(())
        .map_err(|e| TokenError(format!("the token request: {e}")))?;
    instructions.apply_to_request_http1x(&mut request);
    let signed = request.uri().to_string();
    Ok(SecretString::from(
        signed
            .strip_prefix("https://")
            .unwrap_or(&signed)
            .to_owned(),
    ))
}

/// Makes tokens from an AWS credential chain and region.
#[derive(Clone)]
pub struct TokenSource {
    pub region: String,
    credentials: SharedCredentialsProvider,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(region: &str, credentials: SharedCredentialsProvider) -> Self {
        Self {
            region: region.to_owned(),
            credentials,
        }
    }

    /// From the standard AWS configuration chain (a Lambda's role, profiles, the environment).
    pub async fn from_environment() -> Result<Self, TokenError> {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| TokenError("no AWS region is configured (set AWS_REGION)".into()))?;
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| TokenError("no AWS credentials are configured".into()))?;
        Ok(Self::new(&region, credentials))
    }

    /// A fresh token for `user` at `host:port`.
    pub async fn token(
        &self,
        host: &str,
        port: u16,
        user: &str,
    ) -> Result<SecretString, TokenError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| TokenError(format!("AWS credentials: {e}")))?;
        auth_token(
            host,
            port,
            user,
            &self.region,
            &credentials,
            SystemTime::now(),
        )
    }
}
