//! What the files backup tests share: a tree of real files holding every kind of entry a files
//! backup must keep (modes with setuid, another owner, unicode names, an empty file, a large
//! file, symlinks, a log the job excludes), the daemon with a `source = "files"` job, and the
//! tree as `find` and `sha256sum` see it, so a restore can be compared from the outside.

use std::path::{Path, PathBuf};

use crate::backup_support::{quote, shell};
use crate::harness::{self, Daemon, DaemonBuilder};

/// The `.env`'s content: must never show in a log.
pub const SECRET: &str = "APP_KEY=FILES-SECRET-q8Zt3v";
/// A marker inside the unicode-named file, to find its bytes in a plain tar.
pub const MARKER: &str = "unicode-content-marker-7Qx";
/// The unicode-named file.
pub const UNICODE: &str = "ünïcödé ✓.txt";

/// A temporary directory with the tree under `tree/app` (see the module docs).
pub struct FilesFixture {
    pub dir: tempfile::TempDir,
}

impl FilesFixture {
    /// The tree with a `big.bin` of `big_mib` MiB.
    pub fn new(big_mib: u64) -> FilesFixture {
        harness::require_binary("zstd", "apt-get install zstd");
        let fx = FilesFixture {
            dir: harness::tempdir(),
        };
        build_tree(&fx.tree(), big_mib);
        fx
    }

    /// The folder the job backs up.
    pub fn tree(&self) -> PathBuf {
        self.dir.path().join("tree/app")
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// A daemon with `[jobs.appfiles]`: `source = "files"` of [`Self::tree`] less `*.log`,
    /// and `extra` (TOML lines).
    pub fn daemon(&self, extra: &str) -> DaemonBuilder {
        Daemon::builder(self.dir.path()).toml(&format!(
            "[jobs.appfiles]\nkind = \"backup\"\nsource = \"files\"\npaths = [{}]\n\
             exclude = [\"**/*.log\"]\n{extra}\n",
            harness::toml_path(&self.tree())
        ))
    }

    /// Where a restore into `dir` puts the tree.
    pub fn restored_tree(&self, dir: &Path) -> PathBuf {
        dir.join(self.tree().strip_prefix("/").expect("absolute"))
    }
}

/// Builds the tree at `root` (as root: one owner is `nobody`).
pub fn build_tree(root: &Path, big_mib: u64) {
    std::fs::create_dir_all(root.join("sub")).expect("create the tree");
    std::fs::create_dir_all(root.join("logs")).expect("create the tree");
    let r = quote(root);
    shell(&format!(
        "cd {r}
         printf '%s\\n' '{SECRET}' > .env && chmod 0600 .env
         printf 'name = \"app\"\\n' > config.toml && chmod 0644 config.toml
         chown 65534:65534 config.toml
         touch -d '2020-01-02 03:04:05.123456789' config.toml
         printf '%s\\n' '{MARKER}' > '{UNICODE}' && chmod 0640 '{UNICODE}'
         : > empty && chmod 0604 empty
         head -c {big_mib}M /dev/urandom > big.bin
         ln -s config.toml current
         ln -s /nonexistent/target dangling
         printf 'deep\\n' > sub/deep.txt && chmod 0444 sub/deep.txt
         printf '#!/bin/sh\\n' > sub/tool && chmod 04755 sub/tool
         chown 65534:65534 sub && chmod 0750 sub
         touch -h -d '2021-05-06 07:08:09' current
         printf 'noise\\n' > logs/app.log"
    ));
}

/// Every entry below `root` as `find -printf '%p %y %m %u %g %s %T@ %l'` sees it (sorted,
/// `./`-relative; the folder itself left out), then every file's SHA-256; lines with
/// `.log` left out (the job excludes them).
pub fn listing(root: &Path) -> String {
    let out = shell(&format!(
        "cd {} && find . -mindepth 1 -printf '%p %y %m %u %g %s %T@ %l\\n' | sort && \
         find . -type f -print0 | sort -z | xargs -0 sha256sum",
        quote(root)
    ));
    out.stdout
        .lines()
        .filter(|l| !l.contains(".log"))
        .map(|l| format!("{l}\n"))
        .collect()
}
