//! Issue 13 item 8 (and the cross-tenant runbook): `tenantctl audit isolation` checks the fences of
//! a live deployment from the inside. On a sound deployment of all three tiers every check passes
//! (exit 0); each fence broken by hand as the superuser is named as a finding (exit 2), and the
//! check passes again once it is repaired.

use crate::binary::in_namespace;

fn manifest(id: &str, tier: &str) -> String {
    std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml"))
        .unwrap()
        .replace("id: acme", &format!("id: {id}"))
        .replace("tier: schema", &format!("tier: {tier}"))
}

#[test]
fn the_isolation_check_passes_on_a_sound_deployment_and_names_each_broken_fence() {
    let cluster = cli::testing::cluster();
    let target = cli::testing::deployment();
    let ns = target.namespace.as_str().to_owned();
    let dir = tempfile::tempdir().unwrap();
    for (id, tier) in [
        ("acme", "schema"),
        ("initech", "pool"),
        ("umbrella", "pool"),
        ("hooli", "dedicated"),
    ] {
        std::fs::write(dir.path().join(format!("{id}.yaml")), manifest(id, tier)).unwrap();
    }
    let out = in_namespace(cluster, &ns)
        .arg("apply")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = || {
        let out = in_namespace(cluster, &ns)
            .args(["--output", "json", "audit", "isolation"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        let findings: Vec<String> = v["isolation"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| {
                let who = t["tenant"].as_str().unwrap_or("catalog").to_owned();
                t["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["ok"] == false)
                    .map(move |c| format!("{who}: {} {}", c["check"], c["detail"]))
                    .collect::<Vec<_>>()
            })
            .collect();
        (out.status.code(), findings, v)
    };

    let (code, findings, v) = check();
    assert_eq!((code, &findings), (Some(0), &vec![]), "{v:#}");
    // The catalog and the four tenants, each with its own checks.
    let tenants: Vec<&str> = v["isolation"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["tenant"].as_str())
        .collect();
    assert_eq!(tenants, ["acme", "hooli", "initech", "umbrella"]);
    let initech = &v["isolation"][3]["checks"];
    assert!(
        initech
            .to_string()
            .contains("1 other pool tenant(s) show no row"),
        "{initech:#}"
    );
    // The other pool tenant really has a row the check must not see.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt
        .block_on(target.connect_admin(&target.endpoint.dbname))
        .unwrap();
    let sql = |q: &str| {
        rt.block_on(admin.batch_execute(q))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    };
    let placement = |id: &str| -> (String, String, String) {
        let r = rt
            .block_on(admin.query_one(
                "SELECT db_role, db_schema, coalesce(db_name, current_database()) \
                   FROM control.tenants WHERE tenant_id = $1",
                &[&id],
            ))
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let (acme_role, acme_schema, _) = placement("acme");
    let (umbrella_role, _, _) = placement("umbrella");
    let (_, _, hooli_db) = placement("hooli");
    sql(
        "INSERT INTO pool.conversations (tenant_id, id, subject, title, model) \
         VALUES ('initech', gen_random_uuid(), 'alice', 'canary', 'mock-small')",
    );

    // Each fence broken, named, repaired.
    let broken: [(&str, String, String, &str); 6] = [
        (
            "umbrella",
            format!("GRANT USAGE ON SCHEMA \"{acme_schema}\" TO \"{umbrella_role}\""),
            format!("REVOKE USAGE ON SCHEMA \"{acme_schema}\" FROM \"{umbrella_role}\""),
            "other tenant schema(s)",
        ),
        (
            "acme",
            format!("GRANT CONNECT ON DATABASE \"{hooli_db}\" TO \"{acme_role}\""),
            format!("REVOKE CONNECT ON DATABASE \"{hooli_db}\" FROM \"{acme_role}\""),
            "other database(s)",
        ),
        (
            "acme",
            format!("GRANT USAGE ON SCHEMA control TO \"{acme_role}\""),
            format!("REVOKE USAGE ON SCHEMA control FROM \"{acme_role}\""),
            "the control plane is out of reach",
        ),
        (
            "acme",
            format!("ALTER ROLE \"{acme_role}\" BYPASSRLS"),
            format!("ALTER ROLE \"{acme_role}\" NOBYPASSRLS"),
            "dangerous attribute",
        ),
        (
            "catalog",
            "ALTER TABLE pool.conversations NO FORCE ROW LEVEL SECURITY".into(),
            "ALTER TABLE pool.conversations FORCE ROW LEVEL SECURITY".into(),
            "not fenced: conversations",
        ),
        (
            "umbrella",
            "ALTER TABLE pool.conversations DISABLE ROW LEVEL SECURITY".into(),
            "ALTER TABLE pool.conversations ENABLE ROW LEVEL SECURITY".into(),
            "1 row(s) of initech in conversations",
        ),
    ];
    for (who, breaking, repair, named) in &broken {
        sql(breaking);
        let (code, findings, v) = check();
        sql(repair);
        assert_eq!(code, Some(2), "{breaking}: {v:#}");
        assert!(
            findings
                .iter()
                .any(|f| f.starts_with(&format!("{who}:")) && f.contains(named)),
            "{breaking}: expected a finding of {who} naming {named:?}, got {findings:#?}"
        );
    }
    let (code, findings, v) = check();
    assert_eq!((code, &findings), (Some(0), &vec![]), "{v:#}");
}
