//! The API's meta routes and the edges every request shares (issue 12 items 2, 3 and 5): who the
//! token says you are, readiness, the served OpenAPI document, request ids honoured and carried by
//! every error, and one access-log line per request naming its operation.

use serde_json::{Value, json};
use tests::serve_examples;

#[tokio::test]
async fn me_says_who_the_token_names_and_nothing_from_the_request_changes_it() {
    let s = serve_examples().await;
    let r = s
        .http
        .get(format!("{}/v1/me?tenant_id=globex", s.base))
        .bearer_auth(s.token("acme"))
        .header("x-tenant-id", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["tenant"]["id"], "acme", "{me}");
    assert_eq!(me["tenant"]["display_name"], "Acme Health");
    assert_eq!(me["subject"], "user-of-acme");
    assert_eq!(
        me["permissions"],
        json!([
            "chat:write",
            "embeddings:write",
            "me:read",
            "models:read",
            "usage:read"
        ])
    );
    assert!(me["token_expires_at"].as_i64().unwrap() > tests::now());
    // A token without `me:read` is refused by the route table, like any other permission.
    let mut claims = s.claims("acme");
    claims["scope"] = json!("chat:write");
    let r = s
        .http
        .get(format!("{}/v1/me", s.base))
        .bearer_auth(s.signer.sign(&claims))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_scope", "{body}");
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn request_ids_are_honoured_when_well_formed_and_every_error_carries_one() {
    let s = serve_examples().await;
    let mine = uuid::Uuid::new_v4().to_string();
    let r = s
        .http
        .get(format!("{}/v1/me", s.base))
        .bearer_auth(s.token("acme"))
        .header("x-request-id", &mine)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], mine.as_str());
    // Not a UUID (or not in its hyphenated form): a new id, never the client's text.
    for bad in ["not-an-id", "<script>", &mine.replace('-', "")] {
        let r = s
            .http
            .get(format!("{}/healthz", s.base))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let got = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(got, bad);
        assert!(uuid::Uuid::try_parse(&got).is_ok(), "{got}");
    }
    // Every error says its request id: the auth layer's, the router's, a handler's, both shapes.
    let cases = [
        ("GET", "/v1/me", None, false),
        ("GET", "/v1/nope", Some(s.token("acme")), false),
        ("POST", "/v1/chat/completions", Some(s.token("acme")), false),
        ("POST", "/v1/messages", Some(s.token("acme")), true),
    ];
    for (method, path, token, anthropic) in cases {
        let id = uuid::Uuid::new_v4().to_string();
        let mut req = s
            .http
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .header("x-request-id", &id)
            .header("content-type", "application/json")
            .body("{\"model\": 1}");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        assert_eq!(r.headers()["x-request-id"], id.as_str());
        let body: Value = r.json().await.unwrap();
        let said = if anthropic {
            assert_eq!(body["type"], "error", "{body}");
            &body["request_id"]
        } else {
            assert!(body["error"]["code"].is_string(), "{path}: {body}");
            &body["error"]["request_id"]
        };
        assert_eq!(said, &json!(id), "{path}: {body}");
    }
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_checks_the_registry_the_usage_store_and_the_secret_store() {
    let s = serve_examples().await;
    let ready = |s: &tests::Served| {
        let (http, base) = (s.http.clone(), s.base.clone());
        async move {
            let r = http.get(format!("{base}/readyz")).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = ready(&s).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ready": true, "checks": {"registry": "ok", "usage_store": "ok", "secret_store": "ok"}})
    );
    // The secret store's directory gone: not ready, and the body names which check failed.
    let dir = s.target.secrets_dir.clone();
    let moved = dir.with_extension("away");
    std::fs::rename(&dir, &moved).unwrap();
    let (status, body) = ready(&s).await;
    std::fs::rename(&moved, &dir).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["secret_store"], "unavailable", "{body}");
    assert_eq!(body["checks"]["usage_store"], "ok");
    assert_eq!(body["ready"], false);
    assert_eq!(body["error"]["code"], "not_ready", "in the one error shape");
    assert_eq!(
        body["error"]["message"],
        "not ready: secret_store unavailable"
    );
    assert!(body["error"]["request_id"].is_string());
    assert_eq!(ready(&s).await.0, 200, "ready again once the store is back");
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_one_and_lists_every_route() {
    let s = serve_examples().await;
    let r = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "public: no token");
    let served: Value = r.json().await.unwrap();
    let path = cli::testing::repo_root().join("docs/openapi.json");
    let checked_in: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(served, checked_in);
    assert_eq!(served["openapi"], "3.1.0");
    for route in runtime::http::routes::ROUTES {
        if runtime::http::routes::is_console(route.path) {
            // The console's pages are for browsers, not API clients: not in the API's document.
            assert!(served["paths"].get(route.path).is_none(), "{}", route.path);
            continue;
        }
        let op = &served["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert_eq!(op["operationId"], route.operation_id, "{}", route.path);
        match route.permission {
            Some(p) => assert_eq!(op["security"], json!([{"bearer": [p]}]), "{}", route.path),
            None => assert_eq!(op["security"], json!([]), "{}", route.path),
        }
    }
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn every_request_leaves_one_access_line_naming_its_operation_and_never_its_token() {
    // Issue 12 item 5: one structured line per request with the route's operation id (not the raw
    // path), tenant, subject, outcome, status, latency and request id; no token, no body.
    let logs = crate::gateway::captured_logs();
    let s = serve_examples().await;
    let token = s.token("acme");
    let (ok_id, denied_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let r = s
        .http
        .get(format!("{}/v1/models/mock-small", s.base))
        .bearer_auth(&token)
        .header("x-request-id", ok_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .get(format!("{}/v1/me", s.base))
        .bearer_auth("not-a-token")
        .header("x-request-id", denied_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = |id: uuid::Uuid| {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" access: ") && l.contains(&id.to_string()))
            .collect();
        assert_eq!(lines.len(), 1, "one access line for {id}: {lines:?}");
        lines[0].to_owned()
    };
    let ok = line(ok_id);
    for want in [
        "operation=\"getModel\"",
        "tenant=acme",
        "subject=user-of-acme",
        "outcome=\"ok\"",
        "status=200",
        "latency_us=",
    ] {
        assert!(ok.contains(want), "{want} in {ok}");
    }
    assert!(
        !ok.contains("mock-small"),
        "the operation, not the path: {ok}"
    );
    let denied = line(denied_id);
    for want in [
        "operation=\"getMe\"",
        "tenant=-",
        "outcome=\"denied\"",
        "status=401",
    ] {
        assert!(denied.contains(want), "{want} in {denied}");
    }
    assert!(!text.contains(&token), "no token in the logs");
    s.running.stop().await.unwrap();
}
