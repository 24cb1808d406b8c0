//! `atprectl restore ID --to-dir DIR` of a files backup, as root: the tree comes back
//! identical (`find -printf '%p %y %m %u %g %s %T@ %l'` and every file's SHA-256), a DIR that
//! is not empty is refused and left alone unless `--replace`, and a restore of a damaged
//! archive fails leaving DIR as it was; a 1 GiB file comes back identical.

use std::path::Path;
use std::time::Duration;

use crate::backup_support::{backup_ok, ctl, quote};
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
    assert!(
        out.stderr.contains("restore into the folder") && !out.stderr.contains("database"),
        "a folder's failure names the folder: {}",
        out.stderr
    );
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

/// Writes a 1 GiB file at `path` cheaply: one random MiB written 1,024 times, each copy
/// starting with its own number, so no two MiB of the file are equal.
fn write_gib(path: &std::path::Path) {
    use std::io::{Read, Write};
    let mut mib = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut mib))
        .expect("random bytes");
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0u64..1024 {
        mib[..8].copy_from_slice(&i.to_le_bytes());
        out.write_all(&mib).expect("write");
    }
    out.flush().expect("flush");
}

#[test]
fn files_restore_gives_a_1_gib_file_back_identical() {
    let fx = FilesFixture::new(0);
    let huge = fx.tree().join("huge.bin");
    write_gib(&huge);
    std::fs::set_permissions(&huge, std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .expect("chmod");
    let daemon = fx.daemon("").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let m = crate::backup_support::manifest(&daemon, &id);
    assert_eq!(m["verification"]["outcome"], "passed", "{m:#}");

    let to = fx.dir.path().join("restored");
    let out = ctl(
        &daemon,
        &["restore", &id, "--to-dir", to.to_str().expect("UTF-8")],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let back = fx.restored_tree(&to).join("huge.bin");
    let (a, b) = (
        std::fs::metadata(&huge).expect("stat"),
        std::fs::metadata(&back).expect("stat the restored file"),
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(b.len(), 1 << 30);
    assert_eq!(
        (b.len(), b.mode(), b.mtime()),
        (a.len(), a.mode(), a.mtime())
    );
    // Names, types, modes, owners, sizes, mtimes and every file's SHA-256.
    assert_eq!(listing(&fx.restored_tree(&to)), listing(&fx.tree()));
}

/// `atprectl restore ID --to-dir DIR --replace --yes` in the background; killed when dropped.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restore_in_background(daemon: &crate::harness::Daemon, id: &str, to: &Path) -> Background {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_atprectl"))
        .env_remove("ATPRED_SOCKET")
        .arg("--socket")
        .arg(daemon.socket())
        .args(["restore", id, "--to-dir"])
        .arg(to)
        .args(["--replace", "--yes"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn atprectl");
    Background(child)
}

/// The temporary folders a restore into `to` makes beside it.
fn temporaries(to: &Path) -> Vec<std::path::PathBuf> {
    let name = to.file_name().and_then(|n| n.to_str()).expect("a name");
    let prefix = format!(".{name}.atpred-restore-");
    crate::backup_support::entries(to.parent().expect("a parent"))
        .into_iter()
        .filter(|e| e.starts_with(&prefix))
        .map(|e| to.with_file_name(e))
        .collect()
}

#[test]
fn files_restore_killed_mid_way_leaves_the_folder_as_it_was_and_history_says_interrupted() {
    let fx = FilesFixture::new(BIG_MIB);
    let mut daemon = fx.daemon("").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let to = fx.dir.path().join("live");
    std::fs::create_dir(&to).expect("mkdir");
    std::fs::write(to.join("keep"), b"the old tree").expect("write");

    let _client = restore_in_background(&daemon, &id, &to);
    let mut temp = Vec::new();
    let unpacking = crate::harness::wait_until(Duration::from_secs(30), || {
        temp = temporaries(&to);
        temp.first()
            .is_some_and(|t| crate::backup_disturb::tree_size(t) >= 8 << 20)
    });
    assert!(unpacking, "no restore unpacking beside {}", to.display());
    let running = crate::restore_support::restore_runs(&daemon);
    assert!(
        running.is_empty(),
        "not finished before the kill: {running:#?}"
    );
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        !daemon.log().contains(&format!("restored {id}")),
        "the restore was done before the kill:\n{}",
        daemon.log()
    );
    assert_eq!(crate::backup_support::entries(&to), ["keep"]);
    assert_eq!(
        std::fs::read(to.join("keep")).expect("read"),
        b"the old tree"
    );

    daemon.restart();
    assert!(
        temporaries(&to).is_empty(),
        "left at start: {:?}",
        temporaries(&to)
    );
    assert_eq!(
        crate::backup_support::entries(&to),
        ["keep"],
        "the folder is as it was"
    );
    let runs = crate::restore_support::restore_runs(&daemon);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run["outcome"], "interrupted", "{run:#}");
    assert_eq!(run["kind"], "restore", "{run:#}");
    assert_eq!(run["details"]["backup"], id.as_str(), "{run:#}");
    let message = run["message"].as_str().expect("message");
    assert!(
        message.contains("interrupted") && message.contains(to.to_str().expect("UTF-8")),
        "{message}"
    );
    let shown = ctl(&daemon, &["history", "restore"]);
    assert!(shown.stdout.contains("interrupted"), "{}", shown.stdout);

    // The next restore is a run of its own and succeeds.
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
    let runs = crate::restore_support::restore_runs(&daemon);
    assert_eq!(runs[0]["outcome"], "succeeded", "{runs:#?}");
    assert_eq!(runs[0]["details"]["folder"], to.to_str().expect("UTF-8"));
    assert!(!to.join("keep").exists());
}

/// On a terminal (a pty from util-linux `script`), `--to-dir DIR --replace` asks for the
/// folder's path, naming it as a folder; another answer refuses with 11 and touches nothing.
#[test]
fn files_restore_replace_confirmation_names_the_folder() {
    crate::harness::require_binary("script", "apt-get install bsdutils");
    let fx = FilesFixture::new(1);
    let daemon = fx.daemon("").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let to = fx.dir.path().join("live");
    std::fs::create_dir(&to).expect("mkdir");
    std::fs::write(to.join("keep"), b"k").expect("write");
    let on_tty = |typed: &str| {
        let command = format!(
            "{} --socket {} restore {id} --to-dir {} --replace",
            quote(Path::new(env!("CARGO_BIN_EXE_atprectl"))),
            quote(daemon.socket()),
            quote(&to)
        );
        crate::backup_support::shell_status(&format!(
            "printf '%s\\n' {} | script -qec {} /dev/null",
            quote(Path::new(typed)),
            quote(Path::new(&command))
        ))
    };
    let wrong = on_tty("live");
    assert_eq!(wrong.status, 11, "{}{}", wrong.stdout, wrong.stderr);
    let dir = to.to_str().expect("UTF-8");
    assert!(
        wrong.stdout.contains(&format!("the folder \"{dir}\""))
            && wrong.stdout.contains("Type its path"),
        "{}",
        wrong.stdout
    );
    assert!(!wrong.stdout.contains("database"), "{}", wrong.stdout);
    assert!(
        wrong.stdout.contains("the path typed was not"),
        "{}",
        wrong.stdout
    );
    assert_eq!(crate::backup_support::entries(&to), ["keep"]);

    let right = on_tty(dir);
    assert_eq!(right.status, 0, "{}{}", right.stdout, right.stderr);
    assert!(!to.join("keep").exists(), "replaced");
    assert_eq!(listing(&fx.restored_tree(&to)), listing(&fx.tree()));
}

/// `atprectl cancel restore` during a files restore: the run ends `cancelled`, the folder
/// keeps what it had, and no temporary folder is left beside it.
#[test]
fn files_restore_cancelled_mid_way_leaves_the_folder_as_it_was() {
    let fx = FilesFixture::new(BIG_MIB);
    let daemon = fx.daemon("").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let to = fx.dir.path().join("live");
    std::fs::create_dir(&to).expect("mkdir");
    std::fs::write(to.join("keep"), b"the old tree").expect("write");

    let _client = restore_in_background(&daemon, &id, &to);
    let unpacking = crate::harness::wait_until(Duration::from_secs(30), || {
        temporaries(&to)
            .first()
            .is_some_and(|t| crate::backup_disturb::tree_size(t) >= 8 << 20)
    });
    assert!(unpacking, "no restore unpacking beside {}", to.display());
    let out = ctl(&daemon, &["cancel", "restore"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let ended = crate::harness::wait_until(Duration::from_secs(30), || {
        !crate::restore_support::restore_runs(&daemon).is_empty()
    });
    assert!(ended, "the cancelled restore has no record");
    let runs = crate::restore_support::restore_runs(&daemon);
    assert_eq!(runs[0]["outcome"], "cancelled", "{runs:#?}");
    assert!(temporaries(&to).is_empty(), "{:?}", temporaries(&to));
    assert_eq!(crate::backup_support::entries(&to), ["keep"]);
    assert!(
        !fx.dir.path().join("state/inflight").exists()
            || crate::backup_support::entries(&fx.dir.path().join("state/inflight")).is_empty(),
        "the in-flight marker is removed with the record"
    );
}
