//! A verified backup is copied to a real S3-compatible server (Garage): every file read back
//! and matched, the manifest last, only the age-encrypted dump leaving the machine; it is
//! listed remotely, verified remotely, and fetched back restorable.

use crate::backup_schema::fingerprint;
use crate::backup_support::{
    DB, backups, ctl, ctl_json, pg_restore_command, quote, shell, wait_past_second_of,
};
use crate::offsite_support::{Offsite, PREFIX, backup_copied};

#[test]
fn offsite_a_verified_backup_is_copied_checked_listed_and_fetched_back_restorable() {
    let o = Offsite::new();
    // Enough rows for a dump of several 5 MiB parts: the multipart path is the one taken.
    o.fx.create_bulk_table(120_000);
    let daemon = o
        .daemon(
            "part-size = \"5MiB\"\nconcurrency = 2\n",
            "compress = \"none\"\n",
            "",
        )
        .spawn();
    let (id, copy) = backup_copied(&daemon);
    assert_eq!(copy["stage"], "verified", "{copy:#}");
    assert_eq!(copy["target"], "s3");
    assert_eq!(copy["attempts"], 1);
    let local = o.fx.backup_dir().join(&id);
    let dump = std::fs::metadata(local.join("database.backup.age"))
        .unwrap()
        .len();
    assert!(dump > 10 * 1024 * 1024, "a multi-part dump: {dump} bytes");

    // Exactly the four files, the dump and the globals encrypted, byte for byte the local ones.
    let objects = o.objects();
    let names: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{PREFIX}/{id}/SHA256SUMS"),
            format!("{PREFIX}/{id}/database.backup.age"),
            format!("{PREFIX}/{id}/globals.sql.age"),
            format!("{PREFIX}/{id}/manifest.json"),
        ],
        "{objects:?}"
    );
    for name in [
        "database.backup.age",
        "globals.sql.age",
        "SHA256SUMS",
        "manifest.json",
    ] {
        assert!(
            o.get(&format!("{PREFIX}/{id}/{name}")) == std::fs::read(local.join(name)).unwrap(),
            "{name} at the target is the local file"
        );
    }
    assert_eq!(
        &o.get(&format!("{PREFIX}/{id}/database.backup.age"))[..21],
        b"age-encryption.org/v1"
    );

    // The local listing shows the copy's stage; the remote one lists the backup.
    let listed = backups(&daemon);
    assert_eq!(listed[0]["offsite"], "s3: verified", "{listed:?}");
    let remote = ctl_json(&daemon, &["backups", "--remote"]);
    let remote = remote["backups"].as_array().unwrap();
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert_eq!(remote[0]["id"], id.as_str());
    assert_eq!(remote[0]["state"], "verified");
    assert_eq!(remote[0]["encrypted"], true);
    let table = ctl(&daemon, &["backups", "--remote"]);
    assert!(
        table.stdout.contains(&id) && table.status == 0,
        "{}",
        table.stdout
    );

    let verified = ctl(&daemon, &["backups", "verify", &id, "--remote"]);
    assert_eq!(verified.status, 0, "{}{}", verified.stdout, verified.stderr);
    assert!(verified.stdout.contains("passed"), "{}", verified.stdout);

    // Fetched and decrypted into another folder: restorable, and the same data.
    let out = o.fx.dir.path().join("restore");
    let fetched = ctl_json(
        &daemon,
        &[
            "backups",
            "fetch",
            &id,
            "--to",
            out.to_str().unwrap(),
            "--identity",
            o.key.to_str().unwrap(),
        ],
    );
    assert_eq!(fetched["type"], "fetched", "{fetched}");
    assert_eq!(fetched["decrypted"], true);
    let plain = out.join(&id).join("database.backup");
    assert!(!out.join(&id).join("database.backup.age").exists());
    let globals = std::fs::read_to_string(out.join(&id).join("globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE atp_user"), "{globals}");
    o.fx.pg.psql("postgres", "CREATE DATABASE restored");
    shell(&format!(
        "{} {}",
        pg_restore_command(&o.fx.pg, "restored"),
        quote(&plain)
    ));
    assert_eq!(fingerprint(&o.fx.pg, "restored"), fingerprint(&o.fx.pg, DB));

    // Lost locally, fetched back into backup-dir: a catalog entry again, and it verifies.
    std::fs::remove_dir_all(&local).unwrap();
    assert!(backups(&daemon).is_empty());
    let back = ctl_json(&daemon, &["backups", "fetch", &id]);
    assert_eq!(back["decrypted"], false, "{back}");
    let listed = backups(&daemon);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "verified");
    shell(&format!(
        "cd {} && sha256sum -c --strict SHA256SUMS",
        quote(&local)
    ));
    let again = ctl(&daemon, &["backups", "verify", &id, "--level", "checksum"]);
    assert_eq!(again.status, 0, "{}", again.stdout);

    // The key's secret is nowhere the daemon writes.
    assert!(
        !daemon.log().contains(&o.garage.secret),
        "the secret key is not logged"
    );
}

#[test]
fn offsite_a_plaintext_backup_is_refused_unless_the_target_allows_it() {
    let o = Offsite::new();
    let target = o.garage.offsite_toml("s3", &o.credentials, PREFIX, "");
    let plain = |extra: &str| {
        o.fetch_anywhere(o.fx.daemon(&format!(
            "{target}{extra}\n[jobs.plain]\nkind = \"backup\"\nverify = \"checksum\"\noffsite = \"s3\"\n"
        )))
    };
    let refused = plain("").check();
    assert_eq!(refused.status, 78, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("jobs.plain.offsite")
            && refused.stderr.contains("refuses plaintext")
            && refused.stderr.contains("encrypt-to"),
        "{}",
        refused.stderr
    );
    let daemon = o
        .fetch_anywhere(o.fx.daemon(&format!(
            "{target}allow-plaintext = true\n\n[jobs.plain]\nkind = \"backup\"\nverify = \"checksum\"\n\
             offsite = \"s3\"\nformat = \"directory\"\n"
        )))
        .spawn();
    let run = crate::backup_support::run_job(&daemon, "plain");
    assert_eq!(run["details"]["offsite"][0]["stage"], "verified", "{run:#}");
    let id = run["details"]["id"].as_str().unwrap().to_owned();
    // A directory-format dump is many files: each one is at the target as it is here.
    let local = o.fx.backup_dir().join(&id);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("manifest.json")).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap();
    assert!(files.len() > 2, "{files:?}");
    for f in files {
        let path = f["path"].as_str().unwrap();
        assert_eq!(
            o.get(&format!("{PREFIX}/{id}/{path}")),
            std::fs::read(local.join(path)).unwrap(),
            "{path}"
        );
    }
    let to = o.fx.dir.path().join("fetched");
    let fetched = ctl_json(
        &daemon,
        &["backups", "fetch", &id, "--to", to.to_str().unwrap()],
    );
    assert_eq!(fetched["type"], "fetched", "{fetched}");
    shell(&format!(
        "cd {} && sha256sum -c --strict SHA256SUMS",
        quote(&to.join(&id))
    ));
}

#[test]
fn offsite_a_committed_copy_is_reused_and_another_backup_under_its_id_is_never_overwritten() {
    let o = Offsite::new();
    let daemon = o.daemon("", "", "").spawn();
    let (first, _) = backup_copied(&daemon);
    // Make the next run owe `first` again, as after a crash right after its manifest went up.
    let record =
        o.fx.dir
            .path()
            .join("state/offsite/s3")
            .join(format!("{first}.json"));
    let owe = || {
        let mut r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        r["stage"] = "failed".into();
        std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
    };
    let copy_of = |run: &serde_json::Value, id: &str| {
        run["details"]["offsite"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no copy of {id}: {run:#}"))
    };
    owe();
    wait_past_second_of(&first);
    let run = crate::backup_support::run_job(&daemon, "nightly");
    let again = copy_of(&run, &first);
    assert_eq!(again["stage"], "verified", "{again}");
    assert_eq!(
        again["already"], true,
        "read back, not uploaded again: {again}"
    );

    // Another host's backup under the same id at the target: it stays as it is.
    let key = format!("{PREFIX}/{first}/manifest.json");
    let mut theirs: serde_json::Value = serde_json::from_slice(&o.get(&key)).unwrap();
    theirs["duration_ms"] = 1.into();
    let theirs = serde_json::to_vec_pretty(&theirs).unwrap();
    o.put(&key, theirs.clone());
    owe();
    let second = run["details"]["id"].as_str().unwrap().to_owned();
    wait_past_second_of(&second);
    let run = crate::backup_support::run_job(&daemon, "nightly");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let refused = copy_of(&run, &first);
    assert_eq!(refused["stage"], "failed", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("refusing to overwrite"),
        "{refused}"
    );
    assert_eq!(
        o.get(&key),
        theirs,
        "the other backup's manifest is untouched"
    );
}
