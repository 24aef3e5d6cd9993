//! The AWS fleet's failure paths moto cannot produce (issue 5), with `aws-smithy-mocks` answering the
//! real SDK clients: throttling retried with backoff, Cost Explorer's batches and per-key answers, one
//! tenant failing while others are in flight and more wait (they all go on), and offboarding a
//! dedicated tenant (deletion protection lifted, stack deleted, only its secrets scheduled).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
use aws_sdk_cloudformation::types::{ChangeSetStatus, Output, Stack, StackStatus};
use aws_sdk_costexplorer::operation::update_cost_allocation_tags_status::UpdateCostAllocationTagsStatusOutput;
use aws_sdk_costexplorer::types::UpdateCostAllocationTagsStatusError;
use aws_smithy_mocks::{MockResponse, Rule, mock};
use cli::aws::deploy::{Outcome, Polling, StackRequest, deploy};
use cli::aws::fleet::{Aws, Bars, FleetOptions};
use runtime::domain::TenantId;

const POLL: Polling = Polling {
    max_delay: Duration::from_millis(1),
    timeout: Duration::from_secs(5),
    events: false,
};

fn interceptor(rules: &[&Rule]) -> aws_smithy_mocks::MockResponseInterceptor {
    tests::mock_interceptor(rules)
}

fn cfn(rules: &[&Rule]) -> Client {
    tests::mocked_cfn(rules)
}

fn cost_explorer(rules: &[&Rule]) -> aws_sdk_costexplorer::Client {
    aws_sdk_costexplorer::Client::from_conf(
        aws_sdk_costexplorer::Config::builder()
            .with_test_defaults()
            .region(aws_sdk_costexplorer::config::Region::new("us-east-1"))
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor(rules))
            .build(),
    )
}

fn error_response(code: &str, message: &str) -> aws_smithy_runtime_api::http::Response {
    tests::cfn_error(code, message)
}

fn stack(name: &str, status: &str, outputs: &BTreeMap<String, String>) -> DescribeStacksOutput {
    let mut s = Stack::builder()
        .stack_name(name)
        .stack_status(StackStatus::from(status))
        .creation_time(aws_sdk_cloudformation::primitives::DateTime::from_secs(0));
    for (k, v) in outputs {
        s = s.outputs(Output::builder().output_key(k).output_value(v).build());
    }
    DescribeStacksOutput::builder().stacks(s.build()).build()
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_until_it_passes() {
    // Five throttled answers in a row: more than the SDK's own three attempts, so the deployer's
    // backoff is what carries the call through.
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .http_response(|| error_response("Throttling", "Rate exceeded"))
        .times(5)
        .http_response(|| {
            error_response(
                "ValidationError",
                "Stack with id tenantctl-prod-acme does not exist",
            )
        })
        .output(|| stack("tenantctl-prod-acme", "CREATE_COMPLETE", &BTreeMap::new()))
        .build();
    let create = mock!(Client::create_change_set)
        .sequence()
        .http_response(|| error_response("Throttling", "Rate exceeded"))
        .output(|| CreateChangeSetOutput::builder().id("cs").build())
        .build();
    let ready = mock!(Client::describe_change_set).then_output(|| {
        DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::CreateComplete)
            .build()
    });
    let execute =
        mock!(Client::execute_change_set).then_output(|| ExecuteChangeSetOutput::builder().build());
    let client = cfn(&[&describe, &create, &ready, &execute]);
    let req = StackRequest {
        name: "tenantctl-prod-acme".into(),
        template: "{}".into(),
        parameters: vec![],
        keep_parameters: vec![],
        tags: BTreeMap::new(),
        digest: None,
        allow_destructive: true,
    };
    let outcome = deploy(&client, &req, POLL, &|_| {}).await.unwrap();
    assert_eq!(outcome, Outcome::Created);
    assert!(
        describe.num_calls() >= 7 && create.num_calls() == 2,
        "{} {}",
        describe.num_calls(),
        create.num_calls()
    );
}

#[tokio::test]
async fn cost_tags_go_in_batches_of_20_and_unseen_keys_are_pending_not_errors() {
    let seen = Arc::new(Mutex::new(Vec::<usize>::new()));
    let log = seen.clone();
    let update = mock!(aws_sdk_costexplorer::Client::update_cost_allocation_tags_status)
        .then_compute_output(move |req| {
            let keys: Vec<String> = req
                .cost_allocation_tags_status()
                .iter()
                .map(|e| e.tag_key().to_owned())
                .collect();
            log.lock().unwrap().push(keys.len());
            let mut out = UpdateCostAllocationTagsStatusOutput::builder();
            for k in keys {
                if k == "key-07" {
                    out = out.errors(
                        UpdateCostAllocationTagsStatusError::builder()
                            .tag_key(&k)
                            .code("TagKeysNotFoundException")
                            .message("Tag keys not found")
                            .build(),
                    );
                } else if k == "key-30" {
                    out = out.errors(
                        UpdateCostAllocationTagsStatusError::builder()
                            .tag_key(&k)
                            .code("InvalidParameterValue")
                            .message("aws: prefix is reserved")
                            .build(),
                    );
                }
            }
            out.build()
        });
    let client = cost_explorer(&[&update]);
    let keys: BTreeSet<String> = (0..45).map(|i| format!("key-{i:02}")).collect();
    let report = cli::aws::costs::activate(&client, &keys).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [20, 20, 5]);
    assert_eq!(report.activated.len(), 43);
    assert_eq!(
        report.pending.keys().collect::<Vec<_>>(),
        ["key-07"],
        "{report:?}"
    );
    assert_eq!(
        report.failed.keys().collect::<Vec<_>>(),
        ["key-30"],
        "{report:?}"
    );
    assert!(report.failed["key-30"].contains("InvalidParameterValue"));
}

#[tokio::test]
async fn a_cost_explorer_refusal_is_an_error_naming_the_permission() {
    let denied = mock!(aws_sdk_costexplorer::Client::update_cost_allocation_tags_status)
        .then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    r#"{"__type":"AccessDeniedException","Message":"not authorized"}"#,
                ),
            )
        });
    let client = cost_explorer(&[&denied]);
    let keys = BTreeSet::from(["tenant".to_owned()]);
    let err = cli::aws::costs::activate(&client, &keys)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ce:UpdateCostAllocationTagsStatus"), "{err}");
}

#[tokio::test]
async fn one_tenant_failing_does_not_stop_those_in_flight_or_those_after_it() {
    let target = cli::testing::deployment();
    target.ensure_database().await.unwrap();
    let platform = cli::platform::Platform::builtin();
    let env = "prod";
    let platform_digest = cli::aws::render_platform(
        env,
        &platform,
        &cli::aws::platform_tags(env, &BTreeMap::new()),
    )
    .unwrap()
    .digest;
    let mut platform_outputs: BTreeMap<String, String> = [
        ("DatabaseEndpoint", "db.example.internal"),
        ("PrivateSubnetA", "subnet-a"),
        ("PrivateSubnetB", "subnet-b"),
        ("FunctionSecurityGroup", "sg-f"),
        ("DbiResourceId", "db-ABC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    platform_outputs.insert(cli::aws::DIGEST_OUTPUT.into(), platform_digest);

    // A tiny CloudFormation: stacks exist once their change set executed; `bbb`'s change set is refused.
    let created = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let (seen, outputs) = (created.clone(), platform_outputs.clone());
    let describe = mock!(Client::describe_stacks).then_compute_response(move |req| {
        let Some(name) = req.stack_name().map(str::to_owned) else {
            // The listing: the platform and every stack created so far.
            let mut out = DescribeStacksOutput::builder();
            for s in stack("tenantctl-prod-platform", "UPDATE_COMPLETE", &outputs).stacks() {
                out = out.stacks(s.clone());
            }
            for name in seen.lock().unwrap().iter() {
                for s in stack(name, "CREATE_COMPLETE", &BTreeMap::new()).stacks() {
                    out = out.stacks(s.clone());
                }
            }
            return MockResponse::Output(out.build());
        };
        if name == "tenantctl-prod-platform" {
            MockResponse::Output(stack(&name, "UPDATE_COMPLETE", &outputs))
        } else if seen.lock().unwrap().contains(&name) {
            MockResponse::Output(stack(&name, "CREATE_COMPLETE", &BTreeMap::new()))
        } else {
            MockResponse::Http(error_response(
                "ValidationError",
                &format!("Stack with id {name} does not exist"),
            ))
        }
    });
    let create = mock!(Client::create_change_set).then_compute_response(|req| {
        if req.stack_name() == Some("tenantctl-prod-bbb") {
            MockResponse::Http(error_response(
                "ValidationError",
                "Template format error: Unresolved resource dependencies [Missing]",
            ))
        } else {
            MockResponse::Output(CreateChangeSetOutput::builder().id("cs").build())
        }
    });
    let ready = mock!(Client::describe_change_set).then_output(|| {
        DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::CreateComplete)
            .build()
    });
    let seen = created.clone();
    let execute = mock!(Client::execute_change_set).then_compute_output(move |req| {
        seen.lock()
            .unwrap()
            .insert(req.stack_name().unwrap_or_default().to_owned());
        ExecuteChangeSetOutput::builder().build()
    });
    let costs = mock!(aws_sdk_costexplorer::Client::update_cost_allocation_tags_status)
        .then_output(|| UpdateCostAllocationTagsStatusOutput::builder().build());

    let aws = Aws {
        env: env.into(),
        cfn: cfn(&[&describe, &create, &ready, &execute]),
        cost_explorer: cost_explorer(&[&costs]),
        secrets: runtime::secrets::AwsSecretStore::from_client(
            aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::Config::builder()
                    .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
                    .region(aws_sdk_secretsmanager::config::Region::new("eu-west-1"))
                    .build(),
            ),
        ),
        calls: Default::default(),
        region: "eu-west-1".into(),
        polling: POLL,
    };
    let base = cli::manifest::TenantSpec::from_file(
        &cli::testing::repo_root().join("tenants/acme.yaml"),
        &platform,
    )
    .unwrap();
    let specs: Vec<_> = ["aaa", "bbb", "ccc"]
        .iter()
        .map(|id| {
            let mut s = base.clone();
            s.id = TenantId::parse(id).unwrap();
            s
        })
        .collect();
    let db_plan = cli::provision::plan::plan_for(&target, &specs, false)
        .await
        .unwrap();
    let opts = FleetOptions {
        arch: cli::aws::Arch::X86_64,
        code: "s3://code/runtime.zip".parse().unwrap(),
        parallelism: 2,
        allow_destructive: false,
    };
    let report = cli::aws::fleet::apply(
        &aws,
        &target,
        &platform,
        &specs,
        &db_plan,
        &opts,
        &Bars::new(false),
    )
    .await
    .unwrap();
    assert_eq!(report.platform, Outcome::NoChanges, "digest matched");
    let results: Vec<(String, &str)> = report
        .outcomes
        .iter()
        .map(|o| (o.tenant.to_string(), o.result))
        .collect();
    assert_eq!(
        results,
        [
            ("aaa".into(), "created"),
            ("bbb".into(), "failed"),
            ("ccc".into(), "created")
        ]
    );
    let error = report.outcomes[1].error.as_deref().unwrap();
    assert!(
        error.contains("Unresolved resource dependencies"),
        "{error}"
    );

    // Only tenants whose stack settled are in the registry; the failure is audited.
    let admin = target.admin().await.unwrap();
    let registered = tests::column(
        &admin,
        "SELECT tenant_id FROM control.tenants ORDER BY tenant_id",
    )
    .await;
    assert_eq!(registered, ["aaa", "ccc"]);
    let failed: i64 = admin
        .query_one(
            "SELECT count(*) FROM control.audit_events WHERE tenant_id = 'bbb' AND action = 'apply-aws' AND outcome = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 1);
    // Cost tags were activated for the tenants that succeeded.
    assert_eq!(costs.num_calls(), 1);
}

#[tokio::test]
async fn offboarding_a_dedicated_tenant_lifts_deletion_protection_deletes_the_stack_and_schedules_secrets()
 {
    use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
    use aws_sdk_cloudformation::types::Parameter;
    use aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretOutput;
    use aws_sdk_secretsmanager::operation::list_secrets::ListSecretsOutput;
    use aws_sdk_secretsmanager::types::SecretListEntry;

    let target = cli::testing::deployment();
    cli::provision::apply::ensure_control_plane(&target)
        .await
        .unwrap();
    let name = "tenantctl-prod-acme";
    // CloudFormation: protected, then unprotected by a change set on the previous template, then gone.
    let phase = Arc::new(Mutex::new(0u8));
    let p = phase.clone();
    let describe = mock!(Client::describe_stacks).then_compute_response(move |_| {
        let (protection, status) = match *p.lock().unwrap() {
            0 => ("true", StackStatus::CreateComplete),
            1 => ("false", StackStatus::UpdateComplete),
            _ => {
                return MockResponse::Http(error_response(
                    "ValidationError",
                    "Stack with id tenantctl-prod-acme does not exist",
                ));
            }
        };
        let stack = Stack::builder()
            .stack_name(name)
            .stack_status(status)
            .creation_time(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
            .parameters(
                Parameter::builder()
                    .parameter_key("DeletionProtection")
                    .parameter_value(protection)
                    .build(),
            )
            .parameters(
                Parameter::builder()
                    .parameter_key("KmsKeyArn")
                    .parameter_value("arn:aws:kms:eu-west-1:1:key/k")
                    .build(),
            )
            .build();
        MockResponse::Output(DescribeStacksOutput::builder().stacks(stack).build())
    });
    let create = mock!(Client::create_change_set)
        .match_requests(|req| {
            req.use_previous_template() == Some(true)
                && req.parameters().iter().any(|p| {
                    p.parameter_key() == Some("DeletionProtection")
                        && p.parameter_value() == Some("false")
                })
                && req.parameters().iter().any(|p| {
                    p.parameter_key() == Some("KmsKeyArn") && p.use_previous_value() == Some(true)
                })
        })
        .then_output(|| CreateChangeSetOutput::builder().id("cs").build());
    let ready = mock!(Client::describe_change_set).then_output(|| {
        DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::CreateComplete)
            .build()
    });
    let p = phase.clone();
    let execute = mock!(Client::execute_change_set).then_compute_output(move |_| {
        *p.lock().unwrap() = 1;
        ExecuteChangeSetOutput::builder().build()
    });
    let p = phase.clone();
    let delete = mock!(Client::delete_stack).then_compute_output(move |_| {
        *p.lock().unwrap() = 2;
        DeleteStackOutput::builder().build()
    });
    // Secrets Manager: two of acme's secrets (and one of acme2's, which the prefix must not catch).
    let list = mock!(aws_sdk_secretsmanager::Client::list_secrets).then_output(|| {
        let entry = |n: &str| SecretListEntry::builder().name(n).build();
        ListSecretsOutput::builder()
            .secret_list(entry("tenants/acme/db-password"))
            .secret_list(entry("tenants/acme/openai-api-key"))
            .secret_list(entry("tenants/acme2/openai-api-key"))
            .build()
    });
    let deleted = Arc::new(Mutex::new(Vec::<String>::new()));
    let d = deleted.clone();
    let delete_secret =
        mock!(aws_sdk_secretsmanager::Client::delete_secret).then_compute_output(move |req| {
            assert_eq!(req.recovery_window_in_days(), Some(7));
            d.lock()
                .unwrap()
                .push(req.secret_id().unwrap_or_default().to_owned());
            DeleteSecretOutput::builder().build()
        });
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .with_test_defaults()
            .region(aws_sdk_secretsmanager::config::Region::new("eu-west-1"))
            .http_client(aws_smithy_mocks::create_mock_http_client())
            .interceptor(interceptor(&[&list, &delete_secret]))
            .build(),
    );
    let aws = Aws {
        env: "prod".into(),
        cfn: cfn(&[&describe, &create, &ready, &execute, &delete]),
        cost_explorer: cost_explorer(&[]),
        secrets: runtime::secrets::AwsSecretStore::from_client(secrets),
        calls: Default::default(),
        region: "eu-west-1".into(),
        polling: POLL,
    };
    let tenant = TenantId::parse("acme").unwrap();
    let report = cli::aws::fleet::offboard(
        &aws,
        &target,
        &tenant,
        runtime::domain::Tier::Dedicated,
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert!(report.stack_deleted && report.final_snapshot, "{report:?}");
    assert_eq!(create.num_calls(), 1, "deletion protection lifted once");
    assert_eq!(delete.num_calls(), 1);
    assert_eq!(
        *deleted.lock().unwrap(),
        ["tenants/acme/db-password", "tenants/acme/openai-api-key"]
    );
    let admin = target.admin().await.unwrap();
    let steps = tests::column(
        &admin,
        "SELECT outcome FROM control.audit_events WHERE tenant_id = 'acme' ORDER BY seq",
    )
    .await;
    assert_eq!(
        steps,
        [
            "deletion_protection_off",
            "stack_deleted",
            "secrets_scheduled_for_deletion"
        ]
    );
}

#[tokio::test]
async fn what_each_tenant_cost_joins_the_ledger_with_aws_spend_by_tenant_tag() {
    // Issue 11 item 6, `tenantctl cost report`: AWS spend from Cost Explorer (`GetCostAndUsage`,
    // unblended, the month, grouped by the `tenant` cost-allocation tag, every page) next to each
    // tenant's LLM spend; spend of no known tenant shown apart, amounts exact to the micro-USD.
    use aws_sdk_costexplorer::operation::get_cost_and_usage::GetCostAndUsageOutput;
    use aws_sdk_costexplorer::types::{Group, MetricValue, ResultByTime};
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let group = |key: &str, amount: &str| {
        Group::builder()
            .keys(key)
            .metrics(
                "UnblendedCost",
                MetricValue::builder().amount(amount).unit("USD").build(),
            )
            .build()
    };
    let (g1, g2, g3, g4) = (
        group("tenant$acme", "12.3456789"),
        group("tenant$", "3.00"),
        group("tenant$globex", "0.5"),
        group("tenant$gone", "1.25"),
    );
    let pages = mock!(aws_sdk_costexplorer::Client::get_cost_and_usage)
        .sequence()
        .output(move || {
            GetCostAndUsageOutput::builder()
                .results_by_time(
                    ResultByTime::builder()
                        .groups(g1.clone())
                        .groups(g2.clone())
                        .build(),
                )
                .next_page_token("page-2")
                .build()
        })
        .output(move || {
            GetCostAndUsageOutput::builder()
                .results_by_time(
                    ResultByTime::builder()
                        .groups(g3.clone())
                        .groups(g4.clone())
                        .build(),
                )
                .build()
        })
        .build();
    let record = mock!(aws_sdk_costexplorer::Client::get_cost_and_usage)
        .match_requests(move |req| {
            let period = req.time_period().unwrap();
            log.lock().unwrap().push((
                period.start().to_owned(),
                period.end().to_owned(),
                req.group_by()[0].key().unwrap_or_default().to_owned(),
                req.metrics().to_vec(),
                req.next_page_token().map(str::to_owned),
            ));
            false
        })
        .then_output(|| GetCostAndUsageOutput::builder().build());
    let client = cost_explorer(&[&record, &pages]);
    let spend = cli::aws::costs::month_by_tag(
        &client,
        "tenant",
        &cli::usage::month_start("2026-12").unwrap(),
        &cli::usage::next_month_start("2026-12").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        spend,
        BTreeMap::from([
            ("".to_owned(), 3_000_000),
            ("acme".to_owned(), 12_345_679),
            ("globex".to_owned(), 500_000),
            ("gone".to_owned(), 1_250_000),
        ])
    );
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "both pages");
    assert_eq!(
        (
            asked[0].0.as_str(),
            asked[0].1.as_str(),
            asked[0].2.as_str()
        ),
        ("2026-12-01", "2027-01-01", "tenant")
    );
    assert_eq!(asked[0].3, ["UnblendedCost"]);
    assert_eq!(asked[1].4.as_deref(), Some("page-2"));

    let sums = |cost: i64| cli::usage::Sums {
        requests: 1,
        input_tokens: 1,
        output_tokens: 1,
        cost_micro_usd: cost,
    };
    let usage = cli::usage::MonthReport {
        month: "2026-12".into(),
        currency: "USD",
        unit: "micro_usd",
        lines: Vec::new(),
        by_tenant: BTreeMap::from([
            ("acme".to_owned(), sums(4_000)),
            ("globex".to_owned(), sums(0)),
            ("initech".to_owned(), sums(7)),
        ]),
        cost_centers: BTreeMap::from([
            ("acme".to_owned(), "cc-4100".to_owned()),
            ("globex".to_owned(), "cc-7300".to_owned()),
            ("initech".to_owned(), "cc-1".to_owned()),
        ]),
        by_cost_center: BTreeMap::new(),
        cost_differs: Vec::new(),
        totals: sums(4_007),
    };
    let report = cli::usage::cost_report(&usage, &spend).unwrap();
    let lines: Vec<(&str, &str, i64, i64, i64)> = report
        .lines
        .iter()
        .map(|l| {
            (
                l.tenant.as_str(),
                l.cost_center.as_str(),
                l.llm_micro_usd,
                l.aws_micro_usd,
                l.total_micro_usd,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("acme", "cc-4100", 4_000, 12_345_679, 12_349_679),
            ("globex", "cc-7300", 0, 500_000, 500_000),
            ("initech", "cc-1", 7, 0, 7),
        ]
    );
    assert_eq!(report.aws_untagged_micro_usd, 3_000_000);
    assert_eq!(report.aws_other_tenants_micro_usd, 1_250_000);
    assert_eq!(report.llm_total_micro_usd, 4_007);
    assert_eq!(
        report.aws_total_micro_usd,
        spend.values().sum::<i64>(),
        "every AWS dollar is in the report once"
    );
    assert!(report.csv().starts_with("month,tenant,cost_center,llm_micro_usd,aws_micro_usd,total_micro_usd\n2026-12,acme,cc-4100,4000,12345679,12349679\n"));
}
