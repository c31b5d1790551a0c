//! The two JSON serializers: V1 (`vsn=1.0.0`, objects) and V2 (`vsn=2.0.0`, arrays).
//!
//! Decoding walks the frame once with a serde visitor, keeps the payload as raw
//! JSON text and, when the frame is wrong, says precisely how (see
//! [`ProtocolError`]). Encoding writes the frame directly into one buffer, with
//! object keys in the order Phoenix's frames have them (`event, payload, ref, topic`
//! and `response, status`: Jason writes a map in its own order, which for these
//! small atom-keyed maps is Erlang's term order). A V1 key given twice keeps its
//! first value, as Jason's decoder does.
//!
//! Facts from `phoenix/lib/phoenix/socket/serializers/v1_json_serializer.ex`,
//! `v2_json_serializer.ex` and `lib/phoenix/socket/message.ex` (v1.7.24, v1.8.12).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ProtocolError;
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
                // The text is valid JSON of the wrong type: its first byte says which.
                let kind = match text.trim_start().as_bytes().first() {
                    Some(b'{') => "an object",
                    Some(b'[') => "an array",
                    Some(b'"') => "a string",
                    Some(b't' | b'f') => "a boolean",
                    Some(b'n') => "null",
                    _ => "a number",
                };
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

/// A `ref` or `join_ref` as it appears in a frame: a string, a number or null.
///
/// Numbers are kept as the exact text the peer wrote, so a reply echoes them
/// unchanged; any other JSON type is refused.
struct WireRef(Option<Ref>);

impl<'de> serde::Deserialize<'de> for WireRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WireRef, D::Error> {
        let raw: Option<&'de RawValue> = serde::Deserialize::deserialize(d)?;
        let Some(raw) = raw else {
            return Ok(WireRef(None));
        };
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => match text.get(1..text.len() - 1) {
                // No escapes: the string is the text between the quotes.
                Some(inner) if !inner.contains('\\') => Ok(WireRef(Some(Ref::from(inner)))),
                _ => serde_json::from_str::<String>(text)
                    .map(|s| WireRef(Some(Ref::from(s))))
                    .map_err(de::Error::custom),
            },
            Some(b'-' | b'0'..=b'9') => Ok(WireRef(Some(Ref::numeric(text)))),
            _ => Err(de::Error::custom(
                "a ref must be a string, a number or null",
            )),
        }
    }
}

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
        let WireRef(join_ref) = seq.next_element()?.ok_or_else(|| arity(0))?;
        self.stage.set(Stage::Field("ref", OPT_STRING));
        let WireRef(msg_ref) = seq.next_element()?.ok_or_else(|| arity(1))?;
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
        let (mut msg_ref, mut join_ref): (Option<Option<Ref>>, Option<Option<Ref>>) = (None, None);
        self.stage.set(Stage::Field("key", STRING));
        while let Some(key) = map.next_key::<Key>()? {
            // A key seen before keeps its first value, as Jason's `:maps.from_list` over
            // its reversed key list does; the later value only has to be valid JSON.
            let seen = match key {
                Key::Topic => topic.is_some(),
                Key::Event => event.is_some(),
                Key::Payload => payload.is_some(),
                Key::Ref => msg_ref.is_some(),
                Key::JoinRef => join_ref.is_some(),
                Key::Other => true,
            };
            if seen {
                self.stage.set(Stage::Field("value", "JSON"));
                map.next_value::<IgnoredAny>()?;
                continue;
            }
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
                    msg_ref = Some(map.next_value::<WireRef>()?.0);
                }
                Key::JoinRef => {
                    self.stage.set(Stage::Field("join_ref", OPT_STRING));
                    join_ref = Some(map.next_value::<WireRef>()?.0);
                }
                Key::Other => {}
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
            join_ref: join_ref.flatten(),
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
    let msg = result.map_err(|e| classify(e, stage.get(), text, false))?;
    surrogates_paired(text)?;
    Ok(msg)
}

/// Decodes a V1 text frame.
pub(crate) fn decode_v1(text: &str) -> Result<Message, ProtocolError> {
    let stage = Cell::new(Stage::Start);
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_map(ObjectVisitor { stage: &stage })
        .and_then(|m| de.end().map(|()| m));
    let msg = result.map_err(|e| classify(e, stage.get(), text, true))?;
    surrogates_paired(text)?;
    Ok(msg)
}

/// Refuses a `\uD800`–`\uDFFF` escape that is not half of a high+low pair.
///
/// Phoenix decodes the whole frame with Jason (1.4.5), which refuses such an escape
/// anywhere; serde_json refuses it in the strings we parse (topic, event, refs) but
/// not in the payload, which we keep as raw text. `text` is already known to be
/// valid JSON, so every backslash starts an escape inside a string.
fn surrogates_paired(text: &str) -> Result<(), ProtocolError> {
    let b = text.as_bytes();
    let hex4 = |at: usize| -> Option<u16> {
        let digits = b.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let lone = |at: usize| {
        ProtocolError::InvalidJson(format!(
            "lone surrogate escape at byte {at}: a \\u escape in D800-DFFF must be a high+low pair"
        ))
    };
    let mut i = 0;
    while let Some(off) = text.get(i..).and_then(|rest| rest.find('\\')) {
        let at = i + off;
        if b.get(at + 1) != Some(&b'u') {
            i = at + 2; // a two-byte escape such as \" or \\
            continue;
        }
        let unit = hex4(at + 2).ok_or_else(|| lone(at))?;
        i = at + 6;
        match unit {
            0xD800..=0xDBFF => {
                let low = (b.get(at + 6..at + 8) == Some(b"\\u".as_slice()))
                    .then(|| hex4(at + 8))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => i = at + 12,
                    _ => return Err(lone(at)),
                }
            }
            0xDC00..=0xDFFF => return Err(lone(at)),
            _ => {}
        }
    }
    Ok(())
}

/// Appends `s` as a JSON string, escaped exactly as Phoenix's encoder (Jason 1.4.5,
/// `escape: :json`) escapes it: `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`, every
/// other byte below 0x20 as `\u00XX` in upper-case hex, and nothing else.
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0C => b'f',
            b'\r' => b'r',
            0x00..=0x1F => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == 0 {
            let escaped = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xF)],
            ];
            out.extend_from_slice(&escaped);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(r: Result<Message, ProtocolError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.kind())
    }

    #[test]
    fn wrong_shapes_name_the_json_type() {
        assert_eq!(
            decode_v2(" {}"),
            Err(ProtocolError::NotAnArray("an object"))
        );
        assert_eq!(
            decode_v2("true"),
            Err(ProtocolError::NotAnArray("a boolean"))
        );
        assert_eq!(decode_v2("-1"), Err(ProtocolError::NotAnArray("a number")));
        assert_eq!(decode_v2("null"), Err(ProtocolError::NotAnArray("null")));
        assert_eq!(decode_v1("[]"), Err(ProtocolError::NotAnObject("an array")));
        assert_eq!(
            decode_v1("\"x\""),
            Err(ProtocolError::NotAnObject("a string"))
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            decode_v2(r#"["1","2","t",7,{}]"#),
            Err(ProtocolError::WrongFieldType {
                field: "event",
                expected: STRING
            })
        );
        assert_eq!(
            decode_v2(r#"[{},"2","t","e",{}]"#),
            Err(ProtocolError::WrongFieldType {
                field: "join_ref",
                expected: OPT_STRING
            })
        );
        assert_eq!(
            decode_v2(r#"["1","2","t"]"#),
            Err(ProtocolError::WrongArity(3))
        );
        assert_eq!(
            decode_v1(r#"{"topic":"t","event":"e","ref":null}"#),
            Err(ProtocolError::MissingKey("payload"))
        );
        assert_eq!(
            kind(decode_v1(
                r#"{"topic":"t","event":"e","ref":[],"payload":1}"#
            )),
            "wrong_field_type"
        );
    }

    #[test]
    fn numeric_refs_keep_their_text() {
        let m = decode_v2(r#"[1e3,100000000000000000000,"t","e",{}]"#).unwrap();
        assert_eq!(m.join_ref, Some(Ref::numeric("1e3")));
        assert_eq!(m.msg_ref, Some(Ref::numeric("100000000000000000000")));
        let out = encode_v2(
            m.join_ref.as_ref(),
            m.msg_ref.as_ref(),
            "t",
            "e",
            RawValue::NULL,
        );
        assert_eq!(out, r#"[1e3,100000000000000000000,"t","e",null]"#);
    }

    #[test]
    fn escaped_string_refs_are_unescaped_and_reescaped() {
        let m = decode_v2(r#"["a\"b","\u0031","t","e",{}]"#).unwrap();
        assert_eq!(m.join_ref, Some(Ref::from("a\"b")));
        assert_eq!(m.msg_ref, Some(Ref::from("1")));
        let out = encode_v2(
            m.join_ref.as_ref(),
            m.msg_ref.as_ref(),
            "t",
            "e",
            RawValue::NULL,
        );
        assert_eq!(out, r#"["a\"b","1","t","e",null]"#);
    }

    #[test]
    fn v1_duplicate_keys_first_one_wins() {
        // Jason (Phoenix's JSON decoder) keeps the first of duplicate keys, and so do we;
        // a later duplicate may be of any type.
        let m = decode_v1(
            r#"{"topic":"a","topic":7,"event":"e","payload":1,"ref":"1","ref":null,"join_ref":null,"join_ref":"2"}"#,
        )
        .unwrap();
        assert_eq!(m.topic, "a");
        assert_eq!(m.msg_ref, Some(Ref::from("1")));
        assert_eq!(m.join_ref, None);
    }

    #[test]
    fn deep_nesting_neither_crashes_nor_is_refused() {
        // The payload is skipped over, not parsed, so its depth is not limited (Phoenix's
        // decoder has no limit either) and a deep payload cannot overflow the stack.
        let depth = 100_000;
        let text = format!(
            r#"[null,null,"t","e",{}{}]"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(kind(decode_v2(&text)), "ok");
        assert_eq!(kind(decode_v2(&text[..text.len() - 2])), "invalid_json");
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(kind(decode_v1(&text)), "not_an_object");
    }

    #[test]
    fn lone_surrogate_escapes_are_refused_anywhere() {
        for bad in [
            r#"[null,null,"t","e",{"a":"\ud800"}]"#,
            r#"[null,null,"t","e",{"a":"\udc00x"}]"#,
            r#"[null,null,"t","e",{"a":"\ud800\u0041"}]"#,
            r#"[null,null,"t","e",{"\ud83d":1}]"#,
            r#"[null,null,"t","e",{},"\udfff"]"#,
        ] {
            assert_eq!(kind(decode_v2(bad)), "invalid_json", "{bad}");
        }
        for good in [
            r#"[null,null,"t","e",{"a":"\ud83d\ude00"}]"#,
            r#"[null,null,"t","e",{"a":"\\ud800"}]"#,
            r#"[null,null,"t","e",{"a":"\u0000\u001f\"\\"}]"#,
        ] {
            assert_eq!(kind(decode_v2(good)), "ok", "{good}");
        }
        let v1 = r#"{"topic":"t","event":"e","payload":"\udbff","ref":null}"#;
        assert_eq!(kind(decode_v1(v1)), "invalid_json");
    }

    #[test]
    fn strings_are_escaped_as_jason_escapes_them() {
        let mut out = Vec::new();
        push_str(&mut out, "a\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}\"\\/é");
        // DEL (0x7f) and "/" are written as they are.
        let want = concat!(r#""a\u0000\b\t\n\u000B\f\r\u001F"#, "\u{7f}", r#"\"\\/é""#);
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn payload_text_is_kept_byte_for_byte() {
        let m = decode_v2("[null,null,\"t\",\"e\", {\"b\" : [1, 2.50, \"\\u00e9\"] } ]").unwrap();
        assert_eq!(
            m.payload.as_json(),
            Some("{\"b\" : [1, 2.50, \"\\u00e9\"] }")
        );
    }
}
