//! Where the endpoint meets HTTP: [`EndpointService`], the endpoint as a
//! `tower::Service` (mount it in axum, hyper or anything tower-based), and
//! [`serve`], the accept loop that runs it on a listener by itself.
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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

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

/// The error type of [`ResponseBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body of the endpoint's HTTP responses.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

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
    fallback: Option<Fallback>,
}

/// The body of a request handed to an [`EndpointService::fallback`] app.
pub type RequestBody = BoxBody<Bytes, BoxError>;

type Fallback = Arc<dyn App>;

/// An application's tower service as the endpoint calls it.
trait App: Send + Sync {
    fn call(
        &self,
        req: hyper::Request<RequestBody>,
    ) -> BoxFuture<'static, hyper::Response<ResponseBody>>;
}

struct AppService<S>(S);

impl<S, B> App for AppService<S>
where
    S: Service<hyper::Request<RequestBody>, Response = hyper::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn call(
        &self,
        req: hyper::Request<RequestBody>,
    ) -> BoxFuture<'static, hyper::Response<ResponseBody>> {
        // A combinator, not an async block: rustc cannot prove an async block
        // holding `S::Future` Send for every lifetime (rust-lang/rust#64552).
        Box::pin(self.0.clone().call(req).map(|result| match result {
            Ok(resp) => box_response(resp),
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
            prefix: format!("{}/", shared.mount),
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
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use phx_runtime::{Endpoint, RequestBody};
    ///
    /// /// The application's own pages.
    /// #[derive(Clone)]
    /// struct Pages;
    ///
    /// impl tower_service::Service<hyper::Request<RequestBody>> for Pages {
    ///     type Response = hyper::Response<Full<Bytes>>;
    ///     type Error = Infallible;
    ///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    ///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
    ///         Poll::Ready(Ok(()))
    ///     }
    ///     fn call(&mut self, _req: hyper::Request<RequestBody>) -> Self::Future {
    ///         std::future::ready(Ok(hyper::Response::new(Full::new(Bytes::from_static(b"hello")))))
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
        S: Service<hyper::Request<RequestBody>, Response = hyper::Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.fallback = Some(Arc::new(AppService(app)));
        self
    }

    /// Whether `path` belongs to the endpoint rather than to the fallback app.
    fn owns(&self, path: &str) -> bool {
        path.starts_with(&self.prefix) || self.shared.metrics_path.as_deref() == Some(path)
    }
}

fn box_request<B>(body: B) -> RequestBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    SyncBody::new(body).map_err(Into::into).boxed()
}

fn box_response<B>(resp: hyper::Response<B>) -> hyper::Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    resp.map(|body| body.map_err(Into::into).boxed_unsync())
}

impl From<&Endpoint> for EndpointService {
    fn from(endpoint: &Endpoint) -> EndpointService {
        endpoint.service()
    }
}

impl<B> Service<hyper::Request<B>> for EndpointService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = hyper::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<B>) -> Self::Future {
        if let Some(app) = &self.fallback {
            if !self.owns(req.uri().path()) {
                let call = app.call(req.map(box_request));
                return Box::pin(async move { Ok(call.await) });
            }
        }
        let mut inner = warp::service(self.filter.clone());
        let call = inner.call(req.map(SyncBody::new));
        Box::pin(async move {
            let resp = call.await?;
            Ok(resp.map(|body| body.map_err(Into::into).boxed_unsync()))
        })
    }
}

/// Makes any request body `Sync`, as warp asks (axum's body is not). The mutex
/// is never contended: polling takes `&mut self`.
struct SyncBody<B>(std::sync::Mutex<Pin<Box<B>>>);

impl<B> SyncBody<B> {
    fn new(body: B) -> SyncBody<B> {
        SyncBody(std::sync::Mutex::new(Box::pin(body)))
    }
}

impl<B: Body> Body for SyncBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        inner.as_mut().poll_frame(cx)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.0.lock() {
            Ok(inner) => inner.size_hint(),
            Err(_) => hyper::body::SizeHint::default(),
        }
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

/// Serves `endpoint` (an [`Endpoint`], or its [`EndpointService`] with a
/// [fallback](EndpointService::fallback) app) on `listener` until `shutdown` resolves.
///
/// Every accepted connection gets `TCP_NODELAY` (frames are small and latency
/// matters) and its peer address in the request extensions ([`PeerAddr`]).
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
    endpoint: impl Into<EndpointService>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let service: EndpointService = endpoint.into();
    let limits = HttpLimits {
        max_connections: service.shared.config.max_connections,
        header_timeout: service.shared.config.http_header_timeout,
    };
    let metrics = service.shared.metrics.clone();
    accept_loop(listener, service, limits, metrics, shutdown).await
}

/// The limits [`serve_app`] puts on a listener: the same two [`serve`] takes
/// from an endpoint's [`Config`](crate::Config).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Deadline for a whole request head, and for a kept-alive connection's
    /// next request.
    pub header_timeout: std::time::Duration,
}

/// Serves any tower service (an operators' API, a page) on `listener` with the
/// accept loop of [`serve`]: `TCP_NODELAY`, the peer address in the request
/// extensions ([`PeerAddr`]), at most `limits.max_connections` connections at
/// once and a deadline for every request head, until `shutdown` resolves. The
/// listener's counters (`http_connections_open`, `connections_limited`,
/// `http_head_timeouts`) go to `metrics`, which the caller owns and reads.
///
/// The body is handed to the service unread: the service decides whether, and
/// how much of it, to read.
///
/// ```no_run
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use std::task::{Context, Poll};
/// use std::time::Duration;
///
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use phx_runtime::{HttpLimits, Metrics, RequestBody};
///
/// #[derive(Clone)]
/// struct Hello;
///
/// impl tower_service::Service<hyper::Request<RequestBody>> for Hello {
///     type Response = hyper::Response<Full<Bytes>>;
///     type Error = Infallible;
///     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
///         Poll::Ready(Ok(()))
///     }
///     fn call(&mut self, _req: hyper::Request<RequestBody>) -> Self::Future {
///         std::future::ready(Ok(hyper::Response::new(Full::new(Bytes::from_static(b"hello")))))
///     }
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4001").await?;
/// let limits = HttpLimits { max_connections: 64, header_timeout: Duration::from_secs(10) };
/// let metrics = Arc::new(Metrics::default());
/// phx_runtime::serve_app(listener, Hello, limits, metrics, phx_runtime::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
pub async fn serve_app<S, B>(
    listener: TcpListener,
    app: S,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<hyper::Request<RequestBody>, Response = hyper::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let app = AppConn(Arc::new(AppService(app)));
    accept_loop(listener, app, limits, metrics, shutdown).await
}

/// An application's service as the accept loop calls it: bodies boxed both ways.
#[derive(Clone)]
struct AppConn(Fallback);

impl Service<hyper::Request<Incoming>> for AppConn {
    type Response = hyper::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<Incoming>) -> Self::Future {
        let call = self.0.call(req.map(box_request));
        Box::pin(async move { Ok(call.await) })
    }
}

/// The accept loop of [`serve`] and [`serve_app`]: a connection slot, then a
/// connection, then HTTP/1.1 on it (upgrades allowed) under the head deadline.
async fn accept_loop<S>(
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<ResponseBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
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
        let service = service.clone();
        let metrics = metrics.clone();
        let head_timeout = limits.header_timeout;
        tokio::spawn(async move {
            Metrics::inc(&metrics.http_connections_open);
            let conn_slot = slot.clone();
            let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req.extensions_mut().insert(conn_slot.clone());
                service.clone().call(req)
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
