//! copytruncate's copy: the log copied to a temporary name while its writer goes on appending,
//! then truncated the moment a read finds its end at a line end; and, after a crash, whether a
//! leftover copy still matches the log (so the log was never truncated).

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::files::{Owner, create_new, open_nofollow};

/// What a copytruncate did.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CopyReport {
    pub bytes: u64,
    /// Passes over the tail appended while copying.
    pub passes: u32,
    /// Between the last read finding the end and the truncation: lines written then are lost.
    pub window_us: u64,
}

/// Copies `log` to the new file `temp` (same owner and mode), catching up with what the writer
/// appends meanwhile, then truncates `log` the moment a read finds its end. `before_truncate` is
/// the test hook's pause point. The copy is not yet fsynced: the caller does that.
///
/// A copy that fails (a full disk) is removed: the log, not yet truncated, still holds every
/// line, and a partial copy would hold on to the space the writer needs until the next run.
pub fn copy_truncate(
    log: &Path,
    temp: &Path,
    before_truncate: impl Fn(),
) -> io::Result<(File, CopyReport)> {
    let mut src = open_nofollow(log, true)?;
    let owner = Owner::of(&src.metadata()?)
        .in_dir(temp.parent().unwrap_or(Path::new("/")))?
        .ok_or_else(|| {
            io::Error::other(format!(
                "{}: atpred cannot give a copy its owner and group",
                log.display()
            ))
        })?;
    let mut dst = create_new(temp, owner.mode)?;
    match copy_then_truncate(&mut src, &mut dst, owner, before_truncate) {
        Ok(report) => Ok((dst, report)),
        Err(e) => {
            drop(dst);
            let _ = std::fs::remove_file(temp);
            Err(io::Error::new(
                e.kind(),
                format!("copy to {}: {e}", temp.display()),
            ))
        }
    }
}

/// [`copy_truncate`] once both files are open; `log` is truncated only by its last step.
fn copy_then_truncate(
    src: &mut File,
    dst: &mut File,
    owner: Owner,
    before_truncate: impl Fn(),
) -> io::Result<CopyReport> {
    owner.apply(dst)?;
    // The bulk goes through copy_file_range (std::io::copy between files); each later pass only
    // reads what was appended since, so the last one is short.
    let mut bytes = io::copy(src, dst)?;
    let mut passes = 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut last_byte = last_byte_of(src, bytes)?;
    let started = Instant::now();
    loop {
        let n = src.read(&mut buf)?;
        if n > 0 {
            dst.write_all(&buf[..n])?;
            bytes += n as u64;
            last_byte = Some(buf[n - 1]);
            continue;
        }
        let end = Instant::now();
        // A reader can see part of a write in progress (the writer's lock does not stop reads):
        // truncating then would tear its line in two. Another pass gets the rest.
        let torn = last_byte.is_some_and(|b| b != b'\n') && started.elapsed() < TEAR_WAIT;
        if torn || src.metadata()?.len() > bytes {
            passes += 1;
            std::thread::yield_now();
            continue;
        }
        before_truncate();
        src.set_len(0)?;
        let window = end.elapsed();
        return Ok(CopyReport {
            bytes,
            passes,
            window_us: window.as_micros().min(u64::MAX as u128) as u64,
        });
    }
}

/// How long copytruncate waits for a line in progress to end before truncating anyway (for a
/// writer that leaves lines open).
const TEAR_WAIT: Duration = Duration::from_millis(100);

/// The byte before offset `len` of `f`, leaving the offset at `len`.
fn last_byte_of(f: &mut File, len: u64) -> io::Result<Option<u8>> {
    if len == 0 {
        return Ok(None);
    }
    let mut b = [0u8];
    f.seek(io::SeekFrom::Start(len - 1))?;
    f.read_exact(&mut b)?;
    Ok(Some(b[0]))
}

/// Whether `temp` (left by an interrupted copytruncate) still matches the start of `log`, i.e.
/// the log was not truncated yet: compares the first and the last MiB of `temp`.
pub fn copy_is_prefix(temp: &Path, log: &Path) -> io::Result<bool> {
    let mut t = open_nofollow(temp, false)?;
    let mut l = match open_nofollow(log, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = t.metadata()?.len();
    if l.metadata()?.len() < len {
        return Ok(false);
    }
    const PROBE: u64 = 1 << 20;
    for offset in [0, len.saturating_sub(PROBE)] {
        let n = PROBE.min(len) as usize;
        let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
        t.seek(io::SeekFrom::Start(offset))?;
        l.seek(io::SeekFrom::Start(offset))?;
        t.read_exact(&mut a)?;
        l.read_exact(&mut b)?;
        if a != b {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_truncate_moves_everything() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        std::fs::write(&log, b"one\ntwo\n").unwrap();
        let (_f, report) = copy_truncate(&log, &d.path().join(".copy"), || {}).unwrap();
        assert_eq!(report.bytes, 8);
        assert_eq!(
            std::fs::read(d.path().join(".copy")).unwrap(),
            b"one\ntwo\n"
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    }
}
