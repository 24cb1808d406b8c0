//! Self-tests of [`RedisServer`]: PING over raw RESP, password enforcement, URLs the redis crate
//! accepts, and cleanup on drop.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{RedisServer, Resp, RespConnection, process_alive};

#[test]
fn redis_starts_and_answers_ping() {
    let redis = RedisServer::start();
    assert_eq!(redis.cmd(&["PING"]), Resp::Simple("PONG".into()));
    assert_eq!(redis.cmd(&["SET", "k", "v w"]), Resp::Simple("OK".into()));
    assert_eq!(redis.cmd(&["GET", "k"]).as_text().as_deref(), Some("v w"));
    assert_eq!(redis.cmd(&["GET", "missing"]), Resp::Bulk(None));
    let mode = std::fs::metadata(redis.socket_path())
        .expect("socket metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "--unixsocketperm 700");
    let save = redis.cmd(&["CONFIG", "GET", "save"]);
    assert_eq!(
        save,
        Resp::Array(Some(vec![
            Resp::Bulk(Some(b"save".to_vec())),
            Resp::Bulk(Some(Vec::new()))
        ]))
    );
}

#[test]
fn redis_with_password_requires_auth() {
    let password = "p@ss+w:rd/?&=";
    let redis = RedisServer::start_with_password(password);
    let mut raw = RespConnection::connect(&redis.socket_path()).expect("connect");
    match raw.call(&["PING"]).expect("PING reply") {
        Resp::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("PING without AUTH answered {other:?}"),
    }
    match raw.call(&["AUTH", "wrong"]).expect("AUTH reply") {
        Resp::Error(e) => assert!(e.starts_with("WRONGPASS"), "{e}"),
        other => panic!("AUTH with a wrong password answered {other:?}"),
    }
    assert_eq!(
        raw.call(&["AUTH", password]).expect("AUTH reply"),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        redis.cmd(&["PING"]),
        Resp::Simple("PONG".into()),
        "cmd() authenticates itself"
    );
}

/// What the daemon will do with these URLs: the redis crate 1.x, synchronous API.
fn crate_ping(url: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection()?;
    redis::cmd("PING").query(&mut conn)
}

#[test]
fn redis_urls_work_with_the_redis_crate() {
    let open = RedisServer::start();
    assert!(open.url().starts_with("redis+unix:///"), "{}", open.url());
    assert_eq!(crate_ping(&open.url()).expect("PING via url()"), "PONG");
    let plain_unix = open.url().replacen("redis+unix:", "unix:", 1);
    assert_eq!(crate_ping(&plain_unix).expect("PING via unix://"), "PONG");

    let password = "p@ss+w:rd/?&=";
    let locked = RedisServer::start_with_password(password);
    let err = crate_ping(&locked.url()).expect_err("no password in url()");
    assert!(
        err.to_string().contains("NOAUTH") || err.to_string().contains("Authentication"),
        "{err}"
    );
    assert_eq!(
        crate_ping(&locked.url_with_password()).expect("PING with ?pass="),
        "PONG"
    );
    // For unix URLs the crate takes the password only from ?pass=, decoded as a form field
    // (a raw `+` is a space), and refuses a `:password@` userinfo outright.
    let (_, encoded) = locked
        .url_with_password()
        .split_once("?pass=")
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("?pass=");
    let raw_plus = format!("{}?pass={}", locked.url(), encoded.replace("%2B", "+"));
    assert!(
        crate_ping(&raw_plus).is_err(),
        "an unencoded + logged in: {raw_plus}"
    );
    let userinfo = locked
        .url()
        .replacen("redis+unix://", &format!("redis+unix://:{encoded}@"), 1);
    let err = crate_ping(&userinfo).expect_err("userinfo form is refused");
    assert_eq!(err.kind(), redis::ErrorKind::InvalidClientConfig, "{err}");
}

#[test]
fn dropping_redis_stops_it() {
    let mut redis = RedisServer::start();
    redis.restart();
    assert_eq!(
        redis.cmd(&["PING"]),
        Resp::Simple("PONG".into()),
        "restart serves again"
    );
    let pid = redis.pid();
    let socket = redis.socket_path();
    drop(redis);
    assert!(!process_alive(pid), "redis-server {pid} is gone");
    assert!(!socket.exists(), "its directory is removed");
}
