//! The body of a long-poll POST (`phx_runtime::longpoll_body::decode`): ndjson
//! (JSON lines and base64 binary lines) or one whole frame, for either
//! serializer. Decoding never panics, never yields more than 100 frames, and the
//! frames of an ndjson body, written back as phoenix.js writes them, decode to
//! the same frames.
//!
//! The first byte picks the case (bit 0: ndjson, bit 1: V1 serializer); the rest
//! is the body.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use phx_protocol::{Frame, Message, Serializer};
use phx_runtime::longpoll_body::{decode, MAX_BATCH};

/// Small enough that the fuzzer reaches the line limit.
const MAX_LINE: usize = 512;

/// One frame as phoenix.js's `LongPoll` writes it in an ndjson body.
fn line(ser: Serializer, msg: &Message) -> String {
    match ser
        .encode_client(msg)
        .expect("a decoded message re-encodes")
    {
        Frame::Text(t) => t.as_str().to_owned(),
        Frame::Binary(b) => base64::engine::general_purpose::STANDARD.encode(b),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let ndjson = flags & 1 == 1;
    let ser = if flags & 2 == 2 {
        Serializer::V1Json
    } else {
        Serializer::V2Json
    };
    let Ok(messages) = decode(body, ndjson, ser, MAX_LINE) else {
        return;
    };
    assert!(messages.len() <= MAX_BATCH);
    if !ndjson {
        assert_eq!(messages.len(), 1);
        let frame = ser.encode_client(&messages[0]).expect("re-encodes");
        let again = decode(frame.as_bytes(), false, ser, MAX_LINE).expect("decodes again");
        assert_eq!(again, messages);
    } else if ser == Serializer::V2Json {
        // phoenix.js sends ndjson only with the V2 serializer. A re-encoded line
        // may be longer than the original (escapes), so the limit is lifted.
        let body: Vec<String> = messages.iter().map(|m| line(ser, m)).collect();
        let again = decode(body.join("\n").as_bytes(), true, ser, usize::MAX)
            .expect("phoenix.js's own encoding decodes");
        assert_eq!(again, messages);
    }
});
