//! The AWS target's templates (issue 5, offline part): every example manifest in every tier renders,
//! matches its snapshot, passes `cfn-lint` with no errors, and its IAM policy is least-privilege
//! (security cases 64-66): secrets only under `tenants/<id>/` (the trailing slash keeps `acme` from
//! matching `acme2`), `rds-db:connect` only as the tenant's database user, logs only its own group, no
//! `Resource: "*"` on a data action, a trust policy for Lambda in this account only.

use std::collections::BTreeMap;

use cli::aws::{Arch, render_platform, render_tenant};
use cli::manifest::{TenantSpec, load_all};
use cli::platform::Platform;
use runtime::domain::{ModelId, Namespace, ProviderId, Tier};
use runtime::registry::policy::{Endpoint, ProviderPolicy};
use serde_json::Value;

fn examples() -> Vec<TenantSpec> {
    load_all(
        &[cli::testing::repo_root().join("tenants")],
        &Platform::builtin(),
    )
    .unwrap()
    .into_iter()
    .map(|(_, s)| s)
    .collect()
}

fn rendered() -> Vec<(String, String, TenantSpec)> {
    let ns = Namespace::parse("tenantctl").unwrap();
    let mut out = Vec::new();
    for spec in examples() {
        for tier in [Tier::Pool, Tier::Schema, Tier::Dedicated] {
            let mut spec = spec.clone();
            spec.tier = tier;
            let body = render_tenant(&spec, &ns, "prod", &Platform::builtin(), Arch::Arm64)
                .unwrap()
                .body;
            out.push((format!("tenant_{}_{tier}", spec.id), body, spec));
        }
    }
    // A tenant allowed two Bedrock models (issue 10 item 3): its stack carries its own inference
    // profiles.
    let mut spec = examples().remove(0);
    spec.models.providers.insert(
        ProviderId::Bedrock,
        ProviderPolicy {
            models: BEDROCK_MODELS
                .iter()
                .map(|m| ModelId::parse(m).unwrap())
                .collect(),
            endpoint: Endpoint {
                region: Some("eu-west-1".into()),
                ..Endpoint::default()
            },
        },
    );
    let body = render_tenant(&spec, &ns, "prod", &Platform::builtin(), Arch::Arm64)
        .unwrap()
        .body;
    out.push((format!("tenant_{}_bedrock", spec.id), body, spec));
    out
}

const BEDROCK_MODELS: [&str; 2] = [
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "amazon.nova-lite-v1:0",
];

#[test]
fn a_bedrock_tenant_calls_through_its_own_tagged_inference_profiles() {
    // Issue 10 item 3: one application inference profile per Bedrock model, tagged like the rest of
    // the tenant's stack; the function is configured to call through them and may invoke only them
    // and the models they copy.
    let (_, body, spec) = rendered().pop().unwrap();
    let t: Value = serde_norway::from_str(&body).unwrap();
    let profiles: Vec<(&String, &Value)> = t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Bedrock::ApplicationInferenceProfile")
        .collect();
    assert_eq!(profiles.len(), 2);
    for (i, model) in BEDROCK_MODELS.iter().enumerate() {
        let p = &t["Resources"][format!("BedrockProfile{i}")]["Properties"];
        assert_eq!(
            sub_string(&p["ModelSource"]["CopyFrom"]),
            format!("arn:${{AWS::Partition}}:bedrock:eu-west-1::foundation-model/{model}")
        );
        let tags: Vec<&str> = p["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["Key"].as_str().unwrap())
            .collect();
        assert!(
            tags.contains(&"cost-center") && tags.contains(&"tenant"),
            "{tags:?}"
        );
    }
    let statement = statements(&t)
        .into_iter()
        .find(|s| s["Sid"] == "OwnInferenceProfilesOnly")
        .expect("a Bedrock statement");
    assert_eq!(
        statement["Action"],
        serde_json::json!([
            "bedrock:InvokeModel",
            "bedrock:InvokeModelWithResponseStream"
        ])
    );
    let resources = statement["Resource"].as_array().unwrap();
    assert_eq!(resources.len(), 4);
    assert_eq!(
        resources[0]["Fn::GetAtt"],
        serde_json::json!(["BedrockProfile0", "InferenceProfileArn"])
    );
    assert!(
        sub_string(&resources[1]).ends_with(&format!("::foundation-model/{}", BEDROCK_MODELS[0]))
    );
    let config = sub_string(
        &t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["TENANTCTL_RUNTIME_CONFIG_JSON"],
    );
    for (i, model) in BEDROCK_MODELS.iter().enumerate() {
        let pair = format!("\"{model}\":\"${{BedrockProfile{i}.InferenceProfileArn}}\"");
        assert!(config.contains(&pair), "{pair} not in {config}");
    }
    assert_eq!(spec.id.as_str(), "acme");
    // On AWS the profiles are in the stack's region: a Bedrock endpoint elsewhere is refused before
    // anything is applied.
    assert!(
        cli::aws::fleet::check_bedrock_regions(std::slice::from_ref(&spec), "eu-west-1").is_ok()
    );
    let err = cli::aws::fleet::check_bedrock_regions(std::slice::from_ref(&spec), "us-east-1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("models.providers.bedrock.endpoint.region")
            && err.contains("nothing was applied"),
        "{err}"
    );
    // Without Bedrock, none of it.
    let (_, plain, _) = rendered().remove(0);
    assert!(!plain.contains("ApplicationInferenceProfile") && !plain.contains("bedrock:"));
}

fn statements(template: &Value) -> Vec<Value> {
    template["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .clone()
}

fn sub_string(resource: &Value) -> String {
    match &resource["Fn::Sub"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a[0].as_str().unwrap().to_owned(),
        other => panic!("resource is not an Fn::Sub: {other}"),
    }
}

#[test]
fn tenant_stacks_render_and_match_their_snapshots() {
    for (name, body, _) in rendered() {
        insta::assert_snapshot!(name, body);
    }
    let platform = render_platform(
        "prod",
        &Platform::builtin(),
        &BTreeMap::from([("cost-center".into(), "platform".into())]),
    )
    .unwrap()
    .body;
    insta::assert_snapshot!("platform_prod", platform);
}

#[test]
fn tenant_policies_are_least_privilege() {
    // docs/security.md cases 64, 65, 66.
    let ns = Namespace::parse("tenantctl").unwrap();
    for (name, body, spec) in rendered() {
        let t: Value = serde_norway::from_str(&body).unwrap();
        // Issue 9 item 5: no managed policy at all (AWSLambdaVPCAccessExecutionRole grants log writes
        // and network-interface changes on `*`); every action is in the inline statements below.
        assert!(
            t["Resources"]["FunctionRole"]["Properties"]
                .get("ManagedPolicyArns")
                .is_none(),
            "{name}: the tenant role has a managed policy"
        );
        for s in statements(&t) {
            let resource = &s["Resource"];
            if s["Sid"] == "DescribeNetworkOnly" {
                // EC2 Describe actions have no resource-level permissions; they read network
                // metadata only, so they are the one `*` allowed.
                assert_eq!(resource, &Value::String("*".into()), "{name}");
                for action in s["Action"].as_array().unwrap() {
                    assert!(
                        action.as_str().unwrap().starts_with("ec2:Describe"),
                        "{name}: {action} on *"
                    );
                }
                continue;
            }
            if s["Sid"] == "OwnInferenceProfilesOnly" {
                // Checked in `a_bedrock_tenant_calls_through_its_own_tagged_inference_profiles`.
                for r in resource.as_array().unwrap() {
                    assert!(
                        r.get("Fn::GetAtt").is_some()
                            || sub_string(r).contains(":foundation-model/"),
                        "{name}: {r}"
                    );
                }
                continue;
            }
            if s["Sid"] == "OwnKeyOnly" {
                assert_eq!(s["Action"], "kms:Decrypt", "{name}");
                assert_eq!(resource["Fn::GetAtt"][0], "TenantKey", "{name}");
                continue;
            }
            if s["Sid"]
                .as_str()
                .unwrap()
                .contains("NetworkInterfacesInThePlatformSubnetsOnly")
            {
                let arns: Vec<String> = match resource {
                    Value::Array(list) => list.iter().map(sub_string).collect(),
                    one => vec![sub_string(one)],
                };
                for arn in arns {
                    assert!(
                        arn.contains(":network-interface/")
                            || arn.ends_with("subnet/${PrivateSubnetA}")
                            || arn.ends_with("subnet/${PrivateSubnetB}")
                            || arn.ends_with("security-group/${FunctionSecurityGroup}"),
                        "{name}: {arn}"
                    );
                }
                continue;
            }
            assert_ne!(
                resource,
                &Value::String("*".into()),
                "{name}: Resource * on {}",
                s["Action"]
            );
            let arn = sub_string(resource);
            match s["Sid"].as_str().unwrap() {
                "OwnSecretsOnly" => {
                    assert!(
                        arn.ends_with(&format!(":secret:tenants/{}/*", spec.id)),
                        "{name}: {arn}"
                    );
                    // `acme` must not match `acme2/...`: the prefix ends in a slash.
                    assert!(!arn.contains(&format!("tenants/{}*", spec.id)), "{name}");
                }
                "OwnDatabaseUserOnly" => {
                    assert_eq!(s["Action"], "rds-db:connect");
                    // Every tier, the pool too, logs in as the tenant's own role (issue 9 item 1).
                    let user = ns.tenant_role(&spec.id);
                    assert!(arn.ends_with(&format!("/{user}")), "{name}: {arn}");
                    assert!(!arn.contains('*'), "{name}: wildcard in {arn}");
                }
                "OwnLogGroupOnly" => {
                    assert!(
                        arn.ends_with(&format!(
                            ":log-group:/aws/lambda/tenantctl-prod-{}:*",
                            spec.id
                        )),
                        "{name}: {arn}"
                    );
                }
                other => panic!("{name}: unexpected statement {other}"),
            }
        }
        let trust =
            &t["Resources"]["FunctionRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(trust.as_array().unwrap().len(), 1, "{name}");
        assert_eq!(
            trust[0]["Principal"],
            serde_json::json!({"Service": "lambda.amazonaws.com"}),
            "{name}"
        );
        assert_eq!(
            trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"]["Ref"], "AWS::AccountId",
            "{name}"
        );
        // Tags on every taggable resource: tenant, tier, cost-center.
        for (logical, resource) in t["Resources"].as_object().unwrap() {
            let Some(tags) = resource["Properties"].get("Tags") else {
                continue;
            };
            let keys: Vec<String> = match tags {
                Value::Array(list) => list
                    .iter()
                    .map(|kv| kv["Key"].as_str().unwrap().to_owned())
                    .collect(),
                Value::Object(map) => map.keys().cloned().collect(),
                other => panic!("{name}/{logical}: tags {other}"),
            };
            for k in ["tenant", "tier", "cost-center"] {
                assert!(
                    keys.iter().any(|x| x == k),
                    "{name}/{logical}: missing tag {k}"
                );
            }
        }
        for logical in [
            "TenantKey",
            "FunctionRole",
            "LogGroup",
            "AccessLogGroup",
            "Function",
            "HttpApi",
            "Stage",
        ] {
            assert!(
                t["Resources"][logical]["Properties"].get("Tags").is_some(),
                "{name}: {logical} untagged"
            );
        }
        assert_eq!(
            t["Resources"].get("Database").is_some(),
            spec.tier == Tier::Dedicated,
            "{name}"
        );
    }
}

#[test]
fn every_rendered_template_passes_cfn_lint() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, body, _) in rendered() {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, body).unwrap();
        files.push(path);
    }
    let platform = dir.path().join("platform.yaml");
    std::fs::write(
        &platform,
        render_platform("prod", &Platform::builtin(), &BTreeMap::new())
            .unwrap()
            .body,
    )
    .unwrap();
    files.push(platform);
    let out = std::process::Command::new("cfn-lint")
        .args(["--format", "parseable", "--regions", "eu-west-1", "--"])
        .args(&files)
        .output()
        .expect("cfn-lint is needed: pip install cfn-lint (scripts/test.sh does)");
    let report = String::from_utf8_lossy(&out.stdout);
    // cfn-lint's exit code is a bit mask: 2 = errors, 4 = warnings, 8 = informational.
    let code = out.status.code().unwrap_or(2);
    assert_eq!(
        code & 2,
        0,
        "cfn-lint found errors:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(code & 4, 0, "cfn-lint found warnings:\n{report}");
}

#[test]
fn every_rendered_template_passes_checkov() {
    // Issue 9 item 11: an independent IaC scanner agrees. Every check passes or is suppressed in the
    // template with a written reason; the only suppression is the dead-letter queue of a function that
    // is invoked synchronously only.
    let dir = tempfile::tempdir().unwrap();
    for (name, body, _) in rendered() {
        std::fs::write(dir.path().join(format!("{name}.yaml")), body).unwrap();
    }
    std::fs::write(
        dir.path().join("platform.yaml"),
        render_platform("prod", &Platform::builtin(), &BTreeMap::new())
            .unwrap()
            .body,
    )
    .unwrap();
    let out = std::process::Command::new("checkov")
        .args(["--framework", "cloudformation", "--skip-download", "--quiet", "-o", "json", "-d"])
        .arg(dir.path())
        .output()
        .expect("checkov is needed: scripts/test-prereqs.sh installs it (python3 -m venv /var/tmp/tenantctl-checkov && /var/tmp/tenantctl-checkov/bin/pip install checkov, then put its bin on PATH)");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON report ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let reports = match report {
        Value::Array(list) => list,
        one => vec![one],
    };
    let mut passed = 0;
    for r in &reports {
        let failed = r["results"]["failed_checks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let failures: Vec<String> = failed
            .iter()
            .map(|c| format!("{} {} in {}", c["check_id"], c["resource"], c["file_path"]))
            .collect();
        assert!(
            failures.is_empty(),
            "checkov failures:\n{}",
            failures.join("\n")
        );
        for skipped in r["results"]["skipped_checks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            assert_eq!(
                skipped["check_id"], "CKV_AWS_116",
                "an unexpected suppression: {skipped}"
            );
            assert!(
                skipped["check_result"]["suppress_comment"]
                    .as_str()
                    .is_some_and(|c| c.len() > 20),
                "a suppression without a reason: {skipped}"
            );
        }
        passed += r["summary"]["passed"].as_u64().unwrap_or(0);
    }
    assert!(passed > 100, "checkov ran checks ({passed} passed)");
}

#[test]
fn a_tenants_function_environment_fits_in_lambdas_4_kb() {
    // Lambda refuses a function whose environment variables total more than 4 KB; the runtime's
    // configuration (with the tenant's prices, of its own models only) travels there.
    for (name, body, spec) in rendered() {
        let t: Value = serde_norway::from_str(&body).unwrap();
        let vars = t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no environment"));
        let size: usize = vars
            .iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        Value::String(s) => s.len(),
                        other => sub_string(other).len(),
                    }
            })
            .sum();
        // Room for the most tags a manifest may declare (40, each key and value quoted, with a colon
        // and a comma).
        let tags_max = cli::manifest::TAG_BYTES_MAX + 40 * 6;
        assert!(
            size + tags_max < 4096,
            "{name}: {size} bytes of environment, and tags may add {tags_max}"
        );
        // The prices it carries are its own models' (each priced, none other).
        // The substitutions (the database's host and port) stand in for values.
        let config = sub_string(&vars["TENANTCTL_RUNTIME_CONFIG_JSON"])
            .replace("${TenantDatabasePort}", "5432")
            .replace("${TenantDatabaseHost}", "db")
            .replace("${DatabaseEndpoint}", "db");
        let config: Value =
            serde_json::from_str(&config).unwrap_or_else(|e| panic!("{name}: {e}: {config}"));
        // Its limits are the manifest's, a subject budget among them where it sets one.
        assert_eq!(
            config["tenant"]["limits"]["subject_monthly_budget"].as_i64(),
            spec.subject_monthly_budget.map(|b| b.0),
            "{name}"
        );
        // Its ledger rows carry its cost-allocation tags, from the manifest.
        assert_eq!(
            config["tenant"]["tags"]["cost-center"].as_str(),
            spec.tags.get("cost-center").map(String::as_str),
            "{name}"
        );
        let priced: Vec<(String, String)> = config["tenant"]["prices"]["versions"][0]["prices"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: the function is given no prices"))
            .iter()
            .map(|p| {
                (
                    p["provider"].as_str().unwrap().to_owned(),
                    p["model"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut own: Vec<(String, String)> = spec
            .models
            .providers
            .iter()
            .flat_map(|(p, policy)| {
                policy
                    .models
                    .iter()
                    .map(move |m| (p.as_str().to_owned(), m.to_string()))
            })
            .collect();
        let mut got = priced.clone();
        got.sort();
        own.sort();
        assert_eq!(got, own, "{name}");
    }
}
