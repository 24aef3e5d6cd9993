//! The secret-store interface: the only way a secret enters the process.
//!
//! Secret values travel as `secrecy::SecretString` (Debug prints `[REDACTED]`, memory is zeroized on
//! drop). Names are validated `SecretName`s; a tenant's secrets live under `tenants/<id>/`, built from a
//! `TenantId`, never from request input. This module must not log or format a secret value.
//!
//! Backends (one file each): `local::LocalSecretStore` (the development backend: a directory of 0600 files under the tenantctl
//! state directory, encrypted at rest with a key kept outside it, for the local target) and `aws::AwsSecretStore` (AWS Secrets Manager, for the AWS target; the secret name is the
//! `SecretName`, so the tenant role's IAM policy on `secret:tenants/<id>/*` fences it).

pub mod aws;
pub mod cache;
pub mod local;

use std::fs;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::domain::{TenantId, printable};
pub use aws::AwsSecretStore;
pub use local::LocalSecretStore;

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
    #[error("secret store: `{path}` {why}\nhint: {hint}")]
    Insecure {
        path: PathBuf,
        why: String,
        hint: String,
    },
    #[error(
        "secret store key: {0}\nhint: set `TENANTCTL_SECRET_KEY` to 32 random bytes in base64, or remove it to use the key file"
    )]
    BadKey(String),
    #[error(
        "secret `{name}` cannot be decrypted with the store key (`TENANTCTL_SECRET_KEY` or `{key}`): wrong key, or the file was altered or copied from another name"
    )]
    Undecryptable { name: String, key: PathBuf },
    /// An AWS Secrets Manager call failed (the message names the call and the secret, never a value).
    #[error("AWS Secrets Manager {call} `{name}`: {message}")]
    Aws {
        call: &'static str,
        name: String,
        message: String,
    },
}

/// What `list` shows of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    pub name: String,
    /// The local store's version counter, or Secrets Manager's current version id.
    pub version: String,
    /// When it last changed (UTC, RFC 3339).
    pub changed_at: Option<String>,
}

pub use crate::domain::rfc3339;

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

    /// Every live secret whose name starts with `prefix` (end it with `/`): names, versions and
    /// dates, never values.
    pub async fn list(&self, prefix: &str) -> Result<Vec<SecretInfo>, SecretError> {
        match self {
            SecretStore::Local(store) => store.list(prefix),
            SecretStore::Aws(store) => store.list(prefix).await,
        }
    }

    /// Whether the store answers: the local store's directory can be read; Secrets Manager answers
    /// a lookup of `name` (found or not; a refusal or no answer is an error). Reads no value.
    pub async fn ping(&self, name: &SecretName) -> Result<(), SecretError> {
        match self {
            SecretStore::Local(store) => {
                fs::read_dir(store.root())
                    .map(|_| ())
                    .map_err(|source| SecretError::Io {
                        path: store.root().to_owned(),
                        source,
                    })
            }
            SecretStore::Aws(store) => store.exists(name).await.map(|_| ()),
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

    #[test]
    fn times_are_utc_rfc3339() {
        let at = |secs| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_125_410), "2026-12-01T11:43:30Z");
    }
}
