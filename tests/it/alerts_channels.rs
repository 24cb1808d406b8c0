//! The `[notify.NAME]` channels against real receivers on loopback, through `atprectl notify
//! test NAME`: the webhook's versioned JSON, Slack's `{"text": …}`, ntfy's headers and text
//! body, a command with the event in its environment, and mail to a real SMTP server
//! (aiosmtpd) over STARTTLS and implicit TLS with a certificate trusted through `ca-file`.
//! Every URL key, token and password stays out of the replies, the log and the mails.

use serde_json::Value;

use crate::alerts_support::{HttpServer, SmtpServer, closed_port};
use crate::harness::{Daemon, tempdir, toml_path, toml_str, write_private};
use crate::health_tls::{make_ca, make_leaf};

/// The POSTs the receiver got under `path_prefix`.
fn posts_to(http: &HttpServer, path_prefix: &str) -> Vec<Value> {
    http.requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .filter(|r| r["path"].as_str().unwrap_or("").starts_with(path_prefix))
        .collect()
}

/// A header of a recorded request, by case-insensitive name.
fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

#[test]
fn http_channels_send_each_format_and_keep_their_keys_secret() {
    let dir = tempdir();
    let http = HttpServer::start(dir.path());
    let token = dir.path().join("ntfy.token");
    write_private(&token, b"tk_NTFYTOKEN123\n");
    let base = format!("http://127.0.0.1:{}", http.port);
    let daemon = Daemon::builder(dir.path())
        .toml(&format!(
            "[notify.hook]\nkind = \"webhook\"\nurl = {}\n\
             [notify.chat]\nkind = \"slack\"\nurl = {}\n\
             [notify.phone]\nkind = \"ntfy\"\nurl = {}\ntoken-file = {}\n\
             [notify.down]\nkind = \"webhook\"\nurl = {}\ntimeout = \"2s\"\n",
            toml_str(&format!("{base}/hook/HOOKSECRET1?token=QUERYSECRET2")),
            toml_str(&format!("{base}/services/T0/B0/SLACKSECRET3")),
            toml_str(&format!("{base}/atpred-NTFYTOPIC4")),
            toml_path(&token),
            toml_str(&format!(
                "http://127.0.0.1:{}/hook/DOWNSECRET5",
                closed_port()
            )),
        ))
        .spawn();

    let mut replies = String::new();
    for name in ["hook", "chat", "phone"] {
        let out = daemon.ctl(["notify", "test", name]);
        assert_eq!(out.status, 0, "notify test {name}: {out:?}");
        assert!(
            out.stdout.contains("sent; the channel answered: HTTP 204"),
            "{name}: {}",
            out.stdout
        );
        let json = daemon.ctl(["--json", "notify", "test", name]);
        assert_eq!(json.status, 0, "{json:?}");
        replies.push_str(&out.stdout);
        replies.push_str(&json.stdout);
    }

    let hook = posts_to(&http, "/hook/HOOKSECRET1");
    assert_eq!(hook.len(), 2, "{hook:?}");
    assert_eq!(header(&hook[0], "content-type"), Some("application/json"));
    let event: Value = serde_json::from_str(hook[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(event["version"], 1, "{event}");
    assert_eq!(event["kind"], "test");
    assert_eq!(event["severity"], "info");
    assert!(event["title"].as_str().unwrap().contains("hook"), "{event}");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("atprectl notify test hook")
    );
    assert!(event["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(event["id"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).is_ok());

    let chat = posts_to(&http, "/services/T0/B0/SLACKSECRET3");
    assert_eq!(chat.len(), 2);
    assert_eq!(header(&chat[0], "content-type"), Some("application/json"));
    let slack: Value = serde_json::from_str(chat[0]["body"].as_str().unwrap()).unwrap();
    let text = slack["text"].as_str().expect("a text field");
    assert_eq!(slack.as_object().unwrap().len(), 1, "only text: {slack}");
    assert!(
        text.starts_with("*test message on channel chat*\n"),
        "{text}"
    );

    let phone = posts_to(&http, "/atpred-NTFYTOPIC4");
    assert_eq!(phone.len(), 2);
    let p = &phone[0];
    assert_eq!(
        header(p, "title"),
        Some("test message on channel phone"),
        "{p}"
    );
    assert_eq!(header(p, "priority"), Some("3"), "info is ntfy's default");
    assert_eq!(header(p, "tags"), Some("white_check_mark,test"));
    assert_eq!(
        header(p, "authorization"),
        Some("Bearer tk_NTFYTOKEN123"),
        "the token from token-file"
    );
    assert!(header(p, "content-type").unwrap().starts_with("text/plain"));
    assert!(
        p["body"]
            .as_str()
            .unwrap()
            .starts_with("This is a test message from atpred"),
        "the body is the text: {p}"
    );

    // A channel that is down: the reply says so, names only the origin, exits 1.
    let down = daemon.ctl(["notify", "test", "down"]);
    assert_eq!(down.status, 1, "{down:?}");
    assert!(
        down.stderr.contains("did not take the test message"),
        "{down:?}"
    );
    assert!(down.stderr.contains("http://127.0.0.1:"), "{down:?}");
    replies.push_str(&down.stderr);
    let unknown = daemon.ctl(["notify", "test", "nosuch"]);
    assert_eq!(unknown.status, 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("hook"),
        "names the channels: {unknown:?}"
    );

    let texts = [("replies", replies), ("log", daemon.log())];
    for secret in [
        "HOOKSECRET1",
        "QUERYSECRET2",
        "SLACKSECRET3",
        "NTFYTOPIC4",
        "DOWNSECRET5",
        "tk_NTFYTOKEN123",
    ] {
        for (what, text) in &texts {
            assert!(!text.contains(secret), "{secret} in the {what}:\n{text}");
        }
    }
}

#[test]
fn command_channel_gets_the_event_in_its_environment() {
    let dir = tempdir();
    let out = dir.path().join("env.txt");
    let daemon = Daemon::builder(dir.path())
        .toml(&format!(
            "[notify.script]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", {}]\n",
            toml_str(&format!(
                "env > {}; echo paged-ops",
                out.display()
            ))
        ))
        .toml("[notify.bad]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo no relay >&2; exit 4\"]\n")
        .spawn();
    let reply = daemon.ctl(["notify", "test", "script"]);
    assert_eq!(reply.status, 0, "{reply:?}");
    assert!(
        reply.stdout.contains("exit status 0: paged-ops")
            || reply.stdout.contains("exit code 0: paged-ops"),
        "{}",
        reply.stdout
    );
    let env = std::fs::read_to_string(&out).unwrap();
    for want in [
        "ATPRED_EVENT_KIND=test",
        "ATPRED_EVENT_SEVERITY=info",
        "ATPRED_EVENT_VERSION=1",
        "ATPRED_EVENT_TITLE=test message on channel script",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} in:\n{env}");
    }
    assert!(env.contains("ATPRED_EVENT_MESSAGE="), "{env}");
    assert!(
        !env.contains("NOTIFY_SOCKET"),
        "the process module's scrubbed environment: {env}"
    );

    let reply = daemon.ctl(["notify", "test", "bad"]);
    assert_eq!(reply.status, 1, "{reply:?}");
    assert!(reply.stderr.contains("no relay"), "{reply:?}");
}

#[test]
fn smtp_channel_mails_over_starttls_and_implicit_tls() {
    let dir = tempdir();
    let ca = make_ca(dir.path());
    let (cert, key) = make_leaf(dir.path(), 30);
    let creds = dir.path().join("smtp.credentials");
    write_private(
        &creds,
        b"# the relay account\nusername = atpred-mailer\npassword = \"SMTP-PASSWORD-77\"\n",
    );
    let starttls = SmtpServer::start(
        dir.path(),
        "starttls",
        &cert,
        &key,
        "atpred-mailer",
        "SMTP-PASSWORD-77",
    );
    let implicit = SmtpServer::start(
        dir.path(),
        "implicit",
        &cert,
        &key,
        "atpred-mailer",
        "SMTP-PASSWORD-77",
    );
    let channel = |name: &str, port: u16, tls: &str, ca_file: Option<&std::path::Path>| {
        let mut t = format!(
            "[notify.{name}]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = {}\n\
             from = \"atpred <atpred@db1.example>\"\nto = [\"ops@example.com\", \"oncall@example.com\"]\n\
             credentials-file = {}\ntimeout = \"10s\"\n",
            toml_str(tls),
            toml_path(&creds)
        );
        if let Some(ca) = ca_file {
            t.push_str(&format!("ca-file = {}\n", toml_path(ca)));
        }
        t
    };
    let daemon = Daemon::builder(dir.path())
        .toml(&channel("mail", starttls.port, "starttls", Some(&ca)))
        .toml(&channel("mail465", implicit.port, "implicit", Some(&ca)))
        .toml(&channel("untrusted", starttls.port, "starttls", None))
        .spawn();

    for (name, server) in [("mail", &starttls), ("mail465", &implicit)] {
        let reply = daemon.ctl(["notify", "test", name]);
        assert_eq!(reply.status, 0, "{name}: {reply:?}\n{}", daemon.log());
        assert!(
            reply.stdout.contains("250") && reply.stdout.contains("queued as TESTQ1"),
            "the server's answer: {}",
            reply.stdout
        );
        let mails = server.mails();
        assert_eq!(mails.len(), 1, "{mails:?}");
        let m = &mails[0];
        assert_eq!(m["tls"], true, "{m}");
        assert_eq!(m["login"], "atpred-mailer", "authenticated: {m}");
        assert_eq!(m["from"], "atpred@db1.example");
        assert_eq!(
            m["to"],
            serde_json::json!(["ops@example.com", "oncall@example.com"])
        );
        let data = m["data"].as_str().unwrap();
        let (head, body) = data.split_once("\r\n\r\n").unwrap_or((data, ""));
        let head_lines: Vec<&str> = head.lines().collect();
        for want in [
            "From: atpred <atpred@db1.example>",
            "To: ops@example.com, oncall@example.com",
            &format!("Subject: [atpred] test message on channel {name}"),
            "Content-Type: text/plain; charset=utf-8",
        ] {
            assert!(head_lines.contains(&want), "{want} in:\n{head}");
        }
        assert!(head.contains("Date: "), "{head}");
        assert!(head.contains("Message-ID: "), "{head}");
        assert!(
            body.contains(&format!("atprectl notify test {name}")),
            "{body}"
        );
        assert!(body.contains("atpred on "), "the signature: {body}");
        assert!(!data.contains("SMTP-PASSWORD-77"), "{data}");
    }

    // Without ca-file the private CA is not trusted: refused, and nothing was delivered.
    let reply = daemon.ctl(["notify", "test", "untrusted"]);
    assert_eq!(reply.status, 1, "{reply:?}");
    assert!(
        reply.stderr.to_lowercase().contains("certificate"),
        "{reply:?}"
    );
    assert_eq!(starttls.mails().len(), 1);
    let log = daemon.log();
    assert!(!log.contains("SMTP-PASSWORD-77"), "{log}");
    assert!(!reply.stderr.contains("SMTP-PASSWORD-77"));
}
