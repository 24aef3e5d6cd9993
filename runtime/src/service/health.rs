//! Readiness: whether this process can serve, checked against what every request needs (the
//! registry's snapshot, the database holding the usage ledger, the secret store). No check reads
//! tenant data or a secret value.

use std::time::Duration;

use crate::domain::TenantId;
use crate::registry::TenantDirectory;
use crate::secrets::SecretName;
use crate::secrets::cache::SecretCache;
use crate::tenancy::DataPlane;

/// How long each check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Each dependency's state: `ok`, or why not (`stale`, `unreachable`, `unavailable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// (check, state), in a fixed order: `registry`, `usage_store`, `secret_store`.
    pub checks: [(&'static str, &'static str); 3],
}

impl Readiness {
    /// Whether every check is `ok`.
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|(_, state)| *state == "ok")
    }

    /// The checks that are not `ok`.
    pub fn failing(&self) -> impl Iterator<Item = &(&'static str, &'static str)> {
        self.checks.iter().filter(|(_, state)| *state != "ok")
    }
}

/// Checks the three at once: the registry's snapshot is within its maximum age, the database
/// accepts connections, and the secret store answers (for a one-tenant deployment, inside that
/// tenant's own namespace, the only one it may read).
pub async fn readiness(
    directory: &TenantDirectory,
    data: &DataPlane,
    secrets: &SecretCache,
    deployment_tenant: Option<&TenantId>,
) -> Readiness {
    let registry = if directory.is_stale() { "stale" } else { "ok" };
    let probe = match deployment_tenant {
        Some(t) => SecretName::for_tenant(t, "readiness-probe"),
        None => SecretName::platform("readiness-probe"),
    };
    let secret_check = async {
        let Ok(name) = probe else {
            return "unavailable";
        };
        match tokio::time::timeout(CHECK_TIMEOUT, secrets.store().ping(&name)).await {
            Ok(Ok(())) => "ok",
            _ => "unavailable",
        }
    };
    let db_check = async {
        if data.endpoint().accepts_connections(CHECK_TIMEOUT).await {
            "ok"
        } else {
            "unreachable"
        }
    };
    let (usage_store, secret_store) = tokio::join!(db_check, secret_check);
    Readiness {
        checks: [
            ("registry", registry),
            ("usage_store", usage_store),
            ("secret_store", secret_store),
        ],
    }
}
