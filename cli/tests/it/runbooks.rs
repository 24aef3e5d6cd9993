//! Issue 13 item 6: every `sh` block of every runbook in `docs/runbooks/` is executed, in order, as
//! one script per runbook: a fresh state directory (its own PostgreSQL cluster, started by the
//! runbook's own `tenantctl local start`), a copy of `tenants/`, `prices/`, `platform.yaml` and
//! `scripts/` as the working directory, this build's `tenantctl` first on `PATH`. A runbook whose
//! commands no longer work fails here, so the docs cannot rot.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run_runbook(name: &str) {
    let work = tempfile::tempdir().unwrap();
    cli::testing::runbook_workdir(work.path());
    let state = tempfile::tempdir().unwrap();
    let bin: PathBuf = Path::new(env!("CARGO_BIN_EXE_tenantctl"))
        .parent()
        .unwrap()
        .to_owned();
    let script = cli::testing::runbook_script(name);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env("TENANTCTL_STATE_DIR", state.path())
        .env("NO_COLOR", "1")
        .env_remove("TENANTCTL_DATABASE_URL")
        .env_remove("TENANTCTL_NAMESPACE")
        .env_remove("TENANTCTL_OUTPUT")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // Whatever happened, the runbook's cluster stops with the test.
    let _ = Command::new(env!("CARGO_BIN_EXE_tenantctl"))
        .args(["--state-dir"])
        .arg(state.path())
        .args(["local", "stop"])
        .output();
    cli::testing::assert_runbook_ran(name, &out);
}

#[test]
fn every_runbook_is_tested_here() {
    let mut names: Vec<String> = std::fs::read_dir(cli::testing::repo_root().join("docs/runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .collect();
    names.sort();
    // The AWS runbooks run against moto, in the `tests` crate (which has the moto harness).
    let source = [
        include_str!("runbooks.rs"),
        include_str!("../../../tests/tests/it/aws_runbooks.rs"),
    ]
    .concat();
    for n in &names {
        assert!(
            source.contains(&format!("run_runbook(\"{n}\")"))
                || source.contains(&format!("run_aws_runbook(\"{n}\")")),
            "docs/runbooks/{n} has no test in cli/tests/it/runbooks.rs or tests/tests/it/aws_runbooks.rs"
        );
    }
}

#[test]
fn runbook_onboard() {
    run_runbook("onboard.md");
}

#[test]
fn runbook_offboard() {
    run_runbook("offboard.md");
}

#[test]
fn runbook_rotate_provider_key() {
    run_runbook("rotate-provider-key.md");
}

#[test]
fn runbook_month_end_reconciliation() {
    run_runbook("month-end-reconciliation.md");
}

#[test]
fn runbook_move_tier() {
    run_runbook("move-tier.md");
}

#[test]
fn runbook_upgrade() {
    run_runbook("upgrade.md");
}

#[test]
fn runbook_rotate_idp_key() {
    run_runbook("rotate-idp-key.md");
}

#[test]
fn runbook_cross_tenant_access() {
    run_runbook("cross-tenant-access.md");
}

#[test]
fn runbook_restore_dedicated() {
    run_runbook("restore-dedicated.md");
}
