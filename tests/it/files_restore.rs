//! `atprectl restore ID --to-dir DIR` of a files backup, as root: the tree comes back
//! identical (`find -printf '%p %y %m %u %g %s %T@ %l'` and every file's SHA-256), a DIR that
//! is not empty is refused and left alone unless `--replace`, and a restore of a damaged
//! archive fails leaving DIR as it was.

use crate::backup_support::{backup_ok, ctl};
use crate::files_support::{FilesFixture, SECRET, listing};

/// Size of the large file: 200 MiB keeps the test near 20 s in a debug build on two busy
/// cores (1 GiB is the benchmark's, `benches/run files`).
const BIG_MIB: u64 = 200;
/// A system group other than root's, for the socket.
const SOCKET_GROUP: &str = "daemon";

#[test]
fn files_restore_gives_an_identical_tree_and_refuses_a_full_folder_without_replace() {
    let fx = FilesFixture::new(BIG_MIB);
    let daemon = fx.daemon("").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let want = listing(&fx.tree());
    assert!(want.contains("config.toml f 644 nobody nogroup"), "{want}");

    let to = fx.dir.path().join("restored");
    let out = ctl(
        &daemon,
        &["restore", &id, "--to-dir", to.to_str().expect("UTF-8")],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("restored"), "{}", out.stdout);
    assert_eq!(
        listing(&fx.restored_tree(&to)),
        want,
        "the restored tree differs"
    );

    // Not empty now: refused, and left as it is.
    let marker = to.join("keep-me");
    std::fs::write(&marker, b"mine").expect("write");
    let out = ctl(
        &daemon,
        &["restore", &id, "--to-dir", to.to_str().expect("UTF-8")],
    );
    assert_ne!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("not empty") && out.stderr.contains("--replace"),
        "{}",
        out.stderr
    );
    assert!(marker.exists());

    // With --replace: exchanged, the old content gone, no temporary folder left beside it.
    let out = ctl(
        &daemon,
        &[
            "restore",
            &id,
            "--to-dir",
            to.to_str().expect("UTF-8"),
            "--replace",
            "--yes",
        ],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(!marker.exists(), "replaced");
    assert_eq!(listing(&fx.restored_tree(&to)), want);
    let beside: Vec<String> = crate::backup_support::entries(fx.dir.path())
        .into_iter()
        .filter(|e| e.contains("atpred-restore"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    // A damaged archive: the restore fails and the folder keeps what it had.
    let file = fx.backup_dir().join(&id).join("files.tar.zst");
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).expect("damage");
    let other = fx.dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("keep"), b"k").expect("write");
    let out = ctl(
        &daemon,
        &[
            "restore",
            &id,
            "--to-dir",
            other.to_str().expect("UTF-8"),
            "--replace",
            "--yes",
        ],
    );
    assert_ne!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("was not touched"), "{}", out.stderr);
    assert_eq!(crate::backup_support::entries(&other), ["keep"]);
    assert!(
        !daemon.log().contains(SECRET),
        "the .env's content is in the log"
    );
}

#[test]
fn files_restore_of_an_encrypted_backup_decrypts_with_the_jobs_identity() {
    let fx = FilesFixture::new(1);
    crate::backup_encryption::require_age();
    let (key, recipient) = crate::backup_encryption::keygen(fx.dir.path());
    let daemon = fx
        .daemon(&format!(
            "encrypt-to = [\"{recipient}\"]\nverify-identity-file = {}",
            crate::harness::toml_path(&key)
        ))
        .socket_group(SOCKET_GROUP)
        .spawn();
    let id = backup_ok(&daemon, "appfiles");
    let m = crate::backup_support::manifest(&daemon, &id);
    assert_eq!(m["files"][0]["path"], "files.tar.zst.age", "{m:#}");
    assert_eq!(
        m["verification"]["level"], "full",
        "decrypted to verify: {m:#}"
    );
    assert_eq!(m["verification"]["outcome"], "passed", "{m:#}");
    // Nothing of the tree is readable in the stored file.
    let stored = std::fs::read(fx.backup_dir().join(&id).join("files.tar.zst.age")).expect("read");
    assert!(!stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));

    let to = fx.dir.path().join("restored");
    let out = ctl(
        &daemon,
        &["restore", &id, "--to-dir", to.to_str().expect("UTF-8")],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(listing(&fx.restored_tree(&to)), listing(&fx.tree()));
    let secret_key = std::fs::read_to_string(&key).expect("read the key");
    let identity = secret_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("an identity line");
    let log = daemon.log();
    assert!(!log.contains(identity), "the age identity is in the log");
    assert!(!log.contains(SECRET), "the .env's content is in the log");
}
