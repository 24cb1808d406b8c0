//! Verification finds what is wrong and says so: a published backup damaged afterwards (cut
//! short, one bit flipped) fails `atprectl backups verify` with the reason, and a backup whose
//! own verification fails is kept apart as failed, never listed as good.

use std::path::Path;

use serde_json::Value;

use crate::backup_support::{
    BackgroundRun, Fixture, backup_ok, backups, ctl, entries, run_job, wait_past_second_of,
};
use crate::harness;

const ACCOUNTS: &str = "CREATE TABLE accounts (id integer PRIMARY KEY, name text, balance numeric); \
     INSERT INTO accounts SELECT g, 'account ' || md5(g::text), g * 3.5 \
     FROM generate_series(1, 30000) g";

/// `atprectl backups verify ID [--level L]`: exit status and what it printed.
fn verify(daemon: &harness::Daemon, id: &str, level: Option<&str>) -> (i32, String) {
    let mut args = vec!["backups", "verify", id];
    if let Some(level) = level {
        args.extend(["--level", level]);
    }
    let out = ctl(daemon, &args);
    (out.status, format!("{}{}", out.stdout, out.stderr))
}

fn flip_bit(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read the dump");
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).expect("write the dump");
}

#[test]
fn backup_verify_catches_a_bit_flip_and_a_truncation_and_says_why() {
    let fx = Fixture::new();
    fx.sql(ACCOUNTS);
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"full\"")
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let file = fx.backup_dir().join(&id).join("database.backup");
    let good = std::fs::read(&file).expect("read the dump");
    assert!(
        good.len() > 100_000,
        "a dump worth damaging: {} bytes",
        good.len()
    );
    for level in [None, Some("checksum"), Some("restore")] {
        let (status, said) = verify(&daemon, &id, level);
        assert_eq!(status, 0, "an intact backup passes at {level:?}: {said}");
        assert!(said.contains("verification passed"), "{said}");
    }

    flip_bit(&file, good.len() / 2);
    let (status, said) = verify(&daemon, &id, Some("checksum"));
    assert_eq!(status, 1, "{said}");
    assert!(
        said.contains("FAILED") && said.contains("checksum mismatch"),
        "{said}"
    );
    let (status, said) = verify(&daemon, &id, None);
    eprintln!("bit flip, full: {said}");
    assert_eq!(status, 1, "{said}");
    assert!(said.contains("FAILED"), "{said}");
    assert!(
        said.contains("checksum mismatch") || said.contains("pg_restore failed"),
        "says why: {said}"
    );
    let out = ctl(&daemon, &["--json", "backups", "verify", &id]);
    let reply: Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(
        (out.status, &reply["passed"]),
        (1, &Value::Bool(false)),
        "{reply}"
    );
    assert_eq!(reply["verification"]["outcome"], "failed", "{reply}");

    std::fs::write(&file, &good).expect("restore the dump");
    let (status, said) = verify(&daemon, &id, None);
    assert_eq!(status, 0, "the same bytes pass again: {said}");

    std::fs::write(&file, &good[..good.len() / 2]).expect("truncate the dump");
    let (status, said) = verify(&daemon, &id, None);
    eprintln!("truncated, full: {said}");
    assert_eq!(status, 1, "{said}");
    assert!(
        said.contains("pg_restore failed") || said.contains("checksum mismatch"),
        "says why: {said}"
    );
    let (status, said) = verify(&daemon, &id, Some("checksum"));
    assert_eq!(status, 1, "{said}");
    assert!(said.contains("checksum mismatch"), "{said}");
    assert!(
        said.contains(&format!("{} bytes", good.len() / 2)),
        "names the size it found: {said}"
    );
    // A damaged backup is still listed: verification on request reports, it does not delete.
    assert_eq!(backups(&daemon).len(), 1);
}

#[test]
fn backup_verify_catches_a_damaged_file_of_a_directory_backup() {
    let fx = Fixture::new();
    fx.sql(ACCOUNTS);
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nformat = \"directory\"\nverify = \"full\"")
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let folder = fx.backup_dir().join(&id).join("database.backup");
    let data = entries(&folder)
        .into_iter()
        .find(|n| n.ends_with(".dat.gz"))
        .expect("a data file");
    let path = folder.join(&data);
    let len = std::fs::metadata(&path).expect("data file").len();
    flip_bit(&path, usize::try_from(len / 2).expect("fits"));
    let (status, said) = verify(&daemon, &id, None);
    assert_eq!(status, 1, "{said}");
    assert!(
        said.contains("checksum mismatch") && said.contains(&data),
        "{said}"
    );
}

#[test]
fn backup_failing_its_verification_is_kept_apart_as_failed() {
    let fx = Fixture::new();
    fx.sql(ACCOUNTS);
    // A restore drill needs a scratch database: without CREATEDB it fails, honestly.
    fx.pg.psql("postgres", "ALTER ROLE atp_user NOCREATEDB");
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"restore\"")
        .spawn();
    let record = run_job(&daemon, "nightly");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    assert!(message.contains("failed verification"), "{message}");
    assert!(message.contains("CREATEDB"), "the reason: {message}");
    let id = record["details"]["id"].as_str().expect("id in the details");

    assert_eq!(
        entries(&fx.backup_dir()),
        [format!(".failed-{id}")],
        "kept apart, nothing else"
    );
    let kept = fx.backup_dir().join(format!(".failed-{id}"));
    assert!(kept.join("database.backup").exists());
    let m: Value =
        serde_json::from_slice(&std::fs::read(kept.join("manifest.json")).expect("manifest"))
            .expect("JSON");
    assert_eq!(m["verification"]["outcome"], "failed", "{m:#}");

    let listed = backups(&daemon);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["state"], "failed", "{listed:?}");
    let table = ctl(&daemon, &["backups"]);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(id))
        .expect("a row");
    assert!(row.contains("failed") && !row.contains("verified"), "{row}");
    assert_eq!(
        fx.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%atpred_verify'"
        ),
        "0"
    );
}

/// Two restore drills of one database at once (two jobs, or `backups verify --level restore`
/// while the nightly runs) both use the scratch database `<db>_atpred_verify`: the second drops
/// or fails to create what the first is restoring into.
#[test]
fn backup_restore_drills_of_one_database_do_not_collide() {
    let fx = Fixture::new();
    fx.sql(ACCOUNTS);
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\ncompress = \"none\"\nverify = \"restore\"")
        .spawn();
    let older = backup_ok(&daemon, "nightly");
    // Enough rows for the next drill to restore for seconds.
    fx.create_bulk_table(200_000);
    wait_past_second_of(&older);
    let run = BackgroundRun::start(&daemon, fx.dir.path(), "nightly");
    let scratch = "SELECT count(*) FROM pg_database WHERE datname = 'atp_app_atpred_verify'";
    let drilling = harness::wait_until(std::time::Duration::from_secs(60), || {
        fx.pg.psql("postgres", scratch) == "1"
    });
    assert!(drilling, "the nightly's restore drill did not start");
    let (status, said) = verify(&daemon, &older, Some("restore"));
    let record = run.finish();
    assert_eq!(
        record["outcome"], "succeeded",
        "the nightly's own drill: {record:#}"
    );
    assert_eq!(status, 0, "the drill on request, beside it: {said}");
}

/// `verify-every` raises a run to a restore drill when the job's last drill is older than the
/// interval (or there is none), and leaves the configured level otherwise.
#[test]
fn verify_every_raises_a_run_to_a_restore_drill_when_one_is_due() {
    let fx = Fixture::new();
    fx.sql(ACCOUNTS);
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\nverify-every = \"7d\"")
        .spawn();
    let level_of = |id: &str| {
        crate::backup_support::manifest(&daemon, id)["verification"]["level"]
            .as_str()
            .map(str::to_owned)
    };
    let first = backup_ok(&daemon, "nightly");
    assert_eq!(
        level_of(&first).as_deref(),
        Some("restore"),
        "no drill yet: this run is one"
    );
    wait_past_second_of(&first);
    let second = backup_ok(&daemon, "nightly");
    assert_eq!(
        level_of(&second).as_deref(),
        Some("checksum"),
        "a drill ran today: the configured level"
    );
}
