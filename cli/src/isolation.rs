//! `tenantctl audit isolation`: the isolation fences of a live deployment, checked from the inside.
//!
//! For each active tenant, tenantctl logs in as that tenant's own database role (the credentials its
//! runtime uses) and tries to reach every other tenant: another tenant's schema, database or pool
//! rows (with the transaction's tenant setting claiming the other tenant, as compromised code would),
//! and the control plane. It also checks the role has no dangerous attribute or membership, and that
//! every pool table keeps row-level security enabled and forced. The tests prove the fences hold in
//! CI (`docs/security.md`, sections D and J); this answers whether they still hold on the deployment
//! in front of you, e.g. after a suspected cross-tenant access (`docs/runbooks/cross-tenant-access.md`).

use anyhow::Result;
use runtime::domain::{TenantId, Tier};
use serde::Serialize;

use crate::provision::Target;
use crate::provision::offboard::{Location, connect_as_tenant, locate_all};

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
    pub tier: Option<Tier>,
    pub checks: Vec<Check>,
}

/// Every check, for every tenant that has data (active, suspended, or in a move) or only `only`.
pub async fn check(target: &Target, only: Option<&TenantId>) -> Result<Vec<TenantChecks>> {
    let admin = target.admin().await?;
    let placed: Vec<(String, Location)> = locate_all(&admin)
        .await?
        .into_iter()
        .filter(|(_, l)| l.status != "offboarded")
        .collect();
    if let Some(t) = only
        && !placed.iter().any(|(id, _)| id == t.as_str())
    {
        anyhow::bail!(
            "tenant `{t}` has no data in this deployment (not onboarded, or offboarded)\nhint: `tenantctl status` lists the tenants"
        );
    }
    let mut report = vec![catalog(&admin).await?];
    for (id, loc) in placed
        .iter()
        .filter(|(id, _)| only.is_none_or(|t| t.as_str() == id))
    {
        report.push(tenant(target, &admin, id, loc, &placed).await?);
    }
    Ok(report)
}

/// Every pool table (partitions included) has row-level security enabled and forced, and a policy.
async fn catalog(admin: &tokio_postgres::Client) -> Result<TenantChecks> {
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

async fn tenant(
    target: &Target,
    admin: &tokio_postgres::Client,
    id: &str,
    me: &Location,
    all: &[(String, Location)],
) -> Result<TenantChecks> {
    let tenant_id = TenantId::parse(id).map_err(|e| anyhow::anyhow!("registry id: {}", e.0))?;
    let mut checks = Vec::new();

    // The role itself, as the runtime checks it at start.
    let allowed = runtime::db::roles::allowed_memberships(&target.namespace, true);
    let hazards = runtime::db::roles::hazards_of(admin, &me.role, &allowed).await?;
    checks.push(Check {
        check: format!(
            "role `{}` has no dangerous attribute or membership",
            me.role
        ),
        ok: hazards.is_empty(),
        detail: hazards.join(", "),
    });

    // Everything else as the tenant's own role, in one read-only transaction.
    let (mut client, _task) =
        connect_as_tenant(target, &tenant_id, me, "tenantctl-isolation").await?;
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

    let others: Vec<(&str, &Location)> = all
        .iter()
        .filter(|(other, _)| other != id)
        .map(|(other, l)| (other.as_str(), l))
        .collect();
    let same_server = |l: &Location| l.host == me.host;
    // Other tenants' schemas in the database this role logs in to (the pool's is shared on purpose).
    let schemas: Vec<String> = others
        .iter()
        .filter(|(_, l)| same_server(l) && l.database == me.database && l.schema != me.schema)
        .map(|(_, l)| l.schema.clone())
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
    let platform_db = (me.host.is_none() && me.database != target.endpoint.dbname)
        .then(|| target.endpoint.dbname.clone());
    let databases: Vec<String> = others
        .iter()
        .filter(|(_, l)| same_server(l) && l.database != me.database)
        .map(|(_, l)| l.database.clone())
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
    let pool_others: Vec<&str> = others
        .iter()
        .filter(|(_, l)| l.tier == Tier::Pool && same_server(l) && l.database == me.database)
        .map(|(other, _)| *other)
        .collect();
    if me.tier == Tier::Pool {
        let mut seen = Vec::new();
        for other in &pool_others {
            tx.execute("SELECT set_config('app.tenant_id', $1, true)", &[other])
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
                    &[other],
                )
                .await?
            {
                let n: i64 = row.get(1);
                if n > 0 {
                    seen.push(format!(
                        "{n} row(s) of {other} in {}",
                        row.get::<_, String>(0)
                    ));
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
        tenant: Some(id.to_owned()),
        tier: Some(me.tier),
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
