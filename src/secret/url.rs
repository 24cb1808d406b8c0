//! URLs from the configuration, which may carry secrets anywhere: in the user-info
//! (`redis://:pw@host`), in query values (`unix:///run/redis.sock?pass=pw`,
//! `https://host/health?token=t`), in a fragment, and for webhooks in the path too.
//!
//! [`SecretUrl`] shows only `scheme://host[:port]/path`, with the user-info and every query
//! value replaced by `***`; [`scrub`] does the same to every URL inside a free text (the
//! error texts of the redis, reqwest and object_store crates, which print URLs themselves).
//! The redaction is lexical, so that a URL no parser accepts is still redacted, and it errs
//! on the side of hiding: anything up to the last `@` counts as user-info.

use std::fmt;

/// What replaces a secret part.
const HIDDEN: &str = "***";

/// How much of the path a [`SecretUrl`] shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// `scheme://host[:port]/path?key=***`.
    Path,
    /// `scheme://host[:port]` only: webhook URLs carry their token in the path as well.
    Origin,
}

/// A URL from the configuration. `Display` and `Debug` show the redacted form; the real value
/// is only reachable through [`SecretUrl::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    raw: String,
    shown: Shown,
}

impl SecretUrl {
    /// A URL shown with its path (redis, the http check).
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl {
            raw: s.into(),
            shown: Shown::Path,
        }
    }

    /// A URL shown as scheme, host and port only (webhooks: `/services/T0/B0/token`).
    pub fn origin_only(s: impl Into<String>) -> Self {
        SecretUrl {
            raw: s.into(),
            shown: Shown::Origin,
        }
    }

    /// The real URL, to connect with; never to print.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URL as it may be shown anywhere.
    pub fn redacted(&self) -> String {
        match self.shown {
            Shown::Path => redact(&self.raw),
            Shown::Origin => origin(&self.raw),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The parts of a URL, split lexically.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: bool,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: bool,
}

fn split(url: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    // A password may hold `/`, `?` or `#`: everything up to the last `@` is hidden, even when
    // that hides a query value's `@` too.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((_, r)) => (true, r),
        None => (false, rest),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, _)) => (r, true),
        None => (rest, false),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (host, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    Some(Parts {
        scheme,
        userinfo,
        host,
        path,
        query,
        fragment,
    })
}

/// `scheme://***@host:port/path?key=***&key=***#***`: user-info, query values and fragment
/// hidden, query keys kept (they say what was configured, e.g. `pass`).
pub fn redact(url: &str) -> String {
    let Some(p) = split(url) else {
        return format!("(a URL without scheme://, {} characters)", url.len());
    };
    let mut out = format!("{}://", p.scheme);
    if p.userinfo {
        out.push_str(HIDDEN);
        out.push('@');
    }
    out.push_str(p.host);
    out.push_str(p.path);
    if let Some(query) = p.query {
        out.push('?');
        let pairs: Vec<String> = query
            .split(['&', ';'])
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={HIDDEN}"),
                None if pair.is_empty() => String::new(),
                None => HIDDEN.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if p.fragment {
        out.push('#');
        out.push_str(HIDDEN);
    }
    out
}

/// `scheme://host[:port]` only.
pub fn origin(url: &str) -> String {
    match split(url) {
        Some(p) => format!("{}://{}", p.scheme, p.host),
        None => "(a URL without scheme://)".to_owned(),
    }
}

/// `text` with every `scheme://…` in it redacted as [`redact`] does. A URL ends at
/// whitespace, a quote or an angle bracket, as it does in the crates' error texts.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_query_values_and_fragments_are_hidden() {
        for (url, shown) in [
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://***@127.0.0.1:6379/0",
            ),
            ("redis://app:hunter2@h/0", "redis://***@h/0"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("unix:///run/redis.sock", "unix:///run/redis.sock"),
            ("redis://a:p@ss@h/0", "redis://***@h/0"),
            ("redis://a:p/ss@h/0", "redis://***@h/0"),
            ("redis://:p#ss?w@h/0", "redis://***@h/0"),
            (
                "unix:///run/redis.sock?db=1&pass=hunter2",
                "unix:///run/redis.sock?db=***&pass=***",
            ),
            (
                "redis+unix:///run/r.sock?password=hunter2",
                "redis+unix:///run/r.sock?password=***",
            ),
            (
                "http://u:hunter2@127.0.0.1:80/health?token=hunter2;x=hunter2",
                "http://***@127.0.0.1:80/health?token=***&x=***",
            ),
            ("https://h/p?hunter2", "https://h/p?***"),
            ("https://h/p#hunter2", "https://h/p#***"),
            ("https://h/p?a=1#hunter2?x", "https://h/p?a=***#***"),
        ] {
            let u = SecretUrl::new(url);
            assert_eq!(u.to_string(), shown, "{url}");
            assert!(!format!("{u:?}").contains("hunter2"), "{url}");
        }
        assert!(!redact("hunter2").contains("hunter2"));
    }

    #[test]
    fn webhooks_show_their_origin_only() {
        for (url, shown) in [
            (
                "https://hooks.example/services/T0/B0/hunter2",
                "https://hooks.example",
            ),
            (
                "http://user:hunter2@127.0.0.1:9/hook?token=hunter2",
                "http://127.0.0.1:9",
            ),
            ("https://h.example?k=hunter2", "https://h.example"),
        ] {
            let u = SecretUrl::origin_only(url);
            assert_eq!(u.to_string(), shown);
            assert!(!format!("{u:?}").contains("hunter2"));
        }
    }

    #[test]
    fn urls_inside_error_texts_are_scrubbed() {
        let text = "error sending request for url (http://u:hunter2@127.0.0.1:1/x?token=hunter2): \
                    refused; then \"redis+unix:///s.sock?pass=hunter2\" and https://h/a";
        let clean = scrub(text);
        assert!(!clean.contains("hunter2"), "{clean}");
        assert!(
            clean.starts_with("error sending request for url (http://***@127.0.0.1:1/x?token=***")
        );
        assert!(
            clean.contains("\"redis+unix:///s.sock?pass=***\""),
            "{clean}"
        );
        assert!(clean.ends_with("and https://h/a"), "{clean}");
        assert_eq!(scrub("no url here"), "no url here");
    }
}
