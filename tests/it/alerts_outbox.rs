//! The notification outbox: with the channel's receiver down, runs end as fast and as they
//! would anyway; the messages wait in state-dir/outbox, survive a SIGKILL and a restart, and
//! arrive in order once the receiver is back on its port; the outbox is empty after and the
//! metrics count what happened.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::alerts_support::{HttpServer, closed_port, events, sample, webhook};
use crate::core_support::sh_job;
use crate::harness::{Daemon, tempdir, wait_until};

fn outbox_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("state/outbox"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_channel_that_is_down_delays_messages_and_loses_none_across_a_kill() {
    let dir = tempdir();
    let port = closed_port();
    let mut daemon = Daemon::builder(dir.path())
        .toml(&webhook("hook", port, "OUTBOXKEY"))
        .toml(&sh_job(
            "bad",
            "echo broken pipe >&2; exit 3",
            "notify = [\"hook\"]",
        ))
        .toml(&sh_job(
            "ok",
            "true",
            "notify = [\"hook\"]\nnotify-on = [\"success\"]",
        ))
        .spawn();

    let t0 = Instant::now();
    let bad = daemon.ctl(["run", "bad", "--wait"]);
    assert_eq!(bad.status, 1, "{bad:?}");
    assert!(bad.stdout.contains("failed"), "{bad:?}");
    assert_eq!(daemon.ctl(["run", "ok", "--wait"]).status, 0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "runs are not held up by a channel that is down: {:?}",
        t0.elapsed()
    );
    // Both wait on disk while the channel is down, and the attempts are logged.
    assert!(
        wait_until(Duration::from_secs(10), || outbox_files(dir.path()).len()
            == 2
            && daemon.log().contains("notification not sent yet")),
        "{:?}\n{}",
        outbox_files(dir.path()),
        daemon.log()
    );
    let metrics = daemon.ctl(["metrics"]).stdout;
    assert!(
        sample(
            &metrics,
            "atpred_notifications_total",
            "channel=\"hook\",outcome=\"retried\""
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // A crash: nothing is lost.
    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(outbox_files(dir.path()).len(), 2);
    daemon.restart();
    assert!(
        daemon
            .log()
            .contains("2 undelivered message(s) from before the restart"),
        "{}",
        daemon.log()
    );

    let http = HttpServer::start_on(dir.path(), port);
    let mut got = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            got = events(&http, "OUTBOXKEY");
            got.len() >= 2
        }),
        "{got:?}\n{}",
        daemon.log()
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["kind"], "failure", "in order: {got:?}");
    assert_eq!(got[0]["job"], "bad");
    assert_eq!(got[0]["failures"], 1);
    assert!(
        got[0]["message"].as_str().unwrap().contains("broken pipe")
            || got[0]["message"].as_str().unwrap().contains("exit"),
        "{}",
        got[0]["message"]
    );
    assert_eq!(got[1]["kind"], "success");
    assert_eq!(got[1]["job"], "ok");
    assert!(
        wait_until(Duration::from_secs(5), || outbox_files(dir.path())
            .is_empty()),
        "{:?}",
        outbox_files(dir.path())
    );
    let metrics = daemon.ctl(["metrics"]).stdout;
    assert_eq!(
        sample(
            &metrics,
            "atpred_notifications_total",
            "channel=\"hook\",outcome=\"sent\""
        ),
        Some(2.0),
        "{metrics}"
    );

    // A clean restart with the receiver up sends nothing again.
    daemon.restart();
    assert_eq!(daemon.ctl(["run", "ok", "--wait"]).status, 0);
    assert!(wait_until(Duration::from_secs(10), || events(
        &http,
        "OUTBOXKEY"
    )
    .len()
        == 3));
    assert!(!daemon.log().contains("OUTBOXKEY"));
}
