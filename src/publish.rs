//! Atomic publication of files, the one audited way atpred writes a whole file (state, history,
//! manifests, offsite state, the metrics textfile, schedule state): open the folder once, create
//! a temporary file with a random name relative to that handle (`O_EXCL | O_NOFOLLOW`, so a
//! name planted in a shared folder can neither redirect nor replace the write), write, fsync,
//! rename over the target within the same handle, fsync the folder. A crash at any moment
//! leaves the old file or the new one, never a mix.
//!
//! Whether a folder is safe to write in at all (who else may write to it and its parents) is
//! [`crate::trust`]'s question, asked at config load.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rand::Rng;
use rustix::fs::{AtFlags, Mode, OFlags};

/// Random bytes in a temporary name: 2^64 names cannot be guessed or planted in advance.
const TEMP_RANDOM_BYTES: usize = 8;
/// Attempts at a fresh temporary name before giving up (only a planted name collides).
const TEMP_ATTEMPTS: usize = 8;

/// Replaces `path` with `contents`, created with `mode` (whatever the umask).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let folder = open_dir(dir)?;
    write_atomic_at(&folder, name, contents, mode)
        .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
}

/// Opens a folder as a handle for the `*at` calls.
pub fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", dir.display())))
}

/// Replaces `name` in the folder `dir` with `contents` (mode `mode`), never leaving the folder
/// the handle refers to.
pub fn write_atomic_at(dir: &impl AsFd, name: &str, contents: &[u8], mode: u32) -> io::Result<()> {
    let (file, tmp) = create_temp(dir, name)?;
    let result = (|| {
        let mut f = File::from(file);
        // The mode given to open is masked by the umask; set it exactly.
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
        rustix::fs::fsync(dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    result
}

/// A new file `.NAME.<random>.tmp` in `dir`, created exclusively and never through a symlink.
fn create_temp(dir: &impl AsFd, name: &str) -> io::Result<(OwnedFd, String)> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let random: [u8; TEMP_RANDOM_BYTES] = rand::rng().random();
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = format!(".{name}.{hex}.tmp");
        match rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((fd, tmp)),
            Err(rustix::io::Errno::EXIST) => last = Some(rustix::io::Errno::EXIST),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| io::Error::other("no temporary name"), io::Error::from))
}

/// fsyncs a directory so that a rename or create in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_atomically_with_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    }

    /// The temporary name of old (`.NAME.tmp-<pid>`) could be planted as a symlink to a file
    /// elsewhere: the write went there and chmodded it. Now the name is random and a planted
    /// name is never followed.
    #[test]
    fn publish_a_planted_symlink_at_the_old_temp_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("shadow");
        std::fs::write(&victim, b"root only\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let planted = dir
            .path()
            .join(format!(".atpred.prom.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&dir.path().join("atpred.prom"), b"metrics\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"root only\n");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read(dir.path().join("atpred.prom")).unwrap(),
            b"metrics\n"
        );
        assert!(planted.symlink_metadata().unwrap().file_type().is_symlink());
    }
}
