//! `tenantctl audit isolation`: the isolation fences of a live deployment, checked from the inside.
//!
//! For each active tenant, tenantctl logs in as that tenant's own database role (the credentials its
//! runtime uses) and tries to reach every other tenant: another tenant's schema, database or pool
//! rows (with the transaction's tenant setting claiming the other tenant, as compromised code would),
//! and the control plane. It also checks the role has no dangerous attribute or membership, and that
//! every pool table keeps row-level security enabled and forced. The tests prove the fences hold in
//! CI (`docs/security.md`, sections D and J); this answers whether they still hold on the deployment
//! in front of you, e.g. after a suspected cross-tenant access (`docs/runbooks/cross-tenant-access.md`).

use anyhow::{Context, Result};
use runtime::domain::TenantId;
use runtime::secrets::SecretName;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::provision::Target;

/// One check and its outcome.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The checks of one tenant (or, for `tenant: None`, of the deployment's catalog).
#[derive(Debug, Serialize)]
pub struct TenantChecks {
    pub tenant: Option<String>,
    pub tier: Option<String>,
    pub checks: Vec<Check>,
}

/// What the registry says about where a tenant's data lives.
#[derive(Debug, Clone)]
struct Placement {
    id: String,
    tier: String,
    role: String,
    database: String,
    schema: String,
    elsewhere: Option<(String, u16)>,
}

/// Every check, for every tenant that has data (active, suspended, or in a move) or only `only`.
pub async fn check(target: &Target, only: Option<&TenantId>) -> Result<Vec<TenantChecks>> {
    let admin = target.admin().await?;
    let placements: Vec<Placement> = admin
        .query(
            "SELECT tenant_id, tier, db_role, coalesce(db_name, current_database()), db_schema, \
                    db_host, db_port \
               FROM control.tenants WHERE status <> 'offboarded' ORDER BY tenant_id",
            &[],
        )
        .await
        .context("reading the tenant registry")?
        .iter()
        .map(|r| Placement {
            id: r.get(0),
            tier: r.get(1),
            role: r.get(2),
            database: r.get(3),
            schema: r.get(4),
            elsewhere: r.get::<_, Option<String>>(5).zip(
                r.get::<_, Option<i32>>(6)
                    .and_then(|p| u16::try_from(p).ok()),
            ),
        })
        .collect();
    if let Some(t) = only
        && !placements.iter().any(|p| p.id == t.as_str())
    {
        anyhow::bail!(
            "tenant `{t}` has no data in this deployment (not onboarded, or offboarded)\nhint: `tenantctl status` lists the tenants"
        );
    }
    let mut report = vec![catalog(target).await?];
    for p in placements
        .iter()
        .filter(|p| only.is_none_or(|t| t.as_str() == p.id))
    {
        report.push(tenant(target, p, &placements).await?);
    }
    Ok(report)
}

/// Every pool table (partitions included) has row-level security enabled and forced, and a policy.
async fn catalog(target: &Target) -> Result<TenantChecks> {
    let admin = target.admin().await?;
    let rows = admin
        .query(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, \
                    EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = 'pool' AND c.relkind IN ('r', 'p') ORDER BY c.relname",
            &[],
        )
        .await?;
    let weak: Vec<String> = rows
        .iter()
        .filter(|r| !(r.get::<_, bool>(1) && r.get::<_, bool>(2) && r.get::<_, bool>(3)))
        .map(|r| r.get(0))
        .collect();
    Ok(TenantChecks {
        tenant: None,
        tier: None,
        checks: vec![Check {
            check: format!(
                "{} pool table(s) have row-level security enabled, forced and a policy",
                rows.len()
            ),
            ok: weak.is_empty(),
            detail: if weak.is_empty() {
                String::new()
            } else {
                format!("not fenced: {}", weak.join(", "))
            },
        }],
    })
}

async fn tenant(target: &Target, me: &Placement, all: &[Placement]) -> Result<TenantChecks> {
    let id = TenantId::parse(&me.id).map_err(|e| anyhow::anyhow!("registry id: {}", e.0))?;
    let mut checks = Vec::new();

    // The role itself, as the runtime checks it at start.
    let admin = target.admin().await?;
    let allowed = runtime::db::roles::allowed_memberships(&target.namespace, true);
    let hazards = admin
        .query_opt(runtime::db::roles::ROLE_HAZARDS_SQL, &[&me.role, &allowed])
        .await?
        .map(|row| runtime::db::roles::role_hazards_of(&row))
        .unwrap_or_default();
    checks.push(Check {
        check: format!(
            "role `{}` has no dangerous attribute or membership",
            me.role
        ),
        ok: hazards.is_empty(),
        detail: hazards.join(", "),
    });

    // Everything else as the tenant's own role, in one read-only transaction.
    let password = target
        .secrets
        .get(&SecretName::for_tenant(&id, "db-password")?)
        .await?;
    let mut endpoint = target.endpoint.clone();
    endpoint.dbname = me.database.clone();
    if let Some((host, port)) = &me.elsewhere {
        endpoint.host = host.clone();
        endpoint.port = *port;
    }
    let mut config = endpoint.config(&me.role, "tenantctl-isolation");
    config.password(password.expose_secret().as_bytes());
    let (mut client, _task) = runtime::db::connect(&config, endpoint.tls()?)
        .await
        .with_context(|| format!("logging in as `{}`", me.role))?;
    // Not a `TenantTx`: this is the operator probing the fence from the tenant's side, and it
    // reads no tenant data (counts only, under the tenant's own policies), then rolls back.
    let tx = client.build_transaction().read_only(true).start().await?;

    checks.push(
        reached(
            &tx,
            SCHEMAS_REACHED,
            &["control".to_owned()],
            "the control plane is out of reach".into(),
        )
        .await?,
    );

    let others: Vec<&Placement> = all.iter().filter(|p| p.id != me.id).collect();
    let same_server = |p: &Placement| p.elsewhere == me.elsewhere;
    // Other tenants' schemas in the database this role logs in to (the pool's is shared on purpose).
    let schemas: Vec<String> = others
        .iter()
        .filter(|p| same_server(p) && p.database == me.database && p.schema != me.schema)
        .map(|p| p.schema.clone())
        .collect();
    checks.push(
        reached(
            &tx,
            SCHEMAS_REACHED,
            &schemas,
            format!(
                "{} other tenant schema(s) in this database are out of reach",
                schemas.len()
            ),
        )
        .await?,
    );
    // Other tenants' databases on this server, and the platform's own (the registry's) for a
    // tenant with a database of its own.
    let platform_db = (me.elsewhere.is_none() && me.database != target.endpoint.dbname)
        .then(|| target.endpoint.dbname.clone());
    let databases: Vec<String> = others
        .iter()
        .filter(|p| same_server(p) && p.database != me.database)
        .map(|p| p.database.clone())
        .chain(platform_db)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    checks.push(
        reached(
            &tx,
            "SELECT datname FROM pg_database \
              WHERE datname = ANY($1) AND has_database_privilege(datname, 'CONNECT')",
            &databases,
            format!(
                "{} other database(s) on this server refuse this role",
                databases.len()
            ),
        )
        .await?,
    );

    // Pool rows: claim each other pool tenant as the transaction's tenant, as compromised code
    // would, and count what every readable pool table shows of it (row-level security: none).
    let pool_others: Vec<&&Placement> = others
        .iter()
        .filter(|p| p.tier == "pool" && same_server(p) && p.database == me.database)
        .collect();
    if me.tier == "pool" {
        let mut seen = Vec::new();
        for other in &pool_others {
            tx.execute("SELECT set_config('app.tenant_id', $1, true)", &[&other.id])
                .await?;
            // `query_to_xml` runs each count as this role, so the table's policies apply.
            for row in tx
                .query(
                    "SELECT c.relname, (xpath('/row/n/text()', query_to_xml(\
                         format('SELECT count(*) AS n FROM %I.%I WHERE tenant_id = %L', \
                                n.nspname, c.relname, $1::text), false, true, '')))[1]::text::bigint \
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE n.nspname = 'pool' AND c.relkind IN ('r', 'p') \
                        AND has_table_privilege(c.oid, 'SELECT') \
                        AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                                     AND a.attname = 'tenant_id' AND NOT a.attisdropped)",
                    &[&other.id],
                )
                .await?
            {
                let n: i64 = row.get(1);
                if n > 0 {
                    seen.push(format!("{} row(s) of {} in {}", n, other.id, row.get::<_, String>(0)));
                }
            }
        }
        checks.push(Check {
            check: format!(
                "{} other pool tenant(s) show no row, even with the tenant setting claiming them",
                pool_others.len()
            ),
            ok: seen.is_empty(),
            detail: seen.join("; "),
        });
    } else {
        checks.push(
            reached(
                &tx,
                SCHEMAS_REACHED,
                &["pool".to_owned()],
                "the shared pool is out of reach".into(),
            )
            .await?,
        );
    }
    tx.rollback().await?;
    Ok(TenantChecks {
        tenant: Some(me.id.clone()),
        tier: Some(me.tier.clone()),
        checks,
    })
}

/// Which of the schemas `$1` this role may use.
const SCHEMAS_REACHED: &str = "SELECT nspname FROM pg_namespace \
     WHERE nspname = ANY($1) AND has_schema_privilege(oid, 'USAGE')";

/// A check passing when `sql` (names among `$1` this role reaches) answers none of `names`.
async fn reached(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    names: &[String],
    check: String,
) -> Result<Check> {
    let reached: Vec<String> = tx
        .query(sql, &[&names])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Check {
        check,
        ok: reached.is_empty(),
        detail: reached.join(", "),
    })
}

/// The report as text: one line per check.
pub fn render(report: &[TenantChecks]) -> String {
    let mut text = String::new();
    for t in report {
        let who = match (&t.tenant, &t.tier) {
            (Some(id), Some(tier)) => format!("{id} ({tier})"),
            _ => "catalog".to_owned(),
        };
        for c in &t.checks {
            text.push_str(&format!(
                "{:<8} {:<22} {}{}\n",
                if c.ok { "ok" } else { "FINDING" },
                who,
                c.check,
                if c.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.detail)
                }
            ));
        }
    }
    text
}

/// Whether any check failed.
pub fn has_findings(report: &[TenantChecks]) -> bool {
    report.iter().any(|t| t.checks.iter().any(|c| !c.ok))
}
