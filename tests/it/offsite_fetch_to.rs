//! `backups fetch --to DIR` writes only into backup-dir itself or inside `[daemon] fetch-dirs`,
//! never through a symbolic link, and a decrypting fetch (`--identity`) only into a fresh folder
//! the daemon creates (mode 0700, its own), removed again when the fetch fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::backup_encryption::keygen;
use crate::backup_support::{ctl, ctl_json, quote, shell};
use crate::harness::toml_path;
use crate::offsite_support::{Offsite, backup_copied};

/// What is in `dir` (nothing if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn offsite_fetch_writes_only_into_backup_dir_or_fetch_dirs_and_plaintext_only_into_a_fresh_folder()
{
    let o = Offsite::new();
    let restores = o.fx.dir.path().join("restores");
    let outside = o.fx.dir.path().join("outside");
    for d in [&restores, &outside] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let target = o
        .garage
        .offsite_toml("s3", &o.credentials, "atp-re/nightly", "");
    let daemon =
        o.fx.daemon(&format!(
            "{target}\n[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\n\
             encrypt-to = [\"{}\"]\noffsite = \"s3\"\n",
            o.public
        ))
        .set(
            "daemon",
            "fetch-dirs",
            format!("[{}]", toml_path(&restores)),
        )
        .spawn();
    let (id, _) = backup_copied(&daemon);
    let key = o.key.to_str().unwrap();
    let fetch = |to: &Path, identity: Option<&str>| {
        let mut args = vec!["backups", "fetch", &id, "--to", to.to_str().unwrap()];
        if let Some(k) = identity {
            args.extend(["--identity", k]);
        }
        ctl(&daemon, &args)
    };

    // Outside backup-dir and fetch-dirs: refused (77), with or without decryption.
    for identity in [None, Some(key)] {
        let out = fetch(&outside.join("x"), identity);
        assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("outside backup-dir") && out.stderr.contains("fetch-dirs"),
            "{}",
            out.stderr
        );
    }
    // Through `..`, or a link planted inside a fetch dir, to the same outside folder.
    let dotdot = restores.join("../outside/x");
    let out = fetch(&dotdot, None);
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(out.stderr.contains(".."), "{}", out.stderr);
    std::os::unix::fs::symlink(&outside, restores.join("link")).unwrap();
    let out = fetch(&restores.join("link/x"), None);
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert!(
        entries(&outside).is_empty(),
        "nothing was written outside: {:?}",
        entries(&outside)
    );

    // Plaintext into a folder that exists already (anyone may have made or opened it): refused.
    let existing = restores.join("existing");
    std::fs::create_dir(&existing).unwrap();
    let out = fetch(&existing, Some(key));
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("does not exist yet"), "{}", out.stderr);
    assert!(entries(&existing).is_empty(), "{:?}", entries(&existing));
    // Nor into backup-dir itself, nor into a folder others could swap under the daemon.
    let out = fetch(&o.fx.backup_dir(), Some(key));
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = fetch(&existing.join("r"), Some(key));
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("others can write"), "{}", out.stderr);
    assert!(entries(&existing).is_empty(), "{:?}", entries(&existing));

    // A decryption that fails (the wrong key) leaves no folder behind: the name can be reused.
    let wrong_dir = o.fx.dir.path().join("wrong-key");
    std::fs::create_dir(&wrong_dir).unwrap();
    let (wrong, _) = keygen(&wrong_dir);
    let plain = restores.join("plain");
    let out = fetch(&plain, Some(wrong.to_str().unwrap()));
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(!plain.exists(), "the failed fetch's folder is gone");

    // Allowed: the encrypted copy anywhere under a fetch dir, the plaintext into a fresh folder.
    let copy = restores.join("copies/a");
    let fetched = ctl_json(
        &daemon,
        &["backups", "fetch", &id, "--to", copy.to_str().unwrap()],
    );
    assert_eq!(fetched["decrypted"], false, "{fetched}");
    shell(&format!(
        "cd {} && sha256sum -c --strict SHA256SUMS",
        quote(&copy.join(&id))
    ));
    let fetched = ctl_json(
        &daemon,
        &[
            "backups",
            "fetch",
            &id,
            "--to",
            plain.to_str().unwrap(),
            "--identity",
            key,
        ],
    );
    assert_eq!(fetched["decrypted"], true, "{fetched}");
    let meta = std::fs::symlink_metadata(&plain).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        meta.mode() & 0o7777,
        0o700,
        "the plaintext folder is private"
    );
    assert_eq!(
        meta.uid(),
        nix::unistd::Uid::effective().as_raw(),
        "and the daemon's own"
    );
    assert!(plain.join(&id).join("database.backup").is_file());
    assert!(!plain.join(&id).join("database.backup.age").exists());
    // Again into the same, now existing, folder: refused, the plaintext left as it is.
    let out = fetch(&plain, Some(key));
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert_eq!(entries(&plain), [id.as_str()]);

    // Into a folder inside backup-dir: refused, since the catalog would list it as a damaged
    // backup (and prune would remove nothing while it is there). backup-dir itself is fine.
    let under = o.fx.backup_dir().join("restore-drill");
    let out = fetch(&under, None);
    assert_eq!(out.status, 77, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("inside backup-dir"), "{}", out.stderr);
    assert!(!under.exists());
    std::fs::remove_dir_all(o.fx.backup_dir().join(&id)).unwrap();
    let fetched = ctl_json(
        &daemon,
        &[
            "backups",
            "fetch",
            &id,
            "--to",
            o.fx.backup_dir().to_str().unwrap(),
        ],
    );
    assert_eq!(fetched["type"], "fetched", "{fetched}");
    let listed = ctl_json(&daemon, &["backups"]);
    assert_eq!(listed["backups"].as_array().unwrap().len(), 1, "{listed}");
}
