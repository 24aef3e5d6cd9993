//! The `tenantctl` binary end to end: exit codes, bad input applying nothing, and the README's main
//! command (`tenantctl up`) run as a test.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tenantctl(state_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    cmd.arg("--state-dir")
        .arg(state_dir)
        .arg("--no-progress")
        .arg("--color")
        .arg("never")
        .env_remove("TENANTCTL_DATABASE_URL")
        .env_remove("TENANTCTL_FAILPOINT");
    cmd
}

#[test]
fn validate_reports_every_bad_manifest_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml")).unwrap();
    std::fs::write(dir.path().join("acme.yaml"), &good).unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        good.replace("tier: schema", "tier: shared")
            .replace("id: acme", "id: bad"),
    )
    .unwrap();
    let out = tenantctl(dir.path())
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml`:6:7: field `tier`: unknown variant `shared`"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(stderr.contains("nothing was applied"), "{stderr}");

    let ok = tenantctl(dir.path())
        .arg("validate")
        .arg(cli::testing::repo_root().join("tenants"))
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "ok: `acme` (schema tier)\nok: `globex` (schema tier)\n"
    );
}

#[test]
fn apply_with_one_bad_manifest_applies_nothing() {
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let dir = tempfile::tempdir().unwrap();
    let good =
        std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml")).unwrap();
    std::fs::write(dir.path().join("acme.yaml"), &good).unwrap();
    std::fs::write(
        dir.path().join("zeta.yaml"),
        good.replace("id: acme", "id: zeta")
            .replace("usage_days: 400", "usage_days: lots"),
    )
    .unwrap();
    let out = tenantctl(cluster.state.root())
        .args(["--namespace", target.namespace.as_str(), "apply"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not even the database was created: validation happens before any connection.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let exists = rt.block_on(async {
        let admin = target.connect_admin("postgres").await.unwrap();
        admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&target.endpoint.dbname],
            )
            .await
            .unwrap()
            .is_some()
    });
    assert!(!exists);
}

#[test]
fn commands_that_need_the_cluster_say_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = tenantctl(dir.path()).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not running") && stderr.contains("hint: run `tenantctl local start`"),
        "{stderr}"
    );
}

/// `tenantctl` on the shared test cluster, in deployment namespace `ns`.
pub(crate) fn in_namespace(cluster: &cli::testing::TestCluster, ns: &str) -> Command {
    let mut cmd = tenantctl(cluster.state.root());
    cmd.args(["--namespace", ns]);
    cmd
}

/// A command's stdout then stderr, for assertions and their messages.
fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Kills the child if the test fails half-way.
pub(crate) struct Guard(pub(crate) std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_starts_everything_prints_working_curl_commands_and_stops_cleanly_on_ctrl_c() {
    // The README's main command, run as a test: fresh state dir, both example tenants.
    let state = tempfile::Builder::new()
        .prefix("tc-up")
        .tempdir_in("/tmp")
        .unwrap();
    let child = tenantctl(state.path())
        .arg("up")
        .arg("--tenants")
        .arg(cli::testing::repo_root().join("tenants"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--idp-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut curls = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "`tenantctl up` did not get ready in time"
        );
        let Some(Ok(line)) = lines.next() else {
            panic!("`tenantctl up` exited early")
        };
        if line.starts_with("curl ") {
            curls.push(line);
        } else if line.starts_with("ready") {
            break;
        }
    }
    assert_eq!(curls.len(), 6, "three commands per tenant");
    // Paste the commands into a shell, as a user would.
    let mut bodies = Vec::new();
    for cmd in &curls {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} --fail-with-body"))
            .output()
            .expect("`sh` and `curl` are needed (apt-get install curl)");
        assert!(
            out.status.success(),
            "{cmd}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        bodies.push(String::from_utf8_lossy(&out.stdout).to_string());
    }
    assert!(
        bodies[0].contains("\"mock-large\""),
        "acme sees its models: {}",
        bodies[0]
    );
    assert!(bodies[1].contains("\"chat.completion\""), "{}", bodies[1]);
    assert!(
        bodies[2].contains("\"tenant\":\"acme\"") && bodies[2].contains("\"requests\":1"),
        "{}",
        bodies[2]
    );
    assert!(
        !bodies[3].contains("mock-large"),
        "globex's policy has no mock-large: {}",
        bodies[3]
    );
    assert!(
        bodies[5].contains("\"tenant\":\"globex\"") && bodies[5].contains("\"requests\":1"),
        "{}",
        bodies[5]
    );

    // Ctrl-C: the server stops, then the cluster `up` started.
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "`tenantctl up` did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(
        !state.path().join("pg/data/postmaster.pid").exists(),
        "the cluster must be stopped"
    );
}

#[test]
fn status_checks_a_real_login_per_tenant_and_exits_2_on_drift() {
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let tenants = cli::testing::repo_root().join("tenants");
    let out = run(&["apply", tenants.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&["--output", "json", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let logins: Vec<_> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().to_owned(),
                t["db_login"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        logins,
        vec![("acme".into(), "ok".into()), ("globex".into(), "ok".into())]
    );

    // Drift: someone changed the tenant role's password behind tenantctl's back.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = target.admin().await.unwrap();
        let role = target
            .namespace
            .tenant_role(&runtime::domain::TenantId::parse("globex").unwrap());
        admin
            .batch_execute(&format!("ALTER ROLE \"{role}\" PASSWORD NULL"))
            .await
            .unwrap();
    });
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(2), "drift exits 2");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("globex") && l.contains("FAILED")),
        "{text}"
    );
}

#[test]
fn every_privileged_step_joins_its_tenants_hash_chain_and_an_edit_is_found_where_it_is() {
    // docs/security.md cases 60-62 (issue 12 item 4): apply, suspend and resume each append an event
    // in the action's own transaction (an event that cannot be written rolls the action back); the
    // runtime's role can change no event; an edit made as the owner breaks the chain and `audit
    // verify` names the event; an export checks out with jq and sha256sum alone.
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let tenants = cli::testing::repo_root().join("tenants");
    let out = run(&["apply", tenants.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for args in [
        ["suspend", "acme", "--reason", "unpaid invoice"],
        ["resume", "acme", "--reason", "paid"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("acme: 3 event(s), head "), "{stdout}");
    assert!(stdout.contains("globex: 1 event(s), head "), "{stdout}");

    // The export: every event has actor, tenant, action, target, outcome and request id (case 62).
    let out = run(&["audit", "export", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out));
    let export = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["apply", "suspend", "resume"]);
    for e in &events {
        for field in [
            "actor",
            "tenant_id",
            "action",
            "target",
            "outcome",
            "request_id",
            "at",
        ] {
            assert!(e[field].is_string(), "{field} in {e}");
        }
        assert_eq!(e["tenant_id"], "acme");
        assert_eq!(e["target"], "tenant/acme");
        assert!(
            e["actor"].as_str().unwrap().starts_with("tenantctl:"),
            "{e}"
        );
    }
    assert_eq!(events[1]["detail"], "unpaid invoice");
    // Checked offline, with the documented procedure; a changed line is found.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.jsonl");
    std::fs::write(&file, &export).unwrap();
    let script = cli::testing::repo_root().join("scripts/verify-audit-export.sh");
    let check = |file: &std::path::Path| {
        Command::new("bash")
            .arg(&script)
            .arg(file)
            .output()
            .unwrap()
    };
    let out = check(&file);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 3 event(s), head "));
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, export.replace("unpaid invoice", "goodwill")).unwrap();
    let out = check(&tampered);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("broken at event 2"), "{}", text(&out));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = target.admin().await.unwrap();
        // The runtime's role can add events (the platform routes') and never change or remove
        // one (case 61).
        let runtime_role = target.namespace.runtime_role();
        for sql in [
            "UPDATE control.audit_events SET detail = 'x'",
            "DELETE FROM control.audit_events",
            "TRUNCATE control.audit_events",
        ] {
            let err = admin
                .batch_execute(&format!("BEGIN; SET LOCAL ROLE \"{runtime_role}\"; {sql}"))
                .await
                .expect_err(sql);
            admin.batch_execute("ROLLBACK").await.unwrap();
            assert_eq!(
                err.code().map(|c| c.code()),
                Some("42501"),
                "{sql}: {err}"
            );
        }
        // An action whose event cannot be written is rolled back (case 60).
        admin
            .batch_execute(
                "ALTER TABLE control.audit_events ADD CONSTRAINT refuse_for_test CHECK (false) NOT VALID",
            )
            .await
            .unwrap();
    });
    let out = run(&["suspend", "acme", "--reason", "no audit"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit"), "{}", text(&out));
    // A secret's change too: not made when its event cannot be written.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "sk-never-stored").unwrap();
    let out = run(&[
        "secret",
        "put",
        "acme",
        "providers/openai",
        "--from-file",
        key_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = run(&["--output", "json", "secret", "list", "acme"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("providers/openai"),
        "{}",
        text(&out)
    );
    rt.block_on(async {
        let admin = target.admin().await.unwrap();
        let status: String = admin
            .query_one(
                "SELECT status FROM control.tenants WHERE tenant_id = 'acme'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            status, "active",
            "the suspension rolled back with its event"
        );
        admin
            .batch_execute(
                "ALTER TABLE control.audit_events DROP CONSTRAINT refuse_for_test; \
                 UPDATE control.audit_events SET detail = 'goodwill' \
                  WHERE tenant_id = 'acme' AND seq = 2",
            )
            .await
            .unwrap();
    });
    // An owner's edit (case 61): `verify` names the event and exits 2; globex's chain still holds.
    let out = run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the audit chain of `acme` is broken at event 2: its fields do not give its hash"
        ),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("globex: 1 event(s)"));
}

#[test]
fn token_mints_a_token_the_runtime_accepts_and_refuses_unknown_tenants_with_a_hint() {
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let out = run(&[
        "apply",
        cli::testing::repo_root().join("tenants").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&["token", "--tenant", "initech"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tenant `initech` is not onboarded")
            && stderr.contains("hint: run `tenantctl onboard"),
        "{stderr}"
    );
    let out = run(&["token", "--tenant", "acme", "--scope", "admin:all"]);
    assert_eq!(out.status.code(), Some(1));

    let out = run(&[
        "token",
        "--tenant",
        "globex",
        "--sub",
        "alice",
        "--scope",
        "models:read",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // A platform operator's token; platform scopes never go in a tenant's.
    let out = run(&["token", "--operator", "--sub", "ops"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let operator = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = run(&[
        "token",
        "--tenant",
        "acme",
        "--scope",
        "platform:tenants:read",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--operator`"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let running = cli::serve::start(
            &target,
            &cli::platform::Platform::builtin(),
            cli::serve::Listen::loopback_any(),
        )
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let url = |p: &str| format!("http://{}{p}", running.api_addr);
        let r = http
            .get(url("/v1/models"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The token carries only the scope asked for.
        let r = http
            .get(url("/v1/usage"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = http
            .get(url("/v1/platform/tenants"))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        running.stop().await.unwrap();
    });
}

#[test]
fn an_existing_server_given_by_url_works_with_a_non_superuser_admin() {
    // `TENANTCTL_DATABASE_URL` with an admin that has only CREATEROLE and CREATEDB (as on managed
    // Postgres). The password travels in the environment, never in arguments.
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let admin_role = format!("{}_extadmin", target.namespace);
    let password = runtime::secrets::generate_secret();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = target.connect_admin("postgres").await.unwrap();
        admin
            .batch_execute(&format!(
                // As a managed server's admin, it may connect to the maintenance database (which
                // another test's apply has closed to PUBLIC on this shared cluster).
                "CREATE ROLE \"{admin_role}\" LOGIN CREATEROLE CREATEDB; \
                 GRANT CONNECT ON DATABASE postgres TO \"{admin_role}\""
            ))
            .await
            .unwrap();
        admin
            .batch_execute(&cli::sql::alter_role_password(&admin_role, &password).unwrap())
            .await
            .unwrap();
    });
    use secrecy::ExposeSecret;
    let socket = cluster
        .state
        .pg_run()
        .display()
        .to_string()
        .replace('/', "%2F");
    let url = format!(
        "postgres://{admin_role}:{}@{socket}:{}/{}",
        password.expose_secret(),
        cli::local::cluster::PORT,
        target.namespace
    );
    let ns = target.namespace.to_string();
    let run = |args: &[&str]| {
        tenantctl(cluster.state.root())
            .args(["--namespace", &ns])
            .args(args)
            .env("TENANTCTL_DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let tenants = cli::testing::repo_root().join("tenants");
    let out = run(&["apply", tenants.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "acme: created\nglobex: created\n"
    );
    let out = run(&["plan", tenants.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(password.expose_secret()));
}

#[test]
fn apply_and_status_work_for_every_tier_from_the_command_line() {
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let dir = tempfile::tempdir().unwrap();
    let acme =
        std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml")).unwrap();
    for (id, tier) in [
        ("pooled-one", "pool"),
        ("pooled-two", "pool"),
        ("walled", "dedicated"),
        ("schemed", "schema"),
    ] {
        let text = acme
            .replace("id: acme", &format!("id: {id}"))
            .replace("tier: schema", &format!("tier: {tier}"));
        std::fs::write(dir.path().join(format!("{id}.yaml")), text).unwrap();
    }
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let path = dir.path().to_str().unwrap();
    let out = run(&["plan", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "plain plan: success, changes or not"
    );
    let out = run(&["plan", "--detailed-exitcode", path]);
    assert_eq!(out.status.code(), Some(2), "changes pending");
    let out = run(&["apply", path]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["plan", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&["--output", "json", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for t in v["tenants"].as_array().unwrap() {
        assert_eq!(t["db_login"], "ok", "{t}");
    }
    assert_eq!(v["tenants"].as_array().unwrap().len(), 4);
}

#[test]
fn migrate_brings_every_tier_up_to_date_in_parallel_and_reports_one_tenants_failure_without_stopping()
 {
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let dir = tempfile::tempdir().unwrap();
    let acme =
        std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml")).unwrap();
    let tenants = [
        ("sa", "schema"),
        ("sb", "schema"),
        ("da", "dedicated"),
        ("pa", "pool"),
        ("pb", "pool"),
    ];
    for (id, tier) in tenants {
        let id = format!("{id}-co");
        let text = acme
            .replace("id: acme", &format!("id: {id}"))
            .replace("tier: schema", &format!("tier: {tier}"));
        std::fs::write(dir.path().join(format!("{id}.yaml")), text).unwrap();
    }
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let out = run(&["apply", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Make every tenant look as if it predates migration 0002 (and so every later one too), and break
    // `sb-co` so 0002 fails there. The ledger goes back to the plain table of migration 0001 (owned
    // by the migrator, keyed by id), without the later indexes.
    let index = "usage_ledger_subject_created_at";
    let unpartition = |s: &str| {
        format!(
            "DO $$ DECLARE o text := (SELECT pg_get_userbyid(relowner) FROM pg_class
                                       WHERE oid = '{s}.usage_ledger'::regclass);
             BEGIN
                 CREATE TABLE {s}.ledger_plain AS SELECT * FROM {s}.usage_ledger;
                 DROP TABLE {s}.usage_ledger CASCADE;
                 ALTER TABLE {s}.ledger_plain RENAME TO usage_ledger;
                 EXECUTE format('ALTER TABLE {s}.usage_ledger OWNER TO %I', o);
                 ALTER TABLE {s}.usage_ledger ADD PRIMARY KEY (id);
                 CREATE INDEX usage_ledger_created_at ON {s}.usage_ledger (created_at);
             END $$;
             DROP FUNCTION {s}.usage_ledger_partitions;"
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = target.admin().await.unwrap();
        admin
            .batch_execute(&format!(
                "{}{}{}
                 DROP TABLE t_sa_co.usage_daily, t_sb_co.usage_daily, pool.usage_daily;
                 DROP TABLE t_sa_co.usage_daily_models, t_sb_co.usage_daily_models,
                            pool.usage_daily_models;
                 DROP TABLE t_sa_co.usage_subject_monthly, t_sb_co.usage_subject_monthly,
                            pool.usage_subject_monthly;
                 DROP FUNCTION t_sa_co.tenant_subject_budget_state, t_sb_co.tenant_subject_budget_state,
                               pool.tenant_subject_budget_state;
                 DROP FUNCTION t_sa_co.usage_daily_add, t_sb_co.usage_daily_add, pool.usage_daily_add CASCADE;
                 DROP TABLE t_sa_co.budget_holds, t_sb_co.budget_holds, pool.budget_holds,
                            t_sa_co.tenant_meters, t_sb_co.tenant_meters, pool.tenant_meters,
                            t_sa_co.token_debits, t_sb_co.token_debits, pool.token_debits,
                            t_sa_co.idempotency_keys, t_sb_co.idempotency_keys, pool.idempotency_keys;
                 DROP FUNCTION t_sa_co.tenant_claim_key, t_sb_co.tenant_claim_key, pool.tenant_claim_key,
                               t_sa_co.tenant_release_key, t_sb_co.tenant_release_key,
                               pool.tenant_release_key;
                 DROP FUNCTION t_sa_co.tenant_admit, t_sb_co.tenant_admit, pool.tenant_admit,
                               t_sa_co.tenant_release, t_sb_co.tenant_release, pool.tenant_release,
                               t_sa_co.ledger_append, t_sb_co.ledger_append, pool.ledger_append,
                               t_sa_co.tenant_budget_state, t_sb_co.tenant_budget_state,
                               pool.tenant_budget_state;
                 ALTER TABLE t_sa_co.usage_ledger DROP COLUMN outcome, DROP COLUMN usage_estimated,
                     DROP COLUMN cached_input_tokens, DROP COLUMN cache_write_tokens,
                     DROP COLUMN reasoning_tokens, DROP COLUMN provider_request_id,
                     DROP COLUMN provider_usage, DROP COLUMN provider_cost_micro_usd,
                     DROP COLUMN cost_tags, DROP COLUMN cost_differs;
                 ALTER TABLE t_sb_co.usage_ledger DROP COLUMN outcome, DROP COLUMN usage_estimated,
                     DROP COLUMN cached_input_tokens, DROP COLUMN cache_write_tokens,
                     DROP COLUMN reasoning_tokens, DROP COLUMN provider_request_id,
                     DROP COLUMN provider_usage, DROP COLUMN provider_cost_micro_usd,
                     DROP COLUMN cost_tags, DROP COLUMN cost_differs;
                 ALTER TABLE pool.usage_ledger DROP COLUMN outcome, DROP COLUMN usage_estimated,
                     DROP COLUMN cached_input_tokens, DROP COLUMN cache_write_tokens,
                     DROP COLUMN reasoning_tokens, DROP COLUMN provider_request_id,
                     DROP COLUMN provider_usage, DROP COLUMN provider_cost_micro_usd,
                     DROP COLUMN cost_tags, DROP COLUMN cost_differs;
                 DROP TABLE t_sa_co.conversation_messages, t_sa_co.conversations, t_sa_co.prompt_template_versions, t_sa_co.prompt_templates, t_sa_co.members, t_sa_co.audit_events;
                 DROP TABLE t_sb_co.conversation_messages, t_sb_co.conversations, t_sb_co.prompt_template_versions, t_sb_co.prompt_templates, t_sb_co.members, t_sb_co.audit_events;
                 DROP TABLE pool.conversation_messages, pool.conversations, pool.prompt_template_versions, pool.prompt_templates, pool.members, pool.audit_events;
                 DELETE FROM control.tenant_migrations WHERE version >= 2;
                 DELETE FROM control.pool_migrations WHERE version >= 2;
                 CREATE TABLE t_sb_co.{index} (x int);",
                unpartition("t_sa_co"),
                unpartition("t_sb_co"),
                unpartition("pool"),
            ))
            .await
            .unwrap();
        // Rows from before: this month and an earlier one, in a schema tenant and for two pool tenants.
        let row = |schema: &str, tenant: &str, age: &str| {
            format!(
                "INSERT INTO {schema}.usage_ledger (id, tenant_id, request_id, subject, provider, model, \
                 input_tokens, output_tokens, cost_micro_usd, price_book_version, created_at) \
                 VALUES (gen_random_uuid(), '{tenant}', gen_random_uuid(), 'u', 'mock', 'mock-small', \
                         1, 1, 5, 'v', now() - interval '{age}');"
            )
        };
        admin
            .batch_execute(
                &[
                    row("t_sa_co", "sa-co", "0 days"),
                    row("t_sa_co", "sa-co", "40 days"),
                    row("pool", "pa-co", "40 days"),
                    row("pool", "pb-co", "0 days"),
                ]
                .concat(),
            )
            .await
            .unwrap();
        let dedicated = target
            .connect_admin(&format!("{ns}_t_da_co"))
            .await
            .unwrap();
        dedicated
            .batch_execute(&format!(
                "{} DROP TABLE t_da_co.usage_daily, t_da_co.usage_daily_models,
                            t_da_co.usage_subject_monthly;
                 DROP FUNCTION t_da_co.tenant_subject_budget_state;
                 DROP FUNCTION t_da_co.usage_daily_add CASCADE;
                 DROP TABLE t_da_co.budget_holds, t_da_co.tenant_meters, t_da_co.token_debits,
                            t_da_co.idempotency_keys;
                 DROP TABLE t_da_co.conversation_messages, t_da_co.conversations, t_da_co.prompt_template_versions, t_da_co.prompt_templates, t_da_co.members, t_da_co.audit_events;
                 DROP FUNCTION t_da_co.tenant_claim_key, t_da_co.tenant_release_key;
                 DROP FUNCTION t_da_co.tenant_admit, t_da_co.tenant_release, t_da_co.ledger_append,
                               t_da_co.tenant_budget_state;
                 ALTER TABLE t_da_co.usage_ledger DROP COLUMN outcome, DROP COLUMN usage_estimated,
                     DROP COLUMN cached_input_tokens, DROP COLUMN cache_write_tokens,
                     DROP COLUMN reasoning_tokens, DROP COLUMN provider_request_id,
                     DROP COLUMN provider_usage, DROP COLUMN provider_cost_micro_usd,
                     DROP COLUMN cost_tags, DROP COLUMN cost_differs;
                 DELETE FROM tenantctl.migrations WHERE version >= 2;",
                unpartition("t_da_co")
            ))
            .await
            .unwrap();
    });
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(2), "behind on migrations is drift");
    // What it found is recorded for the platform's console (`GET /v1/platform/checks`).
    let recorded = |tenant: &str| -> serde_json::Value {
        rt.block_on(async {
            target
                .admin()
                .await
                .unwrap()
                .query_one(
                    "SELECT findings FROM control.tenant_checks WHERE tenant_id = $1 AND checked_by = 'tenantctl status'",
                    &[&tenant],
                )
                .await
                .unwrap()
                .get(0)
        })
    };
    assert!(
        recorded("da-co")[0]["problem"]
            .as_str()
            .unwrap()
            .starts_with("migrations 1/"),
        "{}",
        recorded("da-co")
    );

    let out = run(&["migrate", "--parallelism", "3"]);
    assert_eq!(out.status.code(), Some(1), "one tenant failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout,
        "da-co: migrated\npa-co: migrated\npb-co: migrated\nsa-co: migrated\nsb-co: failed\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("tenant `sb-co`") && stderr.contains("already exists"),
        "{stderr}"
    );

    // Fix the cause; the next run resumes with only the failed tenant.
    rt.block_on(async {
        target
            .admin()
            .await
            .unwrap()
            .batch_execute(&format!("DROP TABLE t_sb_co.{index}"))
            .await
            .unwrap();
    });
    let out = run(&["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "da-co: unchanged\npa-co: unchanged\npb-co: unchanged\nsa-co: unchanged\nsb-co: migrated\n"
    );
    let out = run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        recorded("da-co"),
        serde_json::json!([]),
        "a clean check replaces the last one"
    );
    rt.block_on(async {
        let admin = target.admin().await.unwrap();
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE indexname = $1",
                &[&index],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 3, "schema tenants and the pool have the index again");
        // Migration 0010: the ledger is partitioned by month and every row from before is in its
        // month's partition (none in the default), with partitions for this month and twelve ahead.
        let sql = |q: &str| {
            let admin = &admin;
            let q = q.to_owned();
            async move {
                admin
                    .query(&q, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<String>>()
            }
        };
        for (schema, want) in [("t_sa_co", 2), ("pool", 2)] {
            let rows = sql(&format!(
                "SELECT tableoid::regclass::text FROM {schema}.usage_ledger ORDER BY created_at"
            ))
            .await;
            assert_eq!(rows.len(), want, "{schema}: {rows:?}");
            assert!(
                rows.iter().all(|p| p.contains(".usage_ledger_y")) && rows[0] != rows[1],
                "{schema}: each row in its month's partition: {rows:?}"
            );
            let parts = sql(&format!(
                "SELECT count(*)::text FROM pg_inherits WHERE inhparent = '{schema}.usage_ledger'::regclass"
            ))
            .await;
            assert_eq!(parts, ["15"], "{schema}: default, an earlier month, this month and 12 ahead");
        }
        let counted = sql("SELECT sum(requests)::text FROM t_sa_co.usage_daily").await;
        assert_eq!(counted, ["2"], "the copy is not counted again in the daily totals");
        let pool_tenants = sql("SELECT string_agg(tenant_id, ',' ORDER BY tenant_id) FROM pool.usage_ledger").await;
        assert_eq!(pool_tenants, ["pa-co,pb-co"], "every pool tenant's rows were copied");
        // Migration 0011: each subject's months count the rows from before, each pool tenant's own.
        for (schema, want) in [
            ("t_sa_co", "sa-co u 2 10"),
            ("pool", "pa-co u 1 5,pb-co u 1 5"),
        ] {
            let got = sql(&format!(
                "SELECT coalesce(string_agg(concat_ws(' ', tenant_id, subject, requests, cost_micro_usd), ',' \
                 ORDER BY tenant_id, month), '') FROM (SELECT tenant_id, subject, sum(requests) AS requests, \
                 sum(cost_micro_usd) AS cost_micro_usd, min(month) AS month \
                 FROM {schema}.usage_subject_monthly GROUP BY 1, 2) s"
            ))
            .await;
            assert_eq!(got, [want], "{schema}: the subjects' months from the ledger");
        }
        let months = sql("SELECT count(*)::text FROM t_sa_co.usage_subject_monthly").await;
        assert_eq!(months, ["2"], "one row per subject and UTC month");
        // Next month's partition is missing (dropped here, empty).
        admin
            .batch_execute(
                "DO $$ BEGIN EXECUTE format('DROP TABLE t_sa_co.%I', 'usage_ledger_' || \
                 to_char(now() AT TIME ZONE 'UTC' + interval '1 month', '\"y\"YYYY\"m\"MM')); END $$",
            )
            .await
            .unwrap();
    });
    // `status` calls it drift and names the fix; `migrate` adds it back, though every tenant is up
    // to date.
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "drift: sa-co: ledger partition of next month missing: run `tenantctl migrate`"
        ),
        "{}",
        text(&out)
    );
    let out = run(&["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sa-co: unchanged"),
        "{}",
        text(&out)
    );
    rt.block_on(async {
        let admin = target.admin().await.unwrap();
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 't_sa_co.usage_ledger'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 15, "next month's partition is back");
    });
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn secrets_are_put_rotated_listed_and_deleted_by_name_never_shown() {
    // Issue 10 item 4: `tenantctl secret put|rotate|list|delete`; values come from stdin or a file.
    use std::io::Write as _;
    let cluster = cli::testing::cluster();
    let ns = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = in_namespace(cluster, &ns)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let first = format!("first-{}", uuid::Uuid::new_v4().simple());
    let second = format!("second-{}", uuid::Uuid::new_v4().simple());
    // Secret changes are audited in the deployment's control plane, so it needs one.
    let acme_manifest = cli::testing::repo_root().join("tenants/acme.yaml");
    let out = run(&["apply", acme_manifest.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out));

    let out = run(
        &["secret", "rotate", "acme", "providers/openai"],
        Some(&first),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing to rotate yet: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("tenantctl secret put acme providers/openai"),
        "{}",
        text(&out)
    );
    let out = run(
        &["secret", "put", "acme", "providers/openai"],
        Some(&format!("{first}\n")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "stored `tenants/acme/providers/openai` (version 1)\n"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &second).unwrap();
    let out = run(
        &[
            "secret",
            "rotate",
            "acme",
            "providers/openai",
            "--from-file",
            file.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("rotated `tenants/acme/providers/openai` (version 2)")
    );
    run(
        &["secret", "put", "acme", "providers/anthropic"],
        Some("a-key"),
    );
    let out = run(&["--output", "json", "secret", "list", "acme"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            // Made by the apply.
            ("tenants/acme/db-password".to_owned(), "1".to_owned()),
            (
                "tenants/acme/providers/anthropic".to_owned(),
                "1".to_owned()
            ),
            ("tenants/acme/providers/openai".to_owned(), "2".to_owned())
        ]
    );
    let out = run(&["secret", "list", "acme"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("NAME"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains(&first)
            && !text(&out).contains(&second)
            && !text(&out).contains("a-key")
    );
    // Delete asks first: without a terminal and without --yes nothing is deleted.
    let out = run(&["secret", "delete", "acme", "providers/openai"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--yes") && text(&out).contains("nothing was done"),
        "{}",
        text(&out)
    );
    let out = run(
        &["secret", "delete", "acme", "providers/openai", "--yes"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&["--output", "json", "secret", "list", "acme"], None);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "the db password and anthropic's"
    );
    // Offboarding asks first too: without a terminal and without --yes, nothing is exported or
    // deleted (the tenant is not even looked up).
    let export = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "offboard",
            "acme",
            "--export",
            export.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("needs confirmation") && text(&out).contains("--yes"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(export.path()).unwrap().count(), 0);
    let out = run(&["secret", "put", "acme", "Providers/../x"], Some("v"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("not a valid secret name") && text(&out).contains("hint:"),
        "{}",
        text(&out)
    );
    // Every change is an event of acme's chain naming the secret, never its value (cases 60, 62);
    // reads (`list`) and refusals before any change are not.
    let out = run(&["audit", "export", "--tenant", "acme"], None);
    assert!(out.status.success(), "{}", text(&out));
    let export = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<(String, String, String)> = export
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let openai = "secret/tenants/acme/providers/openai".to_owned();
    let ok = "succeeded".to_owned();
    assert_eq!(
        events[1..],
        [
            ("secret.put".to_owned(), openai.clone(), ok.clone()),
            ("secret.rotate".to_owned(), openai.clone(), ok.clone()),
            (
                "secret.put".to_owned(),
                "secret/tenants/acme/providers/anthropic".to_owned(),
                ok.clone()
            ),
            ("secret.delete".to_owned(), openai, ok),
        ],
        "{export}"
    );
    assert_eq!(events[0].0, "apply");
    assert!(
        !export.contains(&first) && !export.contains(&second),
        "{export}"
    );
    let out = run(&["audit", "verify", "--tenant", "acme"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn prices_are_imported_diffed_listed_and_an_imported_version_never_changes() {
    // Issue 11 item 1: `apply` imports the built-in book into a deployment that has none; `diff`
    // compares a file with it; `import` adds new versions (all or none) and refuses a changed or
    // backdated one; `list` shows what is charged, a tenant's negotiated prices in place.
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let dir = tempfile::tempdir().unwrap();
    let root = cli::testing::repo_root();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let acme = root.join("tenants/acme.yaml");
    let out = run(&["apply", acme.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["prices", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&out);
    assert!(listed.contains("price book version 2026-12-01"), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.contains("gpt-4o-mini") && l.contains("0.150000") && l.contains("0.600000")),
        "{listed}"
    );
    let book = root.join("prices/book.yaml");
    let out = run(&["prices", "diff", "--file", book.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("2026-12-01: unchanged"));

    // The same version with another price: shown by diff, refused by import, nothing changes.
    let original = std::fs::read_to_string(&book).unwrap();
    let changed = original.replace(
        "model: gpt-4o-mini, input_per_mtok: 150000, output_per_mtok: 600000",
        "model: gpt-4o-mini, input_per_mtok: 150000, output_per_mtok: 700000",
    );
    assert_ne!(changed, original);
    let changed_file = dir.path().join("changed.yaml");
    std::fs::write(&changed_file, &changed).unwrap();
    let out = run(&["prices", "diff", "--file", changed_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("openai/gpt-4o-mini: input 150000 -> 150000, output 600000 -> 700000"),
        "{}",
        text(&out)
    );
    let out = run(&["prices", "import", "--file", changed_file.to_str().unwrap()]);
    assert!(!out.status.success());
    let refused = text(&out);
    assert!(
        refused.contains("nothing was imported")
            && refused.contains("already imported with other prices"),
        "{refused}"
    );

    // A new version from today, with acme's negotiated price: imported; a backdated one refused.
    let today = runtime::pricing::today();
    let next = format!(
        "{original}  - version: \"next\"\n    effective_from: \"{today}\"\n    prices:\n      - {{ provider: openai, model: gpt-4o-mini, input_per_mtok: 150000, output_per_mtok: 700000 }}\n    tenants:\n      acme:\n        - {{ provider: openai, model: gpt-4o-mini, input_per_mtok: 100000, output_per_mtok: 400000 }}\n"
    );
    let next_file = dir.path().join("next.yaml");
    std::fs::write(&next_file, &next).unwrap();
    let out = run(&["prices", "diff", "--file", next_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("next: new"), "{}", text(&out));
    let out = run(&["prices", "import", "--file", next_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("next: imported"));
    let out = run(&["prices", "import", "--file", next_file.to_str().unwrap()]);
    assert!(
        text(&out).contains("next: unchanged"),
        "a second import adds nothing"
    );
    let out = run(&["prices", "list"]);
    let listed = text(&out);
    assert!(listed.contains("price book version next"), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.contains("gpt-4o-mini") && l.contains("0.700000")),
        "{listed}"
    );
    let out = run(&["prices", "list", "--tenant", "acme"]);
    let listed = text(&out);
    assert!(
        listed.lines().any(|l| l.contains("gpt-4o-mini")
            && l.contains("0.400000")
            && l.contains("negotiated")),
        "{listed}"
    );
    let out = run(&["prices", "list", "--at", "2026-11-15"]);
    assert!(text(&out).contains("price book version 2026-12-01"));
    let backdated = format!(
        "{original}  - version: \"late\"\n    effective_from: \"2026-11-20\"\n    prices:\n      - {{ provider: openai, model: gpt-4o-mini, input_per_mtok: 1, output_per_mtok: 1 }}\n"
    );
    let backdated_file = dir.path().join("late.yaml");
    std::fs::write(&backdated_file, &backdated).unwrap();
    let out = run(&[
        "prices",
        "import",
        "--file",
        backdated_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let refused = text(&out);
    assert!(
        refused.contains("version `late` cannot be added")
            && refused.contains("not after the newest"),
        "{refused}"
    );
}

#[test]
fn usage_report_adds_up_and_reconcile_flags_every_discrepancy_with_a_failing_exit() {
    // Issue 11 item 6: `usage report --month` per tenant, cost-center and model, totals equal to the
    // sum of the rows; `usage reconcile` against a generated invoice that matches (exit 0) and one
    // with injected discrepancies (each reported, exit 2).
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let dir = tempfile::tempdir().unwrap();
    let root = cli::testing::repo_root();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let acme = std::fs::read_to_string(root.join("tenants/acme.yaml")).unwrap();
    // Two tenants on two tiers, in two cost-centers.
    std::fs::write(dir.path().join("acme.yaml"), &acme).unwrap();
    let pooled = acme
        .replace("id: acme", "id: pooled")
        .replace("tier: schema", "tier: pool")
        .replace("cost-center: cc-4100", "cost-center: cc-7300");
    assert_ne!(pooled, acme);
    std::fs::write(dir.path().join("pooled.yaml"), &pooled).unwrap();
    let out = run(&["apply", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Ledger rows of November 2026 on three days, and one of December (outside the month).
    let rt = tokio::runtime::Runtime::new().unwrap();
    // (tenant, schema, created_at, provider, model, input, output, cost)
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, i64, i64, i64);
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("acme", "t_acme", "2026-11-03 10:00:00+00", "anthropic", "claude-haiku-4-5", 100, 50, 45),
        ("acme", "t_acme", "2026-11-03 23:59:59+00", "anthropic", "claude-haiku-4-5", 10, 5, 5),
        ("acme", "t_acme", "2026-11-04 00:00:00+00", "anthropic", "claude-sonnet-4-5", 1000, 200, 4500),
        ("acme", "t_acme", "2026-11-30 12:00:00+00", "anthropic", "claude-haiku-4-5", 7, 7, 6),
        ("acme", "t_acme", "2026-11-30 13:00:00+00", "mock", "mock-small", 7, 7, 9),
        ("acme", "t_acme", "2026-12-01 00:00:00+00", "anthropic", "claude-haiku-4-5", 1, 1, 1),
        ("pooled", "pool", "2026-11-05 08:00:00+00", "mock", "mock-small", 20, 20, 15),
    ];
    rt.block_on(async {
        let mut admin = target.admin().await.unwrap();
        for (tenant, schema, at, provider, model, input, output, cost) in rows {
            // The daily totals' trigger writes as the migrator, whose pool policy wants the tenant set.
            #[expect(
                clippy::disallowed_methods,
                reason = "the test writes ledger rows as the admin, as a provider-side fixture"
            )]
            let tx = admin.transaction().await.unwrap();
            tx.execute("SELECT set_config('app.tenant_id', $1, true)", &[tenant])
                .await
                .unwrap();
            tx.execute(
                    &format!(
                        "INSERT INTO {schema}.usage_ledger (id, tenant_id, request_id, subject, provider, \
                         model, input_tokens, output_tokens, cost_micro_usd, price_book_version, \
                         outcome, usage_estimated, created_at) \
                         VALUES (gen_random_uuid(), $1, gen_random_uuid(), 'u', $7, $2, $3, $4, $5, \
                                 '2026-12-01', 'complete', false, $6::text::timestamptz)"
                    ),
                    &[tenant, model, input, output, cost, at, provider],
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    });

    let out = run(&["usage", "report", "--month", "2026-11", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = report["lines"].as_array().unwrap();
    let got: Vec<(String, String, String, i64, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["tenant"].as_str().unwrap().to_owned(),
                l["cost_center"].as_str().unwrap().to_owned(),
                l["model"].as_str().unwrap().to_owned(),
                l["requests"].as_i64().unwrap(),
                l["cost_micro_usd"].as_i64().unwrap(),
            )
        })
        .collect();
    let line = |t: &str, c: &str, m: &str, n: i64, cost: i64| {
        (t.to_owned(), c.to_owned(), m.to_owned(), n, cost)
    };
    assert_eq!(
        got,
        [
            line("acme", "cc-4100", "claude-haiku-4-5", 3, 56),
            line("acme", "cc-4100", "claude-sonnet-4-5", 1, 4500),
            line("acme", "cc-4100", "mock-small", 1, 9),
            line("pooled", "cc-7300", "mock-small", 1, 15),
        ]
    );
    let sum = |field: &str| {
        lines
            .iter()
            .map(|l| l[field].as_i64().unwrap())
            .sum::<i64>()
    };
    for field in [
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_micro_usd",
    ] {
        assert_eq!(
            report["totals"][field].as_i64().unwrap(),
            sum(field),
            "{field}"
        );
    }
    assert_eq!(report["totals"]["cost_micro_usd"], 4580);
    assert_eq!(report["by_cost_center"]["cc-4100"]["cost_micro_usd"], 4565);
    assert_eq!(report["by_tenant"]["pooled"]["requests"], 1);
    let out = run(&["usage", "report", "--month", "2026-11", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        csv.starts_with("month,tenant,cost_center,provider,model,requests,"),
        "{csv}"
    );
    let csv_cost: i64 = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(csv_cost, 4580);
    let out = run(&["usage", "report", "--month", "2026-13"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a month: use YYYY-MM"),
        "{}",
        text(&out)
    );

    // An Anthropic-style export generated from the ledger matches, day by day and model by model
    // (the ledger's calls to other providers are not on it).
    let invoice = |lines: &[(&str, &str, &str)]| {
        let path = dir.path().join(format!("invoice-{}.csv", lines.len()));
        let mut body = String::from("usage_date_utc,model,workspace,cost_usd\n");
        for (day, model, usd) in lines {
            body.push_str(&format!("{day},{model},Default,{usd}\n"));
        }
        std::fs::write(&path, body).unwrap();
        path
    };
    let matching = invoice(&[
        ("2026-11-03", "claude-haiku-4-5-20251001", "0.000050"),
        ("2026-11-04", "claude-sonnet-4-5-20250929", "0.0045"),
        ("2026-11-30", "claude-haiku-4-5-20251001", "0.000006"),
    ]);
    let reconcile = |file: &std::path::Path| {
        run(&[
            "usage",
            "reconcile",
            "--tenant",
            "acme",
            "--month",
            "2026-11",
            "--invoice",
            file.to_str().unwrap(),
            "--format",
            "json",
        ])
    };
    let out = reconcile(&matching);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["beyond_tolerance"], 0);
    assert_eq!(v["lines"].as_array().unwrap().len(), 3);
    // Injected: a day billed higher, a day missing from the invoice, a model we never called.
    let wrong = invoice(&[
        ("2026-11-03", "claude-haiku-4-5-20251001", "0.000250"),
        ("2026-11-30", "claude-haiku-4-5-20251001", "0.000006"),
        ("2026-11-09", "claude-opus-4-1-20250805", "1.00"),
        ("2026-11-09", "claude-opus-4-1-20250805", "0.50"),
    ]);
    let out = reconcile(&wrong);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status: Vec<(String, String, String, i64)> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["day"].as_str().unwrap().to_owned(),
                l["model"].as_str().unwrap().to_owned(),
                l["status"].as_str().unwrap().to_owned(),
                l["variance_micro_usd"].as_i64().unwrap(),
            )
        })
        .collect();
    let s = |d: &str, m: &str, st: &str, var: i64| (d.to_owned(), m.to_owned(), st.to_owned(), var);
    assert_eq!(
        status,
        [
            s("2026-11-03", "claude-haiku-4-5", "over_tolerance", 200),
            s("2026-11-04", "claude-sonnet-4-5", "not_on_invoice", -4500),
            s("2026-11-09", "claude-opus-4-1", "not_in_ledger", 1_500_000),
            s("2026-11-30", "claude-haiku-4-5", "ok", 0),
        ]
    );
    assert_eq!(v["beyond_tolerance"], 3);
    // The same in text for a person, and a file that is not an export is refused by name.
    let out = run(&[
        "usage",
        "reconcile",
        "--tenant",
        "acme",
        "--month",
        "2026-11",
        "--invoice",
        wrong.to_str().unwrap(),
    ]);
    assert!(
        text(&out).contains("3 line(s) beyond tolerance"),
        "{}",
        text(&out)
    );
    let junk = dir.path().join("junk.csv");
    std::fs::write(&junk, "a,b\n1,2\n").unwrap();
    let out = reconcile(&junk);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a recognised invoice export"),
        "{}",
        text(&out)
    );
}

#[test]
fn cost_report_says_it_needs_the_aws_target_and_checks_the_month_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = tenantctl(dir.path())
        .args(["cost", "report", "--month", "2026-11"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("run it with `--target aws`")
            && stderr.contains("tenantctl usage report --month 2026-11"),
        "{stderr}"
    );
    let out = tenantctl(dir.path())
        .args(["cost", "report", "--month", "November"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a month"));
}

/// `tenantctl serve` (with `extra` arguments) on loopback ports in `ns`: the child and its API base URL.
fn serve_child(cluster: &cli::testing::TestCluster, ns: &str, extra: &[&str]) -> (Guard, String) {
    serve_child_with(cluster, ns, extra, &[])
}

/// `serve_child` with environment variables.
pub(crate) fn serve_child_with(
    cluster: &cli::testing::TestCluster,
    ns: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Guard, String) {
    let child = in_namespace(cluster, ns)
        .envs(envs.iter().copied())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--idp-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let stderr = guard.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("`tenantctl serve` exited before serving")
        };
        if line.contains("serving the API on ") {
            break line;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = |after: &str| {
        line.split(after)
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches([')', ';', ','])
            .to_owned()
    };
    let base = url("serving the API on ");
    let metrics = url("metrics on ");
    (guard, format!("{base} {metrics}"))
}

#[test]
fn serve_commits_each_row_on_its_own_when_told_to() {
    // `--ledger-commit direct`: every call's row is its own commit, even with calls in parallel.
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let acme = cli::testing::repo_root().join("tenants/acme.yaml");
    assert!(run(&["apply", acme.to_str().unwrap()]).status.success());
    let out = run(&["token", "--tenant", "acme", "--scope", "chat:write"]);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (_guard, urls) = serve_child(cluster, &ns, &["--ledger-commit", "direct"]);
    let (base, metrics) = urls.split_once(' ').unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(async {
        let http = reqwest::Client::new();
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (http, base, token) = (http.clone(), base.to_owned(), token.clone());
                tokio::spawn(async move {
                    http.post(format!("{base}/v1/chat/completions"))
                        .bearer_auth(token)
                        .json(&serde_json::json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await
                        .unwrap()
                        .status()
                })
            })
            .collect();
        for c in calls {
            assert!(c.await.unwrap().is_success());
        }
        http.get(metrics).send().await.unwrap().text().await.unwrap()
    });
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(counter("tenantctl_ledger_rows_total"), 16);
    assert_eq!(
        counter("tenantctl_ledger_commits_total"),
        16,
        "one commit per row"
    );
}

#[test]
fn a_runtime_killed_under_load_has_a_ledger_row_for_every_answer_it_gave_and_no_duplicates() {
    // Issue 11's SIGKILL test: `tenantctl serve` under load from 16 clients, killed with SIGKILL
    // mid-run. Every 2xx the clients received has its ledger row (a row is durable before its
    // response); no request id is in the ledger twice; the only rows without a 2xx are of calls
    // whose connection the kill cut (committed, answer lost), never more than those.
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let acme = cli::testing::repo_root().join("tenants/acme.yaml");
    let out = run(&["apply", acme.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["token", "--tenant", "acme", "--scope", "chat:write"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (mut guard, urls) = serve_child(cluster, &ns, &[]);
    let base = urls.split_once(' ').unwrap().0.to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    let (answered, cut, refused) = rt.block_on(async {
        let http = reqwest::Client::new();
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let (http, base, token) = (http.clone(), base.clone(), token.clone());
                tokio::spawn(async move {
                    let (mut ok, mut cut, mut refused) = (Vec::new(), 0usize, 0usize);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline {
                        let sent = http
                            .post(format!("{base}/v1/chat/completions"))
                            .bearer_auth(&token)
                            .json(&serde_json::json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status().is_success() => {
                                let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
                                // The answer counts as received once its body is in.
                                match r.bytes().await {
                                    Ok(_) => ok.push(id),
                                    Err(_) => cut += 1,
                                }
                            }
                            Ok(_) => refused += 1,
                            Err(_) => {
                                cut += 1;
                                break;
                            }
                        }
                    }
                    (ok, cut, refused)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let (mut answered, mut cut, mut refused) = (Vec::new(), 0, 0);
        for c in clients {
            let (ok, c, r) = c.await.unwrap();
            answered.extend(ok);
            cut += c;
            refused += r;
        }
        (answered, cut, refused)
    });
    let _ = guard.0.wait();
    assert!(
        answered.len() > 50,
        "only {} answers before the kill",
        answered.len()
    );
    let ledger: Vec<String> = rt.block_on(async {
        let admin = target.admin().await.unwrap();
        admin
            .query("SELECT request_id::text FROM t_acme.usage_ledger", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    let unique: std::collections::BTreeSet<&String> = ledger.iter().collect();
    assert_eq!(
        unique.len(),
        ledger.len(),
        "a request id is in the ledger twice"
    );
    let missing: Vec<&String> = answered.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls have no ledger row: {missing:?}",
        missing.len(),
        answered.len()
    );
    let unanswered = ledger.len() - answered.len();
    assert!(
        unanswered <= cut,
        "{unanswered} rows without an answer, but only {cut} calls were cut ({refused} refused)"
    );
}

#[test]
fn usage_outlives_offboarding_for_its_retention_and_purge_removes_only_what_is_past_it() {
    // Issue 11 item 6: a tenant's ledger rows outlive its offboarding for `retention.usage_days`
    // (finance still reports and reconciles them), and rows past retention are purged by a command
    // that asks first and reports what it removed.
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.to_string();
    let dir = tempfile::tempdir().unwrap();
    let root = cli::testing::repo_root();
    let run = |args: &[&str]| in_namespace(cluster, &ns).args(args).output().unwrap();
    let acme = std::fs::read_to_string(root.join("tenants/acme.yaml")).unwrap();
    let short = acme.replace("usage_days: 400", "usage_days: 30");
    assert_ne!(
        short, acme,
        "the example's retention changed; update this test"
    );
    std::fs::write(dir.path().join("acme.yaml"), &short).unwrap();
    let pooled = short
        .replace("id: acme", "id: pooled")
        .replace("tier: schema", "tier: pool");
    std::fs::write(dir.path().join("pooled.yaml"), &pooled).unwrap();
    let out = run(&["apply", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sql = |q: String| {
        let target = &target;
        rt.block_on(async move {
            let mut admin = target.admin().await.unwrap();
            #[expect(
                clippy::disallowed_methods,
                reason = "the test writes and reads usage as the admin"
            )]
            let tx = admin.transaction().await.unwrap();
            tx.execute("SELECT set_config('app.tenant_id', 'pooled', true)", &[])
                .await
                .unwrap();
            let rows: Vec<String> = tx
                .query(&q, &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
                .unwrap_or_else(|e| vec![format!("error: {e:?}")]);
            tx.commit().await.ok();
            rows
        })
    };
    let insert = |schema: &str, tenant: &str, age_days: i32| {
        sql(format!(
            "INSERT INTO {schema}.usage_ledger (id, tenant_id, request_id, subject, provider, model, \
             input_tokens, output_tokens, cost_micro_usd, price_book_version, created_at, \
             provider_request_id, provider_cost_micro_usd, cost_differs, cost_tags) \
             VALUES (gen_random_uuid(), '{tenant}', gen_random_uuid(), 'u', 'mock', 'mock-small', 1, 1, \
                     7, '2026-12-01', now() - interval '{age_days} days', 'req-{age_days}', 8, true, \
                     '{{\"cost-center\": \"cc-{tenant}\"}}') RETURNING id::text"
        ))
    };
    insert("t_acme", "acme", 40);
    insert("t_acme", "acme", 10);
    insert("pool", "pooled", 45);
    insert("pool", "pooled", 1);
    let count = |q: &str| sql(format!("SELECT count(*)::text FROM {q}"))[0].clone();

    // Without --yes and without a terminal, nothing is removed.
    let out = run(&["usage", "purge"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("needs confirmation"), "{}", text(&out));
    assert_eq!(count("t_acme.usage_ledger"), "2");
    let out = run(&["usage", "purge", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("acme: removed 1 ledger rows"), "{said}");
    assert!(said.contains("pooled: removed 1 ledger rows"), "{said}");
    assert_eq!(
        count("t_acme.usage_ledger"),
        "1",
        "the row within retention stays"
    );
    assert_eq!(count("pool.usage_ledger WHERE tenant_id = 'pooled'"), "1");
    let out = run(&["usage", "purge", "--yes"]);
    assert!(text(&out).contains("nothing to remove"), "{}", text(&out));

    // Offboarded, acme's remaining row is kept for its retention, and still reported.
    let out = run(&[
        "offboard",
        "acme",
        "--yes",
        "--export",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        count("control.usage_retained WHERE tenant_id = 'acme'"),
        "1"
    );
    assert_eq!(
        sql("SELECT (retain_until - current_date)::text FROM control.usage_retained WHERE tenant_id = 'acme'".into()),
        ["30"]
    );
    // With what the provider said and the row's cost-allocation tags.
    assert_eq!(
        sql("SELECT concat_ws(' ', provider_request_id, provider_cost_micro_usd, cost_tags ->> 'cost-center') \
             FROM control.usage_retained WHERE tenant_id = 'acme'"
            .into()),
        ["req-10 8 cc-acme"]
    );
    let month = sql("SELECT to_char(now() - interval '10 days', 'YYYY-MM')".into())[0].clone();
    let out = run(&[
        "usage", "report", "--month", &month, "--tenant", "acme", "--format", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["totals"]["requests"], 1, "{report}");
    assert_eq!(report["totals"]["cost_micro_usd"], 7);
    // The provider said 8 for that call: finance sees it from the retained store too.
    assert_eq!(
        report["cost_differs"],
        serde_json::json!([{"tenant": "acme", "provider": "mock", "model": "mock-small", "rows": 1,
                            "cost_micro_usd": 7, "provider_cost_micro_usd": 8}]),
        "{report}"
    );
    // Retained usage never changes and cannot be removed before its day, whoever asks.
    let refused = sql(
        "DELETE FROM control.usage_retained WHERE tenant_id = 'acme' RETURNING id::text".into(),
    );
    assert!(refused[0].contains("retained until"), "{refused:?}");
    let refused =
        sql("UPDATE control.usage_retained SET cost_micro_usd = 0 RETURNING id::text".into());
    assert!(refused[0].contains("never changes"), "{refused:?}");
    // Past its day, purge removes it and says so.
    sql(
        "INSERT INTO control.usage_retained SELECT gen_random_uuid(), 'gone', gen_random_uuid(), 'u', \
         'mock', 'mock-small', 1, 1, 3, 'v', 'complete', false, now() - interval '500 days', \
         current_date - 1 RETURNING id::text"
            .into(),
    );
    let out = run(&["usage", "purge", "--yes"]);
    assert!(
        text(&out).contains("gone: removed 1 retained rows"),
        "{}",
        text(&out)
    );
    assert_eq!(
        count("control.usage_retained WHERE tenant_id = 'gone'"),
        "0"
    );
    assert_eq!(
        count("control.usage_retained WHERE tenant_id = 'acme'"),
        "1"
    );
}
