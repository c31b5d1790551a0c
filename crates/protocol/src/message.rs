//! The message model: what travels over a socket, whatever the serializer.
//!
//! Phoenix has three shapes, and so do we: a [`Message`] (what clients send, and
//! what the server pushes to one channel, `phx_close` and `phx_error` included), a
//! [`Reply`] to a client's `ref`, and a [`Broadcast`] fanned out to every subscriber
//! of a topic. The serializer decides how each looks on the wire.

use bytes::Bytes;
use serde_json::value::RawValue;

/// The topic of socket-level messages such as `heartbeat`.
pub const HEARTBEAT_TOPIC: &str = "phoenix";

/// The reserved event names.
pub mod events {
    /// A client asks to join a topic.
    pub const JOIN: &str = "phx_join";
    /// A client leaves a topic.
    pub const LEAVE: &str = "phx_leave";
    /// The server answers a client's ref.
    pub const REPLY: &str = "phx_reply";
    /// The server tells the client its channel crashed.
    pub const ERROR: &str = "phx_error";
    /// The server tells the client its channel closed normally.
    pub const CLOSE: &str = "phx_close";
    /// The client's keep-alive, on topic `phoenix`.
    pub const HEARTBEAT: &str = "heartbeat";
    /// Full presence list pushed to a joiner.
    pub const PRESENCE_STATE: &str = "presence_state";
    /// Presence joins and leaves broadcast to a topic.
    pub const PRESENCE_DIFF: &str = "presence_diff";
    /// Broadcast to a socket id: close every socket with that id.
    pub const DISCONNECT: &str = "disconnect";
}

/// A `ref` or `join_ref` as the client wrote it. Stock clients send strings; some
/// clients send JSON numbers. Phoenix's decoders do not look at the type and every
/// reply echoes the value back as it came, so a ref remembers whether it was a
/// number, and keeps the number's text exactly as the peer wrote it (`7`, `7.0`,
/// `1e3` and `100000000000000000000` come back unchanged).
///
/// ```
/// use phx_protocol::Ref;
/// let r = Ref::from("7");
/// assert_eq!(r.as_str(), "7");
/// assert!(!r.is_numeric());
/// assert!(Ref::numeric("7").is_numeric());
/// // Text that is not a JSON number cannot be a numeric ref: it stays a string.
/// assert!(!Ref::numeric("seven").is_numeric());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ref {
    text: String,
    numeric: bool,
}

impl Ref {
    /// A ref that was a JSON number; `text` is the number as written.
    ///
    /// The text is written into JSON frames as it is, so it must be a JSON number
    /// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`); any other text makes a
    /// string ref instead, which keeps every encoded frame valid JSON.
    pub fn numeric(text: impl Into<String>) -> Ref {
        let text = text.into();
        let numeric = is_json_number(&text);
        Ref { text, numeric }
    }

    /// The ref's text (a number's digits for numeric refs).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the client wrote the ref as a JSON number.
    pub fn is_numeric(&self) -> bool {
        self.numeric
    }
}

/// Whether `s` is exactly one JSON number (RFC 8259 section 6), nothing around it.
pub(crate) fn is_json_number(s: &str) -> bool {
    fn digits(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    }
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return false;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return false;
        }
        i = end;
    }
    i == b.len()
}

impl std::ops::Deref for Ref {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl From<&str> for Ref {
    fn from(s: &str) -> Ref {
        Ref {
            text: s.to_owned(),
            numeric: false,
        }
    }
}

impl From<String> for Ref {
    fn from(text: String) -> Ref {
        Ref {
            text,
            numeric: false,
        }
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<str> for Ref {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Ref {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

/// Reads a ref from any serde format: a string, or a number. Through this generic
/// path a number that fits no 64-bit integer arrives as an f64 and loses digits;
/// frames decoded by [`Serializer`](crate::Serializer) keep every number's exact text.
impl<'de> serde::Deserialize<'de> for Ref {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ref, D::Error> {
        struct RefVisitor;
        impl serde::de::Visitor<'_> for RefVisitor {
            type Value = Ref;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ref, E> {
                Ok(Ref::from(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Ref, E> {
                Ok(Ref::from(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ref, E> {
                Ok(Ref::numeric(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ref, E> {
                Ok(Ref::numeric(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ref, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| Ref::numeric(n.to_string()))
                    .ok_or_else(|| E::custom("not a finite number"))
            }
        }
        d.deserialize_any(RefVisitor)
    }
}

/// A message body: JSON kept as the peer wrote it, or raw bytes (V2 binary frames).
#[derive(Clone, Debug)]
pub enum Payload {
    /// Any JSON value, kept as text so it can be forwarded without re-parsing.
    Json(Box<RawValue>),
    /// Opaque bytes, carried by V2 binary frames.
    Binary(Bytes),
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        match (self, other) {
            (Payload::Json(a), Payload::Json(b)) => a.get() == b.get(),
            (Payload::Binary(a), Payload::Binary(b)) => a == b,
            _ => false,
        }
    }
}

impl Payload {
    /// The empty object `{}`, the payload of heartbeats, leaves and closes.
    pub fn empty_object() -> Payload {
        Payload::Json(raw("{}".to_owned()))
    }

    /// Serializes any value into a JSON payload.
    ///
    /// ```
    /// let p = phx_protocol::Payload::json(&serde_json::json!({"body": "hi"})).unwrap();
    /// assert_eq!(p.as_json(), Some(r#"{"body":"hi"}"#));
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        Ok(Payload::Json(serde_json::value::to_raw_value(value)?))
    }

    /// Wraps JSON text after checking that it is valid JSON.
    pub fn from_json_str(text: &str) -> Result<Payload, serde_json::Error> {
        Ok(Payload::Json(RawValue::from_string(text.to_owned())?))
    }

    /// The JSON text, `None` for binary payloads.
    pub fn as_json(&self) -> Option<&str> {
        match self {
            Payload::Json(raw) => Some(raw.get()),
            Payload::Binary(_) => None,
        }
    }

    /// The bytes of a binary payload.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Payload::Binary(b) => Some(b),
            Payload::Json(_) => None,
        }
    }

    /// Parses a JSON payload into a typed value (binary payloads are an error).
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        match self {
            Payload::Json(raw) => serde_json::from_str(raw.get()),
            Payload::Binary(_) => Err(serde::de::Error::custom("payload is binary, not JSON")),
        }
    }

    /// Whether the payload is a JSON object (V2 pushes and broadcasts require one, or binary).
    pub fn is_object(&self) -> bool {
        match self {
            Payload::Json(raw) => raw.get().trim_start().starts_with('{'),
            Payload::Binary(_) => false,
        }
    }
}

impl From<serde_json::Value> for Payload {
    fn from(v: serde_json::Value) -> Payload {
        // Serializing a `Value` cannot fail: its map keys are strings.
        Payload::Json(raw(v.to_string()))
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Payload {
        Payload::Binary(b)
    }
}

/// Builds a RawValue from text that is known to be valid JSON.
pub(crate) fn raw(valid_json: String) -> Box<RawValue> {
    // Only falls back if a caller in this crate broke its own invariant.
    RawValue::from_string(valid_json).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A message as clients send it, and as the server pushes it to one channel.
///
/// `join_ref` ties a message to one join of a topic (the ref of that `phx_join`);
/// `msg_ref` is the message's own `ref`, which a reply echoes. Either may be null.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The ref of the `phx_join` this message belongs to.
    pub join_ref: Option<Ref>,
    /// The message's own ref (`ref` on the wire).
    pub msg_ref: Option<Ref>,
    /// The topic, e.g. `room:lobby`.
    pub topic: String,
    /// The event, e.g. `phx_join` or `new_msg`.
    pub event: String,
    /// The body.
    pub payload: Payload,
}

impl Message {
    /// Builds a message.
    pub fn new(
        join_ref: Option<Ref>,
        msg_ref: Option<Ref>,
        topic: impl Into<String>,
        event: impl Into<String>,
        payload: Payload,
    ) -> Message {
        Message {
            join_ref,
            msg_ref,
            topic: topic.into(),
            event: event.into(),
            payload,
        }
    }

    /// Whether this is the client's keep-alive (`heartbeat` on topic `phoenix`).
    pub fn is_heartbeat(&self) -> bool {
        self.topic == HEARTBEAT_TOPIC && self.event == events::HEARTBEAT
    }

    /// The `phx_close` Phoenix sends when a channel stops normally: ref = join_ref.
    pub fn close(join_ref: Option<Ref>, topic: impl Into<String>) -> Message {
        Message::new(
            join_ref.clone(),
            join_ref,
            topic,
            events::CLOSE,
            Payload::empty_object(),
        )
    }

    /// The `phx_error` Phoenix sends when a channel crashes: ref = join_ref.
    pub fn error(join_ref: Option<Ref>, topic: impl Into<String>, payload: Payload) -> Message {
        Message::new(join_ref.clone(), join_ref, topic, events::ERROR, payload)
    }
}

/// A reply to a client message: `phx_reply` with `{"status", "response"}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The join_ref of the channel that replies (null for socket-level replies).
    pub join_ref: Option<Ref>,
    /// The ref of the message being answered.
    pub msg_ref: Option<Ref>,
    /// The topic.
    pub topic: String,
    /// `ok`, `error`, or any status a channel chooses.
    pub status: String,
    /// The response body.
    pub response: Payload,
}

impl Reply {
    /// Builds a reply with any status.
    pub fn new(
        join_ref: Option<Ref>,
        msg_ref: Option<Ref>,
        topic: impl Into<String>,
        status: impl Into<String>,
        response: Payload,
    ) -> Reply {
        Reply {
            join_ref,
            msg_ref,
            topic: topic.into(),
            status: status.into(),
            response,
        }
    }

    /// An `ok` reply.
    pub fn ok(
        join_ref: Option<Ref>,
        msg_ref: Option<Ref>,
        topic: impl Into<String>,
        response: Payload,
    ) -> Reply {
        Reply::new(join_ref, msg_ref, topic, "ok", response)
    }

    /// An `error` reply.
    pub fn error(
        join_ref: Option<Ref>,
        msg_ref: Option<Ref>,
        topic: impl Into<String>,
        response: Payload,
    ) -> Reply {
        Reply::new(join_ref, msg_ref, topic, "error", response)
    }
}

/// A message for every subscriber of a topic; on the wire both refs are null.
#[derive(Clone, Debug, PartialEq)]
pub struct Broadcast {
    /// The topic.
    pub topic: String,
    /// The event.
    pub event: String,
    /// The body.
    pub payload: Payload,
}

impl Broadcast {
    /// Builds a broadcast.
    pub fn new(topic: impl Into<String>, event: impl Into<String>, payload: Payload) -> Broadcast {
        Broadcast {
            topic: topic.into(),
            event: event.into(),
            payload,
        }
    }
}

/// What a client decodes from a server frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    /// A reply to one of the client's refs.
    Reply(Reply),
    /// A push or broadcast (a broadcast has both refs null).
    Message(Message),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_recognised_exactly() {
        for yes in [
            "0",
            "-0",
            "7",
            "-12",
            "1.5",
            "0.0",
            "1e3",
            "1E+3",
            "-2.5e-7",
            "100000000000000000000",
        ] {
            assert!(is_json_number(yes), "{yes}");
        }
        for no in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "0x10", "1 ", " 1", "NaN", "1.5.2", "--1",
        ] {
            assert!(!is_json_number(no), "{no:?}");
        }
    }

    #[test]
    fn payload_kinds() {
        assert!(Payload::empty_object().is_object());
        assert!(!Payload::from(serde_json::json!([1])).is_object());
        assert!(!Payload::Binary(Bytes::from_static(b"{")).is_object());
        assert_eq!(
            Payload::from(serde_json::json!({"a": 1}))
                .parse::<serde_json::Value>()
                .ok(),
            Some(serde_json::json!({"a": 1}))
        );
        assert!(Payload::Binary(Bytes::new())
            .parse::<serde_json::Value>()
            .is_err());
    }
}
