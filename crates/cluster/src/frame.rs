//! The bytes one node publishes to the others: a small binary header naming the
//! sender, then either a tracker message or a broadcast.
//!
//! ```text
//! u8  version (1)
//! u8  kind: 0 = tracker gossip, 1 = broadcast
//! u16 node name length, name (UTF-8), u64 incarnation   -- the sender
//! kind 0: the gossip's own versioned JSON (phx_presence::Gossip::encode)
//! kind 1: u64 sequence number, u16 topic length, topic, u16 event length,
//!         event, then the payload bytes to the end
//! ```
//!
//! Integers are big-endian. Every receiver checks every length, so a truncated
//! or foreign message is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use phx_presence::Replica;

use crate::ClusterError;

/// The frame version this build speaks.
pub const FRAME_VERSION: u8 = 1;

const KIND_GOSSIP: u8 = 0;
const KIND_BROADCAST: u8 = 1;

/// A broadcast as it travels between nodes.
///
/// ```
/// use bytes::Bytes;
/// use phx_cluster::{Frame, RemoteBroadcast};
/// use phx_presence::Replica;
///
/// let b = RemoteBroadcast {
///     from: Replica::new("a", 1),
///     seq: 7,
///     topic: "room:1".into(),
///     event: "new_msg".into(),
///     payload: Bytes::from_static(br#"{"body":"hi"}"#),
/// };
/// let bytes = Frame::Broadcast(b.clone()).encode().unwrap();
/// assert_eq!(Frame::decode(bytes).unwrap(), Frame::Broadcast(b));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBroadcast {
    /// The publishing node.
    pub from: Replica,
    /// The publisher's sequence number: consecutive from 1 per incarnation.
    pub seq: u64,
    /// The topic.
    pub topic: String,
    /// The event.
    pub event: String,
    /// The payload, as the publisher encoded it (opaque here).
    pub payload: Bytes,
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A tracker message: the sender and the gossip's encoded bytes.
    Gossip {
        /// The sender.
        from: Replica,
        /// [`phx_presence::Gossip::encode`]'s output.
        gossip: Bytes,
    },
    /// A broadcast.
    Broadcast(RemoteBroadcast),
}

fn put_str(buf: &mut BytesMut, what: &'static str, s: &str) -> Result<(), ClusterError> {
    let len = u16::try_from(s.len()).map_err(|_| ClusterError::Invalid {
        what,
        reason: format!("{} bytes, at most {} allowed", s.len(), u16::MAX),
    })?;
    buf.put_u16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn get_u8(buf: &mut Bytes) -> Result<u8, ClusterError> {
    if buf.remaining() < 1 {
        return Err(ClusterError::Frame("truncated".into()));
    }
    Ok(buf.get_u8())
}

fn get_u64(buf: &mut Bytes) -> Result<u64, ClusterError> {
    if buf.remaining() < 8 {
        return Err(ClusterError::Frame("truncated".into()));
    }
    Ok(buf.get_u64())
}

fn get_str(buf: &mut Bytes) -> Result<String, ClusterError> {
    if buf.remaining() < 2 {
        return Err(ClusterError::Frame("truncated".into()));
    }
    let len = usize::from(buf.get_u16());
    if buf.remaining() < len {
        return Err(ClusterError::Frame("truncated string".into()));
    }
    String::from_utf8(buf.split_to(len).to_vec())
        .map_err(|_| ClusterError::Frame("string is not UTF-8".into()))
}

impl Frame {
    /// The sender.
    pub fn from(&self) -> &Replica {
        match self {
            Frame::Gossip { from, .. } => from,
            Frame::Broadcast(b) => &b.from,
        }
    }

    /// The bytes to publish; refuses names, topics or events over 65 535 bytes.
    pub fn encode(&self) -> Result<Bytes, ClusterError> {
        let mut buf = BytesMut::new();
        buf.put_u8(FRAME_VERSION);
        let from = self.from();
        match self {
            Frame::Gossip { gossip, .. } => {
                buf.put_u8(KIND_GOSSIP);
                put_str(&mut buf, "node name", &from.name)?;
                buf.put_u64(from.vsn);
                buf.put_slice(gossip);
            }
            Frame::Broadcast(b) => {
                buf.reserve(32 + b.topic.len() + b.event.len() + b.payload.len());
                buf.put_u8(KIND_BROADCAST);
                put_str(&mut buf, "node name", &from.name)?;
                buf.put_u64(from.vsn);
                buf.put_u64(b.seq);
                put_str(&mut buf, "topic", &b.topic)?;
                put_str(&mut buf, "event", &b.event)?;
                buf.put_slice(&b.payload);
            }
        }
        Ok(buf.freeze())
    }

    /// Decodes [`Frame::encode`]'s output; refuses other versions and truncated data.
    pub fn decode(mut buf: Bytes) -> Result<Frame, ClusterError> {
        let version = get_u8(&mut buf)?;
        if version != FRAME_VERSION {
            return Err(ClusterError::Frame(format!(
                "unsupported frame version {version} (this node speaks {FRAME_VERSION})"
            )));
        }
        let kind = get_u8(&mut buf)?;
        let name = get_str(&mut buf)?;
        let vsn = get_u64(&mut buf)?;
        let from = Replica::new(name, vsn);
        match kind {
            KIND_GOSSIP => Ok(Frame::Gossip { from, gossip: buf }),
            KIND_BROADCAST => {
                let seq = get_u64(&mut buf)?;
                let topic = get_str(&mut buf)?;
                let event = get_str(&mut buf)?;
                Ok(Frame::Broadcast(RemoteBroadcast {
                    from,
                    seq,
                    topic,
                    event,
                    payload: buf,
                }))
            }
            other => Err(ClusterError::Frame(format!("unknown frame kind {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_frames_round_trip_and_truncation_is_an_error() {
        let f = Frame::Gossip {
            from: Replica::new("node-ä", u64::MAX),
            gossip: Bytes::from_static(b"{\"v\":1}"),
        };
        let bytes = f.encode().unwrap();
        assert_eq!(Frame::decode(bytes.clone()).unwrap(), f);
        for cut in 0..12 {
            assert!(Frame::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut other = bytes.to_vec();
        other[0] = 2;
        assert!(Frame::decode(Bytes::from(other)).is_err());
        let mut kind = bytes.to_vec();
        kind[1] = 9;
        assert!(Frame::decode(Bytes::from(kind)).is_err());
    }

    #[test]
    fn broadcast_frames_keep_binary_payloads_and_refuse_huge_topics() {
        let b = RemoteBroadcast {
            from: Replica::new("a", 3),
            seq: 42,
            topic: "room:1".into(),
            event: "ev".into(),
            payload: Bytes::from(vec![0u8, 255, 1, 2]),
        };
        let bytes = Frame::Broadcast(b.clone()).encode().unwrap();
        assert_eq!(
            Frame::decode(bytes.clone()).unwrap(),
            Frame::Broadcast(b.clone())
        );
        // Cutting into the event (the 4-byte payload and one more byte) is an error.
        assert!(Frame::decode(bytes.slice(..bytes.len() - 5)).is_err());
        let huge = RemoteBroadcast {
            topic: "x".repeat(70_000),
            ..b
        };
        assert!(matches!(
            Frame::Broadcast(huge).encode(),
            Err(ClusterError::Invalid { what: "topic", .. })
        ));
    }
}
