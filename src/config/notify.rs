//! `[notify.NAME]`: the channels notifications go out on (see [`crate::alerts::channel`]).
//!
//! Every URL is a [`SecretUrl::origin_only`] (a Slack or ntfy URL is its own key, a webhook's
//! token may sit anywhere in it); tokens and SMTP passwords stay in files (a path, or
//! `credential:NAME`) read at each send, so no error here ever quotes one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::raw::{RawJob, RawNotify};
use super::validate::Check;
use crate::alerts::event::EventKind;
use crate::secret::SecretUrl;

/// Keys of each kind, besides `kind` and `timeout`.
const KINDS: &[(&str, &[&str])] = &[
    ("webhook", &["url"]),
    ("slack", &["url"]),
    ("ntfy", &["url", "token-file"]),
    ("command", &["command"]),
    (
        "smtp",
        &[
            "host",
            "port",
            "tls",
            "from",
            "to",
            "credentials-file",
            "ca-file",
        ],
    ),
];

/// One channel.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyChannel {
    pub name: String,
    pub kind: ChannelKind,
    /// Bounds one attempt at sending (connection, TLS, the answer; a command's whole run).
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// JSON POST (the format in [`crate::alerts::event`]).
    Webhook {
        url: SecretUrl,
    },
    /// Slack's (and Mattermost's) incoming-webhook JSON, `{"text": …}`.
    Slack {
        url: SecretUrl,
    },
    /// An ntfy topic URL; the access token, if any, in a file.
    Ntfy {
        url: SecretUrl,
        token_file: Option<PathBuf>,
    },
    /// An argv (no shell), the event in `ATPRED_EVENT_*` variables.
    Command {
        argv: Vec<String>,
        /// Health's deprecated `on-change` ([`super::health_alias`]): the old variables too.
        health_env: bool,
    },
    Smtp(SmtpChannel),
}

impl ChannelKind {
    /// How the log and error texts name a channel of this kind.
    pub fn label(&self) -> &'static str {
        match self {
            ChannelKind::Command {
                health_env: true, ..
            } => "on-change command",
            other => other.name(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Command { .. } => "command",
            ChannelKind::Smtp(_) => "smtp",
        }
    }
}

/// How the SMTP connection is encrypted; there is no plaintext mode (the password and the
/// messages would cross the network in the clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS before anything else (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmtpChannel {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    pub to: Vec<String>,
    /// `username = …` and `password = …` lines (mode 0600), or `credential:NAME`.
    pub credentials_file: Option<PathBuf>,
    /// Extra trusted roots (PEM) for a server signed by a private CA.
    pub ca_file: Option<PathBuf>,
}

/// `timeout` when the key is absent.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn validate(
    check: &Check,
    raw: BTreeMap<String, RawNotify>,
) -> Result<BTreeMap<String, NotifyChannel>, ConfigError> {
    let mut channels = BTreeMap::new();
    for (name, t) in raw {
        let key = format!("notify.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(check.err(
                &key,
                "a channel name is letters, digits, - and _ (it is a metric label)",
            ));
        }
        let channel = one(check, &key, name.clone(), t)?;
        channels.insert(name, channel);
    }
    Ok(channels)
}

fn one(check: &Check, key: &str, name: String, t: RawNotify) -> Result<NotifyChannel, ConfigError> {
    let k = |n: &str| format!("{key}.{n}");
    let Some(kind) = t.kind.clone() else {
        return Err(check.err(
            &k("kind"),
            "missing: one of \"smtp\", \"ntfy\", \"slack\", \"webhook\", \"command\"",
        ));
    };
    let Some((_, allowed)) = KINDS.iter().find(|(n, _)| *n == kind) else {
        return Err(check.err(
            &k("kind"),
            format!(
                "unknown kind {kind:?}: expected one of \"smtp\", \"ntfy\", \"slack\", \"webhook\", \"command\""
            ),
        ));
    };
    if let Some(foreign) = t
        .set_keys()
        .into_iter()
        .find(|s| s != "kind" && s != "timeout" && !allowed.contains(&s.as_str()))
    {
        return Err(check.err(
            &k(&foreign),
            format!("not a setting of kind {kind:?} channels"),
        ));
    }
    let timeout = check.duration(&k("timeout"), t.timeout.as_deref(), DEFAULT_TIMEOUT)?;
    let kind = match kind.as_str() {
        "webhook" => ChannelKind::Webhook {
            url: url(check, &k("url"), t.url)?,
        },
        "slack" => ChannelKind::Slack {
            url: url(check, &k("url"), t.url)?,
        },
        "ntfy" => ChannelKind::Ntfy {
            url: url(check, &k("url"), t.url)?,
            token_file: check.secret_file(&k("token-file"), t.token_file)?,
        },
        "command" => ChannelKind::Command {
            argv: argv(check, &k("command"), t.command)?,
            health_env: false,
        },
        _ => ChannelKind::Smtp(smtp(check, key, t)?),
    };
    Ok(NotifyChannel {
        name,
        kind,
        timeout,
    })
}

/// An http(s) URL with a host, shown by its origin only.
fn url(check: &Check, key: &str, value: Option<String>) -> Result<SecretUrl, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Err(check.err(key, "missing: the URL to POST to"));
    };
    let url = SecretUrl::origin_only(raw);
    let rest = url
        .expose()
        .strip_prefix("https://")
        .or_else(|| url.expose().strip_prefix("http://"));
    let host = rest.and_then(|r| r.split(['/', '?', '#']).next());
    if host.is_none_or(|h| h.is_empty()) {
        return Err(check.err(
            key,
            format!("{url}: not an http:// or https:// URL with a host"),
        ));
    }
    if url
        .expose()
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(check.err(
            key,
            format!("{url}: contains white space or control characters"),
        ));
    }
    Ok(url)
}

pub(super) fn argv(
    check: &Check,
    key: &str,
    value: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    match value {
        Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
            if argv.iter().any(|a| a.contains('\0')) {
                return Err(check.err(key, "arguments must not contain NUL bytes"));
            }
            Ok(argv)
        }
        _ => Err(check.err(
            key,
            "needs a program and its arguments, e.g. [\"/usr/local/bin/page-ops\"]",
        )),
    }
}

fn smtp(check: &Check, key: &str, t: RawNotify) -> Result<SmtpChannel, ConfigError> {
    let k = |n: &str| format!("{key}.{n}");
    let Some(host) = t.host.filter(|h| !h.is_empty()) else {
        return Err(check.err(&k("host"), "missing: the mail server's host name"));
    };
    let tls = match t.tls.as_deref().unwrap_or("starttls") {
        "starttls" => SmtpTls::Starttls,
        "implicit" => SmtpTls::Implicit,
        other => {
            return Err(check.err(
                &k("tls"),
                format!(
                    "{other:?} is not \"starttls\" or \"implicit\" (there is no plaintext mode)"
                ),
            ));
        }
    };
    let port = t.port.unwrap_or(match tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Implicit => 465,
    });
    let Some(from) = t.from.filter(|f| !f.is_empty()) else {
        return Err(check.err(&k("from"), "missing: the sender's address"));
    };
    mailbox(check, &k("from"), &from)?;
    let to = t.to.unwrap_or_default();
    if to.is_empty() {
        return Err(check.err(&k("to"), "missing: at least one recipient's address"));
    }
    for address in &to {
        mailbox(check, &k("to"), address)?;
    }
    let ca_file = t.ca_file.filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = &ca_file
        && !p.is_absolute()
    {
        return Err(check.err(&k("ca-file"), "must be an absolute path"));
    }
    Ok(SmtpChannel {
        host,
        port,
        tls,
        from,
        to,
        credentials_file: check.secret_file(&k("credentials-file"), t.credentials_file)?,
        ca_file,
    })
}

fn mailbox(check: &Check, key: &str, address: &str) -> Result<(), ConfigError> {
    address
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| check.err(key, format!("{address:?} is not a mail address: {e}")))
}

/// What a job notifies: `notify`, `notify-on`, `repeat-every`, `fail-after`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobNotify {
    /// `[notify.NAME]` channels; none: the job notifies nobody.
    pub channels: Vec<String>,
    pub on: Vec<EventKind>,
    /// While the job keeps failing, a failure is notified at most this often.
    pub repeat_every: Duration,
    /// Failing runs in a row before the first failure is notified.
    pub fail_after: u32,
}

/// `notify-on` when the key is absent.
pub const DEFAULT_ON: [EventKind; 2] = [EventKind::Failure, EventKind::Recovery];
const DEFAULT_REPEAT: Duration = Duration::from_secs(6 * 3600);

pub(super) fn job(check: &Check, key: &str, raw: &mut RawJob) -> Result<JobNotify, ConfigError> {
    let k = |n: &str| format!("{key}.{n}");
    let on = match raw.notify_on.take() {
        None => DEFAULT_ON.to_vec(),
        Some(names) => {
            let mut on = Vec::new();
            for name in &names {
                let kind = EventKind::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = EventKind::JOB.iter().map(|k| k.as_str()).collect();
                    check.err(
                        &k("notify-on"),
                        format!(
                            "unknown event {name:?}: expected some of {}",
                            known.join(", ")
                        ),
                    )
                })?;
                if !on.contains(&kind) {
                    on.push(kind);
                }
            }
            on
        }
    };
    let repeat_every = check.duration(
        &k("repeat-every"),
        raw.repeat_every.take().as_deref(),
        DEFAULT_REPEAT,
    )?;
    let fail_after = raw.fail_after.take().unwrap_or(1);
    if !(1..=1000).contains(&fail_after) {
        return Err(check.err(&k("fail-after"), "must be between 1 and 1000"));
    }
    Ok(JobNotify {
        channels: raw.notify.take().unwrap_or_default(),
        on,
        repeat_every,
        fail_after,
    })
}

/// Every `notify` (of a job, of `[daemon]`) names configured channels.
pub(super) fn check_names(check: &Check, config: &super::Config) -> Result<(), ConfigError> {
    let lists = config
        .jobs
        .values()
        .map(|j| (format!("jobs.{}.notify", j.name), &j.notify.channels))
        .chain(std::iter::once((
            "daemon.notify".to_owned(),
            &config.daemon.notify,
        )));
    for (key, names) in lists {
        if let Some(name) = names.iter().find(|n| !config.notify.contains_key(*n)) {
            let known: Vec<&str> = config.notify.keys().map(String::as_str).collect();
            return Err(check.err(
                &key,
                format!(
                    "no channel [notify.{name}] (configured: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;

    const BASE: &str = "[daemon]\nstate-dir = \"/tmp/atpred-test/state\"\n";

    #[test]
    fn channels_load_with_defaults_and_hide_their_urls() {
        let text = format!(
            "{BASE}[notify.hook]\nkind = \"webhook\"\nurl = \"https://h.example/hook/KEY1?token=T2\"\n\
             [notify.mail]\nkind = \"smtp\"\nhost = \"smtp.example\"\ntls = \"implicit\"\n\
             from = \"a@example.com\"\nto = [\"b@example.com\"]\n"
        );
        let c = load(&text, &[]).unwrap();
        let hook = &c.notify["hook"];
        assert_eq!(hook.timeout, DEFAULT_TIMEOUT);
        let shown = format!("{hook:?}");
        assert!(!shown.contains("KEY1") && !shown.contains("T2"), "{shown}");
        let ChannelKind::Smtp(smtp) = &c.notify["mail"].kind else {
            panic!("{:?}", c.notify["mail"])
        };
        assert_eq!((smtp.port, smtp.tls), (465, SmtpTls::Implicit));
    }

    #[test]
    fn bad_channels_name_their_key() {
        for (what, table, key) in [
            ("no kind", "url = \"https://h/x\"", "notify.x.kind"),
            ("unknown kind", "kind = \"pager\"", "notify.x.kind"),
            (
                "foreign key",
                "kind = \"slack\"\nurl = \"https://h/x\"\nhost = \"h\"",
                "notify.x.host",
            ),
            ("no url", "kind = \"ntfy\"", "notify.x.url"),
            (
                "not http",
                "kind = \"webhook\"\nurl = \"ftp://h/x\"",
                "notify.x.url",
            ),
            (
                "empty argv",
                "kind = \"command\"\ncommand = []",
                "notify.x.command",
            ),
            (
                "plaintext smtp",
                "kind = \"smtp\"\nhost = \"h\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
                "notify.x.tls",
            ),
            (
                "bad address",
                "kind = \"smtp\"\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"not an address\"]",
                "notify.x.to",
            ),
            (
                "relative token file",
                "kind = \"ntfy\"\nurl = \"https://h/t\"\ntoken-file = \"tok\"",
                "notify.x.token-file",
            ),
        ] {
            let err = load(&format!("{BASE}[notify.x]\n{table}\n"), &[]).expect_err(what);
            assert_eq!(err.key(), Some(key), "{what}: {err}");
        }
        let job = "[jobs.j]\nkind = \"command\"\ncommand = [\"true\"]\n";
        for (what, extra, key) in [
            ("unknown channel", "notify = [\"nope\"]", "jobs.j.notify"),
            (
                "unknown event",
                "notify-on = [\"reload\"]",
                "jobs.j.notify-on",
            ),
            ("fail-after 0", "fail-after = 0", "jobs.j.fail-after"),
            (
                "bad repeat",
                "repeat-every = \"often\"",
                "jobs.j.repeat-every",
            ),
        ] {
            let err = load(&format!("{BASE}{job}{extra}\n"), &[]).expect_err(what);
            assert_eq!(err.key(), Some(key), "{what}: {err}");
        }
        let err = load(&format!("{BASE}notify = [\"ops\"]\n"), &[]).unwrap_err();
        assert_eq!(err.key(), Some("daemon.notify"), "{err}");
        let c = load(&format!("{BASE}{job}"), &[]).unwrap();
        let j = c.jobs.values().next().unwrap();
        assert_eq!(j.notify.on, DEFAULT_ON.to_vec());
        assert_eq!(
            (j.notify.fail_after, j.notify.repeat_every),
            (1, DEFAULT_REPEAT)
        );
        let err = load(
            &format!("{BASE}[notify.x]\nkind = \"slack\"\nurl = \"ftp://h/SECRETPATH\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(!err.to_string().contains("SECRETPATH"), "{err}");
    }
}
