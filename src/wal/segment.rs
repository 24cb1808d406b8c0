//! WAL file names and positions: `TTTTTTTTXXXXXXXXYYYYYYYY` is timeline T, segment
//! `X * (2^32 / segment size) + Y`; an LSN is written `X/Y` in hex.

/// A WAL segment of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentName {
    pub timeline: u32,
    pub number: u64,
    /// The server's `wal_segment_size` (16 MiB unless initdb was told otherwise).
    pub wal_bytes: u64,
}

impl SegmentName {
    /// Parses a completed segment's name; `None` for anything else (`.partial`, `.history`).
    pub fn parse(name: &str, wal_bytes: u64) -> Option<SegmentName> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) || wal_bytes == 0 {
            return None;
        }
        let timeline = u32::from_str_radix(&name[0..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
        let per_log = (1u64 << 32) / wal_bytes;
        (seg < per_log).then_some(SegmentName {
            timeline,
            number: log * per_log + seg,
            wal_bytes,
        })
    }

    pub fn name(&self) -> String {
        let per_log = (1u64 << 32) / self.wal_bytes;
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_log,
            self.number % per_log
        )
    }

    /// The position just past this segment.
    pub fn end_lsn(&self) -> u64 {
        (self.number + 1) * self.wal_bytes
    }
}

/// Whether pg_receivewal is done with the file `name` in its folder: a segment or a timeline
/// history file (never the in-flight `.partial`).
/// The missing ranges between `segments` of each timeline, in (timeline, number) order: the
/// segment before each gap and the first and last missing segments.
pub fn gaps(segments: &[SegmentName]) -> Vec<(SegmentName, SegmentName, SegmentName)> {
    let mut sorted = segments.to_vec();
    sorted.sort_by_key(|s| (s.timeline, s.number));
    sorted
        .windows(2)
        .filter(|w| w[0].timeline == w[1].timeline && w[1].number > w[0].number + 1)
        .map(|w| {
            let first = SegmentName {
                number: w[0].number + 1,
                ..w[0]
            };
            let last = SegmentName {
                number: w[1].number - 1,
                ..w[0]
            };
            (w[0], first, last)
        })
        .collect()
}

pub fn is_complete(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (name.len() == 24 && hex(name))
        || name
            .strip_suffix(".history")
            .is_some_and(|t| t.len() == 8 && hex(t))
}

/// An LSN as PostgreSQL writes it: `0/3000000`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_positions() {
        let s = SegmentName::parse("000000010000000100000002", 16 << 20).unwrap();
        assert_eq!(s.number, 258);
        assert_eq!(s.name(), "000000010000000100000002");
        assert_eq!(format_lsn(s.end_lsn()), "1/3000000");
        assert!(is_complete("000000020000000000000001"));
        assert!(is_complete("00000002.history"));
        assert!(!is_complete("000000010000000000000001.partial"));
        assert!(!is_complete(".000000010000000000000001.tmp"));
    }
}
