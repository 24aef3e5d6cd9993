//! `docs/configuration.md`, generated from the code: every `tenantctl` option (from the clap
//! definitions: flag, environment variable, default, meaning), the settings read from the
//! environment only (`ENV_ONLY`), and the runtime's JSON configuration (`RuntimeConfig`: each
//! field's default from serde, its meaning from its doc comment). A test holds the checked-in file
//! to this output; `UPDATE_DOCS=1 cargo test -p cli --lib reference` rewrites it.

use std::fmt::Write as _;

/// Settings read from the environment only (never a flag: credentials and machine facts), with
/// what reads them.
pub const ENV_ONLY: &[(&str, &str, &str)] = &[
    (
        "TENANTCTL_DATABASE_URL",
        "tenantctl",
        "An existing Postgres server (or, on AWS, the platform database) instead of the local private cluster: `postgres://admin@host:5432/db`. The admin role needs CREATEROLE and CREATEDB. Credentials stay in the environment, never in arguments.",
    ),
    (
        "TENANTCTL_DATABASE_AUTH",
        "tenantctl",
        "`iam`: log in to the platform database with RDS IAM tokens (needs `TENANTCTL_DATABASE_CA`); unset: the URL's password.",
    ),
    (
        "TENANTCTL_DATABASE_CA",
        "tenantctl",
        "PEM bundle the platform database's certificate must chain to (the RDS bundle); set, every connection is TLS.",
    ),
    (
        "TENANTCTL_SECRET_KEY",
        "tenantctl, runtime",
        "The local secret store's key (32 random bytes, base64) instead of the key file beside the store.",
    ),
    (
        "TENANTCTL_PG_BINDIR",
        "tenantctl",
        "Directory of the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`); default: `PATH`, then `/usr/lib/postgresql/*/bin`.",
    ),
    (
        "TENANTCTL_PG_USER",
        "tenantctl",
        "The account the local cluster runs as when tenantctl runs as root (default `postgres`; `initdb` refuses root).",
    ),
    (
        "TENANTCTL_POLL_MAX_MS",
        "tenantctl",
        "The longest wait between two polls of a CloudFormation stack, in milliseconds (emulators and benchmarks).",
    ),
    (
        "TENANTCTL_FAILPOINT",
        "tenantctl",
        "Tests only: `tenant-before-commit` fails a tenant's apply just before its commit (the rollback test).",
    ),
    (
        "TENANTCTL_LOG",
        "tenantctl, runtime",
        "Log filter (`warn`, `info`, `debug`, `runtime=debug,info`); default `warn` for tenantctl (`-v`: info), `info` for the runtime.",
    ),
    (
        "TENANTCTL_LOG_FORMAT",
        "tenantctl, runtime",
        "`json` (one object per line) or `text`; default `text` for tenantctl, `json` for the runtime (production, Lambda).",
    ),
    (
        "TENANTCTL_RUNTIME_CONFIG",
        "runtime",
        "Path of the runtime's JSON configuration (below).",
    ),
    (
        "TENANTCTL_RUNTIME_CONFIG_JSON",
        "runtime",
        "The runtime's JSON configuration inline (a Lambda's environment); wins over `TENANTCTL_RUNTIME_CONFIG`.",
    ),
    (
        "TENANTCTL_RUNTIME_LISTEN",
        "runtime",
        "Listen address of a runtime outside Lambda (default `127.0.0.1:8080`).",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "tenantctl serve, runtime",
        "Export traces over OTLP/HTTP to this collector (`http://collector:4318`); unset, no span leaves the process. `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` names the traces URL itself.",
    ),
    (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "tenantctl serve, runtime",
        "`http/protobuf` (default) or `http/json`.",
    ),
    (
        "OTEL_SERVICE_NAME",
        "tenantctl serve, runtime",
        "The `service.name` of exported spans (default `tenantctl` or `tenantctl-runtime`). The other standard `OTEL_*` variables of the OTLP exporter and batch processor apply too.",
    ),
    (
        "AWS_ENDPOINT_URL",
        "tenantctl, runtime",
        "The AWS SDK's own: every AWS call to this endpoint (an emulator); `AWS_ENDPOINT_URL_<SERVICE>` per service. Credentials and region come from the standard AWS chain.",
    ),
    (
        "NO_COLOR",
        "tenantctl",
        "Set: no colors when `--color auto`.",
    ),
];

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn args_table(out: &mut String, cmd: &clap::Command, only_global: Option<bool>) {
    let args: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .filter(|a| only_global.is_none_or(|g| a.is_global_set() == g))
        .collect();
    if args.is_empty() {
        out.push_str("No options.\n\n");
        return;
    }
    out.push_str("| option | environment | default | meaning |\n|---|---|---|---|\n");
    for a in args {
        let name = match (a.get_long(), a.get_short()) {
            (Some(l), Some(s)) => format!("`-{s}`, `--{l}`"),
            (Some(l), None) => format!("`--{l}`"),
            (None, _) => format!("`<{}>`", a.get_id().as_str().to_uppercase()),
        };
        let env = a
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if default.is_empty() {
            String::new()
        } else {
            format!("`{}`", default.join(" "))
        };
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        let help = if values.is_empty() || a.get_num_args().is_some_and(|n| n.max_values() == 0) {
            help
        } else {
            let sep = if help.ends_with('.') { " " } else { ". " };
            format!("{help}{sep}One of {}.", values.join(", "))
        };
        let _ = writeln!(out, "| {name} | {env} | {default} | {} |", cell(&help));
    }
    out.push('\n');
}

fn commands(out: &mut String, cmd: &clap::Command, path: &str) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let full = format!("{path} {}", sub.get_name());
        if sub.has_subcommands() {
            commands(out, sub, &full);
            continue;
        }
        let _ = writeln!(out, "### `{full}`\n");
        if let Some(about) = sub.get_about() {
            let _ = writeln!(out, "{}\n", cell(&about.to_string()));
        }
        args_table(out, sub, Some(false));
    }
}

/// One field of the runtime's configuration: name, default (JSON, when it has one), meaning.
pub type RuntimeField = (String, Option<String>, String);

/// The whole reference; `runtime_fields` come from `RuntimeConfig` (see the test).
pub fn markdown(runtime_fields: &[RuntimeField]) -> String {
    use clap::CommandFactory as _;
    let mut cmd = crate::args::Cli::command();
    cmd.build();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the code by `UPDATE_DOCS=1 cargo test -p cli --lib reference`; a test fails when \
         this file differs from what the code declares. Every `tenantctl` option with an environment \
         variable reads it when the option is not given; a flag wins over its variable.\n\n\
         ## `tenantctl`: options of every command\n\n",
    );
    args_table(&mut out, &cmd, Some(true));
    out.push_str("## `tenantctl`: each command's own options\n\n");
    commands(&mut out, &cmd, "tenantctl");
    out.push_str(
        "## Read from the environment only\n\n\
         Credentials and machine facts never are flags.\n\n\
         | variable | read by | meaning |\n|---|---|---|\n",
    );
    for (name, by, meaning) in ENV_ONLY {
        let _ = writeln!(out, "| `{name}` | {by} | {} |", cell(meaning));
    }
    out.push_str(
        "\n## The runtime's configuration (`TENANTCTL_RUNTIME_CONFIG`)\n\n\
         One JSON object (`runtime::RuntimeConfig`; unknown fields are refused). `tenantctl serve` \
         writes it for the local target and `tenantctl apply --target aws` puts it in each tenant \
         function's environment. Trusted issuers (`issuers`) have the fields of `platform.yaml`'s \
         `issuers` (see the commented example there).\n\n\
         | field | default | meaning |\n|---|---|---|\n",
    );
    for (name, default, meaning) in runtime_fields {
        let default = default
            .as_deref()
            .map(|d| format!("`{d}`"))
            .unwrap_or_else(|| "required".into());
        let _ = writeln!(out, "| `{name}` | {default} | {} |", cell(meaning));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `pub` field of `RuntimeConfig` with its doc comment, read from `runtime/src/state.rs`.
    fn runtime_docs() -> Vec<(String, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src/state.rs");
        let source = std::fs::read_to_string(path).unwrap();
        let start = source.find("pub struct RuntimeConfig {").unwrap();
        let end = start + source[start..].find("\n}").unwrap();
        let mut doc = Vec::new();
        let mut fields = Vec::new();
        for line in source[start..end].lines().skip(1) {
            let t = line.trim();
            if let Some(d) = t.strip_prefix("///") {
                doc.push(d.trim().to_owned());
            } else if let Some(rest) = t.strip_prefix("pub ") {
                let name = rest.split(':').next().unwrap().trim().to_owned();
                fields.push((name, doc.join(" ")));
                doc.clear();
            }
        }
        fields
    }

    fn runtime_fields() -> Vec<RuntimeField> {
        // The defaults are what serde fills in for a configuration that gives only what is required.
        let minimal = serde_json::json!({
            "namespace": "tenantctl",
            "database": {"host": "/run/postgresql", "port": 5432, "dbname": "tenantctl"},
            "issuers": [],
        });
        let config: runtime::RuntimeConfig = serde_json::from_value(minimal.clone()).unwrap();
        let filled = serde_json::to_value(&config).unwrap();
        runtime_docs()
            .into_iter()
            .map(|(name, meaning)| {
                let default = (minimal.get(&name).is_none()).then(|| {
                    // Keys sorted: the order must not depend on serde_json's features. A field
                    // left out when unset (`console`) is `null`.
                    filled.get(&name).map_or_else(
                        || "null".to_owned(),
                        |v| crate::manifest::canonical(v).to_string(),
                    )
                });
                let meaning = if meaning.is_empty() {
                    match name.as_str() {
                        "database" => "Where the Postgres cluster is: `host` (a host name or a unix socket directory), `port`, `dbname`; `tls_ca` (a PEM bundle: every connection TLS) and `iam_auth` (RDS IAM tokens instead of passwords).".to_owned(),
                        "issuers" => "The trusted identity providers (exact issuer, JWKS, audiences, algorithms, tenant claim, lifetime, roles).".to_owned(),
                        "deployment" => "What this deployment accepts: the tenant of a single-tenant deployment (`tenant`) and the platform operators' issuer and audience (`platform`).".to_owned(),
                        "registry_refresh_secs" => "How often the registry (tenants, policies, price book) is read again, in seconds.".to_owned(),
                        other => panic!("RuntimeConfig.{other} has no doc comment; document it in runtime/src/state.rs"),
                    }
                } else {
                    meaning
                };
                (name, default, meaning)
            })
            .collect()
    }

    #[test]
    fn the_checked_in_configuration_reference_is_current() {
        let fields = runtime_fields();
        // Every field of the struct is in the reference (the parse above missed none).
        let config = serde_json::to_value(
            serde_json::from_value::<runtime::RuntimeConfig>(serde_json::json!({
                "namespace": "tenantctl",
                "database": {"host": "/run/postgresql", "port": 5432, "dbname": "tenantctl"},
                "issuers": [],
            }))
            .unwrap(),
        )
        .unwrap();
        let mut names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
        names.sort_unstable();
        // `console` is left out of the JSON when unset (a tenant's Lambda configuration, whose
        // digest decides whether its stack changes, stays as it was).
        let mut keys: Vec<&str> = config
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .chain(["console"])
            .collect();
        keys.sort_unstable();
        assert_eq!(names, keys, "RuntimeConfig's fields");
        let text = markdown(&fields);
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == text,
            "docs/configuration.md is not what the code declares; run `UPDATE_DOCS=1 cargo test -p cli --lib reference` and commit it"
        );
    }

    /// Every `TENANTCTL_...` or `OTEL_...` variable named in the sources is in the reference.
    #[test]
    fn every_environment_variable_the_code_reads_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        let mut missing = Vec::new();
        let mut stack = vec![root.join("cli/src"), root.join("runtime/src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for (i, _) in text
                    .match_indices("\"TENANTCTL_")
                    .chain(text.match_indices("\"OTEL_"))
                {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                        .collect();
                    if name.ends_with('_') {
                        continue; // a prefix, not a variable
                    }
                    if !doc.contains(&format!("`{name}`")) {
                        missing.push(format!("{name} ({})", path.display()));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "not in docs/configuration.md: {missing:?}"
        );
    }
}
