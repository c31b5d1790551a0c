//! What both transports share, as Phoenix's `socket/transport.ex`: the peer
//! address, the connect info, the origin check, vsn negotiation and the connect
//! step (the socket handler's `connect`), the small HTTP helpers both routes
//! use, and the socket loop itself ([`drive`]), written once over the small
//! [`Wire`] trait. `websocket.rs` and `longpoll/` keep only their own wire:
//! how a client message is read, how a batch of frames is written, how the
//! connection ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flume::Receiver;
use futures::StreamExt;
use phx_protocol::{Frame, Message, Serializer};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::handler::{ConnectInfo, ConnectRequest, TransportKind};
use crate::mailbox::{CloseReason, SocketMsg};
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::socket::{SocketCore, Step, Wait};
use crate::state::EndpointState;

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
pub(crate) fn origin_allowed(shared: &EndpointState, headers: &HeaderMap) -> bool {
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
pub(crate) fn negotiate(shared: &EndpointState, vsn: Option<&str>) -> Option<Serializer> {
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
    shared: &EndpointState,
    params: crate::handler::Params,
    info: ConnectInfo,
    transport: TransportKind,
) -> Result<(Serializer, crate::handler::Connection), StatusCode> {
    let serializer =
        negotiate(shared, params.get("vsn").map(String::as_str)).ok_or(StatusCode::FORBIDDEN)?;
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
                status = refusal.status.as_u16(),
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
pub(crate) async fn drain_turn(shared: std::sync::Arc<EndpointState>) {
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

/// How a connection ends, as its wire tells the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The client is gone, or nothing can be said to it: just stop.
    Gone,
    /// Tell the client why (a WebSocket close code and its reason).
    Close(CloseReason),
}

/// What a [`Wire::read`] brought.
pub(crate) enum Read {
    /// A client message, decoded: the socket applies it.
    Message(Message),
    /// Nothing for the socket, but the wire has something to write (a pong, a
    /// poll that waits for frames): the loop flushes.
    Flush,
    /// The connection ends.
    End(Ending),
}

/// One transport's side of a connection, as the socket loop ([`drive`]) drives it:
/// read what the client sends, gather frames into a batch and write it, close.
///
/// The loop is generic over the wire (static dispatch, nothing boxed per frame).
/// Every future a wire returns must be cancel-safe: the loop polls them in a
/// `select!` and drops the ones that lose.
pub(crate) trait Wire: Send {
    /// Waits for the client. With `input` false the socket takes no message
    /// (it waits on a join or on a channel with a full mailbox): the wire must not
    /// read one, but may go on with what keeps the connection alive (long-poll
    /// answers polls) and may end it (an idle client). A wire's own idle timeout
    /// lives here.
    fn read(&mut self, input: bool) -> impl Future<Output = Read> + Send;

    /// Adds a frame to the batch the next [`Wire::flush`] writes.
    fn push(&mut self, frame: &Frame);

    /// Whether the batch holds a write's worth: the loop stops taking frames from
    /// the mailbox until it is written.
    fn is_full(&self) -> bool;

    /// Writes the batch (or hands it to whoever waits for it); the number of
    /// frames that left, or `Err` when the connection cannot go on.
    fn flush(&mut self) -> impl Future<Output = Result<u64, Ending>> + Send;

    /// Ends the connection, telling the client why when it can.
    fn close(self, ending: Ending) -> impl Future<Output = ()> + Send;
}

/// Drives one connection until it ends: the socket loop both transports share.
///
/// Each turn waits for the first of: a request to close the socket (a
/// socket-id `disconnect`, a slow client, a channel that lost a message), its
/// turn in a server drain (1012), the end of what the socket waits on, a
/// mailbox message, or the client. The choice is unbiased, so a socket under a
/// sustained broadcast stream still reads its client. While the socket waits on
/// a join or a full channel mailbox it reads nothing from the client (TCP
/// backpressure reaches it; a POST waits) and keeps writing; a wait that lasts
/// past `Config::channel_stall_timeout` ends the socket (1013).
///
/// Each turn then writes what it gathered in one flush: everything queued in
/// the mailbox up to a write's worth ([`Wire::is_full`]). A reply the socket
/// makes itself is written after everything already in the mailbox, so replies
/// leave in request order. The futures that live across turns (the close
/// request, the drain turn) are built once, not per turn.
pub(crate) async fn drive<W: Wire>(
    mut wire: W,
    mut core: SocketCore,
    rx: Receiver<SocketMsg>,
    shared: Arc<EndpointState>,
) {
    let close = core.close_signal();
    tokio::pin!(close);
    let mut drained = Box::pin(drain_turn(shared.clone()));
    // One receive future for the socket's life (a stream over the mailbox), not one
    // per turn: a new one registers a new waker hook (an allocation) each turn and
    // the loser of each select dropped it again.
    let mut mailbox = rx.stream();
    let mut waiting: Option<Wait> = None;
    let ending = loop {
        let input = waiting.is_none();
        tokio::select! {
            reason = &mut close => {
                tracing::info!(code = reason.code(), %reason, "closing socket");
                break Ending::Close(reason);
            }
            () = &mut drained => break Ending::Close(CloseReason::Draining),
            resumed = async { match &mut waiting { Some(w) => w.await, None => std::future::pending().await } } => {
                waiting = None;
                if let Some(frame) = core.resume(resumed) {
                    drain_all(&mut core, &rx, &mut wire);
                    wire.push(&frame);
                }
            }
            msg = mailbox.next() => {
                let Some(msg) = msg else { break Ending::Gone };
                if let Some(frame) = core.handle_mailbox(msg) {
                    wire.push(&frame);
                }
                drain_mailbox(&mut core, &rx, &mut wire);
            }
            read = wire.read(input) => match read {
                Read::Message(msg) => {
                    Metrics::inc(&shared.metrics.frames_in);
                    match core.handle_in(msg) {
                        Step::Nothing => {}
                        Step::Reply(frame) => {
                            drain_all(&mut core, &rx, &mut wire);
                            wire.push(&frame);
                        }
                        Step::Wait(wait) => waiting = Some(wait),
                    }
                }
                Read::Flush => {}
                Read::End(ending) => break ending,
            },
        }
        // Write what is ready, unless the socket is told to close while the client
        // is not reading.
        let flushed = tokio::select! {
            biased;
            flushed = wire.flush() => flushed,
            reason = &mut close => {
                tracing::info!(code = reason.code(), %reason, "closing socket while writing");
                break Ending::Gone;
            }
        };
        match flushed {
            Ok(0) => {}
            Ok(frames) => {
                shared
                    .metrics
                    .frames_out
                    .fetch_add(frames, Ordering::Relaxed);
            }
            Err(ending) => break ending,
        }
    };
    // Boxed: the closing handshake holds the whole wire, and an inline future would
    // keep room for a second copy of it in every connection's task for its life.
    Box::pin(wire.close(ending)).await;
    drop(core);
}

/// Moves mailbox messages into the batch until the mailbox is empty or a
/// write's worth is gathered.
fn drain_mailbox<W: Wire>(core: &mut SocketCore, rx: &Receiver<SocketMsg>, wire: &mut W) {
    while !wire.is_full() {
        match rx.try_recv() {
            Ok(msg) => {
                if let Some(frame) = core.handle_mailbox(msg) {
                    wire.push(&frame);
                }
            }
            Err(_) => break,
        }
    }
}

/// Moves everything waiting in the mailbox into the batch, in order, however
/// many bytes: called before a reply the socket makes itself, which must not
/// overtake anything queued before it.
fn drain_all<W: Wire>(core: &mut SocketCore, rx: &Receiver<SocketMsg>, wire: &mut W) {
    while let Ok(msg) = rx.try_recv() {
        if let Some(frame) = core.handle_mailbox(msg) {
            wire.push(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use phx_protocol::Payload;
    use serde_json::{json, Value};

    use super::*;
    use crate::channel::{Channel, ChannelContext, HandleIn};
    use crate::endpoint::Endpoint;
    use crate::handler::Connection;
    use crate::RuntimeError;

    /// What the loop did with a [`Script`] wire.
    #[derive(Default)]
    struct Log {
        /// The `input` of every read the loop polled.
        inputs: Vec<bool>,
        /// Pushed frames, as JSON.
        frames: Vec<Value>,
        /// The frame counts of the flushes that wrote something.
        flushes: Vec<u64>,
        ending: Option<Ending>,
    }

    /// A wire that plays client messages from a script (reading nothing while
    /// the socket takes no input) and logs the rest.
    struct Script {
        reads: VecDeque<Read>,
        batch: u64,
        log: Arc<Mutex<Log>>,
    }

    impl Script {
        fn new(lines: &[&str], end: Ending) -> (Script, Arc<Mutex<Log>>) {
            let mut reads: VecDeque<Read> = lines
                .iter()
                .map(|l| {
                    let msg = Serializer::V2Json
                        .decode_text(l)
                        .unwrap_or_else(|e| panic!("bad test line {l}: {e}"));
                    Read::Message(msg)
                })
                .collect();
            reads.push_back(Read::End(end));
            let log = Arc::new(Mutex::new(Log::default()));
            let wire = Script {
                reads,
                batch: 0,
                log: log.clone(),
            };
            (wire, log)
        }

        fn log(&self) -> std::sync::MutexGuard<'_, Log> {
            self.log.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl Wire for Script {
        async fn read(&mut self, input: bool) -> Read {
            self.log().inputs.push(input);
            if !input {
                return std::future::pending().await;
            }
            match self.reads.pop_front() {
                Some(read) => read,
                None => std::future::pending().await,
            }
        }

        fn push(&mut self, frame: &Frame) {
            let Frame::Text(text) = frame else {
                panic!("the test sends text only")
            };
            let value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            self.log().frames.push(value);
            self.batch += 1;
        }

        fn is_full(&self) -> bool {
            false
        }

        async fn flush(&mut self) -> Result<u64, Ending> {
            let n = std::mem::take(&mut self.batch);
            if n > 0 {
                self.log().flushes.push(n);
            }
            Ok(n)
        }

        async fn close(self, ending: Ending) {
            self.log().ending = Some(ending);
        }
    }

    /// Answers its join after 100 ms.
    struct SlowJoin;

    impl Channel for SlowJoin {
        type Info = ();

        async fn join(
            &mut self,
            _topic: &str,
            _payload: Payload,
            _ctx: &mut ChannelContext,
        ) -> Result<Payload, Payload> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(Payload::empty_object())
        }

        async fn handle_in(
            &mut self,
            _event: &str,
            _payload: Payload,
            _ctx: &mut ChannelContext,
        ) -> Result<HandleIn, RuntimeError> {
            Ok(HandleIn::NoReply)
        }
    }

    async fn run_script(lines: &[&str]) -> (Log, Endpoint) {
        let endpoint = Endpoint::builder()
            .channel("slow:*", |_, _| SlowJoin)
            .build();
        let shared = endpoint.state.clone();
        let (core, rx) = SocketCore::new(
            shared.sockets.clone(),
            Serializer::V2Json,
            TransportKind::WebSocket,
            Connection::new(),
        );
        let (wire, log) = Script::new(lines, Ending::Close(CloseReason::Disconnected));
        tokio::time::timeout(Duration::from_secs(5), drive(wire, core, rx, shared))
            .await
            .expect("the loop ends with the script");
        let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
        (log, endpoint)
    }

    /// The ref (index 1) of every pushed frame.
    fn refs(log: &Log) -> Vec<Value> {
        log.frames.iter().map(|f| f[1].clone()).collect()
    }

    #[tokio::test]
    async fn replies_are_flushed_and_the_wire_closes_with_its_own_ending() {
        let (log, endpoint) = run_script(&[
            r#"[null,"1","phoenix","heartbeat",{}]"#,
            r#"[null,"2","nowhere:1","ping",{}]"#,
        ])
        .await;
        assert_eq!(refs(&log), [json!("1"), json!("2")]);
        assert_eq!(log.frames[1][4]["response"]["reason"], "unmatched topic");
        // Each reply left in the flush of the turn that read its request.
        assert_eq!(log.flushes, [1, 1]);
        assert!(
            log.inputs.iter().all(|i| *i),
            "nothing made the socket wait"
        );
        assert_eq!(log.ending, Some(Ending::Close(CloseReason::Disconnected)));
        let metrics = endpoint.metrics();
        assert_eq!(metrics.frames_in, 2);
        assert_eq!(metrics.frames_out, 2);
    }

    #[tokio::test]
    async fn a_pending_join_stops_reading_and_its_reply_comes_first() {
        let (log, _endpoint) = run_script(&[
            r#"["1","1","slow:a","phx_join",{}]"#,
            r#"[null,"2","phoenix","heartbeat",{}]"#,
        ])
        .await;
        // The heartbeat is read only once the join answered, so its reply follows.
        assert_eq!(refs(&log), [json!("1"), json!("2")]);
        assert_eq!(log.frames[0][3], "phx_reply");
        assert_eq!(log.frames[0][4]["status"], "ok");
        // The turn after the join read nothing from the client.
        assert_eq!(log.inputs.get(1), Some(&false), "{:?}", log.inputs);
    }
}
