//! Offboarding a tenant's data: export every tenant table to portable files, verify them, then delete
//! the tenant from its tier and mark its registry row `offboarded` (kept for finance history).
//!
//! Nothing is deleted before the export is written and re-read successfully. In the pool, export and
//! delete run as the migrator under row-level security with the tenant set, so they can reach only
//! that tenant's rows. Re-running for an offboarded tenant finishes any cleanup left behind.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use minijinja::context;
use runtime::domain::{TenantId, Tier};
use runtime::schema::{TENANT_DATA_TABLES, TENANT_TABLE_GRANTS};
use runtime::secrets::SecretName;
use serde::Serialize;

use super::Target;
use super::apply::lock_tenant_id;
use crate::sql;

/// Where a tenant's data lives, from the registry.
#[derive(Debug, Clone)]
pub struct Location {
    pub tier: Tier,
    pub status: String,
    pub role: String,
    pub schema: String,
    pub database: String,
    /// The server of its own the data is on (a dedicated tenant's RDS instance on AWS); `None`: this
    /// target's server.
    pub host: Option<(String, u16)>,
}

/// The registry's columns a `Location` is read from, in `location_of`'s order (a macro, so each
/// query stays one static string).
macro_rules! location_columns {
    () => {
        "tier, status, db_role, db_schema, coalesce(db_name, current_database()), db_host, db_port"
    };
}

fn location_of(row: &tokio_postgres::Row) -> Result<Location> {
    Ok(Location {
        tier: Tier::parse(row.get(0)).map_err(|e| anyhow::anyhow!("{e}"))?,
        status: row.get(1),
        role: row.get(2),
        schema: row.get(3),
        database: row.get(4),
        host: row.get::<_, Option<String>>(5).zip(
            row.get::<_, Option<i32>>(6)
                .and_then(|p| u16::try_from(p).ok()),
        ),
    })
}

pub async fn locate(target: &Target, tenant: &TenantId) -> Result<Location> {
    let admin = target.admin().await?;
    let row = admin
        .query_opt(
            concat!(
                "SELECT ",
                location_columns!(),
                " FROM control.tenants WHERE tenant_id = $1"
            ),
            &[&tenant.as_str()],
        )
        .await?
        .with_context(|| format!("tenant `{tenant}` is not in the registry\nhint: `tenantctl status` lists the tenants"))?;
    location_of(&row)
}

/// Every tenant of the registry, by id, with where its data is.
pub async fn locate_all(admin: &tokio_postgres::Client) -> Result<BTreeMap<String, Location>> {
    let rows = admin
        .query(
            concat!(
                "SELECT ",
                location_columns!(),
                ", tenant_id FROM control.tenants"
            ),
            &[],
        )
        .await
        .context("reading the tenant registry")?;
    rows.iter()
        .map(|r| Ok((r.get::<_, String>(7), location_of(r)?)))
        .collect()
}

/// Logs in as `tenant`'s own role to its own data (its database, on its own server if it has one,
/// over the target's verified TLS), with the stored password: the way its runtime does.
pub async fn connect_as_tenant(
    target: &Target,
    tenant: &TenantId,
    loc: &Location,
    application: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    use secrecy::ExposeSecret as _;
    let password = target
        .secrets
        .get(&SecretName::for_tenant(tenant, "db-password")?)
        .await?;
    let mut endpoint = target.endpoint.clone();
    endpoint.dbname = loc.database.clone();
    if let Some((host, port)) = &loc.host {
        endpoint.host = host.clone();
        endpoint.port = *port;
    }
    let mut config = endpoint.config(&loc.role, application);
    config.password(password.expose_secret().as_bytes());
    runtime::db::connect(&config, endpoint.tls()?)
        .await
        .with_context(|| format!("logging in as `{}`", loc.role))
}

/// What a destructive step (`offboard`, `move`) would remove, for its confirmation and `--dry-run`:
/// where the tenant's data lives and how many rows each of its tables holds there.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub tenant: TenantId,
    pub tier: Tier,
    pub status: String,
    /// The tenant's home in words: its rows in the pool, its schema, its database.
    pub home: String,
    /// Rows per table; `None` when the data is on a server of its own (not counted in a preview).
    pub rows: Option<Vec<(String, usize)>>,
}

impl Preview {
    pub fn render(&self) -> String {
        let mut out = format!(
            "`{}` ({} tier, {}): {}",
            self.tenant, self.tier, self.status, self.home
        );
        match &self.rows {
            Some(rows) => {
                let total: usize = rows.iter().map(|(_, n)| n).sum();
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!(", {total} row(s)"));
                for (table, n) in rows.iter().filter(|(_, n)| *n > 0) {
                    let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\n  {table}: {n}"));
                }
            }
            None => out.push_str(" (on a server of its own; rows not counted)"),
        }
        out
    }
}

/// Where `tenant`'s data is and how much of it there is; reads only.
pub async fn preview(target: &Target, tenant: &TenantId) -> Result<Preview> {
    let loc = locate(target, tenant).await?;
    let home = match loc.tier {
        Tier::Pool => format!(
            "its rows in schema `{}` of database `{}`",
            loc.schema, loc.database
        ),
        Tier::Schema => format!("schema `{}` of database `{}`", loc.schema, loc.database),
        Tier::Dedicated => format!("database `{}`", loc.database),
    };
    let rows = if loc.host.is_some() || loc.status == "offboarded" {
        None
    } else {
        let mut rows = Vec::new();
        for table in TENANT_DATA_TABLES {
            rows.push((
                (*table).to_owned(),
                read_rows(target, &loc, tenant, table).await?.len(),
            ));
        }
        Some(rows)
    };
    Ok(Preview {
        tenant: tenant.clone(),
        tier: loc.tier,
        status: loc.status,
        home,
        rows,
    })
}

/// Makes `tx` act as the migrator with `tenant` set transaction-locally, so pool maintenance reaches
/// that tenant's rows only (the maintenance row-level security policy).
pub async fn fence_to_tenant(
    tx: &tokio_postgres::Transaction<'_>,
    target: &Target,
    tenant: &TenantId,
) -> Result<()> {
    tx.batch_execute(&sql::render(
        "act-as-migrator.sql",
        context! { migrator => target.namespace.migrator_role() },
    )?)
    .await?;
    tx.execute(
        "SELECT set_config('app.tenant_id', $1, true)",
        &[&tenant.as_str()],
    )
    .await?;
    Ok(())
}

/// Every row of one tenant table, as JSON text, in a stable order.
pub async fn read_rows(
    target: &Target,
    loc: &Location,
    tenant: &TenantId,
    table: &str,
) -> Result<Vec<String>> {
    let mut client = target.connect_admin(&loc.database).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "maintenance runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    if loc.tier == Tier::Pool {
        fence_to_tenant(&tx, target, tenant).await?;
    }
    let query = sql::render(
        "tenant-rows.sql",
        context! { schema => loc.schema, table => table },
    )?;
    let rows = tx.query(&query, &[&tenant.as_str()]).await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// The tenant's own audit chain (in its tier), oldest first, read as the admin (fenced to the
/// tenant in the pool).
pub async fn tenant_chain(
    target: &Target,
    loc: &Location,
    tenant: &TenantId,
) -> Result<Vec<runtime::audit::Record>> {
    let mut client = target.connect_admin(&loc.database).await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "maintenance runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    if loc.tier == Tier::Pool {
        fence_to_tenant(&tx, target, tenant).await?;
    }
    tx.query("SELECT set_config('search_path', $1, true)", &[&loc.schema])
        .await?;
    let rows = tx
        .query(runtime::audit::tenant_chain::CHAIN, &[&tenant.as_str()])
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(runtime::audit::Record::from_row).collect())
}

/// One exported table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExportedTable {
    pub file: String,
    pub rows: usize,
    pub sha256: String,
}

/// `manifest.json` of an export.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ExportManifest {
    pub tenant: String,
    pub tier: Tier,
    pub format: String,
    pub exported_at_unix: u64,
    pub tables: BTreeMap<String, ExportedTable>,
}

/// Writes `dir/name` atomically (a temporary file, then a rename), mode 0600 from its creation.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("cannot write `{}`", dir.join(name).display()))?;
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes one JSON-lines file per tenant table plus `manifest.json` under `dir/<tenant>/`, then re-reads
/// every file and checks its row count and SHA-256.
pub async fn export(
    target: &Target,
    loc: &Location,
    tenant: &TenantId,
    dir: &Path,
) -> Result<(PathBuf, ExportManifest)> {
    // The export holds the tenant's data: its directory is 0700 and every file 0600, whatever the
    // umask (issue 9 item 7).
    let out = dir.join(tenant.as_str());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&out)
        .with_context(|| format!("cannot create `{}`", out.display()))?;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make `{}` private", out.display()))?;
    let mut tables = BTreeMap::new();
    // The data of record; derived tables (daily totals) are rebuilt from it wherever it is loaded.
    for table in TENANT_DATA_TABLES {
        let rows = read_rows(target, loc, tenant, table).await?;
        let mut body = rows.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        let file = format!("{table}.jsonl");
        write_private(&out, &file, body.as_bytes())?;
        tables.insert(
            (*table).to_owned(),
            ExportedTable {
                file,
                rows: rows.len(),
                sha256: sha256_hex(body.as_bytes()),
            },
        );
    }
    let manifest = ExportManifest {
        tenant: tenant.to_string(),
        tier: loc.tier,
        format: "jsonl: one JSON object per row, as PostgreSQL row_to_json renders it".into(),
        exported_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        tables,
    };
    write_private(
        &out,
        "manifest.json",
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    for (table, t) in &manifest.tables {
        let bytes = std::fs::read(out.join(&t.file))?;
        let lines = bytes.iter().filter(|b| **b == b'\n').count();
        if lines != t.rows || sha256_hex(&bytes) != t.sha256 {
            bail!("the export of `{table}` did not read back intact; nothing was deleted");
        }
    }
    Ok((out, manifest))
}

/// Deletes the tenant's data at `loc` inside `tx`: its pool rows (as the migrator, fenced by row-level
/// security) and its pool-group membership, or its schema; and its privileges on `loc`'s database
/// unless `next` (the tier it moves to; `None` when offboarding) is in the same database. A dedicated
/// database, the role and its password go afterwards in `remove_data_after` (not transactional).
pub async fn remove_data_in(
    tx: &tokio_postgres::Transaction<'_>,
    target: &Target,
    loc: &Location,
    tenant: &TenantId,
    next: Option<Tier>,
) -> Result<()> {
    let role_exists = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&loc.role])
        .await?
        .is_some();
    match loc.tier {
        Tier::Pool => {
            fence_to_tenant(tx, target, tenant).await?;
            for (table, _) in TENANT_TABLE_GRANTS {
                tx.execute(
                    &sql::render("tenant-rows-delete.sql", context! { table => table })?,
                    &[&tenant.as_str()],
                )
                .await?;
            }
            tx.batch_execute("RESET ROLE").await?;
            if role_exists {
                tx.batch_execute(&sql::render(
                    "leave-pool.sql",
                    context! { group => target.namespace.pool_role(), role => loc.role },
                )?)
                .await?;
            }
        }
        Tier::Schema => {
            tx.batch_execute(&sql::render(
                "drop-tenant.sql",
                context! { schema => loc.schema },
            )?)
            .await?;
        }
        Tier::Dedicated => {}
    }
    let stays_in_database =
        loc.tier != Tier::Dedicated && matches!(next, Some(Tier::Pool | Tier::Schema));
    if role_exists && loc.tier != Tier::Dedicated && !stays_in_database {
        tx.batch_execute(&sql::render(
            "revoke-connect.sql",
            context! { role => loc.role, database => loc.database },
        )?)
        .await?;
    }
    Ok(())
}

/// The non-transactional rest of a removal: a dedicated database, then (when offboarding, `next` is
/// `None`) the tenant's role and its password.
pub async fn remove_data_after(
    target: &Target,
    loc: &Location,
    tenant: &TenantId,
    next: Option<Tier>,
) -> Result<()> {
    let admin = target.admin().await?;
    if loc.tier == Tier::Dedicated {
        admin
            .batch_execute(&sql::render(
                "drop-database.sql",
                context! { database => loc.database },
            )?)
            .await
            .with_context(|| format!("dropping database `{}`", loc.database))?;
    }
    if next.is_none() {
        admin
            .batch_execute(&sql::render(
                "drop-role.sql",
                context! { role => loc.role },
            )?)
            .await?;
        target
            .secrets
            .delete(&SecretName::for_tenant(tenant, "db-password")?)
            .await?;
    }
    Ok(())
}

/// What offboarding did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tenant: TenantId,
    pub tier: Tier,
    pub export_dir: PathBuf,
    pub rows: BTreeMap<String, usize>,
    pub already_offboarded: bool,
}

/// Rows copied into the retained usage store per statement.
const RETAIN_BATCH: usize = 5_000;

/// Copies the tenant's exported ledger (`dir/usage_ledger.jsonl`, verified) into the control
/// plane's retained usage store, in `tx` (the offboarding's own transaction), kept for its
/// manifest's `retention.usage_days` from today.
async fn retain_usage(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    dir: &Path,
) -> Result<u64> {
    const COPY: &str = "INSERT INTO control.usage_retained (id, tenant_id, request_id, subject, \
           provider, model, input_tokens, output_tokens, cost_micro_usd, price_book_version, outcome, \
           usage_estimated, created_at, cached_input_tokens, cache_write_tokens, reasoning_tokens, \
           provider_request_id, provider_usage, provider_cost_micro_usd, cost_tags, retain_until) \
         SELECT r.id, r.tenant_id, r.request_id, r.subject, r.provider, r.model, r.input_tokens, \
                r.output_tokens, r.cost_micro_usd, r.price_book_version, r.outcome, \
                r.usage_estimated, r.created_at, coalesce(r.cached_input_tokens, 0), \
                coalesce(r.cache_write_tokens, 0), coalesce(r.reasoning_tokens, 0), \
                r.provider_request_id, r.provider_usage, r.provider_cost_micro_usd, \
                coalesce(r.cost_tags, '{}'), current_date + (SELECT (spec #>> '{retention_days}')::int \
                                  FROM control.tenants WHERE tenant_id = $2) \
           FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, tenant_id text, request_id uuid, \
                subject text, provider text, model text, input_tokens bigint, output_tokens bigint, \
                cost_micro_usd bigint, price_book_version text, outcome text, usage_estimated boolean, \
                created_at timestamptz, cached_input_tokens bigint, cache_write_tokens bigint, \
                reasoning_tokens bigint, provider_request_id text, provider_usage jsonb, \
                provider_cost_micro_usd bigint, cost_tags jsonb) \
          WHERE r.tenant_id = $2 \
         ON CONFLICT (id) DO NOTHING";
    let text = std::fs::read_to_string(dir.join("usage_ledger.jsonl"))
        .context("reading back the exported ledger to retain it")?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let mut copied = 0;
    for chunk in lines.chunks(RETAIN_BATCH) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|l| serde_json::from_str(l))
            .collect::<Result<_, _>>()
            .context("the exported ledger does not parse")?;
        copied += tx
            .execute(COPY, &[&serde_json::Value::Array(rows), &tenant.as_str()])
            .await
            .context("copying the ledger into the retained usage store")?;
    }
    if copied != lines.len() as u64 {
        bail!(
            "{copied} of {} ledger rows were retained; nothing was deleted",
            lines.len()
        );
    }
    Ok(copied)
}

/// Exports, verifies, deletes, and marks the tenant offboarded.
pub async fn offboard(target: &Target, tenant: &TenantId, export_dir: &Path) -> Result<Report> {
    offboard_from(target, None, tenant, export_dir).await
}

/// `offboard`, for a tenant whose data is on a server of its own (`data`: a dedicated tenant's RDS
/// instance on AWS): exported from there; the instance itself goes with the tenant's stack.
pub async fn offboard_from(
    target: &Target,
    data: Option<&Target>,
    tenant: &TenantId,
    export_dir: &Path,
) -> Result<Report> {
    let loc = locate(target, tenant).await?;
    let already = loc.status == "offboarded";
    let mut rows = BTreeMap::new();
    if !already {
        let (_, manifest) = export(data.unwrap_or(target), &loc, tenant, export_dir).await?;
        rows = manifest
            .tables
            .iter()
            .map(|(k, v)| (k.clone(), v.rows))
            .collect();
    }
    let mut client = target.admin().await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "maintenance runs as the admin role, not as a tenant"
    )]
    let tx = client.transaction().await?;
    lock_tenant_id(&tx, tenant).await?;
    if !already {
        retain_usage(&tx, tenant, &export_dir.join(tenant.as_str())).await?;
    }
    remove_data_in(&tx, target, &loc, tenant, None).await?;
    tx.execute(
        "UPDATE control.tenants SET status = 'offboarded', updated_at = now() WHERE tenant_id = $1",
        &[&tenant.as_str()],
    )
    .await?;
    super::apply::record(
        &tx,
        tenant,
        "offboard",
        "succeeded",
        &serde_json::to_string(&rows)?,
    )
    .await?;
    tx.commit().await.context("committing the offboarding")?;
    if data.is_none() {
        remove_data_after(target, &loc, tenant, None).await?;
    }
    Ok(Report {
        tenant: tenant.clone(),
        tier: loc.tier,
        export_dir: export_dir.join(tenant.as_str()),
        rows,
        already_offboarded: already,
    })
}
