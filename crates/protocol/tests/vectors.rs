//! Runs every test vector in `protocol-spec/vectors/*.json` against the crate.
//!
//! Each vector states what Phoenix does (its `source` names the Phoenix file) and
//! this test checks that we do the same: decode results field by field, encoded
//! frames byte for byte, and error kinds by `ProtocolError::kind`.

use std::path::Path;

use bytes::Bytes;
use phx_protocol::presence::{PresenceDiff, PresenceState};
use phx_protocol::Ref;
use phx_protocol::{
    Broadcast, Frame, Message, Payload, ProtocolError, Received, Reply, Serializer,
};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("vector hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A ref as the vector writes it: a string, a number (kept numeric), or null.
fn opt_ref(v: &Value, key: &str) -> Option<Ref> {
    match v.get(key) {
        Some(Value::String(s)) => Some(Ref::from(s.as_str())),
        Some(Value::Number(n)) => Some(Ref::numeric(n.to_string())),
        _ => None,
    }
}

fn str_of(v: &Value, key: &str) -> String {
    opt_str(v, key).unwrap_or_else(|| panic!("vector field {key} missing"))
}

/// The payload an input object describes: `payload` (JSON) or `payload_hex`.
fn payload_of(v: &Value, json_key: &str, hex_key: &str) -> Payload {
    match v.get(hex_key).and_then(Value::as_str) {
        Some(h) => Payload::Binary(Bytes::from(unhex(h))),
        None => Payload::from(v.get(json_key).cloned().unwrap_or(Value::Null)),
    }
}

fn check_payload(name: &str, got: &Payload, expect: &Value, json_key: &str, hex_key: &str) {
    match expect.get(hex_key).and_then(Value::as_str) {
        Some(h) => assert_eq!(
            got.as_binary().map(|b| hex(b)),
            Some(h.to_owned()),
            "{name}: binary payload"
        ),
        None => {
            let json = got
                .as_json()
                .unwrap_or_else(|| panic!("{name}: payload is binary, expected JSON"));
            let parsed: Value = serde_json::from_str(json).expect("payload is JSON");
            assert_eq!(
                &parsed,
                expect.get(json_key).unwrap_or(&Value::Null),
                "{name}: payload"
            );
        }
    }
}

fn check_message(name: &str, got: &Message, expect: &Value) {
    assert_eq!(
        got.join_ref,
        opt_ref(expect, "join_ref"),
        "{name}: join_ref"
    );
    assert_eq!(got.msg_ref, opt_ref(expect, "ref"), "{name}: ref");
    assert_eq!(got.topic, str_of(expect, "topic"), "{name}: topic");
    assert_eq!(got.event, str_of(expect, "event"), "{name}: event");
    check_payload(name, &got.payload, expect, "payload", "payload_hex");
}

fn check_error<T: std::fmt::Debug>(
    name: &str,
    got: Result<T, ProtocolError>,
    vector: &Value,
) -> Option<T> {
    match vector.get("error").and_then(Value::as_str) {
        Some(kind) => {
            match got {
                Ok(v) => panic!("{name}: expected error {kind}, got {v:?}"),
                Err(e) => assert_eq!(e.kind(), kind, "{name}: error kind ({e})"),
            }
            None
        }
        None => Some(got.unwrap_or_else(|e| panic!("{name}: unexpected error {e}"))),
    }
}

fn serializer(vector: &Value) -> Serializer {
    Serializer::negotiate(vector.get("vsn").and_then(Value::as_str)).expect("vector vsn")
}

fn check_frame(name: &str, frame: Frame, vector: &Value) {
    if let Some(text) = vector.get("expect_text").and_then(Value::as_str) {
        assert_eq!(frame.as_text(), Some(text), "{name}: encoded text");
    } else {
        let h = str_of(vector, "expect_hex");
        assert!(
            matches!(frame, Frame::Binary(_)),
            "{name}: expected a binary frame"
        );
        assert_eq!(hex(frame.as_bytes()), h, "{name}: encoded bytes");
    }
}

fn run(vector: &Value) {
    let name = str_of(vector, "name");
    let name = name.as_str();
    assert!(
        vector.get("source").and_then(Value::as_str).is_some(),
        "{name}: every vector names its source"
    );
    let op = str_of(vector, "op");
    match op.as_str() {
        "decode" => {
            let ser = serializer(vector);
            let got = match vector.get("hex").and_then(Value::as_str) {
                Some(h) => ser.decode_binary(Bytes::from(unhex(h))),
                None => ser.decode_text(&str_of(vector, "text")),
            };
            if let Some(msg) = check_error(name, got, vector) {
                check_message(name, &msg, &vector["expect"]);
            }
        }
        "decode_server" => {
            let ser = serializer(vector);
            let frame = match vector.get("hex").and_then(Value::as_str) {
                Some(h) => Frame::Binary(Bytes::from(unhex(h))),
                None => Frame::text(str_of(vector, "text")),
            };
            if let Some(received) = check_error(name, ser.decode_server(&frame), vector) {
                let expect = &vector["expect"];
                match (received, str_of(expect, "kind").as_str()) {
                    (Received::Message(m), "message") => check_message(name, &m, expect),
                    (Received::Reply(r), "reply") => {
                        assert_eq!(r.join_ref, opt_ref(expect, "join_ref"), "{name}: join_ref");
                        assert_eq!(r.msg_ref, opt_ref(expect, "ref"), "{name}: ref");
                        assert_eq!(r.topic, str_of(expect, "topic"), "{name}: topic");
                        assert_eq!(r.status, str_of(expect, "status"), "{name}: status");
                        check_payload(name, &r.response, expect, "response", "response_hex");
                    }
                    (other, kind) => panic!("{name}: expected a {kind}, got {other:?}"),
                }
            }
        }
        "encode_message" | "encode_client" => {
            let ser = serializer(vector);
            let i = &vector["input"];
            let msg = Message::new(
                opt_ref(i, "join_ref"),
                opt_ref(i, "ref"),
                str_of(i, "topic"),
                str_of(i, "event"),
                payload_of(i, "payload", "payload_hex"),
            );
            let got = if op == "encode_message" {
                ser.encode_message(&msg)
            } else {
                ser.encode_client(&msg)
            };
            if let Some(frame) = check_error(name, got, vector) {
                check_frame(name, frame, vector);
            }
        }
        "encode_reply" => {
            let ser = serializer(vector);
            let i = &vector["input"];
            let reply = Reply::new(
                opt_ref(i, "join_ref"),
                opt_ref(i, "ref"),
                str_of(i, "topic"),
                str_of(i, "status"),
                payload_of(i, "response", "response_hex"),
            );
            if let Some(frame) = check_error(name, ser.encode_reply(&reply), vector) {
                check_frame(name, frame, vector);
            }
        }
        "encode_broadcast" => {
            let ser = serializer(vector);
            let i = &vector["input"];
            let b = Broadcast::new(
                str_of(i, "topic"),
                str_of(i, "event"),
                payload_of(i, "payload", "payload_hex"),
            );
            if let Some(frame) = check_error(name, ser.encode_broadcast(&b), vector) {
                check_frame(name, frame, vector);
            }
        }
        "negotiate" => {
            let param = vector.get("vsn_param").and_then(Value::as_str);
            if let Some(ser) = check_error(name, Serializer::negotiate(param), vector) {
                assert_eq!(
                    ser.vsn(),
                    str_of(vector, "expect_serializer"),
                    "{name}: serializer"
                );
            }
        }
        "presence_state" | "presence_diff" => {
            let text = str_of(vector, "json");
            let original: Value = serde_json::from_str(&text).expect("vector JSON");
            let reencoded = if op == "presence_state" {
                let state: PresenceState =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                serde_json::to_value(&state)
            } else {
                let diff: PresenceDiff =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                serde_json::to_value(&diff)
            };
            assert_eq!(
                reencoded.expect("serializes"),
                original,
                "{name}: presence payload round trip"
            );
        }
        other => panic!("{name}: unknown op {other}"),
    }
}

#[test]
fn every_vector_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/vectors");
    let mut count = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("protocol-spec/vectors exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable vector file");
        let doc: Value = serde_json::from_str(&text).expect("vector file is JSON");
        for vector in doc["vectors"].as_array().expect("a vectors array") {
            run(vector);
            count += 1;
        }
    }
    assert!(count >= 60, "only {count} vectors found");
}
