//! The three isolation tiers (issue 4; docs/security.md section D): the foundation's API tests run
//! against every tier, tiers mix in one deployment, the pool tier's row-level security holds when the
//! application forgets its filter, connections never carry a tenant to the next checkout, the catalog
//! has forced RLS everywhere, and the runtime refuses dangerous roles at startup.

use std::sync::atomic::{AtomicU64, Ordering};

use cli::manifest::TenantSpec;
use cli::platform::Platform;
use runtime::domain::{TenantId, Tier};
use runtime::secrets::SecretName;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tests::{Served, serve_with};

fn tier(t: Tier) -> impl Fn(&mut TenantSpec) {
    move |spec| spec.tier = t
}

/// acme on tier `acme`, every other tenant on tier `others`.
fn tiers(acme: Tier, others: Tier) -> impl Fn(&mut TenantSpec) {
    move |spec| {
        spec.tier = if spec.id.as_str() == "acme" {
            acme
        } else {
            others
        }
    }
}

async fn chat(s: &Served, tenant: &str, model: &str) -> u16 {
    s.http
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth(s.token(tenant))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": format!("hello from {tenant}")}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn usage(s: &Served, tenant: &str) -> Value {
    s.http
        .get(format!("{}/v1/usage", s.base))
        .bearer_auth(s.token(tenant))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_tier_serves_metered_chat_with_isolated_usage() {
    for t in [Tier::Pool, Tier::Schema, Tier::Dedicated] {
        let s = serve_with(Platform::builtin(), tier(t)).await;
        assert_eq!(chat(&s, "acme", "mock-small").await, 200, "{t}");
        assert_eq!(chat(&s, "acme", "smart").await, 200, "{t}");
        assert_eq!(chat(&s, "globex", "mock-small").await, 200, "{t}");
        assert_eq!(
            chat(&s, "globex", "mock-large").await,
            403,
            "{t}: outside globex's policy"
        );
        let a = usage(&s, "acme").await;
        assert_eq!(a["totals"]["requests"], 2, "{t}: {a}");
        // case 42: ids are random (version 4) UUIDs, so they reveal nothing about volume.
        for row in a["data"].as_array().unwrap() {
            let id: uuid::Uuid = row["id"].as_str().unwrap().parse().unwrap();
            assert_eq!(id.get_version_num(), 4, "{t}: {id}");
        }
        assert!(
            a["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["tenant_id"] == "acme"),
            "{t}"
        );
        let g = usage(&s, "globex").await;
        assert_eq!(g["totals"]["requests"], 1, "{t}: {g}");
        assert_eq!(
            (s.ledger_rows("acme").await, s.ledger_rows("globex").await),
            (2, 1),
            "{t}"
        );
        s.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn tiers_mix_in_one_deployment_and_a_second_apply_changes_nothing() {
    let s = serve_with(Platform::builtin(), tiers(Tier::Pool, Tier::Dedicated)).await;
    assert_eq!(chat(&s, "acme", "mock-small").await, 200);
    assert_eq!(chat(&s, "globex", "mock-small").await, 200);
    assert_eq!(
        (s.ledger_rows("acme").await, s.ledger_rows("globex").await),
        (1, 1)
    );
    let ids: Vec<TenantId> = s.specs.iter().map(|x| x.id.clone()).collect();
    let observed =
        cli::provision::observe::observe(&s.target, cli::provision::observe::Scope::Only(&ids))
            .await
            .unwrap();
    let p = cli::provision::plan::plan(
        &s.specs,
        &observed,
        &s.target.namespace,
        &s.target.endpoint.dbname,
    );
    assert!(!p.has_changes(), "{}", p.render());
    s.running.stop().await.unwrap();
}

/// Connects as `tenant`'s own login role (on the pool tier, a member of the pool group), with its
/// password from the secret store: what code running with that tenant's credentials can do.
async fn tenant_client(s: &Served, tenant: &str) -> tokio_postgres::Client {
    let id = TenantId::parse(tenant).unwrap();
    let password = s
        .target
        .secrets
        .get(&SecretName::for_tenant(&id, "db-password").unwrap())
        .await
        .unwrap();
    let mut config = s
        .target
        .endpoint
        .config(&s.target.namespace.tenant_role(&id), "test");
    config.password(password.expose_secret().as_bytes());
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Runs `sql` as `tenant` the way the runtime does: the setting is transaction-local.
async fn as_tenant(
    c: &tokio_postgres::Client,
    tenant: &str,
    sql: &str,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    c.batch_execute("BEGIN").await?;
    c.query("SELECT set_config('app.tenant_id', $1, true)", &[&tenant])
        .await?;
    let result = c.query(sql, &[]).await;
    c.batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await?;
    result
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

async fn count(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM usage_ledger", &[])
        .await
        .unwrap()
        .get(0)
}

/// Whether a connection that finished its work still carries a tenant (it must not).
async fn carries_tenant(c: &tokio_postgres::Client) -> bool {
    let v: Option<String> = c
        .query_one("SELECT current_setting('app.tenant_id', true)", &[])
        .await
        .unwrap()
        .get(0);
    v.is_some_and(|v| !v.is_empty())
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn insert_row(tenant: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "INSERT INTO usage_ledger (id, tenant_id, request_id, subject, provider, model, input_tokens, output_tokens, \
         cost_micro_usd, price_book_version) VALUES (gen_random_uuid(), '{tenant}', gen_random_uuid(), 's{n}', 'mock', \
         'mock-small', 1, 1, 1, 'v')"
    )
}

#[tokio::test]
async fn pool_tier_row_level_security_holds_when_the_application_forgets_its_filter() {
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let c = tenant_client(&s, "acme").await;
    let g = tenant_client(&s, "globex").await;
    for _ in 0..3 {
        as_tenant(&c, "acme", &insert_row("acme")).await.unwrap();
    }
    as_tenant(&g, "globex", &insert_row("globex"))
        .await
        .unwrap();

    // case 36: no tenant set -> no rows, never all rows; also right after a transaction that set one.
    assert_eq!(count(&c).await, 0, "no tenant set");
    assert_eq!(
        as_tenant(&c, "acme", "SELECT count(*) FROM usage_ledger")
            .await
            .unwrap()[0]
            .get::<_, i64>(0),
        3
    );
    assert!(
        !carries_tenant(&c).await,
        "the transaction-local setting is gone after COMMIT"
    );
    assert_eq!(
        count(&c).await,
        0,
        "the next use of the connection sees nothing"
    );

    // case 37: a session-level SET would leak to the next checkout; the hygiene check catches it.
    c.batch_execute("SET app.tenant_id = 'acme'").await.unwrap();
    assert!(
        carries_tenant(&c).await,
        "the injected session-level SET must be detected"
    );
    assert_eq!(count(&c).await, 3, "and it really would leak acme's rows");
    c.batch_execute("RESET app.tenant_id").await.unwrap();
    assert!(!carries_tenant(&c).await);

    // case 38: a request dropped after the tenant was set and before commit leaves nothing behind.
    c.batch_execute("BEGIN").await.unwrap();
    c.query("SELECT set_config('app.tenant_id', 'acme', true)", &[])
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    assert!(!carries_tenant(&c).await);
    assert_eq!(count(&c).await, 0);

    // case 43 with the functions a tenant already has: a filter that would fail on another tenant's row
    // (division by zero, a cast of its id) runs only after the policy, so it neither fails nor echoes
    // globex's values.
    let probe = as_tenant(
        &c,
        "acme",
        "SELECT count(*) FROM usage_ledger WHERE 1 / (CASE WHEN tenant_id = 'globex' THEN 0 ELSE 1 END) = 1",
    )
    .await
    .expect("the leaky filter never sees globex's row");
    assert_eq!(probe[0].get::<_, i64>(0), 3);
    let err = as_tenant(
        &c,
        "acme",
        "SELECT count(*) FROM usage_ledger WHERE tenant_id::int > 0",
    )
    .await
    .expect_err("acme's own id is not a number");
    let shown = format!("{err:?}");
    assert!(
        shown.contains("acme") && !shown.contains("globex"),
        "{shown}"
    );

    // cases 39, 40, 43: writes into another tenant, destructive statements, leaky functions.
    let denied: Vec<(&str, String, &[&str])> = vec![
        ("case 39: insert a row for another tenant", insert_row("globex"), &["42501"]),
        ("case 39: move a row to another tenant", "UPDATE usage_ledger SET tenant_id = 'globex'".into(), &["42501"]),
        ("case 39: upsert onto another tenant's key", format!("{} ON CONFLICT (tenant_id, id, created_at) DO UPDATE SET tenant_id = 'acme'", insert_row("globex")), &["42501"]),
        ("case 40: TRUNCATE", "TRUNCATE usage_ledger".into(), &["42501"]),
        ("case 40: DELETE without WHERE", "DELETE FROM usage_ledger".into(), &["42501"]),
        ("case 40: COPY FROM", "COPY usage_ledger FROM PROGRAM 'true'".into(), &["42501", "0A000"]),
        ("case 43: create a leaky function", "CREATE FUNCTION f_leak(text) RETURNS bool LANGUAGE plpgsql COST 0.0000001 AS $$BEGIN RAISE NOTICE '%', $1; RETURN true; END$$".into(), &["42501", "3F000"]),
        ("case 46: create in a shared schema", "CREATE TABLE public.stash (x text)".into(), &["42501"]),
        ("control plane", "SELECT * FROM control.tenants".into(), &["42501"]),
        ("case 44: a ledger partition reached directly", "SELECT count(*) FROM usage_ledger_default".into(), &["42501"]),
        ("case 44: a row into a partition directly", insert_row("acme").replace("INTO usage_ledger", "INTO usage_ledger_default"), &["42501"]),
    ];
    for (name, sql, codes) in denied {
        let err = as_tenant(&c, "acme", &sql).await.expect_err(name);
        assert!(codes.contains(&code(&err).as_str()), "{name}: {err}");
    }
    assert_eq!(
        s.ledger_rows("globex").await,
        1,
        "globex's rows are untouched"
    );
    assert_eq!(s.ledger_rows("acme").await, 3);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn code_running_as_one_pool_tenant_cannot_reach_another_by_changing_the_setting() {
    // Issue 9 item 1: the fence does not rest on a setting the session controls. Logged in as acme's
    // own pool role, the code sets `app.tenant_id` to globex by hand (transaction-local and
    // session-level), claims to be the group, or tries globex's role: zero rows of globex, no insert.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let g = tenant_client(&s, "globex").await;
    for _ in 0..2 {
        as_tenant(&g, "globex", &insert_row("globex"))
            .await
            .unwrap();
    }
    let c = tenant_client(&s, "acme").await;
    as_tenant(&c, "acme", &insert_row("acme")).await.unwrap();
    let visible = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>(0);
    assert_eq!(
        visible(
            as_tenant(&c, "globex", "SELECT count(*) FROM usage_ledger")
                .await
                .unwrap()
        ),
        0,
        "setting the tenant to globex shows none of globex's rows"
    );
    assert_eq!(
        visible(
            as_tenant(
                &c,
                "globex",
                "SELECT count(*) FROM usage_ledger WHERE tenant_id = 'globex'"
            )
            .await
            .unwrap()
        ),
        0
    );
    let err = as_tenant(&c, "globex", &insert_row("globex"))
        .await
        .expect_err("acme's role cannot insert as globex even with the setting saying globex");
    assert_eq!(code(&err), "42501", "{err}");
    // A session-level setting of globex does no better.
    c.batch_execute("SET app.tenant_id = 'globex'")
        .await
        .unwrap();
    assert_eq!(count(&c).await, 0);
    c.batch_execute("RESET app.tenant_id").await.unwrap();
    // Becoming the group that holds the grants matches no row at all; becoming globex is refused.
    let group = s.target.namespace.pool_role();
    c.batch_execute(&format!("SET ROLE \"{group}\""))
        .await
        .unwrap();
    assert_eq!(
        visible(
            as_tenant(&c, "globex", "SELECT count(*) FROM usage_ledger")
                .await
                .unwrap()
        ),
        0,
        "as the group"
    );
    assert_eq!(
        visible(
            as_tenant(&c, "acme", "SELECT count(*) FROM usage_ledger")
                .await
                .unwrap()
        ),
        0,
        "as the group, not even acme's rows"
    );
    c.batch_execute("RESET ROLE").await.unwrap();
    let globex_role = s
        .target
        .namespace
        .tenant_role(&TenantId::parse("globex").unwrap());
    let err = c
        .batch_execute(&format!("SET ROLE \"{globex_role}\""))
        .await
        .expect_err("acme's role is not a member of globex's");
    assert_eq!(code(&err), "42501", "{err}");
    // The setting stays a second check that must agree: acme's role with no setting sees nothing.
    assert_eq!(count(&c).await, 0);
    assert_eq!(
        visible(
            as_tenant(&c, "acme", "SELECT count(*) FROM usage_ledger")
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(s.ledger_rows("globex").await, 2, "globex untouched");
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn nothing_tenant_a_does_returns_or_modifies_tenant_b_rows() {
    // A property over random tenants and random operations, with a fixed seed so failures replay.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let clients = [
        tenant_client(&s, "acme").await,
        tenant_client(&s, "globex").await,
    ];
    let tenants = ["acme", "globex"];
    let mut expected = [0i64, 0i64];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for step in 0..300 {
        let a = (next() % 2) as usize;
        let b = 1 - a;
        // Tenant a's code claims a tenant in its setting: usually its own, sometimes b's.
        let claimed = if next() % 4 == 0 { b } else { a };
        let c = &clients[a];
        match next() % 5 {
            0 | 1 => {
                let inserted = as_tenant(c, tenants[claimed], &insert_row(tenants[a])).await;
                assert_eq!(
                    inserted.is_ok(),
                    claimed == a,
                    "step {step}: the setting must agree"
                );
                if claimed == a {
                    expected[a] += 1;
                }
            }
            2 => {
                let err = as_tenant(c, tenants[claimed], &insert_row(tenants[b])).await;
                assert!(
                    err.is_err(),
                    "step {step}: {} wrote a row for {}",
                    tenants[a],
                    tenants[b]
                );
            }
            3 => {
                let rows = as_tenant(
                    c,
                    tenants[claimed],
                    &format!(
                        "SELECT count(*) FROM usage_ledger WHERE tenant_id = '{}'",
                        tenants[b]
                    ),
                )
                .await
                .unwrap();
                assert_eq!(
                    rows[0].get::<_, i64>(0),
                    0,
                    "step {step}: {} saw {}'s rows",
                    tenants[a],
                    tenants[b]
                );
            }
            _ => {
                let rows = as_tenant(c, tenants[claimed], "SELECT tenant_id FROM usage_ledger")
                    .await
                    .unwrap();
                assert!(
                    rows.iter().all(|r| r.get::<_, &str>(0) == tenants[a]),
                    "step {step}"
                );
                let want = if claimed == a { expected[a] } else { 0 };
                assert_eq!(rows.len() as i64, want, "step {step}");
            }
        }
    }
    assert_eq!(
        (s.ledger_rows("acme").await, s.ledger_rows("globex").await),
        (expected[0], expected[1])
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_catalog_has_forced_rls_and_policies_on_every_pool_table() {
    // docs/security.md case 35.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let admin = s.target.admin().await.unwrap();
    let tables = admin
        .query(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polqual IS NOT NULL \
                                                      AND (p.polwithcheck IS NOT NULL OR p.polcmd = 'r')) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = 'pool' AND c.relkind IN ('r', 'p')",
            &[],
        )
        .await
        .unwrap();
    assert!(!tables.is_empty(), "the pool has tables");
    for t in &tables {
        let name: String = t.get(0);
        assert!(
            t.get::<_, bool>(1) && t.get::<_, bool>(2),
            "{name}: RLS must be enabled and forced"
        );
        assert!(
            t.get::<_, i64>(3) >= 1,
            "{name}: needs a policy with USING and WITH CHECK"
        );
    }
    // Issue 9 item 9: not only that a condition exists, but exactly which: every policy on every pool
    // table, its command, the roles it applies to and both expressions, as Postgres deparses them.
    let ns = &s.target.namespace;
    let tenant_fence = format!(
        "((CURRENT_USER = (('{}'::text || replace(tenant_id, '-'::text, '_'::text)))::name) AND (tenant_id = current_setting('app.tenant_id'::text, true)))",
        ns.tenant_role_prefix()
    );
    let maintenance_fence = "(tenant_id = current_setting('app.tenant_id'::text, true))".to_owned();
    // (table, policy, command, permissive, roles, USING, WITH CHECK)
    type Policy = (String, String, String, bool, Vec<String>, String, String);
    let policies: Vec<Policy> = admin
        .query(
            "SELECT c.relname::text, p.polname::text, p.polcmd::text, p.polpermissive, \
                    ARRAY(SELECT r.rolname::text FROM pg_roles r WHERE r.oid = ANY (p.polroles) ORDER BY 1), \
                    coalesce(pg_get_expr(p.polqual, p.polrelid), ''), coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') \
               FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = 'pool' ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
        .collect();
    let mut expected = Vec::new();
    for t in &tables {
        let table: String = t.get(0);
        expected.push((
            table.clone(),
            "tenant_isolation".to_owned(),
            "*".to_owned(),
            true,
            vec![ns.pool_role()],
            tenant_fence.clone(),
            tenant_fence.clone(),
        ));
        expected.push((
            table,
            "tenant_maintenance".to_owned(),
            "*".to_owned(),
            true,
            vec![ns.migrator_role()],
            maintenance_fence.clone(),
            maintenance_fence.clone(),
        ));
    }
    expected.sort();
    assert_eq!(policies, expected, "the pool's policies, exactly");
    let unsafe_views: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'v' AND (n.nspname = 'pool' OR starts_with(n.nspname, 't_')) \
                AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        unsafe_views, 0,
        "views over tenant data must be security_invoker"
    );
    // SECURITY DEFINER functions: only the allow-listed trigger functions, each with its search path
    // pinned to its own schema, owned by the migrator, not executable by PUBLIC.
    let definers: Vec<(String, String, Vec<String>, String, bool)> = admin
        .query(
            "SELECT n.nspname::text, p.proname::text, coalesce(p.proconfig, '{}'), r.rolname::text, \
                    has_function_privilege('public', p.oid, 'EXECUTE') \
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner \
              WHERE p.prosecdef AND (n.nspname IN ('pool', 'control') OR starts_with(n.nspname, 't_')) \
              ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert!(
        !definers.is_empty(),
        "the check sees the allow-listed trigger function"
    );
    for (schema, name, config, owner, public) in &definers {
        let allowed = if schema == "control" {
            runtime::registry::CONTROL_DEFINER_FUNCTIONS
        } else {
            runtime::schema::SECURITY_DEFINER_FUNCTIONS
        };
        assert!(
            allowed.contains(&name.as_str()),
            "{schema}.{name}: SECURITY DEFINER and not allow-listed"
        );
        assert!(
            config.contains(&format!("search_path={schema}")),
            "{schema}.{name}: search path not pinned to its schema: {config:?}"
        );
        assert_eq!(
            owner,
            &s.target.namespace.migrator_role(),
            "{schema}.{name}"
        );
        assert!(!public, "{schema}.{name}: PUBLIC may execute it");
    }
    // case 41: uniques are per tenant. Every unique index on a pool table is the uuid primary key or
    // leads with tenant_id, so a natural key (an email, a name) can repeat across tenants and a
    // uniqueness error can never be caused by (or echo) another tenant's row.
    let global_uniques: Vec<String> = admin
        .query(
            "SELECT i.indexrelid::regclass::text FROM pg_index i \
               JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
              WHERE n.nspname = 'pool' AND i.indisunique \
                AND NOT (a.attname = 'tenant_id' OR (i.indisprimary AND a.attname = 'id' AND i.indnatts = 1))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        global_uniques.is_empty(),
        "unique indexes not scoped to the tenant: {global_uniques:?}"
    );
    let uniques: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pool' AND i.indisunique",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        uniques >= 1,
        "the check saw no unique index at all (it must see the primary key)"
    );
    // case 44: partitions would each need their own forced RLS; the walk above covers relkind 'r'
    // (partitions included) and 'p', so none can slip through.
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_runtime_refuses_to_start_with_a_dangerous_role_and_says_which() {
    // docs/security.md case 34.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let idp = s.running_idp();
    s.running.stop().await.unwrap();
    let admin = s.target.admin().await.unwrap();
    let pool = s.target.namespace.pool_role();
    let runtime_role = s.target.namespace.runtime_role();
    // A role that holds pg_read_all_data, so membership in it reaches that role transitively.
    let middle = format!("{}_middle", s.target.namespace);
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{middle}\" NOLOGIN; GRANT pg_read_all_data TO \"{middle}\""
        ))
        .await
        .unwrap();
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "pool group can log in again",
            format!("ALTER ROLE \"{pool}\" LOGIN"),
            format!("ALTER ROLE \"{pool}\" NOLOGIN"),
            "LOGIN",
        ),
        (
            "runtime role in pg_signal_backend",
            format!("GRANT pg_signal_backend TO \"{runtime_role}\""),
            format!("REVOKE pg_signal_backend FROM \"{runtime_role}\""),
            "membership in pg_signal_backend",
        ),
        (
            "pool group in pg_read_all_data through another role",
            format!("GRANT \"{middle}\" TO \"{pool}\""),
            format!("REVOKE \"{middle}\" FROM \"{pool}\""),
            "membership in pg_read_all_data",
        ),
        (
            "pool role BYPASSRLS",
            format!("ALTER ROLE \"{pool}\" BYPASSRLS"),
            format!("ALTER ROLE \"{pool}\" NOBYPASSRLS"),
            "BYPASSRLS",
        ),
        (
            "pool role CREATEROLE",
            format!("ALTER ROLE \"{pool}\" CREATEROLE"),
            format!("ALTER ROLE \"{pool}\" NOCREATEROLE"),
            "CREATEROLE",
        ),
        (
            "runtime role CREATEDB",
            format!("ALTER ROLE \"{runtime_role}\" CREATEDB"),
            format!("ALTER ROLE \"{runtime_role}\" NOCREATEDB"),
            "CREATEDB",
        ),
        (
            "runtime role superuser",
            format!("ALTER ROLE \"{runtime_role}\" SUPERUSER"),
            format!("ALTER ROLE \"{runtime_role}\" NOSUPERUSER"),
            "SUPERUSER",
        ),
        (
            "pool role in pg_read_all_data",
            format!("GRANT pg_read_all_data TO \"{pool}\""),
            format!("REVOKE pg_read_all_data FROM \"{pool}\""),
            "pg_read_all_data",
        ),
        (
            "pool role owns a tenant table",
            format!("ALTER TABLE pool.usage_ledger OWNER TO \"{pool}\""),
            format!(
                "ALTER TABLE pool.usage_ledger OWNER TO \"{}\"",
                s.target.namespace.migrator_role()
            ),
            "ownership of tenant tables",
        ),
    ];
    let config = runtime::RuntimeConfig {
        namespace: s.target.namespace.clone(),
        database: s.target.endpoint.clone(),
        secrets_dir: s.target.secrets_dir.clone(),
        secret_store: runtime::state::SecretStoreKind::Local,
        issuers: Platform::builtin().runtime_issuers(&cli::devidp::jwks_url(idp)),
        deployment: Default::default(),
        registry_refresh_secs: 5,
        registry_max_stale_secs: 30,
        max_connections_per_tenant: 4,
        max_in_flight_per_tenant: 32,
        tenant: None,
        provider_key_ttl_secs: 60,
        upstream: Default::default(),
        ledger_commit: Default::default(),
        console: None,
    };
    assert!(
        runtime::AppState::from_config(&config).await.is_ok(),
        "a clean deployment starts"
    );
    for (name, break_it, fix_it, hazard) in cases {
        admin.batch_execute(&break_it).await.unwrap();
        let err = runtime::AppState::from_config(&config)
            .await
            .expect_err(name)
            .to_string();
        assert!(err.contains(hazard), "{name}: {err}");
        admin.batch_execute(&fix_it).await.unwrap();
    }
    assert!(
        runtime::AppState::from_config(&config).await.is_ok(),
        "fixed again"
    );
}

#[tokio::test]
async fn a_tenant_role_with_a_membership_it_does_not_need_is_refused_by_the_runtime_and_by_apply() {
    // Issue 9 item 5: the role-hazard check follows memberships transitively and allows only what
    // the tier needs (the pool group, `rds_iam`); every tenant pool checks its role before first use.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let admin = s.target.admin().await.unwrap();
    let ns = s.target.namespace.clone();
    let acme = TenantId::parse("acme").unwrap();
    let acme_role = ns.tenant_role(&acme);
    let globex_role = ns.tenant_role(&TenantId::parse("globex").unwrap());
    let middle = format!("{ns}_middle2");
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{middle}\" NOLOGIN; GRANT pg_write_all_data TO \"{middle}\""
        ))
        .await
        .unwrap();
    let record = s.running.state.directory.get(&acme).unwrap();
    for (granted, hazard) in [
        (
            ns.migrator_role(),
            format!("membership in {}", ns.migrator_role()),
        ),
        (globex_role.clone(), format!("membership in {globex_role}")),
        (
            "pg_signal_backend".to_owned(),
            "membership in pg_signal_backend".to_owned(),
        ),
        (middle.clone(), "membership in pg_write_all_data".to_owned()),
    ] {
        admin
            .batch_execute(&format!("GRANT \"{granted}\" TO \"{acme_role}\""))
            .await
            .unwrap();
        s.running.state.data.forget(&record).await;
        assert_eq!(chat(&s, "acme", "mock-small").await, 500, "{granted}");
        assert_eq!(
            chat(&s, "globex", "mock-small").await,
            200,
            "{granted}: globex unaffected"
        );
        let spec = s.specs.iter().find(|x| x.id == acme).unwrap();
        let mut client = s.target.admin().await.unwrap();
        let err = cli::provision::apply::converge_tenant(&s.target, &mut client, spec)
            .await
            .expect_err("apply refuses the role");
        assert!(format!("{err:#}").contains(&hazard), "{granted}: {err:#}");
        admin
            .batch_execute(&format!("REVOKE \"{granted}\" FROM \"{acme_role}\""))
            .await
            .unwrap();
    }
    s.running.state.data.forget(&record).await;
    assert_eq!(chat(&s, "acme", "mock-small").await, 200, "fixed again");
    s.running.stop().await.unwrap();
}

/// Both tenants' ledger rows as the export query renders them (for before/after comparisons).
async fn rows_of(s: &Served, tenant: &str) -> Vec<String> {
    let id = TenantId::parse(tenant).unwrap();
    let loc = cli::provision::offboard::locate(&s.target, &id)
        .await
        .unwrap();
    cli::provision::offboard::read_rows(&s.target, &loc, &id, "usage_ledger")
        .await
        .unwrap()
}

#[tokio::test]
async fn offboarding_exports_then_deletes_only_that_tenant_on_every_tier() {
    // Issue 4 item 7: export a tenant's data, delete it from its tier; the other tenant is untouched.
    for t in [Tier::Pool, Tier::Schema, Tier::Dedicated] {
        let s = serve_with(Platform::builtin(), tier(t)).await;
        for _ in 0..3 {
            assert_eq!(chat(&s, "acme", "mock-small").await, 200);
        }
        assert_eq!(chat(&s, "globex", "mock-small").await, 200);
        let acme_rows = rows_of(&s, "acme").await;
        let globex_before = rows_of(&s, "globex").await;
        assert_eq!((acme_rows.len(), globex_before.len()), (3, 1), "{t}");

        let export = tempfile::tempdir().unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let report = cli::provision::offboard::offboard(&s.target, &acme, export.path())
            .await
            .unwrap();
        assert_eq!(report.rows.get("usage_ledger"), Some(&3), "{t}");

        // The export is portable JSON lines matching what the database held, with a manifest; its
        // directory is 0700 and its files 0600 (issue 9 item 7).
        let dir = export.path().join("acme");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode =
                |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(dir.clone()), 0o700, "{t}");
            for f in ["usage_ledger.jsonl", "manifest.json"] {
                assert_eq!(mode(dir.join(f)), 0o600, "{t}: {f}");
            }
        }
        let file = std::fs::read_to_string(dir.join("usage_ledger.jsonl")).unwrap();
        let exported: Vec<&str> = file.lines().collect();
        assert_eq!(
            exported,
            acme_rows.iter().map(String::as_str).collect::<Vec<_>>(),
            "{t}"
        );
        for line in &exported {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["tenant_id"], "acme", "{t}");
        }
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["tables"]["usage_ledger"]["rows"], 3, "{t}");

        // Gone from its tier; the other tenant's rows are exactly as before.
        assert_eq!(
            rows_of(&s, "globex").await,
            globex_before,
            "{t}: globex untouched"
        );
        let admin = s.target.admin().await.unwrap();
        let status: String = admin
            .query_one(
                "SELECT status FROM control.tenants WHERE tenant_id = 'acme'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "offboarded", "{t}: kept for finance history");
        // Every tier: the tenant's own role and its password are gone.
        let role = s.target.namespace.tenant_role(&acme);
        let roles: i64 = admin
            .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .unwrap()
            .get(0);
        assert_eq!(roles, 0, "{t}: the tenant role is dropped");
        assert!(
            !s.target
                .secrets
                .exists(&SecretName::for_tenant(&acme, "db-password").unwrap())
                .await
                .unwrap(),
            "{t}"
        );
        match t {
            Tier::Pool => {
                let left: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pool.usage_ledger WHERE tenant_id = 'acme'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(left, 0);
            }
            Tier::Schema | Tier::Dedicated => {
                let schemas: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_namespace WHERE nspname = 't_acme'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                let dbs: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_database WHERE datname = $1",
                        &[&s.target.namespace.tenant_database(&acme)],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!((schemas, dbs), (0, 0), "{t}");
            }
        }
        // The API refuses the tenant once the registry refresh sees it, and still serves globex.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let status = s
                .http
                .get(format!("{}/v1/models", s.base))
                .bearer_auth(s.token("acme"))
                .send()
                .await
                .unwrap()
                .status();
            if status == 401 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{t}: acme still served"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(chat(&s, "globex", "mock-small").await, 200, "{t}");
        // Offboarding again is a no-op that reports it.
        assert!(
            cli::provision::offboard::offboard(&s.target, &acme, export.path())
                .await
                .unwrap()
                .already_offboarded
        );
        s.running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_tenant_moves_across_all_tiers_while_its_api_keeps_answering_and_loses_nothing() {
    // Issue 4 item 6: copy, verify, switch atomically, remove the old copy only after verification;
    // reads never fail, writes get 503 only during the read-only window, and no accepted write is lost.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    for _ in 0..3 {
        assert_eq!(chat(&s, "acme", "mock-small").await, 200);
    }
    assert_eq!(chat(&s, "globex", "mock-small").await, 200);
    let globex_before = rows_of(&s, "globex").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (http, base, token, stop) = (
            s.http.clone(),
            s.base.clone(),
            s.token("acme"),
            stop.clone(),
        );
        tokio::spawn(async move {
            let (mut accepted, mut refused, mut reads) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .get(format!("{base}/v1/usage"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status(),
                    200,
                    "a read failed during a move: {}",
                    r.text().await.unwrap_or_default()
                );
                reads += 1;
                let r = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&json!({"model": "mock-small", "messages": [{"role": "user", "content": "during the move"}]}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => accepted += 1,
                    503 => {
                        assert_eq!(r.headers()["retry-after"], "5");
                        refused += 1;
                    }
                    other => panic!(
                        "a write got {other} during a move: {}",
                        r.text().await.unwrap_or_default()
                    ),
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            (accepted, refused, reads)
        })
    };
    let acme = TenantId::parse("acme").unwrap();
    let drain = std::time::Duration::from_secs(3); // the served runtime refreshes its registry every 2 s
    let admin = s.target.admin().await.unwrap();
    for to in [Tier::Schema, Tier::Dedicated, Tier::Pool] {
        let report = cli::provision::moves::move_tenant(&s.target, &acme, to, drain)
            .await
            .unwrap();
        assert_eq!(report.to, to);
        let (tier, status): (String, String) = {
            let r = admin
                .query_one(
                    "SELECT tier, status FROM control.tenants WHERE tenant_id = 'acme'",
                    &[],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!((tier.as_str(), status.as_str()), (to.as_str(), "active"));
        let old_copies: i64 = admin
            .query_one(
                "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 't_acme') \
                      + (SELECT count(*) FROM pg_database WHERE datname = $1) \
                      + (SELECT count(*) FROM pool.usage_ledger WHERE tenant_id = 'acme' AND $2 <> 'pool')",
                &[&s.target.namespace.tenant_database(&acme), &to.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        let expected = match to {
            Tier::Pool => 0,
            Tier::Schema | Tier::Dedicated => 1,
        };
        assert_eq!(
            old_copies, expected,
            "after the move to {to}, only the new copy exists"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused, reads) = client.await.unwrap();
    assert!(
        reads > 10 && refused > 0,
        "the client ran through the windows ({reads} reads, {refused} refusals)"
    );
    // Every accepted write is in the ledger, wherever it was written; globex never changed.
    let u = usage(&s, "acme").await;
    assert_eq!(
        u["totals"]["requests"].as_u64(),
        Some(3 + accepted),
        "{accepted} accepted during the moves"
    );
    assert_eq!(s.ledger_rows("acme").await as u64, 3 + accepted);
    assert_eq!(rows_of(&s, "globex").await, globex_before);
    s.running.stop().await.unwrap();
}

/// A PgBouncer in transaction-pooling mode in front of the test cluster, with ONE server connection per
/// database/user so every client shares the same backend. Stopped when dropped.
struct Bouncer {
    port: u16,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

async fn start_bouncer(s: &Served) -> Bouncer {
    let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("PgBouncer is needed for the pooled-connection test: apt-get install pgbouncer (scripts/test.sh does)");
    let dir = tempfile::Builder::new()
        .prefix("tc-bouncer")
        .tempdir_in("/tmp")
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // PgBouncer authenticates clients with the role's SCRAM verifier and reuses the client's SCRAM
    // proof towards Postgres; no plaintext password is written anywhere.
    let admin = s.target.admin().await.unwrap();
    let role = s
        .target
        .namespace
        .tenant_role(&TenantId::parse("acme").unwrap());
    let verifier: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    std::fs::write(
        dir.path().join("userlist.txt"),
        format!("\"{role}\" \"{verifier}\"\n"),
    )
    .unwrap();
    let ini = format!(
        "[databases]\n* = host={host} port={pgport}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
         unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
         default_pool_size = 1\nmax_client_conn = 50\nlogfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n\
         ignore_startup_parameters = extra_float_digits\n",
        host = s.target.endpoint.host,
        pgport = s.target.endpoint.port,
        dir = dir.path().display()
    );
    std::fs::write(dir.path().join("pgbouncer.ini"), ini).unwrap();
    let mut cmd = tokio::process::Command::new(binary);
    if nix::unistd::geteuid().is_root() {
        // PgBouncer refuses to run as root; it switches to the cluster's account, which must read its files.
        use std::os::unix::fs::PermissionsExt;
        let pg = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("the postgres account");
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            nix::unistd::chown(&entry.unwrap().path(), Some(pg.uid), Some(pg.gid)).unwrap();
        }
        nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        cmd.arg("-u").arg("postgres");
    }
    let child = cmd
        .arg(dir.path().join("pgbouncer.ini"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "PgBouncer did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Bouncer {
        port,
        _dir: dir,
        _child: child,
    }
}

/// A client of acme's pool role through the bouncer.
async fn bouncer_client(s: &Served, b: &Bouncer) -> tokio_postgres::Client {
    let acme = TenantId::parse("acme").unwrap();
    let password = s
        .target
        .secrets
        .get(&SecretName::for_tenant(&acme, "db-password").unwrap())
        .await
        .unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(b.port)
        .dbname(&s.target.endpoint.dbname)
        .user(s.target.namespace.tenant_role(&acme))
        .password(password.expose_secret().as_bytes());
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn through_pgbouncer_in_transaction_mode_no_tenant_crosses_clients() {
    // docs/security.md cases 36-38 through PgBouncer (transaction pooling, one shared backend).
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let direct = tenant_client(&s, "acme").await;
    for _ in 0..2 {
        as_tenant(&direct, "acme", &insert_row("acme"))
            .await
            .unwrap();
    }
    let bouncer = start_bouncer(&s).await;
    let x = bouncer_client(&s, &bouncer).await;
    let y = bouncer_client(&s, &bouncer).await;
    let pid_x: i32 = x
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let pid_y: i32 = y
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid_x, pid_y, "both clients share one server connection");

    // The real path: the tenant is set inside X's transaction and is gone for Y on the same backend.
    assert_eq!(
        as_tenant(&x, "acme", "SELECT count(*) FROM usage_ledger")
            .await
            .unwrap()[0]
            .get::<_, i64>(0),
        2
    );
    assert!(!carries_tenant(&y).await);
    assert_eq!(count(&y).await, 0);

    // An injected session-level SET leaks through the shared backend, and the hygiene check sees it.
    x.batch_execute("SET app.tenant_id = 'acme'").await.unwrap();
    assert!(
        carries_tenant(&y).await,
        "the check must flag a session-level SET on a pooled backend"
    );
    assert_eq!(
        count(&y).await,
        2,
        "and the leak is real: Y sees acme's rows"
    );
    y.batch_execute("RESET app.tenant_id").await.unwrap();
    assert!(!carries_tenant(&x).await);

    // A client that disconnects mid-transaction leaves nothing on the backend for the next client.
    let z = bouncer_client(&s, &bouncer).await;
    z.batch_execute("BEGIN").await.unwrap();
    z.query("SELECT set_config('app.tenant_id', 'acme', true)", &[])
        .await
        .unwrap();
    drop(z);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!carries_tenant(&y).await);
    assert_eq!(count(&y).await, 0);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_runtime_keeps_a_bounded_number_of_connection_pools() {
    // Thousands of active tenants must not mean thousands of idle pools: the least recently used go.
    let s = serve_with(Platform::builtin(), tier(Tier::Schema)).await;
    s.running.state.data.set_max_pools(1);
    for round in 0..3 {
        for tenant in ["acme", "globex"] {
            assert_eq!(
                chat(&s, tenant, "mock-small").await,
                200,
                "round {round}, {tenant}"
            );
            assert_eq!(s.running.state.data.pool_count().await, 1);
        }
    }
    assert_eq!(
        (s.ledger_rows("acme").await, s.ledger_rows("globex").await),
        (3, 3)
    );
    s.running.stop().await.unwrap();
}

/// A `Tenant` as the auth layer builds it, from a verified token of `tenant`.
async fn verified_tenant(s: &Served, tenant: &str) -> runtime::auth::Tenant {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", s.token(tenant)).parse().unwrap(),
    );
    s.running
        .state
        .auth
        .authenticate(
            runtime::auth::Credentials {
                headers: &headers,
                query: None,
                gateway_claims: None,
            },
            &s.running.state.directory,
            tests::now(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn the_real_tenant_handle_leaves_nothing_on_its_pooled_connection_directly_and_through_pgbouncer()
 {
    // Issue 9 item 9, cases 37 and 38 with the real `TenantTx` on the pool tier (one connection per
    // pool, so the next checkout is the same connection; through PgBouncer in transaction mode, the same
    // server backend): after a commit the connection carries no tenant and no transaction; after a
    // handle dropped mid-transaction neither. Made session-level (`set_config(.., false)`), the setting
    // fails the first check; without the discard-on-drop, the open transaction fails the second.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let tenant = verified_tenant(&s, "acme").await;
    let bouncer = start_bouncer(&s).await;
    let mut through_bouncer = s.target.endpoint.clone();
    through_bouncer.host = "127.0.0.1".into();
    through_bouncer.port = bouncer.port;
    for (path, endpoint) in [
        ("direct", s.target.endpoint.clone()),
        ("through PgBouncer", through_bouncer),
    ] {
        let data = runtime::tenancy::DataPlane::new(
            endpoint,
            s.target.secrets.clone(),
            s.target.namespace.clone(),
        )
        .with_max_connections_per_tenant(1);
        let tx = runtime::tenancy::TenantTx::begin(&data, &tenant)
            .await
            .unwrap();
        let row = tx
            .query(
                "SELECT pg_backend_pid(), current_setting('app.tenant_id', true), count(*) \
                   FROM usage_ledger",
                &[],
            )
            .await
            .unwrap();
        let pid: i32 = row[0].get(0);
        assert_eq!(
            row[0].get::<_, Option<String>>(1).as_deref(),
            Some("acme"),
            "{path}"
        );
        tx.commit().await.unwrap();
        let after = data.probe(&tenant).await.unwrap();
        assert_eq!(
            after.backend_pid, pid,
            "{path}: the probe sees the same connection"
        );
        assert_eq!(
            after.tenant_setting, None,
            "{path}: case 37, nothing survives COMMIT"
        );
        assert!(!after.in_transaction, "{path}");

        let tx = runtime::tenancy::TenantTx::begin(&data, &tenant)
            .await
            .unwrap();
        tx.query("SELECT count(*) FROM usage_ledger", &[])
            .await
            .unwrap();
        drop(tx);
        let after = data.probe(&tenant).await.unwrap();
        assert_eq!(
            after.tenant_setting, None,
            "{path}: case 38, nothing survives a drop"
        );
        assert!(
            !after.in_transaction,
            "{path}: case 38, no transaction survives a drop"
        );
    }
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_role_reaches_no_other_database_and_cannot_shadow_names() {
    // Issue 9 items 5 and 9, cases 43 and 46: PUBLIC's CONNECT and TEMP are revoked on `postgres` and
    // `template1`; a tenant's role cannot connect to them nor to another tenant's database; it cannot
    // create a temporary table that would shadow its own (pg_temp is searched first), change its own
    // default search path to mislead the runtime, or resolve names in another tenant's schema.
    let s = serve_with(Platform::builtin(), tiers(Tier::Schema, Tier::Dedicated)).await;
    let acme = TenantId::parse("acme").unwrap();
    let globex = TenantId::parse("globex").unwrap();
    let password = s
        .target
        .secrets
        .get(&SecretName::for_tenant(&acme, "db-password").unwrap())
        .await
        .unwrap();
    let connect_to = |db: String| {
        let mut endpoint = s.target.endpoint.clone();
        endpoint.dbname = db;
        let mut config = endpoint.config(&s.target.namespace.tenant_role(&acme), "test");
        config.password(password.expose_secret().as_bytes());
        async move {
            config
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(client, conn)| {
                    tokio::spawn(conn);
                    client
                })
        }
    };
    for db in [
        "postgres".to_owned(),
        "template1".to_owned(),
        s.target.namespace.tenant_database(&globex),
    ] {
        let err = connect_to(db.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("acme's role connected to `{db}`"));
        assert_eq!(code(&err), "42501", "{db}: {err}");
    }
    let c = connect_to(s.target.endpoint.dbname.clone()).await.unwrap();
    for (name, sql) in [
        (
            "a temporary table shadowing the ledger",
            "CREATE TEMP TABLE usage_ledger (id uuid)",
        ),
        (
            "a function in a shared schema",
            "CREATE FUNCTION public.now() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ),
    ] {
        let err = c.batch_execute(sql).await.expect_err(name);
        assert_eq!(code(&err), "42501", "{name}: {err}");
    }
    // Postgres lets a role change its own session defaults: the tenant's code points its default
    // search path elsewhere. The runtime pins the search path inside every transaction, so a fresh
    // connection still reads and writes only the tenant's own schema.
    c.batch_execute("ALTER ROLE CURRENT_USER SET search_path = public")
        .await
        .unwrap();
    let record = s.running.state.directory.get(&acme).unwrap();
    s.running.state.data.forget(&record).await;
    assert_eq!(chat(&s, "acme", "mock-small").await, 200);
    assert_eq!(usage(&s, "acme").await["totals"]["requests"], 1);
    assert_eq!(s.ledger_rows("acme").await, 1);
    // Another tenant's schema on the search path resolves nothing there.
    c.batch_execute("SET search_path = t_globex, pg_catalog")
        .await
        .unwrap();
    let err = c
        .query("SELECT count(*) FROM usage_ledger", &[])
        .await
        .expect_err("no usage_ledger outside its own schema");
    assert_eq!(code(&err), "42P01", "{err}");
    let err = c
        .query("SELECT count(*) FROM t_globex.usage_ledger", &[])
        .await
        .expect_err("globex's schema is not acme's");
    assert!(
        ["42501", "42P01", "3F000"].contains(&code(&err).as_str()),
        "{err}"
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn one_tenant_flooding_cannot_take_what_another_tenant_needs() {
    // Issue 9 item 4, case 58: a per-tenant cap on requests in flight, taken before any connection or
    // model call; beyond it 429 with Retry-After and no side effect. Another tenant keeps being served
    // while the first floods, and the database caps each tenant role's connections too.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    let data = &s.running.state.data;
    let acme = verified_tenant(&s, "acme").await;
    let held: Vec<_> = (0..data.max_in_flight_per_tenant())
        .map(|_| data.admit(&acme).unwrap())
        .collect();
    let statements = data.statements();
    let r = s
        .http
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth(s.token("acme"))
        .json(
            &json!({"model": "mock-small", "messages": [{"role": "user", "content": "one more"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tenant_busy", "{body}");
    assert_eq!(
        s.http
            .get(format!("{}/v1/usage", s.base))
            .bearer_auth(s.token("acme"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(
        data.statements(),
        statements,
        "refused before any statement"
    );
    assert_eq!(s.ledger_rows("acme").await, 0, "and before any model call");
    assert_eq!(
        chat(&s, "globex", "mock-small").await,
        200,
        "globex is served"
    );
    drop(held);
    assert_eq!(
        chat(&s, "acme", "mock-small").await,
        200,
        "acme again, once below its cap"
    );

    // A flood of acme requests while globex works: every globex request succeeds; each acme request
    // is served or refused with 429, and exactly the served ones are in the ledger.
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let (http, url, token) = (
                s.http.clone(),
                format!("{}/v1/chat/completions", s.base),
                s.token("acme"),
            );
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(token)
                    .json(&json!({"model": "mock-small", "messages": [{"role": "user", "content": "flood"}]}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for i in 0..20 {
        assert_eq!(
            chat(&s, "globex", "mock-small").await,
            200,
            "globex request {i}"
        );
    }
    let mut served = 0;
    for task in flood {
        match task.await.unwrap() {
            200 => served += 1,
            429 => {}
            other => panic!("a flooding request got {other}"),
        }
    }
    assert_eq!(s.ledger_rows("acme").await, 1 + served);
    assert_eq!(s.ledger_rows("globex").await, 21);

    // The database's own cap: acme's role may hold at most its CONNECTION LIMIT.
    let mut open = Vec::new();
    let refused = loop {
        let id = TenantId::parse("acme").unwrap();
        let password = s
            .target
            .secrets
            .get(&SecretName::for_tenant(&id, "db-password").unwrap())
            .await
            .unwrap();
        let mut config = s
            .target
            .endpoint
            .config(&s.target.namespace.tenant_role(&id), "test");
        config.password(password.expose_secret().as_bytes());
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                open.push(client);
                assert!(
                    open.len() <= 20,
                    "acme's role exceeded its connection limit"
                );
            }
            Err(e) => break e,
        }
    };
    assert_eq!(code(&refused), "53300", "{refused}");
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn usage_totals_come_from_daily_rows_the_ledger_keeps_not_from_a_ledger_scan() {
    // Issue 9 item 4: `/v1/usage` totals do not scan the tenant's whole ledger. A trigger on the
    // ledger keeps one row per tenant and day; the tenant may only read them; a pool tenant that
    // predates them is backfilled, fenced to itself, when tenantctl converges it.
    let s = serve_with(Platform::builtin(), tier(Tier::Pool)).await;
    for _ in 0..3 {
        assert_eq!(chat(&s, "acme", "mock-small").await, 200);
    }
    assert_eq!(chat(&s, "globex", "mock-small").await, 200);
    assert_eq!(usage(&s, "acme").await["totals"]["requests"], 3);
    let admin = s.target.admin().await.unwrap();
    admin
        .batch_execute("UPDATE pool.usage_daily SET requests = 100 WHERE tenant_id = 'acme'")
        .await
        .unwrap();
    assert_eq!(
        usage(&s, "acme").await["totals"]["requests"],
        100,
        "the totals are the daily rows"
    );
    let c = tenant_client(&s, "acme").await;
    for sql in [
        "UPDATE usage_daily SET requests = 0",
        "INSERT INTO usage_daily VALUES ('acme', current_date, 1, 1, 1, 1)",
        "DELETE FROM usage_daily",
    ] {
        let err = as_tenant(&c, "acme", sql).await.expect_err(sql);
        assert_eq!(code(&err), "42501", "{sql}: {err}");
    }
    // acme as if it predated migration 0003: its totals are rebuilt from its own ledger only.
    admin
        .batch_execute(
            "DELETE FROM pool.usage_daily WHERE tenant_id = 'acme'; \
             DELETE FROM control.tenant_migrations WHERE tenant_id = 'acme' AND version >= 3",
        )
        .await
        .unwrap();
    let spec = s.specs.iter().find(|x| x.id.as_str() == "acme").unwrap();
    let mut client = s.target.admin().await.unwrap();
    cli::provision::apply::converge_tenant(&s.target, &mut client, spec)
        .await
        .unwrap();
    assert_eq!(usage(&s, "acme").await["totals"]["requests"], 3);
    assert_eq!(usage(&s, "globex").await["totals"]["requests"], 1);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn pool_tenants_subject_months_are_their_own_and_read_only() {
    // Issue 11 item 4 per subject, in the pool (tenant migration 0011): each subject's month is kept
    // by the ledger's trigger under the pool's fence; a tenant's role reads its own subjects' rows
    // only and can change none; the budget it enforces is its own subjects' spend.
    let s = serve_with(Platform::builtin(), |spec| {
        spec.tier = Tier::Pool;
        spec.subject_monthly_budget = Some(runtime::domain::MicroUsd(1_000_000));
    })
    .await;
    for _ in 0..2 {
        assert_eq!(chat(&s, "acme", "mock-small").await, 200);
    }
    assert_eq!(chat(&s, "globex", "mock-small").await, 200);
    let c = tenant_client(&s, "acme").await;
    let rows = as_tenant(
        &c,
        "acme",
        "SELECT tenant_id, subject, requests FROM usage_subject_monthly",
    )
    .await
    .unwrap();
    let seen: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        seen,
        [("acme".to_owned(), "user-of-acme".to_owned(), 2)],
        "its own subject's month only"
    );
    for sql in [
        "UPDATE usage_subject_monthly SET cost_micro_usd = 0",
        "INSERT INTO usage_subject_monthly VALUES ('acme', 'x', date_trunc('month', now())::date, 1, 1)",
        "DELETE FROM usage_subject_monthly",
    ] {
        let err = as_tenant(&c, "acme", sql).await.expect_err(sql);
        assert_eq!(code(&err), "42501", "{sql}: {err}");
    }
    let admin = s.target.admin().await.unwrap();
    let globex_cost: i64 = admin
        .query_one(
            "SELECT cost_micro_usd FROM pool.usage_subject_monthly WHERE tenant_id = 'globex'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let acme = usage(&s, "acme").await;
    let subject = &acme["budget"]["subject"];
    assert_eq!(subject["subject"], "user-of-acme", "{acme}");
    assert_eq!(
        subject["spent_this_month_micro_usd"], acme["budget"]["spent_this_month_micro_usd"],
        "acme's one subject spent all of acme's month, none of globex's ({globex_cost})"
    );
    assert!(globex_cost > 0);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_ledger_is_kept_by_month_and_a_row_written_again_is_refused_by_its_key() {
    // Issue 11 item 2 (tenant migration 0010): the ledger is partitioned by month; a call's row lands
    // in its month's partition; the same row appended again (a batch retried after its COMMIT was
    // sent) is refused by its key (tenant, id, time), never counted twice; a tenant's role reaches
    // no partition directly, on every tier.
    for t in [Tier::Pool, Tier::Schema] {
        let s = serve_with(Platform::builtin(), tier(t)).await;
        assert_eq!(chat(&s, "acme", "mock-small").await, 200);
        let schema = if t == Tier::Pool { "pool" } else { "t_acme" };
        let admin = s.target.admin().await.unwrap();
        let part: String = admin
            .query_one(
                &format!(
                    "SELECT tableoid::regclass::text FROM {schema}.usage_ledger WHERE tenant_id = 'acme'"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let month: String = admin
            .query_one(
                "SELECT to_char(now() AT TIME ZONE 'UTC', '\"y\"YYYY\"m\"MM')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(part, format!("{schema}.usage_ledger_{month}"), "{t:?}");
        let c = tenant_client(&s, "acme").await;
        let append = format!(
            "SELECT ledger_append('acme', '{schema}', ARRAY['6d0f5a3e-4c1b-4b7e-9a51-0c7f1b2e3d4a'::uuid], \
             ARRAY[gen_random_uuid()], ARRAY['u'], ARRAY['mock'], ARRAY['mock-small'], ARRAY[1::bigint], \
             ARRAY[1::bigint], ARRAY[1::bigint], ARRAY['v'], ARRAY['complete'], ARRAY[false], \
             ARRAY[0::bigint], ARRAY[0::bigint], ARRAY[0::bigint], ARRAY[NULL::text], ARRAY[NULL::text], \
             ARRAY[NULL::bigint], ARRAY['{{}}'], ARRAY['2026-11-30T23:59:59.5Z'::timestamptz])"
        );
        as_tenant(&c, "acme", &append).await.unwrap();
        let again = as_tenant(&c, "acme", &append)
            .await
            .expect_err("written twice");
        assert_eq!(code(&again), "23505", "{t:?}: {again}");
        assert_eq!(s.ledger_rows("acme").await, 2, "{t:?}");
        // A row cannot hide that the provider's cost differs from ours.
        let hidden = insert_row("acme").replace(
            "price_book_version)",
            "price_book_version, provider_cost_micro_usd, cost_differs)",
        );
        let hidden = hidden.replace("'v')", "'v', 999, false)");
        let err = as_tenant(&c, "acme", &hidden)
            .await
            .expect_err("a hidden difference");
        assert_eq!(code(&err), "23514", "{t:?}: {err}");
        let err = as_tenant(
            &c,
            "acme",
            &format!(
                "SELECT count(*) FROM {schema}.{}",
                part.split('.').nth(1).unwrap()
            ),
        )
        .await
        .expect_err("a partition directly");
        assert_eq!(code(&err), "42501", "{t:?}: {err}");
        s.running.stop().await.unwrap();
    }
}
