//! The WebSocket transport at `<mount>/websocket`: the upgrade, and the
//! WebSocket wire ([`WsWire`]) that the shared socket loop
//! ([`transport::drive`]) drives.
//!
//! The upgrade is taken by hand (a warp filter that reads hyper's `OnUpgrade`)
//! instead of warp's `ws()` filter, because warp leaves tungstenite at its
//! defaults, which reserve a 128 KiB read buffer per connection. Here the read
//! buffer is 512 bytes and grows only while a large frame is being read. Data
//! frames are encoded here, not by tungstenite ([`Outbox`]): the frames queued
//! for a socket are coalesced into one write (up to 32 KiB) and the buffer is
//! freed after a large write, so an idle connection keeps no capacity from the
//! largest frame it ever sent (see the README's memory figures).
//!
//! Checks, in Phoenix's order (`phoenix/lib/phoenix/transports/websocket.ex`):
//! GET only (400), `check_origin` (403), the 1.8 auth token in
//! `Sec-WebSocket-Protocol`, subprotocols (403), vsn (403), the socket handler's
//! `connect` (403 or the handler's status), then the upgrade headers (400).
//!
//! Close codes this transport sends: 1001 on a socket-id `disconnect` and on the
//! idle timeout, 1011 for a frame that is not a valid Phoenix message (as Bandit
//! closes when Phoenix's serializer raises), 1007 for text that is not UTF-8, 1009 for a
//! frame over the size limit, 1012 when the server drains, 1013 for a client too
//! slow to read its messages, a channel stuck past the stall timeout, or a message
//! one of its channels could not queue.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use phx_protocol::{Frame, Serializer};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::handler::{parse_query, TransportKind};
use crate::mailbox::CloseReason;
use crate::metrics::Metrics;
use crate::socket::SocketCore;
use crate::state::EndpointState;
use crate::transport::{
    self, connect, connect_info, exact_path, header, origin_allowed, raw_query, status, ConnSlot,
    Ending, PeerAddr, Read, Wire,
};

/// The prefix of the Phoenix 1.8 auth-token subprotocol.
const AUTH_TOKEN_PREFIX: &str = "base64url.bearer.phx.";

pub(crate) fn route(shared: Arc<EndpointState>, path: String) -> BoxedFilter<(Response,)> {
    let full_path = path.clone();
    exact_path(path)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(raw_query())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::ext::optional::<ConnSlot>())
        .then(
            move |method, headers, query, on_upgrade, peer: Option<PeerAddr>, slot| {
                let request = Upgrade {
                    shared: shared.clone(),
                    method,
                    headers,
                    path: full_path.clone(),
                    query,
                    on_upgrade,
                    peer: peer.map(|p| p.0),
                    slot,
                };
                request.handle()
            },
        )
        .boxed()
}

struct Upgrade {
    shared: Arc<EndpointState>,
    method: Method,
    headers: HeaderMap,
    path: String,
    query: String,
    on_upgrade: Option<OnUpgrade>,
    peer: Option<SocketAddr>,
    slot: Option<ConnSlot>,
}

/// What the subprotocol step decided: the protocol to echo and the auth token.
struct Subprotocol {
    echo: Option<String>,
    auth_token: Option<String>,
}

impl Upgrade {
    /// Phoenix's order: method, check_origin, the auth token and subprotocols, vsn
    /// and the socket handler, and only then the upgrade headers (websock_adapter
    /// validates them in `upgrade`, after `connect`); then the 101.
    async fn handle(self) -> Response {
        if self.method != Method::GET {
            return status(StatusCode::BAD_REQUEST, "");
        }
        if !origin_allowed(&self.shared, &self.headers) {
            return status(StatusCode::FORBIDDEN, "");
        }
        let Some(sub) = self.subprotocol() else {
            return status(StatusCode::FORBIDDEN, "");
        };
        let mut info = connect_info(&self.headers, &self.path, &self.query, self.peer);
        info.auth_token = sub.auth_token;
        let params = parse_query(&self.query);
        let (serializer, conn) =
            match connect(&self.shared, params, info, TransportKind::WebSocket).await {
                Ok(accepted) => accepted,
                Err(code) => return status(code, ""),
            };
        let accept = match self.handshake_headers() {
            Ok(accept) => accept,
            Err(why) => return status(StatusCode::BAD_REQUEST, why),
        };
        let Some(on_upgrade) = self.on_upgrade else {
            return status(
                StatusCode::BAD_REQUEST,
                "this connection cannot be upgraded",
            );
        };
        tracing::debug!(vsn = serializer.vsn(), "socket connected over websocket");
        let shared = self.shared;
        let slot = self.slot;
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
            let (core, rx) = SocketCore::new(
                shared.sockets.clone(),
                serializer,
                TransportKind::WebSocket,
                conn,
            );
            let wire = WsWire::new(ws, &shared, serializer);
            transport::drive(wire, core, rx, shared).await;
            // The connection's slot under max_connections is free again.
            drop(slot);
        });
        switching_protocols(&accept, sub.echo)
    }

    /// Checks the upgrade headers; gives the `Sec-WebSocket-Accept` value, or why
    /// the request is not a WebSocket handshake (the body of its 400).
    fn handshake_headers(&self) -> Result<String, &'static str> {
        let h = &self.headers;
        let has_token = |name: &str, token: &str| {
            header(h, name)
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let bad = Err;
        if !has_token("connection", "upgrade") {
            return bad("'connection' header must contain 'upgrade'");
        }
        if !has_token("upgrade", "websocket") {
            return bad("'upgrade' header must contain 'websocket'");
        }
        if header(h, "sec-websocket-version") != Some("13") {
            return bad("'sec-websocket-version' header must be '13'");
        }
        match header(h, "sec-websocket-key") {
            Some(key) => Ok(tungstenite::handshake::derive_accept_key(key.as_bytes())),
            None => bad("'sec-websocket-key' header is missing"),
        }
    }

    /// The 1.8 auth token travels as one extra subprotocol; it is taken out of the
    /// list, and "phoenix" becomes an accepted subprotocol so the handshake echoes
    /// it. `None` when no requested subprotocol is allowed (403). The token itself
    /// is never logged.
    fn subprotocol(&self) -> Option<Subprotocol> {
        let mut requested: Vec<String> = header(&self.headers, "sec-websocket-protocol")
            .map(|v| {
                v.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut allowed = self.shared.config.subprotocols.clone();
        let mut auth_token = None;
        if self.shared.config.auth_token {
            let tokens: Vec<&String> = requested
                .iter()
                .filter(|p| p.starts_with(AUTH_TOKEN_PREFIX))
                .collect();
            if let [token] = tokens.as_slice() {
                let encoded = token[AUTH_TOKEN_PREFIX.len()..].trim_end_matches('=');
                match base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded) {
                    Ok(bytes) => auth_token = Some(String::from_utf8_lossy(&bytes).into_owned()),
                    Err(_) => tracing::warn!("auth token in Sec-WebSocket-Protocol is not base64"),
                }
                requested.retain(|p| !p.starts_with(AUTH_TOKEN_PREFIX));
                allowed
                    .get_or_insert_with(Vec::new)
                    .push("phoenix".to_owned());
            }
        }
        let echo = match (&allowed, requested.is_empty()) {
            (Some(allowed), false) => match allowed.iter().find(|a| requested.contains(a)) {
                Some(p) => Some(p.clone()),
                None => {
                    Metrics::inc(&self.shared.metrics.sockets_refused);
                    tracing::warn!(
                        ?requested,
                        ?allowed,
                        "could not check WebSocket subprotocols"
                    );
                    return None;
                }
            },
            _ => None,
        };
        Some(Subprotocol { echo, auth_token })
    }
}

/// The 101 that completes the handshake.
fn switching_protocols(accept: &str, subprotocol: Option<String>) -> Response {
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

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Encoded bytes gathered per wake-up before they are written.
const WRITE_BATCH_BYTES: usize = 32 * 1024;

/// A write buffer whose capacity grew past this is freed once written, so an idle
/// connection does not keep the capacity of the largest frame it ever sent. Small
/// enough that a member of a presence room does not keep the room's diffs (at
/// 2 KiB, 10 000 members of 100 rooms held ~0.5 KiB each), large enough that
/// request/reply and broadcast traffic of small frames reuses one allocation.
const KEEP_WRITE_BUFFER: usize = 256;

/// The frames of one wake-up, encoded for the wire and written in one go.
///
/// Data frames bypass tungstenite's writer: its buffer keeps the capacity of the
/// largest frame it ever held (a `presence_state` of a busy room is tens of KiB,
/// kept for the connection's life), and going through it costs a conversion and
/// a copy per frame. A server frame is unmasked, so its encoding is a 2-10 byte
/// header and the payload. tungstenite still writes what it makes itself (pongs,
/// the closing handshake); [`Outbox::write`] flushes those first, and it always
/// writes whole frames before the stream is read again, so the two never
/// interleave.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    frames: u64,
}

impl Outbox {
    /// Appends one frame: FIN set, opcode 0x1 (text) or 0x2 (binary), the payload
    /// length in 7, 7+16 or 7+64 bits (RFC 6455, section 5.2), then the payload.
    fn push(&mut self, frame: &Frame) {
        let (opcode, payload) = match frame {
            Frame::Text(text) => (0x1u8, text.as_bytes()),
            Frame::Binary(bytes) => (0x2u8, bytes),
        };
        let len = payload.len();
        self.buf.reserve(len + 10);
        self.buf.push(0x80 | opcode);
        if len < 126 {
            // Fits in the 7-bit length field.
            self.buf.push(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.buf.push(126);
            self.buf.extend_from_slice(&len.to_be_bytes());
        } else {
            self.buf.push(127);
            self.buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.buf.extend_from_slice(payload);
        self.frames += 1;
    }

    fn is_full(&self) -> bool {
        self.buf.len() >= WRITE_BATCH_BYTES
    }

    /// Writes what tungstenite queued (a pong), then the gathered frames, and
    /// flushes. Gives the number of frames written.
    async fn write(&mut self, ws: &mut Ws) -> Result<u64, tungstenite::Error> {
        ws.flush().await?;
        if self.buf.is_empty() {
            return Ok(0);
        }
        let io = ws.get_mut();
        io.write_all(&self.buf).await?;
        io.flush().await?;
        if self.buf.capacity() > KEEP_WRITE_BUFFER {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Ok(std::mem::take(&mut self.frames))
    }
}

/// The WebSocket side of a connection, as [`transport::drive`] drives it: reads
/// client frames (with the idle timeout), gathers frames in an [`Outbox`] and
/// writes them in one go, and ends with a closing handshake.
struct WsWire {
    ws: Ws,
    out: Outbox,
    /// The endpoint's counters: all a wire needs of the endpoint besides its
    /// idle timeout.
    metrics: Arc<Metrics>,
    serializer: Serializer,
    idle: Duration,
    /// Nothing received from the client until then ends the socket (1001).
    /// Pinned once for the connection's life, reset on every frame.
    deadline: Pin<Box<Sleep>>,
    /// The socket took no input since the last read: the idle deadline starts
    /// again when it does.
    paused: bool,
}

impl WsWire {
    fn new(ws: Ws, shared: &EndpointState, serializer: Serializer) -> WsWire {
        let idle = shared.config.idle_timeout;
        WsWire {
            ws,
            out: Outbox::default(),
            metrics: shared.metrics.clone(),
            serializer,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            paused: false,
        }
    }

    /// What a client frame means for the socket.
    fn inbound(&self, msg: WsMessage) -> Read {
        let serializer = self.serializer;
        let decoded = match msg {
            WsMessage::Text(text) => serializer.decode_text(text.as_str()),
            // Phoenix's V1 serializer ignores the opcode: a binary frame on a V1 socket
            // is JSON text like any other.
            WsMessage::Binary(bytes) if serializer == Serializer::V1Json => {
                match std::str::from_utf8(&bytes) {
                    Ok(text) => serializer.decode_text(text),
                    Err(_) => serializer.decode_binary(bytes),
                }
            }
            WsMessage::Binary(bytes) => serializer.decode_binary(bytes),
            // tungstenite answers pings and closes itself; the flush writes them.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => return Read::Flush,
            WsMessage::Close(_) => return Read::End(Ending::Gone),
        };
        match decoded {
            Ok(msg) => Read::Message(msg),
            Err(err) => {
                // A decoded message is counted by the loop; this one never reaches it.
                Metrics::inc(&self.metrics.frames_in);
                Metrics::inc(&self.metrics.malformed_frames);
                tracing::warn!(%err, "closing socket: malformed frame");
                Read::End(Ending::Close(CloseReason::InvalidFrame(err.kind())))
            }
        }
    }
}

impl Wire for WsWire {
    fn read(&mut self, input: bool) -> impl Future<Output = Read> + Send {
        // Runs when the loop builds its turn, so a pause is always seen: the
        // time the socket spent waiting on a channel is not the client's idling.
        if !input {
            self.paused = true;
        } else if std::mem::take(&mut self.paused) {
            self.deadline.as_mut().reset(Instant::now() + self.idle);
        }
        async move {
            if !input {
                return std::future::pending().await;
            }
            // The client first, then the idle deadline (a plain poll: this runs on
            // every wake-up, and a `select!` would cost more than the two polls).
            let polled = std::future::poll_fn(|cx| {
                if let Poll::Ready(incoming) = self.ws.poll_next_unpin(cx) {
                    return Poll::Ready(Some(incoming));
                }
                self.deadline.as_mut().poll(cx).map(|()| None)
            })
            .await;
            match polled {
                Some(incoming) => {
                    self.deadline.as_mut().reset(Instant::now() + self.idle);
                    match incoming {
                        None => Read::End(Ending::Gone),
                        Some(Err(err)) => Read::End(read_error(&self.metrics, err)),
                        Some(Ok(msg)) => self.inbound(msg),
                    }
                }
                None => {
                    Metrics::inc(&self.metrics.idle_timeouts);
                    tracing::info!(timeout = ?self.idle, "closing socket: nothing received within the idle timeout");
                    Read::End(Ending::Close(CloseReason::IdleTimeout))
                }
            }
        }
    }

    #[inline]
    fn push(&mut self, frame: &Frame) {
        self.out.push(frame);
    }

    #[inline]
    fn is_full(&self) -> bool {
        self.out.is_full()
    }

    async fn flush(&mut self) -> Result<u64, Ending> {
        self.out.write(&mut self.ws).await.map_err(|err| {
            tracing::debug!(%err, "websocket write failed");
            Ending::Gone
        })
    }

    async fn close(mut self, ending: Ending) {
        let Ending::Close(reason) = ending else {
            return;
        };
        let frame = CloseFrame {
            code: CloseCode::from(reason.code()),
            reason: reason.to_string().into(),
        };
        // The closing handshake: send our close, then read (and discard) what the
        // client still sends until its close answers ours. Dropping the connection
        // with unread input would reset it, and the client could lose the close code.
        let ws = &mut self.ws;
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), async {
            ws.close(Some(frame)).await?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<(), tungstenite::Error>(())
        }))
        .await;
    }
}

fn read_error(metrics: &Metrics, err: tungstenite::Error) -> Ending {
    match err {
        tungstenite::Error::Capacity(err) => {
            Metrics::inc(&metrics.oversize_frames);
            tracing::warn!(%err, "closing socket: frame over the size limit");
            Ending::Close(CloseReason::FrameTooLarge)
        }
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => {
            tracing::debug!("client went away without a closing handshake");
            Ending::Gone
        }
        tungstenite::Error::Protocol(err) => {
            Metrics::inc(&metrics.malformed_frames);
            tracing::warn!(%err, "closing socket: WebSocket protocol error");
            Ending::Close(CloseReason::ProtocolError)
        }
        tungstenite::Error::Utf8(_) => {
            Metrics::inc(&metrics.malformed_frames);
            tracing::warn!("closing socket: text frame is not UTF-8");
            Ending::Close(CloseReason::InvalidUtf8)
        }
        other => {
            tracing::debug!(err = %other, "websocket read ended");
            Ending::Gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    /// Parses what [`Outbox`] wrote with tungstenite's own frame parser: every
    /// frame's header, then its payload, in order.
    fn parse(mut bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let mut cursor = std::io::Cursor::new(bytes);
            let (header, len) = FrameHeader::parse(&mut cursor)
                .expect("a valid header")
                .expect("a whole header");
            let start = cursor.position() as usize;
            let end = start + len as usize;
            frames.push((header, bytes[start..end].to_vec()));
            bytes = &bytes[end..];
        }
        frames
    }

    #[test]
    fn outbox_encodes_every_length_form_as_tungstenite_parses_it() {
        let mut out = Outbox::default();
        // 7-bit, 16-bit and 64-bit length fields, at their edges.
        let sizes = [0usize, 125, 126, 65_535, 65_536];
        for (i, &size) in sizes.iter().enumerate() {
            let frame = if i % 2 == 0 {
                Frame::text("x".repeat(size))
            } else {
                Frame::Binary(vec![7u8; size].into())
            };
            out.push(&frame);
        }
        assert_eq!(out.frames, sizes.len() as u64);
        let frames = parse(&out.buf);
        assert_eq!(frames.len(), sizes.len());
        for (i, ((header, payload), &size)) in frames.iter().zip(&sizes).enumerate() {
            assert!(header.is_final, "frame {i} must be final");
            assert!(header.mask.is_none(), "server frames are unmasked");
            let want = if i % 2 == 0 {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Text,
                )
            } else {
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Binary,
                )
            };
            assert_eq!(header.opcode, want);
            assert_eq!(payload.len(), size);
            let byte = if i % 2 == 0 { b'x' } else { 7 };
            assert!(payload.iter().all(|b| *b == byte));
        }
    }

    #[test]
    fn outbox_fills_at_the_batch_size() {
        let mut out = Outbox::default();
        assert!(!out.is_full());
        out.push(&Frame::text("y".repeat(WRITE_BATCH_BYTES)));
        assert!(out.is_full());
    }
}
