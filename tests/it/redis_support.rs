//! What the Redis backup tests share: a redis-server with `requirepass` holding a dataset of
//! every type in several databases (some keys with TTLs), the daemon with a `source = "redis"`
//! job, and the dataset as the server itself reports it (`DUMP` and `PEXPIRETIME` of every
//! key), so a restored server can be compared key by key.

use std::collections::BTreeMap;

use crate::harness::{self, Daemon, DaemonBuilder, RedisServer, Resp, RespConnection};

/// Distinctive enough to grep for.
pub const PASSWORD: &str = "Rz9q7kV2-redis+pw%x";
/// The databases the dataset fills.
pub const DBS: [u32; 3] = [0, 3, 9];
/// Keys per database: the typed ones below plus this many plain strings.
const STRINGS: usize = 200;

/// A temporary directory for the daemon and a password-protected redis-server.
pub struct RedisFixture {
    pub dir: tempfile::TempDir,
    pub redis: RedisServer,
}

impl RedisFixture {
    pub fn new(aof: bool) -> RedisFixture {
        let dir = harness::tempdir();
        let redis = if aof {
            RedisServer::start_with_password_and_aof(PASSWORD)
        } else {
            RedisServer::start_with_password(PASSWORD)
        };
        RedisFixture { dir, redis }
    }

    pub fn backup_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("backups")
    }

    /// A daemon with `[redis]` for the server (password in `password-file`) and a job
    /// `[jobs.cache]` with `source = "redis"` and `extra` (TOML lines).
    pub fn daemon(&self, extra: &str) -> DaemonBuilder {
        Daemon::builder(self.dir.path())
            .redis(&self.redis)
            .toml(&format!(
                "[jobs.cache]\nkind = \"backup\"\nsource = \"redis\"\n{extra}\n"
            ))
    }

    /// Fills [`DBS`] with strings, a hash, a list, a set, a sorted set, a stream and keys with
    /// TTLs (an hour, so none expires during a test).
    pub fn populate(&self) {
        populate(&self.redis);
    }
}

/// See [`RedisFixture::populate`].
pub fn populate(redis: &RedisServer) {
    let mut c = redis.connect().expect("connect to redis");
    for db in DBS {
        call(&mut c, &["SELECT", &db.to_string()]);
        for i in 0..STRINGS {
            call(
                &mut c,
                &["SET", &format!("s:{db}:{i}"), &format!("value {i} ü")],
            );
        }
        call(&mut c, &["HSET", "h", "a", "1", "b", "2", "c", "three"]);
        call(&mut c, &["RPUSH", "l", "x", "y", "z", "x"]);
        call(&mut c, &["SADD", "set", "m1", "m2", "m3"]);
        call(
            &mut c,
            &["ZADD", "z", "1", "one", "2.5", "two", "-3", "three"],
        );
        call(
            &mut c,
            &["XADD", "events", "*", "kind", "login", "user", "42"],
        );
        call(
            &mut c,
            &["XADD", "events", "*", "kind", "logout", "user", "42"],
        );
        call(&mut c, &["SET", "session:abc", "token", "EX", "3600"]);
        call(&mut c, &["HSET", "session:h", "user", "7"]);
        call(&mut c, &["EXPIRE", "session:h", "7200"]);
    }
}

fn call(c: &mut RespConnection, args: &[&str]) -> Resp {
    let r = c
        .call(args)
        .unwrap_or_else(|e| panic!("redis {args:?}: {e}"));
    assert!(!matches!(r, Resp::Error(_)), "redis {args:?}: {r:?}");
    r
}

/// Every key of every database: (db, key) -> (TYPE, DUMP bytes (a set: its sorted members),
/// PEXPIRETIME).
pub fn dataset(redis: &RedisServer) -> BTreeMap<(u32, String), (String, Vec<u8>, i64)> {
    let mut c = redis.connect().expect("connect to redis");
    let mut out = BTreeMap::new();
    for db in 0..16u32 {
        call(&mut c, &["SELECT", &db.to_string()]);
        let Resp::Array(Some(keys)) = call(&mut c, &["KEYS", "*"]) else {
            panic!("KEYS did not answer a list");
        };
        for key in keys {
            let key = key.as_text().expect("a key name");
            let kind = call(&mut c, &["TYPE", &key]).as_text().expect("type");
            // A set's DUMP lists members in hash-table order, which a reload may change.
            let dump = if kind == "set" {
                let Resp::Array(Some(members)) = call(&mut c, &["SMEMBERS", &key]) else {
                    panic!("SMEMBERS {key}");
                };
                let mut members: Vec<String> = members.iter().filter_map(Resp::as_text).collect();
                members.sort();
                members.join("\0").into_bytes()
            } else {
                let Resp::Bulk(Some(dump)) = call(&mut c, &["DUMP", &key]) else {
                    panic!("DUMP {key}");
                };
                dump
            };
            let Resp::Integer(at) = call(&mut c, &["PEXPIRETIME", &key]) else {
                panic!("PEXPIRETIME {key}");
            };
            out.insert((db, key), (kind, dump, at));
        }
    }
    out
}

/// Fails unless `got` has exactly the keys of `want`, naming the first that differ.
pub fn assert_same_keys(
    got: &BTreeMap<(u32, String), (String, Vec<u8>, i64)>,
    want: &BTreeMap<(u32, String), (String, Vec<u8>, i64)>,
    what: &str,
) {
    let differ: Vec<_> = want
        .keys()
        .chain(got.keys())
        .filter(|k| got.get(*k) != want.get(*k))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} keys, {} wanted; these differ: {differ:?}",
        got.len(),
        want.len()
    );
}

/// `INFO keyspace` of the server as the manifest writes it: {"0": {"keys": n, "expires": m}}.
pub fn keyspace_json(redis: &RedisServer) -> serde_json::Value {
    let text = redis
        .cmd(&["INFO", "keyspace"])
        .as_text()
        .expect("INFO text");
    let mut map = serde_json::Map::new();
    for line in text.lines() {
        let Some((db, rest)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(db) = db.strip_prefix("db") else {
            continue;
        };
        let field = |name: &str| -> u64 {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .expect("a count")
        };
        map.insert(
            db.to_owned(),
            serde_json::json!({ "keys": field("keys"), "expires": field("expires") }),
        );
    }
    serde_json::Value::Object(map)
}

/// Fails if `text` holds the password.
pub fn assert_no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the Redis password:\n{text}"
    );
}
