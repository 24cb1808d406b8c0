//! Configuration through the real `atpred`: `--check` on bad and good files (exit 78 naming the
//! key and its `file:line:`), world-writable files refused, the shipped reference config, time
//! zones in `--check` output, and `ATPRED__SECTION__KEY` environment overrides.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::core_support::{WAIT, assert_group_gone, sh_job, start_run, wait_for_pids};
use crate::harness::{self, Daemon, atpred_launcher, process::run_with_timeout};

/// How a bad case changes the default config.
pub enum Change {
    /// `[section] key = value` (value is TOML text).
    Set(&'static str, &'static str, &'static str),
    /// Raw TOML appended after the sections.
    Raw(&'static str),
}

/// One bad config: the key its error must name, and text on the line the error must point at.
pub struct Bad {
    pub key: &'static str,
    pub line_of: &'static str,
    pub change: Change,
}

pub const fn set(
    key: &'static str,
    line_of: &'static str,
    s: &'static str,
    k: &'static str,
    v: &'static str,
) -> Bad {
    Bad {
        key,
        line_of,
        change: Change::Set(s, k, v),
    }
}

pub const fn raw(key: &'static str, line_of: &'static str, text: &'static str) -> Bad {
    Bad {
        key,
        line_of,
        change: Change::Raw(text),
    }
}

/// Also replayed through a live daemon's reload by `fault_config`.
#[rustfmt::skip]
pub fn bad_cases() -> Vec<Bad> {
    vec![
        set("daemon.stop-timout", "stop-timout =", "daemon", "stop-timout", "\"5s\""),
        raw("deamon", "[deamon]", "[deamon]\nsocket = \"/tmp/x\""),
        set("daemon.timezone", "timezone =", "daemon", "timezone", "\"Mars/Olympus\""),
        set("daemon.stop-timeout", "stop-timeout =", "daemon", "stop-timeout", "\"5 parsecs\""),
        set("daemon.stop-timeout", "stop-timeout =", "daemon", "stop-timeout", "\"0s\""),
        set("daemon.max-concurrent-jobs", "max-concurrent-jobs =", "daemon", "max-concurrent-jobs", "0"),
        set("daemon.max-concurrent-jobs", "max-concurrent-jobs =", "daemon", "max-concurrent-jobs", "\"two\""),
        set("daemon.state-dir", "state-dir =", "daemon", "state-dir", "\"relative/state\""),
        set("daemon.log", "log =", "daemon", "log", "\"syslog\""),
        set("daemon.log-level", "log-level =", "daemon", "log-level", "\"info,,==\""),
        set("daemon.history-size", "history-size =", "daemon", "history-size", "5"),
        set("postgres.port", "port =", "postgres", "port", "70000"),
        set("postgres.passfile", "passfile =", "postgres", "passfile", "\"pgpass\""),
        set("redis.url", "url =", "redis", "url", "\"http://127.0.0.1:6379/0\""),
        raw("jobs.x.kind", "[jobs.x]", "[jobs.x]\ncommand = [\"true\"]"),
        raw("jobs.x.kind", "kind =", "[jobs.x]\nkind = \"bogus\"\ncommand = [\"true\"]"),
        raw("jobs.x.command", "command =", "[jobs.x]\nkind = \"health\"\ncommand = [\"true\"]"),
        raw("jobs.x.command", "command =", "[jobs.x]\nkind = \"backup\"\ncommand = [\"true\"]"),
        raw("jobs.x.schedule", "schedule =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"61 * * * *\""),
        raw("jobs.x.schedule", "schedule =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"0 0 0 * * * 2030\""),
        raw("jobs.x.schedule", "schedule =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"every 500ms\""),
        raw("jobs.x.schedule", "schedule =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"0 0 30 2 *\""),
        raw("jobs.x.command", "command =", "[jobs.x]\nkind = \"command\"\ncommand = []"),
        raw("jobs.x.catch-up", "catch-up =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\ncatch-up = true"),
        raw("jobs.x.retries", "retries =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nretries = 11"),
        raw("jobs.x.timeout", "timeout =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\ntimeout = \"forever\""),
        raw("jobs.x.retry-delay", "retry-delay =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nretry-delay = \"0s\""),
        raw("jobs.x.working-dir", "working-dir =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nworking-dir = \"rel\""),
        raw("jobs.x.url", "url =", "[jobs.x]\nkind = \"command\"\ncommand = [\"true\"]\nurl = \"redis://h\""),
        raw("jobs.Bad", "[jobs.Bad]", "[jobs.Bad]\nkind = \"command\"\ncommand = [\"true\"]"),
    ]
}

/// The 1-based number of the first line of `text` starting with `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config:\n{text}"))
        + 1
}

#[test]
fn check_rejects_bad_configs_naming_key_and_line() {
    let dir = harness::tempdir();
    let mut failures = Vec::new();
    let cases = bad_cases();
    assert!(cases.len() >= 15);
    for (i, case) in cases.iter().enumerate() {
        let builder = Daemon::builder(&dir).name(&format!("bad{i}"));
        let builder = match case.change {
            Change::Set(section, key, value) => builder.set(section, key, value),
            Change::Raw(text) => builder.toml(text),
        };
        let text = builder.render();
        let out = builder.check();
        let at = format!(
            "{}:{}:",
            builder.config_path().display(),
            line_of(&text, case.line_of)
        );
        let named = out.stderr.contains(&format!(": {}:", case.key))
            || out.stderr.contains(&format!(": {} ", case.key));
        if out.status != 78 || !named || !out.stderr.contains(&at) {
            failures.push(format!(
                "case {i} (key {}, expected {at}): exit {}\n  stderr: {}",
                case.key,
                out.status,
                out.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_reports_toml_syntax_errors_with_a_position() {
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir).toml("[jobs.x]\nkind = \"command\"\ncommand = [\"true\"");
    let out = builder.check();
    assert_eq!(out.status, 78, "{out:?}");
    let path = builder.config_path().display().to_string();
    let rest = out
        .stderr
        .split(&format!("{path}:"))
        .nth(1)
        .unwrap_or_default();
    let mut parts = rest.splitn(3, ':');
    let (line, col) = (parts.next(), parts.next());
    assert!(
        line.is_some_and(|l| l.parse::<usize>().is_ok())
            && col.is_some_and(|c| c.parse::<usize>().is_ok()),
        "no file:line:col: in {:?}",
        out.stderr
    );
}

#[test]
fn check_prints_each_job_with_three_fire_times() {
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir)
        .toml(&sh_job("ticker", "true", "schedule = \"every 1s\""))
        .toml(&sh_job("weekly", "true", "schedule = \"0 5 * * 0\""))
        .toml(&sh_job("manual", "true", ""));
    let out = builder.check();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("ok, 3 job(s), time zone UTC"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("manual (command): no schedule"),
        "{}",
        out.stdout
    );
    let ticks = fire_times(&out.stdout, "ticker (command): \"every 1s\"");
    assert_eq!(ticks.len(), 3, "{}", out.stdout);
    let now = chrono::Utc::now().naive_utc() - chrono::TimeDelta::seconds(2);
    assert!(ticks[0] > now, "{}", out.stdout);
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::TimeDelta::seconds(1),
            "{}",
            out.stdout
        );
    }
    let weekly = fire_times(&out.stdout, "weekly (command): \"0 5 * * 0\"");
    assert_eq!(weekly.len(), 3, "{}", out.stdout);
    for t in &weekly {
        use chrono::{Datelike, Timelike};
        assert_eq!(
            (t.weekday(), t.hour(), t.minute()),
            (chrono::Weekday::Sun, 5, 0),
            "{t}"
        );
    }
    for pair in weekly.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::TimeDelta::days(7));
    }
}

/// The times listed under `header` in `--check` output (`  2026-11-29 05:00:00 UTC`).
fn fire_times(stdout: &str, header: &str) -> Vec<chrono::NaiveDateTime> {
    stdout
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let l = l.trim();
            chrono::NaiveDateTime::parse_from_str(&l[..19], "%Y-%m-%d %H:%M:%S")
                .unwrap_or_else(|e| panic!("{l:?}: {e}"))
        })
        .collect()
}

#[test]
fn check_shows_local_times_in_the_configured_zone() {
    let dir = harness::tempdir();
    let out = Daemon::builder(&dir)
        .timezone("Europe/Berlin")
        .toml(&sh_job("winter", "true", "schedule = \"30 2 * 1 *\""))
        .toml(&sh_job("summer", "true", "schedule = \"30 2 * 7 *\""))
        .check();
    assert_eq!(out.status, 0, "{out:?}");
    let block = |header: &str| -> Vec<String> {
        out.stdout
            .lines()
            .skip_while(|l| !l.starts_with(header))
            .skip(1)
            .take(3)
            .map(str::to_owned)
            .collect()
    };
    for (job, month, zone) in [("winter", "-01-", "CET"), ("summer", "-07-", "CEST")] {
        let times = block(job);
        assert_eq!(times.len(), 3, "{}", out.stdout);
        for t in times {
            assert!(
                t.contains(month) && t.ends_with(&format!("02:30:00 {zone}")),
                "{job}: {t:?}\n{}",
                out.stdout
            );
        }
    }
}

#[test]
fn world_writable_config_is_refused() {
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir).toml(&sh_job("x", "true", ""));
    let path = builder.write_config();
    harness::set_mode(&path, 0o666);
    let mut check = atpred_launcher(&path);
    check.arg("--check");
    let out = run_with_timeout(&mut check, WAIT);
    assert_eq!(out.status, 78, "{out:?}");
    assert!(
        out.stderr.contains("writable by other users"),
        "{}",
        out.stderr
    );
    let out = run_with_timeout(&mut atpred_launcher(&path), WAIT);
    assert_eq!(out.status, 78, "the daemon itself refuses it too: {out:?}");
    assert!(!Path::new(&dir.path().join("atpred.sock")).exists());
}

#[test]
fn reference_config_passes_check_without_resolving_the_socket_group() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/atpred.toml");
    let text = std::fs::read_to_string(&shipped).expect("read etc/atpred.toml");
    assert!(
        text.contains("socket-group = \"atpred\""),
        "the reference names the socket group"
    );
    let mut cmd = atpred_launcher(&shipped);
    cmd.arg("--check");
    let out = run_with_timeout(&mut cmd, WAIT);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("vacuum (command): \"0 5 * * 0\""),
        "{}",
        out.stdout
    );

    // The same file with a group that exists nowhere still checks: --check resolves no groups.
    let dir = harness::tempdir();
    let copy = dir.path().join("ref.toml");
    let text = text.replace(
        "socket-group = \"atpred\"",
        "socket-group = \"atpred-no-such-group\"",
    );
    harness::write_private(&copy, text.as_bytes());
    let mut cmd = atpred_launcher(&copy);
    cmd.arg("--check");
    let out = run_with_timeout(&mut cmd, WAIT);
    assert_eq!(out.status, 0, "{out:?}");
}

#[test]
fn a_missing_socket_group_stops_the_daemon_at_start_naming_it() {
    let dir = harness::tempdir();
    let failure = match Daemon::builder(&dir)
        .socket_group("atpred-no-such-group")
        .try_spawn()
    {
        Ok(_) => panic!("atpred started with a socket group that does not exist"),
        Err(f) => f,
    };
    assert_eq!(failure.status.and_then(|s| s.code()), Some(78), "{failure}");
    assert!(failure.log.contains("atpred-no-such-group"), "{failure}");
}

#[test]
fn env_override_sets_the_stop_timeout() {
    let dir = harness::tempdir();
    let pids = dir.path().join("pids");
    let mut daemon = Daemon::builder(&dir)
        .stop_timeout("60s")
        .env("ATPRED__DAEMON__STOP_TIMEOUT", "1s")
        .toml(&sh_job(
            "long",
            &format!("echo $$ > {}; exec sleep 100", pids.display()),
            "",
        ))
        .spawn();
    let run_id = start_run(&daemon, "long");
    let pgid = wait_for_pids(&pids)[0];
    let started = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .expect("atpred exits");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the 1s from the environment applied, not the file's 60s: took {:?}",
        started.elapsed()
    );
    assert_group_gone(pgid);
    let history = std::fs::read_to_string(dir.path().join("state/history.jsonl")).expect("history");
    let record = history
        .lines()
        .find(|l| l.contains(&run_id))
        .expect("the run is recorded");
    assert!(record.contains("\"outcome\":\"cancelled\""), "{record}");
}

#[test]
fn env_override_errors_name_the_variable() {
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir).toml(&sh_job("x", "true", ""));
    let path = builder.write_config();
    for (var, value, key) in [
        (
            "ATPRED__DAEMON__MAX_CONCURRENT_JOBS",
            "two",
            "daemon.max-concurrent-jobs",
        ),
        (
            "ATPRED__DAEMON__STOP_TIMEOUT",
            "bogus",
            "daemon.stop-timeout",
        ),
        (
            "ATPRED__DAEMON__TIMEZONE",
            "Mars/Olympus",
            "daemon.timezone",
        ),
    ] {
        let mut cmd: Command = atpred_launcher(&path);
        cmd.arg("--check").env(var, value);
        let out = run_with_timeout(&mut cmd, WAIT);
        assert_eq!(out.status, 78, "{var}={value}: {out:?}");
        assert!(
            out.stderr.contains(key) && out.stderr.contains(var),
            "{var}={value}: the error must name the key and the variable: {}",
            out.stderr.trim()
        );
    }
    let mut cmd = atpred_launcher(&path);
    cmd.arg("--check")
        .env("ATPRED__DAEMON__TIMEZONE", "Europe/Berlin");
    let out = run_with_timeout(&mut cmd, WAIT);
    assert!(out.stdout.contains("time zone Europe/Berlin"), "{out:?}");
}
