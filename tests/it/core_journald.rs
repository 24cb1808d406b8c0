//! Journald: every line of a run carries JOB, KIND and RUN_ID, the completion line OUTCOME and
//! DURATION_MS, with no `F_` prefix, so `journalctl -u atpred JOB=nightly` works.
//!
//! tracing-journald writes to the fixed path /run/systemd/journal/socket. The test runs the
//! daemon in a private mount namespace (`unshare --mount`, root only: CI runs as root) with a
//! tmpfs over /run/systemd/journal, where a small Python catcher binds that socket and records
//! every datagram — the native journal protocol, exactly what journald would receive.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::core_support::sh_job;
use crate::harness::{self, Daemon, process::run_with_timeout, toml_str};

const CATCHER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(1 << 20).hex().encode() + b"\n")
"#;

/// Decodes one native-protocol datagram: `KEY=value\n`, or `KEY\n<u64 le length><value>\n`.
fn fields(datagram: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let nl = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            fields.insert(key, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            rest = rest.get(nl + 1..).unwrap_or_default();
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len_at = nl + 1;
            let len = u64::from_le_bytes(rest[len_at..len_at + 8].try_into().unwrap()) as usize;
            let value = &rest[len_at + 8..len_at + 8 + len];
            fields.insert(key, String::from_utf8_lossy(value).into_owned());
            rest = rest.get(len_at + 8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn run_lines_reach_journald_with_their_fields() {
    assert!(
        harness::is_root(),
        "this test needs root for its mount namespace (CI runs as root)"
    );
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir)
        .set("daemon", "log", toml_str("journald"))
        .toml(&sh_job("nightly", "echo hello from the job", ""));
    let records = capture_journal(dir.path(), &builder.write_config(), &["run nightly --wait"]);
    let of_run: Vec<_> = records
        .iter()
        .filter(|r| r.get("JOB").map(String::as_str) == Some("nightly"))
        .collect();
    assert!(
        of_run.len() >= 3,
        "started, the job's output, finished: {records:#?}"
    );
    let run_id = of_run[0]["RUN_ID"].clone();
    for r in &of_run {
        assert_eq!(r.get("KIND").map(String::as_str), Some("command"), "{r:?}");
        assert_eq!(r.get("RUN_ID"), Some(&run_id), "{r:?}");
        assert_eq!(
            r.get("SYSLOG_IDENTIFIER").map(String::as_str),
            Some("atpred"),
            "{r:?}"
        );
        assert!(
            !r.keys().any(|k| k.starts_with("F_")),
            "no field prefix: {r:?}"
        );
    }
    assert!(
        of_run.iter().any(|r| r["MESSAGE"] == "hello from the job"),
        "{of_run:#?}"
    );
    let done = of_run
        .iter()
        .find(|r| r.contains_key("OUTCOME"))
        .expect("a completion line");
    assert_eq!(done["OUTCOME"], "succeeded", "{done:?}");
    assert!(done["DURATION_MS"].parse::<u64>().is_ok(), "{done:?}");
    assert_eq!(done["PRIORITY"], "6", "info: {done:?}");
}

/// Runs the daemon with `config` in a private mount namespace whose journal socket is the
/// catcher's, runs `atprectl ARGS` for each of `ctl_runs` once the control socket is up (their
/// exit codes are the caller's to judge by the records), stops the daemon and returns every
/// record it sent to the journal. Root only.
pub fn capture_journal(
    dir: &std::path::Path,
    config: &std::path::Path,
    ctl_runs: &[&str],
) -> Vec<BTreeMap<String, String>> {
    let socket = dir.join("atpred.sock");
    let out = dir.join("journal.hex");
    let catcher = dir.join("catcher.py");
    std::fs::write(&catcher, CATCHER).unwrap();
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let ctl: String = ctl_runs
        .iter()
        .map(|args| {
            format!(
                "{} --socket {} {args} || true; ",
                env!("CARGO_BIN_EXE_atprectl"),
                socket.display()
            )
        })
        .collect();
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run/systemd/journal; \
         python3 {catcher} /run/systemd/journal/socket {out} & c=$!; \
         while [ ! -S /run/systemd/journal/socket ]; do sleep 0.05; done; \
         {atpred} --config {config} & d=$!; \
         while [ ! -S {socket} ]; do sleep 0.05; done; \
         {ctl}kill -TERM $d; wait $d; sleep 0.2; kill $c",
        catcher = catcher.display(),
        out = out.display(),
        atpred = env!("CARGO_BIN_EXE_atpred"),
        config = config.display(),
        socket = socket.display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let ran = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert_eq!(ran.status, 0, "{ran:?}");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| fields(&hex(l)))
        .collect()
}
