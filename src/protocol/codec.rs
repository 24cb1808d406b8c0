//! Line framing: newline-delimited JSON with a bounded line length.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder, LinesCodec, LinesCodecError};

use super::{MAX_LINE, MAX_REQUEST, Request};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("line too long")]
    TooLong,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A bounded `LinesCodec`, with errors the server can answer. The default (a client's) reads
/// replies up to [`MAX_LINE`]; [`Codec::requests`] (the daemon's) reads requests up to
/// [`MAX_REQUEST`].
pub struct Codec(LinesCodec);

impl Default for Codec {
    fn default() -> Self {
        Codec(LinesCodec::new_with_max_length(MAX_LINE))
    }
}

impl Codec {
    /// The daemon's side: lines over [`MAX_REQUEST`] are a framing error, so an unfinished
    /// line never makes it buffer more than that.
    pub fn requests() -> Self {
        Codec(LinesCodec::new_with_max_length(MAX_REQUEST))
    }
}

impl Decoder for Codec {
    type Item = String;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, FrameError> {
        self.0.decode(src).map_err(lines_error)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, FrameError> {
        self.0.decode_eof(src).map_err(lines_error)
    }
}

impl Encoder<String> for Codec {
    type Error = FrameError;

    fn encode(&mut self, line: String, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.0.encode(line, dst).map_err(lines_error)
    }
}

fn lines_error(e: LinesCodecError) -> FrameError {
    match e {
        LinesCodecError::MaxLineLengthExceeded => FrameError::TooLong,
        LinesCodecError::Io(e) => FrameError::Io(e),
    }
}

/// Parses one request line. The error text names what is wrong (unknown type, missing field).
pub fn decode_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line).map_err(|e| format!("invalid request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_and_rejects_unknown() {
        assert!(matches!(
            decode_request(r#"{"type":"status"}"#),
            Ok(Request::Status)
        ));
        let err = decode_request(r#"{"type":"format_disk"}"#).unwrap_err();
        assert!(err.contains("format_disk"), "{err}");
        assert!(decode_request("not json").is_err());
        assert!(decode_request(r#"{"type":"run","job":"Bad Name"}"#).is_err());
        assert!(decode_request(r#"{"type":"history","limit":-1}"#).is_err());
    }

    #[test]
    fn long_lines_are_framing_errors() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::from(&vec![b'x'; MAX_LINE + 10][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::TooLong)));
        // The daemon's side stops at 64 KiB; a reply of that size still reads.
        let mut requests = Codec::requests();
        let mut buf = BytesMut::from(&vec![b'x'; MAX_REQUEST + 1][..]);
        assert!(matches!(
            requests.decode(&mut buf),
            Err(FrameError::TooLong)
        ));
        let mut line = vec![b'x'; MAX_REQUEST + 1];
        line.push(b'\n');
        let mut buf = BytesMut::from(&line[..]);
        assert!(matches!(Codec::default().decode(&mut buf), Ok(Some(_))));
    }

    #[test]
    fn status_without_leases_still_decodes() {
        // What a daemon from before fleet coordination sends.
        let old = r#"{"type":"status","version":"0.1.0","pid":1,"started":"2026-01-01T00:00:00Z","config":"/etc/atpre/atpred.toml","timezone":"UTC","jobs":0,"running":[],"summary":"0 jobs","reload_error":null}"#;
        let r: crate::protocol::Response = serde_json::from_str(old).unwrap();
        let crate::protocol::Response::Status(s) = r else {
            panic!("{r:?}")
        };
        assert!(s.leases.is_empty());
        let again = serde_json::to_string(&crate::protocol::Response::Status(s)).unwrap();
        assert!(!again.contains("leases"), "no leases, no field: {again}");
    }
}
