//! The http check: GET `http-url` (at most 5 redirects, no proxy from the environment), the
//! expected status, and optionally a substring in the first MiB of the body.

use std::time::Instant;

use super::board::Probe;
use crate::config::HealthSpec;
use crate::protocol::HealthStatus;

const MAX_REDIRECTS: usize = 5;
const MAX_BODY: usize = 1 << 20;

pub async fn check(spec: &HealthSpec) -> Probe {
    match probe(spec).await {
        Ok(p) => p,
        Err(message) => Probe::new(HealthStatus::Fail, message),
    }
}

/// A client for our own requests (this check and the webhook): rustls, bounded redirects,
/// no proxy, a timeout on the whole request.
pub fn client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .no_proxy()
        .timeout(timeout)
        .user_agent(concat!("atpred/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {}", e.without_url()))
}

async fn probe(spec: &HealthSpec) -> Result<Probe, String> {
    let shown = spec.http_url.redacted();
    let client = client(spec.check_timeout)?;
    let t0 = Instant::now();
    let mut response = client
        .get(spec.http_url.expose())
        .send()
        .await
        .map_err(|e| format!("GET {shown}: {}", describe(e)))?;
    let latency = t0.elapsed();
    let status = response.status().as_u16();
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
    probe.latency = latency;
    Ok(probe)
}

/// reqwest's error with its sources, without the URL (it may carry credentials).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
