//! What both transports share, as Phoenix's `socket/transport.ex`: the peer
//! address, the connect info, the origin check, vsn negotiation and the connect
//! step (the socket handler's `connect`), and the small HTTP helpers both routes
//! use. `websocket.rs` and `longpoll.rs` keep only their own wire.

use std::net::SocketAddr;

use phx_protocol::Serializer;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::handler::{ConnectInfo, ConnectRequest, TransportKind};
use crate::metrics::Metrics;
use crate::node::Shared;
use crate::origin::Origin;

/// The peer address of a request, put in its extensions by [`crate::serve`].
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// A filter matching exactly one path.
pub(crate) fn exact_path(
    path: String,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::path::full()
        .and_then(move |p: warp::path::FullPath| {
            let ok = p.as_str() == path;
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }
        })
        .untuple_one()
}

/// The raw query string, empty when there is none.
pub(crate) fn raw_query(
) -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

pub(crate) fn status(code: StatusCode, body: &'static str) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = code;
    resp
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Collects the connect info Phoenix gives `connect/3`.
pub(crate) fn connect_info(
    headers: &HeaderMap,
    path: &str,
    query: &str,
    peer: Option<SocketAddr>,
) -> ConnectInfo {
    let pairs = |pred: &dyn Fn(&str) -> bool| {
        headers
            .iter()
            .filter(|(name, _)| pred(name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect::<Vec<_>>()
    };
    ConnectInfo {
        peer,
        path: path.to_owned(),
        query: query.to_owned(),
        host: header(headers, "host").map(str::to_owned),
        user_agent: header(headers, "user-agent").map(str::to_owned),
        x_headers: pairs(&|n| n.starts_with("x-")),
        trace_context_headers: pairs(&|n| n == "traceparent" || n == "tracestate"),
        sec_websocket_headers: pairs(&|n| n.starts_with("sec-websocket-")),
        auth_token: None,
    }
}

/// The request's own origin (scheme, host, port), for `CheckOrigin::Conn`.
pub(crate) fn request_origin(headers: &HeaderMap) -> Origin {
    let host = header(headers, "host").unwrap_or("");
    Origin::parse(&format!("http://{host}"))
}

/// Decides whether the request's origin may connect; logs and counts a refusal.
pub(crate) fn origin_allowed(shared: &Shared, headers: &HeaderMap) -> bool {
    let origin = header(headers, "origin");
    let ok = shared
        .config
        .check_origin
        .allows(origin, &request_origin(headers));
    if !ok {
        Metrics::inc(&shared.metrics.sockets_refused);
        tracing::warn!(origin = origin.unwrap_or(""), "could not check origin for Phoenix.Socket transport: origin not allowed by check_origin");
    }
    ok
}

/// Negotiates the serializer; logs and counts a refusal.
pub(crate) fn negotiate(shared: &Shared, vsn: Option<&str>) -> Option<Serializer> {
    match Serializer::negotiate(vsn) {
        Ok(s) => Some(s),
        Err(err) => {
            Metrics::inc(&shared.metrics.sockets_refused);
            tracing::warn!(%err, "refusing connection");
            None
        }
    }
}

/// What both transports do once the request itself is acceptable: negotiate the
/// serializer from `vsn`, then ask the socket handler. A refusal comes back as its
/// HTTP status, counted and logged.
pub(crate) async fn connect(
    shared: &Shared,
    params: crate::handler::Params,
    info: ConnectInfo,
    transport: TransportKind,
) -> Result<(Serializer, crate::handler::Connection), u16> {
    let serializer = negotiate(shared, params.get("vsn").map(String::as_str)).ok_or(403u16)?;
    let request = ConnectRequest {
        params,
        info,
        transport,
    };
    match shared.handler.connect(&request).await {
        Ok(conn) => Ok((serializer, conn)),
        Err(refusal) => {
            Metrics::inc(&shared.metrics.sockets_refused);
            tracing::info!(
                status = refusal.status,
                transport = transport.as_str(),
                "socket handler refused the connection"
            );
            Err(refusal.status)
        }
    }
}

/// Resolves when it is this socket's turn to close in a drain: sockets take a
/// place in line as they see the drain start and close
/// `Config::drain_batch_size` at a time, one batch every
/// `Config::drain_batch_interval` (Phoenix drains the same way), so clients do
/// not all reconnect at the same instant.
pub(crate) async fn drain_turn(shared: std::sync::Arc<Shared>) {
    let mut drain = shared.drain.subscribe();
    let _ = drain.wait_for(|d| *d).await;
    let place = shared
        .drained
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let batch = place / shared.config.drain_batch_size.max(1);
    let wait = shared
        .config
        .drain_batch_interval
        .saturating_mul(u32::try_from(batch).unwrap_or(u32::MAX));
    tokio::time::sleep(wait).await;
    Metrics::inc(&shared.metrics.sockets_drained);
}

/// A connection's slot under `Config::max_connections`; a WebSocket keeps it for
/// as long as it lives (it is taken from the request's extensions).
#[derive(Clone)]
pub(crate) struct ConnSlot {
    _permit: std::sync::Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnSlot {
    pub(crate) fn new(permit: tokio::sync::OwnedSemaphorePermit) -> ConnSlot {
        ConnSlot {
            _permit: std::sync::Arc::new(permit),
        }
    }
}
