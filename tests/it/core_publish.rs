//! Every whole file atpred writes goes through one helper (random temporary names created
//! `O_EXCL | O_NOFOLLOW` relative to the folder): a symlink planted at the old predictable
//! temporary name redirects nothing, and a folder other users may write to is refused when the
//! configuration is loaded, naming the key.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::{self, Daemon, toml_path};

#[test]
fn core_publish_a_textfile_folder_writable_by_nobody_is_refused_naming_the_key() {
    assert!(
        harness::is_root(),
        "this test hands a folder to nobody: run it as root (as CI does)"
    );
    let root = harness::tempdir();
    let folder = root.path().join("textfile");
    std::fs::create_dir(&folder).expect("create folder");
    std::os::unix::fs::chown(&folder, Some(65534), Some(65534)).expect("chown");
    let textfile = folder.join("atpred.prom");
    let builder = Daemon::builder(root.path())
        .toml(&format!("[metrics]\ntextfile = {}\n", toml_path(&textfile)));
    // An administrator's --check does not know the unit's user: the daemon judges at start.
    let out = builder.check();
    assert_eq!(out.status, 0, "{out:?}");
    let failure = match builder.try_spawn() {
        Ok(_) => panic!("atpred started with a textfile folder nobody may write to"),
        Err(f) => f,
    };
    assert_eq!(failure.status.and_then(|s| s.code()), Some(78), "{failure}");
    assert!(
        failure.log.contains("metrics.textfile")
            && failure.log.contains(&format!(
                "{} is writable by its owner, uid 65534",
                folder.display()
            )),
        "{failure}"
    );
}

#[test]
fn core_publish_a_symlink_at_the_old_temp_name_does_not_redirect_the_textfile() {
    let root = harness::tempdir();
    let folder = root.path().join("textfile");
    std::fs::create_dir(&folder).expect("create folder");
    let textfile = folder.join("atpred.prom");
    let victim = root.path().join("shadow");
    std::fs::write(&victim, "root only\n").expect("write victim");
    harness::set_mode(&victim, 0o600);
    let daemon = Daemon::builder(root.path())
        .toml(&format!("[metrics]\ntextfile = {}\n", toml_path(&textfile)))
        .command_job("tick", &["true"])
        .spawn();
    // The name the daemon used before: `.NAME.tmp-<pid>`.
    let planted = folder.join(format!(".atpred.prom.tmp-{}", daemon.pid()));
    let _ = std::fs::remove_file(&textfile);
    std::os::unix::fs::symlink(&victim, &planted).expect("plant the link");
    let out = daemon.ctl(["run", "tick", "--wait"]);
    assert_eq!(out.status, 0, "{out:?}");
    let written = harness::wait_until(Duration::from_secs(20), || textfile.exists());
    assert!(written, "the textfile was written");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root only\n"
    );
    let mode = std::fs::metadata(&victim)
        .expect("victim")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the file outside was not chmodded");
    assert!(
        std::fs::read_to_string(&textfile)
            .expect("textfile")
            .contains("atpred_")
    );
}
