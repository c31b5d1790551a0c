//! Runs every test vector in `protocol-spec/vectors/*.json` against the crate.
//!
//! Each vector says whether its expectation is Phoenix's behaviour or our choice
//! (`"phoenix": "same"` or `"ours"` with a `reason`) and names the file that shows
//! what Phoenix does (`source`); this test checks that we behave as the vector says:
//! decoded fields one by one, encoded frames byte for byte, errors by
//! `ProtocolError::kind`. Every failing vector is reported
//! by name, not just the first. The format is described in
//! `protocol-spec/vectors/README.md`.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use phx_protocol::presence::{Meta, PresenceDiff, PresenceState};
use phx_protocol::{
    Broadcast, Frame, Message, Payload, ProtocolError, Received, Ref, Reply, Serializer,
};
use serde_json::Value;

type Outcome = Result<(), String>;

/// Fails the current vector with a message unless `$cond` holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex: {e}")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key)
        .ok_or_else(|| format!("the vector has no {key:?}"))
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    field(v, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key:?} must be a string"))
}

/// A ref as the vector writes it: a string, a number (a numeric ref), null, or
/// `{"number": "<text>"}` for a numeric ref whose exact text matters (beyond 64
/// bits, `7.0`, `1e3`), which a JSON number here would pass through f64.
fn opt_ref(v: &Value, key: &str) -> Result<Option<Ref>, String> {
    match field(v, key)? {
        Value::String(s) => Ok(Some(Ref::from(s.as_str()))),
        Value::Number(n) => Ok(Some(Ref::numeric(n.to_string()))),
        Value::Object(o) if o.len() == 1 && o.contains_key("number") => {
            let text = string(&Value::Object(o.clone()), "number")?;
            let r = Ref::numeric(text.clone());
            check!(r.is_numeric(), "{key:?}: {text:?} is not a JSON number");
            Ok(Some(r))
        }
        Value::Null => Ok(None),
        other => Err(format!(
            "{key:?} must be a string, a number or null, not {other}"
        )),
    }
}

/// The payload an input describes: `<json_key>` (JSON) or `<json_key>_hex` (binary).
fn payload_of(v: &Value, json_key: &str) -> Result<Payload, String> {
    match v.get(format!("{json_key}_hex")) {
        Some(h) => {
            let h = h.as_str().ok_or("hex must be a string")?;
            Ok(Payload::Binary(Bytes::from(unhex(h)?)))
        }
        None => Ok(Payload::from(field(v, json_key)?.clone())),
    }
}

fn check_payload(got: &Payload, expect: &Value, json_key: &str) -> Outcome {
    match expect.get(format!("{json_key}_hex")) {
        Some(h) => {
            let got = got.as_binary().map(|b| hex(b));
            check!(
                got.as_deref() == h.as_str(),
                "{json_key}: got {got:?}, expected binary {h}"
            );
        }
        None => {
            let json = got
                .as_json()
                .ok_or_else(|| format!("{json_key}: got binary, expected JSON"))?;
            let parsed: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
            let want = field(expect, json_key)?;
            check!(&parsed == want, "{json_key}: got {parsed}, expected {want}");
        }
    }
    Ok(())
}

fn check_ref(what: &str, got: &Option<Ref>, expect: &Value, key: &str) -> Outcome {
    let want = opt_ref(expect, key)?;
    check!(*got == want, "{what}: got {got:?}, expected {want:?}");
    Ok(())
}

fn check_message(got: &Message, expect: &Value) -> Outcome {
    check_ref("join_ref", &got.join_ref, expect, "join_ref")?;
    check_ref("ref", &got.msg_ref, expect, "ref")?;
    let (topic, event) = (string(expect, "topic")?, string(expect, "event")?);
    check!(
        got.topic == topic,
        "topic: got {:?}, expected {topic:?}",
        got.topic
    );
    check!(
        got.event == event,
        "event: got {:?}, expected {event:?}",
        got.event
    );
    check_payload(&got.payload, expect, "payload")
}

fn check_reply(got: &Reply, expect: &Value) -> Outcome {
    check_ref("join_ref", &got.join_ref, expect, "join_ref")?;
    check_ref("ref", &got.msg_ref, expect, "ref")?;
    let (topic, status) = (string(expect, "topic")?, string(expect, "status")?);
    check!(
        got.topic == topic,
        "topic: got {:?}, expected {topic:?}",
        got.topic
    );
    check!(
        got.status == status,
        "status: got {:?}, expected {status:?}",
        got.status
    );
    check_payload(&got.response, expect, "response")
}

/// Checks the outcome against `error` when the vector expects one; otherwise hands back the value.
fn expect_ok<T: std::fmt::Debug>(
    got: Result<T, ProtocolError>,
    vector: &Value,
) -> Result<Option<T>, String> {
    match (vector.get("error"), got) {
        (Some(kind), Ok(v)) => Err(format!("expected error {kind}, got {v:?}")),
        (Some(kind), Err(e)) => {
            check!(
                kind.as_str() == Some(e.kind()),
                "expected error {kind}, got {} ({e})",
                e.kind()
            );
            Ok(None)
        }
        (None, Err(e)) => Err(format!("unexpected error {} ({e})", e.kind())),
        (None, Ok(v)) => Ok(Some(v)),
    }
}

fn serializer(vector: &Value) -> Result<Serializer, String> {
    match string(vector, "serializer")?.as_str() {
        "1.0.0" => Ok(Serializer::V1Json),
        "2.0.0" => Ok(Serializer::V2Json),
        other => Err(format!("unknown serializer {other:?}")),
    }
}

/// The frame a vector gives as input: `text`, or `hex` for a binary frame.
fn input_frame(vector: &Value) -> Result<Frame, String> {
    match vector.get("hex") {
        Some(h) => Ok(Frame::Binary(Bytes::from(unhex(
            h.as_str().ok_or("hex must be a string")?,
        )?))),
        None => Ok(Frame::text(string(vector, "text")?)),
    }
}

fn check_frame(frame: Frame, vector: &Value) -> Outcome {
    if let Some(text) = vector.get("expect_text") {
        let text = text.as_str().ok_or("expect_text must be a string")?;
        check!(
            frame.as_text() == Some(text),
            "encoded: got {frame:?}, expected text {text}"
        );
    } else {
        let want = string(vector, "expect_hex")?;
        check!(
            matches!(frame, Frame::Binary(_)),
            "encoded: got {frame:?}, expected a binary frame"
        );
        let got = hex(frame.as_bytes());
        check!(got == want, "encoded: got {got}, expected {want}");
    }
    Ok(())
}

/// `[[phx_ref, phx_ref_prev], …]` of each key, as the vectors' `expect_refs` write them.
fn refs_of(state: &PresenceState) -> Value {
    let refs = |metas: &[Meta]| -> Value {
        metas
            .iter()
            .map(|m| serde_json::json!([m.phx_ref, m.phx_ref_prev]))
            .collect()
    };
    state
        .iter()
        .map(|(k, e)| (k.clone(), refs(&e.metas)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn run(vector: &Value) -> Outcome {
    check!(
        vector.get("source").and_then(Value::as_str).is_some(),
        "every vector names its source"
    );
    match vector.get("phoenix").and_then(Value::as_str) {
        Some("same") => {}
        Some("ours") => check!(
            vector
                .get("reason")
                .and_then(Value::as_str)
                .is_some_and(|r| !r.is_empty()),
            "a vector marked \"ours\" gives its reason"
        ),
        other => {
            return Err(format!(
                "\"phoenix\" must be \"same\" or \"ours\", not {other:?}"
            ))
        }
    }
    let op = string(vector, "op")?;
    match op.as_str() {
        "decode_client" => {
            let ser = serializer(vector)?;
            if let Some(msg) = expect_ok(ser.decode(&input_frame(vector)?), vector)? {
                check_message(&msg, field(vector, "expect")?)?;
            }
        }
        "decode_server" => {
            let ser = serializer(vector)?;
            if let Some(received) = expect_ok(ser.decode_server(&input_frame(vector)?), vector)? {
                let expect = field(vector, "expect")?;
                match (received, string(expect, "kind")?.as_str()) {
                    (Received::Message(m), "message") => check_message(&m, expect)?,
                    (Received::Reply(r), "reply") => check_reply(&r, expect)?,
                    (other, kind) => return Err(format!("expected a {kind}, got {other:?}")),
                }
            }
        }
        "encode_message" | "encode_client" => {
            let ser = serializer(vector)?;
            let i = field(vector, "input")?;
            let msg = Message::new(
                opt_ref(i, "join_ref")?,
                opt_ref(i, "ref")?,
                string(i, "topic")?,
                string(i, "event")?,
                payload_of(i, "payload")?,
            );
            let got = if op == "encode_message" {
                ser.encode_message(&msg)
            } else {
                ser.encode_client(&msg)
            };
            if let Some(frame) = expect_ok(got, vector)? {
                check_frame(frame, vector)?;
            }
        }
        "encode_reply" => {
            let ser = serializer(vector)?;
            let i = field(vector, "input")?;
            let reply = Reply::new(
                opt_ref(i, "join_ref")?,
                opt_ref(i, "ref")?,
                string(i, "topic")?,
                string(i, "status")?,
                payload_of(i, "response")?,
            );
            if let Some(frame) = expect_ok(ser.encode_reply(&reply), vector)? {
                check_frame(frame, vector)?;
            }
        }
        "encode_broadcast" => {
            let ser = serializer(vector)?;
            let i = field(vector, "input")?;
            let b = Broadcast::new(
                string(i, "topic")?,
                string(i, "event")?,
                payload_of(i, "payload")?,
            );
            if let Some(frame) = expect_ok(ser.encode_broadcast(&b), vector)? {
                check_frame(frame, vector)?;
            }
        }
        "negotiate" => {
            let param = field(vector, "vsn_param")?.as_str();
            if let Some(ser) = expect_ok(Serializer::negotiate(param), vector)? {
                let want = string(vector, "expect_serializer")?;
                check!(ser.vsn() == want, "got {}, expected {want}", ser.vsn());
            }
        }
        "presence_state" | "presence_diff" => {
            let text = string(vector, "json")?;
            let original: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let (reencoded, refs) = if op == "presence_state" {
                let state: PresenceState =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                (serde_json::to_value(&state), refs_of(&state))
            } else {
                let diff: PresenceDiff = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let refs = serde_json::json!({
                    "joins": refs_of(&diff.joins),
                    "leaves": refs_of(&diff.leaves),
                });
                (serde_json::to_value(&diff), refs)
            };
            let reencoded = reencoded.map_err(|e| e.to_string())?;
            check!(
                reencoded == original,
                "round trip: got {reencoded}, expected {original}"
            );
            // Through text too, as a payload travels: written, then read again.
            let text = serde_json::to_string(&reencoded).map_err(|e| e.to_string())?;
            let reread: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            check!(
                reread == original,
                "text round trip: got {text}, expected {original}"
            );
            let want = field(vector, "expect_refs")?;
            check!(&refs == want, "refs: got {refs}, expected {want}");
        }
        other => return Err(format!("unknown op {other:?}")),
    }
    Ok(())
}

/// Every vector of every file must pass: a failure is never tolerated, and no
/// count is written down here, so adding a vector needs no edit of this test. A
/// file that holds no vector, or no file at all, is a failure too (a vector
/// that is silently not read cannot fail).
#[test]
fn every_vector_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no vector files in {}", dir.display());
    let (mut count, mut failures, mut names) = (0, Vec::new(), BTreeSet::new());
    for file in &files {
        let file_name = file.file_name().map(|f| f.to_string_lossy().into_owned());
        let file_name = file_name.unwrap_or_default();
        let text = std::fs::read_to_string(file).expect("readable vector file");
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        let vectors = doc["vectors"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no \"vectors\" array", file.display()));
        if vectors.is_empty() {
            failures.push(format!("{file_name}: holds no vector"));
        }
        for vector in vectors {
            count += 1;
            let name = vector["name"].as_str().unwrap_or("<unnamed>").to_owned();
            if !names.insert(name.clone()) {
                failures.push(format!("{file_name}: {name}: duplicate name"));
            }
            if let Err(why) = run(vector) {
                failures.push(format!("{file_name}: {name}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems among {count} vectors:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    println!("all {count} vectors in {} files passed", files.len());
}
