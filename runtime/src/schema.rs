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
    /// For the pool tier, run once per tenant when the tenant first reaches this version: the
    /// migration itself runs once for the whole pool and, fenced by row-level security, sees no
    /// tenant's rows.
    pub pool_backfill: Option<PoolBackfill>,
}

/// What a pool migration does per tenant, as the migrator fenced to that tenant.
#[derive(Debug, Clone, Copy)]
pub struct PoolBackfill {
    /// Taken first (no parameters), so no insert is counted twice or missed meanwhile.
    pub lock: &'static str,
    /// Then each of these, with `$1` the tenant's id.
    pub statements: &'static [&'static str],
}

/// Every tenant migration, in order.
pub const TENANT_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "usage_ledger",
        sql: include_str!("../sql/tenant/0001_usage_ledger.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 2,
        name: "usage_ledger_by_subject",
        sql: include_str!("../sql/tenant/0002_usage_ledger_by_subject.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 3,
        name: "usage_daily",
        sql: include_str!("../sql/tenant/0003_usage_daily.sql"),
        pool_backfill: Some(PoolBackfill {
            lock: "LOCK TABLE pool.usage_ledger IN SHARE MODE",
            statements: &[
                "DELETE FROM pool.usage_daily WHERE tenant_id = $1",
                "INSERT INTO pool.usage_daily (tenant_id, day, requests, input_tokens, output_tokens, cost_micro_usd) \
             SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, count(*), sum(input_tokens), \
                    sum(output_tokens), sum(cost_micro_usd) \
               FROM pool.usage_ledger WHERE tenant_id = $1 GROUP BY 1, 2",
            ],
        }),
    },
    Migration {
        version: 4,
        name: "usage_ledger_outcome",
        sql: include_str!("../sql/tenant/0004_usage_ledger_outcome.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 5,
        name: "budget_and_rate_limits",
        sql: include_str!("../sql/tenant/0005_budget_and_rate_limits.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 6,
        name: "idempotency_keys",
        sql: include_str!("../sql/tenant/0006_idempotency_keys.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 7,
        name: "usage_daily_models",
        sql: include_str!("../sql/tenant/0007_usage_daily_models.sql"),
        pool_backfill: Some(PoolBackfill {
            lock: "LOCK TABLE pool.usage_ledger IN SHARE MODE",
            statements: &[
                "DELETE FROM pool.usage_daily_models WHERE tenant_id = $1",
                "INSERT INTO pool.usage_daily_models (tenant_id, day, provider, model, requests, \
                 input_tokens, output_tokens, cost_micro_usd) \
             SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, provider, model, count(*), \
                    sum(input_tokens), sum(output_tokens), sum(cost_micro_usd) \
               FROM pool.usage_ledger WHERE tenant_id = $1 GROUP BY 1, 2, 3, 4",
            ],
        }),
    },
    Migration {
        version: 8,
        name: "usage_ledger_unit_classes",
        sql: include_str!("../sql/tenant/0008_usage_ledger_unit_classes.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 9,
        name: "usage_ledger_provider_view",
        sql: include_str!("../sql/tenant/0009_usage_ledger_provider_view.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 10,
        name: "usage_ledger_monthly_partitions",
        sql: include_str!("../sql/tenant/0010_usage_ledger_monthly_partitions.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 11,
        name: "subject_budgets",
        sql: include_str!("../sql/tenant/0011_subject_budgets.sql"),
        pool_backfill: Some(PoolBackfill {
            lock: "LOCK TABLE pool.usage_ledger IN SHARE MODE",
            statements: &[
                "DELETE FROM pool.usage_subject_monthly WHERE tenant_id = $1",
                "INSERT INTO pool.usage_subject_monthly (tenant_id, subject, month, requests, \
                 cost_micro_usd) \
             SELECT tenant_id, subject, date_trunc('month', created_at AT TIME ZONE 'UTC')::date, \
                    count(*), sum(cost_micro_usd) \
               FROM pool.usage_ledger WHERE tenant_id = $1 GROUP BY 1, 2, 3",
            ],
        }),
    },
    Migration {
        version: 12,
        name: "idempotency_claimed_now",
        sql: include_str!("../sql/tenant/0012_idempotency_claimed_now.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 13,
        name: "budget_state_plans_kept",
        sql: include_str!("../sql/tenant/0013_budget_state_plans_kept.sql"),
        pool_backfill: None,
    },
    Migration {
        version: 14,
        name: "api_objects",
        sql: include_str!("../sql/tenant/0014_api_objects.sql"),
        pool_backfill: None,
    },
];

/// Monthly ledger partitions kept ahead of time (this month and the next `LEDGER_MONTHS_AHEAD`),
/// added on every convergence (`usage_ledger_partitions`, tenant migration 0010).
pub const LEDGER_MONTHS_AHEAD: i32 = 12;

/// The tenant migration that partitioned the ledger by month.
pub const LEDGER_PARTITIONED_SINCE: i32 = 10;

/// Table privileges of the tenant's own role, per table. The ledger is append-only for the tenant role;
/// the daily totals, derived from it by a trigger, are read-only; budget holds and rate meters are
/// the admissions' working state.
pub const TENANT_TABLE_GRANTS: &[(&str, &str)] = &[
    ("usage_ledger", "SELECT, INSERT"),
    ("usage_daily", "SELECT"),
    ("usage_daily_models", "SELECT"),
    ("usage_subject_monthly", "SELECT"),
    // Working state of admissions (`tenant_admit`): holds are added, resized (leases) and released,
    // meters refilled.
    ("budget_holds", "SELECT, INSERT, UPDATE, DELETE"),
    ("tenant_meters", "SELECT, INSERT, UPDATE"),
    ("token_debits", "SELECT, DELETE"),
    // Claimed by keyed model calls, given back by failed ones, expired by later claims.
    ("idempotency_keys", "SELECT, INSERT, DELETE"),
    // The API's objects (tenant migration 0014). Messages are never edited; template versions and
    // audit events never change and are never removed by the tenant's role.
    ("conversation_messages", "SELECT, INSERT, DELETE"),
    ("conversations", "SELECT, INSERT, UPDATE, DELETE"),
    ("prompt_template_versions", "SELECT, INSERT"),
    ("prompt_templates", "SELECT, INSERT, UPDATE"),
    ("members", "SELECT, INSERT, UPDATE, DELETE"),
    ("audit_events", "SELECT, INSERT"),
];

/// The tables that hold a tenant's data of record: what offboarding exports and a tier move copies.
/// Derived tables (`usage_daily`) are rebuilt from them at the destination, never copied.
/// Parents come before the tables that refer to them (a move copies them in this order).
pub const TENANT_DATA_TABLES: &[&str] = &[
    "usage_ledger",
    "conversations",
    "conversation_messages",
    "prompt_templates",
    "prompt_template_versions",
    "members",
    "audit_events",
];

/// Functions that run with their owner's (the migrator's) rights: each is a trigger function with
/// its search path pinned, allow-listed here and checked over the catalog (security case 35).
pub const SECURITY_DEFINER_FUNCTIONS: &[&str] = &["usage_daily_add"];

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
