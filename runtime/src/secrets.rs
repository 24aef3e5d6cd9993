//! The secret-store interface: the only way a secret enters the process.
//!
//! Secret values travel as `secrecy::SecretString` (Debug prints `[REDACTED]`, memory is zeroized on
//! drop). Names are validated `SecretName`s; a tenant's secrets live under `tenants/<id>/`, built from a
//! `TenantId`, never from request input. This module must not log or format a secret value.
//!
//! Backends: `LocalSecretStore` (the development backend: a directory of 0600 files under the tenantctl
//! state directory, encrypted at rest with a key kept outside it, for the local target) and `AwsSecretStore` (AWS Secrets Manager, for the AWS target; the secret name is the
//! `SecretName`, so the tenant role's IAM policy on `secret:tenants/<id>/*` fences it).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

/// The development backend, for the local target: a directory of secret files, each 0600 inside 0700
/// directories, written atomically (temp file + rename) and encrypted at rest with AES-256-GCM under a
/// store key kept outside the store: `TENANTCTL_SECRET_KEY` (32 bytes, base64) when set, else the key
/// file `<store>.key` beside the store directory (0600, created on first use). Each file is
/// `tcs1 || nonce || ciphertext+tag`, the secret's name bound in as associated data, so a file copied
/// to another name does not decrypt. Opening refuses (never silently fixes) a store, file or key whose
/// permissions let anyone else read it, and any symbolic link inside.
#[derive(Clone)]
pub struct LocalSecretStore {
    root: PathBuf,
    key: std::sync::Arc<aws_lc_rs::aead::LessSafeKey>,
}

impl std::fmt::Debug for LocalSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSecretStore")
            .field("root", &self.root)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// The environment variable that may carry the local store's key (base64 of 32 bytes).
pub const SECRET_KEY_ENV: &str = "TENANTCTL_SECRET_KEY";
const MAGIC: &[u8; 4] = b"tcs1";
const NONCE_LEN: usize = 12;

fn refuse_link_or_permissive(path: &Path, max_mode: u32) -> Result<std::fs::Metadata, SecretError> {
    let meta = fs::symlink_metadata(path).map_err(|source| SecretError::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(SecretError::Insecure {
            path: path.to_owned(),
            why: "is a symbolic link; the secret store holds only plain files and directories"
                .into(),
            hint: "replace it with the file it points to".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & !max_mode != 0 {
        return Err(SecretError::Insecure {
            path: path.to_owned(),
            why: format!("has mode {mode:o}; only its owner may read it"),
            hint: format!("`chmod {max_mode:o} {}`", path.display()),
        });
    }
    Ok(meta)
}

impl LocalSecretStore {
    /// Opens (creating if needed) a store rooted at `root`. Refuses a root, a file or a key that
    /// others can read, and symbolic links, naming the path and the fix.
    pub fn open(root: &Path) -> Result<Self, SecretError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SecretError::Io { path, source }
        };
        if fs::symlink_metadata(root).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(io(root))?;
        }
        refuse_link_or_permissive(root, 0o700)?;
        // Every entry below: directories 0700, files 0600, no links.
        let mut files = Vec::new();
        let mut pending = vec![root.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).map_err(io(&dir))? {
                let path = entry.map_err(io(&dir))?.path();
                let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
                if meta.is_dir() {
                    refuse_link_or_permissive(&path, 0o700)?;
                    pending.push(path);
                } else {
                    refuse_link_or_permissive(&path, 0o600)?;
                    files.push(path);
                }
            }
        }
        let store = Self {
            root: root.to_owned(),
            key: std::sync::Arc::new(Self::load_key(root, std::env::var(SECRET_KEY_ENV).ok())?),
        };
        store.encrypt_legacy_files(&files)?;
        Ok(store)
    }

    /// A store written by a tenantctl from before encryption at rest holds its secrets in the clear:
    /// each such file is sealed in place (atomically), so nothing is lost and nothing stays readable.
    fn encrypt_legacy_files(&self, files: &[PathBuf]) -> Result<(), SecretError> {
        let mut sealed = 0;
        for path in files {
            let Some(name) = path
                .strip_prefix(&self.root)
                .ok()
                .and_then(|rel| rel.to_str())
                .and_then(|rel| SecretName::parse(rel).ok())
            else {
                continue; // a temporary file of an interrupted write, never read as a secret
            };
            let bytes =
                zeroize::Zeroizing::new(fs::read(path).map_err(|source| SecretError::Io {
                    path: path.clone(),
                    source,
                })?);
            if bytes.starts_with(MAGIC) {
                continue;
            }
            let text =
                String::from_utf8(bytes.to_vec()).map_err(|_| SecretError::Undecryptable {
                    name: name.as_str().to_owned(),
                    key: Self::key_file(&self.root),
                })?;
            self.put(&name, &SecretString::from(text))?;
            sealed += 1;
        }
        if sealed > 0 {
            tracing::warn!(secrets = sealed, store = %self.root.display(),
                "encrypted secrets an older tenantctl had stored in the clear");
        }
        Ok(())
    }

    /// Where the key file of the store at `root` is: beside the store directory, never inside it.
    pub fn key_file(root: &Path) -> PathBuf {
        root.with_extension("key")
    }

    /// The store key: `from_env` (the value of `TENANTCTL_SECRET_KEY`) when given, else the key file.
    fn load_key(
        root: &Path,
        from_env: Option<String>,
    ) -> Result<aws_lc_rs::aead::LessSafeKey, SecretError> {
        use base64::Engine as _;
        let from_env = from_env.map(zeroize::Zeroizing::new);
        let bytes: zeroize::Zeroizing<Vec<u8>> = match from_env {
            Some(encoded) => zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| {
                        SecretError::BadKey(format!("`{SECRET_KEY_ENV}` is not base64"))
                    })?,
            ),
            None => {
                let path = Self::key_file(root);
                if fs::symlink_metadata(&path).is_err() {
                    let mut key = zeroize::Zeroizing::new(vec![0u8; 32]);
                    aws_lc_rs::rand::fill(key.as_mut_slice())
                        .map_err(|_| SecretError::BadKey("no entropy for a new key".into()))?;
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|source| SecretError::Io {
                            path: path.clone(),
                            source,
                        })?;
                    file.write_all(&key)
                        .and_then(|()| file.sync_all())
                        .map_err(|source| SecretError::Io {
                            path: path.clone(),
                            source,
                        })?;
                }
                refuse_link_or_permissive(&path, 0o600)?;
                zeroize::Zeroizing::new(fs::read(&path).map_err(|source| SecretError::Io {
                    path: path.clone(),
                    source,
                })?)
            }
        };
        if bytes.len() != 32 {
            return Err(SecretError::BadKey(format!(
                "the store key must be 32 bytes, not {} (from `{SECRET_KEY_ENV}` or `{}`)",
                bytes.len(),
                Self::key_file(root).display()
            )));
        }
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &bytes)
            .map_err(|_| SecretError::BadKey("not an AES-256 key".into()))?;
        Ok(aws_lc_rs::aead::LessSafeKey::new(unbound))
    }

    fn path_of(&self, name: &SecretName) -> PathBuf {
        // SecretName's grammar has no `.` and no empty segment, so this cannot leave `root`.
        self.root.join(name.as_str())
    }

    fn seal(&self, name: &SecretName, plain: &[u8]) -> Result<Vec<u8>, SecretError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| SecretError::BadKey("no entropy for a nonce".into()))?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_str().as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SecretError::BadKey("encryption failed".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        zeroize::Zeroize::zeroize(&mut sealed);
        Ok(out)
    }

    fn open_sealed(&self, name: &SecretName, bytes: &[u8]) -> Result<SecretString, SecretError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let undecryptable = || SecretError::Undecryptable {
            name: name.as_str().to_owned(),
            key: Self::key_file(&self.root),
        };
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(undecryptable)?;
        if rest.len() < NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| undecryptable())?;
        let mut buffer = zeroize::Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_str().as_bytes()), &mut buffer)
            .map_err(|_| undecryptable())?;
        let text = std::str::from_utf8(plain).map_err(|_| undecryptable())?;
        Ok(SecretString::from(text.to_owned()))
    }

    fn get(&self, name: &SecretName) -> Result<SecretString, SecretError> {
        let path = self.path_of(name);
        refuse_link_or_permissive(&path, 0o600).map_err(|e| match e {
            SecretError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                SecretError::NotFound(name.as_str().to_owned())
            }
            other => other,
        })?;
        let bytes = zeroize::Zeroizing::new(fs::read(&path).map_err(|source| SecretError::Io {
            path: path.clone(),
            source,
        })?);
        self.open_sealed(name, &bytes)
    }

    fn put(&self, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        let path = self.path_of(name);
        let io = |source| SecretError::Io {
            path: path.clone(),
            source,
        };
        let parent = path.parent().unwrap_or(&self.root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io)?;
        let sealed = self.seal(name, value.expose_secret().as_bytes())?;
        let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = file
            .write_all(&sealed)
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

    /// The master user of an RDS instance whose password RDS manages (`ManageMasterUserPassword`): the
    /// secret RDS named (`rds!db-...`, given by its ARN) holds `{"username": .., "password": ..}`.
    /// tenantctl reads it to create a dedicated tenant's objects on the tenant's own instance; the
    /// password never leaves the returned `SecretString`.
    pub async fn rds_master_credentials(
        &self,
        arn: &str,
    ) -> Result<(String, SecretString), SecretError> {
        let name = || printable(arn);
        let out = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError::Aws {
                call: "GetSecretValue",
                name: name(),
                message: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
            })?;
        #[derive(serde::Deserialize)]
        struct Master {
            username: String,
            password: SecretString,
        }
        let text = zeroize::Zeroizing::new(
            out.secret_string()
                .ok_or_else(|| SecretError::NotFound(name()))?
                .to_owned(),
        );
        let master: Master = serde_json::from_str(&text).map_err(|_| SecretError::Aws {
            call: "GetSecretValue",
            name: name(),
            message: "not an RDS master-user secret (`username` and `password`)".into(),
        })?;
        Ok((master.username, master.password))
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

    fn key_b64(byte: u8) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[tokio::test]
    async fn local_store_encrypts_at_rest_and_binds_each_file_to_its_name() {
        // Issue 9 item 7: nothing on disk in the clear; the key lives outside the store.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let store = LocalSecretStore::open(&root).unwrap();
        let key_file = LocalSecretStore::key_file(&root);
        assert!(!key_file.starts_with(&root), "the key is outside the store");
        assert_eq!(
            fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (a, b) = (
            SecretName::parse("tenants/acme/db-password").unwrap(),
            SecretName::parse("tenants/globex/db-password").unwrap(),
        );
        // A canary made here, never a fixed key in the source.
        let value = SecretString::from(format!(
            "sk-canary-acme-{}",
            generate_secret().expose_secret()
        ));
        store.put(&a, &value).unwrap();
        store.put(&b, &generate_secret()).unwrap();
        let on_disk = fs::read(root.join(a.as_str())).unwrap();
        assert!(on_disk.starts_with(MAGIC));
        assert!(
            !on_disk.windows(8).any(|w| value
                .expose_secret()
                .as_bytes()
                .windows(8)
                .any(|v| v == w)),
            "no 8-byte run of the secret is on disk"
        );
        assert_eq!(
            store.get(&a).unwrap().expose_secret(),
            value.expose_secret()
        );
        // A flipped byte, a file copied onto another name, or another key: refused, never garbage.
        let mut flipped = on_disk.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fs::write(root.join(a.as_str()), &flipped).unwrap();
        assert!(matches!(
            store.get(&a),
            Err(SecretError::Undecryptable { .. })
        ));
        fs::write(root.join(a.as_str()), &on_disk).unwrap();
        fs::copy(root.join(a.as_str()), root.join(b.as_str())).unwrap();
        assert!(matches!(
            store.get(&b),
            Err(SecretError::Undecryptable { .. })
        ));
        let other = LocalSecretStore {
            root: root.clone(),
            key: std::sync::Arc::new(LocalSecretStore::load_key(&root, Some(key_b64(7))).unwrap()),
        };
        assert!(matches!(
            other.get(&a),
            Err(SecretError::Undecryptable { .. })
        ));
        // The key may come from the environment instead: the same key opens what it sealed.
        other.put(&a, &value).unwrap();
        assert_eq!(
            other.get(&a).unwrap().expose_secret(),
            value.expose_secret()
        );
        for bad in ["not base64!".to_owned(), key_b64(1)[..20].to_owned()] {
            assert!(matches!(
                LocalSecretStore::load_key(&root, Some(bad)),
                Err(SecretError::BadKey(_))
            ));
        }
        assert!(!format!("{other:?}").contains(&key_b64(7)));
    }

    #[test]
    fn local_store_refuses_permissive_modes_and_links_instead_of_fixing_them() {
        let check = |prepare: &dyn Fn(&Path), what: &str| {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("s");
            let store = LocalSecretStore::open(&root).unwrap();
            store
                .put(
                    &SecretName::parse("tenants/acme/db-password").unwrap(),
                    &generate_secret(),
                )
                .unwrap();
            prepare(&root);
            let err = LocalSecretStore::open(&root).expect_err(what);
            assert!(matches!(err, SecretError::Insecure { .. }), "{what}: {err}");
            assert!(err.to_string().contains("hint:"), "{what}: {err}");
        };
        let chmod = |p: PathBuf, mode: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap()
        };
        check(
            &|root| chmod(root.to_owned(), 0o755),
            "a world-readable store directory",
        );
        check(
            &|root| chmod(root.join("tenants"), 0o750),
            "a group-readable subdirectory",
        );
        check(
            &|root| chmod(root.join("tenants/acme/db-password"), 0o644),
            "a world-readable file",
        );
        check(
            &|root| chmod(LocalSecretStore::key_file(root), 0o640),
            "a readable key file",
        );
        check(
            &|root| {
                let file = root.join("tenants/acme/db-password");
                fs::rename(&file, root.join("elsewhere")).unwrap();
                std::os::unix::fs::symlink(root.join("elsewhere"), &file).unwrap();
            },
            "a secret that is a symbolic link",
        );
        check(
            &|root| {
                let key = LocalSecretStore::key_file(root);
                fs::rename(&key, root.with_extension("real")).unwrap();
                std::os::unix::fs::symlink(root.with_extension("real"), &key).unwrap();
            },
            "a key file that is a symbolic link",
        );
        // The store directory itself as a link.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        chmod(dir.path().join("real"), 0o700);
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("s")).unwrap();
        assert!(matches!(
            LocalSecretStore::open(&dir.path().join("s")),
            Err(SecretError::Insecure { .. })
        ));
    }

    #[test]
    fn local_store_encrypts_secrets_an_older_version_left_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        LocalSecretStore::open(&root).unwrap();
        let name = SecretName::parse("platform/db/runtime-password").unwrap();
        let file = root.join(name.as_str());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(file.parent().unwrap())
            .unwrap();
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .unwrap()
            .write_all(b"legacy-plaintext-value")
            .unwrap();
        let store = LocalSecretStore::open(&root).unwrap();
        assert!(
            fs::read(&file).unwrap().starts_with(MAGIC),
            "sealed in place"
        );
        assert_eq!(
            store.get(&name).unwrap().expose_secret(),
            "legacy-plaintext-value"
        );
    }
}
