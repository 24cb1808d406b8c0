//! Who may write to a log's folder: one under a folder another user owns is refused (naming
//! the folder and the keys that would allow it) unless `su` names that user; a symlink on the
//! folder's path is refused.
//!
//! `su` itself (the work done as that user) is in `rotate_su`.

use crate::harness::{self, Daemon, toml_path};

const NOBODY: u32 = 65534;

fn job(name: &str, log: &std::path::Path, extra: &str) -> String {
    format!(
        "[jobs.{name}]\nkind = \"rotate\"\npaths = [{}]\nmax-size = \"1GiB\"\nmethod = \"copytruncate\"\n{extra}\n",
        toml_path(log)
    )
}

#[test]
fn rotate_folder_under_another_users_folder_is_refused_unless_su_names_them() {
    assert!(
        harness::is_root(),
        "this test hands folders to nobody: run it as root (as CI does)"
    );
    let root = harness::tempdir();
    let base = root.path().join("base");
    let app = base.join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    harness::set_mode(&base, 0o755);
    harness::set_mode(&app, 0o755);
    std::os::unix::fs::chown(&base, Some(NOBODY), Some(NOBODY)).expect("chown");
    let log = app.join("app.log");
    std::fs::write(&log, "line\n").expect("write the log");
    let linked = root.path().join("linked");
    std::os::unix::fs::symlink(&app, &linked).expect("symlink");
    let daemon = Daemon::builder(root.path())
        .toml(&job("strict", &log, ""))
        .toml(&job("su", &log, "su = \"nobody:nogroup\""))
        .toml(&job(
            "linked",
            &linked.join("app.log"),
            "su = \"nobody:nogroup\"",
        ))
        .spawn();
    let out = daemon.ctl(["run", "strict", "--wait", "--force"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        text.contains(&format!(
            "{} is under {}, which is writable by its owner, uid 65534",
            app.display(),
            base.display()
        )) && text.contains("jobs.strict.su = \"user:group\"")
            && text.contains("jobs.strict.allow-shared-dir = true"),
        "{text}"
    );
    assert_eq!(std::fs::read(&log).expect("log"), b"line\n", "not rotated");

    let out = daemon.ctl(["run", "linked", "--wait", "--force"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(
        text.contains(&format!("{} has a symlink on its path", linked.display())),
        "{text}"
    );
    assert_eq!(std::fs::read(&log).expect("log"), b"line\n", "not rotated");

    // With su, the work is done as nobody (when the daemon is root): the folder and the log
    // are the application's, as logrotate's su expects.
    for path in [&app, &log] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let out = daemon.ctl(["run", "su", "--wait", "--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(app.join("app.log.1.zst").exists());
}

#[test]
fn rotate_folder_su_names_a_user_and_group_that_exist() {
    let root = harness::tempdir();
    let log = root.path().join("app.log");
    for (su, want) in [
        ("nobody", "is not \"user:group\""),
        (
            "atpred-no-such-user:nogroup",
            "no user \"atpred-no-such-user\"",
        ),
        (
            "nobody:atpred-no-such-group",
            "no group \"atpred-no-such-group\"",
        ),
    ] {
        let out = Daemon::builder(root.path())
            .toml(&job(
                "logs",
                &log,
                &format!("su = {}", harness::toml_str(su)),
            ))
            .check();
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.status, 78, "{su}: {out:?}");
        assert!(
            text.contains("jobs.logs.su") && text.contains(want),
            "{su}: {text}"
        );
    }
}
