//! `restore --jobs 1` of a zstd-wrapped backup feeds pg_restore straight from the archive: no
//! scratch space at all (it succeeds with restore-scratch-dir on a 16 KiB tmpfs, where the
//! default `-j 2` is refused for space), every table identical to the source; and a damaged
//! archive fails it on its checksum with nothing left behind.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::backup_disturb::Tmpfs;
use crate::restore_support::{SOURCE, backed_up, databases, fingerprints, restore};

#[test]
fn jobs_1_streams_the_archive_into_pg_restore_without_scratch_space() {
    let dir = crate::harness::tempdir();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let _tmpfs = Tmpfs::mount(&scratch, "16k");
    let (fx, daemon, id) = backed_up(|b| b.env("ATPRED__DAEMON__RESTORE_SCRATCH_DIR", &scratch));

    let dry = restore(
        &daemon,
        &id,
        &["--to", "streamed", "--jobs", "1", "--dry-run"],
    );
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("no scratch space") && !dry.stdout.contains("unpack"),
        "{}",
        dry.stdout
    );
    let refused = restore(&daemon, &id, &["--to", "streamed", "--yes"]);
    assert_eq!(
        refused.status, 14,
        "-j 2 needs the scratch space: {}",
        refused.stderr
    );

    let out = restore(&daemon, &id, &["--to", "streamed", "--jobs", "1", "--yes"]);
    assert_eq!(
        out.status,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        daemon.log()
    );
    assert!(
        out.stdout.contains("0.0 MiB of scratch space"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprints(&fx, "streamed"), fingerprints(&fx, SOURCE));
    assert!(
        fingerprints(&fx, "streamed")
            .iter()
            .all(|(_, f)| f != "absent"),
        "{:?}",
        fingerprints(&fx, "streamed")
    );
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn a_damaged_archive_fails_a_streamed_restore_on_its_checksum() {
    let (fx, daemon, id) = backed_up(|b| b);
    let dump = fx.backup_dir().join(&id).join("database.backup");
    let len = std::fs::metadata(&dump).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dump)
        .unwrap();
    // A byte in the middle, inverted.
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.write_all(&[!byte[0]]).unwrap();
    drop(file);

    let out = restore(&daemon, &id, &["--to", "damaged", "--jobs", "1", "--yes"]);
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("checksum mismatch")
            && out.stderr.contains("the target database was not touched"),
        "{}",
        out.stderr
    );
    let dbs = databases(&fx);
    assert!(
        !dbs.iter().any(|d| d.contains("damaged")),
        "nothing restored under any name: {dbs:?}"
    );
}
