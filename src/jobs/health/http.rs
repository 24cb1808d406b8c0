//! The http check: GET `http-url` (at most 5 redirects, no proxy from the environment), the
//! expected status, optionally a substring in the first MiB of the body, and for https the
//! expiry of the server's certificate (warn under 14 days, fail under 3).

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use x509_cert::der::Decode;

use super::board::Probe;
use crate::config::HealthSpec;
use crate::protocol::HealthStatus;

const MAX_REDIRECTS: usize = 5;
const MAX_BODY: usize = 1 << 20;
const CERT_WARN: TimeDelta = TimeDelta::days(14);
const CERT_FAIL: TimeDelta = TimeDelta::days(3);

pub async fn check(spec: &HealthSpec, now: DateTime<Utc>) -> Probe {
    match probe(spec, now).await {
        Ok(p) => p,
        Err(message) => Probe::new(HealthStatus::Fail, message),
    }
}

/// A client for our own requests (this check and the webhook): rustls, bounded redirects, no
/// proxy, the certificate kept for inspection, and `timeout` on the whole request if given.
pub fn client(
    timeout: Option<Duration>,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .no_proxy()
        .tls_info(true)
        .user_agent(concat!("atpred/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("http-ca-file {}: {e}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("http-ca-file {}: {}", path.display(), describe(e)))?;
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {}", describe(e)))
}

async fn probe(spec: &HealthSpec, now: DateTime<Utc>) -> Result<Probe, String> {
    let shown = spec.http_url.redacted();
    // No timeout of its own: check-timeout bounds the whole check.
    let client = client(None, spec.http_ca_file.as_deref())?;
    let t0 = Instant::now();
    let mut response = client
        .get(spec.http_url.expose())
        .send()
        .await
        .map_err(|e| format!("GET {shown}: {}", describe(e)))?;
    let latency = t0.elapsed();
    let status = response.status().as_u16();
    let expiry = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(not_after);
    let mut probe = if status != spec.http_expect_status {
        Probe::new(
            HealthStatus::Fail,
            format!(
                "GET {shown}: status {status}, expected {}",
                spec.http_expect_status
            ),
        )
    } else if let Some(want) = &spec.http_expect_body {
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(format!("GET {shown}: reading the body: {}", describe(e))),
            }
        }
        if String::from_utf8_lossy(&body).contains(want.as_str()) {
            Probe::new(HealthStatus::Ok, format!("status {status}, body matches"))
        } else {
            Probe::new(
                HealthStatus::Fail,
                format!("GET {shown}: status {status}, but the body lacks {want:?}"),
            )
        }
    } else {
        Probe::new(HealthStatus::Ok, format!("status {status}"))
    };
    if let Some(expiry) = expiry {
        let (s, note) = judge_certificate(expiry, now);
        probe.status = probe.status.max(s);
        probe.message = format!("{}, {note}", probe.message);
    }
    probe.latency = latency;
    Ok(probe)
}

/// The end of the validity of a DER certificate.
fn not_after(der: &[u8]) -> Result<DateTime<Utc>, String> {
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| format!("cannot read the server's certificate: {e}"))?;
    let end = cert.tbs_certificate.validity.not_after.to_unix_duration();
    DateTime::from_timestamp(i64::try_from(end.as_secs()).unwrap_or(i64::MAX), 0)
        .ok_or_else(|| "the certificate's expiry is out of range".to_owned())
}

fn judge_certificate(
    expiry: Result<DateTime<Utc>, String>,
    now: DateTime<Utc>,
) -> (HealthStatus, String) {
    let expiry = match expiry {
        Ok(e) => e,
        Err(why) => return (HealthStatus::Warn, why),
    };
    let left = expiry - now;
    let when = format!(
        "certificate expires {} ({})",
        expiry.format("%Y-%m-%d %H:%M UTC"),
        crate::timefmt::relative(expiry, now)
    );
    if left < CERT_FAIL {
        (HealthStatus::Fail, when)
    } else if left < CERT_WARN {
        (HealthStatus::Warn, when)
    } else {
        (HealthStatus::Ok, when)
    }
}

/// reqwest's error with its sources, without the URL (it may carry credentials), and any URL
/// a source prints (a redirect target) redacted.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    crate::secret::scrub(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_expiry_thresholds() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let in_days = |d: i64| Ok(now + TimeDelta::days(d));
        assert_eq!(judge_certificate(in_days(30), now).0, HealthStatus::Ok);
        assert_eq!(judge_certificate(in_days(13), now).0, HealthStatus::Warn);
        assert_eq!(judge_certificate(in_days(2), now).0, HealthStatus::Fail);
        assert_eq!(judge_certificate(in_days(-1), now).0, HealthStatus::Fail);
        let (s, m) = judge_certificate(Err("unreadable".into()), now);
        assert_eq!((s, m.as_str()), (HealthStatus::Warn, "unreadable"));
    }
}
