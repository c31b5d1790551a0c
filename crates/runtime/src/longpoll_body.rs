//! The body of a long-poll POST, turned into messages: pure, no session, no I/O.
//!
//! phoenix.js's `LongPoll` sends one of two bodies (`phoenix/assets/js/phoenix/longpoll.js`
//! `batchSend`, v1.8.12):
//!
//! - `content-type: application/x-ndjson`: one frame per line. A line that starts
//!   with `[` is a V2 JSON text frame; any other line is a V2 binary frame in
//!   base64. Empty lines (and a `\r` before the `\n`) are skipped; only the first
//!   [`MAX_BATCH`] frames are read, as Phoenix's `LongPoll` reads them.
//! - anything else: the whole body is one text frame of the socket's serializer
//!   (a `vsn=1.0.0` object or a `vsn=2.0.0` array).
//!
//! Every line is checked against a byte limit before it is decoded, and every
//! error says which rule the body broke ([`BodyError`]); the caller ends the
//! session and answers `{"status":400}`.
//!
//! ```
//! use phx_runtime::longpoll_body::{decode, BodyError};
//! use phx_runtime::Serializer;
//!
//! let body = b"[null,\"1\",\"phoenix\",\"heartbeat\",{}]\n[\"1\",\"2\",\"room:1\",\"phx_join\",{}]\n";
//! let messages = decode(body, true, Serializer::V2Json, 1024).unwrap();
//! assert_eq!(messages.len(), 2);
//! assert!(messages[0].is_heartbeat());
//!
//! assert!(matches!(
//!     decode(b"not base64!", true, Serializer::V2Json, 1024),
//!     Err(BodyError::NotBase64(_))
//! ));
//! ```

use base64::Engine;
use bytes::Bytes;
use phx_protocol::{Message, ProtocolError, Serializer};

/// Frames of one ndjson POST that are read; the rest are ignored (Phoenix's limit).
pub const MAX_BATCH: usize = 100;

/// Why a long-poll body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not UTF-8 text.
    #[error("body is not UTF-8")]
    NotUtf8,
    /// One ndjson line is longer than the configured limit.
    #[error("line of {len} bytes over the limit of {limit}")]
    LineTooLong {
        /// The line's length in bytes.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// An ndjson line that is not JSON is not base64 either.
    #[error("line is neither JSON nor base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    /// A frame of the body is not a valid frame of the socket's serializer.
    #[error(transparent)]
    Frame(#[from] ProtocolError),
}

/// Decodes a POST body: `ndjson` when its content type is `application/x-ndjson`,
/// each line at most `max_line` bytes.
pub fn decode(
    body: &[u8],
    ndjson: bool,
    serializer: Serializer,
    max_line: usize,
) -> Result<Vec<Message>, BodyError> {
    let body = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    if !ndjson {
        return Ok(vec![serializer.decode_text(body)?]);
    }
    let mut out = Vec::new();
    for line in body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .take(MAX_BATCH)
    {
        if line.len() > max_line {
            return Err(BodyError::LineTooLong {
                len: line.len(),
                limit: max_line,
            });
        }
        let msg = if line.starts_with('[') {
            serializer.decode_text(line)?
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(BodyError::NotBase64)?;
            serializer.decode_binary(Bytes::from(bytes))?
        };
        out.push(msg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_or_base64_and_blank_lines_are_skipped() {
        // [0,1,1,1,1] "12te" "data": a kind-0 push with a binary payload.
        let push =
            base64::engine::general_purpose::STANDARD.encode(b"\x00\x01\x01\x01\x0112tedata");
        let body = format!("[null,\"1\",\"phoenix\",\"heartbeat\",{{}}]\r\n\n{push}\n");
        let got = decode(body.as_bytes(), true, Serializer::V2Json, 1024).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_heartbeat());
        assert_eq!(got[1].topic, "t");
        assert_eq!(
            got[1].payload.as_binary().map(|b| &b[..]),
            Some(&b"data"[..])
        );
    }

    #[test]
    fn only_the_first_hundred_frames_are_read() {
        let line = "[null,\"1\",\"phoenix\",\"heartbeat\",{}]\n";
        let body = line.repeat(MAX_BATCH + 5);
        let got = decode(body.as_bytes(), true, Serializer::V2Json, 1024).unwrap();
        assert_eq!(got.len(), MAX_BATCH);
    }

    #[test]
    fn each_rule_has_its_error() {
        let v2 = Serializer::V2Json;
        assert!(matches!(
            decode(b"\xff", false, v2, 10),
            Err(BodyError::NotUtf8)
        ));
        assert!(matches!(
            decode(b"[1,2,3,4,5,6,7,8]", true, v2, 10),
            Err(BodyError::LineTooLong { len: 17, limit: 10 })
        ));
        assert!(matches!(
            decode(b"%%%", true, v2, 10),
            Err(BodyError::NotBase64(_))
        ));
        assert!(matches!(
            decode(b"[1]", true, v2, 10),
            Err(BodyError::Frame(_))
        ));
        // A whole body is one frame of the socket's serializer, V1 included.
        let v1 = r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#;
        let got = decode(v1.as_bytes(), false, Serializer::V1Json, 10).unwrap();
        assert!(got[0].is_heartbeat());
    }
}
