//! What everything that talks to a socket or a channel shares, at the bottom of
//! the stack: a socket's mailbox handle ([`SocketHandle`]: frames for the client,
//! channel exits, close requests, the socket's byte budget), a client message on
//! its way to a channel ([`Inbound`], which holds its share of that budget), a
//! channel's mailbox as the socket, PubSub and presence see it ([`Inbox`]), and
//! the join outcome a channel sends its socket. No I/O and no knowledge of sockets' or channels'
//! insides, so `socket`, `channel`, `pubsub` and `presence` all build on it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use phx_presence::PresenceDiff;
use phx_protocol::{Broadcast, Frame, Message, Payload, Ref};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// What reaches a socket's mailbox.
///
/// Kept to two words. The mailbox is a `flume` bounded channel: its queue grows
/// with what is in it, where tokio's reserves a block of 32 slots and ~500 B of
/// cache-padded state up front (~990 B against ~255 B per idle mailbox), and
/// every connection has one for its life.
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
}

pub(crate) struct ChannelExit {
    pub topic: String,
    pub chan_id: u64,
    pub join_ref: Option<Ref>,
    pub kind: ExitKind,
}

/// Why the server closes a connection, and what its WebSocket close frame says
/// (a code and a short reason; a long-poll session just ends).
///
/// ```
/// use phx_runtime::CloseReason;
///
/// assert_eq!(CloseReason::Draining.code(), 1012);
/// assert_eq!(CloseReason::Draining.to_string(), "server restarting");
/// let bad = CloseReason::InvalidFrame("invalid_json");
/// assert_eq!((bad.code(), bad.to_string().as_str()), (1011, "invalid frame: invalid_json"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A `disconnect` broadcast to the socket id (close code 1001, as Phoenix 1.8).
    Disconnected,
    /// Nothing came from the client within `Config::idle_timeout` (close code 1001).
    IdleTimeout,
    /// The client let its outbound queue fill (close code 1013).
    SlowClient,
    /// A channel did not take the client's next message (or finish its join)
    /// within `Config::channel_stall_timeout` (close code 1013).
    ChannelStuck,
    /// A message the client had to see could not be queued for one of its
    /// channels: its stream would have a hole, so it must rejoin (close code 1013).
    MessagesDropped,
    /// The server is shutting down (close code 1012, Service Restart).
    Draining,
    /// A frame that is not a Phoenix message; the kind of decoding error
    /// (`phx_protocol::ProtocolError::kind`) is in the reason (close code 1011).
    InvalidFrame(&'static str),
    /// A frame over `Config::max_frame_size` (close code 1009).
    FrameTooLarge,
    /// A WebSocket protocol violation (close code 1002).
    ProtocolError,
    /// A text frame that is not UTF-8 (close code 1007).
    InvalidUtf8,
}

impl CloseReason {
    /// The WebSocket close code for this reason.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Disconnected | CloseReason::IdleTimeout => 1001,
            CloseReason::SlowClient | CloseReason::ChannelStuck | CloseReason::MessagesDropped => {
                1013
            }
            CloseReason::Draining => 1012,
            CloseReason::InvalidFrame(_) => 1011,
            CloseReason::FrameTooLarge => 1009,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidUtf8 => 1007,
        }
    }
}

/// The short text of the close frame (and the logs).
impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            CloseReason::Disconnected => "disconnected",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::SlowClient => "slow client: outbound queue full",
            CloseReason::ChannelStuck => "channel stuck",
            CloseReason::MessagesDropped => "messages dropped: rejoin",
            CloseReason::Draining => "server restarting",
            CloseReason::InvalidFrame(kind) => return write!(f, "invalid frame: {kind}"),
            CloseReason::FrameTooLarge => "frame too large",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::InvalidUtf8 => "invalid utf-8",
        };
        f.write_str(text)
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
    /// `Config::socket_buffer_bytes`: the most bytes that may wait in each
    /// direction (frames for the client; client messages in channel mailboxes).
    budget: usize,
    out_bytes: AtomicUsize,
    in_bytes: AtomicUsize,
    /// Wakes a socket waiting for inbound room.
    in_room: Notify,
}

/// A sender into a socket's mailbox. Never blocks: when the mailbox is full the
/// client is too slow and the socket is told to close.
#[derive(Clone)]
pub(crate) struct SocketHandle {
    tx: flume::Sender<SocketMsg>,
    shared: Arc<SocketShared>,
}

impl SocketHandle {
    /// A socket's mailbox of `capacity` messages and `budget` bytes each way.
    pub(crate) fn new(
        capacity: usize,
        budget: usize,
        metrics: Arc<Metrics>,
    ) -> (SocketHandle, flume::Receiver<SocketMsg>) {
        let (tx, rx) = flume::bounded(capacity.max(1));
        let handle = SocketHandle {
            tx,
            shared: Arc::new(SocketShared {
                close: std::sync::Mutex::new(None),
                slow: AtomicBool::new(false),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
                closed_notify: Notify::new(),
                metrics,
                budget: budget.max(1),
                out_bytes: AtomicUsize::new(0),
                in_bytes: AtomicUsize::new(0),
                in_room: Notify::new(),
            }),
        };
        (handle, rx)
    }

    /// Resolves when something asks this socket to close, and says why: an owned
    /// future, for a transport to pin once and poll on every wake-up.
    pub(crate) fn close_signal(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        let shared = self.shared.clone();
        async move { close_requested(&shared).await }
    }

    /// The socket has ended: its channels terminate.
    pub(crate) fn mark_closed(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.closed_notify.notify_waiters();
    }

    /// The transport took a frame of `bytes` from the mailbox.
    pub(crate) fn took_frame(&self, bytes: usize) {
        self.shared.out_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
    pub(crate) fn send(&self, msg: SocketMsg) -> Result<(), crate::RuntimeError> {
        let bytes = match &msg {
            SocketMsg::Frame(frame) => frame.len(),
            SocketMsg::Exit(_) => 0,
        };
        let queued = self.shared.out_bytes.fetch_add(bytes, Ordering::Relaxed);
        if queued > 0 && queued + bytes > self.shared.budget {
            self.shared.out_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(self.slow());
        }
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => {
                self.shared.out_bytes.fetch_sub(bytes, Ordering::Relaxed);
                Err(self.slow())
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(crate::RuntimeError::Closed),
        }
    }

    /// The client does not read what is queued for it (frames or bytes): close it.
    fn slow(&self) -> crate::RuntimeError {
        if !self.shared.slow.swap(true, Ordering::Relaxed) {
            Metrics::inc(&self.shared.metrics.slow_clients);
            self.close(CloseReason::SlowClient);
        }
        crate::RuntimeError::SlowClient
    }

    /// Counts a client message of `bytes` as waiting for a channel, if the inbound
    /// budget has room (a message alone always fits). False: wait for room.
    pub(crate) fn reserve_inbound(&self, bytes: usize) -> bool {
        let budget = self.shared.budget;
        self.shared
            .in_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued == 0 || queued + bytes <= budget).then_some(queued + bytes)
            })
            .is_ok()
    }

    /// Waits until `bytes` more fit in the inbound budget, and counts them.
    pub(crate) async fn wait_inbound(&self, bytes: usize) {
        loop {
            let room = self.shared.in_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.reserve_inbound(bytes) {
                return;
            }
            room.await;
        }
    }

    /// A client message whose `bytes` were reserved ([`SocketHandle::reserve_inbound`],
    /// [`SocketHandle::wait_inbound`]), ready for a channel's mailbox: the bytes
    /// are given back when the channel takes it or wherever it is dropped.
    pub(crate) fn inbound(&self, msg: Box<Message>, bytes: usize) -> Inbound {
        Inbound {
            msg,
            budget: InboundBytes {
                bytes,
                shared: self.shared.clone(),
            },
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

/// Waits until something asks the socket to close, and says why.
async fn close_requested(shared: &SocketShared) -> CloseReason {
    loop {
        let notified = shared.wake.notified();
        if let Some(reason) = *shared.close.lock().unwrap_or_else(|e| e.into_inner()) {
            return reason;
        }
        notified.await;
    }
}

/// A client message on its way to a channel. Its bytes count toward the socket's
/// inbound budget until the channel takes it ([`Inbound::take`]) or it is dropped
/// wherever it is: handed back by a full mailbox and abandoned, refused by an
/// ended one, or left in the queue of a channel that ended before taking it.
/// (Channel mailboxes are `flume` channels, whose receiver cannot be closed and
/// drained the way tokio's can: the message itself gives its bytes back.)
pub(crate) struct Inbound {
    msg: Box<Message>,
    budget: InboundBytes,
}

impl Inbound {
    /// The message, taken by its channel: its bytes leave the budget.
    pub(crate) fn take(self) -> Box<Message> {
        let Inbound { msg, budget } = self;
        drop(budget);
        msg
    }

    /// The topic the message is for.
    pub(crate) fn topic(&self) -> &str {
        &self.msg.topic
    }
}

/// Bytes of a socket's inbound budget, given back on drop.
struct InboundBytes {
    bytes: usize,
    shared: Arc<SocketShared>,
}

impl Drop for InboundBytes {
    fn drop(&mut self) {
        self.shared.in_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.shared.in_room.notify_waiters();
    }
}

/// Whether a message reached a channel's mailbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    Queued,
    /// The mailbox is full: the message was not queued.
    Full,
    /// The channel has ended.
    Gone,
}

/// A channel's mailbox as the socket, PubSub and presence see it, whatever the
/// channel's `Info` type.
pub(crate) trait Inbox: Send + Sync {
    /// Queues a client message (`Ok(true)`), finds the channel gone (`Ok(false)`),
    /// or hands the message back when the mailbox is full.
    fn try_client(&self, msg: Inbound) -> Result<bool, Inbound>;
    /// Waits for room and queues a client message; false when the channel is gone.
    fn client(&self, msg: Inbound) -> BoxFuture<'static, bool>;
    /// Queues an intercepted broadcast.
    fn intercept(&self, b: Arc<Broadcast>) -> Delivery;
    /// Queues a presence change.
    fn presence(&self, diff: Arc<PresenceDiff>) -> Delivery;
}

pub(crate) fn delivery<T>(result: Result<(), flume::TrySendError<T>>) -> Delivery {
    match result {
        Ok(()) => Delivery::Queued,
        Err(flume::TrySendError::Full(_)) => Delivery::Full,
        Err(flume::TrySendError::Disconnected(_)) => Delivery::Gone,
    }
}

/// How a join ended; sent to the socket once the join reply is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    Joined,
    /// Refused by the channel, or crashed: the reply said so.
    Refused,
}

/// The bytes a client message holds while it waits for its channel.
pub(crate) fn message_size(msg: &Message) -> usize {
    let payload = match &msg.payload {
        Payload::Json(raw) => raw.get().len(),
        Payload::Binary(bytes) => bytes.len(),
    };
    payload + msg.topic.len() + msg.event.len()
}

/// Tells a socket that one of its channels missed a message it had to see (its
/// mailbox was full): the client's stream would have a hole, so the socket closes
/// (1013) and the client rejoins and resyncs. Counted.
pub(crate) fn missed(socket: &SocketHandle, metrics: &Metrics, topic: &str, what: &str) {
    Metrics::inc(&metrics.dropped_messages);
    tracing::warn!(%topic, what, "channel mailbox full: message dropped, closing the socket");
    socket.close(CloseReason::MessagesDropped);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Box<Message> {
        Box::new(Message::new(
            None,
            None,
            "room:a",
            "shout",
            Payload::from(serde_json::json!({"body": "hello"})),
        ))
    }

    fn inbound_bytes(handle: &SocketHandle) -> usize {
        handle.shared.in_bytes.load(Ordering::Acquire)
    }

    #[test]
    fn a_client_message_gives_its_bytes_back_when_taken_or_dropped() {
        let (handle, _rx) = SocketHandle::new(4, 1024, Arc::new(Metrics::default()));
        let msg = message();
        let bytes = message_size(&msg);
        assert!(handle.reserve_inbound(bytes));
        let taken = handle.inbound(msg, bytes);
        assert_eq!(taken.topic(), "room:a");
        assert_eq!(inbound_bytes(&handle), bytes);
        let msg = taken.take();
        assert_eq!(msg.event, "shout");
        assert_eq!(inbound_bytes(&handle), 0);

        assert!(handle.reserve_inbound(bytes));
        drop(handle.inbound(msg, bytes));
        assert_eq!(inbound_bytes(&handle), 0);
    }

    #[test]
    fn messages_left_in_an_ended_mailbox_give_their_bytes_back() {
        let (handle, _rx) = SocketHandle::new(4, 1024, Arc::new(Metrics::default()));
        let (tx, rx) = flume::bounded::<Inbound>(2);
        let bytes = message_size(&message());
        for _ in 0..2 {
            assert!(handle.reserve_inbound(bytes));
            assert!(tx.try_send(handle.inbound(message(), bytes)).is_ok());
        }
        // The mailbox is full: the message comes back and, dropped, gives back its bytes.
        assert!(handle.reserve_inbound(bytes));
        let refused = tx.try_send(handle.inbound(message(), bytes));
        assert!(matches!(refused, Err(flume::TrySendError::Full(_))));
        drop(refused);
        assert_eq!(inbound_bytes(&handle), 2 * bytes);
        // The channel ends: its receiver goes, the queued messages with the last sender.
        drop(rx);
        assert!(matches!(
            tx.try_send(handle.inbound(message(), 0)),
            Err(flume::TrySendError::Disconnected(_))
        ));
        assert_eq!(inbound_bytes(&handle), 2 * bytes);
        drop(tx);
        assert_eq!(inbound_bytes(&handle), 0);
    }
}
