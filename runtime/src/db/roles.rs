//! Role hazards: what makes a database role unfit to reach tenant data (docs/security.md case 34),
//! written once and checked by the runtime at startup, by every tenant pool before first use, and by
//! `tenantctl apply`. This module must not grant or alter anything.

use crate::db::DataError;
use crate::domain::Namespace;

/// What makes a role unfit to reach tenant data (docs/security.md case 34):
/// superuser, BYPASSRLS, CREATEROLE, CREATEDB, REPLICATION, owning a table in a tenant or control
/// schema, or membership (direct or through other roles, whatever their INHERIT setting) in any role
/// but the ones listed in `$2` (`allowed_memberships`): so not in `pg_read_all_data`,
/// `pg_write_all_data`, `pg_signal_backend`, `rds_superuser`, the migrator or another tenant's role.
/// One row for role `$1`. Used by the runtime's startup self-check, by every tenant connection pool
/// before first use (as the tenant's own role), and by `tenantctl apply`, so all mean the same thing.
pub const ROLE_HAZARDS_SQL: &str = "SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication, \
        EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relowner = r.oid \
                   AND (n.nspname IN ('pool', 'control') OR starts_with(n.nspname, 't_'))), \
        ARRAY(SELECT m.rolname::text FROM pg_roles m \
               WHERE m.oid <> r.oid AND pg_has_role(r.oid, m.oid, 'MEMBER') \
                 AND m.rolname::text <> ALL ($2::text[]) ORDER BY 1) \
   FROM pg_roles r WHERE r.rolname = $1";

/// The attribute hazards, in the column order of `ROLE_HAZARDS_SQL` (the last column lists
/// memberships).
pub const ROLE_HAZARDS: [&str; 6] = [
    "SUPERUSER",
    "BYPASSRLS",
    "CREATEROLE",
    "CREATEDB",
    "REPLICATION",
    "ownership of tenant tables",
];

/// The roles a role may be a member of: `rds_iam` (how IAM logins work on RDS) and, for a tenant's
/// role, the pool group that holds the pool table grants. A tenant role of any tier may be in the
/// group: the pool policy admits only rows that map to the role itself, and a tier move keeps the role
/// a member until its old copy is gone. A platform role (the runtime's registry reader, the pool group
/// itself) may be in nothing else.
pub fn allowed_memberships(namespace: &Namespace, tenant_role: bool) -> Vec<String> {
    let mut allowed = vec!["rds_iam".to_owned()];
    if tenant_role {
        allowed.push(namespace.pool_role());
    }
    allowed
}

/// The hazards a `ROLE_HAZARDS_SQL` row reports, each named.
fn role_hazards_of(row: &tokio_postgres::Row) -> Vec<String> {
    let mut hazards: Vec<String> = ROLE_HAZARDS
        .iter()
        .enumerate()
        .filter(|(i, _)| row.get::<_, bool>(*i))
        .map(|(_, h)| (*h).to_owned())
        .collect();
    let memberships: Vec<String> = row.get(ROLE_HAZARDS.len());
    hazards.extend(
        memberships
            .into_iter()
            .map(|m| format!("membership in {m}")),
    );
    hazards
}

/// The hazards of `role` beyond the memberships `allowed` (see `ROLE_HAZARDS_SQL`), each named;
/// none when it has none or does not exist. Over a connection or inside a transaction.
pub async fn hazards_of(
    client: &impl tokio_postgres::GenericClient,
    role: &str,
    allowed: &[String],
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt(ROLE_HAZARDS_SQL, &[&role, &allowed])
        .await?
        .map(|row| role_hazards_of(&row))
        .unwrap_or_default())
}

/// Fails when `role` exists and has any hazard (see `ROLE_HAZARDS_SQL`), over `client`.
pub async fn check_role_over(
    client: &tokio_postgres::Client,
    role: &str,
    allowed: &[String],
) -> Result<(), DataError> {
    match hazards_of(client, role, allowed).await? {
        h if !h.is_empty() => Err(DataError::UnsafeRole {
            role: role.to_owned(),
            hazards: h.join(", "),
        }),
        _ => Ok(()),
    }
}
