//! What the physical (pg_basebackup) backup tests share: the backup fixture with a role that has
//! REPLICATION, an age key made by the `age` CLI, and a stored backup unpacked by hand with
//! age, zstd and tar, never through the daemon.

use std::path::{Path, PathBuf};

use crate::backup_support::{Fixture, ROLE, quote, shell};
use crate::harness;

/// A physical backup job; `extra` adds lines.
pub fn job(extra: &str) -> String {
    format!("[jobs.base]\nkind = \"backup\"\nmethod = \"physical\"\n{extra}")
}

/// The backup fixture, its role allowed to stream (REPLICATION) and a little data.
pub fn fixture() -> Fixture {
    let fx = Fixture::new();
    fx.pg
        .psql("postgres", &format!("ALTER ROLE {ROLE} REPLICATION"));
    fx.create_small_schema();
    fx
}

/// A new age identity file (mode 0600) in `dir` and its recipient, from `age-keygen`.
pub fn age_key(dir: &Path) -> (PathBuf, String) {
    harness::require_binary("age-keygen", "apt-get install age");
    let key = dir.join("physical.key");
    shell(&format!("age-keygen -o {} 2>/dev/null", quote(&key)));
    harness::set_mode(&key, 0o600);
    let recipient = shell(&format!("age-keygen -y {}", quote(&key)))
        .stdout
        .trim()
        .to_owned();
    (key, recipient)
}

/// Unpacks the stored `file` of a backup into the new folder `into` with the CLIs (age when an
/// identity is given, zstd when the name says `.zst`, tar), as an operator would.
pub fn unpack_by_hand(file: &Path, identity: Option<&Path>, into: &Path) {
    let name = file.to_string_lossy();
    let mut pipeline = match identity {
        Some(key) => format!("age -d -i {} {}", quote(key), quote(file)),
        None => format!("cat {}", quote(file)),
    };
    if name.contains(".zst") {
        pipeline.push_str(" | zstd -dc");
    }
    shell(&format!(
        "mkdir -m 700 {into}\n{pipeline} | tar -x -C {into}",
        into = quote(into)
    ));
}

/// The offset of the content of member `name` in an uncompressed tar archive.
pub fn member_offset(tar: &[u8], name: &str) -> Option<usize> {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            return None;
        }
        let end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let size_text = String::from_utf8_lossy(&header[124..135])
            .trim_matches('\0')
            .trim()
            .to_owned();
        let size = usize::from_str_radix(&size_text, 8).ok()?;
        if &header[..end] == name.as_bytes() {
            return Some(at + 512);
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    None
}

/// `pg_verifybackup -n DIR` of the test's server version, as an operator would run it.
pub fn pg_verifybackup(fx: &Fixture, dir: &Path) -> String {
    shell(&format!(
        "{} -n {}",
        quote(&fx.pg.bin_dir().join("pg_verifybackup")),
        quote(dir)
    ))
    .stdout
}
