//! The AWS target over many tenants: plan every stack, apply in a rolling wave of bounded parallelism with a
//! progress bar per tenant, write the registry only from a final AWS state, activate cost-allocation
//! tags, offboard, and reconcile the registry with CloudFormation (drift).
//!
//! Order per tenant: the stack first (through a change set, until it settles), then the tenant's
//! database objects and its registry row in one transaction (the same SQL as the local target). A
//! tenant whose stack fails is reported and audited, keeps its previous registry row, and does not stop
//! the others.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use aws_sdk_cloudformation::Client;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runtime::domain::{TenantId, Tier};
use serde::Serialize;

use super::call::{CallCounter, with_backoff};
use super::changeset::{Action as StateAction, action_for, operation_in_progress};
use super::costs::{self, TagActivation};
use super::deploy::{
    self, Outcome, Polling, ResourceChange, StackRequest, StackState, describe, unchanged,
};
use super::{
    Arch, DIGEST_OUTPUT, LambdaCode, Serving, platform_stack_name, platform_tags, render_platform,
    render_tenant_serving, template_resources, tenant_parameters, tenant_stack_name, tenant_tags,
};
use crate::manifest::TenantSpec;
use crate::platform::Platform;
use crate::provision::Target;
use crate::provision::apply::{self as db_apply, audit, converge_tenant};
use crate::provision::plan::{Action as DbAction, Plan as DbPlan};

/// The AWS clients of one environment. Every client counts its HTTP requests in `calls`.
#[derive(Debug, Clone)]
pub struct Aws {
    pub env: String,
    pub cfn: Client,
    pub cost_explorer: aws_sdk_costexplorer::Client,
    pub secrets: runtime::secrets::AwsSecretStore,
    pub calls: CallCounter,
    pub polling: Polling,
    /// The region the stacks are deployed in.
    pub region: String,
}

/// Refuses, before anything is applied, a tenant whose Bedrock endpoint is in another region than
/// the deployment's: its inference profiles are created in its stack's region, and Bedrock is called
/// where the manifest says (its residency pin), so the two must agree.
pub fn check_bedrock_regions(specs: &[TenantSpec], region: &str) -> Result<()> {
    for spec in specs {
        let Some(bedrock) = spec
            .models
            .providers
            .get(&runtime::domain::ProviderId::Bedrock)
        else {
            continue;
        };
        let declared = bedrock.endpoint.region.as_deref().unwrap_or_default();
        if declared != region {
            bail!(
                "tenant `{}`: `models.providers.bedrock.endpoint.region` is `{declared}`, but this deployment is in `{region}`; its Bedrock inference profiles live in its stack's region\nhint: deploy the tenant in `{declared}`, or call Bedrock in `{region}` if its residency allows; nothing was applied",
                spec.id
            );
        }
    }
    Ok(())
}

impl Aws {
    /// Clients from the standard configuration chain (profiles, SSO, environment, role assumption);
    /// `endpoint_url` (or `AWS_ENDPOINT_URL`) sends every call to an emulator such as moto, except Cost
    /// Explorer when `AWS_ENDPOINT_URL_COST_EXPLORER` names its own endpoint.
    pub async fn connect(env: &str, endpoint_url: Option<&str>) -> Result<Self> {
        super::check_environment(env)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            bail!(
                "no AWS region is configured\nhint: set AWS_REGION (or `region` in your AWS profile)"
            );
        }
        let mut aws = Self::from_config(env, &config);
        // Emulators settle in milliseconds; a finer poll keeps tests and benchmarks honest.
        if let Some(ms) = std::env::var("TENANTCTL_POLL_MAX_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            aws.polling.max_delay = std::time::Duration::from_millis(ms.max(10));
        }
        Ok(aws)
    }

    pub fn from_config(env: &str, config: &aws_config::SdkConfig) -> Self {
        let calls = CallCounter::default();
        let cfn = aws_sdk_cloudformation::config::Builder::from(config)
            .interceptor(calls.clone())
            .build();
        let mut ce = aws_sdk_costexplorer::config::Builder::from(config).interceptor(calls.clone());
        if let Ok(url) = std::env::var("AWS_ENDPOINT_URL_COST_EXPLORER") {
            ce = ce.endpoint_url(url);
        }
        Self {
            env: env.to_owned(),
            cfn: Client::from_conf(cfn),
            cost_explorer: aws_sdk_costexplorer::Client::from_conf(ce.build()),
            secrets: runtime::secrets::AwsSecretStore::from_client(
                aws_sdk_secretsmanager::Client::from_conf(
                    aws_sdk_secretsmanager::config::Builder::from(config)
                        .interceptor(calls.clone())
                        .build(),
                ),
            ),
            calls,
            polling: Polling::default(),
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
        }
    }
}

/// Every stack of environment `env` (tenantctl's names: `tenantctl-<env>-...`), by name.
pub async fn list_stacks(cfn: &Client, env: &str) -> Result<BTreeMap<String, StackState>> {
    let prefix = format!("tenantctl-{env}-");
    let mut stacks = BTreeMap::new();
    let mut next: Option<String> = None;
    loop {
        let out = with_backoff(|| cfn.describe_stacks().set_next_token(next.clone()).send())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DescribeStacks: {}",
                    aws_sdk_cloudformation::error::DisplayErrorContext(e)
                )
            })?;
        for s in out.stacks() {
            let state = StackState::from_sdk(s);
            if state.name.starts_with(&prefix) && state.status != "DELETE_COMPLETE" {
                stacks.insert(state.name.clone(), state);
            }
        }
        next = out.next_token().map(str::to_owned);
        if next.is_none() {
            return Ok(stacks);
        }
    }
}

/// What `apply` would do to one stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum StackAction {
    Create,
    Update,
    NoChanges,
    /// Recovery before the change: the text says which.
    Recover(String),
    /// An operation is running; apply waits for it.
    Wait(String),
    /// Needs a human.
    Blocked(String),
}

/// One stack's plan.
#[derive(Debug, Clone, Serialize)]
pub struct StackPlan {
    pub stack: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    pub action: StackAction,
    pub changes: Vec<ResourceChange>,
}

impl StackPlan {
    pub fn pending(&self) -> bool {
        self.action != StackAction::NoChanges
    }
}

/// Every resource of `template`, as additions (the plan of a stack not created yet).
fn additions(template: &str) -> Result<Vec<ResourceChange>> {
    Ok(template_resources(template)?
        .into_iter()
        .map(|(id, kind)| ResourceChange {
            logical_id: id,
            resource_type: kind,
            action: "Add".into(),
            replacement: None,
        })
        .collect())
}

/// Plans one stack without changing anything: a stack that does not exist yet lists the template's
/// resources (no change set, which would create the stack in REVIEW_IN_PROGRESS); an unchanged stack is
/// recognised by digest and parameters; otherwise a change set is computed, read and deleted.
pub async fn plan_stack(
    cfn: &Client,
    req: &StackRequest,
    state: Option<&StackState>,
    polling: Polling,
) -> Result<(StackAction, Vec<ResourceChange>)> {
    let Some(state) = state else {
        return Ok((StackAction::Create, additions(&req.template)?));
    };
    if unchanged(req, state) {
        return Ok((StackAction::NoChanges, Vec::new()));
    }
    Ok(match action_for(Some(&state.status)) {
        StateAction::CreateChangeSet => (StackAction::Create, additions(&req.template)?),
        StateAction::UpdateChangeSet => {
            let changes = deploy::preview(cfn, req, polling).await?;
            if changes.is_empty() {
                (StackAction::NoChanges, changes)
            } else {
                (StackAction::Update, changes)
            }
        }
        StateAction::ReplaceStaleChangeSet => (
            StackAction::Recover(
                "delete the unexecuted change set left in review, then create".into(),
            ),
            additions(&req.template)?,
        ),
        StateAction::DeleteThenCreate => (
            StackAction::Recover("delete the stack whose creation rolled back, then create".into()),
            additions(&req.template)?,
        ),
        StateAction::ContinueRollback => (
            StackAction::Recover("continue the failed update rollback, then update".into()),
            Vec::new(),
        ),
        StateAction::Wait => (StackAction::Wait(state.status.clone()), Vec::new()),
        StateAction::Stop(hint) => (StackAction::Blocked(hint), Vec::new()),
    })
}

/// The inputs every tenant stack shares.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub arch: Arch,
    pub code: LambdaCode,
    pub parallelism: usize,
    /// Execute change sets that remove or replace resources (`apply --yes`).
    pub allow_destructive: bool,
}

/// The tenants the registry has suspended (none before the control plane exists): their stacks are
/// rendered with no concurrency, so an apply never lets a suspended tenant's function run again.
pub async fn suspended(target: &Target) -> Result<BTreeSet<TenantId>> {
    let admin = target.admin().await?;
    let exists: bool = admin
        .query_one("SELECT to_regclass('control.tenants') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(BTreeSet::new());
    }
    let rows = admin
        .query(
            "SELECT tenant_id FROM control.tenants WHERE status = 'suspended'",
            &[],
        )
        .await
        .context("reading which tenants are suspended")?;
    Ok(rows
        .iter()
        .filter_map(|r| TenantId::parse(r.get::<_, &str>(0)).ok())
        .collect())
}

/// The tenant's stack request.
#[allow(clippy::too_many_arguments)]
pub fn tenant_request(
    aws: &Aws,
    target: &Target,
    platform: &Platform,
    spec: &TenantSpec,
    outputs: &BTreeMap<String, String>,
    opts: &FleetOptions,
    serving: Serving,
    book: &runtime::pricing::PriceBook,
) -> Result<StackRequest> {
    let rendered = render_tenant_serving(
        spec,
        &target.namespace,
        &aws.env,
        platform,
        opts.arch,
        serving,
        book,
    )?;
    Ok(StackRequest {
        name: tenant_stack_name(&aws.env, spec),
        template: rendered.body,
        parameters: tenant_parameters(spec, outputs, &opts.code, &platform_stack_name(&aws.env))?,
        keep_parameters: Vec::new(),
        tags: tenant_tags(spec),
        digest: Some(rendered.digest),
        allow_destructive: opts.allow_destructive,
    })
}

/// A dedicated tenant's own RDS instance as a provisioning target: its endpoint from the tenant
/// stack's outputs, its master user from the secret RDS manages, over TLS verified against the same
/// bundle as the platform database (`TENANTCTL_DATABASE_CA`). Returns it with its host and port.
pub async fn dedicated_instance(
    aws: &Aws,
    target: &Target,
    stack: &str,
) -> Result<(Target, String, u16)> {
    let state = deploy::describe(&aws.cfn, stack)
        .await?
        .with_context(|| format!("the tenant stack `{stack}` is gone"))?;
    let output = |key: &str| {
        state.outputs.get(key).cloned().with_context(|| {
            format!("the tenant stack `{stack}` has no output `{key}`\nhint: re-run `tenantctl apply` so its template is current")
        })
    };
    let host = output("TenantDatabaseEndpoint")?;
    let port: u16 = output("TenantDatabasePort")?
        .parse()
        .with_context(|| format!("the tenant stack `{stack}`'s database port is not a port"))?;
    let Some(tls_ca) = target.endpoint.tls_ca.clone() else {
        bail!(
            "a dedicated tenant's instance (`{host}`) is reached only over verified TLS\nhint: set TENANTCTL_DATABASE_CA to the RDS certificate bundle"
        );
    };
    let (user, password) = aws
        .secrets
        .rds_master_credentials(&output("TenantDatabaseMasterSecret")?)
        .await?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(&host)
        .port(port)
        .user(&user)
        .dbname("postgres")
        .connect_timeout(std::time::Duration::from_secs(10));
    {
        use secrecy::ExposeSecret as _;
        config.password(password.expose_secret().as_bytes());
    }
    let instance = Target {
        namespace: target.namespace.clone(),
        endpoint: runtime::db::DbEndpoint {
            host: host.clone(),
            port,
            dbname: "postgres".into(),
            tls_ca: Some(tls_ca),
            iam_auth: false,
        },
        admin: crate::provision::AdminAccess::Url(Box::new(config)),
        secrets: target.secrets.clone(),
        secrets_dir: target.secrets_dir.clone(),
    };
    Ok((instance, host, port))
}

fn serving_of(suspended: &BTreeSet<TenantId>, spec: &TenantSpec) -> Serving {
    if suspended.contains(&spec.id) {
        Serving::Suspended
    } else {
        Serving::Active
    }
}

/// Suspends or resumes one tenant's function: its stack redeployed with no concurrency (or its own
/// again), through the same change-set path as an apply. Returns what CloudFormation did.
pub async fn set_serving(
    aws: &Aws,
    target: &Target,
    platform: &Platform,
    spec: &TenantSpec,
    opts: &FleetOptions,
    serving: Serving,
) -> Result<Outcome> {
    let stacks = list_stacks(&aws.cfn, &aws.env).await?;
    let outputs = platform_outputs(aws, &stacks)?;
    let book = crate::prices::for_deployment(target).await?;
    let req = tenant_request(aws, target, platform, spec, &outputs, opts, serving, &book)?;
    if !stacks.contains_key(&req.name) {
        bail!(
            "tenant `{}` has no stack `{}`\nhint: `tenantctl apply --target aws --env {}` creates it",
            spec.id,
            req.name,
            aws.env
        );
    }
    deploy::deploy(&aws.cfn, &req, aws.polling, &|_| {}).await
}

/// The platform stack's request.
pub fn platform_request(aws: &Aws, platform: &Platform) -> Result<StackRequest> {
    let tags = platform_tags(&aws.env, &BTreeMap::new());
    let rendered = render_platform(&aws.env, platform, &tags)?;
    Ok(StackRequest {
        name: platform_stack_name(&aws.env),
        template: rendered.body,
        parameters: Vec::new(),
        keep_parameters: Vec::new(),
        tags,
        digest: Some(rendered.digest),
        // `apply` sets it from its options; elsewhere the platform stack is never torn down.
        allow_destructive: false,
    })
}

/// The platform stack's outputs; an error naming what to do when it is missing or not settled.
pub fn platform_outputs(
    aws: &Aws,
    stacks: &BTreeMap<String, StackState>,
) -> Result<BTreeMap<String, String>> {
    let name = platform_stack_name(&aws.env);
    match stacks.get(&name) {
        Some(s) if s.status.ends_with("_COMPLETE") && !s.status.contains("ROLLBACK") => {
            Ok(s.outputs.clone())
        }
        Some(s) => bail!(
            "the platform stack `{name}` is `{}`\nhint: run `tenantctl --target aws --env {} bootstrap` to converge it",
            s.status,
            aws.env
        ),
        None => bail!(
            "the platform stack `{name}` does not exist\nhint: `tenantctl --target aws --env {} bootstrap` creates it first",
            aws.env
        ),
    }
}

/// Creates or updates the platform stack alone (the first step of `apply`, and all of
/// `bootstrap`): it needs no database, since it is what creates the platform's.
async fn converge_platform(
    aws: &Aws,
    platform: &Platform,
    allow_destructive: bool,
    bars: &Bars,
) -> Result<Outcome> {
    let polling = Polling {
        events: !bars.hidden,
        ..aws.polling
    };
    let req = StackRequest {
        allow_destructive,
        ..platform_request(aws, platform)?
    };
    let bar = bars.tenant(&req.name);
    let report = |s: &str| bar.set_message(s.to_owned());
    let outcome = deploy::deploy(&aws.cfn, &req, polling, &report)
        .await
        .context("the platform stack")?;
    bar.finish_and_clear();
    Ok(outcome)
}

/// What `tenantctl bootstrap` did: the platform stack, its outputs, and what comes next.
#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    pub stack: String,
    pub outcome: Outcome,
    pub region: String,
    pub outputs: BTreeMap<String, String>,
    /// The steps left before the first `apply`, with this environment's values filled in.
    pub next_steps: Vec<String>,
    pub aws_calls: u64,
}

/// `tenantctl bootstrap`: the platform stack (network, keys, the platform database), with no
/// database connection; then the steps that make the database reachable for `apply`.
pub async fn bootstrap(
    aws: &Aws,
    platform: &Platform,
    allow_destructive: bool,
    bars: &Bars,
) -> Result<Bootstrap> {
    let outcome = converge_platform(aws, platform, allow_destructive, bars).await?;
    let stacks = list_stacks(&aws.cfn, &aws.env).await?;
    let outputs = platform_outputs(aws, &stacks)?;
    let out = |k: &str| outputs.get(k).cloned().unwrap_or_else(|| format!("<{k}>"));
    // The account is the KMS key's (`arn:aws:kms:<region>:<account>:key/...`): no STS call needed.
    let account = out("KmsKeyArn")
        .split(':')
        .nth(4)
        .map(str::to_owned)
        .unwrap_or_else(|| "<account>".into());
    let env = &aws.env;
    let next_steps = vec![
        format!(
            "run tenantctl where the database is reachable: in subnet {} or {} with security group {} (a CI runner or an instance in the VPC)",
            out("PrivateSubnetA"),
            out("PrivateSubnetB"),
            out("DeployerSecurityGroup")
        ),
        format!(
            "once, as the master user with the password in secret {}: psql \"host={} dbname=postgres user={} sslmode=verify-full sslrootcert=rds-ca-bundle.pem\" -c '{}'",
            out("DatabaseMasterSecretArn"),
            out("DatabaseEndpoint"),
            crate::aws::PLATFORM_ADMIN,
            crate::aws::PLATFORM_ADMIN_IAM_GRANT
        ),
        format!(
            "allow the deploy role rds-db:connect on arn:aws:rds-db:{}:{account}:dbuser:{}/{}",
            aws.region,
            out("DbiResourceId"),
            crate::aws::PLATFORM_ADMIN
        ),
        format!(
            "export TENANTCTL_DATABASE_URL=postgres://{}@{}:5432/tenantctl TENANTCTL_DATABASE_AUTH=iam TENANTCTL_DATABASE_CA=rds-ca-bundle.pem (the RDS certificate bundle)",
            crate::aws::PLATFORM_ADMIN,
            out("DatabaseEndpoint")
        ),
        format!(
            "review, then apply: tenantctl --target aws --env {env} --lambda-code s3://BUCKET/KEY plan tenants/ && tenantctl --target aws --env {env} --lambda-code s3://BUCKET/KEY apply tenants/"
        ),
    ];
    Ok(Bootstrap {
        stack: platform_stack_name(env),
        outcome,
        region: aws.region.clone(),
        outputs,
        next_steps,
        aws_calls: aws.calls.get(),
    })
}

/// The whole plan of an environment: the platform stack, then every tenant's stack and database.
#[derive(Debug, Clone, Serialize)]
pub struct FleetPlan {
    pub environment: String,
    pub platform: StackPlan,
    pub stacks: Vec<StackPlan>,
    pub database: DbPlan,
}

impl FleetPlan {
    pub fn has_changes(&self) -> bool {
        self.platform.pending()
            || self.stacks.iter().any(StackPlan::pending)
            || self.database.has_changes()
            || self.database.has_blocked()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in std::iter::once(&self.platform).chain(&self.stacks) {
            let (label, detail) = match &p.action {
                StackAction::Create => ("create", String::new()),
                StackAction::Update => ("update", String::new()),
                StackAction::NoChanges => ("no changes", String::new()),
                StackAction::Recover(t) => ("recover", format!(" ({t})")),
                StackAction::Wait(t) => ("wait", format!(" (an operation is running: {t})")),
                StackAction::Blocked(t) => ("blocked", format!(": {t}")),
            };
            *counts.entry(label).or_default() += 1;
            if p.action == StackAction::NoChanges {
                continue;
            }
            out.push_str(&format!("stack {}: {label}{detail}\n", p.stack));
            for c in &p.changes {
                let replace = match c.replacement.as_deref() {
                    Some("True") => "  (REPLACEMENT)",
                    Some("Conditional") => "  (may be replaced)",
                    _ => "",
                };
                out.push_str(&format!(
                    "    {:<7} {:<28} {}{replace}\n",
                    c.action, c.logical_id, c.resource_type
                ));
            }
        }
        out.push_str(&format!(
            "stacks: {}\n",
            counts
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str("database:\n");
        out.push_str(&self.database.render());
        out
    }
}

/// Plans the platform stack and every tenant's stack, `parallelism` change-set previews at a time.
pub async fn plan(
    aws: &Aws,
    target: &Target,
    platform: &Platform,
    specs: &[TenantSpec],
    database: DbPlan,
    opts: &FleetOptions,
) -> Result<FleetPlan> {
    let stacks = list_stacks(&aws.cfn, &aws.env).await?;
    let platform_req = platform_request(aws, platform)?;
    let platform_state = stacks.get(&platform_req.name);
    let (action, changes) =
        plan_stack(&aws.cfn, &platform_req, platform_state, aws.polling).await?;
    let platform_plan = StackPlan {
        stack: platform_req.name.clone(),
        tenant: None,
        action,
        changes,
    };
    // Until the platform exists its outputs are unknown; tenant stacks are then planned as creations.
    let outputs = match platform_state {
        Some(s) => s.outputs.clone(),
        None => BTreeMap::new(),
    };
    let suspended = &suspended(target).await?;
    let book = &crate::prices::for_deployment(target).await?;
    let stacks = &stacks;
    let outputs = &outputs;
    let mut plans: Vec<(usize, StackPlan)> = stream::iter(specs.iter().enumerate())
        .map(|(i, spec)| async move {
            let serving = serving_of(suspended, spec);
            let name = tenant_stack_name(&aws.env, spec);
            let state = stacks.get(&name);
            let planned = if outputs.is_empty() {
                let rendered = render_tenant_serving(
                    spec,
                    &target.namespace,
                    &aws.env,
                    platform,
                    opts.arch,
                    serving,
                    book,
                )?;
                (StackAction::Create, additions(&rendered.body)?)
            } else {
                let req =
                    tenant_request(aws, target, platform, spec, outputs, opts, serving, book)?;
                plan_stack(&aws.cfn, &req, state, aws.polling).await?
            };
            anyhow::Ok((
                i,
                StackPlan {
                    stack: name,
                    tenant: Some(spec.id.clone()),
                    action: planned.0,
                    changes: planned.1,
                },
            ))
        })
        .buffer_unordered(opts.parallelism.max(1))
        .try_collect()
        .await?;
    plans.sort_by_key(|(i, _)| *i);
    let plans = plans.into_iter().map(|(_, p)| p).collect();
    Ok(FleetPlan {
        environment: aws.env.clone(),
        platform: platform_plan,
        stacks: plans,
        database,
    })
}

/// Progress display: an overall bar and one line per tenant in flight (hidden when not a terminal).
#[derive(Debug, Clone)]
pub struct Bars {
    multi: MultiProgress,
    pub overall: ProgressBar,
    hidden: bool,
}

impl Bars {
    pub fn new(visible: bool) -> Self {
        let multi = MultiProgress::new();
        if !visible {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} tenants {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            multi,
            overall,
            hidden: !visible,
        }
    }

    fn tenant(&self, name: &str) -> ProgressBar {
        if self.hidden {
            return ProgressBar::hidden();
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {prefix:<28} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    }
}

/// What `apply` did, per tenant, plus the platform and cost tags.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub platform: Outcome,
    pub outcomes: Vec<db_apply::Outcome>,
    pub cost_tags: Option<TagActivation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_tags_error: Option<String>,
    pub aws_calls: u64,
    pub aws_calls_by_operation: BTreeMap<String, u64>,
}

fn stack_result(outcome: Outcome, db: &DbAction) -> &'static str {
    match (outcome, db) {
        (Outcome::Created, _) | (_, DbAction::Create) => "created",
        (Outcome::Updated, _) | (_, DbAction::Update) => "updated",
        _ => "unchanged",
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one tenant's inputs, gathered by the caller's loop"
)]
async fn apply_one(
    aws: &Aws,
    polling: Polling,
    target: &Target,
    req: Result<StackRequest>,
    listed: Option<&StackState>,
    spec: &TenantSpec,
    db_action: DbAction,
    bar: ProgressBar,
) -> db_apply::Outcome {
    let tenant = spec.id.clone();
    let result: Result<&'static str> = async {
        if let DbAction::Blocked(why) = &db_action {
            bail!("blocked: {why}");
        }
        let req = req?;
        let report = |status: &str| bar.set_message(status.to_owned());
        // Known unchanged from the listing made before any tenant started: no call for this tenant.
        let outcome = if listed.is_some_and(|state| unchanged(&req, state)) {
            Outcome::NoChanges
        } else {
            deploy::deploy(&aws.cfn, &req, polling, &report).await?
        };
        // The stack is in a final, successful state: only now the database and the registry.
        if db_action != DbAction::NoOp {
            bar.set_message("database and registry");
            let mut admin = target.admin().await?;
            if spec.tier == Tier::Dedicated {
                // Its data is on its own instance: the objects there, the registry here.
                let (instance, host, port) =
                    dedicated_instance(aws, target, &tenant_stack_name(&aws.env, spec)).await?;
                let mut instance_admin = instance.admin().await?;
                db_apply::provision_dedicated(&instance, &mut instance_admin, spec, true).await?;
                db_apply::record_dedicated(
                    &mut admin,
                    &target.namespace,
                    spec,
                    db_apply::Registry::Write,
                    Some((&host, port)),
                )
                .await?;
            } else {
                converge_tenant(target, &mut admin, spec).await?;
            }
        }
        Ok(stack_result(outcome, &db_action))
    }
    .await;
    bar.finish_and_clear();
    let (result, error) = match result {
        Ok(r) => (r, None),
        Err(e) => ("failed", Some(format!("{e:#}"))),
    };
    let detail = serde_json::json!({"stack": tenant_stack_name(&aws.env, spec), "result": result, "error": error});
    if let Err(e) = audit(target, &tenant, "apply-aws", result, &detail.to_string()).await {
        tracing::warn!(tenant = %tenant, error = %e, "could not write the audit row");
    }
    db_apply::Outcome {
        tenant,
        result,
        error,
    }
}

/// Applies the platform stack, then every tenant, at most `opts.parallelism` at once, then activates the
/// cost-allocation tag keys. A tenant's failure is reported in its outcome; only a platform failure or
/// an unreachable control plane stops the run.
pub async fn apply(
    aws: &Aws,
    target: &Target,
    platform: &Platform,
    specs: &[TenantSpec],
    database: &DbPlan,
    opts: &FleetOptions,
    bars: &Bars,
) -> Result<FleetReport> {
    // Stack events feed the progress lines only when someone watches them.
    let polling = Polling {
        events: !bars.hidden,
        ..aws.polling
    };
    check_bedrock_regions(specs, &aws.region)?;
    let platform_outcome = converge_platform(aws, platform, opts.allow_destructive, bars).await?;
    db_apply::ensure_control_plane(target).await?;
    crate::prices::import_builtin_if_none(target).await?;
    let book = &crate::prices::for_deployment(target).await?;
    let stacks = list_stacks(&aws.cfn, &aws.env).await?;
    let outputs = platform_outputs(aws, &stacks)?;
    bars.overall.set_length(specs.len() as u64);
    let db_actions: BTreeMap<&TenantId, &DbAction> = database
        .tenants
        .iter()
        .map(|t| (&t.tenant, &t.action))
        .collect();
    // At most `parallelism` tenants in flight; the next starts as soon as any finishes (a rolling
    // wave: a barrier between fixed waves would leave slots idle behind each wave's slowest stack).
    let suspended = &suspended(target).await?;
    let outputs = &outputs;
    let stacks = &stacks;
    let db_actions = &db_actions;
    let mut outcomes: Vec<db_apply::Outcome> = stream::iter(specs)
        .map(|spec| {
            let req = tenant_request(
                aws,
                target,
                platform,
                spec,
                outputs,
                opts,
                serving_of(suspended, spec),
                book,
            );
            let db_action = db_actions
                .get(&spec.id)
                .map(|a| (*a).clone())
                .unwrap_or(DbAction::Update);
            let bar = bars.tenant(spec.id.as_str());
            let listed = stacks.get(&tenant_stack_name(&aws.env, spec));
            async move {
                let o = apply_one(aws, polling, target, req, listed, spec, db_action, bar).await;
                bars.overall.inc(1);
                o
            }
        })
        .buffer_unordered(opts.parallelism.max(1))
        .collect()
        .await;
    bars.overall.finish_and_clear();
    let keys: BTreeSet<String> = specs
        .iter()
        .filter(|s| {
            outcomes
                .iter()
                .any(|o| o.tenant == s.id && o.result != "failed")
        })
        .flat_map(|s| tenant_tags(s).into_keys())
        .collect();
    let (cost_tags, cost_tags_error) = if keys.is_empty() {
        (None, None)
    } else {
        match costs::activate(&aws.cost_explorer, &keys).await {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    };
    outcomes.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(FleetReport {
        platform: platform_outcome,
        outcomes,
        cost_tags,
        cost_tags_error,
        aws_calls: aws.calls.get(),
        aws_calls_by_operation: aws.calls.by_operation(),
    })
}

/// What AWS offboarding did, after the database part.
#[derive(Debug, Clone, Serialize)]
pub struct AwsOffboard {
    pub stack: String,
    pub stack_deleted: bool,
    /// For the dedicated tier: CloudFormation keeps a final snapshot (DeletionPolicy: Snapshot).
    pub final_snapshot: bool,
    pub secrets_scheduled_for_deletion: Vec<String>,
    pub recovery_window_days: i64,
}

/// After the database offboarding (export verified, data removed, registry `offboarded`): turns off
/// the dedicated database's deletion protection, deletes the stack (CloudFormation snapshots the
/// dedicated database on the way), schedules every `tenants/<id>/` secret for deletion, and audits each
/// step. Re-running after a failure resumes.
pub async fn offboard(
    aws: &Aws,
    target: &Target,
    tenant: &TenantId,
    tier: runtime::domain::Tier,
    bar: &ProgressBar,
) -> Result<AwsOffboard> {
    let stack = format!("tenantctl-{}-{tenant}", aws.env);
    let report = |s: &str| bar.set_message(format!("{stack}: {s}"));
    let state = describe(&aws.cfn, &stack).await?;
    let dedicated = tier == runtime::domain::Tier::Dedicated;
    if let Some(state) = &state {
        if dedicated
            && state
                .parameters
                .get("DeletionProtection")
                .map(String::as_str)
                != Some("false")
        {
            let req = StackRequest {
                name: stack.clone(),
                template: String::new(),
                parameters: vec![("DeletionProtection".into(), "false".into())],
                keep_parameters: state
                    .parameters
                    .keys()
                    .filter(|k| *k != "DeletionProtection")
                    .cloned()
                    .collect(),
                tags: state.tags.clone(),
                digest: None,
                // Offboarding was confirmed; this change set only lifts deletion protection.
                allow_destructive: true,
            };
            deploy::deploy(&aws.cfn, &req, aws.polling, &report)
                .await
                .context("turning off the dedicated database's deletion protection")?;
            audit(
                target,
                tenant,
                "offboard-aws",
                "deletion_protection_off",
                &stack,
            )
            .await?;
        }
        deploy::delete(&aws.cfn, &stack, aws.polling, &report).await?;
        audit(
            target,
            tenant,
            "offboard-aws",
            "stack_deleted",
            &serde_json::json!({"stack": stack, "final_snapshot": dedicated}).to_string(),
        )
        .await?;
    }
    let names = aws
        .secrets
        .schedule_tenant_deletion(tenant)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    audit(
        target,
        tenant,
        "offboard-aws",
        "secrets_scheduled_for_deletion",
        &serde_json::json!({"secrets": names, "recovery_window_days": aws.secrets.recovery_window_days()})
            .to_string(),
    )
    .await?;
    Ok(AwsOffboard {
        stack,
        stack_deleted: state.is_some(),
        final_snapshot: dedicated && state.is_some(),
        secrets_scheduled_for_deletion: names,
        recovery_window_days: aws.secrets.recovery_window_days(),
    })
}

/// A registry entry, as drift detection needs it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub tenant: String,
    pub tier: String,
    pub status: String,
}

/// One disagreement between the registry and CloudFormation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub tenant: String,
    pub stack: String,
    pub problem: String,
    pub hint: String,
}

/// Reconciles the registry with the environment's stacks. Pure.
pub fn reconcile(
    env: &str,
    registry: &[Registered],
    stacks: &BTreeMap<String, StackState>,
) -> Vec<Finding> {
    let platform = platform_stack_name(env);
    let prefix = format!("tenantctl-{env}-");
    let mut findings = Vec::new();
    let mut seen = BTreeSet::new();
    for r in registry {
        let stack = crate::aws::tenant_stack_name_of(env, &r.tenant);
        seen.insert(stack.clone());
        let state = stacks.get(&stack);
        let finding = |problem: String, hint: &str| Finding {
            tenant: r.tenant.clone(),
            stack: stack.clone(),
            problem,
            hint: hint.to_owned(),
        };
        match (r.status.as_str(), state) {
            ("offboarded", None) => {}
            ("offboarded", Some(_)) => findings.push(finding(
                "the tenant is offboarded but its stack still exists".into(),
                "run `tenantctl offboard` for it again (it resumes)",
            )),
            (_, None) => findings.push(finding(
                format!(
                    "the registry says `{}` but the stack does not exist",
                    r.status
                ),
                "run `tenantctl apply` with the tenant's manifest",
            )),
            (_, Some(s)) => {
                if operation_in_progress(&s.status) {
                    findings.push(finding(
                        format!("an operation is running (`{}`)", s.status),
                        "wait for it, then check again",
                    ));
                } else if action_for(Some(&s.status)) != StateAction::UpdateChangeSet
                    || s.status == "UPDATE_ROLLBACK_COMPLETE"
                {
                    findings.push(finding(
                        format!("the stack is `{}`", s.status),
                        "run `tenantctl apply` (it recovers the stack) and read its error",
                    ));
                }
                if s.tags.get("tier").is_some_and(|t| *t != r.tier) {
                    findings.push(finding(
                        format!(
                            "the registry says tier `{}` but the stack is tagged `{}`",
                            r.tier,
                            s.tags.get("tier").map(String::as_str).unwrap_or("")
                        ),
                        "run `tenantctl apply` with the tenant's manifest",
                    ));
                }
                if !s.outputs.contains_key(DIGEST_OUTPUT) {
                    findings.push(finding(
                        "the stack was not made by tenantctl (no digest output)".into(),
                        "run `tenantctl apply` with the tenant's manifest",
                    ));
                }
            }
        }
    }
    for (name, s) in stacks {
        if *name == platform || seen.contains(name) {
            continue;
        }
        let tenant = s
            .tags
            .get("tenant")
            .cloned()
            .unwrap_or_else(|| name.trim_start_matches(&prefix).to_owned());
        findings.push(Finding {
            tenant,
            stack: name.clone(),
            problem: format!("a stack (`{}`) with no registry entry", s.status),
            hint: "apply the tenant's manifest, or delete the stack if the tenant never existed"
                .into(),
        });
    }
    findings
}

/// Reads the registry (every tenant, offboarded too).
pub async fn registry(target: &Target) -> Result<Vec<Registered>> {
    let admin = target.admin().await?;
    let rows = admin
        .query(
            "SELECT tenant_id, tier, status FROM control.tenants ORDER BY tenant_id",
            &[],
        )
        .await
        .context("reading the registry (is the control plane created? run `tenantctl apply`)")?;
    Ok(rows
        .iter()
        .map(|r| Registered {
            tenant: r.get(0),
            tier: r.get(1),
            status: r.get(2),
        })
        .collect())
}

/// Drift of an environment: the registry against CloudFormation.
pub async fn drift(
    aws: &Aws,
    target: &Target,
) -> Result<(Vec<Finding>, BTreeMap<String, StackState>)> {
    let registry = registry(target).await?;
    let stacks = list_stacks(&aws.cfn, &aws.env).await?;
    Ok((reconcile(&aws.env, &registry, &stacks), stacks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(name: &str, status: &str, tier: &str) -> (String, StackState) {
        (
            name.to_owned(),
            StackState {
                name: name.to_owned(),
                status: status.to_owned(),
                tags: BTreeMap::from([("tier".into(), tier.into())]),
                outputs: BTreeMap::from([(DIGEST_OUTPUT.into(), "d".into())]),
                ..StackState::default()
            },
        )
    }

    fn reg(tenant: &str, tier: &str, status: &str) -> Registered {
        Registered {
            tenant: tenant.into(),
            tier: tier.into(),
            status: status.into(),
        }
    }

    #[test]
    fn reconcile_finds_every_kind_of_drift_and_nothing_else() {
        let stacks = BTreeMap::from([
            stack("tenantctl-prod-platform", "UPDATE_COMPLETE", ""),
            stack("tenantctl-prod-ok", "UPDATE_COMPLETE", "schema"),
            stack("tenantctl-prod-rolled", "ROLLBACK_COMPLETE", "schema"),
            stack("tenantctl-prod-moved", "CREATE_COMPLETE", "pool"),
            stack("tenantctl-prod-gone", "CREATE_COMPLETE", "schema"),
            stack("tenantctl-prod-orphan", "CREATE_COMPLETE", "schema"),
            stack("tenantctl-prod-busy", "UPDATE_IN_PROGRESS", "schema"),
        ]);
        let registry = [
            reg("ok", "schema", "active"),
            reg("rolled", "schema", "active"),
            reg("moved", "dedicated", "active"),
            reg("gone", "schema", "offboarded"),
            reg("missing", "schema", "active"),
            reg("done", "schema", "offboarded"),
            reg("busy", "schema", "active"),
        ];
        let found: Vec<(String, String)> = reconcile("prod", &registry, &stacks)
            .into_iter()
            .map(|f| (f.tenant, f.problem))
            .collect();
        let tenants: Vec<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tenants,
            ["rolled", "moved", "gone", "missing", "busy", "orphan"],
            "{found:#?}"
        );
        assert!(found[1].1.contains("tier `dedicated`"), "{found:?}");
        assert!(found[3].1.contains("does not exist"), "{found:?}");
        assert!(found[5].1.contains("no registry entry"), "{found:?}");
    }
}
