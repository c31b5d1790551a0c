//! Where the endpoint meets HTTP: [`EndpointService`], the endpoint as a
//! `tower::Service` (mount it in axum, hyper or anything tower-based), and
//! [`serve`], the one accept loop that runs it, or any other service as an
//! [`HttpApp`], on a listener by itself.
//!
//! The accept loop takes TCP connections while fewer than
//! `Config::max_connections` are open (the rest wait in the kernel's backlog),
//! serves HTTP/1.1 on each with hyper (upgrades allowed, so WebSocket handshakes
//! can be taken over) under a deadline for each request head, and stops
//! accepting when the shutdown future resolves; open sockets are then closed by
//! [`crate::Endpoint::drain`]. warp routes requests inside; no warp type shows.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::body::{Body, BoxError};
use crate::metrics::Metrics;
use crate::state::EndpointState;
use crate::transport::{ConnSlot, PeerAddr};
use crate::Endpoint;

impl Endpoint {
    /// The endpoint as a `tower::Service`, to mount in an application's own HTTP
    /// server (see `examples/axum.rs`); [`serve`] runs it by itself.
    pub fn service(&self) -> EndpointService {
        EndpointService::new(self.filter(), self.state.clone())
    }
}

/// An endpoint as a `tower::Service`: answers `<mount>/websocket`,
/// `<mount>/longpoll` (unless turned off) and the metrics path (if set), and 404
/// for anything else. Made by [`Endpoint::service`].
///
/// WebSocket upgrades need the server to allow them (hyper's `with_upgrades`,
/// as axum's `serve` does).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use hyper_util::rt::TokioIo;
/// use tower_service::Service;
///
/// let endpoint = phx_runtime::Endpoint::builder().build();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
/// let (stream, _) = listener.accept().await?;
/// let service = endpoint.service();
/// let svc = hyper::service::service_fn(move |req| service.clone().call(req));
/// hyper::server::conn::http1::Builder::new()
///     .serve_connection(TokioIo::new(stream), svc)
///     .with_upgrades()
///     .await
///     .ok();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EndpointService {
    filter: BoxedFilter<(Response,)>,
    shared: Arc<EndpointState>,
    /// The prefix of the endpoint's transport paths (`<mount>/`).
    prefix: String,
    fallback: Option<Arc<dyn App>>,
}

/// A tower service as the endpoint and the accept loop call it: bodies boxed
/// both ways, so that one loop serves every kind of service.
trait App: Send + Sync {
    fn call(&self, req: http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>;
}

struct AppService<S>(S);

impl<S, B> App for AppService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn call(&self, req: http::Request<Body>) -> BoxFuture<'static, http::Response<Body>> {
        // A combinator, not an async block: rustc cannot prove an async block
        // holding `S::Future` Send for every lifetime (rust-lang/rust#64552).
        Box::pin(self.0.clone().call(req).map(|result| match result {
            Ok(resp) => resp.map(Body::new),
            Err(never) => match never {},
        }))
    }
}

impl EndpointService {
    pub(crate) fn new(
        filter: BoxedFilter<(Response,)>,
        shared: Arc<EndpointState>,
    ) -> EndpointService {
        EndpointService {
            filter,
            prefix: format!("{}/", shared.config.mount),
            shared,
            fallback: None,
        }
    }

    /// Hands every request outside the endpoint's paths (its mount and metrics
    /// path) to `app` instead of answering 404: an application's pages and API
    /// served on the same port as the sockets, under the same connection limits.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use std::task::{Context, Poll};
    ///
    /// use phx_runtime::body::Body;
    /// use phx_runtime::Endpoint;
    ///
    /// /// The application's own pages.
    /// #[derive(Clone)]
    /// struct Pages;
    ///
    /// impl tower_service::Service<http::Request<Body>> for Pages {
    ///     type Response = http::Response<Body>;
    ///     type Error = Infallible;
    ///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    ///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
    ///         Poll::Ready(Ok(()))
    ///     }
    ///     fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
    ///         std::future::ready(Ok(http::Response::new(Body::from("hello"))))
    ///     }
    /// }
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let endpoint = Endpoint::builder().build();
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    /// phx_runtime::serve(listener, endpoint.service().fallback(Pages), phx_runtime::shutdown_signal())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn fallback<S, B>(mut self, app: S) -> EndpointService
    where
        S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.fallback = Some(Arc::new(AppService(app)));
        self
    }

    /// Whether `path` belongs to the endpoint rather than to the fallback app.
    fn owns(&self, path: &str) -> bool {
        path.starts_with(&self.prefix) || self.shared.config.metrics_path.as_deref() == Some(path)
    }
}

impl From<&Endpoint> for EndpointService {
    fn from(endpoint: &Endpoint) -> EndpointService {
        endpoint.service()
    }
}

impl<B> Service<http::Request<B>> for EndpointService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let req = req.map(Body::new);
        if let Some(app) = &self.fallback {
            if !self.owns(req.uri().path()) {
                let call = app.call(req);
                return Box::pin(async move { Ok(call.await) });
            }
        }
        let mut inner = warp::service(self.filter.clone());
        let call = inner.call(req);
        Box::pin(async move {
            let resp = call.await?;
            Ok(resp.map(Body::new))
        })
    }
}

/// The listen backlog [`bind`] asks for: connects beyond it while the accept loop
/// is busy are dropped by the kernel (tokio's `TcpListener::bind` asks for 1024,
/// which a storm of thousands of connects overflows). The kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener for [`serve`] on `addr` with a backlog of
/// [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's own `bind`). Must be called
/// inside a tokio runtime.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let listener = phx_runtime::bind("127.0.0.1:4000".parse().unwrap())?;
/// println!("listening on {}", listener.local_addr()?);
/// # Ok(()) }
/// ```
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The limits [`serve`] puts on a listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Deadline for a whole request head however slowly its bytes come, and for
    /// a kept-alive connection to start its next request.
    pub header_timeout: Duration,
}

/// What [`serve`] runs on a listener: a tower service, the [`HttpLimits`] of
/// its listener, and the [`Metrics`] its listener counts into
/// (`http_connections_open`, `connections_limited`, `http_head_timeouts`).
///
/// An [`Endpoint`] (or its [`EndpointService`]) becomes one with the limits of
/// its [`Config`](crate::Config) and its own metrics; any other service, with
/// [`HttpApp::new`].
#[derive(Clone)]
pub struct HttpApp {
    app: Arc<dyn App>,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
}

impl HttpApp {
    /// Any tower service (an operators' API, a page) with its listener's limits
    /// and the metrics its listener counts into, which the caller owns and reads.
    /// The body is handed to the service unread: the service decides whether,
    /// and how much of it, to read.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use std::sync::Arc;
    /// use std::task::{Context, Poll};
    /// use std::time::Duration;
    ///
    /// use phx_runtime::body::Body;
    /// use phx_runtime::{HttpApp, HttpLimits, Metrics};
    ///
    /// #[derive(Clone)]
    /// struct Hello;
    ///
    /// impl tower_service::Service<http::Request<Body>> for Hello {
    ///     type Response = http::Response<Body>;
    ///     type Error = Infallible;
    ///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    ///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
    ///         Poll::Ready(Ok(()))
    ///     }
    ///     fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
    ///         std::future::ready(Ok(http::Response::new(Body::from("hello"))))
    ///     }
    /// }
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:4001").await?;
    /// let limits = HttpLimits { max_connections: 64, header_timeout: Duration::from_secs(10) };
    /// let app = HttpApp::new(Hello, limits, Arc::new(Metrics::default()));
    /// phx_runtime::serve(listener, app, phx_runtime::shutdown_signal()).await?;
    /// # Ok(()) }
    /// ```
    pub fn new<S, B>(service: S, limits: HttpLimits, metrics: Arc<Metrics>) -> HttpApp
    where
        S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        HttpApp {
            app: Arc::new(AppService(service)),
            limits,
            metrics,
        }
    }
}

impl From<EndpointService> for HttpApp {
    fn from(service: EndpointService) -> HttpApp {
        let config = &service.shared.config;
        let limits = HttpLimits {
            max_connections: config.max_connections,
            header_timeout: config.http_header_timeout,
        };
        let metrics = service.shared.metrics.clone();
        HttpApp::new(service, limits, metrics)
    }
}

impl From<&Endpoint> for HttpApp {
    fn from(endpoint: &Endpoint) -> HttpApp {
        HttpApp::from(endpoint.service())
    }
}

/// Serves `app` (an [`Endpoint`], its [`EndpointService`] with a
/// [fallback](EndpointService::fallback) app, or any service as an [`HttpApp`])
/// on `listener` until `shutdown` resolves.
///
/// The accept loop takes a connection slot (at most
/// [`HttpLimits::max_connections`] connections at once; the rest wait in the
/// kernel's backlog), then a connection, and serves HTTP/1.1 on it (upgrades
/// allowed) under the head deadline. Every accepted connection gets
/// `TCP_NODELAY` (frames are small and latency matters) and its peer address in
/// the request extensions ([`PeerAddr`]).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let endpoint = phx_runtime::Endpoint::builder().build();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
/// phx_runtime::serve(listener, &endpoint, phx_runtime::shutdown_signal()).await?;
/// endpoint.drain().await;
/// # Ok(()) }
/// ```
pub async fn serve(
    listener: TcpListener,
    app: impl Into<HttpApp>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let HttpApp {
        app,
        limits,
        metrics,
    } = app.into();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 {
            Metrics::inc(&metrics.connections_limited);
            tracing::warn!(
                limit = limits.max_connections,
                "connection limit reached: new connections wait"
            );
        }
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => ConnSlot::new(slot),
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and similar: log, back off, keep serving.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let metrics = metrics.clone();
        let head_timeout = limits.header_timeout;
        tokio::spawn(async move {
            Metrics::inc(&metrics.http_connections_open);
            let conn_slot = slot.clone();
            let svc = service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req.extensions_mut().insert(conn_slot.clone());
                app.call(req.map(Body::new)).map(Ok::<_, Infallible>)
            });
            // The head deadline also bounds how long a kept-alive connection may sit
            // idle before its next request (hyper arms it while waiting for one).
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(err) = conn.await {
                if err.is_timeout() {
                    Metrics::inc(&metrics.http_head_timeouts);
                    tracing::debug!("http connection closed: request head not received in time");
                } else {
                    tracing::debug!(%err, "http connection ended with an error");
                }
            }
            drop(slot);
            Metrics::dec(&metrics.http_connections_open);
        });
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
