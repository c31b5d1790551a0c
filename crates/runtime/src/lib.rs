//! A Phoenix Channels runtime on tokio: stock phoenix.js clients connect to it
//! unchanged.
//!
//! An [`Endpoint`] holds a [`SocketHandler`] (who may connect), channel routes
//! (`room:*` → a type implementing [`Channel`]), a [`PubSub`], presence and
//! metrics. [`serve`] runs it on a listener (`<mount>/websocket`,
//! `<mount>/longpoll`); [`Endpoint::service`] mounts it as a `tower::Service` in
//! an application's own HTTP server.
//!
//! Each connection is one task that owns the transport; each joined channel is
//! one actor with a bounded mailbox. Broadcasts are encoded once per serializer
//! and the same bytes go to every subscriber.
//!
//! The layers, from the network down:
//!
//! ```text
//!  server       serve (accept loop, connection cap, head deadline), EndpointService
//!    │
//!  websocket    longpoll          the two wires: read frames, write batches, close
//!    │             │
//!  transport                      shared by both: connect info, origin, vsn + connect, drain turn
//!    │
//!  socket                         one per connection: heartbeats, joins (synchronous), flow control
//!    │
//!  channel                        one actor per joined topic: the Channel trait and its context
//!    │
//!  presence     pubsub            topics, subscribers, broadcasts; live presence
//!    │
//!  endpoint::Shared, config, handler, origin, metrics, error   node-wide state and policies
//! ```
//!
//! The transports, `transport` and `server` use only what is below them, and
//! `longpoll` no longer borrows from `websocket`. Not yet one-way: `socket` and
//! `channel` know each other's message types, and `endpoint::Shared` (the node's
//! state) names the channel spawner, so the middle layers still import each other
//! through it; moving the socket handle and mailbox types into their own module at
//! the bottom is the next step.
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

mod channel;
mod config;
mod endpoint;
mod error;
mod handler;
mod longpoll;
mod metrics;
mod origin;
pub mod presence;
pub mod pubsub;
mod server;
mod socket;
mod transport;
mod websocket;

pub use channel::{Channel, ChannelContext, ChannelHandle, ExitReason, Flow, HandleIn, ReplyRef};
pub use config::Config;
pub use endpoint::{Endpoint, EndpointBuilder};
pub use error::RuntimeError;
pub use handler::{
    AcceptAll, Assigns, ConnectInfo, ConnectRequest, Connection, Params, Refusal, SocketHandler,
    TransportKind,
};
pub use metrics::{Metrics, MetricsSnapshot};
pub use origin::{CheckOrigin, Origin, OriginFn};
pub use phx_protocol::{Payload, Serializer};
pub use pubsub::{PubSub, Subscription};
pub use server::{serve, shutdown_signal, BoxError, EndpointService, ResponseBody};
pub use socket::CloseReason;
pub use transport::PeerAddr;
