//! Plugs a [`Node`] into a phx-runtime endpoint: the node's replicated tracker
//! becomes the endpoint's presence store, its broadcast bus the endpoint's
//! PubSub adapter, and a task (the pump) hands what other nodes cause (presence
//! diffs, broadcasts) to the endpoint's local subscribers. A panic in an
//! application hook the pump runs (the presence `fetch`) is contained to that
//! one event, logged and counted ([`NodeStats::hook_panics`]); the pump goes on.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use phx_presence::{Meta, PresenceDiff, PresenceList};
use phx_protocol::Broadcast;
use phx_runtime::presence::PresenceStore;
use phx_runtime::pubsub::{decode_payload, encode_payload, Adapter, LocalPubSub, PublishFuture};
use phx_runtime::{Endpoint, EndpointBuilder, RuntimeError};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::{ClusterError, Event, Node, NodeConfig, NodeStats};

/// The `phx_ref` of each local entry: connection → (topic, key) → ref.
type LocalRefs = HashMap<u64, HashMap<(String, String), String>>;

/// The tracker as the endpoint's presence store.
struct TrackerStore {
    node: Arc<Node>,
    /// The `phx_ref` of each local entry, per connection, then (topic, key):
    /// an update's new meta carries the ref it replaces as `phx_ref_prev`, as
    /// Phoenix's tracker sets it (a key may have several connections, so the
    /// key's list alone cannot tell which ref is this connection's).
    refs: Mutex<LocalRefs>,
    /// The largest meta accepted, encoded.
    max_meta: usize,
}

impl TrackerStore {
    fn refs(&self) -> std::sync::MutexGuard<'_, LocalRefs> {
        self.refs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a meta too large for one tracker message (half of
    /// `max_message_bytes`), so that no message between nodes exceeds it.
    fn fits(&self, meta: &Value) -> Result<(), RuntimeError> {
        let size = serde_json::to_vec(meta)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.max_meta {
            warn!(
                size,
                max = self.max_meta,
                "cluster: presence meta too large to replicate; refused"
            );
            return Err(RuntimeError::adapter(format!(
                "presence meta of {size} bytes, at most {} allowed in a cluster",
                self.max_meta
            )));
        }
        Ok(())
    }
}

fn runtime_error(err: ClusterError) -> RuntimeError {
    match err {
        ClusterError::Presence(e) => RuntimeError::Presence(e),
        other => RuntimeError::adapter(other),
    }
}

impl PresenceStore for TrackerStore {
    fn track(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, RuntimeError> {
        self.fits(&meta)?;
        let diff = self
            .node
            .track(topic, conn, key, Meta::new(phx_ref.clone(), meta));
        self.refs()
            .entry(conn)
            .or_default()
            .insert((topic.to_owned(), key.to_owned()), phx_ref);
        Ok(diff)
    }

    fn update(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, RuntimeError> {
        self.fits(&meta)?;
        let id = (topic.to_owned(), key.to_owned());
        let mut new = Meta::new(phx_ref.clone(), meta);
        new.phx_ref_prev = self.refs().get(&conn).and_then(|m| m.get(&id)).cloned();
        let diff = self
            .node
            .update(topic, conn, key, new)
            .map_err(runtime_error)?;
        self.refs().entry(conn).or_default().insert(id, phx_ref);
        Ok(diff)
    }

    fn untrack(&self, topic: &str, key: &str, conn: u64) -> PresenceDiff {
        let mut refs = self.refs();
        if let Some(mine) = refs.get_mut(&conn) {
            mine.remove(&(topic.to_owned(), key.to_owned()));
            if mine.is_empty() {
                refs.remove(&conn);
            }
        }
        drop(refs);
        self.node.untrack(topic, conn, key)
    }

    fn untrack_conn(&self, conn: u64) -> Vec<(String, PresenceDiff)> {
        self.refs().remove(&conn);
        self.node.untrack_conn(conn)
    }

    fn list(&self, topic: &str) -> PresenceList {
        self.node.list(topic)
    }
}

/// The node's broadcast bus as the endpoint's PubSub adapter.
struct RedisAdapter {
    node: Arc<Node>,
}

impl Adapter for RedisAdapter {
    fn node_id(&self) -> &str {
        &self.node.replica().name
    }

    fn publish(&self, broadcast: Arc<Broadcast>) -> PublishFuture {
        // Node::publish queues without waiting, in call order: the runtime's
        // in-order calls keep the order per publisher.
        let result = self
            .node
            .publish(
                &broadcast.topic,
                &broadcast.event,
                encode_payload(&broadcast.payload),
            )
            .map_err(runtime_error);
        Box::pin(async move { result })
    }
}

/// A phx-runtime endpoint's membership in a cluster.
///
/// ```no_run
/// use phx_cluster::{Cluster, NodeConfig};
/// use phx_runtime::Endpoint;
///
/// # async fn demo() -> Result<(), phx_cluster::ClusterError> {
/// let config = NodeConfig::new("redis://127.0.0.1:6379/", "web-1");
/// let (cluster, endpoint) = Cluster::start(config, Endpoint::builder())?;
/// // ... serve `endpoint`; on SIGTERM:
/// cluster.leave().await; // the other nodes drop this one's presences at once
/// endpoint.drain().await; // broadcasts still cross nodes meanwhile
/// cluster.shutdown().await;
/// # let _ = endpoint;
/// # Ok(()) }
/// ```
pub struct Cluster {
    node: Arc<Node>,
    pump: Mutex<Option<JoinHandle<()>>>,
}

impl Cluster {
    /// Starts a node (on the current tokio runtime) and builds the endpoint of
    /// `builder` on it. Fails as [`Node::start`] does.
    pub fn start(
        config: NodeConfig,
        builder: EndpointBuilder,
    ) -> Result<(Cluster, Endpoint), ClusterError> {
        let max_meta = config.tracker.max_message_bytes / 2;
        let (node, events) = Node::start(config)?;
        let node = Arc::new(node);
        let adapter_node = node.clone();
        let endpoint = builder
            .presence_store(Arc::new(TrackerStore {
                node: node.clone(),
                refs: Mutex::default(),
                max_meta,
            }))
            .adapter(move |_local: LocalPubSub| -> Arc<dyn Adapter> {
                Arc::new(RedisAdapter { node: adapter_node })
            })
            .build();
        let pump = tokio::spawn(pump(events, endpoint.clone(), node.clone()));
        Ok((
            Cluster {
                node,
                pump: Mutex::new(Some(pump)),
            },
            endpoint,
        ))
    }

    /// The node's counters and the Redis link's state.
    pub fn stats(&self) -> NodeStats {
        self.node.stats()
    }

    /// Says goodbye (the others drop this node's presences at once) and
    /// waits until Redis took it, before anything else stops: broadcasts and
    /// other nodes' events keep flowing (for the drain) until
    /// [`Cluster::shutdown`]. Returns whether Redis took the goodbye.
    pub async fn leave(&self) -> bool {
        self.node.leave().await
    }

    /// Leaves the cluster (when [`Cluster::leave`] was not called) and stops
    /// handing other nodes' events to the endpoint. Returns whether Redis took
    /// the goodbye.
    pub async fn shutdown(&self) -> bool {
        let sent = self.node.shutdown().await;
        if let Some(pump) = self.pump.lock().unwrap_or_else(|e| e.into_inner()).take() {
            pump.abort();
        }
        sent
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.lock().unwrap_or_else(|e| e.into_inner()).take() {
            pump.abort();
        }
    }
}

/// Hands other nodes' presence diffs and broadcasts to the endpoint. Each
/// event runs inside `catch_unwind`: a panicking application hook costs that
/// event (logged, counted), never the pump.
async fn pump(mut events: mpsc::Receiver<Event>, endpoint: Endpoint, node: Arc<Node>) {
    let local = endpoint.pubsub().local();
    while let Some(event) = events.recv().await {
        let what = match &event {
            Event::Presence { topic, .. } => format!("presence diff on {topic}"),
            Event::Broadcast(b) => format!("broadcast {} on {}", b.event, b.topic),
        };
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| match event {
            Event::Presence { topic, diff } => endpoint.presence().apply_remote(&topic, diff),
            Event::Broadcast(b) => match decode_payload(&b.payload) {
                Ok(payload) => {
                    local.deliver(&b.from.name, Broadcast::new(b.topic, b.event, payload));
                }
                Err(err) => {
                    warn!(node = %b.from.name, topic = %b.topic, %err, "cluster: broadcast payload ignored");
                }
            },
        }));
        if applied.is_err() {
            node.hook_panicked();
            error!(event = %what, "cluster: an application hook panicked applying another node's event; event skipped");
        }
    }
    warn!("cluster: the node's event stream ended; the pump stops");
}
