//! V2 binary frames (opcode 0x2): kind-0 pushes from a client; pushes, replies
//! and broadcasts from a server. Decoding never panics, and whatever decodes
//! re-encodes to exactly the same bytes.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use phx_protocol::{Broadcast, Frame, Received, Serializer};

fuzz_target!(|data: &[u8]| {
    let ser = Serializer::V2Json;
    let bytes = Bytes::copy_from_slice(data);

    if let Ok(msg) = ser.decode_binary(bytes.clone()) {
        let frame = ser.encode_client(&msg).expect("a decoded push re-encodes");
        assert_eq!(frame.as_bytes(), &bytes, "client push {msg:?}");
    }

    let again = match ser.decode_server(&Frame::Binary(bytes.clone())) {
        Ok(Received::Message(msg)) if msg.join_ref.is_none() => {
            // A broadcast (kind 2) has neither ref.
            let b = Broadcast::new(msg.topic, msg.event, msg.payload);
            ser.encode_broadcast(&b)
        }
        Ok(Received::Message(msg)) => ser.encode_message(&msg),
        Ok(Received::Reply(reply)) => ser.encode_reply(&reply),
        Err(_) => return,
    };
    let again = again.expect("a decoded server frame re-encodes");
    assert_eq!(again.as_bytes(), &bytes);
});
