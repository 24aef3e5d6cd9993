//! SQL injection on every parameter (security case 45): sqlmap, on loopback, against the query
//! parameter of `/v1/usage`, every field of a chat request's JSON body, and the `Authorization` header
//! itself (the auth error path), on the pool tier (where the tenant reaches SQL as a bind parameter).
//! The request files hold a generated token; they live in a private temporary directory, so the token
//! never appears in a process listing.

use std::os::unix::fs::PermissionsExt;

use cli::platform::Platform;
use runtime::domain::Tier;
use tests::serve_with;

fn request(method: &str, path: &str, host: &str, auth: &str, body: Option<&str>) -> String {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\nAccept: */*\r\n"
    );
    if let Some(b) = body {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        r.push_str("\r\n");
    }
    r
}

#[tokio::test]
async fn sqlmap_finds_no_injectable_parameter_and_no_server_error() {
    let s = serve_with(Platform::builtin(), |spec| spec.tier = Tier::Pool).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let bearer = format!("Bearer {}", s.token("acme"));
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let chat =
        r#"{"model":"mock-small","messages":[{"role":"user","content":"hello"}],"user":"u1"}"#;
    let runs = [
        (
            "usage query parameter",
            request("GET", "/v1/usage?limit=5", &host, &bearer, None),
        ),
        (
            "chat JSON body",
            request("POST", "/v1/chat/completions", &host, &bearer, Some(chat)),
        ),
        // `*` marks the injection point: the whole credential on the authentication path.
        (
            "Authorization header",
            request("GET", "/v1/models", &host, "Bearer *", None),
        ),
    ];
    let statements_before = s.running.state.data.statements();
    for (name, req) in runs {
        let file = work.path().join(format!("{}.req", name.replace(' ', "_")));
        std::fs::write(&file, req).unwrap();
        let mut cmd = tokio::process::Command::new("sqlmap");
        if name == "Authorization header" {
            // Every probe of the credential is refused; 401 is the expected answer, not an error.
            cmd.args(["--ignore-code", "401"]);
        }
        let out = cmd
            .arg("-r")
            .arg(&file)
            .args(["--batch", "--flush-session", "--disable-coloring", "--level", "2", "--risk", "1"])
            .args(["--technique", "BEUST", "--time-sec", "2", "--timeout", "10", "--retries", "0"])
            .arg("--output-dir")
            .arg(work.path().join("out"))
            .output()
            .await
            .expect("sqlmap is needed for the injection test: pip install sqlmap (scripts/test.sh does)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: sqlmap failed\n{text}");
        assert!(
            !text.contains("identified the following injection point"),
            "{name}: injectable!\n{text}"
        );
        assert!(
            text.contains("do not appear to be injectable")
                || text.contains("does not seem to be injectable"),
            "{name}: sqlmap did not report a verdict\n{text}"
        );
        assert!(
            !text.contains("500 (Internal Server Error)"),
            "{name}: the server answered 500\n{text}"
        );
        let tested = match name {
            "usage query parameter" => "GET parameter 'limit'",
            "chat JSON body" => "JSON",
            _ => "HEADER parameter 'Authorization",
        };
        assert!(
            text.contains(tested),
            "{name}: sqlmap did not test {tested}\n{text}"
        );
    }
    // The attack reached the database only through the tenant handle's bind parameters, and the ledger
    // holds only rows of the tenant that was authenticated.
    assert!(
        s.running.state.data.statements() > statements_before,
        "the body attack did reach the handler"
    );
    let admin = s.target.admin().await.unwrap();
    let foreign: i64 = admin
        .query_one(
            "SELECT count(*) FROM pool.usage_ledger WHERE tenant_id <> 'acme'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(foreign, 0);
    s.running.stop().await.unwrap();
}
