//! The web console in a real browser (issue 14): headless Chromium, driven by playwright-core
//! (`tests/console/console.mjs`), signs in through the dev identity provider's OpenID Connect login
//! page as each role, reads each page, writes through its forms, and tries what an attacker would;
//! this test checks what the browser saw against the API's own answers. Also: the dev identity
//! provider's refusals, request by request.

use std::process::Stdio;

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tests::Served;

async fn api(s: &Served, token: &str, path: &str) -> Value {
    let r = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

fn tenant_token(s: &Served, tenant: &str, subject: &str, role: &str) -> String {
    let mut claims = s.claims(tenant);
    claims["sub"] = json!(subject);
    let entry = format!("role:{role}");
    let perms = runtime::auth::roles::expand(&entry).unwrap().join(" ");
    claims["scope"] = json!(perms);
    s.signer.sign(&claims)
}

fn operator_token(s: &Served) -> String {
    let perms: Vec<String> = runtime::auth::roles::expand("role:platform_operator")
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect();
    cli::devidp::mint_operator(&s.signer, "op-api", &perms, 600)
}

async fn chat(s: &Served, token: &str, model: &str) {
    let r = s
        .http
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth(token)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).is_file(),
        "Chromium is not installed at `{path}`: the console tests drive it headless (Debian: `apt-get install chromium`; scripts/test-prereqs.sh does), or set CHROMIUM to its path"
    );
    path
}

#[tokio::test]
async fn each_role_signs_in_in_chromium_and_sees_the_apis_figures_and_nothing_of_another_tenant() {
    let dir = cli::testing::repo_root().join("tests/console");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/console` (scripts/test-prereqs.sh does)"
    );
    let browser = chromium();
    let s = tests::serve_examples().await;
    // Usage to show: two members of acme on two models, one call of globex's.
    let alice = tenant_token(&s, "acme", "alice", "tenant_member");
    let carol = tenant_token(&s, "acme", "carol", "tenant_member");
    chat(&s, &alice, "mock-small").await;
    chat(&s, &alice, "mock-large").await;
    chat(&s, &carol, "mock-small").await;
    chat(
        &s,
        &tenant_token(&s, "globex", "gina", "tenant_member"),
        "mock-small",
    )
    .await;
    // A reconciliation of globex's with a line the ledger does not have (a variance).
    let op = operator_token(&s);
    let month = &runtime::domain::utc_today()[..7];
    let r = s
        .http
        .post(format!(
            "{}/v1/platform/tenants/globex/reconciliations?month={month}",
            s.base
        ))
        .bearer_auth(&op)
        .header("content-type", "text/csv")
        .body(format!(
            "start_time,line_item,amount_value\n{month}-01,\"gpt-4o-mini, input\",0.25\n"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let run: Value = r.json().await.unwrap();
    // What `tenantctl status` and `tenantctl cost report` record, as they record it: a finding of
    // acme's, a clean globex, and acme's AWS spend this month.
    let admin_db = s.target.admin().await.unwrap();
    cli::provision::record_checks(
        &admin_db,
        "tenantctl status",
        &[
            (
                "acme".into(),
                vec![json!({"problem": "migrations 9/10", "hint": "run `tenantctl migrate`"})],
            ),
            ("globex".into(), vec![]),
        ],
    )
    .await
    .unwrap();
    cli::provision::record_aws_spend(
        &admin_db,
        month,
        &[("acme".to_owned(), 12_345_678_i64)].into_iter().collect(),
    )
    .await
    .unwrap();
    let credential = runtime::secrets::generate_secret();
    let artifacts = cli::testing::repo_root().join("target/console-artifacts");
    let out = tokio::process::Command::new("node")
        .arg(dir.join("console.mjs"))
        .env("BASE", &s.base)
        .env("IDP", format!("http://{}", s.running.idp_addr))
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &browser)
        .env("GLOBEX_RUN", run["id"].as_str().unwrap())
        .env("CREDENTIAL_VALUE", credential.expose_secret())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node is needed for the console's browser test (Node.js 20 or newer)");
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(artifacts.join("report.json")).unwrap())
            .unwrap();

    // A member: exactly its own usage (alice's two calls, not carol's), and its models.
    let own = api(&s, &alice, "/v1/me/usage").await;
    assert_eq!(
        report["member"]["own_total"],
        own["totals"]["cost_micro_usd"]
    );
    assert_eq!(own["totals"]["requests"], 2, "{own}");
    let models = api(&s, &alice, "/v1/models").await;
    let ids: Vec<&Value> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        report["member"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        ids
    );

    // An admin: the figures are the API's.
    let admin = tenant_token(&s, "acme", "admin-api", "tenant_admin");
    let daily = api(&s, &admin, "/v1/usage/daily").await;
    assert_eq!(
        report["admin"]["range_total"],
        daily["totals"]["cost_micro_usd"]
    );
    assert!(daily["totals"]["cost_micro_usd"].as_i64().unwrap() > 0);
    let budget = api(&s, &admin, "/v1/budget").await;
    assert_eq!(
        report["admin"]["budget"],
        budget["monthly_budget_micro_usd"]
    );
    assert_eq!(
        report["admin"]["spent"],
        budget["spent_this_month_micro_usd"]
    );
    let today = runtime::domain::utc_today();
    let day: i64 = today[8..10].parse().unwrap();
    let next = chrono_free_days_in_month(&today);
    assert_eq!(
        report["admin"]["projected"].as_i64().unwrap(),
        runtime::http::console::projected_month_end(
            budget["spent_this_month_micro_usd"].as_i64().unwrap(),
            day,
            next
        )
    );
    let by_model = api(&s, &admin, "/v1/usage/models").await;
    let costs: Vec<String> = by_model["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_micro_usd"].to_string())
        .collect();
    let shown: Vec<String> = report["admin"]["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shown, costs);
    assert_eq!(report["admin"]["by_subject"], json!(["alice", "carol"]));
    assert!(report["admin"]["chart_bars"].as_i64().unwrap() >= 1);
    // Its writes went through the API: bob holds the role in acme, and nothing changed in globex.
    let members = api(&s, &admin, "/v1/members").await;
    assert!(
        members["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["subject"] == "bob" && m["roles"] == json!(["tenant_finance"])),
        "{members}"
    );
    assert!(
        report["admin"]["members"]
            .as_array()
            .unwrap()
            .contains(&json!("bob"))
    );
    let globex_admin = tenant_token(&s, "globex", "g-admin", "tenant_admin");
    let theirs = api(&s, &globex_admin, "/v1/members").await;
    assert_eq!(theirs["data"], json!([]), "{theirs}");
    let creds = api(&s, &admin, "/v1/credentials").await;
    assert_eq!(creds["data"][0]["provider"], "mock", "{creds}");
    assert_eq!(
        api(&s, &globex_admin, "/v1/credentials").await["data"],
        json!([])
    );
    // The audit viewer shows the chain's state and the console's writes, as the API records them.
    assert_eq!(report["admin"]["chain_ok"], "true");
    let events = api(&s, &admin, "/v1/audit/events?limit=50").await;
    let actions: Vec<&Value> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    let shown: Vec<&Value> = report["admin"]["audit_actions"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        shown,
        actions[..shown.len()],
        "the page shows the chain as the API reads it"
    );
    assert_eq!(
        shown,
        [&json!("members.set_roles"), &json!("credentials.set")]
    );
    // The admin's later tries at the platform's pages reached the API as acme's caller, were
    // refused there, and joined acme's own chain (security case 30): no console backdoor.
    for op in [
        "listTenants",
        "getPlatformSpend",
        "listPriceVersions",
        "getReconciliationRun",
    ] {
        assert!(
            events["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == op && e["outcome"] == "denied"),
            "{op} denied in acme's chain: {events}"
        );
    }
    // Nothing of globex's reached acme's admin, whatever the URL said.
    for (url, page) in report["admin"]["cross"].as_object().unwrap() {
        let page = page.as_str().unwrap();
        assert!(
            !page.contains("Globex") && !page.contains("gina"),
            "{url} shows globex's data"
        );
        if url.starts_with("/console/platform") {
            assert!(page.contains("data-status=\"403\""), "{url}: {page}");
        }
    }
    // Finance: the month by model with the cost-center, and the CSV is the API's, byte for byte.
    let m = &today[..7];
    let month = api(&s, &admin, &format!("/v1/usage/models?from={m}&to={m}")).await;
    assert_eq!(
        report["finance"]["month_total"],
        month["totals"]["cost_micro_usd"]
    );
    assert_eq!(report["finance"]["cost_center"], "cc-4100");
    let csv = s
        .http
        .get(format!(
            "{}/v1/usage/models?from={m}&to={m}&format=csv",
            s.base
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let downloaded = std::fs::read(report["finance"]["csv_path"].as_str().unwrap()).unwrap();
    assert_eq!(downloaded, csv.to_vec());
    assert!(
        report["finance"]["csv_name"]
            .as_str()
            .unwrap()
            .starts_with("usage-acme-")
    );

    // Platform staff: every tenant, the spend per tenant (stacked by model), the variances.
    let tenants = report["operator"]["tenants"].as_array().unwrap();
    assert!(tenants.contains(&json!("acme")) && tenants.contains(&json!("globex")));
    let platform = api(&s, &op, "/v1/platform/usage").await;
    assert_eq!(
        report["operator"]["platform_total"],
        platform["totals"]["cost_micro_usd"]
    );
    for t in platform["data"].as_array().unwrap() {
        let id = t["tenant"].as_str().unwrap();
        let shown = report["operator"]["spend"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == id)
            .unwrap_or_else(|| panic!("{id} is not on the spend page"));
        assert_eq!(shown[1], t["totals"]["cost_micro_usd"]);
        let stacked: i64 = report["operator"]["stacked"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[0] == id)
            .map(|r| r[2].as_i64().unwrap())
            .sum();
        assert_eq!(
            json!(stacked),
            t["totals"]["cost_micro_usd"],
            "{id}'s stack"
        );
    }
    assert!(report["operator"]["variance_rows"].as_i64().unwrap() >= 1);
    // Drift as `tenantctl status` last found it, and AWS spend next to LLM spend, as the API has them.
    let checks = api(&s, &op, "/v1/platform/checks").await;
    assert_eq!(
        checks["data"][0]["findings"][0]["problem"], "migrations 9/10",
        "{checks}"
    );
    assert_eq!(report["operator"]["drift"]["acme"], "migrations 9/10");
    assert_eq!(report["operator"]["drift"]["globex"], "none");
    let spend = api(&s, &op, &format!("/v1/platform/spend?month={m}")).await;
    for t in spend["data"].as_array().unwrap() {
        let id = t["tenant"].as_str().unwrap();
        assert_eq!(
            report["operator"]["llm_aws"][id][0], t["totals"]["cost_micro_usd"],
            "{id}"
        );
        assert_eq!(
            report["operator"]["llm_aws"][id][1], t["aws_cost_micro_usd"],
            "{id}"
        );
    }
    assert_eq!(report["operator"]["llm_aws"]["acme"][1], 12_345_678);
    assert_eq!(report["operator"]["llm_aws"]["globex"][1], Value::Null);
    let prices = api(&s, &op, "/v1/platform/prices").await;
    assert_eq!(
        report["operator"]["prices"].as_u64().unwrap() as usize,
        prices["data"].as_array().unwrap().len().max(1)
    );
    assert!(report["operator"]["members_refused"].as_i64().unwrap() >= 1);
    // Platform finance: the same figures, through its own role's permissions.
    assert_eq!(
        report["platform_finance"]["nav"],
        json!(["Tenants", "Spend", "Reconciliation", "Price book"])
    );
    assert_eq!(
        report["platform_finance"]["platform_total"],
        platform["totals"]["cost_micro_usd"]
    );
    assert!(
        report["platform_finance"]["variance_rows"]
            .as_i64()
            .unwrap()
            >= 1
    );
    for shot in [
        "member-my-usage",
        "admin-usage",
        "finance",
        "platform-spend",
    ] {
        assert!(artifacts.join(format!("{shot}.png")).is_file(), "{shot}");
    }
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let docs = cli::testing::repo_root().join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        for e in std::fs::read_dir(&artifacts).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "png") {
                std::fs::copy(&p, docs.join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    s.running.stop().await.unwrap();
}

fn chrono_free_days_in_month(day: &str) -> i64 {
    let y: i64 = day[0..4].parse().unwrap();
    match day[5..7].parse::<i64>().unwrap() {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Pairs as an `application/x-www-form-urlencoded` string.
fn enc<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k.as_ref(), v.as_ref());
    }
    s.finish()
}

/// A client that follows no redirect (the test reads each one).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_dev_identity_provider_refuses_what_an_openid_provider_must() {
    use runtime::http::console::seal;
    let s = tests::serve_examples().await;
    let idp = format!("http://{}", s.running.idp_addr);
    let http = client();
    let meta: Value = http
        .get(format!("{idp}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["issuer"], cli::devidp::DEV_ISSUER);
    let redirect = format!("{}/console/callback", s.base);
    let verifier = seal::random_token(48).unwrap();
    let good = |extra: &[(&str, &str)]| {
        let mut p: Vec<(String, String)> = [
            ("client_id", cli::devidp::CONSOLE_CLIENT_ID),
            ("redirect_uri", redirect.as_str()),
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "st"),
            ("nonce", "n1"),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        p.push(("code_challenge".into(), seal::s256(&verifier)));
        for (k, v) in extra {
            p.retain(|(x, _)| x != k);
            p.push(((*k).to_owned(), (*v).to_owned()));
        }
        p
    };
    // An unregistered redirect URI or client is never redirected to.
    for bad in [
        good(&[("redirect_uri", "http://evil.example/cb")]),
        good(&[("client_id", "someone-else")]),
    ] {
        let r = http
            .get(format!("{idp}/authorize?{}", enc(&bad)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().get("location").is_none());
    }
    // PKCE plain, or none, goes back to the client as an error.
    for bad in [
        good(&[("code_challenge_method", "plain")]),
        good(&[("code_challenge", "short")]),
        good(&[("scope", "profile")]),
    ] {
        let r = http
            .get(format!("{idp}/authorize?{}", enc(&bad)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with(&redirect) && to.contains("error="), "{to}");
    }
    // A code for a tenant this provider does not sign for is refused.
    let login = |tenant: &str, role: &str| {
        let mut f = good(&[]);
        f.push(("tenant".into(), tenant.into()));
        f.push(("subject".into(), "pat".into()));
        f.push(("role".into(), role.into()));
        f
    };
    let r = http
        .post(format!("{idp}/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(enc(&login("nosuch", "tenant_admin")))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=access_denied")
    );
    let code = |r: reqwest::Response| {
        let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        to.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code")
    };
    let exchange = |code: String, verifier: String, redirect: String, client: String| {
        let http = http.clone();
        let idp = idp.clone();
        async move {
            let r = http
                .post(format!("{idp}/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(enc(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("code_verifier", verifier.as_str()),
                    ("redirect_uri", redirect.as_str()),
                    ("client_id", client.as_str()),
                ]))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let issue = || async {
        code(
            http.post(format!("{idp}/authorize"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(enc(&login("acme", "tenant_admin")))
                .send()
                .await
                .unwrap(),
        )
    };
    let client_id = cli::devidp::CONSOLE_CLIENT_ID.to_owned();
    // The wrong verifier, redirect URI or client: refused, and the code is spent.
    for (v, r, c) in [
        (
            seal::random_token(48).unwrap(),
            redirect.clone(),
            client_id.clone(),
        ),
        (
            verifier.clone(),
            format!("{}/elsewhere", s.base),
            client_id.clone(),
        ),
        (
            verifier.clone(),
            redirect.clone(),
            "someone-else".to_owned(),
        ),
    ] {
        let c1 = issue().await;
        let (st, body) = exchange(c1.clone(), v, r, c).await;
        assert_eq!(
            (st, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
        let (st, _) = exchange(c1, verifier.clone(), redirect.clone(), client_id.clone()).await;
        assert_eq!(st, 400, "a code refused once is spent");
    }
    // The right exchange works once, and its tokens are what the console verifies.
    let c1 = issue().await;
    let (st, tokens) = exchange(
        c1.clone(),
        verifier.clone(),
        redirect.clone(),
        client_id.clone(),
    )
    .await;
    assert_eq!(st, 200, "{tokens}");
    let (st, again) = exchange(c1, verifier.clone(), redirect.clone(), client_id.clone()).await;
    assert_eq!((st, again["error"].as_str()), (400, Some("invalid_grant")));
    let auth = &s.running.state.auth;
    let now = runtime::auth::unix_now();
    let sub = auth
        .verify_id_token(
            "platform",
            tokens["id_token"].as_str().unwrap(),
            &client_id,
            "n1",
            now,
        )
        .await
        .unwrap();
    assert_eq!(sub, "pat");
    assert!(
        auth.verify_id_token(
            "platform",
            tokens["id_token"].as_str().unwrap(),
            &client_id,
            "other",
            now
        )
        .await
        .is_err(),
        "another sign-in's nonce"
    );
    assert!(
        auth.verify_id_token(
            "platform",
            tokens["id_token"].as_str().unwrap(),
            "other-client",
            "n1",
            now
        )
        .await
        .is_err(),
        "another client's id token"
    );
    let me = api(&s, tokens["access_token"].as_str().unwrap(), "/v1/me").await;
    assert_eq!(
        (me["tenant"]["id"].as_str(), me["subject"].as_str()),
        (Some("acme"), Some("pat"))
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_session_the_console_signs_in_and_a_forged_cookie_is_no_session() {
    // globex is bound to an issuer with no console client (its keys never fetched: a closed port).
    let mut plain = runtime::auth::IssuerConfig::new(
        "no-console",
        "https://no-console.example",
        runtime::auth::jwks::JwksSource::Url("http://127.0.0.1:9/jwks.json".into()),
        "tenantctl-api",
    );
    plain.allow_loopback_http = true;
    let mut platform = cli::platform::Platform::builtin();
    platform.issuers.push(plain);
    let s = tests::serve_with(platform, |spec| {
        if spec.id.as_str() == "globex" {
            spec.identity.issuer = "no-console".into();
        }
    })
    .await;
    let http = client();
    let r = http
        .get(format!("{}/console/usage", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console?")
    );
    // A JWT put in the cookie by hand is not a session.
    let r = http
        .get(format!("{}/console/usage", s.base))
        .header("cookie", format!("tenantctl_console={}", s.token("acme")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .post(format!("{}/console/members", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(enc(&[("subject", "x"), ("role", "tenant_admin")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "no session, no write");
    // The sign-in for a tenant unknown here and for one that is known read the same.
    let unknown = http
        .get(format!("{}/console/login?tenant=nosuch", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let text = unknown.text().await.unwrap();
    assert!(
        text.contains("not a tenant of this platform, or its identity provider has no console"),
        "{text}"
    );
    // A tenant that exists but whose issuer has no console client reads the same (case 82).
    let no_console = http
        .get(format!("{}/console/login?tenant=globex", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_console.status(), 400);
    assert_eq!(
        no_console.text().await.unwrap(),
        text.replace("`nosuch`", "`globex`"),
        "the same page but for the id typed"
    );
    let known = http
        .get(format!("{}/console/login?tenant=acme", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(known.status(), 303);
    let cookie = known.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Path=/console/callback"),
        "{cookie}"
    );
    // A callback without the sign-in's cookie, or with another state, is refused.
    let r = http
        .get(format!("{}/console/callback?code=x&state=y", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let pair = cookie.split(';').next().unwrap();
    let r = http
        .get(format!(
            "{}/console/callback?code=x&state=not-this-one",
            s.base
        ))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("is not this sign-in"));
    s.running.stop().await.unwrap();
}

/// The console's sign-in as a browser follows it, without one: `login` (the sign-in cookie), the
/// provider's login form, the callback. The session cookie (`name=value`), or the callback's page.
async fn sign_in(s: &Served, login: &str, form: &[(&str, &str)]) -> Result<String, String> {
    let http = client();
    let r = http
        .get(format!("{}/console/login?{login}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let signin = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let mut fields: Vec<(String, String)> = to.query_pairs().into_owned().collect();
    fields.extend(form.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let r = http
        .post(format!("http://{}/authorize", s.running.idp_addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(enc(&fields))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    let r = http
        .get(&back)
        .header("cookie", &signin)
        .send()
        .await
        .unwrap();
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("tenantctl_console=") && !c.starts_with("tenantctl_console=;"))
        .map(|c| c.split(';').next().unwrap().to_owned());
    match session {
        Some(c) if r.status() == 200 => Ok(c),
        _ => Err(r.text().await.unwrap()),
    }
}

#[tokio::test]
async fn a_session_is_the_tokens_and_ends_when_the_api_would_refuse_it() {
    let s = tests::serve_examples().await;
    let http = client();
    let page = |cookie: String| {
        let http = http.clone();
        let url = format!("{}/console/usage", s.base);
        async move {
            let r = http.get(url).header("cookie", cookie).send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap().to_owned()),
            )
        }
    };
    // Asked for acme, signed in as a user of globex: no session.
    let e = sign_in(
        &s,
        "tenant=acme",
        &[
            ("tenant", "globex"),
            ("subject", "g"),
            ("role", "tenant_admin"),
        ],
    )
    .await
    .unwrap_err();
    assert!(e.contains("you signed in as a user of `globex`"), "{e}");
    // Asked for a tenant, signed in as staff: no session.
    let e = sign_in(
        &s,
        "tenant=acme",
        &[
            ("tenant", "acme"),
            ("subject", "o"),
            ("role", "platform_operator"),
        ],
    )
    .await
    .unwrap_err();
    assert!(e.contains("platform staff"), "{e}");
    let cookie = sign_in(
        &s,
        "tenant=acme",
        &[
            ("tenant", "acme"),
            ("subject", "ann"),
            ("role", "tenant_admin"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(page(cookie.clone()).await, (200, None));
    // The tenant is suspended: the session's token is refused by the API's edge, and so is the session.
    let op = operator_token(&s);
    let r = s
        .http
        .post(format!("{}/v1/platform/tenants/acme/suspend", s.base))
        .bearer_auth(&op)
        .json(&json!({"reason": "console test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        page(cookie).await,
        (303, Some("/console?signed_out=rejected".to_owned()))
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_signs_in_with_its_own_openid_provider_in_chromium() {
    // The console as a relying party of an independent, certified OpenID Provider (npm
    // `oidc-provider`): its login and consent pages, the code flow with PKCE, resource indicators
    // for the API's audience, RFC 9068 access tokens; acme bound to it.
    const API: &str = "urn:tenantctl:api";
    let dir = cli::testing::repo_root().join("tests/idp");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed: run `npm ci --prefix tests/idp` (scripts/test-prereqs.sh does)"
    );
    let browser = chromium();
    // The console's address is the provider's registered redirect URI, so it is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut idp = tokio::process::Command::new("node")
        .arg(dir.join("console-provider.mjs"))
        .env("IDP_API_RESOURCE", API)
        .env(
            "IDP_REDIRECT_URI",
            format!("http://{api_addr}/console/callback"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the console's OpenID Provider test (Node.js 20 or newer)");
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(idp.stdout.take().unwrap()).lines();
    let ready: Value = serde_json::from_str(
        &lines
            .next_line()
            .await
            .unwrap()
            .expect("the provider exited"),
    )
    .unwrap();
    let at = |k: &str| ready[k].as_str().unwrap().to_owned();
    let mut issuer = runtime::auth::IssuerConfig::new(
        "oidc",
        &at("issuer"),
        runtime::auth::jwks::JwksSource::Url(at("jwks_uri")),
        API,
    );
    issuer.allow_loopback_http = true;
    issuer.required_typ = Some("at+jwt".into());
    issuer.max_lifetime_secs = 3600;
    issuer.console = Some(runtime::auth::ConsoleClient {
        authorization_endpoint: at("authorization_endpoint"),
        token_endpoint: at("token_endpoint"),
        client_id: "tenantctl-console".into(),
        audience_parameter: Some("resource".into()),
        send_login_hint: false,
        scope: Some("me:read models:read usage:read".into()),
    });
    issuer.check().unwrap();
    let mut platform = cli::platform::Platform::builtin();
    platform.issuers.push(issuer);
    let listen = cli::serve::Listen {
        api: api_addr,
        ..cli::serve::Listen::loopback_any()
    };
    let s = tests::serve_on(
        platform,
        |spec| {
            if spec.id.as_str() == "acme" {
                spec.identity = runtime::registry::IdentityBinding {
                    issuer: "oidc".into(),
                    audience: API.into(),
                    tenant_claim: "tenant_id".into(),
                };
            }
        },
        listen,
    )
    .await;
    let out = tokio::process::Command::new("node")
        .arg(cli::testing::repo_root().join("tests/console/oidc-provider.mjs"))
        .env("BASE", &s.base)
        .env("TENANT", "acme")
        .env("LOGIN", "alice@acme")
        .env("CHROMIUM", &browser)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["provider_origin"], at("issuer"), "{seen}");
    assert_eq!(seen["path"], "/console/me");
    assert!(
        seen["who"].as_str().unwrap().starts_with("alice@acme"),
        "{seen}"
    );
    assert_eq!(seen["own_total"], "0");
    let mut models: Vec<&str> = seen["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    models.sort_unstable();
    assert_eq!(
        models,
        ["fast", "mock-large", "mock-small", "smart"],
        "acme's policy, aliases too"
    );
    assert_eq!(
        seen["range_total"], "0",
        "usage:read came with the token's scopes"
    );
    s.running.stop().await.unwrap();
}
