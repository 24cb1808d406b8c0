//! The disk check on a small tmpfs (root only: CI runs as root): free bytes and free inodes
//! crossing their floors fail the check with the path and the numbers, and the metric follows.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{self, toml_path};
use crate::health_support::{Stack, health_now};

/// A 4 MiB tmpfs with 64 inodes, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        assert!(
            harness::is_root(),
            "this test mounts a tmpfs and needs root (CI runs as root)"
        );
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=4m,nr_inodes=64,mode=0700",
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn crossing_the_free_space_and_inode_floors_fails_the_disk_check() {
    let stack = Stack::new();
    let small = Tmpfs::mount(&stack.dir().join("small"));
    let daemon = stack
        .daemon(&format!(
            "checks = [\"disk\"]\ndisk-paths = [{}]\ndisk-min-free = \"25%\"\ndisk-min-free-inodes = \"20\"",
            toml_path(&small.0)
        ))
        .spawn();
    let (code, checks) = health_now(&daemon);
    assert_eq!(
        (code, &checks["disk"]["status"]),
        (0, &"ok".into()),
        "{checks:#?}"
    );

    // 3.5 of 4 MiB used: 12.5 % free, under the 25 % floor.
    std::fs::write(small.0.join("big"), vec![7u8; 3584 * 1024]).unwrap();
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 1);
    let disk = &checks["disk"];
    assert_eq!(disk["status"], "fail", "{disk}");
    let message = disk["message"].as_str().unwrap();
    assert!(
        message.contains(&small.0.display().to_string()) && message.contains("512.0 KiB free"),
        "{message}"
    );
    let metrics = daemon.ctl(["metrics"]).stdout;
    let line = format!(
        "atpred_disk_free_bytes{{path=\"{}\"}} {}",
        small.0.display(),
        512 * 1024
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&line)),
        "{line} in\n{metrics}"
    );

    // Space back, but 50 of 64 inodes used: 13 free (the root folder holds one), under 20.
    std::fs::remove_file(small.0.join("big")).unwrap();
    for i in 0..50 {
        std::fs::write(small.0.join(format!("f{i}")), b"x").unwrap();
    }
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 1);
    let message = checks["disk"]["message"].as_str().unwrap();
    assert!(message.contains("inodes free (fail)"), "{message}");
}
