//! The CloudFormation deployer's paths that moto cannot produce (issue 5: failure paths with
//! `aws-smithy-mocks`): each row of the stack-state table driven through the real SDK client with
//! AWS's documented responses, both "no changes" shapes, and a failed creation reported with its
//! resource's reason.

use std::time::Duration;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::operation::continue_update_rollback::ContinueUpdateRollbackOutput;
use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
use aws_sdk_cloudformation::types::{
    ChangeSetStatus, ResourceStatus, Stack, StackEvent, StackStatus,
};
use aws_smithy_mocks::{Rule, mock};
use cli::aws::deploy::{Outcome, Polling, StackRequest, deploy};

const POLL: Polling = Polling {
    max_delay: Duration::from_millis(1),
    timeout: Duration::from_secs(5),
    events: false,
};

fn mocked(rules: &[&Rule]) -> Client {
    tests::mocked_cfn(rules)
}

fn request() -> StackRequest {
    StackRequest {
        name: "tenantctl-prod-acme".into(),
        template: "{}".into(),
        parameters: vec![],
        keep_parameters: vec![],
        digest: None,
        allow_destructive: true,
        tags: Default::default(),
    }
}

fn stack(status: &str) -> DescribeStacksOutput {
    DescribeStacksOutput::builder()
        .stacks(
            Stack::builder()
                .stack_name("tenantctl-prod-acme")
                .stack_status(StackStatus::from(status))
                .creation_time(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
                .build(),
        )
        .build()
}

fn error_response(code: &str, message: &str) -> aws_smithy_runtime_api::http::Response {
    tests::cfn_error(code, message)
}

fn missing() -> aws_smithy_runtime_api::http::Response {
    error_response(
        "ValidationError",
        "Stack with id tenantctl-prod-acme does not exist",
    )
}

/// `describe_stacks` answering `statuses` in order (`None`: the stack does not exist).
fn describe(statuses: &[Option<&'static str>]) -> Rule {
    let mut seq = mock!(Client::describe_stacks).sequence();
    for s in statuses.iter().copied() {
        seq = match s {
            Some(status) => seq.output(move || stack(status)),
            None => seq.http_response(missing),
        };
    }
    seq.build()
}

fn change_set_ready() -> Rule {
    mock!(Client::describe_change_set).then_output(|| {
        DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::CreateComplete)
            .build()
    })
}

fn ok_create() -> Rule {
    mock!(Client::create_change_set)
        .then_output(|| CreateChangeSetOutput::builder().id("cs-1").build())
}

fn ok_execute() -> Rule {
    mock!(Client::execute_change_set).then_output(|| ExecuteChangeSetOutput::builder().build())
}

#[tokio::test]
async fn a_rolled_back_creation_is_deleted_then_created_again() {
    let describe = describe(&[
        Some("ROLLBACK_COMPLETE"),
        Some("DELETE_IN_PROGRESS"),
        None,
        None,
        Some("CREATE_IN_PROGRESS"),
        Some("CREATE_COMPLETE"),
    ]);
    let delete = mock!(Client::delete_stack).then_output(|| DeleteStackOutput::builder().build());
    let (create, ready, execute) = (ok_create(), change_set_ready(), ok_execute());
    let client = mocked(&[&describe, &delete, &create, &ready, &execute]);
    assert_eq!(
        deploy(&client, &request(), POLL, &|_| {}).await.unwrap(),
        Outcome::Created
    );
    assert_eq!(
        (delete.num_calls(), create.num_calls(), execute.num_calls()),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_failed_update_rollback_is_continued_then_updated() {
    let describe = describe(&[
        Some("UPDATE_ROLLBACK_FAILED"),
        Some("UPDATE_ROLLBACK_IN_PROGRESS"),
        Some("UPDATE_ROLLBACK_COMPLETE"),
        Some("UPDATE_ROLLBACK_COMPLETE"),
        Some("UPDATE_IN_PROGRESS"),
        Some("UPDATE_COMPLETE"),
    ]);
    let cont = mock!(Client::continue_update_rollback)
        .then_output(|| ContinueUpdateRollbackOutput::builder().build());
    let (create, ready, execute) = (ok_create(), change_set_ready(), ok_execute());
    let client = mocked(&[&describe, &cont, &create, &ready, &execute]);
    assert_eq!(
        deploy(&client, &request(), POLL, &|_| {}).await.unwrap(),
        Outcome::Updated
    );
    assert_eq!((cont.num_calls(), create.num_calls()), (1, 1));
}

#[tokio::test]
async fn an_operation_in_progress_is_waited_for_never_doubled() {
    let describe = describe(&[
        Some("UPDATE_IN_PROGRESS"),
        Some("UPDATE_IN_PROGRESS"),
        Some("UPDATE_COMPLETE"),
        Some("UPDATE_COMPLETE"),
        Some("UPDATE_IN_PROGRESS"),
        Some("UPDATE_COMPLETE"),
    ]);
    let (create, ready, execute) = (ok_create(), change_set_ready(), ok_execute());
    let client = mocked(&[&describe, &create, &ready, &execute]);
    assert_eq!(
        deploy(&client, &request(), POLL, &|_| {}).await.unwrap(),
        Outcome::Updated
    );
    assert_eq!(
        create.num_calls(),
        1,
        "one change set, after the running update finished"
    );
}

#[tokio::test]
async fn both_no_changes_shapes_are_success_and_nothing_executes() {
    // Shape 1: the change set is created and FAILS with the "didn't contain changes" reason.
    let describe1 = describe(&[Some("UPDATE_COMPLETE")]);
    let failed = mock!(Client::describe_change_set).then_output(|| {
        DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::Failed)
            .status_reason("The submitted information didn't contain changes. Submit different information to create a change set.")
            .build()
    });
    let cleanup =
        mock!(Client::delete_change_set).then_output(|| DeleteChangeSetOutput::builder().build());
    let (create, execute) = (ok_create(), ok_execute());
    let client = mocked(&[&describe1, &create, &failed, &cleanup, &execute]);
    assert_eq!(
        deploy(&client, &request(), POLL, &|_| {}).await.unwrap(),
        Outcome::NoChanges
    );
    assert_eq!(
        (execute.num_calls(), cleanup.num_calls()),
        (0, 1),
        "the empty change set is cleaned up, never executed"
    );

    // Shape 2: CreateChangeSet itself is refused with a validation error saying so.
    let describe2 = describe(&[Some("UPDATE_COMPLETE")]);
    let refused = mock!(Client::create_change_set).then_http_response(|| {
        error_response("ValidationError", "No updates are to be performed.")
    });
    let execute2 = ok_execute();
    let client = mocked(&[&describe2, &refused, &execute2]);
    assert_eq!(
        deploy(&client, &request(), POLL, &|_| {}).await.unwrap(),
        Outcome::NoChanges
    );
    assert_eq!(execute2.num_calls(), 0);
}

#[tokio::test]
async fn a_failed_stack_stops_with_a_hint_and_a_failed_creation_names_its_resource() {
    let describe1 = describe(&[Some("CREATE_FAILED")]);
    let create1 = ok_create();
    let client = mocked(&[&describe1, &create1]);
    let err = deploy(&client, &request(), POLL, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CREATE_FAILED") && err.contains("delete it"),
        "{err}"
    );
    assert_eq!(create1.num_calls(), 0);

    let describe2 = describe(&[
        None,
        Some("CREATE_IN_PROGRESS"),
        Some("ROLLBACK_IN_PROGRESS"),
        Some("ROLLBACK_COMPLETE"),
    ]);
    let events = mock!(Client::describe_stack_events).then_output(|| {
        DescribeStackEventsOutput::builder()
            .stack_events(
                StackEvent::builder()
                    .stack_id("s")
                    .event_id("e")
                    .stack_name("tenantctl-prod-acme")
                    .logical_resource_id("Function")
                    .resource_status(ResourceStatus::CreateFailed)
                    .resource_status_reason("Architecture arm64 is not supported in this region")
                    .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(0))
                    .build(),
            )
            .build()
    });
    let (create2, ready, execute) = (ok_create(), change_set_ready(), ok_execute());
    let client = mocked(&[&describe2, &events, &create2, &ready, &execute]);
    let err = deploy(&client, &request(), POLL, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ROLLBACK_COMPLETE") && err.contains("Function: Architecture arm64"),
        "{err}"
    );
}

#[tokio::test]
async fn while_a_stack_is_in_progress_its_newest_event_is_reported_only_when_asked() {
    for events in [true, false] {
        let describe = describe(&[
            None,
            Some("CREATE_IN_PROGRESS"),
            Some("CREATE_IN_PROGRESS"),
            Some("CREATE_COMPLETE"),
        ]);
        let event = |id: &'static str, logical: &'static str, at: i64| {
            move || {
                DescribeStackEventsOutput::builder()
                    .stack_events(
                        StackEvent::builder()
                            .stack_id("s")
                            .stack_name("tenantctl-prod-acme")
                            .event_id(id)
                            .logical_resource_id(logical)
                            .resource_status(ResourceStatus::CreateInProgress)
                            .timestamp(aws_sdk_cloudformation::primitives::DateTime::from_secs(at))
                            .build(),
                    )
                    .build()
            }
        };
        let stack_events = mock!(Client::describe_stack_events)
            .sequence()
            .output(event("e1", "FunctionRole", 1))
            .output(event("e2", "Function", 2))
            .build();
        let client = mocked(&[
            &describe,
            &ok_create(),
            &change_set_ready(),
            &ok_execute(),
            &stack_events,
        ]);
        let seen = std::sync::Mutex::new(Vec::<String>::new());
        let report = |s: &str| seen.lock().unwrap().push(s.to_owned());
        let polling = Polling { events, ..POLL };
        assert_eq!(
            deploy(&client, &request(), polling, &report).await.unwrap(),
            Outcome::Created
        );
        let seen = seen.into_inner().unwrap();
        if events {
            assert!(
                seen.iter()
                    .any(|s| s == "CREATE_IN_PROGRESS: FunctionRole CREATE_IN_PROGRESS")
                    && seen
                        .iter()
                        .any(|s| s == "CREATE_IN_PROGRESS: Function CREATE_IN_PROGRESS"),
                "{seen:?}"
            );
        } else {
            assert_eq!(stack_events.num_calls(), 0, "{seen:?}");
        }
    }
}

/// Issue 13: an update whose change set removes or replaces a resource is not executed unless the
/// request allows it (`apply --yes`); the change set is deleted and the error names each resource.
#[tokio::test]
async fn a_change_set_that_replaces_or_removes_a_resource_is_not_executed_without_approval() {
    use aws_sdk_cloudformation::types::{
        Change, ChangeAction, ChangeType, Replacement, ResourceChange,
    };
    let destructive = || {
        mock!(Client::describe_change_set).then_output(|| {
            DescribeChangeSetOutput::builder()
                .status(ChangeSetStatus::CreateComplete)
                .changes(
                    Change::builder()
                        .r#type(ChangeType::Resource)
                        .resource_change(
                            ResourceChange::builder()
                                .action(ChangeAction::Modify)
                                .logical_resource_id("Database")
                                .resource_type("AWS::RDS::DBInstance")
                                .replacement(Replacement::True)
                                .build(),
                        )
                        .build(),
                )
                .changes(
                    Change::builder()
                        .r#type(ChangeType::Resource)
                        .resource_change(
                            ResourceChange::builder()
                                .action(ChangeAction::Remove)
                                .logical_resource_id("LogGroup")
                                .resource_type("AWS::Logs::LogGroup")
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
    };
    let describe_rule = describe(&[Some("UPDATE_COMPLETE")]);
    let (create, ready, execute) = (ok_create(), destructive(), ok_execute());
    let delete_cs =
        mock!(Client::delete_change_set).then_output(|| DeleteChangeSetOutput::builder().build());
    let client = mocked(&[&describe_rule, &create, &ready, &execute, &delete_cs]);
    let refused = StackRequest {
        allow_destructive: false,
        ..request()
    };
    let err = deploy(&client, &refused, POLL, &|_| {}).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("replace `Database` (AWS::RDS::DBInstance)")
            && text.contains("remove `LogGroup` (AWS::Logs::LogGroup)")
            && text.contains("--yes"),
        "{text}"
    );
    assert_eq!((execute.num_calls(), delete_cs.num_calls()), (0, 1));

    // Approved, the same change set is executed.
    let describe_rule = describe(&[Some("UPDATE_COMPLETE"), Some("UPDATE_COMPLETE")]);
    let (create, ready, execute) = (ok_create(), destructive(), ok_execute());
    let client = mocked(&[&describe_rule, &create, &ready, &execute]);
    assert_eq!(
        deploy(&client, &request(), POLL, &|_| {}).await.unwrap(),
        Outcome::Updated
    );
    assert_eq!(execute.num_calls(), 1);
}
