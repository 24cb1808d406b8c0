//! The HTTP channels: one POST each, no redirects followed, no proxy from the environment.
//!
//! - `webhook`: the event's JSON ([`super::super::event`] documents it), `application/json`.
//! - `slack`: `{"text": "*title*\nmessage"}`, the incoming-webhook format Slack and Mattermost
//!   accept.
//! - `ntfy`: the message as the text body, and the headers of ntfy's publish API: `Title`,
//!   `Priority` (3 default for info, 4 high for a warning, 5 urgent when critical), `Tags`
//!   (an emoji short code and the event kind) and, with `token-file`, `Authorization: Bearer`.
//!
//! The answer reported is the status and the start of the body, with every part of the URL
//! that could be its key (path segments, query values) blanked out: ntfy echoes the topic.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use super::{Failed, one_line, read_secret};
use crate::alerts::deliver::{self, Client};
use crate::alerts::event::{Event, Severity};
use crate::config::NotifyChannel;
use crate::secret::SecretUrl;

/// Bytes of a channel's answer kept for `notify test` and the log.
const MAX_ANSWER: usize = 200;

pub async fn webhook(
    client: &Client,
    channel: &NotifyChannel,
    url: &SecretUrl,
    event: &Event,
) -> Result<String, Failed> {
    let body = serde_json::to_string(event).map_err(|e| Failed::permanent(e.to_string()))?;
    post(client, channel, url, "application/json", body, &[]).await
}

pub async fn slack(
    client: &Client,
    channel: &NotifyChannel,
    url: &SecretUrl,
    event: &Event,
) -> Result<String, Failed> {
    let text = format!("*{}*\n{}", event.title, event.message);
    let body = json!({ "text": text }).to_string();
    post(client, channel, url, "application/json", body, &[]).await
}

pub async fn ntfy(
    client: &Client,
    channel: &NotifyChannel,
    url: &SecretUrl,
    token_file: Option<&Path>,
    event: &Event,
) -> Result<String, Failed> {
    let (priority, emoji) = match event.severity {
        Severity::Info => ("3", "white_check_mark"),
        Severity::Warning => ("4", "warning"),
        Severity::Critical => ("5", "rotating_light"),
    };
    let mut headers = vec![
        ("Title", header_text(&event.title)),
        ("Priority", priority.to_owned()),
        ("Tags", format!("{emoji},{}", event.kind.as_str())),
    ];
    if let Some(path) = token_file {
        let token = read_secret(path)?;
        let token = token.trim();
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Failed::permanent(format!(
                "{} holds no token (one line without spaces)",
                path.display()
            )));
        }
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    let body = event.message.clone();
    post(
        client,
        channel,
        url,
        "text/plain; charset=utf-8",
        body,
        &headers,
    )
    .await
}

/// A header value ntfy shows as is: printable ASCII, non-ASCII replaced.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

async fn post(
    client: &Client,
    channel: &NotifyChannel,
    url: &SecretUrl,
    content_type: &str,
    body: String,
    headers: &[(&str, String)],
) -> Result<String, Failed> {
    let http = client.get().map_err(Failed::permanent)?;
    let mut request = http
        .post(url.expose())
        .timeout(channel.timeout)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let shown = url.redacted();
    let response = request.send().await.map_err(|e| {
        Failed::retry(format!(
            "{shown}: {}",
            deliver::describe(e, url.expose(), &shown)
        ))
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer = answer(status, &hide(url.expose(), &shown, &text));
    if status.is_success() {
        Ok(answer)
    } else {
        let retry = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        Err(Failed {
            text: answer,
            retry,
        })
    }
}

fn answer(status: StatusCode, body: &str) -> String {
    let body = one_line(body, MAX_ANSWER);
    if body.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {}: {body}", status.as_u16())
    }
}

/// `text` without the URL, its path segments and its query values.
fn hide(url: &str, shown: &str, text: &str) -> String {
    let mut out = text.replace(url, shown);
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let after_host = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    for part in after_host.split(['/', '?', '&', '=', '#']) {
        // Short parts ("v1", "api") say nothing and would blank common words.
        if part.len() >= 4 && !["hooks", "services", "https", "http"].contains(&part) {
            out = out.replace(part, "***");
        }
    }
    crate::secret::scrub(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_hide_the_key() {
        let url = "https://ntfy.sh/atpred-ops-SECRET42?auth=tok123";
        let body = r#"{"id":"x1","topic":"atpred-ops-SECRET42","message":"m"}"#;
        let a = hide(url, "https://ntfy.sh", body);
        assert!(!a.contains("SECRET42"), "{a}");
        assert!(a.contains("\"id\":\"x1\""), "{a}");
        assert_eq!(header_text("nightly — failed\n"), "nightly ? failed?");
    }
}
