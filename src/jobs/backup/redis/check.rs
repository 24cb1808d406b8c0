//! Verification of a Redis backup, by level:
//!
//! - checksum: re-read and compare with the SHA-256 streamed at backup time;
//! - full: also decrypt and decode it in the same pass into `redis-check-rdb` (which parses
//!   every key and checks the RDB's own CRC64);
//! - restore: unpack it into a private folder in restore-scratch-dir (checksum checked on
//!   the way), run `redis-check-rdb` on it, then load it into a scratch redis-server
//!   ([`super::drill`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::{Compression, VerifyLevel};
use crate::jobs::JobError;
use crate::jobs::backup::manifest::{FileSum, Manifest, Verification};
use crate::jobs::backup::stream;
use crate::jobs::backup::verify::{
    Checked, Found, VerifyEnv, check_sums, identity_for, load_identities, verdict,
};
use crate::process::{self, ProcessError, ProcessSpec};
use crate::restore::evidence::{self, Loaded};

/// The checker, from redis-tools; on PATH.
const CHECKER: &str = "redis-check-rdb";
const INSTALL_HINT: &str = "install redis-tools (apt-get install redis-tools)";

/// Verifies the Redis backup in `dir` at `level`; only cancellation is an error.
pub async fn verify(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    level: VerifyLevel,
) -> Result<Verification, JobError> {
    let t0 = std::time::Instant::now();
    let mut loaded = None;
    let verification = verdict(checked(env, dir, m, level, &mut loaded).await)?;
    // A drill, as a PostgreSQL one: in the folder's evidence.json.
    if verification.level == VerifyLevel::Restore {
        evidence::drilled_source(dir, m, &verification, t0, loaded);
    }
    Ok(verification)
}

async fn checked(
    env: &VerifyEnv<'_>,
    dir: &Path,
    m: &Manifest,
    level: VerifyLevel,
    loaded: &mut Option<Loaded>,
) -> Checked {
    let file = m
        .files
        .first()
        .ok_or(Found::Problem(level, "the manifest lists no file".into()))?
        .clone();
    let (level, note, identity) = identity_for(env, m, level)?;
    let path = dir.join(&file.path);
    match level {
        VerifyLevel::Checksum => check_sums(dir, vec![file])
            .await
            .map(|d| (level, format!("{note}{d}"))),
        VerifyLevel::Full => {
            let keys = check_piped(env, &path, m, &file, identity).await?;
            Ok((
                level,
                format!("{note}redis-check-rdb: RDB OK, {keys}; checksums match"),
            ))
        }
        VerifyLevel::Restore => {
            let scratch = env.scratch_dir.ok_or(Found::Problem(
                level,
                "no restore-scratch-dir to load the RDB from".into(),
            ))?;
            let folder = DrillDir::create(scratch, &m.id).map_err(|e| Found::Problem(level, e))?;
            let rdb = folder.path().join(RDB);
            let (from, to, m2, f2) = (path.clone(), rdb.clone(), m.clone(), file.clone());
            tokio::task::spawn_blocking(move || unpack(&from, &m2, &f2, identity.as_deref(), &to))
                .await
                .map_err(|e| Found::Problem(level, e.to_string()))?
                .map_err(|e| Found::Problem(level, e))?;
            let keys = check_file(env, &rdb, level).await?;
            let (drilled, counts) = super::drill::drill(env, folder.path(), m).await?;
            *loaded = Some(counts);
            Ok((
                level,
                format!("{note}redis-check-rdb: RDB OK, {keys}; {drilled}"),
            ))
        }
    }
}

/// The RDB's name in a drill folder (what redis-server loads).
pub(super) const RDB: &str = "dump.rdb";

/// A private folder (0700) in restore-scratch-dir, removed with what is in it when dropped.
pub(super) struct DrillDir(PathBuf);

impl DrillDir {
    fn create(scratch: &Path, id: &str) -> Result<DrillDir, String> {
        crate::restore::unpack::ensure_dir(scratch).map_err(|e| e.to_string())?;
        let path = scratch.join(format!(".redis-drill-{id}-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(DrillDir(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DrillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Decrypts and decodes the backup file `from` into a new 0600 file `to` (fsynced), checking
/// the stored bytes against the manifest on the way. Blocking.
pub fn unpack(
    from: &Path,
    m: &Manifest,
    file: &FileSum,
    identity: Option<&Path>,
    to: &Path,
) -> Result<u64, String> {
    let input = File::open(from).map_err(|e| format!("reading {}: {e}", file.path))?;
    unpack_from(input, m, file, identity, to)
}

/// [`unpack`] from any byte source (the copy at an offsite target, read as it downloads).
pub fn unpack_from(
    input: impl io::Read,
    m: &Manifest,
    file: &FileSum,
    identity: Option<&Path>,
    to: &Path,
) -> Result<u64, String> {
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(to)
        .map_err(|e| format!("{}: {e}", to.display()))?;
    let ids = identity.map(load_identities).transpose()?;
    let zstd = matches!(m.compression, Compression::Zstd { .. });
    let mut counted = Counting(&mut out, 0);
    let back = stream::read_from(input, zstd, ids.as_deref(), Some(&mut counted))
        .map_err(|e| format!("reading {}: {e}", file.path))?;
    let rdb_bytes = counted.1;
    let w = &back.written;
    if w.sha256 != file.sha256 || w.bytes != file.bytes {
        return Err(format!(
            "{}: checksum mismatch ({} bytes, sha256 {}; manifest says {} bytes, {})",
            file.path, w.bytes, w.sha256, file.bytes, file.sha256
        ));
    }
    if let Some(e) = back.decode_error {
        return Err(format!("decoding {}: {e}", file.path));
    }
    out.sync_all()
        .map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(rdb_bytes)
}

struct Counting<'a>(&'a mut File, u64);

impl io::Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// One pass: the file is hashed, decrypted and decoded into `redis-check-rdb /dev/stdin`.
/// Returns the checker's "N keys read".
async fn check_piped(
    env: &VerifyEnv<'_>,
    path: &Path,
    m: &Manifest,
    file: &FileSum,
    identity: Option<PathBuf>,
) -> Result<String, Found> {
    let level = VerifyLevel::Full;
    let mut spec = ProcessSpec::new(CHECKER).args(["/dev/stdin"]);
    spec.stdin = true;
    let mut running = process::spawn(&spec).map_err(|e| missing(level, e))?;
    let stdin = running
        .take_stdin()
        .ok_or(Found::Problem(level, "redis-check-rdb has no stdin".into()))?;
    let pipe = stdin
        .into_owned_fd()
        .and_then(stream::blocking_pipe)
        .map_err(|e| Found::Problem(level, e.to_string()))?;
    let zstd = matches!(m.compression, Compression::Zstd { .. });
    let from = path.to_owned();
    let feed = tokio::task::spawn_blocking(move || {
        let mut pipe = pipe;
        let ids = identity
            .map(|p| load_identities(&p))
            .transpose()
            .map_err(io::Error::other)?;
        stream::read_stream(&from, zstd, ids.as_deref(), Some(&mut pipe))
    });
    let (waited, fed) = tokio::join!(running.wait(env.cancel, |_, _| {}), feed);
    let fed = fed
        .map_err(|e| Found::Problem(level, e.to_string()))?
        .map_err(|e| Found::Problem(level, format!("reading {}: {e}", file.path)))?;
    let w = &fed.written;
    if w.sha256 != file.sha256 || w.bytes != file.bytes {
        return Err(Found::Problem(
            level,
            format!(
                "{}: checksum mismatch ({} bytes, sha256 {}; manifest says {} bytes, {})",
                file.path, w.bytes, w.sha256, file.bytes, file.sha256
            ),
        ));
    }
    let keys = outcome(level, waited)?;
    if let Some(e) = fed.decode_error {
        return Err(Found::Problem(
            level,
            format!("decoding {}: {e}", file.path),
        ));
    }
    Ok(keys)
}

/// `redis-check-rdb FILE`; returns its "N keys read".
async fn check_file(env: &VerifyEnv<'_>, rdb: &Path, level: VerifyLevel) -> Result<String, Found> {
    let spec = ProcessSpec::new(CHECKER).args([rdb]);
    let running = process::spawn(&spec).map_err(|e| missing(level, e))?;
    outcome(level, running.wait(env.cancel, |_, _| {}).await)
}

fn missing(level: VerifyLevel, e: ProcessError) -> Found {
    Found::Problem(level, format!("{e}; {INSTALL_HINT}"))
}

fn outcome(
    level: VerifyLevel,
    waited: Result<process::ProcessOutput, ProcessError>,
) -> Result<String, Found> {
    match waited {
        Err(ProcessError::Cancelled) => Err(Found::Cancelled),
        Err(e) => Err(Found::Problem(level, format!("redis-check-rdb: {e}"))),
        Ok(out) if !out.status.success() => {
            let found: Vec<&str> = out
                .stdout_tail
                .iter()
                .map(String::as_str)
                .filter(|l| !l.starts_with("[info]"))
                .rev()
                .take(4)
                .collect();
            Err(Found::Problem(
                level,
                format!(
                    "redis-check-rdb failed with {}: {}",
                    process::describe_status(&out.status),
                    found.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            ))
        }
        Ok(out) => Ok(out
            .stdout_tail
            .iter()
            .find_map(|l| l.strip_prefix("[info] "))
            .filter(|l| l.ends_with("keys read"))
            .unwrap_or("keys read")
            .to_owned()),
    }
}
