//! The socket: one per connection, multiplexing the channels a client joins.
//!
//! [`SocketCore`] holds a connection's state (serializer, assigns, joined channels)
//! and applies Phoenix's socket rules (`phoenix/lib/phoenix/socket.ex`, v1.8.12):
//! heartbeats, joins (unmatched topic, channel limit, duplicate join), leaves,
//! stale join_refs, messages for unjoined topics, and channel exits turned into
//! `phx_close` / `phx_error`. It does no I/O: a transport (WebSocket or long-poll)
//! feeds it decoded messages and writes the frames it returns and the frames that
//! arrive in the socket's mailbox, in mailbox order.
//!
//! Everything that goes to a client passes through one bounded mailbox, so replies,
//! pushes, broadcasts and closes keep their order; a client that stops reading
//! fills it and is disconnected as a slow client instead of growing memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use phx_protocol::{events, Frame, Message, Payload, Ref, Reply, Serializer};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;

use crate::channel::{ChannelMsg, ChannelSender, ChannelStart};
use crate::endpoint::Shared;
use crate::handler::{Assigns, Connection, TransportKind};
use crate::metrics::Metrics;
use crate::pubsub::{SubId, Subscriber};

/// What reaches a socket's mailbox.
///
/// Kept to two words: tokio's mailbox reserves 32 slots up front, and that block is
/// a large part of what an idle connection costs.
pub(crate) enum SocketMsg {
    /// A frame to write, already encoded (shared by every subscriber of a broadcast).
    Frame(Arc<Frame>),
    /// A channel ended.
    Exit(Box<ChannelExit>),
}

/// How a channel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitKind {
    /// Normal stop or leave: the client gets `phx_close`.
    Close,
    /// Crash: the client gets `phx_error`.
    Crash,
    /// The join was refused or crashed; its reply said so, nothing more is sent.
    JoinFailed,
}

pub(crate) struct ChannelExit {
    pub topic: String,
    pub chan_id: u64,
    pub join_ref: Option<Ref>,
    pub kind: ExitKind,
}

/// Why a transport must close its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A `disconnect` broadcast to the socket id (close code 1001, as Phoenix 1.8).
    Disconnected,
    /// The client let its outbound queue fill (close code 1013).
    SlowClient,
    /// A channel's mailbox is full: the client floods it (close code 1013).
    Flooding,
    /// The server is shutting down (close code 1012, Service Restart).
    Draining,
}

impl CloseReason {
    /// The WebSocket close code for this reason.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Disconnected => 1001,
            CloseReason::SlowClient | CloseReason::Flooding => 1013,
            CloseReason::Draining => 1012,
        }
    }

    /// A short text for the close frame and the logs.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Disconnected => "disconnected",
            CloseReason::SlowClient => "slow client: outbound queue full",
            CloseReason::Flooding => "channel mailbox full",
            CloseReason::Draining => "server restarting",
        }
    }
}

/// State shared between a socket and everything that can reach it.
pub(crate) struct SocketShared {
    /// Set when the socket must close; `wake` tells the transport.
    close: std::sync::Mutex<Option<CloseReason>>,
    slow: AtomicBool,
    wake: Notify,
    /// True once the socket has ended; `closed_notify` wakes its channels, which
    /// then terminate. (A flag and one `Notify`: a `watch` channel costs ~400 bytes.)
    closed: AtomicBool,
    closed_notify: Notify,
    metrics: Arc<Metrics>,
}

/// A sender into a socket's mailbox. Never blocks: when the mailbox is full the
/// client is too slow and the socket is told to close.
#[derive(Clone)]
pub(crate) struct SocketHandle {
    tx: mpsc::Sender<SocketMsg>,
    shared: Arc<SocketShared>,
}

impl SocketHandle {
    pub(crate) fn send(&self, msg: SocketMsg) -> Result<(), crate::RuntimeError> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.shared.slow.swap(true, Ordering::Relaxed) {
                    Metrics::inc(&self.shared.metrics.slow_clients);
                    self.close(CloseReason::SlowClient);
                }
                Err(crate::RuntimeError::SlowClient)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(crate::RuntimeError::Closed),
        }
    }

    pub(crate) fn send_frame(&self, frame: Frame) -> Result<(), crate::RuntimeError> {
        self.send(SocketMsg::Frame(Arc::new(frame)))
    }

    pub(crate) fn send_shared(&self, frame: Arc<Frame>) -> Result<(), crate::RuntimeError> {
        self.send(SocketMsg::Frame(frame))
    }

    /// Asks the transport to close the connection.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut slot = self.shared.close.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.shared.wake.notify_one();
    }

    pub(crate) fn disconnect(&self) {
        self.close(CloseReason::Disconnected);
    }

    /// Resolves once the socket has ended.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shared.closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// One joined (or joining) channel, as the socket sees it.
struct Entry {
    chan_id: u64,
    join_ref: Option<Ref>,
    tx: ChannelSender,
    task: AbortHandle,
}

/// A connection's state; see the module docs.
pub(crate) struct SocketCore {
    shared: Arc<Shared>,
    serializer: Serializer,
    transport: TransportKind,
    handle: SocketHandle,
    assigns: Arc<Assigns>,
    id: Option<Arc<str>>,
    id_sub: Option<SubId>,
    channels: HashMap<String, Entry>,
}

impl SocketCore {
    /// A socket for an accepted connection, and the receiving end of its mailbox.
    pub(crate) fn new(
        shared: Arc<Shared>,
        serializer: Serializer,
        transport: TransportKind,
        conn: Connection,
    ) -> (SocketCore, mpsc::Receiver<SocketMsg>) {
        let (tx, rx) = mpsc::channel(shared.config.outbound_queue.max(1));
        let handle = SocketHandle {
            tx,
            shared: Arc::new(SocketShared {
                close: std::sync::Mutex::new(None),
                slow: AtomicBool::new(false),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
                closed_notify: Notify::new(),
                metrics: shared.metrics.clone(),
            }),
        };
        let id: Option<Arc<str>> = conn.id.map(Arc::from);
        let id_sub = id.as_deref().map(|id| {
            shared.pubsub.add(
                id,
                Subscriber::SocketId {
                    socket: handle.clone(),
                },
            )
        });
        Metrics::inc(&shared.metrics.sockets_open);
        Metrics::inc(&shared.metrics.sockets_accepted);
        let core = SocketCore {
            shared,
            serializer,
            transport,
            handle,
            assigns: Arc::new(conn.assigns),
            id,
            id_sub,
            channels: HashMap::new(),
        };
        (core, rx)
    }

    pub(crate) fn serializer(&self) -> Serializer {
        self.serializer
    }

    /// Waits until something asks this socket to close, and says why.
    pub(crate) async fn close_requested(&self) -> CloseReason {
        loop {
            let notified = self.handle.shared.wake.notified();
            if let Some(reason) = *self
                .handle
                .shared
                .close
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                return reason;
            }
            notified.await;
        }
    }

    fn encode_reply(&self, reply: &Reply) -> Option<Frame> {
        match self.serializer.encode_reply(reply) {
            Ok(frame) => Some(frame),
            Err(err) => {
                tracing::warn!(%err, topic = %reply.topic, "reply cannot be encoded");
                None
            }
        }
    }

    /// Applies one message from the client. Returns a frame to write at once
    /// (socket-level replies), if any.
    pub(crate) fn handle_in(&mut self, msg: Message) -> Option<Frame> {
        if msg.is_heartbeat() {
            return self.encode_reply(&Reply::ok(
                None,
                msg.msg_ref,
                msg.topic,
                Payload::empty_object(),
            ));
        }
        if msg.event == events::JOIN {
            return self.join(msg);
        }
        let Some(entry) = self.channels.get(&msg.topic) else {
            if msg.event == events::LEAVE {
                // Leaving a topic that is not joined: ok, echoing both refs.
                return self.encode_reply(&Reply::ok(
                    msg.join_ref,
                    msg.msg_ref,
                    msg.topic,
                    Payload::empty_object(),
                ));
            }
            Metrics::inc(&self.shared.metrics.unmatched_topics);
            tracing::debug!(topic = %msg.topic, event = %msg.event, "message for a topic this socket has not joined");
            return self.encode_reply(&Reply::error(
                None,
                msg.msg_ref,
                msg.topic,
                unmatched_topic(),
            ));
        };
        // A non-null join_ref that is not the channel's is stale: the client raced a
        // server-side close. Phoenix 1.8 drops such messages silently; the comparison
        // is strict, so the number 1 is not the string "1" (lib/phoenix/socket.ex).
        if msg.join_ref.is_some() && msg.join_ref != entry.join_ref {
            tracing::debug!(topic = %msg.topic, event = %msg.event, "dropping message with a stale join_ref");
            return None;
        }
        if !entry.tx.try_send(ChannelMsg::In(Box::new(msg))) {
            self.handle.close(CloseReason::Flooding);
        }
        None
    }

    fn join(&mut self, msg: Message) -> Option<Frame> {
        let Some(route) = self.shared.route(&msg.topic) else {
            Metrics::inc(&self.shared.metrics.unmatched_topics);
            Metrics::inc(&self.shared.metrics.joins_refused);
            tracing::warn!(topic = %msg.topic, "ignoring unmatched topic");
            return self.encode_reply(&Reply::error(
                None,
                msg.msg_ref,
                msg.topic,
                unmatched_topic(),
            ));
        };
        // A second join of a joined topic replaces the first: the old channel is
        // killed without running terminate, and its phx_close follows the new reply.
        // Like Phoenix, which waits for the old channel to die, its subscription and
        // presences are gone before the new join starts: no duplicate, no ghost.
        let close_old = self.channels.remove(&msg.topic).map(|old| {
            old.task.abort();
            self.shared.pubsub.unsubscribe(&msg.topic, old.chan_id);
            self.shared.presence.untrack_all(old.chan_id);
            tracing::debug!(topic = %msg.topic, "duplicate join: closing the previous channel");
            old.join_ref
        });
        if close_old.is_none() && self.channels.len() >= self.shared.config.max_channels {
            Metrics::inc(&self.shared.metrics.joins_refused);
            tracing::error!(topic = %msg.topic, limit = self.shared.config.max_channels, "too many channels joined on one socket");
            let reason = Payload::from(json!({"reason": "too many channels joined"}));
            return self.encode_reply(&Reply::error(msg.join_ref, msg.msg_ref, msg.topic, reason));
        }
        let chan_id = self.shared.next_id();
        let start = ChannelStart {
            topic: msg.topic.clone(),
            join_ref: msg.join_ref.clone(),
            msg_ref: msg.msg_ref,
            payload: msg.payload,
            chan_id,
            socket: self.handle.clone(),
            serializer: self.serializer,
            transport: self.transport,
            assigns: self.assigns.clone(),
            socket_id: self.id.clone(),
            shared: self.shared.clone(),
            close_old,
        };
        let (tx, task) = (route.spawn)(start);
        self.channels.insert(
            msg.topic,
            Entry {
                chan_id,
                join_ref: msg.join_ref,
                tx,
                task,
            },
        );
        None
    }

    /// Applies a channel's exit. Returns the `phx_close` / `phx_error` to write now.
    pub(crate) fn handle_exit(&mut self, exit: ChannelExit) -> Option<Frame> {
        match self.channels.get(&exit.topic) {
            Some(entry) if entry.chan_id == exit.chan_id => {
                self.channels.remove(&exit.topic);
            }
            // An exit of a channel already replaced (duplicate join) changes nothing.
            _ => return None,
        }
        let msg = match exit.kind {
            ExitKind::JoinFailed => return None,
            ExitKind::Close => Message::close(exit.join_ref, exit.topic),
            ExitKind::Crash => Message::error(exit.join_ref, exit.topic, channel_crash()),
        };
        match self.serializer.encode_message(&msg) {
            Ok(frame) => Some(frame),
            Err(err) => {
                tracing::warn!(%err, topic = %msg.topic, "close frame cannot be encoded");
                None
            }
        }
    }

    /// Applies one mailbox message, returning the frame to write, if any.
    pub(crate) fn handle_mailbox(&mut self, msg: SocketMsg) -> Option<Frame> {
        match msg {
            SocketMsg::Frame(frame) => Some(Arc::unwrap_or_clone(frame)),
            SocketMsg::Exit(exit) => self.handle_exit(*exit),
        }
    }
}

impl Drop for SocketCore {
    fn drop(&mut self) {
        // Every channel terminates (and leaves presence) as soon as its socket ends.
        self.handle.shared.closed.store(true, Ordering::Release);
        self.handle.shared.closed_notify.notify_waiters();
        if let (Some(id), Some(sub)) = (self.id.as_deref(), self.id_sub) {
            self.shared.pubsub.unsubscribe(id, sub);
        }
        Metrics::dec(&self.shared.metrics.sockets_open);
    }
}

/// `{"reason":"unmatched topic"}`.
pub(crate) fn unmatched_topic() -> Payload {
    Payload::from(json!({"reason": "unmatched topic"}))
}

/// `{"reason":"channel_crash"}`, the Phoenix 1.8 `phx_error` payload.
fn channel_crash() -> Payload {
    Payload::from(json!({"reason": "channel_crash"}))
}
