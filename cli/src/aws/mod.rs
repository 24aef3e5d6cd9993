//! Renders the AWS target's CloudFormation templates (`templates/aws/`): the platform stack (once per
//! environment) and one stack per tenant. Pure: no AWS call; applying the stacks is the AWS target's
//! executor. Values come from validated types only, and every string reaches YAML through the `q`
//! filter (a JSON string literal, which is a valid YAML double-quoted scalar).

pub mod call;
pub mod changeset;
pub mod costs;
pub mod deploy;
pub mod fleet;
pub mod rds_iam;

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use minijinja::{Environment, UndefinedBehavior, context};
use runtime::domain::{Namespace, Tier};

use crate::manifest::TenantSpec;
use crate::platform::Platform;

const TENANT: &str = include_str!("../../../templates/aws/tenant.yaml.j2");
const PLATFORM: &str = include_str!("../../../templates/aws/platform.yaml.j2");

/// The Lambda architecture (arm64 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    Arm64,
    X86_64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// An environment name (`prod`, `staging`): 1-10 lowercase letters and digits, starting with a letter.
pub fn check_environment(env: &str) -> Result<()> {
    let ok = (1..=10).contains(&env.len())
        && env.starts_with(|c: char| c.is_ascii_lowercase())
        && env
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!(
            "environment `{}` must be 1-10 characters of a-z and 0-9, starting with a letter",
            runtime::domain::printable(env)
        );
    }
    Ok(())
}

fn environment() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("q", |v: String| {
        serde_json::to_string(&v).unwrap_or_default()
    });
    env.add_template("tenant.yaml", TENANT)?;
    env.add_template("platform.yaml", PLATFORM)?;
    Ok(env)
}

/// Retention values CloudWatch Logs accepts; a manifest's days round up to the next one.
const LOG_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

pub fn log_retention(days: u32) -> u32 {
    LOG_RETENTION_DAYS
        .iter()
        .copied()
        .find(|d| *d >= days)
        .unwrap_or(3653)
}

/// The tenant's CloudFormation stack name (also its Lambda's name).
pub fn tenant_stack_name(env: &str, spec: &TenantSpec) -> String {
    tenant_stack_name_of(env, spec.id.as_str())
}

/// The stack name of the tenant with id `tenant`.
pub fn tenant_stack_name_of(env: &str, tenant: &str) -> String {
    format!("tenantctl-{env}-{tenant}")
}

/// The platform stack name.
pub fn platform_stack_name(env: &str) -> String {
    format!("tenantctl-{env}-platform")
}

/// Tags every taggable resource of a tenant's stack carries: `tenant`, `tier`, then the manifest's.
pub fn tenant_tags(spec: &TenantSpec) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert("tenant".into(), spec.id.to_string());
    tags.insert("tier".into(), spec.tier.to_string());
    tags
}

/// A rendered stack template and its digest (the `TenantctlDigest` output).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: String,
    pub digest: String,
}

/// The name of the output carrying a template's digest.
pub const DIGEST_OUTPUT: &str = "TenantctlDigest";

/// The platform database's master user, written once (a macro, so the grant below is one static
/// string too).
macro_rules! platform_admin {
    () => {
        "tenantctl_admin"
    };
}

/// The platform database's master user (the platform template's `MasterUsername`), which tenantctl
/// connects as (with IAM authentication once `rds_iam` is granted to it).
pub const PLATFORM_ADMIN: &str = platform_admin!();

/// The one statement an operator runs as that user, once, so it logs in with IAM tokens.
pub const PLATFORM_ADMIN_IAM_GRANT: &str = concat!("GRANT rds_iam TO ", platform_admin!());
const DIGEST_SENTINEL: &str = "@@tenantctl-digest@@";

/// Fills the digest: SHA-256 over the template (with the sentinel in place) and the stack's tags, so
/// an unchanged stack is recognised from `DescribeStacks` alone, without a change set.
fn seal(body: String, tags: &BTreeMap<String, String>) -> Rendered {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(body.as_bytes());
    for (k, v) in tags {
        ctx.update(&[0]);
        ctx.update(k.as_bytes());
        ctx.update(&[0]);
        ctx.update(v.as_bytes());
    }
    let digest: String = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Rendered {
        body: body.replace(DIGEST_SENTINEL, &digest),
        digest,
    }
}

/// The platform outputs a tenant stack of `tier` takes as parameters.
pub fn platform_parameters(tier: Tier) -> &'static [&'static str] {
    match tier {
        Tier::Dedicated => &[
            "PrivateSubnetA",
            "PrivateSubnetB",
            "FunctionSecurityGroup",
            "DatabaseSecurityGroup",
            "DbSubnetGroup",
            "MonitoringRoleArn",
        ],
        Tier::Pool | Tier::Schema => &[
            "DatabaseEndpoint",
            "PrivateSubnetA",
            "PrivateSubnetB",
            "FunctionSecurityGroup",
            "DbiResourceId",
        ],
    }
}

/// Where the runtime's Lambda package (a zip holding `bootstrap`) lives: `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaCode {
    pub bucket: String,
    pub key: String,
}

impl std::str::FromStr for LambdaCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("s3://").ok_or_else(|| {
            format!("`{s}` is not an S3 location; expected s3://BUCKET/KEY (the zip holding `bootstrap`)")
        })?;
        match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(Self {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            _ => Err(format!(
                "`{s}` names no bucket or no key; expected s3://BUCKET/KEY"
            )),
        }
    }
}

/// A tenant stack's parameters: the platform outputs its tier needs, then the Lambda package.
pub fn tenant_parameters(
    spec: &TenantSpec,
    platform_outputs: &BTreeMap<String, String>,
    code: &LambdaCode,
    platform_stack: &str,
) -> Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    for name in platform_parameters(spec.tier) {
        let value = platform_outputs.get(*name).ok_or_else(|| {
            anyhow::anyhow!(
                "the platform stack `{platform_stack}` has no output `{name}`\n\
                 hint: apply the platform stack of this tenantctl version first (`tenantctl apply` does)"
            )
        })?;
        params.push(((*name).to_owned(), value.clone()));
    }
    params.push(("CodeBucket".into(), code.bucket.clone()));
    params.push(("CodeKey".into(), code.key.clone()));
    Ok(params)
}

/// The resources a template declares, as (logical id, type), for a plan of a stack not created yet.
pub fn template_resources(body: &str) -> Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Resource {
        #[serde(rename = "Type")]
        kind: String,
    }
    #[derive(serde::Deserialize)]
    struct Template {
        #[serde(rename = "Resources")]
        resources: BTreeMap<String, Resource>,
    }
    let t: Template = serde_norway::from_str(body)?;
    Ok(t.resources.into_iter().map(|(k, r)| (k, r.kind)).collect())
}

/// Instances of one tenant's Lambda at most (its reserved concurrency): no tenant can take the
/// account's concurrency from the others.
pub const LAMBDA_RESERVED_CONCURRENCY: u32 = 10;
/// Database connections one Lambda instance may hold. Reserved concurrency times this stays within the
/// tenant role's `CONNECTION LIMIT` (`provision::apply::TENANT_CONNECTION_LIMIT`).
pub const LAMBDA_CONNECTIONS_PER_INSTANCE: usize = 2;
// Held, not just documented: every instance of a tenant's function at once stays within its role's
// database connection limit.
const _: () = assert!(
    LAMBDA_RESERVED_CONCURRENCY as i64 * LAMBDA_CONNECTIONS_PER_INSTANCE as i64
        <= crate::provision::apply::TENANT_CONNECTION_LIMIT,
    "reserved concurrency x connections per instance exceeds the tenant role's CONNECTION LIMIT"
);
/// The tenant API stage's steady request rate (per second) and burst; beyond them API Gateway
/// answers 429 before the function runs.
pub const STAGE_THROTTLE_RATE: u32 = 50;
pub const STAGE_THROTTLE_BURST: u32 = 100;
/// One JSON access record per request: who (the token's subject), what, the outcome, how long; never a
/// body or a token.
const ACCESS_LOG_FORMAT: &str = r#"{"requestId":"$context.requestId","time":"$context.requestTime","ip":"$context.identity.sourceIp","method":"$context.httpMethod","path":"$context.path","status":"$context.status","bytes":"$context.responseLength","latencyMs":"$context.integrationLatency","subject":"$context.authorizer.claims.sub","authError":"$context.authorizer.error","integrationError":"$context.integrationErrorMessage"}"#;

/// Where the tenant's Lambda finds the RDS certificate bundle: the package must include it
/// (`cargo lambda build ... --include rds-ca-bundle.pem`, see docs/aws.md).
pub const LAMBDA_RDS_CA: &str = "/var/task/rds-ca-bundle.pem";
const DB_HOST_PLACEHOLDER: &str = "@@tenantctl-database-host@@";
/// Stands for the ARN of the tenant's `i`-th Bedrock inference profile (`BedrockProfile<i>`).
const PROFILE_PLACEHOLDER: &str = "@@tenantctl-bedrock-profile-";

/// The tenant's Bedrock models with the region each is called in, in a stable order: one
/// application inference profile each (`BedrockProfile<i>` in the stack).
pub fn bedrock_models(spec: &TenantSpec) -> Vec<(runtime::domain::ModelId, String)> {
    spec.models
        .providers
        .get(&runtime::domain::ProviderId::Bedrock)
        .map(|p| {
            let region = p.endpoint.region.clone().unwrap_or_default();
            p.models
                .iter()
                .map(|m| (m.clone(), region.clone()))
                .collect()
        })
        .unwrap_or_default()
}
/// Stands for the database port in the rendered configuration (a JSON number once substituted).
const DB_PORT_PLACEHOLDER: u16 = 65_432;

/// The tenant's registry record as its single-tenant deployment carries it, with its prices from
/// `book` (the deployment's imported price book; the built-in one where none is imported yet).
pub fn tenant_record(
    spec: &TenantSpec,
    ns: &Namespace,
    book: &runtime::pricing::PriceBook,
) -> runtime::registry::TenantRecord {
    let (db_role, db_name) = match spec.tier {
        Tier::Pool | Tier::Schema => (ns.tenant_role(&spec.id), ns.as_str().to_owned()),
        Tier::Dedicated => (ns.tenant_role(&spec.id), ns.tenant_database(&spec.id)),
    };
    runtime::registry::TenantRecord {
        id: spec.id.clone(),
        display_name: spec.display_name.clone(),
        tier: spec.tier,
        identity: spec.identity.clone(),
        policy: spec.models.clone(),
        db_role,
        db_name,
        read_only: false,
        suspended: false,
        limits: spec.limits(),
        prices: runtime::registry::prices_for(book, spec.id.as_str(), &spec.models),
        tags: spec.tags.clone(),
        registered: None,
    }
}

/// The runtime configuration of the tenant's Lambda, as the string of an `Fn::Sub` whose only
/// substitutions are its database's host and port (the platform database's, or for the dedicated tier
/// the tenant's own instance's): a single-tenant deployment pinned to the tenant,
/// behind the gateway's JWT authorizer, trusting only the tenant's issuer, logging in to the database
/// with RDS IAM tokens over TLS verified against the RDS bundle. No secret is in it.
fn lambda_runtime_config(
    spec: &TenantSpec,
    ns: &Namespace,
    issuer: &runtime::auth::IssuerConfig,
    book: &runtime::pricing::PriceBook,
) -> Result<String> {
    if issuer.console.is_some() {
        anyhow::bail!(
            "issuer `{}` has a `console` sign-in, but the AWS target does not serve the console: a tenant's Lambda sits behind API Gateway's JWT authorizer, which admits no browser session\nhint: remove `console` from issuer `{}` in the platform configuration for `--target aws`; the console is served by `tenantctl serve` on the local target",
            issuer.name,
            issuer.name
        );
    }
    let mut record = tenant_record(spec, ns, book);
    if let Some(bedrock) = record
        .policy
        .providers
        .get_mut(&runtime::domain::ProviderId::Bedrock)
    {
        for (i, (model, _)) in bedrock_models(spec).into_iter().enumerate() {
            bedrock
                .endpoint
                .inference_profiles
                .insert(model, format!("{PROFILE_PLACEHOLDER}{i}@@"));
        }
    }
    let config = runtime::RuntimeConfig {
        namespace: ns.clone(),
        database: runtime::db::DbEndpoint {
            host: DB_HOST_PLACEHOLDER.into(),
            port: DB_PORT_PLACEHOLDER,
            dbname: record.db_name.clone(),
            tls_ca: Some(LAMBDA_RDS_CA.into()),
            // The function's role may `rds-db:connect` only as this tenant's database user.
            iam_auth: true,
        },
        secrets_dir: std::path::PathBuf::new(),
        secret_store: runtime::state::SecretStoreKind::Aws,
        issuers: vec![issuer.clone()],
        deployment: runtime::auth::DeploymentPolicy {
            tenant: Some(spec.id.clone()),
            require_gateway_authorizer: true,
            platform: None,
        },
        registry_refresh_secs: 60,
        registry_max_stale_secs: 180,
        // A Lambda instance serves one request at a time; two connections cover the ledger write
        // beside a read, and keep `LAMBDA_RESERVED_CONCURRENCY` instances within the role's limit.
        max_connections_per_tenant: LAMBDA_CONNECTIONS_PER_INSTANCE,
        // One request at a time per instance; the cap across instances is reserved concurrency.
        max_in_flight_per_tenant: 4,
        tenant: Some(record),
        provider_key_ttl_secs: 60,
        upstream: Default::default(),
        // One request at a time and frozen between them: each row commits on its own request.
        ledger_commit: runtime::metering::writer::CommitMode::Direct,
        // The console is served on the local target (`tenantctl serve`); a tenant's Lambda sits
        // behind API Gateway's JWT authorizer, which admits no cookie session.
        console: None,
    };
    let json = serde_json::to_string(&config)?;
    // A dedicated tenant's data is on its own instance (the stack's `Database`); every other tier's on
    // the platform database.
    let (host, port) = match spec.tier {
        Tier::Dedicated => ("${TenantDatabaseHost}", "${TenantDatabasePort}"),
        Tier::Pool | Tier::Schema => ("${DatabaseEndpoint}", "5432"),
    };
    // `${` starts a substitution in Fn::Sub; `${!` is its literal form.
    let mut json = json
        .replace("${", "${!")
        .replace(DB_HOST_PLACEHOLDER, host)
        .replace(
            &format!("\"port\":{DB_PORT_PLACEHOLDER}"),
            &format!("\"port\":{port}"),
        );
    for i in 0..bedrock_models(spec).len() {
        json = json.replace(
            &format!("{PROFILE_PLACEHOLDER}{i}@@"),
            &format!("${{BedrockProfile{i}.InferenceProfileArn}}"),
        );
    }
    Ok(json)
}

/// Whether a tenant's function may run: a suspended tenant's stack keeps everything but gets no
/// concurrency, so API Gateway refuses (429) every request before the function runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Serving {
    #[default]
    Active,
    Suspended,
}

/// Renders one tenant's stack, serving, priced by the built-in price book (`tenantctl render`, which
/// reaches no deployment).
pub fn render_tenant(
    spec: &TenantSpec,
    ns: &Namespace,
    env: &str,
    platform: &Platform,
    arch: Arch,
) -> Result<Rendered> {
    let book = crate::prices::builtin();
    render_tenant_serving(spec, ns, env, platform, arch, Serving::Active, &book)
}

/// Renders one tenant's stack, serving or suspended; its function carries its prices from `book`.
pub fn render_tenant_serving(
    spec: &TenantSpec,
    ns: &Namespace,
    env: &str,
    platform: &Platform,
    arch: Arch,
    serving: Serving,
    book: &runtime::pricing::PriceBook,
) -> Result<Rendered> {
    check_environment(env)?;
    let issuer_config = platform.issuer(&spec.identity.issuer).ok_or_else(|| {
        anyhow::anyhow!(
            "issuer `{}` is not in the platform configuration",
            spec.identity.issuer
        )
    })?;
    let issuer = issuer_config.issuer.clone();
    let record = tenant_record(spec, ns, book);
    let (db_user, db_name) = (record.db_role, record.db_name);
    let tags: Vec<(String, String)> = tenant_tags(spec).into_iter().collect();
    let ctx = context! {
        tenant => spec.id.as_str(),
        tier => spec.tier.as_str(),
        namespace => ns.as_str(),
        function_name => tenant_stack_name(env, spec),
        db_user => db_user,
        db_name => db_name,
        issuer => issuer,
        audience => spec.identity.audience,
        architecture => arch.as_str(),
        log_retention_days => log_retention(spec.retention_days),
        tags => tags,
        runtime_config => lambda_runtime_config(spec, ns, issuer_config, book)?,
        bedrock => bedrock_models(spec)
            .into_iter()
            .map(|(model, region)| context! { model => model.as_str(), region => region })
            .collect::<Vec<_>>(),
        reserved_concurrency => match serving {
            Serving::Active => LAMBDA_RESERVED_CONCURRENCY,
            Serving::Suspended => 0,
        },
        throttle_rate => STAGE_THROTTLE_RATE,
        throttle_burst => STAGE_THROTTLE_BURST,
        access_log_format => ACCESS_LOG_FORMAT,
        digest => DIGEST_SENTINEL,
    };
    let body = environment()?.get_template("tenant.yaml")?.render(ctx)?;
    Ok(seal(body, &tenant_tags(spec)))
}

/// Renders the platform stack of environment `env`.
pub fn render_platform(
    env: &str,
    platform: &Platform,
    tags: &BTreeMap<String, String>,
) -> Result<Rendered> {
    check_environment(env)?;
    let issuers: Vec<serde_json::Value> = platform
        .issuers
        .iter()
        .map(|i| serde_json::json!({"name": i.name, "issuer": i.issuer, "audiences": i.audiences}))
        .collect();
    let tags = platform_tags(env, tags);
    let list: Vec<(String, String)> = tags.clone().into_iter().collect();
    let ctx = context! {
        environment => env,
        admin_user => PLATFORM_ADMIN,
        issuers_json => serde_json::to_string(&crate::manifest::canonical(&serde_json::Value::Array(issuers)))?,
        tags => list,
        digest => DIGEST_SENTINEL,
    };
    let body = environment()?.get_template("platform.yaml")?.render(ctx)?;
    Ok(seal(body, &tags))
}

/// The platform stack's tags: `environment` and the given ones.
pub fn platform_tags(env: &str, tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut tags = tags.clone();
    tags.insert("environment".into(), env.to_owned());
    tags
}
