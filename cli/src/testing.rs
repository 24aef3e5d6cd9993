//! Test harness: a throwaway Postgres cluster per test process, one fresh deployment (database,
//! namespace, secret store) per test. Used by this crate's and the `tests` crate's integration tests.
//!
//! The cluster is started once from the machine's server binaries, non-durable (fsync off), in a
//! temporary state directory. A watchdog process stops it and deletes the directory when the test
//! process exits, however it exits. If the binaries are missing, the harness fails and says how to
//! install them; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use runtime::domain::Namespace;

use crate::local::StateDir;
use crate::local::cluster::{ADMIN_ROLE, Cluster, ClusterOptions};
use crate::provision::{AdminAccess, Target};

/// The shared cluster of this test process.
#[derive(Debug)]
pub struct TestCluster {
    pub state: StateDir,
    pub cluster: Cluster,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();

fn start_cluster() -> TestCluster {
    let base = std::env::temp_dir().join(format!(
        "tenantctl-test-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let state = StateDir::resolve(Some(&base)).unwrap_or_else(|e| panic!("test state dir: {e:#}"));
    let cluster = Cluster::new(&state).unwrap_or_else(|e| {
        panic!("cannot start the test Postgres cluster: {e:#}\n(install PostgreSQL server binaries: `apt-get install postgresql`)")
    });
    cluster
        .init(ClusterOptions { durable: false })
        .unwrap_or_else(|e| panic!("initdb for the test cluster failed: {e:#}"));
    cluster
        .start()
        .unwrap_or_else(|e| panic!("starting the test cluster failed: {e:#}"));
    spawn_watchdog(&state.pg_data(), state.root());
    TestCluster { state, cluster }
}

/// Stops the cluster (immediate shutdown) and removes its directory once this process is gone.
fn spawn_watchdog(data: &Path, root: &Path) {
    let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
[ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null
sleep 2
rm -rf "$2""#;
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::process::id().to_string())
        .arg(data)
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// The cluster shared by every test in this process, started on first use.
pub fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(start_cluster)
}

/// A fresh deployment for one test: random namespace, its own database and secret store. The
/// database is created by the first `apply` (or `ensure_database`).
pub fn deployment() -> Target {
    let tc = cluster();
    let ns = Namespace::parse(&format!(
        "t{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    Target {
        endpoint: tc.cluster.endpoint(ns.as_str()),
        admin: AdminAccess::Peer {
            role: ADMIN_ROLE.into(),
        },
        secrets: tc.state.secrets(&ns).unwrap_or_else(|e| panic!("{e:#}")),
        secrets_dir: tc.state.secrets_dir(&ns),
        namespace: ns,
    }
}

/// The repository root (for `tenants/`, `docs/`, `templates/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A throwaway cluster that listens on TCP `127.0.0.1:<port>` with TLS only, its server certificate
/// signed by a CA generated for it (`ca_pem`), and `hostssl` trust for every role: it stands in for RDS
/// when testing the TLS half of IAM authentication (the token itself cannot be checked here; it is
/// proven equal to botocore's). Needs the `openssl` command.
#[derive(Debug)]
pub struct TlsCluster {
    pub cluster: Cluster,
    pub state: StateDir,
    pub port: u16,
    pub ca_pem: PathBuf,
}

/// Starts a `TlsCluster` (stopped and removed when the test process exits).
pub fn tls_cluster() -> TlsCluster {
    let base = std::env::temp_dir().join(format!(
        "tenantctl-tls-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let state = StateDir::resolve(Some(&base)).unwrap_or_else(|e| panic!("{e:#}"));
    let certs = base.join("certs");
    std::fs::create_dir_all(&certs).unwrap_or_else(|e| panic!("{e}"));
    let openssl = |args: &[&str]| openssl(&certs, args);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=tenantctl test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(certs.join("san.ext"), "subjectAltName = IP:127.0.0.1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    let read =
        |name: &str| std::fs::read_to_string(certs.join(name)).unwrap_or_else(|e| panic!("{e}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::new(&state).unwrap_or_else(|e| panic!("{e:#}"));
    cluster
        .init(ClusterOptions { durable: false })
        .unwrap_or_else(|e| panic!("initdb for the TLS cluster failed: {e:#}"));
    cluster
        .customize(
            &format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n"
            ),
            "hostssl all all 127.0.0.1/32 trust\n",
            &[("server.pem", &read("server.pem")), ("server.key", &read("server.key"))],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    cluster
        .start()
        .unwrap_or_else(|e| panic!("starting the TLS cluster failed: {e:#}"));
    spawn_watchdog(&state.pg_data(), state.root());
    TlsCluster {
        cluster,
        state,
        port,
        ca_pem: certs.join("ca.pem"),
    }
}

/// Runs the `openssl` command in `dir`; panics with its error output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("the `openssl` command is needed (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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

/// Every `sh` block of `docs/runbooks/<name>`, in order, as one bash script that stops at the first
/// failure and announces each block on stderr (so a failure names its block).
pub fn runbook_script(name: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("docs/runbooks").join(name))
        .unwrap_or_else(|e| panic!("docs/runbooks/{name}: {e}"));
    let blocks = sh_blocks(&text);
    assert!(!blocks.is_empty(), "{name} has no `sh` block");
    let mut script = String::from("set -euo pipefail\n");
    for (i, b) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '--- block {}' >&2\n{b}", i + 1));
    }
    script
}

/// Fails, with everything the runbook printed, unless its script (`runbook_script`) succeeded.
pub fn assert_runbook_ran(name: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "runbook {name} failed (exit {:?}); the last block started is the failing one\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let fail = |what: &Path, e: std::io::Error| -> ! { panic!("{}: {e}", what.display()) };
    std::fs::create_dir_all(to).unwrap_or_else(|e| fail(to, e));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| fail(from, e)) {
        let entry = entry.unwrap_or_else(|e| fail(from, e));
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| fail(&entry.path(), e));
        }
    }
}

/// Fills `dir` with what a runbook runs in, as a reader's checkout has it: copies of `tenants/`,
/// `prices/`, `scripts/` and `platform.yaml`.
pub fn runbook_workdir(dir: &Path) {
    let root = repo_root();
    for sub in ["tenants", "prices", "scripts"] {
        copy_dir(&root.join(sub), &dir.join(sub));
    }
    std::fs::copy(root.join("platform.yaml"), dir.join("platform.yaml"))
        .unwrap_or_else(|e| panic!("platform.yaml: {e}"));
}
