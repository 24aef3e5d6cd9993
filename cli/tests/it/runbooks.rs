//! Issue 13 item 6: every `sh` block of every runbook in `docs/runbooks/` is executed, in order, as
//! one script per runbook: a fresh state directory (its own PostgreSQL cluster, started by the
//! runbook's own `tenantctl local start`), a copy of `tenants/`, `prices/`, `platform.yaml` and
//! `scripts/` as the working directory, this build's `tenantctl` first on `PATH`. A runbook whose
//! commands no longer work fails here, so the docs cannot rot.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `sh` blocks of a Markdown file, in order.
fn sh_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    blocks
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn run_runbook(name: &str) {
    let root = cli::testing::repo_root();
    let text = std::fs::read_to_string(root.join("docs/runbooks").join(name)).unwrap();
    let blocks = sh_blocks(&text);
    assert!(!blocks.is_empty(), "{name} has no `sh` block");
    let work = tempfile::tempdir().unwrap();
    for dir in ["tenants", "prices", "scripts"] {
        copy_dir(&root.join(dir), &work.path().join(dir));
    }
    std::fs::copy(
        root.join("platform.yaml"),
        work.path().join("platform.yaml"),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let bin: PathBuf = Path::new(env!("CARGO_BIN_EXE_tenantctl"))
        .parent()
        .unwrap()
        .to_owned();
    let mut script = String::from("set -euo pipefail\n");
    for (i, b) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '--- block {}' >&2\n{b}", i + 1));
    }
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
    assert!(
        out.status.success(),
        "runbook {name} failed (exit {:?}); the last block started is the failing one\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_runbook_is_tested_here() {
    let mut names: Vec<String> = std::fs::read_dir(cli::testing::repo_root().join("docs/runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .collect();
    names.sort();
    let source = include_str!("runbooks.rs");
    for n in &names {
        assert!(
            source.contains(&format!("run_runbook(\"{n}\")")),
            "docs/runbooks/{n} has no test in cli/tests/it/runbooks.rs"
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
