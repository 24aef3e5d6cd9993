//! Tidy checks over the repository: module docs, no stubs, one-way crate dependencies, no secrets.

use std::path::{Path, PathBuf};

fn files(root: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git" | "node_modules") {
                files(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

fn rust_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(&cli::testing::repo_root(), ".rs", &mut out);
    assert!(out.len() > 20);
    out
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    for f in rust_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("//!"),
            "`{}` must open with a `//!` comment saying what it owns",
            f.display()
        );
    }
}

#[test]
fn no_stubs_or_ignored_tests() {
    let banned = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("#[", "ignore"),
    ];
    for f in rust_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        for b in banned {
            assert!(!text.contains(b), "`{}` contains `{b}`", f.display());
        }
    }
}

#[test]
fn runtime_never_depends_on_cli() {
    // Invariant: `cli` depends on `runtime`, never the reverse.
    let manifest =
        std::fs::read_to_string(cli::testing::repo_root().join("runtime/Cargo.toml")).unwrap();
    assert!(
        !manifest.lines().any(|l| l.trim_start().starts_with("cli")),
        "runtime/Cargo.toml names `cli`"
    );
    for f in rust_files()
        .iter()
        .filter(|f| f.starts_with(cli::testing::repo_root().join("runtime")))
    {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains("cli::"), "`{}` uses `cli::`", f.display());
    }
}

/// SQL in this codebase is written with uppercase keywords.
const SQL_KEYWORDS: &[&str] = &[
    "SELECT ",
    "INSERT INTO",
    "DELETE FROM",
    "UPDATE ",
    "CREATE TABLE",
    "CREATE ROLE",
    "CREATE SCHEMA",
    "CREATE DATABASE",
    "ALTER ROLE",
    "ALTER TABLE",
    "GRANT ",
    "REVOKE ",
    "DROP ",
    "SET ROLE",
];

/// The runtime's rooms and their one-way doors, from the edge inwards: for each top-level module of
/// `runtime/src`, the `crate::` modules it may import. A new module, or a new door, is a change to
/// this table (docs/ARCHITECTURE.md shows the same picture).
const DOORS: &[(&str, &[&str])] = &[
    (
        "http",
        &[
            "auth",
            "domain",
            "models",
            "registry",
            "service",
            "state",
            "telemetry",
        ],
    ),
    (
        "state",
        &[
            "auth", "db", "domain", "metering", "models", "registry", "secrets", "tenancy",
        ],
    ),
    (
        "service",
        &[
            "audit",
            "auth",
            "db",
            "domain",
            "metering",
            "models",
            "reconcile",
            "registry",
            "secrets",
            "telemetry",
            "tenancy",
        ],
    ),
    (
        "metering",
        &[
            "auth",
            "db",
            "domain",
            "models",
            "registry",
            "telemetry",
            "tenancy",
        ],
    ),
    ("tenancy", &["auth", "db", "domain", "registry", "secrets"]),
    ("auth", &["domain", "registry"]),
    (
        "models",
        &["domain", "pricing", "registry", "secrets", "telemetry"],
    ),
    ("registry", &["audit", "db", "domain", "pricing", "secrets"]),
    ("pricing", &["domain"]),
    ("reconcile", &["domain", "pricing"]),
    ("db", &["domain", "secrets"]),
    ("secrets", &["domain"]),
    ("audit", &[]),
    ("telemetry", &[]),
    ("schema", &[]),
    ("domain", &[]),
];

/// The `crate::` modules a source text names (`crate::x::...`), and whether it uses a grouped
/// `crate::{...}` import, which hides them.
fn crate_imports(text: &str) -> (std::collections::BTreeSet<String>, bool) {
    let mut out = std::collections::BTreeSet::new();
    let mut grouped = false;
    for (i, _) in text.match_indices("crate::") {
        if i > 0 && text[..i].ends_with('$') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        if rest.starts_with('{') {
            grouped = true;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    (out, grouped)
}

#[test]
fn the_door_check_reads_paths_and_sees_grouped_imports() {
    let (names, grouped) = crate_imports(
        "use crate::db::DataError;\nlet x = crate::models::pricing::CURRENT;\nuse crate::{a, b};",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["db", "models"].map(String::from)
    );
    assert!(grouped);
    assert!(!crate_imports("use super::x; // crate docs").1);
}

#[test]
fn the_door_table_runs_one_way() {
    // A door listed both ways (or round a longer loop) would make the table itself a circle.
    let doors: std::collections::HashMap<&str, &[&str]> = DOORS.iter().copied().collect();
    fn reaches(
        doors: &std::collections::HashMap<&str, &[&str]>,
        from: &str,
        to: &str,
        seen: &mut Vec<String>,
    ) -> bool {
        for next in doors.get(from).copied().unwrap_or_default() {
            if *next == to {
                return true;
            }
            if !seen.iter().any(|s| s == next) {
                seen.push((*next).to_owned());
                if reaches(doors, next, to, seen) {
                    return true;
                }
            }
        }
        false
    }
    for (module, allowed) in DOORS {
        for other in *allowed {
            assert!(
                doors.contains_key(other),
                "`{module}` may import `{other}`, which is not in the table"
            );
        }
        assert!(
            !reaches(&doors, module, module, &mut Vec::new()),
            "the door table has a loop through `{module}`"
        );
    }
}

#[test]
fn runtime_modules_import_each_other_one_way_only() {
    // Issue 10 item 0: imports run from the edge inwards, never back.
    let src = cli::testing::repo_root().join("runtime/src");
    let doors: std::collections::HashMap<&str, &[&str]> = DOORS.iter().copied().collect();
    let mut offenders = Vec::new();
    for f in rust_files().iter().filter(|f| f.starts_with(&src)) {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(allowed) = doors.get(module.as_str()) else {
            offenders.push(format!(
                "runtime/src/{}: module `{module}` is not in the door table",
                rel.display()
            ));
            continue;
        };
        let (names, grouped) = crate_imports(&std::fs::read_to_string(f).unwrap());
        if grouped {
            offenders.push(format!(
                "runtime/src/{}: a grouped `crate::{{...}}` import; name each module",
                rel.display()
            ));
        }
        for name in names {
            if name != module && !allowed.contains(&name.as_str()) {
                offenders.push(format!(
                    "runtime/src/{}: `{module}` imports `crate::{name}`",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "doors used the wrong way:\n{}",
        offenders.join("\n")
    );
}

/// The 1-based lines where a `format!`, `write!` or `writeln!` invocation, over however many lines it
/// spans, has SQL in it.
fn sql_built_with_format(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for mac in ["format!(", "write!(", "writeln!("] {
        let mut from = 0;
        while let Some(at) = text[from..].find(mac).map(|i| i + from) {
            from = at + mac.len();
            // The invocation runs to the parenthesis that closes it (string literals skipped).
            let (mut depth, mut in_str, mut escaped, mut end) = (1usize, false, false, text.len());
            for (i, c) in text[from..].char_indices() {
                match (in_str, escaped, c) {
                    (true, true, _) => escaped = false,
                    (true, false, '\\') => escaped = true,
                    (_, false, '"') => in_str = !in_str,
                    (false, _, '(') => depth += 1,
                    (false, _, ')') => {
                        depth -= 1;
                        if depth == 0 {
                            end = from + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let span = &text[at..end];
            if SQL_KEYWORDS.iter().any(|k| span.contains(k)) {
                found.push(text[..at].lines().count().max(1));
            }
        }
    }
    found
}

#[test]
fn the_format_check_sees_sql_across_lines_and_nothing_else() {
    let one_line = "let q = format!(\"SELECT * FROM {t}\");";
    let multi = "let q = format!(\n    \"SELECT count(*) \\\n     FROM {}\",\n    table\n);";
    let nested = "let q = format!(\"{}\", inner(\"x\")) + &format!(\n  \"DROP TABLE {}\", name);";
    let harmless = "let m = format!(\"tenant `{}` has no role (select one)\", id);";
    assert_eq!(sql_built_with_format(one_line), vec![1]);
    assert_eq!(sql_built_with_format(multi), vec![1]);
    assert_eq!(sql_built_with_format(nested), vec![1]);
    assert!(sql_built_with_format(harmless).is_empty());
}

#[test]
fn no_sql_is_built_with_format_outside_the_quoting_module() {
    // Invariant: SQL is static text with bind parameters; identifiers go through `sql::quote_ident`.
    // Issue 9 item 9: a `format!` spread over several lines is caught too.
    let allowed = ["cli/src/sql.rs", "cli/src/provision/mod.rs"];
    let mut offenders = Vec::new();
    for f in rust_files() {
        let rel = f
            .strip_prefix(cli::testing::repo_root())
            .unwrap()
            .display()
            .to_string();
        // Test code may build hostile SQL on purpose; the rule is for what ships.
        if allowed.contains(&rel.as_str()) || rel.starts_with("tests/") || rel.contains("/tests/") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        offenders.extend(
            sql_built_with_format(&text)
                .into_iter()
                .map(|line| format!("{rel}:{line}")),
        );
    }
    assert!(
        offenders.is_empty(),
        "SQL built with format!: {offenders:?}"
    );
}

/// Every Rust file of `runtime/src`: its path from the repository root, and its text.
fn runtime_sources() -> Vec<(String, String)> {
    let root = cli::testing::repo_root();
    rust_files()
        .into_iter()
        .filter(|f| f.starts_with(root.join("runtime/src")))
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

#[test]
fn tenant_data_is_reached_only_through_the_tenancy_module() {
    // Invariant: no handler opens a database connection. `db` opens connections and builds pools,
    // `registry` reads the control plane, and only `tenancy` checks out tenant connections.
    for (rel, text) in runtime_sources() {
        if rel == "runtime/src/tenancy.rs"
            || rel.starts_with("runtime/src/db/")
            || rel == "runtime/src/registry/mod.rs"
        {
            continue;
        }
        for needle in [
            "deadpool_postgres",
            "tokio_postgres::connect",
            ".connect(NoTls",
        ] {
            assert!(
                !text.contains(needle),
                "{rel} uses `{needle}`; go through `TenantTx`"
            );
        }
    }
}

#[test]
fn the_console_reaches_data_only_through_the_api() {
    // Issue 14: the console holds no privilege of its own; every figure and write is an API call
    // made as the signed-in caller (`Signed::call`). So its code names no data, secret, registry,
    // ledger or model handle, and no service function.
    let dir = cli::testing::repo_root().join("runtime/src/http/console");
    let mut found = Vec::new();
    files(&dir, ".rs", &mut found);
    assert!(found.len() >= 5, "the console's sources: {found:?}");
    for f in found {
        let text = std::fs::read_to_string(&f).unwrap();
        for forbidden in [
            "crate::service",
            "crate::tenancy",
            "crate::secrets",
            "crate::db",
            "crate::metering",
            "crate::models",
            "state.data",
            "state.secrets",
            "state.control",
            "state.ledger",
            "state.models",
        ] {
            assert!(
                !text.contains(forbidden),
                "`{}` names `{forbidden}`: the console reaches data only through the API",
                f.display()
            );
        }
    }
}

#[test]
fn every_model_call_is_made_by_the_metered_service() {
    // Invariant: every model call goes through `ModelRouter` and leaves a ledger row. The router's
    // calls and the provider adapters are reached only from `service::chat`, which admits each
    // call against the budget and limits before it and writes its ledger row before answering
    // (`api::a_chat_completion_is_answered_and_metered_before_the_response_returns`).
    let calls = [
        ".complete(",
        ".stream(",
        ".embed(",
        "Provider::for_id",
        "providers::Adapter",
    ];
    for (rel, text) in runtime_sources() {
        if rel.starts_with("runtime/src/models/") || rel == "runtime/src/service/chat.rs" {
            continue;
        }
        for needle in calls {
            assert!(
                !text.contains(needle),
                "{rel} uses `{needle}`: model calls go through `service::chat`, which meters them"
            );
        }
    }
}

#[test]
fn no_credentials_or_private_keys_are_committed() {
    let mut all = Vec::new();
    for ext in [
        ".rs", ".yaml", ".j2", ".md", ".toml", ".sh", ".json", ".sql",
    ] {
        files(&cli::testing::repo_root(), ext, &mut all);
    }
    let begin_key = concat!("-----BEGIN ", "PRIVATE KEY-----");
    for f in all {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(begin_key),
            "{} contains a private key",
            f.display()
        );
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            let is_key =
                (word.starts_with("sk-") && word.len() >= 27 && !word.starts_with("sk-canary"))
                    || (word.starts_with("AKIA") && word.len() == 20);
            assert!(
                !is_key,
                "{} contains something that looks like a credential",
                f.display()
            );
        }
    }
}

#[test]
fn every_cited_security_case_is_in_the_repositorys_own_list() {
    // Issue 9 item 10: the case list lives in `docs/security.md`; code cites it, never a list outside
    // the repository, and every case number cited there exists.
    let list = std::fs::read_to_string(cli::testing::repo_root().join("docs/security.md")).unwrap();
    let listed: std::collections::BTreeSet<u32> = list
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    assert!(
        (1..=74).all(|n| listed.contains(&n)),
        "cases 1-74 are listed: {listed:?}"
    );
    for f in rust_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(&format!("{}-cases.md", "security")),
            "`{}` cites a case list outside the repository",
            f.display()
        );
        // Built here so that this file does not cite itself.
        let needle = ["docs/security.md", "case"].join(" ");
        for (at, _) in text.match_indices(&needle) {
            let rest = &text[at + needle.len()..];
            let rest = rest.trim_start_matches('s').trim_start();
            let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let n: u32 = number
                .parse()
                .unwrap_or_else(|_| panic!("`{}`: a citation without a number", f.display()));
            assert!(
                listed.contains(&n),
                "`{}` cites case {n}, which docs/security.md does not list",
                f.display()
            );
        }
    }
}

/// The files money passes through: pricing, the ledger and its writer, budgets, usage reports, the
/// price book's handling, the report's CSV.
const MONEY_PATH: &[&str] = &[
    "runtime/src/pricing.rs",
    "runtime/src/metering",
    "runtime/src/service/usage.rs",
    "runtime/src/service/chat.rs",
    "runtime/src/http/csv.rs",
    "cli/src/prices.rs",
    "runtime/sql/tenant",
];

/// Lines of `text` that name a floating-point type (Rust `f32`/`f64`, SQL `real`, `float`,
/// `double precision`, `numeric` casts other than to `bigint`), outside comments.
fn floats(text: &str) -> Vec<usize> {
    let words = [
        "f32",
        "f64",
        "real",
        "float",
        "float4",
        "float8",
        "double",
        "::numeric",
    ];
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or_default();
            let code = code.split("--").next().unwrap_or_default().to_lowercase();
            code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .any(|w| words.contains(&w) || w.ends_with("::numeric"))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn the_float_check_sees_rust_and_sql_floats_and_nothing_else() {
    assert_eq!(floats("let x: f64 = 1.0;\nlet y = 2;"), [1]);
    assert_eq!(floats("SELECT sum(cost)::numeric\nSELECT 1::bigint"), [1]);
    assert_eq!(floats("amount double precision"), [1]);
    assert!(floats("// f64 in a comment\n-- real in SQL\nlet realm = 1;").is_empty());
}

#[test]
fn no_float_anywhere_on_the_money_path() {
    // Issue 11: money is integer micro-USD from price to report; a float on the way would round.
    let root = cli::testing::repo_root();
    let mut checked = 0;
    for entry in MONEY_PATH {
        let mut found = Vec::new();
        let path = root.join(entry);
        if path.is_dir() {
            files(&path, ".rs", &mut found);
            files(&path, ".sql", &mut found);
        } else {
            found.push(path);
        }
        for f in found {
            let text = std::fs::read_to_string(&f).unwrap();
            let hits = floats(&text);
            assert!(
                hits.is_empty(),
                "`{}` lines {hits:?} use a floating-point type on the money path: keep money in \
                 integer micro-USD (i64) and integer sums",
                f.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} files checked");
}

/// Issue 13: the declared `rust-version` is the one the lockfile really needs: the highest
/// `rust-version` any locked package declares (a lower one would promise a build that fails).
#[test]
fn the_declared_rust_version_is_what_the_lockfile_needs() {
    let root = cli::testing::repo_root();
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mut needed = (vec![0], String::new());
    let mut declared = None;
    for p in meta["packages"].as_array().unwrap() {
        let Some(v) = p["rust_version"].as_str() else {
            continue;
        };
        if members.contains(&p["id"].as_str().unwrap()) {
            declared = Some(v.to_owned());
        } else if parse(v) > needed.0 {
            needed = (parse(v), format!("{} {}", p["name"], p["version"]));
        }
    }
    let declared = declared.expect("the workspace declares a rust-version");
    let mut d = parse(&declared);
    d.resize(3, 0);
    let mut n = needed.0.clone();
    n.resize(3, 0);
    assert_eq!(
        d, n,
        "Cargo.toml declares rust-version {declared}; the lockfile needs {:?} ({}): set `rust-version` in Cargo.toml and the README's prerequisite to it",
        needed.0, needed.1
    );
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("Rust {declared} or newer")),
        "README states another minimum"
    );
}
