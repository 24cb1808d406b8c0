//! Writing a point-in-time restore's data directory: the base backup unpacked (checked against
//! its manifest) while, on another thread, the WAL segments of the plan are decrypted into
//! `DIR/atpred-wal/` (each archived file checked against the index's SHA-256 first, each plain
//! segment hashed into `SHA256SUMS`); then the recovery settings and `recovery.signal`, the
//! owner, and for a restore (not a drill) one `syncfs`, so a restore reported good survives a
//! crash.
//!
//! Whatever fails, the folder is left as it was found: removed when this created it, emptied
//! when it was an empty folder already.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::Digest;

use super::plan::PitrPlan;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::backup::physical::unpack::Writeback;
use crate::jobs::backup::stream;
use crate::wal::index::Entry;

/// The staged segments' folder inside the data directory.
pub const STAGED: &str = "atpred-wal";
pub const SUMS: &str = "SHA256SUMS";

/// Where a data directory is written from.
pub struct Inputs<'a> {
    /// The base backup's folder and manifest.
    pub folder: &'a Path,
    pub manifest: &'a Manifest,
    /// The wal-archive job's archive folder and the index lines of the plan's segments.
    pub archive_dir: &'a Path,
    pub entries: &'a [Entry],
    pub identity: Option<&'a Path>,
    /// The `atpred` binary recovery calls as `restore_command`.
    pub atpred: &'a Path,
    /// uid and gid every file is given.
    pub owner: Option<(u32, u32)>,
    /// Whether the folder must survive a crash once staged: one `syncfs` of its file system
    /// at the end (a restore); a drill's throw-away copy is not synced.
    pub durable: bool,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Staged {
    pub segments: usize,
    pub wal_bytes: u64,
}

/// Writes the data directory `dir` (missing, or an empty folder) for `plan`; `cancelled` is
/// asked between steps. On error nothing is left in `dir`.
pub fn stage(
    inputs: &Inputs<'_>,
    plan: &PitrPlan,
    dir: &Path,
    cancelled: &(dyn Fn() -> bool + Sync),
    progress: &(dyn Fn(String) + Sync),
) -> Result<Staged, String> {
    let created = !dir.exists();
    let result = write(inputs, plan, dir, cancelled, progress);
    if result.is_err() {
        clear(dir, created);
    }
    result
}

fn at<'a>(what: &'a str, p: &'a Path) -> impl Fn(io::Error) -> String + 'a {
    move |e| format!("{what} {}: {e}", p.display())
}

fn write(
    inputs: &Inputs<'_>,
    plan: &PitrPlan,
    dir: &Path,
    cancelled: &(dyn Fn() -> bool + Sync),
    progress: &(dyn Fn(String) + Sync),
) -> Result<Staged, String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(at("creating", dir))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(at("chmod 0700", dir))?;
    let staged_dir = dir.join(STAGED);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staged_dir)
        .map_err(at("creating", &staged_dir))?;
    // The base is unpacked on two threads (decoding, writing) while a third stages the WAL:
    // the segments are independent of the base's files, and each side waits on the disk
    // part of the time.
    progress(format!("unpacking base backup {}", plan.base));
    let (base, wal) = std::thread::scope(|scope| {
        let wal = scope.spawn(|| segments(inputs, plan, &staged_dir, cancelled, progress));
        let base = crate::jobs::backup::physical::unpack::unpack_checked(
            inputs.folder,
            inputs.manifest,
            inputs.identity.map(Path::to_path_buf),
            dir,
            if inputs.durable {
                Writeback::Start
            } else {
                Writeback::Leave
            },
        );
        let wal = wal
            .join()
            .unwrap_or_else(|_| Err("the WAL staging thread panicked".into()));
        (base, wal)
    });
    base?;
    let (sums, staged) = wal?;
    std::fs::write(staged_dir.join(SUMS), sums).map_err(at("writing", &staged_dir))?;
    recovery_settings(dir, &staged_dir, inputs.atpred, plan)?;
    if let Some((uid, gid)) = inputs.owner {
        chown_tree(dir, uid, gid).map_err(at("chown", dir))?;
    }
    if inputs.durable {
        progress("syncing the data directory to disk".into());
        sync_filesystem(dir).map_err(at("syncing", dir))?;
    }
    Ok(staged)
}

/// Stages the plan's segments into `staged_dir`: the text of `SHA256SUMS`, and what was staged.
fn segments(
    inputs: &Inputs<'_>,
    plan: &PitrPlan,
    staged_dir: &Path,
    cancelled: &(dyn Fn() -> bool + Sync),
    progress: &(dyn Fn(String) + Sync),
) -> Result<(String, Staged), String> {
    let ids = match inputs.identity {
        Some(p) => Some(crate::jobs::backup::verify::load_identities(p)?),
        None => None,
    };
    let mut sums = String::new();
    let mut staged = Staged::default();
    for (i, name) in plan.segments.iter().enumerate() {
        if cancelled() {
            return Err("cancelled".into());
        }
        // The last may come from the in-flight segment's copy: staged under the full name.
        let listed = plan.index_name(i);
        let entry = inputs
            .entries
            .iter()
            .find(|e| e.name == listed)
            .ok_or_else(|| format!("segment {listed} is not in the archive's index"))?;
        if i % 16 == 0 {
            progress(format!(
                "staging WAL: {name} ({} of {})",
                i + 1,
                plan.segments.len()
            ));
        }
        let sha = segment(
            inputs.archive_dir,
            entry,
            ids.as_deref(),
            &staged_dir.join(name),
        )?;
        sums.push_str(&format!("{sha}  {name}\n"));
        staged.segments += 1;
        staged.wal_bytes += entry.wal_bytes;
    }
    Ok((sums, staged))
}

/// One `syncfs(2)` of the file system holding `dir`: every file written above (nothing was
/// fsynced one by one) is on disk before the restore reports success, so a crash afterwards
/// cannot leave a data directory with holes that PostgreSQL would start on. It is also why
/// `--start` may ask the server for `recovery_init_sync_method = syncfs`.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let handle = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&handle)?;
    Ok(())
}

/// Decrypts and decodes one archived segment into `out_path`; its plain SHA-256.
fn segment(
    archive_dir: &Path,
    entry: &Entry,
    ids: Option<&[Box<dyn age::Identity>]>,
    out_path: &Path,
) -> Result<String, String> {
    let name = &entry.name;
    let encrypted = entry.file.ends_with(".age");
    if encrypted && ids.is_none() {
        return Err(format!(
            "segment {name} is encrypted and no identity was given (--identity, or the \
             backup job's verify-identity-file)"
        ));
    }
    let zstd = entry.file.contains(".zst");
    let mut out = stream::Hashing::new(io::BufWriter::new(
        std::fs::File::create(out_path)
            .map_err(|e| format!("creating {}: {e}", out_path.display()))?,
    ));
    let read = stream::read_stream(
        &archive_dir.join(&entry.file),
        zstd,
        if encrypted { ids } else { None },
        Some(&mut out),
    )
    .map_err(|e| format!("segment {name}: reading {}: {e}", entry.file))?;
    if read.written.sha256 != entry.sha256 || read.written.bytes != entry.bytes {
        return Err(format!(
            "segment {name} is damaged: {} has sha256 {} ({} bytes), the archive's index says \
             {} ({} bytes)",
            entry.file, read.written.sha256, read.written.bytes, entry.sha256, entry.bytes
        ));
    }
    if let Some(e) = read.decode_error {
        return Err(format!(
            "segment {name}: cannot decrypt or decode {}: {e}",
            entry.file
        ));
    }
    out.flush()
        .map_err(|e| format!("writing {}: {e}", out_path.display()))?;
    if out.bytes != entry.wal_bytes {
        return Err(format!(
            "segment {name} is damaged: it decodes to {} bytes, not {}",
            out.bytes, entry.wal_bytes
        ));
    }
    Ok(stream::hex(&out.hasher.finalize()))
}

/// `recovery.signal`, and the recovery settings appended to `postgresql.auto.conf` (which
/// wins over postgresql.conf).
fn recovery_settings(
    dir: &Path,
    staged: &Path,
    atpred: &Path,
    plan: &PitrPlan,
) -> Result<(), String> {
    let command = format!(
        "{} wal-fetch {} %f %p",
        shell_quote(&atpred.to_string_lossy()),
        shell_quote(&staged.to_string_lossy())
    );
    let mut conf = format!(
        "\n# atpred restore --pitr: base backup {}, WAL {} to {}{}\nrestore_command = {}\n",
        plan.base,
        plan.first(),
        plan.last(),
        plan.partial.as_ref().map_or_else(String::new, |t| format!(
            " (the last from {}, {} bytes of WAL)",
            t.name, t.holds
        )),
        guc_quote(&command)
    );
    if let Some(t) = plan.target {
        conf.push_str(&format!(
            "recovery_target_time = {}\nrecovery_target_action = 'promote'\n",
            guc_quote(&pg_time(t))
        ));
    }
    let auto = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto)
        .map_err(|e| format!("opening {}: {e}", auto.display()))?;
    f.write_all(conf.as_bytes())
        .map_err(|e| format!("writing {}: {e}", auto.display()))?;
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| format!("writing {}: {e}", signal.display()))
}

/// A time as PostgreSQL reads a timestamptz, in UTC.
pub fn pg_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// `'...'` for sh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `'...'` for a postgresql.conf value.
fn guc_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Leaves `dir` as it was: removed if `created`, else emptied.
pub fn clear(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p: PathBuf = entry.path();
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_both_layers() {
        let c = format!("{} x", super::shell_quote("/a b/it's"));
        assert_eq!(c, r"'/a b/it'\''s' x");
        assert_eq!(super::guc_quote(&c), r"'''/a b/it''\''''s'' x'");
    }
}
