//! The top-level `[metrics]` table: where Prometheus metrics are served and written.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ConfigError;
use super::raw::RawMetrics;
use super::validate::Check;

/// `[metrics]`: both ways are off unless configured; `atprectl metrics` always works.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// HTTP endpoint (`GET /metrics`); loopback only unless `allow-remote = true`.
    pub listen: Option<SocketAddr>,
    /// A file for node_exporter's textfile collector, replaced atomically.
    pub textfile: Option<PathBuf>,
}

pub(super) fn validate(check: &Check, raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    let listen = match raw.listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let addr: SocketAddr = text.parse().map_err(|_| {
                check.err(
                    "metrics.listen",
                    format!("{text:?} is not an address and port such as \"127.0.0.1:9187\""),
                )
            })?;
            // Metrics name jobs, paths and the state of the stack: not for the whole network
            // unless the operator says so.
            if !addr.ip().is_loopback() && raw.allow_remote != Some(true) {
                return Err(check.err(
                    "metrics.listen",
                    format!(
                        "{addr} is not a loopback address: set [metrics] allow-remote = true to serve metrics beyond this machine"
                    ),
                ));
            }
            Some(addr)
        }
    };
    let textfile = raw.textfile.filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = &textfile
        && (!p.is_absolute() || p.file_name().is_none())
    {
        return Err(check.err(
            "metrics.textfile",
            format!("{} is not an absolute file path", p.display()),
        ));
    }
    if let Some(folder) = textfile.as_deref().and_then(std::path::Path::parent) {
        check.safe_folder("metrics.textfile", folder)?;
    }
    Ok(MetricsConfig { listen, textfile })
}
