//! Sending one ping over HTTP: POST with a text body, a timeout per attempt, retries with
//! backoff for answers worth retrying. Nothing here ever shows more of a ping URL than its
//! origin: reqwest's errors are taken without their URL, and redirects are not followed (a
//! redirect target would be a URL we did not vet).

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Bounds one attempt, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per job ping (the heartbeat makes one: its next beat is the retry).
pub const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; doubled before each further one.
const BACKOFF: Duration = Duration::from_secs(1);

/// One ping to send.
pub struct Request<'a> {
    /// The full URL (suffix included); never printed.
    pub url: &'a str,
    /// The configured URL, to take out of error texts.
    pub base: &'a str,
    /// What may be printed instead: the URL's origin.
    pub shown: &'a str,
    pub body: String,
}

/// How a ping ended, after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    Failed,
}

/// The HTTP client of every ping of one daemon, built at first use.
#[derive(Default)]
pub struct Client(OnceLock<Result<reqwest::Client, String>>);

impl Client {
    /// The client itself, for the notification channels (which set their own timeout per
    /// request).
    pub fn get(&self) -> Result<&reqwest::Client, String> {
        self.0
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .connect_timeout(TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .user_agent(concat!("atpred/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build an HTTP client: {}", describe(e, "", "")))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Sends `req` up to `attempts` times; gives up early when `stop` is cancelled. Failures
    /// are logged with `what` (e.g. `ping (fail)`), the origin, and the last error.
    pub async fn send(
        &self,
        req: &Request<'_>,
        attempts: u32,
        what: &str,
        stop: &CancellationToken,
    ) -> Delivered {
        let client = match self.get() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{what} to {} not sent: {e}", req.shown);
                return Delivered::Failed;
            }
        };
        let mut pause = BACKOFF;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let post = client
                .post(req.url)
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(req.body.clone())
                .send();
            let result = tokio::select! {
                r = post => r,
                () = stop.cancelled() => break,
            };
            let retry = match result {
                Ok(r) if r.status().is_success() => return Delivered::Sent,
                Ok(r) => {
                    let status = r.status();
                    last = format!("answered {}", status.as_u16());
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    last = describe(e, req.base, req.shown);
                    true
                }
            };
            if !retry || attempt == attempts {
                break;
            }
            tracing::debug!("{what} to {}: {last}; retrying in {pause:?}", req.shown);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
            pause *= 2;
        }
        if last.is_empty() {
            last = "the daemon stopped first".into();
        }
        tracing::warn!("{what} to {} failed: {last}", req.shown);
        Delivered::Failed
    }
}

/// reqwest's error and its sources without the URL, the ping URL (`base`) replaced by its
/// origin should a source print it, and any other URL redacted.
pub fn describe(e: reqwest::Error, base: &str, shown: &str) -> String {
    let text = crate::jobs::health::http::describe(e);
    if base.is_empty() {
        return text;
    }
    crate::secret::scrub(&text.replace(base, shown))
}
