//! The tenant API end to end (issue 2): chat completions (plain and streamed) metered into the
//! tenant's ledger before the response, usage isolation, and policy refusals without a ledger row.

use serde_json::{Value, json};
use tests::serve_examples;

async fn chat(s: &tests::Served, token: &str, body: Value) -> reqwest::Response {
    s.http
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn usage(s: &tests::Served, token: &str) -> Value {
    let r = s
        .http
        .get(format!("{}/v1/usage", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]})
}

#[tokio::test]
async fn a_chat_completion_is_answered_and_metered_before_the_response_returns() {
    let s = serve_examples().await;
    let token = s.token("acme");
    let r = chat(&s, &token, hello("fast")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    // The ledger row is already committed when the response arrives.
    assert_eq!(s.ledger_rows("acme").await, 1);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock-small");
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    let u = usage(&s, &token).await;
    let row = &u["data"][0];
    assert_eq!(row["tenant_id"], "acme");
    assert_eq!(row["subject"], "user-of-acme");
    assert_eq!(row["model"], "mock-small");
    assert_eq!(row["input_tokens"], 10);
    assert_eq!(row["output_tokens"], body["usage"]["completion_tokens"]);
    // mock-small: 0.15 USD / 0.60 USD per million tokens, rounded up to whole micro-USD per call.
    let out = body["usage"]["completion_tokens"].as_i64().unwrap();
    let want = (10 * 150_000 + out * 600_000 + 999_999) / 1_000_000;
    assert_eq!(row["cost_micro_usd"], want);
    assert_eq!(row["price_book_version"], "2026-12-01");
    assert_eq!(
        body["id"],
        format!("chatcmpl-{}", row["id"].as_str().unwrap().replace('-', ""))
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_streamed_completion_sends_sse_chunks_ending_in_done_and_leaves_one_ledger_row() {
    let s = serve_examples().await;
    let token = s.token("acme");
    let mut body = hello("smart");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = chat(&s, &token, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(
        content.starts_with("This is mock-large answering."),
        "{content}"
    );
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        content.split_whitespace().count()
    );
    assert_eq!(s.ledger_rows("acme").await, 1);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_usage_whatever_it_sends() {
    // docs/security.md cases 28/29/59: identity comes from the token only.
    let s = serve_examples().await;
    let acme = s.token("acme");
    let globex = s.token("globex");
    for _ in 0..2 {
        assert_eq!(chat(&s, &acme, hello("mock-small")).await.status(), 200);
    }
    assert_eq!(chat(&s, &globex, hello("mock-small")).await.status(), 200);
    let a = usage(&s, &acme).await;
    assert_eq!(a["tenant"], "acme");
    assert_eq!(a["totals"]["requests"], 2);
    assert!(
        a["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant_id"] == "acme")
    );
    let g = usage(&s, &globex).await;
    assert_eq!(g["totals"]["requests"], 1);
    assert!(
        g["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant_id"] == "globex")
    );

    // A tenant header is ignored; a tenant query parameter or body field is refused.
    let r = s
        .http
        .get(format!("{}/v1/usage", s.base))
        .bearer_auth(&acme)
        .header("x-tenant-id", "globex")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["tenant"].as_str(), v["totals"]["requests"].as_i64()),
        (Some("acme"), Some(2))
    );
    let r = s
        .http
        .get(format!("{}/v1/usage?tenant_id=globex", s.base))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let mut body = hello("mock-small");
    body["tenant_id"] = json!("globex");
    assert_eq!(chat(&s, &acme, body).await.status(), 400);
    assert_eq!(s.ledger_rows("globex").await, 1);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_model_outside_the_policy_is_refused_with_403_and_no_ledger_row() {
    // docs/security.md cases 53/54.
    let s = serve_examples().await;
    let globex = s.token("globex");
    for model in [
        "mock-large",
        "MOCK-SMALL",
        "mock/mock-small",
        "smart",
        "gpt-4o",
    ] {
        let r = chat(&s, &globex, hello(model)).await;
        assert_eq!(r.status(), 403, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_not_permitted");
    }
    let mut body = hello("mock-small");
    body["api_base"] = json!("http://169.254.169.254/");
    let r = chat(&s, &globex, body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `api_base`")
    );
    assert_eq!(s.ledger_rows("globex").await, 0);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn models_lists_exactly_the_tenant_policy() {
    let s = serve_examples().await;
    let r = s
        .http
        .get(format!("{}/v1/models", s.base))
        .bearer_auth(s.token("globex"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["mock-small"]);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_as_a_client() {
    let s = serve_examples().await;
    let script = cli::testing::repo_root().join("tests/clients/openai_sdk.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(format!("{}/v1", s.base))
        .env("TENANT_TOKEN", s.token("acme"))
        .output()
        .await
        .expect("python3 is needed for the SDK interop test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the `openai` Python package is missing: run `pip install openai` (scripts/test.sh does)"
    );
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["models"],
        json!(["fast", "mock-large", "mock-small", "smart"])
    );
    assert_eq!(v["plain"]["model"], "mock-small");
    assert!(
        v["plain"]["content"]
            .as_str()
            .unwrap()
            .contains("Echo: hello from the sdk")
    );
    assert!(
        v["stream"]["content"]
            .as_str()
            .unwrap()
            .starts_with("This is mock-large answering.")
    );
    assert_eq!(v["stream"]["finish_reason"], "stop");
    assert_eq!(
        v["refused"],
        json!({"status": 403, "code": "model_not_permitted"})
    );
    assert_eq!(s.ledger_rows("acme").await, 2);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_once_the_registry_says_so() {
    // docs/security.md case 15: never a default tenant, and suspension takes effect without a restart,
    // within the runtime's registry refresh interval (2 s under `tenantctl serve`). Issue 9 item 2: an
    // apply keeps a suspended tenant suspended; `resume` brings it back within the same bound.
    let s = serve_examples().await;
    let token = s.token("globex");
    let models = |t: String| {
        let http = s.http.clone();
        let url = format!("{}/v1/models", s.base);
        async move { http.get(url).bearer_auth(t).send().await.unwrap().status() }
    };
    let until = |want: u16, what: &'static str| {
        let token = token.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while models(token.clone()).await != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what} never took effect"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(models(token.clone()).await, 200);
    let globex = runtime::domain::TenantId::parse("globex").unwrap();
    use cli::provision::suspend::{Change, resume, suspend};
    assert_eq!(
        suspend(&s.target, &globex, "test").await.unwrap(),
        Change::Changed
    );
    // Issue 12: a suspended tenant's tokens get 403 `tenant_suspended` on every route.
    until(403, "suspension").await;
    for path in ["/v1/me", "/v1/usage", "/v1/models/mock-small", "/v1/nope"] {
        let r = s
            .http
            .get(format!("{}{path}", s.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "tenant_suspended", "{path}: {body}");
    }
    assert_eq!(
        models(s.token("acme")).await,
        200,
        "other tenants are unaffected"
    );
    // An apply of the unchanged manifests plans nothing for globex and leaves it suspended.
    let ids: Vec<_> = s.specs.iter().map(|x| x.id.clone()).collect();
    let observed =
        cli::provision::observe::observe(&s.target, cli::provision::observe::Scope::Only(&ids))
            .await
            .unwrap();
    let plan = cli::provision::plan::plan(
        &s.specs,
        &observed,
        &s.target.namespace,
        &s.target.endpoint.dbname,
    );
    assert!(!plan.has_changes(), "{}", plan.render());
    let spec = s.specs.iter().find(|x| x.id == globex).unwrap();
    let mut admin = s.target.admin().await.unwrap();
    cli::provision::apply::converge_tenant(&s.target, &mut admin, spec)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        models(token.clone()).await,
        403,
        "still suspended after an apply"
    );
    assert_eq!(
        suspend(&s.target, &globex, "again").await.unwrap(),
        Change::AlreadyThere
    );
    assert_eq!(
        resume(&s.target, &globex, "paid").await.unwrap(),
        Change::Changed
    );
    until(200, "resumption").await;
    let audited: Vec<String> = admin
        .query(
            "SELECT action || ':' || detail FROM control.audit_events WHERE tenant_id = 'globex' \
               AND action IN ('suspend', 'resume') ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audited, ["suspend:test", "resume:paid"]);
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_runtime_closes_when_it_cannot_read_the_registry_for_longer_than_its_bound() {
    // Issue 9 item 3: registry refresh fails closed. With its read revoked the runtime serves from its
    // last good copy only up to `registry_max_stale_secs` (6 s under `tenantctl serve`, refreshing
    // every 2 s), then answers 503 with Retry-After; once the read is back it serves again.
    let s = serve_examples().await;
    let status = || {
        let (http, url, token) = (
            s.http.clone(),
            format!("{}/v1/models", s.base),
            s.token("acme"),
        );
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(status().await.status(), 200);
    let admin = s.target.admin().await.unwrap();
    let runtime_role = s.target.namespace.runtime_role();
    admin
        .batch_execute(&format!(
            "REVOKE SELECT ON control.tenants FROM \"{runtime_role}\""
        ))
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    let closed = loop {
        let r = status().await;
        if r.status() == 503 {
            break r;
        }
        assert_eq!(r.status(), 200, "served from the last good copy until then");
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(20),
            "the runtime kept serving without a registry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        revoked.elapsed() >= std::time::Duration::from_secs(4),
        "closed only after the last good copy aged past its bound (elapsed {:?})",
        revoked.elapsed()
    );
    assert_eq!(closed.headers()["retry-after"], "5");
    let body: Value = closed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "registry_unavailable", "{body}");
    admin
        .batch_execute(&format!(
            "GRANT SELECT ON control.tenants TO \"{runtime_role}\""
        ))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while status().await.status() != 200 {
        assert!(std::time::Instant::now() < deadline, "never reopened");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn usage_rows_page_by_cursor_and_another_tenants_row_is_never_a_cursor() {
    // Issue 12 item 2: lists are paginated server-side within the caller's tenant (`after` = the
    // previous page's `last_id`, as OpenAI's lists); an id of another tenant's row answers 404, the
    // same as an id nobody has (case 28); a malformed one is 400.
    let s = serve_examples().await;
    let (acme, globex) = (s.token("acme"), s.token("globex"));
    for _ in 0..5 {
        assert_eq!(chat(&s, &acme, hello("fast")).await.status(), 200);
    }
    assert_eq!(chat(&s, &globex, hello("mock-small")).await.status(), 200);
    let page = |token: String, query: String| {
        let (http, base) = (s.http.clone(), s.base.clone());
        async move {
            let r = http
                .get(format!("{base}/v1/usage?{query}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let all = usage(&s, &acme).await;
    let want: Vec<String> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(want.len(), 5);
    assert_eq!(all["has_more"], false);
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let (status, body) = page(acme.clone(), query.clone()).await;
        assert_eq!(status, 200, "{body}");
        for r in body["data"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(body["last_id"], json!(seen.last()), "{body}");
        if body["has_more"] == false {
            break;
        }
        query = format!("limit=2&after={}", body["last_id"].as_str().unwrap());
    }
    assert_eq!(seen, want, "every row once, newest first");
    // globex's row is no cursor of acme's; nor is an id nobody has: the same 404.
    let other = usage(&s, &globex).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in [other, uuid::Uuid::new_v4().to_string()] {
        let (status, body) = page(acme.clone(), format!("after={id}")).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(
            body["error"]["message"],
            format!("`after`: no ledger row `{id}` in this tenant")
        );
    }
    let (status, body) = page(acme.clone(), "after=row-3".into()).await;
    assert_eq!(status, 400, "{body}");
    s.running.stop().await.unwrap();
}
