//! The system test: the Debian package under a real systemd.
//!
//! Builds the .deb (`packaging/build-deb`, or takes `ATPRED_DEB`), boots the cached Debian root
//! (`tests/system/rootfs`, or `ATPRED_ROOTFS`) with systemd-nspawn, installs the package next to
//! the PostgreSQL 15 and Redis that run inside, and checks what an operator meets: install
//! (enabled, not started), `systemctl start` returning after READY=1, `atprectl` for root and
//! the operators' group atpred and refused to others (the application's user atpre among them),
//! reload (and a broken reload keeping the old config with StatusText saying so), a backup owned
//! by atpred with mode 0600 that restores and that the application's user can neither read,
//! write, rename, chmod nor delete, a rotation of the application's logs through its group, the
//! journal's structured fields, a clean and quick stop, socket activation while stopped, the
//! watchdog killing and restarting a frozen daemon, restart on upgrade, the RPM post-install
//! keeping an administrator's config mode, and purge keeping the backups and never touching the
//! application's folders. Before all that, the upgrade from 0.1 (`ownership`).
//!
//! Needs root (nspawn, cgroups). `.ci/run` decides whether the machine allows it; when it does
//! not it sets `ATPRED_SKIP_SYSTEM_TEST` to the reason, which this test prints loudly and
//! then passes. Without that variable a machine that cannot run it fails the test.

// The crate denies unwrap/expect outside tests; this binary is a test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod container;
mod ownership;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use container::Container;

const WAIT: Duration = Duration::from_secs(30);
const CONFIG: &str = "/etc/atpre/atpred.toml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The directory holding the package to install (mounted at /opt/atpred inside).
fn package_dir() -> PathBuf {
    let deb = match std::env::var_os("ATPRED_DEB") {
        Some(deb) => PathBuf::from(deb),
        None => PathBuf::from(run(Command::new(repo().join("packaging/build-deb"))
            .arg("--out")
            .arg(repo().join("target/system-test")))),
    };
    assert!(deb.is_file(), "no package at {}", deb.display());
    // Only this one package in the mounted directory.
    let staged = repo().join("target/system-test/mount");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::copy(&deb, staged.join("atpred.deb")).unwrap();
    ownership::stage(&deb, &staged);
    staged
}

fn rootfs() -> PathBuf {
    match std::env::var_os("ATPRED_ROOTFS") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(run(&mut Command::new(repo().join("tests/system/rootfs")))),
    }
}

/// The preconditions, each with what to do about it.
fn check_machine() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the system test needs root (systemd-nspawn, cgroups); CI runs it as root. \
         To skip it, set ATPRED_SKIP_SYSTEM_TEST to the reason"
    );
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("debootstrap", "debootstrap"),
        ("dpkg-deb", "dpkg"),
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file());
        assert!(found, "{tool} is not on PATH: apt-get install {package}");
    }
}

struct Step {
    started: Instant,
    name: &'static str,
}

fn step(name: &'static str) -> Step {
    eprintln!("system test: {name} ...");
    Step {
        started: Instant::now(),
        name,
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            eprintln!(
                "system test: {} ok ({:.1?})",
                self.name,
                self.started.elapsed()
            );
        }
    }
}

#[test]
fn the_package_under_real_systemd() {
    if let Some(reason) = std::env::var_os("ATPRED_SKIP_SYSTEM_TEST") {
        eprintln!(
            "\n!!!!! SYSTEM TEST SKIPPED: {} !!!!!\n",
            reason.to_string_lossy()
        );
        return;
    }
    check_machine();
    let total = Instant::now();
    let packages = {
        let _s = step("build the package");
        package_dir()
    };
    let root = {
        let _s = step("the cached Debian root");
        rootfs()
    };
    let scratch = tempfile::tempdir().unwrap();
    let c = {
        let _s = step("boot systemd in the container");
        Container::boot(&root, &packages, scratch.path())
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&c)));
    if result.is_err() {
        let journal = c.exec(&["journalctl", "-u", "atpred", "--no-pager", "-n", "80"]);
        eprintln!("journal of atpred.service:\n{}", journal.stdout);
    }
    drop(c);
    eprintln!("system test: total {:.1?}", total.elapsed());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn scenario(c: &Container) {
    set_up_database(c);
    ownership::upgrade_from_0_1(c);
    install(c);
    write_config(c, "");
    start(c);
    access(c);
    reload(c);
    backup(c);
    ownership::out_of_the_applications_reach(c);
    rotate(c);
    health(c);
    journal(c);
    stop_and_activation(c);
    watchdog(c);
    upgrade(c);
    ownership::rpm_post_install_keeps_the_config_mode(c);
    ownership::purge(c);
}

fn install(c: &Container) {
    let _s = step("dpkg -i: user, directories, units enabled but not started");
    let out = c.exec(&["dpkg", "-i", "/opt/atpred/atpred.deb"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("not started"),
        "a fresh install says it did not start the daemon: {out:?}"
    );
    for unit in ["atpred.service", "atpred.socket"] {
        assert_eq!(c.property(unit, "UnitFileState"), "enabled", "{unit}");
        assert_eq!(c.property(unit, "ActiveState"), "inactive", "{unit}");
    }
    assert_eq!(
        c.sh("stat -c '%U:%G %a' /etc/atpre/atpred.toml /var/lib/atpred /var/lib/atpred/backups /run/atpred /var/log/atpre")
            .lines()
            .collect::<Vec<_>>(),
        [
            "root:atpred 640",
            "atpred:atpred 700",
            "atpred:atpred 700",
            "atpred:atpred 750",
            // The application's folder keeps its owner; atpred rotates there through the group.
            "atpre:atpre 2770"
        ]
    );
    assert_eq!(
        c.sh("id -nG atpred").split_whitespace().collect::<Vec<_>>(),
        ["atpred", "atpre"],
        "atpred's groups: its own (the operators') and the application's, for the logs"
    );
    c.sh("test -x /usr/bin/atpred && test -x /usr/bin/atprectl");
    c.sh("test -s /usr/share/man/man8/atpred.8.gz && test -s /usr/share/man/man1/atprectl.1.gz");
    c.sh("test -s /usr/share/bash-completion/completions/atprectl");
    c.sh("test -s /usr/share/doc/atpred/copyright");
    // The shipped configuration checks (credential:pgpass resolves to the unit's directory).
    let check = c.exec(&["atpred", "--config", CONFIG, "--check"]);
    assert_eq!(check.status, 0, "{check:?}");
}

/// A role with a password (scram over the local socket, so the passfile credential is what
/// lets the daemon in), a database with rows, and the passfile root:root 0600.
fn set_up_database(c: &Container) {
    c.sh("mkdir -p /etc/atpre");
    let _s = step("PostgreSQL inside: role, database, passfile");
    assert!(
        c.wait_for(WAIT, |c| c
            .property("postgresql@15-main.service", "ActiveState")
            == "active"),
        "PostgreSQL did not start in the container"
    );
    c.sh(
        "runuser -u postgres -- psql -q -c \"CREATE ROLE atp_user LOGIN CREATEDB PASSWORD 's3cret-Pw'\"
         runuser -u postgres -- createdb -O atp_user atp_re
         runuser -u postgres -- psql -q -d atp_re -c \"CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g; ALTER TABLE t OWNER TO atp_user\"
         hba=/etc/postgresql/15/main/pg_hba.conf
         { echo 'local atp_re,postgres atp_user scram-sha-256'; cat $hba; } > $hba.new && mv $hba.new $hba
         chown postgres: $hba
         runuser -u postgres -- psql -q -c 'SELECT pg_reload_conf()'
         printf 'localhost:5432:*:atp_user:s3cret-Pw\\n' > /etc/atpre/pgpass
         chmod 600 /etc/atpre/pgpass",
    );
}

fn write_config(c: &Container, extra: &str) {
    write_config_for(c, Layout::Current, extra);
}

/// Whose configuration: today's, or what an administrator of 0.1 had (0.1's shipped paths and
/// socket group, all in the application's folders and group).
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Current,
    V0_1,
}

fn write_config_for(c: &Container, layout: Layout, extra: &str) {
    let (daemon, group, backups) = match layout {
        Layout::Current => (
            "socket-group = \"atpred\"",
            "atpred",
            "/var/lib/atpred/backups",
        ),
        Layout::V0_1 => (
            "state-dir = \"/var/lib/atpre\"\nbackup-dir = \"/var/lib/atpre/backups\"\nsocket-group = \"atpre\"",
            "atpre",
            "/var/lib/atpre/backups",
        ),
    };
    let config = format!(
        r#"[daemon]
socket = "/run/atpred/atpred.sock"
{daemon}
stop-timeout = "10s"

[postgres]
host = "/var/run/postgresql"
user = "atp_user"
dbname = "atp_re"
passfile = "credential:pgpass"

[redis]
url = "redis://127.0.0.1:6379/0"

[metrics]
listen = "127.0.0.1:9187"

[jobs.nightly]
kind = "backup"
schedule = "30 2 * * *"
verify = "full"

[jobs.api-logs]
kind = "rotate"
paths = ["/var/log/atpre/*.log"]
max-size = "100MiB"
method = "create"
reopen-command = ["/bin/true"]
compress = "zstd"
keep = 3
# /var/log/atpre is the application's, 2770 group atpre: writable by that group, atpred's way in.
allow-shared-dir = true

[jobs.health]
kind = "health"
check-timeout = "5s"
http-url = "http://127.0.0.1:9187/metrics"
http-expect-body = "atpred_up"
disk-paths = ["{backups}", "/var/log/atpre"]
{extra}"#
    );
    let out = c.exec_input(
        &["sh", "-ec", &format!("cat > /etc/atpre/atpred.toml.new && mv /etc/atpre/atpred.toml.new /etc/atpre/atpred.toml && chown root:{group} /etc/atpre/atpred.toml && chmod 640 /etc/atpre/atpred.toml")],
        Some(&config),
    );
    assert_eq!(out.status, 0, "{out:?}");
}

fn start(c: &Container) {
    let _s = step("systemctl start returns after READY=1");
    let out = c.exec(&["systemctl", "start", "atpred"]);
    assert_eq!(out.status, 0, "{out:?}");
    // Type=notify: `start` returns when READY=1 arrived, so the unit is active at once (not
    // "activating") and the daemon's status line is already set.
    assert_eq!(c.property("atpred.service", "ActiveState"), "active");
    assert_eq!(c.property("atpred.service", "SubState"), "running");
    let status = c.property("atpred.service", "StatusText");
    assert!(
        status.contains("3 jobs"),
        "StatusText after READY: {status:?}"
    );
    assert_eq!(
        c.sh("stat -c '%U:%G %a' /run/atpred/atpred.sock").trim(),
        "atpred:atpred 660"
    );
}

fn access(c: &Container) {
    let _s = step("atprectl: root, an operator (group atpred), another user, the application");
    c.sh("useradd -m -G atpred alice && useradd -m bob");
    let root = c.exec(&["atprectl", "status"]);
    assert_eq!(root.status, 0, "root: {root:?}");
    // alice is in atpred only as a supplementary group: the daemon runs with PrivateUsers=yes,
    // where her uid shows as nobody; the check reads her groups, and atpred, the unit's Group=,
    // is mapped.
    let member = c.exec(&["runuser", "-u", "alice", "--", "atprectl", "status"]);
    assert_eq!(member.status, 0, "a member of group atpred: {member:?}");
    for user in ["bob", "atpre"] {
        let other = c.exec(&["runuser", "-u", user, "--", "atprectl", "status"]);
        // Refused by the kernel (the folder's mode): 77, naming what refused and the group to ask.
        assert_eq!(
            other.status, 77,
            "{user} is refused (no operator): {other:?}"
        );
        assert!(
            other.stderr.contains("not permitted: ")
                && other.stderr.contains("ask to be added to group"),
            "{user}: {other:?}"
        );
    }
    // Loosen the modes by hand: then the daemon's own peer check is what refuses bob. Under
    // PrivateUsers= his uid reaches the daemon as nobody (65534), which is never let in.
    c.sh("chmod 0755 /run/atpred && chmod 0666 /run/atpred/atpred.sock");
    let other = c.exec(&["runuser", "-u", "bob", "--", "atprectl", "status"]);
    assert_eq!(
        other.status, 77,
        "the peer check refuses another user: {other:?}"
    );
    assert!(other.stderr.contains("not permitted"), "{other:?}");
    let member = c.exec(&["runuser", "-u", "alice", "--", "atprectl", "status"]);
    assert_eq!(member.status, 0, "a member still gets in: {member:?}");
    c.sh("chmod 0750 /run/atpred && chmod 0660 /run/atpred/atpred.sock");
    let log = c.exec(&["journalctl", "-u", "atpred", "--no-pager"]).stdout;
    assert!(
        log.lines()
            .any(|l| l.contains("control connection refused") && l.contains("65534")),
        "the refusal is logged, with bob seen as nobody under PrivateUsers=:\n{log}"
    );
    assert!(!log.contains("s3cret-Pw"), "the password is in the journal");
}

fn reload(c: &Container) {
    let _s = step("systemctl reload: new config, and a broken one keeps the old");
    write_config(
        c,
        "\n[jobs.hello]\nkind = \"command\"\ncommand = [\"true\"]\n",
    );
    let out = c.exec(&["systemctl", "reload", "atpred"]);
    assert_eq!(out.status, 0, "{out:?}");
    // 252's reload returns before the daemon is done: poll.
    assert!(
        c.wait_for(WAIT, |c| c
            .exec(&["atprectl", "jobs"])
            .stdout
            .contains("hello")),
        "the reloaded config has job hello"
    );
    write_config(
        c,
        "\n[jobs.hello]\nkind = \"command\"\nschedule = \"61 * * * *\"\ncommand = [\"true\"]\n",
    );
    let out = c.exec(&["systemctl", "reload", "atpred"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        c.wait_for(WAIT, |c| c
            .property("atpred.service", "StatusText")
            .contains("reload failed, old config in force")),
        "StatusText says the reload failed: {:?}",
        c.property("atpred.service", "StatusText")
    );
    assert_eq!(c.property("atpred.service", "ActiveState"), "active");
    assert!(c.exec(&["atprectl", "jobs"]).stdout.contains("hello"));
    // Put a good config back for what follows.
    write_config(
        c,
        "\n[jobs.hello]\nkind = \"command\"\ncommand = [\"true\"]\n",
    );
    c.exec(&["systemctl", "reload", "atpred"]);
    assert!(
        c.wait_for(WAIT, |c| !c
            .property("atpred.service", "StatusText")
            .contains("reload failed")),
        "a good config clears the reload error"
    );
}

fn backup(c: &Container) {
    let _s = step("a backup under the sandbox: owned by atpred, 0600, restorable");
    let out = c.exec(&["atprectl", "run", "nightly", "--wait"]);
    assert_eq!(out.status, 0, "the backup under the hardened unit: {out:?}");
    let file = c
        .sh("ls -d /var/lib/atpred/backups/*/database.backup")
        .trim()
        .to_owned();
    assert_eq!(
        c.sh(&format!("stat -c '%U:%G %a' {file}")).trim(),
        "atpred:atpred 600"
    );
    let count = c.sh(&format!(
        "runuser -u postgres -- createdb restored
         zstd -dc {file} | runuser -u postgres -- pg_restore --no-owner -d restored
         runuser -u postgres -- psql -tA -d restored -c 'SELECT count(*) FROM t'"
    ));
    assert_eq!(count.trim(), "5000", "the restored table");
}

fn rotate(c: &Container) {
    let _s = step("the application's log rotated through its group: compressed, still writable");
    // The application's own log, as the application writes it: its user, its group, 0640.
    c.sh("runuser -u atpre -- sh -c 'umask 027; seq 1 20000 > /var/log/atpre/api.log'");
    let out = c.exec(&["atprectl", "run", "api-logs", "--force", "--wait"]);
    assert_eq!(out.status, 0, "rotation under the hardened unit: {out:?}");
    // atpred cannot give a file to atpre (no capability; atpre is not even mapped under
    // PrivateUsers=): the fresh log is atpred's, of group atpre from the setgid folder, and the
    // group gets the owner's rights, so that the application keeps writing it.
    assert_eq!(
        c.sh("stat -c '%U:%G %a %s' /var/log/atpre/api.log").trim(),
        "atpred:atpre 660 0",
        "a fresh, empty log the application's group may write"
    );
    assert_eq!(
        c.sh("stat -c '%U:%G %a' /var/log/atpre/api.log.1.zst")
            .trim(),
        "atpred:atpre 660"
    );
    let lines = c.sh("zstd -dc /var/log/atpre/api.log.1.zst | wc -l");
    assert_eq!(lines.trim(), "20000", "every line is in the rotated file");
    c.sh("runuser -u atpre -- sh -c 'echo after >> /var/log/atpre/api.log'");
    // Reading the logs needs membership of atpre and nothing else.
    c.sh("useradd -m -G atpre reader");
    assert_eq!(
        c.sh("runuser -u reader -- cat /var/log/atpre/api.log")
            .trim(),
        "after"
    );
}

fn health(c: &Container) {
    let _s = step("health checks and metrics under the sandbox");
    // Every check of the issue: PostgreSQL over the socket with the passfile credential, Redis
    // and HTTP over loopback (IPAddressAllow=localhost; the HTTP target is the daemon's own
    // metrics endpoint), statvfs on the backup and log directories, the backup just taken.
    let out = c.exec(&["atprectl", "health", "--now"]);
    assert_eq!(
        out.status, 0,
        "every check ok under the hardened unit: {out:?}"
    );
    for check in [
        "postgres",
        "redis",
        "http",
        "disk",
        "backup-freshness",
        "jobs",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([check, "OK"])),
            "{check} ok:\n{}",
            out.stdout
        );
    }
    let metrics = c.exec(&["atprectl", "metrics"]);
    assert_eq!(metrics.status, 0, "{metrics:?}");
    assert!(
        metrics
            .stdout
            .contains("atpred_health_status{check=\"postgres\"} 0"),
        "{}",
        metrics.stdout
    );
    assert!(
        c.property("atpred.service", "StatusText")
            .contains("health ok"),
        "StatusText: {:?}",
        c.property("atpred.service", "StatusText")
    );
}

fn journal(c: &Container) {
    let _s = step("journalctl -u atpred -o json: structured fields");
    let out = c.exec(&["journalctl", "-u", "atpred", "-o", "json", "--no-pager"]);
    assert_eq!(out.status, 0, "{out:?}");
    let entry = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["JOB"] == "nightly" && e.get("OUTCOME").is_some())
        .unwrap_or_else(|| panic!("no entry with JOB=nightly and OUTCOME:\n{}", out.stdout));
    assert_eq!(entry["KIND"], "backup", "{entry}");
    assert!(
        entry["RUN_ID"].as_str().is_some_and(|r| !r.is_empty()),
        "{entry}"
    );
    assert_eq!(entry["OUTCOME"], "succeeded", "{entry}");
}

fn stop_and_activation(c: &Container) {
    let _s = step("systemctl stop is clean and quick; atprectl starts it again");
    let started = Instant::now();
    let out = c.exec(&["systemctl", "stop", "atpred.service"]);
    let took = started.elapsed();
    assert_eq!(out.status, 0, "{out:?}");
    eprintln!("system test: systemctl stop took {took:.1?}");
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert_eq!(c.property("atpred.service", "ActiveState"), "inactive");
    assert_eq!(c.property("atpred.service", "Result"), "success");
    assert_eq!(c.property("atpred.socket", "ActiveState"), "active");
    // The socket stays; a request while the daemon is down starts it and is answered.
    let out = c.exec(&["atprectl", "status"]);
    assert_eq!(out.status, 0, "socket activation: {out:?}");
    assert_eq!(c.property("atpred.service", "ActiveState"), "active");
}

fn watchdog(c: &Container) {
    let _s = step("a frozen daemon: killed by the watchdog, restarted");
    c.sh("mkdir -p /etc/systemd/system/atpred.service.d
         printf '[Service]\\nWatchdogSec=2s\\n' > /etc/systemd/system/atpred.service.d/watchdog.conf
         systemctl daemon-reload
         systemctl restart atpred");
    let before = c.property("atpred.service", "MainPID");
    let restarts: u32 = c.property("atpred.service", "NRestarts").parse().unwrap();
    c.sh(&format!("kill -STOP {before}"));
    let restarted = c.wait_for(Duration::from_secs(60), |c| {
        let pid = c.property("atpred.service", "MainPID");
        pid != before && pid != "0" && c.property("atpred.service", "ActiveState") == "active"
    });
    assert!(restarted, "the frozen daemon {before} was not replaced");
    let now: u32 = c.property("atpred.service", "NRestarts").parse().unwrap();
    assert_eq!(now, restarts + 1, "systemd restarted it (NRestarts)");
    let log = c.exec(&["journalctl", "-u", "atpred", "--no-pager"]).stdout;
    assert!(
        log.contains("Watchdog timeout"),
        "the journal names the watchdog:\n{log}"
    );
    c.sh("rm /etc/systemd/system/atpred.service.d/watchdog.conf
         systemctl daemon-reload");
}

fn upgrade(c: &Container) {
    let _s = step("reinstall (upgrade path): a running daemon is restarted");
    let before = c.property("atpred.service", "MainPID");
    let out = c.exec(&["dpkg", "-i", "/opt/atpred/atpred.deb"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        c.wait_for(WAIT, |c| {
            let pid = c.property("atpred.service", "MainPID");
            pid != before && pid != "0"
        }),
        "the daemon was not restarted by the upgrade"
    );
    assert_eq!(c.property("atpred.service", "ActiveState"), "active");
    // The administrator's configuration survived (a conffile).
    assert!(c.sh("cat /etc/atpre/atpred.toml").contains("jobs.hello"));
}
