//! The postgres check: a fresh connection (password from the passfile), `SELECT 1` latency,
//! connections in use against `max_connections` and the role's own `CONNECTION LIMIT`, and the
//! server's major version against the pg_dump the backups use.

use std::time::Instant;

use super::board::Probe;
use crate::config::Config;
use crate::pg;
use crate::protocol::HealthStatus;

/// Above this share of a connection limit the check warns.
const WARN_SHARE: f64 = 0.8;

const USAGE_SQL: &str = "SELECT current_setting('max_connections')::int, \
     (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int, \
     (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user)::int, \
     (SELECT count(*) FROM pg_stat_activity \
        WHERE backend_type = 'client backend' AND usename = current_user)::int, \
     current_setting('server_version_num')::int";

pub async fn check(config: &Config) -> Probe {
    let pgc = &config.postgres;
    let client = match pg::connect(pgc, &pgc.dbname).await {
        Ok(c) => c,
        Err(e) => return Probe::new(HealthStatus::Fail, e.to_string()),
    };
    let t0 = Instant::now();
    if let Err(e) = client.simple_query("SELECT 1").await {
        return Probe::new(
            HealthStatus::Fail,
            format!("SELECT 1 failed: {}", pg::describe(&e)),
        );
    }
    let latency = t0.elapsed();
    let row = match client.query_one(USAGE_SQL, &[]).await {
        Ok(r) => r,
        Err(e) => {
            return Probe::new(
                HealthStatus::Fail,
                format!("cannot read connection usage: {}", pg::describe(&e)),
            );
        }
    };
    let (max, used, role_limit, role_used, server_num): (i32, i32, i32, i32, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let mut status = HealthStatus::Ok;
    let mut notes = vec![format!("{used}/{max} connections")];
    if f64::from(used) > WARN_SHARE * f64::from(max) {
        status = HealthStatus::Warn;
        notes.push(format!(
            "over {:.0}% of max_connections",
            WARN_SHARE * 100.0
        ));
    }
    if role_limit >= 0 {
        notes.push(format!("role {} uses {role_used}/{role_limit}", pgc.user));
        if f64::from(role_used) > WARN_SHARE * f64::from(role_limit) {
            status = HealthStatus::Warn;
            notes.push(format!(
                "over {:.0}% of the role's connection limit",
                WARN_SHARE * 100.0
            ));
        }
    }
    let (s, note) = judge_dump_version(pg_dump_major(config).await, server_num / 10000);
    status = status.max(s);
    notes.extend(note);
    let mut probe = Probe::new(status, notes.join(", "));
    probe.latency = latency;
    probe
}

/// A pg_dump older than the server cannot dump it; one we cannot run or read only warns here
/// (the backup job itself fails loudly on it).
fn judge_dump_version(
    dump_major: Result<i32, String>,
    server_major: i32,
) -> (HealthStatus, Option<String>) {
    match dump_major {
        Ok(dump) if dump < server_major => (
            HealthStatus::Fail,
            Some(format!(
                "pg_dump {dump} is older than the server ({server_major}) and cannot dump it"
            )),
        ),
        Ok(_) => (HealthStatus::Ok, None),
        Err(why) => (HealthStatus::Warn, Some(why)),
    }
}

/// The major version of the pg_dump the backups run.
async fn pg_dump_major(config: &Config) -> Result<i32, String> {
    let path = pg::tool(&config.postgres, "pg_dump").map_err(|e| e.to_string())?;
    let line = pg::tool_version(&path).await;
    parse_major(&line).ok_or_else(|| format!("cannot tell pg_dump's version from {line:?}"))
}

/// `pg_dump (PostgreSQL) 15.18` -> 15; `pg_dump (PostgreSQL) 9.6.24` -> 9.
fn parse_major(line: &str) -> Option<i32> {
    let version = line.split_whitespace().last()?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_pg_dump_fails_a_newer_one_is_fine() {
        assert_eq!(judge_dump_version(Ok(15), 15), (HealthStatus::Ok, None));
        assert_eq!(judge_dump_version(Ok(17), 15), (HealthStatus::Ok, None));
        let (s, note) = judge_dump_version(Ok(14), 15);
        assert_eq!(s, HealthStatus::Fail);
        assert_eq!(
            note.unwrap(),
            "pg_dump 14 is older than the server (15) and cannot dump it"
        );
        assert_eq!(
            judge_dump_version(Err("x".into()), 15).0,
            HealthStatus::Warn
        );
    }

    #[test]
    fn pg_dump_versions() {
        for (line, major) in [
            ("pg_dump (PostgreSQL) 15.18", Some(15)),
            ("pg_dump (PostgreSQL) 17beta1", Some(17)),
            ("pg_dump (PostgreSQL) 9.6.24", Some(9)),
            ("unknown (no such file)", None),
        ] {
            assert_eq!(super::parse_major(line), major, "{line}");
        }
    }
}
