//! Deploys one CloudFormation stack through change sets, following `changeset::action_for` until the
//! stack settles: create or update via a reviewed change set, "no changes" as success (both shapes),
//! stale change sets replaced, rolled-back creations deleted and recreated, failed update rollbacks
//! continued, and never a second operation while one runs. Polls on its own jittered schedule (the SDK
//! waiters' 30 s minimum is too coarse for progress reporting) and reports stack status changes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Parameter, Tag};
use serde::Serialize;

use super::changeset::{Action, action_for, is_no_changes, operation_in_progress, poll_delay};

/// What a deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    NoChanges,
}

/// One stack to deploy.
#[derive(Debug, Clone)]
pub struct StackRequest {
    pub name: String,
    pub template: String,
    pub parameters: Vec<(String, String)>,
    pub tags: BTreeMap<String, String>,
}

/// Polling limits.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub max_delay: Duration,
    pub timeout: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(3600),
        }
    }
}

fn jitter() -> f64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn err_text<E: std::error::Error + 'static>(
    e: aws_sdk_cloudformation::error::SdkError<E>,
) -> String {
    aws_sdk_cloudformation::error::DisplayErrorContext(e).to_string()
}

/// The stack's status, `None` when it does not exist.
pub async fn stack_status(client: &Client, name: &str) -> Result<Option<String>> {
    match client.describe_stacks().stack_name(name).send().await {
        Ok(out) => Ok(out
            .stacks()
            .first()
            .and_then(|s| s.stack_status())
            .map(|s| s.as_str().to_owned())),
        Err(e) => {
            let text = err_text(e);
            if text.contains("does not exist") {
                Ok(None)
            } else {
                bail!("DescribeStacks `{name}`: {text}")
            }
        }
    }
}

/// Waits until the stack is no longer `*_IN_PROGRESS`; returns its settled status (`None`: gone).
async fn settle(
    client: &Client,
    name: &str,
    polling: Polling,
    report: &(dyn Fn(&str) + Sync),
) -> Result<Option<String>> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    for n in 0u32.. {
        let status = stack_status(client, name).await?;
        let shown = status.clone().unwrap_or_else(|| "DELETE_COMPLETE".into());
        if shown != last {
            report(&shown);
            last = shown;
        }
        match &status {
            Some(s) if operation_in_progress(s) => {}
            _ => return Ok(status),
        }
        if start.elapsed() > polling.timeout {
            bail!(
                "stack `{name}` is still `{last}` after {:?}",
                polling.timeout
            );
        }
        tokio::time::sleep(poll_delay(n, polling.max_delay, jitter())).await;
    }
    unreachable!("the poll loop only returns")
}

/// The first failed resource event's reason, for error messages.
async fn failure_reason(client: &Client, name: &str) -> String {
    let Ok(out) = client.describe_stack_events().stack_name(name).send().await else {
        return String::new();
    };
    out.stack_events()
        .iter()
        .rev()
        .find(|e| {
            e.resource_status()
                .is_some_and(|s| s.as_str().ends_with("_FAILED"))
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.logical_resource_id().unwrap_or("?"),
                e.resource_status_reason().unwrap_or("no reason given")
            )
        })
        .unwrap_or_default()
}

async fn change_set(
    client: &Client,
    req: &StackRequest,
    kind: ChangeSetType,
    polling: Polling,
    report: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    let cs_name = format!("tenantctl-{}", uuid::Uuid::new_v4().simple());
    let mut create = client
        .create_change_set()
        .stack_name(&req.name)
        .change_set_name(&cs_name)
        .change_set_type(kind.clone())
        .template_body(&req.template)
        .capabilities(Capability::CapabilityNamedIam);
    for (k, v) in &req.parameters {
        create = create.parameters(
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build(),
        );
    }
    for (k, v) in &req.tags {
        create = create.tags(Tag::builder().key(k).value(v).build());
    }
    if let Err(e) = create.send().await {
        let text = err_text(e);
        if is_no_changes(&text) {
            return Ok(Outcome::NoChanges);
        }
        bail!("CreateChangeSet for `{}`: {text}", req.name);
    }
    // Wait for the change set to be computed.
    for n in 0u32.. {
        let cs = client
            .describe_change_set()
            .stack_name(&req.name)
            .change_set_name(&cs_name)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("DescribeChangeSet for `{}`: {}", req.name, err_text(e))
            })?;
        match cs.status() {
            Some(ChangeSetStatus::CreateComplete) => break,
            Some(ChangeSetStatus::Failed) => {
                let reason = cs.status_reason().unwrap_or_default().to_owned();
                let _ = client
                    .delete_change_set()
                    .stack_name(&req.name)
                    .change_set_name(&cs_name)
                    .send()
                    .await;
                if is_no_changes(&reason) {
                    return Ok(Outcome::NoChanges);
                }
                bail!("the change set for `{}` failed: {reason}", req.name);
            }
            _ => tokio::time::sleep(poll_delay(n, polling.max_delay, jitter())).await,
        }
    }
    report(&format!("executing change set {cs_name}"));
    client
        .execute_change_set()
        .stack_name(&req.name)
        .change_set_name(&cs_name)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("ExecuteChangeSet for `{}`: {}", req.name, err_text(e)))?;
    let settled = settle(client, &req.name, polling, report).await?;
    match (kind, settled.as_deref()) {
        (ChangeSetType::Create, Some("CREATE_COMPLETE")) => Ok(Outcome::Created),
        (ChangeSetType::Update, Some("UPDATE_COMPLETE")) => Ok(Outcome::Updated),
        (_, status) => {
            let reason = failure_reason(client, &req.name).await;
            bail!(
                "stack `{}` ended `{}`: {reason}",
                req.name,
                status.unwrap_or("deleted")
            )
        }
    }
}

/// Deploys `req`, following the state table until the stack is created, updated or unchanged.
pub async fn deploy(
    client: &Client,
    req: &StackRequest,
    polling: Polling,
    report: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    for _ in 0..6 {
        let status = stack_status(client, &req.name).await?;
        match action_for(status.as_deref()) {
            Action::CreateChangeSet => {
                return change_set(client, req, ChangeSetType::Create, polling, report).await;
            }
            Action::UpdateChangeSet => {
                return change_set(client, req, ChangeSetType::Update, polling, report).await;
            }
            Action::ReplaceStaleChangeSet => {
                let sets = client
                    .list_change_sets()
                    .stack_name(&req.name)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("ListChangeSets for `{}`: {}", req.name, err_text(e))
                    })?;
                for cs in sets.summaries() {
                    if let Some(id) = cs.change_set_id() {
                        let _ = client.delete_change_set().change_set_name(id).send().await;
                    }
                }
                return change_set(client, req, ChangeSetType::Create, polling, report).await;
            }
            Action::DeleteThenCreate => {
                report("deleting the rolled-back stack");
                client
                    .delete_stack()
                    .stack_name(&req.name)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("DeleteStack `{}`: {}", req.name, err_text(e)))?;
                settle(client, &req.name, polling, report).await?;
            }
            Action::ContinueRollback => {
                client
                    .continue_update_rollback()
                    .stack_name(&req.name)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("ContinueUpdateRollback `{}`: {}", req.name, err_text(e))
                    })?;
                settle(client, &req.name, polling, report).await?;
            }
            Action::Wait => {
                settle(client, &req.name, polling, report).await?;
            }
            Action::Stop(hint) => bail!("stack `{}`: {hint}", req.name),
        }
    }
    bail!(
        "stack `{}` did not settle after repeated recovery steps",
        req.name
    )
}

/// A CloudFormation client from the standard AWS configuration chain (`AWS_ENDPOINT_URL` honoured).
pub async fn client_from_environment() -> Client {
    Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
}
