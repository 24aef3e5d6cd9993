//! The shape of tenant data: versioned migrations for tenant tables and the grants the tenant role gets.
//!
//! The runtime owns these because it is what queries them; `tenantctl` applies them. Migrations are
//! append-only: never edit a released one, add the next number.

/// One tenant-table migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every tenant migration, in order.
pub const TENANT_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "usage_ledger",
        sql: include_str!("../sql/tenant/0001_usage_ledger.sql"),
    },
    Migration {
        version: 2,
        name: "usage_ledger_by_subject",
        sql: include_str!("../sql/tenant/0002_usage_ledger_by_subject.sql"),
    },
];

/// Table privileges of the tenant's own role, per table. The ledger is append-only for the tenant role.
pub const TENANT_TABLE_GRANTS: &[(&str, &str)] = &[("usage_ledger", "SELECT, INSERT")];

/// The newest tenant migration version.
pub fn latest_version() -> i32 {
    TENANT_MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_one_by_one_and_every_file_is_listed() {
        for (i, m) in super::TENANT_MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/tenant");
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            super::TENANT_MIGRATIONS.len()
        );
    }
}
