//! The local target: a state directory, a private Postgres cluster started from the machine's server
//! binaries, and the local secret store.
//!
//! Layout of the state directory (default `/var/lib/tenantctl` for root, the user's data dir otherwise):
//! `secrets/<namespace>/` (the secret store, 0700, encrypted at rest) and `secrets/<namespace>.key` (its
//! key, 0600, unless `TENANTCTL_SECRET_KEY` carries it), `pg/data` (the cluster), `pg/run` (its unix socket),
//! `pg/postgres.log`. The cluster listens only on its unix socket. This module must not print secrets.

pub mod cluster;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use runtime::domain::Namespace;
use runtime::secrets::{LocalSecretStore, SecretStore};

/// The state directory of one local installation.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `explicit`, else `TENANTCTL_STATE_DIR` (handled by clap), else the default for this user.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        let root = match explicit {
            Some(p) => p.to_owned(),
            None if nix::unistd::geteuid().is_root() => PathBuf::from("/var/lib/tenantctl"),
            None => dirs::data_dir()
                .context("cannot find the user's data directory; pass `--state-dir`")?
                .join("tenantctl"),
        };
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create the state directory `{}`", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot resolve `{}`", root.display()))?;
        if root.as_os_str().len() > 80 {
            bail!(
                "the state directory path `{}` is too long for a Postgres unix socket (max 80 bytes)",
                root.display()
            );
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The secret store of one deployment namespace (namespaces never share secrets).
    pub fn secrets_dir(&self, namespace: &Namespace) -> PathBuf {
        self.root.join("secrets").join(namespace.as_str())
    }

    /// The local secret store of `namespace` (the development backend: encrypted at rest, its key in
    /// `secrets/<namespace>.key` or `TENANTCTL_SECRET_KEY`).
    pub fn secrets(&self, namespace: &Namespace) -> Result<SecretStore> {
        use std::os::unix::fs::DirBuilderExt as _;
        let parent = self.root.join("secrets");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
        Ok(SecretStore::Local(LocalSecretStore::open(
            &self.secrets_dir(namespace),
        )?))
    }

    pub fn pg_dir(&self) -> PathBuf {
        self.root.join("pg")
    }

    pub fn pg_data(&self) -> PathBuf {
        self.pg_dir().join("data")
    }

    pub fn pg_run(&self) -> PathBuf {
        self.pg_dir().join("run")
    }

    pub fn pg_log(&self) -> PathBuf {
        self.pg_dir().join("postgres.log")
    }
}
