//! Issue 13 item 6: the runbooks that touch AWS are executed here, every `sh` block in order, against
//! a local moto server (and the fake Cost Explorer), with the AWS CLI and this build's `tenantctl` on
//! `PATH`. Two values stand in for what moto cannot provide, and the runbook names them where it
//! uses them: `LAMBDA_ZIP` (a package moto does not run) and `PLATFORM_DATABASE_URL` (a local
//! PostgreSQL in place of the platform's RDS, with a managed database's master-user rights only).

async fn run_aws_runbook(name: &str) {
    let moto = tests::moto().await;
    let costs = tests::fake_cost_explorer().await;
    let target = cli::testing::deployment();
    let url = tests::rds_stand_in(&target).await;
    let work = tempfile::tempdir().unwrap();
    cli::testing::runbook_workdir(work.path());
    // The stand-in package: a zip holding `bootstrap`, as a release build's is.
    let zip = work.path().join("stand-in.zip");
    let made = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('bootstrap', '#!/bin/sh\\n')",
        ])
        .arg(&zip)
        .status()
        .unwrap();
    assert!(made.success());
    let state = tempfile::tempdir().unwrap();
    let bin = tests::tenantctl_binary();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = cli::testing::runbook_script(name);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(work.path())
            .envs(moto.env())
            .env("AWS_ENDPOINT_URL_COST_EXPLORER", &costs.url)
            .env("PATH", path)
            .env("LAMBDA_ZIP", &zip)
            .env("PLATFORM_DATABASE_URL", &url)
            // The shared test cluster holds every test's deployment: this one's namespace.
            .env("TENANTCTL_NAMESPACE", target.namespace.as_str())
            .env("TENANTCTL_STATE_DIR", state.path())
            .env("TENANTCTL_POLL_MAX_MS", "200")
            .env("NO_COLOR", "1")
            .env_remove("TENANTCTL_DATABASE_URL")
            .env_remove("TENANTCTL_TARGET")
            .env_remove("TENANTCTL_OUTPUT")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    cli::testing::assert_runbook_ran(name, &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn runbook_new_aws_account() {
    run_aws_runbook("new-aws-account.md").await;
}
