//! The manifest tells the truth about its backup (checked against PostgreSQL and the files
//! themselves, and with plain `sha256sum -c`), and a backup is private whatever the daemon's
//! umask: backup-dir and backup folders 0700, files 0600.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::backup_schema::row_counts;
use crate::backup_support::{
    DB, Fixture, backup_ok, backups, ctl, entries, manifest, quote, run_job, shell,
};
use crate::harness;

/// `atpred` with its umask set to 000 first: nothing it creates may rely on the umask.
fn umask_000_launcher(config: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 000 && exec \"$0\" --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_atpred"))
        .arg(config);
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file and folder under `dir` (itself included) with its mode.
fn modes(dir: &Path) -> BTreeMap<String, u32> {
    let mut found = BTreeMap::from([(dir.display().to_string(), mode(dir))]);
    for name in entries(dir) {
        let path = dir.join(name);
        if path.is_dir() {
            found.extend(modes(&path));
        } else {
            found.insert(path.display().to_string(), mode(&path));
        }
    }
    found
}

fn sha256_of(path: &Path) -> String {
    let out = shell(&format!("sha256sum {}", quote(path)));
    out.stdout
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned()
}

#[test]
fn backup_manifest_tells_the_truth_and_files_are_private_under_umask_000() {
    let fx = Fixture::new();
    fx.create_small_schema();
    // backup-dir and its parent do not exist yet: the daemon creates them.
    let backup_dir = fx.dir.path().join("nested").join("backups");
    let daemon = fx
        .daemon(
            "[jobs.custom]\nkind = \"backup\"\nverify = \"restore\"\n\n\
             [jobs.folder]\nkind = \"backup\"\nformat = \"directory\"\nparallel = 2\n",
        )
        .backup_dir(&backup_dir)
        .launcher(umask_000_launcher)
        .spawn();
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("status");
    assert!(
        status.lines().any(|l| l == "Umask:\t0000"),
        "the daemon really runs with umask 000:\n{status}"
    );
    let custom = backup_ok(&daemon, "custom");
    let folder = backup_ok(&daemon, "folder");

    let counts = row_counts(&fx.pg, DB);
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert_eq!(
        counts["public.events"], 2000,
        "a partitioned parent counts its partitions"
    );
    assert_eq!(counts["public.empty_one"], 0);
    let server_version = fx.pg.psql(DB, "SHOW server_version");
    for (id, job) in [(&custom, "custom"), (&folder, "folder")] {
        let m = manifest(&daemon, id);
        let on_disk: Value = serde_json::from_slice(
            &std::fs::read(backup_dir.join(id).join("manifest.json")).expect("manifest.json"),
        )
        .expect("manifest.json is JSON");
        assert_eq!(m, on_disk, "`backups show` is the stored manifest");
        assert_eq!(m["manifest_version"], 2);
        assert_eq!(m["id"], id.as_str());
        assert!(
            id.ends_with(&format!("-{job}")) && id.len() == 17 + job.len(),
            "{id}"
        );
        assert_eq!(m["job"], job);
        assert_eq!(m["database"], DB);
        assert_eq!(m["server"]["version"], server_version.as_str());
        assert_eq!(
            m["server"]["host"],
            fx.pg.socket_dir().to_str().expect("utf-8")
        );
        assert_eq!(m["server"]["port"], fx.pg.port());
        let pg_dump = m["pg_dump_version"].as_str().expect("pg_dump_version");
        assert!(pg_dump.starts_with("pg_dump (PostgreSQL) 15"), "{pg_dump}");
        assert_eq!(
            m["format"],
            if job == "custom" {
                "custom"
            } else {
                "directory"
            }
        );
        assert!(
            m["encryption"].is_null(),
            "not encrypted: {}",
            m["encryption"]
        );
        assert!(m["daemon_version"].as_str().is_some_and(|v| !v.is_empty()));
        let started: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(m["started"].clone()).expect("started is a time");
        let finished: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(m["finished"].clone()).expect("finished is a time");
        assert!(started <= finished, "{started} <= {finished}");
        assert_eq!(
            started.format("%Y%m%dT%H%M%SZ").to_string(),
            id[..16],
            "the id is the start"
        );
        assert!(
            m["duration_ms"].as_u64().is_some_and(|d| d > 0),
            "{}",
            m["duration_ms"]
        );

        let tables: BTreeMap<String, i64> =
            serde_json::from_value(m["tables"].clone()).expect("tables: name -> rows");
        assert_eq!(tables, counts, "row counts are the real ones");
        assert_eq!(m["table_count"], counts.len());

        let v = &m["verification"];
        assert_eq!(v["level"], if job == "custom" { "restore" } else { "full" });
        assert_eq!(v["outcome"], "passed");
        assert!(v["details"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
        assert!(v["at"].is_string(), "{v}");

        // Every file is listed with its real size and SHA-256, and the sums add up.
        let folder_path = backup_dir.join(id);
        let files = m["files"].as_array().expect("files");
        let mut total = 0;
        for f in files {
            let path = folder_path.join(f["path"].as_str().expect("path"));
            let len = std::fs::metadata(&path).expect("listed file exists").len();
            assert_eq!(f["bytes"], len, "{f}");
            assert_eq!(f["sha256"], sha256_of(&path).as_str(), "{f}");
            total += len;
        }
        assert_eq!(m["bytes"], total);
        let sums = std::fs::read_to_string(folder_path.join("SHA256SUMS")).expect("SHA256SUMS");
        assert_eq!(sums.lines().count(), files.len(), "{sums}");
        let check = shell(&format!(
            "cd {} && sha256sum -c --strict SHA256SUMS",
            quote(&folder_path)
        ));
        assert_eq!(
            check.stdout.matches(": OK").count(),
            files.len(),
            "{}",
            check.stdout
        );

        // Private whatever the umask: folders 0700, files 0600.
        for (path, mode) in modes(&folder_path) {
            let want = if Path::new(&path).is_dir() {
                0o700
            } else {
                0o600
            };
            assert_eq!(mode, want, "mode of {path} is {mode:04o}");
        }
    }
    assert_eq!(mode(&backup_dir), 0o700, "backup-dir is created 0700");
    let mut expected = vec![custom.clone(), folder.clone()];
    expected.sort();
    let listed = backups(&daemon);
    let ids: Vec<&str> = listed
        .iter()
        .map(|b| b["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, expected, "both listed: {listed:?}");
    assert!(
        listed.iter().all(|b| b["state"] == "verified"),
        "{listed:?}"
    );
    assert_eq!(entries(&backup_dir), expected, "nothing else in backup-dir");
}

#[test]
fn backup_dir_that_is_a_symlink_or_writable_by_others_is_refused() {
    let fx = Fixture::new();
    let real = fx.dir.path().join("real");
    std::fs::create_dir(&real).expect("create real");
    harness::set_mode(&real, 0o700);
    let configured = fx.dir.path().join("configured");
    std::os::unix::fs::symlink(&real, &configured).expect("symlink");
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"")
        .backup_dir(&configured)
        .spawn();
    let record = run_job(&daemon, "nightly");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    assert!(message.contains("is a symlink"), "{message}");
    assert!(
        entries(&real).is_empty(),
        "nothing written through the link"
    );

    std::fs::remove_file(&configured).expect("remove the link");
    std::fs::create_dir(&configured).expect("create the folder");
    harness::set_mode(&configured, 0o777);
    let record = run_job(&daemon, "nightly");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    assert!(
        message.contains("writable by other users") && message.contains("chmod 700"),
        "{message}"
    );
    assert!(entries(&configured).is_empty());
    assert_eq!(mode(&configured), 0o777, "refused, not silently changed");
}

#[test]
fn backup_folders_without_a_valid_manifest_are_not_backups() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"")
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let dir = fx.backup_dir();
    let (bare, broken, renamed) = (
        "20200101T000000Z-nightly",
        "20200102T000000Z-nightly",
        "20200103T000000Z-nightly",
    );
    shell(&format!(
        "cd {} && mkdir -m 700 {bare} && cp -p {id}/database.backup {bare}/ \
         && cp -a {id} {broken} && echo '{{' > {broken}/manifest.json && cp -a {id} {renamed}",
        quote(&dir)
    ));
    let listed = backups(&daemon);
    let state = |id: &str| {
        listed
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"))["state"]
            .clone()
    };
    assert_eq!(state(&id), "verified");
    // A copy under another name keeps a valid manifest for another id: listed as unreadable.
    assert_eq!(state(renamed), "unreadable", "{listed:#?}");
    for not_a_backup in [bare, broken] {
        assert_eq!(state(not_a_backup), "unreadable", "{listed:#?}");
        let out = ctl(&daemon, &["backups", "verify", not_a_backup]);
        assert_eq!(
            out.status, 2,
            "{not_a_backup}: {}{}",
            out.stdout, out.stderr
        );
    }
}
