//! A private PostgreSQL cluster run from the machine's server binaries (`initdb`, `pg_ctl`, `postgres`).
//!
//! `initdb` and `postgres` refuse to run as root; when tenantctl runs as root the cluster runs as an
//! unprivileged account (`postgres`, or `TENANTCTL_PG_USER`). The admin role authenticates by peer
//! identity over the cluster's private unix socket, so no admin password exists anywhere; every other
//! role uses SCRAM with a password from the secret store.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, User};
use runtime::db::DbEndpoint;

use super::StateDir;

/// The admin role created by `initdb` (superuser, peer authentication only).
pub const ADMIN_ROLE: &str = "tenantctl_admin";
/// The port number in the socket file name (no TCP listener is opened).
pub const PORT: u16 = 5432;

#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: Uid,
    gid: Gid,
}

/// Options for a new cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// `false` turns off fsync and synchronous commit: for throwaway test clusters only.
    pub durable: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self { durable: true }
    }
}

/// One local cluster in a state directory.
#[derive(Debug, Clone)]
pub struct Cluster {
    state: StateDir,
    bindir: PathBuf,
    account: Option<Account>,
}

/// What `status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    pub initialized: bool,
    pub running: bool,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub bindir: PathBuf,
    pub runs_as: String,
    /// The port the cluster listens on (on its socket directory only).
    pub port: u16,
    /// The superuser role, reached by peer authentication only.
    pub admin_role: &'static str,
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bindir() -> Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("TENANTCTL_PG_BINDIR").map(PathBuf::from) {
        if complete(&dir) {
            return Ok(dir);
        }
        bail!(
            "`TENANTCTL_PG_BINDIR` is `{}`, which does not contain `initdb`, `pg_ctl` and `postgres`",
            dir.display()
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                let real = initdb.canonicalize().unwrap_or(initdb);
                if let Some(parent) = real.parent().filter(|p| complete(p)) {
                    return Ok(parent.to_owned());
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    bail!(
        "PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) were not found on `PATH` or under \
         `/usr/lib/postgresql/*/bin`\nhint: install them with `apt-get install postgresql` (Debian/Ubuntu), \
         `dnf install postgresql-server` (Fedora) or `brew install postgresql@15` (macOS), or set \
         `TENANTCTL_PG_BINDIR`; or point tenantctl at an existing server with `TENANTCTL_DATABASE_URL`"
    )
}

fn unprivileged_account() -> Result<Option<Account>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = std::env::var("TENANTCTL_PG_USER").unwrap_or_else(|_| "postgres".into());
    match User::from_name(&name) {
        Ok(Some(user)) if !user.uid.is_root() => Ok(Some(Account {
            name,
            uid: user.uid,
            gid: user.gid,
        })),
        _ => bail!(
            "`initdb` and `postgres` refuse to run as root, and there is no unprivileged `{name}` account \
             to run them as\nhint: create one with `useradd --system --create-home {name}`, set \
             `TENANTCTL_PG_USER` to an existing unprivileged account, or run tenantctl as a regular user"
        ),
    }
}

impl Cluster {
    pub fn new(state: &StateDir) -> Result<Self> {
        Ok(Self {
            state: state.clone(),
            bindir: find_bindir()?,
            account: unprivileged_account()?,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some(acct) = &self.account {
            cmd.uid(acct.uid.as_raw()).gid(acct.gid.as_raw());
            cmd.env("HOME", self.state.pg_dir());
            cmd.env("USER", &acct.name);
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<()> {
        let output = cmd
            .output()
            .with_context(|| format!("cannot run `{what}` from `{}`", self.bindir.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            bail!(
                "`{what}` failed ({}):\n{}{}\nhint: see `{}` for the server log",
                output.status,
                stdout.trim(),
                stderr.trim(),
                self.state.pg_log().display()
            );
        }
        Ok(())
    }

    pub fn is_initialized(&self) -> bool {
        self.state.pg_data().join("PG_VERSION").is_file()
    }

    /// Makes the state directory traversable by the cluster's account and gives it `pg/`.
    fn prepare_dirs(&self) -> Result<()> {
        let pg = self.state.pg_dir();
        for dir in [pg.clone(), self.state.pg_run()] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if let Some(acct) = &self.account {
            // The account must be able to reach `pg/`: every ancestor needs the search (x) bit for others.
            for ancestor in pg.ancestors().skip(1) {
                let mode = std::fs::metadata(ancestor)?.permissions().mode();
                if mode & 0o001 == 0 {
                    if ancestor == self.state.root() {
                        std::fs::set_permissions(
                            ancestor,
                            std::fs::Permissions::from_mode(mode | 0o011),
                        )?;
                    } else {
                        bail!(
                            "the `{}` account cannot reach `{}` because `{}` is not searchable by other users\n\
                             hint: choose a state directory outside it with `--state-dir`, or `chmod o+x {}`",
                            acct.name,
                            pg.display(),
                            ancestor.display(),
                            ancestor.display()
                        );
                    }
                }
            }
            for path in [pg.clone(), self.state.pg_run()] {
                nix::unistd::chown(&path, Some(acct.uid), Some(acct.gid)).with_context(|| {
                    format!("cannot hand `{}` to `{}`", path.display(), acct.name)
                })?;
            }
        }
        Ok(())
    }

    /// Creates the cluster (once). Writes its settings and its authentication rules.
    pub fn init(&self, options: ClusterOptions) -> Result<()> {
        if self.is_initialized() {
            return Ok(());
        }
        self.prepare_dirs()?;
        let data = self.state.pg_data();
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&data).args([
            "-U",
            ADMIN_ROLE,
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=peer",
            "--auth-host=reject",
        ]);
        if !options.durable {
            cmd.arg("--no-sync");
        }
        self.run(cmd, "initdb")?;
        let run_dir = self.state.pg_run();
        let quote = |p: &Path| p.display().to_string().replace('\'', "''");
        let mut conf = format!(
            "\n# Written by tenantctl.\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {PORT}\n\
             max_connections = 300\npassword_encryption = 'scram-sha-256'\nlog_line_prefix = '%m [%p] %q%u@%d '\n",
            quote(&run_dir)
        );
        if !options.durable {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        append(&data.join("postgresql.conf"), &conf)?;
        // Admin: peer identity only (root, the cluster account, or the invoking user). Everyone else:
        // SCRAM over the private socket. No TCP at all.
        let me = User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        let mut ident = format!("tenantctl root {ADMIN_ROLE}\ntenantctl {me} {ADMIN_ROLE}\n");
        if let Some(acct) = &self.account {
            ident.push_str(&format!("tenantctl {} {ADMIN_ROLE}\n", acct.name));
        }
        write_owned(&data.join("pg_ident.conf"), &ident, self.account.as_ref())?;
        let hba = format!(
            "# Written by tenantctl.\nlocal all {ADMIN_ROLE} peer map=tenantctl\nlocal all all scram-sha-256\n"
        );
        write_owned(&data.join("pg_hba.conf"), &hba, self.account.as_ref())?;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(self.state.pg_data());
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Starts the cluster if it is not running. Returns whether this call started it.
    pub fn start(&self) -> Result<bool> {
        if !self.is_initialized() {
            bail!(
                "the local cluster in `{}` is not initialized\nhint: run `tenantctl local start`",
                self.state.root().display()
            );
        }
        if self.is_running() {
            return Ok(false);
        }
        self.prepare_dirs()?;
        // A stale socket lock from a killed server would block the start.
        let lock = self.state.pg_run().join(format!(".s.PGSQL.{PORT}.lock"));
        if lock.exists() && !self.is_running() {
            let _ = std::fs::remove_file(&lock);
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(self.state.pg_data())
            .arg("-l")
            .arg(self.state.pg_log())
            .args(["-w", "-t", "60"]);
        self.run(cmd, "pg_ctl start")?;
        Ok(true)
    }

    /// Stops the cluster (fast shutdown) if it runs.
    pub fn stop(&self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(self.state.pg_data())
            .args(["-m", "fast", "-w", "-t", "60"]);
        self.run(cmd, "pg_ctl stop")
    }

    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            initialized: self.is_initialized(),
            running: self.is_running(),
            data_dir: self.state.pg_data(),
            socket_dir: self.state.pg_run(),
            log_file: self.state.pg_log(),
            bindir: self.bindir.clone(),
            runs_as: self
                .account
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_else(|| "the current user".into()),
            port: PORT,
            admin_role: ADMIN_ROLE,
        }
    }

    /// Sets up an initialized, stopped cluster differently from the local target: `settings` appended
    /// to `postgresql.conf`, `hba_lines` appended to `pg_hba.conf`, and `files` written into the data
    /// directory, owned by the cluster's account, mode 0600 (certificates and keys). Used by the test
    /// harness's TLS cluster.
    pub fn customize(&self, settings: &str, hba_lines: &str, files: &[(&str, &str)]) -> Result<()> {
        let data = self.state.pg_data();
        append(&data.join("postgresql.conf"), settings)?;
        append(&data.join("pg_hba.conf"), hba_lines)?;
        for (name, text) in files {
            write_owned(&data.join(name), text, self.account.as_ref())?;
        }
        Ok(())
    }

    /// Where clients connect (the unix socket directory) for database `dbname`.
    pub fn endpoint(&self, dbname: &str) -> DbEndpoint {
        DbEndpoint {
            host: self.state.pg_run().display().to_string(),
            port: PORT,
            dbname: dbname.to_owned(),
            tls_ca: None,
            iam_auth: false,
        }
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn write_owned(path: &Path, text: &str, account: Option<&Account>) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some(acct) = account {
        nix::unistd::chown(path, Some(acct.uid), Some(acct.gid))?;
    }
    Ok(())
}
