//! A `NOTIFY_SOCKET` the test owns: every sd_notify datagram the daemon sends is recorded.
//!
//! A background thread receives datagrams (each is newline-separated `KEY=VALUE` lines) into a
//! shared list and wakes waiters through a condvar, so tests wait for a message, never sleep.
//!
//! [`NotifySocket::sync`] makes "everything sent so far has been recorded" exact: a unix datagram
//! is queued at the receiver when `send` returns, and the queue is FIFO, so once a marker sent by
//! the test is collected, so is every message sent before it (e.g. by a process that has exited).

use std::net::Shutdown;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Distinguishes several notify sockets bound in one directory.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// The prefix of [`NotifySocket::sync`] markers; they are counted, never recorded as messages.
const SYNC_PREFIX: &str = "X_ATPRED_HARNESS_SYNC=";

#[derive(Default)]
struct Shared {
    log: Mutex<Log>,
    arrived: Condvar,
}

#[derive(Default)]
struct Log {
    messages: Vec<String>,
    /// The highest sync marker collected.
    synced: usize,
}

/// The bound socket and its collector thread; dropping it stops the thread.
pub struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
    shared: Arc<Shared>,
    stopping: Arc<AtomicBool>,
    collector: Option<JoinHandle<()>>,
    syncs: AtomicUsize,
}

/// A predicate for [`NotifySocket::wait_for`]: the message has exactly this line, e.g.
/// `line("READY=1")`.
pub fn line(expected: &str) -> impl Fn(&str) -> bool + '_ {
    move |message| message.lines().any(|l| l == expected)
}

impl NotifySocket {
    /// Binds `<dir>/notify-<n>.sock` and starts collecting.
    pub fn bind(dir: &Path) -> NotifySocket {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("notify-{id}.sock"));
        let socket = UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("bind notify socket {}: {e}", path.display()));
        let shared = Arc::new(Shared::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let receiver = socket.try_clone().expect("clone the notify socket");
        let collector = {
            let (shared, stopping) = (Arc::clone(&shared), Arc::clone(&stopping));
            std::thread::spawn(move || collect(&receiver, &shared, &stopping))
        };
        NotifySocket {
            path,
            socket,
            shared,
            stopping,
            collector: Some(collector),
            syncs: AtomicUsize::new(0),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        self.lock().messages.clone()
    }

    /// How many messages have arrived; a mark for [`Self::wait_for_since`].
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// How many messages satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lock().messages.iter().filter(|m| pred(m)).count()
    }

    /// Waits until some message satisfies `pred`; returns it, or on timeout an error that lists
    /// everything received.
    pub fn wait_for(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        self.wait_for_since(0, pred, timeout)
    }

    /// Like [`Self::wait_for`], looking only at messages from index `since` on (take it from
    /// [`Self::len`] before the action, e.g. to see the READY=1 that follows a reload).
    pub fn wait_for_since(
        &self,
        since: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut log = self.lock();
        loop {
            if let Some(found) = log.messages.iter().skip(since).find(|m| pred(m)) {
                return Ok(found.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no matching notify message within {timeout:?} (from index {since}); received: {:?}",
                    log.messages
                ));
            }
            log = self
                .shared
                .arrived
                .wait_timeout(log, left)
                .expect("notify lock")
                .0;
        }
    }

    /// Returns once every datagram sent to the socket before this call has been recorded.
    pub fn sync(&self) {
        let n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        let marker = format!("{SYNC_PREFIX}{n}");
        let sender = UnixDatagram::unbound().expect("datagram socket for a sync marker");
        sender
            .send_to(marker.as_bytes(), &self.path)
            .expect("send a sync marker to the notify socket");
        let timeout = Duration::from_secs(10);
        let (log, waited) = self
            .shared
            .arrived
            .wait_timeout_while(self.lock(), timeout, |log| log.synced < n)
            .expect("notify lock poisoned");
        assert!(
            !waited.timed_out() || log.synced >= n,
            "sync marker {n} not collected within {timeout:?}"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared.log.lock().expect("notify lock poisoned")
    }
}

fn collect(socket: &UnixDatagram, shared: &Shared, stopping: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.recv(&mut buf) {
            // After shutdown(Read) recv returns 0 at once; an empty datagram also reads as 0.
            Ok(0) if stopping.load(Ordering::Acquire) => return,
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut log = shared.log.lock().expect("notify lock poisoned");
                match message
                    .strip_prefix(SYNC_PREFIX)
                    .and_then(|m| m.parse().ok())
                {
                    Some(marker) => log.synced = log.synced.max(marker),
                    None => log.messages.push(message),
                }
                drop(log);
                shared.arrived.notify_all();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.socket.shutdown(Shutdown::Read);
        if let Some(collector) = self.collector.take() {
            let _ = collector.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
