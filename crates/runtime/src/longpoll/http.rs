//! The long-poll HTTP exchange: the warp route at `<mount>/longpoll`, the body
//! read within its limit, and the answers to OPTIONS, GET (open a session, or
//! poll one) and POST (hand frames to a session), here or relayed to the node
//! holding the session.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::relay::{relay_request, relay_session};
use super::session::{Session, SessionHandle, SessionId, Sessions};
use super::token::{sign, verify};
use crate::handler::{parse_query, TransportKind};
use crate::metrics::Metrics;
use crate::socket::SocketCore;
use crate::state::EndpointState;
use crate::transport::{
    self, connect, connect_info, exact_path, header, origin_allowed, raw_query, PeerAddr,
};

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

/// The long-poll route at `path`.
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
        match handle.poll(&self.shared).await {
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
        tokio::spawn(transport::drive(session, core, mailbox, shared.clone()));
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
        let messages = match handle.decode(&self.shared, &body, ndjson) {
            Ok(messages) => messages,
            Err(why) => {
                Metrics::inc(&self.shared.metrics.malformed_frames);
                tracing::warn!(%why, "ending long-poll session: malformed frame");
                self.sessions.remove(&id);
                return status(400);
            }
        };
        status(handle.hand_over(&self.shared, messages).await)
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
