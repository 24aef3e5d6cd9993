//! Reads what exists on a target: the registry, roles, schemas, migration versions and secrets.
//! Read-only; must not change anything.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use runtime::domain::{Namespace, TenantId, Tier};
use runtime::secrets::SecretName;
use serde::Serialize;

use super::Target;

/// One tenant as the target has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedTenant {
    pub tier: Tier,
    pub status: String,
    pub spec: serde_json::Value,
    pub spec_hash: String,
    pub migration_version: i32,
}

/// Everything the planner needs to know about a target.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    pub control_plane: bool,
    pub roles: BTreeSet<String>,
    pub schemas: BTreeSet<String>,
    pub tenants: BTreeMap<TenantId, ObservedTenant>,
    /// Tenants whose database password exists in the secret store.
    pub secrets: BTreeSet<TenantId>,
    /// Databases of this namespace's dedicated tenants.
    pub databases: BTreeSet<String>,
    /// The pool tier's migration version (0: no pool yet).
    pub pool_migration_version: i32,
    /// Whether the pool role's password exists in the secret store.
    pub pool_secret: bool,
}

pub async fn observe(target: &Target, ids: &[TenantId]) -> Result<Observed> {
    let client = target.admin().await?;
    let ns: &Namespace = &target.namespace;
    let control_plane: bool = client
        .query_one("SELECT to_regclass('control.tenants') IS NOT NULL", &[])
        .await?
        .get(0);
    let roles = client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&format!("{}_", ns.as_str())],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let schemas = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, 't_') OR nspname = 'pool'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let databases = client
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
            &[&format!("{}_t_", ns.as_str())],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let has_pool_table: bool = client
        .query_one(
            "SELECT to_regclass('control.pool_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let pool_migration_version: i32 = if has_pool_table {
        client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM control.pool_migrations",
                &[],
            )
            .await?
            .get(0)
    } else {
        0
    };
    let pool_secret = target
        .secrets
        .exists(&SecretName::platform("db/pool-password")?)
        .await?;
    let mut tenants = BTreeMap::new();
    if control_plane {
        let rows = client
            .query(
                "SELECT t.tenant_id, t.tier, t.status, t.spec, t.spec_hash, \
                        coalesce((SELECT max(version) FROM control.tenant_migrations m \
                                   WHERE m.tenant_id = t.tenant_id), 0) \
                   FROM control.tenants t",
                &[],
            )
            .await?;
        for row in rows {
            let (Ok(id), Ok(tier)) = (
                TenantId::parse(row.get::<_, &str>(0)),
                Tier::parse(row.get::<_, &str>(1)),
            ) else {
                continue;
            };
            tenants.insert(
                id,
                ObservedTenant {
                    tier,
                    status: row.get(2),
                    spec: row.get(3),
                    spec_hash: row.get(4),
                    migration_version: row.get(5),
                },
            );
        }
    }
    let mut secrets = BTreeSet::new();
    for id in ids.iter().chain(tenants.keys()) {
        if target
            .secrets
            .exists(&SecretName::for_tenant(id, "db-password")?)
            .await?
        {
            secrets.insert(id.clone());
        }
    }
    Ok(Observed {
        control_plane,
        roles,
        schemas,
        tenants,
        secrets,
        databases,
        pool_migration_version,
        pool_secret,
    })
}
