//! The secret-store interface: the only way a secret enters the process.
//!
//! Secret values travel as `secrecy::SecretString` (Debug prints `[REDACTED]`, memory is zeroized on
//! drop). Names are validated `SecretName`s; a tenant's secrets live under `tenants/<id>/`, built from a
//! `TenantId`, never from request input. This module must not log or format a secret value.
//!
//! Backends: `LocalSecretStore` (a directory of 0600 files under the tenantctl state directory, for the
//! local target) and `AwsSecretStore` (AWS Secrets Manager, for the AWS target; the secret name is the
//! `SecretName`, so the tenant role's IAM policy on `secret:tenants/<id>/*` fences it).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::domain::{TenantId, printable};

/// A secret's name: `/`-separated segments of `[a-z0-9-]`, e.g. `tenants/acme/db-password`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let ok = !raw.is_empty()
            && raw.len() <= 200
            && raw.split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(SecretError::InvalidName(printable(raw)))
        }
    }

    /// A secret that belongs to one tenant: `tenants/<tenant>/<leaf>`.
    pub fn for_tenant(tenant: &TenantId, leaf: &str) -> Result<Self, SecretError> {
        Self::parse(&format!("tenants/{}/{leaf}", tenant.as_str()))
    }

    /// A platform secret: `platform/<leaf>`.
    pub fn platform(leaf: &str) -> Result<Self, SecretError> {
        Self::parse(&format!("platform/{leaf}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant this secret belongs to, if it is a tenant secret.
    pub fn tenant(&self) -> Option<&str> {
        self.0.strip_prefix("tenants/")?.split('/').next()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("`{0}` is not a valid secret name (segments of a-z, 0-9 and `-`, separated by `/`)")]
    InvalidName(String),
    #[error("secret `{0}` does not exist in the secret store")]
    NotFound(String),
    #[error("secret store at `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret store at `{0}` is readable by other users; run `chmod 700` on it")]
    InsecurePermissions(PathBuf),
    /// An AWS Secrets Manager call failed (the message names the call and the secret, never a value).
    #[error("AWS Secrets Manager {call} `{name}`: {message}")]
    Aws {
        call: &'static str,
        name: String,
        message: String,
    },
}

/// Where secrets come from. An enum, not a trait object: every backend is known at compile time.
#[derive(Debug, Clone)]
pub enum SecretStore {
    Local(LocalSecretStore),
    Aws(AwsSecretStore),
}

impl SecretStore {
    pub async fn get(&self, name: &SecretName) -> Result<SecretString, SecretError> {
        match self {
            SecretStore::Local(store) => store.get(name),
            SecretStore::Aws(store) => store.get(name).await,
        }
    }

    pub async fn put(&self, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        match self {
            SecretStore::Local(store) => store.put(name, value),
            SecretStore::Aws(store) => store.put(name, value).await,
        }
    }

    /// Deletes a secret; deleting one that does not exist is not an error.
    pub async fn delete(&self, name: &SecretName) -> Result<(), SecretError> {
        match self {
            SecretStore::Local(store) => match fs::remove_file(store.path_of(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(SecretError::Io {
                    path: store.path_of(name),
                    source,
                }),
            },
            SecretStore::Aws(store) => store.delete(name).await,
        }
    }

    pub async fn exists(&self, name: &SecretName) -> Result<bool, SecretError> {
        match self {
            SecretStore::Local(store) => Ok(store.path_of(name).exists()),
            SecretStore::Aws(store) => store.exists(name).await,
        }
    }

    /// Which of `tenants` have the secret `tenants/<id>/<leaf>` (not scheduled for deletion). On
    /// Secrets Manager a large set is answered by listing the `tenants/` namespace (100 names per
    /// call) rather than one call per tenant.
    pub async fn tenants_having(
        &self,
        tenants: &[TenantId],
        leaf: &str,
    ) -> Result<std::collections::BTreeSet<TenantId>, SecretError> {
        let mut found = std::collections::BTreeSet::new();
        match self {
            SecretStore::Aws(store) if tenants.len() > LIST_INSTEAD_OF_DESCRIBE => {
                let names = store.list_names("tenants/").await?;
                for id in tenants {
                    if names.contains(SecretName::for_tenant(id, leaf)?.as_str()) {
                        found.insert(id.clone());
                    }
                }
            }
            _ => {
                for id in tenants {
                    if self.exists(&SecretName::for_tenant(id, leaf)?).await? {
                        found.insert(id.clone());
                    }
                }
            }
        }
        Ok(found)
    }
}

/// Above this many tenants, `tenants_having` lists instead of describing each secret.
const LIST_INSTEAD_OF_DESCRIBE: usize = 20;

/// A directory of secret files, each 0600 inside 0700 directories, written atomically (temp file +
/// rename). For the local target only; it is as safe as the account that owns the directory.
#[derive(Debug, Clone)]
pub struct LocalSecretStore {
    root: PathBuf,
}

impl LocalSecretStore {
    /// Opens (creating if needed) a store rooted at `root`. Refuses a root that others can read.
    pub fn open(root: &Path) -> Result<Self, SecretError> {
        let io = |source| SecretError::Io {
            path: root.to_owned(),
            source,
        };
        fs::create_dir_all(root).map_err(io)?;
        let mode = fs::metadata(root).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let mode = fs::metadata(root).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(SecretError::InsecurePermissions(root.to_owned()));
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn path_of(&self, name: &SecretName) -> PathBuf {
        // SecretName's grammar has no `.` and no empty segment, so this cannot leave `root`.
        self.root.join(name.as_str())
    }

    fn get(&self, name: &SecretName) -> Result<SecretString, SecretError> {
        let path = self.path_of(name);
        match fs::read_to_string(&path) {
            Ok(value) => Ok(SecretString::from(value)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SecretError::NotFound(name.as_str().to_owned()))
            }
            Err(source) => Err(SecretError::Io { path, source }),
        }
    }

    fn put(&self, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        let path = self.path_of(name);
        let io = |source| SecretError::Io {
            path: path.clone(),
            source,
        };
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io)?;
        let mut dir = parent;
        while dir.starts_with(&self.root) {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
        let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = file
            .write_all(value.expose_secret().as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(SecretError::Io { path, source });
        }
        Ok(())
    }
}

/// AWS Secrets Manager. Tenant secrets are tagged `tenant=<id>`. Deleting schedules deletion with a
/// recovery window; writing a secret that is scheduled for deletion restores it first, so re-onboarding
/// within the window works instead of failing.
#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    client: aws_sdk_secretsmanager::Client,
    recovery_window_days: i64,
}

fn aws_err<E>(
    call: &'static str,
    name: &SecretName,
    error: aws_sdk_secretsmanager::error::SdkError<E>,
) -> SecretError
where
    E: std::error::Error + 'static,
{
    SecretError::Aws {
        call,
        name: name.as_str().to_owned(),
        message: aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
    }
}

impl AwsSecretStore {
    /// A store using `config` (region, credentials, and `AWS_ENDPOINT_URL` if set, e.g. a local moto).
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_secretsmanager::Client::new(config),
            recovery_window_days: 7,
        }
    }

    /// A store using a client built by the caller (with its own interceptors or endpoint).
    pub fn from_client(client: aws_sdk_secretsmanager::Client) -> Self {
        Self {
            client,
            recovery_window_days: 7,
        }
    }

    /// Days a deleted secret can still be restored.
    pub fn recovery_window_days(&self) -> i64 {
        self.recovery_window_days
    }

    /// Names of the secrets under `prefix` that are not scheduled for deletion.
    pub async fn list_names(
        &self,
        prefix: &str,
    ) -> Result<std::collections::BTreeSet<String>, SecretError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let probe = SecretName::parse("platform/list")?;
        let mut names = std::collections::BTreeSet::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .client
                .list_secrets()
                .filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(prefix)
                        .build(),
                )
                .max_results(100)
                .set_next_token(next.clone())
                .send()
                .await
                .map_err(|e| aws_err("ListSecrets", &probe, e))?;
            for s in out.secret_list() {
                if let Some(name) = s.name() {
                    if name.starts_with(prefix) && s.deleted_date().is_none() {
                        names.insert(name.to_owned());
                    }
                }
            }
            next = out.next_token().map(str::to_owned);
            if next.is_none() {
                return Ok(names);
            }
        }
    }

    /// Schedules deletion of every secret under `tenants/<tenant>/` (the trailing slash keeps `acme`
    /// from matching `acme2`); returns their names. Secrets already scheduled are left as they are.
    pub async fn schedule_tenant_deletion(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<String>, SecretError> {
        let prefix = format!("tenants/{tenant}/");
        // The Name filter matches prefixes; `list_names` keeps only this tenant's namespace.
        let names: Vec<String> = self.list_names(&prefix).await?.into_iter().collect();
        for name in &names {
            self.delete(&SecretName::parse(name)?).await?;
        }
        Ok(names)
    }

    /// A store from the standard AWS configuration chain (profiles, SSO, environment, role assumption).
    pub async fn from_environment() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(&config)
    }

    async fn get(&self, name: &SecretName) -> Result<SecretString, SecretError> {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        match self
            .client
            .get_secret_value()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(out) => out
                .secret_string()
                .map(|v| SecretString::from(v.to_owned()))
                .ok_or_else(|| SecretError::NotFound(name.as_str().to_owned())),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(GetSecretValueError::ResourceNotFoundException(_))
                ) =>
            {
                Err(SecretError::NotFound(name.as_str().to_owned()))
            }
            Err(e) => Err(aws_err("GetSecretValue", name, e)),
        }
    }

    /// Whether the secret exists and is not scheduled for deletion.
    async fn exists(&self, name: &SecretName) -> Result<bool, SecretError> {
        use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
        match self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(out) => Ok(out.deleted_date().is_none()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DescribeSecretError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(aws_err("DescribeSecret", name, e)),
        }
    }

    async fn put(&self, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
        use aws_sdk_secretsmanager::types::Tag;
        let existing = match self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(out) => Some(out.deleted_date().is_some()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DescribeSecretError::ResourceNotFoundException(_))
                ) =>
            {
                None
            }
            Err(e) => return Err(aws_err("DescribeSecret", name, e)),
        };
        match existing {
            None => {
                let mut create = self
                    .client
                    .create_secret()
                    .name(name.as_str())
                    .secret_string(value.expose_secret())
                    .tags(Tag::builder().key("managed-by").value("tenantctl").build());
                if let Some(tenant) = name.tenant() {
                    create = create.tags(Tag::builder().key("tenant").value(tenant).build());
                }
                create
                    .send()
                    .await
                    .map_err(|e| aws_err("CreateSecret", name, e))?;
            }
            Some(scheduled_for_deletion) => {
                if scheduled_for_deletion {
                    self.client
                        .restore_secret()
                        .secret_id(name.as_str())
                        .send()
                        .await
                        .map_err(|e| aws_err("RestoreSecret", name, e))?;
                }
                self.client
                    .put_secret_value()
                    .secret_id(name.as_str())
                    .secret_string(value.expose_secret())
                    .send()
                    .await
                    .map_err(|e| aws_err("PutSecretValue", name, e))?;
            }
        }
        Ok(())
    }

    /// Schedules deletion (with the recovery window); a missing secret is not an error.
    async fn delete(&self, name: &SecretName) -> Result<(), SecretError> {
        use aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError;
        match self
            .client
            .delete_secret()
            .secret_id(name.as_str())
            .recovery_window_in_days(self.recovery_window_days)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteSecretError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_err("DeleteSecret", name, e)),
        }
    }

    /// The tags of a secret (tests and audits).
    pub async fn tags(&self, name: &SecretName) -> Result<Vec<(String, String)>, SecretError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
            .map_err(|e| aws_err("DescribeSecret", name, e))?;
        Ok(out
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }
}

/// A fresh random secret: 32 bytes from the OS RNG, base64url-encoded.
pub fn generate_secret() -> SecretString {
    use base64::Engine;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut()).unwrap_or_else(|_| {
        // aws-lc's RNG only fails if the OS entropy source is broken; there is no safe fallback.
        std::process::abort()
    });
    SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_cannot_escape_the_store() {
        for bad in ["../x", "a//b", "/abs", "a/./b", "A", "tenants/acme/", ""] {
            assert!(SecretName::parse(bad).is_err(), "{bad}");
        }
        let tenant = TenantId::parse("acme").unwrap();
        let name = SecretName::for_tenant(&tenant, "db-password").unwrap();
        assert_eq!(name.as_str(), "tenants/acme/db-password");
        assert_eq!(name.tenant(), Some("acme"));
    }

    #[tokio::test]
    async fn local_store_round_trips_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::Local(LocalSecretStore::open(&dir.path().join("s")).unwrap());
        let name = SecretName::parse("tenants/acme/db-password").unwrap();
        assert!(matches!(
            store.get(&name).await,
            Err(SecretError::NotFound(_))
        ));
        let value = generate_secret();
        store.put(&name, &value).await.unwrap();
        let back = store.get(&name).await.unwrap();
        assert_eq!(back.expose_secret(), value.expose_secret());
        let meta = fs::metadata(dir.path().join("s/tenants/acme/db-password")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!format!("{back:?}").contains(value.expose_secret()));
    }
}
