//! `atprectl` against the real daemon: exit codes (0, 1, 2, 69; 77 is in `core_socket`), JSON
//! output of every command, `history JOB -n N`, completions and the man page, and a closed
//! stdout (`| head`) ending it quietly.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::core_support::{WAIT, json_lines, sh_job, wait_for_pids};
use crate::harness::{self, CtlOutput, Daemon, process::run_with_timeout};

fn ctl_binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atprectl"));
    cmd.env_remove("ATPRED_SOCKET");
    cmd
}

fn ctl_without_daemon(args: &[&str]) -> CtlOutput {
    run_with_timeout(ctl_binary().args(args), WAIT)
}

fn daemon(dir: &tempfile::TempDir) -> Daemon {
    let pids = dir.path().join("pids");
    Daemon::builder(dir)
        .toml(&sh_job("ok", "echo working", ""))
        .toml(&sh_job("fails", "echo broken >&2; exit 3", ""))
        .toml(&sh_job(
            "long",
            &format!("echo $$ > {}; exec sleep 30", pids.display()),
            "",
        ))
        .spawn()
}

#[test]
fn exit_codes() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let expect = |args: &[&str], code: i32| {
        let out = daemon.ctl(args);
        assert_eq!(out.status, code, "atprectl {args:?}: {out:?}");
        out
    };
    expect(&["status"], 0);
    expect(&["run", "ok", "--wait"], 0);
    let failed = expect(&["run", "fails", "--wait"], 1);
    assert!(
        failed.stdout.contains("failed") && failed.stdout.contains("broken"),
        "{failed:?}"
    );
    let unknown = expect(&["run", "nope"], 2);
    assert!(unknown.stderr.contains("nope"), "{unknown:?}");
    expect(&["run", "Not A Name"], 2);
    expect(&["history", "Not A Name"], 2);
    expect(&["frobnicate"], 2);
    expect(&["history", "-n", "many"], 2);
    expect(&["cancel", "ok"], 1);
}

#[test]
fn no_daemon_exits_69_naming_the_socket() {
    let dir = harness::tempdir();
    let socket = dir.path().join("nobody-home.sock");
    let shown = socket.display().to_string();
    let out = ctl_without_daemon(&["--socket", &shown, "status"]);
    assert_eq!(out.status, 69, "{out:?}");
    assert!(out.stderr.contains(&shown), "names the socket: {out:?}");
    assert!(out.stderr.contains("systemctl status atpred"), "{out:?}");
    let mut cmd = ctl_binary();
    cmd.env("ATPRED_SOCKET", &socket).args(["--json", "jobs"]);
    let out = run_with_timeout(&mut cmd, WAIT);
    assert_eq!(out.status, 69, "ATPRED_SOCKET is used: {out:?}");
    assert!(out.stderr.contains(&shown), "{out:?}");
}

#[test]
fn json_output_of_every_command_parses() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let json = |args: &[&str], code: i32| {
        let out = daemon.ctl(std::iter::once("--json").chain(args.iter().copied()));
        assert_eq!(out.status, code, "atprectl --json {args:?}: {out:?}");
        let lines = json_lines(&out);
        assert!(!lines.is_empty(), "{args:?}: no output");
        for l in &lines {
            assert!(l["type"].is_string(), "{args:?}: {l}");
        }
        lines
            .into_iter()
            .map(|l| l["type"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(json(&["status"], 0), ["status"]);
    assert_eq!(json(&["jobs"], 0), ["jobs"]);
    let waited = json(&["run", "ok", "--wait"], 0);
    assert_eq!(
        (
            waited.first().map(String::as_str),
            waited.last().map(String::as_str)
        ),
        (Some("accepted"), Some("finished"))
    );
    assert!(waited.iter().any(|t| t == "progress"), "{waited:?}");
    assert_eq!(
        json(&["run", "fails", "--wait"], 1)
            .last()
            .map(String::as_str),
        Some("finished")
    );
    let dry = json(&["run", "ok", "--dry-run"], 0);
    assert_eq!(dry.last().map(String::as_str), Some("finished"), "{dry:?}");
    assert_eq!(json(&["run", "long"], 0), ["accepted"]);
    wait_for_pids(&dir.path().join("pids"));
    assert_eq!(json(&["cancel", "long"], 0), ["cancelling"]);
    assert_eq!(json(&["cancel", "ok"], 1), ["error"]);
    assert_eq!(json(&["run", "nope"], 2), ["error"]);
    assert_eq!(json(&["history"], 0), ["history"]);
    assert_eq!(json(&["history", "ok", "-n", "1"], 0), ["history"]);
    assert_eq!(json(&["reload"], 0), ["reloaded"]);
}

#[test]
fn history_filters_by_job_and_limits() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut ids = Vec::new();
    for job in ["ok", "fails", "ok", "ok", "fails"] {
        let out = daemon.ctl(["--json", "run", job, "--wait"]);
        let last = json_lines(&out).pop().expect("finished");
        ids.push((job, last["run"]["run_id"].as_str().expect("id").to_owned()));
    }
    let reply = crate::core_support::ctl_json(&daemon, &["history", "ok", "-n", "2"]);
    let runs = reply["runs"].as_array().expect("runs");
    let got: Vec<&str> = runs
        .iter()
        .map(|r| r["run_id"].as_str().expect("id"))
        .collect();
    let newest_ok: Vec<&str> = ids
        .iter()
        .rev()
        .filter(|(j, _)| *j == "ok")
        .take(2)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(got, newest_ok, "the two newest runs of ok, newest first");
    let all = crate::core_support::ctl_json(&daemon, &["history", "-n", "3"]);
    assert_eq!(all["runs"].as_array().map(Vec::len), Some(3), "{all}");
    let table = daemon.ctl(["history", "ok", "-n", "2"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {}", table.stdout);
    assert!(
        lines[0].starts_with("RUN") && lines[1].contains(newest_ok[0]),
        "{}",
        table.stdout
    );
}

#[test]
fn completions_and_man_pages() {
    let out = ctl_without_daemon(&["completions", "bash"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("_atprectl()") && out.stdout.contains("complete -F _atprectl"),
        "{}",
        out.stdout
    );
    for sub in ["status", "jobs", "history", "reload", "cancel"] {
        assert!(out.stdout.contains(sub), "completes {sub}");
    }
    let zsh = ctl_without_daemon(&["completions", "zsh"]);
    assert!(
        zsh.status == 0 && zsh.stdout.contains("#compdef atprectl"),
        "{zsh:?}"
    );
    let man = ctl_without_daemon(&["man"]);
    assert_eq!(man.status, 0, "{man:?}");
    assert!(man.stdout.contains(".TH atprectl"), "{}", man.stdout);
    let man = ctl_without_daemon(&["man", "--daemon"]);
    assert!(
        man.status == 0 && man.stdout.contains(".TH atpred"),
        "{man:?}"
    );
}

/// Runs atprectl with stdout a pipe whose reading end is already closed (like `| head` that
/// has exited); returns the exit code and stderr.
fn with_closed_stdout(socket: Option<&Path>, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut cmd = ctl_binary();
    if let Some(socket) = socket {
        cmd.arg("--socket").arg(socket);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn atprectl");
    let status =
        harness::process::wait_timeout(&mut child, Duration::from_secs(20)).expect("exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    (harness::process::status_code(status), stderr)
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = harness::tempdir();
    let daemon = daemon(&dir);
    let mut failures = Vec::new();
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["--json", "history"],
        &["completions", "bash"],
        &["man"],
    ] {
        let (code, stderr) = with_closed_stdout(Some(daemon.socket()), args);
        if code != 0 || stderr.contains("panicked") {
            failures.push(format!(
                "atprectl {args:?}: exit {code}, stderr: {}",
                stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "broken pipe must exit 0 quietly:\n{}",
        failures.join("\n")
    );
}
