//! Malformed input on the real daemon's control socket, written raw: random bytes, invalid
//! JSON, unknown requests, a request before `hello`, a wrong protocol version, a 10 MiB line,
//! invalid UTF-8, silent clients, a client gone mid-reply and too many clients. Each gets an
//! error reply or a closed connection, and afterwards the daemon still serves `atprectl` and its
//! log shows no panic.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

use crate::core_support::{assert_no_panic, sh_job, wait_for_runs};
use crate::harness::{self, Daemon};

/// One raw connection: writes requests, reads reply lines.
struct Raw {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Raw {
    fn connect(daemon: &Daemon) -> Raw {
        let stream = daemon.raw_connect();
        let reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        Raw { stream, reader }
    }

    /// Connects and completes the handshake.
    fn hello(daemon: &Daemon) -> Raw {
        let mut raw = Raw::connect(daemon);
        let reply = raw.request(&json!({"type": "hello", "protocol": 1, "client": "core-tests"}));
        assert_eq!(reply["type"], "hello", "{reply}");
        raw
    }

    /// Writes bytes; an error (the daemon closed on us) is returned, not fatal.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next reply line as JSON; `None` when the daemon closed the connection.
    fn read(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))),
        }
    }

    fn request(&mut self, request: &Value) -> Value {
        self.write(format!("{request}\n").as_bytes())
            .expect("send a request");
        self.read()
            .unwrap_or_else(|| panic!("closed instead of answering {request}"))
    }
}

fn assert_error(reply: &Value, code: &str) {
    assert_eq!(
        (&reply["type"], &reply["code"]),
        (&"error".into(), &code.into()),
        "{reply}"
    );
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
}

/// The daemon still answers a real client and did not panic.
fn assert_still_serving(daemon: &Daemon) {
    let out = daemon.ctl(["status"]);
    assert_eq!(out.status, 0, "atprectl status after bad input: {out:?}");
    assert_no_panic(daemon);
}

fn daemon(dir: &tempfile::TempDir) -> Daemon {
    Daemon::builder(dir)
        .toml(&sh_job("slow", "echo one; sleep 1; echo two", ""))
        .spawn()
}

/// Bytes that are neither UTF-8 nor JSON, newlines included (a fixed xorshift sequence).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn random_bytes_get_an_error_or_a_closed_connection() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    for raw_first in [true, false] {
        let mut raw = if raw_first {
            Raw::connect(&daemon)
        } else {
            Raw::hello(&daemon)
        };
        let _ = raw.write(&random_bytes(64 * 1024));
        let _ = raw.write(b"\n");
        while let Some(reply) = raw.read() {
            assert_eq!(reply["type"], "error", "{reply}");
        }
    }
    assert_still_serving(&daemon);
}

#[test]
fn invalid_json_and_unknown_requests_keep_the_connection_usable() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut raw = Raw::hello(&daemon);
    raw.write(b"this is not json\n").expect("write");
    assert_error(&raw.read().expect("a reply to invalid JSON"), "bad_request");
    let reply = raw.request(&json!({"type": "format_disk"}));
    assert_error(&reply, "bad_request");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("format_disk")),
        "{reply}"
    );
    assert_error(
        &raw.request(&json!({"type": "history", "limit": -1})),
        "bad_request",
    );
    assert_error(
        &raw.request(&json!({"type": "run", "job": "Not A Name"})),
        "bad_request",
    );
    assert_error(&raw.request(&json!({"no_type": true})), "bad_request");
    let status = raw.request(&json!({"type": "status"}));
    assert_eq!(
        status["type"], "status",
        "the same connection still works: {status}"
    );
    let jobs = raw.request(&json!({"type": "jobs"}));
    assert_eq!(jobs["jobs"][0]["name"], "slow", "{jobs}");
    assert_still_serving(&daemon);
}

#[test]
fn a_request_before_hello_is_refused_and_closed() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut raw = Raw::connect(&daemon);
    assert_error(&raw.request(&json!({"type": "status"})), "hello_first");
    assert!(
        raw.read().is_none(),
        "the connection is closed after hello_first"
    );
    assert_still_serving(&daemon);
}

#[test]
fn a_wrong_protocol_version_is_refused_and_closed() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut raw = Raw::connect(&daemon);
    let reply = raw.request(&json!({"type": "hello", "protocol": 999, "client": "future"}));
    assert_error(&reply, "protocol_mismatch");
    assert!(raw.read().is_none(), "closed after protocol_mismatch");
    assert_still_serving(&daemon);
}

#[test]
fn a_10_mib_line_is_a_framing_error() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut raw = Raw::hello(&daemon);
    let mut line = vec![b'a'; 10 * 1024 * 1024];
    line.push(b'\n');
    // The daemon stops reading at its limit, so the rest of the write may fail: that is fine.
    let _ = raw.write(&line);
    if let Some(reply) = raw.read() {
        assert_error(&reply, "bad_frame");
        assert!(raw.read().is_none(), "closed after bad_frame");
    }
    assert_still_serving(&daemon);
}

#[test]
fn invalid_utf8_is_a_framing_error() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut raw = Raw::hello(&daemon);
    raw.write(b"{\"type\":\"st\xff\xfeatus\"}\n")
        .expect("write");
    assert_error(&raw.read().expect("a reply to invalid UTF-8"), "bad_frame");
    assert!(raw.read().is_none(), "closed after bad_frame");
    assert_still_serving(&daemon);
}

#[test]
fn silent_clients_do_not_hold_up_others() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let _silent = Raw::connect(&daemon);
    let mut half = Raw::hello(&daemon);
    half.write(b"{\"type\":\"sta")
        .expect("write half a request");
    let out = daemon.ctl(["run", "slow", "--wait"]);
    assert_eq!(out.status, 0, "served while two clients hang: {out:?}");
    assert_still_serving(&daemon);
}

#[test]
fn a_client_gone_mid_reply_does_not_disturb_the_run() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut raw = Raw::hello(&daemon);
    let accepted = raw.request(&json!({"type": "run", "job": "slow", "wait": true}));
    assert_eq!(accepted["type"], "accepted", "{accepted}");
    let run_id = accepted["run_id"].as_str().expect("run_id").to_owned();
    drop(raw);
    let runs = wait_for_runs(&daemon, "slow", 1, |r| r["run_id"] == run_id.as_str());
    let run = runs
        .iter()
        .find(|r| r["run_id"] == run_id.as_str())
        .expect("found");
    assert_eq!(run["outcome"], "succeeded", "{run}");
    assert_still_serving(&daemon);
}

#[test]
fn too_many_clients_get_busy_and_the_daemon_recovers() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let held: Vec<Raw> = (0..256).map(|_| Raw::connect(&daemon)).collect();
    let mut extra = Raw::connect(&daemon);
    assert_error(&extra.read().expect("a busy reply"), "busy");
    drop(held);
    let recovered = harness::wait_until(crate::core_support::WAIT, || {
        daemon.ctl(["status"]).status == 0
    });
    assert!(
        recovered,
        "the daemon serves again once the clients are gone"
    );
    assert_still_serving(&daemon);
}
