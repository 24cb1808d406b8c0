//! Whose files are whose: the upgrade from atpred 0.1 (which ran as the application's user
//! atpre, in the application's /var/lib/atpre) to the user atpred and /var/lib/atpred; the
//! backups out of the application's reach, tried as the application's user; the RPM
//! post-install keeping an administrator's config mode; purge removing atpred's folder only
//! when asked and the application's folders never.
//!
//! 0.1 is rebuilt from today's package with 0.1's maintainer scripts, units, sysusers.d,
//! tmpfiles.d and configuration (`tests/system/v0.1/`, copied from the tree as 0.1 shipped them)
//! and version 0.1.0-1: what is tested is the package's upgrade path and the files a daemon
//! under 0.1's unit left behind, not 0.1's daemon code.

use std::path::Path;
use std::process::Command;

use crate::container::Container;
use crate::{CONFIG, Layout, WAIT, repo, run, step, write_config_for};

/// Puts 0.1's package (`atpred-0.1.deb`) and the RPM post-install scriptlet next to the .deb
/// mounted in the container.
pub fn stage(deb: &Path, staged: &Path) {
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path().join("pkg");
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&t));
    let old = repo().join("tests/system/v0.1");
    for (from, to, mode) in [
        ("postinst", "DEBIAN/postinst", 0o755),
        ("postrm", "DEBIAN/postrm", 0o755),
        ("prerm", "DEBIAN/prerm", 0o755),
        (
            "atpred.service",
            "usr/lib/systemd/system/atpred.service",
            0o644,
        ),
        (
            "atpred.socket",
            "usr/lib/systemd/system/atpred.socket",
            0o644,
        ),
        ("atpred.sysusers", "usr/lib/sysusers.d/atpred.conf", 0o644),
        ("atpred.tmpfiles", "usr/lib/tmpfiles.d/atpred.conf", 0o644),
        ("atpred.toml", "etc/atpre/atpred.toml", 0o640),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let to = t.join(to);
        std::fs::copy(old.join(from), &to).unwrap_or_else(|e| panic!("{from}: {e}"));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // 0.1 had no migration script; md5sums (when cargo-deb wrote them) would no longer match.
    std::fs::remove_dir_all(t.join("usr/lib/atpred")).unwrap();
    let _ = std::fs::remove_file(t.join("DEBIAN/md5sums"));
    let control = std::fs::read_to_string(t.join("DEBIAN/control")).unwrap();
    let control: String = control
        .lines()
        .map(|l| {
            if l.starts_with("Version:") {
                "Version: 0.1.0-1\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(t.join("DEBIAN/control"), control).unwrap();
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&t)
        .arg(staged.join("atpred-0.1.deb")));
    std::fs::copy(
        repo().join("packaging/rpm/post_install.sh"),
        staged.join("rpm-post_install.sh"),
    )
    .unwrap();
}

/// A listing of every file under `dir` with owner, mode and content hash.
fn tree(c: &Container, dir: &str) -> String {
    c.sh(&format!(
        "cd {dir} && find . -printf '%p %u:%g %m %s\\n' | sort && find . -type f -exec sha256sum {{}} + | sort"
    ))
}

pub fn upgrade_from_0_1(c: &Container) {
    let _s = step("upgrade from 0.1: backups and state move to /var/lib/atpred, owned by atpred");
    let out = c.exec(&["dpkg", "-i", "/opt/atpred/atpred-0.1.deb"]);
    assert_eq!(out.status, 0, "installing 0.1: {out:?}");
    write_config_for(c, Layout::V0_1, "");
    // carol operates 0.1 the way its README said: as a member of group atpre.
    c.sh("useradd -m -G atpre carol && systemctl start atpred");
    let out = c.exec(&[
        "runuser", "-u", "carol", "--", "atprectl", "run", "nightly", "--wait",
    ]);
    assert_eq!(out.status, 0, "a backup under 0.1: {out:?}");
    let old = c.sh("ls /var/lib/atpre/backups").trim().to_owned();
    assert!(
        !old.is_empty() && !old.contains('\n'),
        "one backup: {old:?}"
    );
    assert_eq!(
        c.sh(&format!(
            "stat -c '%U:%G %a' /var/lib/atpre/backups/{old}/database.backup /var/lib/atpre/history.jsonl"
        ))
        .lines()
        .collect::<Vec<_>>(),
        ["atpre:atpre 600", "atpre:atpre 600"],
        "0.1's files belong to the application's user"
    );
    // Something of the application's own in its folder, which the upgrade must leave alone.
    c.sh("runuser -u atpre -- sh -c 'echo app > /var/lib/atpre/app.db'");

    // An unattended upgrade keeps the administrator's configuration (--force-confold).
    let out = c.exec(&["dpkg", "-i", "--force-confold", "/opt/atpred/atpred.deb"]);
    assert_eq!(out.status, 0, "the upgrade: {out:?}");
    assert!(
        out.stdout.contains("moved /var/lib/atpre/backups"),
        "the upgrade says what it moved: {out:?}"
    );
    c.sh("test ! -e /var/lib/atpre/backups && test ! -e /var/lib/atpre/history.jsonl");
    assert_eq!(c.sh("cat /var/lib/atpre/app.db").trim(), "app");
    assert_eq!(
        c.sh(&format!(
            "stat -c '%U:%G %a' /var/lib/atpred /var/lib/atpred/backups /var/lib/atpred/backups/{old} /var/lib/atpred/backups/{old}/database.backup /var/lib/atpred/backups/{old}/manifest.json /var/lib/atpred/history.jsonl"
        ))
        .lines()
        .collect::<Vec<_>>(),
        [
            "atpred:atpred 700",
            "atpred:atpred 700",
            "atpred:atpred 700",
            "atpred:atpred 600",
            "atpred:atpred 600",
            "atpred:atpred 600"
        ]
    );
    assert_eq!(
        c.sh("find /var/lib/atpred ! -user atpred | wc -l").trim(),
        "0",
        "everything moved is atpred's"
    );
    let config = c.sh(&format!("cat {CONFIG}"));
    assert!(
        config.contains("state-dir = \"/var/lib/atpred\"")
            && config.contains("backup-dir = \"/var/lib/atpred/backups\"")
            && config.contains("socket-group = \"atpred\""),
        "the configuration follows the move:\n{config}"
    );
    assert_eq!(
        c.sh(&format!("stat -c '%U:%G %a' {CONFIG}")).trim(),
        "root:atpred 640"
    );
    c.sh(&format!("test -s {CONFIG}.dpkg-0.1"));

    // The daemon was running: it runs again, as atpred, and finds what 0.1 left.
    assert!(
        c.wait_for(WAIT, |c| c.property("atpred.service", "ActiveState")
            == "active"),
        "the daemon runs again after the upgrade"
    );
    let pid = c.property("atpred.service", "MainPID");
    assert_eq!(c.sh(&format!("ps -o user= -p {pid}")).trim(), "atpred");
    assert_eq!(
        c.sh("stat -c '%U:%G %a' /run/atpred/atpred.sock").trim(),
        "atpred:atpred 660"
    );
    // carol, an operator of 0.1 (group atpre), is one of group atpred now.
    let out = c.exec(&["runuser", "-u", "carol", "--", "atprectl", "backups"]);
    assert_eq!(out.status, 0, "carol lists the backups: {out:?}");
    assert!(out.stdout.contains(&old), "0.1's backup is listed: {out:?}");
    let out = c.exec(&["atprectl", "history", "nightly"]);
    assert!(
        out.stdout.contains("succeeded"),
        "0.1's run history: {out:?}"
    );
    let out = c.exec(&["atprectl", "run", "nightly", "--wait"]);
    assert_eq!(out.status, 0, "a backup after the upgrade: {out:?}");
    assert_eq!(c.sh("ls /var/lib/atpred/backups | wc -l").trim(), "2");

    // Back to a machine without atpred (the users stay, as Debian leaves system users).
    let out = c.exec(&["env", "ATPRED_PURGE_STATE=yes", "dpkg", "--purge", "atpred"]);
    assert_eq!(out.status, 0, "{out:?}");
    c.sh("test ! -e /var/lib/atpred && test -e /var/lib/atpre/app.db");
}

/// Everything the application's user tries against the backups fails, and nothing changes.
pub fn out_of_the_applications_reach(c: &Container) {
    let _s =
        step("the application's user can neither read, write, rename, chmod nor delete a backup");
    let file = c
        .sh("ls -d /var/lib/atpred/backups/*/database.backup")
        .trim()
        .to_owned();
    let dir = file.trim_end_matches("/database.backup").to_owned();
    let before = tree(c, "/var/lib/atpred");
    for attempt in [
        format!("cat {file} >/dev/null"),
        format!("echo x >> {file}"),
        format!(": > {file}"),
        format!("chmod 0666 {file}"),
        format!("chmod 0777 {dir}"),
        format!("rm -f {file}"),
        format!("rm -rf {dir}"),
        format!("mv {file} {file}.x"),
        format!("mv {dir} {dir}.x"),
        "mv /var/lib/atpred/backups /var/lib/atpred/b".to_owned(),
        "mv /var/lib/atpred /var/lib/atpred.x".to_owned(),
        format!("touch {dir}/planted"),
        "touch /var/lib/atpred/backups/planted".to_owned(),
        format!("ln -s /tmp {dir}/link"),
        format!("ln {file} /var/lib/atpre/hard"),
        format!("ls {dir}"),
    ] {
        let out = c.exec(&["runuser", "-u", "atpre", "--", "sh", "-c", &attempt]);
        assert_ne!(out.status, 0, "atpre did it: {attempt}: {out:?}");
    }
    assert_eq!(tree(c, "/var/lib/atpred"), before, "nothing changed");
}

pub fn rpm_post_install_keeps_the_config_mode(c: &Container) {
    let _s = step("RPM post-install: an upgrade keeps the administrator's config owner and mode");
    // The scriptlet's body, as rpm runs it (sh, "$1" the number of installed versions), with
    // the real systemd-sysusers, systemd-tmpfiles and systemctl of the container.
    c.sh(&format!("chmod 0440 {CONFIG}"));
    c.sh("sh /opt/atpred/rpm-post_install.sh 2");
    assert_eq!(
        c.sh(&format!("stat -c '%U:%G %a' {CONFIG}")).trim(),
        "root:atpred 440",
        "the administrator's mode survives an upgrade"
    );
    c.sh("sh /opt/atpred/rpm-post_install.sh 1");
    assert_eq!(
        c.sh(&format!("stat -c '%U:%G %a' {CONFIG}")).trim(),
        "root:atpred 640",
        "a fresh install sets it"
    );
    assert!(
        c.wait_for(WAIT, |c| c.property("atpred.service", "ActiveState")
            == "active"),
        "the daemon runs after the scriptlet"
    );
}

pub fn purge(c: &Container) {
    let _s = step("purge: backups kept unless asked; the application's folders never touched");
    c.sh("runuser -u atpre -- sh -c 'echo app > /var/lib/atpre/app.db'");
    let app_logs = c.sh("ls /var/log/atpre");
    assert!(app_logs.contains("api.log"), "{app_logs}");
    let out = c.exec(&["dpkg", "--purge", "atpred"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(c.property("atpred.service", "ActiveState"), "inactive");
    c.sh("ls /var/lib/atpred/backups/*/database.backup >/dev/null");
    let out = c.exec(&["dpkg", "-i", "/opt/atpred/atpred.deb"]);
    assert_eq!(out.status, 0, "{out:?}");
    let out = c.exec(&["env", "ATPRED_PURGE_STATE=yes", "dpkg", "--purge", "atpred"]);
    assert_eq!(out.status, 0, "{out:?}");
    c.sh("test ! -e /var/lib/atpred");
    assert_eq!(
        c.sh("cat /var/lib/atpre/app.db").trim(),
        "app",
        "the application's state"
    );
    assert_eq!(
        c.sh("ls /var/log/atpre"),
        app_logs,
        "the application's logs"
    );
}
