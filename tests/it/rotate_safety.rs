//! The rotate job on disk through the real daemon: owner and mode kept, symlinks (a symlinked
//! log, one planted at a rotated name) refused and never followed, a shared directory refused
//! unless allowed, date names that never collide, retention that only touches this log's rotated
//! names, empty and missing logs, dry runs, max-age persisted, a corrupt state file rebuilt, a
//! failed reopen reported and retried.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::harness::{self, CtlOutput};
use crate::rotate_support::{contents, daemon, log_dir, names, run};

fn text(out: &CtlOutput) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

fn write_log(path: &Path, lines: &str) {
    std::fs::write(path, lines).expect("write the log");
}

const COPY: &str = "max-size = \"1GiB\"\nmethod = \"copytruncate\"";

#[test]
fn rotate_safety_owner_group_and_mode_are_kept_by_create_and_compression() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    write_log(&log, "one\n");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    // As root (CI) the log belongs to nobody; otherwise it stays the test user's own.
    let (uid, gid) = if harness::is_root() {
        (65534, 65534)
    } else {
        let m = std::fs::metadata(&log).expect("stat");
        (m.uid(), m.gid())
    };
    std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown");
    let extra = "max-size = \"1GiB\"\nreopen-command = [\"true\"]";
    let daemon = daemon(root.path(), &log, extra).spawn();
    let out = run(&daemon, &["--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    for name in ["app.log", "app.log.1.zst"] {
        let m = std::fs::metadata(dir.join(name)).expect("stat");
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (uid, gid, 0o640),
            "{name}"
        );
    }
    assert_eq!(std::fs::metadata(&log).expect("stat").len(), 0);
    assert_eq!(contents(&dir.join("app.log.1.zst")), b"one\n");
}

#[test]
fn rotate_safety_planted_symlinks_and_symlinked_logs_are_refused_and_never_followed() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let victim = root.path().join("victim");
    write_log(&victim, "precious\n");
    let log = dir.join("app.log");
    write_log(&log, "line\n");
    std::os::unix::fs::symlink(&victim, dir.join("app.log.1")).expect("plant");
    let other = dir.join("other.log");
    std::os::unix::fs::symlink(&victim, &other).expect("symlinked log");
    let glob = dir.join("*.log");
    let daemon = daemon(root.path(), &glob, COPY).spawn();
    let out = run(&daemon, &["--force"]);
    assert_eq!(out.status, 1, "{out:?}");
    let t = text(&out);
    assert!(
        t.contains("app.log.1 is a symlink at one of app.log's rotated names"),
        "{t}"
    );
    assert!(
        t.contains("other.log is a symlink, not a regular file"),
        "{t}"
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
    assert_eq!(
        std::fs::read(&log).expect("log"),
        b"line\n",
        "nothing rotated"
    );
    assert_eq!(names(&dir), ["app.log", "app.log.1", "other.log"]);
}

#[test]
fn rotate_safety_a_shared_directory_is_refused_unless_allowed() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    harness::set_mode(&dir, 0o777);
    let log = dir.join("app.log");
    write_log(&log, "line\n");
    let job = |name: &str, extra: &str| {
        format!(
            "[jobs.{name}]\nkind = \"rotate\"\npaths = [{}]\n{COPY}\n{extra}",
            harness::toml_path(&log)
        )
    };
    let daemon = harness::Daemon::builder(root.path())
        .toml(&job("strict", ""))
        .toml(&job("shared", "allow-shared-dir = true"))
        .spawn();
    let out = daemon.ctl(["run", "strict", "--wait", "--force"]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        text(&out).contains("is writable by all users (mode 0777)")
            && text(&out).contains("allow-shared-dir = true"),
        "{out:?}"
    );
    assert_eq!(names(&dir), ["app.log"]);
    let out = daemon.ctl(["run", "shared", "--wait", "--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(names(&dir), ["app.log", "app.log.1.zst"]);
}

#[test]
fn rotate_safety_date_names_never_collide_and_retention_touches_only_rotated_names() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    for name in ["app.log.old", "app.log-notes", "app.log-2026.zst"] {
        write_log(&dir.join(name), "not a rotated log\n");
    }
    let extra = format!("{COPY}\nnaming = \"date\"\ncompress = \"none\"\nkeep = 3");
    let daemon = daemon(root.path(), &log, &extra).spawn();
    for i in 1..=5 {
        write_log(&log, &format!("{i}\n"));
        let out = run(&daemon, &["--force"]);
        assert_eq!(out.status, 0, "{out:?}");
    }
    let rotated: Vec<String> = names(&dir)
        .into_iter()
        .filter(|n| n.starts_with("app.log-2") && n != "app.log-2026.zst")
        .collect();
    assert_eq!(rotated.len(), 3, "keep = 3: {rotated:?}");
    // Five rotations within a few seconds: the first took the day's name (and was dropped by
    // keep = 3), the later ones a time suffix, then a sequence number; name order is rotation
    // order, so the three newest stay.
    assert!(rotated.iter().all(|n| n.len() >= 23), "{rotated:?}");
    let kept: Vec<Vec<u8>> = rotated.iter().map(|n| contents(&dir.join(n))).collect();
    assert_eq!(
        kept,
        [b"3\n".to_vec(), b"4\n".to_vec(), b"5\n".to_vec()],
        "{rotated:?}"
    );
    for name in ["app.log.old", "app.log-notes", "app.log-2026.zst"] {
        assert!(dir.join(name).exists(), "{name} is not ours to remove");
    }
}

#[test]
fn rotate_safety_empty_and_missing_logs() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    write_log(&log, "");
    let missing = dir.join("gone.log");
    let d = harness::Daemon::builder(root.path())
        .toml(&format!(
            "[jobs.logs]\nkind = \"rotate\"\npaths = [{}]\n{COPY}",
            harness::toml_path(&log)
        ))
        .toml(&format!(
            "[jobs.full]\nkind = \"rotate\"\npaths = [{}]\n{COPY}\nif-empty = true",
            harness::toml_path(&log)
        ))
        .toml(&format!(
            "[jobs.strict]\nkind = \"rotate\"\npaths = [{}]\n{COPY}\nmissing-ok = false",
            harness::toml_path(&missing)
        ))
        .toml(&format!(
            "[jobs.lenient]\nkind = \"rotate\"\npaths = [{}]\n{COPY}",
            harness::toml_path(&missing)
        ))
        .spawn();
    let out = run(&d, &["--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("empty (if-empty = false)"), "{out:?}");
    assert_eq!(names(&dir), ["app.log"]);
    let out = d.ctl(["run", "full", "--wait", "--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(names(&dir), ["app.log", "app.log.1.zst"]);
    let out = d.ctl(["run", "strict", "--wait"]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        text(&out).contains("no such log (missing-ok = false)"),
        "{out:?}"
    );
    let out = d.ctl(["run", "lenient", "--wait"]);
    assert_eq!(out.status, 0, "{out:?}");
}

#[test]
fn rotate_safety_dry_run_prints_the_plan_and_changes_nothing() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    write_log(&log, "0123456789\n");
    write_log(&dir.join("app.log.1"), "older\n");
    write_log(&dir.join("app.log.2.zst"), "x");
    let extra = "max-size = \"10B\"\nmethod = \"copytruncate\"\nkeep = 2";
    let daemon = daemon(root.path(), &log, extra).spawn();
    let before = names(&dir);
    let out = run(&daemon, &["--dry-run"]);
    assert_eq!(out.status, 0, "{out:?}");
    let t = &out.stdout;
    for expected in [
        "app.log: rotate: size 11 B >= max-size 10 B",
        "rename app.log.1 -> app.log.2",
        "rename app.log.2.zst -> app.log.3.zst",
        "compress app.log.1 (compress with zstd)",
        "compress app.log.2 (compress with zstd)",
        "remove app.log.3.zst (beyond keep = 2)",
    ] {
        assert!(t.contains(expected), "{expected:?} not in:\n{t}");
    }
    assert_eq!(names(&dir), before);
    assert_eq!(std::fs::read(&log).expect("log"), b"0123456789\n");
}

#[test]
fn rotate_safety_max_age_is_persisted_and_a_corrupt_state_file_is_rebuilt() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    write_log(&log, "line\n");
    let extra = "max-age = \"1h\"\nmethod = \"copytruncate\"";
    let mut daemon = daemon(root.path(), &log, extra).spawn();
    let out = run(&daemon, &[]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("no rotation recorded yet"), "{out:?}");
    daemon.restart();
    let out = run(&daemon, &[]);
    assert!(out.stdout.contains("ago < max-age 1h"), "{out:?}");
    assert_eq!(names(&dir), ["app.log"]);

    let state = root.path().join("state/rotate/logs.json");
    std::fs::write(&state, b"{\"logs\": {").expect("corrupt the state");
    let out = run(&daemon, &["--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("is corrupt") && out.stdout.contains("rebuilt from the files on disk"),
        "{out:?}"
    );
    assert!(daemon.log().contains("is corrupt"), "logged too");
    assert_eq!(
        names(&dir),
        ["app.log", "app.log.1.zst"],
        "rotation went on"
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("valid again");
    assert!(saved["logs"][log.to_str().expect("utf-8")]["last_rotation"].is_string());
}

#[test]
fn rotate_safety_a_failed_reopen_fails_the_run_loses_nothing_and_is_retried() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    write_log(&log, "before\n");
    let extra = "max-size = \"1GiB\"\nreopen-command = [\"false\"]\ncompress = \"none\"";
    let daemon = daemon(root.path(), &log, extra).spawn();
    let out = run(&daemon, &["--force"]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        text(&out).contains("reopen-command false failed"),
        "{out:?}"
    );
    assert_eq!(names(&dir), ["app.log", "app.log.1"]);
    assert_eq!(contents(&dir.join("app.log.1")), b"before\n");
    // The journal keeps the rotation open: the next run (no trigger met) tells the writer again.
    let out = run(&daemon, &[]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        text(&out).contains("reopen-command false failed"),
        "{out:?}"
    );
    assert_eq!(names(&dir), ["app.log", "app.log.1"], "no second rotation");
}
