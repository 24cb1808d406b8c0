//! The Redis backend: one lease key per job, taken, renewed and released by Lua scripts so
//! each step is one atomic compare-then-act on the server.
//!
//! Keys (`<prefix>` is `key-prefix`):
//! - `<prefix>:lease:<job>` = `<host> <run id> <fencing token>`, with a PX expiry of the ttl;
//! - `<prefix>:fence:<job>`: the counter the fencing tokens come from (INCR, never reset);
//! - `<prefix>:slot:<job>` = `<slot ms> <host> <run id>`: the latest scheduled slot taken;
//! - `<prefix>:last:<job>` = `<host> <run id> <fencing token> <time>`: the last acquisition.
//!
//! The connection is our own multiplexed connection (opened per run; a `ConnectionManager`
//! stops reconnecting after some errors, FACTS.md); after an error it is reopened at the next
//! renewal. Errors of the redis crate never contain the URL or the password; ours show the
//! redacted URL only.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;

use super::{Acquired, Claim, CoordError, Holder, Lease, key, unreachable};
use crate::config::{CoordinationConfig, RedisConfig};
use crate::redis_login::shown_error;

const BACKEND: &str = "redis";

/// KEYS: lease, fence, slot, last. ARGV: host, run id, ttl ms, slot ms or "", now.
/// Returns {"ok", token} | {"held", lease value} | {"taken", slot value} | {"fresh", ""}.
///
/// No fencing counter means Redis has never seen this job, or lost its data (a restart
/// without persistence): a previous holder may still be running and will only notice at its
/// next renewal. So the script seeds the counter from the server clock (tokens keep
/// increasing across the loss), parks a placeholder lease for one ttl, and refuses; every
/// holder renews within a third of that and cancels when it finds the placeholder.
const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return {'held', cur} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('SET', KEYS[1], ARGV[6], 'PX', ARGV[3])
  return {'fresh', ''}
end
if ARGV[4] ~= '' then
  local taken = redis.call('GET', KEYS[3])
  if taken then
    local s = tonumber(string.match(taken, '^(%d+)'))
    if s and s >= tonumber(ARGV[4]) then return {'taken', taken} end
  end
end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4] .. ' ' .. ARGV[1] .. ' ' .. ARGV[2]) end
redis.call('SET', KEYS[4], value .. ' ' .. ARGV[5])
return {'ok', tostring(token)}
";

/// The lease value parked while Redis has no record of a job (see [`ACQUIRE`]).
const PLACEHOLDER: &str = "(no-record) - 0";
const NO_RECORD: &str = "Redis had no record of this job (its first run, or Redis lost its data); \
     no host runs it for one ttl so that a previous holder notices";

/// KEYS: lease. ARGV: our value, ttl ms. Returns {"ok", ""} | {"other", value} | {"gone", ""}.
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'ok', ''}
end
if cur then return {'other', cur} end
return {'gone', ''}
";

/// KEYS: lease. ARGV: our value. Deletes the key only while it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A lease held in Redis.
pub struct RedisLease {
    redis: RedisConfig,
    ttl: Duration,
    key: String,
    value: String,
    token: u64,
    conn: Option<MultiplexedConnection>,
    /// When the request of the last successful renewal (or the acquisition) was sent: the
    /// lease lasts at least until this plus the ttl.
    confirmed: Instant,
}

pub(super) async fn acquire(
    c: &CoordinationConfig,
    redis: &RedisConfig,
    claim: &Claim,
) -> Result<Acquired, CoordError> {
    let step = c.renew_every();
    let sent = Instant::now();
    let mut conn = connect(redis, step).await?;
    let lease_key = key(&c.key_prefix, "lease", &claim.job);
    let slot = claim
        .slot
        .map(|s| s.timestamp_millis().to_string())
        .unwrap_or_default();
    let reply: Vec<String> = bounded(
        step,
        redis::cmd("EVAL")
            .arg(ACQUIRE)
            .arg(4)
            .arg(&lease_key)
            .arg(key(&c.key_prefix, "fence", &claim.job))
            .arg(key(&c.key_prefix, "slot", &claim.job))
            .arg(key(&c.key_prefix, "last", &claim.job))
            .arg(&c.host)
            .arg(claim.run_id.as_str())
            .arg(millis(c.ttl))
            .arg(slot)
            .arg(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .arg(PLACEHOLDER)
            .query_async(&mut conn),
    )
    .await?;
    match reply.as_slice() {
        [s, token] if s == "ok" => {
            let token: u64 = token
                .parse()
                .map_err(|_| unreachable(BACKEND, format!("bad fencing token {token:?}")))?;
            Ok(Acquired::Held(Lease::Redis(RedisLease {
                redis: redis.clone(),
                ttl: c.ttl,
                key: lease_key,
                value: format!("{} {} {token}", c.host, claim.run_id),
                token,
                conn: Some(conn),
                confirmed: sent,
            })))
        }
        [s, value] if s == "held" => Ok(Acquired::Refused(parse_lease(value))),
        [s, value] if s == "taken" => Ok(Acquired::Refused(parse_slot(value))),
        [s, _] if s == "fresh" => Ok(Acquired::Refused(parse_lease(PLACEHOLDER))),
        other => Err(unreachable(
            BACKEND,
            format!("unexpected reply {other:?} to the acquisition"),
        )),
    }
}

impl RedisLease {
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Renews every ttl/3. Gives up (returns) when the key holds another value or is gone, or
    /// when Redis stayed unreachable so long that the lease could expire before the next try:
    /// stopping before the expiry is what keeps two hosts from running at once.
    pub async fn keep(&mut self) -> String {
        let step = self.ttl / 3;
        loop {
            tokio::time::sleep(step).await;
            let sent = Instant::now();
            match self.renew(step).await {
                Ok(Renewal::Renewed) => self.confirmed = sent,
                Ok(Renewal::Other(value)) => {
                    let h = parse_lease(&value);
                    return format!("lease lost: the lease is now {}", h.describe());
                }
                Ok(Renewal::Gone) => {
                    return "lease lost: the lease key is gone (expired, or Redis lost its data)"
                        .into();
                }
                Err(e) => {
                    self.conn = None;
                    let since = self.confirmed.elapsed();
                    if since + step >= self.ttl {
                        return format!(
                            "lease lost: Redis unreachable for {}s, the lease may expire ({})",
                            since.as_secs(),
                            e.message
                        );
                    }
                    tracing::warn!("lease renewal failed, retrying: {e}");
                }
            }
        }
    }

    async fn renew(&mut self, step: Duration) -> Result<Renewal, CoordError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(connect(&self.redis, step).await?),
        };
        let reply: Vec<String> = bounded(
            step,
            redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(&self.key)
                .arg(&self.value)
                .arg(millis(self.ttl))
                .query_async(conn),
        )
        .await?;
        Ok(match reply.as_slice() {
            [s, _] if s == "ok" => Renewal::Renewed,
            [s, v] if s == "other" => Renewal::Other(v.clone()),
            _ => Renewal::Gone,
        })
    }

    pub async fn release(mut self) {
        let step = self.ttl / 3;
        let result = async {
            let conn = match &mut self.conn {
                Some(c) => c,
                None => self.conn.insert(connect(&self.redis, step).await?),
            };
            bounded::<i64>(
                step,
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(&self.key)
                    .arg(&self.value)
                    .query_async(conn),
            )
            .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("cannot release the lease (it expires by itself): {e}");
        }
    }
}

enum Renewal {
    Renewed,
    Other(String),
    Gone,
}

async fn connect(
    redis: &RedisConfig,
    timeout: Duration,
) -> Result<MultiplexedConnection, CoordError> {
    let shown = redis.url.redacted();
    let info = crate::redis_login::connection_info(redis).map_err(|e| unreachable(BACKEND, e))?;
    let client = redis::Client::open(info)
        .map_err(|e| unreachable(BACKEND, format!("{shown}: {}", shown_error(&e))))?;
    let timeouts = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&timeouts)
        .await
        .map_err(|e| {
            unreachable(
                BACKEND,
                format!("cannot connect to {shown}: {}", shown_error(&e)),
            )
        })
}

/// One round trip under `timeout` (the crate's own response timeout does not cover a server
/// that accepted the connection and then froze in every case).
async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, CoordError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreachable(BACKEND, shown_error(&e))),
        Err(_) => Err(unreachable(
            BACKEND,
            format!("no reply within {}ms", timeout.as_millis()),
        )),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `<host> <run id> <token>`, or the placeholder.
fn parse_lease(value: &str) -> Holder {
    if value == PLACEHOLDER {
        return Holder {
            host: "no host".into(),
            run_id: None,
            fencing_token: None,
            tick: None,
            note: Some(NO_RECORD.into()),
        };
    }
    let mut parts = value.split(' ');
    Holder {
        host: parts.next().unwrap_or("?").to_owned(),
        run_id: parts.next().map(str::to_owned),
        fencing_token: parts.next().and_then(|t| t.parse().ok()),
        tick: None,
        note: None,
    }
}

/// `<slot ms> <host> <run id>`.
fn parse_slot(value: &str) -> Holder {
    let mut parts = value.split(' ');
    let tick = parts
        .next()
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    Holder {
        host: parts.next().unwrap_or("?").to_owned(),
        run_id: parts.next().map(str::to_owned),
        fencing_token: None,
        tick,
        note: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_parse_back() {
        let h = super::parse_lease("db-a 20260101T000000Z-abcd 42");
        assert_eq!((h.host.as_str(), h.fencing_token), ("db-a", Some(42)));
        let s = super::parse_slot("1000 db-b r9");
        assert_eq!(s.host, "db-b");
        assert_eq!(s.tick.map(|t| t.timestamp_millis()), Some(1000));
    }
}
