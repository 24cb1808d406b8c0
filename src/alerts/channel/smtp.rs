//! The `smtp` channel: one mail per event through lettre, over STARTTLS (required: a server
//! that does not offer it is refused) or implicit TLS, the server's certificate checked
//! against the public roots plus `ca-file`. With `credentials-file`, AUTH with its
//! `username = …` and `password = …` lines, read at each send (a rotated password needs no
//! reload).

use std::path::Path;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Failed, one_line, read_secret};
use crate::alerts::event::{Event, Severity};
use crate::config::{NotifyChannel, SmtpChannel, SmtpTls};

pub async fn send(
    channel: &NotifyChannel,
    smtp: &SmtpChannel,
    event: &Event,
) -> Result<String, Failed> {
    let mail = message(smtp, event)?;
    let mut tls = TlsParameters::builder(smtp.host.clone());
    if let Some(path) = &smtp.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Failed::permanent(format!("cannot read {}: {e}", path.display())))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            Failed::permanent(format!("{}: not a PEM certificate: {e}", path.display()))
        })?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls
        .build_rustls()
        .map_err(|e| Failed::permanent(format!("TLS settings: {e}")))?;
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
        .port(smtp.port)
        .timeout(Some(channel.timeout))
        .tls(match smtp.tls {
            SmtpTls::Starttls => Tls::Required(tls),
            SmtpTls::Implicit => Tls::Wrapper(tls),
        });
    if let Some(path) = &smtp.credentials_file {
        transport = transport.credentials(credentials(path)?);
    }
    let transport = transport.build();
    match transport.send(mail).await {
        Ok(response) => {
            let text: Vec<&str> = response.message().collect();
            Ok(one_line(
                &format!("{} {}", response.code(), text.join(" ")),
                200,
            ))
        }
        Err(e) => {
            let text = crate::secret::scrub(&with_causes(&e));
            let text = format!("{}:{}: {}", smtp.host, smtp.port, one_line(&text, 300));
            Err(Failed {
                text,
                retry: !e.is_permanent(),
            })
        }
    }
}

fn message(smtp: &SmtpChannel, event: &Event) -> Result<Message, Failed> {
    let parse = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| Failed::permanent(format!("{a:?}: {e}")))
    };
    let tag = match event.severity {
        Severity::Info => "",
        Severity::Warning => " warning",
        Severity::Critical => " CRITICAL",
    };
    let mut builder = Message::builder()
        .from(parse(&smtp.from)?)
        .subject(format!("[atpred{tag}] {}", event.title))
        .message_id(None)
        .header(ContentType::TEXT_PLAIN);
    for to in &smtp.to {
        builder = builder.to(parse(to)?);
    }
    let mut body = event.message.clone();
    body.push_str(&format!(
        "\n\n-- \natpred on {}, {} ({}), {}\n",
        event.host,
        event.kind.as_str(),
        event.severity.as_str(),
        event
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    builder
        .body(body)
        .map_err(|e| Failed::permanent(format!("cannot build the mail: {e}")))
}

/// `username = …` and `password = …` (also `user`, `#` comments; values may be quoted).
fn credentials(path: &Path) -> Result<Credentials, Failed> {
    let text = read_secret(path)?;
    let (mut user, mut password) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Failed::permanent(format!(
                "{}: a line is not `key = value`",
                path.display()
            )));
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "username" | "user" => user = Some(value),
            "password" => password = Some(value),
            other => {
                return Err(Failed::permanent(format!(
                    "{}: unknown key {other:?} (expected username and password)",
                    path.display()
                )));
            }
        }
    }
    match (user, password) {
        (Some(u), Some(p)) => Ok(Credentials::new(u, p)),
        _ => Err(Failed::permanent(format!(
            "{}: needs both `username = …` and `password = …`",
            path.display()
        ))),
    }
}

fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        source = s.source();
    }
    text
}
