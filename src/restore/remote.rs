//! `restore --target NAME`: restoring from the copy at an offsite target, which need not exist
//! in backup-dir any more.
//!
//! The plan comes from the remote manifest alone (read and checked as `backups --remote`
//! reads it: it must name the id asked for and list only paths inside the backup), so
//! `--dry-run` downloads nothing; it only checks with a HEAD request that the archive is there
//! with the size the manifest says. The restore reads the archive in part-sized ranges
//! ([`crate::offsite::reader`]) and hashes, decrypts and zstd-decodes it in one stream into
//! the same scratch file a local restore unpacks into: nothing encrypted is stored, and the
//! SHA-256 of every byte read is checked against the manifest before pg_restore starts.
//! A directory-format copy is many objects; it is refused with the way round it (fetch, then
//! restore).

use std::path::Path;

use object_store::path::Path as Key;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::exec::Env;
use super::growing::Sink;
use super::plan::{self, Archive, RestorePlan, UNPACK_FACTOR};
use super::unpack;
use super::{Options, RestoreError};
use crate::config::{Compression, Config, DumpFormat};
use crate::jobs::backup::manifest::{FileSum, Manifest};
use crate::offsite::{self, OffsiteError, Remote, reader};

/// The archive at the target, as the plan records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// The `[offsite.NAME]` target.
    pub target: String,
    /// The object's key there.
    pub key: String,
    /// The file's name in the manifest.
    pub file: String,
    pub zstd: bool,
    pub encrypted: bool,
    /// What the remote manifest says of the stored bytes.
    pub sha256: String,
    pub bytes: u64,
}

impl Fetch {
    /// Scratch space the preflight asks for: the plain archive in restore-scratch-dir.
    pub fn scratch_bytes(&self) -> u64 {
        if self.zstd {
            self.bytes.saturating_mul(UNPACK_FACTOR)
        } else {
            self.bytes
        }
    }

    fn file_sum(&self) -> FileSum {
        FileSum {
            path: self.file.clone(),
            bytes: self.bytes,
            sha256: self.sha256.clone(),
        }
    }

    fn object(&self) -> Result<Key, RestoreError> {
        Key::parse(&self.key)
            .map_err(|e| RestoreError::Failed(format!("the key {:?}: {e}", self.key)))
    }
}

/// Opens target `name` and plans the restore of its copy of backup `id`.
/// `target_cluster`: the restoring server's system identifier, for the source refusal.
pub async fn prepare(
    config: &Config,
    name: &str,
    id: &str,
    opts: &Options,
    target_cluster: Option<&str>,
) -> Result<(Remote, Manifest, RestorePlan), RestoreError> {
    let remote = open(config, name)?;
    let manifest = manifest(&remote, id).await?;
    let key_of = |f: &str| remote.key(id, f).to_string();
    let plan = plan(&manifest, name, key_of, opts, target_cluster)?;
    Ok((remote, manifest, plan))
}

/// The `[offsite.NAME]` target `name`, opened (its credentials file read now).
pub fn open(config: &Config, name: &str) -> Result<Remote, RestoreError> {
    let target = config.offsite.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.offsite.keys().map(String::as_str).collect();
        RestoreError::BadRequest(format!(
            "no offsite target {name:?} (configured: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })?;
    Remote::open(target).map_err(|e| RestoreError::Failed(e.to_string()))
}

/// The remote manifest of backup `id`, checked; an id that is not a committed, verified copy
/// at the target is the unknown-backup refusal, naming the target.
pub async fn manifest(remote: &Remote, id: &str) -> Result<Manifest, RestoreError> {
    let target = remote.name();
    if offsite::job_of_id(id).is_none() {
        return Err(RestoreError::UnknownBackup(format!(
            "{id:?} is not a backup id (YYYYMMDDTHHMMSSZ-JOB)"
        )));
    }
    let m = match offsite::catalog::read_manifest(remote, id).await {
        Ok(m) => m,
        // The commit marker is missing: no backup (or an unfinished copy) under that id.
        Err(e) if e.is_not_found() => {
            return Err(RestoreError::UnknownBackup(format!(
                "no backup {id:?} at offsite target {target}"
            )));
        }
        Err(e) => return Err(RestoreError::Failed(e.to_string())),
    };
    if !m.verified() {
        return Err(RestoreError::UnknownBackup(format!(
            "the copy of {id} at offsite target {target} failed its verification; it is not \
             restored"
        )));
    }
    Ok(m)
}

/// The plan to restore the copy `manifest` describes at `target`, its archive's key given by
/// `key_of` (from the file's name): the refusals, filters and steps of a local restore, with
/// the archive read from the target instead of backup-dir.
pub fn plan(
    manifest: &Manifest,
    target: &str,
    key_of: impl Fn(&str) -> String,
    opts: &Options,
    target_cluster: Option<&str>,
) -> Result<RestorePlan, RestoreError> {
    if opts.globals {
        return Err(RestoreError::BadRequest(format!(
            "--globals with --target is not done: fetch the copy first (atprectl backups \
             fetch {id} --target {target}), then restore it with --globals without --target",
            id = manifest.id
        )));
    }
    if manifest.format == DumpFormat::Directory {
        return Err(RestoreError::BadRequest(format!(
            "{id} at offsite target {target} is a directory-format dump, which is restored from \
             backup-dir only: fetch it first (atprectl backups fetch {id} --target {target}), \
             then restore it without --target",
            id = manifest.id
        )));
    }
    let mut plan = plan::plan(manifest, Path::new(""), opts, target_cluster)?;
    let file = manifest
        .files
        .first()
        .ok_or_else(|| RestoreError::UnknownBackup(format!("{}: lists no file", manifest.id)))?;
    let fetch = Fetch {
        target: target.to_owned(),
        key: key_of(&file.path),
        file: file.path.clone(),
        zstd: matches!(manifest.compression, Compression::Zstd { .. }),
        encrypted: manifest.encrypted(),
        sha256: file.sha256.clone(),
        bytes: file.bytes,
    };
    // The local plan's first step is its unpack from backup-dir when it has one.
    if matches!(plan.archive, Archive::Unpack { .. }) {
        plan.steps.remove(0);
    }
    plan.steps.insert(0, fetch_step(&fetch));
    plan.scratch_bytes = fetch.scratch_bytes();
    plan.archive = Archive::Fetch(fetch);
    Ok(plan)
}

fn fetch_step(f: &Fetch) -> String {
    let decode = match (f.encrypted, f.zstd) {
        (true, true) => "decrypting and zstd-decoding it in the same stream ",
        (true, false) => "decrypting it in the same stream ",
        (false, true) => "zstd-decoding it in the same stream ",
        (false, false) => "",
    };
    format!(
        "fetch {key} ({bytes} bytes) from offsite target {target}, checking its size and \
         SHA-256 against the remote manifest and {decode}into restore-scratch-dir (about \
         {scratch} bytes of scratch space; nothing encrypted is stored)",
        key = f.key,
        bytes = f.bytes,
        target = f.target,
        scratch = f.scratch_bytes()
    )
}

/// A dry run's check that the archive is at the target with its size (no download).
pub async fn check_present(remote: &Remote, plan: &RestorePlan) -> Result<(), RestoreError> {
    let Archive::Fetch(fetch) = &plan.archive else {
        return Ok(());
    };
    let cancel = CancellationToken::new();
    reader::check_present(remote, &fetch.object()?, &fetch.file_sum(), &cancel)
        .await
        .map_err(|e| RestoreError::Failed(e.to_string()))
}

/// How much of an encrypted archive is read first to try the identity on its age header
/// (a few hundred bytes a recipient).
const HEADER_PROBE: u64 = 64 * 1024;

/// Why the age header at the start of `head` refuses `identity`, when it plainly does (none of
/// its recipients). Anything else (an identity file that does not load, a header longer than
/// the probe or damaged) is left to the stream, which reads and checks every byte.
fn refused_by_header(head: &[u8], identity: &Path) -> Option<String> {
    let ids = crate::jobs::backup::verify::load_identities(identity).ok()?;
    let decryptor = age::Decryptor::new(head).ok()?;
    match decryptor.decrypt(ids.iter().map(|i| i.as_ref())) {
        Err(e @ age::DecryptError::NoMatchingKeys) => Some(e.to_string()),
        _ => None,
    }
}

/// Reads the archive from the target into the scratch file's `sink`, hashing, decrypting and
/// decoding it in one stream, and checks it against the remote manifest; returns the bytes
/// written.
pub(super) async fn unpack(
    env: &Env<'_>,
    id: &str,
    fetch: &Fetch,
    sink: Sink,
    cancel: &CancellationToken,
) -> Result<u64, RestoreError> {
    let fail = |sink: Sink, e: RestoreError| {
        sink.growing.finish(Some(e.to_string()));
        Err(e)
    };
    let Some(remote) = env.remote else {
        let e = RestoreError::Failed(format!("offsite target {} is not open", fetch.target));
        return fail(sink, e);
    };
    let identity = match unpack::identity(id, fetch.encrypted, env.identity_file) {
        Ok(identity) => identity,
        Err(e) => return fail(sink, e),
    };
    let key = match fetch.object() {
        Ok(key) => key,
        Err(e) => return fail(sink, e),
    };
    let shown = format!("{} at offsite target {}", fetch.key, fetch.target);
    if let Some(identity) = &identity {
        let probe = fetch.bytes.min(HEADER_PROBE);
        let head = match reader::read_head(remote, &key, probe, cancel).await {
            Ok(head) => head,
            Err(e) => return fail(sink, RestoreError::Failed(e.to_string())),
        };
        if let Some(e) = refused_by_header(&head, identity) {
            let e = RestoreError::Failed(format!(
                "{shown}: cannot decrypt it with the identity file used: {e} (found in its \
                 header; the rest was not downloaded)"
            ));
            return fail(sink, e);
        }
    }
    (env.progress)(format!(
        "fetching {id} from offsite target {} into {}",
        fetch.target,
        env.scratch_dir.display()
    ));
    let growing = sink.growing.clone();
    let (zstd, feed_cancel) = (fetch.zstd, cancel.clone());
    let decoded = reader::read_with(remote, &key, &fetch.file_sum(), cancel, move |r| {
        unpack::decode_into(r, sink, zstd, identity, feed_cancel)
    })
    .await
    .map_err(|e| {
        growing.finish(Some(e.to_string()));
        match e {
            OffsiteError::Cancelled => RestoreError::Cancelled,
            e => RestoreError::Failed(e.to_string()),
        }
    })?;
    unpack::check_unpacked(
        decoded,
        &shown,
        &fetch.sha256,
        fetch.bytes,
        env.scratch_dir,
        cancel,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(format: &str, compression: &str, encrypted: bool) -> Manifest {
        let json = serde_json::json!({
            "manifest_version": 1, "id": "20261128T023000Z-nightly", "job": "nightly",
            "database": "app", "server": { "host": "/run/postgresql", "port": 5432, "version": "15" },
            "pg_dump_version": "pg_dump (PostgreSQL) 15", "format": format,
            "compression": serde_json::from_str::<serde_json::Value>(compression).unwrap(),
            "encryption": if encrypted { serde_json::json!({ "recipients": ["age1x"] }) } else { serde_json::Value::Null },
            "options": {}, "started": "2026-11-28T02:30:00Z", "finished": "2026-11-28T02:30:04Z",
            "duration_ms": 4000, "bytes": 1000,
            "files": [ { "path": "database.backup.age", "bytes": 1000, "sha256": "ab" } ],
            "table_count": 1, "tables": { "public.accounts": 5 },
            "verification": { "level": "full", "at": "2026-11-28T02:30:05Z", "outcome": "passed", "details": "" },
            "daemon_version": "0.1.0"
        });
        Manifest::parse(json.to_string().as_bytes(), "test").unwrap()
    }

    fn opts(to: &str) -> Options {
        Options {
            to: to.into(),
            target: Some("s3".into()),
            ..Options::default()
        }
    }

    const ZSTD: &str = r#"{ "method": "zstd", "level": 3 }"#;

    #[test]
    fn a_key_that_is_no_recipient_is_refused_from_the_header_alone() {
        use age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let key_file = |name: &str, id: &age::x25519::Identity| {
            let path = dir.path().join(name);
            std::fs::write(&path, id.to_string().expose_secret()).unwrap();
            path
        };
        let (right, wrong) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let encrypted = age::encrypt(&right.to_public(), &[7u8; 100_000]).unwrap();
        let head = &encrypted[..1000];
        let refused = refused_by_header(head, &key_file("wrong", &wrong));
        assert!(refused.is_some_and(|e| e.contains("No matching keys")));
        assert_eq!(refused_by_header(head, &key_file("right", &right)), None);
        // Not an age header, or no identity to load: left to the stream's own checks.
        assert_eq!(refused_by_header(b"PGDMP", &key_file("w2", &wrong)), None);
        assert_eq!(refused_by_header(head, &dir.path().join("none")), None);
    }

    #[test]
    fn the_archive_is_fetched_and_unpacked_in_one_stream() {
        let m = manifest("custom", ZSTD, true);
        let p = plan(&m, "s3", |f| format!("pre/ID/{f}"), &opts("restored"), None).unwrap();
        let Archive::Fetch(f) = &p.archive else {
            panic!("{:?}", p.archive)
        };
        assert_eq!(f.key, "pre/ID/database.backup.age");
        assert_eq!((f.zstd, f.encrypted, f.bytes), (true, true, 1000));
        assert_eq!(p.scratch_bytes, 1000 * UNPACK_FACTOR);
        assert!(
            p.steps[0].contains("offsite target s3")
                && p.steps[0].contains("decrypting and zstd-decoding"),
            "{:?}",
            p.steps
        );
        assert!(
            !p.steps.iter().any(|s| s.starts_with("unpack")),
            "{:?}",
            p.steps
        );
        assert!(p.steps.iter().any(|s| s.starts_with("pg_restore -j 2")));
        assert_eq!(p.expected.get("public.accounts"), Some(&5));
    }

    #[test]
    fn a_plain_custom_archive_is_fetched_as_it_is() {
        let m = manifest("custom", r#"{ "method": "none" }"#, false);
        let p = plan(&m, "s3", str::to_owned, &opts("restored"), None).unwrap();
        assert!(matches!(&p.archive, Archive::Fetch(f) if !f.zstd && !f.encrypted));
        assert_eq!(p.scratch_bytes, 1000);
        assert!(
            p.steps[0].starts_with("fetch database.backup.age"),
            "{:?}",
            p.steps
        );
    }

    #[test]
    fn refusals_stay_and_directory_copies_say_how() {
        let m = manifest("custom", ZSTD, true);
        assert!(matches!(
            plan(&m, "s3", str::to_owned, &opts("app"), None),
            Err(RestoreError::SourceDatabase(_))
        ));
        let globals = Options {
            globals: true,
            ..opts("restored")
        };
        let e = plan(&m, "s3", str::to_owned, &globals, None).unwrap_err();
        assert!(matches!(e, RestoreError::BadRequest(_)), "{e}");
        assert!(e.to_string().contains("fetch the copy first"), "{e}");
        let dir = manifest("directory", r#"{ "method": "gzip", "level": 6 }"#, false);
        let e = plan(&dir, "s3", str::to_owned, &opts("restored"), None).unwrap_err();
        assert!(matches!(e, RestoreError::BadRequest(_)), "{e}");
        assert!(
            e.to_string()
                .contains("atprectl backups fetch 20261128T023000Z-nightly --target s3"),
            "{e}"
        );
    }
}
