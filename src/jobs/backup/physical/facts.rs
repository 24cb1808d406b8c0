//! What a base backup's own files say about it: `backup_label` (start of the WAL a recovery
//! replays, timeline, checkpoint) and `backup_manifest` (its WAL range, with the stop LSN).
//! A point-in-time restore needs exactly this range from the WAL archive.

use serde::{Deserialize, Serialize};

/// The manifest's `physical` facts of a base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalFacts {
    /// `START WAL LOCATION` of backup_label, the manifest's `Start-LSN`.
    pub start_lsn: String,
    /// The manifest's `End-LSN`: a recovery must replay WAL at least to here.
    pub stop_lsn: String,
    /// `START TIMELINE`.
    pub timeline: u32,
    /// The WAL segment holding `start_lsn`.
    pub start_wal_file: String,
    /// `CHECKPOINT LOCATION`.
    pub checkpoint_lsn: String,
    /// `BACKUP FROM`: `primary` or `standby`.
    pub backup_from: String,
    /// `LABEL`.
    pub label: String,
    /// Files listed in backup_manifest.
    pub manifest_files: usize,
    /// Bytes of the tar stream, before compression and encryption.
    pub tar_bytes: u64,
    /// `pg_basebackup --version`.
    pub pg_basebackup_version: String,
}

/// The lines of backup_label that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Label {
    pub start_lsn: String,
    pub start_wal_file: String,
    pub checkpoint_lsn: String,
    pub backup_from: String,
    pub timeline: u32,
    pub label: String,
}

/// Parses backup_label (`KEY: value` lines).
pub fn label(text: &str) -> Result<Label, String> {
    let mut l = Label::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        match key {
            // "0/2000028 (file 000000010000000000000002)"
            "START WAL LOCATION" => {
                let mut words = value.split_whitespace();
                l.start_lsn = words.next().unwrap_or_default().to_owned();
                l.start_wal_file = words
                    .nth(1)
                    .unwrap_or_default()
                    .trim_end_matches(')')
                    .to_owned();
            }
            "CHECKPOINT LOCATION" => l.checkpoint_lsn = value.trim().to_owned(),
            "BACKUP FROM" => l.backup_from = value.trim().to_owned(),
            "START TIMELINE" => {
                l.timeline = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("backup_label: START TIMELINE {value:?}"))?;
            }
            "LABEL" => l.label = value.trim().to_owned(),
            _ => {}
        }
    }
    if l.start_lsn.is_empty() || l.timeline == 0 {
        return Err("backup_label has no START WAL LOCATION or START TIMELINE".into());
    }
    Ok(l)
}

#[derive(Deserialize)]
struct BackupManifest {
    #[serde(rename = "Files")]
    files: Vec<serde::de::IgnoredAny>,
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<WalRange>,
}

#[derive(Deserialize)]
struct WalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

/// The backup's facts from its backup_label and backup_manifest, which must agree on where
/// the backup's WAL starts and on its timeline.
pub fn facts(label_text: &[u8], manifest: &[u8]) -> Result<(Label, String, usize), String> {
    let l = label(&String::from_utf8_lossy(label_text))?;
    let m: BackupManifest =
        serde_json::from_slice(manifest).map_err(|e| format!("backup_manifest: {e}"))?;
    let (Some(first), Some(last)) = (m.wal_ranges.first(), m.wal_ranges.last()) else {
        return Err("backup_manifest lists no WAL range".into());
    };
    if first.start != l.start_lsn || first.timeline != l.timeline {
        return Err(format!(
            "backup_label starts at {} on timeline {}, backup_manifest at {} on timeline {}",
            l.start_lsn, l.timeline, first.start, first.timeline
        ));
    }
    Ok((l, last.end.clone(), m.files.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
        START TIME: 2026-12-06 02:40:00 UTC\nLABEL: atpred x\nSTART TIMELINE: 1\n";

    const MANIFEST: &str = r#"{ "PostgreSQL-Backup-Manifest-Version": 1,
        "Files": [ { "Path": "PG_VERSION", "Size": 3 }, { "Path": "global/1260", "Size": 8192 } ],
        "WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" } ],
        "Manifest-Checksum": "00" }"#;

    #[test]
    fn reads_label_and_manifest() {
        let (l, stop, files) = facts(LABEL.as_bytes(), MANIFEST.as_bytes()).unwrap();
        assert_eq!(l.start_lsn, "0/2000028");
        assert_eq!(l.start_wal_file, "000000010000000000000002");
        assert_eq!(l.checkpoint_lsn, "0/2000060");
        assert_eq!(l.backup_from, "primary");
        assert_eq!(l.label, "atpred x");
        assert_eq!(l.timeline, 1);
        assert_eq!(stop, "0/2000100");
        assert_eq!(files, 2);
    }

    #[test]
    fn refuses_a_label_and_manifest_that_disagree() {
        let other = MANIFEST.replace(
            "\"Start-LSN\": \"0/2000028\"",
            "\"Start-LSN\": \"0/3000028\"",
        );
        let e = facts(LABEL.as_bytes(), other.as_bytes()).unwrap_err();
        assert!(e.contains("0/3000028"), "{e}");
        assert!(facts(b"LABEL: x\n", MANIFEST.as_bytes()).is_err());
        assert!(facts(LABEL.as_bytes(), b"{}").is_err());
    }
}
