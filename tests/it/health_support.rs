//! What the health tests share: the whole stack a health job watches — PostgreSQL with the
//! application role (password auth, CONNECTION LIMIT 20), Redis with a password, and a real
//! HTTP server (python3's `http.server`) that answers `/health` and records webhook POSTs — and
//! a daemon with one on-demand health job whose on-change command records its environment.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::backup_support::{DB, Fixture, PASSWORD, ROLE};
use crate::harness::process::kill_and_reap;
use crate::harness::{CtlOutput, Daemon, DaemonBuilder, RedisServer, toml_path, toml_str};

/// Answers `GET /health` with 200 "status: fine", anything else with 404; appends every POST
/// body as one line to the file named by its first argument, except pings (`/ping/...`,
/// plain-text bodies); records every request as a JSON line `{method, path, t, body, headers}` in
/// `requests.jsonl` beside that file, at its arrival; serves https with the certificate
/// and key named by the second and third if given; prints its port first.
const HTTP_SERVER: &str = r#"
import http.server, json, os, sys, time
def record(method, path, data, headers=None):
    line = json.dumps({"method": method, "path": path, "t": time.time(),
                       "body": data.decode("utf-8", "replace"),
                       "headers": dict(headers or {})})
    with open(os.path.join(os.path.dirname(sys.argv[1]), "requests.jsonl"), "a") as f:
        f.write(line + "\n")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        record("GET", self.path, b"")
        ok = self.path == "/health"
        body = b"status: fine\n" if ok else b"nothing here\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        record("POST", self.path, data, self.headers)
        if not self.path.startswith("/ping/"):
            with open(sys.argv[1], "ab") as f:
                f.write(data + b"\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("TEST_HTTP_PORT", "0"))), H)
if len(sys.argv) > 3:
    import ssl
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[2], sys.argv[3])
    s.socket = tls.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// A local HTTP server, stopped on drop.
pub struct HttpServer {
    child: Child,
    pub port: u16,
    pub posts: PathBuf,
}

impl HttpServer {
    pub fn start(dir: &Path) -> HttpServer {
        Self::spawn(dir, &[], 0)
    }

    /// The same server on a given port (a receiver that comes back where it was).
    pub fn start_on(dir: &Path, port: u16) -> HttpServer {
        Self::spawn(dir, &[], port)
    }

    /// The same server over https with the PEM certificate chain and key given.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> HttpServer {
        Self::spawn(dir, &[cert, key], 0)
    }

    fn spawn(dir: &Path, tls: &[&Path], port: u16) -> HttpServer {
        let posts = dir.join("webhook-posts.jsonl");
        let mut child = Command::new("python3")
            .args(["-c", HTTP_SERVER])
            .arg(&posts)
            .args(tls)
            .env("TEST_HTTP_PORT", port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 (apt-get install python3): {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the test HTTP server printed {line:?}, not its port"));
        HttpServer { child, port, posts }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request received so far, oldest first: `{method, path, t, body, headers}` (`t` in
    /// Unix seconds, at arrival; `headers` of POSTs only).
    pub fn requests(&self) -> Vec<Value> {
        let path = self.posts.with_file_name("requests.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The webhook bodies received so far.
    pub fn posts(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.posts)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// PostgreSQL (via the backup fixture), Redis with a password, and the HTTP server.
pub struct Stack {
    pub fx: Fixture,
    pub redis: RedisServer,
    pub http: HttpServer,
}

impl Stack {
    pub fn new() -> Stack {
        let fx = Fixture::new();
        let redis = RedisServer::start_with_password("r3dis-Secret-pw");
        let http = HttpServer::start(fx.dir.path());
        Stack { fx, redis, http }
    }

    pub fn dir(&self) -> &Path {
        self.fx.dir.path()
    }

    /// Where the on-change command appends `ATPRED_*=value` lines, `---` after each call.
    pub fn on_change_log(&self) -> PathBuf {
        self.dir().join("on-change.log")
    }

    /// A daemon with `[postgres]`, `[redis]` and an on-demand health job named `health` with
    /// settings fit for this stack; `extra` (TOML lines) adds or replaces keys.
    pub fn daemon(&self, extra: &str) -> DaemonBuilder {
        let record = format!(
            "env | grep ^ATPRED_ | sort >> {}; echo --- >> {}",
            self.on_change_log().display(),
            self.on_change_log().display()
        );
        let defaults = [
            format!("http-url = {}", toml_str(&self.http.url("/health"))),
            "http-expect-body = \"fine\"".to_owned(),
            format!("disk-paths = [{}]", toml_path(self.dir())),
            "disk-min-free = \"1MiB\"".to_owned(),
            "disk-min-free-inodes = \"10\"".to_owned(),
            "check-timeout = \"5s\"".to_owned(),
            format!("on-change = [\"/bin/sh\", \"-c\", {}]", toml_str(&record)),
            format!("webhook = {}", toml_str(&self.http.url("/hook"))),
        ];
        let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_owned();
        let overridden: Vec<String> = extra.lines().map(key).collect();
        let mut job = String::from("[jobs.health]\nkind = \"health\"\n");
        for line in defaults.iter().filter(|l| !overridden.contains(&key(l))) {
            job.push_str(line);
            job.push('\n');
        }
        job.push_str(extra);
        job.push('\n');
        self.fx.daemon(&job).redis(&self.redis)
    }

    /// Each on-change call: its `ATPRED_*` variables.
    pub fn on_change_calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.on_change_log()).unwrap_or_default();
        text.split("---\n")
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.lines().map(str::to_owned).collect())
            .collect()
    }

    /// A psql session as the application role that stays connected until killed.
    pub fn idle_session(&self) -> Child {
        let passfile = self.dir().join("sessions.pgpass");
        if !passfile.exists() {
            self.fx.pg.write_passfile(&passfile, ROLE, PASSWORD);
        }
        let mut cmd = self.fx.pg.psql_command(ROLE, DB);
        cmd.env("PGPASSFILE", &passfile)
            .args(["-c", "SELECT pg_sleep(600)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

/// `atprectl --json health --now`: the exit code and each check's report by name.
pub fn health_now(daemon: &Daemon) -> (i32, std::collections::BTreeMap<String, Value>) {
    let out: CtlOutput = daemon.ctl(["--json", "health", "--now"]);
    let reply: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {out:?}\n{}", daemon.log()));
    let checks = reply["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {reply}"))
        .iter()
        .map(|c| (c["check"].as_str().unwrap().to_owned(), c.clone()))
        .collect();
    (out.status, checks)
}

/// The status of each check, e.g. `[("http", "ok"), ...]`.
pub fn statuses(checks: &std::collections::BTreeMap<String, Value>) -> Vec<(String, String)> {
    checks
        .iter()
        .map(|(k, v)| (k.clone(), v["status"].as_str().unwrap().to_owned()))
        .collect()
}

/// Log lines that record a transition of `check` from `previous` to `status`.
pub fn transitions(log: &str, check: &str, previous: &str, status: &str) -> usize {
    let fields = format!("check=\"{check}\" status=\"{status}\" previous=\"{previous}\"");
    log.lines().filter(|l| l.contains(&fields)).count()
}
