//! The gateway end to end (issue 10): the runtime served over real HTTP with real Postgres, tenants
//! whose policies point at the mock provider server, their keys in the deployment's secret store,
//! and the official `openai` and `anthropic` Python SDKs as clients. Metering while streaming
//! (the ledger row before the final frame; cancelled and cut streams charged for what they
//! produced), scrubbing, per-tenant keys, the canary scan, and security cases 47-55.

use std::time::Duration;

use cli::platform::Platform;
use futures_util::StreamExt;
use runtime::domain::{ModelId, ProviderId, TenantId};
use runtime::models::key_name;
use runtime::registry::ModelPolicy;
use runtime::registry::policy::{Endpoint, ProviderPolicy};
use secrecy::SecretString;
use serde_json::{Value, json};
use tests::mock_provider::{Config, Fault, MockProvider};
use tests::{Served, serve_with};

/// Both example tenants allowed OpenAI's gpt-4o-mini (alias `fast`) and its embeddings, and
/// Anthropic's claude-haiku-4-5, all at the mock; at most 4096 output tokens a request.
fn policy(mock_url: &str) -> ModelPolicy {
    let id = |m: &str| ModelId::parse(m).unwrap();
    let endpoint = |base: String| Endpoint {
        base_url: Some(base),
        region: Some("eu-west-1".into()),
        ..Endpoint::default()
    };
    let mut p = ModelPolicy::only(
        ProviderId::Openai,
        vec![id("gpt-4o-mini"), id("text-embedding-3-small")],
    )
    .unwrap();
    p.providers.get_mut(&ProviderId::Openai).unwrap().endpoint = endpoint(format!("{mock_url}/v1"));
    p.providers.insert(
        ProviderId::Anthropic,
        ProviderPolicy {
            models: vec![id("claude-haiku-4-5")],
            endpoint: endpoint(mock_url.to_owned()),
        },
    );
    p.aliases.insert(id("fast"), id("gpt-4o-mini"));
    p.max_tokens_per_request = Some(4096);
    p.residency = vec!["eu-west-1".into()];
    assert!(p.problems().is_empty(), "{:?}", p.problems());
    p
}

struct Gateway {
    s: Served,
    mock: MockProvider,
    /// Each tenant's keys, generated for this run: (tenant, provider) -> key.
    keys: Vec<(String, ProviderId, String)>,
}

async fn gateway(config: Config) -> Gateway {
    gateway_with(config, |_| {}).await
}

/// `gateway`, with each example tenant's spec edited further (budgets, limits).
async fn gateway_with(
    config: Config,
    edit: impl Fn(&mut cli::manifest::TenantSpec) + 'static,
) -> Gateway {
    let mock = MockProvider::start(config).await;
    let url = mock.url();
    let s = serve_with(Platform::builtin(), move |spec| {
        spec.models = policy(&url);
        edit(spec);
    })
    .await;
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        for provider in [ProviderId::Openai, ProviderId::Anthropic] {
            let key = format!(
                "canary-{tenant}-{}-{}",
                provider.as_str(),
                uuid::Uuid::new_v4().simple()
            );
            let name = key_name(&TenantId::parse(tenant).unwrap(), provider).unwrap();
            s.target
                .secrets
                .put(&name, &SecretString::from(key.clone()))
                .await
                .unwrap();
            keys.push((tenant.to_owned(), provider, key));
        }
    }
    Gateway { s, mock, keys }
}

impl Gateway {
    fn key(&self, tenant: &str, provider: ProviderId) -> &str {
        &self
            .keys
            .iter()
            .find(|(t, p, _)| t == tenant && *p == provider)
            .unwrap()
            .2
    }

    /// The runtime's operator metrics (Prometheus text).
    async fn metrics(&self) -> String {
        self.s
            .http
            .get(format!("http://{}/metrics", self.s.running.metrics_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GETs `path` as `tenant` and reads the JSON answer.
    async fn get_json(&self, tenant: &str, path: &str) -> Value {
        self.s
            .http
            .get(format!("{}{path}", self.s.base))
            .bearer_auth(self.s.token(tenant))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, tenant: &str, path: &str, body: Value) -> reqwest::Response {
        self.s
            .http
            .post(format!("{}{path}", self.s.base))
            .bearer_auth(self.s.token(tenant))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The tenant's ledger rows, newest first, read as the admin: (model, outcome, estimated, in, out).
    async fn ledger(&self, tenant: &str) -> Vec<(String, String, bool, i64, i64)> {
        let admin = self.s.target.admin().await.unwrap();
        let schema = format!("t_{tenant}");
        let sql = format!(
            "SELECT model, outcome, usage_estimated, input_tokens, output_tokens FROM {schema}.usage_ledger ORDER BY created_at DESC"
        );
        admin
            .query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }

    async fn wait_for_ledger(
        &self,
        tenant: &str,
        rows: usize,
    ) -> Vec<(String, String, bool, i64, i64)> {
        for _ in 0..200 {
            let l = self.ledger(tenant).await;
            if l.len() >= rows {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{tenant} never reached {rows} ledger rows");
    }
}

#[tokio::test]
async fn the_official_openai_and_anthropic_sdks_get_every_reply_and_every_error_typed() {
    let g = gateway(Config::default()).await;
    let narrow = {
        let mut c = g.s.claims("acme");
        c["scope"] = json!("models:read");
        g.s.signer.sign(&c)
    };
    let script = cli::testing::repo_root().join("tests/clients/sdk_gateway.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&g.s.base)
        .env("TENANT_TOKEN", g.s.token("acme"))
        .env("NARROW_TOKEN", narrow)
        .output()
        .await
        .expect("python3 is needed for the SDK tests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "the `openai` and `anthropic` Python packages are needed: run `pip install openai anthropic` (scripts/test.sh does)\n{stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["models"],
        json!([
            "claude-haiku-4-5",
            "fast",
            "gpt-4o-mini",
            "text-embedding-3-small"
        ])
    );
    assert_eq!(v["model_get"], "gpt-4o-mini");
    assert!(
        v["plain"]["content"]
            .as_str()
            .unwrap()
            .starts_with("mock reply from gpt-4o-mini hello from the openai sdk")
    );
    assert_eq!(v["plain"]["usage"], json!([5, 12]));
    assert_eq!(v["stream"]["finish_reason"], "stop");
    assert_eq!(v["stream"]["usage"], json!([2, 12]));
    assert!(
        v["stream"]["content"]
            .as_str()
            .unwrap()
            .starts_with("mock reply from gpt-4o-mini stream please")
    );
    assert!(
        v["stream"]["chunks"].as_u64().unwrap() >= 12,
        "forwarded chunk by chunk: {}",
        v["stream"]
    );
    assert_eq!(
        v["tool"],
        json!({"name": "get_weather", "arguments": {"city": "Paris"}, "finish_reason": "tool_calls"})
    );
    assert_eq!(
        v["tool_stream"],
        json!({"0": {"name": "get_weather", "arguments": {"city": "Paris"}}})
    );
    assert_eq!(v["json_mode"], json!({"answer": "mock"}));
    assert_eq!(v["embeddings"], json!({"count": 2, "dims": 4, "tokens": 3}));
    let e = &v["errors"];
    assert_eq!(
        e["bad_request"],
        json!({"class": "BadRequestError", "status": 400, "code": "invalid_request"})
    );
    assert_eq!(e["unauthenticated"]["class"], "AuthenticationError");
    assert_eq!(
        e["forbidden_model"],
        json!({"class": "PermissionDeniedError", "status": 403, "code": "model_not_permitted"})
    );
    assert_eq!(
        e["forbidden_scope"],
        json!({"class": "PermissionDeniedError", "status": 403, "code": "insufficient_scope"})
    );
    assert_eq!(
        e["not_found"],
        json!({"class": "NotFoundError", "status": 404, "code": "not_found"})
    );
    assert_eq!(e["too_large"]["status"], 413);
    assert_eq!(e["too_large"]["code"], "request_too_large");
    assert_eq!(
        e["too_many_tokens"],
        json!({"class": "BadRequestError", "status": 400, "code": "invalid_request"})
    );
    assert_eq!(e["method_not_allowed"]["status"], 405);
    assert_eq!(
        e["method_not_allowed"]["body"]["error"]["code"],
        "method_not_allowed"
    );

    assert_eq!(
        v["messages"]["text"]
            .as_str()
            .unwrap()
            .split(' ')
            .take(4)
            .collect::<Vec<_>>(),
        ["mock", "reply", "from", "claude-haiku-4-5"]
    );
    assert_eq!(v["messages"]["stop_reason"], "end_turn");
    assert_eq!(v["messages"]["usage"], json!([7, 12]));
    assert_eq!(v["messages_stream"]["stop_reason"], "end_turn");
    assert_eq!(v["messages_stream"]["usage"], json!([2, 12]));
    assert!(
        v["messages_stream"]["text"]
            .as_str()
            .unwrap()
            .starts_with("mock reply from claude-haiku-4-5 stream it")
    );
    assert_eq!(v["messages_bearer"], "end_turn");
    assert!(
        v["messages_cross"]["text"]
            .as_str()
            .unwrap()
            .starts_with("mock reply from gpt-4o-mini")
    );
    assert_eq!(
        v["messages_tool"],
        json!([{"type": "tool_use", "name": "get_weather", "input": {"city": "Paris"}}])
    );
    let me = &v["messages_errors"];
    assert_eq!(
        me["bad_request"],
        json!({"class": "BadRequestError", "status": 400, "code": "invalid_request_error"})
    );
    assert_eq!(me["unauthenticated"]["class"], "AuthenticationError");
    assert_eq!(
        me["forbidden_model"],
        json!({"class": "PermissionDeniedError", "status": 403, "code": "permission_error"})
    );
    assert_eq!(me["too_large"]["status"], 413);

    // Every model call left a row: 2 chats + 2 tool calls + json + embeddings + 4 messages + cross.
    let rows = g.wait_for_ledger("acme", 11).await;
    assert_eq!(rows.len(), 11, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == "complete" && !r.2), "{rows:?}");
    g.s.running.stop().await.unwrap();
}

/// Reads an SSE response frame by frame, calling `each` with every `data:` payload as it arrives.
async fn frames(response: reqwest::Response, mut each: impl AsyncFnMut(&str) -> bool) {
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(i) = buf.find("\n\n") {
            let frame: String = buf.drain(..i + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data: ")
                    && !each(data).await
                {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_streams_ledger_row_is_committed_before_its_final_frame_is_sent() {
    // Issue 10 item 6: when the client sees the finish reason, finance can already see the row.
    let g = gateway(Config {
        chunk_delay: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    let response = g
        .post("acme", "/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "count"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let mut saw = Vec::new();
    frames(response, async |data| {
        if data == "[DONE]" {
            saw.push("done".to_owned());
            return false;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if v["choices"][0]["finish_reason"].is_string() {
            let rows = g.ledger("acme").await;
            assert_eq!(
                rows.len(),
                1,
                "the finish frame arrived before the ledger row was committed"
            );
            assert_eq!(
                rows[0],
                ("gpt-4o-mini".into(), "complete".into(), false, 1, 12)
            );
            saw.push("finish".to_owned());
        }
        true
    })
    .await;
    assert_eq!(saw, ["finish", "done"]);
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_the_client_cancels_is_charged_for_what_it_produced_and_stops_the_provider() {
    let g = gateway(Config {
        chunk_delay: Duration::from_millis(30),
        words: 200,
        ..Config::default()
    })
    .await;
    let response = g
        .post("acme", "/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "long story"}]}))
        .await;
    let mut seen = 0;
    frames(response, async |_| {
        seen += 1;
        seen < 4
    })
    .await;
    // The client has gone (the response is dropped).
    let rows = g.wait_for_ledger("acme", 1).await;
    let (model, outcome, estimated, input, output) = rows[0].clone();
    assert_eq!(
        (model.as_str(), outcome.as_str(), estimated),
        ("gpt-4o-mini", "cancelled", true)
    );
    assert!(
        input > 0 && output > 0 && output < 200,
        "charged for what was produced: {rows:?}"
    );
    for _ in 0..100 {
        if g.mock
            .shared
            .cancelled_streams
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            g.s.running.stop().await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the provider kept streaming after the client left");
}

#[tokio::test]
async fn a_stream_the_provider_cuts_is_charged_and_the_client_is_told() {
    let g = gateway(Config {
        chunk_delay: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    g.mock.fail_next([Fault::CutAfter(4)]);
    let response = g
        .post("acme", "/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "cut"}]}))
        .await;
    let mut last = Value::Null;
    frames(response, async |data| {
        last = serde_json::from_str(data).unwrap_or(Value::Null);
        true
    })
    .await;
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    let rows = g.wait_for_ledger("acme", 1).await;
    assert_eq!(rows[0].1, "upstream_cut");
    assert!(rows[0].2 && rows[0].4 > 0, "{rows:?}");
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn each_tenant_reaches_its_provider_with_its_own_key_and_never_shares_a_cached_reply() {
    // docs/security.md cases 49 and 55.
    let g = gateway(Config::default()).await;
    let prompt = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "the same prompt"}]});
    for tenant in ["acme", "globex", "acme"] {
        assert_eq!(
            g.post(tenant, "/v1/chat/completions", prompt.clone())
                .await
                .status(),
            200
        );
    }
    let seen: Vec<Option<String>> = g
        .mock
        .received()
        .into_iter()
        .map(|r| r.credential)
        .collect();
    assert_eq!(
        seen,
        vec![
            Some(g.key("acme", ProviderId::Openai).to_owned()),
            Some(g.key("globex", ProviderId::Openai).to_owned()),
            Some(g.key("acme", ProviderId::Openai).to_owned()),
        ],
        "one upstream call per request (no shared cache), each with its tenant's own key"
    );
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_provider_error_that_echoes_the_key_reaches_the_client_scrubbed() {
    // docs/security.md case 48.
    let g = gateway(Config::default()).await;
    g.mock.accept_only(&["some-other-key"]);
    let response = g
        .post(
            "acme",
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(response.status(), 502);
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.unwrap();
    let key = g.key("acme", ProviderId::Openai);
    assert!(
        !body.contains(key) && !headers.contains(key),
        "{headers} {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "provider_auth_failed");
    assert_eq!(
        g.mock.received().len(),
        2,
        "one refused call, one after re-reading the key"
    );
    assert!(
        g.ledger("acme").await.is_empty(),
        "a call that produced nothing is not charged"
    );
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_provider_rejection_is_passed_on_with_its_reason_and_without_the_key() {
    // docs/security.md case 48: the provider's own words reach the client (they explain the
    // refusal), scrubbed of anything credential-like, and the same in the logs.
    let g = gateway(Config::default()).await;
    g.mock
        .fail_next([Fault::BadRequestEchoingKey, Fault::BadRequestEchoingKey]);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        ),
    ] {
        let r = g.post("acme", path, body).await;
        assert_eq!(r.status(), 400, "{path}");
        let text = r.text().await.unwrap();
        for key in g.keys.iter().map(|(_, _, k)| k) {
            assert!(!text.contains(key.as_str()), "{text}");
        }
        assert!(
            text.contains("Invalid value for 'model'") && text.contains("[redacted]"),
            "{text}"
        );
    }
    assert_eq!(g.mock.received().len(), 2, "a rejection is not retried");
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn refused_requests_make_no_upstream_call_and_leave_no_ledger_row() {
    // docs/security.md cases 53 and 54, on both surfaces.
    let g = gateway(Config::default()).await;
    let m = json!([{"role": "user", "content": "x"}]);
    for (path, body, status) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": m, "api_base": "http://evil.example"}),
            400,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": m, "extra_headers": {"authorization": "x"}}),
            400,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "https://evil.example/v1/gpt-4o-mini", "messages": m}),
            400,
        ),
        (
            "/v1/messages",
            json!({"model": "http://evil.example", "max_tokens": 5, "messages": m}),
            400,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "openai/gpt-4o-mini", "messages": m}),
            403,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "GPT-4O-MINI", "messages": m}),
            403,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": m}),
            403,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": m, "max_tokens": 5000}),
            400,
        ),
        (
            "/v1/messages",
            json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": m, "base_url": "http://evil.example"}),
            400,
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": m}),
            403,
        ),
        (
            "/v1/embeddings",
            json!({"model": "gpt-4o-mini", "input": "x", "api_base": "http://evil"}),
            400,
        ),
    ] {
        let r = g.post("acme", path, body.clone()).await;
        assert_eq!(r.status(), status, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        if path == "/v1/messages" {
            assert_eq!(v["type"], "error", "{v}");
        } else {
            assert!(v["error"]["code"].is_string(), "{v}");
        }
    }
    assert!(g.mock.received().is_empty(), "no upstream call");
    assert!(g.ledger("acme").await.is_empty());
    g.s.running.stop().await.unwrap();
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Everything the test process logs from here on (a global subscriber, so tasks on every worker
/// thread, and every other test running meanwhile, log into it).
pub(crate) fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = {
            let logs = logs.clone();
            move || LogWriter(logs.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "runtime=trace,cli=debug,tests=debug,info",
            ))
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test sets a global subscriber");
        logs
    })
    .clone()
}

#[tokio::test]
async fn canary_keys_never_appear_in_logs_rows_responses_or_files() {
    // docs/security.md case 47: every tenant key is a generated canary; after a run that exercises
    // success, streaming, a 400 and a 401 that echo the key, a rotation, a cut stream and refusals,
    // no canary is in anything the run wrote.
    let logs = captured_logs();
    let g = gateway(Config {
        chunk_delay: Duration::from_millis(1),
        ..Config::default()
    })
    .await;
    let mut responses = String::new();
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let stream =
        json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let msg = json!({"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    for (tenant, path, body) in [
        ("acme", "/v1/chat/completions", &chat),
        ("globex", "/v1/chat/completions", &stream),
        ("acme", "/v1/messages", &msg),
    ] {
        let r = g.post(tenant, path, body.clone()).await;
        responses.push_str(&format!("{:?}", r.headers()));
        responses.push_str(&r.text().await.unwrap());
    }
    // A 400 and a 401 that echo the key, on both wire formats.
    g.mock.fail_next([Fault::BadRequestEchoingKey]);
    let r = g.post("globex", "/v1/chat/completions", chat.clone()).await;
    responses.push_str(&r.text().await.unwrap());
    g.mock.accept_only(&["nobody"]);
    for (path, body) in [("/v1/chat/completions", &chat), ("/v1/messages", &msg)] {
        let r = g.post("acme", path, body.clone()).await;
        responses.push_str(&format!("{:?}", r.headers()));
        responses.push_str(&r.text().await.unwrap());
    }
    // Rotate acme's OpenAI key to a new canary; the provider accepts only that one.
    let rotated = format!("canary-rotated-{}", uuid::Uuid::new_v4().simple());
    let name = key_name(&TenantId::parse("acme").unwrap(), ProviderId::Openai).unwrap();
    g.s.target
        .secrets
        .put(&name, &SecretString::from(rotated.clone()))
        .await
        .unwrap();
    g.mock.accept_only(&[&rotated]);
    let r = g.post("acme", "/v1/chat/completions", chat.clone()).await;
    assert_eq!(r.status(), 200, "the rotated key is used without a restart");
    responses.push_str(&r.text().await.unwrap());
    g.mock.fail_next([Fault::CutAfter(2)]);
    let r = g.post("acme", "/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    responses.push_str(&r.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut canaries: Vec<String> = g.keys.iter().map(|(_, _, k)| k.clone()).collect();
    canaries.push(rotated);
    // Rows: every table of every schema, as text.
    let admin = g.s.target.admin().await.unwrap();
    let rows: String = admin
        .query(
            "SELECT coalesce(string_agg(query_to_xml(format('SELECT * FROM %I.%I', schemaname, tablename), true, false, '')::text, ''), '') \
               FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert!(rows.contains("gpt-4o-mini"), "the scan reads the ledger");
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        log_text.contains("provider call failed"),
        "the scan reads the runtime's logs: {} bytes: {}",
        log_text.len(),
        &log_text[..log_text.len().min(3000)]
    );
    // Files: the deployment's secret store, its database's files and the cluster's WAL.
    let state = cli::testing::cluster().state.root();
    let oid: u32 = admin
        .query_one(
            "SELECT oid FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut files = Vec::new();
    files_under(&g.s.target.secrets_dir, &mut files);
    let secret_files = files.len();
    let data = cli::testing::cluster().state.pg_data();
    files_under(&data.join("base").join(oid.to_string()), &mut files);
    files_under(&data.join("pg_wal"), &mut files);
    assert!(
        secret_files >= 4 && files.len() > secret_files + 10,
        "the scan reads the deployment's files under {}",
        state.display()
    );
    for canary in &canaries {
        assert!(
            !responses.contains(canary.as_str()),
            "a key reached a client"
        );
        assert!(
            !log_text.contains(canary.as_str()),
            "a key reached the logs"
        );
        assert!(
            !rows.contains(canary.as_str()),
            "a key reached the database"
        );
        let finder = memchr::memmem::Finder::new(canary.as_bytes());
        for f in &files {
            let bytes = std::fs::read(f).unwrap_or_default();
            assert!(
                finder.find(&bytes).is_none(),
                "a key is in the clear in {}",
                f.display()
            );
        }
    }
    // The mock did receive them: the scan looks for strings that really travelled.
    assert!(
        g.mock
            .received()
            .iter()
            .any(|r| r.credential.as_deref() == Some(canaries[0].as_str()))
    );
    g.s.running.stop().await.unwrap();
}

#[derive(Clone)]
struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_tenant_without_a_key_for_a_provider_gets_503_and_no_other_key_is_used() {
    // docs/security.md case 51: never another tenant's key, never a platform key.
    let g = gateway(Config::default()).await;
    let name = key_name(&TenantId::parse("globex").unwrap(), ProviderId::Anthropic).unwrap();
    g.s.target.secrets.delete(&name).await.unwrap();
    let r = g
        .post("globex", "/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert!(
        g.mock.received().is_empty(),
        "no upstream call, with anyone's key"
    );
    assert!(g.ledger("globex").await.is_empty());
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn usage_a_provider_reports_badly_is_never_credited_and_is_flagged() {
    // docs/security.md case 57: negative, fractional, string, absurd or missing token counts are not
    // believed; the call is counted here and its row says so.
    let g = gateway(Config::default()).await;
    let bad = [
        json!({"prompt_tokens": -5, "completion_tokens": 3}),
        json!({"prompt_tokens": 2.5, "completion_tokens": 3}),
        json!({"prompt_tokens": "NaN", "completion_tokens": 3}),
        json!({"prompt_tokens": 4, "completion_tokens": 100_000_000_000_u64}),
        json!({"prompt_tokens": 4}),
    ];
    for (i, usage) in bad.iter().enumerate() {
        g.mock
            .set_config(|c| c.usage_override = Some(usage.clone()));
        for stream in [false, true] {
            let r = g
                .post("acme", "/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": stream, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "count me"}]}))
                .await;
            assert_eq!(r.status(), 200, "{usage}");
            let _ = r.text().await.unwrap();
            let rows = g
                .wait_for_ledger("acme", 2 * i + usize::from(stream) + 1)
                .await;
            let (_, outcome, estimated, input, output) = rows[0].clone();
            assert_eq!(outcome, "complete");
            assert!(
                estimated,
                "{usage} (stream: {stream}) was believed: {rows:?}"
            );
            assert!(
                (1..1000).contains(&input) && (1..1000).contains(&output),
                "{usage}: {rows:?}"
            );
        }
    }
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn two_tenants_many_parallel_streams_with_cancels_never_see_each_others_bytes() {
    // docs/security.md case 32: acme and globex each run 200 streams, 20 at a time (inside their
    // in-flight share of 32, which a cancelled stream holds until its row is written), every fifth
    // cancelled mid-way; each prompt carries its tenant's canary, and the mock echoes prompts, so any
    // crossed stream would show the other tenant's canary.
    let g = std::sync::Arc::new(
        gateway(Config {
            chunk_delay: Duration::from_millis(1),
            words: 30,
            record: false,
            ..Config::default()
        })
        .await,
    );
    let canary = |t: &str| {
        format!(
            "canary{t}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    };
    let canaries = std::sync::Arc::new([("acme", canary("acme")), ("globex", canary("globex"))]);
    let mut tasks = Vec::new();
    for (tenant, _) in canaries.iter() {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(20));
        for i in 0..200 {
            let (g, canaries, permits, tenant) = (
                g.clone(),
                canaries.clone(),
                permits.clone(),
                tenant.to_string(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire().await.unwrap();
                let own = &canaries.iter().find(|(t, _)| *t == tenant).unwrap().1;
                let other = &canaries.iter().find(|(t, _)| *t != tenant).unwrap().1;
                let r = g
                    .post(&tenant, "/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": own}]}))
                    .await;
                if r.status() != 200 {
                    panic!("{}: {}", r.status(), r.text().await.unwrap());
                }
                let mut text = String::new();
                let mut body = r.bytes_stream();
                let mut frames = 0;
                while let Some(chunk) = body.next().await {
                    text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                    frames += 1;
                    if i % 5 == 0 && frames == 3 {
                        break; // cancel mid-way
                    }
                }
                assert!(!text.contains(other.as_str()), "{tenant} saw the other tenant's bytes");
                if i % 5 != 0 {
                    assert!(text.contains(own.as_str()) && text.contains("[DONE]"), "{text}");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for tenant in ["acme", "globex"] {
        let rows = g.wait_for_ledger(tenant, 200).await;
        assert_eq!(
            rows.len(),
            200,
            "every stream, finished or cancelled, left its row"
        );
    }
}

#[tokio::test]
async fn concurrent_calls_of_a_tenant_share_a_durable_commit_and_a_bad_row_fails_only_its_own() {
    // Issue 11 item 3 (group commit): rows that arrive while a commit of their tenant is in flight
    // are committed together, each request answering only once its row is durable; a batch that
    // fails is retried row by row, so only the bad row's request fails.
    let g = gateway(Config::default()).await;
    let ledger = g.s.running.state.ledger.clone();
    assert!(ledger.is_group());
    let admin = g.s.target.admin().await.unwrap();
    // A row the database refuses: the subject `poison`, by a constraint added for this test.
    admin
        .batch_execute(
            "ALTER TABLE t_acme.usage_ledger ADD CONSTRAINT test_poison CHECK (subject <> 'poison') NOT VALID",
        )
        .await
        .unwrap();
    let (commits, rows) = (ledger.commits(), ledger.rows());
    // Hold the tenant's first commit: the admin's SHARE lock blocks every INSERT into its ledger.
    admin
        .batch_execute("BEGIN; LOCK TABLE t_acme.usage_ledger IN SHARE MODE")
        .await
        .unwrap();
    let call = |token: String| {
        let (http, base) = (g.s.http.clone(), g.s.base.clone());
        tokio::spawn(async move {
            let ask =
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
            chat_at(&http, &base, &token, ask).await.0
        })
    };
    let first = call(g.s.token("acme"));
    // Watched from another session: inside a transaction the activity view is a snapshot.
    let watch = g.s.target.admin().await.unwrap();
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT ledger_append%'";
    for i in 0.. {
        let n: i64 = watch.query_one(waiting, &[]).await.unwrap().get(0);
        if n == 1 {
            break;
        }
        assert!(i < 400, "the first commit never reached the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let poisoned = {
        let mut c = g.s.claims("acme");
        c["sub"] = json!("poison");
        g.s.signer.sign(&c)
    };
    let mut rest: Vec<_> = (0..8).map(|_| call(g.s.token("acme"))).collect();
    rest.push(call(poisoned));
    for i in 0.. {
        if ledger.queued() == 9 {
            break;
        }
        assert!(
            i < 400,
            "the calls never queued behind the commit in flight: {ledger:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nobody has an answer while their rows wait: an answer means a durable row.
    assert!(!first.is_finished() && rest.iter().all(|c| !c.is_finished()));
    admin.batch_execute("COMMIT").await.unwrap();
    assert_eq!(first.await.unwrap(), 200);
    let mut statuses = Vec::new();
    for c in rest {
        statuses.push(c.await.unwrap());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 500]);
    // One commit for the first row, a failed batch of nine, then nine single tries (eight commit).
    assert_eq!(ledger.rows() - rows, 9);
    assert_eq!(ledger.commits() - commits, 9);
    let rows = g.ledger("acme").await;
    assert_eq!(rows.len(), 9, "{rows:?}");
    // The daily totals (one upsert per statement) agree with the rows.
    let totals: (i64, i64) = {
        let r = admin
            .query_one(
                "SELECT (SELECT sum(requests)::bigint FROM t_acme.usage_daily), \
                        (SELECT sum(output_tokens)::bigint FROM t_acme.usage_daily)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(totals, (9, rows.iter().map(|r| r.4).sum::<i64>()));
    // No hold outlives its call, the refused row's included (its call gave it back).
    assert_eq!(budget_state(&g, "acme").await.0, 0);
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn many_rows_committed_together_add_up_in_the_daily_totals() {
    // Without a lock: 32 concurrent calls, however the commits fall, every row lands once and the
    // per-statement totals equal the sum of the rows.
    let g = gateway(Config::default()).await;
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (http, base, token) = (g.s.http.clone(), g.s.base.clone(), g.s.token("globex"));
            tokio::spawn(async move {
                let ask = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]});
                chat_at(&http, &base, &token, ask).await.0
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let rows = g.ledger("globex").await;
    assert_eq!(rows.len(), 32);
    let admin = g.s.target.admin().await.unwrap();
    let r = admin
        .query_one(
            "SELECT sum(requests)::bigint, sum(input_tokens)::bigint, sum(output_tokens)::bigint \
               FROM t_globex.usage_daily",
            &[],
        )
        .await
        .unwrap();
    let got: (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(
        got,
        (
            32,
            rows.iter().map(|r| r.3).sum(),
            rows.iter().map(|r| r.4).sum()
        )
    );
    // The operator's view of the same: rows, commits and time in commits.
    let metrics = g.metrics().await;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    let (rows, commits) = (
        counter("tenantctl_ledger_rows_total"),
        counter("tenantctl_ledger_commits_total"),
    );
    assert_eq!(rows, 32, "{metrics}");
    assert!((1..=32).contains(&commits), "{metrics}");
    let seconds: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tenantctl_ledger_commit_seconds_total "))
        .expect("the commit time counter")
        .parse()
        .unwrap();
    assert!(seconds > 0.0, "{metrics}");
    g.s.running.stop().await.unwrap();
}

/// POSTs a chat completion to `base` as `token`: (status, Retry-After, body).
async fn chat_at(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: Value,
) -> (u16, Option<String>, Value) {
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

/// A second runtime process on the same deployment, and the base URLs of both.
async fn second_runtime(g: &Gateway) -> (cli::serve::Running, [String; 2]) {
    let second = cli::serve::start(
        &g.s.target,
        &Platform::builtin(),
        cli::serve::Listen::loopback_any(),
    )
    .await
    .unwrap();
    let bases = [g.s.base.clone(), format!("http://{}", second.api_addr)];
    (second, bases)
}

/// The tenant's open holds and this month's committed spend, read as the admin.
async fn budget_state(g: &Gateway, tenant: &str) -> (i64, i64) {
    let admin = g.s.target.admin().await.unwrap();
    let r = admin
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM t_{tenant}.budget_holds), \
                        (SELECT coalesce(sum(cost_micro_usd), 0)::bigint FROM t_{tenant}.usage_daily)"
            ),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn a_budget_holds_each_calls_worst_case_refuses_what_does_not_fit_and_gives_failed_holds_back()
 {
    // Issue 11 item 4: before the upstream call the worst case (max_tokens at the model's price) is
    // held; a call that cannot be covered is 402 with no upstream call and no ledger row; a finished
    // call settles to its real cost; a failed one gives its hold back.
    let budget = 2_000; // micro-USD: $0.002
    let g = gateway_with(Config::default(), move |spec| {
        spec.monthly_budget = runtime::domain::MicroUsd(budget);
    })
    .await;
    let token = g.s.token("acme");
    let ask = |max: u32| json!({"model": "gpt-4o-mini", "max_tokens": max, "messages": [{"role": "user", "content": "hi"}]});
    // 3,000 output tokens at 0.60 USD per million: a worst case of 1,800 micro-USD, held, then
    // settled at the 12 tokens the reply really had.
    let (status, _, _) = chat_at(&g.s.http, &g.s.base, &token, ask(3000)).await;
    assert_eq!(status, 200);
    let (holds, spent) = budget_state(&g, "acme").await;
    assert_eq!(holds, 0, "a settled call leaves no hold");
    assert!(
        (1..20).contains(&spent),
        "settled at its real cost: {spent}"
    );
    // The remaining budget, on the response.
    let r = g.post("acme", "/v1/chat/completions", ask(10)).await;
    let left: i64 = r.headers()["x-tenantctl-budget-remaining-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > budget - 40 && left < budget, "{left}");
    assert!(r.headers().get("x-tenantctl-budget-warning").is_none());

    // 4,000 output tokens: 2,400 micro-USD, more than is left.
    g.mock.clear();
    let rows = g.ledger("acme").await.len();
    let (status, _, body) = chat_at(&g.s.http, &g.s.base, &token, ask(4000)).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("budget.monthly_usd") && message.contains("$0.002000"),
        "{message}"
    );
    assert!(g.mock.received().is_empty(), "no upstream call");
    assert_eq!(g.ledger("acme").await.len(), rows, "no ledger row");
    // The Anthropic surface says it in its own shape.
    let r = g
        .post("acme", "/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 4000, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 402);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "billing_error", "{body}");
    assert!(g.mock.received().is_empty(), "no upstream call");

    // A provider failure gives the hold back: the available budget is the budget minus settled spend.
    g.mock
        .fail_next([Fault::ServerError, Fault::ServerError, Fault::ServerError]);
    let (status, _, _) = chat_at(&g.s.http, &g.s.base, &token, ask(3000)).await;
    assert!(status >= 500, "{status}");
    let (holds, spent) = budget_state(&g, "acme").await;
    assert_eq!(holds, 0, "the failed call's hold was released");
    // So a call whose worst case is just under the rest is admitted, and warned: with its own hold
    // the month is past 80%.
    let max = u32::try_from((budget - spent - 20) * 1_000_000 / 600_000).unwrap();
    let r = g.post("acme", "/v1/chat/completions", ask(max)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-tenantctl-budget-warning").is_some());
    let left: i64 = r.headers()["x-tenantctl-budget-remaining-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0..=20).contains(&left), "{left}");
    // The tenant sees the same on `/v1/usage`: this month's spend, no hold left, the warning.
    let usage: Value =
        g.s.http
            .get(format!("{}/v1/usage", g.s.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let b = &usage["budget"];
    assert_eq!(b["monthly_budget_micro_usd"], budget, "{usage}");
    assert_eq!(b["held_micro_usd"], 0);
    let spent = b["spent_this_month_micro_usd"].as_i64().unwrap();
    assert_eq!(spent, budget_state(&g, "acme").await.1);
    assert_eq!(b["remaining_micro_usd"], budget - spent);
    assert_eq!(b["warning"], spent * 5 >= budget * 4);
    assert_eq!(usage["rate_limits"]["requests_per_minute"], 600);
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenants_rate_limit_is_one_limit_across_runtime_processes_and_leaves_others_alone() {
    // Issue 11 item 5: requests per minute are the tenant's, not each process's: two runtimes on
    // one deployment admit three calls between them, then 429 with Retry-After, and globex (its own
    // limit) is not slowed.
    let g = gateway_with(Config::default(), |spec| {
        if spec.id.as_str() == "acme" {
            spec.rate_limits.requests_per_minute = 3;
        }
    })
    .await;
    let (second, bases) = second_runtime(&g).await;
    let token = g.s.token("acme");
    let ask = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let mut statuses = Vec::new();
    let mut refused = None;
    for i in 0..6 {
        let (status, retry, body) = chat_at(&g.s.http, &bases[i % 2], &token, ask.clone()).await;
        statuses.push(status);
        if status == 429 {
            refused = Some((retry, body));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let (retry, body) = refused.unwrap();
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one request refills in 20 s: {retry}"
    );
    assert_eq!(body["error"]["code"], "rate_limit_requests");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests_per_minute")
    );
    // Another tenant is untouched on both processes.
    let other = g.s.token("globex");
    for base in &bases {
        let (status, _, _) = chat_at(&g.s.http, base, &other, ask.clone()).await;
        assert_eq!(status, 200);
    }
    second.stop().await.unwrap();
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_calls_over_two_runtimes_never_commit_more_than_the_budget() {
    // Security case 56: 100 concurrent calls over two runtime processes, each worth about 2% of the
    // budget (its reply is exactly its max_tokens long, so the hold is its real cost): committed
    // spend never passes the budget, every admitted call is charged once, and no hold is left.
    let budget = 30_000; // micro-USD
    let g = std::sync::Arc::new(
        gateway_with(
            Config {
                words: 1000,
                record: false,
                ..Config::default()
            },
            move |spec| spec.monthly_budget = runtime::domain::MicroUsd(budget),
        )
        .await,
    );
    let (second, bases) = second_runtime(&g).await;
    let token = g.s.token("acme");
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let (http, base, token) = (g.s.http.clone(), bases[i % 2].clone(), token.clone());
            tokio::spawn(async move {
                chat_at(&http, &base, &token, json!({"model": "gpt-4o-mini", "max_tokens": 1000, "messages": [{"role": "user", "content": "go"}]}))
                    .await
                    .0
            })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            200 => ok += 1,
            402 | 429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    let spent = holds_given_back(&g, "acme").await;
    assert!(spent <= budget, "committed {spent} of {budget}");
    let rows = g.ledger("acme").await;
    assert_eq!(rows.len(), ok, "one row per admitted call");
    // Each call costs 601 micro-USD: the budget covers 49 of them.
    assert!((20..=49).contains(&ok), "{ok} admitted");
    second.stop().await.unwrap();
}

/// Waits until the tenant has no hold left (a process gives its lease back a second after the
/// tenant's last call there; three seconds is the bound) and returns its committed spend.
async fn holds_given_back(g: &Gateway, tenant: &str) -> i64 {
    let wait = std::time::Duration::from_millis(runtime::metering::limits::LEASE_MILLIS * 3);
    let started = std::time::Instant::now();
    loop {
        let (holds, spent) = budget_state(g, tenant).await;
        if holds == 0 {
            return spent;
        }
        assert!(
            started.elapsed() < wait,
            "{holds} holds still open {wait:?} after the last call"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_busy_tenant_is_admitted_from_leases_and_its_rate_limit_stays_the_tenants() {
    // Issue 10's benchmark, issue 11 item 5: a process busy with a tenant admits its calls from a
    // lease (no statement per call), and the tenant's limit is still one limit: with 2,400 requests
    // a minute, 3,000 calls as fast as 32 clients can send them over two processes admit the
    // bucket's 2,400 plus what it refilled meanwhile (40 a second), never more; every admitted call
    // has its row; the leases are given back after.
    let g = gateway_with(
        Config {
            record: false,
            ..Config::default()
        },
        |spec| spec.rate_limits.requests_per_minute = 2400,
    )
    .await;
    let (second, bases) = second_runtime(&g).await;
    let started = std::time::Instant::now();
    let ask = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let (ok, _) = burst(&g, &bases, 3000, ask).await;
    // The bucket's 2,400 plus 40 a second for as long as the burst ran, exactly.
    let refill = (started.elapsed().as_millis() as u64 * 40).div_ceil(1000);
    assert!(
        ok <= 2400 + refill,
        "{ok} admitted, at most {}",
        2400 + refill
    );
    assert!(
        ok >= 2380,
        "{ok} admitted: the slices of the bucket were used"
    );
    let (leased, statements) = gate_counts(&g, &second);
    assert!(leased * 2 > ok, "{leased} of {ok} admitted from leases");
    assert!(
        statements < 1500,
        "{statements} admission statements for 3,000 calls"
    );
    assert_eq!(g.ledger("acme").await.len() as u64, ok);
    holds_given_back(&g, "acme").await;
    second.stop().await.unwrap();
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_busy_tenants_leases_never_commit_more_than_its_budget() {
    // Issue 11 item 4 with leases: 2,000 calls over two processes, each costing what it held (its
    // reply is its max_tokens long), against a budget of about 1,200 of them. Committed spend never
    // passes the budget; most of it is used before the 402s; one row per admitted call; the leases
    // are given back, so the tenant's available budget is exactly the budget minus settled spend.
    let budget = 12_000; // micro-USD
    let g = gateway_with(
        Config {
            words: 16,
            record: false,
            ..Config::default()
        },
        move |spec| {
            spec.monthly_budget = runtime::domain::MicroUsd(budget);
            spec.rate_limits.requests_per_minute = 600_000;
        },
    )
    .await;
    let (second, bases) = second_runtime(&g).await;
    let ask = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "go"}]});
    let (ok, refused) = burst(&g, &bases, 2000, ask).await;
    assert!(refused > 0, "the budget ran out");
    let spent = holds_given_back(&g, "acme").await;
    assert!(spent <= budget, "committed {spent} of {budget}");
    assert!(spent * 4 >= budget * 3, "only {spent} of {budget} used");
    assert_eq!(g.ledger("acme").await.len() as u64, ok);
    let (leased, _) = gate_counts(&g, &second);
    assert!(leased * 2 > ok, "{leased} of {ok} admitted from leases");
    let usage: Value = g.get_json("acme", "/v1/usage").await;
    assert_eq!(usage["budget"]["held_micro_usd"], 0, "{usage}");
    assert_eq!(usage["budget"]["remaining_micro_usd"], budget - spent);
    second.stop().await.unwrap();
    g.s.running.stop().await.unwrap();
}

/// A token of acme for another subject (`sub`) than the tests' usual `user-of-acme`.
fn subject_token(g: &Gateway, subject: &str) -> String {
    let mut claims = g.s.claims("acme");
    claims["sub"] = json!(subject);
    g.s.signer.sign(&claims)
}

/// Acme's committed spend this month per subject, from its subjects' months, read as the admin.
async fn subject_spent(g: &Gateway, subject: &str) -> i64 {
    let admin = g.s.target.admin().await.unwrap();
    admin
        .query_one(
            "SELECT coalesce(sum(cost_micro_usd), 0)::bigint FROM t_acme.usage_subject_monthly \
              WHERE subject = $1 AND month = date_trunc('month', now() AT TIME ZONE 'UTC')::date",
            &[&subject],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_subjects_budget_refuses_its_calls_and_leaves_the_tenants_other_subjects_served() {
    // Issue 11 item 4, per subject: with `budget.per_subject_monthly_usd` each subject's worst case
    // is held against its own month as well as the tenant's. A call that does not fit in what is
    // left of its subject's budget is 402 naming the subject's budget, with no upstream call and no
    // row, while another subject of the same tenant is served; each sees its own budget.
    let per_subject = 2_000; // micro-USD
    let g = gateway_with(Config::default(), move |spec| {
        if spec.id.as_str() == "acme" {
            spec.monthly_budget = runtime::domain::MicroUsd(1_000_000);
            spec.subject_monthly_budget = Some(runtime::domain::MicroUsd(per_subject));
        }
    })
    .await;
    let (alice, bob) = (subject_token(&g, "alice"), subject_token(&g, "bob"));
    let ask = |max: u32| json!({"model": "gpt-4o-mini", "max_tokens": max, "messages": [{"role": "user", "content": "hi"}]});
    // 3,000 output tokens: a worst case of 1,800 micro-USD, inside alice's 2,000; settled at the
    // reply's real cost.
    let r =
        g.s.http
            .post(format!("{}/v1/chat/completions", g.s.base))
            .bearer_auth(&alice)
            .json(&ask(3000))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let left: i64 = r.headers()["x-tenantctl-subject-budget-remaining-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 1,800 for the output and a few for the input's upper bound.
    assert!(
        (150..200).contains(&left),
        "{left}: what is left after this call's own hold"
    );
    assert!(
        r.headers()
            .get("x-tenantctl-subject-budget-warning")
            .is_some()
    );
    let spent = subject_spent(&g, "alice").await;
    assert!(
        (1..20).contains(&spent),
        "settled at its real cost: {spent}"
    );

    // 4,000 output tokens: 2,400 micro-USD, more than alice has left, far less than acme has.
    g.mock.clear();
    let rows = g.ledger("acme").await.len();
    let (status, _, body) = chat_at(&g.s.http, &g.s.base, &alice, ask(4000)).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("subject `alice`")
            && message.contains("budget.per_subject_monthly_usd")
            && message.contains("$0.002000"),
        "{message}"
    );
    assert!(g.mock.received().is_empty(), "no upstream call");
    assert_eq!(g.ledger("acme").await.len(), rows, "no ledger row");
    // Bob has his own month: the same call fits his.
    let (status, _, _) = chat_at(&g.s.http, &g.s.base, &bob, ask(3000)).await;
    assert_eq!(status, 200);
    // And a call alice can cover is still hers.
    let (status, _, _) = chat_at(&g.s.http, &g.s.base, &alice, ask(3000)).await;
    assert_eq!(status, 200);

    // Each sees the tenant's budget and its own on `/v1/usage`.
    let usage = |token: String| {
        let (http, base) = (g.s.http.clone(), g.s.base.clone());
        async move {
            http.get(format!("{base}/v1/usage"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let a = usage(alice.clone()).await;
    let b = &a["budget"]["subject"];
    assert_eq!(b["subject"], "alice", "{a}");
    assert_eq!(b["monthly_budget_micro_usd"], per_subject);
    assert_eq!(b["held_micro_usd"], 0);
    assert_eq!(
        b["spent_this_month_micro_usd"],
        subject_spent(&g, "alice").await
    );
    let bob_usage = usage(bob).await;
    assert_eq!(bob_usage["budget"]["subject"]["subject"], "bob");
    assert_eq!(
        bob_usage["budget"]["subject"]["spent_this_month_micro_usd"],
        subject_spent(&g, "bob").await
    );
    assert_eq!(
        a["budget"]["spent_this_month_micro_usd"],
        subject_spent(&g, "alice").await + subject_spent(&g, "bob").await,
        "the tenant's month is its subjects' months"
    );
    // A tenant without a subject budget shows none.
    let globex = g.get_json("globex", "/v1/usage").await;
    assert!(globex["budget"].get("subject").is_none(), "{globex}");
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_busy_subjects_leases_never_commit_more_than_its_budget_and_another_subject_is_served() {
    // Issue 11 item 4 per subject, with leases (case 56's guarantee for one subject): 2,000 calls
    // of one subject over two processes against a subject budget of about 1,200 of them and a far
    // larger tenant budget. The subject's committed spend never passes its budget, most of it is
    // used, the calls are admitted from per-subject leases, and another subject of the tenant is
    // served after; the leases are given back.
    let per_subject = 12_000; // micro-USD
    let g = gateway_with(
        Config {
            words: 16,
            record: false,
            ..Config::default()
        },
        move |spec| {
            spec.monthly_budget = runtime::domain::MicroUsd(10_000_000);
            spec.subject_monthly_budget = Some(runtime::domain::MicroUsd(per_subject));
            spec.rate_limits.requests_per_minute = 600_000;
        },
    )
    .await;
    let (second, bases) = second_runtime(&g).await;
    let ask = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "go"}]});
    // `burst` calls as `user-of-acme`.
    let (ok, refused) = burst(&g, &bases, 2000, ask.clone()).await;
    assert!(refused > 0, "the subject's budget ran out");
    holds_given_back(&g, "acme").await;
    let spent = subject_spent(&g, "user-of-acme").await;
    assert!(spent <= per_subject, "committed {spent} of {per_subject}");
    assert!(
        spent * 4 >= per_subject * 3,
        "only {spent} of {per_subject} used"
    );
    assert_eq!(g.ledger("acme").await.len() as u64, ok);
    let (leased, _) = gate_counts(&g, &second);
    assert!(leased * 2 > ok, "{leased} of {ok} admitted from leases");
    let other = subject_token(&g, "another-user");
    for base in &bases {
        let (status, _, body) = chat_at(&g.s.http, base, &other, ask.clone()).await;
        assert_eq!(status, 200, "{body}");
    }
    second.stop().await.unwrap();
    g.s.running.stop().await.unwrap();
}

/// Sends `n` copies of `ask` as acme, from 32 clients over `bases`, as fast as they are answered:
/// (admitted, refused with 402 or 429).
async fn burst(g: &Gateway, bases: &[String], n: usize, ask: Value) -> (u64, u64) {
    let token = g.s.token("acme");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let (http, base, token, next, ask) = (
                g.s.http.clone(),
                bases[i % bases.len()].clone(),
                token.clone(),
                next.clone(),
                ask.clone(),
            );
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    statuses.push(chat_at(&http, &base, &token, ask.clone()).await.0);
                }
                statuses
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for c in clients {
        for status in c.await.unwrap() {
            match status {
                200 => ok += 1,
                402 | 429 => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    (ok, refused)
}

/// Calls admitted from leases and admission statements, over both runtime processes.
fn gate_counts(g: &Gateway, second: &cli::serve::Running) -> (u64, u64) {
    let gates = [g.s.running.state.ledger.gate(), second.state.ledger.gate()];
    (
        gates.iter().map(|g| g.local_admissions()).sum(),
        gates.iter().map(|g| g.statements()).sum(),
    )
}

#[tokio::test]
async fn tokens_per_minute_count_what_calls_produced_and_refuse_once_used_up() {
    // Issue 11 item 5: a call takes its estimated input at admission; what it produced is charged
    // when its ledger row is written. With 30 tokens a minute, two calls of 12 output tokens fit,
    // the third finds the bucket empty (429 with Retry-After, `rate_limit_tokens`).
    let g = gateway_with(Config::default(), |spec| {
        spec.rate_limits.tokens_per_minute = 30;
    })
    .await;
    let token = g.s.token("acme");
    let ask = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let (status, retry, body) = chat_at(&g.s.http, &g.s.base, &token, ask.clone()).await;
        statuses.push(status);
        last = Some((retry, body));
    }
    assert_eq!(statuses, [200, 200, 429]);
    let (retry, body) = last.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_tokens", "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_reports_its_usage_by_day_model_and_subject_as_json_or_csv_and_only_its_own() {
    // Issue 11 item 6: usage over a range of UTC days, by day, model or subject, totals that are the
    // exact sum of the rows (and of the ledger), this month's budget, CSV for finance; the tenant
    // is the token's, and nothing in the query changes it.
    let g = gateway(Config::default()).await;
    let as_subject = |tenant: &str, sub: &str| {
        let mut claims = g.s.claims(tenant);
        claims["sub"] = json!(sub);
        g.s.signer.sign(&claims)
    };
    let (alice, bob) = (as_subject("acme", "alice"), as_subject("acme", "=bob"));
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        assert_eq!(
            chat_at(&g.s.http, &g.s.base, &alice, chat.clone()).await.0,
            200
        );
    }
    let r =
        g.s.http
            .post(format!("{}/v1/messages", g.s.base))
            .bearer_auth(&bob)
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let globex = g.s.token("globex");
    for _ in 0..2 {
        assert_eq!(
            chat_at(&g.s.http, &g.s.base, &globex, chat.clone()).await.0,
            200
        );
    }
    let get = |token: String, query: &'static str| {
        let http = g.s.http.clone();
        let url = format!("{}/v1/usage/report?{query}", g.s.base);
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let json_of = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let admin = g.s.target.admin().await.unwrap();
    let ledger_cost: i64 = admin
        .query_one(
            "SELECT sum(cost_micro_usd)::bigint FROM t_acme.usage_ledger",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let sum = |v: &Value, field: &str| -> i64 {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_i64().unwrap())
            .sum()
    };

    let by_model = json_of(get(alice.clone(), "group_by=model").await).await;
    assert_eq!(by_model["object"], "usage.report");
    assert_eq!(by_model["tenant"], "acme");
    let models: Vec<(String, String, i64)> = by_model["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["provider"].as_str().unwrap().to_owned(),
                r["model"].as_str().unwrap().to_owned(),
                r["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        models,
        [
            ("anthropic".to_owned(), "claude-haiku-4-5".to_owned(), 1),
            ("openai".to_owned(), "gpt-4o-mini".to_owned(), 3)
        ]
    );
    for field in [
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_micro_usd",
    ] {
        assert_eq!(
            by_model["totals"][field].as_i64().unwrap(),
            sum(&by_model, field),
            "{field}"
        );
    }
    assert_eq!(by_model["totals"]["cost_micro_usd"], ledger_cost);
    assert!(ledger_cost > 0);
    assert_eq!(
        by_model["budget"]["spent_this_month_micro_usd"],
        ledger_cost
    );

    let by_subject = json_of(get(bob.clone(), "group_by=subject").await).await;
    let subjects: Vec<(&str, i64)> = by_subject["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["subject"].as_str().unwrap(),
                r["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(subjects, [("=bob", 1), ("alice", 3)]);
    assert_eq!(by_subject["totals"], by_model["totals"]);

    let by_day = json_of(get(alice.clone(), "").await).await;
    assert_eq!(by_day["group_by"], "day");
    let today = &runtime::secrets::rfc3339(std::time::SystemTime::now())[..10];
    assert_eq!(by_day["to"], today);
    assert_eq!(by_day["from"], format!("{}-01", &today[..7]));
    assert_eq!(by_day["data"].as_array().unwrap().len(), 1);
    assert_eq!(by_day["data"][0]["day"], today);
    assert_eq!(by_day["totals"], by_model["totals"]);

    // A range with no usage: no rows, zero totals.
    let empty = json_of(get(alice.clone(), "from=2025-01&to=2025-02").await).await;
    assert_eq!(
        (empty["from"].as_str(), empty["to"].as_str()),
        (Some("2025-01-01"), Some("2025-02-28"))
    );
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["totals"]["cost_micro_usd"], 0);

    // The other tenant sees its own two calls, whatever it asks.
    let theirs = json_of(get(globex.clone(), "group_by=model").await).await;
    assert_eq!(theirs["tenant"], "globex");
    assert_eq!(theirs["totals"]["requests"], 2);
    let r = get(globex.clone(), "group_by=model&tenant_id=acme").await;
    assert_eq!(r.status(), 400);

    // CSV: a file finance can open; the subject that looks like a formula is defused, and the
    // cost column adds up to the report's total.
    let r = get(alice.clone(), "group_by=subject&format=csv").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains(&format!(
            "usage-acme-{}-01-{today}-by-subject.csv",
            &today[..7]
        )),
        "{disposition}"
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "subject,requests,input_tokens,output_tokens,cost_micro_usd"
    );
    assert!(lines[1].starts_with("'=bob,1,"), "{csv}");
    assert!(lines[2].starts_with("alice,3,"), "{csv}");
    let cost: i64 = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(cost, ledger_cost);

    // Bad input says what is wrong.
    for (query, says) in [
        ("from=2026-02-30", "not a date"),
        ("from=2026-12-02&to=2026-12-01", "is after `to`"),
        ("from=2024-01-01&to=2025-06-30", "ask for it in parts"),
        ("group_by=week", "group_by"),
        ("format=xlsx", "format"),
    ] {
        let r = get(alice.clone(), query).await;
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    g.s.running.stop().await.unwrap();
}

/// Imports `book` into the gateway's deployment and waits for the runtime's registry to carry it
/// (its next refresh); what the import reported.
async fn import_prices(
    g: &Gateway,
    book: &runtime::pricing::PriceBook,
) -> Vec<(String, cli::prices::Change)> {
    let changes = cli::prices::import(&g.s.target, std::path::Path::new("test.yaml"), book)
        .await
        .unwrap();
    let acme = TenantId::parse("acme").unwrap();
    for _ in 0..100 {
        let record = g.s.running.state.directory.get(&acme).unwrap();
        if record.prices.versions.len() == book.versions.len() {
            return changes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the runtime did not see the imported price book within 10 s");
}

#[tokio::test]
async fn calls_are_priced_by_the_version_of_their_day_with_negotiated_prices_and_unpriced_models_refused()
 {
    // Issue 11 item 1: a version imported today takes effect for today's calls; acme's negotiated
    // price replaces the book's for acme only; every row names the version it was charged by; a
    // model the version does not price is refused before the upstream call, never billed at zero.
    let g = gateway(Config::default()).await;
    let today = runtime::pricing::today();
    let mut book = cli::prices::builtin();
    let mut next = book.versions.last().unwrap().clone();
    next.version = "test-today".into();
    next.effective_from = today.clone();
    next.prices.retain(|p| p.model != "claude-haiku-4-5");
    for p in &mut next.prices {
        if p.model == "gpt-4o-mini" && p.provider == ProviderId::Openai {
            p.output_per_mtok = runtime::domain::MicroUsd(1_200_000);
            p.per_request = runtime::domain::MicroUsd(100);
        }
        if p.model == "text-embedding-3-small" && p.provider == ProviderId::Openai {
            // Free this version: the call is recorded, and counted as tokens nobody pays for.
            p.input_per_mtok = runtime::domain::MicroUsd(0);
        }
    }
    let mut negotiated = next
        .prices
        .iter()
        .find(|p| p.model == "gpt-4o-mini" && p.provider == ProviderId::Openai)
        .unwrap()
        .clone();
    negotiated.output_per_mtok = runtime::domain::MicroUsd(300_000);
    negotiated.per_request = runtime::domain::MicroUsd(0);
    next.tenants.insert("acme".into(), vec![negotiated]);
    book.versions.push(next);
    let changes = import_prices(&g, &book).await;
    assert_eq!(
        changes[1],
        ("test-today".to_owned(), cli::prices::Change::New)
    );
    let ask = json!({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    for tenant in ["acme", "globex"] {
        let r = g.post(tenant, "/v1/chat/completions", ask.clone()).await;
        assert_eq!(r.status(), 200);
    }
    let admin = g.s.target.admin().await.unwrap();
    let row = |tenant: &'static str| {
        let admin = &admin;
        async move {
            let r = admin
                .query_one(
                    &format!(
                        "SELECT price_book_version, input_tokens, output_tokens, cost_micro_usd \
                           FROM t_{tenant}.usage_ledger ORDER BY created_at DESC LIMIT 1"
                    ),
                    &[],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, i64>(1) as u128,
                r.get::<_, i64>(2) as u128,
                r.get::<_, i64>(3),
            )
        }
    };
    let (version, input, output, cost) = row("acme").await;
    assert_eq!(version, "test-today+negotiated");
    assert_eq!(
        cost as u128,
        (input * 150_000 + output * 300_000).div_ceil(1_000_000),
        "acme pays its negotiated rate"
    );
    let (version, input, output, cost) = row("globex").await;
    assert_eq!(version, "test-today");
    assert_eq!(
        cost as u128,
        (input * 150_000 + output * 1_200_000).div_ceil(1_000_000) + 100,
        "the book's new rate and its per-call fee"
    );
    // A free model's call is recorded at zero, and the operator's metric counts it.
    assert_eq!(g.s.running.state.ledger.zero_cost_rows(), 0);
    let r = g
        .post(
            "acme",
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["free text"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(row("acme").await.3, 0);
    assert_eq!(g.s.running.state.ledger.zero_cost_rows(), 1);
    // claude-haiku-4-5 has no price today: refused before the upstream call, no row, and not
    // listed among the tenant's models.
    g.mock.clear();
    let rows = g.ledger("acme").await.len();
    let r = g
        .post("acme", "/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("claude-haiku-4-5")
            && message.contains("`test-today`")
            && message.contains("tenantctl prices import"),
        "{message}"
    );
    assert!(g.mock.received().is_empty(), "no upstream call");
    assert_eq!(g.ledger("acme").await.len(), rows, "no ledger row");
    let models: Value = g.get_json("acme", "/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"gpt-4o-mini") && !ids.contains(&"claude-haiku-4-5"),
        "{ids:?}"
    );
    // An imported version never changes, whoever asks.
    let e = admin
        .execute(
            "UPDATE control.price_versions SET body = '{}' WHERE version = 'test-today'",
            &[],
        )
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("never changes"), "{e:?}");
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_is_refused_not_charged_twice() {
    // Issue 11 item 2 / case 56 ("retries never double-charge"): a keyed call claims its key before
    // the upstream call; the same key again is 409 naming the first request, with no upstream call
    // and no ledger row; keys are per tenant; a call that failed gives its key back, so its retry
    // is served; streams and the Anthropic surface behave the same.
    let g = gateway(Config::default()).await;
    let token = g.s.token("acme");
    let ask = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let send = |token: &str, key: &str, path: &str, body: Value| {
        g.s.http
            .post(format!("{}{path}", g.s.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send(&token, "order-1", "/v1/chat/completions", ask.clone())
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let first_id = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    g.mock.clear();
    let rows = g.ledger("acme").await.len();
    let again = send(&token, "order-1", "/v1/chat/completions", ask.clone())
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&first_id),
        "{body}"
    );
    assert!(g.mock.received().is_empty(), "no upstream call");
    assert_eq!(g.ledger("acme").await.len(), rows, "no second row");
    // A retry that also resends the first call's request id (an SDK resending the same headers;
    // a well-formed `X-Request-Id` is honoured) is still refused: the claim says whether this call
    // made it, not whose id holds the key.
    let same_id =
        g.s.http
            .post(format!("{}/v1/chat/completions", g.s.base))
            .bearer_auth(&token)
            .header("idempotency-key", "order-1")
            .header("x-request-id", &first_id)
            .json(&ask)
            .send()
            .await
            .unwrap();
    assert_eq!(same_id.status(), 409);
    assert!(g.mock.received().is_empty(), "no upstream call");
    assert_eq!(g.ledger("acme").await.len(), rows, "no second row");
    // The same key is another tenant's own.
    let other = send(
        &g.s.token("globex"),
        "order-1",
        "/v1/chat/completions",
        ask.clone(),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 200);
    // A failed call gives its key back: the retry is served (and charged once).
    g.mock
        .fail_next([Fault::ServerError, Fault::ServerError, Fault::ServerError]);
    let failed = send(&token, "order-2", "/v1/chat/completions", ask.clone())
        .await
        .unwrap();
    assert!(failed.status().is_server_error(), "{}", failed.status());
    let retried = send(&token, "order-2", "/v1/chat/completions", ask.clone())
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    // Streams and the Anthropic surface.
    let streamed = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = send(&token, "order-3", "/v1/chat/completions", streamed.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let r = send(&token, "order-3", "/v1/chat/completions", streamed)
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let msg = json!({"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        send(&token, "order-4", "/v1/messages", msg.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    let r = send(&token, "order-4", "/v1/messages", msg).await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // One row per served call: order-1 once, order-2 once (after its failure), order-3, order-4.
    let ledger_ids: Vec<String> =
        g.s.target
            .admin()
            .await
            .unwrap()
            .query("SELECT request_id::text FROM t_acme.usage_ledger", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(ledger_ids.len(), 4, "{ledger_ids:?}");
    assert!(ledger_ids.contains(&first_id));
    // A key that is not one is 400, before anything.
    let r = send(&token, &"k".repeat(256), "/v1/chat/completions", ask)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_their_own_price_classes_and_never_counted_twice() {
    // Issue 11 item 7: the provider's cached input and reasoning tokens (OpenAI's
    // `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`, parts of
    // its totals) are recorded in their own columns and charged at their class's price, each token
    // once, plain and streamed; a part beyond its whole is cut to it, never credited.
    let g = gateway(Config::default()).await;
    let mut book = cli::prices::builtin();
    let mut next = book.versions.last().unwrap().clone();
    next.version = "classes".into();
    next.effective_from = runtime::pricing::today();
    for p in &mut next.prices {
        if p.model == "gpt-4o-mini" && p.provider == ProviderId::Openai {
            p.cached_input_per_mtok = Some(runtime::domain::MicroUsd(75_000));
            p.reasoning_per_mtok = Some(runtime::domain::MicroUsd(2_400_000));
        }
    }
    book.versions.push(next);
    import_prices(&g, &book).await;
    let admin = g.s.target.admin().await.unwrap();
    let last = || async {
        let r = admin
            .query_one(
                "SELECT input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, \
                        reasoning_tokens, cost_micro_usd, usage_estimated, price_book_version \
                   FROM t_acme.usage_ledger ORDER BY created_at DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (
            [
                r.get::<_, i64>(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
            ],
            r.get::<_, bool>(6),
            r.get::<_, String>(7),
        )
    };
    g.mock.set_config(|c| {
        c.usage_override = Some(json!({
            "prompt_tokens": 1000, "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 600},
            "completion_tokens_details": {"reasoning_tokens": 200}
        }))
    });
    // 400 plain input at 0.15 + 600 cached at 0.075 + 300 output at 0.60 + 200 reasoning at 2.40
    // USD per million: 60 + 45 + 180 + 480 = 765 micro-USD (a plain call of the same totals: 450).
    for (i, stream) in [false, true].into_iter().enumerate() {
        let r = g
            .post("acme", "/v1/chat/completions", json!({"model": "gpt-4o-mini", "stream": stream, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "cache me"}]}))
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
        g.wait_for_ledger("acme", i + 1).await;
        assert_eq!(
            last().await,
            ([1000, 600, 0, 500, 200, 765], false, "classes".to_owned()),
            "stream: {stream}"
        );
    }
    // Parts beyond their whole are cut to it.
    g.mock.set_config(|c| {
        c.usage_override = Some(json!({
            "prompt_tokens": 10, "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 999},
            "completion_tokens_details": {"reasoning_tokens": 999}
        }))
    });
    let r = g
        .post(
            "acme",
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    g.wait_for_ledger("acme", 3).await;
    let (counts, _, _) = last().await;
    assert_eq!(&counts[..5], [10, 10, 0, 10, 10], "{counts:?}");
    // 10 cached at 0.075 + 10 reasoning at 2.40: 24.75 -> 25 micro-USD.
    assert_eq!(counts[5], 25);
    g.s.running.stop().await.unwrap();
}

#[tokio::test]
async fn each_row_keeps_what_the_provider_said_and_a_provider_cost_unlike_ours_is_flagged() {
    // Issue 11 items 2 and 7: a row names the provider's id for the call and keeps its usage object
    // as sent and, where the provider reports one (OpenAI-compatible `usage.cost`), its own cost
    // next to ours; a row where the two differ is flagged (the row, `/v1/usage`, the metric). Each
    // row carries the tenant's cost-allocation tags. Plain and streamed, OpenAI and Anthropic.
    let g = gateway(Config::default()).await;
    let admin = g.s.target.admin().await.unwrap();
    let last = || async {
        let r = admin
            .query_one(
                "SELECT provider_request_id, provider_usage, provider_cost_micro_usd, cost_micro_usd, \
                        cost_tags \
                   FROM t_acme.usage_ledger ORDER BY created_at DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (
            r.get::<_, Option<String>>(0),
            r.get::<_, Option<Value>>(1),
            r.get::<_, Option<i64>>(2),
            r.get::<_, i64>(3),
            r.get::<_, Value>(4),
        )
    };
    // 1000 input at 0.15 and 500 output at 0.60 USD per million: 450 micro-USD by our book.
    let usage = |cost: &str| {
        let mut u = json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500});
        u["cost"] = serde_json::from_str(cost).unwrap();
        u
    };
    let ask = |stream: bool| json!({"model": "gpt-4o-mini", "stream": stream, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "what did it cost"}]});
    let mut ids = std::collections::BTreeSet::new();
    for (i, (stream, cost, theirs)) in [
        (false, "0.00045", 450),
        (true, "0.00045", 450),
        (false, "9e-4", 900),
        (true, "0.0004501", 451),
    ]
    .into_iter()
    .enumerate()
    {
        g.mock.set_config(|c| c.usage_override = Some(usage(cost)));
        let r = g.post("acme", "/v1/chat/completions", ask(stream)).await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
        g.wait_for_ledger("acme", i + 1).await;
        let (id, raw, provider_cost, ours, tags) = last().await;
        let id = id.unwrap_or_else(|| panic!("call {i}: no provider request id"));
        assert!(id.starts_with("chatcmpl-mock-"), "{id}");
        assert!(ids.insert(id), "each call its own id");
        let raw = raw.unwrap();
        assert_eq!(raw["prompt_tokens"], 1000, "{raw}");
        assert_eq!(raw["cost"], usage(cost)["cost"], "{raw}");
        assert_eq!((provider_cost, ours), (Some(theirs), 450), "call {i}");
        assert_eq!(tags["tenant"], "acme", "{tags}");
        assert_eq!(tags["tier"], "schema", "{tags}");
        assert!(
            tags["cost-center"].as_str().is_some_and(|c| !c.is_empty()),
            "{tags}"
        );
    }
    // The tenant sees the flag on its own rows; the operator counts them.
    let usage_now = g.get_json("acme", "/v1/usage").await;
    let flags: Vec<bool> = usage_now["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cost_differs"].as_bool().unwrap())
        .collect();
    assert_eq!(flags, [true, true, false, false], "{usage_now}");
    let metrics = g.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "tenantctl_ledger_cost_differs_rows_total 2"),
        "{metrics}"
    );
    // Finance's month report lists them, with both costs.
    let month = runtime::pricing::today()[..7].to_owned();
    let report = cli::usage::report(&g.s.target, &month, Some(&TenantId::parse("acme").unwrap()))
        .await
        .unwrap();
    assert_eq!(
        report.cost_differs,
        [cli::usage::CostDiffers {
            tenant: "acme".into(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            rows: 2,
            cost_micro_usd: 900,
            provider_cost_micro_usd: 1351,
        }]
    );
    assert!(
        report
            .text()
            .contains("provider-reported cost differs from ours"),
        "{}",
        report.text()
    );
    // A cost that is no amount (a string, negative) is not the provider's cost.
    for bad in [json!("0.00045"), json!(-0.00045)] {
        g.mock.set_config(|c| {
            let mut u = usage("0");
            u["cost"] = bad.clone();
            c.usage_override = Some(u);
        });
        let r = g.post("acme", "/v1/chat/completions", ask(false)).await;
        assert_eq!(r.status(), 200);
    }
    g.wait_for_ledger("acme", 6).await;
    assert_eq!(last().await.2, None, "a negative cost is not kept");
    // Anthropic: the message id and both usage objects of a stream.
    g.mock.set_config(|c| c.usage_override = None);
    for (i, stream) in [false, true].into_iter().enumerate() {
        let r = g
            .post("acme", "/v1/chat/completions", json!({"model": "claude-haiku-4-5", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
        g.wait_for_ledger("acme", 7 + i).await;
        let (id, raw, provider_cost, _, _) = last().await;
        assert!(id.unwrap().starts_with("msg_mock_"));
        let raw = raw.unwrap();
        let input = if stream {
            &raw["message_start"]["input_tokens"]
        } else {
            &raw["input_tokens"]
        };
        assert!(input.as_u64().is_some(), "{raw}");
        assert_eq!(provider_cost, None, "Anthropic reports no cost");
    }
    g.s.running.stop().await.unwrap();
}
