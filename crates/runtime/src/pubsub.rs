//! PubSub: topics, subscribers and broadcasts.
//!
//! Local delivery is a sharded registry of subscribers per topic. A broadcast is
//! encoded at most once per serializer and the same [`Frame`] (reference-counted
//! bytes) goes straight to every subscribing socket's writer: the fast lane of
//! Phoenix (`phoenix/lib/phoenix/channel/server.ex` `dispatch/3`). Only events a
//! channel intercepts go through that channel's actor.
//!
//! Other nodes are reached through an [`Adapter`]. The default has none (one
//! node, in memory); a Redis adapter implements [`Adapter::publish`] and hands the
//! broadcasts it receives from other nodes to [`PubSub::deliver`].

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use phx_protocol::{events, Broadcast, Frame, Payload, Serializer};
use tokio::sync::mpsc;

use crate::mailbox::{missed, Delivery, Inbox, SocketHandle};
use crate::metrics::Metrics;

/// Carries broadcasts to the other nodes of a cluster.
///
/// ```
/// use phx_runtime::pubsub::Adapter;
/// use phx_protocol::Broadcast;
///
/// /// Counts what would be sent to other nodes.
/// struct Counting(std::sync::atomic::AtomicUsize);
/// impl Adapter for Counting {
///     fn publish(&self, _broadcast: &Broadcast) {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///     }
/// }
/// ```
pub trait Adapter: Send + Sync + 'static {
    /// Sends a broadcast made on this node to every other node. Must not block:
    /// queue the work and return.
    fn publish(&self, broadcast: &Broadcast);
}

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

type Shard = RwLock<HashMap<String, Vec<(SubId, Subscriber)>>>;

struct Inner {
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_id: AtomicU64,
    adapter: Option<Arc<dyn Adapter>>,
    metrics: Arc<Metrics>,
}

/// Topics and their subscribers. Cheap to clone: clones share one registry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use phx_runtime::PubSub;
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

    /// A PubSub that also publishes to other nodes through `adapter`.
    pub fn with_adapter(adapter: Arc<dyn Adapter>) -> PubSub {
        PubSub::build(Some(adapter), Arc::default())
    }

    pub(crate) fn build(adapter: Option<Arc<dyn Adapter>>, metrics: Arc<Metrics>) -> PubSub {
        PubSub {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                hasher: RandomState::new(),
                next_id: AtomicU64::new(1),
                adapter,
                metrics,
            }),
        }
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
        let mut shard = self.shard(topic).write().unwrap_or_else(|e| e.into_inner());
        shard.entry(topic.to_owned()).or_default().push((id, sub));
    }

    /// Removes one subscription (no-op if it is gone).
    pub(crate) fn unsubscribe(&self, topic: &str, id: SubId) {
        let mut shard = self.shard(topic).write().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = shard.get_mut(topic) {
            subs.retain(|(sid, _)| *sid != id);
            if subs.is_empty() {
                shard.remove(topic);
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

    pub(crate) fn publish(&self, broadcast: Arc<Broadcast>, from: Option<SubId>) {
        Metrics::inc(&self.inner.metrics.broadcasts);
        if let Some(adapter) = &self.inner.adapter {
            adapter.publish(&broadcast);
        }
        self.dispatch(&broadcast, from);
    }

    /// Delivers a broadcast that arrived from another node to this node's subscribers.
    pub fn deliver(&self, broadcast: Broadcast) {
        self.dispatch(&Arc::new(broadcast), None);
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
