//! Channels: the [`Channel`] trait applications implement, the [`ChannelContext`]
//! they act through, the handles that reach a running channel from elsewhere
//! ([`ChannelHandle`], [`ReplyRef`]), and what a channel holds of its endpoint.
//! The actor that runs one joined channel is in `task`.
//!
//! Each joined topic runs as its own task with a bounded mailbox, as a Phoenix
//! channel is its own process (`phoenix/lib/phoenix/channel/server.ex`).
//! A panic or an `Err` anywhere in a channel — the factory, `join`, `intercepts`,
//! a handler — ends only this channel: a failed join is answered with an error
//! reply, a crash after the join with `phx_error`, and the socket's other channels
//! go on. A normal stop or a leave sends `phx_close`.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use phx_presence::PresenceDiff;
use phx_protocol::{Broadcast, Message, Payload, Ref, Reply, Serializer};
use serde_json::Value;

use crate::handler::{Assigns, TransportKind};
use crate::mailbox::{Inbox, SocketHandle};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::pubsub::{PubSub, SubId};
use crate::RuntimeError;

mod task;

use task::ChannelMsg;
pub(crate) use task::{spawn, ChannelStart, Spawned};

/// What a channel uses of its endpoint: PubSub, presence, metrics and the
/// limits it applies itself. One per endpoint, shared by all its channels.
pub(crate) struct ChannelEnv {
    pub(crate) pubsub: PubSub,
    pub(crate) presence: Presence,
    pub(crate) metrics: Arc<Metrics>,
    /// `Config::channel_mailbox`: the mailbox's capacity, in messages.
    pub(crate) mailbox: usize,
    /// `Config::max_join_payload`.
    pub(crate) max_join_payload: usize,
}

/// The status of a reply to a client's message, as Phoenix's
/// `{:reply, {status, response}, socket}` gives it. On the wire it is the
/// reply's `status` string. phoenix.js hands `ok` and `error` to a push's
/// `receive("ok")` / `receive("error")` callbacks; Phoenix allows any other
/// atom, which a client reads with `receive` under the same name.
///
/// Equality is by wire string: `ReplyStatus::from("ok")` is [`ReplyStatus::Ok`],
/// and an `Other` that spells `ok` equals it too.
///
/// ```
/// use phx_runtime::ReplyStatus;
///
/// assert_eq!(ReplyStatus::Ok.as_str(), "ok");
/// assert_eq!(ReplyStatus::from("error"), ReplyStatus::Error);
/// let custom = ReplyStatus::from("timeout");
/// assert_eq!(custom, ReplyStatus::Other("timeout".into()));
/// assert_eq!(custom.to_string(), "timeout");
/// ```
#[derive(Debug, Clone)]
pub enum ReplyStatus {
    /// `ok`: the message was handled.
    Ok,
    /// `error`: the message was refused or failed.
    Error,
    /// Any other status (Phoenix allows any atom).
    Other(Cow<'static, str>),
}

impl ReplyStatus {
    /// The status as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Error => "error",
            ReplyStatus::Other(status) => status,
        }
    }

    fn from_cow(status: Cow<'static, str>) -> ReplyStatus {
        match &*status {
            "ok" => ReplyStatus::Ok,
            "error" => ReplyStatus::Error,
            _ => ReplyStatus::Other(status),
        }
    }
}

impl PartialEq for ReplyStatus {
    fn eq(&self, other: &ReplyStatus) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ReplyStatus {}

impl std::hash::Hash for ReplyStatus {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for ReplyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for ReplyStatus {
    fn from(status: &'static str) -> ReplyStatus {
        ReplyStatus::from_cow(Cow::Borrowed(status))
    }
}

impl From<String> for ReplyStatus {
    fn from(status: String) -> ReplyStatus {
        ReplyStatus::from_cow(Cow::Owned(status))
    }
}

impl From<ReplyStatus> for String {
    fn from(status: ReplyStatus) -> String {
        match status {
            ReplyStatus::Other(status) => status.into_owned(),
            known => known.as_str().to_owned(),
        }
    }
}

/// What [`Channel::handle_in`] asks the runtime to do.
#[derive(Debug)]
pub enum HandleIn {
    /// Reply to the client's ref with a status and a response.
    Reply(ReplyStatus, Payload),
    /// Send no reply (the client's push may time out, as in Phoenix).
    NoReply,
    /// Stop the channel normally (the client gets `phx_close`), replying first if given.
    Stop(Option<(ReplyStatus, Payload)>),
}

impl HandleIn {
    /// An `ok` reply.
    pub fn ok(response: impl Into<Payload>) -> HandleIn {
        HandleIn::Reply(ReplyStatus::Ok, response.into())
    }

    /// An `error` reply.
    pub fn error(response: impl Into<Payload>) -> HandleIn {
        HandleIn::Reply(ReplyStatus::Error, response.into())
    }
}

/// Whether a channel goes on after `after_join`, `handle_info`, `handle_out` or
/// `handle_presence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Stop normally: the client gets `phx_close`.
    Stop,
}

/// Why a channel is terminating, as passed to [`Channel::terminate`].
#[derive(Debug)]
pub enum ExitReason {
    /// The client sent `phx_leave`.
    Left,
    /// A callback asked to stop.
    Stopped,
    /// The socket closed (the client went away, was disconnected, or timed out).
    SocketClosed,
    /// A callback failed or panicked.
    Crashed(Crash),
}

/// How a channel's callback crashed: the client gets `phx_error`.
#[derive(Debug)]
pub enum Crash {
    /// The callback returned this error.
    Failed(RuntimeError),
    /// The callback panicked, with this message (`panic` when it carried no text).
    Panicked(String),
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crash::Failed(err) => write!(f, "{err}"),
            Crash::Panicked(text) => write!(f, "panicked: {text}"),
        }
    }
}

/// A channel implementation. One value per joined topic, made by the factory
/// given to [`crate::EndpointBuilder::channel`].
///
/// `Info` is the type of the application messages the channel receives in
/// [`Channel::handle_info`] (from [`ChannelContext::send_self`] or a
/// [`ChannelHandle`]); use `()` when it takes none.
///
/// ```
/// use phx_runtime::{Channel, ChannelContext, Flow, HandleIn, Payload, RuntimeError};
///
/// struct Echo;
/// impl Channel for Echo {
///     type Info = ();
///     async fn join(&mut self, _topic: &str, _payload: Payload, _ctx: &mut ChannelContext)
///         -> Result<Payload, Payload> {
///         Ok(Payload::empty_object())
///     }
///     async fn after_join(&mut self, ctx: &mut ChannelContext) -> Result<Flow, RuntimeError> {
///         // The join reply is out; this goes before the reply to anything sent later.
///         ctx.push("welcome", serde_json::json!({"hello": ctx.topic()}))?;
///         Ok(Flow::Continue)
///     }
///     async fn handle_in(&mut self, event: &str, payload: Payload, ctx: &mut ChannelContext)
///         -> Result<HandleIn, RuntimeError> {
///         match event {
///             "echo" => Ok(HandleIn::ok(payload)),
///             "shout" => {
///                 ctx.broadcast("shout", payload)?;
///                 Ok(HandleIn::NoReply)
///             }
///             _ => Ok(HandleIn::error(serde_json::json!({"reason": "unhandled event"}))),
///         }
///     }
/// }
/// ```
pub trait Channel: Send + 'static {
    /// Application messages for [`Channel::handle_info`].
    type Info: Send + 'static;

    /// A client joins `topic`. `Ok(response)` accepts (reply `ok`), `Err(response)`
    /// refuses (reply `error`; the channel ends without `phx_close`). A panic here
    /// answers `{"reason":"join crashed"}`. The channel is not joined yet: `push`
    /// and `broadcast` fail with [`RuntimeError::NotJoined`] (Phoenix raises);
    /// do that in [`Channel::after_join`].
    fn join(
        &mut self,
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<Self::Info>,
    ) -> impl Future<Output = Result<Payload, Payload>> + Send;

    /// Runs right after the ok join reply is queued and before anything else the
    /// client sent is handled: what it pushes (a `presence_state`, say) reaches the
    /// client after the join reply and before the reply to any later message.
    /// Phoenix apps do this with `send(self(), :after_join)`. An `Err` crashes the
    /// channel (`phx_error`, after whatever was pushed here).
    fn after_join(
        &mut self,
        ctx: &mut ChannelContext<Self::Info>,
    ) -> impl Future<Output = Result<Flow, RuntimeError>> + Send {
        let _ = ctx;
        async { Ok(Flow::Continue) }
    }

    /// An event from the client. An `Err` crashes the channel (`phx_error`).
    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<Self::Info>,
    ) -> impl Future<Output = Result<HandleIn, RuntimeError>> + Send;

    /// An application message sent with [`ChannelHandle::send`] or
    /// [`ChannelContext::send_self`]. Ignored by default.
    fn handle_info(
        &mut self,
        info: Self::Info,
        ctx: &mut ChannelContext<Self::Info>,
    ) -> impl Future<Output = Result<Flow, RuntimeError>> + Send {
        let _ = (info, ctx);
        async { Ok(Flow::Continue) }
    }

    /// Broadcast events this channel wants to see before its client does; they go
    /// to [`Channel::handle_out`] instead of the fast lane.
    fn intercepts(&self) -> Vec<String> {
        Vec::new()
    }

    /// An intercepted broadcast. By default it is pushed to the client unchanged
    /// (as a push, carrying this channel's join_ref).
    fn handle_out(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<Self::Info>,
    ) -> impl Future<Output = Result<Flow, RuntimeError>> + Send {
        let result = ctx.push(event, payload).map(|()| Flow::Continue);
        async move { result }
    }

    /// A presence change on this channel's topic, for channels that called
    /// [`ChannelContext::watch_presence`] (the others pay nothing). The client
    /// still gets its `presence_diff` as usual.
    fn handle_presence(
        &mut self,
        diff: &PresenceDiff,
        ctx: &mut ChannelContext<Self::Info>,
    ) -> impl Future<Output = Result<Flow, RuntimeError>> + Send {
        let _ = (diff, ctx);
        async { Ok(Flow::Continue) }
    }

    /// The channel is ending. Pushes made here follow the `phx_close` on the wire.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut ChannelContext<Self::Info>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// A handle for sending application messages to a running channel from anywhere.
pub struct ChannelHandle<I> {
    tx: flume::Sender<ChannelMsg<I>>,
}

impl<I> Clone for ChannelHandle<I> {
    fn clone(&self) -> Self {
        ChannelHandle {
            tx: self.tx.clone(),
        }
    }
}

impl<I: Send + 'static> ChannelHandle<I> {
    /// Sends a message to the channel's [`Channel::handle_info`]. Fails at once
    /// with [`RuntimeError::MailboxFull`] when its mailbox is full (the caller
    /// decides whether to retry or give up) and [`RuntimeError::Closed`] when the
    /// channel has ended.
    pub fn send(&self, info: I) -> Result<(), RuntimeError> {
        match self.tx.try_send(ChannelMsg::Info(Box::new(info))) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => Err(RuntimeError::MailboxFull),
            Err(flume::TrySendError::Disconnected(_)) => Err(RuntimeError::Closed),
        }
    }

    /// Sends a message, waiting while the channel's mailbox is full.
    pub async fn send_wait(&self, info: I) -> Result<(), RuntimeError> {
        self.tx
            .send_async(ChannelMsg::Info(Box::new(info)))
            .await
            .map_err(|_| RuntimeError::Closed)
    }
}

/// A captured client ref, for replying later or from another task (Phoenix's
/// `socket_ref/1` and `reply/2`).
#[derive(Clone)]
pub struct ReplyRef {
    socket: SocketHandle,
    serializer: Serializer,
    topic: String,
    join_ref: Option<Ref>,
    msg_ref: Option<Ref>,
}

impl ReplyRef {
    /// Sends a reply to the captured ref; may be called more than once.
    pub fn reply(
        &self,
        status: ReplyStatus,
        response: impl Into<Payload>,
    ) -> Result<(), RuntimeError> {
        let reply = Reply::new(
            self.join_ref.clone(),
            self.msg_ref.clone(),
            self.topic.clone(),
            status,
            response.into(),
        );
        let frame = self.serializer.encode_reply(&reply)?;
        self.socket.send_frame(frame)
    }
}

/// Where a channel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `join` is running: nothing may be pushed or broadcast yet.
    Joining,
    /// Joined: handling messages.
    Joined,
    /// Ending: `terminate` runs; its pushes follow the `phx_close`.
    Closing,
}

/// Everything a channel can do: push to its client, reply later, broadcast,
/// read the socket's assigns, track presence. Phoenix's `socket` argument.
///
/// `I` is the channel's [`Channel::Info`] type; `ChannelContext` alone means
/// a channel that takes no application messages.
pub struct ChannelContext<I = ()> {
    /// What the channel registered (and the endpoint state it uses): undone
    /// when the channel is dropped, even by abort.
    registration: Registration,
    phase: Phase,
    topic: String,
    /// The channel's join_ref for pushes and replies: the join's join_ref, or its
    /// ref when the client sent none (Phoenix's `socket.join_ref`).
    join_ref: Option<Ref>,
    /// The join_ref exactly as the `phx_join` carried it: the socket keys the
    /// channel by it, and the join reply, `phx_close` and `phx_error` carry it.
    wire_join_ref: Option<Ref>,
    msg_ref: Option<Ref>,
    chan_id: u64,
    serializer: Serializer,
    transport: TransportKind,
    socket: SocketHandle,
    assigns: Arc<Assigns>,
    socket_id: Option<Arc<str>>,
    self_tx: flume::Sender<ChannelMsg<I>>,
}

impl<I: Send + 'static> ChannelContext<I> {
    /// The channel's topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The join_ref of this join (the ref of the `phx_join`).
    pub fn join_ref(&self) -> Option<&str> {
        self.join_ref.as_deref()
    }

    /// The socket's assigns, set by the socket handler at connect.
    pub fn assigns(&self) -> &Assigns {
        &self.assigns
    }

    /// The socket id, if the handler gave one.
    pub fn socket_id(&self) -> Option<&str> {
        self.socket_id.as_deref()
    }

    /// The socket's serializer.
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    /// The transport in use.
    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    /// An id unique to this joined channel on this node (the presence connection id).
    pub fn channel_id(&self) -> u64 {
        self.chan_id
    }

    /// The endpoint's PubSub, for other topics.
    pub fn pubsub(&self) -> &crate::pubsub::PubSub {
        &self.env().pubsub
    }

    /// What this channel uses of its endpoint.
    fn env(&self) -> &ChannelEnv {
        &self.registration.env
    }

    fn joined(&self) -> Result<(), RuntimeError> {
        match self.phase {
            Phase::Joining => Err(RuntimeError::NotJoined),
            Phase::Joined | Phase::Closing => Ok(()),
        }
    }

    /// Pushes an event to this channel's client (ref null, join_ref of this join).
    /// Fails with [`RuntimeError::NotJoined`] inside `join`.
    pub fn push(&mut self, event: &str, payload: impl Into<Payload>) -> Result<(), RuntimeError> {
        self.joined()?;
        let msg = Message::new(
            self.join_ref.clone(),
            None,
            self.topic.clone(),
            event,
            payload.into(),
        );
        let frame = self.serializer.encode_message(&msg)?;
        self.socket.send_frame(frame)
    }

    /// Broadcasts to every subscriber of this channel's topic, this client included.
    /// Fails with [`RuntimeError::NotJoined`] inside `join`.
    pub fn broadcast(&self, event: &str, payload: impl Into<Payload>) -> Result<(), RuntimeError> {
        self.joined()?;
        let b = Broadcast::new(self.topic.clone(), event, payload.into());
        self.env().pubsub.publish(Arc::new(b), None);
        Ok(())
    }

    /// Broadcasts to every subscriber of this channel's topic except this channel's client.
    /// Fails with [`RuntimeError::NotJoined`] inside `join`.
    pub fn broadcast_from(
        &self,
        event: &str,
        payload: impl Into<Payload>,
    ) -> Result<(), RuntimeError> {
        self.joined()?;
        let b = Broadcast::new(self.topic.clone(), event, payload.into());
        self.env()
            .pubsub
            .publish(Arc::new(b), self.registration.sub_id);
        Ok(())
    }

    /// Captures the ref of the message being handled, to reply later.
    pub fn reply_ref(&self) -> ReplyRef {
        ReplyRef {
            socket: self.socket.clone(),
            serializer: self.serializer,
            topic: self.topic.clone(),
            join_ref: self.join_ref.clone(),
            msg_ref: self.msg_ref.clone(),
        }
    }

    /// A handle to send this channel application messages from other tasks.
    pub fn handle(&self) -> ChannelHandle<I> {
        ChannelHandle {
            tx: self.self_tx.clone(),
        }
    }

    /// Queues a message to this channel's own `handle_info` (Phoenix's `send(self(), msg)`).
    pub fn send_self(&self, info: I) -> Result<(), RuntimeError> {
        self.handle().send(info)
    }

    /// From now on, every presence change on this channel's topic also reaches
    /// [`Channel::handle_presence`] (changes made by this channel included).
    ///
    /// ```
    /// use phx_runtime::{Channel, ChannelContext, Flow, HandleIn, Payload, RuntimeError};
    /// use phx_presence::PresenceDiff;
    ///
    /// /// Counts who is in the room and tells its client.
    /// struct Counted(usize);
    /// impl Channel for Counted {
    ///     type Info = ();
    ///     async fn join(&mut self, _t: &str, _p: Payload, ctx: &mut ChannelContext)
    ///         -> Result<Payload, Payload> {
    ///         ctx.watch_presence();
    ///         Ok(Payload::empty_object())
    ///     }
    ///     async fn handle_in(&mut self, _e: &str, _p: Payload, _ctx: &mut ChannelContext)
    ///         -> Result<HandleIn, RuntimeError> {
    ///         Ok(HandleIn::NoReply)
    ///     }
    ///     async fn handle_presence(&mut self, diff: &PresenceDiff, ctx: &mut ChannelContext)
    ///         -> Result<Flow, RuntimeError> {
    ///         self.0 = self.0 + diff.joins.len() - diff.leaves.len().min(self.0 + diff.joins.len());
    ///         ctx.push("count", serde_json::json!({"n": self.0}))?;
    ///         Ok(Flow::Continue)
    ///     }
    /// }
    /// ```
    pub fn watch_presence(&mut self) {
        if !self.registration.watching {
            self.registration.watching = true;
            let inbox: Arc<dyn Inbox> = Arc::new(self.self_tx.clone());
            self.registration.env.presence.watch(
                &self.topic,
                self.chan_id,
                self.socket.clone(),
                inbox,
            );
        }
    }
}

/// Undoes a channel's registrations when its task ends in any way (return, panic
/// or abort): the PubSub subscription, the presence watch, its presences, the
/// gauge. It holds the channel's one reference to its [`ChannelEnv`].
struct Registration {
    env: Arc<ChannelEnv>,
    topic: String,
    chan_id: u64,
    sub_id: Option<SubId>,
    watching: bool,
    /// Whether the channel has tracked a presence (its presence connection id
    /// is `chan_id`).
    tracked: bool,
}

impl Registration {
    fn unsubscribe(&mut self) {
        if let Some(id) = self.sub_id.take() {
            self.env.pubsub.unsubscribe(&self.topic, id);
        }
        if std::mem::take(&mut self.watching) {
            self.env.presence.unwatch(&self.topic, self.chan_id);
        }
    }

    /// Unsubscribes, then every presence of the channel leaves; they are all on
    /// its topic, since [`ChannelContext::track`] only tracks there. Unsubscribing
    /// first, the channel never sees its own leave.
    fn leave(&mut self) {
        self.unsubscribe();
        if std::mem::take(&mut self.tracked) {
            self.env.presence.untrack_channel(&self.topic, self.chan_id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.unsubscribe();
        // A channel dropped without leaving: its presences leave wherever they are.
        if std::mem::take(&mut self.tracked) {
            self.env.presence.untrack_all(self.chan_id);
        }
        Metrics::dec(&self.env.metrics.channels_open);
    }
}

/// Presence from a channel.
impl<I: Send + 'static> ChannelContext<I> {
    /// Tracks this connection's presence on the channel's topic under `key`; every
    /// member gets a `presence_diff` with the join. One key may have many
    /// connections (one user, several devices). An entry over
    /// `Config::max_presence_meta` (key plus meta JSON) is refused with
    /// [`RuntimeError::TooLarge`] and nothing is tracked.
    pub fn track(&mut self, key: &str, meta: Value) -> Result<(), RuntimeError> {
        let reg = &mut self.registration;
        reg.env.presence.track(&reg.topic, key, reg.chan_id, meta)?;
        reg.tracked = true;
        Ok(())
    }

    /// Replaces this connection's meta under `key` (new `phx_ref`, `phx_ref_prev` =
    /// the old one); members get one diff with the leave and the join. A meta over
    /// `Config::max_presence_meta` is refused with [`RuntimeError::TooLarge`] and
    /// the old one stays.
    pub fn update(&mut self, key: &str, meta: Value) -> Result<(), RuntimeError> {
        let reg = &self.registration;
        reg.env.presence.update(&reg.topic, key, reg.chan_id, meta)
    }

    /// Stops tracking this connection under `key`.
    pub fn untrack(&mut self, key: &str) {
        let reg = &self.registration;
        reg.env.presence.untrack(&reg.topic, key, reg.chan_id);
    }

    /// The topic's presences, ready to push as `presence_state`.
    pub fn presence_list(&self) -> Result<Payload, RuntimeError> {
        self.env().presence.state_payload(self.topic())
    }
}
