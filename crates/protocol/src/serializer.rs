//! Serializer negotiation and the encode/decode entry points.
//!
//! A connection picks its serializer once, from the `vsn` query value, exactly as
//! Phoenix does (`lib/phoenix/socket.ex` `negotiate_serializer/2`): no vsn means
//! `1.0.0`; the value must parse as an Elixir `Version` (`MAJOR.MINOR.PATCH`, no
//! leading zeros, optional `-pre` and `+build`); `~> 1.0.0` selects V1 and `~> 2.0.0`
//! selects V2; anything else (`2.1.0`, `3.0.0`, `abc`, `2.0.0-rc.1`) is refused.
//!
//! `~> X.0.0` means `>= X.0.0 and < X.1.0-0` and `Version.match?/2` allows
//! pre-releases by default (`elixir lib/elixir/lib/version.ex`), so a pre-release
//! of `X.0.0` itself is refused (it sorts below `X.0.0`) while `X.0.1-dev` is accepted.

use bytes::Bytes;

use crate::binary;
use crate::error::ProtocolError;
use crate::frame::{Frame, Text};
use crate::json;
use crate::message::{Broadcast, Message, Payload, Received, Reply};

/// The wire format of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Serializer {
    /// `vsn=1.0.0`: JSON objects (in text or binary frames alike), no binary payloads,
    /// no join_ref from the server.
    V1Json,
    /// `vsn=2.0.0`: JSON arrays and binary frames.
    V2Json,
}

/// A parsed semantic version: major, minor, patch, and whether it is a pre-release.
struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: bool,
}

/// Parses a version component: ASCII digits, no leading zero. Elixir's integers have
/// no upper bound, so a component too big for a `u64` is still valid; it saturates
/// (only "is it 0, 1 or 2" matters to negotiation).
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

fn valid_identifiers(s: &str, numeric_rule: bool) -> bool {
    s.split('.').all(|id| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !(numeric_rule
                && id.len() > 1
                && id.starts_with('0')
                && id.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Parses `MAJOR.MINOR.PATCH[-PRE][+BUILD]`, as Elixir's `Version.parse/1` accepts it.
fn parse_version(s: &str) -> Option<Version> {
    let (rest, build) = match s.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (s, None),
    };
    if let Some(build) = build {
        if !valid_identifiers(build, false) {
            return None;
        }
    }
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    if let Some(pre) = pre {
        if !valid_identifiers(pre, true) {
            return None;
        }
    }
    let mut parts = core.split('.');
    let major = parse_number(parts.next()?)?;
    let minor = parse_number(parts.next()?)?;
    let patch = parse_number(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some(Version {
        major,
        minor,
        patch,
        pre: pre.is_some(),
    })
}

impl Serializer {
    /// Picks the serializer for a connection's `vsn` query value.
    ///
    /// ```
    /// use phx_protocol::Serializer;
    /// assert_eq!(Serializer::negotiate(None).unwrap(), Serializer::V1Json);
    /// assert_eq!(Serializer::negotiate(Some("2.0.0")).unwrap(), Serializer::V2Json);
    /// assert!(Serializer::negotiate(Some("2.1.0")).is_err());
    /// ```
    pub fn negotiate(vsn: Option<&str>) -> Result<Serializer, ProtocolError> {
        let vsn = vsn.unwrap_or("1.0.0");
        let refuse = || ProtocolError::UnsupportedVsn(vsn.to_owned());
        let v = parse_version(vsn).ok_or_else(refuse)?;
        // `~> X.0.0` is `>= X.0.0 and < X.1.0`; a pre-release of X.0.0 sorts below X.0.0.
        let in_range = |major| v.major == major && v.minor == 0 && !(v.patch == 0 && v.pre);
        if in_range(1) {
            Ok(Serializer::V1Json)
        } else if in_range(2) {
            Ok(Serializer::V2Json)
        } else {
            Err(refuse())
        }
    }

    /// The `vsn` a client sends for this serializer.
    pub fn vsn(self) -> &'static str {
        match self {
            Serializer::V1Json => "1.0.0",
            Serializer::V2Json => "2.0.0",
        }
    }

    // ---- server side: decode what clients send, encode what servers send ----

    /// Decodes a text frame from a client.
    pub fn decode_text(self, text: &str) -> Result<Message, ProtocolError> {
        match self {
            Serializer::V1Json => json::decode_v1(text),
            Serializer::V2Json => json::decode_v2(text),
        }
    }

    /// Decodes a binary frame (WebSocket opcode 0x2) from a client.
    ///
    /// V2 reads a kind-0 push. V1 has no binary layout and, as Phoenix's V1
    /// serializer does (`decode!/2` ignores the opcode), reads the frame's bytes as
    /// the same JSON object a text frame holds; some clients send every message so.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use phx_protocol::Serializer;
    /// let json = r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#;
    /// let msg = Serializer::V1Json.decode_binary(Bytes::from(json)).unwrap();
    /// assert!(msg.is_heartbeat());
    /// ```
    pub fn decode_binary(self, bytes: Bytes) -> Result<Message, ProtocolError> {
        match self {
            Serializer::V1Json => json::decode_v1(utf8(&bytes)?),
            Serializer::V2Json => binary::decode_client(bytes),
        }
    }

    /// Decodes any frame from a client.
    pub fn decode(self, frame: &Frame) -> Result<Message, ProtocolError> {
        match frame {
            Frame::Text(t) => self.decode_text(t.as_str()),
            Frame::Binary(b) => self.decode_binary(b.clone()),
        }
    }

    /// Encodes a message the server sends to one channel: a push (ref null), or
    /// `phx_close` / `phx_error` (ref = join_ref). V1 never writes join_ref.
    pub fn encode_message(self, msg: &Message) -> Result<Frame, ProtocolError> {
        match (self, &msg.payload) {
            (Serializer::V1Json, Payload::Json(p)) => Ok(text(json::encode_v1(
                msg.msg_ref.as_ref(),
                &msg.topic,
                &msg.event,
                p,
            ))),
            (Serializer::V2Json, Payload::Json(p)) => {
                object_payload(&msg.payload)?;
                Ok(text(json::encode_v2(
                    msg.join_ref.as_ref(),
                    msg.msg_ref.as_ref(),
                    &msg.topic,
                    &msg.event,
                    p,
                )))
            }
            (Serializer::V2Json, Payload::Binary(data)) => {
                Ok(Frame::Binary(binary::encode_push(msg, data)?))
            }
            (Serializer::V1Json, Payload::Binary(_)) => Err(ProtocolError::BinaryNeedsV2),
        }
    }

    /// Encodes a reply (`phx_reply`).
    pub fn encode_reply(self, reply: &Reply) -> Result<Frame, ProtocolError> {
        match (self, &reply.response) {
            (Serializer::V1Json, Payload::Json(p)) => Ok(text(json::encode_v1_reply(reply, p))),
            (Serializer::V2Json, Payload::Json(p)) => Ok(text(json::encode_v2_reply(reply, p))),
            (Serializer::V2Json, Payload::Binary(data)) => {
                Ok(Frame::Binary(binary::encode_reply(reply, data)?))
            }
            (Serializer::V1Json, Payload::Binary(_)) => Err(ProtocolError::BinaryNeedsV2),
        }
    }

    /// Encodes a broadcast: both refs null. Encode it once and share the frame.
    pub fn encode_broadcast(self, b: &Broadcast) -> Result<Frame, ProtocolError> {
        match (self, &b.payload) {
            (Serializer::V1Json, Payload::Json(p)) => {
                Ok(text(json::encode_v1(None, &b.topic, &b.event, p)))
            }
            (Serializer::V2Json, Payload::Json(p)) => {
                object_payload(&b.payload)?;
                Ok(text(json::encode_v2(None, None, &b.topic, &b.event, p)))
            }
            (Serializer::V2Json, Payload::Binary(data)) => Ok(Frame::Binary(
                binary::encode_broadcast(&b.topic, &b.event, data)?,
            )),
            (Serializer::V1Json, Payload::Binary(_)) => Err(ProtocolError::BinaryNeedsV2),
        }
    }

    // ---- client side: encode what clients send, decode what servers send ----

    /// Encodes a message as a client sends it (a binary payload becomes a kind-0
    /// push that carries the ref).
    pub fn encode_client(self, msg: &Message) -> Result<Frame, ProtocolError> {
        match (self, &msg.payload) {
            (Serializer::V1Json, Payload::Json(p)) => Ok(text(json::encode_v1_client(msg, p))),
            (Serializer::V2Json, Payload::Json(p)) => Ok(text(json::encode_v2(
                msg.join_ref.as_ref(),
                msg.msg_ref.as_ref(),
                &msg.topic,
                &msg.event,
                p,
            ))),
            (Serializer::V2Json, Payload::Binary(data)) => {
                Ok(Frame::Binary(binary::encode_client_push(msg, data)?))
            }
            (Serializer::V1Json, Payload::Binary(_)) => Err(ProtocolError::BinaryNeedsV2),
        }
    }

    /// Decodes a frame from a server, recognising replies.
    pub fn decode_server(self, frame: &Frame) -> Result<Received, ProtocolError> {
        match (self, frame) {
            (_, Frame::Text(t)) => json::classify_received(self.decode_text(t.as_str())?),
            (Serializer::V2Json, Frame::Binary(b)) => binary::decode_server(b.clone()),
            (Serializer::V1Json, Frame::Binary(b)) => {
                json::classify_received(json::decode_v1(utf8(b)?)?)
            }
        }
    }
}

/// The text of a binary frame that a V1 socket reads as JSON.
fn utf8(bytes: &Bytes) -> Result<&str, ProtocolError> {
    std::str::from_utf8(bytes)
        .map_err(|e| ProtocolError::InvalidJson(format!("binary frame is not UTF-8 text: {e}")))
}

fn text(s: String) -> Frame {
    Frame::Text(Text::from(s))
}

fn object_payload(p: &Payload) -> Result<(), ProtocolError> {
    if p.is_object() {
        Ok(())
    } else {
        Err(ProtocolError::PayloadNotObject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(vsn: &str) -> Option<&'static str> {
        Serializer::negotiate(Some(vsn)).ok().map(Serializer::vsn)
    }

    #[test]
    fn versions_parse_as_elixir_parses_them() {
        for bad in [
            "",
            "2",
            "2.0",
            "2.0.0.0",
            "v2.0.0",
            " 2.0.0",
            "2.0.0 ",
            "02.0.0",
            "2.00.0",
            "2.0.00",
            "2.0.0-",
            "2.0.0-01",
            "2.0.0-a..b",
            "2.0.0-a_b",
            "2.0.0+",
            "2.0.0+a+b",
            "-2.0.0",
            "2.0.x",
            "２.0.0",
        ] {
            assert!(parse_version(bad).is_none(), "{bad:?} should not parse");
        }
        for good in [
            "0.0.0",
            "2.0.0-0",
            "2.0.0-0a",
            "2.0.0-a.1",
            "2.0.0+001",
            "2.0.0-rc-1+b-2",
        ] {
            assert!(parse_version(good).is_some(), "{good:?} should parse");
        }
    }

    #[test]
    fn requirements_match_as_elixir_matches_them() {
        assert_eq!(pick("1.0.0"), Some("1.0.0"));
        assert_eq!(pick("1.0.99999999999999999999999"), Some("1.0.0"));
        assert_eq!(pick("2.0.1-dev"), Some("2.0.0"));
        assert_eq!(pick("2.0.0+build"), Some("2.0.0"));
        assert_eq!(pick("2.0.0-rc.1"), None);
        assert_eq!(pick("1.0.0-rc.1"), None);
        assert_eq!(pick("2.1.0-0"), None);
        assert_eq!(pick("99999999999999999999999.0.0"), None);
        assert_eq!(pick("0.9.9"), None);
        assert_eq!(Serializer::negotiate(None), Ok(Serializer::V1Json));
    }
}
