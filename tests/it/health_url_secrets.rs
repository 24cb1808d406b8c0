//! Secrets in configured URLs — `?pass=` on redis unix URLs, user-info, query values and
//! fragments of `http-url`, the path and query of a webhook — never show up anywhere: the
//! daemon's log (debug level), any `atprectl` reply (plain or `--json`), the history file, the
//! metrics textfile, webhook bodies received by a real HTTP server on loopback, nor the
//! on-change command's `/proc/PID/cmdline` and `/proc/PID/environ`. Each URL form is tried working and failing, since failures
//! are where the crates' own error texts (which print URLs) come in; redis is reached both by
//! the health check and by the fleet lease. An offsite endpoint cannot
//! carry one at all: `--check` refuses it without quoting it.

use std::path::Path;

use crate::core_support::json_lines;
use crate::harness::{Daemon, toml_path, toml_str};
use crate::health_support::{Stack, health_now};

const HTTP_PW: &str = "HttpPw-K2mq";
const HTTP_TOKEN: &str = "HttpTok-Z9vw";
const HTTP_FRAGMENT: &str = "HttpFrag-R4tx";
const HOOK_PW: &str = "HookPw-L8nc";
const HOOK_PATH: &str = "HookPath-J3yd";
const HOOK_TOKEN: &str = "HookTok-W6pb";
const WRONG_PW: &str = "WrongPw-Q7xe";
const ENDPOINT_TOKEN: &str = "S3Token-V5hs";

/// Every text the daemon produced or handed on, with what it is.
fn everything(stack: &Stack, daemon: &Daemon, textfile: &Path) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for args in [
        &["status"][..],
        &["jobs"],
        &["health"],
        &["history"],
        &["backups"],
        &["metrics"],
    ] {
        // Exit codes vary (a failing check makes `health` exit 1): only the text matters.
        let plain = daemon.ctl(args);
        texts.push((format!("atprectl {args:?}"), plain.stdout + &plain.stderr));
        if args != ["metrics"] {
            let json = daemon.ctl(std::iter::once("--json").chain(args.iter().copied()));
            assert_eq!(json_lines(&json).len(), 1, "{args:?}: {json:?}");
            texts.push((
                format!("atprectl --json {args:?}"),
                json.stdout + &json.stderr,
            ));
        }
    }
    let state = stack.dir().join("state");
    for (what, path) in [
        ("the history file", state.join("history.jsonl")),
        ("the metrics textfile", textfile.to_owned()),
        ("the webhook bodies", stack.http.posts.clone()),
        ("the on-change command's /proc", proc_log(stack)),
    ] {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{what} ({}): {e}", path.display()));
        texts.push((what.to_owned(), text));
    }
    texts.push(("the daemon log".into(), daemon.log()));
    texts
}

/// Where the on-change command copies its own `/proc/PID/cmdline` and `environ`.
fn proc_log(stack: &Stack) -> std::path::PathBuf {
    stack.dir().join("on-change-proc.log")
}

/// An on-change command that appends its own `/proc` entries, NULs made newlines.
fn on_change(stack: &Stack) -> String {
    let log = crate::backup_support::quote(&proc_log(stack));
    let script = format!(
        "for f in cmdline environ; do tr '\\0' '\\n' < /proc/$$/$f >> {log}; done; echo --- >> {log}"
    );
    format!("on-change = [\"/bin/sh\", \"-c\", {}]", toml_str(&script))
}

#[test]
fn secrets_in_configured_urls_stay_out_of_every_output() {
    let stack = Stack::new();
    let textfile = stack.dir().join("metrics.prom");
    let socket = stack.redis.socket_path();
    let socket = socket.to_str().unwrap();
    let real_pw = stack.redis.password().unwrap().to_owned();
    let port = stack.http.port;
    let webhook =
        format!("http://hook:{HOOK_PW}@127.0.0.1:{port}/hook/{HOOK_PATH}?key={HOOK_TOKEN}&x=1");
    // (redis url, http-url, whether the redis check passes)
    let forms = [
        (
            format!("redis+unix://{socket}?pass={real_pw}"),
            format!("http://probe:{HTTP_PW}@127.0.0.1:{port}/health?token={HTTP_TOKEN}"),
            true,
        ),
        (
            format!("unix://{socket}?db=0&pass={WRONG_PW}"),
            format!("http://127.0.0.1:1/health?token={HTTP_TOKEN}#{HTTP_FRAGMENT}"),
            false,
        ),
        (
            format!("redis://:{WRONG_PW}@127.0.0.1:1/0"),
            format!("https://127.0.0.1:{port}/nowhere?{HTTP_TOKEN}"),
            false,
        ),
    ];
    let secrets = [
        real_pw.as_str(),
        HTTP_PW,
        HTTP_TOKEN,
        HTTP_FRAGMENT,
        HOOK_PW,
        HOOK_PATH,
        HOOK_TOKEN,
        WRONG_PW,
    ];
    for (i, (redis_url, http_url, redis_ok)) in forms.iter().enumerate() {
        let daemon = stack
            .daemon(&format!(
                "checks = [\"redis\", \"http\"]\nhttp-url = {}\nwebhook = {}\n{}",
                toml_str(http_url),
                toml_str(&webhook),
                on_change(&stack)
            ))
            .name(&format!("form{i}"))
            .set("daemon", "log-level", toml_str("debug"))
            .set("redis", "url", toml_str(redis_url))
            .unset("redis", "password-file")
            .set("metrics", "textfile", toml_path(&textfile))
            // The fleet lease goes through the same URL, on its own code path.
            .set("coordination", "backend", toml_str("redis"))
            .toml("[jobs.fleet]\nkind = \"command\"\ncommand = [\"true\"]\n")
            .spawn();
        // A first run is skipped either way; only a broken URL makes the backend unreachable.
        let fleet = daemon.ctl(["run", "fleet", "--wait"]);
        assert_eq!(
            fleet.stdout.contains("unreachable"),
            !*redis_ok,
            "{redis_url}: {fleet:?}"
        );
        let (code, checks) = health_now(&daemon);
        assert_eq!(code, 1, "the http check fails in every form: {checks:?}");
        assert_eq!(
            checks["redis"]["status"] == "ok",
            *redis_ok,
            "{redis_url}: {:?}",
            checks["redis"]
        );
        // What an operator is told still names the URL, only without its secrets.
        let http = checks["http"]["message"].as_str().unwrap();
        assert!(http.contains("127.0.0.1:"), "{http}");
        if !*redis_ok {
            let redis = checks["redis"]["message"].as_str().unwrap();
            assert!(redis.contains("***"), "the URL is shown redacted: {redis}");
        }
        // The first form fires the webhook and the on-change command (http: a first fail).
        assert!(
            crate::harness::wait_until(std::time::Duration::from_secs(10), || {
                !stack.http.posts().is_empty()
            }),
            "the webhook was called: {}",
            daemon.log()
        );
        assert!(
            crate::harness::wait_until(std::time::Duration::from_secs(10), || textfile.exists()),
            "the textfile is written"
        );
        for (what, text) in everything(&stack, &daemon, &textfile) {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "form {i} ({redis_url} / {http_url}): {what} shows {secret}:\n{text}"
                );
            }
        }
    }
    let seen = std::fs::read_to_string(proc_log(&stack)).unwrap();
    assert!(
        seen.lines()
            .any(|l| l.starts_with("ATPRED_MESSAGE=") && l.contains("***")),
        "the on-change command was told about the redacted URL:\n{seen}"
    );

    // An offsite endpoint with a query is refused at load, without quoting it.
    let out = stack
        .daemon("")
        .name("endpoint")
        .toml(&format!(
            "[offsite.s3]\nbucket = \"b\"\ncredentials-file = {}\nendpoint = {}\n",
            toml_path(&stack.dir().join("s3.credentials")),
            toml_str(&format!(
                "https://s3.example.com/?X-Amz-Security-Token={ENDPOINT_TOKEN}"
            ))
        ))
        .check();
    assert_eq!(out.status, 78, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("offsite.s3.endpoint"), "{}", out.stderr);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains(ENDPOINT_TOKEN),
        "{}",
        out.stderr
    );
}
