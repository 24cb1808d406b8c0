//! The redis check: a fresh connection per probe (a `ConnectionManager` stops reconnecting
//! after some errors, FACTS.md), AUTH from `password-file`, PING latency, memory against
//! `maxmemory`, and the persistence status (last RDB save, AOF writes).

use std::collections::HashMap;
use std::time::Instant;

use super::board::Probe;
use crate::config::RedisConfig;
use crate::protocol::HealthStatus;
use crate::redis_login::shown_error;

const WARN_SHARE: f64 = 0.8;

pub async fn check(config: &RedisConfig) -> Probe {
    match probe(config).await {
        Ok(p) => p,
        Err(message) => Probe::new(HealthStatus::Fail, message),
    }
}

async fn probe(config: &RedisConfig) -> Result<Probe, String> {
    // Ours show the redacted URL only; the crate's own texts go through `shown_error` in
    // case a version of it quotes the URL.
    let shown = config.url.redacted();
    let info = crate::redis_login::connection_info(config)?;
    let client = redis::Client::open(info).map_err(|e| format!("{shown}: {}", shown_error(&e)))?;
    // No timeouts of the crate's own (1 s to connect, 500 ms per reply): `check-timeout`
    // bounds the whole probe, as for every other check.
    let no_timeouts = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&no_timeouts)
        .await
        .map_err(|e| format!("cannot connect to {shown}: {}", shown_error(&e)))?;
    let t0 = Instant::now();
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("PING failed: {}", shown_error(&e)))?;
    let latency = t0.elapsed();
    if pong != "PONG" {
        return Err(format!("PING answered {pong:?}"));
    }
    let text: String = redis::cmd("INFO")
        .arg("memory")
        .arg("persistence")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("INFO failed: {}", shown_error(&e)))?;
    let mut probe = judge(&parse_info(&text));
    probe.latency = latency;
    Ok(probe)
}

fn parse_info(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .collect()
}

fn judge(info: &HashMap<&str, &str>) -> Probe {
    let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
    let mut status = HealthStatus::Ok;
    let mut notes = Vec::new();
    match (num("used_memory"), num("maxmemory")) {
        (Some(used), Some(max)) if max > 0 => {
            notes.push(format!("memory {}% of maxmemory", used * 100 / max));
            if used as f64 > WARN_SHARE * max as f64 {
                status = HealthStatus::Warn;
            }
        }
        (Some(used), _) => notes.push(format!("memory {used} bytes, no maxmemory")),
        _ => {}
    }
    for (key, what) in [
        ("rdb_last_bgsave_status", "last RDB save"),
        ("aof_last_bgrewrite_status", "last AOF rewrite"),
        ("aof_last_write_status", "last AOF write"),
    ] {
        if let Some(v) = info.get(key)
            && *v != "ok"
        {
            status = HealthStatus::Fail;
            notes.push(format!("{what}: {v}"));
        }
    }
    if notes.is_empty() {
        notes.push("PONG".into());
    }
    Probe::new(status, notes.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_persistence_are_judged() {
        let ok = "# Memory\r\nused_memory:100\r\nmaxmemory:1000\r\n# Persistence\r\nrdb_last_bgsave_status:ok\r\n";
        assert_eq!(judge(&parse_info(ok)).status, HealthStatus::Ok);
        let full = "used_memory:900\r\nmaxmemory:1000\r\n";
        assert_eq!(judge(&parse_info(full)).status, HealthStatus::Warn);
        let broken = "used_memory:1\r\nmaxmemory:0\r\nrdb_last_bgsave_status:err\r\n";
        let p = judge(&parse_info(broken));
        assert_eq!(p.status, HealthStatus::Fail);
        assert!(p.message.contains("last RDB save: err"), "{}", p.message);
    }
}
