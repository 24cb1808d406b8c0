//! `atprectl restore ID --target NAME`: restoring an encrypted copy at a real S3-compatible
//! server (Garage) with the local copy deleted gives every table as in the source; the plan
//! needs no download; the archive is checked in the stream (a damaged copy fails and leaves
//! nothing); an unknown id is refused naming the target; `--identity` decrypts, a wrong one
//! fails clearly and leaves no database, and a socket-group member may not give one (77, also
//! for `backups fetch`).

use crate::backup_encryption::keygen;
use crate::harness::{CtlOutput, Daemon, toml_path};
use crate::offsite_support::{Offsite, PREFIX, backup_copied};
use crate::restore_support::{SOURCE, databases, fingerprints, restore};

const NOBODY: u32 = 65534;
/// The socket group of the identity test: Debian's `daemon` (gid 1), which `nobody` is not in.
const GROUP: &str = "daemon";

/// Nothing left in the scratch dir, and no database under a temporary name or `name`.
fn nothing_left(o: &Offsite, name: &str) {
    // The harness's restore-scratch-dir: the default, under the state dir.
    let scratch = o.fx.dir.path().join("state/restore");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .expect("a restore made the scratch dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the scratch file is removed: {left:?}");
    let dbs = databases(&o.fx);
    assert!(
        !dbs.iter()
            .any(|d| d == name || d.contains("atpred_restoring")),
        "{dbs:?}"
    );
}

fn ok(out: &CtlOutput) {
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
}

/// An encrypted backup copied to the target, its local copy deleted.
fn copied_then_deleted_locally(o: &Offsite, daemon: &Daemon) -> String {
    let (id, copy) = backup_copied(daemon);
    assert_eq!(copy["stage"], "verified", "{copy:#}");
    std::fs::remove_dir_all(o.fx.backup_dir().join(&id)).unwrap();
    id
}

#[test]
fn restore_from_an_encrypted_offsite_copy_with_the_local_copy_deleted() {
    let o = Offsite::new();
    let identity = format!("verify-identity-file = {}", toml_path(&o.key));
    let daemon = o.daemon("", &identity, "").spawn();
    let id = copied_then_deleted_locally(&o, &daemon);
    let target = ["--target", "s3"];
    // Without --target the copy is not found, and the refusal says where to look.
    let out = restore(&daemon, &id, &["--to", "restored", "--yes"]);
    assert_eq!(out.status, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("--target s3"), "{}", out.stderr);

    let dry = restore(
        &daemon,
        &id,
        &[&target[..], &["--to", "restored", "--dry-run"]].concat(),
    );
    ok(&dry);
    assert!(
        dry.stdout.contains("from offsite target s3")
            && dry.stdout.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.starts_with(&["public.accounts", "1500", "rows"])
            }),
        "{}",
        dry.stdout
    );
    nothing_left(&o, "restored");

    let out = restore(
        &daemon,
        &id,
        &[&target[..], &["--to", "restored", "--yes"]].concat(),
    );
    ok(&out);
    assert!(out.stdout.contains("fetching"), "{}", out.stdout);
    assert!(
        out.stdout.contains("every row count matches"),
        "{}",
        out.stdout
    );
    let restored = fingerprints(&o.fx, "restored");
    assert_eq!(restored, fingerprints(&o.fx, SOURCE));
    assert!(restored.iter().all(|(_, f)| f != "absent"), "{restored:?}");
    nothing_left(&o, "");

    // Unknown at the target: the unknown-backup refusal (2), naming the target.
    let unknown = "20200101T000000Z-nightly";
    let out = restore(
        &daemon,
        unknown,
        &[&target[..], &["--to", "x", "--yes"]].concat(),
    );
    assert_eq!(out.status, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("at offsite target s3"),
        "{}",
        out.stderr
    );

    // A damaged copy (one byte changed, same size): the plan reads nothing of it, so a dry run
    // still plans; the restore finds the checksum wrong and leaves nothing behind.
    let key = format!("{PREFIX}/{id}/database.backup.age");
    let mut bytes = o.get(&key);
    let at = bytes.len() - 100;
    bytes[at] ^= 0xff;
    o.put(&key, bytes);
    ok(&restore(
        &daemon,
        &id,
        &[&target[..], &["--to", "damaged", "--dry-run"]].concat(),
    ));
    let out = restore(
        &daemon,
        &id,
        &[&target[..], &["--to", "damaged", "--yes"]].concat(),
    );
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("checksum mismatch") && out.stderr.contains("offsite target s3"),
        "{}",
        out.stderr
    );
    nothing_left(&o, "damaged");
}

#[test]
fn restore_from_offsite_with_identity_root_only_and_a_wrong_one_fails_clearly() {
    let o = Offsite::new();
    // No verify-identity-file: the copy can only be decrypted with --identity.
    let daemon = o.daemon("", "", "").socket_group(GROUP).spawn();
    let id = copied_then_deleted_locally(&o, &daemon);
    let key = o.key.to_str().unwrap();
    let args = |to: &'static str, identity: Option<&str>| {
        let mut a = vec!["--target", "s3", "--to", to, "--yes"];
        a.extend(identity.map(|k| ["--identity", k]).into_iter().flatten());
        a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let run = |to: &'static str, identity: Option<&str>| {
        let a = args(to, identity);
        restore(
            &daemon,
            &id,
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };

    let out = run("nokey", None);
    assert_eq!(out.status, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("give --identity"), "{}", out.stderr);
    nothing_left(&o, "nokey");

    let wrong_dir = o.fx.dir.path().join("wrong-key");
    std::fs::create_dir(&wrong_dir).unwrap();
    let (wrong, _) = keygen(&wrong_dir);
    let out = run("wrongkey", Some(wrong.to_str().unwrap()));
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("cannot decrypt") && out.stderr.contains("not downloaded"),
        "{}",
        out.stderr
    );
    nothing_left(&o, "wrongkey");

    // A member of the socket group may restore, but not name a file for the daemon to read.
    let gid = nix::unistd::Group::from_name(GROUP)
        .unwrap()
        .expect("Debian's group daemon")
        .gid
        .as_raw();
    let mut member = vec!["restore".to_owned(), id.clone()];
    member.extend(args("bymember", Some(key)));
    let out = daemon.ctl_as(NOBODY, gid, &member);
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("--identity"), "{}", out.stderr);
    nothing_left(&o, "bymember");
    let plain = o.fx.dir.path().join("plain");
    let fetch = [
        "backups",
        "fetch",
        &id,
        "--to",
        plain.to_str().unwrap(),
        "--identity",
        key,
    ];
    let out = daemon.ctl_as(NOBODY, gid, fetch);
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert!(!plain.exists());
    // Without --identity the member reaches the daemon's own checks (here: no identity
    // configured, said already by the plan).
    let mut plan = vec!["restore".to_owned(), id.clone()];
    plan.extend(args("bymember", None));
    plan.push("--dry-run".into());
    let out = daemon.ctl_as(NOBODY, gid, &plan);
    assert_eq!(out.status, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("give --identity"), "{}", out.stderr);

    // Root, with the right key.
    let out = run("withkey", Some(key));
    ok(&out);
    assert_eq!(fingerprints(&o.fx, "withkey"), fingerprints(&o.fx, SOURCE));
    nothing_left(&o, "");
}
