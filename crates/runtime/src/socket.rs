//! The socket: one per connection, multiplexing the channels a client joins.
//!
//! [`SocketCore`] holds a connection's state (serializer, assigns, joined channels)
//! and applies Phoenix's socket rules (`phoenix/lib/phoenix/socket.ex`, v1.8.12):
//! heartbeats, joins (unmatched topic, channel limit, duplicate join), leaves,
//! stale join_refs, messages for unjoined topics, and channel exits turned into
//! `phx_close` / `phx_error`. It does no I/O: the socket loop
//! (`transport::drive`, over a WebSocket or long-poll wire) feeds it decoded
//! messages and writes the frames it returns and the frames that arrive in the
//! socket's mailbox, in mailbox order.
//!
//! Everything a channel sends a client passes through one bounded mailbox, so
//! replies, pushes, broadcasts and closes keep their order; a client that stops
//! reading fills it and is disconnected as a slow client instead of growing memory.
//! Replies the socket makes itself (heartbeat, unmatched topic) are written after
//! everything already in the mailbox, so they never overtake an earlier reply.
//!
//! A join runs synchronously, as in Phoenix: [`SocketCore::handle_in`] answers a
//! `phx_join` with a [`Step::Wait`], and the socket loop reads nothing more from its
//! client until it resolves (it keeps writing). The same wait is how flow control
//! works: a client message for a channel whose mailbox is full waits for room, so
//! TCP backpressure reaches the client; only a channel stuck for longer than
//! `Config::channel_stall_timeout` ends the socket (1013).

use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use phx_protocol::{events, Frame, Message, Payload, Ref, Reply, Serializer};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::channel::{ChannelEnv, ChannelStart, Spawned};
use crate::handler::{Assigns, Connection, TransportKind};
use crate::mailbox::{
    message_size, ChannelExit, CloseReason, ExitKind, Inbound, Inbox, JoinOutcome, SocketHandle,
    SocketMsg,
};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::pubsub::{PubSub, SubId, Subscriber};

/// Starts a route's channel.
pub(crate) type Spawner = Box<dyn Fn(ChannelStart) -> Spawned + Send + Sync>;

/// A topic pattern and the channel that serves it.
pub(crate) struct Route {
    pub(crate) pattern: String,
    pub(crate) prefix: bool,
    pub(crate) spawn: Spawner,
}

impl Route {
    /// Phoenix's matching: `room:*` matches every topic starting with `room:`
    /// (the splat must be last); anything else matches exactly.
    fn matches(&self, topic: &str) -> bool {
        if self.prefix {
            topic.starts_with(&self.pattern)
        } else {
            topic == self.pattern
        }
    }
}

/// What every socket of an endpoint shares: the channel routes, the socket
/// limits, and what the channels it starts share.
pub(crate) struct SocketEnv {
    pub(crate) routes: Vec<Route>,
    pub(crate) channels: Arc<ChannelEnv>,
    /// `Config::outbound_queue`.
    pub(crate) outbound_queue: usize,
    /// `Config::socket_buffer_bytes`.
    pub(crate) socket_buffer_bytes: usize,
    /// `Config::channel_stall_timeout`.
    pub(crate) channel_stall_timeout: Duration,
    /// `Config::max_topic_length`.
    pub(crate) max_topic_length: usize,
    /// `Config::max_channels`.
    pub(crate) max_channels: usize,
}

impl SocketEnv {
    /// The route serving `topic`; none for an internal topic, which no client
    /// may join whatever the routes say.
    fn route(&self, topic: &str) -> Option<&Route> {
        if crate::pubsub::is_internal(topic) {
            return None;
        }
        self.routes.iter().find(|r| r.matches(topic))
    }

    fn metrics(&self) -> &Metrics {
        &self.channels.metrics
    }

    fn pubsub(&self) -> &PubSub {
        &self.channels.pubsub
    }

    fn presence(&self) -> &Presence {
        &self.channels.presence
    }
}

/// What the transport does after handing the socket one client message.
pub(crate) enum Step {
    /// Nothing to write now.
    Nothing,
    /// A reply from the socket itself: write it after what the mailbox holds.
    Reply(Frame),
    /// Read nothing more from the client until this resolves (writing goes on),
    /// then hand the result to [`SocketCore::resume`].
    Wait(Wait),
}

/// A pending join, or a client message waiting for room in a channel's mailbox.
pub(crate) struct Wait(BoxFuture<'static, Resumed>);

impl Future for Wait {
    type Output = Resumed;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Resumed> {
        self.0.as_mut().poll(cx)
    }
}

/// How a [`Wait`] ended.
pub(crate) enum Resumed {
    /// A join finished (or its task died before saying how).
    Join {
        topic: String,
        chan_id: u64,
        join_ref: Option<Ref>,
        msg_ref: Option<Ref>,
        outcome: Option<JoinOutcome>,
    },
    /// The waiting message reached its channel's mailbox.
    Delivered,
    /// The channel took nothing within the stall timeout.
    Stuck { topic: String },
}

/// One joined (or joining) channel, as the socket sees it.
struct Entry {
    chan_id: u64,
    join_ref: Option<Ref>,
    inbox: Arc<dyn Inbox>,
    task: AbortHandle,
}

/// The channels of one socket by topic: a vector sorted by topic, searched by
/// bisection. Most sockets hold one to a few channels for their whole life; a
/// hash map's smallest table (four buckets of topic and entry, ~400 B) is most of
/// that, where the vector holds exactly what is joined. Joins and leaves shift
/// the vector (at most `max_channels` entries); every client message only
/// searches it.
struct Channels<E = Entry>(Vec<(String, E)>);

impl<E> Default for Channels<E> {
    fn default() -> Self {
        Channels(Vec::new())
    }
}

impl<E> Channels<E> {
    fn find(&self, topic: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| t.as_str().cmp(topic))
    }

    fn get(&self, topic: &str) -> Option<&E> {
        self.find(topic).ok().map(|i| &self.0[i].1)
    }

    fn remove(&mut self, topic: &str) -> Option<E> {
        let i = self.find(topic).ok()?;
        let (_, entry) = self.0.remove(i);
        if self.0.capacity() > 4 && self.0.len() * 4 < self.0.capacity() {
            self.0.shrink_to(self.0.len() * 2);
        }
        Some(entry)
    }

    /// Adds `topic`, or replaces its entry.
    fn insert(&mut self, topic: String, entry: E) {
        match self.find(&topic) {
            Ok(i) => self.0[i].1 = entry,
            Err(i) => {
                if self.0.capacity() == self.0.len() {
                    // Grow in small steps (at most 8 entries at a time): a socket
                    // usually stays at the few channels it joined first.
                    self.0.reserve_exact(self.0.len().clamp(1, 8));
                }
                self.0.insert(i, (topic, entry));
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A connection's state; see the module docs.
pub(crate) struct SocketCore {
    env: Arc<SocketEnv>,
    serializer: Serializer,
    transport: TransportKind,
    handle: SocketHandle,
    assigns: Arc<Assigns>,
    id: Option<Arc<str>>,
    id_sub: Option<SubId>,
    channels: Channels,
}

impl SocketCore {
    /// A socket for an accepted connection, and the receiving end of its mailbox.
    pub(crate) fn new(
        env: Arc<SocketEnv>,
        serializer: Serializer,
        transport: TransportKind,
        conn: Connection,
    ) -> (SocketCore, flume::Receiver<SocketMsg>) {
        let (handle, rx) = SocketHandle::new(
            env.outbound_queue,
            env.socket_buffer_bytes,
            env.channels.metrics.clone(),
        );
        let id: Option<Arc<str>> = conn.id.map(Arc::from);
        let id_sub = id.as_deref().map(|id| {
            env.pubsub().add(
                id,
                Subscriber::SocketId {
                    socket: handle.clone(),
                },
            )
        });
        Metrics::inc(&env.metrics().sockets_open);
        Metrics::inc(&env.metrics().sockets_accepted);
        let core = SocketCore {
            env,
            serializer,
            transport,
            handle,
            assigns: Arc::new(conn.assigns),
            id,
            id_sub,
            channels: Channels::default(),
        };
        (core, rx)
    }

    /// Resolves when something asks this socket to close: an owned future that a
    /// transport pins once for the connection's life.
    pub(crate) fn close_signal(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        self.handle.close_signal()
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

    /// Applies one message from the client.
    pub(crate) fn handle_in(&mut self, msg: Message) -> Step {
        if msg.is_heartbeat() {
            return self.reply(Reply::ok(
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
                return self.reply(Reply::ok(
                    msg.join_ref,
                    msg.msg_ref,
                    msg.topic,
                    Payload::empty_object(),
                ));
            }
            Metrics::inc(&self.env.metrics().unmatched_topics);
            tracing::debug!(topic = %msg.topic, event = %msg.event, "message for a topic this socket has not joined");
            return self.reply(Reply::error(
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
            return Step::Nothing;
        }
        let inbox = entry.inbox.clone();
        let bytes = message_size(&msg);
        let msg = Box::new(msg);
        let msg = if self.handle.reserve_inbound(bytes) {
            // A message the channel cannot take gives its bytes back when dropped.
            match inbox.try_client(self.handle.inbound(msg, bytes)) {
                Ok(_) => return Step::Nothing,
                Err(msg) => Pending::Reserved(msg),
            }
        } else {
            Pending::OverBudget(msg)
        };
        // The channel is behind (its mailbox or this socket's inbound bytes are
        // full): read nothing more from this client until it catches up.
        Metrics::inc(&self.env.metrics().backpressure_waits);
        let stall = self.env.channel_stall_timeout;
        let socket = self.handle.clone();
        let topic = entry_topic(&msg);
        Step::Wait(Wait(Box::pin(async move {
            let deliver = async {
                let msg = match msg {
                    Pending::Reserved(msg) => msg,
                    Pending::OverBudget(msg) => {
                        socket.wait_inbound(bytes).await;
                        socket.inbound(msg, bytes)
                    }
                };
                // Refused (the channel ended) or abandoned at the stall timeout,
                // the message gives its bytes back as it is dropped.
                let _ = inbox.client(msg).await;
            };
            match tokio::time::timeout(stall, deliver).await {
                Ok(()) => Resumed::Delivered,
                Err(_) => Resumed::Stuck { topic },
            }
        })))
    }

    fn reply(&self, reply: Reply) -> Step {
        match self.encode_reply(&reply) {
            Some(frame) => Step::Reply(frame),
            None => Step::Nothing,
        }
    }

    fn join(&mut self, msg: Message) -> Step {
        let limits = &*self.env;
        if msg.topic.len() > limits.max_topic_length {
            Metrics::inc(&self.env.metrics().joins_refused);
            Metrics::inc(&self.env.metrics().topics_too_long);
            tracing::warn!(
                length = msg.topic.len(),
                limit = limits.max_topic_length,
                "refusing join: topic too long"
            );
            let reason = Payload::from(json!({"reason": "topic too long"}));
            return self.reply(Reply::error(msg.join_ref, msg.msg_ref, msg.topic, reason));
        }
        let Some(route) = self.env.route(&msg.topic) else {
            Metrics::inc(&self.env.metrics().unmatched_topics);
            Metrics::inc(&self.env.metrics().joins_refused);
            tracing::warn!(topic = %msg.topic, "ignoring unmatched topic");
            return self.reply(Reply::error(
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
            self.env.pubsub().unsubscribe(&msg.topic, old.chan_id);
            self.env.presence().unwatch(&msg.topic, old.chan_id);
            self.env.presence().untrack_all(old.chan_id);
            tracing::debug!(topic = %msg.topic, "duplicate join: closing the previous channel");
            old.join_ref
        });
        if close_old.is_none() && self.channels.len() >= self.env.max_channels {
            Metrics::inc(&self.env.metrics().joins_refused);
            tracing::error!(topic = %msg.topic, limit = self.env.max_channels, "too many channels joined on one socket");
            let reason = Payload::from(json!({"reason": "too many channels joined"}));
            return self.reply(Reply::error(msg.join_ref, msg.msg_ref, msg.topic, reason));
        }
        let chan_id = self.env.pubsub().next_id();
        let start = ChannelStart {
            topic: msg.topic.clone(),
            join_ref: msg.join_ref.clone(),
            msg_ref: msg.msg_ref.clone(),
            payload: msg.payload,
            chan_id,
            socket: self.handle.clone(),
            serializer: self.serializer,
            transport: self.transport,
            assigns: self.assigns.clone(),
            socket_id: self.id.clone(),
            env: self.env.channels.clone(),
            close_old,
        };
        let spawned = (route.spawn)(start);
        self.channels.insert(
            msg.topic.clone(),
            Entry {
                chan_id,
                join_ref: msg.join_ref.clone(),
                inbox: spawned.inbox,
                task: spawned.task,
            },
        );
        let outcome: oneshot::Receiver<JoinOutcome> = spawned.outcome;
        let stall = self.env.channel_stall_timeout;
        let (topic, join_ref, msg_ref) = (msg.topic, msg.join_ref, msg.msg_ref);
        Step::Wait(Wait(Box::pin(async move {
            match tokio::time::timeout(stall, outcome).await {
                Ok(outcome) => Resumed::Join {
                    topic,
                    chan_id,
                    join_ref,
                    msg_ref,
                    outcome: outcome.ok(),
                },
                Err(_) => Resumed::Stuck { topic },
            }
        })))
    }

    /// Applies the end of a [`Wait`]; returns a reply the socket makes itself.
    pub(crate) fn resume(&mut self, resumed: Resumed) -> Option<Frame> {
        match resumed {
            Resumed::Delivered => None,
            Resumed::Stuck { topic } => {
                Metrics::inc(&self.env.metrics().channels_stuck);
                tracing::warn!(%topic, timeout = ?self.env.channel_stall_timeout, "closing socket: channel stuck");
                self.handle.close(CloseReason::ChannelStuck);
                None
            }
            Resumed::Join {
                topic,
                chan_id,
                join_ref,
                msg_ref,
                outcome,
            } => {
                match outcome {
                    Some(JoinOutcome::Joined) => None,
                    Some(JoinOutcome::Refused) => {
                        self.remove(&topic, chan_id);
                        None
                    }
                    // The channel's task died before answering: answer for it.
                    None => {
                        self.remove(&topic, chan_id);
                        Metrics::inc(&self.env.metrics().joins_refused);
                        let reason = Payload::from(json!({"reason": "join crashed"}));
                        self.encode_reply(&Reply::error(join_ref, msg_ref, topic, reason))
                    }
                }
            }
        }
    }

    fn remove(&mut self, topic: &str, chan_id: u64) {
        if self
            .channels
            .get(topic)
            .is_some_and(|e| e.chan_id == chan_id)
        {
            self.channels.remove(topic);
        }
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
            SocketMsg::Frame(frame) => {
                self.handle.took_frame(frame.len());
                Some(Arc::unwrap_or_clone(frame))
            }
            SocketMsg::Exit(exit) => self.handle_exit(*exit),
        }
    }
}

impl Drop for SocketCore {
    fn drop(&mut self) {
        // Every channel terminates (and leaves presence) as soon as its socket ends.
        self.handle.mark_closed();
        if let (Some(id), Some(sub)) = (self.id.as_deref(), self.id_sub) {
            self.env.pubsub().unsubscribe(id, sub);
        }
        Metrics::dec(&self.env.metrics().sockets_open);
    }
}

/// A client message waiting for its channel.
enum Pending {
    /// Its bytes are counted; the channel's mailbox is full.
    Reserved(Inbound),
    /// The socket's inbound bytes are over budget.
    OverBudget(Box<Message>),
}

fn entry_topic(pending: &Pending) -> String {
    match pending {
        Pending::Reserved(m) => m.topic().to_owned(),
        Pending::OverBudget(m) => m.topic.clone(),
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

#[cfg(test)]
mod tests {
    use super::Channels;

    #[test]
    fn channels_are_found_by_topic_whatever_the_join_order() {
        let mut c: Channels<u32> = Channels::default();
        let topics = ["room:b", "room:a", "room:c", "lobby", "room:aa"];
        for (i, t) in topics.iter().enumerate() {
            c.insert(t.to_string(), i as u32);
        }
        assert_eq!(c.len(), 5);
        for (i, t) in topics.iter().enumerate() {
            assert_eq!(c.get(t), Some(&(i as u32)), "{t}");
        }
        assert_eq!(c.get("room"), None);
        // A second insert of a topic replaces its entry.
        c.insert("room:a".into(), 9);
        assert_eq!((c.len(), c.get("room:a")), (5, Some(&9)));
        assert_eq!(c.remove("room:a"), Some(9));
        assert_eq!(c.remove("room:a"), None);
        assert_eq!(c.get("room:aa"), Some(&4));
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn the_vector_gives_memory_back_when_channels_leave() {
        let mut c: Channels<u32> = Channels::default();
        for i in 0..100 {
            c.insert(format!("room:{i}"), i);
        }
        for i in 0..99 {
            assert_eq!(c.remove(&format!("room:{i}")), Some(i));
        }
        assert_eq!(c.get("room:99"), Some(&99));
        assert!(c.0.capacity() <= 4, "capacity {}", c.0.capacity());
    }
}
