//! Channels: the [`Channel`] trait applications implement, the [`ChannelContext`]
//! they act through, and the actor that runs one joined channel.
//!
//! Each joined topic runs as its own task with a bounded mailbox, as a Phoenix
//! channel is its own process (`phoenix/lib/phoenix/channel/server.ex`). The actor
//! calls `join`, sends the join reply (always before anything the channel pushes),
//! subscribes to the topic, and then handles client events, intercepted
//! broadcasts and application messages one at a time. A panic or an `Err` from a
//! callback crashes only this channel: its client gets `phx_error` and the socket's
//! other channels go on. A normal stop or a leave sends `phx_close`.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use phx_protocol::{events, Broadcast, Frame, Message, Payload, Ref, Reply, Serializer};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::endpoint::Shared;
use crate::handler::{Assigns, TransportKind};
use crate::metrics::Metrics;
use crate::presence::PresenceGuard;
use crate::pubsub::{SubId, Subscriber};
use crate::socket::{ChannelExit, ExitKind, SocketHandle, SocketMsg};
use crate::RuntimeError;

/// An application message for [`Channel::handle_info`]; downcast it to your type.
pub type Info = Box<dyn Any + Send>;

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

/// Whether a channel goes on after `handle_info` or `handle_out`.
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

/// A channel implementation. One value per joined topic, created by the factory
/// given to [`crate::EndpointBuilder::channel`].
///
/// ```
/// use phx_runtime::{Channel, ChannelContext, HandleIn, Payload, RuntimeError};
///
/// struct Echo;
/// impl Channel for Echo {
///     async fn join(&mut self, _topic: &str, _payload: Payload, _ctx: &mut ChannelContext)
///         -> Result<Payload, Payload> {
///         Ok(Payload::empty_object())
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
    /// A client joins `topic`. `Ok(response)` accepts (reply `ok`), `Err(response)`
    /// refuses (reply `error`; the channel ends without `phx_close`). A panic here
    /// answers `{"reason":"join crashed"}`. Pushes made here are sent after the reply.
    fn join(
        &mut self,
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> impl Future<Output = Result<Payload, Payload>> + Send;

    /// An event from the client. An `Err` crashes the channel (`phx_error`).
    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> impl Future<Output = Result<HandleIn, RuntimeError>> + Send;

    /// An application message sent with [`ChannelHandle::send`] or
    /// [`ChannelContext::send_self`]. Ignored by default.
    fn handle_info(
        &mut self,
        info: Info,
        ctx: &mut ChannelContext,
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
        ctx: &mut ChannelContext,
    ) -> impl Future<Output = Result<Flow, RuntimeError>> + Send {
        let result = ctx.push(event, payload).map(|()| Flow::Continue);
        async move { result }
    }

    /// The channel is ending. Pushes made here follow the `phx_close` on the wire.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut ChannelContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// What reaches a channel's mailbox.
pub(crate) enum ChannelMsg {
    /// An event from the client (`phx_leave` included).
    In(Box<Message>),
    /// A broadcast of an intercepted event.
    Intercept(Arc<Broadcast>),
    /// An application message (boxed again to keep this enum two words wide).
    Info(Box<Info>),
}

/// A sender into a channel's mailbox.
#[derive(Clone)]
pub(crate) struct ChannelSender(mpsc::Sender<ChannelMsg>);

impl ChannelSender {
    /// Queues a message; false when the mailbox is full (the message is dropped).
    pub(crate) fn try_send(&self, msg: ChannelMsg) -> bool {
        match self.0.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("channel mailbox full: message dropped");
                false
            }
        }
    }
}

/// A handle for sending application messages to a running channel from anywhere.
#[derive(Clone)]
pub struct ChannelHandle {
    tx: ChannelSender,
}

impl ChannelHandle {
    /// Sends a message to the channel's [`Channel::handle_info`]. Fails when the
    /// channel has ended or its mailbox is full.
    pub fn send<T: Any + Send>(&self, info: T) -> Result<(), RuntimeError> {
        match self
            .tx
            .0
            .try_send(ChannelMsg::Info(Box::new(Box::new(info))))
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(RuntimeError::SlowClient),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RuntimeError::Closed),
        }
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

/// Everything a channel can do: push to its client, reply later, broadcast,
/// read the socket's assigns, track presence. Phoenix's `socket` argument.
pub struct ChannelContext {
    /// Declared first so that, when a channel is dropped (even by abort), its
    /// subscription goes before its presences leave: it never sees its own leave.
    registration: Registration,
    pub(crate) presence: PresenceGuard,
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
    self_tx: ChannelSender,
    /// Pushes made during `join`, sent right after the join reply.
    pending: Option<Vec<Frame>>,
}

impl ChannelContext {
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
    pub fn pubsub(&self) -> &crate::PubSub {
        &self.shared.pubsub
    }

    /// Pushes an event to this channel's client (ref null, join_ref of this join).
    pub fn push(&mut self, event: &str, payload: impl Into<Payload>) -> Result<(), RuntimeError> {
        let msg = Message::new(
            self.join_ref.clone(),
            None,
            self.topic.clone(),
            event,
            payload.into(),
        );
        let frame = self.serializer.encode_message(&msg)?;
        match &mut self.pending {
            Some(pending) => {
                pending.push(frame);
                Ok(())
            }
            None => self.socket.send_frame(frame),
        }
    }

    /// Broadcasts to every subscriber of this channel's topic, this client included.
    pub fn broadcast(&self, event: &str, payload: impl Into<Payload>) -> Result<(), RuntimeError> {
        let b = Broadcast::new(self.topic.clone(), event, payload.into());
        self.shared.pubsub.publish(Arc::new(b), None);
        Ok(())
    }

    /// Broadcasts to every subscriber of this channel's topic except this channel's client.
    pub fn broadcast_from(
        &self,
        event: &str,
        payload: impl Into<Payload>,
    ) -> Result<(), RuntimeError> {
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
    pub fn handle(&self) -> ChannelHandle {
        ChannelHandle {
            tx: self.self_tx.clone(),
        }
    }

    /// Queues a message to this channel's own `handle_info` (Phoenix's `send(self(), msg)`).
    pub fn send_self<T: Any + Send>(&self, info: T) -> Result<(), RuntimeError> {
        self.handle().send(info)
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
        self.presence.leave_all();
    }

    fn exit(&self, kind: ExitKind) {
        let _ = self.socket.send(SocketMsg::Exit(Box::new(ChannelExit {
            topic: self.topic.clone(),
            chan_id: self.chan_id,
            join_ref: self.wire_join_ref.clone(),
            kind,
        })));
    }
}

/// What a socket hands a route's spawner to start a channel.
pub(crate) struct ChannelStart {
    pub topic: String,
    pub join_ref: Option<Ref>,
    pub msg_ref: Option<Ref>,
    pub payload: Payload,
    pub chan_id: u64,
    pub socket: SocketHandle,
    pub serializer: Serializer,
    pub transport: TransportKind,
    pub assigns: Arc<Assigns>,
    pub socket_id: Option<Arc<str>>,
    pub shared: Arc<Shared>,
    /// The join_ref of a channel this join replaced: its `phx_close` follows our reply.
    pub close_old: Option<Option<Ref>>,
}

/// Starts a channel actor; returns its mailbox and a handle to kill it.
pub(crate) fn spawn<C: Channel>(channel: C, start: ChannelStart) -> (ChannelSender, AbortHandle) {
    let (tx, rx) = mpsc::channel(start.shared.config.channel_mailbox.max(1));
    let tx = ChannelSender(tx);
    let task = tokio::spawn(run(channel, start, tx.clone(), rx));
    (tx, task.abort_handle())
}

/// Undoes a channel's registrations when its task ends in any way (return, panic
/// or abort): the PubSub subscription, the gauge.
struct Registration {
    shared: Arc<Shared>,
    topic: String,
    sub_id: Option<SubId>,
}

impl Registration {
    fn unsubscribe(&mut self) {
        if let Some(id) = self.sub_id.take() {
            self.shared.pubsub.unsubscribe(&self.topic, id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.unsubscribe();
        Metrics::dec(&self.shared.metrics.channels_open);
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

async fn run<C: Channel>(
    mut channel: C,
    start: ChannelStart,
    self_tx: ChannelSender,
    mut rx: mpsc::Receiver<ChannelMsg>,
) {
    let metrics = start.shared.metrics.clone();
    Metrics::inc(&metrics.channels_open);
    let socket = start.socket.clone();
    let mut ctx = ChannelContext {
        registration: Registration {
            shared: start.shared.clone(),
            topic: start.topic.clone(),
            sub_id: None,
        },
        topic: start.topic,
        join_ref: start.join_ref.clone().or_else(|| start.msg_ref.clone()),
        wire_join_ref: start.join_ref,
        msg_ref: start.msg_ref.clone(),
        chan_id: start.chan_id,
        serializer: start.serializer,
        transport: start.transport,
        socket: start.socket,
        presence: PresenceGuard::new(start.shared.clone(), start.chan_id),
        shared: start.shared,
        assigns: start.assigns,
        socket_id: start.socket_id,
        self_tx,
        pending: Some(Vec::new()),
    };

    let topic = ctx.topic.clone();
    // The callbacks' futures are boxed: an idle channel then only holds what it
    // needs to wait for its next message, not the largest callback's state.
    let joined =
        Box::pin(AssertUnwindSafe(channel.join(&topic, start.payload, &mut ctx)).catch_unwind())
            .await;
    let pending = ctx.pending.take().unwrap_or_default();
    match joined {
        Ok(Ok(response)) => {
            Metrics::inc(&metrics.joins_ok);
            ctx.send_reply_as(
                ctx.wire_join_ref.clone(),
                start.msg_ref,
                "ok".to_owned(),
                response,
            );
        }
        Ok(Err(response)) => {
            Metrics::inc(&metrics.joins_refused);
            ctx.send_reply_as(
                ctx.wire_join_ref.clone(),
                start.msg_ref,
                "error".to_owned(),
                response,
            );
            ctx.exit(ExitKind::JoinFailed);
            return;
        }
        Err(panic) => {
            Metrics::inc(&metrics.joins_refused);
            tracing::error!(topic = %ctx.topic, panic = %panic_text(&*panic), "channel join crashed");
            ctx.send_reply(
                start.msg_ref,
                "error".to_owned(),
                Payload::from(json!({"reason": "join crashed"})),
            );
            ctx.exit(ExitKind::JoinFailed);
            return;
        }
    }
    if let Some(old_join_ref) = start.close_old {
        if let Ok(frame) = ctx
            .serializer
            .encode_message(&Message::close(old_join_ref, ctx.topic.clone()))
        {
            let _ = ctx.socket.send_frame(frame);
        }
    }
    for frame in pending {
        let _ = ctx.socket.send_frame(frame);
    }
    let intercepts: Arc<[String]> = channel.intercepts().into();
    let sub_id = ctx.chan_id;
    ctx.shared.pubsub.insert(
        &ctx.topic,
        sub_id,
        Subscriber::Channel {
            socket: ctx.socket.clone(),
            serializer: ctx.serializer,
            channel: ctx.self_tx.clone(),
            intercepts,
        },
    );
    ctx.registration.sub_id = Some(sub_id);

    let reason = loop {
        let msg = tokio::select! {
            biased;
            () = socket.closed() => break ExitReason::SocketClosed,
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => break ExitReason::SocketClosed,
            },
        };
        match Box::pin(handle(&mut channel, &mut ctx, msg)).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break ExitReason::Stopped,
            Err(ExitReason::Left) => break ExitReason::Left,
            Err(reason) => break reason,
        }
    };
    Box::pin(finish(channel, ctx, reason)).await;
}

/// Ends a channel: unsubscribes, leaves presence, runs terminate, tells the socket.
async fn finish<C: Channel>(mut channel: C, mut ctx: ChannelContext, reason: ExitReason) {
    let metrics = ctx.shared.metrics.clone();
    ctx.msg_ref = None;
    match &reason {
        ExitReason::Crashed(why) => {
            Metrics::inc(&metrics.channel_crashes);
            tracing::error!(topic = %ctx.topic, reason = %why, "channel crashed");
            // Phoenix runs terminate, then the socket sees the crash and sends phx_error.
            ctx.unregister();
            terminate(&mut channel, &reason, &mut ctx).await;
            ctx.exit(ExitKind::Crash);
        }
        ExitReason::SocketClosed => {
            ctx.unregister();
            terminate(&mut channel, &reason, &mut ctx).await;
        }
        ExitReason::Left | ExitReason::Stopped => {
            // phx_close goes out before terminate runs; terminate's pushes follow it.
            ctx.unregister();
            ctx.exit(ExitKind::Close);
            terminate(&mut channel, &reason, &mut ctx).await;
        }
    }
}

/// Runs `terminate`, logging a panic instead of propagating it.
async fn terminate<C: Channel>(channel: &mut C, reason: &ExitReason, ctx: &mut ChannelContext) {
    if let Err(panic) = AssertUnwindSafe(channel.terminate(reason, ctx))
        .catch_unwind()
        .await
    {
        tracing::error!(topic = %ctx.topic, panic = %panic_text(&*panic), "channel terminate panicked");
    }
}

/// Handles one mailbox message. `Err` carries the reason the channel must end.
async fn handle<C: Channel>(
    channel: &mut C,
    ctx: &mut ChannelContext,
    msg: ChannelMsg,
) -> Result<Flow, ExitReason> {
    match msg {
        ChannelMsg::In(msg) => {
            let Message {
                msg_ref,
                event,
                payload,
                ..
            } = *msg;
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
        ChannelMsg::Info(info) => guarded(channel.handle_info(*info, ctx))
            .await
            .map_err(ExitReason::Crashed),
    }
}
