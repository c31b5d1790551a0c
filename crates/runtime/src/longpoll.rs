//! The long-poll transport at `<mount>/longpoll`, as phoenix.js's `LongPoll` uses it
//! (`phoenix/lib/phoenix/transports/long_poll.ex`, `long_poll_server.ex`, v1.8.12).
//!
//! - Every answer is HTTP 200 with a JSON body whose `status` is the protocol
//!   status, `content-type: application/json; charset=utf-8`,
//!   `cache-control: no-store` and `access-control-allow-origin: *`. OPTIONS is a
//!   CORS preflight; any other method gets a real 400.
//! - A GET without a live session creates one (after check_origin, vsn and the
//!   socket handler: any refusal is `{"status":403}`) and answers
//!   `{"status":410,"token":…,"messages":[]}`. A GET with a live session answers at
//!   once with the waiting messages (`200`, each a JSON string holding one frame),
//!   or after the window (10 s by default) with `204`.
//! - A POST carries frames: `application/x-ndjson` bodies are split into lines (the
//!   first 100 count; `[`-lines are JSON, other lines base64 binary frames), any other
//!   body is one frame. `{"status":200}` once they are handled; `{"status":408}` when
//!   the session's channels did not take them within one window (flow control;
//!   the client reconnects); `{"status":410}` without a live session; a malformed
//!   frame ends the session and answers `{"status":400}`.
//! - The token rides in `?token=` or the `x-phoenix-longpoll-token` header (which
//!   wins). It is the session id signed with HMAC-SHA256 and the endpoint secret, so
//!   it cannot be guessed or forged.
//! - A session with no poll for 1.5 windows ends, like a closed WebSocket: its
//!   channels stop and its presences leave. So does a session whose client lets more
//!   than `outbound_queue` frames, or more than `socket_buffer_bytes` bytes, wait
//!   for a poll (a slow client, counted), a socket-id `disconnect`, and a drain.
//!
//! - Across a cluster (as Phoenix routes them over PubSub): every session
//!   listens on the PubSub topic `phx:lp:<session id>`. A request whose session
//!   lives on another node (its token is valid, the session is not here) is
//!   relayed there: the node publishes the poll or the POST's body on that topic
//!   with a private reply topic, the session's node acknowledges at once and
//!   answers when the local path would. No acknowledgement within 2 s means the
//!   session is gone everywhere: a GET opens a new one, a POST gets 410. Every
//!   node must sign with the same secret (`Config::secret`).
//!
//! One task per session runs the socket loop ([`transport::run`]) over the
//! session's wire ([`Session`]): it owns the [`SocketCore`] and the frames
//! waiting for a poll.
//! Server-to-client binary frames cannot travel over long-poll (as in Phoenix):
//! they are dropped with a warning.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use phx_protocol::{Frame, Message, Serializer};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::handler::{parse_query, TransportKind};
use crate::longpoll_body::{self, BodyError};
use crate::metrics::Metrics;
use crate::socket::SocketCore;
use crate::state::EndpointState;
use crate::transport::{
    self, connect, connect_info, exact_path, header, origin_allowed, raw_query, Ending, PeerAddr,
    Read, Wire,
};

type SessionId = [u8; 16];

/// A poll: answered with the waiting frames (empty when the window passed).
type Poll = oneshot::Sender<Vec<String>>;

/// Frames from the client; the sender is told when they are all handed over.
type Post = (Vec<Message>, oneshot::Sender<()>);

#[derive(Clone)]
struct SessionHandle {
    polls: mpsc::Sender<Poll>,
    posts: mpsc::Sender<Post>,
    serializer: Serializer,
}

/// The live long-poll sessions of an endpoint.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<SessionId, SessionHandle>>,
}

impl Sessions {
    fn get(&self, id: &SessionId) -> Option<SessionHandle> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, id: SessionId, handle: SessionHandle) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, handle);
    }

    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn remove(&self, id: &SessionId) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// `base64url(id ‖ HMAC-SHA256(secret, id))`.
fn sign(secret: &[u8], id: &SessionId) -> String {
    let mut m = mac(secret);
    m.update(id);
    let mut bytes = id.to_vec();
    bytes.extend_from_slice(&m.finalize().into_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The session id of a well-signed token.
fn verify(secret: &[u8], token: &str) -> Option<SessionId> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    if bytes.len() != 16 + 32 {
        return None;
    }
    let (id, tag) = bytes.split_at(16);
    let mut m = mac(secret);
    m.update(id);
    m.verify_slice(tag).ok()?;
    id.try_into().ok()
}

/// The request body, read only while it stays within `limit` bytes; `None` for
/// a larger one (answered 413): reading stops at the limit, chunked or not.
fn body_within(
    limit: usize,
) -> impl Filter<Extract = (Option<Bytes>,), Error = warp::Rejection> + Clone {
    warp::body::stream().then(move |stream| read_limited(stream, limit))
}

async fn read_limited<S, B>(stream: S, limit: usize) -> Option<Bytes>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use bytes::BufMut;
    use futures::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.ok()?;
        if body.len() + chunk.remaining() > limit {
            return None;
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            body.put_slice(piece);
            chunk.advance(n);
        }
    }
    Some(body.freeze())
}

pub(crate) fn route(
    shared: Arc<EndpointState>,
    sessions: Arc<Sessions>,
    path: String,
) -> BoxedFilter<(Response,)> {
    let full_path = path.clone();
    exact_path(path)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(raw_query())
        .and(body_within(shared.config.longpoll_max_body))
        .and(warp::ext::optional::<PeerAddr>())
        .then(
            move |method, headers, query, body, peer: Option<PeerAddr>| {
                let req = LpRequest {
                    shared: shared.clone(),
                    sessions: sessions.clone(),
                    method,
                    headers,
                    path: full_path.clone(),
                    query,
                    body,
                    peer: peer.map(|p| p.0),
                };
                req.handle()
            },
        )
        .boxed()
}

struct LpRequest {
    shared: Arc<EndpointState>,
    sessions: Arc<Sessions>,
    method: Method,
    headers: HeaderMap,
    path: String,
    query: String,
    body: Option<Bytes>,
    peer: Option<std::net::SocketAddr>,
}

/// A 200 answer carrying `body`, with Phoenix's long-poll headers.
fn answer(body: Value) -> Response {
    let mut resp = Response::new(body.to_string().into());
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    resp
}

fn status(code: u16) -> Response {
    answer(json!({"status": code}))
}

impl LpRequest {
    async fn handle(self) -> Response {
        // Every request, not only the first, comes from an allowed origin; as in
        // Phoenix's `call/2`, the check runs before the method is looked at.
        if !origin_allowed(&self.shared, &self.headers) {
            return status(403);
        }
        match self.method {
            Method::OPTIONS => self.preflight(),
            Method::GET => self.get().await,
            Method::POST => self.post().await,
            _ => {
                let mut resp = Response::new("".into());
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                resp
            }
        }
    }

    /// Phoenix's preflight: 200, an empty body, the asked headers echoed (empty
    /// when none were asked).
    fn preflight(&self) -> Response {
        let mut resp = Response::new("".into());
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        let asked = self.headers.get("access-control-request-headers").cloned();
        h.insert(
            "access-control-allow-headers",
            asked.unwrap_or(HeaderValue::from_static("")),
        );
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("get, post, options"),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("3600"));
        resp
    }

    /// The session the request's token points to: here, elsewhere (maybe), or none.
    fn session(&self) -> Found {
        let params = parse_query(&self.query);
        let Some(token) = header(&self.headers, "x-phoenix-longpoll-token")
            .map(str::to_owned)
            .or_else(|| params.get("token").cloned())
        else {
            return Found::None;
        };
        let Some(id) = verify(&self.shared.config.secret, &token) else {
            return Found::None;
        };
        match self.sessions.get(&id) {
            Some(handle) => Found::Here(id, handle),
            // Only a cluster has an elsewhere: one node answers at once.
            None if self.shared.pubsub.clustered() => Found::Elsewhere(id),
            None => Found::None,
        }
    }

    async fn get(self) -> Response {
        let (id, handle) = match self.session() {
            Found::Here(id, handle) => (id, handle),
            Found::Elsewhere(id) => {
                let token = sign(&self.shared.config.secret, &id);
                return match relay_request(&self.shared, &id, "poll", json!({})).await {
                    Some(answer_body) if answer_body.get("status") != Some(&json!(410)) => {
                        let messages = answer_body
                            .get("messages")
                            .cloned()
                            .unwrap_or_else(|| json!([]));
                        let empty = messages.as_array().is_none_or(Vec::is_empty);
                        let code = if empty { 204 } else { 200 };
                        answer(json!({"status": code, "token": token, "messages": messages}))
                    }
                    _ => self.open().await,
                };
            }
            Found::None => return self.open().await,
        };
        let token = sign(&self.shared.config.secret, &id);
        match poll(&self.shared, &handle).await {
            Some(messages) if !messages.is_empty() => {
                answer(json!({"status": 200, "token": token, "messages": messages}))
            }
            Some(_) => answer(json!({"status": 204, "token": token, "messages": []})),
            None => self.open().await,
        }
    }

    /// Creates a session: `{"status":410,"token":…}` or `{"status":403}`.
    async fn open(self) -> Response {
        let shared = self.shared.clone();
        if self.sessions.len() >= shared.config.max_longpoll_sessions {
            Metrics::inc(&shared.metrics.longpoll_refused);
            tracing::warn!(
                limit = shared.config.max_longpoll_sessions,
                "refusing long-poll session: too many open"
            );
            return status(403);
        }
        let mut params = parse_query(&self.query);
        // `token` is the session's when we signed it; any other is the app's own
        // (phoenix.js `params: {token}`), which its socket handler verifies.
        if params
            .get("token")
            .is_some_and(|t| verify(&shared.config.secret, t).is_some())
        {
            params.remove("token");
        }
        let mut info = connect_info(&self.headers, &self.path, &self.query, self.peer);
        info.auth_token = header(&self.headers, "x-phoenix-authtoken").map(str::to_owned);
        // Long-poll answers every refusal with {"status":403}, as Phoenix does.
        let Ok((serializer, conn)) = connect(&shared, params, info, TransportKind::LongPoll).await
        else {
            return status(403);
        };
        let id: SessionId = rand::random();
        let (polls, poll_rx) = mpsc::channel(4);
        let (posts, post_rx) = mpsc::channel(4);
        let handle = SessionHandle {
            polls,
            posts,
            serializer,
        };
        self.sessions.insert(id, handle.clone());
        if shared.pubsub.clustered() {
            tokio::spawn(relay_session(
                shared.clone(),
                self.sessions.clone(),
                id,
                handle,
            ));
        }
        let (core, mailbox) = SocketCore::new(
            shared.sockets.clone(),
            serializer,
            TransportKind::LongPoll,
            conn,
        );
        let session = Session::new(shared.clone(), self.sessions.clone(), id, poll_rx, post_rx);
        tokio::spawn(transport::run(session, core, mailbox, shared.clone()));
        tracing::debug!(vsn = serializer.vsn(), "long-poll session opened");
        answer(json!({"status": 410, "token": sign(&shared.config.secret, &id), "messages": []}))
    }

    async fn post(self) -> Response {
        let Some(body) = self.body.clone() else {
            Metrics::inc(&self.shared.metrics.longpoll_refused);
            tracing::warn!(
                limit = self.shared.config.longpoll_max_body,
                "long-poll POST body over the limit"
            );
            let mut resp = Response::new("".into());
            *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return resp;
        };
        let (id, handle) = match self.session() {
            Found::Here(id, handle) => (id, handle),
            Found::Elsewhere(id) => {
                let Ok(text) = std::str::from_utf8(&body) else {
                    return status(400);
                };
                let ndjson = header(&self.headers, "content-type") == Some("application/x-ndjson");
                let req = json!({"body": text, "ndjson": ndjson});
                return match relay_request(&self.shared, &id, "post", req).await {
                    Some(reply) => {
                        let code = reply.get("status").and_then(Value::as_u64).unwrap_or(410);
                        status(u16::try_from(code).unwrap_or(500))
                    }
                    None => status(410),
                };
            }
            Found::None => return status(410),
        };
        let ndjson = header(&self.headers, "content-type") == Some("application/x-ndjson");
        let messages = match decode(&self.shared, &body, ndjson, handle.serializer) {
            Ok(messages) => messages,
            Err(why) => {
                Metrics::inc(&self.shared.metrics.malformed_frames);
                tracing::warn!(%why, "ending long-poll session: malformed frame");
                self.sessions.remove(&id);
                return status(400);
            }
        };
        status(hand_over(&self.shared, &handle, messages).await)
    }
}

/// Where a request's session lives.
enum Found {
    /// On this node.
    Here(SessionId, SessionHandle),
    /// Not here, but the token is valid: maybe on another node.
    Elsewhere(SessionId),
    /// No valid token.
    None,
}

/// Hands a POST's messages to its session; the protocol status to answer.
///
/// The POST waits while its session's channels are behind (flow control), but
/// at most one window: then it answers `{"status":408}`, as Phoenix does when
/// its session does not take a message within `window_ms` (the lines the
/// session already took are still handled, in order). With the default window (10 s) the answer
/// comes well before phoenix.js gives up on the request (its `longpollerTimeout`,
/// 20 s); on a 408 the client closes and reconnects, as on a stuck channel.
async fn hand_over(shared: &EndpointState, handle: &SessionHandle, messages: Vec<Message>) -> u16 {
    let (ack, acked) = oneshot::channel();
    let bound = shared.config.longpoll_window;
    let handed = async {
        if handle.posts.send((messages, ack)).await.is_err() {
            return Err(());
        }
        acked.await.map_err(|_| ())
    };
    match tokio::time::timeout(bound, handed).await {
        Ok(Ok(())) => 200,
        Ok(Err(_)) => 410,
        Err(_) => 408,
    }
}

/// Hands a poll to its session; the frames it answered with (empty once the
/// window passed), or `None` when the session has ended.
async fn poll(shared: &EndpointState, handle: &SessionHandle) -> Option<Vec<String>> {
    let (tx, rx) = oneshot::channel();
    handle.polls.send(tx).await.ok()?;
    match tokio::time::timeout(shared.config.longpoll_window, rx).await {
        Ok(Ok(messages)) => Some(messages),
        Err(_) => Some(Vec::new()),
        Ok(Err(_)) => None,
    }
}

/// The frames of a POST body ([`longpoll_body::decode`]); an over-long line is counted.
fn decode(
    shared: &EndpointState,
    body: &[u8],
    ndjson: bool,
    serializer: Serializer,
) -> Result<Vec<Message>, String> {
    longpoll_body::decode(body, ndjson, serializer, shared.config.longpoll_max_line).map_err(|e| {
        if matches!(e, BodyError::LineTooLong { .. }) {
            Metrics::inc(&shared.metrics.longpoll_refused);
        }
        e.to_string()
    })
}

/// How long a node waits for the session's node to acknowledge a relayed request.
const RELAY_ACK: Duration = Duration::from_secs(2);

/// The PubSub topic a session listens on for requests that reached other nodes.
fn session_topic(id: &SessionId) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("phx:lp:{hex}")
}

/// Relays a request to the node holding session `id`: the answer's payload,
/// or `None` when no node acknowledged it within [`RELAY_ACK`].
async fn relay_request(
    shared: &EndpointState,
    id: &SessionId,
    event: &str,
    mut request: Value,
) -> Option<Value> {
    let reply_topic = format!("phx:lpr:{:032x}", rand::random::<u128>());
    let mut replies = shared.pubsub.subscribe(&reply_topic, 4);
    request["reply"] = Value::String(reply_topic);
    let payload = phx_protocol::Payload::json(&request).ok()?;
    shared.pubsub.broadcast(&session_topic(id), event, payload);
    let acked = tokio::time::timeout(RELAY_ACK, async {
        while let Some(b) = replies.recv().await {
            if b.event == "ack" {
                return true;
            }
        }
        false
    })
    .await;
    if acked != Ok(true) {
        tracing::debug!("long-poll request: no node holds its session");
        return None;
    }
    // The session's node answers within a window (a poll's or a POST's bound).
    let bound = shared.config.longpoll_window + RELAY_ACK;
    let answered = tokio::time::timeout(bound, async {
        while let Some(b) = replies.recv().await {
            if b.event == "answer" {
                return b.payload.parse::<Value>().ok();
            }
        }
        None
    })
    .await;
    match answered {
        Ok(Some(body)) => Some(body),
        // Acknowledged but not answered in time: answer as the local path would.
        Ok(None) | Err(_) => Some(json!({"status": 408, "messages": []})),
    }
}

/// Serves the requests other nodes relay to session `id` until it ends.
async fn relay_session(
    shared: Arc<EndpointState>,
    sessions: Arc<Sessions>,
    id: SessionId,
    handle: SessionHandle,
) {
    let mut requests = shared.pubsub.subscribe(&session_topic(&id), 64);
    loop {
        let req = tokio::select! {
            () = handle.polls.closed() => break,
            req = requests.recv() => match req {
                Some(req) => req,
                None => {
                    // Fell behind: listen again.
                    requests = shared.pubsub.subscribe(&session_topic(&id), 64);
                    continue;
                }
            },
        };
        if sessions.get(&id).is_none() {
            break; // ended (a malformed frame): unanswered, the asker says 410
        }
        let Ok(body) = req.payload.parse::<Value>() else {
            tracing::warn!("relayed long-poll request is not JSON: ignored");
            continue;
        };
        let Some(reply) = body.get("reply").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        let (shared, handle, event) = (shared.clone(), handle.clone(), req.event.clone());
        tokio::spawn(async move {
            shared
                .pubsub
                .broadcast(&reply, "ack", phx_protocol::Payload::empty_object());
            let answer = match event.as_str() {
                "poll" => match poll(&shared, &handle).await {
                    Some(messages) => json!({"messages": messages}),
                    None => json!({"status": 410, "messages": []}),
                },
                "post" => {
                    let text = body.get("body").and_then(Value::as_str).unwrap_or_default();
                    let ndjson = body.get("ndjson").and_then(Value::as_bool) == Some(true);
                    match decode(&shared, text.as_bytes(), ndjson, handle.serializer) {
                        Ok(messages) => {
                            json!({"status": hand_over(&shared, &handle, messages).await})
                        }
                        Err(why) => {
                            Metrics::inc(&shared.metrics.malformed_frames);
                            tracing::warn!(%why, "relayed long-poll POST: malformed frame");
                            json!({"status": 400})
                        }
                    }
                }
                _ => return,
            };
            match phx_protocol::Payload::json(&answer) {
                Ok(payload) => shared.pubsub.broadcast(&reply, "answer", payload),
                Err(err) => tracing::warn!(%err, "long-poll relay answer not encodable"),
            }
        });
    }
}

/// A session: long-poll's wire, as [`transport::run`] drives it. Reading takes
/// the lines of one POST at a time (acknowledging the POST once all are handed
/// to the socket) and answers polls; a flush hands the waiting frames to the
/// poll that waits for them, or keeps them for the next; closing ends the
/// session (and with it the relay that serves other nodes).
struct Session {
    shared: Arc<EndpointState>,
    sessions: Arc<Sessions>,
    id: SessionId,
    polls: mpsc::Receiver<Poll>,
    posts: mpsc::Receiver<Post>,
    /// Frames for the next poll.
    waiting: Vec<String>,
    /// Their bytes: counted against `Config::socket_buffer_bytes`, as a
    /// WebSocket's queued frames are.
    waiting_bytes: usize,
    /// The poll waiting for frames, if any.
    poller: Option<Poll>,
    last_poll: Instant,
    /// A session with no poll for this long ends.
    idle_limit: Duration,
    check: tokio::time::Interval,
    /// The lines of the POST being read.
    input: VecDeque<Message>,
    /// Told when `input` is all handed over.
    ack: Option<oneshot::Sender<()>>,
}

impl Session {
    fn new(
        shared: Arc<EndpointState>,
        sessions: Arc<Sessions>,
        id: SessionId,
        polls: mpsc::Receiver<Poll>,
        posts: mpsc::Receiver<Post>,
    ) -> Session {
        Metrics::inc(&shared.metrics.longpoll_sessions);
        let idle_limit = shared.config.longpoll_window.mul_f32(1.5);
        let period = idle_limit.max(Duration::from_millis(10));
        Session {
            shared,
            sessions,
            id,
            polls,
            posts,
            waiting: Vec::new(),
            waiting_bytes: 0,
            poller: None,
            last_poll: Instant::now(),
            idle_limit,
            check: tokio::time::interval_at(Instant::now() + period, period),
            input: VecDeque::new(),
            ack: None,
        }
    }
}

impl Wire for Session {
    async fn read(&mut self, input: bool) -> Read {
        loop {
            if input {
                if let Some(msg) = self.input.pop_front() {
                    return Read::Message(msg);
                }
                if let Some(ack) = self.ack.take() {
                    let _ = ack.send(());
                }
            }
            // Polls are answered even while the socket takes no input.
            tokio::select! {
                poll = self.polls.recv() => {
                    let Some(tx) = poll else { return Read::End(Ending::Gone) };
                    self.last_poll = Instant::now();
                    if let Some(old) = self.poller.replace(tx) {
                        let _ = old.send(Vec::new());
                    }
                    return Read::Flush;
                }
                post = self.posts.recv(), if input => {
                    let Some((messages, tx)) = post else { return Read::End(Ending::Gone) };
                    self.input.extend(messages);
                    self.ack = Some(tx);
                }
                _ = self.check.tick() => {
                    let polling = self.poller.as_ref().is_some_and(|p| !p.is_closed());
                    if !polling && self.last_poll.elapsed() > self.idle_limit {
                        tracing::debug!("ending long-poll session: no poll within 1.5 windows");
                        return Read::End(Ending::Gone);
                    }
                }
            }
        }
    }

    /// Keeps `frame` for the next poll.
    fn push(&mut self, frame: &Frame) {
        match frame {
            Frame::Text(text) => {
                self.waiting_bytes = self.waiting_bytes.saturating_add(text.as_str().len());
                self.waiting.push(text.as_str().to_owned());
            }
            Frame::Binary(_) => {
                tracing::warn!("binary frames cannot be sent over long-poll: dropped");
            }
        }
    }

    /// A write's worth: `outbound_queue` frames, or the socket's byte budget.
    /// The loop then leaves further frames in the mailbox (where they count
    /// against the same budget) until a poll takes these.
    fn is_full(&self) -> bool {
        self.waiting.len() > self.shared.config.outbound_queue
            || self.waiting_bytes >= self.shared.config.socket_buffer_bytes
    }

    /// Hands the waiting frames to the poll that waits for them. Past
    /// `outbound_queue` frames, or past the socket's byte budget (a single frame
    /// always fits), the client is too slow and the session ends, as a
    /// WebSocket whose client does not read.
    async fn flush(&mut self) -> Result<u64, Ending> {
        let budget = self.shared.config.socket_buffer_bytes;
        let over_budget = self.waiting.len() > 1 && self.waiting_bytes > budget;
        if self.waiting.len() > self.shared.config.outbound_queue || over_budget {
            Metrics::inc(&self.shared.metrics.slow_clients);
            if over_budget {
                Metrics::inc(&self.shared.metrics.longpoll_over_budget);
            }
            tracing::info!(
                frames = self.waiting.len(),
                bytes = self.waiting_bytes,
                budget,
                "ending long-poll session: too much waiting for a poll (slow client)"
            );
            return Err(Ending::Gone);
        }
        if self.waiting.is_empty() {
            return Ok(0);
        }
        let Some(tx) = self.poller.take() else {
            return Ok(0);
        };
        let count = self.waiting.len() as u64;
        match tx.send(std::mem::take(&mut self.waiting)) {
            Ok(()) => {
                self.waiting_bytes = 0;
                Ok(count)
            }
            // The poll gave up (its window passed): keep the frames for the next.
            Err(frames) => {
                self.waiting = frames;
                Ok(0)
            }
        }
    }

    /// Ends the session: it is forgotten at once (its token answers 410 or opens
    /// a new session), and its relay stops when the poll channel closes.
    async fn close(self, ending: Ending) {
        if let Ending::Close(reason) = &ending {
            tracing::debug!(code = reason.code(), %reason, "long-poll session ended");
        }
        self.sessions.remove(&self.id);
        Metrics::dec(&self.shared.metrics.longpoll_sessions);
    }
}
