//! Finding where a key stands in the TOML text, so errors found after parsing can still say
//! "line 12, column 9".

use toml::de::{DeTable, DeValue};

/// The 1-based (line, column) of the value of `key` (a dotted path) in `text`, or of the
/// deepest table on the path that exists.
pub fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    let segments = split_key(key);
    for (i, segment) in segments.iter().enumerate() {
        let Some((k, v)) = table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == segment.as_str())
        else {
            break;
        };
        let at_end = i + 1 == segments.len();
        found = Some(if at_end {
            v.span().start
        } else {
            k.span().start
        });
        match v.get_ref() {
            DeValue::Table(t) if !at_end => table = t,
            _ => break,
        }
    }
    found.map(|offset| position(text, offset))
}

/// 1-based line and column of a byte offset.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Splits `jobs.nightly.schedule` (serde_path_to_error's format) into segments; array indices
/// (`command[0]`) are dropped, the array itself is located.
fn split_key(key: &str) -> Vec<String> {
    key.split('.')
        .map(|s| s.split('[').next().unwrap_or(s).to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys() {
        let text =
            "[daemon]\ntimezone = \"Mars\"\n\n[jobs.a]\nkind = \"command\"\nschedule = \"x\"\n";
        assert_eq!(locate(text, "daemon.timezone"), Some((2, 12)));
        assert_eq!(locate(text, "jobs.a.schedule"), Some((6, 12)));
        assert_eq!(locate(text, "jobs.a.command[1]"), Some((4, 7)));
        assert_eq!(locate(text, "nope"), None);
    }
}
