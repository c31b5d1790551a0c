//! V1 JSON frames (`vsn=1.0.0`, objects), as a client sends them and as a server
//! sends them. Decoding never panics; whatever decodes re-encodes to a frame that
//! decodes to the same message (client side and server side alike), and a V1
//! socket reads a binary frame exactly as the same bytes in a text frame.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use phx_protocol::{Frame, Received, Serializer};

fuzz_target!(|data: &[u8]| {
    let ser = Serializer::V1Json;
    let as_binary = ser.decode_binary(Bytes::copy_from_slice(data));
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(as_binary.is_err(), "non-UTF-8 bytes decoded: {as_binary:?}");
        return;
    };
    let decoded = ser.decode_text(text);
    assert_eq!(decoded.as_ref().ok(), as_binary.as_ref().ok());

    // What the server reads, re-encoded as a client writes it, reads the same.
    if let Ok(msg) = decoded {
        let frame = ser
            .encode_client(&msg)
            .expect("a decoded message re-encodes");
        assert_eq!(
            ser.decode(&frame).as_ref(),
            Ok(&msg),
            "client re-encoding of {text:?}"
        );
    }

    // What a client reads from a server, re-encoded as a server writes it, reads the same.
    match ser.decode_server(&Frame::text(text)) {
        Ok(Received::Message(mut msg)) => {
            let frame = ser
                .encode_message(&msg)
                .expect("a decoded message re-encodes");
            msg.join_ref = None; // V1 servers never write join_ref
            assert_eq!(ser.decode_server(&frame), Ok(Received::Message(msg)));
        }
        Ok(Received::Reply(mut reply)) => {
            let frame = ser
                .encode_reply(&reply)
                .expect("a decoded reply re-encodes");
            reply.join_ref = None;
            assert_eq!(ser.decode_server(&frame), Ok(Received::Reply(reply)));
        }
        Err(_) => {}
    }
});
