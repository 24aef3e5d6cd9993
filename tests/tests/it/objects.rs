//! The API's objects end to end (issue 12): conversations and their metered messages, prompt
//! templates with immutable versions, members and the roles admins grant, the tenant's audit
//! chain; and the BOLA harness that walks the route table (security cases 28-31, 60-62).

use cli::platform::Platform;
use runtime::domain::Tier;
use serde_json::{Value, json};
use tests::{Served, serve_with};

/// Every tenant permission.
const ALL: &str = "me:read models:read chat:write embeddings:write usage:read conversations:read \
                   conversations:write templates:read templates:write members:read members:write audit:read \
                   credentials:read credentials:write policy:read";

fn token(s: &Served, tenant: &str, subject: &str, scope: &str) -> String {
    let mut claims = s.claims(tenant);
    claims["sub"] = json!(subject);
    claims["scope"] = json!(scope);
    s.signer.sign(&claims)
}

async fn call(
    s: &Served,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = s
        .http
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Both example tenants in the pool tier: their rows share tables, so every fence is exercised
/// (the query's tenant filter and the database's row-level security).
async fn pooled() -> Served {
    serve_with(Platform::builtin(), |spec| spec.tier = Tier::Pool).await
}

#[tokio::test]
async fn conversations_are_created_paged_renamed_and_deleted_and_a_message_is_answered_and_metered()
{
    let s = pooled().await;
    let t = token(&s, "acme", "nurse-1", ALL);
    let (st, c) = call(
        &s,
        &t,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "Ward 3 handover", "model": "fast", "system_prompt": "be brief"})),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["messages"], 0);
    // A model outside the tenant's policy is refused at creation.
    let (st, e) = call(
        &s,
        &t,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "x", "model": "gpt-4o"})),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("model_not_permitted")),
        "{e}"
    );
    // Posting a message: answered by the model, metered, both stored.
    let before = s.ledger_rows("acme").await;
    let (st, x) = call(
        &s,
        &t,
        "POST",
        &format!("/v1/conversations/{id}/messages"),
        Some(json!({"content": "hello there"})),
    )
    .await;
    assert_eq!(st, 201, "{x}");
    assert_eq!(
        s.ledger_rows("acme").await,
        before + 1,
        "one ledger row, before the response"
    );
    assert_eq!(x["user"]["seq"], 1);
    assert_eq!(x["assistant"]["seq"], 2);
    assert_eq!(x["assistant"]["ledger_id"], x["ledger_id"]);
    assert_eq!(x["assistant"]["model"], "mock-small");
    let (_, x2) = call(
        &s,
        &t,
        "POST",
        &format!("/v1/conversations/{id}/messages"),
        Some(json!({"content": "and again"})),
    )
    .await;
    assert_eq!(x2["assistant"]["seq"], 4);
    let (st, msgs) = call(
        &s,
        &t,
        "GET",
        &format!("/v1/conversations/{id}/messages?limit=3"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(msgs["data"].as_array().unwrap().len(), 3);
    assert_eq!(msgs["has_more"], true);
    let (_, rest) = call(
        &s,
        &t,
        "GET",
        &format!(
            "/v1/conversations/{id}/messages?after={}",
            msgs["last_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(rest["data"][0]["seq"], 4);
    assert_eq!(rest["has_more"], false);
    let mid = msgs["data"][1]["id"].as_str().unwrap();
    let (st, m) = call(
        &s,
        &t,
        "GET",
        &format!("/v1/conversations/{id}/messages/{mid}"),
        None,
    )
    .await;
    assert_eq!((st, m["role"].as_str()), (200, Some("assistant")));
    // Paging the conversation list: newest first, with a title filter.
    for n in 0..4 {
        call(
            &s,
            &t,
            "POST",
            "/v1/conversations",
            Some(json!({"title": format!("Clinic {n}"), "model": "smart"})),
        )
        .await;
    }
    let (_, p1) = call(&s, &t, "GET", "/v1/conversations?limit=2", None).await;
    assert_eq!(p1["data"][0]["title"], "Clinic 3");
    assert_eq!(p1["has_more"], true);
    let (_, p2) = call(
        &s,
        &t,
        "GET",
        &format!(
            "/v1/conversations?limit=10&after={}",
            p1["last_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    let titles: Vec<&str> = p2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Clinic 1", "Clinic 0", "Ward 3 handover"]);
    let (_, f) = call(&s, &t, "GET", "/v1/conversations?title=WARD", None).await;
    assert_eq!(f["data"].as_array().unwrap().len(), 1);
    // Another subject of the same tenant does not see it.
    let other = token(&s, "acme", "nurse-2", ALL);
    let (st, _) = call(&s, &other, "GET", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(st, 404);
    let (_, none) = call(&s, &other, "GET", "/v1/conversations", None).await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    // Rename, delete (its messages go with it; its ledger rows stay).
    let (st, r) = call(
        &s,
        &t,
        "PATCH",
        &format!("/v1/conversations/{id}"),
        Some(json!({"title": "Ward 3"})),
    )
    .await;
    assert_eq!((st, r["title"].as_str()), (200, Some("Ward 3")));
    let (st, _) = call(&s, &t, "DELETE", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        &t,
        "GET",
        &format!("/v1/conversations/{id}/messages"),
        None,
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(s.ledger_rows("acme").await, before + 2);
    // Bad input names the problem.
    let (st, e) = call(
        &s,
        &t,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "", "model": "fast"})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`title`"),
        "{e}"
    );
    let (st, e) = call(&s, &t, "GET", "/v1/conversations?after=nope", None).await;
    assert_eq!(st, 400, "{e}");
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn prompt_template_versions_never_change_and_render_with_exactly_their_variables() {
    let s = pooled().await;
    let t = token(&s, "acme", "author", ALL);
    let (st, tpl) = call(
        &s,
        &t,
        "POST",
        "/v1/prompt-templates",
        Some(json!({"name": "discharge", "body": "Summarise for {{ audience }}: {{notes}}"})),
    )
    .await;
    assert_eq!(st, 201, "{tpl}");
    let id = tpl["id"].as_str().unwrap().to_owned();
    assert_eq!(tpl["version"]["variables"], json!(["audience", "notes"]));
    let (st, _) = call(
        &s,
        &t,
        "POST",
        "/v1/prompt-templates",
        Some(json!({"name": "discharge", "body": "x"})),
    )
    .await;
    assert_eq!(st, 409, "a name is taken once");
    let (st, v2) = call(
        &s,
        &t,
        "POST",
        &format!("/v1/prompt-templates/{id}/versions"),
        Some(json!({"body": "For {{audience}} only: {{notes}}"})),
    )
    .await;
    assert_eq!((st, v2["version"].as_i64()), (201, Some(2)), "{v2}");
    let (_, got) = call(&s, &t, "GET", &format!("/v1/prompt-templates/{id}"), None).await;
    assert_eq!(got["latest_version"], 2);
    let (st, d) = call(
        &s,
        &t,
        "PATCH",
        &format!("/v1/prompt-templates/{id}"),
        Some(json!({"description": "for GPs"})),
    )
    .await;
    assert_eq!(
        (st, d["description"].as_str(), d["latest_version"].as_i64()),
        (200, Some("for GPs"), Some(2)),
        "{d}"
    );
    let (_, vs) = call(
        &s,
        &t,
        "GET",
        &format!("/v1/prompt-templates/{id}/versions"),
        None,
    )
    .await;
    assert_eq!(vs["data"].as_array().unwrap().len(), 2);
    let vars = json!({"audience": "the GP", "notes": "stable"});
    let (st, r) = call(
        &s,
        &t,
        "POST",
        &format!("/v1/prompt-templates/{id}/render"),
        Some(json!({"version": 1, "variables": vars})),
    )
    .await;
    assert_eq!(
        (st, r["text"].as_str()),
        (200, Some("Summarise for the GP: stable")),
        "{r}"
    );
    let (_, r) = call(
        &s,
        &t,
        "POST",
        &format!("/v1/prompt-templates/{id}/render"),
        Some(json!({"variables": vars})),
    )
    .await;
    assert_eq!(r["text"], "For the GP only: stable");
    let (st, e) = call(
        &s,
        &t,
        "POST",
        &format!("/v1/prompt-templates/{id}/render"),
        Some(json!({"variables": {"audience": "x"}})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing `notes`"),
        "{e}"
    );
    let (st, _) = call(
        &s,
        &t,
        "GET",
        &format!("/v1/prompt-templates/{id}/versions/3"),
        None,
    )
    .await;
    assert_eq!(st, 404);
    // A member without `templates:write` reads and renders, and cannot write.
    let reader = token(&s, "acme", "reader", "templates:read");
    let (st, _) = call(&s, &reader, "GET", "/v1/prompt-templates?name=dis", None).await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        &reader,
        "POST",
        &format!("/v1/prompt-templates/{id}/versions"),
        Some(json!({"body": "x"})),
    )
    .await;
    assert_eq!(st, 403);
    // The tenant's own role can neither change nor remove a version: the grants say so.
    let admin = s.target.admin().await.unwrap();
    let grants: Vec<String> = tests::column(&admin, "SELECT privilege_type FROM information_schema.role_table_grants \
         WHERE table_schema = 'pool' AND table_name = 'prompt_template_versions' AND grantee LIKE '%_pool' ORDER BY 1").await;
    assert_eq!(grants, ["INSERT", "SELECT"]);
    s.running.stop().await.unwrap();
}

/// The tenant's audit chain as the API reads it.
async fn verify(s: &Served, t: &str) -> Value {
    let (st, v) = call(s, t, "GET", "/v1/audit/verify", None).await;
    assert_eq!(st, 200, "{v}");
    v
}

#[tokio::test]
async fn admins_grant_tenant_roles_only_never_their_own_and_every_attempt_is_in_the_tenants_chain()
{
    // Security cases 30, 31, 60, 61, 62.
    let s = pooled().await;
    let admin = token(&s, "acme", "admin-1", ALL);
    let member = token(&s, "acme", "clerk", "me:read");
    // The clerk cannot read usage, until an admin grants it tenant_finance.
    let (st, _) = call(&s, &member, "GET", "/v1/usage", None).await;
    assert_eq!(st, 403);
    let (st, m) = call(
        &s,
        &admin,
        "PUT",
        "/v1/members/clerk",
        Some(json!({"roles": ["tenant_finance"]})),
    )
    .await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["roles"], json!(["tenant_finance"]));
    let (st, _) = call(&s, &member, "GET", "/v1/usage", None).await;
    assert_eq!(st, 200, "the granted role is honoured at once");
    // ... and still not members:write: a refused privileged attempt is audited (case 30).
    let (st, e) = call(
        &s,
        &member,
        "PUT",
        "/v1/members/clerk",
        Some(json!({"roles": ["tenant_admin"]})),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    // An admin cannot raise itself, nor grant a platform role or a bare permission (case 31).
    let (st, e) = call(
        &s,
        &admin,
        "PUT",
        "/v1/members/admin-1",
        Some(json!({"roles": ["tenant_admin"]})),
    )
    .await;
    assert_eq!(st, 403, "{e}");
    for roles in [
        json!(["platform_operator"]),
        json!(["usage:read"]),
        json!([]),
    ] {
        let (st, e) = call(
            &s,
            &admin,
            "PUT",
            "/v1/members/someone",
            Some(json!({"roles": roles})),
        )
        .await;
        assert_eq!(st, 400, "{roles}: {e}");
    }
    let (st, e) = call(
        &s,
        &admin,
        "PUT",
        "/v1/members/someone",
        Some(json!({"roles": ["tenant_member"], "tenant_id": "globex"})),
    )
    .await;
    assert_eq!(st, 400, "a smuggled tenant is refused: {e}");
    // Revoking takes effect at once too.
    let (st, _) = call(&s, &admin, "DELETE", "/v1/members/clerk", None).await;
    assert_eq!(st, 200);
    let (st, _) = call(&s, &member, "GET", "/v1/usage", None).await;
    assert_eq!(st, 403);
    // The chain: every change and every refused attempt, with who, what, outcome and request id.
    let (st, events) = call(&s, &admin, "GET", "/v1/audit/events", None).await;
    assert_eq!(st, 200);
    let events = events["data"].as_array().unwrap().clone();
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["target"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("members.set_roles", "member/clerk", "succeeded"),
        ("setMemberRoles", "/v1/members/clerk", "denied"),
        ("members.set_roles", "member/admin-1", "denied"),
        ("members.set_roles", "member/someone", "denied"),
        ("members.set_roles", "member/someone", "denied"),
        ("members.set_roles", "member/someone", "denied"),
        ("members.remove", "member/clerk", "succeeded"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
        .collect();
    assert_eq!(summary, want);
    for e in &events {
        assert_eq!(e["tenant_id"], "acme");
        assert!(
            e["actor"].as_str().unwrap().ends_with("/admin-1")
                || e["actor"].as_str().unwrap().ends_with("/clerk")
        );
        assert_eq!(e["request_id"].as_str().unwrap().len(), 36);
    }
    let (_, filtered) = call(
        &s,
        &admin,
        "GET",
        "/v1/audit/events?outcome=denied&limit=2",
        None,
    )
    .await;
    assert_eq!(filtered["data"].as_array().unwrap().len(), 2);
    assert_eq!(filtered["has_more"], true);
    let (st, one) = call(&s, &admin, "GET", "/v1/audit/events/2", None).await;
    assert_eq!((st, one["seq"].as_i64()), (200, Some(2)));
    let v = verify(&s, &admin).await;
    assert_eq!(
        (v["ok"].as_bool(), v["events"].as_i64()),
        (Some(true), Some(7)),
        "{v}"
    );
    assert_eq!(v["head"], events[6]["hash"]);
    // The export verifies offline with jq and sha256sum alone.
    let r = s
        .http
        .get(format!("{}/v1/audit/export", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.jsonl");
    std::fs::write(&file, r.text().await.unwrap()).unwrap();
    let out = std::process::Command::new("bash")
        .arg(cli::testing::repo_root().join("scripts/verify-audit-export.sh"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `tenantctl audit export --chain tenant` writes the same chain, and `verify` finds it whole.
    let out = tenantctl(
        &s,
        &["audit", "export", "--tenant", "acme", "--chain", "tenant"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(&file).unwrap()
    );
    let out = tenantctl(&s, &["audit", "verify", "--tenant", "acme"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acme (own chain): 7 event(s), head"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The tenant's role can only add events (case 61); an owner's edit is named where it is.
    let admin_db = s.target.admin().await.unwrap();
    let grants: Vec<String> = tests::column(&admin_db, "SELECT privilege_type FROM information_schema.role_table_grants \
         WHERE table_schema = 'pool' AND table_name = 'audit_events' AND grantee LIKE '%_pool' ORDER BY 1").await;
    assert_eq!(grants, ["INSERT", "SELECT"]);
    admin_db
        .batch_execute(
            "UPDATE pool.audit_events SET detail = 'roles tenant_admin' WHERE tenant_id = 'acme' AND seq = 1",
        )
        .await
        .unwrap();
    let v = verify(&s, &admin).await;
    assert_eq!(
        (v["ok"].as_bool(), v["broken_at"].as_i64()),
        (Some(false), Some(1)),
        "{v}"
    );
    // `tenantctl audit verify` checks the tenants' own chains too, and names this one.
    let out = tenantctl(&s, &["audit", "verify", "--tenant", "acme"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken at event 1") && stderr.contains("(its own chain)"),
        "{stderr}"
    );
    s.running.stop().await.unwrap();
}

/// Runs `tenantctl` against the test deployment, off the test's runtime thread (which also serves
/// the runtime: a blocked thread would stall its registry refresh past its bound).
async fn tenantctl(s: &Served, args: &[&str]) -> std::process::Output {
    let cluster = cli::testing::cluster();
    let mut cmd = std::process::Command::new(tests::tenantctl_binary());
    cmd.arg("--state-dir")
        .arg(cluster.state.root())
        .args(["--no-progress", "--color", "never", "--namespace"])
        .arg(s.target.namespace.to_string())
        .args(args)
        .env_remove("TENANTCTL_DATABASE_URL");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_privileged_change_whose_audit_event_cannot_be_written_is_not_made() {
    // Security case 60: the event is written in the action's own transaction.
    let s = pooled().await;
    let admin = token(&s, "acme", "admin-1", ALL);
    let db = s.target.admin().await.unwrap();
    db.batch_execute(
        "CREATE FUNCTION pool.refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'audit store refuses'; END $$; \
         CREATE TRIGGER refuse_audit BEFORE INSERT ON pool.audit_events \
             FOR EACH ROW EXECUTE FUNCTION pool.refuse_audit();",
    )
    .await
    .unwrap();
    let (st, e) = call(
        &s,
        &admin,
        "PUT",
        "/v1/members/clerk",
        Some(json!({"roles": ["tenant_finance"]})),
    )
    .await;
    assert_eq!(st, 500, "{e}");
    db.batch_execute("DROP TRIGGER refuse_audit ON pool.audit_events")
        .await
        .unwrap();
    let (st, _) = call(&s, &admin, "GET", "/v1/members/clerk", None).await;
    assert_eq!(st, 404, "the grant rolled back with its event");
    let clerk = token(&s, "acme", "clerk", "me:read");
    let (st, _) = call(&s, &clerk, "GET", "/v1/usage", None).await;
    assert_eq!(st, 403);
    s.running.stop().await.unwrap();
}

/// What acme holds, read as the admin: every API table's rows, in order.
async fn acme_state(s: &Served) -> Vec<String> {
    let db = s.target.admin().await.unwrap();
    let mut out = Vec::new();
    for table in runtime::schema::TENANT_DATA_TABLES {
        // The admin reads past row-level security; the filter keeps acme's rows.
        let rows = db
            .simple_query(&format!(
                "SELECT coalesce(md5(string_agg(row_to_json(t)::text, ',' ORDER BY t.id::text)), '-') \
                   FROM pool.{table} t WHERE tenant_id = 'acme'"
            ))
            .await
            .unwrap();
        for r in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = r {
                out.push(format!("{table}:{}", r.get(0).unwrap_or("")));
            }
        }
    }
    out
}

#[tokio::test]
async fn another_tenants_object_ids_answer_404_on_every_route_that_takes_one_and_change_nothing() {
    // Security case 28 (BOLA), walking the route table: every route with an object id is called
    // as globex with acme's ids, with every method the table has for it.
    let s = pooled().await;
    let a = token(&s, "acme", "owner", ALL);
    let (_, c) = call(
        &s,
        &a,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "canary-conv-acme", "model": "fast"})),
    )
    .await;
    let conversation = c["id"].as_str().unwrap().to_owned();
    let (_, x) = call(
        &s,
        &a,
        "POST",
        &format!("/v1/conversations/{conversation}/messages"),
        Some(json!({"content": "canary-msg-acme"})),
    )
    .await;
    let message = x["user"]["id"].as_str().unwrap().to_owned();
    let (_, t) = call(
        &s,
        &a,
        "POST",
        "/v1/prompt-templates",
        Some(json!({"name": "canary-tpl-acme", "body": "canary {{x}}"})),
    )
    .await;
    let template = t["id"].as_str().unwrap().to_owned();
    let (st, _) = call(
        &s,
        &a,
        "PUT",
        "/v1/members/acme-member",
        Some(json!({"roles": ["tenant_member"]})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        &a,
        "PUT",
        "/v1/credentials/mock",
        Some(json!({"value": "acme-own-key"})),
    )
    .await;
    assert_eq!(st, 200);
    let acme_key = runtime::secrets::SecretName::parse("tenants/acme/providers/mock").unwrap();
    let before = acme_state(&s).await;
    let globex_ledger = s.ledger_rows("globex").await;
    let g = token(&s, "globex", "owner", ALL);
    let ids = |name: &str| -> String {
        match name {
            "conversation_id" => conversation.clone(),
            "message_id" => message.clone(),
            "template_id" => template.clone(),
            "version" => "1".into(),
            "seq" => "1".into(),
            "subject" => "acme-member".into(),
            "provider" => "mock".into(),
            "tenant_id" => "acme".into(),
            "run_id" => uuid::Uuid::new_v4().to_string(),
            "id" => "mock-small".into(),
            other => {
                panic!("the BOLA harness has no acme object for path parameter `{other}`: add one")
            }
        }
    };
    let mut walked = 0;
    // PUT last: it upserts in the caller's own tenant, so globex's chain is still empty before.
    let mut routes: Vec<&runtime::http::routes::RouteSpec> = runtime::http::routes::ROUTES
        .iter()
        .filter(|r| r.path.contains('{'))
        .collect();
    routes.sort_by_key(|r| r.method.as_str() == "PUT");
    for r in routes {
        let path: String = r
            .path
            .split('/')
            .map(
                |seg| match seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                    Some(name) => ids(name),
                    None => seg.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        let body = match r.method.as_str() {
            "GET" | "DELETE" => None,
            _ => Some(
                json!({"title": "pwned", "content": "pwned", "body": "pwned", "roles": ["tenant_member"], "variables": {"x": "1"}, "value": "globex-own-key", "description": "pwned"}),
            ),
        };
        // Bodies carry every field any route takes; routes refuse the ones they do not (400)
        // before reaching anything, so send each route only its own fields.
        let body = body.map(|b| only_fields_of(r.operation_id, b));
        let (st, resp) = call(&s, &g, r.method.as_str(), &path, body).await;
        let text = resp.to_string();
        // The ids the caller sent may be named back; nothing of acme's content may appear.
        assert!(
            !text.contains("canary"),
            "{} {path} leaked: {text}",
            r.method
        );
        match (r.operation_id, r.path) {
            // Platform routes: no tenant's caller gets past the permission check.
            (_, p) if p.starts_with("/v1/platform/") => assert_eq!(st, 403, "{text}"),
            // The tenant's own model list; `mock-small` is globex's too.
            (_, "/v1/models/{id}") => assert_eq!(st, 200, "{text}"),
            // Upserts globex's own member (or key) of that name: acme's is untouched (checked below).
            ("setMemberRoles" | "setCredential", _) => assert_eq!(st, 200, "{text}"),
            _ => assert_eq!(st, 404, "{} {path} as another tenant: {text}", r.method),
        }
        walked += 1;
    }
    assert!(walked >= 15, "walked {walked} routes");
    assert_eq!(acme_state(&s).await, before, "nothing of acme's changed");
    use secrecy::ExposeSecret as _;
    assert_eq!(
        s.target
            .secrets
            .get(&acme_key)
            .await
            .unwrap()
            .expose_secret(),
        "acme-own-key"
    );
    assert_eq!(
        s.ledger_rows("globex").await,
        globex_ledger,
        "no model call was made for globex"
    );
    // Case 29: a tenant named in the query, a header or the body changes nothing.
    let (st, _) = call(&s, &g, "GET", "/v1/conversations?tenant_id=acme", None).await;
    assert_eq!(st, 400);
    let r = s
        .http
        .get(format!("{}/v1/conversations", s.base))
        .bearer_auth(&g)
        .header("x-tenant-id", "acme")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 0, "{body}");
    let (st, _) = call(
        &s,
        &g,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "t", "model": "fast", "tenant_id": "acme"})),
    )
    .await;
    assert_eq!(st, 400);
    s.running.stop().await.unwrap();
}

fn only_fields_of(operation: &str, body: Value) -> Value {
    let keep: &[&str] = match operation {
        "renameConversation" => &["title"],
        "updatePromptTemplate" => &["description"],
        "createConversationMessage" => &["content"],
        "createPromptTemplateVersion" => &["body"],
        "renderPromptTemplate" => &["variables"],
        "setMemberRoles" => &["roles"],
        "setCredential" | "rotateCredential" => &["value"],
        _ => &[],
    };
    Value::Object(
        body.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

#[tokio::test]
async fn provider_credentials_are_write_only_audited_by_name_and_used_by_the_next_call() {
    // Security cases 62 (no value in any answer or event) and 31 (no credential is ever shown).
    let s = pooled().await;
    let admin = token(&s, "acme", "admin-1", ALL);
    let value = format!("sk-test-{}", uuid::Uuid::new_v4());
    let (st, c) = call(
        &s,
        &admin,
        "PUT",
        "/v1/credentials/mock",
        Some(json!({"value": value})),
    )
    .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["name"], "tenants/acme/providers/mock");
    let (st, l) = call(&s, &admin, "GET", "/v1/credentials", None).await;
    assert_eq!(st, 200);
    assert_eq!(l["data"][0]["provider"], "mock");
    let rotated = format!("sk-test-{}", uuid::Uuid::new_v4());
    let (st, r) = call(
        &s,
        &admin,
        "POST",
        "/v1/credentials/mock/rotate",
        Some(json!({"value": rotated})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_ne!(r["version"], c["version"]);
    // A provider outside the policy, and a value with spaces, are refused by name.
    let (st, _) = call(
        &s,
        &admin,
        "PUT",
        "/v1/credentials/openai",
        Some(json!({"value": "x"})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, e) = call(
        &s,
        &admin,
        "PUT",
        "/v1/credentials/mock",
        Some(json!({"value": "a b"})),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert!(
        !e.to_string().contains("a b"),
        "the value is never echoed: {e}"
    );
    // The store holds the rotated value; the chain names the secret, never a value.
    use secrecy::ExposeSecret as _;
    let name = runtime::secrets::SecretName::parse("tenants/acme/providers/mock").unwrap();
    assert_eq!(
        s.target.secrets.get(&name).await.unwrap().expose_secret(),
        rotated
    );
    let (st, _) = call(&s, &admin, "DELETE", "/v1/credentials/mock", None).await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        &admin,
        "POST",
        "/v1/credentials/mock/rotate",
        Some(json!({"value": "y"})),
    )
    .await;
    assert_eq!(st, 404, "nothing to rotate");
    let r = s
        .http
        .get(format!("{}/v1/audit/export", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let export = r.text().await.unwrap();
    assert!(!export.contains(&value) && !export.contains(&rotated));
    let actions: Vec<String> = export
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "credentials.set",
            "credentials.rotate",
            "credentials.delete"
        ]
    );
    // A member without the permission is refused, and the attempt joins the chain.
    let member = token(&s, "acme", "clerk", "me:read credentials:read");
    let (st, _) = call(
        &s,
        &member,
        "PUT",
        "/v1/credentials/mock",
        Some(json!({"value": "z"})),
    )
    .await;
    assert_eq!(st, 403);
    let (_, denied) = call(&s, &admin, "GET", "/v1/audit/events?outcome=denied", None).await;
    assert_eq!(denied["data"][0]["action"], "setCredential");
    assert!(
        denied["data"][0]["actor"]
            .as_str()
            .unwrap()
            .ends_with("/clerk")
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn usage_views_budget_limits_and_policy_answer_for_the_callers_tenant_only() {
    let s = pooled().await;
    let a = token(&s, "acme", "u1", ALL);
    let (st, c) = call(
        &s,
        &a,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "t", "model": "fast"})),
    )
    .await;
    assert_eq!(st, 201);
    let id = c["id"].as_str().unwrap();
    call(
        &s,
        &a,
        "POST",
        &format!("/v1/conversations/{id}/messages"),
        Some(json!({"content": "hi"})),
    )
    .await;
    let (st, sum) = call(&s, &a, "GET", "/v1/usage/summary", None).await;
    assert_eq!(st, 200, "{sum}");
    assert_eq!(sum["totals"]["requests"], 1);
    assert_eq!(sum["models"][0]["model"], "mock-small");
    for (path, key) in [
        ("/v1/usage/daily", "day"),
        ("/v1/usage/models", "model"),
        ("/v1/usage/subjects", "subject"),
    ] {
        let (st, r) = call(&s, &a, "GET", path, None).await;
        assert_eq!(st, 200, "{path}: {r}");
        assert_eq!(r["group_by"], key);
        assert_eq!(r["totals"]["requests"], 1, "{path}");
    }
    let r = s
        .http
        .get(format!("{}/v1/usage/subjects?format=csv", s.base))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(r.text().await.unwrap().contains("u1"));
    let (st, _) = call(&s, &a, "GET", "/v1/usage/daily?group_by=model", None).await;
    assert_eq!(st, 400, "a view fixes its grouping");
    let (_, b) = call(&s, &a, "GET", "/v1/budget", None).await;
    assert_eq!(b["monthly_budget_micro_usd"], 2_500_000_000_i64);
    assert!(b["spent_this_month_micro_usd"].as_i64().unwrap() > 0);
    assert_eq!(b["subject"]["subject"], "u1");
    let (_, l) = call(&s, &a, "GET", "/v1/limits", None).await;
    assert_eq!(
        (
            l["requests_per_minute"].as_i64(),
            l["per_subject_monthly_budget_micro_usd"].as_i64()
        ),
        (Some(600), Some(250_000_000))
    );
    let (_, p) = call(&s, &a, "GET", "/v1/policy", None).await;
    assert_eq!(p["policy"]["default"], "mock-small");
    // globex sees none of acme's usage.
    let g = token(&s, "globex", "u1", ALL);
    let (_, gs) = call(&s, &g, "GET", "/v1/usage/summary", None).await;
    assert_eq!(gs["totals"]["requests"], 0);
    s.running.stop().await.unwrap();
}

/// The schemathesis command, installed by `scripts/test-prereqs.sh` in its own virtual environment.
fn schemathesis() -> std::path::PathBuf {
    let venv = std::env::var_os("TENANTCTL_SCHEMATHESIS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/tenantctl-schemathesis".into());
    let bin = venv.join("bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis is not installed at `{}`; run `bash scripts/test.sh` (or `python3 -m venv {} && {}/bin/pip install 'schemathesis>=4.32,<5'`)",
        bin.display(),
        venv.display(),
        venv.display()
    );
    bin
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_every_operation_refuses_a_request_without_its_token()
 {
    // Security case 33: the served contract, fuzzed with a valid token: no 5xx anywhere, and every
    // operation that names a permission refuses a request without (or with a broken) token.
    let s = pooled().await;
    let token = token(&s, "acme", "fuzzer", ALL);
    let config = cli::testing::repo_root().join("tests/clients/schemathesis.toml");
    let work = tempfile::tempdir().unwrap();
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(schemathesis())
            .current_dir(work.path())
            .env("TENANTCTL_SCHEMATHESIS_TOKEN", &token)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{base}/openapi.json"), "--url", &base])
            .args(["--checks", "not_a_server_error,ignored_auth"])
            .args(["--phases", "examples,coverage,fuzzing", "--seed", "12"])
            .args(["--workers", "2", "--no-color", "--warnings", "off"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It did test the operations (a spec it could not read would test none).
    assert!(stdout.contains("passed"), "{stdout}");
    s.running.stop().await.unwrap();
}

fn operator(s: &Served, subject: &str, scope: &str) -> String {
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
    cli::devidp::mint_operator(&s.signer, subject, &scopes, 600)
}

const PLATFORM_ALL: &str = "platform:tenants:read platform:tenants:write platform:usage:read platform:prices:read platform:audit:read platform:reconciliations:run";

#[tokio::test]
async fn platform_operators_list_suspend_and_resume_tenants_and_a_tenants_caller_is_refused_and_audited()
 {
    // Security case 30: platform routes for platform staff only; a tenant's attempt is refused
    // and joins its own tenant's chain.
    let s = pooled().await;
    let op = operator(&s, "ops-1", PLATFORM_ALL);
    let (st, list) = call(&s, &op, "GET", "/v1/platform/tenants", None).await;
    assert_eq!(st, 200, "{list}");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex"]);
    let (st, acme) = call(&s, &op, "GET", "/v1/platform/tenants/acme", None).await;
    assert_eq!(
        (st, acme["tier"].as_str(), acme["status"].as_str()),
        (200, Some("pool"), Some("active"))
    );
    let (st, _) = call(&s, &op, "GET", "/v1/platform/tenants/nobody", None).await;
    assert_eq!(st, 404);
    // Suspension takes effect at once in this process: globex's callers get 403 everywhere.
    let globex = token(&s, "globex", "g-user", ALL);
    let (st, _) = call(&s, &globex, "GET", "/v1/me", None).await;
    assert_eq!(st, 200);
    let (st, t) = call(
        &s,
        &op,
        "POST",
        "/v1/platform/tenants/globex/suspend",
        Some(json!({"reason": "unpaid invoice 1042"})),
    )
    .await;
    assert_eq!((st, t["status"].as_str()), (200, Some("suspended")), "{t}");
    let (st, e) = call(&s, &globex, "GET", "/v1/me", None).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (403, Some("tenant_suspended")),
        "{e}"
    );
    let (st, _) = call(
        &s,
        &op,
        "POST",
        "/v1/platform/tenants/globex/suspend",
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 200, "suspending a suspended tenant changes nothing");
    let (st, t) = call(
        &s,
        &op,
        "POST",
        "/v1/platform/tenants/globex/resume",
        Some(json!({"reason": "paid"})),
    )
    .await;
    assert_eq!((st, t["status"].as_str()), (200, Some("active")));
    let (st, _) = call(&s, &globex, "GET", "/v1/me", None).await;
    assert_eq!(st, 200);
    // The platform's chain has each step, with who, the outcome and the request id.
    let admin = s.target.admin().await.unwrap();
    let rows = admin
        .query(
            "SELECT action, outcome, actor, detail, request_id FROM control.audit_events \
              WHERE tenant_id = 'globex' AND action IN ('suspend', 'resume') ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want = [
        ("suspend", "succeeded"),
        ("suspend", "unchanged"),
        ("resume", "succeeded"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    assert!(rows.iter().all(|r| r.get::<_, String>(2).ends_with("/ops-1") && r.get::<_, String>(4).len() == 36));
    assert_eq!(rows[0].get::<_, String>(3), "unpaid invoice 1042");
    // The same chain through the platform routes, and its verification.
    let (st, events) = call(
        &s,
        &op,
        "GET",
        "/v1/platform/tenants/globex/audit/events?limit=500",
        None,
    )
    .await;
    assert_eq!(st, 200, "{events}");
    let suspends = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "suspend")
        .count();
    assert_eq!(suspends, 2);
    let (_, v) = call(
        &s,
        &op,
        "GET",
        "/v1/platform/tenants/globex/audit/verify",
        None,
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    // Usage across tenants, and the price book.
    let a = token(&s, "acme", "u1", ALL);
    let (_, c) = call(
        &s,
        &a,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "t", "model": "fast"})),
    )
    .await;
    call(
        &s,
        &a,
        "POST",
        &format!("/v1/conversations/{}/messages", c["id"].as_str().unwrap()),
        Some(json!({"content": "hi"})),
    )
    .await;
    let (st, u) = call(&s, &op, "GET", "/v1/platform/usage", None).await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["totals"]["requests"], 1);
    assert_eq!(u["data"][0]["tenant"], "acme");
    assert_eq!(u["data"][1]["totals"]["requests"], 0);
    let (st, one) = call(&s, &op, "GET", "/v1/platform/tenants/acme/usage", None).await;
    assert_eq!(
        (st, one["totals"]["requests"].as_i64()),
        (200, Some(1)),
        "{one}"
    );
    // A reconciliation run: acme's month against an OpenAI cost export (acme's calls are the
    // mock's, so the invoice's line is in no ledger row of that provider), kept and listed.
    let month = &runtime::domain::utc_today()[..7];
    let invoice =
        format!("start_time,line_item,amount_value\n{month}-01,\"gpt-4o-mini, input\",0.25\n");
    let r = s
        .http
        .post(format!(
            "{}/v1/platform/tenants/acme/reconciliations?month={month}",
            s.base
        ))
        .bearer_auth(&op)
        .header("content-type", "text/csv")
        .body(invoice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let run: Value = r.json().await.unwrap();
    assert_eq!(
        (run["provider"].as_str(), run["over_tolerance"].as_i64()),
        (Some("openai"), Some(1)),
        "{run}"
    );
    assert_eq!(run["lines"][0]["status"], "not_in_ledger");
    assert!(run["ran_by"].as_str().unwrap().ends_with("/ops-1"));
    let (_, runs) = call(
        &s,
        &op,
        "GET",
        "/v1/platform/reconciliations?tenant=acme",
        None,
    )
    .await;
    assert_eq!(runs["data"][0]["id"], run["id"]);
    let (st, one) = call(
        &s,
        &op,
        "GET",
        &format!(
            "/v1/platform/reconciliations/{}",
            run["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        (st, one["lines"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{one}"
    );
    let r = s
        .http
        .post(format!(
            "{}/v1/platform/tenants/acme/reconciliations?month={month}",
            s.base
        ))
        .bearer_auth(&op)
        .header("content-type", "text/csv")
        .body("day,cost\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("not a recognised invoice export")
    );
    let (st, p) = call(&s, &op, "GET", "/v1/platform/prices", None).await;
    assert_eq!(
        (st, p["data"][0]["version"].as_str()),
        (200, Some("2026-12-01")),
        "{p}"
    );
    // A tenant's admin at every platform route, even with platform scopes in its token: 403, and
    // each attempt is an event of acme's own chain.
    let smuggled = token(&s, "acme", "admin-1", &format!("{ALL} {PLATFORM_ALL}"));
    let platform_routes: Vec<_> = runtime::http::routes::ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/v1/platform/"))
        .collect();
    assert!(platform_routes.len() >= 6);
    for r in &platform_routes {
        let path = r.path.replace("{tenant_id}", "globex");
        let body = (r.method.as_str() == "POST").then(|| json!({}));
        let (st, e) = call(&s, &smuggled, r.method.as_str(), &path, body).await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (403, Some("insufficient_scope")),
            "{path}"
        );
    }
    let (_, t) = call(&s, &op, "GET", "/v1/platform/tenants/globex", None).await;
    assert_eq!(
        t["status"], "active",
        "globex was not suspended by acme's attempt"
    );
    let (_, denied) = call(
        &s,
        &a,
        "GET",
        "/v1/audit/events?outcome=denied&limit=100",
        None,
    )
    .await;
    let actions: Vec<&str> = denied["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = platform_routes.iter().map(|r| r.operation_id).collect();
    assert_eq!(actions, want);
    // An operator reaches no tenant route, and a read-only operator cannot suspend.
    for path in ["/v1/me", "/v1/usage", "/v1/conversations"] {
        let (st, _) = call(&s, &op, "GET", path, None).await;
        assert_eq!(st, 403, "{path}");
    }
    let reader = operator(&s, "ops-2", "platform:tenants:read");
    let (st, _) = call(
        &s,
        &reader,
        "POST",
        "/v1/platform/tenants/globex/suspend",
        Some(json!({})),
    )
    .await;
    assert_eq!(st, 403);
    // A staff token that also names a tenant is no token at all.
    let mut claims = s.claims("acme");
    claims["aud"] = json!(cli::devidp::OPERATOR_AUDIENCE);
    claims["scope"] = json!(PLATFORM_ALL);
    let (st, _) = call(
        &s,
        &s.signer.sign(&claims),
        "GET",
        "/v1/platform/tenants",
        None,
    )
    .await;
    assert_eq!(st, 401);
    s.running.stop().await.unwrap();
}

async fn chat_status(s: &Served, t: &str, model: &str) -> u16 {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    call(s, t, "POST", "/v1/chat/completions", Some(body))
        .await
        .0
}

#[tokio::test]
async fn a_tenants_admins_narrow_its_policy_and_limits_at_once_and_can_never_widen_them() {
    // Issue 12: "narrow within what the platform allows; never widen".
    let s = pooled().await;
    let admin = token(&s, "acme", "admin-1", &format!("{ALL} policy:write"));
    assert_eq!(chat_status(&s, &admin, "smart").await, 200);
    let (st, p) = call(
        &s,
        &admin,
        "PUT",
        "/v1/policy",
        Some(json!({"disabled_models": ["mock-large"]})),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    // Enforced at once, on every path: the model, its alias, the model list.
    assert_eq!(chat_status(&s, &admin, "mock-large").await, 403);
    assert_eq!(chat_status(&s, &admin, "smart").await, 403);
    assert_eq!(chat_status(&s, &admin, "fast").await, 200);
    let (_, models) = call(&s, &admin, "GET", "/v1/models", None).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"mock-large") && !ids.contains(&"smart"),
        "{ids:?}"
    );
    let (_, got) = call(&s, &admin, "GET", "/v1/policy", None).await;
    assert_eq!(got["disabled_models"], json!(["mock-large"]));
    assert!(
        got["registered"]["providers"]["mock"]["models"]
            .to_string()
            .contains("mock-large")
    );
    // Never wider: a model outside the registered policy, the default, a higher limit.
    for (path, body, says) in [
        (
            "/v1/policy",
            json!({"disabled_models": ["mock-small"]}),
            "default",
        ),
        (
            "/v1/policy",
            json!({"disabled_models": ["gpt-4o"]}),
            "not a model of the registered policy",
        ),
        (
            "/v1/limits",
            json!({"requests_per_minute": 601}),
            "only lower",
        ),
        (
            "/v1/limits",
            json!({"monthly_budget_micro_usd": 2_500_000_001_i64}),
            "only lower",
        ),
        ("/v1/limits", json!({"tokens_per_minute": 0}), "above zero"),
    ] {
        let (st, e) = call(&s, &admin, "PUT", path, Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{e}"
        );
    }
    // Lower limits are enforced at the next call.
    let (st, l) = call(
        &s,
        &admin,
        "PUT",
        "/v1/limits",
        Some(json!({"requests_per_minute": 3})),
    )
    .await;
    assert_eq!(st, 200, "{l}");
    let (_, l) = call(&s, &admin, "GET", "/v1/limits", None).await;
    assert_eq!(
        (
            l["requests_per_minute"].as_i64(),
            l["registered"]["requests_per_minute"].as_i64()
        ),
        (Some(3), Some(600)),
        "{l}"
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(chat_status(&s, &admin, "fast").await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // Re-enabling restores what the platform registered, no more.
    let (st, _) = call(
        &s,
        &admin,
        "PUT",
        "/v1/policy",
        Some(json!({"disabled_models": []})),
    )
    .await;
    assert_eq!(st, 200);
    let (_, got) = call(&s, &admin, "GET", "/v1/policy", None).await;
    assert_eq!(got["disabled_models"], json!([]));
    // Each change is in the platform's chain (it changes the registry), each refusal in acme's.
    let db = s.target.admin().await.unwrap();
    let actions: Vec<String> = tests::column(
        &db,
        "SELECT action FROM control.audit_events WHERE tenant_id = 'acme' \
         AND action LIKE '%.narrow' ORDER BY seq",
    )
    .await;
    assert_eq!(actions, ["policy.narrow", "limits.narrow", "policy.narrow"]);
    let (_, denied) = call(&s, &admin, "GET", "/v1/audit/events?outcome=denied", None).await;
    assert_eq!(denied["data"].as_array().unwrap().len(), 5);
    // A member without the permission cannot narrow (and the attempt is audited).
    let member = token(&s, "acme", "clerk", ALL);
    let (st, _) = call(
        &s,
        &member,
        "PUT",
        "/v1/policy",
        Some(json!({"disabled_models": ["mock-large"]})),
    )
    .await;
    assert_eq!(st, 403);
    s.running.stop().await.unwrap();
}
