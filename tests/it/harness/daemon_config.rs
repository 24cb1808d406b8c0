//! [`DaemonBuilder`]: the config file and environment one `atpred` runs with.
//!
//! Sections are kept as ordered `key = <TOML value>` pairs so a test can set, override or remove
//! any key (to provoke a config error), then raw TOML is appended for jobs and anything else.
//! `[postgres]` keys follow the daemon's contract (host, port, user, dbname, passfile); `[redis]`
//! is written as `url` plus `password-file` (a file holding the password, mode 0600).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemon::{CtlOutput, Daemon, SpawnFailure};
use super::postgres::PgServer;
use super::process::run_with_timeout;
use super::redis::RedisServer;

/// Builds the command that runs the daemon with a config path. The default runs the real
/// `atpred --config PATH`; the harness self-tests substitute a stand-in.
pub type Launcher = fn(&Path) -> Command;

/// The real daemon in the foreground.
pub fn atpred_launcher(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atpred"));
    cmd.arg("--config").arg(config);
    cmd
}

/// Everything needed to (re)start one daemon; see the module docs.
#[derive(Clone)]
pub struct DaemonBuilder {
    pub(super) dir: PathBuf,
    pub(super) name: String,
    pub(super) socket: PathBuf,
    sections: Vec<(String, Vec<(String, String)>)>,
    raw: String,
    pub(super) env: Vec<(OsString, Option<OsString>)>,
    pub(super) launcher: Launcher,
}

impl Daemon {
    /// A builder for a daemon whose files all live in `dir` (use [`super::tempdir`], which other
    /// users can traverse). Defaults: the minimal config of the daemon's contract.
    pub fn builder(dir: impl AsRef<Path>) -> DaemonBuilder {
        let dir = dir.as_ref().to_path_buf();
        let socket = dir.join("atpred.sock");
        let builder = DaemonBuilder {
            name: "atpred".into(),
            socket: socket.clone(),
            sections: Vec::new(),
            raw: String::new(),
            env: Vec::new(),
            launcher: atpred_launcher,
            dir: dir.clone(),
        };
        builder
            .set("daemon", "state-dir", toml_path(&dir.join("state")))
            .set("daemon", "backup-dir", toml_path(&dir.join("backups")))
            .set("daemon", "socket", toml_path(&socket))
            .set("daemon", "socket-group", toml_str(""))
            .set("daemon", "timezone", toml_str("UTC"))
            .set("daemon", "stop-timeout", toml_str("5s"))
            .set("daemon", "max-concurrent-jobs", "2")
    }
}

impl DaemonBuilder {
    /// Sets `key = value` in `[section]`; `value` is TOML text (see [`toml_str`]).
    pub fn set(mut self, section: &str, key: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        let keys = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => &mut self.sections[i].1,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                &mut self.sections.last_mut().expect("just pushed").1
            }
        };
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => keys.push((key.to_string(), value)),
        }
        self
    }

    /// Removes `key` from `[section]` (e.g. to test a missing key).
    pub fn unset(mut self, section: &str, key: &str) -> Self {
        for (_, keys) in self.sections.iter_mut().filter(|(s, _)| s == section) {
            keys.retain(|(k, _)| k != key);
        }
        self
    }

    pub fn state_dir(self, path: &Path) -> Self {
        self.set("daemon", "state-dir", toml_path(path))
    }

    pub fn backup_dir(self, path: &Path) -> Self {
        self.set("daemon", "backup-dir", toml_path(path))
    }

    /// The control socket; [`Daemon::ctl`] and [`Daemon::raw_connect`] use it.
    pub fn socket(mut self, path: &Path) -> Self {
        self.socket = path.to_path_buf();
        self.set("daemon", "socket", toml_path(path))
    }

    pub fn socket_group(self, group: &str) -> Self {
        self.set("daemon", "socket-group", toml_str(group))
    }

    pub fn timezone(self, tz: &str) -> Self {
        self.set("daemon", "timezone", toml_str(tz))
    }

    pub fn stop_timeout(self, duration: &str) -> Self {
        self.set("daemon", "stop-timeout", toml_str(duration))
    }

    pub fn max_concurrent_jobs(self, n: u32) -> Self {
        self.set("daemon", "max-concurrent-jobs", n.to_string())
    }

    /// Appends raw TOML after the generated sections (jobs, extra sections).
    pub fn toml(mut self, text: &str) -> Self {
        self.raw.push('\n');
        self.raw.push_str(text);
        self.raw.push('\n');
        self
    }

    /// Appends `[jobs.NAME]` of kind `command` running `argv`, with a 1 minute timeout.
    pub fn command_job(self, name: &str, argv: &[&str]) -> Self {
        let argv: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();
        self.toml(&format!(
            "[jobs.{}]\nkind = \"command\"\ncommand = [{}]\ntimeout = \"1m\"",
            toml_key(name),
            argv.join(", ")
        ))
    }

    /// `[postgres]` for `pg`, logging in as `role` to `dbname` with a passfile written now to
    /// `<dir>/<name>.pgpass` (mode 0600).
    pub fn postgres(self, pg: &PgServer, role: &str, password: &str, dbname: &str) -> Self {
        let passfile = self.dir.join(format!("{}.pgpass", self.name));
        pg.write_passfile(&passfile, role, password);
        self.set("postgres", "host", toml_path(pg.socket_dir()))
            .set("postgres", "port", pg.port().to_string())
            .set("postgres", "user", toml_str(role))
            .set("postgres", "dbname", toml_str(dbname))
            .set("postgres", "passfile", toml_path(&passfile))
    }

    /// `[redis]` for `redis`: its URL, and if it has a password, `password-file` written now to
    /// `<dir>/<name>.redis-password` (mode 0600).
    pub fn redis(self, redis: &RedisServer) -> Self {
        let builder = self.set("redis", "url", toml_str(&redis.url()));
        match redis.password() {
            None => builder,
            Some(pw) => {
                let path = builder.dir.join(format!("{}.redis-password", builder.name));
                super::write_private(&path, pw.as_bytes());
                builder.set("redis", "password-file", toml_path(&path))
            }
        }
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().into(), Some(value.as_ref().into())));
        self
    }

    /// Removes an environment variable from the daemon's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().into(), None));
        self
    }

    /// Names this instance's files `<name>.toml`, `<name>.log` (default `atpred`), so two daemons
    /// can share one directory (and its state dir, e.g. to test the state lock).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Replaces the program that runs (see [`Launcher`]).
    pub fn launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = launcher;
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }

    /// The config text as it will be written.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (section, keys) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        text.push_str(&self.raw);
        text
    }

    /// Writes the config (mode 0600) and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.config_path();
        super::write_private(&path, self.render().as_bytes());
        path
    }

    /// Runs `atpred --config PATH --check` on the written config.
    pub fn check(&self) -> CtlOutput {
        let mut cmd = atpred_launcher(&self.write_config());
        cmd.arg("--check");
        run_with_timeout(&mut cmd, Duration::from_secs(30))
    }

    /// Writes the config, starts the daemon and waits for READY=1; panics with the log tail if
    /// it exits or is not ready within 20 s.
    pub fn spawn(self) -> Daemon {
        self.try_spawn()
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Like [`Self::spawn`], handing back the failure (e.g. to assert exit code 78).
    pub fn try_spawn(self) -> Result<Daemon, SpawnFailure> {
        Daemon::start(self)
    }
}

/// A TOML string value.
pub fn toml_str(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// A path as a TOML string value.
pub fn toml_path(path: &Path) -> String {
    toml_str(path.to_str().expect("test paths are UTF-8"))
}

/// A bare key if it can be one, else a quoted key.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { key.to_string() } else { toml_str(key) }
}
