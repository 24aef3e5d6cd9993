//! The local secret store (the local target's backend): a directory of sealed files, encrypted at
//! rest with a key kept outside it. This module must not log or format a secret value, and must
//! never silently repair a permission or follow a link.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::{SecretError, SecretName};

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
/// The sealed-file format written now: `tcs2 || version (u32, big-endian) || nonce || ciphertext+tag`,
/// the name and the version bound in as associated data.
const MAGIC: &[u8; 4] = b"tcs2";
/// The first format (`tcs1 || nonce || ciphertext+tag`, the name as associated data), still read
/// (as version 1) and rewritten as `tcs2` on the next write.
const MAGIC_V1: &[u8; 4] = b"tcs1";
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
            if bytes.starts_with(MAGIC) || bytes.starts_with(MAGIC_V1) {
                continue;
            }
            let text =
                String::from_utf8(bytes.to_vec()).map_err(|_| SecretError::Undecryptable {
                    name: name.as_str().to_owned(),
                    key: Self::key_file(&self.root),
                })?;
            self.write(&name, 1, &SecretString::from(text))?;
            sealed += 1;
        }
        if sealed > 0 {
            tracing::warn!(secrets = sealed, store = %self.root.display(),
                "encrypted secrets an older tenantctl had stored in the clear");
        }
        Ok(())
    }

    /// Where the key file of the store at `root` is: beside the store directory, never inside it.
    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

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

    pub(super) fn path_of(&self, name: &SecretName) -> PathBuf {
        // SecretName's grammar has no `.` and no empty segment, so this cannot leave `root`.
        self.root.join(name.as_str())
    }

    fn aad(name: &SecretName, version: u32) -> Vec<u8> {
        let mut aad = name.as_str().as_bytes().to_vec();
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }

    fn seal(&self, name: &SecretName, version: u32, plain: &[u8]) -> Result<Vec<u8>, SecretError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| SecretError::BadKey("no entropy for a nonce".into()))?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(name, version)),
                &mut sealed,
            )
            .map_err(|_| SecretError::BadKey("encryption failed".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        zeroize::Zeroize::zeroize(&mut sealed);
        Ok(out)
    }

    /// The value and version of a sealed file.
    fn open_sealed(
        &self,
        name: &SecretName,
        bytes: &[u8],
    ) -> Result<(SecretString, u32), SecretError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let undecryptable = || SecretError::Undecryptable {
            name: name.as_str().to_owned(),
            key: Self::key_file(&self.root),
        };
        let (version, aad, rest) = if let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) {
            if rest.len() < 4 {
                return Err(undecryptable());
            }
            let (v, rest) = rest.split_at(4);
            let version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            (version, Self::aad(name, version), rest)
        } else if let Some(rest) = bytes.strip_prefix(MAGIC_V1.as_slice()) {
            (1, name.as_str().as_bytes().to_vec(), rest)
        } else {
            return Err(undecryptable());
        };
        if rest.len() < NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| undecryptable())?;
        let mut buffer = zeroize::Zeroizing::new(sealed.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| undecryptable())?;
        let text = std::str::from_utf8(plain).map_err(|_| undecryptable())?;
        Ok((SecretString::from(text.to_owned()), version))
    }

    fn read(&self, name: &SecretName) -> Result<(SecretString, u32), SecretError> {
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

    /// Every secret under `prefix` (a `/`-terminated name prefix): name, version, last change.
    pub(super) fn list(&self, prefix: &str) -> Result<Vec<super::SecretInfo>, SecretError> {
        let mut out = Vec::new();
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(SecretError::Io { path: dir, source }),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let file_name = entry.file_name();
                if file_name.to_string_lossy().starts_with(".tmp-") {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Some(rel) = path.strip_prefix(&self.root).ok().and_then(|p| p.to_str()) else {
                    continue;
                };
                let Ok(name) = SecretName::parse(rel) else {
                    continue;
                };
                let (_, version) = self.read(&name)?;
                let changed_at = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .map(super::rfc3339);
                out.push(super::SecretInfo {
                    name: name.as_str().to_owned(),
                    version: version.to_string(),
                    changed_at,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(super) fn get(&self, name: &SecretName) -> Result<SecretString, SecretError> {
        self.read(name).map(|(value, _)| value)
    }

    /// Writes the next version of `name` (1 for a new secret).
    pub(super) fn put(&self, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        let version = match self.read(name) {
            Ok((_, v)) => v.saturating_add(1),
            // A new secret, or one no key here opens (its key was lost): this write starts over.
            Err(SecretError::NotFound(_) | SecretError::Undecryptable { .. }) => 1,
            Err(e) => return Err(e),
        };
        self.write(name, version, value)
    }

    fn write(
        &self,
        name: &SecretName,
        version: u32,
        value: &SecretString,
    ) -> Result<(), SecretError> {
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
        let sealed = self.seal(name, version, value.expose_secret().as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{SecretStore, generate_secret};

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
    async fn local_store_counts_versions_and_lists_names_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::Local(LocalSecretStore::open(&dir.path().join("s")).unwrap());
        let key = SecretName::parse("tenants/acme/providers/openai").unwrap();
        let other = SecretName::parse("tenants/acme2/providers/openai").unwrap();
        let value = generate_secret();
        store.put(&key, &value).await.unwrap();
        store.put(&key, &generate_secret()).await.unwrap();
        store.put(&other, &generate_secret()).await.unwrap();
        let listed = store.list("tenants/acme/").await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (listed[0].name.as_str(), listed[0].version.as_str()),
            ("tenants/acme/providers/openai", "2")
        );
        assert!(
            listed[0]
                .changed_at
                .as_deref()
                .is_some_and(|d| d.ends_with('Z'))
        );
        assert!(!format!("{listed:?}").contains(value.expose_secret()));
        // The version is sealed with the value: an edited version number does not open.
        let path = dir.path().join("s").join(key.as_str());
        let mut bytes = fs::read(&path).unwrap();
        bytes[7] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            store.get(&key).await,
            Err(SecretError::Undecryptable { .. })
        ));
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
