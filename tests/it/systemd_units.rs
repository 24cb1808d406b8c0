//! The files in systemd/ as systemd itself reads them: `systemd-analyze verify` on both units
//! with nothing on stderr (it exits 0 on settings it ignores, such as `ProtectSystem=strcit`),
//! the service's `systemd-analyze security` exposure at most 1.0, and sysusers/tmpfiles applied
//! to an empty root giving the user, group, directories, modes and owners the units rely on.
//!
//! systemd-analyze reads the units from a scratch root (`--root`) holding the host's own unit
//! directory, our two units, and the built `atpred` as /usr/bin/atpred, so what is verified is
//! the shipped file, byte for byte.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{self, process::run_with_timeout};

const HINT: &str =
    "apt-get install systemd (for systemd-analyze, systemd-sysusers, systemd-tmpfiles)";
/// 0.9 measured with `ProtectProc=invisible` (1.1 without it).
const MAX_EXPOSURE: f64 = 1.0;
const TIMEOUT: Duration = Duration::from_secs(60);

fn units_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

/// A scratch root with the host's units (for the targets ours name), ours, and the binaries
/// the service's Exec lines point at.
fn scratch_root() -> tempfile::TempDir {
    harness::require_binary("systemd-analyze", HINT);
    let root = harness::tempdir();
    let r = root.path();
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("sysinit.target").exists())
        .unwrap_or_else(|| panic!("no systemd unit directory with sysinit.target: {HINT}"));
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(host_units)
        .arg(r.join("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success(), "copy {}", host_units.display());
    let etc = r.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    for unit in ["atpred.service", "atpred.socket"] {
        std::fs::copy(units_dir().join(unit), etc.join(unit)).unwrap();
    }
    for (from, to) in [
        (
            PathBuf::from(env!("CARGO_BIN_EXE_atpred")),
            "usr/bin/atpred",
        ),
        (PathBuf::from("/bin/kill"), "bin/kill"),
    ] {
        let to = r.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    root
}

fn analyze(root: &Path, args: &[&str]) -> harness::process::RunOutput {
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(args).arg(format!("--root={}", root.display()));
    run_with_timeout(&mut cmd, TIMEOUT)
}

#[test]
fn both_units_verify_without_a_single_warning() {
    let root = scratch_root();
    // --man=no: the man pages are checked in the package, not on this host.
    let out = analyze(
        root.path(),
        &["verify", "--man=no", "atpred.service", "atpred.socket"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.trim().is_empty(),
        "systemd-analyze verify complained (it exits 0 on ignored settings):\n{}",
        out.stderr
    );
}

#[test]
fn the_verify_gate_catches_a_typo_it_would_exit_0_on() {
    // The gate above relies on stderr: prove that a typo shows up there.
    let root = scratch_root();
    let unit = root.path().join("etc/systemd/system/atpred.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ProtectSystem=strict"));
    std::fs::write(
        &unit,
        text.replace("ProtectSystem=strict", "ProtectSystem=strcit"),
    )
    .unwrap();
    let out = analyze(root.path(), &["verify", "--man=no", "atpred.service"]);
    assert!(out.stderr.contains("strcit"), "{out:?}");
}

#[test]
fn the_service_exposure_is_at_most_1_0() {
    let root = scratch_root();
    // --threshold is on a 0-100 scale: 10 is an exposure of 1.0.
    let out = analyze(
        root.path(),
        &[
            "security",
            "--offline=true",
            "--threshold=10",
            "atpred.service",
        ],
    );
    let score = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .find_map(|l| {
            l.split_once("Overall exposure level for atpred.service:")
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or_else(|| panic!("no exposure level in the output: {out:?}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{}",
        out.stdout
    );
    assert_eq!(out.status, 0, "over the threshold: {out:?}");
}

#[test]
fn sysusers_and_tmpfiles_make_the_user_and_the_directories() {
    harness::require_binary("systemd-sysusers", HINT);
    harness::require_binary("systemd-tmpfiles", HINT);
    let root = harness::tempdir();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    let root_arg = format!("--root={}", r.display());
    let out = run_with_timeout(
        Command::new("systemd-sysusers")
            .arg(&root_arg)
            .arg(units_dir().join("atpred.sysusers")),
        TIMEOUT,
    );
    assert_eq!(out.status, 0, "{out:?}");
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    // atpred's own user, not the application's atpre (which the package does not make).
    assert!(!passwd.lines().any(|l| l.starts_with("atpre:")), "{passwd}");
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("atpred:"))
        .unwrap_or_else(|| panic!("no user atpred in\n{passwd}"))
        .split(':')
        .collect();
    let (uid, gid) = (
        user[2].parse::<u32>().unwrap(),
        user[3].parse::<u32>().unwrap(),
    );
    assert!(uid < 1000, "a system user: {user:?}");
    assert_eq!(user[6], "/usr/sbin/nologin", "no login shell: {user:?}");
    assert_eq!(user[5], "/var/lib/atpred", "{user:?}");
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with(&format!("atpred:x:{gid}:"))),
        "atpred's own group, the operators': {group}"
    );
    // A member of the application's group, for its logs; the application is not in atpred's.
    let app_gid = group
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == "atpre" && f[3].split(',').any(|m| m == "atpred")).then(|| f[2].to_owned())
        })
        .unwrap_or_else(|| panic!("atpred is not a member of group atpre:\n{group}"))
        .parse::<u32>()
        .unwrap();

    let out = run_with_timeout(
        Command::new("systemd-tmpfiles")
            .arg(&root_arg)
            .arg("--create")
            .arg(units_dir().join("atpred.tmpfiles")),
        TIMEOUT,
    );
    assert_eq!(out.status, 0, "{out:?}");
    for (dir, mode, owner) in [
        ("var/lib/atpred", 0o700, (uid, gid)),
        ("var/lib/atpred/backups", 0o700, (uid, gid)),
        ("run/atpred", 0o750, (uid, gid)),
        // The application's log folder (made as root's when missing, its owner never changed):
        // atpred writes there as a member of group atpre; setgid, so what it creates is atpre's.
        ("var/log/atpre", 0o2770, (0, app_gid)),
    ] {
        let meta = std::fs::metadata(r.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(meta.is_dir(), "{dir}");
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{dir}");
        assert_eq!((meta.uid(), meta.gid()), owner, "{dir}'s owner");
    }
    assert!(
        !r.join("var/lib/atpre").exists(),
        "the application's /var/lib/atpre is not atpred's to make"
    );
    let socket = std::fs::read_to_string(units_dir().join("atpred.socket")).unwrap();
    assert!(
        socket.contains("ListenStream=/run/atpred/atpred.sock"),
        "the socket unit listens in the directory tmpfiles makes"
    );
}

/// The values of `key=` in a unit file, in order.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_daemon_runs_as_its_own_user_and_hands_no_application_folder_to_itself() {
    let service = std::fs::read_to_string(units_dir().join("atpred.service")).unwrap();
    let socket = std::fs::read_to_string(units_dir().join("atpred.socket")).unwrap();
    assert_eq!(unit_values(&service, "User"), ["atpred"]);
    assert_eq!(unit_values(&service, "Group"), ["atpred"]);
    // systemd chowns a StateDirectory=/LogsDirectory= recursively to the service's user: naming
    // the application's folders there would hand them to atpred.
    assert_eq!(unit_values(&service, "StateDirectory"), ["atpred"]);
    assert_eq!(unit_values(&service, "StateDirectoryMode"), ["0700"]);
    for key in ["LogsDirectory", "CacheDirectory", "RuntimeDirectory"] {
        assert!(unit_values(&service, key).is_empty(), "{key}= in the unit");
    }
    assert_eq!(unit_values(&service, "ReadWritePaths"), ["-/var/log/atpre"]);
    assert_eq!(unit_values(&socket, "SocketUser"), ["atpred"]);
    assert_eq!(unit_values(&socket, "SocketGroup"), ["atpred"]);
    // Under PrivateUsers=yes only the service's own user and group are mapped: a socket group
    // other than the unit's Group= would show up in the daemon as nobody and never match.
    assert_eq!(unit_values(&service, "PrivateUsers"), ["yes"]);
    let reference =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("etc/atpred.toml"))
            .unwrap();
    for line in [
        "socket-group = \"atpred\"",
        "state-dir = \"/var/lib/atpred\"",
        "backup-dir = \"/var/lib/atpred/backups\"",
    ] {
        assert!(
            reference.lines().any(|l| l == line),
            "etc/atpred.toml has no line {line}"
        );
    }
}
