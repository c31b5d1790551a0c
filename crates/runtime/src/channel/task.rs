//! The actor that runs one joined channel: made by its route's factory, it
//! calls `join`, queues the join reply on the socket and tells the socket the
//! join is done (the socket reads nothing more from its client until then, as a
//! Phoenix socket runs the join synchronously), subscribes to the topic, runs
//! `after_join`, and then handles client events, intercepted broadcasts,
//! presence changes and application messages one at a time until it ends,
//! with `phx_close` (a leave, a stop), `phx_error` (a crash) or nothing (the
//! socket closed). Panics in the application's callbacks are caught here.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use phx_presence::PresenceDiff;
use phx_protocol::{events, Broadcast, Message, Payload, Ref, Reply, Serializer};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::{
    Channel, ChannelContext, ChannelEnv, Crash, ExitReason, Flow, HandleIn, Phase, Registration,
    ReplyStatus,
};
use crate::handler::{Assigns, TransportKind};
use crate::mailbox::{
    delivery, ChannelExit, Delivery, ExitKind, Inbound, Inbox, JoinOutcome, SocketHandle, SocketMsg,
};
use crate::metrics::Metrics;
use crate::pubsub::Subscriber;
use crate::RuntimeError;

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
    pub env: Arc<ChannelEnv>,
    /// The join_ref of a channel this join replaced: its `phx_close` follows our reply.
    pub close_old: Option<Option<Ref>>,
}

/// A started channel, as its socket holds it.
pub(crate) struct Spawned {
    pub inbox: Arc<dyn Inbox>,
    pub task: AbortHandle,
    /// Resolves once the join reply is queued; dropped unanswered if the task died.
    pub outcome: oneshot::Receiver<JoinOutcome>,
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

impl<I: Send + 'static> ChannelContext<I> {
    /// The context of a channel about to join, and the join's payload.
    fn joining(start: ChannelStart, self_tx: flume::Sender<ChannelMsg<I>>) -> (Self, Payload) {
        let ctx = ChannelContext {
            registration: Registration {
                env: start.env,
                topic: start.topic.clone(),
                chan_id: start.chan_id,
                sub_id: None,
                watching: false,
                tracked: false,
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
        self.registration.env.pubsub.insert(
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

    fn send_reply(&self, msg_ref: Option<Ref>, status: ReplyStatus, response: Payload) {
        self.send_reply_as(self.join_ref.clone(), msg_ref, status, response);
    }

    fn send_reply_as(
        &self,
        join_ref: Option<Ref>,
        msg_ref: Option<Ref>,
        status: ReplyStatus,
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
        self.registration.leave();
    }
}

/// Starts a channel actor made by `factory`.
pub(crate) fn spawn<C, F>(factory: F, start: ChannelStart) -> Spawned
where
    C: Channel,
    F: FnOnce(&str, &Assigns) -> C + Send + 'static,
{
    let (tx, rx) = flume::bounded(start.env.mailbox.max(1));
    let (outcome_tx, outcome) = oneshot::channel();
    let inbox: Arc<dyn Inbox> = Arc::new(tx.clone());
    let task = tokio::spawn(live(factory, start, tx, rx, outcome_tx));
    Spawned {
        inbox,
        task: task.abort_handle(),
        outcome,
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
async fn guarded<T>(fut: impl Future<Output = Result<T, RuntimeError>>) -> Result<T, Crash> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => Err(Crash::Failed(err)),
        Err(panic) => Err(Crash::Panicked(panic_text(&*panic))),
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
async fn live<C, F>(
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
    let metrics = start.env.metrics.clone();
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

    let limit = ctx.env().max_join_payload;
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
                ReplyStatus::Ok,
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
        Ok(Flow::Continue) => handle_messages(&mut channel, &mut ctx, &mut rx).await,
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
    let metrics = ctx.env().metrics.clone();
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
        ReplyStatus::Error,
        response,
    );
    ctx.unregister();
}

/// Handles the channel's messages one at a time until it must end.
async fn handle_messages<C: Channel>(
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
    let metrics = ctx.env().metrics.clone();
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
                ctx.send_reply(msg_ref, ReplyStatus::Ok, Payload::empty_object());
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
