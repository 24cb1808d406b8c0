//! How a [`tree::Entry`] is written as a pax tar entry and read back: a pax extended header
//! carries the exact name (any length, UTF-8), the symlink target, the owner names and the
//! mtime with nanoseconds; the ustar header below carries mode, ids, size and type (and the
//! name when it fits, for readers without pax).

use std::io::{self, Read, Write};

use super::tree::{Entry, Kind};

/// Appends `entry`'s headers to `builder`; its content (for a file, `entry.size` bytes)
/// follows from `data`.
pub fn append(
    builder: &mut tar::Builder<impl Write>,
    entry: &Entry,
    data: impl Read,
) -> io::Result<()> {
    let header = extensions(builder, entry)?;
    builder.append(&header, data)
}

/// Appends `entry`'s pax extended header to `builder` and returns its ustar header, for a
/// caller that writes that header and the content (padded to 512 bytes) itself.
pub fn extensions(
    builder: &mut tar::Builder<impl Write>,
    entry: &Entry,
) -> io::Result<tar::Header> {
    let mtime = format!("{}.{:09}", entry.mtime, entry.mtime_nsec);
    let mut pax: Vec<(&str, &[u8])> = vec![
        ("path", entry.path.as_bytes()),
        ("mtime", mtime.as_bytes()),
        ("uname", entry.user.as_bytes()),
        ("gname", entry.group.as_bytes()),
    ];
    if let Some(target) = &entry.target {
        pax.push(("linkpath", target.as_bytes()));
    }
    builder.append_pax_extensions(pax)?;
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(match entry.kind {
        Kind::File => tar::EntryType::Regular,
        Kind::Dir => tar::EntryType::Directory,
        Kind::Symlink => tar::EntryType::Symlink,
    });
    // The pax header is what counts; these are for readers without pax.
    if header.set_path(&entry.path).is_err() {
        header.set_path("atpred-long-name")?;
    }
    if let Some(target) = &entry.target {
        let _ = header.set_link_name(target);
    }
    let _ = header.set_username(&entry.user);
    let _ = header.set_groupname(&entry.group);
    header.set_mode(entry.mode);
    header.set_uid(u64::from(entry.uid));
    header.set_gid(u64::from(entry.gid));
    header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0));
    header.set_size(entry.size);
    header.set_cksum();
    Ok(header)
}

/// The entry a tar entry describes (no `sha256`: the caller hashes the content it reads).
/// Entries of other types (hard links, devices, FIFOs) are refused: atpred never writes them.
pub fn entry_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Entry> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut pax = std::collections::HashMap::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let key = ext
                .key()
                .map_err(|_| bad("a pax key is not UTF-8".into()))?;
            pax.insert(key.to_owned(), ext.value_bytes().to_vec());
        }
    }
    let path = entry.path_bytes();
    let path = std::str::from_utf8(&path)
        .map_err(|_| bad("an entry name is not UTF-8".into()))?
        .to_owned();
    let header = entry.header().clone();
    let kind = match header.entry_type() {
        tar::EntryType::Regular => Kind::File,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        other => return Err(bad(format!("{path}: an entry of type {other:?}"))),
    };
    let text = |key: &str| {
        pax.get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let (mtime, mtime_nsec) = match text("mtime") {
        Some(m) => parse_mtime(&m).ok_or_else(|| bad(format!("{path}: pax mtime {m:?}")))?,
        None => (i64::try_from(header.mtime()?).unwrap_or(0), 0),
    };
    let target = match kind {
        Kind::Symlink => Some(
            entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .ok_or_else(|| bad(format!("{path}: a symlink without a target")))?,
        ),
        _ => None,
    };
    let name = |key: &str, fallback: Option<&[u8]>| {
        text(key)
            .or_else(|| fallback.map(|b| String::from_utf8_lossy(b).into_owned()))
            .unwrap_or_default()
    };
    let size = header.entry_size()?;
    Ok(Entry {
        kind,
        size,
        mode: header.mode()? & 0o7777,
        uid: u32::try_from(header.uid()?).map_err(|_| bad(format!("{path}: uid")))?,
        gid: u32::try_from(header.gid()?).map_err(|_| bad(format!("{path}: gid")))?,
        user: name("uname", header.username_bytes()),
        group: name("gname", header.groupname_bytes()),
        mtime,
        mtime_nsec,
        sha256: None,
        target,
        path,
    })
}

/// `"1764979200.123456789"` (or without a fraction) as seconds and nanoseconds.
fn parse_mtime(s: &str) -> Option<(i64, u32)> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if frac.is_empty() {
        return Some((secs, 0));
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some((secs, digits.parse().ok()?))
}

/// What differs between the manifest's entry and the archive's (content hash included), if
/// anything.
pub fn differ(want: &Entry, got: &Entry) -> Option<String> {
    let checks: [(&str, bool); 9] = [
        ("name", want.path == got.path),
        ("type", want.kind == got.kind),
        ("size", want.size == got.size),
        ("mode", want.mode == got.mode),
        ("owner", want.uid == got.uid && want.gid == got.gid),
        (
            "owner names",
            want.user == got.user && want.group == got.group,
        ),
        (
            "mtime",
            (want.mtime, want.mtime_nsec) == (got.mtime, got.mtime_nsec),
        ),
        ("symlink target", want.target == got.target),
        ("content (sha256)", want.sha256 == got.sha256),
    ];
    let wrong: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(w, _)| *w)
        .collect();
    (!wrong.is_empty()).then(|| {
        format!(
            "{} differ{} from the manifest",
            wrong.join(", "),
            if wrong.len() == 1 && !wrong[0].ends_with('s') {
                "s"
            } else {
                ""
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_keep_their_nanoseconds() {
        assert_eq!(parse_mtime("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_mtime("12.000000001"), Some((12, 1)));
        assert_eq!(parse_mtime("12"), Some((12, 0)));
        assert_eq!(parse_mtime("x"), None);
    }

    #[test]
    fn an_entry_round_trips_through_pax() {
        let entries = [
            Entry {
                path: format!("etc/{}/ünïcödé ✓.conf", "long".repeat(40)),
                kind: Kind::File,
                size: 5,
                mode: 0o4750,
                uid: 65534,
                gid: 65534,
                user: "nobody".into(),
                group: "nogroup".into(),
                mtime: 1_764_979_200,
                mtime_nsec: 123_456_789,
                sha256: None,
                target: None,
            },
            Entry {
                path: "etc/link".into(),
                kind: Kind::Symlink,
                size: 0,
                mode: 0o777,
                uid: 0,
                gid: 0,
                user: "root".into(),
                group: "root".into(),
                mtime: 1,
                mtime_nsec: 0,
                sha256: None,
                target: Some(format!("../{}", "t".repeat(150))),
            },
        ];
        let mut b = tar::Builder::new(Vec::new());
        for e in &entries {
            let data = vec![b'x'; e.size as usize];
            append(&mut b, e, &data[..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let got: Vec<Entry> = archive
            .entries()
            .unwrap()
            .map(|e| entry_of(&mut e.unwrap()).unwrap())
            .collect();
        assert_eq!(got, entries);
        assert_eq!(differ(&entries[0], &got[0]), None);
        let mut other = got[0].clone();
        other.mode = 0o600;
        assert_eq!(
            differ(&entries[0], &other).as_deref(),
            Some("mode differs from the manifest")
        );
    }
}
