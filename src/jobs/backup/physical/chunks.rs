//! The hand-over between the thread that reads, hashes and decodes a base backup and the
//! thread that untars it: decoded bytes travel in 1 MiB buffers over a bounded channel, and
//! the emptied buffers travel back to be filled again. Unlike a pipe (64 KiB, read 8 KiB at a
//! time by the tar reader), a hand-over costs no system call and no copy through the kernel,
//! and memory stays bounded: at most [`IN_FLIGHT`] buffers plus the two in hand.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Size of one buffer.
pub const CHUNK: usize = 1 << 20;
/// Buffers queued between the two threads.
pub const IN_FLIGHT: usize = 4;

/// A buffer (always [`CHUNK`] long, so it is zeroed once) and how much of it is data.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// The writing end (the decoder's).
pub struct ChunkWriter {
    full: SyncSender<Chunk>,
    empty: Receiver<Vec<u8>>,
    current: Chunk,
}

/// The reading end (the tar reader's). It reads an end of stream once the writer is gone.
pub struct ChunkReader {
    full: Receiver<Chunk>,
    empty: SyncSender<Vec<u8>>,
    current: Chunk,
    at: usize,
}

/// A connected pair.
pub fn channel() -> (ChunkWriter, ChunkReader) {
    let (full_tx, full_rx) = sync_channel(IN_FLIGHT);
    let (empty_tx, empty_rx) = sync_channel(IN_FLIGHT + 2);
    (
        ChunkWriter {
            full: full_tx,
            empty: empty_rx,
            current: Chunk {
                buf: vec![0; CHUNK],
                len: 0,
            },
        },
        ChunkReader {
            full: full_rx,
            empty: empty_tx,
            current: Chunk {
                buf: Vec::new(),
                len: 0,
            },
            at: 0,
        },
    )
}

impl ChunkWriter {
    /// Reads `from` to its end straight into the buffers (no intermediate copy), handing each
    /// over as it fills, and the last one at the end.
    pub fn pour(&mut self, from: &mut dyn Read) -> io::Result<()> {
        loop {
            let c = &mut self.current;
            match from.read(&mut c.buf[c.len..]) {
                Ok(0) => return self.flush(),
                Ok(n) => c.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.current.len == CHUNK {
                self.send()?;
            }
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let buf = match self.empty.try_recv() {
            Ok(buf) if buf.len() == CHUNK => buf,
            _ => vec![0; CHUNK],
        };
        let full = std::mem::replace(&mut self.current, Chunk { buf, len: 0 });
        self.full
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the untar stopped reading"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let c = &mut self.current;
        let n = buf.len().min(CHUNK - c.len);
        c.buf[c.len..c.len + n].copy_from_slice(&buf[..n]);
        c.len += n;
        if c.len == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands over what is buffered.
    fn flush(&mut self) -> io::Result<()> {
        if self.current.len == 0 {
            return Ok(());
        }
        self.send()
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len {
            let Ok(next) = self.full.recv() else {
                return Ok(0);
            };
            let done = std::mem::replace(&mut self.current, next);
            // Only a full-size buffer goes back (the reader starts with an empty one, which
            // the writer could not fill); the writer may be gone or have enough buffers:
            // then this one is freed.
            if done.buf.len() == CHUNK {
                let _ = self.empty.try_send(done.buf);
            }
            self.at = 0;
        }
        let c = &self.current;
        let n = buf.len().min(c.len - self.at);
        buf[..n].copy_from_slice(&c.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_whole_and_in_order_across_buffers() {
        let data: Vec<u8> = (0..3 * CHUNK + 12_345).map(|i| (i % 253) as u8).collect();
        let (mut w, mut r) = channel();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            // Odd-sized writes, so writes straddle buffer boundaries.
            for piece in sent.chunks(70_001) {
                w.write_all(piece).unwrap();
            }
            w.flush().unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    }

    #[test]
    fn pour_hands_over_a_reader_to_its_end() {
        let data: Vec<u8> = (0..2 * CHUNK + 7).map(|i| (i % 241) as u8).collect();
        let (mut w, mut r) = channel();
        let sent = data.clone();
        let writer = std::thread::spawn(move || w.pour(&mut &sent[..]).unwrap());
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == data);
    }

    #[test]
    fn the_writer_learns_when_the_reader_is_gone() {
        let (mut w, r) = channel();
        drop(r);
        let err = w.write_all(&vec![0u8; 2 * CHUNK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
