//! `source = "files"` backups of a real tree: every entry's metadata and SHA-256 in the
//! manifest, a pax tar GNU tar reads, verification that names a damaged file, a file growing
//! during the backup recorded and warned about, unreadable files failing the run (or skipped
//! with `ignore-unreadable`), and the `.env`'s content in no log.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::backup_support::{backup_ok, backups, ctl, manifest, quote, run_job, shell};
use crate::files_support::{FilesFixture, MARKER, SECRET, UNICODE};
use crate::harness::{self, Daemon};

/// The tree entry of `name` (relative to the fixture's tree) in manifest `m`.
fn entry<'a>(fx: &FilesFixture, m: &'a Value, name: &str) -> &'a Value {
    let path = fx.tree().join(name);
    let path = path
        .to_str()
        .expect("UTF-8")
        .trim_start_matches('/')
        .to_owned();
    m["tree"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["path"] == path.as_str())
        .unwrap_or_else(|| panic!("no entry {path} in {:#}", m["tree"]))
}

fn sha256(path: &Path) -> String {
    let out = shell(&format!("sha256sum {}", quote(path)));
    out.stdout
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned()
}

#[test]
fn files_backup_records_every_entry_and_gnu_tar_reads_the_archive() {
    let fx = FilesFixture::new(8);
    let daemon = fx.daemon("").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let m = manifest(&daemon, &id);
    assert_eq!(m["source"], "files", "{m:#}");
    assert_eq!(m["manifest_version"], 3);
    assert_eq!(m["verification"]["outcome"], "passed", "{m:#}");
    assert_eq!(m["verification"]["level"], "full", "{m:#}");
    let details = m["verification"]["details"].as_str().expect("details");
    assert!(
        details.contains("entries read back and compared"),
        "{details}"
    );

    let config = entry(&fx, &m, "config.toml");
    assert_eq!(
        (&config["uid"], &config["user"], &config["group"]),
        (
            &Value::from(65534),
            &Value::from("nobody"),
            &Value::from("nogroup")
        ),
        "{config}"
    );
    assert_eq!(config["mode"], 0o644);
    assert_eq!(config["mtime_nsec"], 123_456_789, "{config}");
    assert_eq!(
        config["sha256"],
        sha256(&fx.tree().join("config.toml")).as_str()
    );
    let env = entry(&fx, &m, ".env");
    assert_eq!(
        (&env["mode"], &env["kind"]),
        (&Value::from(0o600), &Value::from("file"))
    );
    let tool = entry(&fx, &m, "sub/tool");
    assert_eq!(tool["mode"], 0o4755, "setuid kept: {tool}");
    assert_eq!(entry(&fx, &m, "sub")["mode"], 0o750);
    let empty = entry(&fx, &m, "empty");
    assert_eq!(
        (&empty["size"], &empty["sha256"]),
        (
            &Value::from(0),
            &Value::from(sha256(&fx.tree().join("empty")))
        )
    );
    let link = entry(&fx, &m, "current");
    assert_eq!(
        (&link["kind"], &link["target"]),
        (&Value::from("symlink"), &Value::from("config.toml"))
    );
    assert_eq!(entry(&fx, &m, "dangling")["target"], "/nonexistent/target");
    assert_eq!(
        entry(&fx, &m, UNICODE)["sha256"],
        sha256(&fx.tree().join(UNICODE)).as_str()
    );
    assert_eq!(entry(&fx, &m, "big.bin")["size"], 8 << 20);
    let all = m["tree"]["entries"].to_string();
    assert!(
        !all.contains("app.log"),
        "the excluded log is not archived: {all}"
    );

    // From the outside: GNU tar reads the pax archive, names, owners and links as recorded.
    let file = fx.backup_dir().join(&id).join("files.tar.zst");
    let out = shell(&format!(
        "zstd -dc {} | tar -tv --numeric-owner --quoting-style=literal",
        quote(&file)
    ));
    let n = m["tree"]["entries"].as_array().expect("entries").len();
    assert_eq!(out.stdout.lines().count(), n, "{}", out.stdout);
    assert!(out.stdout.contains(UNICODE), "{}", out.stdout);
    assert!(
        out.stdout.contains("current -> config.toml"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("65534/65534"), "{}", out.stdout);

    let listed = ctl(&daemon, &["backups"]);
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("listed");
    assert!(row.split_whitespace().any(|c| c == "files"), "{row}");
    assert_eq!(backups(&daemon)[0]["source"], "files");
    assert!(
        !daemon.log().contains(SECRET),
        "the .env's content is in the log"
    );
}

#[test]
fn files_backup_verify_names_the_damaged_file() {
    let fx = FilesFixture::new(1);
    let daemon = fx.daemon("compress = \"none\"").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let file = fx.backup_dir().join(&id).join("files.tar");
    let mut bytes = std::fs::read(&file).expect("read the archive");
    let at = bytes
        .windows(MARKER.len())
        .position(|w| w == MARKER.as_bytes())
        .expect("the marker is in the plain tar");
    bytes[at] ^= 0x20;
    std::fs::write(&file, bytes).expect("damage the archive");
    let out = ctl(&daemon, &["backups", "verify", &id]);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.status, 1, "{said}");
    assert!(said.contains("checksum mismatch"), "{said}");
    assert!(
        said.contains(UNICODE) && said.contains("content (sha256)"),
        "names the file: {said}"
    );
}

#[test]
fn files_backup_records_and_warns_about_a_file_growing_while_read() {
    let fx = FilesFixture::new(1);
    let grow = fx.tree().join("grow.dat");
    shell(&format!("head -c 96M /dev/zero > {}", quote(&grow)));
    let daemon = fx.daemon("").spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, grow) = (Arc::clone(&stop), grow.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&grow)
                .expect("open");
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[b'g'; 4096]).expect("append");
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let run = run_job(&daemon, "appfiles");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let message = run["message"].as_str().expect("message");
    assert!(
        message.contains("changed while they were read"),
        "{message}"
    );
    assert!(message.contains("grow.dat"), "{message}");
    let id = run["details"]["id"].as_str().expect("id");
    let m = manifest(&daemon, id);
    let rel = grow.to_str().expect("UTF-8").trim_start_matches('/');
    assert!(
        m["tree"]["changed"]
            .as_array()
            .expect("changed")
            .iter()
            .any(|c| c == rel),
        "{:#}",
        m["tree"]
    );
    // Archived at the size it had when opened, and verified as such.
    assert_eq!(m["verification"]["outcome"], "passed", "{m:#}");
    assert!(entry(&fx, &m, "grow.dat")["size"].as_u64().expect("size") >= 96 << 20);
    assert!(
        daemon.log().contains("changed while they were read"),
        "warned in the log"
    );
}

/// The daemon as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: file modes apply to
/// it as to the `atpred` user the unit runs as.
fn without_dac_override(config: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
        "--",
        env!("CARGO_BIN_EXE_atpred"),
        "--config",
    ])
    .arg(config);
    cmd
}

#[test]
fn files_backup_fails_on_unreadable_files_unless_told_to_skip_them() {
    harness::require_binary("setpriv", "apt-get install util-linux");
    let fx = FilesFixture::new(1);
    let tree = fx.tree();
    shell(&format!(
        "cd {t} && chmod 0755 sub && printf 'x\\n' > locked.txt && chmod 000 locked.txt && mkdir closed && \
         printf 'y\\n' > closed/inside && chmod 000 closed",
        t = quote(&tree)
    ));
    let socket = std::os::unix::net::UnixListener::bind(tree.join("app.sock")).expect("bind");
    let daemon: Daemon = fx
        .daemon("")
        .toml("[jobs.lenient]\nkind = \"backup\"\nsource = \"files\"\nignore-unreadable = true\n")
        .toml(&format!("paths = [{}]\n", harness::toml_path(&tree)))
        .launcher(without_dac_override)
        .spawn();
    let run = run_job(&daemon, "appfiles");
    assert_eq!(run["outcome"], "failed", "{run:#}");
    let message = run["message"].as_str().expect("message");
    assert!(message.contains("2 path(s) could not be read"), "{message}");
    assert!(
        message.contains("locked.txt") && message.contains("closed"),
        "{message}"
    );
    assert!(message.contains("Permission denied"), "{message}");
    assert!(message.contains("ignore-unreadable"), "{message}");
    let left = crate::backup_support::entries(&fx.backup_dir());
    assert!(
        !left.iter().any(|e| e.contains("appfiles")),
        "nothing is left behind: {left:?}"
    );

    let id = backup_ok(&daemon, "lenient");
    let m = manifest(&daemon, &id);
    let skipped = m["tree"]["skipped"].to_string();
    for name in ["locked.txt", "closed", "app.sock"] {
        assert!(
            skipped.contains(name),
            "{name} listed as skipped: {skipped}"
        );
    }
    assert!(skipped.contains("a socket"), "{skipped}");
    assert_eq!(m["verification"]["outcome"], "passed", "{m:#}");
    drop(socket);
}

#[test]
fn files_backup_killed_mid_archive_leaves_nothing_listed() {
    let fx = FilesFixture::new(200);
    let mut daemon = fx
        .daemon("verify = \"checksum\"\ncompress = \"none\"")
        .spawn();
    let started = ctl(&daemon, &["run", "appfiles"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    let partial = crate::backup_disturb::wait_for_streaming(&fx.backup_dir(), 8 << 20);
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(
        daemon
            .wait_exit(std::time::Duration::from_secs(10))
            .is_some()
    );
    assert!(
        !daemon.log().contains("published"),
        "the archive was done before the kill:\n{}",
        daemon.log()
    );
    daemon.restart();
    assert!(
        !partial.exists(),
        "the stale partial is removed at start-up"
    );
    assert!(backups(&daemon).is_empty(), "{:?}", backups(&daemon));
    let id = backup_ok(&daemon, "appfiles");
    assert_eq!(manifest(&daemon, &id)["verification"]["outcome"], "passed");
}

/// A small tmpfs mounted at a path; unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path) -> Mount {
        std::fs::create_dir_all(at).expect("create the mount point");
        shell(&format!(
            "mount -t tmpfs -o size=1m atpred-test {}",
            quote(at)
        ));
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn files_backup_one_file_system_leaves_out_a_mount_and_says_so() {
    harness::require_binary("mount", "apt-get install mount");
    let fx = FilesFixture::new(1);
    let mnt = fx.tree().join("sub/mnt");
    let _mount = Mount::tmpfs(&mnt);
    std::fs::write(mnt.join("on-the-mount.txt"), b"mounted\n").expect("write on the tmpfs");
    let daemon = fx
        .daemon("")
        .toml(&format!(
            "[jobs.crossing]\nkind = \"backup\"\nsource = \"files\"\none-file-system = false\n\
             paths = [{}]\n",
            harness::toml_path(&fx.tree())
        ))
        .spawn();

    let run = run_job(&daemon, "appfiles");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let id = run["details"]["id"].as_str().expect("id").to_owned();
    let m = manifest(&daemon, &id);
    let entries = m["tree"]["entries"].to_string();
    assert!(!entries.contains("on-the-mount.txt"), "{entries}");
    assert_eq!(
        entry(&fx, &m, "sub/mnt")["kind"],
        "dir",
        "the mount point is kept"
    );
    assert!(entries.contains("deep.txt"), "the rest is there: {entries}");
    let skipped = m["tree"]["skipped"].to_string();
    let mnt_text = mnt.to_str().expect("UTF-8");
    assert!(
        skipped.contains(mnt_text) && skipped.contains("one-file-system"),
        "{skipped}"
    );
    let message = run["message"].as_str().expect("message");
    assert!(
        message.contains(mnt_text) && message.contains("another file system"),
        "the run says the mount was left out: {message}"
    );
    assert!(daemon.log().contains("another file system is mounted here"));

    let id = backup_ok(&daemon, "crossing");
    let m = manifest(&daemon, &id);
    assert_eq!(
        entry(&fx, &m, "sub/mnt/on-the-mount.txt")["kind"],
        "file",
        "{:#}",
        m["tree"]
    );
    assert_eq!(m["tree"]["skipped"].as_array().map_or(0, Vec::len), 0);
}
