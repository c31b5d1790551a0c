//! The two JSON serializers: V1 (`vsn=1.0.0`, objects) and V2 (`vsn=2.0.0`, arrays).
//!
//! Decoding walks the frame once with a serde visitor, keeps the payload as raw
//! JSON text and, when the frame is wrong, says precisely how (see
//! [`ProtocolError`]). Encoding writes the frame directly into one buffer; object
//! keys come out sorted, as Phoenix's JSON encoder writes them
//! (`event, payload, ref, topic` and `response, status`).
//!
//! Facts from `phoenix/lib/phoenix/socket/serializers/v1_json_serializer.ex`,
//! `v2_json_serializer.ex` and `lib/phoenix/socket/message.ex` (v1.7.24, v1.8.12).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{json_type_name, ProtocolError};
use crate::message::{events, Message, Payload, Received, Ref, Reply};

/// Where decoding stood when serde reported a data error.
#[derive(Clone, Copy)]
enum Stage {
    Start,
    Field(&'static str, &'static str),
    Arity(usize),
    Missing(&'static str),
}

/// Turns a serde_json error into a [`ProtocolError`], using the stage the visitor
/// reached to tell a wrong shape from a wrong field type.
fn classify(err: serde_json::Error, stage: Stage, text: &str, v1: bool) -> ProtocolError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ProtocolError::InvalidJson(err.to_string())
        }
        Category::Data => match stage {
            Stage::Field(field, expected) => ProtocolError::WrongFieldType { field, expected },
            Stage::Arity(n) => ProtocolError::WrongArity(n),
            Stage::Missing(key) => ProtocolError::MissingKey(key),
            Stage::Start => {
                let kind = serde_json::from_str::<serde_json::Value>(text)
                    .map(|v| json_type_name(&v))
                    .unwrap_or("something else");
                if v1 {
                    ProtocolError::NotAnObject(kind)
                } else {
                    ProtocolError::NotAnArray(kind)
                }
            }
        },
    }
}

const OPT_STRING: &str = "a string, a number or null";
const STRING: &str = "a string";

/// Reads `[join_ref, ref, topic, event, payload | ignored...]`.
struct ArrayVisitor<'s> {
    stage: &'s Cell<Stage>,
}

impl<'de> Visitor<'de> for ArrayVisitor<'_> {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a [join_ref, ref, topic, event, payload] array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Message, A::Error> {
        let arity = |n: usize| {
            self.stage.set(Stage::Arity(n));
            de::Error::custom("too few elements")
        };
        self.stage.set(Stage::Field("join_ref", OPT_STRING));
        let join_ref: Option<Ref> = seq.next_element()?.ok_or_else(|| arity(0))?;
        self.stage.set(Stage::Field("ref", OPT_STRING));
        let msg_ref: Option<Ref> = seq.next_element()?.ok_or_else(|| arity(1))?;
        self.stage.set(Stage::Field("topic", STRING));
        let topic: String = seq.next_element()?.ok_or_else(|| arity(2))?;
        self.stage.set(Stage::Field("event", STRING));
        let event: String = seq.next_element()?.ok_or_else(|| arity(3))?;
        self.stage.set(Stage::Field("payload", "JSON"));
        let payload: Box<RawValue> = seq.next_element()?.ok_or_else(|| arity(4))?;
        // Phoenix matches `[join_ref, ref, topic, event, payload | _]`: extra elements are ignored.
        self.stage.set(Stage::Field("trailing element", "JSON"));
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Message {
            join_ref,
            msg_ref,
            topic,
            event,
            payload: Payload::Json(payload),
        })
    }
}

/// The keys a V1 object may carry; anything else is ignored.
enum Key {
    Topic,
    Event,
    Payload,
    Ref,
    JoinRef,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "topic" => Key::Topic,
                    "event" => Key::Event,
                    "payload" => Key::Payload,
                    "ref" => Key::Ref,
                    "join_ref" => Key::JoinRef,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// Reads `{"topic", "event", "payload", "ref"[, "join_ref"]}`.
struct ObjectVisitor<'s> {
    stage: &'s Cell<Stage>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a {topic, event, payload, ref} object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let (mut topic, mut event, mut payload) = (None, None, None);
        let (mut msg_ref, mut join_ref): (Option<Option<Ref>>, Option<Ref>) = (None, None);
        self.stage.set(Stage::Field("key", STRING));
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Topic => {
                    self.stage.set(Stage::Field("topic", STRING));
                    topic = Some(map.next_value::<String>()?);
                }
                Key::Event => {
                    self.stage.set(Stage::Field("event", STRING));
                    event = Some(map.next_value::<String>()?);
                }
                Key::Payload => {
                    self.stage.set(Stage::Field("payload", "JSON"));
                    payload = Some(map.next_value::<Box<RawValue>>()?);
                }
                Key::Ref => {
                    self.stage.set(Stage::Field("ref", OPT_STRING));
                    msg_ref = Some(map.next_value::<Option<Ref>>()?);
                }
                Key::JoinRef => {
                    self.stage.set(Stage::Field("join_ref", OPT_STRING));
                    join_ref = map.next_value::<Option<Ref>>()?;
                }
                Key::Other => {
                    self.stage.set(Stage::Field("value", "JSON"));
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = |key: &'static str| {
            self.stage.set(Stage::Missing(key));
            de::Error::custom("missing key")
        };
        let topic = topic.ok_or_else(|| missing("topic"))?;
        let event = event.ok_or_else(|| missing("event"))?;
        let payload = payload.ok_or_else(|| missing("payload"))?;
        let msg_ref = msg_ref.ok_or_else(|| missing("ref"))?;
        Ok(Message {
            join_ref,
            msg_ref,
            topic,
            event,
            payload: Payload::Json(payload),
        })
    }
}

/// Decodes a V2 text frame.
pub(crate) fn decode_v2(text: &str) -> Result<Message, ProtocolError> {
    let stage = Cell::new(Stage::Start);
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_seq(ArrayVisitor { stage: &stage })
        .and_then(|m| de.end().map(|()| m));
    result.map_err(|e| classify(e, stage.get(), text, false))
}

/// Decodes a V1 text frame.
pub(crate) fn decode_v1(text: &str) -> Result<Message, ProtocolError> {
    let stage = Cell::new(Stage::Start);
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_map(ObjectVisitor { stage: &stage })
        .and_then(|m| de.end().map(|()| m));
    result.map_err(|e| classify(e, stage.get(), text, true))
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends a ref as the client wrote it: a JSON string, a number, or null.
fn push_opt_ref(out: &mut Vec<u8>, r: Option<&Ref>) {
    match r {
        Some(r) if r.is_numeric() => out.extend_from_slice(r.as_str().as_bytes()),
        Some(r) => push_str(out, r),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends the reply body `{"response":…,"status":…}`.
fn push_reply_body(out: &mut Vec<u8>, status: &str, response: &RawValue) {
    out.extend_from_slice(br#"{"response":"#);
    out.extend_from_slice(response.get().as_bytes());
    out.extend_from_slice(br#","status":"#);
    push_str(out, status);
    out.push(b'}');
}

fn capacity(parts: &[&str], payload: &RawValue) -> usize {
    parts.iter().map(|p| p.len() + 4).sum::<usize>() + payload.get().len() + 48
}

/// Encodes `[join_ref, ref, topic, event, payload]`.
pub(crate) fn encode_v2(
    join_ref: Option<&Ref>,
    msg_ref: Option<&Ref>,
    topic: &str,
    event: &str,
    payload: &RawValue,
) -> String {
    let mut out = Vec::with_capacity(capacity(&[topic, event], payload));
    out.push(b'[');
    push_opt_ref(&mut out, join_ref);
    out.push(b',');
    push_opt_ref(&mut out, msg_ref);
    out.push(b',');
    push_str(&mut out, topic);
    out.push(b',');
    push_str(&mut out, event);
    out.push(b',');
    out.extend_from_slice(payload.get().as_bytes());
    out.push(b']');
    into_string(out)
}

/// Encodes a V2 reply.
pub(crate) fn encode_v2_reply(reply: &Reply, response: &RawValue) -> String {
    let mut out = Vec::with_capacity(capacity(&[&reply.topic, &reply.status], response));
    out.push(b'[');
    push_opt_ref(&mut out, reply.join_ref.as_ref());
    out.push(b',');
    push_opt_ref(&mut out, reply.msg_ref.as_ref());
    out.push(b',');
    push_str(&mut out, &reply.topic);
    out.push(b',');
    push_str(&mut out, events::REPLY);
    out.push(b',');
    push_reply_body(&mut out, &reply.status, response);
    out.push(b']');
    into_string(out)
}

/// Encodes a V1 object `{"event","payload","ref","topic"}` (the server never writes join_ref).
pub(crate) fn encode_v1(
    msg_ref: Option<&Ref>,
    topic: &str,
    event: &str,
    payload: &RawValue,
) -> String {
    let mut out = Vec::with_capacity(capacity(&[topic, event], payload));
    out.extend_from_slice(br#"{"event":"#);
    push_str(&mut out, event);
    out.extend_from_slice(br#","payload":"#);
    out.extend_from_slice(payload.get().as_bytes());
    out.extend_from_slice(br#","ref":"#);
    push_opt_ref(&mut out, msg_ref);
    out.extend_from_slice(br#","topic":"#);
    push_str(&mut out, topic);
    out.push(b'}');
    into_string(out)
}

/// Encodes a V1 reply.
pub(crate) fn encode_v1_reply(reply: &Reply, response: &RawValue) -> String {
    let mut out = Vec::with_capacity(capacity(&[&reply.topic, &reply.status], response));
    out.extend_from_slice(br#"{"event":"phx_reply","payload":"#);
    push_reply_body(&mut out, &reply.status, response);
    out.extend_from_slice(br#","ref":"#);
    push_opt_ref(&mut out, reply.msg_ref.as_ref());
    out.extend_from_slice(br#","topic":"#);
    push_str(&mut out, &reply.topic);
    out.push(b'}');
    into_string(out)
}

/// Encodes a client's V1 object, join_ref included (`{"event","join_ref","payload","ref","topic"}`).
pub(crate) fn encode_v1_client(msg: &Message, payload: &RawValue) -> String {
    let mut out = Vec::with_capacity(capacity(&[&msg.topic, &msg.event], payload));
    out.extend_from_slice(br#"{"event":"#);
    push_str(&mut out, &msg.event);
    out.extend_from_slice(br#","join_ref":"#);
    push_opt_ref(&mut out, msg.join_ref.as_ref());
    out.extend_from_slice(br#","payload":"#);
    out.extend_from_slice(payload.get().as_bytes());
    out.extend_from_slice(br#","ref":"#);
    push_opt_ref(&mut out, msg.msg_ref.as_ref());
    out.extend_from_slice(br#","topic":"#);
    push_str(&mut out, &msg.topic);
    out.push(b'}');
    into_string(out)
}

fn into_string(bytes: Vec<u8>) -> String {
    // Every piece written above is UTF-8 (JSON strings and raw JSON text).
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The body of a `phx_reply`, read by clients.
#[derive(serde::Deserialize)]
struct ReplyBody {
    status: String,
    response: Box<RawValue>,
}

/// Client side: turns a decoded server message into a [`Received`], recognising replies.
pub(crate) fn classify_received(msg: Message) -> Result<Received, ProtocolError> {
    if msg.event != events::REPLY {
        return Ok(Received::Message(msg));
    }
    let body: ReplyBody = msg
        .payload
        .parse()
        .map_err(|_| ProtocolError::WrongFieldType {
            field: "payload",
            expected: "a {\"status\", \"response\"} object",
        })?;
    Ok(Received::Reply(Reply {
        join_ref: msg.join_ref,
        msg_ref: msg.msg_ref,
        topic: msg.topic,
        status: body.status,
        response: Payload::Json(body.response),
    }))
}
