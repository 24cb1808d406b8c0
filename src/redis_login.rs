//! Logging in to the `[redis]` server, for every part of the daemon that talks to it (health
//! checks, the fleet lease, Redis backups): the URL parsed by the redis crate, the password
//! read from `password-file` (checked private first) and set on the connection settings, so it
//! is never in a URL, an argv or an environment.

use redis::IntoConnectionInfo;

use crate::config::RedisConfig;

/// The connection settings of `config`, with the password of its `password-file`. Errors show
/// the redacted URL only.
pub fn connection_info(config: &RedisConfig) -> Result<redis::ConnectionInfo, String> {
    let shown = config.url.redacted();
    let mut info = config
        .url
        .expose()
        .into_connection_info()
        .map_err(|e| format!("{shown}: invalid URL: {}", shown_error(&e)))?;
    if let Some(path) = &config.password_file {
        crate::secret::check_private_file(path).map_err(|e| format!("password-file: {e}"))?;
        let pw = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read password-file {}: {e}", path.display()))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_password(pw.trim_end_matches(['\n', '\r']));
        info = info.set_redis_settings(settings);
    }
    Ok(info)
}

/// The redis crate's error text with any URL in it redacted.
pub fn shown_error(e: &redis::RedisError) -> String {
    crate::secret::scrub(&e.to_string())
}
