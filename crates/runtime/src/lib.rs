//! A Phoenix Channels runtime on tokio: stock phoenix.js clients connect to it
//! unchanged.
//!
//! An [`Endpoint`] holds a [`SocketHandler`] (who may connect), channel routes
//! (`room:*` → a type implementing [`Channel`]), a [`PubSub`](pubsub::PubSub), presence and
//! metrics. [`serve`] runs it on a listener (`<mount>/websocket`,
//! `<mount>/longpoll`); [`Endpoint::service`] mounts it as a `tower::Service` in
//! an application's own HTTP server.
//!
//! Each connection is one task that owns the transport; each joined channel is
//! one actor with a bounded mailbox. Broadcasts are encoded once per serializer
//! and the same bytes go to every subscriber.
//!
//! The layers, each module using only modules below it (no import cycle):
//!
//! ```text
//!  server                 serve (accept loop, connection cap, head deadline), EndpointService
//!  endpoint               Endpoint and its builder: routes, limits, drain; starts what is below
//!  body                   the HTTP body type of the public API (no server crate shows)
//!  websocket  longpoll    the two wires: read frames, write batches, close with a reason
//!                         (longpoll/: session tokens, HTTP handling, cross-node relay, session)
//!  transport              what both wires share (connect info, origin, vsn + connect,
//!                         the drain turn, the socket loop over a wire)
//!  state                  the endpoint-wide state the transports hold (config, handler,
//!                         drain signal, what sockets share)
//!  socket                 one per connection (heartbeats, synchronous joins, flow control)
//!                         and the channel routes; holds only what sockets share
//!  channel                one actor per joined topic: the Channel trait and its context;
//!                         holds only what channels share (PubSub, presence, metrics)
//!  presence   pubsub      live presence; topics, subscribers, broadcasts
//!  mailbox                socket and channel mailboxes as others see them, close reasons
//!  config handler origin metrics error    policies, the application's handler, counters
//!  auth                   token verifiers (Phoenix.Token, JWT) and TokenAuth, a handler
//!  longpoll_body          a long-poll POST body into messages (pure; public for fuzzing)
//! ```
//!
//! ```no_run
//! use phx_runtime::{Channel, ChannelContext, Endpoint, HandleIn, Payload, RuntimeError};
//!
//! struct Room;
//! impl Channel for Room {
//!     type Info = ();
//!     async fn join(&mut self, _topic: &str, _payload: Payload, _ctx: &mut ChannelContext)
//!         -> Result<Payload, Payload> {
//!         Ok(Payload::empty_object())
//!     }
//!     async fn handle_in(&mut self, event: &str, payload: Payload, ctx: &mut ChannelContext)
//!         -> Result<HandleIn, RuntimeError> {
//!         ctx.broadcast(event, payload)?;
//!         Ok(HandleIn::NoReply)
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let endpoint = Endpoint::builder().channel("room:*", |_topic, _assigns| Room).build();
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//!     phx_runtime::serve(listener, &endpoint, phx_runtime::shutdown_signal()).await?;
//!     endpoint.drain().await;
//!     Ok(())
//! }
//! ```

#![deny(missing_docs)]

pub mod auth;
pub mod body;
mod channel;
mod config;
mod endpoint;
mod error;
mod handler;
mod longpoll;
pub mod longpoll_body;
mod mailbox;
mod metrics;
mod origin;
pub mod presence;
pub mod pubsub;
mod server;
mod socket;
mod state;
mod transport;
mod websocket;

pub use channel::{
    Channel, ChannelContext, ChannelHandle, Crash, ExitReason, Flow, HandleIn, ReplyRef,
    ReplyStatus,
};
pub use config::Config;
pub use endpoint::{Endpoint, EndpointBuilder};
pub use error::RuntimeError;
pub use handler::{
    AcceptAll, Assigns, ConnectInfo, ConnectRequest, Connection, Identity, Params, Refusal,
    SocketHandler, TransportKind,
};
pub use http::StatusCode;
pub use mailbox::CloseReason;
pub use metrics::{MetricEntry, Metrics, MetricsSnapshot};
pub use origin::{CheckOrigin, Origin, OriginFn};
pub use phx_protocol::{Payload, Serializer};
pub use server::{
    bind, serve, shutdown_signal, EndpointService, HttpApp, HttpLimits, LISTEN_BACKLOG,
};
pub use transport::PeerAddr;
