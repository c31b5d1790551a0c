//! The node-wide state every socket, channel and transport of an endpoint shares
//! ([`Shared`]: configuration, channel routes, the socket handler, PubSub,
//! presence, metrics, the drain signal), and what a socket hands a route to start
//! a channel. Low in the stack: it knows the mailbox types, PubSub and presence,
//! and nothing above them.

use std::sync::Arc;

use phx_protocol::{Payload, Ref, Serializer};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::config::Config;
use crate::handler::{Assigns, DynHandler, TransportKind};
use crate::mailbox::{Inbox, JoinOutcome, SocketHandle};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::pubsub::PubSub;

pub(crate) type Spawner = Box<dyn Fn(ChannelStart) -> Spawned + Send + Sync>;

/// A topic pattern and the channel that serves it.
pub(crate) struct Route {
    pub(crate) pattern: String,
    pub(crate) prefix: bool,
    pub(crate) spawn: Spawner,
}

impl Route {
    /// Phoenix's matching: `room:*` matches every topic starting with `room:`
    /// (the splat must be last); anything else matches exactly.
    fn matches(&self, topic: &str) -> bool {
        if self.prefix {
            topic.starts_with(&self.pattern)
        } else {
            topic == self.pattern
        }
    }
}

/// What every socket, channel and transport of an endpoint shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) routes: Vec<Route>,
    pub(crate) handler: Box<dyn DynHandler>,
    pub(crate) pubsub: PubSub,
    pub(crate) presence: Presence,
    pub(crate) metrics: Arc<Metrics>,
    /// Flips to true when the endpoint drains: every socket closes with 1012.
    pub(crate) drain: watch::Sender<bool>,
    /// Sockets that have taken their place in the drain order.
    pub(crate) drained: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// The route serving `topic`; none for an internal topic, which no client
    /// may join whatever the routes say.
    pub(crate) fn route(&self, topic: &str) -> Option<&Route> {
        if crate::pubsub::is_internal(topic) {
            return None;
        }
        self.routes.iter().find(|r| r.matches(topic))
    }

    /// A channel id: also the channel's PubSub subscription id.
    pub(crate) fn next_id(&self) -> u64 {
        self.pubsub.next_id()
    }
}

/// What a socket hands a route's spawner to start a channel.
pub(crate) struct ChannelStart {
    pub topic: String,
    pub join_ref: Option<Ref>,
    pub msg_ref: Option<Ref>,
    pub payload: Payload,
    pub chan_id: u64,
    pub socket: SocketHandle,
    pub serializer: Serializer,
    pub transport: TransportKind,
    pub assigns: Arc<Assigns>,
    pub socket_id: Option<Arc<str>>,
    pub shared: Arc<Shared>,
    /// The join_ref of a channel this join replaced: its `phx_close` follows our reply.
    pub close_old: Option<Option<Ref>>,
}

/// A started channel, as its socket holds it.
pub(crate) struct Spawned {
    pub inbox: Arc<dyn Inbox>,
    pub task: AbortHandle,
    /// Resolves once the join reply is queued; dropped unanswered if the task died.
    pub outcome: oneshot::Receiver<JoinOutcome>,
}
