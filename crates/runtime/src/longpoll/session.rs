//! One long-poll session: its handle (how requests reach it), the registry of
//! an endpoint's live sessions, and the session itself, long-poll's wire as the
//! socket loop drives it (frames kept for the next poll, POSTed frames handed
//! to the socket, an end when no poll comes for 1.5 windows).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phx_protocol::{Frame, Message, Serializer};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::longpoll_body::{self, BodyError};
use crate::metrics::Metrics;
use crate::state::EndpointState;
use crate::transport::{Ending, Read, Wire};

/// The random id a session token signs.
pub(super) type SessionId = [u8; 16];

/// A poll: answered with the waiting frames (empty when the window passed).
pub(super) type Poll = oneshot::Sender<Vec<String>>;

/// Frames from the client; the sender is told when they are all handed over.
pub(super) type Post = (Vec<Message>, oneshot::Sender<()>);

/// How requests reach a live session.
#[derive(Clone)]
pub(super) struct SessionHandle {
    pub(super) polls: mpsc::Sender<Poll>,
    pub(super) posts: mpsc::Sender<Post>,
    pub(super) serializer: Serializer,
}

impl SessionHandle {
    /// Hands a POST's messages to its session; the protocol status to answer.
    ///
    /// The POST waits while its session's channels are behind (flow control), but
    /// at most one window: then it answers `{"status":408}`, as Phoenix does when
    /// its session does not take a message within `window_ms` (the lines the
    /// session already took are still handled, in order). With the default window (10 s) the answer
    /// comes well before phoenix.js gives up on the request (its `longpollerTimeout`,
    /// 20 s); on a 408 the client closes and reconnects, as on a stuck channel.
    pub(super) async fn hand_over(&self, shared: &EndpointState, messages: Vec<Message>) -> u16 {
        let (ack, acked) = oneshot::channel();
        let bound = shared.config.longpoll_window;
        let handed = async {
            if self.posts.send((messages, ack)).await.is_err() {
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
    pub(super) async fn poll(&self, shared: &EndpointState) -> Option<Vec<String>> {
        let (tx, rx) = oneshot::channel();
        self.polls.send(tx).await.ok()?;
        match tokio::time::timeout(shared.config.longpoll_window, rx).await {
            Ok(Ok(messages)) => Some(messages),
            Err(_) => Some(Vec::new()),
            Ok(Err(_)) => None,
        }
    }

    /// The frames of a POST body ([`longpoll_body::decode`]); an over-long line is counted.
    pub(super) fn decode(
        &self,
        shared: &EndpointState,
        body: &[u8],
        ndjson: bool,
    ) -> Result<Vec<Message>, BodyError> {
        let max_line = shared.config.longpoll_max_line;
        longpoll_body::decode(body, ndjson, self.serializer, max_line).inspect_err(|e| {
            if matches!(e, BodyError::LineTooLong { .. }) {
                Metrics::inc(&shared.metrics.longpoll_refused);
            }
        })
    }
}

/// The live long-poll sessions of an endpoint.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<SessionId, SessionHandle>>,
}

impl Sessions {
    pub(super) fn get(&self, id: &SessionId) -> Option<SessionHandle> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub(super) fn insert(&self, id: SessionId, handle: SessionHandle) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, handle);
    }

    pub(super) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(super) fn remove(&self, id: &SessionId) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// A session: long-poll's wire, as `transport::drive` drives it. Reading takes
/// the lines of one POST at a time (acknowledging the POST once all are handed
/// to the socket) and answers polls; a flush hands the waiting frames to the
/// poll that waits for them, or keeps them for the next; closing ends the
/// session (and with it the relay that serves other nodes).
pub(super) struct Session {
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
    pub(super) fn new(
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
