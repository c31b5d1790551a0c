//! Presence for Phoenix Channels: who is on a topic, on which devices, with what
//! metadata — as pure data structures, testable without any runtime.
//!
//! - [`PresenceState`]: topic → key → metas (one per connection), with the exact
//!   `presence_diff` every operation causes, and incremental [`SessionStats`].
//! - [`RefGen`]: `phx_ref`s in Phoenix's format, unique per node and per restart.
//! - [`Mirror`] and [`ChannelPresence`]: the client-side mirror with phoenix.js's
//!   merge rules, for Rust clients and tests.
//! - [`roles`]: the collaborative-editing roles (owner and spectators by `joined_at`).
//! - [`Tracker`]: the replicated tracker that keeps presence consistent across nodes.
//!
//! ```
//! use phx_presence::{ConnId, PresenceState, RefGen};
//! use serde_json::json;
//!
//! let mut refs = RefGen::new(7);
//! let mut state = PresenceState::new();
//! let phone = state.track("room:1", "alice", ConnId(1), json!({"device": "phone"}), refs.next(1)).unwrap();
//! assert!(phone.joins.contains_key("alice"));
//! state.track("room:1", "alice", ConnId(2), json!({"device": "laptop"}), refs.next(2)).unwrap();
//! assert_eq!(state.key_count("room:1"), 1); // one user...
//! assert_eq!(state.conn_count("room:1", "alice"), 2); // ...on two devices
//! let gone = state.untrack_all(ConnId(1));
//! assert_eq!(gone[0].1.leaves["alice"].metas[0].fields["device"], json!("phone"));
//! ```

#![deny(missing_docs)]

mod mirror;
mod refs;
pub mod roles;
mod state;
mod stats;
mod tracker;

pub use mirror::{ChannelPresence, Event, Mirror};
pub use phx_protocol::presence::{Meta, PresenceDiff, PresenceEntry};
pub use refs::RefGen;
pub use state::{join_diff, leave_diff, ConnId, PresenceState};
pub use stats::SessionStats;
pub use tracker::{
    Delta, Gossip, Have, Op, Replica, ReplicaData, ReplicaStatus, Tracker, TrackerConfig, Transfer,
    MAX_CLOCK, MAX_PARTS, WIRE_VERSION,
};

/// The `presence_state` payload type (key → entry), re-exported from the protocol crate.
pub type PresenceList = phx_protocol::presence::PresenceState;

/// What can go wrong in a presence operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// The same connection already tracks this key on this topic.
    #[error("already tracked: {key:?} on {topic:?} by this connection")]
    AlreadyTracked {
        /// The topic.
        topic: String,
        /// The key.
        key: String,
    },
    /// An update of something that is not tracked (Phoenix's `{:error, :nopresence}`).
    #[error("no presence: {key:?} on {topic:?} is not tracked by this connection")]
    NoPresence {
        /// The topic.
        topic: String,
        /// The key.
        key: String,
    },
    /// A tracker configuration that Phoenix would refuse to start with.
    #[error("invalid tracker configuration: {0}")]
    InvalidConfig(&'static str),
    /// A meta that cannot be written as JSON.
    #[error("presence meta cannot be encoded: {0}")]
    Meta(String),
    /// A tracker message that cannot be decoded (malformed, or another wire version).
    #[error("bad tracker message: {0}")]
    Wire(String),
}
