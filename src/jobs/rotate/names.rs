//! Rotated-file names of one log: parsing, ordering and choosing the next one (pure).
//!
//! `number`: `app.log.1`, `app.log.2.zst`, ... (1 is the newest). `date`: `app.log-20261128`,
//! then `app.log-20261128-143005`, then `app.log-20261128-143005-2`, ... when a name is taken (by
//! any compression suffix), so a second rotation on one day neither skips nor overwrites.
//! Only names that parse here are ever shifted, compressed or removed.

use std::cmp::Ordering;

use chrono::NaiveDateTime;

use crate::config::Naming;

/// The compression suffix of a rotated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ext {
    None,
    Zst,
    Gz,
}

impl Ext {
    pub fn suffix(self) -> &'static str {
        match self {
            Ext::None => "",
            Ext::Zst => ".zst",
            Ext::Gz => ".gz",
        }
    }

    const ALL: [Ext; 3] = [Ext::Zst, Ext::Gz, Ext::None];
}

/// Where a rotated file sits in its log's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `.N`: smaller is newer.
    Number(u32),
    /// `-YYYYMMDD[-HHMMSS[-N]]`: larger is newer.
    Date {
        date: String,
        time: Option<String>,
        seq: Option<u32>,
    },
}

impl Key {
    /// The name part after the log's name, without a compression suffix.
    pub fn stem(&self, base: &str) -> String {
        match self {
            Key::Number(n) => format!("{base}.{n}"),
            Key::Date { date, time, seq } => {
                let mut s = format!("{base}-{date}");
                if let Some(t) = time {
                    s.push('-');
                    s.push_str(t);
                }
                if let Some(n) = seq {
                    s.push_str(&format!("-{n}"));
                }
                s
            }
        }
    }

    /// Newest first.
    pub fn newest_first(a: &Key, b: &Key) -> Ordering {
        match (a, b) {
            (Key::Number(x), Key::Number(y)) => x.cmp(y),
            (
                Key::Date {
                    date: d1,
                    time: t1,
                    seq: s1,
                },
                Key::Date {
                    date: d2,
                    time: t2,
                    seq: s2,
                },
            ) => (d2, t2, s2).cmp(&(d1, t1, s1)),
            (Key::Number(_), Key::Date { .. }) => Ordering::Less,
            (Key::Date { .. }, Key::Number(_)) => Ordering::Greater,
        }
    }
}

/// A rotated file of the log named `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub key: Key,
    pub ext: Ext,
}

impl Rotated {
    pub fn name(&self, base: &str) -> String {
        format!("{}{}", self.key.stem(base), self.ext.suffix())
    }
}

/// `name` as a rotated file of `base` under `naming`; `None` for any other name.
pub fn parse(base: &str, naming: Naming, name: &str) -> Option<Rotated> {
    let (rest, ext) = Ext::ALL
        .iter()
        .find_map(|e| name.strip_suffix(e.suffix()).map(|r| (r, *e)))?;
    let key = match naming {
        Naming::Number => Key::Number(number(rest.strip_prefix(base)?.strip_prefix('.')?)?),
        Naming::Date => {
            let rest = rest.strip_prefix(base)?.strip_prefix('-')?;
            let mut parts = rest.split('-');
            let date = parts.next().filter(|d| digits(d, 8))?;
            let time = match parts.next() {
                None => None,
                Some(t) => Some(t).filter(|t| digits(t, 6)),
            };
            let seq = match parts.next() {
                None => None,
                Some(n) => Some(number(n).filter(|n| *n >= 2)?),
            };
            if parts.next().is_some() || (time.is_none() && rest.len() != 8) {
                return None;
            }
            Key::Date {
                date: date.to_owned(),
                time: time.map(str::to_owned),
                seq,
            }
        }
    };
    // Canonical spelling only ("app.log.01" is not ours).
    let parsed = Rotated { key, ext };
    (parsed.name(base) == name).then_some(parsed)
}

fn digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// The date key for a rotation at `local`: the first of day, day-time, day-time-2, ... that is
/// not `taken` (`taken(stem)`: a file of that stem exists, compressed or not) and is newer than
/// `newest`, the newest rotated file there is. Newer matters: a day name freed by retention must
/// not be reused for a later rotation, which would then sort as the oldest. When `newest` lies
/// ahead of the clock (it went back), its date and time are used.
pub fn next_date_key(
    local: NaiveDateTime,
    taken: impl Fn(&str) -> bool,
    base: &str,
    newest: Option<&Key>,
) -> Key {
    let mut date = local.format("%Y%m%d").to_string();
    let mut time = local.format("%H%M%S").to_string();
    let newer = |k: &Key| newest.is_none_or(|n| Key::newest_first(k, n) == Ordering::Less);
    let day = Key::Date {
        date: date.clone(),
        time: None,
        seq: None,
    };
    if !taken(&day.stem(base)) && newer(&day) {
        return day;
    }
    if let Some(Key::Date {
        date: d, time: t, ..
    }) = newest
        && (d.as_str(), t.as_deref().unwrap_or("")) > (date.as_str(), time.as_str())
    {
        date = d.clone();
        time = t.clone().unwrap_or(time);
    }
    let mut seq = None;
    loop {
        let key = Key::Date {
            date: date.clone(),
            time: Some(time.clone()),
            seq,
        };
        if !taken(&key.stem(base)) && newer(&key) {
            return key;
        }
        seq = Some(seq.map_or(2, |n: u32| n.saturating_add(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_only_in_canonical_form() {
        let p = |n| parse("app.log", Naming::Number, n);
        assert_eq!(
            p("app.log.1"),
            Some(Rotated {
                key: Key::Number(1),
                ext: Ext::None
            })
        );
        assert_eq!(p("app.log.12.zst").map(|r| r.ext), Some(Ext::Zst));
        assert_eq!(p("app.log.3.gz").map(|r| r.key), Some(Key::Number(3)));
        for other in [
            "app.log",
            "app.log.0",
            "app.log.01",
            "app.log.1.bak",
            "app.log.x",
            "app.log-20261128",
            "other.log.1",
            "app.log.1.zst.tmp",
            "xapp.log.1",
        ] {
            assert_eq!(p(other), None, "{other}");
        }
    }

    #[test]
    fn dates_parse_with_time_and_sequence() {
        let p = |n| parse("app.log", Naming::Date, n).map(|r| r.key);
        assert!(matches!(
            p("app.log-20261128"),
            Some(Key::Date { time: None, .. })
        ));
        assert!(matches!(
            p("app.log-20261128-143005.zst"),
            Some(Key::Date {
                time: Some(_),
                seq: None,
                ..
            })
        ));
        assert!(matches!(
            p("app.log-20261128-143005-2.gz"),
            Some(Key::Date { seq: Some(2), .. })
        ));
        for other in [
            "app.log-2026112",
            "app.log-20261128-1430",
            "app.log-20261128-143005-1",
            "app.log-20261128-x",
            "app.log.1",
            "app.log-20261128.bak",
        ] {
            assert_eq!(p(other), None, "{other}");
        }
    }

    #[test]
    fn a_taken_date_gets_a_time_then_a_sequence() {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
            .unwrap()
            .and_hms_opt(14, 30, 5)
            .unwrap();
        let taken = ["app.log-20261128", "app.log-20261128-143005"];
        let key = next_date_key(at, |s| taken.contains(&s), "app.log", None);
        assert_eq!(key.stem("app.log"), "app.log-20261128-143005-2");
        let key = next_date_key(at, |s| taken[..1].contains(&s), "app.log", None);
        assert_eq!(key.stem("app.log"), "app.log-20261128-143005");
        let key = next_date_key(at, |_| false, "app.log", None);
        assert_eq!(key.stem("app.log"), "app.log-20261128");
    }

    #[test]
    fn a_new_date_key_is_always_the_newest() {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
            .unwrap()
            .and_hms_opt(14, 30, 5)
            .unwrap();
        let key = |name: &str| parse("app.log", Naming::Date, name).unwrap().key;
        // The day name was freed by retention while later ones of that day remain.
        let newest = key("app.log-20261128-143005-3");
        let k = next_date_key(at, |_| false, "app.log", Some(&newest));
        assert_eq!(k.stem("app.log"), "app.log-20261128-143005-4");
        // The clock went back a day.
        let newest = key("app.log-20261129");
        let k = next_date_key(at, |_| false, "app.log", Some(&newest));
        assert_eq!(k.stem("app.log"), "app.log-20261129-143005");
        let newest = key("app.log-20261129-235959");
        let k = next_date_key(at, |_| false, "app.log", Some(&newest));
        assert_eq!(k.stem("app.log"), "app.log-20261129-235959-2");
    }

    #[test]
    fn ordering_is_newest_first() {
        let mut keys: Vec<Key> = [
            "app.log-20261127",
            "app.log-20261128-143005-2",
            "app.log-20261128",
            "app.log-20261128-143005",
        ]
        .iter()
        .map(|n| parse("app.log", Naming::Date, n).unwrap().key)
        .collect();
        keys.sort_by(Key::newest_first);
        let names: Vec<String> = keys.iter().map(|k| k.stem("app.log")).collect();
        assert_eq!(
            names,
            [
                "app.log-20261128-143005-2",
                "app.log-20261128-143005",
                "app.log-20261128",
                "app.log-20261127"
            ]
        );
    }
}
