//! Issue 13 item 4: the local stack's metrics and traces while it serves traffic. `tenantctl serve`
//! runs with the standard OpenTelemetry variables pointing at a receiver in this test (OTLP/HTTP,
//! JSON); the test scrapes `/metrics`, waits for the spans, checks the JSON logs, sees a provider
//! call carry the caller's trace (`traceparent`), and stops the server with SIGTERM while a stream
//! is open.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::binary::serve_child_with;

/// An OpenAI-compatible upstream that answers every chat completion the same way and keeps the
/// `traceparent` each request carried (the runtime's own mock provider makes no HTTP call).
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let sink = sink.clone();
            async move {
                let tp = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)");
                sink.lock().unwrap().push(tp.to_owned());
                axum::Json(serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "hello"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// An OTLP/HTTP receiver: every body POSTed to `/v1/traces`, parsed.
async fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    sink.lock().unwrap().push(v);
                }
                ([("content-type", "application/json")], "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// A received span: trace id, span id, parent span id, name, attributes (key -> value).
type Span = (
    String,
    String,
    String,
    String,
    serde_json::Map<String, serde_json::Value>,
);

/// Every span received.
fn spans(bodies: &[serde_json::Value]) -> Vec<Span> {
    let mut out = Vec::new();
    for body in bodies {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for sp in ss["spans"].as_array().into_iter().flatten() {
                    let mut attrs = serde_json::Map::new();
                    for a in sp["attributes"].as_array().into_iter().flatten() {
                        let v = &a["value"];
                        let value = v
                            .get("stringValue")
                            .or_else(|| v.get("intValue"))
                            .cloned()
                            .unwrap_or(serde_json::Value::Null);
                        attrs.insert(a["key"].as_str().unwrap().to_owned(), value);
                    }
                    let s = |k: &str| sp[k].as_str().unwrap_or_default().to_lowercase();
                    let name = sp["name"].as_str().unwrap_or_default().to_owned();
                    out.push((s("traceId"), s("spanId"), s("parentSpanId"), name, attrs));
                }
            }
        }
    }
    out
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_local_stack_exports_metrics_and_traces_and_drains_on_sigterm() {
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let run = |args: &[&str]| {
        crate::binary::in_namespace(cluster, &ns)
            .args(args)
            .output()
            .unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // acme as in the example, plus OpenAI at an upstream of this test (to see what it is sent).
    let (upstream_url, upstream_saw) = rt.block_on(upstream());
    let dir = tempfile::tempdir().unwrap();
    let acme = dir.path().join("acme.yaml");
    let example =
        std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml")).unwrap();
    let with_openai = example.replace(
        "  default: mock-small\n",
        &format!(
            "    openai:\n      models: [gpt-4o-mini]\n      endpoint:\n        base_url: \"{upstream_url}\"\n  default: mock-small\n"
        ),
    );
    assert_ne!(with_openai, example);
    std::fs::write(&acme, with_openai).unwrap();
    let applied = run(&["apply", acme.to_str().unwrap()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let key = dir.path().join("key.txt");
    std::fs::write(&key, uuid::Uuid::new_v4().to_string()).unwrap();
    let put = run(&[
        "secret",
        "put",
        "acme",
        "providers/openai",
        "--from-file",
        key.to_str().unwrap(),
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let out = run(&[
        "token",
        "--tenant",
        "acme",
        "--scope",
        "chat:write models:read",
    ]);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (otlp, received) = rt.block_on(receiver());
    let (mut guard, urls) = serve_child_with(
        cluster,
        &ns,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("TENANTCTL_LOG", "info"),
            ("TENANTCTL_LOG_FORMAT", "json"),
        ],
    );
    let (base, metrics_url) = urls.split_once(' ').unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let http = reqwest::Client::new();
    let chat = |stream: bool| {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&token)
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .json(&serde_json::json!({"model": "mock-small", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let (metrics, content_type) = rt.block_on(async {
        assert!(chat(false).await.unwrap().status().is_success());
        let streamed = chat(true).await.unwrap().text().await.unwrap();
        assert!(streamed.contains("[DONE]"), "{streamed}");
        let r = http.get(metrics_url).send().await.unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        (r.text().await.unwrap(), ct)
    });
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
    // Request latency by route, method, tier and status class.
    assert_eq!(
        metric(
            &metrics,
            "tenantctl_http_request_duration_seconds_count{route=\"createChatCompletion\",method=\"POST\",tier=\"schema\",status=\"2xx\"} "
        ),
        2.0
    );
    // Upstream latency, time to first token (the streamed call), tokens and cost by tenant and model.
    assert_eq!(
        metric(
            &metrics,
            "tenantctl_upstream_request_duration_seconds_count{provider=\"mock\",operation=\"chat\",outcome=\"ok\"} "
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "tenantctl_upstream_request_duration_seconds_count{provider=\"mock\",operation=\"stream\",outcome=\"ok\"} "
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "tenantctl_time_to_first_token_seconds_count{provider=\"mock\"} "
        ),
        1.0
    );
    assert!(
        metric(
            &metrics,
            "tenantctl_model_tokens_total{tenant=\"acme\",model=\"mock-small\",direction=\"output\"} "
        ) > 0.0
    );
    assert!(
        metric(
            &metrics,
            "tenantctl_model_tokens_total{tenant=\"acme\",model=\"mock-small\",direction=\"input\"} "
        ) > 0.0
    );
    assert!(
        metrics.contains(
            "tenantctl_model_cost_micro_usd_total{tenant=\"acme\",model=\"mock-small\"} "
        ),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "tenantctl_budget_holds_total{outcome=\"admitted\"} "
        ),
        2.0
    );
    assert_eq!(
        metric(&metrics, "tenantctl_ledger_write_duration_seconds_count "),
        2.0
    );
    assert_eq!(metric(&metrics, "tenantctl_ledger_rows_total "), 2.0);
    // The identity edge, the secret cache, the pools, the build.
    assert!(metric(&metrics, "tenantctl_auth_admitted_total ") >= 2.0);
    assert!(
        metrics.contains("tenantctl_auth_denials_total{reason=\"missing_token\"} 0"),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "tenantctl_jwks_last_success_timestamp_seconds{issuer=\"platform\"} "
        ) > 1.7e9
    );
    assert!(
        metrics.contains("tenantctl_secret_cache_requests_total{result=\"miss\"}"),
        "{metrics}"
    );
    assert!(metric(&metrics, "tenantctl_db_pools ") >= 1.0);
    assert!(
        metrics.contains("tenantctl_db_pool_connections{state=\"idle\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "tenantctl_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    // Every name under one prefix, with its type.
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("tenantctl_"), "{line}");
    }

    // The spans: the request's root span continues the caller's trace and carries the tenant; the
    // model call's span is its descendant and follows the GenAI conventions.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (root, model) = loop {
        let all = spans(&received.lock().unwrap());
        let ours: Vec<_> = all.iter().filter(|s| s.0 == trace_id).cloned().collect();
        let root = ours
            .iter()
            .find(|s| s.3 == "createChatCompletion" && s.2 == "00f067aa0ba902b7")
            .cloned();
        let model = ours
            .iter()
            .find(|s| s.3 == "chat mock-small" && s.4.get("gen_ai.usage.output_tokens").is_some())
            .cloned();
        if let (Some(r), Some(m)) = (root.clone(), model.clone()) {
            break (r, m);
        }
        assert!(
            Instant::now() < deadline,
            "no root and model span of trace {trace_id} in {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        root.4.get("tenant.id"),
        Some(&serde_json::json!("acme")),
        "{root:?}"
    );
    assert_eq!(
        root.4.get("tenant.tier"),
        Some(&serde_json::json!("schema")),
        "{root:?}"
    );
    assert_eq!(
        model.4.get("gen_ai.operation.name"),
        Some(&serde_json::json!("chat"))
    );
    assert_eq!(
        model.4.get("gen_ai.provider.name"),
        Some(&serde_json::json!("mock"))
    );
    assert_eq!(
        model.4.get("gen_ai.request.model"),
        Some(&serde_json::json!("mock-small"))
    );
    let all = spans(&received.lock().unwrap());
    let mut parent = model.2.clone();
    let mut hops = 0;
    while parent != root.1 {
        parent = all
            .iter()
            .find(|s| s.1 == parent)
            .map(|s| s.2.clone())
            .unwrap_or_else(|| panic!("the model span's ancestry breaks at {parent}"));
        hops += 1;
        assert!(hops < 10);
    }
    for s in &all {
        for v in s.4.values() {
            assert!(
                !v.to_string().contains("hi\""),
                "no prompt in a span: {s:?}"
            );
        }
    }

    // The call to a provider continues the caller's trace: the same trace id, a span of ours.
    let status = rt.block_on(async {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&token)
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");
    let sent = upstream_saw.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let parts: Vec<&str> = sent[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{sent:?}");
    assert_eq!((parts[0], parts[1]), ("00", trace_id), "{sent:?}");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the runtime's own span, not the caller's"
    );

    // SIGTERM while a stream is open: the stream still ends properly, the server exits 0.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(guard.0.id()).unwrap());
    let (body, code) = rt.block_on(async {
        let response = chat(true).await.unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let body = response.text().await.unwrap();
        let code = tokio::task::spawn_blocking(move || guard.0.wait().unwrap())
            .await
            .unwrap();
        (body, code)
    });
    assert!(body.contains("[DONE]"), "{body}");
    assert!(code.success(), "{code:?}");
}
