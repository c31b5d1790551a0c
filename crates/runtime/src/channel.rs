//! Channels: the [`Channel`] trait applications implement, the [`ChannelContext`]
//! they act through, and the actor that runs one joined channel.
//!
//! Each joined topic runs as its own task with a bounded mailbox, as a Phoenix
//! channel is its own process (`phoenix/lib/phoenix/channel/server.ex`). The actor
//! makes the channel with the route's factory, calls `join`, queues the join reply
//! on the socket and tells the socket the join is done (the socket reads nothing
//! more from its client until then, as a Phoenix socket runs the join
//! synchronously), subscribes to the topic, runs `after_join`, and then handles
//! client events, intercepted broadcasts, presence changes and application
//! messages one at a time.
//!
//! A panic or an `Err` anywhere in a channel — the factory, `join`, `intercepts`,
//! a handler — ends only this channel: a failed join is answered with an error
//! reply, a crash after the join with `phx_error`, and the socket's other channels
//! go on. A normal stop or a leave sends `phx_close`.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use phx_presence::PresenceDiff;
use phx_protocol::{events, Broadcast, Message, Payload, Ref, Reply, Serializer};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::handler::{Assigns, TransportKind};
use crate::mailbox::{
    delivery, ChannelExit, Delivery, ExitKind, Inbound, Inbox, JoinOutcome, SocketHandle, SocketMsg,
};
use crate::metrics::Metrics;
use crate::node::{ChannelStart, Shared, Spawned};
use crate::pubsub::{SubId, Subscriber};
use crate::RuntimeError;

/// What [`Channel::handle_in`] asks the runtime to do.
#[derive(Debug)]
pub enum HandleIn {
    /// Reply to the client's ref with a status (`ok`, `error`, …) and a response.
    Reply(String, Payload),
    /// Send no reply (the client's push may time out, as in Phoenix).
    NoReply,
    /// Stop the channel normally (the client gets `phx_close`), replying first if given.
    Stop(Option<(String, Payload)>),
}

impl HandleIn {
    /// An `ok` reply.
    pub fn ok(response: impl Into<Payload>) -> HandleIn {
        HandleIn::Reply("ok".to_owned(), response.into())
    }

    /// An `error` reply.
    pub fn error(response: impl Into<Payload>) -> HandleIn {
        HandleIn::Reply("error".to_owned(), response.into())
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The client sent `phx_leave`.
    Left,
    /// A callback asked to stop.
    Stopped,
    /// The socket closed (the client went away, was disconnected, or timed out).
    SocketClosed,
    /// A callback failed or panicked.
    Crashed(String),
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

/// What reaches a channel's mailbox. Two words wide, whatever `I` is.
pub(crate) enum ChannelMsg<I> {
    /// An event from the client (`phx_leave` included), holding its bytes of
    /// the socket's inbound budget until taken.
    In(Inbound),
    /// A broadcast of an intercepted event.
    Intercept(Arc<Broadcast>),
    /// A presence change on the topic (only for channels watching presence).
    Presence(Arc<PresenceDiff>),
    /// An application message.
    Info(Box<I>),
}

impl<I: Send + 'static> Inbox for flume::Sender<ChannelMsg<I>> {
    fn try_client(&self, msg: Inbound) -> Result<bool, Inbound> {
        match self.try_send(ChannelMsg::In(msg)) {
            Ok(()) => Ok(true),
            Err(flume::TrySendError::Disconnected(_)) => Ok(false),
            Err(flume::TrySendError::Full(ChannelMsg::In(msg))) => Err(msg),
            // Only `In` was sent.
            Err(flume::TrySendError::Full(_)) => Ok(false),
        }
    }

    fn client(&self, msg: Inbound) -> BoxFuture<'static, bool> {
        let send = self.clone().into_send_async(ChannelMsg::In(msg));
        Box::pin(async move { send.await.is_ok() })
    }

    fn intercept(&self, b: Arc<Broadcast>) -> Delivery {
        delivery(self.try_send(ChannelMsg::Intercept(b)))
    }

    fn presence(&self, diff: Arc<PresenceDiff>) -> Delivery {
        delivery(self.try_send(ChannelMsg::Presence(diff)))
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
    pub fn reply(&self, status: &str, response: impl Into<Payload>) -> Result<(), RuntimeError> {
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

/// A channel's mailbox, receiving end: a `flume` channel (~255 B idle, its queue
/// grows with what it holds, where tokio's reserves ~990 B up front). Client
/// messages count toward their socket's inbound byte budget until the channel
/// takes them ([`Inbound`]); whatever is still queued when the channel ends
/// (however it ends) is dropped at once, which gives those bytes back, and once
/// the receiver is gone every send fails.
struct Mailbox<I> {
    rx: flume::Receiver<ChannelMsg<I>>,
}

impl<I> Mailbox<I> {
    /// The next message. Each one spends a unit of tokio's cooperative budget, as
    /// a tokio channel's receive does (flume's knows nothing of it): a channel
    /// with a full mailbox yields every so often instead of pushing a whole
    /// mailbox's worth of replies into its socket's queue before the socket can
    /// write any (which would make a pipelining client look slow).
    async fn recv(&mut self) -> Option<ChannelMsg<I>> {
        let msg = self.rx.recv_async().await.ok();
        tokio::task::consume_budget().await;
        msg
    }
}

impl<I> Drop for Mailbox<I> {
    fn drop(&mut self) {
        // A message sent between this drain and the receiver's drop stays queued
        // until the last sender goes; its bytes come back then.
        while self.rx.try_recv().is_ok() {}
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
    /// Declared first so that, when a channel is dropped (even by abort), its
    /// subscription goes before its presences leave: it never sees its own leave.
    registration: Registration,
    pub(crate) presence: PresenceGuard,
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
    shared: Arc<Shared>,
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
        &self.shared.pubsub
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
        self.shared.pubsub.publish(Arc::new(b), None);
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
        self.shared
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
            self.shared
                .presence
                .watch(&self.topic, self.chan_id, self.socket.clone(), inbox);
        }
    }

    fn send_reply(&self, msg_ref: Option<Ref>, status: String, response: Payload) {
        self.send_reply_as(self.join_ref.clone(), msg_ref, status, response);
    }

    fn send_reply_as(
        &self,
        join_ref: Option<Ref>,
        msg_ref: Option<Ref>,
        status: String,
        response: Payload,
    ) {
        let reply = Reply::new(join_ref, msg_ref, self.topic.clone(), status, response);
        match self.serializer.encode_reply(&reply) {
            Ok(frame) => {
                let _ = self.socket.send_frame(frame);
            }
            Err(err) => tracing::warn!(%err, topic = %self.topic, "reply cannot be encoded"),
        }
    }

    /// Leaves the topic: unsubscribes, then untracks presence.
    fn unregister(&mut self) {
        self.registration.unsubscribe();
        self.presence.leave_topic(&self.topic);
    }
}

/// Starts a channel actor made by `factory`.
pub(crate) fn spawn<C, F>(factory: F, start: ChannelStart) -> Spawned
where
    C: Channel,
    F: FnOnce(&str, &Assigns) -> C + Send + 'static,
{
    let (tx, rx) = flume::bounded(start.shared.config.channel_mailbox.max(1));
    let (outcome_tx, outcome) = oneshot::channel();
    let inbox: Arc<dyn Inbox> = Arc::new(tx.clone());
    let task = tokio::spawn(run(factory, start, tx, rx, outcome_tx));
    Spawned {
        inbox,
        task: task.abort_handle(),
        outcome,
    }
}

/// Undoes a channel's registrations when its task ends in any way (return, panic
/// or abort): the PubSub subscription, the presence watch, the gauge.
struct Registration {
    shared: Arc<Shared>,
    topic: String,
    chan_id: u64,
    sub_id: Option<SubId>,
    watching: bool,
}

impl Registration {
    fn unsubscribe(&mut self) {
        if let Some(id) = self.sub_id.take() {
            self.shared.pubsub.unsubscribe(&self.topic, id);
        }
        if std::mem::take(&mut self.watching) {
            self.shared.presence.unwatch(&self.topic, self.chan_id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.unsubscribe();
        Metrics::dec(&self.shared.metrics.channels_open);
    }
}

/// Tells the socket that its channel ended. If the task ends without saying how
/// (a panic outside a callback, an abort), dropping the guard reports a crash, so
/// the socket never keeps an entry for a dead channel.
struct ExitGuard {
    socket: SocketHandle,
    exit: Option<ChannelExit>,
}

impl ExitGuard {
    fn send(&mut self, kind: ExitKind) {
        if let Some(mut exit) = self.exit.take() {
            exit.kind = kind;
            let _ = self.socket.send(SocketMsg::Exit(Box::new(exit)));
        }
    }

    /// The join failed and its reply said so: nothing more to tell.
    fn disarm(&mut self) {
        self.exit = None;
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.send(ExitKind::Crash);
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

/// Runs a callback, turning a panic into an error.
async fn guarded<T>(fut: impl Future<Output = Result<T, RuntimeError>>) -> Result<T, String> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => Err(err.to_string()),
        Err(panic) => Err(panic_text(&*panic)),
    }
}

/// Makes the channel and runs its join; `Err` is why the join failed (a refusal's
/// response, or a crash's text).
async fn make_and_join<C, F>(
    factory: F,
    payload: Payload,
    ctx: &mut ChannelContext<C::Info>,
) -> (Option<C>, Result<(Payload, Vec<String>), JoinFailure>)
where
    C: Channel,
    F: FnOnce(&str, &Assigns) -> C,
{
    let topic = ctx.topic.clone();
    let assigns = ctx.assigns.clone();
    let mut channel = match std::panic::catch_unwind(AssertUnwindSafe(|| factory(&topic, &assigns)))
    {
        Ok(channel) => channel,
        Err(panic) => return (None, Err(JoinFailure::Crashed(panic_text(&*panic)))),
    };
    // The callbacks' futures are boxed: an idle channel then only holds what it
    // needs to wait for its next message, not the largest callback's state.
    let joined =
        Box::pin(AssertUnwindSafe(channel.join(&topic, payload, ctx)).catch_unwind()).await;
    let result = match joined {
        Ok(Ok(response)) => {
            match std::panic::catch_unwind(AssertUnwindSafe(|| channel.intercepts())) {
                Ok(intercepts) => Ok((response, intercepts)),
                Err(panic) => Err(JoinFailure::Crashed(panic_text(&*panic))),
            }
        }
        Ok(Err(response)) => Err(JoinFailure::Refused(response)),
        Err(panic) => Err(JoinFailure::Crashed(panic_text(&*panic))),
    };
    (Some(channel), result)
}

enum JoinFailure {
    Refused(Payload),
    Crashed(String),
}

/// A channel's whole life: made and joined, then (if joined) subscribed,
/// `after_join`, its messages one at a time, and its end.
async fn run<C, F>(
    factory: F,
    start: ChannelStart,
    self_tx: flume::Sender<ChannelMsg<C::Info>>,
    rx: flume::Receiver<ChannelMsg<C::Info>>,
    outcome: oneshot::Sender<JoinOutcome>,
) where
    C: Channel,
    F: FnOnce(&str, &Assigns) -> C,
{
    let mut rx = Mailbox { rx };
    let metrics = start.shared.metrics.clone();
    Metrics::inc(&metrics.channels_open);
    let mut exit = ExitGuard {
        socket: start.socket.clone(),
        exit: Some(ChannelExit {
            topic: start.topic.clone(),
            chan_id: start.chan_id,
            join_ref: start.join_ref.clone(),
            kind: ExitKind::Crash,
        }),
    };
    let msg_ref = start.msg_ref.clone();
    let close_old = start.close_old.clone();
    let (mut ctx, payload) = ChannelContext::joining(start, self_tx);

    let limit = ctx.shared.config.max_join_payload;
    let size = payload_size(&payload);
    if size > limit {
        Metrics::inc(&metrics.join_payloads_too_large);
        tracing::warn!(topic = %ctx.topic, size, limit, "refusing join: payload too large");
        drop(payload);
        let reason = Payload::from(json!({"reason": "join payload too large"}));
        refuse(&mut ctx, msg_ref, JoinFailure::Refused(reason));
        exit.disarm();
        let _ = outcome.send(JoinOutcome::Refused);
        return;
    }
    let (channel, joined) = make_and_join(factory, payload, &mut ctx).await;
    let (mut channel, intercepts) = match (channel, joined) {
        (Some(channel), Ok((response, intercepts))) => {
            Metrics::inc(&metrics.joins_ok);
            ctx.phase = Phase::Joined;
            ctx.send_reply_as(
                ctx.wire_join_ref.clone(),
                msg_ref,
                "ok".to_owned(),
                response,
            );
            (channel, intercepts)
        }
        (_, failure) => {
            let failure = failure.err().unwrap_or(JoinFailure::Crashed(
                "no channel after a successful join".to_owned(),
            ));
            refuse(&mut ctx, msg_ref, failure);
            exit.disarm();
            let _ = outcome.send(JoinOutcome::Refused);
            return;
        }
    };
    if let Some(old_join_ref) = close_old {
        if let Ok(frame) = ctx
            .serializer
            .encode_message(&Message::close(old_join_ref, ctx.topic.clone()))
        {
            let _ = ctx.socket.send_frame(frame);
        }
    }
    ctx.subscribe(intercepts);
    // The socket may read its client again: what it sends this channel waits in
    // the mailbox until `after_join` is done.
    let _ = outcome.send(JoinOutcome::Joined);

    let reason = match guarded(Box::pin(channel.after_join(&mut ctx))).await {
        Ok(Flow::Continue) => serve(&mut channel, &mut ctx, &mut rx).await,
        Ok(Flow::Stop) => ExitReason::Stopped,
        Err(why) => ExitReason::Crashed(why),
    };
    Box::pin(finish(channel, ctx, reason, exit)).await;
}

/// Answers a failed join with an error reply; the channel leaves no trace.
fn refuse<I: Send + 'static>(
    ctx: &mut ChannelContext<I>,
    msg_ref: Option<Ref>,
    failure: JoinFailure,
) {
    let metrics = ctx.shared.metrics.clone();
    Metrics::inc(&metrics.joins_refused);
    let response = match failure {
        JoinFailure::Refused(response) => response,
        JoinFailure::Crashed(why) => {
            Metrics::inc(&metrics.channel_crashes);
            tracing::error!(topic = %ctx.topic, panic = %why, "channel join crashed");
            join_crashed()
        }
    };
    ctx.send_reply_as(
        ctx.wire_join_ref.clone(),
        msg_ref,
        "error".to_owned(),
        response,
    );
    ctx.unregister();
}

/// Handles the channel's messages one at a time until it must end.
async fn serve<C: Channel>(
    channel: &mut C,
    ctx: &mut ChannelContext<C::Info>,
    rx: &mut Mailbox<C::Info>,
) -> ExitReason {
    let socket = ctx.socket.clone();
    loop {
        let msg = tokio::select! {
            biased;
            () = socket.closed() => return ExitReason::SocketClosed,
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => return ExitReason::SocketClosed,
            },
        };
        match Box::pin(handle(channel, ctx, msg)).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => return ExitReason::Stopped,
            Err(reason) => return reason,
        }
    }
}

impl<I: Send + 'static> ChannelContext<I> {
    /// The context of a channel about to join, and the join's payload.
    fn joining(start: ChannelStart, self_tx: flume::Sender<ChannelMsg<I>>) -> (Self, Payload) {
        let ctx = ChannelContext {
            registration: Registration {
                shared: start.shared.clone(),
                topic: start.topic.clone(),
                chan_id: start.chan_id,
                sub_id: None,
                watching: false,
            },
            phase: Phase::Joining,
            topic: start.topic,
            join_ref: start.join_ref.clone().or_else(|| start.msg_ref.clone()),
            wire_join_ref: start.join_ref,
            msg_ref: start.msg_ref,
            chan_id: start.chan_id,
            serializer: start.serializer,
            transport: start.transport,
            socket: start.socket,
            presence: PresenceGuard::new(start.shared.clone(), start.chan_id),
            shared: start.shared,
            assigns: start.assigns,
            socket_id: start.socket_id,
            self_tx,
        };
        (ctx, start.payload)
    }

    /// Subscribes the joined channel to its topic (after its join reply is queued,
    /// so no broadcast overtakes it).
    fn subscribe(&mut self, intercepts: Vec<String>) {
        let sub_id = self.chan_id;
        self.shared.pubsub.insert(
            &self.topic,
            sub_id,
            Subscriber::Channel {
                socket: self.socket.clone(),
                serializer: self.serializer,
                channel: Arc::new(self.self_tx.clone()),
                intercepts: intercepts.into(),
            },
        );
        self.registration.sub_id = Some(sub_id);
    }
}

/// The bytes of a payload as the client sent it: its JSON text or its binary.
fn payload_size(payload: &Payload) -> usize {
    match payload {
        Payload::Json(raw) => raw.get().len(),
        Payload::Binary(bytes) => bytes.len(),
    }
}

fn join_crashed() -> Payload {
    Payload::from(json!({"reason": "join crashed"}))
}

/// Ends a channel: unsubscribes, leaves presence, runs terminate, tells the socket.
async fn finish<C: Channel>(
    mut channel: C,
    mut ctx: ChannelContext<C::Info>,
    reason: ExitReason,
    mut exit: ExitGuard,
) {
    let metrics = ctx.shared.metrics.clone();
    ctx.msg_ref = None;
    ctx.phase = Phase::Closing;
    match &reason {
        ExitReason::Crashed(why) => {
            Metrics::inc(&metrics.channel_crashes);
            tracing::error!(topic = %ctx.topic, reason = %why, "channel crashed");
            // Phoenix runs terminate, then the socket sees the crash and sends phx_error.
            ctx.unregister();
            terminate(&mut channel, &reason, &mut ctx).await;
            exit.send(ExitKind::Crash);
        }
        ExitReason::SocketClosed => {
            ctx.unregister();
            exit.disarm();
            terminate(&mut channel, &reason, &mut ctx).await;
        }
        ExitReason::Left | ExitReason::Stopped => {
            // phx_close goes out before terminate runs; terminate's pushes follow it.
            ctx.unregister();
            exit.send(ExitKind::Close);
            terminate(&mut channel, &reason, &mut ctx).await;
        }
    }
}

/// Runs `terminate`, logging a panic instead of propagating it.
async fn terminate<C: Channel>(
    channel: &mut C,
    reason: &ExitReason,
    ctx: &mut ChannelContext<C::Info>,
) {
    if let Err(panic) = AssertUnwindSafe(Box::pin(channel.terminate(reason, ctx)))
        .catch_unwind()
        .await
    {
        tracing::error!(topic = %ctx.topic, panic = %panic_text(&*panic), "channel terminate panicked");
    }
}

/// Handles one mailbox message. `Err` carries the reason the channel must end.
async fn handle<C: Channel>(
    channel: &mut C,
    ctx: &mut ChannelContext<C::Info>,
    msg: ChannelMsg<C::Info>,
) -> Result<Flow, ExitReason> {
    match msg {
        ChannelMsg::In(msg) => {
            let Message {
                msg_ref,
                event,
                payload,
                ..
            } = *msg.take();
            if event == events::LEAVE {
                ctx.send_reply(msg_ref, "ok".to_owned(), Payload::empty_object());
                return Err(ExitReason::Left);
            }
            ctx.msg_ref = msg_ref.clone();
            let result = guarded(channel.handle_in(&event, payload, ctx)).await;
            ctx.msg_ref = None;
            match result {
                Ok(HandleIn::Reply(status, response)) => {
                    ctx.send_reply(msg_ref, status, response);
                    Ok(Flow::Continue)
                }
                Ok(HandleIn::NoReply) => Ok(Flow::Continue),
                Ok(HandleIn::Stop(reply)) => {
                    if let Some((status, response)) = reply {
                        ctx.send_reply(msg_ref, status, response);
                    }
                    Ok(Flow::Stop)
                }
                Err(why) => Err(ExitReason::Crashed(why)),
            }
        }
        ChannelMsg::Intercept(b) => guarded(channel.handle_out(&b.event, b.payload.clone(), ctx))
            .await
            .map_err(ExitReason::Crashed),
        ChannelMsg::Presence(diff) => guarded(channel.handle_presence(&diff, ctx))
            .await
            .map_err(ExitReason::Crashed),
        ChannelMsg::Info(info) => guarded(channel.handle_info(*info, ctx))
            .await
            .map_err(ExitReason::Crashed),
    }
}

/// Makes sure a channel's presences leave when the channel ends, even by panic or abort.
pub(crate) struct PresenceGuard {
    shared: Arc<Shared>,
    conn: u64,
    tracked: bool,
}

impl PresenceGuard {
    pub(crate) fn new(shared: Arc<Shared>, conn: u64) -> PresenceGuard {
        PresenceGuard {
            shared,
            conn,
            tracked: false,
        }
    }

    /// Every presence of the channel leaves, wherever it is tracked (the
    /// fallback of a channel dropped without [`PresenceGuard::leave_topic`]).
    pub(crate) fn leave_all(&mut self) {
        if std::mem::take(&mut self.tracked) {
            self.shared.presence.untrack_all(self.conn);
        }
    }

    /// Every presence of the channel leaves; they are all on its `topic`, since
    /// [`ChannelContext::track`] only tracks there.
    pub(crate) fn leave_topic(&mut self, topic: &str) {
        if std::mem::take(&mut self.tracked) {
            self.shared.presence.untrack_channel(topic, self.conn);
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.leave_all();
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
        let (shared, conn) = (self.presence.shared.clone(), self.presence.conn);
        shared.presence.track(self.topic(), key, conn, meta)?;
        self.presence.tracked = true;
        Ok(())
    }

    /// Replaces this connection's meta under `key` (new `phx_ref`, `phx_ref_prev` =
    /// the old one); members get one diff with the leave and the join. A meta over
    /// `Config::max_presence_meta` is refused with [`RuntimeError::TooLarge`] and
    /// the old one stays.
    pub fn update(&mut self, key: &str, meta: Value) -> Result<(), RuntimeError> {
        let (shared, conn) = (self.presence.shared.clone(), self.presence.conn);
        shared.presence.update(self.topic(), key, conn, meta)
    }

    /// Stops tracking this connection under `key`.
    pub fn untrack(&mut self, key: &str) {
        let (shared, conn) = (self.presence.shared.clone(), self.presence.conn);
        shared.presence.untrack(self.topic(), key, conn);
    }

    /// The topic's presences, ready to push as `presence_state`.
    pub fn presence_list(&self) -> Result<Payload, RuntimeError> {
        self.presence.shared.presence.state_payload(self.topic())
    }
}
