//! Early writeback: data that must reach the disk anyway (a backup's file, a restored data
//! directory) is sent there while more is still being produced, instead of all of it at the
//! final fsync. Every [`KICK`] bytes written to a file, a handle to it goes to a thread that
//! fdatasyncs it, so the disk writes while the CPU compresses or decodes, and the final fsync
//! (or syncfs) has only the tail left. Without it, a few hundred MiB stay dirty in the page
//! cache (far below the kernel's own writeback threshold on a machine with memory to spare)
//! and the final fsync writes them all while the CPU waits.
//!
//! The writer is never held up by the thread: a handle it has no room for is dropped, and
//! that data goes at the next kick or the final fsync instead. A writeback error is kept and
//! returned by [`Syncer::finish`].

use std::cell::OnceCell;
use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Written to a file since its last writeback start, before the next one.
pub const KICK: u64 = 32 << 20;

/// The thread that fdatasyncs the files it is handed, started at the first kick (a WAL
/// segment or a small dump never needs it).
#[derive(Default)]
pub struct Syncer {
    thread: OnceCell<(SyncSender<File>, JoinHandle<io::Result<()>>)>,
}

impl Syncer {
    pub fn new() -> Syncer {
        Syncer::default()
    }

    /// Starts writing `f`'s dirty data to disk, unless the thread is already busy enough.
    pub fn kick(&self, f: &File) {
        let (files, _) = self.thread.get_or_init(|| {
            let (files, rx): (SyncSender<File>, Receiver<File>) = sync_channel(4);
            (files, std::thread::spawn(move || sync_each(rx)))
        });
        if let Ok(dup) = f.try_clone() {
            let _ = files.try_send(dup);
        }
    }

    /// Waits for the handles already sent; the first writeback error, if any.
    pub fn finish(self) -> io::Result<()> {
        let Some((files, thread)) = self.thread.into_inner() else {
            return Ok(());
        };
        drop(files);
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writeback thread panicked")))
    }
}

fn sync_each(files: Receiver<File>) -> io::Result<()> {
    let mut first_error = Ok(());
    for f in files {
        if let Err(e) = f.sync_data()
            && first_error.is_ok()
        {
            first_error = Err(io::Error::new(e.kind(), format!("writing to disk: {e}")));
        }
    }
    first_error
}

/// A file being written that kicks `syncer` (when there is one) every [`KICK`] bytes.
pub struct Kicking<'a> {
    file: File,
    syncer: Option<&'a Syncer>,
    unsynced: u64,
}

impl<'a> Kicking<'a> {
    pub fn new(file: File, syncer: Option<&'a Syncer>) -> Kicking<'a> {
        Kicking {
            file,
            syncer,
            unsynced: 0,
        }
    }

    /// Kicks the bytes written since the last kick when there are at least `min` of them.
    pub fn kick_rest(&mut self, min: u64) {
        if self.unsynced >= min
            && let Some(s) = self.syncer
        {
            s.kick(&self.file);
            self.unsynced = 0;
        }
    }

    pub fn into_file(self) -> File {
        self.file
    }
}

impl Write for Kicking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= KICK {
            if let Some(s) = self.syncer {
                s.kick(&self.file);
            }
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `f` not yet on disk (dirty, or being written), by `cachestat(2)` (Linux 6.5;
    /// 451 on every architecture since the unified numbering), which neither rustix nor nix
    /// wraps yet.
    #[allow(unsafe_code)]
    fn unwritten_pages(f: &File) -> u64 {
        use std::os::fd::AsRawFd;
        // The range: offset 0, length 0 (to the end).
        let range = [0u64; 2];
        // nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted.
        let mut stat = [0u64; 5];
        // SAFETY: the range and the five counters are the kernel's layout and outlive the call.
        let rc = unsafe { libc::syscall(451, f.as_raw_fd(), range.as_ptr(), stat.as_mut_ptr(), 0) };
        assert_eq!(rc, 0, "cachestat: {}", io::Error::last_os_error());
        stat[1] + stat[2]
    }

    #[test]
    fn the_data_written_through_kicking_is_on_disk_once_the_syncer_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let syncer = Syncer::new();
        let mut out = Kicking::new(File::create(&path).unwrap(), Some(&syncer));
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..3 * (KICK >> 20) {
            out.write_all(&chunk).unwrap();
        }
        out.kick_rest(1);
        let file = out.into_file();
        syncer.finish().unwrap();
        // No fsync of our own: every byte went at a kick (the last at the very end).
        assert_eq!(unwritten_pages(&file), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * KICK);
    }
}
