//! The control socket under attack, through the real daemon.
//!
//! - Fuzzing: at least 10,000 seeded random and mutated messages (valid requests, valid JSON with
//!   wrong types, huge numbers, deep nesting, unknown fields, invalid UTF-8, byte-mutated
//!   requests, garbage, a few lines beyond `protocol::MAX_REQUEST`, half-closed connections) over
//!   hundreds of connections. Every reply must be one JSON message, every connection must end
//!   once the client is done (no hang), and afterwards the daemon runs, its memory and file
//!   descriptors are back near where they were, and `atprectl` is served.
//! - A flood: 1,000 connections open at once while a backup runs, with the daemon's file limit
//!   at systemd's default soft 1024: each is answered (`hello`, `status`) or refused with `busy`
//!   (the daemon serves 256 at a time), and the backup succeeds.
//!
//! The fixed cases (one of each kind, 256 clients) are in `core_protocol`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::backup_disturb::wait_for_streaming;
use crate::backup_support::{BackgroundRun, Fixture};
use crate::core_support::{assert_no_panic, sh_job};
use crate::fault_support::{self, Row, open_fds, rss_kib};
use crate::harness::{self, Daemon, process::run_with_timeout};

/// How long a connection may stay silent before the test calls it a hang.
const HANG: Duration = Duration::from_secs(15);
const HELLO: &str = "{\"type\":\"hello\",\"protocol\":1,\"client\":\"fault-fuzz\"}\n";

/// A valid request (after `hello`), of any type the protocol knows.
fn valid_request(rng: &mut StdRng) -> Value {
    match rng.random_range(0..9) {
        0 => json!({"type": "status"}),
        1 => json!({"type": "jobs"}),
        2 => json!({"type": "history", "limit": rng.random_range(0..3000)}),
        3 => json!({"type": "backups"}),
        4 => json!({"type": "run", "job": "noop", "dry_run": rng.random_bool(0.5)}),
        5 => json!({"type": "run", "job": "noop", "wait": true}),
        6 => json!({"type": "cancel", "job": "noop"}),
        7 => {
            json!({"type": "backup_show", "id": format!("2026{:08}T000000Z-x", rng.random::<u32>())})
        }
        _ => json!({"type": "backup_verify", "id": "../../etc", "level": "checksum"}),
    }
}

/// Any JSON value, nested at most `depth`.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => Value::String(random_string(rng, 40)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..4))
                .map(|_| (random_string(rng, 8), random_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// Up to `max` chars, some of them far from ASCII.
fn random_string(rng: &mut StdRng, max: usize) -> String {
    (0..rng.random_range(0..max))
        .map(|_| match rng.random_range(0..4) {
            0 => char::from_u32(rng.random_range(0x80..0x2FFFF)).unwrap_or('?'),
            _ => char::from(rng.random_range(b' '..=b'~')),
        })
        .collect()
}

/// One message the connection survives: UTF-8, at most `MAX_REQUEST`, ending in a newline (and
/// holding more when its bytes do), so the daemon must answer each of its lines.
fn message(rng: &mut StdRng) -> (Vec<u8>, &'static str) {
    let mut line = match rng.random_range(0..100) {
        0..=14 => (valid_request(rng).to_string().into_bytes(), "valid"),
        15..=29 => {
            let mut req = valid_request(rng);
            let keys: Vec<String> = req
                .as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect();
            let key = &keys[rng.random_range(0..keys.len())];
            req[key] = random_value(rng, 2);
            (req.to_string().into_bytes(), "wrong type")
        }
        30..=39 => {
            let huge = [
                "1e400",
                "18446744073709551616",
                "-9223372036854775809",
                "1.5",
                "4294967296",
                "123456789012345678901234567890",
            ];
            let n = huge[rng.random_range(0..huge.len())];
            let text = match rng.random_range(0..3) {
                0 => format!("{{\"type\":\"history\",\"limit\":{n}}}"),
                1 => format!("{{\"type\":\"hello\",\"protocol\":{n},\"client\":\"x\"}}"),
                _ => format!("{{\"type\":\"run\",\"job\":{n}}}"),
            };
            (text.into_bytes(), "huge number")
        }
        40..=49 => {
            // Up to 10,000 levels: the deepest line stays under `MAX_REQUEST` (64 KiB).
            let depth = rng.random_range(64..10_000);
            let (open, close) = if rng.random_bool(0.5) {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            let text = format!(
                "{{\"type\":\"status\",\"x\":{}1{}}}",
                open.repeat(depth),
                close.repeat(depth)
            );
            (text.into_bytes(), "deep nesting")
        }
        50..=59 => {
            let mut req = valid_request(rng);
            req[random_string(rng, 12)] = random_value(rng, 3);
            if rng.random_bool(0.3) {
                req["type"] = Value::String(random_string(rng, 12));
            }
            (req.to_string().into_bytes(), "unknown field or type")
        }
        60..=79 => {
            let mut bytes = valid_request(rng).to_string().into_bytes();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = rng.random_range(0..0x80),
                    1 => bytes.insert(at, rng.random_range(0..0x80)),
                    _ => {
                        bytes.remove(at);
                        if bytes.is_empty() {
                            bytes.push(b'{');
                        }
                    }
                }
            }
            (bytes, "mutated")
        }
        80..=89 => {
            let bytes = (0..rng.random_range(0..300))
                .map(|_| rng.random_range(0..0x80))
                .collect();
            (bytes, "ASCII garbage")
        }
        _ => {
            let blank = ["", " ", "\t", "\r", "\0", "{}", "[]", "null", "\"status\""];
            (
                blank[rng.random_range(0..blank.len())].as_bytes().to_vec(),
                "blank or bare",
            )
        }
    };
    line.0.push(b'\n');
    line
}

/// How a connection ends: the daemon closes on the last three, after a `bad_frame` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client shuts its write side after a whole line.
    Clean,
    /// Half a request, then the write side shut: the daemon answers the fragment and closes.
    HalfClosed,
    InvalidUtf8,
    BinaryGarbage,
    Oversized,
}

impl Ending {
    fn pick(rng: &mut StdRng, big_left: &mut u32) -> Ending {
        match rng.random_range(0..100) {
            0..=39 => Ending::Clean,
            40..=59 => Ending::HalfClosed,
            60..=79 => Ending::InvalidUtf8,
            80..=97 => Ending::BinaryGarbage,
            _ if *big_left > 0 => {
                *big_left -= 1;
                Ending::Oversized
            }
            _ => Ending::Clean,
        }
    }

    fn bytes(self, rng: &mut StdRng) -> Vec<u8> {
        match self {
            Ending::Clean => Vec::new(),
            Ending::HalfClosed => b"{\"type\":\"stat".to_vec(),
            Ending::InvalidUtf8 => {
                let mut bytes = valid_request(rng).to_string().into_bytes();
                let at = rng.random_range(0..bytes.len());
                bytes.insert(at, rng.random_range(0x80..=0xFF));
                bytes.push(b'\n');
                bytes
            }
            Ending::BinaryGarbage => {
                let mut bytes: Vec<u8> = (0..rng.random_range(1..300))
                    .map(|_| rng.random())
                    .collect();
                bytes.push(0xFF); // never valid UTF-8, wherever the newlines fell
                bytes.push(b'\n');
                bytes
            }
            Ending::Oversized => {
                vec![b'x'; atpred::protocol::MAX_REQUEST + rng.random_range(1..4096)]
            }
        }
    }
}

/// What one fuzzed connection saw.
#[derive(Default)]
struct Seen {
    replies: u64,
    /// A `bad_frame`, `hello_first` or `protocol_mismatch` answer: the daemon closed after it.
    closing: Option<String>,
    problems: Vec<String>,
}

/// Reads reply lines until EOF; each must be a JSON object with a `type` (and a `code` if it is
/// an error). A silence of [`HANG`] is a hang.
fn read_replies(stream: UnixStream, seen: Arc<Mutex<Seen>>) {
    stream
        .set_read_timeout(Some(HANG))
        .expect("set the read timeout");
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                let reply: Result<Value, _> = serde_json::from_slice(&line);
                let mut seen = seen.lock().expect("lock");
                seen.replies += 1;
                match reply {
                    Ok(v)
                        if v["type"].is_string()
                            && (v["type"] != "error" || v["code"].is_string()) =>
                    {
                        let code = v["code"].as_str().unwrap_or_default();
                        if ["bad_frame", "hello_first", "protocol_mismatch"].contains(&code) {
                            seen.closing = Some(code.to_owned());
                        }
                    }
                    _ => seen.problems.push(format!(
                        "a reply that is not a message: {}",
                        String::from_utf8_lossy(&line)
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => {
                seen.lock()
                    .expect("lock")
                    .problems
                    .push(format!("no reply and no close for {HANG:?}: {e}"));
                return;
            }
        }
    }
}

/// What one fuzzed connection did.
struct Fuzzed {
    /// Lines the daemon read and answered.
    answered: u64,
    ending: Ending,
    seen: Seen,
}

/// One connection: maybe `hello`, then `count` messages, then an [`Ending`]; the daemon must
/// answer every line and close once the client is done.
fn fuzz_connection(
    daemon: &Daemon,
    rng: &mut StdRng,
    count: usize,
    big_left: &mut u32,
    kinds: &mut BTreeMap<&'static str, u64>,
) -> Fuzzed {
    let stream = daemon.raw_connect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = {
        let stream = stream.try_clone().expect("clone the stream");
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || read_replies(stream, seen))
    };
    let mut writer = &stream;
    let hello = rng.random_bool(0.9);
    // Without hello the first line ends the connection: send just that one.
    let count = if hello { count } else { 1 };
    // Lines the daemon must answer: each newline, and a fragment at EOF.
    let mut lines = 0;
    if hello {
        writer.write_all(HELLO.as_bytes()).expect("send hello");
        lines += 1;
    }
    for _ in 0..count {
        let (bytes, kind) = message(rng);
        writer
            .write_all(&bytes)
            .expect("send a message the daemon survives");
        lines += bytes.iter().filter(|b| **b == b'\n').count() as u64;
        *kinds.entry(kind).or_default() += 1;
    }
    let ending = Ending::pick(rng, big_left);
    // The daemon stops reading at a bad frame: the rest of the write may fail.
    let _ = writer.write_all(&ending.bytes(rng));
    if ending == Ending::HalfClosed {
        lines += 1;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    reader.join().expect("the reader thread");
    let mut seen = Arc::try_unwrap(seen)
        .ok()
        .expect("the reader is done")
        .into_inner()
        .expect("lock");
    if !hello {
        // The first line gets hello_first and the connection ends there.
        lines = 1;
    }
    if seen.closing.is_none() && seen.replies < lines {
        seen.problems.push(format!(
            "{lines} lines but {} replies (ending {ending:?})",
            seen.replies
        ));
    }
    Fuzzed {
        answered: lines.min(seen.replies),
        ending,
        seen,
    }
}

/// Samples `pid`'s RSS every 20 ms until stopped; returns the peak in KiB.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: nix::unistd::Pid) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            // Until stopped, or the daemon is gone (the test then fails elsewhere).
            while !s.load(Ordering::Relaxed) && harness::process_alive(pid) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak_kib(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the RSS thread");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

#[test]
fn fault_fuzzed_control_messages_leave_the_daemon_serving_with_bounded_memory() {
    let (mut rng, seed) = fault_support::seeded("fault_socket fuzz");
    let dir = harness::tempdir();
    let mut daemon = Daemon::builder(&dir)
        .toml(&sh_job("noop", "true", ""))
        .spawn();
    assert_eq!(daemon.ctl(["status"]).status, 0);
    let (rss_before, fds_before) = (rss_kib(daemon.pid()), open_fds(daemon.pid()));
    let watch = RssWatch::start(daemon.pid());

    let target = fault_support::rounds(10_000, 100_000) as u64;
    let mut big_left = 4;
    let (mut answered, mut connections) = (0, 0);
    let mut kinds = BTreeMap::new();
    let mut endings = BTreeMap::new();
    let mut problems = Vec::new();
    while answered < target {
        let count = rng.random_range(0..60);
        let outcome = fuzz_connection(&daemon, &mut rng, count, &mut big_left, &mut kinds);
        connections += 1;
        answered += outcome.answered;
        *endings.entry(format!("{:?}", outcome.ending)).or_insert(0) += 1;
        problems.extend(
            outcome
                .seen
                .problems
                .into_iter()
                .map(|p| format!("connection {connections}: {p}")),
        );
        if problems.len() > 20 || !daemon.is_running() {
            break;
        }
    }
    let peak = watch.peak_kib();
    let alive = daemon.is_running();
    // Every connection has ended: the daemon holds no more descriptors than before (give the
    // runs it was asked for a moment to end).
    let mut fds_after = 0;
    let settled = alive
        && harness::wait_until(Duration::from_secs(15), || {
            fds_after = open_fds(daemon.pid());
            fds_after <= fds_before
        });
    let rss_after = if alive { rss_kib(daemon.pid()) } else { 0 };
    let served = alive && daemon.ctl(["status"]).status == 0;
    eprintln!(
        "fault_socket fuzz: {answered} lines answered over {connections} connections; messages \
         {kinds:?}; connection endings {endings:?}; RSS {rss_before} KiB before, peak {peak} KiB, {rss_after} KiB after; \
         fds {fds_before} before, {fds_after} after"
    );
    fault_support::record(&Row {
        scenario: "control socket fuzzing",
        seed: Some(seed),
        runs: connections,
        faults: usize::try_from(answered).expect("fits"),
        losses: problems.len(),
        crashes: usize::from(!served),
        notes: format!("peak RSS {} MiB", peak / 1024),
    });
    assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));
    assert!(
        alive,
        "the daemon died: {:?}",
        daemon.wait_exit(Duration::ZERO)
    );
    assert!(served, "a valid client is served afterwards");
    assert!(
        settled,
        "descriptors: {fds_before} before, {fds_after} after"
    );
    // Bounded: one 64 KiB request buffer at a time plus allocator slack, not growing with the
    // number of messages.
    assert!(
        peak < rss_before + 64 * 1024,
        "peak RSS {peak} KiB from {rss_before} KiB"
    );
    assert_no_panic(&daemon);
}

/// Sets the daemon's soft open-file limit to systemd's default for services (1024).
fn systemd_file_limit(daemon: &Daemon) {
    let out = run_with_timeout(
        Command::new("prlimit")
            .arg("--pid")
            .arg(daemon.pid().to_string())
            .arg("--nofile=1024:"),
        Duration::from_secs(10),
    );
    assert_eq!(out.status, 0, "prlimit: {out:?}");
}

/// What one of the flood's connections got.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    Answered,
    Refused,
}

/// `hello` and `status` on an open connection: answered, refused with `busy`, or a problem.
fn hello_status(stream: &UnixStream) -> Result<Outcome, String> {
    let mut writer = stream;
    // The daemon may already have refused and closed: a failed write is judged by the read.
    let _ = writer.write_all(format!("{HELLO}{{\"type\":\"status\"}}\n").as_bytes());
    let mut reader = BufReader::new(stream);
    let mut read = || -> Result<Value, String> {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => Err("closed without a reply".to_owned()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}")),
            Err(e) => Err(format!("no reply: {e}")),
        }
    };
    let first = read()?;
    match (first["type"].as_str(), first["code"].as_str()) {
        (Some("error"), Some("busy")) => Ok(Outcome::Refused),
        (Some("hello"), _) => {
            let status = read()?;
            if status["type"] == "status" {
                Ok(Outcome::Answered)
            } else {
                Err(format!("not a status: {status}"))
            }
        }
        _ => Err(format!("unexpected first reply: {first}")),
    }
}

#[test]
fn fault_1000_concurrent_connections_during_a_backup_are_answered_or_refused() {
    const CLIENTS: usize = 1000;
    let fx = Fixture::new();
    fx.create_bulk_table(200_000);
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\ncompress = \"none\"\nverify = \"checksum\"")
        .spawn();
    systemd_file_limit(&daemon);
    let (rss_before, fds_before) = (rss_kib(daemon.pid()), open_fds(daemon.pid()));
    let run = BackgroundRun::start(&daemon, fx.dir.path(), "nightly");
    wait_for_streaming(&fx.backup_dir(), 1 << 20);
    let watch = RssWatch::start(daemon.pid());

    // All 1000 open at once before any speaks.
    let streams: Vec<UnixStream> = (0..CLIENTS)
        .map(|_| {
            let s = daemon.raw_connect();
            s.set_read_timeout(Some(HANG)).expect("timeout");
            s
        })
        .collect();
    let mut chunks: Vec<Vec<UnixStream>> = (0..8).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        chunks[i % 8].push(s);
    }
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            // Each keeps its connections open until all are done: the slots stay taken.
            std::thread::spawn(move || {
                let results: Vec<Result<Outcome, String>> =
                    chunk.iter().map(hello_status).collect();
                (results, chunk)
            })
        })
        .collect();
    let mut results: Vec<Result<Outcome, String>> = Vec::new();
    let mut held = Vec::new();
    for t in threads {
        let (r, streams) = t.join().expect("a client thread");
        results.extend(r);
        held.push(streams);
    }
    drop(held);
    let peak = watch.peak_kib();
    let answered = results
        .iter()
        .filter(|r| **r == Ok(Outcome::Answered))
        .count();
    let refused = results
        .iter()
        .filter(|r| **r == Ok(Outcome::Refused))
        .count();
    let problems: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();

    let record = run.finish();
    let mut fds_after = 0;
    let settled = harness::wait_until(Duration::from_secs(15), || {
        fds_after = open_fds(daemon.pid());
        fds_after <= fds_before
    });
    let served = daemon.ctl(["status"]).status == 0;
    eprintln!(
        "fault_socket flood: {CLIENTS} connections during a backup: {answered} answered, \
         {refused} refused busy, {} problems; backup {}; RSS {rss_before} KiB before, peak \
         {peak} KiB; fds {fds_before} before, {fds_after} after",
        problems.len(),
        record["outcome"]
    );
    fault_support::record(&Row {
        scenario: "1000 concurrent connections during a backup",
        seed: None,
        runs: 1,
        faults: CLIENTS,
        losses: problems.len() + usize::from(record["outcome"] != "succeeded"),
        crashes: usize::from(!served),
        notes: format!("{answered} answered, {refused} refused busy"),
    });
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(answered + refused, CLIENTS);
    // 256 slots, one of them held by the backup's own `run --wait`, and none given back
    // before every client had its answer.
    assert!(
        (1..atpred::control::MAX_CONNECTIONS).contains(&answered),
        "{answered} answered"
    );
    assert_eq!(record["outcome"], "succeeded", "{record:#}");
    assert!(served, "a client is served after the flood");
    assert!(
        settled,
        "descriptors: {fds_before} before, {fds_after} after"
    );
    assert!(
        peak < rss_before + 64 * 1024,
        "peak RSS {peak} KiB from {rss_before} KiB"
    );
    assert_no_panic(&daemon);
}
