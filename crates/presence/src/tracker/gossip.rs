//! What trackers say to each other, and its wire encoding.
//!
//! Every message is JSON: `{"v": 1, "msg": {"type": "...", ...}}`. The version
//! `v` changes whenever the meaning of a message changes; a node refuses a
//! version it does not know ([`PresenceError::Wire`]) instead of guessing.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::data::{Delta, ReplicaData};
use crate::PresenceError;

/// The wire version this build speaks.
pub const WIRE_VERSION: u32 = 1;

/// A node incarnation: its name and an incarnation number that grows with every
/// restart (the driver uses the start time in microseconds, as Phoenix does).
///
/// ```
/// use phx_presence::Replica;
/// let old = Replica::new("node-a", 1_000);
/// let restarted = Replica::new("node-a", 2_000);
/// assert!(restarted.vsn > old.vsn && restarted.name == old.name);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Replica {
    /// The node's name (stable across restarts).
    pub name: String,
    /// The incarnation: larger after every restart.
    pub vsn: u64,
}

impl Replica {
    /// A replica.
    pub fn new(name: impl Into<String>, vsn: u64) -> Replica {
        Replica {
            name: name.into(),
            vsn,
        }
    }
}

/// The answer to a [`Gossip::TransferReq`]: the missing ops when the sender
/// still has them, its whole state otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transfer {
    /// The ops after what the asker has.
    Delta {
        /// The ops.
        delta: Delta,
    },
    /// The whole state.
    Full {
        /// The state.
        data: ReplicaData,
    },
}

/// A message between trackers.
///
/// Heartbeats, hellos and goodbyes go to every node; transfer requests and
/// acknowledgements go to one node ([`Gossip::recipient`]).
///
/// ```
/// use phx_presence::{Gossip, Replica};
/// let hello = Gossip::Hello { from: Replica::new("a", 1), clock: 0 };
/// let bytes = hello.encode();
/// assert_eq!(Gossip::decode(&bytes).unwrap(), hello);
/// assert!(Gossip::decode(br#"{"v":99,"msg":{}}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Gossip {
    /// Periodic liveness, with the sender's ops since its previous heartbeat.
    Heartbeat {
        /// The sender.
        from: Replica,
        /// The sender's clock.
        clock: u64,
        /// The ops since the previous heartbeat, when there are any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<Delta>,
    },
    /// The sender just started or reconnected: everyone answers with its state.
    Hello {
        /// The sender.
        from: Replica,
        /// The sender's clock.
        clock: u64,
    },
    /// "Send me what I miss of your state: I have your ops up to `have`."
    TransferReq {
        /// The asker.
        from: Replica,
        /// The replica asked.
        to: Replica,
        /// The asker's clock of `to`'s data.
        have: u64,
    },
    /// The answer to a transfer request or a hello.
    TransferAck {
        /// The sender.
        from: Replica,
        /// The asker.
        to: Replica,
        /// The missing part of the sender's state.
        transfer: Transfer,
    },
    /// The sender shuts down for good: drop its presences now.
    Goodbye {
        /// The sender.
        from: Replica,
    },
}

#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    msg: &'a Gossip,
}

#[derive(Deserialize)]
struct In<'a> {
    v: u32,
    #[serde(borrow)]
    msg: &'a RawValue,
}

impl Gossip {
    /// The sender.
    pub fn from(&self) -> &Replica {
        match self {
            Gossip::Heartbeat { from, .. }
            | Gossip::Hello { from, .. }
            | Gossip::TransferReq { from, .. }
            | Gossip::TransferAck { from, .. }
            | Gossip::Goodbye { from } => from,
        }
    }

    /// The one node this message is for, or `None` when it is for every node.
    pub fn recipient(&self) -> Option<&Replica> {
        match self {
            Gossip::TransferReq { to, .. } | Gossip::TransferAck { to, .. } => Some(to),
            _ => None,
        }
    }

    /// The versioned JSON encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data (string keys, no floats from non-finite values
        // that JSON cannot hold) does not fail; an empty message is refused by
        // every decoder if it ever did.
        serde_json::to_vec(&Out {
            v: WIRE_VERSION,
            msg: self,
        })
        .unwrap_or_default()
    }

    /// Decodes [`Gossip::encode`]'s output; refuses other versions and malformed data.
    pub fn decode(bytes: &[u8]) -> Result<Gossip, PresenceError> {
        let env: In<'_> =
            serde_json::from_slice(bytes).map_err(|e| PresenceError::Wire(e.to_string()))?;
        if env.v != WIRE_VERSION {
            return Err(PresenceError::Wire(format!(
                "unsupported tracker wire version {} (this node speaks {WIRE_VERSION})",
                env.v
            )));
        }
        serde_json::from_str(env.msg.get()).map_err(|e| PresenceError::Wire(e.to_string()))
    }
}
