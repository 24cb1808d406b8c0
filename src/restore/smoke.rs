//! Smoke queries (`drill-sql`): run in a restore drill's scratch database after the row counts
//! matched, each in a read-only transaction under a statement timeout, and compared with its
//! bounds. One that fails, errs or returns anything but one number fails the drill.
//!
//! Each query is first prepared (the server refuses more than one statement there, whatever
//! the load-time check let through, and says how many columns it returns), then run through the
//! simple protocol so its one value comes back as text whatever its type (bigint, numeric,
//! double precision...).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::{DrillSql, PostgresConfig};
use crate::pg;

/// How long one smoke query may run (server side; the client waits a little longer).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What one smoke query gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeResult {
    pub query: String,
    /// The bounds in words (`min = 1`).
    pub bounds: String,
    /// The number it returned, when it returned one.
    pub value: Option<f64>,
    pub passed: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl SmokeResult {
    /// The result of `q` given what running it gave (pure: the comparison with the bounds).
    pub fn judge(q: &DrillSql, got: Result<f64, String>) -> SmokeResult {
        let (value, problem) = match got {
            Ok(v) => (Some(v), q.judge(v)),
            Err(e) => (None, Some(e)),
        };
        SmokeResult {
            query: q.query.clone(),
            bounds: q.bounds(),
            value,
            passed: problem.is_none(),
            problem,
        }
    }

    /// One line: `drill-sql "select ...": returned 0, below min = 1`.
    pub fn describe(&self) -> String {
        match (&self.problem, self.value) {
            (Some(p), _) => format!("drill-sql {:?}: {p}", self.query),
            (None, Some(v)) => format!("drill-sql {:?}: {v} ({})", self.query, self.bounds),
            (None, None) => format!("drill-sql {:?}: passed", self.query),
        }
    }
}

/// Runs every query of `queries` in database `db` of `server`; one result each, in order.
pub async fn run(server: &PostgresConfig, db: &str, queries: &[DrillSql]) -> Vec<SmokeResult> {
    if queries.is_empty() {
        return Vec::new();
    }
    let client = match pg::connect(server, db).await {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot connect to {db}: {e}");
            return queries
                .iter()
                .map(|q| SmokeResult::judge(q, Err(why.clone())))
                .collect();
        }
    };
    let mut results = Vec::with_capacity(queries.len());
    for q in queries {
        let wait = STATEMENT_TIMEOUT + Duration::from_secs(5);
        let got = match tokio::time::timeout(wait, one(&client, &q.query)).await {
            Ok(got) => got,
            Err(_) => Err(format!("no answer within {}s", wait.as_secs())),
        };
        results.push(SmokeResult::judge(q, got));
    }
    results
}

/// The one number `query` returns, in a read-only transaction that is rolled back.
async fn one(client: &Client, query: &str) -> Result<f64, String> {
    let sql_err = |e: tokio_postgres::Error| pg::describe(&e);
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
            STATEMENT_TIMEOUT.as_millis()
        ))
        .await
        .map_err(sql_err)?;
    let result = async {
        let prepared = client.prepare(query).await.map_err(sql_err)?;
        if prepared.columns().len() != 1 {
            return Err(format!(
                "returns {} columns; a smoke query returns one number",
                prepared.columns().len()
            ));
        }
        let messages = client.simple_query(query).await.map_err(sql_err)?;
        let rows: Vec<_> = messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect();
        let [row] = rows.as_slice() else {
            return Err(format!(
                "returned {} rows; a smoke query returns one row",
                rows.len()
            ));
        };
        let text = row
            .try_get(0)
            .map_err(sql_err)?
            .ok_or_else(|| "returned NULL".to_owned())?;
        number(text)
    }
    .await;
    let _ = client.batch_execute("ROLLBACK").await;
    result
}

/// PostgreSQL's text form of a number (`42`, `3.5`, `1e+06`, `NaN`) as f64.
fn number(text: &str) -> Result<f64, String> {
    match text {
        "t" => Ok(1.0),
        "f" => Ok(0.0),
        _ => text
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("returned {text:?}, not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_become_numbers() {
        assert_eq!(number("42"), Ok(42.0));
        assert_eq!(number("-3.25"), Ok(-3.25));
        assert_eq!(number("1e+06"), Ok(1e6));
        assert_eq!(number("t"), Ok(1.0));
        assert!(number("abc").unwrap_err().contains("not a number"));
    }

    #[test]
    fn results_say_why_they_failed() {
        let q = DrillSql {
            query: "select count(*) from users".into(),
            min: Some(1.0),
            max: None,
        };
        let low = SmokeResult::judge(&q, Ok(0.0));
        assert!(!low.passed);
        assert_eq!(
            low.describe(),
            "drill-sql \"select count(*) from users\": returned 0, below min = 1"
        );
        let ok = SmokeResult::judge(&q, Ok(3.0));
        assert!(ok.passed && ok.problem.is_none(), "{ok:?}");
        let err = SmokeResult::judge(&q, Err("relation \"users\" does not exist".into()));
        assert!(!err.passed && err.value.is_none());
        assert!(
            err.describe().contains("does not exist"),
            "{}",
            err.describe()
        );
    }
}
