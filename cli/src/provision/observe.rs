//! Reads what exists on a target: the registry, roles, schemas, databases, migration versions and
//! secrets. Read-only; must not change anything.
//!
//! `Scope::Only(ids)` looks closely only at the tenants being planned (their roles, schemas, specs,
//! versions and secrets) plus one cheap list of every registry id and status, so planning one tenant
//! in a deployment of thousands costs the same as in an empty one. `Scope::All` looks at everything.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use runtime::domain::{Namespace, TenantId, Tier};
use serde::Serialize;

use super::Target;

/// Which tenants to look at closely.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Only(&'a [TenantId]),
}

/// One tenant as the target has it. Outside the scope only `tier` and `status` are filled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedTenant {
    pub tier: Tier,
    pub status: String,
    pub spec: serde_json::Value,
    pub spec_hash: String,
    pub migration_version: i32,
    /// Its data is on a server of its own (a dedicated tenant's RDS instance on AWS), so its role and
    /// database are not looked for on this one.
    #[serde(default)]
    pub own_server: bool,
    /// The day (UTC, `YYYY-MM-DD`) an offboarded tenant was offboarded.
    #[serde(default)]
    pub offboarded_on: Option<String>,
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
}

fn strings(rows: &[tokio_postgres::Row]) -> BTreeSet<String> {
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

pub async fn observe(target: &Target, scope: Scope<'_>) -> Result<Observed> {
    let client = target.admin().await?;
    let ns: &Namespace = &target.namespace;
    let control_plane: bool = client
        .query_one("SELECT to_regclass('control.tenants') IS NOT NULL", &[])
        .await?
        .get(0);
    // Every registry id and status (cheap), then the scope's ids.
    let mut tenants = BTreeMap::new();
    if control_plane {
        for row in client
            // `db_host` through JSON: a control plane from before the column still answers.
            .query(
                "SELECT tenant_id, tier, status, (to_jsonb(t) ->> 'db_host') IS NOT NULL, \
                        CASE WHEN status = 'offboarded' \
                             THEN to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') END \
                   FROM control.tenants t",
                &[],
            )
            .await?
        {
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
                    spec: serde_json::Value::Null,
                    spec_hash: String::new(),
                    migration_version: 0,
                    own_server: row.get(3),
                    offboarded_on: row.get(4),
                },
            );
        }
    }
    let ids: Vec<TenantId> = match scope {
        Scope::All => tenants.keys().cloned().collect(),
        Scope::Only(ids) => ids.to_vec(),
    };
    let id_strings: Vec<&str> = ids.iter().map(TenantId::as_str).collect();
    if control_plane {
        let rows = client
            .query(
                "SELECT t.tenant_id, t.spec, t.spec_hash, \
                        coalesce((SELECT max(version) FROM control.tenant_migrations m \
                                   WHERE m.tenant_id = t.tenant_id), 0) \
                   FROM control.tenants t WHERE t.tenant_id = ANY($1)",
                &[&id_strings],
            )
            .await?;
        for row in rows {
            let Ok(id) = TenantId::parse(row.get::<_, &str>(0)) else {
                continue;
            };
            if let Some(t) = tenants.get_mut(&id) {
                t.spec = row.get(1);
                t.spec_hash = row.get(2);
                t.migration_version = row.get(3);
            }
        }
    }
    let mut role_names = vec![ns.migrator_role(), ns.runtime_role(), ns.pool_role()];
    role_names.extend(ids.iter().map(|id| ns.tenant_role(id)));
    let roles = strings(
        &client
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
                &[&role_names],
            )
            .await?,
    );
    let mut schema_names = vec!["pool".to_owned()];
    schema_names.extend(ids.iter().map(Namespace::tenant_schema));
    let schemas = strings(
        &client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1)",
                &[&schema_names],
            )
            .await?,
    );
    let database_names: Vec<String> = ids.iter().map(|id| ns.tenant_database(id)).collect();
    let databases = strings(
        &client
            .query(
                "SELECT datname::text FROM pg_database WHERE datname = ANY($1)",
                &[&database_names],
            )
            .await?,
    );
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
    let ids: Vec<TenantId> = ids.to_vec();
    let secrets = target.secrets.tenants_having(&ids, "db-password").await?;
    Ok(Observed {
        control_plane,
        roles,
        schemas,
        tenants,
        secrets,
        databases,
        pool_migration_version,
    })
}
