//! A failed run says why in PostgreSQL's own words, not only in ours.

use crate::backup_support::{Fixture, ROLE, run_job};

#[test]
fn backup_failures_carry_postgresql_s_own_reason() {
    let fx = Fixture::new();
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"restore\"")
        .spawn();

    let passfile = fx.dir.path().join("atpred.pgpass");
    fx.pg.write_passfile(&passfile, ROLE, "not-the-password");
    let record = run_job(&daemon, "nightly");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    assert!(message.contains("cannot connect"), "{message}");
    let wrong_password = message.contains("password authentication failed");

    fx.pg
        .write_passfile(&passfile, ROLE, crate::backup_support::PASSWORD);
    fx.pg
        .psql("postgres", &format!("ALTER ROLE {ROLE} NOCREATEDB"));
    let record = run_job(&daemon, "nightly");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let drill = record["message"].as_str().expect("message").to_owned();
    assert!(drill.contains("scratch database"), "{drill}");

    assert!(wrong_password, "the server's reason is missing: {message}");
    assert!(
        drill.contains("permission denied to create database"),
        "the server's reason is missing: {drill}"
    );
}
