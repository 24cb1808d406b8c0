//! What the `alerts_*` tests share: the healthchecks-style receiver (the health tests' real
//! HTTP server, which records every request with its path, arrival time and body), receivers
//! that are down or hang, and a guard that thaws a frozen daemon.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use crate::health_support::HttpServer;

/// The pings the receiver got under `/ping/<key>`, oldest first: `(suffix, body)`, where the
/// suffix is `""` for the bare URL, `"/start"`, `"/fail"` or `"/<status>"`.
pub fn pings(http: &HttpServer, key: &str) -> Vec<(String, String)> {
    let prefix = format!("/ping/{key}");
    http.requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .filter_map(|r| {
            let path = r["path"].as_str()?;
            let suffix = path.strip_prefix(&prefix)?;
            Some((suffix.to_owned(), r["body"].as_str()?.to_owned()))
        })
        .collect()
}

/// The arrival times (Unix seconds) of the requests to `/ping/<key>`.
pub fn arrivals(http: &HttpServer, key: &str) -> Vec<f64> {
    let path = format!("/ping/{key}");
    http.requests()
        .iter()
        .filter(|r| r["path"] == path.as_str())
        .filter_map(|r| r["t"].as_f64())
        .collect()
}

/// Now, as the receiver's `t`.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A receiver that accepts connections and never answers (nor reads): the worst kind.
pub struct HangingReceiver {
    pub port: u16,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl HangingReceiver {
    pub fn start() -> HangingReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let held = Arc::clone(&accepted);
        // The thread ends with the test binary; the connections stay open until then.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        });
        HangingReceiver { port, accepted }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// Sends SIGCONT to a process when dropped, so a test that froze the daemon never leaves it
/// frozen, whatever assertion failed.
pub struct Thaw(pub Pid);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Every text the daemon produced about itself and its runs that a ping key must stay out of:
/// its log, `atprectl` replies (plain and `--json`), the history file and the metrics
/// textfile.
pub fn outputs(
    daemon: &crate::harness::Daemon,
    state: &Path,
    textfile: &Path,
) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for args in [&["status"][..], &["jobs"], &["history"], &["metrics"]] {
        let plain = daemon.ctl(args);
        texts.push((format!("atprectl {args:?}"), plain.stdout + &plain.stderr));
        if args != ["metrics"] {
            let json = daemon.ctl(std::iter::once("--json").chain(args.iter().copied()));
            texts.push((
                format!("atprectl --json {args:?}"),
                json.stdout + &json.stderr,
            ));
        }
    }
    for (what, path) in [
        ("the history file", state.join("history.jsonl")),
        ("the metrics textfile", textfile.to_owned()),
    ] {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{what} ({}): {e}", path.display()));
        texts.push((what.to_owned(), text));
    }
    texts.push(("the daemon log".into(), daemon.log()));
    texts
}

/// The value of the sample `name{labels}` in the metrics text, if present.
pub fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let head = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.trim().parse().ok())
}

/// An SMTP server (aiosmtpd) on loopback, TLS only: STARTTLS required before anything else, or
/// implicit TLS; AUTH only over TLS, accepting one user and password. Each mail is recorded as
/// a JSON line `{from, to, data, login, tls}` in the file named by the first argument; prints
/// its port first.
const SMTP_SERVER: &str = r#"
import asyncio, json, socket, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
out, cert, key, mode, user, password = sys.argv[1:7]
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        rec = {"from": envelope.mail_from, "to": envelope.rcpt_tos,
               "data": envelope.content.decode("utf-8", "replace"),
               "login": session.auth_data,
               "tls": server.transport.get_extra_info("ssl_object") is not None}
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return "250 2.0.0 queued as TESTQ1"
def authenticate(server, session, envelope, mechanism, data):
    ok = data.login.decode() == user and data.password.decode() == password
    return AuthResult(success=ok, auth_data=data.login.decode() if ok else None)
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
kw = dict(hostname="127.0.0.1", port=port, authenticator=authenticate)
if mode == "starttls":
    c = Controller(Handler(), tls_context=tls, require_starttls=True, auth_require_tls=True, **kw)
else:
    # aiosmtpd knows TLS only from STARTTLS: over implicit TLS it must be told AUTH is fine.
    c = Controller(Handler(), ssl_context=tls, auth_require_tls=False, **kw)
c.start()
print(port, flush=True)
while True:
    time.sleep(3600)
"#;

/// A TLS-only SMTP server with one account, stopped on drop.
pub struct SmtpServer {
    child: std::process::Child,
    pub port: u16,
    mails: std::path::PathBuf,
}

impl SmtpServer {
    /// `mode`: "starttls" or "implicit"; `cert` and `key` are the server's PEM files.
    pub fn start(
        dir: &Path,
        mode: &str,
        cert: &Path,
        key: &Path,
        user: &str,
        password: &str,
    ) -> SmtpServer {
        use std::io::BufRead;
        let mails = dir.join(format!("mails-{mode}.jsonl"));
        let mut child = std::process::Command::new("python3")
            .args(["-c", SMTP_SERVER])
            .arg(&mails)
            .args([cert, key])
            .args([mode, user, password])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 (apt-get install python3): {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the test SMTP server printed {line:?}, not its port \
                 (python3 -m pip install aiosmtpd; .ci/deps installs it)"
            )
        });
        SmtpServer { child, port, mails }
    }

    /// The mails received so far, oldest first.
    pub fn mails(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.mails)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        crate::harness::process::kill_and_reap(&mut self.child);
    }
}

/// The events the receiver got under `/hook/<key>`, oldest first.
pub fn events(http: &HttpServer, key: &str) -> Vec<serde_json::Value> {
    let path = format!("/hook/{key}");
    http.requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == path.as_str())
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect()
}

/// `[notify.NAME]` of kind webhook posting to `/hook/<key>` on `port`.
pub fn webhook(name: &str, port: u16, key: &str) -> String {
    format!(
        "[notify.{name}]\nkind = \"webhook\"\nurl = {}\ntimeout = \"2s\"\n",
        crate::harness::toml_str(&format!("http://127.0.0.1:{port}/hook/{key}"))
    )
}

/// Waits until `/hook/<key>` got `n` events; returns them.
pub fn wait_events(
    http: &HttpServer,
    key: &str,
    n: usize,
    daemon: &crate::harness::Daemon,
) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    let ok = crate::harness::wait_until(std::time::Duration::from_secs(20), || {
        got = events(http, key);
        got.len() >= n
    });
    let kinds: Vec<&serde_json::Value> = got.iter().map(|e| &e["kind"]).collect();
    assert!(ok, "{n} events; got {kinds:?}\n{}", daemon.log());
    got
}

/// "kind job" of each event.
pub fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["job"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// Waits until the outbox of the daemon whose folder is `dir` is empty: every message raised
/// so far was delivered (each is on disk before its event's cause is answered).
pub fn outbox_drained(dir: &Path) {
    let outbox = dir.join("state/outbox");
    let drained = crate::harness::wait_until(std::time::Duration::from_secs(20), || {
        std::fs::read_dir(&outbox).is_ok_and(|d| d.count() == 0)
    });
    assert!(drained, "the outbox {} drained", outbox.display());
}
