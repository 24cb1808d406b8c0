//! `drill-sql`: the smoke queries a restore drill runs in its scratch database, each with the
//! bounds its one number must lie within.
//!
//! ```toml
//! drill-sql = [{ query = "select count(*) from users", min = 1 }]
//! ```
//!
//! Checked at load: a non-empty query that is one statement reading data (it begins with
//! `select`, `with`, `values` or `table`), and `min <= max`. That it returns exactly one number
//! is checked when it runs (a query that does not fails the drill, saying so).

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::validate::Check;

/// The most smoke queries a job may have (each one runs at every drill).
pub const MAX_QUERIES: usize = 50;
/// The longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;

/// One `drill-sql` entry as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrillSql {
    pub query: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// One smoke query of a restore drill, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSql {
    /// One statement, without a trailing `;`.
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl DrillSql {
    /// `None` when `value` lies within the bounds, else why not (naming the bound).
    pub fn judge(&self, value: f64) -> Option<String> {
        if value.is_nan() {
            return Some("returned NaN".into());
        }
        match (self.min, self.max) {
            (Some(min), _) if value < min => Some(format!("returned {value}, below min = {min}")),
            (_, Some(max)) if value > max => Some(format!("returned {value}, above max = {max}")),
            _ => None,
        }
    }

    /// The bounds in words: `min = 1`, `1 <= x <= 5`, `any number`.
    pub fn bounds(&self) -> String {
        match (self.min, self.max) {
            (Some(a), Some(b)) => format!("min = {a}, max = {b}"),
            (Some(a), None) => format!("min = {a}"),
            (None, Some(b)) => format!("max = {b}"),
            (None, None) => "any number".into(),
        }
    }
}

/// Validates the `drill-sql` of the job at `key` (`jobs.NAME`).
pub(super) fn validate(
    check: &Check,
    key: &str,
    raw: Option<Vec<RawDrillSql>>,
) -> Result<Vec<DrillSql>, ConfigError> {
    let raw = raw.unwrap_or_default();
    let base = format!("{key}.drill-sql");
    if raw.len() > MAX_QUERIES {
        return Err(check.err(&base, format!("at most {MAX_QUERIES} queries")));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            one(r).map_err(|(field, why)| check.err(&format!("{base}[{i}].{field}"), why))
        })
        .collect()
}

/// One entry, or the field at fault and why.
fn one(raw: RawDrillSql) -> Result<DrillSql, (&'static str, String)> {
    let query = raw.query.ok_or(("query", "is missing".to_owned()))?;
    let query = statement(&query).map_err(|why| ("query", why))?;
    for (field, v) in [("min", raw.min), ("max", raw.max)] {
        if v.is_some_and(|v| !v.is_finite()) {
            return Err((field, "must be a finite number".into()));
        }
    }
    if let (Some(min), Some(max)) = (raw.min, raw.max)
        && min > max
    {
        return Err(("min", format!("min = {min} is greater than max = {max}")));
    }
    Ok(DrillSql {
        query,
        min: raw.min,
        max: raw.max,
    })
}

/// The query as one statement that reads data, trimmed and without a trailing `;`.
fn statement(query: &str) -> Result<String, String> {
    let q = query.trim();
    let q = q.strip_suffix(';').unwrap_or(q).trim_end();
    if q.is_empty() {
        return Err("is empty".into());
    }
    if q.len() > MAX_QUERY_BYTES {
        return Err(format!("is longer than {MAX_QUERY_BYTES} bytes"));
    }
    if q.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err("contains a control character".into());
    }
    if has_bare_semicolon(q) {
        return Err(format!(
            "{q:?} holds more than one statement (a ';' outside quotes); give one query"
        ));
    }
    let first = q
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !["select", "with", "values", "table"].contains(&first.as_str()) {
        return Err(format!(
            "{q:?} is not a query: it must begin with SELECT, WITH, VALUES or TABLE"
        ));
    }
    Ok(q.to_owned())
}

/// Whether `q` has a `;` outside quotes, quoted identifiers and comments. Dollar quoting is not
/// followed: a `;` inside one is refused too (never the other way round).
fn has_bare_semicolon(q: &str) -> bool {
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => return true,
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != quote {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(query: &str, min: Option<f64>, max: Option<f64>) -> RawDrillSql {
        RawDrillSql {
            query: Some(query.into()),
            min,
            max,
        }
    }

    #[test]
    fn good_queries_are_kept_as_one_statement() {
        for (q, want) in [
            ("select count(*) from users", "select count(*) from users"),
            ("  SELECT 1;  ", "SELECT 1"),
            (
                "with x as (select 1) select * from x",
                "with x as (select 1) select * from x",
            ),
            ("select ';' ", "select ';'"),
            ("select 1 -- a; comment\n", "select 1 -- a; comment"),
            ("select /* ; */ 1", "select /* ; */ 1"),
            (
                "select count(*) from \"a;b\"",
                "select count(*) from \"a;b\"",
            ),
        ] {
            assert_eq!(
                one(raw(q, None, None)).map(|d| d.query),
                Ok(want.to_owned()),
                "{q:?}"
            );
        }
    }

    #[test]
    fn bad_entries_name_the_field() {
        let cases: &[(RawDrillSql, &str, &str)] = &[
            (RawDrillSql::default(), "query", "missing"),
            (raw("  ; ", None, None), "query", "empty"),
            (
                raw("select 1; drop table users", None, None),
                "query",
                "more than one",
            ),
            (raw("delete from users", None, None), "query", "not a query"),
            (
                raw("select 1", Some(5.0), Some(1.0)),
                "min",
                "greater than max",
            ),
            (raw("select 1", None, Some(f64::INFINITY)), "max", "finite"),
            (raw("select $$;$$", None, None), "query", "more than one"),
        ];
        for (r, field, words) in cases {
            let (f, why) = one(r.clone()).expect_err(words);
            assert_eq!((f, why.contains(words)), (*field, true), "{why}");
        }
    }

    #[test]
    fn values_are_judged_against_their_bounds() {
        let q = |min, max| DrillSql {
            query: "select 1".into(),
            min,
            max,
        };
        let cases = [
            (q(Some(1.0), None), 0.0, Some("below min = 1")),
            (q(Some(1.0), None), 1.0, None),
            (q(None, Some(5.0)), 5.0, None),
            (q(None, Some(5.0)), 5.5, Some("above max = 5")),
            (q(Some(1.0), Some(5.0)), 3.0, None),
            (q(None, None), -7.0, None),
            (q(None, None), f64::NAN, Some("NaN")),
        ];
        for (d, v, want) in cases {
            let got = d.judge(v);
            match want {
                None => assert_eq!(got, None, "{v} {}", d.bounds()),
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{got:?}"),
            }
        }
    }
}
