//! The WebSocket transport at `<mount>/websocket`.
//!
//! The upgrade is taken by hand (a warp filter that reads hyper's `OnUpgrade`)
//! instead of warp's `ws()` filter, because warp leaves tungstenite at its
//! defaults, which reserve a 128 KiB read buffer per connection. Here the read
//! buffer is 512 bytes and grows only while a large frame is being read, and the
//! frames queued for a socket are coalesced into one write (up to 8 KiB) and
//! flushed at once, which cuts system calls several-fold under fan-out; an idle
//! connection costs a few KiB (see the README's memory figures).
//!
//! Checks, in Phoenix's order (`phoenix/lib/phoenix/transports/websocket.ex`):
//! GET only (400), upgrade headers (400), `check_origin` (403), the 1.8 auth token
//! in `Sec-WebSocket-Protocol`, subprotocols (403), vsn (403), then the socket
//! handler's `connect` (403 or the handler's status).
//!
//! Close codes this transport sends: 1001 on a socket-id `disconnect` and on the
//! idle timeout, 1007 for a frame that is not a valid Phoenix message, 1009 for a
//! frame over the size limit, 1012 when the server drains, 1013 for a client too
//! slow to read its messages (or flooding a channel).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use phx_protocol::{Frame, Serializer};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::endpoint::Shared;
use crate::handler::{parse_query, ConnectInfo, ConnectRequest, TransportKind};
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::socket::{SocketCore, SocketMsg, Step, Wait};

/// The peer address of a request, put in its extensions by [`crate::serve`].
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The prefix of the Phoenix 1.8 auth-token subprotocol.
const AUTH_TOKEN_PREFIX: &str = "base64url.bearer.phx.";

/// Frames written per wake-up before flushing.
const WRITE_BATCH: usize = 64;

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

pub(crate) fn route(shared: Arc<Shared>, path: String) -> BoxedFilter<(Response,)> {
    let full_path = path.clone();
    exact_path(path)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(raw_query())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<PeerAddr>())
        .then(
            move |method, headers, query, on_upgrade, peer: Option<PeerAddr>| {
                let request = Upgrade {
                    shared: shared.clone(),
                    method,
                    headers,
                    path: full_path.clone(),
                    query,
                    on_upgrade,
                    peer: peer.map(|p| p.0),
                };
                request.handle()
            },
        )
        .boxed()
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

struct Upgrade {
    shared: Arc<Shared>,
    method: Method,
    headers: HeaderMap,
    path: String,
    query: String,
    on_upgrade: Option<OnUpgrade>,
    peer: Option<SocketAddr>,
}

impl Upgrade {
    async fn handle(self) -> Response {
        let shared = self.shared.clone();
        if self.method != Method::GET {
            return status(StatusCode::BAD_REQUEST, "");
        }
        let h = &self.headers;
        let has_token = |name: &str, token: &str| {
            header(h, name)
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if !has_token("connection", "upgrade") {
            return status(
                StatusCode::BAD_REQUEST,
                "'connection' header must contain 'upgrade'",
            );
        }
        if !has_token("upgrade", "websocket") {
            return status(
                StatusCode::BAD_REQUEST,
                "'upgrade' header must contain 'websocket'",
            );
        }
        if header(h, "sec-websocket-version") != Some("13") {
            return status(
                StatusCode::BAD_REQUEST,
                "'sec-websocket-version' header must be '13'",
            );
        }
        let Some(key) = header(h, "sec-websocket-key") else {
            return status(
                StatusCode::BAD_REQUEST,
                "'sec-websocket-key' header is missing",
            );
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());

        if !origin_allowed(&shared, h) {
            return status(StatusCode::FORBIDDEN, "");
        }

        // The 1.8 auth token travels as one extra subprotocol; it is taken out of the
        // list, and "phoenix" becomes an accepted subprotocol so the handshake echoes it.
        let mut requested: Vec<String> = header(h, "sec-websocket-protocol")
            .map(|v| {
                v.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut allowed = shared.config.subprotocols.clone();
        let mut auth_token = None;
        if shared.config.auth_token {
            let tokens: Vec<&String> = requested
                .iter()
                .filter(|p| p.starts_with(AUTH_TOKEN_PREFIX))
                .collect();
            if let [token] = tokens.as_slice() {
                let encoded = token[AUTH_TOKEN_PREFIX.len()..].trim_end_matches('=');
                match base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded) {
                    Ok(bytes) => auth_token = Some(String::from_utf8_lossy(&bytes).into_owned()),
                    Err(err) => {
                        tracing::warn!(%err, "auth token in Sec-WebSocket-Protocol is not base64")
                    }
                }
                requested.retain(|p| !p.starts_with(AUTH_TOKEN_PREFIX));
                allowed
                    .get_or_insert_with(Vec::new)
                    .push("phoenix".to_owned());
            }
        }
        let subprotocol = match (&allowed, requested.is_empty()) {
            (Some(allowed), false) => match allowed.iter().find(|a| requested.contains(a)) {
                Some(p) => Some(p.clone()),
                None => {
                    Metrics::inc(&shared.metrics.sockets_refused);
                    tracing::warn!(
                        ?requested,
                        ?allowed,
                        "could not check WebSocket subprotocols"
                    );
                    return status(StatusCode::FORBIDDEN, "");
                }
            },
            _ => None,
        };

        let mut info = connect_info(h, &self.path, &self.query, self.peer);
        info.auth_token = auth_token;
        let params = parse_query(&self.query);
        let (serializer, conn) =
            match connect(&shared, params, info, TransportKind::WebSocket).await {
                Ok(accepted) => accepted,
                Err(code) => {
                    return status(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN),
                        "",
                    )
                }
            };
        let Some(on_upgrade) = self.on_upgrade else {
            return status(
                StatusCode::BAD_REQUEST,
                "this connection cannot be upgraded",
            );
        };
        tracing::debug!(vsn = serializer.vsn(), "socket connected over websocket");

        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(%err, "websocket upgrade failed");
                    return;
                }
            };
            let config = WebSocketConfig::default()
                .read_buffer_size(512)
                .write_buffer_size(8 * 1024)
                .max_message_size(Some(shared.config.max_frame_size))
                .max_frame_size(Some(shared.config.max_frame_size));
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            let (core, rx) =
                SocketCore::new(shared.clone(), serializer, TransportKind::WebSocket, conn);
            run(ws, core, rx, shared).await;
        });

        let mut resp = status(StatusCode::SWITCHING_PROTOCOLS, "");
        let headers = resp.headers_mut();
        headers.insert("upgrade", warp::http::HeaderValue::from_static("websocket"));
        headers.insert(
            "connection",
            warp::http::HeaderValue::from_static("Upgrade"),
        );
        if let Ok(v) = accept.parse() {
            headers.insert("sec-websocket-accept", v);
        }
        if let Some(p) = subprotocol.and_then(|p| p.parse().ok()) {
            headers.insert("sec-websocket-protocol", p);
        }
        resp
    }
}

fn to_ws(frame: Frame) -> WsMessage {
    match frame {
        // SAFETY: `phx_protocol::Text` can only be built from valid UTF-8.
        Frame::Text(text) => {
            WsMessage::Text(unsafe { Utf8Bytes::from_bytes_unchecked(text.into_bytes()) })
        }
        Frame::Binary(bytes) => WsMessage::Binary(bytes),
    }
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why the loop ended: a close frame to send, or nothing (the peer is gone).
type Ending = Option<(u16, String)>;

/// Drives one WebSocket connection until it ends.
///
/// The loop is fair: it takes mailbox frames and client frames in turn (an
/// unbiased `select!`), so a socket under a sustained broadcast stream still reads
/// its client. While the socket waits on a join or a full channel mailbox it reads
/// nothing from the client (TCP backpressure) and keeps writing.
async fn run(
    mut ws: Ws,
    mut core: SocketCore,
    mut rx: tokio::sync::mpsc::Receiver<SocketMsg>,
    shared: Arc<Shared>,
) {
    let idle = shared.config.idle_timeout;
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut drain = shared.drain.subscribe();
    let mut batch: Vec<Frame> = Vec::new();
    let mut waiting: Option<Wait> = None;
    let ending: Ending = loop {
        tokio::select! {
            reason = core.close_requested() => {
                tracing::info!(code = reason.code(), reason = reason.text(), "closing socket");
                break Some((reason.code(), reason.text().to_owned()));
            }
            _ = drain.wait_for(|d| *d) => break Some((1012, "server restarting".to_owned())),
            resumed = async { match &mut waiting { Some(w) => w.await, None => std::future::pending().await } } => {
                waiting = None;
                deadline.as_mut().reset(Instant::now() + idle);
                if let Some(frame) = core.resume(resumed) {
                    core.drain_mailbox(&mut rx, &mut batch);
                    batch.push(frame);
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break None };
                batch.extend(core.handle_mailbox(msg));
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(msg) => batch.extend(core.handle_mailbox(msg)),
                        Err(_) => break,
                    }
                }
            }
            incoming = ws.next(), if waiting.is_none() => {
                deadline.as_mut().reset(Instant::now() + idle);
                match incoming {
                    None => break None,
                    Some(Err(err)) => break read_error(&shared, err),
                    Some(Ok(msg)) => match inbound(&shared, &mut core, msg) {
                        Inbound::Step(Step::Nothing) | Inbound::Flush => {}
                        Inbound::Step(Step::Reply(frame)) => {
                            core.drain_mailbox(&mut rx, &mut batch);
                            batch.push(frame);
                        }
                        Inbound::Step(Step::Wait(wait)) => waiting = Some(wait),
                        Inbound::End(ending) => break ending,
                    },
                }
            }
            _ = &mut deadline, if waiting.is_none() => {
                Metrics::inc(&shared.metrics.idle_timeouts);
                tracing::info!(timeout = ?idle, "closing socket: nothing received within the idle timeout");
                break Some((1001, "idle timeout".to_owned()));
            }
        }
        // Write what is ready (and any pong tungstenite queued), unless the socket is
        // told to close while the client is not reading.
        let frames = batch.drain(..).map(|f| Ok(to_ws(f)));
        let write = async {
            let count = frames.len() as u64;
            let mut stream = futures::stream::iter(frames);
            ws.send_all(&mut stream).await?;
            shared
                .metrics
                .frames_out
                .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
            Ok::<(), tungstenite::Error>(())
        };
        // Boxed, like the close below, so an idle connection's task stays small.
        let result = tokio::select! {
            biased;
            r = Box::pin(write) => r,
            reason = core.close_requested() => {
                tracing::info!(code = reason.code(), reason = reason.text(), "closing socket while writing");
                break None;
            }
        };
        if let Err(err) = result {
            tracing::debug!(%err, "websocket write failed");
            break None;
        }
    };
    if let Some((code, reason)) = ending {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        // The closing handshake: send our close, then read (and discard) what the
        // client still sends until its close answers ours. Dropping the connection
        // with unread input would reset it, and the client could lose the close code.
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), async {
            ws.close(Some(frame)).await?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<(), tungstenite::Error>(())
        }))
        .await;
    }
    drop(core);
}

enum Inbound {
    Step(Step),
    Flush,
    End(Ending),
}

fn inbound(shared: &Shared, core: &mut SocketCore, msg: WsMessage) -> Inbound {
    let decoded = match msg {
        WsMessage::Text(text) => core.serializer().decode_text(text.as_str()),
        // Phoenix's V1 serializer ignores the opcode: a binary frame on a V1 socket
        // is JSON text like any other.
        WsMessage::Binary(bytes) if core.serializer() == Serializer::V1Json => {
            match std::str::from_utf8(&bytes) {
                Ok(text) => core.serializer().decode_text(text),
                Err(_) => core.serializer().decode_binary(bytes),
            }
        }
        WsMessage::Binary(bytes) => core.serializer().decode_binary(bytes),
        // tungstenite answers pings and closes itself; the write step flushes them.
        WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => return Inbound::Flush,
        WsMessage::Close(_) => return Inbound::End(None),
    };
    Metrics::inc(&shared.metrics.frames_in);
    match decoded {
        Ok(msg) => Inbound::Step(core.handle_in(msg)),
        Err(err) => {
            Metrics::inc(&shared.metrics.malformed_frames);
            tracing::warn!(%err, "closing socket: malformed frame");
            Inbound::End(Some((1007, format!("invalid frame: {}", err.kind()))))
        }
    }
}

fn read_error(shared: &Shared, err: tungstenite::Error) -> Ending {
    match err {
        tungstenite::Error::Capacity(err) => {
            Metrics::inc(&shared.metrics.oversize_frames);
            tracing::warn!(%err, "closing socket: frame over the size limit");
            Some((1009, "frame too large".to_owned()))
        }
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => {
            tracing::debug!("client went away without a closing handshake");
            None
        }
        tungstenite::Error::Protocol(err) => {
            Metrics::inc(&shared.metrics.malformed_frames);
            tracing::warn!(%err, "closing socket: WebSocket protocol error");
            Some((1002, "protocol error".to_owned()))
        }
        tungstenite::Error::Utf8(_) => {
            Metrics::inc(&shared.metrics.malformed_frames);
            tracing::warn!("closing socket: text frame is not UTF-8");
            Some((1007, "invalid utf-8".to_owned()))
        }
        other => {
            tracing::debug!(err = %other, "websocket read ended");
            None
        }
    }
}
