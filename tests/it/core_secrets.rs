//! Secrets through the real daemon: a Redis URL with a password and a PostgreSQL passfile never
//! show up in the daemon's log (at debug level), in any `atprectl` reply, in config or reload
//! errors, in notify messages, nor in a job's argv or environment. The job's environment is
//! scrubbed of systemd's variables and carries ATPRED_JOB and ATPRED_RUN_ID.

use std::path::Path;
use std::time::Duration;

use crate::core_support::{ctl_json, sh_job, start_run, wait_for_pids, wait_for_run};
use crate::harness::{self, Daemon, DaemonBuilder, toml_path, toml_str};

const REDIS_PW: &str = "S3cretPw";
const PG_PW: &str = "PgPassw0rdQx7";

fn with_secrets(dir: &Path, builder: DaemonBuilder, redis_url: &str) -> DaemonBuilder {
    let passfile = dir.join("pgpass");
    harness::write_private(&passfile, format!("*:*:*:atp_user:{PG_PW}\n").as_bytes());
    builder
        .set("daemon", "log-level", toml_str("debug"))
        .set("postgres", "passfile", toml_path(&passfile))
        .set("redis", "url", toml_str(redis_url))
}

fn assert_clean(what: &str, text: &str) {
    for secret in [REDIS_PW, PG_PW] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

/// NUL-separated `/proc/PID/<file>` entries.
fn proc_entries(pid: nix::unistd::Pid, file: &str) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"));
    bytes
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

#[test]
fn secrets_stay_out_of_logs_replies_and_children() {
    let dir = harness::tempdir();
    let pids = dir.path().join("pids");
    let url = format!("redis://:{REDIS_PW}@127.0.0.1:6379/0");
    let builder = Daemon::builder(&dir)
        .toml(&sh_job(
            "peek",
            &format!("echo $$ > {}; exec sleep 30", pids.display()),
            "",
        ))
        // What systemd would hand the daemon; none of it may reach a job.
        .env("WATCHDOG_USEC", "60000000")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "0")
        .env("LISTEN_FDNAMES", "none");
    let daemon = with_secrets(dir.path(), builder, &url).spawn();

    let run_id = start_run(&daemon, "peek");
    let pid = wait_for_pids(&pids)[0];
    // The shell wrote its pid just before `exec sleep`; /proc shows the old or an empty
    // command line until the exec is done.
    harness::wait_until(Duration::from_secs(10), || {
        proc_entries(pid, "cmdline") == ["sleep", "30"]
    });
    let cmdline = proc_entries(pid, "cmdline");
    assert_eq!(cmdline, ["sleep", "30"], "the job runs as configured");
    let environ = proc_entries(pid, "environ");
    assert_clean("the job's environment", &environ.join("\n"));
    for entry in &environ {
        let key = entry.split('=').next().unwrap_or_default();
        assert!(
            !(key == "NOTIFY_SOCKET" || key.starts_with("WATCHDOG_") || key.starts_with("LISTEN_")),
            "the job inherited {entry}: {environ:?}"
        );
    }
    assert!(
        environ.contains(&"ATPRED_JOB=peek".to_owned()),
        "{environ:?}"
    );
    assert!(
        environ.contains(&format!("ATPRED_RUN_ID={run_id}")),
        "{environ:?}"
    );

    for args in [["status"], ["jobs"]] {
        assert_clean("atprectl --json", &ctl_json(&daemon, &args).to_string());
        assert_clean("atprectl", &daemon.ctl(args).stdout);
    }
    assert_eq!(daemon.ctl(["cancel", "peek"]).status, 0);
    wait_for_run(&daemon, "peek", &run_id);
    assert_clean("history", &ctl_json(&daemon, &["history"]).to_string());

    // A reload that fails on the URL must not quote it either.
    let bad = with_secrets(
        dir.path(),
        Daemon::builder(&dir).toml(&sh_job("peek", "true", "")),
        &format!("http://:{REDIS_PW}@127.0.0.1:6379/0"),
    );
    bad.write_config();
    let out = daemon.ctl(["reload"]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("redis.url"), "{out:?}");
    assert_clean("the reload error", &out.stderr);
    assert_clean(
        "status after the reload",
        &ctl_json(&daemon, &["status"]).to_string(),
    );
    daemon.notify().sync();
    assert_clean("notify messages", &daemon.notify().messages().join("\n"));
    let log = daemon.log();
    assert!(
        log.contains("DEBUG") || log.contains("reload refused"),
        "the log is written"
    );
    assert_clean("the daemon log", &log);
}

#[test]
fn config_errors_do_not_quote_secrets() {
    let dir = harness::tempdir();
    let builder = with_secrets(
        dir.path(),
        Daemon::builder(&dir),
        &format!("http://admin:{REDIS_PW}@127.0.0.1:6379/0"),
    );
    let out = builder.check();
    assert_eq!(out.status, 78, "{out:?}");
    assert!(out.stderr.contains("redis.url"), "{out:?}");
    assert_clean(
        "the --check error",
        &format!("{}{}", out.stdout, out.stderr),
    );
    let good = with_secrets(
        dir.path(),
        Daemon::builder(&dir)
            .name("good")
            .toml(&sh_job("x", "true", "")),
        &format!("redis://:{REDIS_PW}@127.0.0.1:6379/0"),
    );
    let out = good.check();
    assert_eq!(out.status, 0, "{out:?}");
    assert_clean("the --check output", &out.stdout);
}
