//! The cost of the tenant-scoped handle (issue 4): the pool tier's request path (BEGIN, transaction-local
//! `app.tenant_id`, the query under forced row-level security, COMMIT) against the same query on a
//! schema-tier table without RLS (BEGIN, query, COMMIT), same rows per tenant, same run, real Postgres
//! (the test harness's throwaway cluster). The statements are the ones `TenantTx` sends.
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
            let sql = format!(
                "INSERT INTO {table} (id, tenant_id, request_id, subject, provider, model, input_tokens, output_tokens, \
                 cost_micro_usd, price_book_version) SELECT gen_random_uuid(), '{tenant}', gen_random_uuid(), \
                 'user-' || (i % 50), 'mock', 'mock-small', 10, 10, 8, 'v' FROM generate_series(1, {ROWS}) i"
            );
            admin.batch_execute(&sql).await.unwrap();
        }
        admin.batch_execute("ANALYZE pool.usage_ledger; ANALYZE t_solo.usage_ledger").await.unwrap();
        // A pool tenant logs in as its own role (a member of the pool group).
        let acme = TenantId::parse("acme").unwrap();
        let pool = connect(&target, &target.namespace.tenant_role(&acme), &SecretName::for_tenant(&acme, "db-password").unwrap()).await;
        let solo_id = TenantId::parse("solo").unwrap();
        let schema = connect(&target, &target.namespace.tenant_role(&solo_id), &SecretName::for_tenant(&solo_id, "db-password").unwrap()).await;
        (pool, schema)
    });

    // Statements prepared once per connection, as `TenantTx` does with deadpool's statement cache; the
    // pool tier pipelines BEGIN with the tenant setting, as `TenantTx::begin` does.
    let (q_schema, q_pool, set) = rt.block_on(async {
        (
            schema.prepare(QUERY).await.unwrap(),
            pool.prepare(QUERY).await.unwrap(),
            pool.prepare("SELECT set_config('app.tenant_id', $1, true)")
                .await
                .unwrap(),
        )
    });
    let mut g = c.benchmark_group("tenant_handle");
    g.bench_function("schema_tier_no_rls", |b| {
        b.iter(|| {
            rt.block_on(async {
                schema
                    .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await
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
                let tenant: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&"acme"];
                tokio::try_join!(
                    pool.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
                    pool.query(&set, &tenant),
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
