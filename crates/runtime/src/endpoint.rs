//! The endpoint: one socket handler, its channel routes, its PubSub, presence,
//! configuration and metrics, and the warp routes that serve its transports at
//! `<mount>/websocket` and `<mount>/longpoll`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use crate::channel::{self, Channel, ChannelEnv};
use crate::config::Config;
use crate::handler::{AcceptAll, Assigns, DynHandler, SocketHandler};
use crate::longpoll::Sessions;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::presence::{Fetch, Presence, PresenceStore};
use crate::pubsub::{Adapter, LocalPubSub, MakeAdapter, PubSub};
use crate::socket::{Route, SocketEnv};
use crate::state::EndpointState;

/// Builds an [`Endpoint`].
pub struct EndpointBuilder {
    config: Config,
    routes: Vec<Route>,
    handler: Box<dyn DynHandler>,
    adapter: Option<MakeAdapter>,
    presence_store: Option<Arc<dyn PresenceStore>>,
    presence_fetch: Option<Fetch>,
}

impl EndpointBuilder {
    /// Sets the configuration (default: [`Config::default`]): limits, timeouts,
    /// policies, the mount and the metrics path all live there.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the socket handler (default: [`AcceptAll`]).
    pub fn handler<H: SocketHandler>(mut self, handler: H) -> Self {
        self.handler = Box::new(handler);
        self
    }

    /// Routes topics matching `pattern` (`room:*` or an exact topic) to channels
    /// made by `factory`, one per join; it sees the topic being joined and the
    /// socket's assigns. The first matching route wins. A panic in the factory
    /// fails only that join (`{"reason":"join crashed"}`).
    ///
    /// ```
    /// use phx_runtime::{Assigns, Channel, ChannelContext, Endpoint, HandleIn, Payload, RuntimeError};
    ///
    /// struct Room { id: String, admin: bool }
    /// impl Channel for Room {
    ///     type Info = ();
    ///     async fn join(&mut self, _t: &str, _p: Payload, _ctx: &mut ChannelContext)
    ///         -> Result<Payload, Payload> {
    ///         Ok(serde_json::json!({"room": self.id, "admin": self.admin}).into())
    ///     }
    ///     async fn handle_in(&mut self, _e: &str, _p: Payload, _ctx: &mut ChannelContext)
    ///         -> Result<HandleIn, RuntimeError> {
    ///         Ok(HandleIn::NoReply)
    ///     }
    /// }
    ///
    /// struct Admin;
    /// let endpoint = Endpoint::builder()
    ///     .channel("room:*", |topic: &str, assigns: &Assigns| Room {
    ///         id: topic["room:".len()..].to_owned(),
    ///         admin: assigns.get::<Admin>().is_some(),
    ///     })
    ///     .build();
    /// ```
    pub fn channel<C, F>(mut self, pattern: &str, factory: F) -> Self
    where
        C: Channel,
        F: Fn(&str, &Assigns) -> C + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        let (pattern, prefix) = match pattern.strip_suffix('*') {
            Some(p) => (p.to_owned(), true),
            None => (pattern.to_owned(), false),
        };
        self.routes.push(Route {
            pattern,
            prefix,
            spawn: Box::new(move |start| {
                let factory = factory.clone();
                channel::spawn(
                    move |topic: &str, assigns: &Assigns| factory(topic, assigns),
                    start,
                )
            }),
        });
        self
    }

    /// Publishes broadcasts to other nodes through the adapter `make` builds
    /// from a handle to the endpoint's PubSub (see [`Adapter`]).
    pub fn adapter(mut self, make: impl FnOnce(LocalPubSub) -> Arc<dyn Adapter> + 'static) -> Self {
        self.adapter = Some(Box::new(make));
        self
    }

    /// Keeps presences in `store` instead of this node's memory: a cluster's
    /// replicated tracker, so that presence covers every node.
    pub fn presence_store(mut self, store: Arc<dyn PresenceStore>) -> Self {
        self.presence_store = Some(store);
        self
    }

    /// Phoenix's presence `fetch/2`: `fetch(topic, entries)` may add keys beside
    /// `metas` to every entry of a `presence_state` and of both halves of a
    /// `presence_diff` before they are sent.
    ///
    /// ```
    /// use phx_runtime::Endpoint;
    /// let endpoint = Endpoint::builder()
    ///     .presence_fetch(|_topic, entries| {
    ///         for (key, entry) in entries.iter_mut() {
    ///             entry.extra.insert("user".into(), serde_json::json!({"name": key}));
    ///         }
    ///     })
    ///     .build();
    /// # let _ = endpoint;
    /// ```
    pub fn presence_fetch(
        mut self,
        fetch: impl Fn(&str, &mut phx_presence::PresenceList) + Send + Sync + 'static,
    ) -> Self {
        self.presence_fetch = Some(Arc::new(fetch));
        self
    }

    /// Builds the endpoint.
    pub fn build(mut self) -> Endpoint {
        let mount = self.config.mount.trim_end_matches('/').len();
        self.config.mount.truncate(mount);
        let metrics = Arc::new(Metrics::default());
        let pubsub = PubSub::build(self.adapter, metrics.clone());
        Endpoint {
            sessions: Arc::new(Sessions::default()),
            state: Arc::new(EndpointState {
                sockets: Arc::new(SocketEnv {
                    routes: self.routes,
                    channels: Arc::new(ChannelEnv {
                        presence: Presence::new(
                            pubsub.clone(),
                            metrics.clone(),
                            self.presence_store,
                            self.presence_fetch,
                            self.config.max_presence_meta,
                        ),
                        pubsub: pubsub.clone(),
                        metrics: metrics.clone(),
                        mailbox: self.config.channel_mailbox,
                        max_join_payload: self.config.max_join_payload,
                    }),
                    outbound_queue: self.config.outbound_queue,
                    socket_buffer_bytes: self.config.socket_buffer_bytes,
                    channel_stall_timeout: self.config.channel_stall_timeout,
                    max_topic_length: self.config.max_topic_length,
                    max_channels: self.config.max_channels,
                }),
                config: self.config,
                handler: self.handler,
                pubsub,
                metrics,
                drain: watch::Sender::new(false),
                drained: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }
}

/// A socket endpoint: run it with [`crate::serve`], or mount
/// [`Endpoint::service`] in your own HTTP server.
///
/// ```no_run
/// use phx_runtime::{Endpoint, serve};
/// # async fn run() -> std::io::Result<()> {
/// let endpoint = Endpoint::builder().build();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
/// serve(listener, &endpoint, phx_runtime::shutdown_signal()).await?;
/// endpoint.drain().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) state: Arc<EndpointState>,
    /// Live long-poll sessions.
    sessions: Arc<Sessions>,
}

impl Endpoint {
    /// Starts building an endpoint.
    pub fn builder() -> EndpointBuilder {
        EndpointBuilder {
            config: Config::default(),
            routes: Vec::new(),
            handler: Box::new(AcceptAll),
            adapter: None,
            presence_store: None,
            presence_fetch: None,
        }
    }

    /// The endpoint's PubSub: broadcast to topics from application code.
    pub fn pubsub(&self) -> &PubSub {
        &self.state.pubsub
    }

    /// The endpoint's presence, for reading lists and statistics from outside channels.
    pub fn presence(&self) -> &Presence {
        self.state.presence()
    }

    /// The endpoint's configuration.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// A snapshot of the endpoint's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.state.metrics.snapshot()
    }

    /// The warp filter of the endpoint's routes.
    pub(crate) fn filter(&self) -> BoxedFilter<(Response,)> {
        let mount = &self.state.config.mount;
        let mut routes = crate::websocket::route(self.state.clone(), format!("{mount}/websocket"));
        if self.state.config.longpoll {
            let lp = crate::longpoll::route(
                self.state.clone(),
                self.sessions.clone(),
                format!("{mount}/longpoll"),
            );
            routes = routes.or(lp).unify().boxed();
        }
        if let Some(path) = &self.state.config.metrics_path {
            let state = self.state.clone();
            let metrics = crate::transport::exact_path(path.clone())
                .and(warp::get())
                .map(move || {
                    let mut resp = Response::new(state.metrics.snapshot().to_prometheus().into());
                    resp.headers_mut().insert(
                        "content-type",
                        warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    resp
                });
            routes = routes.or(metrics).unify().boxed();
        }
        routes
    }

    /// Closes every socket with code 1012 (Service Restart) so that clients
    /// reconnect elsewhere — in batches ([`Config::drain_batch_size`] every [`Config::drain_batch_interval`]), so they do not all
    /// reconnect at the same instant — and waits until they are gone or the drain
    /// timeout passes.
    pub async fn drain(&self) {
        self.state.drain.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.state.config.drain_timeout;
        while self.state.metrics.snapshot().sockets_open > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
