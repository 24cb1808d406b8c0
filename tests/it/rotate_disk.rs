//! Disk full during a rotation (root only: CI runs as root), for both methods: the log directory
//! is a 32 MiB tmpfs holding a 15 MB log of numbered lines and a ballast file that leaves
//! 128 KiB free, less than the log's zstd copy (0.64 MB) or its copytruncate copy needs,
//! while a writer goes on appending numbered lines. The run fails naming the file and the
//! space; every number is still there exactly once; no temporary file stays behind; with the
//! ballast gone the next run completes the rotation.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::backup_disturb::Tmpfs;
use crate::fault_support::{self, Row};
use crate::harness::{self, CtlOutput};
use crate::rotate_support::{Writer, daemon, log_dir, names, reopen, run, tally};

/// Lines already in the log when the writer starts (about 15 MB).
const PREFILLED: u64 = 2_000_000;
/// Free space the ballast leaves: less than the log's compressed copy.
const MARGIN: u64 = 128 << 10;
/// Between the writer's lines: it must not eat the margin during the test.
const PACE: Duration = Duration::from_millis(2);

/// The log directory on a fresh 32 MiB tmpfs, the log holding 1..=PREFILLED.
fn full_disk_setup(root: &Path) -> (Tmpfs, std::path::PathBuf) {
    assert!(
        harness::is_root(),
        "rotate_disk mounts a tmpfs as the log directory and needs root (CI runs as root)"
    );
    let tmpfs = Tmpfs::mount(&root.join("logs"), "32m");
    let dir = log_dir(root);
    let text: String = (1..=PREFILLED).map(|n| format!("{n}\n")).collect();
    std::fs::write(dir.join("app.log"), text).expect("write the log");
    (tmpfs, dir)
}

fn free_bytes(dir: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    stat.blocks_available() * stat.fragment_size()
}

/// Fills `dir`'s file system with `dir/ballast` until `MARGIN` bytes are free.
fn fill(dir: &Path) {
    let mut left = free_bytes(dir).saturating_sub(MARGIN);
    let mut f = std::fs::File::create(dir.join("ballast")).expect("create the ballast");
    let chunk = vec![0xa5u8; 1 << 20];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).expect("write the ballast");
        left -= n as u64;
    }
    f.sync_all().expect("fsync the ballast");
    let free = free_bytes(dir);
    assert!(free <= MARGIN + (64 << 10), "{free} bytes still free");
}

/// The failed run's message names the file and the space problem.
fn assert_fails_for_space(out: &CtlOutput, file: &str) {
    let text = format!("{}{}", out.stdout, out.stderr);
    eprintln!("rotate_disk: the run on a full disk said: {text}");
    assert_ne!(out.status, 0, "the run fails: {out:?}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains(file), "names {file}: {text}");
}

/// The hidden (temporary) names among `names`.
fn temps(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.starts_with('.')).collect()
}

fn lost_and_doubled(dir: &Path, last: u64) -> (usize, usize) {
    let (missing, dup, _) = tally(dir, "app.log", last);
    (missing.len(), dup.len())
}

#[test]
fn rotate_disk_full_create_keeps_every_line_and_compresses_once_there_is_space() {
    let root = harness::tempdir();
    let (tmpfs, dir) = full_disk_setup(root.path());
    let writer = Writer::start_at(root.path(), &dir.join("app.log"), PREFILLED + 1, PACE);
    let extra = format!("max-size = \"1GiB\"\nkeep = 5\n{}", reopen(&writer));
    let daemon = daemon(root.path(), &dir.join("app.log"), &extra).spawn();
    fill(&dir);

    let failed = run(&daemon, &["--force"]);
    let after_failure = names(&dir);
    std::fs::remove_file(dir.join("ballast")).expect("free the space");
    let later = run(&daemon, &[]);
    let again = run(&daemon, &["--force"]);
    let last = writer.stop();
    let (lost, doubled) = lost_and_doubled(&dir, last);
    let crashed = daemon.ctl(["status"]).status != 0;
    fault_support::record(&Row {
        scenario: "disk full mid-rotation, create + reopen (32 MiB tmpfs)",
        seed: None,
        runs: 3,
        faults: 1,
        losses: lost + doubled,
        crashes: usize::from(crashed),
        notes: format!(
            "compression failed, {last} lines all kept; the next run compressed (rotate_disk)"
        ),
    });

    assert_fails_for_space(&failed, "app.log.1");
    assert_eq!(
        after_failure,
        ["app.log", "app.log.1", "ballast"],
        "renamed and reopened, left uncompressed, no temp"
    );
    assert_eq!(later.status, 0, "with space: {later:?}");
    assert!(later.stdout.contains("compressed 1"), "{}", later.stdout);
    assert_eq!(again.status, 0, "a rotation after: {again:?}");
    assert_eq!((lost, doubled), (0, 0), "{last} lines");
    assert!(!crashed);
    assert_eq!(
        names(&dir),
        ["app.log", "app.log.1.zst", "app.log.2.zst"],
        "nothing else left"
    );
    drop(daemon);
    drop(tmpfs);
}

/// copytruncate loses the lines written between its last read and the truncation (counted by
/// rotate_writer); so the writer is stopped before the run that succeeds, and every line must
/// be there exactly once.
#[test]
fn rotate_disk_full_copytruncate_keeps_every_line_and_leaves_no_partial_copy() {
    let root = harness::tempdir();
    let (tmpfs, dir) = full_disk_setup(root.path());
    let writer = Writer::start_at(root.path(), &dir.join("app.log"), PREFILLED + 1, PACE);
    let extra = "max-size = \"1GiB\"\nkeep = 5\nmethod = \"copytruncate\"";
    let daemon = daemon(root.path(), &dir.join("app.log"), extra).spawn();
    fill(&dir);

    let failed = run(&daemon, &["--force"]);
    let after_failure = names(&dir);
    let last = writer.stop();
    let (lost_in_failure, doubled_in_failure) = lost_and_doubled(&dir, last);
    std::fs::remove_file(dir.join("ballast")).expect("free the space");
    let later = run(&daemon, &["--force"]);
    let (lost, doubled) = lost_and_doubled(&dir, last);
    let crashed = daemon.ctl(["status"]).status != 0;
    fault_support::record(&Row {
        scenario: "disk full mid-rotation, copytruncate (32 MiB tmpfs)",
        seed: None,
        runs: 2,
        faults: 1,
        losses: lost_in_failure + doubled_in_failure + lost + doubled,
        crashes: usize::from(crashed),
        notes: format!(
            "copy failed and was removed, {last} lines all kept; the next run rotated (rotate_disk)"
        ),
    });

    assert_fails_for_space(&failed, ".app.log.atpred-copy");
    assert!(
        temps(&after_failure).is_empty(),
        "a partial copy left on the full disk: {after_failure:?}"
    );
    assert_eq!(
        (lost_in_failure, doubled_in_failure),
        (0, 0),
        "after the failure, {last} lines"
    );
    assert_eq!(later.status, 0, "with space: {later:?}");
    assert!(
        later.stdout.contains("rotated to app.log.1"),
        "{}",
        later.stdout
    );
    assert_eq!((lost, doubled), (0, 0), "after the rotation, {last} lines");
    assert!(!crashed);
    assert_eq!(
        names(&dir),
        ["app.log", "app.log.1.zst"],
        "nothing else left"
    );
    assert_eq!(
        std::fs::metadata(dir.join("app.log")).map(|m| m.len()).ok(),
        Some(0)
    );
    drop(daemon);
    drop(tmpfs);
}
