//! The cost of the tenant-scoped handle (issues 4 and 9): the pool tier's request path (BEGIN pipelined
//! with the transaction-local `app.tenant_id` and `search_path`, the query under forced row-level
//! security keyed on the login role, COMMIT) against the same query on a schema-tier table without RLS
//! (the same statements), same rows per tenant, same run, real Postgres (the test harness's throwaway
//! cluster). The statements are the ones `TenantTx` sends. Also: `/v1/usage` totals from the daily rows
//! against a sum over the ledger, and a ledger insert with its totals trigger against one without.
//!
//! Run: `cargo bench -p tests --bench tenancy`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "benchmark set-up: fail loudly"
)]

use std::hint::black_box;

use cli::manifest::{TenantSpec, load_all};
use cli::platform::Platform;
use criterion::{Criterion, criterion_group, criterion_main};
use runtime::domain::{TenantId, Tier};
use runtime::secrets::SecretName;
use secrecy::ExposeSecret;

const ROWS: i64 = 5_000;
/// The same query in both tiers, as the runtime writes it: filtered on the handle's own tenant too.
const QUERY: &str = "SELECT count(*), coalesce(sum(cost_micro_usd), 0)::bigint FROM usage_ledger \
                     WHERE tenant_id = $1 AND subject = $2";

async fn connect(
    target: &cli::provision::Target,
    role: &str,
    secret: &SecretName,
) -> tokio_postgres::Client {
    let password = target.secrets.get(secret).await.unwrap();
    let mut config = target.endpoint.config(role, "bench");
    config.password(password.expose_secret().as_bytes());
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pool, schema) = rt.block_on(async {
        let target = cli::testing::deployment();
        let platform = Platform::builtin();
        let mut specs: Vec<TenantSpec> = load_all(&[cli::testing::repo_root().join("tenants")], &platform)
            .unwrap()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        // acme and globex share the pool; a third tenant, `solo`, has its own schema.
        let mut solo = specs[0].clone();
        solo.id = TenantId::parse("solo").unwrap();
        specs.iter_mut().for_each(|s| s.tier = Tier::Pool);
        specs.push(solo);
        target.ensure_database().await.unwrap();
        let ids: Vec<TenantId> = specs.iter().map(|s| s.id.clone()).collect();
        let observed = cli::provision::observe::observe(&target, cli::provision::observe::Scope::Only(&ids)).await.unwrap();
        let plan = cli::provision::plan::plan(&specs, &observed, &target.namespace, &target.endpoint.dbname);
        cli::provision::apply::apply(&target, &plan, &specs, &indicatif::ProgressBar::hidden()).await.unwrap();
        let admin = target.admin().await.unwrap();
        for (table, tenant) in [("pool.usage_ledger", "acme"), ("pool.usage_ledger", "globex"), ("t_solo.usage_ledger", "solo")] {
            // Fenced to the tenant: the ledger's totals trigger writes as the migrator, under the pool's
            // maintenance policy.
            let sql = format!(
                "BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true); \
                 INSERT INTO {table} (id, tenant_id, request_id, subject, provider, model, input_tokens, output_tokens, \
                 cost_micro_usd, price_book_version) SELECT gen_random_uuid(), '{tenant}', gen_random_uuid(), \
                 'user-' || (i % 50), 'mock', 'mock-small', 10, 10, 8, 'v' FROM generate_series(1, {ROWS}) i; COMMIT"
            );
            admin.batch_execute(&sql).await.unwrap();
        }
        admin.batch_execute("ANALYZE pool.usage_ledger; ANALYZE t_solo.usage_ledger").await.unwrap();
        // The ledger's shape without its totals trigger, for the write-path comparison.
        let solo_role = target.namespace.tenant_role(&TenantId::parse("solo").unwrap());
        admin
            .batch_execute(&format!(
                "CREATE TABLE t_solo.bench_bare (LIKE t_solo.usage_ledger INCLUDING ALL); \
                 GRANT SELECT, INSERT ON t_solo.bench_bare TO \"{solo_role}\""
            ))
            .await
            .unwrap();
        // A pool tenant logs in as its own role (a member of the pool group).
        let acme = TenantId::parse("acme").unwrap();
        let pool = connect(&target, &target.namespace.tenant_role(&acme), &SecretName::for_tenant(&acme, "db-password").unwrap()).await;
        let solo_id = TenantId::parse("solo").unwrap();
        let schema = connect(&target, &target.namespace.tenant_role(&solo_id), &SecretName::for_tenant(&solo_id, "db-password").unwrap()).await;
        (pool, schema)
    });

    // Statements prepared once per connection, as `TenantTx` does with deadpool's statement cache; both
    // tiers pipeline BEGIN with the transaction-local settings, as `TenantTx::begin` does.
    const SET: &str =
        "SELECT set_config('app.tenant_id', $1, true), set_config('search_path', $2, true)";
    let (q_schema, q_pool, set_pool, set_schema) = rt.block_on(async {
        (
            schema.prepare(QUERY).await.unwrap(),
            pool.prepare(QUERY).await.unwrap(),
            pool.prepare(SET).await.unwrap(),
            schema.prepare(SET).await.unwrap(),
        )
    });
    let mut g = c.benchmark_group("tenant_handle");
    g.bench_function("schema_tier_no_rls", |b| {
        b.iter(|| {
            rt.block_on(async {
                let settings: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&"", &"t_solo"];
                tokio::try_join!(
                    schema.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
                    schema.query(&set_schema, &settings),
                )
                .unwrap();
                let rows = schema
                    .query(&q_schema, &[&"solo", &"user-7"])
                    .await
                    .unwrap();
                schema.batch_execute("COMMIT").await.unwrap();
                black_box(rows)
            })
        })
    });
    g.bench_function("pool_tier_rls", |b| {
        b.iter(|| {
            rt.block_on(async {
                let settings: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&"acme", &"pool"];
                tokio::try_join!(
                    pool.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
                    pool.query(&set_pool, &settings),
                )
                .unwrap();
                let rows = pool.query(&q_pool, &[&"acme", &"user-7"]).await.unwrap();
                pool.batch_execute("COMMIT").await.unwrap();
                assert_eq!(rows[0].get::<_, i64>(0), ROWS / 50);
                black_box(rows)
            })
        })
    });
    g.finish();

    // `/v1/usage` totals: the daily rows the ledger's trigger keeps (what the runtime reads) against the
    // sum over the tenant's whole ledger it replaced, same tenant, same 5,000 rows.
    let (q_daily, q_scan) = rt.block_on(async {
        (
            schema
                .prepare(
                    "SELECT coalesce(sum(requests), 0)::bigint, coalesce(sum(cost_micro_usd), 0)::bigint \
                       FROM usage_daily WHERE tenant_id = $1",
                )
                .await
                .unwrap(),
            schema
                .prepare(
                    "SELECT count(*), coalesce(sum(cost_micro_usd), 0)::bigint FROM usage_ledger WHERE tenant_id = $1",
                )
                .await
                .unwrap(),
        )
    });
    let mut g = c.benchmark_group("usage_totals");
    for (name, q) in [("sum_over_the_ledger", &q_scan), ("daily_rows", &q_daily)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let rows = schema.query(q, &[&"solo"]).await.unwrap();
                    assert_eq!(rows[0].get::<_, i64>(0), ROWS);
                    black_box(rows)
                })
            })
        });
    }
    g.finish();

    // What the totals cost on the write path: a ledger row with its trigger against the same insert
    // into a copy of the table without one, each in its own transaction, as the tenant's role.
    let (insert_ledger, insert_bare) = rt.block_on(async {
        (
            schema.prepare(INSERT_LEDGER).await.unwrap(),
            schema.prepare(INSERT_BARE).await.unwrap(),
        )
    });
    let mut g = c.benchmark_group("ledger_insert");
    for (name, q) in [
        ("without_totals_trigger", &insert_bare),
        ("with_totals_trigger", &insert_ledger),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    schema.batch_execute("BEGIN").await.unwrap();
                    schema.execute(q, &[&"solo"]).await.unwrap();
                    schema.batch_execute("COMMIT").await.unwrap();
                })
            })
        });
    }
    g.finish();
}

const INSERT_LEDGER: &str = "INSERT INTO usage_ledger (id, tenant_id, request_id, subject, provider, model, \
     input_tokens, output_tokens, cost_micro_usd, price_book_version) \
     VALUES (gen_random_uuid(), $1, gen_random_uuid(), 'bench', 'mock', 'mock-small', 10, 10, 8, 'v')";
const INSERT_BARE: &str = "INSERT INTO bench_bare (id, tenant_id, request_id, subject, provider, model, \
     input_tokens, output_tokens, cost_micro_usd, price_book_version) \
     VALUES (gen_random_uuid(), $1, gen_random_uuid(), 'bench', 'mock', 'mock-small', 10, 10, 8, 'v')";

criterion_group!(benches, bench);
criterion_main!(benches);
