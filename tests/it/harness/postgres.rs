//! A throw-away PostgreSQL cluster for one test, reachable only over a unix socket.
//!
//! Layout of its temporary directory (mode 0700, owned by the server user): the socket
//! `.s.PGSQL.<port>`, `data/` and `postgres.log`. The postmaster is our own child, so it is reaped
//! (no zombie survives to confuse "is it gone?" checks) and stays in the test's process group
//! (nextest's timeout kill takes it down too). Dropping the server shuts it down in immediate mode
//! (what `pg_ctl stop -m immediate` does: SIGQUIT) and removes the directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::pg_install::{self, passfile_field, sql_ident, sql_literal};
use super::process::{self, RunOutput, command_as, kill_and_reap, pid_of, run_with_timeout};

/// The bootstrap superuser, trusted on the local socket.
pub const SUPERUSER: &str = "postgres";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);

/// Not 5432, so code that forgets to pass the configured port fails loudly. Sockets live in each
/// server's own directory, so servers never clash whatever the port.
static NEXT_PORT: AtomicU16 = AtomicU16::new(25432);

/// A running PostgreSQL server; see the module docs.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    postmaster: Option<Child>,
}

impl PgServer {
    /// A server where every local connection is trusted.
    pub fn start() -> PgServer {
        Self::start_with(false)
    }

    /// A server where `postgres` is trusted but every other role must give its password
    /// (scram-sha-256), so passfile handling is really exercised.
    pub fn start_with_password_auth() -> PgServer {
        Self::start_with(true)
    }

    fn start_with(password_auth: bool) -> PgServer {
        let bin_dir = pg_install::find_bin_dir();
        let run_as = pg_install::server_user();
        let dir = tempfile::Builder::new()
            .prefix("atpred-pg-")
            .tempdir_in("/tmp")
            .expect("create the PostgreSQL temporary directory under /tmp");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL directory to the postgres user");
        }
        super::set_mode(dir.path(), 0o700);
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        // Built before the steps that can panic, so Drop cleans up after a failed start.
        let mut server = PgServer {
            dir,
            bin_dir,
            port,
            run_as,
            postmaster: None,
        };
        server.initdb();
        server.append_settings();
        if password_auth {
            // Replication is its own pseudo-database in pg_hba ("all" does not match it): the
            // trusted superuser may stream, for `start_replica`; other roles (given REPLICATION,
            // for physical backups and the wal-archive tests) with their password.
            let hba = "local all postgres trust\nlocal replication postgres trust\n\
                       local all all scram-sha-256\nlocal replication all scram-sha-256\n";
            std::fs::write(server.data_dir().join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        }
        server.spawn_postmaster();
        server
    }

    /// A hot standby of `primary` (`pg_basebackup -R`, streaming), on its own socket directory
    /// and port, with the primary's roles, databases and pg_hba.conf.
    pub fn start_replica(primary: &PgServer) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("atpred-pg-replica-")
            .tempdir_in("/tmp")
            .expect("create the replica's temporary directory under /tmp");
        if let Some((uid, gid)) = primary.run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the replica directory to the postgres user");
        }
        super::set_mode(dir.path(), 0o700);
        let mut server = PgServer {
            dir,
            bin_dir: primary.bin_dir.clone(),
            port: NEXT_PORT.fetch_add(1, Ordering::Relaxed),
            run_as: primary.run_as,
            postmaster: None,
        };
        let mut cmd = server.server_command("pg_basebackup");
        cmd.arg("-h")
            .arg(primary.socket_dir())
            .arg("-p")
            .arg(primary.port.to_string())
            // A fast checkpoint: the default spreads it over minutes.
            .args([
                "-U",
                SUPERUSER,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-D",
            ])
            .arg(server.data_dir());
        let out = run_with_timeout(&mut cmd, START_TIMEOUT);
        assert_eq!(
            out.status, 0,
            "pg_basebackup failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        // The copied postgresql.conf names the primary's socket and port; later lines win.
        server.append_settings();
        server.spawn_postmaster();
        server
    }

    fn initdb(&self) {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D").arg(self.data_dir());
        cmd.args([
            "-A",
            "trust",
            "--no-sync",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        let out = run_with_timeout(&mut cmd, START_TIMEOUT);
        assert_eq!(
            out.status, 0,
            "initdb failed:\n{}\n{}",
            out.stdout, out.stderr
        );
    }

    /// Settings go into postgresql.conf (not `-c` flags) so a `restart` gets them too.
    fn append_settings(&self) {
        let settings = format!(
            "\n# atpred test harness\nlisten_addresses = ''\nunix_socket_directories = {}\n\
             port = {}\nfsync = off\nfull_page_writes = off\nsynchronous_commit = off\n\
             shared_buffers = 16MB\nmax_connections = 50\n",
            sql_literal(&self.socket_dir().to_string_lossy()),
            self.port,
        );
        let conf = self.data_dir().join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .expect("open postgresql.conf");
        file.write_all(settings.as_bytes())
            .expect("append to postgresql.conf");
    }

    fn spawn_postmaster(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open postgres.log");
        let log2 = log.try_clone().expect("clone the postgres.log handle");
        let mut cmd = self.server_command("postgres");
        cmd.arg("-D").arg(self.data_dir()).stdout(log).stderr(log2);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let pid = child.id().to_string();
        let pid_file = self.data_dir().join("postmaster.pid");
        let mut exited = None;
        // pg_ctl -w waits on the same thing: line 1 is our pid, line 8 the status "ready".
        let ready = super::wait_until(START_TIMEOUT, || {
            exited = child.try_wait().expect("wait for postgres");
            let content = std::fs::read_to_string(&pid_file).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            // A hot standby reports "standby" where a primary reports "ready".
            exited.is_some()
                || (lines.first() == Some(&pid.as_str())
                    && matches!(lines.get(7).map(|s| s.trim()), Some("ready" | "standby")))
        });
        if let Some(status) = exited {
            panic!(
                "postgres exited during startup ({status}):\n{}",
                super::tail(&self.log(), 30)
            );
        }
        if !ready {
            kill_and_reap(&mut child);
            panic!(
                "postgres not ready within {START_TIMEOUT:?}:\n{}",
                super::tail(&self.log(), 30)
            );
        }
        self.postmaster = Some(child);
    }

    /// A command for a server binary: scrubbed environment, run as the server user, in our dir.
    fn server_command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(binary));
        pg_install::scrub_env(&mut cmd).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command_as(&mut cmd, uid, gid);
        }
        cmd
    }

    /// The unix socket directory (libpq `host`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where initdb, psql, pg_dump, pg_restore of this server's version are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// The postmaster's pid (e.g. to SIGSTOP it: new connections then hang). Panics if stopped.
    pub fn pid(&self) -> Pid {
        pid_of(
            self.postmaster
                .as_ref()
                .expect("the PostgreSQL server is not running"),
        )
    }

    /// libpq key=value connection string, e.g. for tokio-postgres in a test.
    pub fn connection_string(&self, user: &str, dbname: &str) -> String {
        let host = self.socket_dir().display();
        format!("host={host} port={} user={user} dbname={dbname}", self.port)
    }

    /// psql connecting as `user` to `dbname`: `-X -w -At`, ON_ERROR_STOP, no `PG*` variables
    /// inherited, and no passfile unless the caller sets `PGPASSFILE`.
    pub fn psql_command(&self, user: &str, dbname: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        pg_install::scrub_env(&mut cmd)
            .env("PGPASSFILE", self.dir.path().join("no-passfile"))
            .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", user, "-d", dbname]);
        cmd
    }

    /// Runs `sql` with a command from [`Self::psql_command`]; the caller judges the outcome.
    pub fn run_psql(&self, mut cmd: Command, sql: &str) -> RunOutput {
        run_with_timeout(cmd.arg("-c").arg(sql), PSQL_TIMEOUT)
    }

    /// Runs `sql` as the superuser in `dbname` and returns its unaligned output without the final
    /// newline. Fails the test with psql's stderr on any error.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let out = self.run_psql(self.psql_command(SUPERUSER, dbname), sql);
        assert_eq!(
            out.status, 0,
            "psql {dbname} -c {sql:?} failed: {}",
            out.stderr
        );
        out.stdout
            .strip_suffix('\n')
            .unwrap_or(&out.stdout)
            .to_string()
    }

    /// A login role with a password, limited to 20 connections.
    pub fn create_role_with_password(&self, name: &str, password: &str) {
        let (role, pw) = (sql_ident(name), sql_literal(password));
        self.psql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 20 PASSWORD {pw}"),
        );
    }

    pub fn create_db(&self, name: &str, owner: &str) {
        self.psql(
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {}",
                sql_ident(name),
                sql_ident(owner)
            ),
        );
    }

    /// Writes a libpq passfile (mode 0600, owned by us) with one line for this server.
    pub fn write_passfile(&self, path: &Path, role: &str, password: &str) {
        let line = format!(
            "{}:{}:*:{}:{}\n",
            passfile_field(&self.socket_dir().to_string_lossy()),
            self.port,
            passfile_field(role),
            passfile_field(password)
        );
        super::write_private(path, line.as_bytes());
    }

    /// Fast shutdown (SIGINT), waiting for the postmaster to exit. Does nothing if stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            let _ = kill(pid_of(&child), Signal::SIGCONT);
            let _ = kill(pid_of(&child), Signal::SIGINT);
            if process::wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                kill_and_reap(&mut child);
                panic!(
                    "postgres did not stop within {STOP_TIMEOUT:?}:\n{}",
                    super::tail(&self.log(), 30)
                );
            }
        }
    }

    /// Immediate shutdown (SIGQUIT: no checkpoint, WAL not yet flushed is lost, recovery at the
    /// next start), as a crash of the server, then starts it again on the same socket and data.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            let _ = kill(pid_of(&child), Signal::SIGQUIT);
            if process::wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                kill_and_reap(&mut child);
            }
        }
        self.spawn_postmaster();
    }

    /// Stops the server if it runs and starts it again on the same socket and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_postmaster();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            // A SIGSTOPped postmaster would keep SIGQUIT pending forever: continue it first.
            let _ = kill(pid_of(&child), Signal::SIGCONT);
            let _ = kill(pid_of(&child), Signal::SIGQUIT);
            if process::wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                kill_and_reap(&mut child);
            }
        }
    }
}
