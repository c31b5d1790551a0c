//! What trackers say to each other, and its wire encoding.
//!
//! Every message is JSON: `{"v": 2, "msg": {"type": "...", ...}}`. The version
//! `v` changes whenever the meaning of a message changes; a node refuses a
//! version it does not know ([`PresenceError::Wire`]) instead of guessing.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::data::{Delta, ReplicaData, MAX_CLOCK};
use crate::PresenceError;

/// The wire version this build speaks (2: hellos carry the asker's clocks,
/// transfers are numbered and go in bounded parts).
pub const WIRE_VERSION: u32 = 2;

/// The most parts one state transfer may be cut into (a bound on what a
/// receiver assembles: 65 536 parts of 60 KiB).
pub const MAX_PARTS: u32 = 1 << 16;

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

/// What a node holds of another replica's data (sent in a [`Gossip::Hello`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    /// The replica.
    pub replica: Replica,
    /// How many of its ops the sender's copy holds.
    pub clock: u64,
}

/// (Part of) the answer to a [`Gossip::TransferReq`] or a hello: the missing
/// ops when the sender still has them and they cost less than the whole
/// state, the whole state otherwise, in pieces of bounded size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transfer {
    /// Some of the ops after what the asker has (consecutive deltas follow
    /// each other in order).
    Delta {
        /// The ops.
        delta: Delta,
    },
    /// Part `part` (from 0) of `parts` of the whole state: the state's clock
    /// and some of its entries. The receiver assembles the parts.
    Part {
        /// This part's number, from 0.
        part: u32,
        /// How many parts there are.
        parts: u32,
        /// The state's clock and this part's entries.
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
/// let hello = Gossip::Hello { from: Replica::new("a", 1), clock: 0, have: vec![] };
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
    /// The sender just started or reconnected: everyone answers with what
    /// the sender misses of its state (a delta when `have` says it suffices).
    Hello {
        /// The sender.
        from: Replica,
        /// The sender's clock.
        clock: u64,
        /// What the sender holds of each replica it knows.
        #[serde(default)]
        have: Vec<Have>,
    },
    /// "Send me what I miss of your state: I have your ops up to `have`."
    TransferReq {
        /// The asker.
        from: Replica,
        /// The replica asked.
        to: Replica,
        /// The request's number (echoed in the answer; 0 is never used).
        id: u64,
        /// The asker's clock of `to`'s data.
        have: u64,
    },
    /// (Part of) the answer to a transfer request or a hello.
    TransferAck {
        /// The sender.
        from: Replica,
        /// The asker.
        to: Replica,
        /// The request answered; 0 for the answer to a hello.
        id: u64,
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

    /// Decodes [`Gossip::encode`]'s output; refuses other versions, malformed
    /// data and numbers out of range (clocks past [`MAX_CLOCK`], parts out of
    /// order or past [`MAX_PARTS`]).
    pub fn decode(bytes: &[u8]) -> Result<Gossip, PresenceError> {
        let env: In<'_> =
            serde_json::from_slice(bytes).map_err(|e| PresenceError::Wire(e.to_string()))?;
        if env.v != WIRE_VERSION {
            return Err(PresenceError::Wire(format!(
                "unsupported tracker wire version {} (this node speaks {WIRE_VERSION})",
                env.v
            )));
        }
        let msg: Gossip =
            serde_json::from_str(env.msg.get()).map_err(|e| PresenceError::Wire(e.to_string()))?;
        msg.check()?;
        Ok(msg)
    }

    fn check(&self) -> Result<(), PresenceError> {
        let clock_ok = |c: u64| {
            if c > MAX_CLOCK {
                Err(PresenceError::Wire(format!("clock {c} out of range")))
            } else {
                Ok(())
            }
        };
        match self {
            Gossip::Heartbeat { clock, delta, .. } => {
                clock_ok(*clock)?;
                if let Some(delta) = delta {
                    delta.check()?;
                }
            }
            Gossip::Hello { clock, have, .. } => {
                clock_ok(*clock)?;
                for h in have {
                    clock_ok(h.clock)?;
                }
            }
            Gossip::TransferReq { have, .. } => clock_ok(*have)?,
            Gossip::TransferAck { transfer, .. } => match transfer {
                Transfer::Delta { delta } => delta.check()?,
                Transfer::Part { part, parts, .. } => {
                    if *parts == 0 || *parts > MAX_PARTS || part >= parts {
                        return Err(PresenceError::Wire(format!(
                            "part {part} of {parts} out of range"
                        )));
                    }
                }
            },
            Gossip::Goodbye { .. } => {}
        }
        Ok(())
    }
}
