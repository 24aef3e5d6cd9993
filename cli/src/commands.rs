//! One function per command. Data goes to stdout (text or JSON); progress and logs go to stderr.

use std::io::IsTerminal;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use runtime::domain::{Namespace, TenantId};
use runtime::registry::IdentityBinding;
use runtime::secrets::SecretName;
use serde_json::json;

use crate::args::{
    Cli, Command, Global, LocalCommand, OutputFormat, SecretCommand, ServeArgs, TargetKind,
};
use crate::local::StateDir;
use crate::local::cluster::{ADMIN_ROLE, Cluster, ClusterOptions};
use crate::manifest::{self, TenantSpec};
use crate::provision::plan::{Action, Plan};
use crate::provision::{AdminAccess, Target, apply, observe, plan, target_from_url};

/// Runs the parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Validate { paths } => validate(g, &paths),
        Command::Plan {
            paths,
            detailed_exitcode,
            out,
            reactivate,
        } if aws(g) => {
            if out.is_some() {
                bail!(
                    "`--out` saves plans of the local target only; on AWS each tenant's change set is the reviewed plan\nhint: review with `tenantctl plan`, then `tenantctl apply`; CloudFormation applies the change set it previewed"
                );
            }
            refuse_reactivate_on_aws(reactivate)?;
            aws_plan(g, &paths, detailed_exitcode).await
        }
        Command::Apply { paths, approve } if aws(g) => {
            refuse_reactivate_on_aws(approve.reactivate)?;
            aws_apply(g, &paths, approve.yes).await
        }
        Command::Onboard { file, approve } if aws(g) => {
            refuse_reactivate_on_aws(approve.reactivate)?;
            aws_apply(g, &[file], approve.yes).await
        }
        Command::Plan {
            paths,
            detailed_exitcode,
            out,
            reactivate,
        } => plan_cmd(g, &paths, detailed_exitcode, out.as_deref(), reactivate).await,
        Command::Bootstrap { yes } if aws(g) => aws_bootstrap(g, yes).await,
        Command::Bootstrap { .. } => bail!(
            "`bootstrap` creates the AWS target's platform stack; the local target has none\nhint: `tenantctl local start` starts the local target, or pass `--target aws --env ENV`"
        ),
        Command::Apply { paths, approve } => apply_cmd(g, &paths, approve.reactivate).await,
        Command::Onboard { file, approve } => apply_cmd(g, &[file], approve.reactivate).await,
        Command::Status => status(g).await,
        Command::Migrate => migrate(g, g.parallelism.into()).await,
        Command::Offboard {
            tenant,
            export,
            yes,
            dry_run,
        } => offboard(g, &tenant, &export, yes, dry_run).await,
        Command::Suspend { tenant, reason } => serving_cmd(g, &tenant, &reason, true).await,
        Command::Resume { tenant, reason } => serving_cmd(g, &tenant, &reason, false).await,
        Command::Move(args) => move_cmd(g, &args).await,
        Command::Token {
            tenant,
            operator,
            sub,
            scope,
            ttl,
        } => token(g, tenant.as_deref(), operator, &sub, scope.as_deref(), ttl).await,
        Command::Serve(args) => serve(g, &args).await,
        Command::Up { tenants, serve } => up(g, &tenants, &serve).await,
        Command::Local { command } => local(g, command).await,
        Command::Render { paths, out } => render(g, &paths, &environment(g)?, &out, g.aws.arch),
        Command::Drift => drift(g).await,
        Command::Secret { command } => match command {
            SecretCommand::Put {
                tenant,
                name,
                from_file,
            } => secret_put(g, &tenant, &name, from_file.as_deref(), false).await,
            SecretCommand::Rotate {
                tenant,
                name,
                from_file,
            } => secret_put(g, &tenant, &name, from_file.as_deref(), true).await,
            SecretCommand::List { tenant } => secret_list(g, &tenant).await,
            SecretCommand::Delete {
                tenant,
                name,
                yes,
                dry_run,
            } => secret_delete(g, &tenant, &name, yes, dry_run).await,
        },
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tenantctl", &mut script);
            out(&String::from_utf8_lossy(&script))?;
            Ok(crate::exit::OK)
        }
        Command::Man { out: dir } => man_pages(g, &dir),
        Command::Schema => {
            out(&manifest::raw::json_schema())?;
            Ok(0)
        }
        Command::Prices { command } => prices_cmd(g, command).await,
        Command::Audit { command } => audit_cmd(g, command).await,
        Command::Usage { command } => usage_cmd(g, command).await,
        Command::Cost {
            command: crate::args::CostCommand::Report { month, format },
        } => {
            let format = crate::args::ReportFormat::or_output(format, g.output);
            cost_report_cmd(g, &month, format).await
        }
    }
}

async fn audit_cmd(g: &Global, command: crate::args::AuditCommand) -> Result<u8> {
    use crate::args::AuditCommand;
    let parse_tenant = |t: &str| {
        runtime::domain::TenantId::parse(t).map_err(|e| anyhow::anyhow!("`--tenant {t}`: {}", e.0))
    };
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    let client = target.admin().await?;
    match command {
        AuditCommand::Export { tenant, chain } => {
            let tenant = parse_tenant(&tenant)?;
            let chain = match chain {
                crate::args::AuditChain::Platform => {
                    runtime::audit::chain(&client, tenant.as_str()).await?
                }
                crate::args::AuditChain::Tenant => {
                    let loc = crate::provision::offboard::locate(&target, &tenant).await?;
                    crate::provision::offboard::tenant_chain(&target, &loc, &tenant).await?
                }
            };
            if chain.is_empty() {
                bail!(
                    "tenant `{tenant}` has no audit events\nhint: `tenantctl audit verify` lists the tenants that have"
                );
            }
            let text: String = chain.iter().map(|r| r.export_line() + "\n").collect();
            out(&text)?;
            Ok(0)
        }
        AuditCommand::Isolation { tenant } => {
            let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
            let report = crate::isolation::check(&target, tenant.as_ref()).await?;
            match g.output {
                OutputFormat::Json => out_json(&json!({ "isolation": report }))?,
                OutputFormat::Text => out(crate::isolation::render(&report).trim_end())?,
            }
            Ok(crate::exit::findings(crate::isolation::has_findings(
                &report,
            )))
        }
        AuditCommand::Verify { tenant } => {
            let tenants = match tenant {
                Some(t) => vec![parse_tenant(&t)?.as_str().to_owned()],
                None => runtime::audit::tenants(&client).await?,
            };
            let mut results = Vec::new();
            let mut broken = None;
            for t in &tenants {
                let chain = runtime::audit::chain(&client, t).await?;
                match runtime::audit::verify(t, &chain) {
                    Ok(head) => results.push(
                        json!({"tenant": t, "chain": "platform", "events": chain.len(), "head": head, "ok": true}),
                    ),
                    Err(b) => {
                        results.push(json!({"tenant": t, "chain": "platform", "events": chain.len(), "ok": false, "broken_at": b.seq, "reason": b.reason}));
                        broken.get_or_insert((b, "platform"));
                    }
                }
                // The tenant's own chain, where the tenant still has data to hold one.
                let Ok(id) = runtime::domain::TenantId::parse(t) else {
                    continue;
                };
                let Ok(loc) = crate::provision::offboard::locate(&target, &id).await else {
                    continue;
                };
                if loc.status == "offboarded" {
                    continue;
                }
                let own = crate::provision::offboard::tenant_chain(&target, &loc, &id)
                    .await
                    .with_context(|| format!("reading the own audit chain of `{t}`"))?;
                match runtime::audit::verify(t, &own) {
                    Ok(head) => results.push(
                        json!({"tenant": t, "chain": "tenant", "events": own.len(), "head": head, "ok": true}),
                    ),
                    Err(b) => {
                        results.push(json!({"tenant": t, "chain": "tenant", "events": own.len(), "ok": false, "broken_at": b.seq, "reason": b.reason}));
                        broken.get_or_insert((b, "tenant"));
                    }
                }
            }
            match g.output {
                OutputFormat::Json => out_json(&json!({"chains": results}))?,
                OutputFormat::Text => {
                    let mut text = String::new();
                    for r in &results {
                        if r["ok"] == true {
                            text.push_str(&format!(
                                "{}{}: {} event(s), head {}\n",
                                r["tenant"].as_str().unwrap_or_default(),
                                if r["chain"] == "tenant" {
                                    " (own chain)"
                                } else {
                                    ""
                                },
                                r["events"],
                                r["head"].as_str().unwrap_or("-")
                            ));
                        }
                    }
                    if !text.is_empty() {
                        out(&text)?;
                    }
                }
            }
            if let Some((b, chain)) = broken {
                eprintln!(
                    "error: {b}{}\nhint: `tenantctl audit export --tenant {} --chain {chain}` shows the chain; compare it with an earlier export",
                    if chain == "tenant" {
                        " (its own chain)"
                    } else {
                        ""
                    },
                    b.tenant
                );
                return Ok(crate::exit::FINDINGS);
            }
            Ok(0)
        }
    }
}

async fn cost_report_cmd(g: &Global, month: &str, format: crate::args::ReportFormat) -> Result<u8> {
    use crate::args::ReportFormat;
    crate::usage::month_start(month)?;
    if !aws(g) {
        anyhow::bail!(
            "`cost report` reads AWS spend from Cost Explorer: run it with `--target aws`\nhint: `tenantctl usage report --month {month}` gives the LLM spend alone"
        );
    }
    let (target, _, aws_clients) = target_and_aws(g).await?;
    let aws_clients =
        aws_clients.ok_or_else(|| anyhow::anyhow!("the AWS target gave no AWS clients"))?;
    let usage = crate::usage::report(&target, month, None).await?;
    let spend = crate::aws::costs::month_by_tag(
        &aws_clients.cost_explorer,
        "tenant",
        &crate::usage::month_start(month)?,
        &crate::usage::next_month_start(month)?,
    )
    .await?;
    // Kept for the platform's console, which shows it next to the LLM spend.
    let by_tenant: std::collections::BTreeMap<String, i64> = spend
        .iter()
        .filter(|(t, _)| !t.is_empty())
        .map(|(t, v)| (t.clone(), *v))
        .collect();
    crate::provision::record_aws_spend(&target.admin().await?, month, &by_tenant).await?;
    let report = crate::usage::cost_report(&usage, &spend)?;
    match format {
        ReportFormat::Json => out_json(&serde_json::to_value(&report)?)?,
        ReportFormat::Csv => out(&report.csv())?,
        ReportFormat::Text => out(&report.text())?,
    }
    Ok(0)
}

async fn usage_cmd(g: &Global, command: crate::args::UsageCommand) -> Result<u8> {
    use crate::args::{ReportFormat, UsageCommand};
    let parse_tenant = |t: &str| {
        runtime::domain::TenantId::parse(t).map_err(|e| anyhow::anyhow!("`--tenant {t}`: {}", e.0))
    };
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    match command {
        UsageCommand::Report {
            month,
            tenant,
            format,
        } => {
            let only = tenant.as_deref().map(parse_tenant).transpose()?;
            let report = crate::usage::report(&target, &month, only.as_ref()).await?;
            match ReportFormat::or_output(format, g.output) {
                ReportFormat::Json => out_json(&serde_json::to_value(&report)?)?,
                ReportFormat::Csv => out(&report.csv())?,
                ReportFormat::Text => out(&report.text())?,
            }
            Ok(0)
        }
        UsageCommand::Purge { yes, dry_run } => {
            let planned = crate::usage::purge(&target, true).await?;
            let total: i64 = planned.iter().map(|p| p.rows).sum();
            if dry_run {
                match g.output {
                    OutputFormat::Json => out_json(&serde_json::to_value(&planned)?)?,
                    OutputFormat::Text => {
                        let mut text = String::new();
                        for p in &planned {
                            text.push_str(&format!(
                                "would remove {}: {} {} rows from {} on\n",
                                p.tenant, p.rows, p.store, p.oldest
                            ));
                        }
                        text.push_str(&format!("{total} rows in all (dry run: nothing changed)"));
                        out(&text)?;
                    }
                }
                return Ok(0);
            }
            if total == 0 {
                match g.output {
                    OutputFormat::Json => out_json(&serde_json::json!([]))?,
                    OutputFormat::Text => out("no usage is past its retention; nothing to remove")?,
                }
                return Ok(0);
            }
            if !yes {
                for p in &planned {
                    note(
                        g,
                        &format!(
                            "{}: {} {} rows from {} on",
                            p.tenant, p.rows, p.store, p.oldest
                        ),
                    );
                }
                confirm(
                    &format!("purging removes {total} usage rows past their retention"),
                    "purge",
                    "--yes",
                )?;
            }
            let removed = crate::usage::purge(&target, false).await?;
            if g.output == crate::args::OutputFormat::Json {
                out_json(&serde_json::to_value(&removed)?)?;
            } else {
                for p in &removed {
                    out(&format!(
                        "{}: removed {} {} rows (the oldest from {})",
                        p.tenant, p.rows, p.store, p.oldest
                    ))?;
                }
            }
            Ok(0)
        }
        UsageCommand::Reconcile {
            tenant,
            month,
            invoice,
            tolerance_micro_usd,
            format,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let (provider, lines) = crate::usage::reconcile_file(
                &target,
                &tenant,
                &month,
                &invoice,
                tolerance_micro_usd,
            )
            .await?;
            let bad = lines.iter().filter(|l| l.status != "ok").count();
            match ReportFormat::or_output(format, g.output) {
                ReportFormat::Json => out_json(&serde_json::json!({
                    "tenant": tenant.as_str(), "month": month, "provider": provider,
                    "unit": "micro_usd", "lines": lines, "beyond_tolerance": bad,
                }))?,
                ReportFormat::Csv => {
                    let mut text = String::from(
                        "day,model,requests,ledger_micro_usd,invoice_micro_usd,variance_micro_usd,tolerance_micro_usd,status\n",
                    );
                    for l in &lines {
                        text.push_str(&format!(
                            "{},{},{},{},{},{},{},{}\n",
                            l.day,
                            l.model,
                            l.requests,
                            l.ledger_micro_usd,
                            l.invoice_micro_usd,
                            l.variance_micro_usd,
                            l.tolerance_micro_usd,
                            l.status
                        ));
                    }
                    out(&text)?;
                }
                ReportFormat::Text => {
                    let mut text = format!(
                        "{provider} invoice against the ledger of `{tenant}` for {month} (micro-USD):\n"
                    );
                    for l in &lines {
                        text.push_str(&format!(
                            "{} {:<32} ledger {:>12} invoice {:>12} variance {:>+10} (tolerance {}) {}\n",
                            l.day,
                            l.model,
                            l.ledger_micro_usd,
                            l.invoice_micro_usd,
                            l.variance_micro_usd,
                            l.tolerance_micro_usd,
                            l.status
                        ));
                    }
                    text.push_str(&if bad == 0 {
                        "every line within tolerance".to_owned()
                    } else {
                        format!("{bad} line(s) beyond tolerance")
                    });
                    out(&text)?;
                }
            }
            Ok(crate::exit::findings(bad > 0))
        }
    }
}

/// `prices import` and `prices diff` as JSON: each version with its change and what explains it.
fn price_changes_json<V: std::fmt::Display>(
    changes: &[(V, crate::prices::Change)],
) -> serde_json::Value {
    let versions: Vec<serde_json::Value> = changes
        .iter()
        .map(|(version, change)| {
            let (code, detail) = change.code_and_detail();
            json!({"version": version.to_string(), "change": code, "detail": detail})
        })
        .collect();
    json!({ "versions": versions })
}

async fn prices_cmd(g: &Global, command: crate::args::PricesCommand) -> Result<u8> {
    use crate::args::PricesCommand;
    use crate::prices::{Change, compare, import, imported, listing, load};
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    match command {
        PricesCommand::Import { file } => {
            let book = load(&file)?;
            let changes = import(&target, &file, &book).await?;
            if g.output == OutputFormat::Json {
                out_json(&price_changes_json(&changes))?;
                return Ok(0);
            }
            for (version, change) in &changes {
                let what = match change {
                    Change::New => "imported",
                    Change::Unchanged => "unchanged",
                    Change::OnlyImported => "kept (imported before, not in the file)",
                    Change::Changed(_) | Change::Backdated(_) => "refused",
                };
                out(&format!("{version}: {what}"))?;
            }
            Ok(0)
        }
        PricesCommand::Diff { file } => {
            let book = load(&file)?;
            let changes = compare(&book, &imported(&target).await?, &runtime::pricing::today());
            let pending = changes.iter().any(|(_, c)| c.pending());
            if g.output == OutputFormat::Json {
                out_json(&price_changes_json(&changes))?;
                return Ok(crate::exit::findings(pending));
            }
            for (version, change) in &changes {
                let line = match change {
                    Change::New => format!("{version}: new, `tenantctl prices import` adds it"),
                    Change::Unchanged => format!("{version}: unchanged"),
                    Change::OnlyImported => format!("{version}: imported, not in the file (kept)"),
                    Change::Changed(diff) => format!(
                        "{version}: imported with other prices; an import refuses it:\n  {}",
                        diff.join("\n  ")
                    ),
                    Change::Backdated(why) => format!("{version}: an import refuses it: {why}"),
                };
                out(&line)?;
            }
            Ok(crate::exit::findings(pending))
        }
        PricesCommand::List { at, tenant } => {
            let day = at.unwrap_or_else(runtime::pricing::today);
            if let Some(t) = &tenant {
                runtime::domain::TenantId::parse(t)
                    .map_err(|e| anyhow::anyhow!("`--tenant {t}`: {}", e.0))?;
            }
            let book = imported(&target).await?;
            match g.output {
                OutputFormat::Json => out_json(&crate::prices::listing_json(
                    &book,
                    &day,
                    tenant.as_deref(),
                )?)?,
                OutputFormat::Text => out(&listing(&book, &day, tenant.as_deref())?)?,
            }
            Ok(0)
        }
    }
}

fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

fn out_json(value: &serde_json::Value) -> Result<()> {
    out(&serde_json::to_string_pretty(value)?)
}

fn note(g: &Global, text: &str) {
    if !g.quiet {
        eprintln!("{text}");
    }
}

fn default_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("tenants")]
    } else {
        paths.to_vec()
    }
}

/// Loads manifests, printing every error; `Err` carries how many failed.
fn load(g: &Global, paths: &[PathBuf]) -> Result<Vec<TenantSpec>> {
    Ok(load_with_files(g, paths)?
        .into_iter()
        .map(|(_, s)| s)
        .collect())
}

fn load_with_files(g: &Global, paths: &[PathBuf]) -> Result<Vec<(PathBuf, TenantSpec)>> {
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    match manifest::load_all(&default_paths(paths), &platform) {
        Ok(specs) => Ok(specs),
        Err(errors) => {
            if g.output == OutputFormat::Json {
                let list: Vec<_> = errors
                    .iter()
                    .map(|e| json!({"file": e.file, "line": e.line, "column": e.column, "path": e.path, "message": e.message, "hint": e.hint}))
                    .collect();
                out_json(&json!({"valid": false, "errors": list}))?;
            }
            for e in &errors {
                eprintln!("{}", e.render());
            }
            bail!("{} manifest error(s); nothing was applied", errors.len())
        }
    }
}

fn validate(g: &Global, paths: &[PathBuf]) -> Result<u8> {
    let specs = load(g, paths)?;
    match g.output {
        OutputFormat::Json => out_json(
            &json!({"valid": true, "tenants": specs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()}),
        )?,
        OutputFormat::Text => {
            for s in &specs {
                out(&format!("ok: `{}` ({} tier)", s.id, s.tier))?;
            }
        }
    }
    Ok(0)
}

fn render(
    g: &Global,
    paths: &[PathBuf],
    env: &str,
    dir: &std::path::Path,
    arch: crate::aws::Arch,
) -> Result<u8> {
    let specs = load(g, paths)?;
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    let ns = namespace(g)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut written = Vec::new();
    let platform_body =
        crate::aws::render_platform(env, &platform, &std::collections::BTreeMap::new())?;
    let path = dir.join(format!("{}.yaml", crate::aws::platform_stack_name(env)));
    std::fs::write(&path, platform_body.body)?;
    written.push(path);
    for spec in &specs {
        let body = crate::aws::render_tenant(spec, &ns, env, &platform, arch)?;
        let path = dir.join(format!("{}.yaml", crate::aws::tenant_stack_name(env, spec)));
        std::fs::write(&path, body.body)?;
        written.push(path);
    }
    match g.output {
        OutputFormat::Json => out_json(&json!({"templates": written}))?,
        OutputFormat::Text => {
            for p in &written {
                out(&p.display().to_string())?;
            }
        }
    }
    Ok(0)
}

fn namespace(g: &Global) -> Result<Namespace> {
    Namespace::parse(&g.namespace).map_err(|e| anyhow::anyhow!("`--namespace`: {e}"))
}

fn aws(g: &Global) -> bool {
    g.aws.target == TargetKind::Aws
}

/// The `--env` of the AWS target, checked.
fn environment(g: &Global) -> Result<String> {
    let env = g.aws.environment.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "the AWS target needs an environment name\nhint: pass `--env prod` (or set TENANTCTL_ENV)"
        )
    })?;
    crate::aws::check_environment(&env).map_err(|e| anyhow::anyhow!("`--env`: {e}"))?;
    Ok(env)
}

/// The AWS target: clients for `--env`, and its control plane (the platform database) at
/// `TENANTCTL_DATABASE_URL`, with tenant secrets in Secrets Manager.
async fn aws_target(g: &Global) -> Result<(crate::aws::fleet::Aws, Target)> {
    let env = environment(g)?;
    let url = std::env::var("TENANTCTL_DATABASE_URL").map_err(|_| {
        anyhow::anyhow!(
            "the AWS target keeps its registry in the platform database, and TENANTCTL_DATABASE_URL is not set\n\
             hint: in a new environment run `tenantctl --target aws --env ENV bootstrap` first: it creates that database and prints the connection to set (docs/aws.md)"
        )
    })?;
    let aws = crate::aws::fleet::Aws::connect(&env, g.aws.endpoint_url.as_deref()).await?;
    let state = StateDir::resolve(g.state_dir.as_deref())?;
    let ns = namespace(g)?;
    let secrets_dir = state.secrets_dir(&ns);
    let mut target = target_from_url(
        &url,
        ns,
        runtime::secrets::SecretStore::Aws(aws.secrets.clone()),
        secrets_dir,
    )?;
    // The platform database is across a network: verified TLS whenever a CA bundle is given.
    target.endpoint.tls_ca =
        std::env::var_os("TENANTCTL_DATABASE_CA").map(std::path::PathBuf::from);
    match std::env::var("TENANTCTL_DATABASE_AUTH").as_deref() {
        Ok("iam") => {
            let ca = std::env::var("TENANTCTL_DATABASE_CA").map_err(|_| {
                anyhow::anyhow!(
                    "TENANTCTL_DATABASE_AUTH=iam needs TENANTCTL_DATABASE_CA, the RDS certificate bundle\n\
                     hint: download global-bundle.pem from AWS and point TENANTCTL_DATABASE_CA at it"
                )
            })?;
            let crate::provision::AdminAccess::Url(config) = &target.admin else {
                bail!("TENANTCTL_DATABASE_AUTH=iam needs TENANTCTL_DATABASE_URL");
            };
            target.admin = crate::provision::AdminAccess::Iam(Box::new(
                crate::aws::rds_iam::IamAccess::new((**config).clone(), std::path::Path::new(&ca))
                    .await?,
            ));
        }
        Ok("password") | Err(_) => {}
        Ok(other) => bail!(
            "TENANTCTL_DATABASE_AUTH is `{}`; expected `iam` or `password`",
            runtime::domain::printable(other)
        ),
    }
    Ok((aws, target))
}

/// The target: the AWS target's control plane with `--target aws`; else `TENANTCTL_DATABASE_URL` if
/// set, else the local cluster (which must be running).
pub async fn target(g: &Global) -> Result<(Target, Option<Cluster>)> {
    let (target, cluster, _) = target_and_aws(g).await?;
    Ok((target, cluster))
}

/// The target, and with `--target aws` the AWS clients it was built with (made once per command).
async fn target_and_aws(
    g: &Global,
) -> Result<(Target, Option<Cluster>, Option<crate::aws::fleet::Aws>)> {
    if aws(g) {
        let (aws, target) = aws_target(g).await?;
        return Ok((target, None, Some(aws)));
    }
    let (target, cluster) = local_target(g)?;
    Ok((target, cluster, None))
}

fn local_target(g: &Global) -> Result<(Target, Option<Cluster>)> {
    let state = StateDir::resolve(g.state_dir.as_deref())?;
    let ns = namespace(g)?;
    let secrets = state.secrets(&ns)?;
    let secrets_dir = state.secrets_dir(&ns);
    if let Ok(url) = std::env::var("TENANTCTL_DATABASE_URL") {
        return Ok((target_from_url(&url, ns, secrets, secrets_dir)?, None));
    }
    let cluster = Cluster::new(&state)?;
    let target = Target {
        endpoint: cluster.endpoint(ns.as_str()),
        namespace: ns,
        admin: AdminAccess::Peer {
            role: ADMIN_ROLE.into(),
        },
        secrets,
        secrets_dir,
    };
    Ok((target, Some(cluster)))
}

fn require_running(cluster: Option<&Cluster>) -> Result<()> {
    if let Some(c) = cluster
        && (!c.is_initialized() || !c.is_running())
    {
        bail!(
            "the local Postgres cluster is not running\nhint: run `tenantctl local start` (or `tenantctl up` to do everything)"
        );
    }
    Ok(())
}

/// Writes `tenantctl.1` and `tenantctl-<sub>[-<sub>].1` for every subcommand into `dir`.
fn man_pages(g: &Global, dir: &std::path::Path) -> Result<u8> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0;
    let mut stack = vec![("tenantctl".to_owned(), cmd)];
    while let Some((name, cmd)) = stack.pop() {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone().name(name.clone())).render(&mut page)?;
        let file = dir.join(format!("{name}.1"));
        std::fs::write(&file, page)
            .with_context(|| format!("cannot write `{}`", file.display()))?;
        written += 1;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            stack.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
    }
    match g.output {
        OutputFormat::Json => out_json(&json!({"man_pages": written, "dir": dir}))?,
        OutputFormat::Text => note(g, &format!("{written} man page(s) in `{}`", dir.display())),
    }
    Ok(crate::exit::OK)
}

/// An offboarded tenant is onboarded again on the local target only for now.
fn refuse_reactivate_on_aws(reactivate: bool) -> Result<()> {
    if reactivate {
        bail!(
            "`--reactivate` runs on the local target only: on AWS an offboarded tenant's secrets wait out their recovery window and its stack is gone\nhint: restore its secrets (`aws secretsmanager restore-secret`) and onboard it under a new id, or reactivate it on the local target"
        );
    }
    Ok(())
}

/// What planning `paths` against the target found: the target, the manifests (with their files),
/// what was observed, and the plan.
struct Planned {
    target: Target,
    manifests: Vec<(PathBuf, TenantSpec)>,
    observed: observe::Observed,
    plan: Plan,
}

impl Planned {
    fn specs(&self) -> Vec<TenantSpec> {
        self.manifests.iter().map(|(_, s)| s.clone()).collect()
    }
}

async fn compute_plan(g: &Global, paths: &[PathBuf], reactivate: bool) -> Result<Planned> {
    let manifests = load_with_files(g, paths)?;
    let specs: Vec<TenantSpec> = manifests.iter().map(|(_, s)| s.clone()).collect();
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    let (observed, plan) = plan::observe_and_plan(&target, &specs, reactivate).await?;
    Ok(Planned {
        target,
        manifests,
        observed,
        plan,
    })
}

fn fleet_options(g: &Global) -> Result<crate::aws::fleet::FleetOptions> {
    let code = g.aws.lambda_code.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "the AWS target needs the runtime's Lambda package\n\
             hint: build it (`cargo lambda build --release --arm64 -p runtime --bin tenant-runtime --output-format zip --include rds-ca-bundle.pem`, see docs/aws.md), upload it to S3 and pass `--lambda-code s3://BUCKET/KEY` (or set TENANTCTL_LAMBDA_CODE)"
        )
    })?;
    Ok(crate::aws::fleet::FleetOptions {
        arch: g.aws.arch,
        code,
        parallelism: usize::from(g.parallelism),
        allow_destructive: false,
    })
}

/// Everything `plan` and `apply` need on AWS, checked in order: manifests (before any AWS or database
/// call), options, then the control plane.
async fn aws_prepare(
    g: &Global,
    paths: &[PathBuf],
) -> Result<(
    crate::aws::fleet::Aws,
    Target,
    Vec<TenantSpec>,
    crate::aws::fleet::FleetOptions,
    Plan,
)> {
    let specs = load(g, paths)?;
    let opts = fleet_options(g)?;
    let (aws, target) = aws_target(g).await?;
    let plan = plan::plan_for(&target, &specs, false).await?;
    Ok((aws, target, specs, opts, plan))
}

async fn aws_plan(g: &Global, paths: &[PathBuf], detailed: bool) -> Result<u8> {
    let (aws, target, specs, opts, db_plan) = aws_prepare(g, paths).await?;
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    let plan = crate::aws::fleet::plan(&aws, &target, &platform, &specs, db_plan, &opts).await?;
    match g.output {
        OutputFormat::Json => out_json(
            &json!({"plan": plan, "aws_calls": aws.calls.get(), "aws_calls_by_operation": aws.calls.by_operation()}),
        )?,
        OutputFormat::Text => out(&plan.render())?,
    }
    let blocked = plan.database.has_blocked()
        || std::iter::once(&plan.platform)
            .chain(&plan.stacks)
            .any(|p| matches!(p.action, crate::aws::fleet::StackAction::Blocked(_)));
    Ok(plan_exit(g, blocked, plan.has_changes(), detailed))
}

async fn aws_bootstrap(g: &Global, yes: bool) -> Result<u8> {
    let env = environment(g)?;
    let aws = crate::aws::fleet::Aws::connect(&env, g.aws.endpoint_url.as_deref()).await?;
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    let bars = crate::aws::fleet::Bars::new(
        !(g.quiet || g.no_progress || !std::io::stderr().is_terminal()),
    );
    let done = crate::aws::fleet::bootstrap(&aws, &platform, yes, &bars).await?;
    match g.output {
        OutputFormat::Json => out_json(&serde_json::to_value(&done)?)?,
        OutputFormat::Text => {
            let mut text = format!(
                "platform stack {}: {}\n",
                done.stack,
                serde_json::to_value(done.outcome)?.as_str().unwrap_or("")
            );
            for (k, v) in &done.outputs {
                if k != crate::aws::DIGEST_OUTPUT {
                    text.push_str(&format!("  {k:<24} {v}\n"));
                }
            }
            text.push_str("next:\n");
            for (i, step) in done.next_steps.iter().enumerate() {
                text.push_str(&format!("  {}. {step}\n", i + 1));
            }
            out(text.trim_end())?
        }
    }
    Ok(crate::exit::OK)
}

async fn aws_apply(g: &Global, paths: &[PathBuf], yes: bool) -> Result<u8> {
    let (aws, target, specs, mut opts, db_plan) = aws_prepare(g, paths).await?;
    opts.allow_destructive = yes;
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    let bars = crate::aws::fleet::Bars::new(
        !(g.quiet || g.no_progress || !std::io::stderr().is_terminal()),
    );
    let report =
        crate::aws::fleet::apply(&aws, &target, &platform, &specs, &db_plan, &opts, &bars).await?;
    if g.output == OutputFormat::Text {
        note(
            g,
            &format!(
                "platform stack {}: {}",
                crate::aws::platform_stack_name(&aws.env),
                serde_json::to_value(report.platform)?
                    .as_str()
                    .unwrap_or("")
            ),
        );
        if let Some(tags) = &report.cost_tags {
            if !tags.activated.is_empty() {
                note(
                    g,
                    &format!("cost-allocation tags active: {}", tags.activated.join(", ")),
                );
            }
            for (key, why) in &tags.pending {
                note(
                    g,
                    &format!(
                        "cost-allocation tag `{key}` is not visible to billing yet ({why}); the next apply activates it"
                    ),
                );
            }
            for (key, why) in &tags.failed {
                eprintln!("warning: cost-allocation tag `{key}` was refused: {why}");
            }
        }
        if let Some(e) = &report.cost_tags_error {
            eprintln!("warning: cost-allocation tags were not activated: {e}");
        }
        note(g, &format!("{} AWS call(s)", report.aws_calls));
    }
    if g.output == OutputFormat::Json {
        out_json(&serde_json::to_value(&report)?)?;
        let failed = report
            .outcomes
            .iter()
            .any(|o| matches!(o.result, "failed" | "blocked"));
        return Ok(if failed {
            crate::exit::ERROR
        } else {
            crate::exit::OK
        });
    }
    report_outcomes(g, &report.outcomes, "apply --target aws")
}

async fn drift(g: &Global) -> Result<u8> {
    if !aws(g) {
        bail!(
            "`tenantctl drift` compares the registry with CloudFormation\nhint: pass `--target aws --env ENV` (for the local target, `tenantctl status` checks every tenant)"
        );
    }
    let (aws, target) = aws_target(g).await?;
    let (findings, _) = crate::aws::fleet::drift(&aws, &target).await?;
    match g.output {
        OutputFormat::Json => out_json(&json!({"environment": aws.env, "drift": findings}))?,
        OutputFormat::Text => {
            for f in &findings {
                out(&format!(
                    "{} ({}): {}\n    hint: {}",
                    f.tenant, f.stack, f.problem, f.hint
                ))?;
            }
            if findings.is_empty() {
                note(g, "No drift: the registry and CloudFormation agree.");
            }
        }
    }
    Ok(crate::exit::findings(!findings.is_empty()))
}

/// Reads a secret value from a file or stdin, never from arguments; trailing newlines removed.
fn read_secret_value(from_file: Option<&std::path::Path>) -> Result<secrecy::SecretString> {
    use std::io::Read as _;
    let mut raw = String::new();
    match from_file {
        Some(p) if p != std::path::Path::new("-") => {
            std::fs::File::open(p)
                .and_then(|mut f| f.read_to_string(&mut raw))
                .with_context(|| format!("cannot read the secret from `{}`", p.display()))?;
        }
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!("Paste the secret, then press Ctrl-D:");
            }
            std::io::stdin()
                .read_to_string(&mut raw)
                .context("cannot read the secret from stdin")?;
        }
    }
    let value = raw.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        bail!("the secret is empty\nhint: pipe the value on stdin or pass `--from-file FILE`");
    }
    Ok(secrecy::SecretString::from(value))
}

/// The secret store of the target `g` names.
async fn secret_store(g: &Global) -> Result<runtime::secrets::SecretStore> {
    Ok(if aws(g) {
        runtime::secrets::SecretStore::Aws(
            crate::aws::fleet::Aws::connect(&environment(g)?, g.aws.endpoint_url.as_deref())
                .await?
                .secrets,
        )
    } else {
        let state = StateDir::resolve(g.state_dir.as_deref())?;
        state.secrets(&namespace(g)?)?
    })
}

/// Changes a secret with its audit event: the event is written first in a transaction that commits
/// only once the change is made, so a change whose event cannot be written is not made (security
/// case 60); a change that fails rolls its event back and records the failure instead. The event
/// names the secret, never its value (case 62).
#[expect(
    clippy::disallowed_methods,
    reason = "the audit trail is the control plane, not tenant data"
)]
async fn audited_secret_change<F, Fut>(
    target: &Target,
    tenant: &TenantId,
    secret: &SecretName,
    action: &str,
    change: F,
) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), runtime::secrets::SecretError>>,
{
    let on = format!("secret/{}", secret.as_str());
    let mut client = target.admin().await?;
    let tx = client.transaction().await?;
    apply::record_on(&tx, tenant, &on, action, "succeeded", "").await?;
    if let Err(e) = change().await {
        drop(tx);
        let failed = format!("{e}");
        let tx = client.transaction().await?;
        apply::record_on(&tx, tenant, &on, action, "failed", &failed).await?;
        tx.commit().await?;
        bail!("{e}");
    }
    tx.commit()
        .await
        .context("committing the audit event of the secret's change")?;
    Ok(())
}

fn tenant_secret(tenant: &str, name: &str) -> Result<(TenantId, SecretName)> {
    let tenant = TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
    let secret = SecretName::for_tenant(&tenant, name).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nhint: a provider key is `providers/<provider>`, e.g. `providers/openai`"
        )
    })?;
    Ok((tenant, secret))
}

async fn secret_put(
    g: &Global,
    tenant: &str,
    name: &str,
    from_file: Option<&std::path::Path>,
    rotate: bool,
) -> Result<u8> {
    let (tenant, secret) = tenant_secret(tenant, name)?;
    let (target, cluster, _aws) = target_and_aws(g).await?;
    require_running(cluster.as_ref())?;
    let store = &target.secrets;
    if rotate
        && !store
            .exists(&secret)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        bail!(
            "secret `{}` does not exist, so there is nothing to rotate\nhint: create it with `tenantctl secret put {tenant} {name}`",
            secret.as_str()
        );
    }
    let value = read_secret_value(from_file)?;
    let action = if rotate {
        "secret.rotate"
    } else {
        "secret.put"
    };
    audited_secret_change(&target, &tenant, &secret, action, || {
        store.put(&secret, &value)
    })
    .await?;
    let listed = store
        .list(&format!("tenants/{tenant}/"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let version = listed
        .iter()
        .find(|i| i.name == secret.as_str())
        .map(|i| i.version.clone())
        .unwrap_or_default();
    match g.output {
        OutputFormat::Json => {
            out_json(&json!({"secret": secret.as_str(), "stored": true, "version": version}))?
        }
        OutputFormat::Text if rotate => out(&format!(
            "rotated `{}` (version {version}); runtimes use it within their key TTL, or at once if the provider refuses the old key",
            secret.as_str()
        ))?,
        OutputFormat::Text => out(&format!("stored `{}` (version {version})", secret.as_str()))?,
    }
    Ok(0)
}

async fn secret_list(g: &Global, tenant: &str) -> Result<u8> {
    let tenant = TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
    let store = secret_store(g).await?;
    let listed = store
        .list(&format!("tenants/{tenant}/"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match g.output {
        OutputFormat::Json => out_json(&serde_json::to_value(&listed)?)?,
        OutputFormat::Text => {
            let mut text = format!("{:<48} {:<38} {}\n", "NAME", "VERSION", "CHANGED");
            for i in &listed {
                text.push_str(&format!(
                    "{:<48} {:<38} {}\n",
                    i.name,
                    i.version,
                    i.changed_at.as_deref().unwrap_or("-")
                ));
            }
            out(&text)?;
        }
    }
    Ok(0)
}

async fn secret_delete(
    g: &Global,
    tenant: &str,
    name: &str,
    yes: bool,
    dry_run: bool,
) -> Result<u8> {
    let (tenant_id, secret) = tenant_secret(tenant, name)?;
    let (target, cluster, _aws) = target_and_aws(g).await?;
    require_running(cluster.as_ref())?;
    let store = &target.secrets;
    if !store
        .exists(&secret)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        bail!(
            "secret `{}` does not exist\nhint: `tenantctl secret list {tenant}` shows its secrets",
            secret.as_str()
        );
    }
    if dry_run {
        match g.output {
            OutputFormat::Json => {
                out_json(&json!({"secret": secret.as_str(), "deleted": false, "dry_run": true}))?
            }
            OutputFormat::Text => out(&format!(
                "would delete `{}`{} (dry run: nothing changed)",
                secret.as_str(),
                if aws(g) {
                    ", restorable within the recovery window"
                } else {
                    ""
                }
            ))?,
        }
        return Ok(0);
    }
    if !yes {
        confirm(&format!("deleting `{}`", secret.as_str()), name, "--yes")?;
    }
    audited_secret_change(&target, &tenant_id, &secret, "secret.delete", || {
        store.delete(&secret)
    })
    .await?;
    match g.output {
        OutputFormat::Json => out_json(&json!({"secret": secret.as_str(), "deleted": true}))?,
        OutputFormat::Text if aws(g) => out(&format!(
            "scheduled `{}` for deletion (restorable with `tenantctl secret put` within the recovery window)",
            secret.as_str()
        ))?,
        OutputFormat::Text => out(&format!("deleted `{}`", secret.as_str()))?,
    }
    Ok(0)
}

/// The exit code of a plan: 1 when a tenant's plan is blocked (it cannot be applied as written), else
/// 0, or with `detailed` 2 when changes are pending.
fn plan_exit(g: &Global, blocked: bool, changes: bool, detailed: bool) -> u8 {
    if blocked {
        if g.output == OutputFormat::Text {
            eprintln!(
                "error: the plan is blocked for at least one tenant (see `blocked:` above); nothing can be applied as written"
            );
        }
        crate::exit::ERROR
    } else if detailed {
        crate::exit::findings(changes)
    } else {
        crate::exit::OK
    }
}

async fn plan_cmd(
    g: &Global,
    paths: &[PathBuf],
    detailed: bool,
    save: Option<&std::path::Path>,
    reactivate: bool,
) -> Result<u8> {
    let planned = compute_plan(g, paths, reactivate).await?;
    let plan = &planned.plan;
    match g.output {
        OutputFormat::Json => out_json(&serde_json::to_value(plan)?)?,
        OutputFormat::Text => out(&plan.render())?,
    }
    if let Some(file) = save {
        if plan.has_blocked() {
            bail!(
                "a blocked plan is not saved\nhint: resolve what `blocked:` says above, then plan again"
            );
        }
        crate::provision::saved::SavedPlan::new(
            &planned.target,
            &planned.manifests,
            &planned.observed,
            plan,
            reactivate,
        )?
        .write(file)?;
        note(
            g,
            &format!(
                "Saved the plan to `{}`; `tenantctl apply {}` applies exactly this plan, and refuses if the manifests or the target changed since.",
                file.display(),
                file.display()
            ),
        );
    }
    Ok(plan_exit(
        g,
        plan.has_blocked(),
        plan.has_changes(),
        detailed,
    ))
}

fn progress_bar(g: &Global) -> indicatif::ProgressBar {
    if g.quiet || g.no_progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

async fn apply_cmd(g: &Global, paths: &[PathBuf], reactivate: bool) -> Result<u8> {
    let saved = match paths {
        [one] => crate::provision::saved::SavedPlan::read_if_plan(one)?,
        _ => None,
    };
    let planned = match &saved {
        Some(saved) => {
            if reactivate && !saved.reactivate {
                bail!(
                    "`--reactivate` cannot widen a saved plan\nhint: `tenantctl plan --reactivate --out FILE` again"
                );
            }
            let files: Vec<PathBuf> = saved.manifests.iter().map(|m| m.path.clone()).collect();
            let planned = compute_plan(g, &files, saved.reactivate).await?;
            if let Some(why) = saved.stale(
                &planned.target,
                &planned.manifests,
                &planned.observed,
                &planned.plan,
            )? {
                bail!(
                    "the saved plan `{}` is stale: {why}; nothing was applied\nhint: review the changes again with `tenantctl plan --out {}`",
                    paths[0].display(),
                    paths[0].display()
                );
            }
            planned
        }
        None => compute_plan(g, paths, reactivate).await?,
    };
    let specs = planned.specs();
    let (target, plan) = (planned.target, planned.plan);
    if g.output == OutputFormat::Text && !g.quiet {
        eprint!("{}", plan.render());
    }
    let outcomes = apply::apply(&target, &plan, &specs, &progress_bar(g)).await?;
    if g.output == OutputFormat::Text && !plan.has_changes() {
        note(g, "No changes: every tenant is up to date.");
    }
    report_outcomes(g, &outcomes, "apply")
}

/// Prints per-tenant outcomes (failures also on stderr) and returns the exit code: 2 if any tenant
/// failed or was blocked. `command` names what to re-run in the hint.
fn report_outcomes(g: &Global, outcomes: &[apply::Outcome], command: &str) -> Result<u8> {
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.result, "failed" | "blocked"))
        .count();
    match g.output {
        OutputFormat::Json => out_json(&json!({"outcomes": outcomes}))?,
        OutputFormat::Text => {
            for o in outcomes {
                out(&format!("{}: {}", o.tenant, o.result))?;
                if let Some(e) = &o.error {
                    eprintln!("error: tenant `{}`: {e}", o.tenant);
                }
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} tenant(s) failed; the others were done\nhint: fix the cause above and run `tenantctl {command}` again (it converges)"
        );
        return Ok(crate::exit::ERROR);
    }
    Ok(crate::exit::OK)
}

async fn migrate(g: &Global, jobs: usize) -> Result<u8> {
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    target.ensure_database().await?;
    let outcomes = crate::provision::migrate::migrate_all(&target, jobs, &progress_bar(g)).await?;
    report_outcomes(g, &outcomes, "migrate")
}

/// `tenantctl suspend` (`suspend`) and `tenantctl resume`.
async fn serving_cmd(g: &Global, tenant: &str, reason: &str, suspend: bool) -> Result<u8> {
    use crate::provision::suspend::{self, Change};
    let tenant = TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
    let (target, cluster, aws_clients) = target_and_aws(g).await?;
    require_running(cluster.as_ref())?;
    let change = if suspend {
        suspend::suspend(&target, &tenant, reason).await?
    } else {
        suspend::resume(&target, &tenant, reason).await?
    };
    let word = if suspend { "suspended" } else { "resumed" };
    let mut stack = None;
    if let Some(aws_clients) = &aws_clients {
        // Always brought in line with the registry, so re-running finishes an interrupted change.
        let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
        let spec = suspend::registered_spec(&target, &tenant).await?;
        let serving = if suspend {
            crate::aws::Serving::Suspended
        } else {
            crate::aws::Serving::Active
        };
        let outcome = crate::aws::fleet::set_serving(
            aws_clients,
            &target,
            &platform,
            &spec,
            &fleet_options(g)?,
            serving,
        )
        .await
        .with_context(|| {
            format!(
                "the registry says `{tenant}` is {word}, but its stack could not be updated\nhint: fix the cause and run the same command again"
            )
        })?;
        stack = Some(outcome);
    }
    match g.output {
        OutputFormat::Json => out_json(
            &json!({"tenant": tenant, "status": if suspend { "suspended" } else { "active" },
            "change": change, "stack": stack}),
        )?,
        OutputFormat::Text => out(&match change {
            Change::Changed => format!("{tenant}: {word}"),
            Change::AlreadyThere => format!("{tenant}: already {word}"),
        })?,
    }
    Ok(0)
}

async fn move_cmd(g: &Global, args: &crate::args::MoveArgs) -> Result<u8> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
    let (drain_secs, yes, dry_run) = (args.drain_secs, args.yes, args.dry_run);
    let to = args.to.tier();
    if aws(g) {
        bail!(
            "`tenantctl move` does not run on the AWS target yet: a tenant's function carries its data's \
             location in its stack, so the read-only window and the switch would need the stack redeployed \
             between the copy and the removal\nhint: keep the tenant on its tier on AWS for now; `tenantctl \
             move` runs on the local target"
        );
    }
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    let preview = crate::provision::offboard::preview(&target, &tenant).await?;
    if preview.tier != to {
        let what = format!(
            "moving {}\nto tier `{to}`: the old home is removed once the copy is verified",
            preview.render()
        );
        if dry_run {
            match g.output {
                OutputFormat::Json => {
                    out_json(&json!({"dry_run": true, "move": preview, "to": to}))?
                }
                OutputFormat::Text => out(&format!("{what}\n(dry run: nothing was changed)"))?,
            }
            return Ok(crate::exit::OK);
        }
        if !yes {
            confirm(&what, tenant.as_str(), "--yes")?;
        }
    }
    let drain = std::time::Duration::from_secs(drain_secs);
    let report = crate::provision::moves::move_tenant(&target, &tenant, to, drain).await?;
    match g.output {
        OutputFormat::Json => out_json(&serde_json::to_value(&report)?)?,
        OutputFormat::Text => {
            if report.from == report.to {
                out(&format!("{tenant}: already on tier `{to}`"))?;
            } else {
                out(&format!(
                    "{tenant}: moved from `{}` to `{}` ({} row(s) copied and verified, {} late row(s) caught up)",
                    report.from, report.to, report.rows, report.stragglers
                ))?;
                note(
                    g,
                    &format!(
                        "hint: set `tier: {to}` in the tenant's manifest so the next `tenantctl plan` agrees"
                    ),
                );
            }
        }
    }
    Ok(0)
}

/// Shows what a destructive step destroys and asks on the terminal for `expected` to be typed, or
/// refuses (nothing done) when there is no terminal to ask on, naming the flag that skips asking.
fn confirm(what: &str, expected: &str, flag: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "{what}\nthis needs confirmation and there is no terminal to ask on\nhint: pass `{flag}` (nothing was done)"
        );
    }
    eprint!("{what}: type `{expected}` to go on: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != expected {
        bail!("not confirmed; nothing was done");
    }
    Ok(())
}

async fn offboard(
    g: &Global,
    tenant: &str,
    export: &std::path::Path,
    yes: bool,
    dry_run: bool,
) -> Result<u8> {
    let tenant = TenantId::parse(tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
    let (target, cluster, aws) = target_and_aws(g).await?;
    require_running(cluster.as_ref())?;
    let preview = crate::provision::offboard::preview(&target, &tenant).await?;
    let what = if preview.status == "offboarded" {
        format!("`{tenant}` is offboarded already: leftovers of it are removed")
    } else {
        format!(
            "offboarding {}\nis exported to `{}`, verified, then deleted{}; its usage rows are kept for retention",
            preview.render(),
            export.display(),
            if aws.is_some() {
                ", with its stack and (after the recovery window) its secrets"
            } else {
                ""
            }
        )
    };
    if dry_run {
        match g.output {
            OutputFormat::Json => out_json(&json!({"dry_run": true, "offboard": preview}))?,
            OutputFormat::Text => out(&format!("{what}\n(dry run: nothing was changed)"))?,
        }
        return Ok(crate::exit::OK);
    }
    if !yes {
        confirm(&what, tenant.as_str(), "--yes")?;
    }
    // On AWS a dedicated tenant's data is on its own instance: exported from there (unless it was
    // offboarded already, and the instance went with its stack).
    let loc = crate::provision::offboard::locate(&target, &tenant).await?;
    let instance = match (&aws, loc.host.is_some() && loc.status != "offboarded") {
        (Some(aws), true) => {
            let spec = crate::provision::suspend::registered_spec(&target, &tenant).await?;
            let stack = crate::aws::tenant_stack_name(&aws.env, &spec);
            Some(
                crate::aws::fleet::dedicated_instance(aws, &target, &stack)
                    .await?
                    .0,
            )
        }
        _ => None,
    };
    let report =
        crate::provision::offboard::offboard_from(&target, instance.as_ref(), &tenant, export)
            .await?;
    let aws_report = if let Some(aws) = aws {
        let bar = progress_bar(g);
        let r = crate::aws::fleet::offboard(&aws, &target, &tenant, report.tier, &bar).await;
        bar.finish_and_clear();
        Some(r.with_context(|| {
            format!("the database part of offboarding `{tenant}` is done; the AWS part failed\nhint: fix the cause and run the same `tenantctl offboard` again (it resumes)")
        })?)
    } else {
        None
    };
    if let Some(a) = &aws_report
        && g.output == OutputFormat::Text
    {
        if a.stack_deleted {
            out(&format!(
                "{tenant}: stack `{}` deleted{}",
                a.stack,
                if a.final_snapshot {
                    " (CloudFormation kept a final snapshot of the dedicated database)"
                } else {
                    ""
                }
            ))?;
        }
        out(&format!(
            "{tenant}: {} secret(s) scheduled for deletion (recoverable for {} days)",
            a.secrets_scheduled_for_deletion.len(),
            a.recovery_window_days
        ))?;
    }
    match g.output {
        OutputFormat::Json => out_json(&json!({"database": report, "aws": aws_report}))?,
        OutputFormat::Text => {
            if report.already_offboarded {
                out(&format!(
                    "{tenant}: already offboarded; leftovers cleaned up"
                ))?;
            } else {
                for (table, rows) in &report.rows {
                    out(&format!("{tenant}: exported {rows} row(s) of `{table}`"))?;
                }
                out(&format!(
                    "{tenant}: offboarded ({} tier); export in `{}`",
                    report.tier,
                    report.export_dir.display()
                ))?;
            }
        }
    }
    Ok(0)
}

async fn status(g: &Global) -> Result<u8> {
    let (target, cluster, aws) = target_and_aws(g).await?;
    require_running(cluster.as_ref())?;
    target.ensure_database().await?;
    let observed = observe::observe(&target, observe::Scope::All).await?;
    let latest = runtime::schema::latest_version();
    let mut rows = Vec::new();
    let mut drift = false;
    // What was found per tenant, recorded for the platform's console (`control.tenant_checks`).
    let mut checks: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    let located = if observed.control_plane {
        crate::provision::offboard::locate_all(&target.admin().await?).await?
    } else {
        Default::default()
    };
    for (id, t) in &observed.tenants {
        // An offboarded tenant is a state, not drift: its role and data are gone on purpose.
        if t.status == "offboarded" {
            let on = t.offboarded_on.clone().unwrap_or_default();
            rows.push(json!({
                "tenant": id, "tier": t.tier, "status": t.status, "offboarded_on": on,
                "migrations": null, "ledger_partitions": null, "db_login": null,
                "spec_hash": &t.spec_hash[..12.min(t.spec_hash.len())], "drift": false,
            }));
            continue;
        }
        let login = match located.get(id.as_str()) {
            Some(loc) => login_check(&target, id, loc).await,
            None => Err(anyhow::anyhow!("`{id}` is not in the registry")),
        };
        // Next month's ledger partition (tenant migration 0010): missing, its rows would go to the
        // default partition; `tenantctl migrate` adds it.
        let partitions_ok = t.migration_version < runtime::schema::LEDGER_PARTITIONED_SINCE
            || matches!(login, Ok(true));
        let tenant_drift = login.is_err()
            || t.migration_version < latest
            // Suspended is a state an operator chose; `read_only` is a move that did not finish.
            || !matches!(t.status.as_str(), "active" | "suspended")
            || !partitions_ok;
        drift |= tenant_drift;
        let mut found = Vec::new();
        if let Err(e) = &login {
            found.push(json!({"problem": format!("its role cannot log in to its data: {e:#}"), "hint": "see docs/runbooks/restore-dedicated.md (a dedicated tier) or run `tenantctl apply`"}));
        }
        if t.migration_version < latest {
            found.push(json!({"problem": format!("migrations {}/{latest}", t.migration_version), "hint": "run `tenantctl migrate`"}));
        }
        if !matches!(t.status.as_str(), "active" | "suspended") {
            found.push(json!({"problem": format!("status `{}`: a move that did not finish", t.status), "hint": "run the `tenantctl move` again"}));
        }
        if !partitions_ok && login.is_ok() {
            found.push(json!({"problem": "next month's ledger partition is missing", "hint": "run `tenantctl migrate`"}));
        }
        checks.push((id.to_string(), found));
        rows.push(json!({
            "tenant": id, "tier": t.tier, "status": t.status,
            "migrations": format!("{}/{latest}", t.migration_version),
            // Unknown when the role cannot log in (that is the drift to name, not the partition).
            "ledger_partitions": match (&login, partitions_ok) {
                (Err(_), _) => serde_json::Value::Null,
                (Ok(_), true) => json!("ok"),
                (Ok(_), false) => json!("next month missing: run `tenantctl migrate`"),
            },
            "db_login": login.as_ref().map(|_| "ok".to_owned()).unwrap_or_else(|e| format!("failed: {e:#}")),
            "spec_hash": &t.spec_hash[..12.min(t.spec_hash.len())],
            "drift": tenant_drift,
        }));
    }
    let stack_drift = if let Some(aws) = &aws {
        let (findings, stacks) = crate::aws::fleet::drift(aws, &target).await?;
        drift |= !findings.is_empty();
        for f in &findings {
            if let Some((_, found)) = checks.iter_mut().find(|(t, _)| *t == f.tenant) {
                found.push(json!({"problem": format!("stack `{}`: {}", f.stack, f.problem), "hint": f.hint}));
            }
        }
        // Where each tenant's clients send requests: its stack's HTTP API.
        for r in &mut rows {
            let name =
                crate::aws::tenant_stack_name_of(&aws.env, r["tenant"].as_str().unwrap_or(""));
            if let Some(url) = stacks.get(&name).and_then(|s| s.outputs.get("ApiEndpoint")) {
                r["api_endpoint"] = json!(url);
            }
        }
        Some(findings)
    } else {
        None
    };
    if observed.control_plane {
        crate::provision::record_checks(&target.admin().await?, "tenantctl status", &checks)
            .await?;
    }
    match g.output {
        OutputFormat::Json => out_json(
            &json!({"namespace": target.namespace, "database": target.endpoint.dbname, "tenants": rows, "stack_drift": stack_drift}),
        )?,
        OutputFormat::Text => {
            out(&format!(
                "{:<24} {:<10} {:<10} {:<11} {:<8} SPEC",
                "TENANT", "TIER", "STATUS", "MIGRATIONS", "LOGIN"
            ))?;
            for r in &rows {
                let tenant = r["tenant"].as_str().unwrap_or("");
                if let Some(e) = r["db_login"]
                    .as_str()
                    .and_then(|l| l.strip_prefix("failed: "))
                {
                    out(&format!(
                        "drift: {tenant}: its role cannot log in to its data: {e}"
                    ))?;
                } else if let Some(p) = r["ledger_partitions"].as_str().filter(|p| *p != "ok") {
                    out(&format!("drift: {tenant}: ledger partition of {p}"))?;
                }
            }
            for r in &rows {
                if let Some(on) = r["offboarded_on"].as_str() {
                    out(&format!(
                        "{:<24} {:<10} offboarded on {on}",
                        r["tenant"].as_str().unwrap_or(""),
                        r["tier"].as_str().unwrap_or(""),
                    ))?;
                    continue;
                }
                let login = r["db_login"].as_str().unwrap_or("");
                out(&format!(
                    "{:<24} {:<10} {:<10} {:<11} {:<8} {}",
                    r["tenant"].as_str().unwrap_or(""),
                    r["tier"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or(""),
                    r["migrations"].as_str().unwrap_or(""),
                    if login == "ok" { "ok" } else { "FAILED" },
                    r["spec_hash"].as_str().unwrap_or(""),
                ))?;
            }
            if rows.is_empty() {
                note(g, "No tenants yet.\nhint: run `tenantctl apply tenants/`");
            }
            for r in &rows {
                if let Some(url) = r["api_endpoint"].as_str() {
                    out(&format!(
                        "api: {:<19} {url}",
                        r["tenant"].as_str().unwrap_or("")
                    ))?;
                }
            }
            for f in stack_drift.iter().flatten() {
                out(&format!(
                    "drift: {} ({}): {}\n    hint: {}",
                    f.tenant, f.stack, f.problem, f.hint
                ))?;
            }
        }
    }
    Ok(crate::exit::findings(drift))
}

/// Logs in the way the runtime will for this tenant (its own role, on every tier; its database) with
/// the stored password, and runs one query: whether its ledger (in its schema) has next month's
/// partition.
async fn login_check(
    target: &Target,
    id: &TenantId,
    loc: &crate::provision::offboard::Location,
) -> Result<bool> {
    let (client, _task) =
        crate::provision::offboard::connect_as_tenant(target, id, loc, "tenantctl-status").await?;
    let row = client
        .query_one(
            "SELECT to_regclass(format('%I.%I', $1::text, 'usage_ledger_' || \
                    to_char((now() AT TIME ZONE 'UTC') + interval '1 month', '\"y\"YYYY\"m\"MM'))) \
                    IS NOT NULL",
            &[&loc.schema],
        )
        .await?;
    Ok(row.get(0))
}

async fn binding_of(target: &Target, tenant: &TenantId) -> Result<IdentityBinding> {
    let client = target.admin().await?;
    let row = client
        .query_opt(
            "SELECT issuer, audience, tenant_claim, status, \
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') \
               FROM control.tenants WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await
        .context("reading the tenant registry")?
        .with_context(|| format!("tenant `{tenant}` is not onboarded\nhint: run `tenantctl onboard tenants/{tenant}.yaml`"))?;
    let status: String = row.get(3);
    match status.as_str() {
        "active" => {}
        "offboarded" => bail!(
            "tenant `{tenant}` was offboarded on {}; it has no data and no API left to call\nhint: onboarding it again is explicit: `tenantctl apply --reactivate tenants/{tenant}.yaml`",
            row.get::<_, String>(4)
        ),
        "suspended" => bail!(
            "tenant `{tenant}` is suspended; the API refuses every token of it\nhint: `tenantctl resume {tenant}` first"
        ),
        other => bail!(
            "tenant `{tenant}` is `{other}` (a tier move in progress?)\nhint: wait for `tenantctl move` to finish"
        ),
    }
    let binding = IdentityBinding {
        issuer: row.get(0),
        audience: row.get(1),
        tenant_claim: row.get(2),
    };
    if binding.issuer != "platform" {
        bail!(
            "tenant `{tenant}` trusts issuer `{}`, not the dev identity provider; mint its tokens there",
            binding.issuer
        );
    }
    Ok(binding)
}

async fn token(
    g: &Global,
    tenant: Option<&str>,
    operator: bool,
    sub: &str,
    scope: Option<&str>,
    ttl: i64,
) -> Result<u8> {
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    if !platform.dev_issuer {
        bail!(
            "the platform configuration defines its own `platform` issuer, so there is no development identity provider to mint tokens\nhint: get tokens from that issuer"
        );
    }
    let role = if operator {
        "platform_operator"
    } else {
        "tenant_member"
    };
    let default_scope = runtime::auth::roles::expand(&format!("role:{role}"))
        .unwrap_or_default()
        .join(" ");
    let scopes: Vec<String> = scope
        .unwrap_or(&default_scope)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for s in &scopes {
        if !runtime::http::routes::is_permission(s) {
            let known: Vec<&str> = runtime::http::routes::PERMISSIONS
                .iter()
                .map(|(p, _)| *p)
                .collect();
            bail!("unknown scope `{s}`\nhint: scopes are {}", known.join(", "));
        }
        if s.starts_with(runtime::auth::PLATFORM_PREFIX) != operator {
            bail!(
                "scope `{s}` is {} scope\nhint: platform scopes go in operator tokens (`--operator`), tenant scopes in tenant tokens (`--tenant`)",
                if operator { "a tenant" } else { "a platform" }
            );
        }
    }
    let signer = crate::devidp::signer(&target.secrets).await?;
    let (token, tenant) = if operator {
        (
            crate::devidp::mint_operator(&signer, sub, &scopes, ttl),
            None,
        )
    } else {
        let tenant = TenantId::parse(tenant.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("`--tenant`: {e}"))?;
        let binding = binding_of(&target, &tenant).await?;
        (
            crate::devidp::mint(&signer, &binding, &tenant, sub, &scopes, ttl),
            Some(tenant),
        )
    };
    match g.output {
        OutputFormat::Json => out_json(&json!({
            "token": token, "tenant": tenant.as_ref().map(TenantId::as_str),
            "operator": operator, "subject": sub, "scopes": scopes, "expires_in": ttl,
        }))?,
        OutputFormat::Text => out(&token)?,
    }
    Ok(crate::exit::OK)
}

async fn wait_for_stop() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
}

fn listen(args: &ServeArgs) -> crate::serve::Listen {
    crate::serve::Listen {
        api: args.listen,
        idp: args.idp_listen,
        metrics: args.metrics_listen,
    }
}

async fn serve(g: &Global, args: &ServeArgs) -> Result<u8> {
    let (target, cluster) = target(g).await?;
    require_running(cluster.as_ref())?;
    apply::ensure_control_plane(&target).await?;
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    let running =
        crate::serve::start_with(&target, &platform, listen(args), args.ledger_commit.mode())
            .await?;
    note(
        g,
        &format!(
            "serving the API on http://{} and the web console on http://{}/console (the dev identity provider and its JWKS on http://{}, metrics on http://{}/metrics); Ctrl-C stops",
            running.api_addr, running.api_addr, running.idp_addr, running.metrics_addr
        ),
    );
    wait_for_stop().await;
    running.stop().await?;
    Ok(0)
}

async fn up(g: &Global, tenants: &std::path::Path, args: &ServeArgs) -> Result<u8> {
    let specs = load(g, &[tenants.to_path_buf()])?;
    let (target, cluster) = target(g).await?;
    let mut started = false;
    if let Some(c) = &cluster {
        note(g, "starting the local Postgres cluster...");
        c.init(ClusterOptions::default())?;
        started = c.start()?;
    }
    let result = up_inner(g, &target, tenants, &specs, args).await;
    if started && let Some(c) = &cluster {
        note(g, "stopping the local Postgres cluster...");
        c.stop()?;
    }
    result
}

async fn up_inner(
    g: &Global,
    target: &Target,
    tenants: &std::path::Path,
    specs: &[TenantSpec],
    args: &ServeArgs,
) -> Result<u8> {
    target.ensure_database().await?;
    let ids: Vec<TenantId> = specs.iter().map(|s| s.id.clone()).collect();
    let observed = observe::observe(target, observe::Scope::Only(&ids)).await?;
    let mut plan = plan::plan(specs, &observed, &target.namespace, &target.endpoint.dbname);
    plan::refuse_offboarded(&mut plan, &observed);
    note(g, &plan.render());
    let outcomes = apply::apply(target, &plan, specs, &progress_bar(g)).await?;
    if let Some(bad) = outcomes
        .iter()
        .find(|o| matches!(o.result, "failed" | "blocked"))
    {
        bail!(
            "tenant `{}` was not applied: {}\nhint: fix `{}` and run the command again",
            bad.tenant,
            bad.error.as_deref().unwrap_or("unknown error"),
            tenants.display()
        );
    }
    let platform = crate::platform::Platform::resolve(g.platform.as_deref())?;
    let running =
        crate::serve::start_with(target, &platform, listen(args), args.ledger_commit.mode())
            .await?;
    let signer = crate::devidp::signer(&target.secrets).await?;
    // Every tenant permission (a tenant's token never holds a platform one).
    let scopes: Vec<String> = runtime::http::routes::PERMISSIONS
        .iter()
        .filter(|(p, _)| !p.starts_with(runtime::auth::PLATFORM_PREFIX))
        .map(|(p, _)| (*p).to_owned())
        .collect();
    let base = format!("http://{}", running.api_addr);
    let mut text = format!(
        "tenantctl is serving {} tenant(s) on {base}\n\
         web console: {base}/console (the dev identity provider signs you in as any user and role)\n",
        specs.len()
    );
    for spec in specs.iter().filter(|s| {
        !matches!(
            plan.tenants
                .iter()
                .find(|t| t.tenant == s.id)
                .map(|t| &t.action),
            Some(Action::Blocked(_))
        )
    }) {
        let token =
            crate::devidp::mint(&signer, &spec.identity, &spec.id, "dev-user", &scopes, 3600);
        text.push_str(&format!(
            "\n# {} ({}): token valid for 1 hour\n\
             curl -sS {base}/v1/models -H 'Authorization: Bearer {token}'\n\
             curl -sS {base}/v1/chat/completions -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello from {}\"}}]}}'\n\
             curl -sS {base}/v1/usage -H 'Authorization: Bearer {token}'\n",
            spec.display_name, spec.id, spec.models.default, spec.id
        ));
    }
    text.push_str("\nready (Ctrl-C to stop)");
    out(&text)?;
    wait_for_stop().await;
    note(g, "stopping the server...");
    running.stop().await?;
    Ok(0)
}

async fn local(g: &Global, command: LocalCommand) -> Result<u8> {
    let (target, cluster) = target(g).await?;
    let Some(cluster) = cluster else {
        bail!(
            "`TENANTCTL_DATABASE_URL` is set, so there is no local cluster to manage\nhint: unset it to use the local target"
        );
    };
    match command {
        LocalCommand::Start => {
            cluster.init(ClusterOptions::default())?;
            let started = cluster.start()?;
            apply::ensure_control_plane(&target).await?;
            note(
                g,
                if started {
                    "local cluster started"
                } else {
                    "local cluster already running"
                },
            );
            Ok(0)
        }
        LocalCommand::Stop => {
            cluster.stop()?;
            note(g, "local cluster stopped");
            Ok(0)
        }
        LocalCommand::Status => {
            let st = cluster.status();
            match g.output {
                OutputFormat::Json => {
                    let mut v = serde_json::to_value(&st)?;
                    v["database"] = json!(target.endpoint.dbname);
                    out_json(&v)?
                }
                OutputFormat::Text => out(&format!(
                    "initialized: {}\nrunning:     {}\ndata:        {}\nsocket dir:  {}\nlog:         {}\nbinaries:    {}\nruns as:     {}\nconnect:     psql -h {} -p {} -U {ADMIN_ROLE} {}",
                    st.initialized,
                    st.running,
                    st.data_dir.display(),
                    st.socket_dir.display(),
                    st.log_file.display(),
                    st.bindir.display(),
                    st.runs_as,
                    st.socket_dir.display(),
                    crate::local::cluster::PORT,
                    target.endpoint.dbname
                ))?,
            }
            Ok(crate::exit::findings(!st.running))
        }
        LocalCommand::RotateIdpKey => {
            let keys = crate::devidp::rotate(&target.secrets).await?;
            match g.output {
                OutputFormat::Json => out_json(&serde_json::to_value(&keys)?)?,
                OutputFormat::Text => out(&format!(
                    "signing key: {}\nstill published: {} (retire it with `tenantctl local retire-idp-key` once its tokens have expired)",
                    keys.current,
                    keys.previous.as_deref().unwrap_or("")
                ))?,
            }
            Ok(crate::exit::OK)
        }
        LocalCommand::RetireIdpKey => {
            let (keys, retired) = crate::devidp::retire(&target.secrets).await?;
            match g.output {
                OutputFormat::Json => {
                    out_json(&json!({"current": keys.current, "retired": retired}))?
                }
                OutputFormat::Text => out(&match retired {
                    Some(kid) => format!(
                        "signing key: {}\nretired: {kid} (its tokens are refused once a runtime's key cache refreshes)",
                        keys.current
                    ),
                    None => format!(
                        "signing key: {}\nno previous key was published",
                        keys.current
                    ),
                })?,
            }
            Ok(crate::exit::OK)
        }
    }
}
