//! The AWS target end to end through the `tenantctl` binary, against a local moto server (issue 5):
//! onboard two tenants, re-apply (no changes), update one, drift, secrets, tags, offboard one. The
//! control plane is the test cluster reached by URL with a non-superuser admin (the platform's RDS
//! cannot run here); Cost Explorer, which moto lacks, is a fake speaking its wire protocol.
//!
//! moto's CloudFormation skips some resource types (API Gateway v2) and never rolls back, so this
//! proves the orchestration and the direct API calls; cfn-lint and `cli/tests/it/aws.rs` prove the
//! templates.

use std::path::Path;
use std::process::Output;

use runtime::secrets::SecretName;

struct Env {
    moto: tests::Moto,
    costs: tests::FakeCostExplorer,
    url: String,
    ns: String,
    state: tempfile::TempDir,
    bin: std::path::PathBuf,
    /// `TENANTCTL_DATABASE_CA`, when the platform database is reached over TLS.
    ca: Option<std::path::PathBuf>,
}

impl Env {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(args, stdin, false)
    }

    /// `endpoint_flag`: reach moto through `--endpoint-url` instead of `AWS_ENDPOINT_URL`.
    fn run_with(&self, args: &[&str], stdin: Option<&str>, endpoint_flag: bool) -> Output {
        use std::io::Write as _;
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.args([
            "--target",
            "aws",
            "--env",
            "test",
            "--namespace",
            &self.ns,
            "--lambda-code",
            "s3://tenantctl-code/runtime.zip",
            "--arch",
            "x86-64",
        ])
        .args(args)
        .envs(self.moto.env())
        .env("AWS_ENDPOINT_URL_COST_EXPLORER", &self.costs.url)
        .env("TENANTCTL_DATABASE_URL", &self.url)
        .env("TENANTCTL_STATE_DIR", self.state.path())
        .env("TENANTCTL_POLL_MAX_MS", "200")
        .env_remove("TENANTCTL_TARGET");
        if let Some(ca) = &self.ca {
            cmd.env("TENANTCTL_DATABASE_CA", ca);
        }
        if endpoint_flag {
            cmd.env_remove("AWS_ENDPOINT_URL")
                .args(["--endpoint-url", &self.moto.url]);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn copy_examples(dir: &Path) {
    for name in ["acme.yaml", "globex.yaml"] {
        std::fs::copy(
            cli::testing::repo_root().join("tenants").join(name),
            dir.join(name),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_reapply_update_drift_and_offboard_on_moto() {
    let moto = tests::moto().await;
    let costs = tests::fake_cost_explorer().await;
    costs
        .not_visible
        .lock()
        .unwrap()
        .insert("department".into());
    let target = cli::testing::deployment();
    let url = tests::rds_stand_in(&target).await;
    tests::moto_fixture(&moto, &["upload-code", "tenantctl-code", "runtime.zip"]);
    let env = Env {
        moto,
        costs,
        url,
        ns: target.namespace.to_string(),
        state: tempfile::tempdir().unwrap(),
        bin: tests::tenantctl_binary(),
        ca: None,
    };
    let manifests = tempfile::tempdir().unwrap();
    copy_examples(manifests.path());
    let dir = manifests.path().to_str().unwrap();

    // Onboard both tenants (and the platform stack).
    let out = env.run(&["apply", dir], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        "acme: created\nglobex: created\n",
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("platform stack tenantctl-test-platform: created"),
        "{err}"
    );
    // Cost-allocation tag keys activated in batches; a key billing has not seen yet is pending.
    assert!(
        err.contains("cost-allocation tags active: cost-center, tenant, tier"),
        "{err}"
    );
    assert!(
        err.contains("`department` is not visible to billing yet"),
        "{err}"
    );
    assert!(
        env.costs
            .calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c.len() <= 20)
    );

    // The registry was written after the stacks settled, and the audit log has both runs.
    let admin = target.admin().await.unwrap();
    let rows = admin
        .query(
            "SELECT tenant_id, status FROM control.tenants ORDER BY tenant_id",
            &[],
        )
        .await
        .unwrap();
    let reg: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        reg,
        [
            ("acme".into(), "active".into()),
            ("globex".into(), "active".into())
        ]
    );
    let audited: i64 = admin
        .query_one(
            "SELECT count(*) FROM control.audit_events WHERE action = 'apply-aws' AND outcome = 'created'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 2);
    // Both tenants' database users may log in with IAM tokens (how their Lambdas connect).
    for tenant in ["acme", "globex"] {
        let role = target
            .namespace
            .tenant_role(&runtime::domain::TenantId::parse(tenant).unwrap());
        let member: bool = admin
            .query_one("SELECT pg_has_role($1, 'rds_iam', 'MEMBER')", &[&role])
            .await
            .unwrap()
            .get(0);
        assert!(member, "{role} is granted rds_iam");
    }

    // Re-apply and plan: nothing to do, and no change set was needed to know it.
    let out = env.run(&["plan", dir], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("stacks: 3 no changes"),
        "{}",
        text(&out)
    );
    let out = env.run(&["--output", "json", "apply", dir], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["platform"], "no_changes", "{report}");
    let results: Vec<&str> = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["unchanged", "unchanged"], "{report}");

    // Update one tenant: a longer log retention changes only acme's log group.
    let acme = manifests.path().join("acme.yaml");
    let body = std::fs::read_to_string(&acme).unwrap();
    std::fs::write(&acme, body.replace("usage_days: 400", "usage_days: 800")).unwrap();
    let out = env.run(&["plan", "--detailed-exitcode", dir], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan = stdout(&out);
    assert!(plan.contains("stack tenantctl-test-acme: update"), "{plan}");
    assert!(plan.contains("Modify  LogGroup"), "{plan}");
    assert!(!plan.contains("tenantctl-test-globex:"), "{plan}");
    let out = env.run(&["apply", dir], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        "acme: updated\nglobex: unchanged\n",
        "{}",
        text(&out)
    );

    // No drift (asked through `--endpoint-url` rather than AWS_ENDPOINT_URL: the same account).
    let out = env.run_with(&["drift"], None, true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A provider key, from stdin, never an argument; tagged with its tenant; readable by name.
    let out = env.run(
        &["secret", "put", "acme", "openai-api-key"],
        Some("sk-test-generated\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("sk-test-generated"));
    let store = env.moto.secret_store().await;
    let name = SecretName::parse("tenants/acme/openai-api-key").unwrap();
    let tags = store.tags(&name).await.unwrap();
    assert!(tags.contains(&("tenant".into(), "acme".into())), "{tags:?}");
    let secrets = runtime::secrets::SecretStore::Aws(store.clone());
    use secrecy::ExposeSecret as _;
    assert_eq!(
        secrets.get(&name).await.unwrap().expose_secret(),
        "sk-test-generated"
    );

    // Resources are findable by the tenant tag.
    let tagged: Vec<String> = serde_json::from_str(&tests::moto_fixture(
        &env.moto,
        &["tagged", "tenant", "acme"],
    ))
    .unwrap();
    for needle in [
        ":stack/tenantctl-test-acme/",
        ":log-group:/aws/lambda/tenantctl-test-acme",
        ":secret:tenants/acme/db-password",
        ":secret:tenants/acme/openai-api-key",
    ] {
        assert!(
            tagged.iter().any(|a| a.contains(needle)),
            "{needle}: {tagged:?}"
        );
    }
    assert!(tagged.iter().all(|a| !a.contains("globex")), "{tagged:?}");
    // The function exists. (moto neither indexes Lambda in its tagging API nor applies a function's
    // CloudFormation `Tags`; that every taggable resource carries them is `cli/tests/it/aws.rs`'s job.)
    let _function_tags = tests::moto_fixture(&env.moto, &["function-tags", "tenantctl-test-acme"]);

    // Issue 9 item 2: suspension reaches the tenant's function. `suspend` leaves it no concurrency (API
    // Gateway then refuses every request before it runs), an `apply` keeps it suspended, `resume` gives
    // its reserved concurrency back; each step is audited.
    let concurrency = |env: &Env| {
        tests::moto_fixture(&env.moto, &["function-concurrency", "tenantctl-test-acme"])
            .trim()
            .to_owned()
    };
    assert_eq!(concurrency(&env), "10");
    let out = env.run(&["suspend", "acme", "--reason", "invoice overdue"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "acme: suspended\n", "{}", text(&out));
    assert_eq!(
        concurrency(&env),
        "0",
        "a suspended tenant's function cannot run"
    );
    assert_eq!(
        concurrency_of(&env, "tenantctl-test-globex"),
        "10",
        "globex untouched"
    );
    let out = env.run(&["apply", dir], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(concurrency(&env), "0", "an apply keeps the suspension");
    let out = env.run(&["suspend", "acme"], None);
    assert_eq!(stdout(&out), "acme: already suspended\n", "{}", text(&out));
    let out = env.run(&["resume", "acme"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(concurrency(&env), "10");
    let out = env.run(&["move", "acme", "--to", "pool"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not run on the AWS target"),
        "{}",
        text(&out)
    );

    // Offboard acme: export, stack deleted, secrets scheduled for deletion, registry kept.
    let export = tempfile::tempdir().unwrap();
    let out = env.run(
        &[
            "offboard",
            "acme",
            "--yes",
            "--export",
            export.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains("stack `tenantctl-test-acme` deleted"),
        "{said}"
    );
    // The database password went with the role; the provider key with the AWS step.
    assert!(
        said.contains("1 secret(s) scheduled for deletion"),
        "{said}"
    );
    for leaf in ["openai-api-key", "db-password"] {
        let n = SecretName::parse(&format!("tenants/acme/{leaf}")).unwrap();
        assert!(
            !secrets.exists(&n).await.unwrap(),
            "{leaf} is scheduled for deletion"
        );
    }
    assert!(
        secrets
            .exists(&SecretName::parse("tenants/globex/db-password").unwrap())
            .await
            .unwrap(),
        "another tenant's secrets are untouched"
    );
    assert_eq!(
        tests::column(
            &admin,
            "SELECT status FROM control.tenants WHERE tenant_id = 'acme'"
        )
        .await,
        ["offboarded"],
        "kept for finance"
    );
    let steps = tests::column(
        &admin,
        "SELECT outcome FROM control.audit_events WHERE tenant_id = 'acme' AND action = 'offboard-aws' ORDER BY seq",
    )
    .await;
    assert_eq!(steps, ["stack_deleted", "secrets_scheduled_for_deletion"]);
    let out = env.run(&["drift"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Re-onboarding within the recovery window restores the secret instead of failing.
    let out = env.run(
        &["secret", "put", "acme", "openai-api-key"],
        Some("sk-test-second\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        secrets.get(&name).await.unwrap().expose_secret(),
        "sk-test-second"
    );

    // Drift: globex's stack deleted out of band.
    tests::moto_fixture(&env.moto, &["delete-stack", "tenantctl-test-globex"]);
    let out = env.run(&["drift"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stdout(&out).contains("globex (tenantctl-test-globex): the registry says `active` but the stack does not exist"),
        "{}",
        text(&out)
    );
    let out = env.run(&["status"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

fn concurrency_of(env: &Env, function: &str) -> String {
    tests::moto_fixture(&env.moto, &["function-concurrency", function])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn bad_input_fails_before_any_aws_call() {
    // docs/security.md case 63: a malformed manifest, a bad tenant id, or an unknown tenant is refused
    // before any AWS (or database) call. Every AWS call would go to a listener that counts them.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = trap.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let bin = tests::tenantctl_binary();
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("x.yaml"),
        "version: 1\nid: \"acme*\"\ndisplay_name: X\ntier: schema\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let unreachable = "postgres://nobody@127.0.0.1:1/none".to_owned();
    let run_with = |args: &[&str], database_url: &str| {
        std::process::Command::new(&bin)
            .args([
                "--target",
                "aws",
                "--env",
                "test",
                "--lambda-code",
                "s3://b/k",
            ])
            .args(args)
            .env("AWS_ENDPOINT_URL", &trap_url)
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("TENANTCTL_DATABASE_URL", database_url)
            .env("TENANTCTL_STATE_DIR", state.path())
            .output()
            .unwrap()
    };
    let run = |args: &[&str]| run_with(args, &unreachable);
    for (args, needle) in [
        (
            vec!["apply", bad.path().to_str().unwrap()],
            "manifest error",
        ),
        (vec!["plan", bad.path().to_str().unwrap()], "manifest error"),
        (vec!["offboard", "../x", "--export", "/tmp/x"], "tenant"),
        (vec!["offboard", "a/b", "--export", "/tmp/x"], "tenant"),
        (vec!["secret", "put", "x\";drop", "k"], "tenant"),
        (vec!["secret", "put", "\u{430}cme", "k"], "tenant"),
        (vec!["offboard", "acme*", "--export", "/tmp/x"], "tenant"),
        (
            vec!["offboard", &"a".repeat(200), "--export", "/tmp/x"],
            "tenant",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out)
        );
    }
    // An unknown (well-formed) tenant fails because the registry says so, with the database reachable
    // and its control plane in place, still before any AWS call.
    let target = cli::testing::deployment();
    let url = tests::external_admin_url(&target).await;
    let through_url = cli::provision::target_from_url(
        &url,
        target.namespace.clone(),
        target.secrets.clone(),
        target.secrets_dir.clone(),
    )
    .unwrap();
    cli::provision::apply::ensure_control_plane(&through_url)
        .await
        .unwrap();
    for args in [
        vec!["offboard", "nosuch", "--yes", "--export", "/tmp/x"],
        vec!["suspend", "nosuch"],
    ] {
        let out = run_with(&args, &url);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("tenant `nosuch` is not in the registry"),
            "{args:?}: {}",
            text(&out)
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_tenant_gets_its_database_on_its_own_instance_and_its_function_points_there() {
    // Issue 9 item 6: a dedicated tenant's data lives on the RDS instance its stack creates. tenantctl
    // reads the instance's endpoint from the stack and its master user from the secret RDS manages,
    // creates the tenant's role, database and tables there over verified TLS, records the instance in
    // the registry, and the tenant's function is configured to reach that instance, not the platform
    // database. Two TLS Postgres servers stand in for the platform database and the instance (moto's
    // shim points the instance's endpoint at the second); one CA bundle covers both, as RDS's does.
    use secrecy::ExposeSecret as _;
    let platform_pg = cli::testing::tls_cluster();
    let instance_pg = cli::testing::tls_cluster();
    let bundle = tempfile::tempdir().unwrap();
    let ca = bundle.path().join("bundle.pem");
    std::fs::write(
        &ca,
        [
            std::fs::read_to_string(&platform_pg.ca_pem).unwrap(),
            std::fs::read_to_string(&instance_pg.ca_pem).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let master_password = runtime::secrets::generate_secret();
    let peer = |pg: &cli::testing::TlsCluster| cli::provision::Target {
        namespace: runtime::domain::Namespace::parse("peer").unwrap(),
        endpoint: runtime::db::DbEndpoint {
            host: pg.state.pg_run().display().to_string(),
            port: pg.port,
            dbname: "postgres".into(),
            tls_ca: None,
            iam_auth: false,
        },
        admin: cli::provision::AdminAccess::Peer {
            role: cli::local::cluster::ADMIN_ROLE.into(),
        },
        secrets: runtime::secrets::SecretStore::Local(
            runtime::secrets::LocalSecretStore::open(&bundle.path().join("unused")).unwrap(),
        ),
        secrets_dir: bundle.path().join("unused"),
    };
    // The instance as RDS makes it: a master user (CREATEROLE, CREATEDB) and `rds_iam`.
    peer(&instance_pg)
        .admin()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE tenantctl_master LOGIN CREATEROLE CREATEDB; CREATE ROLE rds_iam NOLOGIN; {}",
            cli::sql::alter_role_password("tenantctl_master", &master_password).unwrap()
        ))
        .await
        .unwrap();
    let moto = tests::moto_with(&[
        ("MOTO_RDS_ENDPOINT_ADDRESS", "127.0.0.1".into()),
        ("MOTO_RDS_ENDPOINT_PORT", instance_pg.port.to_string()),
        (
            "MOTO_RDS_MASTER_PASSWORD",
            master_password.expose_secret().to_owned(),
        ),
    ])
    .await;
    tests::moto_fixture(&moto, &["upload-code", "tenantctl-code", "runtime.zip"]);
    let ns = "dedi";
    let env = Env {
        moto,
        costs: tests::fake_cost_explorer().await,
        url: format!(
            "postgres://{}@127.0.0.1:{}/{ns}",
            cli::local::cluster::ADMIN_ROLE,
            platform_pg.port
        ),
        ns: ns.into(),
        state: tempfile::tempdir().unwrap(),
        bin: tests::tenantctl_binary(),
        ca: Some(ca),
    };
    let manifests = tempfile::tempdir().unwrap();
    let acme = std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml"))
        .unwrap()
        .replace("tier: schema", "tier: dedicated");
    std::fs::write(manifests.path().join("acme.yaml"), acme).unwrap();
    let dir = manifests.path().to_str().unwrap();
    let out = env.run(&["apply", dir], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "acme: created\n", "{}", text(&out));

    let databases = |pg: &cli::testing::TlsCluster| {
        let target = peer(pg);
        async move {
            tests::column(
                &target.admin().await.unwrap(),
                "SELECT datname::text FROM pg_database WHERE datname = 'dedi_t_acme'",
            )
            .await
        }
    };
    assert_eq!(
        databases(&instance_pg).await,
        ["dedi_t_acme"],
        "on its own instance"
    );
    assert!(
        databases(&platform_pg).await.is_empty(),
        "not on the platform database"
    );
    let mut on_instance = peer(&instance_pg);
    on_instance.endpoint.dbname = "dedi_t_acme".into();
    let tenant_db = on_instance.admin().await.unwrap();
    tenant_db
        .batch_execute(
            "INSERT INTO t_acme.usage_ledger (id, tenant_id, request_id, subject, provider, model, input_tokens, \
             output_tokens, cost_micro_usd, price_book_version) VALUES (gen_random_uuid(), 'acme', gen_random_uuid(), \
             'u', 'mock', 'mock-small', 1, 1, 1, 'v')",
        )
        .await
        .unwrap();
    let member: bool = tenant_db
        .query_one(
            "SELECT pg_has_role('dedi_t_acme', 'rds_iam', 'MEMBER')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(member, "its function logs in with IAM tokens there");
    let mut platform = peer(&platform_pg);
    platform.endpoint.dbname = ns.into();
    let row = platform
        .admin()
        .await
        .unwrap()
        .query_one(
            "SELECT db_host, db_port, tier FROM control.tenants WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        row.get::<_, Option<i32>>(1),
        Some(i32::from(instance_pg.port))
    );
    let config: serde_json::Value = serde_json::from_str(&tests::moto_fixture(
        &env.moto,
        &[
            "function-env",
            "tenantctl-test-acme",
            "TENANTCTL_RUNTIME_CONFIG_JSON",
        ],
    ))
    .unwrap();
    assert_eq!(config["database"]["host"], "127.0.0.1", "{config}");
    assert_eq!(config["database"]["port"], instance_pg.port, "{config}");
    assert_eq!(config["database"]["dbname"], "dedi_t_acme", "{config}");

    // status logs in as the tenant on its instance; a second apply changes nothing.
    let out = env.run(&["status"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.run(&["apply", dir], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "acme: unchanged\n", "{}", text(&out));
    // `migrate` never makes a second copy of it on the platform server.
    let out = env.run(&["migrate"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(databases(&platform_pg).await.is_empty());
    // Offboarding exports from the instance.
    let export = tempfile::tempdir().unwrap();
    let out = env.run(
        &[
            "offboard",
            "acme",
            "--yes",
            "--export",
            export.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let exported = std::fs::read_to_string(export.path().join("acme/usage_ledger.jsonl")).unwrap();
    assert_eq!(exported.lines().count(), 1, "the instance's row");
}
