//! V2 JSON text frames (`vsn=2.0.0`, arrays), as a client sends them and as a
//! server sends them. Decoding never panics; whatever decodes re-encodes to a
//! frame that decodes to the same message or reply.

#![no_main]

use libfuzzer_sys::fuzz_target;
use phx_protocol::{Frame, Received, Serializer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ser = Serializer::V2Json;

    if let Ok(msg) = ser.decode_text(text) {
        let frame = ser
            .encode_client(&msg)
            .expect("a decoded message re-encodes");
        assert_eq!(
            ser.decode(&frame).as_ref(),
            Ok(&msg),
            "client re-encoding of {text:?}"
        );
    }

    match ser.decode_server(&Frame::text(text)) {
        Ok(Received::Message(msg)) => {
            // A server only writes object payloads in V2 text frames.
            if msg.payload.is_object() {
                let frame = ser
                    .encode_message(&msg)
                    .expect("a decoded message re-encodes");
                assert_eq!(ser.decode_server(&frame), Ok(Received::Message(msg)));
            } else {
                assert!(ser.encode_message(&msg).is_err());
            }
        }
        Ok(Received::Reply(reply)) => {
            let frame = ser
                .encode_reply(&reply)
                .expect("a decoded reply re-encodes");
            assert_eq!(ser.decode_server(&frame), Ok(Received::Reply(reply)));
        }
        Err(_) => {}
    }
});
