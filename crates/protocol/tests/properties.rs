//! Property tests: what any serializer encodes, the other side decodes to the same
//! message; and no input, however malformed, makes a decoder panic.

use bytes::Bytes;
use phx_protocol::{Broadcast, Frame, Message, Payload, Received, Ref, Reply, Serializer};
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON values, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("\\PC{0,6}", json(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Refs as clients make them (null, or a string that may be empty).
fn opt_ref() -> impl Strategy<Value = Option<Ref>> {
    prop::option::of("[0-9a-z]{0,12}".prop_map(Ref::from))
}

/// Refs as JSON clients may write them: strings, or numbers of any size and form.
fn json_ref() -> impl Strategy<Value = Option<Ref>> {
    prop_oneof![
        opt_ref(),
        any::<u32>().prop_map(|n| Some(Ref::numeric(n.to_string()))),
        "-?[1-9][0-9]{18,40}(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,3})?"
            .prop_map(|n| Some(Ref::numeric(n))),
    ]
}

/// A binary frame has no null: a null ref is written, and read back, as "".
fn binary_ref(r: &Option<Ref>) -> Option<Ref> {
    Some(r.clone().unwrap_or_else(|| Ref::from("")))
}

/// Topic and event text, control characters included.
fn text_field() -> impl Strategy<Value = String> {
    "[\\PC\u{0}-\u{1f}\u{7f}]{0,40}"
}

fn serializer() -> impl Strategy<Value = Serializer> {
    prop_oneof![Just(Serializer::V1Json), Just(Serializer::V2Json)]
}

fn payload_value(p: &Payload) -> Value {
    serde_json::from_str(p.as_json().expect("json payload")).expect("valid json")
}

proptest! {
    #[test]
    fn client_messages_round_trip(ser in serializer(), jr in json_ref(), r in json_ref(),
                                  topic in text_field(), event in text_field(), payload in json()) {
        let msg = Message::new(jr, r, topic, event, Payload::from(payload.clone()));
        let frame = ser.encode_client(&msg).expect("JSON payloads always encode");
        let back = ser.decode(&frame).expect("what a client encodes, the server decodes");
        prop_assert_eq!(back.join_ref, msg.join_ref);
        prop_assert_eq!(back.msg_ref, msg.msg_ref);
        prop_assert_eq!(back.topic, msg.topic);
        prop_assert_eq!(back.event, msg.event);
        prop_assert_eq!(payload_value(&back.payload), payload);
    }

    #[test]
    fn binary_client_pushes_round_trip(jr in opt_ref(), r in opt_ref(), topic in "\\PC{1,40}",
                                       event in "\\PC{1,40}", data in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut msg = Message::new(jr, r, topic, event, Payload::Binary(Bytes::from(data)));
        let frame = Serializer::V2Json.encode_client(&msg).expect("short fields fit");
        prop_assert!(matches!(frame, Frame::Binary(_)));
        msg.join_ref = binary_ref(&msg.join_ref);
        msg.msg_ref = binary_ref(&msg.msg_ref);
        prop_assert_eq!(Serializer::V2Json.decode(&frame).expect("decodes"), msg);
    }

    #[test]
    fn server_pushes_round_trip(ser in serializer(), jr in opt_ref(), topic in text_field(),
                                event in text_field(), payload in object()) {
        let msg = Message::new(jr, None, topic, event, Payload::from(payload.clone()));
        let frame = ser.encode_message(&msg).expect("object payloads encode");
        match ser.decode_server(&frame).expect("decodes") {
            Received::Message(back) => {
                // V1 never writes join_ref.
                let expected_jr = if ser == Serializer::V1Json { None } else { msg.join_ref.clone() };
                prop_assert_eq!(back.join_ref, expected_jr);
                prop_assert_eq!(back.msg_ref, None);
                prop_assert_eq!(back.topic, msg.topic);
                prop_assert_eq!(payload_value(&back.payload), payload);
            }
            other => prop_assert!(false, "expected a message, got {:?}", other),
        }
    }

    #[test]
    fn replies_round_trip(ser in serializer(), jr in json_ref(), r in json_ref(), topic in text_field(),
                          status in "[a-z_]{1,10}", response in json()) {
        let reply = Reply::new(jr, r, topic, status, Payload::from(response.clone()));
        let frame = ser.encode_reply(&reply).expect("replies encode");
        match ser.decode_server(&frame).expect("decodes") {
            Received::Reply(back) => {
                let expected_jr = if ser == Serializer::V1Json { None } else { reply.join_ref.clone() };
                prop_assert_eq!(back.join_ref, expected_jr);
                prop_assert_eq!(back.msg_ref, reply.msg_ref);
                prop_assert_eq!(back.status, reply.status);
                prop_assert_eq!(payload_value(&back.response), response);
            }
            other => prop_assert!(false, "expected a reply, got {:?}", other),
        }
    }

    #[test]
    fn binary_replies_and_broadcasts_round_trip(jr in opt_ref(), r in opt_ref(), topic in "\\PC{1,40}",
                                                status in "[a-z]{1,8}", data in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut reply = Reply::new(jr, r, topic.clone(), status, Payload::Binary(Bytes::from(data.clone())));
        let frame = Serializer::V2Json.encode_reply(&reply).expect("fits");
        reply.join_ref = binary_ref(&reply.join_ref);
        reply.msg_ref = binary_ref(&reply.msg_ref);
        prop_assert_eq!(Serializer::V2Json.decode_server(&frame).expect("decodes"), Received::Reply(reply));
        let b = Broadcast::new(topic.clone(), "e", Payload::Binary(Bytes::from(data.clone())));
        let frame = Serializer::V2Json.encode_broadcast(&b).expect("fits");
        let expected = Message::new(None, None, topic, "e", Payload::Binary(Bytes::from(data)));
        prop_assert_eq!(Serializer::V2Json.decode_server(&frame).expect("decodes"), Received::Message(expected));
    }

    #[test]
    fn payload_text_is_forwarded_byte_exact(payload in object()) {
        // Whatever JSON text a client sends is what subscribers receive, unchanged.
        let text = serde_json::to_string(&payload).expect("serializes");
        let frame = format!(r#"["1","2","t","e",{text}]"#);
        let msg = Serializer::V2Json.decode_text(&frame).expect("decodes");
        prop_assert_eq!(msg.payload.as_json(), Some(text.as_str()));
        let out = Serializer::V2Json.encode_broadcast(&Broadcast::new("t", "e", msg.payload)).expect("object");
        prop_assert_eq!(out.as_text().map(str::to_owned), Some(format!(r#"[null,null,"t","e",{text}]"#)));
    }

    #[test]
    fn binary_frames_on_v1_are_read_as_json(jr in json_ref(), r in json_ref(), topic in text_field(),
                                            event in text_field(), payload in json()) {
        let msg = Message::new(jr, r, topic, event, Payload::from(payload));
        let frame = Serializer::V1Json.encode_client(&msg).expect("JSON payloads encode");
        let bytes = frame.as_bytes().clone();
        let from_text = Serializer::V1Json.decode(&frame).expect("decodes");
        let from_binary = Serializer::V1Json.decode(&Frame::Binary(bytes)).expect("decodes");
        prop_assert_eq!(from_text, from_binary);
    }

    #[test]
    fn decoders_never_panic_on_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        for ser in [Serializer::V1Json, Serializer::V2Json] {
            let _ = ser.decode_binary(Bytes::from(data.clone()));
            let _ = ser.decode_server(&Frame::Binary(Bytes::from(data.clone())));
            if let Ok(text) = std::str::from_utf8(&data) {
                let _ = ser.decode_text(text);
            }
        }
    }

    #[test]
    fn decoders_never_panic_on_text(text in "\\PC{0,200}") {
        for ser in [Serializer::V1Json, Serializer::V2Json] {
            let _ = ser.decode_text(&text);
            let _ = ser.decode_server(&Frame::text(text.clone()));
        }
    }

    #[test]
    fn decoders_never_panic_on_near_frames(prefix in prop::collection::vec(0u8..3, 1..2),
                                           rest in prop::collection::vec(any::<u8>(), 0..40)) {
        // Frames that start with a valid kind byte exercise every header check.
        let mut data = prefix;
        data.extend(rest);
        let _ = Serializer::V2Json.decode_binary(Bytes::from(data.clone()));
        let _ = Serializer::V2Json.decode_server(&Frame::Binary(Bytes::from(data)));
    }

    #[test]
    fn negotiation_never_panics(vsn in "\\PC{0,20}") {
        let _ = Serializer::negotiate(Some(&vsn));
    }
}
