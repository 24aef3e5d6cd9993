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

use super::call::{jitter, with_backoff};
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
    /// The template body; empty: keep the stack's current template (`UsePreviousTemplate`).
    pub template: String,
    pub parameters: Vec<(String, String)>,
    /// Parameters passed with `UsePreviousValue` (with an empty `template`).
    pub keep_parameters: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// The template's digest (its `TenantctlDigest` output), if it has one: a settled stack with the
    /// same digest and parameters is unchanged, known without a change set.
    pub digest: Option<String>,
    /// Execute a change set that removes or (maybe) replaces a resource. Without it such a change set
    /// is deleted unexecuted and the deploy fails naming the resources (`apply --yes` allows it).
    pub allow_destructive: bool,
}

/// A stack as `DescribeStacks` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackState {
    pub name: String,
    pub id: String,
    pub status: String,
    pub outputs: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl StackState {
    pub fn from_sdk(s: &aws_sdk_cloudformation::types::Stack) -> Self {
        Self {
            name: s.stack_name().unwrap_or_default().to_owned(),
            id: s.stack_id().unwrap_or_default().to_owned(),
            status: s
                .stack_status()
                .map(|x| x.as_str().to_owned())
                .unwrap_or_default(),
            outputs: s
                .outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                .collect(),
            parameters: s
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_owned(),
                        p.parameter_value().unwrap_or_default().to_owned(),
                    ))
                })
                .collect(),
            tags: s
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                .collect(),
        }
    }
}

/// Whether `state` already is what `req` asks for: settled, same digest, same parameters.
pub fn unchanged(req: &StackRequest, state: &StackState) -> bool {
    let Some(digest) = &req.digest else {
        return false;
    };
    action_for(Some(&state.status)) == Action::UpdateChangeSet
        && state.outputs.get(super::DIGEST_OUTPUT) == Some(digest)
        && req
            .parameters
            .iter()
            .all(|(k, v)| state.parameters.get(k) == Some(v))
}

/// Polling limits.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub max_delay: Duration,
    pub timeout: Duration,
    /// Also read the stack's newest event at each poll while an operation runs, and report it (for
    /// progress bars; one more call per poll, so off when nobody watches).
    pub events: bool,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(3600),
            events: false,
        }
    }
}

fn err_text<E: std::error::Error + 'static>(
    e: aws_sdk_cloudformation::error::SdkError<E>,
) -> String {
    aws_sdk_cloudformation::error::DisplayErrorContext(e).to_string()
}

/// The stack's status, `None` when it does not exist.
pub async fn stack_status(client: &Client, name: &str) -> Result<Option<String>> {
    Ok(describe(client, name).await?.map(|s| s.status))
}

/// The stack, `None` when it does not exist.
pub async fn describe(client: &Client, name: &str) -> Result<Option<StackState>> {
    match with_backoff(|| client.describe_stacks().stack_name(name).send()).await {
        Ok(out) => Ok(out.stacks().first().map(StackState::from_sdk)),
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
    let mut last_event = String::new();
    for n in 0u32.. {
        let status = stack_status(client, name).await?;
        let shown = status.clone().unwrap_or_else(|| "DELETE_COMPLETE".into());
        if shown != last {
            report(&shown);
            last = shown;
        }
        match &status {
            Some(s) if operation_in_progress(s) => {
                if polling.events
                    && let Some(event) = newest_event(client, name).await
                    && event != last_event
                {
                    report(&format!("{last}: {event}"));
                    last_event = event;
                }
            }
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

/// The stack's newest event as `LogicalId RESOURCE_STATUS`, if it can be read (progress only: a failure
/// to read it is not an error).
async fn newest_event(client: &Client, name: &str) -> Option<String> {
    let out = with_backoff(|| client.describe_stack_events().stack_name(name).send())
        .await
        .ok()?;
    let e = out.stack_events().first()?;
    Some(format!(
        "{} {}",
        e.logical_resource_id().unwrap_or("?"),
        e.resource_status().map(|s| s.as_str()).unwrap_or("")
    ))
}

/// The first failed resource event's reason, for error messages.
async fn failure_reason(client: &Client, name: &str) -> String {
    let Ok(out) = with_backoff(|| client.describe_stack_events().stack_name(name).send()).await
    else {
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

/// Creates a change set and waits until it is computed. `Ok(None)`: it had no changes (either shape)
/// and is gone.
async fn computed_change_set(
    client: &Client,
    req: &StackRequest,
    kind: ChangeSetType,
    polling: Polling,
) -> Result<Option<(String, Vec<ResourceChange>)>> {
    let cs_name = format!("tenantctl-{}", uuid::Uuid::new_v4().simple());
    let mut create = client
        .create_change_set()
        .stack_name(&req.name)
        .change_set_name(&cs_name)
        .change_set_type(kind)
        .capabilities(Capability::CapabilityNamedIam);
    create = if req.template.is_empty() {
        create.use_previous_template(true)
    } else {
        create.template_body(&req.template)
    };
    for k in &req.keep_parameters {
        create = create.parameters(
            Parameter::builder()
                .parameter_key(k)
                .use_previous_value(true)
                .build(),
        );
    }
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
    if let Err(e) = with_backoff(|| create.clone().send()).await {
        let text = err_text(e);
        if is_no_changes(&text) {
            return Ok(None);
        }
        bail!("CreateChangeSet for `{}`: {text}", req.name);
    }
    let mut changes = Vec::new();
    let mut next: Option<String> = None;
    let mut n = 0u32;
    loop {
        let cs = with_backoff(|| {
            client
                .describe_change_set()
                .stack_name(&req.name)
                .change_set_name(&cs_name)
                .set_next_token(next.clone())
                .send()
        })
        .await
        .map_err(|e| anyhow::anyhow!("DescribeChangeSet for `{}`: {}", req.name, err_text(e)))?;
        match cs.status() {
            Some(ChangeSetStatus::CreateComplete) => {
                changes.extend(cs.changes().iter().filter_map(ResourceChange::from_sdk));
                next = cs.next_token().map(str::to_owned);
                if next.is_none() {
                    return Ok(Some((cs_name, changes)));
                }
            }
            Some(ChangeSetStatus::Failed) => {
                let reason = cs.status_reason().unwrap_or_default().to_owned();
                discard(client, req, &cs_name).await;
                if is_no_changes(&reason) {
                    return Ok(None);
                }
                bail!("the change set for `{}` failed: {reason}", req.name);
            }
            _ => {
                tokio::time::sleep(poll_delay(n, polling.max_delay, jitter())).await;
                n += 1;
            }
        }
    }
}

/// One resource change of a change set, as `plan` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceChange {
    pub logical_id: String,
    pub resource_type: String,
    /// Add, Modify, Remove, Import, Dynamic.
    pub action: String,
    /// For Modify: True, False or Conditional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

impl ResourceChange {
    /// What this change destroys, in words (`remove X (Type)`, `replace X (Type)`), if anything.
    pub fn destroys(&self) -> Option<String> {
        let verb = match (self.action.as_str(), self.replacement.as_deref()) {
            ("Remove", _) => "remove",
            (_, Some("True")) => "replace",
            (_, Some("Conditional")) => "maybe replace",
            _ => return None,
        };
        Some(format!(
            "{verb} `{}` ({})",
            self.logical_id, self.resource_type
        ))
    }

    fn from_sdk(c: &aws_sdk_cloudformation::types::Change) -> Option<Self> {
        let r = c.resource_change()?;
        Some(Self {
            logical_id: r.logical_resource_id()?.to_owned(),
            resource_type: r.resource_type().unwrap_or_default().to_owned(),
            action: r
                .action()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            replacement: r.replacement().map(|x| x.as_str().to_owned()),
        })
    }
}

/// What applying `req` to an existing, settled stack would change, from a change set that is then
/// deleted unexecuted. An empty list: no changes.
pub async fn preview(
    client: &Client,
    req: &StackRequest,
    polling: Polling,
) -> Result<Vec<ResourceChange>> {
    let Some((cs_name, changes)) =
        computed_change_set(client, req, ChangeSetType::Update, polling).await?
    else {
        return Ok(Vec::new());
    };
    with_backoff(|| {
        client
            .delete_change_set()
            .stack_name(&req.name)
            .change_set_name(&cs_name)
            .send()
    })
    .await
    .map_err(|e| anyhow::anyhow!("DeleteChangeSet for `{}`: {}", req.name, err_text(e)))?;
    Ok(changes)
}

/// Deletes a stack and waits until it is gone. A missing stack is not an error.
pub async fn delete(
    client: &Client,
    name: &str,
    polling: Polling,
    report: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    if describe(client, name).await?.is_none() {
        return Ok(());
    }
    with_backoff(|| client.delete_stack().stack_name(name).send())
        .await
        .map_err(|e| anyhow::anyhow!("DeleteStack `{name}`: {}", err_text(e)))?;
    match settle(client, name, polling, report).await? {
        None => Ok(()),
        Some(s) if s == "DELETE_COMPLETE" => Ok(()),
        Some(s) => {
            let reason = failure_reason(client, name).await;
            bail!("stack `{name}` ended `{s}` instead of being deleted: {reason}")
        }
    }
}

/// Deletes an unexecuted change set (best effort: CloudFormation expires it anyway).
async fn discard(client: &Client, req: &StackRequest, cs_name: &str) {
    let _ = with_backoff(|| {
        client
            .delete_change_set()
            .stack_name(&req.name)
            .change_set_name(cs_name)
            .send()
    })
    .await;
}

async fn change_set(
    client: &Client,
    req: &StackRequest,
    kind: ChangeSetType,
    polling: Polling,
    report: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    let Some((cs_name, changes)) = computed_change_set(client, req, kind.clone(), polling).await?
    else {
        return Ok(Outcome::NoChanges);
    };
    let destructive: Vec<String> = changes
        .iter()
        .filter_map(ResourceChange::destroys)
        .collect();
    if !req.allow_destructive && !destructive.is_empty() {
        discard(client, req, &cs_name).await;
        bail!(
            "stack `{}` would {}; nothing was changed in it\nhint: review it with `tenantctl plan`, then apply with `--yes` to allow it",
            req.name,
            destructive.join(", ")
        );
    }
    report(&format!("executing change set {cs_name}"));
    with_backoff(|| {
        client
            .execute_change_set()
            .stack_name(&req.name)
            .change_set_name(&cs_name)
            .send()
    })
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
        let state = describe(client, &req.name).await?;
        if state.as_ref().is_some_and(|s| unchanged(req, s)) {
            return Ok(Outcome::NoChanges);
        }
        match action_for(state.as_ref().map(|s| s.status.as_str())) {
            Action::CreateChangeSet => {
                return change_set(client, req, ChangeSetType::Create, polling, report).await;
            }
            Action::UpdateChangeSet => {
                return change_set(client, req, ChangeSetType::Update, polling, report).await;
            }
            Action::ReplaceStaleChangeSet => {
                let sets = with_backoff(|| client.list_change_sets().stack_name(&req.name).send())
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
                with_backoff(|| client.delete_stack().stack_name(&req.name).send())
                    .await
                    .map_err(|e| anyhow::anyhow!("DeleteStack `{}`: {}", req.name, err_text(e)))?;
                settle(client, &req.name, polling, report).await?;
            }
            Action::ContinueRollback => {
                with_backoff(|| {
                    client
                        .continue_update_rollback()
                        .stack_name(&req.name)
                        .send()
                })
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
