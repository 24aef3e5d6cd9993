//! The command line, declared with clap derive. Doc comments are the help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative, hard-isolated tenants for an LLM platform.
#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version,
    propagate_version = true,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes, in every command's long help (`cli::exit`).
pub const EXIT_CODES: &str = "\
Exit codes (as `terraform plan -detailed-exitcode`):
  0  success, nothing to act on
  1  error (what failed is named; tenants that were done stay done, a second run converges)
  2  success with something to act on: `plan --detailed-exitcode` with changes pending, drift
     (`status`, `drift`), `prices diff` with versions to import, `usage reconcile` beyond tolerance,
     a broken link (`audit verify`)

Environment: every setting with an `[env: ...]` above reads that variable; `TENANTCTL_DATABASE_URL`,
`TENANTCTL_DATABASE_AUTH`, `TENANTCTL_DATABASE_CA`, `TENANTCTL_SECRET_KEY`, `TENANTCTL_PG_BINDIR`,
`TENANTCTL_PG_USER` and `TENANTCTL_LOG` are read from the environment only (docs/configuration.md).";

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// State directory of the local target (cluster, secret store).
    #[arg(long, global = true, env = "TENANTCTL_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Platform configuration (trusted issuers). Default: `platform.yaml` in the current directory if
    /// it exists, else only the local development identity provider.
    #[arg(long, global = true, env = "TENANTCTL_PLATFORM", value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Deployment namespace: the database name and the prefix of its role names.
    #[arg(
        long,
        global = true,
        env = "TENANTCTL_NAMESPACE",
        default_value = "tenantctl"
    )]
    pub namespace: String,
    /// Print less (errors only).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more (repeat for debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never show progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// When to use colors (`NO_COLOR` is respected in `auto`).
    #[arg(long, global = true, value_enum, env = "TENANTCTL_COLOR", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Output format of data printed on stdout; with `json`, an error is one JSON object on stderr
    /// (`{"schema": "tenantctl.error/v1", "kind", "message", "causes", "hints", "exit_code"}`).
    #[arg(long, global = true, value_enum, env = "TENANTCTL_OUTPUT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Tenants worked on at the same time: migrated (`migrate`), or deployed in one wave (`apply`
    /// on the AWS target).
    #[arg(long, global = true, env = "TENANTCTL_PARALLELISM", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Where tenants live: this machine, or an AWS account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// The embedded Postgres cluster, local secret store, runtime on loopback.
    Local,
    /// CloudFormation stacks, Secrets Manager, RDS (the control plane at `TENANTCTL_DATABASE_URL`).
    Aws,
}

/// Options of the AWS target. Credentials and region come from the standard AWS configuration chain
/// (environment, profiles, SSO, role assumption); they are never options.
#[derive(Debug, Args)]
#[command(next_help_heading = "Target options")]
pub struct AwsArgs {
    /// Which target to work on.
    #[arg(long, global = true, env = "TENANTCTL_TARGET", value_enum, default_value_t = TargetKind::Local)]
    pub target: TargetKind,
    /// Environment name (`prod`, `staging`): part of every stack name (AWS target).
    #[arg(long = "env", global = true, env = "TENANTCTL_ENV", value_name = "ENV")]
    pub environment: Option<String>,
    /// Send every AWS call to this endpoint (an emulator such as moto); AWS target. The SDK's own
    /// `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) work too.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// The runtime's Lambda package, s3://BUCKET/KEY (a zip holding `bootstrap`).
    #[arg(
        long,
        global = true,
        env = "TENANTCTL_LAMBDA_CODE",
        value_name = "S3_URL"
    )]
    pub lambda_code: Option<crate::aws::LambdaCode>,
    /// Lambda architecture of tenant functions; AWS target.
    #[arg(long, global = true, value_enum, env = "TENANTCTL_ARCH", default_value_t = crate::aws::Arch::Arm64)]
    pub arch: crate::aws::Arch,
}

/// An isolation tier, as `move --to` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    /// Rows in the shared pool under forced row-level security.
    Pool,
    /// A schema and login role of its own.
    Schema,
    /// A database (on AWS, an RDS instance) of its own.
    Dedicated,
}

impl TierArg {
    pub fn tier(self) -> runtime::domain::Tier {
        match self {
            TierArg::Pool => runtime::domain::Tier::Pool,
            TierArg::Schema => runtime::domain::Tier::Schema,
            TierArg::Dedicated => runtime::domain::Tier::Dedicated,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests without touching any target.
    Validate {
        /// Manifest files or directories of manifests.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show what `apply` would create or change, per tenant.
    ///
    /// Exits 0 on success whether or not changes are pending (1 on error, or when a tenant's plan is
    /// blocked); with `--detailed-exitcode`, 0 means no changes and 2 changes pending, as Terraform's.
    /// `--out FILE` saves the plan for `tenantctl apply FILE`, which applies exactly that plan and
    /// refuses if the manifests or the target changed since.
    #[command(after_long_help = "Examples:
  tenantctl plan tenants/
  tenantctl plan --detailed-exitcode tenants/ || [ $? -eq 2 ] && echo 'changes pending'
  tenantctl plan --out reviewed.plan tenants/ && tenantctl apply reviewed.plan")]
    Plan {
        /// Manifest files or directories (default: `tenants/`).
        paths: Vec<PathBuf>,
        /// Exit 0 when nothing would change, 2 when changes are pending (1 stays an error).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan (JSON, with a digest of the manifests and of what it was planned against)
        /// to FILE, for `tenantctl apply FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Plan an offboarded tenant's onboarding again (without it, its manifest is refused).
        #[arg(long)]
        reactivate: bool,
    },
    /// Create or update every tenant in the manifests, or apply a plan saved by `plan --out`; a second
    /// run reports no changes.
    #[command(after_long_help = "Examples:
  tenantctl apply tenants/
  tenantctl apply tenants/acme.yaml
  tenantctl apply reviewed.plan        # exactly what `tenantctl plan --out reviewed.plan` showed")]
    Apply {
        /// Manifest files or directories (default: `tenants/`), or one saved plan file.
        paths: Vec<PathBuf>,
        #[command(flatten)]
        approve: Approve,
    },
    /// AWS target: create or update the platform stack alone (network, keys, the platform
    /// database) and print the steps left before the first `apply`, with this environment's values.
    /// Needs no database connection (it is what creates the database). The local target's
    /// equivalent is `tenantctl local start`.
    #[command(after_long_help = "Example:\n  tenantctl --target aws --env prod bootstrap")]
    Bootstrap {
        /// Allow a change that removes or replaces a resource of the platform stack.
        #[arg(long, visible_alias = "auto-approve")]
        yes: bool,
    },
    /// Validate, plan and apply one tenant's manifest.
    #[command(after_long_help = "Example:\n  tenantctl onboard tenants/acme.yaml")]
    Onboard {
        /// The tenant's manifest file.
        file: PathBuf,
        #[command(flatten)]
        approve: Approve,
    },
    /// Bring every active tenant to the newest tenant migration, in parallel, and add each ledger's
    /// monthly partitions for this month and the next twelve (run it at least yearly); failures are
    /// reported per tenant and do not stop the others. `--parallelism` tenants at a time.
    #[command(after_long_help = "Example:\n  tenantctl migrate --parallelism 16")]
    Migrate,
    /// Move a tenant to another isolation tier. Its API keeps serving reads; writes get 503 with
    /// Retry-After during the copy. Update the manifest's `tier` afterwards.
    ///
    /// The copy is verified before the tenant's old home is removed; the removal asks on a terminal
    /// (or needs `--yes`). `--dry-run` says what would be copied and removed, and changes nothing.
    #[command(after_long_help = "Examples:
  tenantctl move acme --to dedicated --dry-run
  tenantctl move acme --to dedicated --yes")]
    Move(MoveArgs),
    /// Suspend a tenant: every runtime refuses its requests within its registry refresh interval, and on
    /// AWS its function is left with no concurrency (API Gateway refuses its requests before the
    /// function runs). Its data, keys and stack are kept; `apply` keeps it suspended.
    Suspend {
        /// Tenant id.
        tenant: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a suspended tenant (on AWS, its function gets its reserved concurrency back).
    Resume {
        /// Tenant id.
        tenant: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Export a tenant's data (one JSON-lines file per table, verified), then delete it from its tier
    /// and mark it offboarded in the registry (kept for finance). Remove its manifest first, or the
    /// next apply refuses it (unless `--reactivate`).
    #[command(after_long_help = "Examples:
  tenantctl offboard acme --export ./out --dry-run
  tenantctl offboard acme --export ./out            # asks on a terminal
  tenantctl offboard acme --export ./out --yes      # CI")]
    Offboard {
        /// Tenant id.
        tenant: String,
        /// Directory the export is written to (`<dir>/<tenant>/`).
        #[arg(long, value_name = "DIR")]
        export: PathBuf,
        /// Do not ask (offboarding deletes the tenant's data once it is exported and verified).
        #[arg(long, visible_alias = "auto-approve")]
        yes: bool,
        /// Say what would be exported and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every tenant in the registry and check its database login (and, on AWS, its stack).
    /// Exits 2 on drift (suspended and offboarded tenants are states, not drift).
    #[command(
        after_long_help = "Example:\n  tenantctl status --output json | jq '.tenants[] | select(.drift)'"
    )]
    Status,
    /// Reconcile the registry with CloudFormation (AWS target): a stack missing, failed, orphaned, or
    /// disagreeing with the registry. Exits 2 when drift is found.
    Drift,
    /// Manage a tenant's secrets (provider keys). Values are read from stdin or a file, never from
    /// arguments. Every change is an event of the tenant's audit chain, so the deployment must be
    /// reachable (locally: `tenantctl local start`).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// The price book: import `prices/book.yaml` (or another file) into the deployment, compare a
    /// file with what is imported, list what is charged. Imported versions never change.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Finance: a month's usage per tenant, cost-center and model; a tenant's month reconciled
    /// against its provider's invoice export.
    Usage {
        #[command(subcommand)]
        command: UsageCommand,
    },
    /// What each tenant cost: its LLM spend from the ledger next to its AWS spend from Cost Explorer
    /// (grouped by the `tenant` cost-allocation tag), for a month. AWS target only.
    Cost {
        #[command(subcommand)]
        command: CostCommand,
    },
    /// The audit trail: every privileged action's event, hash-chained per tenant. `verify` checks
    /// each chain and names the first broken link (exit 1); `export` writes a tenant's chain as
    /// JSON lines an auditor can check with `jq` and `sha256sum` alone (docs/security.md).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Mint an access token from the dev identity provider (local target only): a tenant's, or with
    /// `--operator` a platform operator's (for the `/v1/platform/...` routes only).
    Token {
        /// Tenant id (must be onboarded).
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        tenant: Option<String>,
        /// A platform operator's token (no tenant; `platform:` scopes).
        #[arg(long)]
        operator: bool,
        /// Subject (`sub`) of the token.
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// Space-separated scopes [default: a tenant member's, or every `platform:` scope with
        /// `--operator`].
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=86_400))]
        ttl: i64,
    },
    /// Serve the API for every onboarded tenant, and the dev identity provider, on loopback.
    Serve(ServeArgs),
    /// Do everything: start the local cluster, onboard `tenants/`, serve, print ready-to-paste curl
    /// commands. Ctrl-C stops the server and the cluster it started.
    Up {
        /// Directory of tenant manifests.
        #[arg(long, default_value = "tenants")]
        tenants: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Manage the local Postgres cluster.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Render the AWS target's CloudFormation templates (platform stack and one stack per tenant) into a
    /// directory, without calling AWS.
    Render {
        /// Manifest files or directories (default: `tenants/`).
        paths: Vec<PathBuf>,
        /// Directory the templates are written to (needs `--env`).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the JSON Schema of tenant manifests.
    Schema,
    /// Print shell completions for `tenantctl` (from the same definitions as `--help`).
    #[command(after_long_help = "Examples:
  tenantctl completions bash > /etc/bash_completion.d/tenantctl
  tenantctl completions zsh > \"${fpath[1]}/_tenantctl\"
  tenantctl completions fish > ~/.config/fish/completions/tenantctl.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (`tenantctl.1` and one per subcommand, e.g. `tenantctl-plan.1`) to a
    /// directory.
    #[command(
        after_long_help = "Example:\n  tenantctl man --out /usr/local/share/man/man1 && man tenantctl-plan"
    )]
    Man {
        /// Directory the pages are written to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// What `apply` and `onboard` may do beyond creating and updating.
#[derive(Debug, Clone, Copy, Args)]
pub struct Approve {
    /// Onboard an offboarded tenant again from its manifest (a new, empty tenant under its id; its
    /// old usage rows are kept for finance). Local target.
    #[arg(long)]
    pub reactivate: bool,
    /// Allow changes that remove or replace a resource (AWS target: a change set with `Remove` or
    /// `Replacement`; without it such a stack is left unchanged and named). Local applies never
    /// remove anything.
    #[arg(long, visible_alias = "auto-approve")]
    pub yes: bool,
}

/// `tenantctl move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Tenant id.
    pub tenant: String,
    /// Destination tier.
    #[arg(long, value_enum)]
    pub to: TierArg,
    /// Seconds to wait for every runtime to see a registry change (at least its refresh interval).
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// Do not ask (the tenant's old home is removed once the copy is verified).
    #[arg(long, visible_alias = "auto-approve")]
    pub yes: bool,
    /// Say what would be copied and removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// API listen address.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Dev identity provider (JWKS) listen address.
    #[arg(long, default_value = "127.0.0.1:8788")]
    pub idp_listen: SocketAddr,
    /// Operator metrics (Prometheus text at `/metrics`) listen address; keep it off the public network.
    #[arg(long, default_value = "127.0.0.1:8789")]
    pub metrics_listen: SocketAddr,
    /// How ledger rows are made durable: `group` (the rows of a tenant's concurrent calls share a
    /// commit; what `auto` means here) or `direct` (each call commits its own row).
    #[arg(long, value_enum, default_value_t = LedgerCommit::Auto)]
    pub ledger_commit: LedgerCommit,
}

/// `--ledger-commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LedgerCommit {
    Auto,
    Group,
    Direct,
}

impl LedgerCommit {
    pub fn mode(self) -> runtime::metering::writer::CommitMode {
        use runtime::metering::writer::CommitMode;
        match self {
            LedgerCommit::Auto => CommitMode::Auto,
            LedgerCommit::Group => CommitMode::Group,
            LedgerCommit::Direct => CommitMode::Direct,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create or replace `tenants/<TENANT>/<NAME>` (restoring it if it is scheduled for deletion).
    /// A tenant's provider key is `providers/<provider>`, e.g. `providers/openai`.
    Put {
        /// Tenant id.
        tenant: String,
        /// Secret name under the tenant, e.g. `providers/openai`.
        name: String,
        /// Read the value from this file instead of stdin. Trailing newlines are removed.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// Replace an existing secret with a new version. Running runtimes use it within
    /// `provider_key_ttl_secs` (60 s by default), or at once when the provider refuses the old key.
    Rotate {
        /// Tenant id.
        tenant: String,
        /// Secret name under the tenant, e.g. `providers/openai`.
        name: String,
        /// Read the new value from this file instead of stdin. Trailing newlines are removed.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// List a tenant's secrets: names, versions and when they changed, never values.
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Delete a secret (on AWS: schedule its deletion, restorable within the recovery window).
    /// Asks for the secret's name to confirm, unless `--yes`.
    Delete {
        /// Tenant id.
        tenant: String,
        /// Secret name under the tenant, e.g. `providers/openai`.
        name: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Say what would be deleted (the secret exists, its name), and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which of a tenant's two audit chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditChain {
    /// What the platform did to the tenant (`control.audit_events`).
    Platform,
    /// What happened inside the tenant through the API (its own `audit_events`).
    Tenant,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every tenant's chains (or one tenant's): the platform's chain of it and its own (what
    /// its admins did through the API): events numbered without a gap, each naming the previous
    /// event's hash, each hash its fields' hash. Prints each chain's head hash (keep it elsewhere:
    /// events removed from a chain's end leave no broken link). Exits 2 at a broken link.
    Verify {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Write a tenant's chain to stdout, one JSON object per line, oldest first.
    Export {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Which chain: the platform's chain of the tenant, or the tenant's own (in its tier).
        #[arg(long, value_enum, default_value = "platform")]
        chain: AuditChain,
    },
    /// Check the isolation fences of this deployment from the inside: log in as each tenant's own
    /// database role (active or suspended) and try to reach every other tenant (its schema, its database,
    /// its pool rows with the tenant setting claiming it) and the control plane; check each role has
    /// no dangerous attribute or membership and every pool table keeps row-level security forced.
    /// Exits 2 on a finding. Read-only.
    ///
    /// Example: `tenantctl --output json audit isolation --tenant acme > isolation-acme.json`
    Isolation {
        /// Only this tenant (the catalog check always runs).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Csv,
}

impl ReportFormat {
    /// `--format` as given, else what `--output` asks for.
    pub fn or_output(format: Option<Self>, output: OutputFormat) -> Self {
        format.unwrap_or(match output {
            OutputFormat::Json => ReportFormat::Json,
            OutputFormat::Text => ReportFormat::Text,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// A calendar month (UTC) per tenant, cost-center, provider and model: requests, input and
    /// output tokens, cost in micro-USD; totals per tenant, per cost-center and overall, each the
    /// exact sum of its lines.
    Report {
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// `text`, `json` or `csv` [default: `json` with `--output json`, else `text`].
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
    },
    /// Remove usage past retention: each tenant's ledger rows older than its `retention.usage_days`,
    /// and offboarded tenants' retained usage past its day; says what it removed. Asks first.
    Purge {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Say what would be removed (per tenant: rows, store, oldest day), and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A tenant's month against its provider's cost export (OpenAI- or Anthropic-style CSV), per day
    /// and model. Exits 2 when any line differs by more than its tolerance: its number of calls in
    /// micro-USD (the ledger rounds each call up) plus `--tolerance-micro-usd`.
    Reconcile {
        /// Tenant id (its provider account is billed on its own key).
        #[arg(long)]
        tenant: String,
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// The provider's cost export.
        #[arg(long, value_name = "FILE")]
        invoice: PathBuf,
        /// Extra variance accepted per day and model, in micro-USD.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        tolerance_micro_usd: i64,
        /// `text`, `json` or `csv` [default: `json` with `--output json`, else `text`].
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CostCommand {
    /// One line per tenant: LLM spend, AWS spend, total; and the AWS spend no tenant owns.
    Report {
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// `text`, `json` or `csv` [default: `json` with `--output json`, else `text`].
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    /// Add the file's versions the deployment does not have (one transaction: all or none). A version
    /// already imported with other prices, or a new one effective before today, is refused.
    Import {
        /// The price book file.
        #[arg(long, value_name = "FILE", default_value = crate::prices::BUILTIN_PATH)]
        file: PathBuf,
    },
    /// Compare the file with the deployment's book, version by version. Exits 2 when an import
    /// would add or refuse anything.
    Diff {
        /// The price book file.
        #[arg(long, value_name = "FILE", default_value = crate::prices::BUILTIN_PATH)]
        file: PathBuf,
    },
    /// The prices charged on a day (today by default), as a tenant is charged them with `--tenant`.
    List {
        /// UTC day, YYYY-MM-DD.
        #[arg(long)]
        at: Option<String>,
        /// Show this tenant's negotiated prices in place.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Create (first time) and start the cluster, and create the control plane.
    Start,
    /// Stop the cluster.
    Stop,
    /// Show where the cluster lives and whether it runs.
    Status,
    /// Rotate the development identity provider's signing key.
    ///
    /// A new key signs every token from now on; the key it replaces stays published, so tokens it
    /// signed keep verifying until `retire-idp-key`. A running `tenantctl serve` publishes the new
    /// set at once; its key cache picks up the new key on the first token that carries it.
    ///
    /// Example: `tenantctl local rotate-idp-key`
    RotateIdpKey,
    /// Stop publishing the key the last rotation replaced: tokens it signed are refused once a
    /// runtime's key cache refreshes (the issuer's `jwks_cache.ttl_secs`), at once after a restart.
    ///
    /// Example: `tenantctl local retire-idp-key`
    RetireIdpKey,
}
