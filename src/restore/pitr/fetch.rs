//! `atpred wal-fetch STAGED %f %p`: the `restore_command` of a point-in-time restore. It
//! copies the staged segment `%f` to `%p` after checking it against `STAGED/SHA256SUMS`.
//!
//! Exit codes follow what PostgreSQL makes of them: 1 when `%f` is not staged (a history file
//! recovery probes for, or the segment after the last one: recovery ends there normally), and
//! 126 for anything else (damage, an unreadable folder): PostgreSQL treats an exit above 125
//! as fatal and stops recovery, instead of ending it early and promoting a server that lacks
//! WAL.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::stage::SUMS;

/// The segment is not staged.
pub const EXIT_ABSENT: u8 = 1;
/// Damaged or unreadable: recovery must stop.
pub const EXIT_DAMAGED: u8 = 126;

/// Runs the subcommand; the exit code (messages on stderr, which lands in the server's log).
pub fn run(staged: &Path, file: &str, to: &Path) -> u8 {
    match fetch(staged, file, to) {
        Ok(true) => 0,
        Ok(false) => EXIT_ABSENT,
        Err(message) => {
            eprintln!("atpred wal-fetch: {message}");
            let _ = std::fs::remove_file(to);
            EXIT_DAMAGED
        }
    }
}

/// `Ok(false)` when `file` is not staged.
fn fetch(staged: &Path, file: &str, to: &Path) -> Result<bool, String> {
    if file.is_empty() || file.contains('/') || file.starts_with('.') {
        return Err(format!("{file:?} is not a WAL file name"));
    }
    let sums_path = staged.join(SUMS);
    let sums = std::fs::read_to_string(&sums_path)
        .map_err(|e| format!("cannot read {}: {e}", sums_path.display()))?;
    let Some(expected) = sums.lines().find_map(|l| {
        let (sum, name) = l.split_once("  ")?;
        (name == file).then(|| sum.to_owned())
    }) else {
        return Ok(false);
    };
    let from = staged.join(file);
    let mut input = std::fs::File::open(&from)
        .map_err(|e| format!("segment {file} is listed in {SUMS} but cannot be read: {e}"))?;
    let mut out =
        std::fs::File::create(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading segment {file}: {e}")),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing {}: {e}", to.display()))?;
    }
    let got = crate::jobs::backup::stream::hex(&hasher.finalize());
    if got != expected {
        return Err(format!(
            "segment {file} is damaged: sha256 {got}, {SUMS} says {expected}"
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_good_segment_says_absent_and_refuses_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let seg = "000000010000000000000003";
        std::fs::write(dir.path().join(seg), b"wal bytes").unwrap();
        let sum = crate::jobs::backup::stream::hex(&Sha256::digest(b"wal bytes"));
        std::fs::write(dir.path().join(SUMS), format!("{sum}  {seg}\n")).unwrap();
        let to = dir.path().join("RECOVERYXLOG");
        assert_eq!(run(dir.path(), seg, &to), 0);
        assert_eq!(std::fs::read(&to).unwrap(), b"wal bytes");
        assert_eq!(run(dir.path(), "00000002.history", &to), EXIT_ABSENT);
        assert_eq!(run(dir.path(), "../x", &to), EXIT_DAMAGED);
        std::fs::write(dir.path().join(seg), b"wal bytez").unwrap();
        assert_eq!(run(dir.path(), seg, &to), EXIT_DAMAGED);
        assert!(!to.exists(), "a damaged copy is not left for recovery");
    }
}
