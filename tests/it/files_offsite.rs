//! A files backup goes through the shared machinery like the other sources: copied to an
//! offsite target (a real Garage), verified there, listed with its source.

use crate::backup_encryption::{keygen, require_age};
use crate::backup_support::{ctl, ctl_json, run_job};
use crate::files_support::FilesFixture;
use crate::harness::Garage;

#[test]
fn files_backup_is_copied_offsite_and_listed_there_with_its_source() {
    require_age();
    let fx = FilesFixture::new(4);
    let garage = Garage::start();
    let (key, public) = keygen(fx.dir.path());
    let credentials = garage.credentials_file(fx.dir.path());
    let target = garage.offsite_toml("s3", &credentials, "atp-re/files", "");
    let daemon = fx
        .daemon(&format!(
            "encrypt-to = [\"{public}\"]\nverify-identity-file = {}\noffsite = \"s3\"\n{target}",
            crate::harness::toml_path(&key)
        ))
        .spawn();
    let run = run_job(&daemon, "appfiles");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let id = run["details"]["id"].as_str().expect("id").to_owned();
    let copy = &run["details"]["offsite"][0];
    assert_eq!(
        (&copy["id"], &copy["stage"]),
        (&id.as_str().into(), &"verified".into()),
        "{run:#}"
    );
    let remote = ctl_json(&daemon, &["backups", "--remote"]);
    let listed = remote["backups"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|b| b["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed remotely: {remote:#}"))
        .clone();
    assert_eq!(listed["source"], "files", "{listed:#}");
    let verify = ctl(&daemon, &["backups", "verify", &id, "--remote"]);
    assert_eq!(verify.status, 0, "{}{}", verify.stdout, verify.stderr);
}
