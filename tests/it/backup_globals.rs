//! Every backup carries `globals.sql` (`pg_dumpall --globals-only`): roles and memberships, role
//! passwords only with `globals-passwords = true` (and a role that can read `pg_authid`), 0600,
//! encrypted like the dump, listed in the manifest and `SHA256SUMS`.

use std::os::unix::fs::PermissionsExt;

use crate::backup_encryption::{keygen, require_age};
use crate::backup_support::{Fixture, ROLE, backup_ok, ctl, manifest, quote, run_job, shell};

/// The marks of a stored role password in a globals dump (the cluster hashes with SCRAM).
const HASH_MARK: &str = "SCRAM-SHA-256$";

#[test]
fn backup_globals_hold_roles_and_memberships_without_passwords_unless_asked() {
    require_age();
    let fx = Fixture::new();
    fx.create_small_schema();
    fx.pg.psql(
        "postgres",
        "CREATE ROLE atp_readers NOLOGIN; \
         CREATE ROLE atp_analyst LOGIN PASSWORD 'analyst-pw-7q'; \
         GRANT atp_readers TO atp_analyst; \
         ALTER ROLE atp_analyst SET statement_timeout = '17s'",
    );
    let (key, public) = keygen(fx.dir.path());
    let daemon = fx
        .daemon(&format!(
            "[jobs.plain]\nkind = \"backup\"\nverify = \"checksum\"\n\n\
             [jobs.sealed]\nkind = \"backup\"\nverify = \"checksum\"\nencrypt-to = [\"{public}\"]\n\n\
             [jobs.withpw]\nkind = \"backup\"\nverify = \"checksum\"\nglobals-passwords = true\n"
        ))
        .spawn();

    // The default, as the non-superuser application role: roles, membership and settings, no
    // password hash.
    let id = backup_ok(&daemon, "plain");
    let folder = fx.backup_dir().join(&id);
    let globals = folder.join("globals.sql");
    let text = std::fs::read_to_string(&globals).expect("globals.sql beside the dump");
    for want in [
        "CREATE ROLE atp_analyst",
        "CREATE ROLE atp_readers",
        &format!("CREATE ROLE {ROLE}"),
        "GRANT atp_readers TO atp_analyst",
        "statement_timeout",
    ] {
        assert!(text.contains(want), "{want:?} missing from {text}");
    }
    assert!(!text.contains(HASH_MARK), "no password hash: {text}");
    let mode = std::fs::metadata(&globals)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "globals.sql is private");
    let m = manifest(&daemon, &id);
    assert_eq!(
        m["files"][0]["path"], "database.backup",
        "the dump stays first"
    );
    assert!(
        m["files"]
            .as_array()
            .expect("files")
            .iter()
            .any(|f| f["path"] == "globals.sql"),
        "listed in the manifest: {m:#}"
    );
    let sums = std::fs::read_to_string(folder.join("SHA256SUMS")).expect("SHA256SUMS");
    assert!(sums.contains("  globals.sql\n"), "{sums}");
    shell(&format!(
        "cd {} && sha256sum -c --strict SHA256SUMS",
        quote(&folder)
    ));

    // Verified like the dump: a changed byte fails verification, naming the file.
    let saved = std::fs::read(&globals).expect("read globals.sql");
    let mut damaged = saved.clone();
    damaged[0] ^= 0x20;
    std::fs::write(&globals, &damaged).expect("damage globals.sql");
    let checked = ctl(&daemon, &["backups", "verify", &id]);
    assert_ne!(checked.status, 0, "{}{}", checked.stdout, checked.stderr);
    let said = format!("{}{}", checked.stdout, checked.stderr);
    assert!(said.contains("globals.sql"), "{said}");
    std::fs::write(&globals, &saved).expect("repair globals.sql");

    // Encrypted like the dump: only the age file, which decrypts to the same roles.
    let sealed = backup_ok(&daemon, "sealed");
    let folder = fx.backup_dir().join(&sealed);
    assert!(!folder.join("globals.sql").exists(), "no plaintext globals");
    let age_file = folder.join("globals.sql.age");
    let head = std::fs::read(&age_file).expect("globals.sql.age")[..21].to_vec();
    assert_eq!(head, b"age-encryption.org/v1", "an age file");
    let mode = std::fs::metadata(&age_file)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let plain = shell(&format!("age -d -i {} {}", quote(&key), quote(&age_file)));
    assert!(
        plain.stdout.contains("GRANT atp_readers TO atp_analyst"),
        "{}",
        plain.stdout
    );
    let sums = std::fs::read_to_string(folder.join("SHA256SUMS")).expect("SHA256SUMS");
    assert!(sums.contains("  globals.sql.age\n"), "{sums}");

    // Passwords asked for, but the role cannot read pg_authid: the run fails and says why.
    let run = run_job(&daemon, "withpw");
    assert_eq!(run["outcome"], "failed", "{run:#}");
    let message = run["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("pg_authid") && message.contains("globals-passwords"),
        "{run:#}"
    );
    assert!(
        !fx.backup_dir()
            .read_dir()
            .expect("backup-dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("-withpw")),
        "no backup published without its globals"
    );

    // With a role that may read pg_authid, the hashes are kept.
    fx.pg
        .psql("postgres", &format!("ALTER ROLE {ROLE} SUPERUSER"));
    let id = backup_ok(&daemon, "withpw");
    let text = std::fs::read_to_string(fx.backup_dir().join(&id).join("globals.sql"))
        .expect("globals.sql");
    assert!(text.contains(HASH_MARK), "password hashes kept: {text}");
}
