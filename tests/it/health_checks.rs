//! Health checks against the real stack: all ok when it is healthy; a stopped Redis fails its
//! check (one transition logged, on-change and the webhook called once, `atprectl health`
//! exits 1); a frozen PostgreSQL and a frozen Redis fail at their timeout while the other checks
//! still answer; a role near its connection limit warns.

use nix::sys::signal::{Signal, kill};

use crate::fault_support::{self, Row};
use crate::harness::{self, Daemon};
use crate::health_support::{Stack, health_now, statuses, transitions};

fn all(status: &str, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), status.to_owned()))
        .collect()
}

/// The summary row of a fault scenario that passed its assertions: one fault, the daemon still
/// answering (crashes counts a daemon that no longer does).
fn record(scenario: &str, daemon: &Daemon, notes: &str) {
    fault_support::record(&Row {
        scenario,
        seed: None,
        runs: 1,
        faults: 1,
        losses: 0,
        crashes: usize::from(daemon.ctl(["status"]).status != 0),
        notes: notes.to_owned(),
    });
}

/// Waits for a STATUS= message to systemd that contains `text`.
fn status_says(daemon: &Daemon, text: &str) {
    daemon
        .notify()
        .wait_for(
            |m| {
                m.lines()
                    .any(|l| l.starts_with("STATUS=") && l.contains(text))
            },
            std::time::Duration::from_secs(10),
        )
        .unwrap();
}

#[test]
fn a_healthy_stack_is_all_ok() {
    let stack = Stack::new();
    let daemon = stack.daemon("").spawn();
    let (code, checks) = health_now(&daemon);
    assert_eq!(
        statuses(&checks),
        all(
            "ok",
            &[
                "backup-freshness",
                "disk",
                "http",
                "jobs",
                "postgres",
                "redis"
            ]
        ),
        "{checks:#?}\n{}",
        daemon.log()
    );
    assert_eq!(code, 0);
    assert!(
        checks["postgres"]["message"]
            .as_str()
            .unwrap()
            .contains("role atp_user uses 1/20"),
        "{checks:#?}"
    );
    // The human table names every check; nothing alerted on a first "ok".
    let table = daemon.ctl(["health"]);
    assert_eq!(table.status, 0, "{table:?}");
    for name in [
        "postgres",
        "redis",
        "http",
        "disk",
        "backup-freshness",
        "jobs",
    ] {
        assert!(table.stdout.contains(name), "{}", table.stdout);
    }
    // Anything raised would be in the outbox before the run's reply, delivered soon after.
    crate::alerts_support::outbox_drained(stack.dir());
    assert!(stack.on_change_calls().is_empty());
    assert!(stack.http.posts().is_empty());
    status_says(&daemon, "health ok (6 checks)");
}

#[test]
fn a_stopped_redis_fails_once_alerts_once_and_fails_the_health_command() {
    let mut stack = Stack::new();
    let daemon = stack.daemon("checks = [\"redis\", \"http\"]").spawn();
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 0, "{checks:#?}");
    stack.redis.stop();
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 1, "{checks:#?}");
    assert_eq!(
        statuses(&checks),
        [
            ("http".into(), "ok".into()),
            ("redis".into(), "fail".into())
        ]
    );
    // Steady state: a second failing run is not a transition.
    let (code, _) = health_now(&daemon);
    assert_eq!(code, 1);
    let log = daemon.log();
    assert_eq!(transitions(&log, "redis", "ok", "fail"), 1, "{log}");
    assert_eq!(
        log.matches("check=\"redis\"").count(),
        2,
        "first ok, then fail: {log}"
    );
    // The aliases are channels now: delivered through the outbox, after the run.
    crate::alerts_support::outbox_drained(stack.dir());
    let calls = stack.on_change_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    for expected in [
        "ATPRED_CHECK=redis",
        "ATPRED_JOB=health",
        "ATPRED_PREVIOUS=ok",
        "ATPRED_STATUS=fail",
    ] {
        assert!(call.iter().any(|l| l == expected), "{expected} in {call:?}");
    }
    let message = call
        .iter()
        .find_map(|l| l.strip_prefix("ATPRED_MESSAGE="))
        .unwrap();
    assert!(message.contains("cannot connect"), "{message}");
    assert!(!call.iter().any(|l| l.contains("r3dis-Secret-pw")));
    let posts = stack.http.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        (
            &posts[0]["check"],
            &posts[0]["status"],
            &posts[0]["previous"]
        ),
        (&"redis".into(), &"fail".into(), &"ok".into())
    );
    status_says(&daemon, "health: redis fail");
    // The table says it too, and exits 1 for scripts.
    let table = daemon.ctl(["health"]);
    assert_eq!(table.status, 1);
    assert!(table.stdout.contains("FAIL"), "{}", table.stdout);
    // Back: one transition to ok, one more alert.
    stack.redis.restart();
    let (code, _) = health_now(&daemon);
    assert_eq!(code, 0);
    assert_eq!(transitions(&daemon.log(), "redis", "fail", "ok"), 1);
    // Delivered after the run, as the first one was.
    crate::alerts_support::outbox_drained(stack.dir());
    assert_eq!(stack.on_change_calls().len(), 2);
    assert!(!daemon.log().contains("r3dis-Secret-pw"));
    record(
        "Redis down (health)",
        &daemon,
        "redis check failed, one alert each way, http still ok (health_checks)",
    );
}

/// Two hung dependencies with a 3 s check timeout and a 5 s job timeout: run one after the
/// other they would need 6 s and the run would time out with no result; run concurrently both
/// fail at their own timeout and the http check answers.
#[test]
fn frozen_servers_fail_at_their_timeout_without_holding_up_the_others() {
    let stack = Stack::new();
    let daemon = stack
        .daemon("checks = [\"postgres\", \"redis\", \"http\"]\ncheck-timeout = \"3s\"\ntimeout = \"5s\"")
        .spawn();
    let (code, _) = health_now(&daemon);
    assert_eq!(code, 0, "{}", daemon.log());
    let (pg, redis) = (stack.fx.pg.pid(), stack.redis.pid());
    kill(pg, Signal::SIGSTOP).unwrap();
    kill(redis, Signal::SIGSTOP).unwrap();
    let (code, checks) = health_now(&daemon);
    kill(pg, Signal::SIGCONT).unwrap();
    kill(redis, Signal::SIGCONT).unwrap();
    assert_eq!(code, 1);
    assert_eq!(
        statuses(&checks),
        [
            ("http".into(), "ok".into()),
            ("postgres".into(), "fail".into()),
            ("redis".into(), "fail".into())
        ],
        "{checks:#?}\n{}",
        daemon.log()
    );
    for name in ["postgres", "redis"] {
        assert_eq!(
            checks[name]["message"], "no answer within 3s",
            "{checks:#?}"
        );
    }
    let last = daemon.ctl(["--json", "history", "health", "-n", "1"]);
    assert!(
        last.stdout.contains("\"outcome\":\"failed\""),
        "{}",
        last.stdout
    );
    // Thawed, both recover.
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 0, "{checks:#?}");
    record(
        "PostgreSQL and Redis frozen (SIGSTOP) (health)",
        &daemon,
        "both failed at the 3 s check-timeout, http still ok, both recovered (health_checks)",
    );
}

#[test]
fn a_paused_redis_fails_its_check_at_the_timeout_and_recovers() {
    let stack = Stack::new();
    let daemon = stack
        .daemon("checks = [\"postgres\", \"redis\"]\ncheck-timeout = \"2s\"")
        .spawn();
    let (code, _) = health_now(&daemon);
    assert_eq!(code, 0, "{}", daemon.log());
    // CLIENT PAUSE ALL: Redis accepts connections and reads commands but answers none.
    let paused = std::time::Instant::now();
    stack
        .redis
        .try_cmd(&["CLIENT", "PAUSE", "6000", "ALL"])
        .unwrap();
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 1, "{checks:#?}");
    assert_eq!(
        statuses(&checks),
        [
            ("postgres".into(), "ok".into()),
            ("redis".into(), "fail".into())
        ],
        "{checks:#?}"
    );
    assert_eq!(
        checks["redis"]["message"], "no answer within 2s",
        "{checks:#?}"
    );
    // Once the pause has run out, the next probe answers.
    std::thread::sleep(std::time::Duration::from_secs(6).saturating_sub(paused.elapsed()));
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 0, "{checks:#?}");
    record(
        "Redis paused (CLIENT PAUSE ALL) (health)",
        &daemon,
        "redis failed at the 2 s check-timeout, postgres still ok, recovered after the pause (health_checks)",
    );
}

#[test]
fn a_role_near_its_connection_limit_warns() {
    let stack = Stack::new();
    let daemon = stack.daemon("checks = [\"postgres\"]").spawn();
    // 16 sessions of atp_user, plus the check's own: 17 of 20, over 80 %.
    let mut sessions: Vec<_> = (0..16).map(|_| stack.idle_session()).collect();
    let count = || {
        stack.fx.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'atp_user'",
        )
    };
    assert!(
        harness::wait_until(std::time::Duration::from_secs(30), || count() == "16"),
        "sessions: {}",
        count()
    );
    let (code, checks) = health_now(&daemon);
    for s in &mut sessions {
        crate::harness::process::kill_and_reap(s);
    }
    assert_eq!(code, 0, "a warning is not a failure");
    let pg = &checks["postgres"];
    assert_eq!(pg["status"], "warn", "{pg}");
    let message = pg["message"].as_str().unwrap();
    assert!(
        message.contains("role atp_user uses 17/20")
            && message.contains("over 80% of the role's connection limit"),
        "{message}"
    );
}

#[test]
fn an_http_server_that_never_answers_fails_at_the_timeout() {
    let stack = Stack::new();
    // Connections complete in the kernel's backlog; nobody ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", silent.local_addr().unwrap());
    let daemon = stack
        .daemon(&format!(
            "checks = [\"http\", \"redis\"]\ncheck-timeout = \"2s\"\nhttp-url = {}",
            crate::harness::toml_str(&url)
        ))
        .spawn();
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 1);
    assert_eq!(
        statuses(&checks),
        [
            ("http".into(), "fail".into()),
            ("redis".into(), "ok".into())
        ]
    );
    assert_eq!(checks["http"]["message"], "no answer within 2s");
    drop(silent);
    record(
        "HTTP target hanging (health)",
        &daemon,
        "http failed at the 2 s check-timeout, redis still ok (health_checks)",
    );
}

/// With the only slot held by a long job, health checks still run: they take no slot.
#[test]
fn health_runs_while_long_jobs_hold_every_slot() {
    let stack = Stack::new();
    let daemon = stack
        .daemon("checks = [\"redis\"]")
        .max_concurrent_jobs(1)
        .command_job("long", &["sleep", "120"])
        .spawn();
    let started = daemon.ctl(["run", "long"]);
    assert_eq!(started.status, 0, "{started:?}");
    let (code, checks) = health_now(&daemon);
    assert_eq!((code, &checks["redis"]["status"]), (0, &"ok".into()));
    let jobs = daemon.ctl(["--json", "status"]).stdout;
    assert!(jobs.contains("\"job\":\"long\""), "still running: {jobs}");
    assert_eq!(daemon.ctl(["cancel", "long"]).status, 0);
}

#[test]
fn redis_near_its_maxmemory_warns() {
    let stack = Stack::new();
    let daemon = stack.daemon("checks = [\"redis\"]").spawn();
    let (code, checks) = health_now(&daemon);
    assert_eq!((code, &checks["redis"]["status"]), (0, &"ok".into()));
    let info = stack.redis.cmd(&["INFO", "memory"]).as_text().unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("used_memory:"))
        .unwrap()
        .parse()
        .unwrap();
    // A limit just above what is in use: over 80 % of it, and nothing is evicted.
    let limit = (used + used / 10).to_string();
    stack.redis.cmd(&["CONFIG", "SET", "maxmemory", &limit]);
    let (code, checks) = health_now(&daemon);
    let redis = &checks["redis"];
    assert_eq!((code, &redis["status"]), (0, &"warn".into()), "{redis}");
    assert!(
        redis["message"]
            .as_str()
            .unwrap()
            .contains("% of maxmemory"),
        "{redis}"
    );
}

/// An on-change command that hangs and a webhook nobody answers are cut off at check-timeout,
/// logged, and change nothing else: the check's result stands and the daemon goes on.
#[test]
fn hanging_alerts_are_cut_off_and_only_logged() {
    let mut stack = Stack::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/hook", silent.local_addr().unwrap());
    let daemon = stack
        .daemon(&format!(
            "checks = [\"redis\"]\ncheck-timeout = \"2s\"\non-change = [\"sleep\", \"600\"]\nwebhook = {}",
            crate::harness::toml_str(&hook)
        ))
        .spawn();
    stack.redis.stop();
    let (code, checks) = health_now(&daemon);
    assert_eq!((code, &checks["redis"]["status"]), (1, &"fail".into()));
    // Delivered through the outbox, after the run: each attempt ends at check-timeout.
    let cut_off = harness::wait_until(std::time::Duration::from_secs(10), || {
        let log = daemon.log();
        log.contains("on-change command sleep did not end within 2s; killed")
            && log.contains("webhook http://127.0.0.1:")
    });
    let log = daemon.log();
    assert!(cut_off, "{log}");
    let webhook_line = log
        .lines()
        .find(|l| l.contains("webhook http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no webhook failure logged:\n{log}"));
    assert!(
        !webhook_line.contains("/hook"),
        "only scheme and host: {webhook_line}"
    );
    // The sleep's process group is gone and the daemon still answers.
    let sleeping = || {
        crate::harness::process::descendants(daemon.pid())
            .into_iter()
            .filter(|p| p.comm == "sleep" && p.state != 'Z')
            .collect::<Vec<_>>()
    };
    // SIGKILL was sent to its group; the kernel ends it at once, a zombie is dead enough.
    assert!(
        harness::wait_until(std::time::Duration::from_secs(5), || sleeping().is_empty()),
        "the on-change command was left running: {:?}",
        sleeping()
    );
    assert_eq!(daemon.ctl(["status"]).status, 0);
    drop(silent);
}
