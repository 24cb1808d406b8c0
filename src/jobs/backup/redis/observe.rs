//! What the source server says around a transfer, over the redis crate's own connection:
//! version, AOF, `INFO keyspace` per database, and a sample of keys (type, absolute expiry)
//! that a drill looks for in the restored RDB. Key names never leave the daemon: the manifest
//! keeps their SHA-256 only.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use crate::redis_login::shown_error;
use crate::secret::SecretUrl;

/// Keys sampled per database.
const SAMPLE_PER_DB: usize = 8;
/// Every round trip is bounded: a frozen server must fail the run, not hang it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `INFO keyspace` of one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbKeys {
    pub keys: u64,
    pub expires: u64,
}

/// Database index -> its counts.
pub type Keyspace = BTreeMap<u32, DbKeys>;

/// One sampled key as the manifest keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledKey {
    pub db: u32,
    pub key_sha256: String,
    /// `TYPE`: string, list, set, zset, hash, stream.
    #[serde(rename = "type")]
    pub kind: String,
    /// `PEXPIRETIME` (ms since the epoch); `None`: no expiry (or a server before 7.0 that
    /// cannot say, then `ttl_known` is false).
    pub expire_at_ms: Option<i64>,
    #[serde(default = "yes")]
    pub ttl_known: bool,
}

fn yes() -> bool {
    true
}

/// A sampled key with its name, held in memory between the two looks.
pub struct Sampled {
    pub key: Vec<u8>,
    pub entry: SampledKey,
}

/// The server's state before a transfer.
pub struct Before {
    pub version: String,
    pub aof_enabled: bool,
    pub used_memory: u64,
    pub keyspace: Keyspace,
    pub sample: Vec<Sampled>,
}

/// A connection through the redis crate, with its password set from `password-file`.
pub async fn connect(
    info: redis::ConnectionInfo,
    shown: &SecretUrl,
) -> Result<MultiplexedConnection, String> {
    let shown = shown.redacted();
    let client = redis::Client::open(info).map_err(|e| format!("{shown}: {}", shown_error(&e)))?;
    let timeouts = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REPLY_TIMEOUT))
        .set_response_timeout(Some(REPLY_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&timeouts)
        .await
        .map_err(|e| match e.kind() {
            redis::ErrorKind::AuthenticationFailed => format!(
                "Redis at {shown} refused the password of password-file: {}",
                shown_error(&e)
            ),
            _ => format!("cannot connect to Redis at {shown}: {}", shown_error(&e)),
        })
}

/// Version, AOF, memory, keyspace and a sample of keys of every non-empty database.
pub async fn before(conn: &mut MultiplexedConnection) -> Result<Before, String> {
    let text = info(conn, &["server", "persistence", "memory", "keyspace"]).await?;
    let fields = fields(&text);
    let keyspace = parse_keyspace(&text);
    let mut sample = Vec::new();
    for &db in keyspace.keys() {
        sample.extend(sample_db(conn, db).await?);
    }
    Ok(Before {
        version: fields.get("redis_version").cloned().unwrap_or_default(),
        aof_enabled: fields.get("aof_enabled").is_some_and(|v| v == "1"),
        used_memory: fields
            .get("used_memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        keyspace,
        sample,
    })
}

/// `INFO keyspace` now.
pub async fn keyspace(conn: &mut MultiplexedConnection) -> Result<Keyspace, String> {
    Ok(parse_keyspace(&info(conn, &["keyspace"]).await?))
}

/// The sampled keys whose type and expiry are still what they were: a key written while the
/// RDB was taken may be in it either way, so only the unchanged ones are kept for the drill.
pub async fn still_same(
    conn: &mut MultiplexedConnection,
    sample: Vec<Sampled>,
) -> Result<Vec<SampledKey>, String> {
    let mut kept = Vec::new();
    for s in sample {
        let now = look(conn, s.entry.db, &s.key).await?;
        if now == s.entry {
            kept.push(s.entry);
        }
    }
    Ok(kept)
}

async fn info(conn: &mut MultiplexedConnection, sections: &[&str]) -> Result<String, String> {
    redis::cmd("INFO")
        .arg(sections)
        .query_async(conn)
        .await
        .map_err(|e| format!("INFO failed: {}", shown_error(&e)))
}

async fn sample_db(conn: &mut MultiplexedConnection, db: u32) -> Result<Vec<Sampled>, String> {
    select(conn, db).await?;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    // RANDOMKEY repeats itself on small databases: a few more tries than keys wanted.
    for _ in 0..SAMPLE_PER_DB * 3 {
        let key: Option<Vec<u8>> = query(conn, &mut redis::cmd("RANDOMKEY")).await?;
        match key {
            Some(k) if !keys.contains(&k) => keys.push(k),
            Some(_) => {}
            None => break,
        }
        if keys.len() == SAMPLE_PER_DB {
            break;
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let entry = look(conn, db, &key).await?;
        if entry.kind != "none" {
            out.push(Sampled { key, entry });
        }
    }
    Ok(out)
}

/// A key's type and absolute expiry in database `db`.
pub async fn look(
    conn: &mut MultiplexedConnection,
    db: u32,
    key: &[u8],
) -> Result<SampledKey, String> {
    select(conn, db).await?;
    let kind: String = query(conn, redis::cmd("TYPE").arg(key)).await?;
    let (expire_at_ms, ttl_known) = match redis::cmd("PEXPIRETIME")
        .arg(key)
        .query_async::<i64>(conn)
        .await
    {
        Ok(ms) if ms >= 0 => (Some(ms), true),
        Ok(_) => (None, true),
        Err(_) => (None, false),
    };
    Ok(SampledKey {
        db,
        key_sha256: crate::jobs::backup::stream::hex(&<sha2::Sha256 as sha2::Digest>::digest(key)),
        kind,
        expire_at_ms,
        ttl_known,
    })
}

pub async fn select(conn: &mut MultiplexedConnection, db: u32) -> Result<(), String> {
    query::<()>(conn, redis::cmd("SELECT").arg(db)).await
}

async fn query<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    cmd: &mut redis::Cmd,
) -> Result<T, String> {
    cmd.query_async(conn)
        .await
        .map_err(|e| format!("Redis: {}", shown_error(&e)))
}

fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `db3:keys=5,expires=1,avg_ttl=0` lines.
pub fn parse_keyspace(text: &str) -> Keyspace {
    let mut out = Keyspace::new();
    for line in text.lines() {
        let Some((name, rest)) = line.trim_end().split_once(':') else {
            continue;
        };
        let Some(db) = name.strip_prefix("db").and_then(|d| d.parse().ok()) else {
            continue;
        };
        let value = |k: &str| {
            rest.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(
            db,
            DbKeys {
                keys: value("keys"),
                expires: value("expires"),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lines_are_read() {
        let text =
            "# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=0\r\ndb12:keys=7,expires=0,avg_ttl=0\r\n";
        let ks = parse_keyspace(text);
        assert_eq!(
            ks[&0],
            DbKeys {
                keys: 5,
                expires: 1
            }
        );
        assert_eq!(
            ks[&12],
            DbKeys {
                keys: 7,
                expires: 0
            }
        );
        assert_eq!(ks.len(), 2);
    }
}
