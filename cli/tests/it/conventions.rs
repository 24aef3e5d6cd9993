//! Issue 13 item 1: the conventions Terraform, uv and AWS CLI users bring. Exit codes, JSON errors,
//! completions and man pages, saved plans, destructive steps that show what they destroy and ask,
//! `--dry-run`, and the offboarded state.

use std::process::{Command, Output, Stdio};

fn tenantctl(state_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(["--no-progress", "--color", "never"])
        .env_remove("TENANTCTL_DATABASE_URL")
        .env_remove("TENANTCTL_OUTPUT")
        .stdin(Stdio::null());
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn errors_exit_1_with_a_versioned_json_shape_and_completions_and_man_pages_come_from_the_definitions()
 {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| tenantctl(dir.path()).args(args).output().unwrap();
    // Help and version are not errors; a command-line mistake is exit 1 as any other error.
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    assert_eq!(run(&["plan", "--help"]).status.code(), Some(0));
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    for needle in [
        "Target options:",
        "Global options:",
        "[env: TENANTCTL_TARGET=]",
        "[env: TENANTCTL_PARALLELISM=]",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "`--help` lacks {needle:?}:\n{help}");
    }
    let out = run(&["move", "acme", "--to", "bogus"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("[possible values: pool, schema, dedicated]"));
    // With `--output json` a usage error and a runtime error are one JSON object each on stderr.
    let out = run(&["--output", "json", "move", "acme", "--to", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).expect("one JSON object");
    assert_eq!(
        (v["schema"].as_str(), v["kind"].as_str()),
        (Some("tenantctl.error/v1"), Some("usage"))
    );
    let out = run(&["--output", "json", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).expect("one JSON object");
    assert_eq!(v["schema"], "tenantctl.error/v1", "{v}");
    assert_eq!(v["kind"], "error");
    assert_eq!(v["exit_code"], 1);
    assert!(
        v["message"].as_str().unwrap().contains("not running"),
        "{v}"
    );
    assert!(
        v["hints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().contains("tenantctl local start")),
        "{v}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", text(&out));

    // Completions: a script bash accepts, naming the subcommands and the value enums.
    let out = run(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("offboard")
            && script.contains("--detailed-exitcode")
            && script.contains("dedicated"),
        "{script}"
    );
    let file = dir.path().join("tenantctl.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(run(&["completions", shell]).status.success(), "{shell}");
    }
    // Man pages: one per command, with the flags and the examples of the long help.
    let man = dir.path().join("man");
    let out = run(&["man", "--out", man.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = std::fs::read_to_string(man.join("tenantctl-plan.1")).unwrap();
    assert!(
        plan.contains("detailed\\-exitcode") && plan.contains("reviewed.plan"),
        "{plan}"
    );
    for page in ["tenantctl.1", "tenantctl-move.1", "tenantctl-secret-put.1"] {
        assert!(man.join(page).exists(), "{page}");
    }
}

/// Runs `tenantctl` with the given arguments in a fresh deployment of the shared test cluster.
fn in_fresh_deployment() -> impl Fn(&[&str]) -> Output {
    let cluster = cli::testing::cluster();
    let ns = cli::testing::deployment().namespace.to_string();
    move |args: &[&str]| {
        tenantctl(cluster.state.root())
            .args(["--namespace", &ns])
            .args(args)
            .output()
            .unwrap()
    }
}

/// Writes a manifest of `id` in `tier` from the example `acme` into `dir`.
fn manifest(dir: &std::path::Path, id: &str, tier: &str) -> std::path::PathBuf {
    let acme =
        std::fs::read_to_string(cli::testing::repo_root().join("tenants/acme.yaml")).unwrap();
    let text = acme
        .replace("id: acme", &format!("id: {id}"))
        .replace("tier: schema", &format!("tier: {tier}"));
    let file = dir.join(format!("{id}.yaml"));
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_saved_plan_applies_exactly_what_was_reviewed_and_refuses_when_anything_changed() {
    let run = in_fresh_deployment();
    let dir = tempfile::tempdir().unwrap();
    let file = manifest(dir.path(), "planned", "schema");
    let saved = dir.path().join("reviewed.plan");
    let (m, p) = (file.to_str().unwrap(), saved.to_str().unwrap());

    let out = run(&["plan", "--detailed-exitcode", "--out", p, m]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(plan["format"], "tenantctl.plan/v1");
    assert_eq!(
        plan["plan"]["tenants"][0]["action"]["kind"], "create",
        "{plan}"
    );

    // The manifest edited after the review: the saved plan is refused, nothing applied.
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, body.replace("usage_days: 400", "usage_days: 401")).unwrap();
    let out = run(&["apply", p]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is stale: manifest")
            && text(&out).contains("changed")
            && text(&out).contains("tenantctl plan --out"),
        "{}",
        text(&out)
    );
    let out = run(&["--output", "json", "status"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("\"planned\""),
        "{}",
        text(&out)
    );

    // Reviewed again, then applied: exactly that plan.
    let out = run(&["plan", "--out", p, m]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(&["apply", p]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "planned: created\n");
    // `--output json` covers `token` too.
    let out = run(&[
        "--output", "json", "token", "--tenant", "planned", "--sub", "ann",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["tenant"].as_str(), v["subject"].as_str()),
        (Some("planned"), Some("ann"))
    );
    assert_eq!(v["token"].as_str().unwrap().split('.').count(), 3, "{v}");

    // A plan made, then the target changed under it (another apply): refused.
    std::fs::write(&file, body.replace("usage_days: 400", "usage_days: 402")).unwrap();
    let out = run(&["plan", "--out", p, m]);
    assert!(out.status.success(), "{}", text(&out));
    let other = manifest(dir.path(), "planned-other", "pool");
    let out = run(&["apply", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["apply", p]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the target changed"), "{}", text(&out));
    // An unknown format is named, not guessed at.
    std::fs::write(
        dir.path().join("old.plan"),
        r#"{"format": "tenantctl.plan/v0"}"#,
    )
    .unwrap();
    let out = run(&["apply", dir.path().join("old.plan").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("format `tenantctl.plan/v0`"),
        "{}",
        text(&out)
    );
}

#[test]
fn destructive_steps_show_what_they_destroy_ask_or_refuse_dry_run_and_offboarded_is_a_state() {
    let run = in_fresh_deployment();
    let dir = tempfile::tempdir().unwrap();
    let export = tempfile::tempdir().unwrap();
    let file = manifest(dir.path(), "leaving", "schema");
    let m = file.to_str().unwrap();
    let e = export.path().to_str().unwrap();
    assert!(run(&["apply", m]).status.success());

    // `move`: the dry run names the old home and changes nothing; without a terminal and without
    // `--yes` it refuses and names the flag.
    let out = run(&[
        "move",
        "leaving",
        "--to",
        "pool",
        "--dry-run",
        "--drain-secs",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("schema `t_leaving`") && text(&out).contains("dry run"),
        "{}",
        text(&out)
    );
    let out = run(&["move", "leaving", "--to", "pool", "--drain-secs", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("needs confirmation") && text(&out).contains("`--yes`"));
    let out = run(&["--output", "json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = |v: &serde_json::Value| {
        v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == "leaving")
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (me(&v)["tier"].as_str(), me(&v)["status"].as_str()),
        (Some("schema"), Some("active"))
    );

    // `offboard`: the same, and the export directory stays empty.
    let out = run(&["offboard", "leaving", "--export", e, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is exported to") && text(&out).contains("dry run"),
        "{}",
        text(&out)
    );
    let out = run(&["offboard", "leaving", "--export", e]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("`--yes`"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(export.path()).unwrap().count(), 0);
    let out = run(&["offboard", "leaving", "--export", e, "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out));

    // Offboarded is a state: `status` exits 0 and says since when; the manifest left behind is
    // refused by `plan` and `apply` (exit 1) unless `--reactivate`; `token` says what fits.
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let today = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%F"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text(&out).contains(&format!("offboarded on {}", today.trim())),
        "{}",
        text(&out)
    );
    for cmd in ["plan", "apply"] {
        let out = run(&[cmd, m]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", text(&out));
        assert!(text(&out).contains("--reactivate"), "{cmd}: {}", text(&out));
    }
    let out = run(&["token", "--tenant", "leaving"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("was offboarded on") && text(&out).contains("apply --reactivate"),
        "{}",
        text(&out)
    );
    let out = run(&["apply", "--reactivate", m]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["--output", "json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me(&v)["status"], "active", "{v}");
    assert_eq!(me(&v)["db_login"], "ok", "{v}");

    // `secret delete`: the dry run names the secret and keeps it; without a terminal and without
    // `--yes` it refuses and keeps it; with `--yes` it is gone. `usage purge --dry-run` too.
    let key = dir.path().join("key.txt");
    std::fs::write(&key, uuid::Uuid::new_v4().to_string()).unwrap();
    let k = key.to_str().unwrap();
    let listed = |run: &dyn Fn(&[&str]) -> Output| {
        String::from_utf8_lossy(&run(&["secret", "list", "leaving"]).stdout)
            .contains("providers/openai")
    };
    assert!(
        run(&[
            "secret",
            "put",
            "leaving",
            "providers/openai",
            "--from-file",
            k
        ])
        .status
        .success()
    );
    let out = run(&[
        "secret",
        "delete",
        "leaving",
        "providers/openai",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("would delete `")
            && text(&out).contains("tenants/leaving/providers/openai`")
            && text(&out).contains("dry run"),
        "{}",
        text(&out)
    );
    assert!(listed(&run), "the dry run deleted it");
    let out = run(&["secret", "delete", "leaving", "providers/openai"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("`--yes`"), "{}", text(&out));
    assert!(listed(&run), "a refused delete deleted it");
    assert!(
        run(&["secret", "delete", "leaving", "providers/openai", "--yes"])
            .status
            .success()
    );
    assert!(!listed(&run));
    let out = run(&["usage", "purge", "--dry-run"]);
    assert!(
        out.status.success() && text(&out).contains("dry run: nothing changed"),
        "{}",
        text(&out)
    );
}

/// Issue 13 item 1: `--output json` covers every command. Each leaf command of the clap definitions
/// is run with `--output json` on a deployment with tenants; what it prints on stdout is JSON (one
/// value, or one value per line for a stream of records such as an audit export), and nothing else.
/// A command that does not answer here is named with its reason; a new command without an entry
/// fails the walk.
#[test]
fn every_command_answers_output_json_with_json() {
    use clap::CommandFactory as _;
    let run = in_fresh_deployment();
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();
    manifest(dir.path(), "jsonacme", "schema");
    manifest(dir.path(), "jsonpool", "pool");
    let tenants = d("");
    let acme = d("jsonacme.yaml");
    std::fs::write(d("key.txt"), uuid::Uuid::new_v4().to_string()).unwrap();
    let month = {
        let out = Command::new("date")
            .args(["-u", "+%Y-%m"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    std::fs::write(
        d("invoice.csv"),
        format!("usage_date_utc,model,cost_usd\n{month}-01,mock-small,0.00\n"),
    )
    .unwrap();
    let (key, invoice, export) = (d("key.txt"), d("invoice.csv"), d("export"));
    let book = cli::testing::repo_root().join("prices/book.yaml");
    let book = book.to_str().unwrap();
    let (cfn, man) = (d("cfn"), d("man"));
    // In order: each leaf command (as its path) and the arguments that make it do its work here.
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("validate", vec![&tenants]),
        ("plan", vec![&tenants]),
        ("apply", vec![&tenants]),
        ("onboard", vec![&acme]),
        ("status", vec![]),
        ("migrate", vec![]),
        (
            "secret put",
            vec!["jsonacme", "providers/openai", "--from-file", &key],
        ),
        (
            "secret rotate",
            vec!["jsonacme", "providers/openai", "--from-file", &key],
        ),
        ("secret list", vec!["jsonacme"]),
        (
            "secret delete",
            vec!["jsonacme", "providers/openai", "--yes"],
        ),
        ("prices import", vec!["--file", book]),
        ("prices diff", vec!["--file", book]),
        ("prices list", vec![]),
        ("usage report", vec!["--month", &month]),
        (
            "usage reconcile",
            vec![
                "--tenant",
                "jsonacme",
                "--month",
                &month,
                "--invoice",
                &invoice,
            ],
        ),
        ("usage purge", vec!["--yes"]),
        ("audit verify", vec![]),
        ("audit export", vec!["--tenant", "jsonacme"]),
        ("audit isolation", vec![]),
        ("token", vec!["--tenant", "jsonacme"]),
        ("suspend", vec!["jsonacme", "--reason", "json walk"]),
        ("resume", vec!["jsonacme", "--reason", "json walk"]),
        ("move", vec!["jsonpool", "--to", "schema", "--yes"]),
        ("offboard", vec!["jsonpool", "--export", &export, "--yes"]),
        ("render", vec!["--env", "jsonwalk", "--out", &cfn, &tenants]),
        ("schema", vec![]),
        ("local status", vec![]),
        ("local rotate-idp-key", vec![]),
        ("local retire-idp-key", vec![]),
        ("man", vec!["--out", &man]),
    ];
    // Not run here, each for a reason.
    let elsewhere = [
        (
            "local start",
            "starts and stops the machine's cluster: the runbooks run it",
        ),
        (
            "local stop",
            "would stop the cluster every other test shares: the runbooks run it",
        ),
        (
            "serve",
            "a server: its output is the API (tests/it/observability.rs)",
        ),
        ("up", "the README's main job: a server"),
        (
            "drift",
            "the AWS target's (tests/it/aws_flow.rs runs it with --output json)",
        ),
        ("cost report", "the AWS target's (tests/it/aws_flow.rs)"),
        ("completions", "a shell script by definition"),
        (
            "bootstrap",
            "the AWS target's (tests/it/aws_runbooks.rs reads its JSON)",
        ),
    ];
    fn leaves(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            let path = format!("{prefix}{}", sub.get_name()).trim().to_owned();
            if sub.has_subcommands() {
                leaves(sub, &format!("{path} "), out);
            } else if path != "help" && !path.ends_with(" help") {
                out.push(path);
            }
        }
    }
    let mut all = Vec::new();
    leaves(&cli::args::Cli::command(), "", &mut all);
    for c in &all {
        assert!(
            steps.iter().any(|(s, _)| s == c) || elsewhere.iter().any(|(s, _)| s == c),
            "`tenantctl {c}` is new: add it to this walk (or to `elsewhere`, with the reason)"
        );
    }
    let mut failures = Vec::new();
    for (command, args) in &steps {
        let mut argv: Vec<&str> = vec!["--output", "json"];
        argv.extend(command.split(' '));
        argv.extend(args.iter().copied());
        let out = run(&argv);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = !stdout.trim().is_empty()
            && (serde_json::from_str::<serde_json::Value>(&stdout).is_ok()
                || stdout
                    .lines()
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        // Exit 2 is "success with something to act on" (a plan with changes, a variance).
        if !matches!(out.status.code(), Some(0 | 2)) || !json {
            failures.push(format!("tenantctl {command}: {}", text(&out)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
