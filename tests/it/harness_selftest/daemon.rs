//! Self-tests of [`Daemon`] and [`DaemonBuilder`], against a stand-in for `atpred`: this test
//! binary re-executed to run only [`fake_atpred`], which keeps the daemon's outward contract in
//! miniature. The real binaries are only run in ways that hold for the stub and the real thing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGTERM};

use crate::harness::{
    self, Daemon, PgServer, RedisServer, line, proc_children, process_alive, process_group_members,
};

const FAKE_TEST: &str = "harness_selftest::daemon::fake_atpred";

/// Runs [`fake_atpred`] with the config path in `FAKE_ATPRED_CONFIG`.
fn fake_launcher(config: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("path of the test binary"));
    cmd.args([
        "--exact",
        FAKE_TEST,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FAKE_ATPRED_CONFIG", config);
    cmd
}

/// The stand-in daemon: binds `[daemon] socket` and echoes lines on it, sends READY=1, answers
/// SIGHUP with RELOADING=1 then READY=1, and SIGTERM with STOPPING=1, removing the socket and
/// exiting 0. With `[fake] child = true` it first starts `sleep 300` in its own process group and
/// writes that pid to `<config>.child-pid`. Does nothing when run as an ordinary test.
#[test]
#[ignore = "not a test: the stand-in daemon process the daemon self-tests start"]
fn fake_atpred() {
    let Some(config_path) = std::env::var_os("FAKE_ATPRED_CONFIG").map(PathBuf::from) else {
        return;
    };
    let text = std::fs::read_to_string(&config_path).expect("read the config");
    let config: toml::Table = toml::from_str(&text).expect("the config is TOML");
    let socket = PathBuf::from(config["daemon"]["socket"].as_str().expect("daemon.socket"));
    let wants_child = config
        .get("fake")
        .and_then(|f| f.get("child"))
        .and_then(|c| c.as_bool());
    if wants_child == Some(true) {
        #[allow(
            clippy::zombie_processes,
            reason = "left running on purpose: the Drop test checks the harness kills it"
        )]
        let child = Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        std::fs::write(
            config_path.with_extension("child-pid"),
            child.id().to_string(),
        )
        .expect("write child pid");
    }
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGHUP]).expect("register signals");
    let listener = UnixListener::bind(&socket).expect("bind the control socket");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone stream");
                for request in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(writer, "echo: {request}");
                }
            });
        }
    });
    let notify = |message: &str| {
        let target = std::env::var_os("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is set");
        let socket = UnixDatagram::unbound().expect("datagram socket");
        socket
            .send_to(message.as_bytes(), target)
            .expect("send notify");
    };
    // Logged before READY=1: the test reads the log as soon as it sees READY=1.
    eprintln!("fake atpred: ready");
    notify(&format!("READY=1\nMAINPID={}", std::process::id()));
    for signal in signals.forever() {
        if signal == SIGHUP {
            eprintln!("fake atpred: reloading");
            notify("RELOADING=1");
            notify("READY=1");
        } else {
            eprintln!("fake atpred: stopping");
            notify("STOPPING=1");
            let _ = std::fs::remove_file(&socket);
            std::process::exit(0);
        }
    }
}

#[test]
fn daemon_spawn_waits_for_ready_and_follows_signals() {
    let dir = harness::tempdir();
    let mut daemon = Daemon::builder(&dir).launcher(fake_launcher).spawn();
    let first = daemon.pid();
    assert!(process_alive(first));
    assert!(
        daemon.log().contains("fake atpred: ready"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.notify().count(line("READY=1")), 1);

    let mut stream = daemon.raw_connect();
    stream.write_all(b"hello\n").expect("write a request");
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .expect("read the reply");
    assert_eq!(reply, "echo: hello\n");

    let mark = daemon.notify().len();
    daemon.signal(Signal::SIGHUP);
    daemon
        .notify()
        .wait_for_since(mark, line("READY=1"), Duration::from_secs(10))
        .expect("READY=1 after reload");
    assert_eq!(daemon.notify().messages()[mark], "RELOADING=1");

    daemon.restart();
    assert_ne!(daemon.pid(), first, "a restart is a new process");
    assert!(!process_alive(first), "the old process exited");
    assert!(
        daemon.log().contains("harness: restarting"),
        "the log marks restarts"
    );
    assert_eq!(daemon.notify().count(line("READY=1")), 3);

    daemon.signal(Signal::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!daemon.is_running());
    assert!(!daemon.socket().exists(), "the stand-in removed its socket");
    // Exact without waiting: wait_exit has synced the notify socket.
    assert_eq!(daemon.notify().count(line("STOPPING=1")), 2);
}

#[test]
fn daemon_early_exit_is_reported_with_its_log() {
    let dir = harness::tempdir();
    let failing = |_: &Path| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'config error at line 3' >&2; exit 78"]);
        cmd
    };
    let started = std::time::Instant::now();
    let failure = match Daemon::builder(&dir).launcher(failing).try_spawn() {
        Ok(_) => panic!("a daemon that exits at once is not ready"),
        Err(failure) => failure,
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "reported at once, not after the timeout"
    );
    assert_eq!(failure.status.and_then(|s| s.code()), Some(78));
    let text = failure.to_string();
    assert!(
        text.contains("exited before READY=1") && text.contains("config error at line 3"),
        "{text}"
    );
}

#[test]
fn dropping_a_daemon_kills_it_and_what_it_left() {
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .launcher(fake_launcher)
        .toml("[fake]\nchild = true")
        .spawn();
    let config = daemon.config_path().to_path_buf();
    let pid_text =
        std::fs::read_to_string(config.with_extension("child-pid")).expect("child pid file");
    let child = Pid::from_raw(pid_text.trim().parse().expect("a pid"));
    assert!(
        proc_children(daemon.pid())
            .iter()
            .any(|p| p.pid == child && p.comm == "sleep")
    );
    let group = process_group_members(child);
    assert_eq!(
        group.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![child],
        "its own process group"
    );
    let parent = daemon.pid();
    drop(daemon);
    assert!(!process_alive(parent), "the daemon is killed");
    assert!(
        harness::wait_until(Duration::from_secs(5), || !process_alive(child)),
        "and its leftover child"
    );
}

#[test]
fn daemon_builder_writes_the_contract_config() {
    let dir = harness::tempdir();
    let pg = PgServer::start();
    let redis = RedisServer::start_with_password("s3cret");
    let builder = Daemon::builder(&dir)
        .stop_timeout("2s")
        .max_concurrent_jobs(3)
        .postgres(&pg, "atpre", "pw", "app")
        .redis(&redis)
        .command_job("hello", &["sh", "-c", "echo \"hi\""])
        .unset("daemon", "timezone");
    let path = builder.write_config();
    assert_eq!(
        std::fs::metadata(&path)
            .expect("config")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("valid TOML");
    let d = &config["daemon"];
    let tmp = dir.path().to_str().expect("utf-8");
    assert_eq!(
        d["socket"].as_str(),
        Some(format!("{tmp}/atpred.sock").as_str())
    );
    assert_eq!(
        d["state-dir"].as_str(),
        Some(format!("{tmp}/state").as_str())
    );
    assert_eq!(d["socket-group"].as_str(), Some(""));
    assert_eq!(
        (
            d["stop-timeout"].as_str(),
            d["max-concurrent-jobs"].as_integer()
        ),
        (Some("2s"), Some(3))
    );
    assert!(d.get("timezone").is_none(), "unset removes a key");
    let p = &config["postgres"];
    assert_eq!(p["host"].as_str(), pg.socket_dir().to_str());
    assert_eq!(p["port"].as_integer(), Some(i64::from(pg.port())));
    assert_eq!(
        (p["user"].as_str(), p["dbname"].as_str()),
        (Some("atpre"), Some("app"))
    );
    let passfile =
        std::fs::read_to_string(p["passfile"].as_str().expect("passfile")).expect("read passfile");
    assert!(passfile.ends_with(":*:atpre:pw\n"), "{passfile}");
    let r = &config["redis"];
    assert_eq!(r["url"].as_str(), Some(redis.url().as_str()));
    assert_eq!(
        std::fs::read_to_string(r["password-file"].as_str().expect("password-file")).expect("read"),
        "s3cret"
    );
    let job = &config["jobs"]["hello"];
    assert_eq!(job["command"].as_array().map(|a| a.len()), Some(3));
    assert_eq!(job["command"][2].as_str(), Some("echo \"hi\""));
}

#[test]
fn ctl_runs_the_client_as_us_and_as_nobody() {
    // `--help` succeeds for the stub and for the real clap client alike.
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir).launcher(fake_launcher).spawn();
    let out = daemon.ctl(["--help"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    if harness::is_root() {
        let out = daemon.ctl_as(65534, 65534, ["--help"]);
        assert_eq!(
            out.status, 0,
            "nobody can run the copied client: {}",
            out.stderr
        );
    }
}
