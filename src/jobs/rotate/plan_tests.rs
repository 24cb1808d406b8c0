//! Case tables and properties of the rotation planner.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::config::{Method, RotateSpec};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 14, 30, 5).unwrap()
}

fn spec() -> RotateSpec {
    RotateSpec {
        paths: vec!["/var/log/atpre/*.log".into()],
        missing_ok: true,
        max_size: Some(1000),
        max_age: None,
        min_size: 0,
        if_empty: false,
        method: Method::CopyTruncate,
        naming: Naming::Number,
        compress: Compression::Zstd { level: 3 },
        delay_compress: false,
        keep: 3,
        max_keep_age: None,
        allow_shared_dir: false,
        su: None,
    }
}

fn file(name: &str, size: u64, days_old: i64) -> Entry {
    Entry {
        name: name.into(),
        kind: EntryKind::File,
        size,
        mtime: now() - chrono::Duration::days(days_old),
        writers: Vec::new(),
    }
}

fn run(spec: &RotateSpec, log: Option<Entry>, entries: &[Entry], force: bool) -> Plan {
    let input = Input {
        base: "app.log",
        log: log.as_ref(),
        entries,
        last_rotation: None,
        now: now(),
        local_now: now().naive_utc(),
        force,
    };
    plan(spec, &input)
}

fn names(actions: &[Action]) -> Vec<&str> {
    actions.iter().map(|a| a.name.as_str()).collect()
}

fn shifts(p: &Plan) -> Vec<(&str, &str)> {
    p.rotation
        .as_ref()
        .unwrap()
        .shifts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

#[test]
fn a_big_log_is_rotated_shifting_older_files_and_dropping_beyond_keep() {
    let entries = [
        file("app.log.1", 10, 1),
        file("app.log.2.zst", 10, 2),
        file("app.log.3.zst", 10, 3),
        file("other.log.1", 10, 1),
        file("app.log.bak", 10, 9),
    ];
    let p = run(&spec(), Some(file("app.log", 2000, 0)), &entries, false);
    assert_eq!(p.reason, "rotate: size 2.0 KiB >= max-size 1000 B");
    assert_eq!(p.rotation.as_ref().unwrap().to, "app.log.1");
    assert_eq!(
        shifts(&p),
        [
            ("app.log.3.zst", "app.log.4.zst"),
            ("app.log.2.zst", "app.log.3.zst"),
            ("app.log.1", "app.log.2")
        ]
    );
    assert_eq!(names(&p.compress), ["app.log.1", "app.log.2"]);
    assert_eq!(names(&p.remove), ["app.log.4.zst"]);
    assert_eq!(p.remove[0].reason, "beyond keep = 3");
}

#[test]
fn a_gap_absorbs_the_shift_and_keeps_the_order() {
    // A crash between the shifts of .2 -> .3 and .1 -> .2 leaves .1 and .3.
    let entries = [file("app.log.1", 1, 1), file("app.log.3.zst", 1, 3)];
    let p = run(&spec(), Some(file("app.log", 2000, 0)), &entries, false);
    assert_eq!(shifts(&p), [("app.log.1", "app.log.2")]);
    assert!(p.remove.is_empty(), "{p:?}");
}

#[test]
fn delay_compress_keeps_the_newest_uncompressed() {
    let s = RotateSpec {
        delay_compress: true,
        ..spec()
    };
    let entries = [file("app.log.1", 10, 1)];
    let p = run(&s, Some(file("app.log", 2000, 0)), &entries, false);
    assert_eq!(names(&p.compress), ["app.log.2"]);
    assert!(p.notes[0].contains("app.log.1 stays uncompressed"), "{p:?}");
    let p = run(&s, Some(file("app.log", 1, 0)), &entries, false);
    assert!(p.rotation.is_none() && p.compress.is_empty(), "{p:?}");
}

#[test]
fn triggers_and_their_reasons() {
    let s = spec();
    let p = run(&s, Some(file("app.log", 999, 0)), &[], false);
    assert_eq!(p.reason, "no trigger met: size 999 B < max-size 1000 B");
    assert!(p.rotation.is_none());
    let p = run(&s, Some(file("app.log", 1, 0)), &[], true);
    assert_eq!(p.reason, "rotate: forced");
    let p = run(&s, Some(file("app.log", 0, 0)), &[], true);
    assert_eq!(p.reason, "empty (if-empty = false)");
    let p = run(
        &RotateSpec {
            if_empty: true,
            ..s.clone()
        },
        Some(file("app.log", 0, 0)),
        &[],
        true,
    );
    assert!(p.rotation.is_some());
    let p = run(&s, None, &[file("app.log.1", 1, 0)], true);
    assert_eq!(p.reason, "missing");
    assert!(p.rotation.is_none());
    assert_eq!(
        names(&p.compress),
        ["app.log.1"],
        "leftovers are still compressed"
    );
}

#[test]
fn max_age_counts_from_the_last_rotation_and_min_size_gates_it() {
    let s = RotateSpec {
        max_size: None,
        max_age: Some(Duration::from_secs(86_400)),
        min_size: 100,
        ..spec()
    };
    let log = file("app.log", 500, 0);
    let at = |last: Option<DateTime<Utc>>, size: u64| {
        let log = Entry {
            size,
            ..log.clone()
        };
        let input = Input {
            base: "app.log",
            log: Some(&log),
            entries: &[],
            last_rotation: last,
            now: now(),
            local_now: now().naive_utc(),
            force: false,
        };
        plan(&s, &input)
    };
    let p = at(None, 500);
    assert!(p.first_seen && p.rotation.is_none(), "{p:?}");
    let p = at(Some(now() - chrono::Duration::hours(2)), 500);
    assert_eq!(
        p.reason,
        "no trigger met: last rotated 2h ago < max-age 1day"
    );
    let p = at(Some(now() - chrono::Duration::hours(25)), 500);
    assert_eq!(p.reason, "rotate: last rotated 1day 1h ago >= max-age 1day");
    let p = at(Some(now() - chrono::Duration::hours(25)), 50);
    assert_eq!(p.reason, "no trigger met: size 50 B < min-size 100 B");
}

#[test]
fn max_keep_age_removes_old_files_but_never_the_one_just_rotated() {
    let s = RotateSpec {
        max_keep_age: Some(Duration::from_secs(7 * 86_400)),
        keep: 10,
        ..spec()
    };
    let entries = [file("app.log.1.zst", 1, 3), file("app.log.2.zst", 1, 8)];
    // The log itself was last written 30 days ago: its rotated copy still stays.
    let p = run(&s, Some(file("app.log", 2000, 30)), &entries, false);
    assert_eq!(names(&p.remove), ["app.log.3.zst"]);
    assert!(p.remove[0].reason.starts_with("older than max-keep-age"));
}

#[test]
fn date_names_collide_into_a_time_then_a_sequence() {
    let s = RotateSpec {
        naming: Naming::Date,
        compress: Compression::None,
        keep: 10,
        ..spec()
    };
    let log = Some(file("app.log", 2000, 0));
    let p = run(&s, log.clone(), &[], false);
    assert_eq!(p.rotation.as_ref().unwrap().to, "app.log-20261128");
    let p = run(
        &s,
        log.clone(),
        &[file("app.log-20261128.zst", 1, 0)],
        false,
    );
    assert_eq!(p.rotation.as_ref().unwrap().to, "app.log-20261128-143005");
    let taken = [
        file("app.log-20261128", 1, 0),
        file("app.log-20261128-143005", 1, 0),
    ];
    let p = run(&s, log, &taken, false);
    assert_eq!(p.rotation.as_ref().unwrap().to, "app.log-20261128-143005-2");
    assert!(p.remove.is_empty() && shifts(&p).is_empty());
    // The day name was freed by retention: reusing it would sort the newest file as the oldest.
    let later = [file("app.log-20261128-143005", 1, 0)];
    let p = run(&s, Some(file("app.log", 2000, 0)), &later, false);
    assert_eq!(p.rotation.as_ref().unwrap().to, "app.log-20261128-143005-2");
}

#[test]
fn date_retention_keeps_the_newest() {
    let s = RotateSpec {
        naming: Naming::Date,
        keep: 2,
        ..spec()
    };
    let entries = [
        file("app.log-20261126.zst", 1, 2),
        file("app.log-20261127.zst", 1, 1),
        file("app.log.1", 1, 1),
    ];
    let p = run(&s, Some(file("app.log", 2000, 0)), &entries, false);
    assert_eq!(names(&p.remove), ["app.log-20261126.zst"]);
}

#[test]
fn symlinks_refuse_the_log() {
    let link = Entry {
        kind: EntryKind::Symlink,
        ..file("app.log.2", 1, 0)
    };
    let p = run(
        &spec(),
        Some(file("app.log", 2000, 0)),
        std::slice::from_ref(&link),
        true,
    );
    assert!(
        p.refused
            .as_ref()
            .unwrap()
            .contains("app.log.2 is a symlink")
    );
    assert!(p.rotation.is_none() && p.remove.is_empty() && p.compress.is_empty());
    let log = Entry {
        name: "app.log".into(),
        ..link
    };
    let p = run(&spec(), Some(log), &[], true);
    assert!(p.refused.unwrap().contains("app.log is a symlink"));
}

#[test]
fn leftovers_of_an_interrupted_compression_are_cleaned_up() {
    let entries = [
        file("app.log.1", 1, 0),
        file("app.log.1.zst", 1, 0),
        file(".app.log.2.zst.atpred-tmp", 1, 0),
        file("app.log.2", 1, 0),
        file(".other.log.1.zst.atpred-tmp", 1, 0),
    ];
    let p = run(&spec(), Some(file("app.log", 1, 0)), &entries, false);
    assert_eq!(
        names(&p.cleanup),
        [".app.log.2.zst.atpred-tmp", "app.log.1"]
    );
    assert_eq!(names(&p.compress), ["app.log.2"]);
}

#[test]
fn open_files_are_neither_compressed_nor_removed() {
    let busy = Entry {
        writers: vec![42],
        ..file("app.log.1", 1, 0)
    };
    let s = RotateSpec { keep: 1, ..spec() };
    let p = run(
        &s,
        Some(file("app.log", 1, 0)),
        std::slice::from_ref(&busy),
        false,
    );
    assert!(p.compress.is_empty());
    let p = run(&s, Some(file("app.log", 2000, 0)), &[busy], false);
    assert!(p.remove.is_empty(), "{p:?}");
    assert!(p.notes.iter().any(|n| n.contains("pid [42]")), "{p:?}");
}

fn rotated_set() -> impl Strategy<Value = Vec<Entry>> {
    let name = prop_oneof![
        (1u32..12, 0usize..3).prop_map(|(n, e)| format!("app.log.{n}{}", ["", ".zst", ".gz"][e])),
        "[a-z.]{1,12}".prop_map(|s| format!("app.log{s}")),
    ];
    proptest::collection::btree_set(name, 0..14).prop_map(|set| {
        set.into_iter()
            .enumerate()
            .map(|(i, n)| file(&n, 1, i as i64))
            .collect()
    })
}

proptest! {
    /// Whatever is in the directory: only this log's rotated names are touched, no two files
    /// end up at one name, the target is free once the shifts are done, and at most `keep`
    /// rotated files remain.
    #[test]
    fn number_plans_are_consistent(entries in rotated_set(), keep in 1u32..6, force in any::<bool>()) {
        let s = RotateSpec { keep, ..spec() };
        let p = run(&s, Some(file("app.log", 2000, 0)), &entries, force);
        let mut present: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
        for a in &p.cleanup {
            prop_assert!(present.remove(&a.name));
        }
        let ours = |n: &str| names::parse("app.log", Naming::Number, n).is_some();
        if let Some(r) = &p.rotation {
            for (from, to) in &r.shifts {
                prop_assert!(ours(from) && ours(to));
                prop_assert!(present.remove(from), "shifting {from} that is not there");
                prop_assert!(present.insert(to.clone()), "{to} overwritten");
            }
            prop_assert!(present.insert(r.to.clone()), "target {} taken", r.to);
        }
        for a in &p.remove {
            prop_assert!(ours(&a.name));
            prop_assert!(present.remove(&a.name));
        }
        let left = present.iter().filter(|n| ours(n)).count();
        prop_assert!(left <= keep as usize, "{left} > keep {keep}: {p:?}");
        for a in &p.compress {
            prop_assert!(present.contains(&a.name));
        }
    }
}
