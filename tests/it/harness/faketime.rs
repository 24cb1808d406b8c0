//! [`FakeClock`]: the daemon's wall clock moved by libfaketime (`LD_PRELOAD`), its offset read
//! from a file on every clock call; the monotonic clock is left alone, as a real clock step or
//! a downtime leaves it, so the daemon's timers keep working.

use std::path::{Path, PathBuf};

use super::DaemonBuilder;

/// The offset file of one test's daemon.
pub struct FakeClock {
    file: PathBuf,
}

impl FakeClock {
    /// A clock at offset 0, its file in `dir`.
    pub fn new(dir: &Path) -> FakeClock {
        let clock = FakeClock {
            file: dir.join("faketime"),
        };
        clock.set(0);
        clock
    }

    /// `builder` with the daemon preloading libfaketime and reading this clock's file.
    pub fn apply(&self, builder: DaemonBuilder) -> DaemonBuilder {
        builder
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME_TIMESTAMP_FILE", &self.file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    }

    /// Moves the daemon's wall clock `seconds` from the real one (`+N` / `-N` in the file).
    /// Replaced by a rename: the daemon re-reads the file on every clock call and must never
    /// see it half written.
    pub fn set(&self, seconds: i64) {
        let next = self.file.with_extension("next");
        std::fs::write(&next, format!("{seconds:+}\n")).expect("write the faketime file");
        std::fs::rename(&next, &self.file).expect("replace the faketime file");
    }
}

/// libfaketime's preload library, or a panic with the package to install.
fn libfaketime() -> PathBuf {
    let found = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketime.so.1")))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("libfaketime is not installed: apt-get install faketime (see .ci/deps)")
    })
}
