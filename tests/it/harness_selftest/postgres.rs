//! Self-tests of [`PgServer`]: it starts (as `postgres` when root), runs SQL, enforces passwords
//! when asked, runs side by side with another, and leaves nothing behind when dropped.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use crate::harness::{self, PgServer, proc_children, process_alive};

#[test]
fn postgres_starts_and_answers_queries() {
    let pg = PgServer::start();
    assert_eq!(pg.psql("postgres", "select 1"), "1");
    assert_eq!(pg.psql("postgres", "select current_user"), "postgres");
    assert_ne!(
        pg.port(),
        5432,
        "a non-default port catches code that ignores the setting"
    );
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", pg.port()))
            .exists(),
        "socket in socket_dir()"
    );
    assert_eq!(
        pg.psql("postgres", "show listen_addresses"),
        "",
        "unix socket only"
    );
    assert_eq!(pg.psql("postgres", "show fsync"), "off");
    assert!(
        pg.bin_dir().join("pg_dump").exists(),
        "bin_dir() has the client tools"
    );
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pg.pid())).expect("postmaster status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("a Uid line");
    let expected = match harness::is_root() {
        true => {
            nix::unistd::User::from_name("postgres")
                .expect("lookup")
                .expect("postgres user")
                .uid
        }
        false => nix::unistd::geteuid(),
    };
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(expected.to_string().as_str()),
        "{uid_line}"
    );
}

#[test]
fn postgres_password_auth_needs_the_passfile() {
    let pg = PgServer::start_with_password_auth();
    let password = r"pa:ss\w'rd";
    pg.create_role_with_password("app_user", password);
    pg.create_db("app_db", "app_user");
    assert_eq!(
        pg.psql(
            "postgres",
            "select rolconnlimit from pg_roles where rolname = 'app_user'"
        ),
        "20"
    );
    let dir = harness::tempdir();
    let passfile = dir.path().join("pgpass");
    pg.write_passfile(&passfile, "app_user", password);
    let meta = std::fs::metadata(&passfile).expect("passfile metadata");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    let content = std::fs::read_to_string(&passfile).expect("read passfile");
    assert!(
        content.ends_with(":*:app_user:pa\\:ss\\\\w'rd\n"),
        "{content:?}"
    );

    let sql = "select current_user || '@' || current_database()";
    let mut with = pg.psql_command("app_user", "app_db");
    with.env("PGPASSFILE", &passfile);
    let out = pg.run_psql(with, sql);
    assert_eq!(
        (out.status, out.stdout.trim()),
        (0, "app_user@app_db"),
        "{}",
        out.stderr
    );

    let out = pg.run_psql(pg.psql_command("app_user", "app_db"), sql);
    assert_ne!(out.status, 0, "no passfile, no login");
    assert!(out.stderr.contains("password"), "{}", out.stderr);

    pg.write_passfile(&passfile, "app_user", "wrong");
    let mut wrong = pg.psql_command("app_user", "app_db");
    wrong.env("PGPASSFILE", &passfile);
    let out = pg.run_psql(wrong, sql);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn two_postgres_servers_run_side_by_side() {
    let (a, b) = (PgServer::start(), PgServer::start());
    assert_ne!(a.socket_dir(), b.socket_dir());
    assert_ne!(a.pid(), b.pid());
    a.psql("postgres", "create table only_in_a (x int)");
    assert_eq!(
        a.psql(
            "postgres",
            "select count(*) from pg_tables where tablename = 'only_in_a'"
        ),
        "1"
    );
    assert_eq!(
        b.psql(
            "postgres",
            "select count(*) from pg_tables where tablename = 'only_in_a'"
        ),
        "0"
    );
}

#[test]
fn dropping_postgres_stops_every_process_and_removes_the_dir() {
    let pg = PgServer::start();
    let postmaster = pg.pid();
    let workers = proc_children(postmaster);
    assert!(
        !workers.is_empty(),
        "a running postmaster has background workers"
    );
    let dir = pg.socket_dir().to_path_buf();
    drop(pg);
    assert!(
        !process_alive(postmaster),
        "postmaster {postmaster} is gone"
    );
    let gone = harness::wait_until(Duration::from_secs(10), || {
        workers.iter().all(|w| !process_alive(w.pid))
    });
    assert!(gone, "no backend outlives the postmaster: {workers:?}");
    assert!(!dir.exists(), "{} removed", dir.display());
}

#[test]
fn a_frozen_postgres_is_still_cleaned_up() {
    let mut pg = PgServer::start();
    kill(pg.pid(), Signal::SIGSTOP).expect("SIGSTOP the postmaster");
    let postmaster = pg.pid();
    let started = std::time::Instant::now();
    drop(pg);
    assert!(
        !process_alive(postmaster),
        "a SIGSTOPped postmaster is stopped by Drop"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "without waiting for a timeout"
    );

    pg = PgServer::start();
    pg.restart();
    assert_eq!(
        pg.psql("postgres", "select 2"),
        "2",
        "restart keeps the cluster usable"
    );
}
