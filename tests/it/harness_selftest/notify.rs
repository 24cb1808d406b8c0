//! Self-tests of [`NotifySocket`]: datagrams from the test itself are collected, waited for and
//! counted, and a wait that times out says what did arrive.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::{self, NotifySocket, line};

#[test]
fn notify_socket_collects_every_datagram() {
    let dir = harness::tempdir();
    let notify = NotifySocket::bind(dir.path());
    let path = notify.path().to_path_buf();
    let sender = std::thread::spawn(move || {
        let socket = UnixDatagram::unbound().expect("unbound datagram socket");
        for message in [
            "STATUS=starting",
            "READY=1\nSTATUS=up\nMAINPID=42",
            "STATUS=third",
        ] {
            socket
                .send_to(message.as_bytes(), &path)
                .expect("send a notify datagram");
        }
    });
    let ready = notify
        .wait_for(line("READY=1"), Duration::from_secs(5))
        .expect("READY=1 arrives");
    assert_eq!(
        ready, "READY=1\nSTATUS=up\nMAINPID=42",
        "the whole datagram is one message"
    );
    notify
        .wait_for(line("STATUS=third"), Duration::from_secs(5))
        .expect("the last message arrives");
    sender.join().expect("sender thread");
    assert_eq!(
        notify.count(|m| m.lines().any(|l| l.starts_with("STATUS="))),
        3
    );
    assert_eq!(
        notify.count(line("READY")),
        0,
        "line() matches whole lines only"
    );
    assert_eq!(
        notify.messages()[0],
        "STATUS=starting",
        "messages keep arrival order"
    );
}

#[test]
fn notify_wait_times_out_with_what_it_saw() {
    let dir = harness::tempdir();
    let notify = NotifySocket::bind(dir.path());
    let socket = UnixDatagram::unbound().expect("unbound datagram socket");
    socket
        .send_to(b"READY=1", notify.path())
        .expect("send a notify datagram");
    notify
        .wait_for(line("READY=1"), Duration::from_secs(5))
        .expect("READY=1 arrives");
    let since = notify.len();
    let started = Instant::now();
    let err = notify
        .wait_for_since(since, line("READY=1"), Duration::from_millis(200))
        .expect_err("no READY=1 after the mark");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited the whole timeout"
    );
    assert!(
        err.contains("READY=1"),
        "the error lists what arrived: {err}"
    );
    let path = notify.path().to_path_buf();
    drop(notify); // must not hang on the collector thread
    assert!(!path.exists(), "dropping removes the socket file");
}

#[test]
fn notify_sync_means_everything_sent_is_recorded() {
    let dir = harness::tempdir();
    let notify = NotifySocket::bind(dir.path());
    let socket = UnixDatagram::unbound().expect("unbound datagram socket");
    for i in 0..200 {
        let message = format!("STATUS=message {i}");
        socket
            .send_to(message.as_bytes(), notify.path())
            .expect("send");
    }
    notify.sync();
    assert_eq!(
        notify.len(),
        200,
        "all sent before sync() are recorded, markers are not"
    );
    notify.sync();
    assert_eq!(
        notify.messages().last().map(String::as_str),
        Some("STATUS=message 199")
    );
}
