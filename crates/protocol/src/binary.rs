//! V2 binary frames (WebSocket opcode 0x2).
//!
//! The first byte is the kind: 0 push, 1 reply, 2 broadcast. One-byte size fields
//! follow, then the fields themselves as UTF-8, then the payload bytes, which are
//! handed on as a slice of the frame's [`Bytes`] without copying.
//!
//! | kind | direction | sizes after the kind byte |
//! |---|---|---|
//! | 0 push | client → server | join_ref, ref, topic, event |
//! | 0 push | server → client | join_ref, topic, event (no ref) |
//! | 1 reply | server → client | join_ref, ref, topic, status |
//! | 2 broadcast | server → client | topic, event |
//!
//! A null join_ref or ref is written as the empty string (Phoenix's `to_string(nil)`),
//! and an empty field is read back as the empty string, never as null: Phoenix's V2
//! decoder and phoenix.js both keep `""`. Fields must be UTF-8 here (**our choice**:
//! Phoenix's decoder takes any bytes, phoenix.js replaces invalid sequences).
//! Facts from `phoenix/lib/phoenix/socket/serializers/v2_json_serializer.ex` and
//! `phoenix/assets/js/phoenix/serializer.js` (v1.8.12).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::message::{Message, Payload, Received, Ref, Reply};
use crate::MAX_BINARY_FIELD;

const PUSH: u8 = 0;
const REPLY: u8 = 1;
const BROADCAST: u8 = 2;

/// A checked reader over a binary frame: every access is bounds-checked against
/// what the header promised.
struct View {
    bytes: Bytes,
    pos: usize,
}

impl View {
    /// Reads the kind byte and `n` size bytes, checking that the frame holds all of them.
    fn header<const N: usize>(bytes: &Bytes) -> Result<[usize; N], ProtocolError> {
        let needed = 1 + N;
        if bytes.len() < needed {
            return Err(ProtocolError::BinaryTooShort {
                needed,
                got: bytes.len(),
            });
        }
        let mut sizes = [0usize; N];
        for (i, size) in sizes.iter_mut().enumerate() {
            *size = usize::from(bytes[1 + i]);
        }
        let needed = needed + sizes.iter().sum::<usize>();
        if bytes.len() < needed {
            return Err(ProtocolError::BinaryTooShort {
                needed,
                got: bytes.len(),
            });
        }
        Ok(sizes)
    }

    fn string(&mut self, len: usize, field: &'static str) -> Result<String, ProtocolError> {
        let raw = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::InvalidUtf8(field))
    }

    /// A join_ref or ref: always a string, the empty string included.
    fn ref_field(&mut self, len: usize, field: &'static str) -> Result<Option<Ref>, ProtocolError> {
        Ok(Some(Ref::from(self.string(len, field)?)))
    }

    fn rest(self) -> Bytes {
        self.bytes.slice(self.pos..)
    }
}

fn kind_of(bytes: &Bytes) -> Result<u8, ProtocolError> {
    bytes
        .first()
        .copied()
        .ok_or(ProtocolError::BinaryTooShort { needed: 1, got: 0 })
}

/// Decodes what a client sends: a kind-0 push with its ref.
pub(crate) fn decode_client(bytes: Bytes) -> Result<Message, ProtocolError> {
    match kind_of(&bytes)? {
        PUSH => {
            let [jr, r, t, e] = View::header::<4>(&bytes)?;
            let mut v = View { bytes, pos: 5 };
            Ok(Message {
                join_ref: v.ref_field(jr, "join_ref")?,
                msg_ref: v.ref_field(r, "ref")?,
                topic: v.string(t, "topic")?,
                event: v.string(e, "event")?,
                payload: Payload::Binary(v.rest()),
            })
        }
        REPLY | BROADCAST => Err(ProtocolError::ServerOnlyBinaryKind(bytes[0])),
        other => Err(ProtocolError::UnknownBinaryKind(other)),
    }
}

/// Decodes what a server sends: push (no ref), reply or broadcast.
pub(crate) fn decode_server(bytes: Bytes) -> Result<Received, ProtocolError> {
    match kind_of(&bytes)? {
        PUSH => {
            let [jr, t, e] = View::header::<3>(&bytes)?;
            let mut v = View { bytes, pos: 4 };
            Ok(Received::Message(Message {
                join_ref: v.ref_field(jr, "join_ref")?,
                msg_ref: None,
                topic: v.string(t, "topic")?,
                event: v.string(e, "event")?,
                payload: Payload::Binary(v.rest()),
            }))
        }
        REPLY => {
            let [jr, r, t, s] = View::header::<4>(&bytes)?;
            let mut v = View { bytes, pos: 5 };
            Ok(Received::Reply(Reply {
                join_ref: v.ref_field(jr, "join_ref")?,
                msg_ref: v.ref_field(r, "ref")?,
                topic: v.string(t, "topic")?,
                status: v.string(s, "status")?,
                response: Payload::Binary(v.rest()),
            }))
        }
        BROADCAST => {
            let [t, e] = View::header::<2>(&bytes)?;
            let mut v = View { bytes, pos: 3 };
            Ok(Received::Message(Message {
                join_ref: None,
                msg_ref: None,
                topic: v.string(t, "topic")?,
                event: v.string(e, "event")?,
                payload: Payload::Binary(v.rest()),
            }))
        }
        other => Err(ProtocolError::UnknownBinaryKind(other)),
    }
}

/// Checks that a field fits its one-byte size.
fn field<'a>(value: &'a str, name: &'static str) -> Result<&'a str, ProtocolError> {
    if value.len() > MAX_BINARY_FIELD {
        Err(ProtocolError::FieldTooLong {
            field: name,
            len: value.len(),
        })
    } else {
        Ok(value)
    }
}

/// Writes kind, the size bytes, the fields and the data.
fn write(kind: u8, fields: &[&str], data: &[u8]) -> Bytes {
    let len = 1 + fields.len() + fields.iter().map(|f| f.len()).sum::<usize>() + data.len();
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(kind);
    for f in fields {
        // `field` has checked every length against 255.
        out.put_u8(u8::try_from(f.len()).unwrap_or(u8::MAX));
    }
    for f in fields {
        out.put_slice(f.as_bytes());
    }
    out.put_slice(data);
    out.freeze()
}

/// Server push (kind 0, no ref).
pub(crate) fn encode_push(msg: &Message, data: &[u8]) -> Result<Bytes, ProtocolError> {
    let jr = field(msg.join_ref.as_deref().unwrap_or(""), "join_ref")?;
    let topic = field(&msg.topic, "topic")?;
    let event = field(&msg.event, "event")?;
    Ok(write(PUSH, &[jr, topic, event], data))
}

/// Client push (kind 0, with ref).
pub(crate) fn encode_client_push(msg: &Message, data: &[u8]) -> Result<Bytes, ProtocolError> {
    let jr = field(msg.join_ref.as_deref().unwrap_or(""), "join_ref")?;
    let r = field(msg.msg_ref.as_deref().unwrap_or(""), "ref")?;
    let topic = field(&msg.topic, "topic")?;
    let event = field(&msg.event, "event")?;
    Ok(write(PUSH, &[jr, r, topic, event], data))
}

/// Reply (kind 1).
pub(crate) fn encode_reply(reply: &Reply, data: &[u8]) -> Result<Bytes, ProtocolError> {
    let jr = field(reply.join_ref.as_deref().unwrap_or(""), "join_ref")?;
    let r = field(reply.msg_ref.as_deref().unwrap_or(""), "ref")?;
    let topic = field(&reply.topic, "topic")?;
    let status = field(&reply.status, "status")?;
    Ok(write(REPLY, &[jr, r, topic, status], data))
}

/// Broadcast (kind 2).
pub(crate) fn encode_broadcast(
    topic: &str,
    event: &str,
    data: &[u8],
) -> Result<Bytes, ProtocolError> {
    let topic = field(topic, "topic")?;
    let event = field(event, "event")?;
    Ok(write(BROADCAST, &[topic, event], data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    #[test]
    fn header_checks_report_what_was_needed() {
        assert_eq!(
            decode_client(frame(&[&[0, 1, 1]])),
            Err(ProtocolError::BinaryTooShort { needed: 5, got: 3 })
        );
        assert_eq!(
            decode_client(frame(&[&[0, 1, 1, 3, 1], b"12t"])),
            Err(ProtocolError::BinaryTooShort { needed: 11, got: 8 })
        );
        assert_eq!(
            decode_server(frame(&[&[2, 5]])),
            Err(ProtocolError::BinaryTooShort { needed: 3, got: 2 })
        );
        assert_eq!(
            decode_client(Bytes::new()),
            Err(ProtocolError::BinaryTooShort { needed: 1, got: 0 })
        );
    }

    #[test]
    fn payload_is_a_slice_of_the_frame() {
        let bytes = frame(&[&[0, 1, 1, 1, 1], b"12te", b"data"]);
        let msg = decode_client(bytes.clone()).unwrap();
        let data = msg.payload.as_binary().unwrap();
        assert_eq!(&data[..], b"data");
        // Same allocation: no copy of the payload.
        assert_eq!(data.as_ptr(), bytes[9..].as_ptr());
    }

    #[test]
    fn empty_refs_stay_empty_strings() {
        let msg = decode_client(frame(&[&[0, 0, 0, 1, 1], b"te"])).unwrap();
        assert_eq!(msg.join_ref, Some(Ref::from("")));
        assert_eq!(msg.msg_ref, Some(Ref::from("")));
        match decode_server(frame(&[&[0, 0, 1, 1], b"te"])).unwrap() {
            Received::Message(m) => assert_eq!(m.join_ref, Some(Ref::from(""))),
            other => panic!("expected a push, got {other:?}"),
        }
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let bytes = frame(&[&[1, 0, 1, 1, 2], b"1t", &[0xc3, 0x28]]);
        assert_eq!(
            decode_server(bytes),
            Err(ProtocolError::InvalidUtf8("status"))
        );
    }

    #[test]
    fn fields_of_255_bytes_fit_and_256_do_not() {
        let ok = "é".repeat(127) + "x"; // 255 bytes, 128 characters
        assert_eq!(ok.len(), 255);
        let bytes = encode_broadcast(&ok, "e", b"").unwrap();
        assert_eq!(bytes[1], 255);
        let too_long = "é".repeat(128);
        assert_eq!(
            encode_broadcast("t", &too_long, b""),
            Err(ProtocolError::FieldTooLong {
                field: "event",
                len: 256
            })
        );
    }
}
