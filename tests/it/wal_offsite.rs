//! Archived segments copied to a real S3-compatible target (Garage) as they are archived, read
//! back against the index, and caught up after the target was down.

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::harness::{self, Garage, block_on};
use crate::wal_support::{ARCHIVE_TIMEOUT, JOB, WalFixture, wait_check, wait_receiving};

const PREFIX: &str = "atp-re";

fn remote_files(garage: &Garage) -> Vec<(String, Vec<u8>)> {
    let store = garage.store();
    block_on(async {
        let list: Vec<_> = store
            .list(Some(&Key::from(format!("{PREFIX}/wal/{JOB}"))))
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for o in list {
            let bytes = store.get(&o.location).await?.bytes().await?;
            let name = o.location.filename().unwrap_or_default().to_owned();
            out.push((name, bytes.to_vec()));
        }
        Ok::<_, object_store::Error>(out)
    })
    .unwrap_or_default()
}

fn wait_remote(wf: &WalFixture, garage: &Garage, segment: &str) {
    let file = format!("{segment}.zst.age");
    let ok = harness::wait_until(ARCHIVE_TIMEOUT, || {
        remote_files(garage).iter().any(|(n, bytes)| {
            *n == file
                && std::fs::read(wf.archive_dir().join(&file)).is_ok_and(|local| local == *bytes)
        })
    });
    assert!(
        ok,
        "{file} not at the target: {:?}",
        remote_files(garage)
            .iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    );
}

#[test]
fn wal_offsite_segments_reach_the_target_and_catch_up_after_an_outage() {
    let wf = WalFixture::new();
    let mut garage = Garage::start();
    let credentials = garage.credentials_file(wf.fx.dir.path());
    let target = garage.offsite_toml(
        "s3",
        &credentials,
        PREFIX,
        "retries = 1\nretry-timeout = \"2s\"",
    );
    let daemon = wf.daemon("offsite = \"s3\"").toml(&target).spawn();
    wait_receiving(&daemon, 1);
    let seg = wf.write_and_switch("a", 5_000);
    wf.wait_archived(&daemon, &seg);
    wait_remote(&wf, &garage, &seg);

    // The target down: archiving goes on, the check warns, the copy is owed.
    garage.kill();
    let owed = wf.write_and_switch("b", 5_000);
    wf.wait_archived(&daemon, &owed);
    wait_check(&daemon, "warn", "offsite s3");
    garage.restart();
    wait_remote(&wf, &garage, &owed);
    wait_check(&daemon, "ok", "receiving");
}
