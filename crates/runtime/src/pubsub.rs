//! PubSub: topics, subscribers and broadcasts.
//!
//! Local delivery is a sharded registry of subscribers per topic. A broadcast is
//! encoded at most once per serializer and the same [`Frame`] (reference-counted
//! bytes) goes straight to every subscribing socket's writer: the fast lane of
//! Phoenix (`phoenix/lib/phoenix/channel/server.ex` `dispatch/3`). Only events a
//! channel intercepts go through that channel's actor.
//!
//! Other nodes are reached through an [`Adapter`]. The default has none (one
//! node, in memory); a cluster adapter (phx-cluster's Redis one, plugged in by
//! phx-server) is built with a [`LocalPubSub`] handle, gets every local broadcast
//! in order through [`Adapter::publish`], and hands the broadcasts of other
//! nodes to [`LocalPubSub::deliver`], which shares their encoding among local
//! subscribers exactly as for local broadcasts.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use phx_protocol::{events, Broadcast, Frame, Payload, Serializer};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::mailbox::{missed, Delivery, Inbox, SocketHandle};
use crate::metrics::Metrics;
use crate::RuntimeError;

/// What [`Adapter::publish`] returns: resolves once the broadcast has been
/// handed to the network (or failed to be).
pub type PublishFuture = Pin<Box<dyn Future<Output = Result<(), RuntimeError>> + Send>>;

/// Carries broadcasts to the other nodes of a cluster.
///
/// The runtime calls [`Adapter::publish`] for every broadcast made on this node,
/// one at a time and in order (it awaits each before the next), so an adapter
/// that keeps its own transport's order keeps the order per publisher. Failures
/// are logged and counted in the `adapter_errors` metric; the local
/// subscribers get the broadcast regardless. The hooks tell an adapter when a
/// topic gains its first or loses its last local subscriber, for adapters that
/// subscribe per topic. Broadcasts from other nodes come back through
/// [`LocalPubSub::deliver`], the handle the adapter is built with.
///
/// ```
/// use std::sync::Arc;
/// use phx_runtime::pubsub::{Adapter, LocalPubSub, PublishFuture};
/// use phx_runtime::Endpoint;
/// use phx_protocol::Broadcast;
///
/// /// Loops every broadcast back as if another node had sent it.
/// struct Loopback { local: LocalPubSub }
/// impl Adapter for Loopback {
///     fn node_id(&self) -> &str { "loopback" }
///     fn publish(&self, broadcast: Arc<Broadcast>) -> PublishFuture {
///         self.local.deliver("elsewhere", (*broadcast).clone());
///         Box::pin(async { Ok(()) })
///     }
/// }
/// let endpoint = Endpoint::builder()
///     .adapter(|local| Arc::new(Loopback { local }))
///     .build();
/// # let _ = endpoint;
/// ```
pub trait Adapter: Send + Sync + 'static {
    /// This node's id in the cluster: broadcasts delivered with it as their
    /// origin are this node's own echoes and are dropped.
    fn node_id(&self) -> &str;

    /// Sends a broadcast made on this node to every other node. Encode it with
    /// [`encode_payload`] (and decode on the other side with [`decode_payload`]).
    fn publish(&self, broadcast: Arc<Broadcast>) -> PublishFuture;

    /// `topic` got its first subscriber on this node.
    fn first_subscriber(&self, _topic: &str) {}

    /// `topic` lost its last subscriber on this node.
    fn last_subscriber_gone(&self, _topic: &str) {}
}

/// Whether `topic` belongs to the runtime or its apps (`phx_*`, `phx:*`: the
/// long-poll relay, replication of records, editing sessions): no client may
/// join one (it matches no route) and [`PubSub::broadcast_external`] refuses it.
///
/// ```
/// assert!(phx_runtime::pubsub::is_internal("phx_records:post"));
/// assert!(phx_runtime::pubsub::is_internal("phx:lp:0a1b"));
/// assert!(!phx_runtime::pubsub::is_internal("room:phx_1"));
/// ```
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("phx_") || topic.starts_with("phx:")
}

/// How a broadcast's payload travels between nodes: one tag byte (0 = JSON
/// text, 1 = binary), then the bytes.
///
/// ```
/// use phx_runtime::pubsub::{decode_payload, encode_payload};
/// use phx_runtime::Payload;
/// let p = Payload::json(&serde_json::json!({"a": 1})).unwrap();
/// assert_eq!(decode_payload(&encode_payload(&p)).unwrap(), p);
/// ```
pub fn encode_payload(payload: &Payload) -> Bytes {
    let mut buf = BytesMut::new();
    match payload {
        Payload::Json(raw) => {
            buf.put_u8(0);
            buf.put_slice(raw.get().as_bytes());
        }
        Payload::Binary(bytes) => {
            buf.put_u8(1);
            buf.put_slice(bytes);
        }
    }
    buf.freeze()
}

/// The payload [`encode_payload`] made; an error on anything else.
pub fn decode_payload(bytes: &Bytes) -> Result<Payload, RuntimeError> {
    match bytes.first() {
        Some(0) => {
            let text = std::str::from_utf8(&bytes[1..]).map_err(RuntimeError::adapter)?;
            let raw = RawValue::from_string(text.to_owned())?;
            Ok(Payload::Json(raw))
        }
        Some(1) => Ok(Payload::Binary(bytes.slice(1..))),
        Some(tag) => Err(RuntimeError::adapter(format!("unknown payload tag {tag}"))),
        None => Err(RuntimeError::adapter("empty payload")),
    }
}

/// The handle an [`Adapter`] is built with: delivers other nodes' broadcasts to
/// this node's subscribers. It does not keep the PubSub alive.
#[derive(Clone)]
pub struct LocalPubSub {
    inner: Weak<Inner>,
}

impl LocalPubSub {
    /// Delivers a broadcast that `origin` (a node id) published to this node's
    /// subscribers, encoded once per serializer and shared, like a local one.
    /// Broadcasts whose origin is this node (echoes) are dropped.
    pub fn deliver(&self, origin: &str, broadcast: Broadcast) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let pubsub = PubSub { inner };
        if let Some(adapter) = pubsub.inner.adapter.get() {
            if adapter.node_id() == origin {
                return;
            }
        }
        Metrics::inc(&pubsub.inner.metrics.remote_broadcasts);
        pubsub.dispatch(&Arc::new(broadcast), None);
    }
}

/// How many broadcasts may wait for the adapter; beyond that they are not sent
/// to other nodes (counted as adapter errors).
const OUTBOUND: usize = 65_536;

/// Identifies one subscription, so that `broadcast_from` can skip it.
pub(crate) type SubId = u64;

/// Who receives a topic's broadcasts.
#[derive(Clone)]
pub(crate) enum Subscriber {
    /// A joined channel: non-intercepted events go to its socket's writer
    /// already encoded; intercepted ones to the channel's `handle_out`.
    Channel {
        socket: SocketHandle,
        serializer: Serializer,
        channel: Arc<dyn Inbox>,
        intercepts: Arc<[String]>,
    },
    /// A socket's own id topic: a `disconnect` broadcast closes the socket.
    SocketId { socket: SocketHandle },
    /// Application code listening with [`PubSub::subscribe`].
    Listener { tx: mpsc::Sender<Arc<Broadcast>> },
}

const SHARDS: usize = 32;

pub(crate) type MakeAdapter = Box<dyn FnOnce(LocalPubSub) -> Arc<dyn Adapter>>;

type Shard = RwLock<HashMap<String, Vec<(SubId, Subscriber)>>>;

struct Inner {
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_id: AtomicU64,
    adapter: OnceLock<Arc<dyn Adapter>>,
    /// The queue to the task that hands broadcasts to the adapter in order;
    /// started with the first broadcast (there is a tokio runtime by then).
    outbound: OnceLock<mpsc::Sender<Arc<Broadcast>>>,
    metrics: Arc<Metrics>,
}

/// Topics and their subscribers. Cheap to clone: clones share one registry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use phx_runtime::pubsub::PubSub;
/// let pubsub = PubSub::new();
/// let mut sub = pubsub.subscribe("events:records", 16);
/// pubsub.broadcast("events:records", "created", serde_json::json!({"id": 7}).into());
/// let b = sub.recv().await.unwrap();
/// assert_eq!(b.event, "created");
/// # }
/// ```
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

impl Default for PubSub {
    fn default() -> PubSub {
        PubSub::new()
    }
}

/// A subscription made with [`PubSub::subscribe`]; dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<Broadcast>>,
    topic: String,
    id: SubId,
    pubsub: PubSub,
}

impl Subscription {
    /// The next broadcast on the topic. `None` once the subscription fell behind
    /// (a broadcast came while its queue was full): it has ended, nothing after
    /// the hole is delivered, and the caller should subscribe again and resync.
    pub async fn recv(&mut self) -> Option<Arc<Broadcast>> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.pubsub.unsubscribe(&self.topic, self.id);
    }
}

impl PubSub {
    /// A single-node, in-memory PubSub.
    pub fn new() -> PubSub {
        PubSub::build(None, Arc::default())
    }

    /// A PubSub that also publishes to other nodes through the adapter `make`
    /// builds from a handle to this PubSub.
    pub fn with_adapter(make: impl FnOnce(LocalPubSub) -> Arc<dyn Adapter> + 'static) -> PubSub {
        PubSub::build(Some(Box::new(make)), Arc::default())
    }

    pub(crate) fn build(make: Option<MakeAdapter>, metrics: Arc<Metrics>) -> PubSub {
        let pubsub = PubSub {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                hasher: RandomState::new(),
                next_id: AtomicU64::new(1),
                adapter: OnceLock::new(),
                outbound: OnceLock::new(),
                metrics,
            }),
        };
        if let Some(make) = make {
            let adapter = make(pubsub.local());
            let _ = pubsub.inner.adapter.set(adapter);
        }
        pubsub
    }

    /// Whether broadcasts also go to other nodes (an adapter is plugged in).
    pub fn clustered(&self) -> bool {
        self.inner.adapter.get().is_some()
    }

    /// The handle adapters deliver other nodes' broadcasts with.
    pub fn local(&self) -> LocalPubSub {
        LocalPubSub {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The queue to the adapter task, started on first use; `None` when there
    /// is no tokio runtime to start it on (a broadcast from a plain thread
    /// before any from the runtime).
    fn outbound(&self, adapter: &Arc<dyn Adapter>) -> Option<&mpsc::Sender<Arc<Broadcast>>> {
        if let Some(tx) = self.inner.outbound.get() {
            return Some(tx);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(self.inner.outbound.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<Arc<Broadcast>>(OUTBOUND);
            let adapter = adapter.clone();
            let metrics = self.inner.metrics.clone();
            runtime.spawn(async move {
                while let Some(b) = rx.recv().await {
                    if let Err(err) = adapter.publish(b.clone()).await {
                        Metrics::inc(&metrics.adapter_errors);
                        tracing::warn!(topic = %b.topic, event = %b.event, %err, "broadcast not sent to other nodes");
                    }
                }
            });
            tx
        }))
    }

    fn shard(&self, topic: &str) -> &Shard {
        let i = self.inner.hasher.hash_one(topic) as usize % SHARDS;
        &self.inner.shards[i]
    }

    /// A fresh id, unique among this PubSub's subscriptions (channels use theirs
    /// as their channel id, so a socket can drop a channel's subscription itself).
    pub(crate) fn next_id(&self) -> SubId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add(&self, topic: &str, sub: Subscriber) -> SubId {
        let id = self.next_id();
        self.insert(topic, id, sub);
        id
    }

    pub(crate) fn insert(&self, topic: &str, id: SubId, sub: Subscriber) {
        let first = {
            let mut shard = self.shard(topic).write().unwrap_or_else(|e| e.into_inner());
            let subs = shard.entry(topic.to_owned()).or_default();
            subs.push((id, sub));
            subs.len() == 1
        };
        if first {
            if let Some(adapter) = self.inner.adapter.get() {
                adapter.first_subscriber(topic);
            }
        }
    }

    /// Removes one subscription (no-op if it is gone).
    pub(crate) fn unsubscribe(&self, topic: &str, id: SubId) {
        let last = {
            let mut shard = self.shard(topic).write().unwrap_or_else(|e| e.into_inner());
            match shard.get_mut(topic) {
                Some(subs) => {
                    subs.retain(|(sid, _)| *sid != id);
                    subs.is_empty() && shard.remove(topic).is_some()
                }
                None => false,
            }
        };
        if last {
            if let Some(adapter) = self.inner.adapter.get() {
                adapter.last_subscriber_gone(topic);
            }
        }
    }

    /// Listens to a topic from application code; up to `capacity` broadcasts wait
    /// in the subscription. One that falls further behind ends (see
    /// [`Subscription::recv`]): a listener never misses a broadcast silently.
    pub fn subscribe(&self, topic: &str, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.add(topic, Subscriber::Listener { tx });
        Subscription {
            rx,
            topic: topic.to_owned(),
            id,
            pubsub: self.clone(),
        }
    }

    /// Number of subscribers of a topic on this node.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        let shard = self.shard(topic).read().unwrap_or_else(|e| e.into_inner());
        shard.get(topic).map_or(0, Vec::len)
    }

    /// Broadcasts `event` with `payload` to every subscriber of `topic`, on every node.
    pub fn broadcast(&self, topic: &str, event: &str, payload: Payload) {
        self.publish(Arc::new(Broadcast::new(topic, event, payload)), None);
    }

    /// Broadcasts on behalf of someone outside the application (a client's
    /// request, an operator's API call): as [`PubSub::broadcast`], but an
    /// internal topic ([`is_internal`]) is refused and counted, so no outsider
    /// can speak on the runtime's or the apps' own topics.
    ///
    /// ```
    /// use phx_runtime::pubsub::PubSub;
    /// use phx_runtime::Payload;
    /// let pubsub = PubSub::new();
    /// assert!(pubsub.broadcast_external("room:1", "news", Payload::empty_object()).is_ok());
    /// assert!(pubsub.broadcast_external("phx:lp:00", "poll", Payload::empty_object()).is_err());
    /// ```
    pub fn broadcast_external(
        &self,
        topic: &str,
        event: &str,
        payload: Payload,
    ) -> Result<(), RuntimeError> {
        if is_internal(topic) {
            Metrics::inc(&self.inner.metrics.internal_topics_refused);
            tracing::warn!(%topic, %event, "outside broadcast to an internal topic refused");
            return Err(RuntimeError::InternalTopic(topic.to_owned()));
        }
        self.broadcast(topic, event, payload);
        Ok(())
    }

    pub(crate) fn publish(&self, broadcast: Arc<Broadcast>, from: Option<SubId>) {
        Metrics::inc(&self.inner.metrics.broadcasts);
        if let Some(adapter) = self.inner.adapter.get() {
            let queued = match self.outbound(adapter) {
                Some(tx) => tx.try_send(broadcast.clone()).map_err(|e| e.to_string()),
                None => Err("no tokio runtime to run the adapter on".to_owned()),
            };
            if let Err(err) = queued {
                Metrics::inc(&self.inner.metrics.adapter_errors);
                tracing::warn!(topic = %broadcast.topic, %err, "broadcast not queued for other nodes");
            }
        }
        self.dispatch(&broadcast, from);
    }

    /// Delivers a broadcast to this node's subscribers only (presence diffs:
    /// every node computes its own from the replicated state).
    pub(crate) fn publish_local(&self, broadcast: Arc<Broadcast>) {
        Metrics::inc(&self.inner.metrics.broadcasts);
        self.dispatch(&broadcast, None);
    }

    /// The fast lane: encode once per serializer, share the frame with every socket.
    fn dispatch(&self, b: &Arc<Broadcast>, from: Option<SubId>) {
        let shard = self
            .shard(&b.topic)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(subs) = shard.get(&b.topic) else {
            return;
        };
        let mut encoded: [Option<Option<Arc<Frame>>>; 2] = [None, None];
        let mut lagged: Vec<SubId> = Vec::new();
        for (id, sub) in subs {
            if Some(*id) == from {
                continue;
            }
            match sub {
                Subscriber::Channel {
                    socket,
                    serializer,
                    channel,
                    intercepts,
                } => {
                    if intercepts.iter().any(|e| *e == b.event) {
                        if channel.intercept(b.clone()) == Delivery::Full {
                            missed(
                                socket,
                                &self.inner.metrics,
                                &b.topic,
                                "intercepted broadcast",
                            );
                        }
                        continue;
                    }
                    let slot = &mut encoded[usize::from(*serializer == Serializer::V2Json)];
                    let frame = slot.get_or_insert_with(|| match serializer.encode_broadcast(b) {
                        Ok(frame) => Some(Arc::new(frame)),
                        Err(err) => {
                            tracing::warn!(topic = %b.topic, event = %b.event, %err, "broadcast cannot be encoded for {:?} sockets", serializer);
                            None
                        }
                    });
                    if let Some(frame) = frame {
                        let _ = socket.send_shared(frame.clone());
                    }
                }
                Subscriber::SocketId { socket } => {
                    if b.event == events::DISCONNECT {
                        socket.disconnect();
                    }
                }
                Subscriber::Listener { tx } => {
                    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(b.clone()) {
                        Metrics::inc(&self.inner.metrics.dropped_messages);
                        tracing::warn!(topic = %b.topic, "a PubSub subscription fell behind: ending it");
                        lagged.push(*id);
                    }
                }
            }
        }
        drop(shard);
        // Dropping a lagging listener's sender ends its `recv` after what it holds.
        for id in lagged {
            self.unsubscribe(&b.topic, id);
        }
    }
}
