//! The node driver: one node of the cluster, running the replicated tracker over
//! the Redis link on tokio, and carrying broadcasts between nodes.
//!
//! The runtime calls [`Node::track`], [`Node::untrack`], [`Node::update`] and
//! [`Node::untrack_conn`] for its local connections (they return the diff for the
//! local subscribers at once, as Phoenix's tracker does), [`Node::list`] for a
//! topic's `presence_state` across the cluster, and [`Node::publish`] for each
//! broadcast. What other nodes cause arrives as [`Event`]s: a presence diff per
//! topic to broadcast locally, and the other nodes' broadcasts, in order per
//! publisher.
//!
//! The driver task heartbeats every `broadcast_period`, checks liveness several
//! times per period (so a silent node is down at most a fraction of a period
//! after `down_period`), says hello on every (re)connection so the others send
//! their state at once, and says goodbye on [`Node::shutdown`]. Local operations
//! only take the tracker's lock for the operation itself: they keep working
//! while Redis is away, and the others catch up when it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use phx_presence::{
    Gossip, Meta, PresenceDiff, PresenceList, Replica, ReplicaStatus, Tracker, TrackerConfig,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::frame::{Frame, RemoteBroadcast};
use crate::transport::{LinkOptions, LinkStats, Transport, TransportConfig, TransportEvent};
use crate::ClusterError;

/// How long [`Node::shutdown`] waits for Redis to take the goodbye.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379/`.
    pub redis_url: String,
    /// The node's name: stable across restarts, unique in the cluster.
    pub name: String,
    /// Prefix of the Redis channels, so several clusters may share one Redis.
    pub namespace: String,
    /// Heartbeat and liveness timing.
    pub tracker: TrackerConfig,
    /// How many [`Event`]s may wait for the consumer; beyond it they are dropped
    /// (counted in [`NodeStats::events_dropped`] and logged).
    pub events: usize,
    /// The Redis link: the cluster key sealing every message, TLS, deadlines,
    /// queue bounds.
    pub link: LinkOptions,
}

impl NodeConfig {
    /// Defaults: namespace `phx`, heartbeats every 1.5 s, down after 5 s, room
    /// for 65 536 waiting events.
    pub fn new(redis_url: impl Into<String>, name: impl Into<String>) -> NodeConfig {
        NodeConfig {
            redis_url: redis_url.into(),
            name: name.into(),
            namespace: "phx".into(),
            tracker: TrackerConfig::default(),
            events: 65_536,
            link: LinkOptions::default(),
        }
    }
}

/// What other nodes cause on this one.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Presences on `topic` changed (a remote join, leave or update, or a node
    /// that came up, went down, left or restarted): broadcast `presence_diff`
    /// to the topic's local subscribers.
    Presence {
        /// The topic.
        topic: String,
        /// The diff.
        diff: PresenceDiff,
    },
    /// Another node's broadcast, for the topic's local subscribers.
    Broadcast(RemoteBroadcast),
}

/// Counters of a node, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    /// This node.
    pub me: Replica,
    /// The Redis link.
    pub link: LinkStats,
    /// The other nodes known, with their status.
    pub replicas: Vec<(Replica, ReplicaStatus)>,
    /// Broadcasts published.
    pub broadcasts_sent: u64,
    /// Broadcasts received from other nodes.
    pub broadcasts_received: u64,
    /// Broadcasts from other nodes known to be lost (sequence gaps).
    pub broadcasts_lost: u64,
    /// Tracker messages sent.
    pub gossip_sent: u64,
    /// Tracker messages received from other nodes.
    pub gossip_received: u64,
    /// Messages that could not be decoded.
    pub bad_frames: u64,
    /// Events dropped because the consumer did not keep up.
    pub events_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    broadcasts_sent: AtomicU64,
    broadcasts_received: AtomicU64,
    broadcasts_lost: AtomicU64,
    gossip_sent: AtomicU64,
    gossip_received: AtomicU64,
    bad_frames: AtomicU64,
    events_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[derive(Debug)]
struct Shared {
    me: Replica,
    /// The channel every node listens to.
    all: String,
    namespace: String,
    tracker: Mutex<Tracker>,
    link: Transport,
    /// The last broadcast sequence number; held while publishing, so that the
    /// queue order is the numbering order.
    seq: Mutex<u64>,
    events: mpsc::Sender<Event>,
    start: Instant,
    counters: Counters,
}

fn node_channel(namespace: &str, name: &str) -> String {
    format!("{namespace}:node:{name}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the tracker half-updated in a
    // way worse than stopping presence altogether; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn send_gossip(&self, gossip: Gossip) {
        let channel = match gossip.recipient() {
            Some(to) => node_channel(&self.namespace, &to.name),
            None => self.all.clone(),
        };
        let frame = Frame::Gossip {
            from: self.me.clone(),
            gossip: Bytes::from(gossip.encode()),
        };
        match frame.encode() {
            Ok(bytes) => match self.link.publish(&channel, bytes) {
                Ok(()) => bump(&self.counters.gossip_sent, 1),
                Err(e) => debug!(error = %e, "cluster: tracker message not sent"),
            },
            Err(e) => warn!(error = %e, "cluster: tracker message not encodable"),
        }
    }

    fn emit(&self, event: Event) {
        if let Err(e) = self.events.try_send(event) {
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                bump(&self.counters.events_dropped, 1);
                warn!("cluster: event consumer too slow, event dropped");
            }
        }
    }

    fn emit_diffs(&self, diffs: impl IntoIterator<Item = (String, PresenceDiff)>) {
        for (topic, diff) in diffs {
            if !diff.is_empty() {
                self.emit(Event::Presence { topic, diff });
            }
        }
    }

    fn receive(&self, payload: Bytes, last_seq: &mut HashMap<String, (u64, u64)>) {
        let frame = match Frame::decode(payload) {
            Ok(frame) => frame,
            Err(e) => {
                bump(&self.counters.bad_frames, 1);
                warn!(error = %e, "cluster: undecodable message ignored");
                return;
            }
        };
        if frame.from() == &self.me {
            return; // our own echo
        }
        match frame {
            Frame::Gossip { from, gossip } => {
                let gossip = match Gossip::decode(&gossip) {
                    Ok(g) if g.from() == &from => g,
                    Ok(_) => {
                        bump(&self.counters.bad_frames, 1);
                        warn!(node = %from.name, "cluster: tracker message with a forged sender ignored");
                        return;
                    }
                    Err(e) => {
                        bump(&self.counters.bad_frames, 1);
                        warn!(node = %from.name, error = %e, "cluster: tracker message ignored");
                        return;
                    }
                };
                bump(&self.counters.gossip_received, 1);
                let now = self.now_ms();
                let (diffs, replies) = lock(&self.tracker).handle(gossip, now);
                self.emit_diffs(diffs);
                for reply in replies {
                    self.send_gossip(reply);
                }
            }
            Frame::Broadcast(b) => {
                bump(&self.counters.broadcasts_received, 1);
                let last = last_seq
                    .entry(b.from.name.clone())
                    .or_insert((b.from.vsn, 0));
                if last.0 != b.from.vsn {
                    *last = (b.from.vsn, 0);
                }
                if b.seq > last.1 + 1 {
                    bump(&self.counters.broadcasts_lost, b.seq - last.1 - 1);
                }
                last.1 = last.1.max(b.seq);
                self.emit(Event::Broadcast(b));
            }
        }
    }
}

/// One node of the cluster. See the module docs.
///
/// ```no_run
/// use bytes::Bytes;
/// use phx_cluster::{Event, Node, NodeConfig};
/// use phx_presence::Meta;
/// use serde_json::json;
///
/// # async fn demo() -> Result<(), phx_cluster::ClusterError> {
/// let (node, mut events) = Node::start(NodeConfig::new("redis://127.0.0.1:6379/", "web-1"))?;
/// // A local connection (id 7) joins "room:1" as "alice": broadcast this diff locally.
/// let diff = node.track("room:1", 7, "alice", Meta::new("F1", json!({"device": "phone"})));
/// assert!(diff.joins.contains_key("alice"));
/// node.publish("room:1", "new_msg", Bytes::from_static(br#"{"body":"hi"}"#))?;
/// // Other nodes' presence changes and broadcasts arrive as events.
/// if let Some(Event::Presence { topic, diff }) = events.recv().await {
///     println!("{topic}: {} joins", diff.joins.len());
/// }
/// node.shutdown().await; // the others drop alice at once
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Node {
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Node {
    /// Starts a node on the current tokio runtime: a new incarnation of
    /// `config.name`. Fails on an invalid name, URL or tracker configuration;
    /// an unreachable Redis is retried in the background.
    ///
    /// The incarnation number is the wall clock in microseconds, as in
    /// Phoenix. The others trust it to grow: a node restarted with its clock
    /// set back before its previous start is ignored by them until they forget
    /// the previous incarnation (`permdown_period`).
    pub fn start(config: NodeConfig) -> Result<(Node, mpsc::Receiver<Event>), ClusterError> {
        if config.name.is_empty() || config.name.len() > 1_024 {
            return Err(ClusterError::Invalid {
                what: "node name",
                reason: "must be 1 to 1 024 bytes".into(),
            });
        }
        let vsn = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let me = Replica::new(config.name.clone(), vsn);
        let tracker = Tracker::new(me.clone(), config.tracker)?;
        let all = format!("{}:all", config.namespace);
        let channels = vec![all.clone(), node_channel(&config.namespace, &config.name)];
        let (link, link_events) = Transport::start(TransportConfig::for_node(
            config.redis_url.clone(),
            channels,
            config.name.clone(),
            config.link.clone(),
        ))?;
        let (events_tx, events_rx) = mpsc::channel(config.events.max(1));
        let shared = Arc::new(Shared {
            me,
            all,
            namespace: config.namespace,
            tracker: Mutex::new(tracker),
            link,
            seq: Mutex::new(0),
            events: events_tx,
            start: Instant::now(),
            counters: Counters::default(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(drive(shared.clone(), link_events, stop_rx, config.tracker));
        info!(node = %shared.me.name, vsn = shared.me.vsn, "cluster: node started");
        Ok((
            Node {
                shared,
                stop: Mutex::new(Some(stop_tx)),
                task: Mutex::new(Some(task)),
            },
            events_rx,
        ))
    }

    /// This node's identity (name and incarnation).
    pub fn replica(&self) -> &Replica {
        &self.shared.me
    }

    /// Tracks a local connection's `key` on `topic` (a second track of the same
    /// connection, topic and key replaces the meta). Returns the diff for the
    /// local subscribers; the other nodes hear of it with the next heartbeat.
    pub fn track(&self, topic: &str, conn: u64, key: &str, meta: Meta) -> PresenceDiff {
        lock(&self.shared.tracker).track(topic, conn, key, meta)
    }

    /// Untracks a local connection's `key` on `topic` (empty diff when not tracked).
    pub fn untrack(&self, topic: &str, conn: u64, key: &str) -> PresenceDiff {
        lock(&self.shared.tracker).untrack(topic, conn, key)
    }

    /// Replaces a tracked entry's meta; an error when it is not tracked.
    pub fn update(
        &self,
        topic: &str,
        conn: u64,
        key: &str,
        meta: Meta,
    ) -> Result<PresenceDiff, ClusterError> {
        Ok(lock(&self.shared.tracker).update(topic, conn, key, meta)?)
    }

    /// Untracks everything of a local connection (it closed); diffs per topic.
    pub fn untrack_conn(&self, conn: u64) -> Vec<(String, PresenceDiff)> {
        lock(&self.shared.tracker).untrack_conn(conn)
    }

    /// The presences of `topic` on every node that is up (`presence_state`).
    pub fn list(&self, topic: &str) -> PresenceList {
        lock(&self.shared.tracker).list(topic)
    }

    /// Publishes a broadcast to the other nodes (not to this node's own
    /// subscribers: the runtime delivers those itself). Never waits; fails when
    /// the outgoing queue is full. Delivered at most once, in order per publisher.
    pub fn publish(&self, topic: &str, event: &str, payload: Bytes) -> Result<(), ClusterError> {
        let mut seq = lock(&self.shared.seq);
        let broadcast = RemoteBroadcast {
            from: self.shared.me.clone(),
            seq: *seq + 1,
            topic: topic.to_owned(),
            event: event.to_owned(),
            payload,
        };
        let bytes = Frame::Broadcast(broadcast).encode()?;
        self.shared.link.publish(&self.shared.all, bytes)?;
        *seq += 1;
        bump(&self.shared.counters.broadcasts_sent, 1);
        Ok(())
    }

    /// The counters and states now.
    pub fn stats(&self) -> NodeStats {
        let c = &self.shared.counters;
        NodeStats {
            me: self.shared.me.clone(),
            link: self.shared.link.stats(),
            replicas: lock(&self.shared.tracker).replicas(),
            broadcasts_sent: read(&c.broadcasts_sent),
            broadcasts_received: read(&c.broadcasts_received),
            broadcasts_lost: read(&c.broadcasts_lost),
            gossip_sent: read(&c.gossip_sent),
            gossip_received: read(&c.gossip_received),
            bad_frames: read(&c.bad_frames),
            events_dropped: read(&c.events_dropped),
        }
    }

    /// Leaves the cluster gracefully: stops heartbeating and tells the others,
    /// who drop this node's presences at once. Returns whether Redis took the
    /// goodbye (when it did not, the others drop them after `down_period`).
    /// Only the first call says goodbye; later ones return false.
    pub async fn shutdown(&self) -> bool {
        let Some(stop) = lock(&self.stop).take() else {
            return false;
        };
        let _ = stop.send(());
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let goodbye = lock(&self.shared.tracker).goodbye();
        let frame = Frame::Gossip {
            from: self.shared.me.clone(),
            gossip: Bytes::from(goodbye.encode()),
        };
        let Ok(bytes) = frame.encode() else {
            return false;
        };
        let sent = self.shared.link.publish_confirmed(&self.shared.all, bytes);
        let ok = tokio::time::timeout(GOODBYE_TIMEOUT, sent)
            .await
            .unwrap_or(false);
        info!(node = %self.shared.me.name, goodbye_sent = ok, "cluster: node left");
        ok
    }
}

impl Drop for Node {
    /// Dropping a node without [`Node::shutdown`] stops it silently, like a
    /// crash: the others notice after `down_period`.
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

async fn drive(
    shared: Arc<Shared>,
    mut link_events: mpsc::Receiver<TransportEvent>,
    mut stop: oneshot::Receiver<()>,
    config: TrackerConfig,
) {
    let period = Duration::from_millis(config.broadcast_period_ms);
    let mut heartbeat = tokio::time::interval(period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let check_every = (period / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut check = tokio::time::interval(check_every);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seq = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = heartbeat.tick() => {
                let hb = lock(&shared.tracker).heartbeat();
                shared.send_gossip(hb);
            }
            _ = check.tick() => {
                let now = shared.now_ms();
                let diffs = lock(&shared.tracker).tick(now);
                shared.emit_diffs(diffs);
            }
            event = link_events.recv() => match event {
                None => break,
                Some(TransportEvent::Connected) => {
                    let hello = lock(&shared.tracker).hello();
                    shared.send_gossip(hello);
                }
                Some(TransportEvent::Disconnected) => {
                    warn!(node = %shared.me.name, "cluster: Redis away; local presence and channels keep working");
                }
                Some(TransportEvent::Message { payload, .. }) => shared.receive(payload, &mut last_seq),
            }
        }
    }
}
