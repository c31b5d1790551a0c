//! The Phoenix Channels wire protocol, as Phoenix 1.7 and 1.8 speak it.
//!
//! This crate is pure: it turns frames into [`Message`]s and back, with no sockets,
//! no tasks and no clocks. It knows the two JSON serializers (`vsn=1.0.0`, objects;
//! `vsn=2.0.0`, arrays), the V2 binary frames, the reserved events, the reply shape,
//! and the `presence_state` / `presence_diff` payloads. Everything a peer sends is
//! checked and answered with a [`ProtocolError`]; nothing here panics on input.
//!
//! Payloads stay opaque: a JSON payload is kept as the raw text the peer sent
//! ([`Payload::Json`]), so a message forwarded to many sockets is never re-parsed,
//! and an encoded [`Frame`] is backed by [`bytes::Bytes`] so that one broadcast
//! can be encoded once and shared by every subscriber.
//!
//! ```
//! use phx_protocol::{Frame, Payload, Reply, Serializer};
//!
//! let ser = Serializer::negotiate(Some("2.0.0")).unwrap();
//! let msg = ser.decode_text(r#"[null,"3","phoenix","heartbeat",{}]"#).unwrap();
//! assert!(msg.is_heartbeat());
//!
//! let reply = Reply::ok(None, msg.msg_ref.clone(), "phoenix", Payload::empty_object());
//! let frame = ser.encode_reply(&reply).unwrap();
//! assert_eq!(
//!     frame.as_text(),
//!     Some(r#"[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]"#)
//! );
//! # let _ = Frame::text("x");
//! ```

#![deny(missing_docs)]

mod binary;
mod error;
mod frame;
mod json;
mod message;
pub mod presence;
mod serializer;

pub use error::ProtocolError;
pub use frame::{Frame, Text};
pub use message::{events, Broadcast, Message, Payload, Received, Ref, Reply, HEARTBEAT_TOPIC};
pub use serializer::Serializer;

/// The longest join_ref, ref, topic, event or status a V2 binary frame can carry:
/// every size field in its header is one byte.
pub const MAX_BINARY_FIELD: usize = 255;
