//! Saved plans (local target): `tenantctl plan --out FILE` writes the plan with what it was made
//! from (each manifest's path and spec hash) and the digest of what it was planned against;
//! `tenantctl apply FILE` re-reads the same manifests, observes the target again, and applies only
//! if both are unchanged, so what is applied is exactly what was reviewed. Anything changed since
//! (a manifest edited, another apply, a tenant offboarded) refuses with what changed and how to
//! plan again. The file holds names and hashes, never a secret; it is written 0600.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::observe::Observed;
use super::plan::Plan;
use crate::manifest::TenantSpec;

/// The format of a saved plan; `apply` refuses any other.
pub const FORMAT: &str = "tenantctl.plan/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedManifest {
    pub path: PathBuf,
    pub tenant: String,
    pub spec_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: String,
    pub tenantctl_version: String,
    pub namespace: String,
    pub database: String,
    pub reactivate: bool,
    pub manifests: Vec<SavedManifest>,
    /// SHA-256 of what the target had when the plan was made (`Observed`, as JSON).
    pub observed_sha256: String,
    pub plan: serde_json::Value,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn observed_digest(observed: &Observed) -> Result<String> {
    Ok(sha256_hex(&serde_json::to_vec(observed)?))
}

impl SavedPlan {
    pub fn new(
        target: &super::Target,
        manifests: &[(PathBuf, TenantSpec)],
        observed: &Observed,
        plan: &Plan,
        reactivate: bool,
    ) -> Result<Self> {
        Ok(Self {
            format: FORMAT.into(),
            tenantctl_version: env!("CARGO_PKG_VERSION").into(),
            namespace: target.namespace.to_string(),
            database: target.endpoint.dbname.clone(),
            reactivate,
            manifests: manifests
                .iter()
                .map(|(path, spec)| SavedManifest {
                    path: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
                    tenant: spec.id.to_string(),
                    spec_hash: spec.hash(),
                })
                .collect(),
            observed_sha256: observed_digest(observed)?,
            plan: serde_json::to_value(plan)?,
        })
    }

    /// Writes the plan to `file` (0600, replacing it).
    pub fn write(&self, file: &Path) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)
            .with_context(|| format!("cannot write the plan to `{}`", file.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.write_all(b"\n")?;
        Ok(())
    }

    /// Reads `file` when it is a saved plan: `Ok(None)` when it is not one (a manifest), an error
    /// when it is a saved plan that cannot be used.
    pub fn read_if_plan(file: &Path) -> Result<Option<Self>> {
        if file.is_dir() {
            return Ok(None);
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            return Ok(None);
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(None);
        };
        let Some(format) = value.get("format").and_then(|f| f.as_str()) else {
            return Ok(None);
        };
        if format != FORMAT {
            bail!(
                "`{}` is a saved plan of format `{format}`; this tenantctl applies `{FORMAT}`\nhint: make the plan again with this tenantctl: `tenantctl plan --out {}`",
                file.display(),
                file.display()
            );
        }
        let plan: Self = serde_json::from_value(value)
            .with_context(|| format!("`{}` is not a readable saved plan", file.display()))?;
        Ok(Some(plan))
    }

    /// Why this plan may no longer be applied, given the manifests read again and what the target
    /// has now; `None` when nothing changed.
    pub fn stale(
        &self,
        target: &super::Target,
        manifests: &[(PathBuf, TenantSpec)],
        observed: &Observed,
        plan: &Plan,
    ) -> Result<Option<String>> {
        if self.namespace != target.namespace.to_string() || self.database != target.endpoint.dbname
        {
            return Ok(Some(format!(
                "it was made for namespace `{}` (database `{}`), not `{}` (`{}`)",
                self.namespace, self.database, target.namespace, target.endpoint.dbname
            )));
        }
        for saved in &self.manifests {
            match manifests
                .iter()
                .find(|(p, _)| std::path::absolute(p).unwrap_or_else(|_| p.clone()) == saved.path)
            {
                None => {
                    return Ok(Some(format!("manifest `{}` is gone", saved.path.display())));
                }
                Some((path, spec)) if spec.hash() != saved.spec_hash => {
                    return Ok(Some(format!(
                        "manifest `{}` (tenant `{}`) changed",
                        path.display(),
                        saved.tenant
                    )));
                }
                Some(_) => {}
            }
        }
        if observed_digest(observed)? != self.observed_sha256
            || serde_json::to_value(plan)? != self.plan
        {
            return Ok(Some(
                "the target changed (another apply, migration, move or offboarding ran)".into(),
            ));
        }
        Ok(None)
    }
}
