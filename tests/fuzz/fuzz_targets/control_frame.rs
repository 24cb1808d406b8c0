//! The daemon's control-socket input path on arbitrary bytes: the frame decoder
//! (`protocol::Codec`, newline-delimited UTF-8 requests of at most `MAX_REQUEST` bytes) fed in chunks
//! as a socket delivers them, then the request parser (`protocol::decode_request`) on every
//! line. Neither may panic; every line is within the limit; a line that parses as a request
//! parses again, to the same request, after it is written back out.
#![no_main]

use atpred::protocol::{Codec, FrameError, MAX_REQUEST, Request, decode_request};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte sets the chunk size, so reads split lines at every possible place.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut codec = Codec::requests();
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    let mut closed = false;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => break,
                // The daemon answers bad_frame and closes: nothing after it is read.
                Err(FrameError::TooLong | FrameError::Io(_)) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            break;
        }
    }
    if !closed {
        // The client shut its side: what is left is the last (partial) line.
        while let Ok(Some(line)) = codec.decode_eof(&mut buf) {
            lines.push(line);
        }
    }
    for line in lines {
        assert!(line.len() <= MAX_REQUEST, "a line of {} bytes", line.len());
        if let Ok(request) = decode_request(&line) {
            let again = serde_json::to_string(&request).expect("a request serialises");
            let reparsed: Request = decode_request(&again).expect("a written request parses");
            assert_eq!(
                serde_json::to_value(&reparsed).expect("serialise"),
                serde_json::to_value(&request).expect("serialise"),
                "round trip of {line:?}"
            );
        }
    }
});
