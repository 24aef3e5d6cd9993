//! CloudFormation orchestration against a local moto server (issue 5): the real platform stack deploys
//! through change sets; a second apply is "no changes"; a changed template is an update. moto's
//! CloudFormation skips some
//! resource types and never rolls back, so this proves the orchestration, not the templates (cfn-lint
//! and the policy tests in `cli/tests/it/aws.rs` do that).
//!
//! Tenant stacks and the whole CLI flow are in `aws_flow.rs`. Recovery from REVIEW_IN_PROGRESS is not
//! tested on moto (moto leaves the stack in review after the new change set executes); the
//! `aws-smithy-mocks` tests replay AWS's documented responses for it.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudformation::config::{Credentials, Region};
use cli::aws::deploy::{Outcome, Polling, StackRequest, deploy};
use cli::aws::render_platform;
use cli::platform::Platform;

async fn client(moto: &tests::Moto) -> aws_sdk_cloudformation::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(&moto.url)
        .load()
        .await;
    aws_sdk_cloudformation::Client::new(&config)
}

fn platform(cost_center: &str) -> StackRequest {
    StackRequest {
        name: "tenantctl-test-platform".into(),
        template: render_platform(
            "test",
            &Platform::builtin(),
            &BTreeMap::from([("cost-center".into(), cost_center.into())]),
        )
        .unwrap()
        .body,
        parameters: vec![],
        keep_parameters: vec![],
        digest: None,
        allow_destructive: true,
        tags: BTreeMap::from([
            ("environment".into(), "test".into()),
            ("cost-center".into(), cost_center.into()),
        ]),
    }
}

const POLLING: Polling = Polling {
    max_delay: Duration::from_millis(200),
    timeout: Duration::from_secs(60),
    events: false,
};

#[tokio::test]
async fn the_platform_stack_deploys_through_change_sets_and_reapplying_changes_nothing() {
    let moto = tests::moto().await;
    let client = client(&moto).await;
    let events = std::sync::Mutex::new(Vec::<String>::new());
    let report = |s: &str| events.lock().unwrap().push(s.to_owned());
    assert_eq!(
        deploy(&client, &platform("cc-1"), POLLING, &report)
            .await
            .unwrap(),
        Outcome::Created
    );
    assert_eq!(
        deploy(&client, &platform("cc-1"), POLLING, &report)
            .await
            .unwrap(),
        Outcome::NoChanges
    );
    assert_eq!(
        deploy(&client, &platform("cc-2"), POLLING, &report)
            .await
            .unwrap(),
        Outcome::Updated
    );
    assert_eq!(
        deploy(&client, &platform("cc-2"), POLLING, &report)
            .await
            .unwrap(),
        Outcome::NoChanges
    );
    let seen = events.lock().unwrap().clone();
    assert!(
        seen.iter().any(|e| e == "CREATE_COMPLETE") && seen.iter().any(|e| e == "UPDATE_COMPLETE"),
        "{seen:?}"
    );
    // (moto keeps a stack's original tags on update; on AWS the change set's tags replace them.)
}
