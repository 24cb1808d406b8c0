//! The scratch file while it is being unpacked: one writer appends, any number of readers
//! follow behind it. A reader that catches up with the writer waits for more (or for the end);
//! when the writer fails (a full disk, a cancel, a damaged archive) every reader gets an error
//! instead of waiting forever. This is what lets [`super::load`] copy a table's rows into
//! PostgreSQL as soon as they are unpacked, while the rest of the archive is still arriving.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// How far the file is written, and whether it is finished.
#[derive(Default)]
pub struct Growing {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    written: u64,
    /// `Some(None)`: complete; `Some(Some(why))`: the writer stopped short.
    end: Option<Option<String>>,
}

impl Growing {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state);
        self.changed.notify_all();
    }

    fn advance(&self, n: u64) {
        self.update(|s| s.written += n);
    }

    /// The bytes written so far.
    pub fn written(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .written
    }

    /// The writer is done: `None` when the file is complete, else why it is not. Only the
    /// first call counts.
    pub fn finish(&self, failed: Option<String>) {
        self.update(|s| {
            if s.end.is_none() {
                s.end = Some(failed);
            }
        });
    }

    /// Waits until there are bytes at `pos` and returns how many; 0 at the end of a complete
    /// file, an error when the writer stopped short.
    fn wait_for(&self, pos: u64) -> io::Result<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.written > pos {
                return Ok(state.written - pos);
            }
            match &state.end {
                Some(None) => return Ok(0),
                Some(Some(why)) => {
                    return Err(io::Error::other(format!("the unpacking stopped: {why}")));
                }
                None => {}
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The writing end: the scratch file, each write announced to the readers. Dropped without
/// [`Growing::finish`] (a panic), it tells them the file will not be complete.
pub struct Sink {
    pub file: File,
    pub growing: Arc<Growing>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.growing.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.growing.finish(Some("the writer ended".into()));
    }
}

/// A reader of the file from `pos` on, following the writer.
pub struct Follow {
    file: Arc<File>,
    pos: u64,
    growing: Arc<Growing>,
}

impl Follow {
    pub fn new(file: Arc<File>, pos: u64, growing: Arc<Growing>) -> Self {
        Self { file, pos, growing }
    }
}

impl Read for Follow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let ready = self.growing.wait_for(self.pos)?;
        let want = buf.len().min(usize::try_from(ready).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 && want > 0 {
            return Err(io::Error::other("the scratch file is shorter than written"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn pair() -> (Sink, Arc<File>, Arc<Growing>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let reader = Arc::new(File::open(&path).unwrap());
        let growing = Growing::new();
        let sink = Sink {
            file,
            growing: growing.clone(),
        };
        (sink, reader, growing)
    }

    #[test]
    fn a_reader_follows_the_writer_to_the_end() {
        let (mut sink, file, growing) = pair();
        let reader = std::thread::spawn({
            let growing = growing.clone();
            move || {
                let mut all = Vec::new();
                BufReader::new(Follow::new(file, 0, growing))
                    .read_to_end(&mut all)
                    .map(|_| all)
            }
        });
        for i in 0..100u8 {
            sink.write_all(&[i; 1000]).unwrap();
        }
        growing.finish(None);
        let all = reader.join().unwrap().unwrap();
        assert_eq!(all.len(), 100_000);
        assert!(all.chunks(1000).enumerate().all(|(i, c)| c[0] == i as u8));
    }

    #[test]
    fn a_failed_writer_fails_its_readers() {
        let (mut sink, file, growing) = pair();
        sink.write_all(b"half").unwrap();
        let reader = std::thread::spawn({
            let growing = growing.clone();
            move || {
                let mut all = Vec::new();
                Follow::new(file, 0, growing).read_to_end(&mut all)
            }
        });
        drop(sink);
        let e = reader.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("the writer ended"), "{e}");
    }
}
