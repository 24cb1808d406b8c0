//! The disk check: free bytes and free inodes (as an unprivileged user sees them) on each
//! watched path against `disk-min-free` and `disk-min-free-inodes`. Below the floor fails;
//! below twice the floor warns.

use std::path::{Path, PathBuf};

use super::board::Probe;
use crate::config::{HealthSpec, Threshold};
use crate::protocol::HealthStatus;

/// One filesystem's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    pub total_inodes: u64,
}

pub async fn check(spec: &HealthSpec) -> Probe {
    let paths = spec.disk_paths.clone();
    // statvfs can hang on a dead network filesystem: off the runtime, under the check timeout.
    let measured = tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .map(|p| {
                let usage = usage(&p);
                (p, usage)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    judge(spec, &measured)
}

fn usage(path: &Path) -> Result<Usage, String> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let unit = s.fragment_size();
    Ok(Usage {
        free_bytes: s.blocks_available().saturating_mul(unit),
        total_bytes: s.blocks().saturating_mul(unit),
        free_inodes: s.files_available(),
        total_inodes: s.files(),
    })
}

fn judge(spec: &HealthSpec, measured: &[(PathBuf, Result<Usage, String>)]) -> Probe {
    let mut status = HealthStatus::Ok;
    let mut notes = Vec::new();
    let mut disk_free = Vec::new();
    for (path, usage) in measured {
        let u = match usage {
            Ok(u) => *u,
            Err(e) => {
                status = HealthStatus::Fail;
                notes.push(format!("cannot measure {e}"));
                continue;
            }
        };
        disk_free.push((path.clone(), u.free_bytes));
        let bytes = level(u.free_bytes, u.total_bytes, spec.disk_min_free);
        // Filesystems without inode accounting (btrfs reports 0) are not judged on inodes.
        let inodes = if u.total_inodes == 0 {
            HealthStatus::Ok
        } else {
            level(u.free_inodes, u.total_inodes, spec.disk_min_free_inodes)
        };
        let worst = bytes.max(inodes);
        status = status.max(worst);
        if worst != HealthStatus::Ok {
            notes.push(format!(
                "{}: {} free of {} ({}), {} of {} inodes free ({})",
                path.display(),
                bytesize::ByteSize::b(u.free_bytes),
                bytesize::ByteSize::b(u.total_bytes),
                bytes.as_str(),
                u.free_inodes,
                u.total_inodes,
                inodes.as_str()
            ));
        }
    }
    if notes.is_empty() {
        notes.push(format!("{} path(s) above their floors", measured.len()));
    }
    let mut probe = Probe::new(status, notes.join("; "));
    probe.disk_free = disk_free;
    probe
}

fn level(free: u64, total: u64, floor: Threshold) -> HealthStatus {
    let floor = floor.floor(total);
    if free < floor {
        HealthStatus::Fail
    } else if free < floor.saturating_mul(2) {
        HealthStatus::Warn
    } else {
        HealthStatus::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_in_percent_and_bytes() {
        assert_eq!(level(50, 100, Threshold::Percent(10.0)), HealthStatus::Ok);
        assert_eq!(level(15, 100, Threshold::Percent(10.0)), HealthStatus::Warn);
        assert_eq!(level(9, 100, Threshold::Percent(10.0)), HealthStatus::Fail);
        assert_eq!(
            level(1000, 10_000, Threshold::Absolute(400)),
            HealthStatus::Ok
        );
        assert_eq!(
            level(399, 10_000, Threshold::Absolute(400)),
            HealthStatus::Fail
        );
    }
}
