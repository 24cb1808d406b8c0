//! Shared setup of the `offsite_*` tests: PostgreSQL with a database, a Garage server, an age
//! key, and a daemon whose backup job copies to `[offsite.s3]`.

use std::path::PathBuf;

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use crate::backup_encryption::{keygen, require_age};
use crate::backup_support::{Fixture, run_job};
use crate::harness::{Daemon, DaemonBuilder, Garage, block_on, toml_path};

pub const PREFIX: &str = "atp-re/nightly";

pub struct Offsite {
    pub fx: Fixture,
    pub garage: Garage,
    pub key: PathBuf,
    pub public: String,
    pub credentials: PathBuf,
}

impl Offsite {
    pub fn new() -> Offsite {
        require_age();
        let fx = Fixture::new();
        fx.create_small_schema();
        let garage = Garage::start();
        let (key, public) = keygen(fx.dir.path());
        let credentials = garage.credentials_file(fx.dir.path());
        Offsite {
            fx,
            garage,
            key,
            public,
            credentials,
        }
    }

    /// `[offsite.s3]` with `target_extra`, and an encrypted backup job `nightly` with
    /// `job_extra`, plus any further TOML in `more`; `backups fetch --to` may write anywhere
    /// in the test's folder ([`Offsite::fetch_anywhere`]).
    pub fn daemon(&self, target_extra: &str, job_extra: &str, more: &str) -> DaemonBuilder {
        let target = self
            .garage
            .offsite_toml("s3", &self.credentials, PREFIX, target_extra);
        self.fetch_anywhere(self.fx.daemon(&format!(
            "{target}\n[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\nencrypt-to = [\"{}\"]\n\
             offsite = \"s3\"\n{job_extra}\n{more}",
            self.public
        )))
    }

    /// `[daemon] fetch-dirs` = the test's folder.
    pub fn fetch_anywhere(&self, builder: DaemonBuilder) -> DaemonBuilder {
        builder.set(
            "daemon",
            "fetch-dirs",
            format!("[{}]", toml_path(self.fx.dir.path())),
        )
    }

    /// Every key under the test prefix, with its size.
    pub fn objects(&self) -> Vec<(String, u64)> {
        self.objects_under(PREFIX)
    }

    /// The ids of the backups committed under `prefix` (those with a manifest), sorted.
    pub fn committed_under(&self, prefix: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .objects_under(prefix)
            .iter()
            .filter_map(|(k, _)| {
                k.strip_suffix("/manifest.json")
                    .map(|p| p.rsplit('/').next().unwrap().to_owned())
            })
            .collect();
        ids.sort();
        ids
    }

    /// Every key under `prefix`, with its size.
    pub fn objects_under(&self, prefix: &str) -> Vec<(String, u64)> {
        let store = self.garage.store();
        let mut all: Vec<(String, u64)> = block_on(async {
            store
                .list(Some(&Key::from(prefix)))
                .try_collect::<Vec<_>>()
                .await
                .expect("list the bucket")
        })
        .into_iter()
        .map(|o| (o.location.to_string(), o.size))
        .collect();
        all.sort();
        all
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let store = self.garage.store();
        block_on(async { store.get(&Key::from(key)).await?.bytes().await })
            .expect("get an object")
            .to_vec()
    }

    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        let store = self.garage.store();
        block_on(async { store.put(&Key::from(key), PutPayload::from(bytes)).await })
            .expect("put an object");
    }
}

/// Runs `nightly`, expects success, returns (id, the run's offsite record for that id).
pub fn backup_copied(daemon: &Daemon) -> (String, Value) {
    let run = run_job(daemon, "nightly");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let id = run["details"]["id"].as_str().expect("an id").to_owned();
    let copy = run["details"]["offsite"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id.as_str()).cloned())
        .unwrap_or_else(|| panic!("no offsite record for {id}: {run:#}"));
    (id, copy)
}

/// The finished record of one more `nightly` run, whatever its outcome.
pub fn nightly(daemon: &Daemon) -> Value {
    run_job(daemon, "nightly")
}
