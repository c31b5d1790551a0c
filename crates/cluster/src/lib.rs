//! Clustering for Phoenix Channels servers over Redis pub/sub, as Phoenix's own
//! `phoenix_pubsub_redis` does: broadcasts from any node reach every node, and
//! presence is replicated by `phx-presence`'s [`Tracker`](phx_presence::Tracker).
//!
//! - [`Transport`]: the Redis link (publish bytes, receive a stream, reconnect
//!   with backoff, resubscribe, notice a stalled link, TLS and AUTH, counters).
//! - [`seal`]: the envelope every message between nodes travels in, keyed from
//!   the cluster secret ([`ClusterKey`]): encrypted, authenticated (HMAC-SHA256),
//!   numbered so that a replay is refused.
//! - [`Frame`]: what nodes publish: the sender's identity, then a tracker
//!   message or a broadcast.
//! - [`Node`]: the driver the runtime embeds: presence of its local connections,
//!   `presence_state` across the cluster, remote presence diffs and broadcasts as
//!   [`Event`]s, graceful leave.
//! - [`Cluster`]: a node plugged into a phx-runtime endpoint (its presence
//!   store, its PubSub adapter, and the pump of other nodes' events).
//!
//! Guarantees: broadcasts at most once and in order per publisher (as Phoenix);
//! presence exact on every node once messages flow, a crashed node's presences
//! gone within `down_period` plus a fraction of the heartbeat period, a leaving
//! node's at once, a restarted node's old ones as soon as the new one is heard.
//! Not guaranteed: broadcasts published while Redis is away are lost (counted).
//!
//! ```no_run
//! use phx_cluster::{ClusterKey, Event, Node, NodeConfig};
//!
//! # async fn demo(secret_key_base: &[u8]) -> Result<(), phx_cluster::ClusterError> {
//! let mut config = NodeConfig::new("rediss://phx:password@10.0.0.5:6380/", "web-1");
//! // Every message on Redis sealed with keys derived from the shared secret.
//! config.link.key = Some(ClusterKey::derive(secret_key_base)?);
//! let (node, mut events) = Node::start(config)?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Presence { topic, diff } => { /* presence_diff to topic's local subscribers */ }
//!         Event::Broadcast(b) => { /* b.event with b.payload to b.topic's local subscribers */ }
//!     }
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod error;
mod frame;
mod node;
mod runtime;
pub mod seal;
mod transport;

pub use error::ClusterError;
pub use frame::{Frame, RemoteBroadcast, FRAME_VERSION};
pub use node::{Event, Node, NodeConfig, NodeStats};
pub use runtime::Cluster;
pub use seal::{ClusterKey, Opened, Opener, Rejection, Sealer};
pub use transport::{
    LinkOptions, LinkState, LinkStats, Transport, TransportConfig, TransportEvent,
};
