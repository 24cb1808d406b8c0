//! Encrypted backups round-trip through the standard `age` CLI, the manifest names only the
//! public recipient, and without an identity to decrypt with, verification says it could only
//! compare checksums.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::backup_schema::fingerprint;
use crate::backup_support::{
    DB, Fixture, backup_ok, backups, ctl, manifest, pg_restore_command, quote, shell,
};
use crate::harness::{self, process::find_in_path, process::run_with_timeout};

pub fn require_age() {
    for tool in ["age", "age-keygen"] {
        assert!(
            find_in_path(tool).is_some(),
            "{tool} is missing: apt-get install age (the encryption tests use the real age CLI)"
        );
    }
}

/// A new age identity in `dir/key.txt` (mode 0600); returns its path and public key.
pub fn keygen(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("key.txt");
    let out = run_with_timeout(
        Command::new("age-keygen").arg("-o").arg(&key),
        Duration::from_secs(10),
    );
    assert_eq!(out.status, 0, "age-keygen: {}", out.stderr);
    harness::set_mode(&key, 0o600);
    let public = run_with_timeout(
        Command::new("age-keygen").arg("-y").arg(&key),
        Duration::from_secs(10),
    );
    assert_eq!(public.status, 0, "age-keygen -y: {}", public.stderr);
    let public = public.stdout.trim().to_owned();
    assert!(public.starts_with("age1"), "{public}");
    (key, public)
}

#[test]
fn backup_encrypted_with_age_round_trips_through_the_age_cli() {
    require_age();
    let fx = Fixture::new();
    fx.create_small_schema();
    let (key, public) = keygen(fx.dir.path());
    let secret = std::fs::read_to_string(&key).expect("key");
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("a secret key line")
        .to_owned();
    let daemon = fx
        .daemon(&format!(
            "[jobs.sealed]\nkind = \"backup\"\nverify = \"full\"\nencrypt-to = [\"{public}\"]\n\
             verify-identity-file = \"{}\"\n\n\
             [jobs.blind]\nkind = \"backup\"\nverify = \"full\"\nencrypt-to = [\"{public}\"]\n",
            key.display()
        ))
        .spawn();

    let id = backup_ok(&daemon, "sealed");
    let m = manifest(&daemon, &id);
    assert_eq!(m["encryption"]["recipients"], serde_json::json!([public]));
    assert_eq!(
        m["verification"]["level"], "full",
        "decrypted in the stream: {m:#}"
    );
    assert_eq!(m["verification"]["outcome"], "passed");
    let folder = fx.backup_dir().join(&id);
    let sealed = folder.join("database.backup.age");
    assert!(
        !folder.join("database.backup").exists(),
        "no plaintext dump beside it"
    );
    let head = std::fs::read(&sealed).expect("read the sealed dump")[..21].to_vec();
    assert_eq!(head, b"age-encryption.org/v1", "an age file");
    let shown = serde_json::to_string(&m).expect("JSON");
    assert!(
        !shown.contains(&secret),
        "the identity is not in the manifest"
    );
    assert!(!daemon.log().contains(&secret), "nor in the log");
    assert!(backups(&daemon)[0]["encrypted"] == true);

    shell(&format!(
        "cd {} && sha256sum -c --strict SHA256SUMS",
        quote(&folder)
    ));
    // pg_restore --list stops reading after the table of contents: the writers upstream get
    // SIGPIPE, which is no failure here (the full restore below reads everything).
    let listed = shell(&format!(
        "set +o pipefail; age -d -i {} {} | zstd -dc | {} --list",
        quote(&key),
        quote(&sealed),
        quote(&fx.pg.bin_dir().join("pg_restore"))
    ));
    assert!(
        listed.stdout.contains("TABLE DATA public accounts"),
        "{}",
        listed.stdout
    );
    fx.pg.psql("postgres", "CREATE DATABASE restored");
    shell(&format!(
        "age -d -i {} {} | zstd -dc | {}",
        quote(&key),
        quote(&sealed),
        pg_restore_command(&fx.pg, "restored")
    ));
    let restored = fingerprint(&fx.pg, "restored");
    assert_eq!(
        restored,
        fingerprint(&fx.pg, DB),
        "decrypted, restored, identical"
    );
    assert_eq!(restored.len(), 6, "{restored:?}");

    let again = ctl(&daemon, &["backups", "verify", &id]);
    assert_eq!(again.status, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("passed (full)"),
        "decrypted again: {}",
        again.stdout
    );

    let blind = backup_ok(&daemon, "blind");
    let v = manifest(&daemon, &blind)["verification"].clone();
    assert_eq!(
        v["level"], "checksum",
        "only the checksum without an identity: {v}"
    );
    assert_eq!(v["outcome"], "passed");
    let details = v["details"].as_str().expect("details");
    assert!(
        details.contains("no verify-identity-file") && details.contains("checksum only"),
        "the manifest says why: {details}"
    );
}
