//! The endpoint-wide state ([`EndpointState`]): what the transports need to let
//! a connection in and run its socket — the configuration, the socket handler,
//! the drain signal — and the [`SocketEnv`] every socket of the endpoint shares.
//! Only the modules that admit and serve connections (the endpoint that builds
//! it, the HTTP server, the transports) hold it; a socket holds its
//! [`SocketEnv`], a channel its [`crate::channel::ChannelEnv`].

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::handler::DynHandler;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::pubsub::PubSub;
use crate::socket::SocketEnv;

/// What every transport and route of an endpoint shares.
pub(crate) struct EndpointState {
    pub(crate) config: Config,
    pub(crate) handler: Box<dyn DynHandler>,
    /// What every socket shares: routes, limits, and what channels share.
    pub(crate) sockets: Arc<SocketEnv>,
    /// The endpoint's PubSub (the same one the sockets and channels use).
    pub(crate) pubsub: PubSub,
    pub(crate) metrics: Arc<Metrics>,
    /// Flips to true when the endpoint drains: every socket closes with 1012.
    pub(crate) drain: watch::Sender<bool>,
    /// Sockets that have taken their place in the drain order.
    pub(crate) drained: AtomicUsize,
}

impl EndpointState {
    /// The endpoint's presence (owned by what channels share).
    pub(crate) fn presence(&self) -> &Presence {
        &self.sockets.channels.presence
    }
}
