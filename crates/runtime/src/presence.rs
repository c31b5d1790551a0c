//! Live presence: channels track their connections on a topic, every change is
//! broadcast to the topic's local subscribers as `presence_diff`, and a
//! channel's presences leave the moment it ends, however it ends (leave, socket
//! close, crash, kill).
//!
//! The state lives in a [`PresenceStore`]: by default this node's own
//! [`PresenceState`] (one node, in memory); in a cluster the replicated tracker
//! (phx-cluster's node, plugged in by phx-server), so that `presence_state` and
//! `presence_diff` cover every node. Other nodes' changes come in through
//! [`Presence::apply_remote`].
//!
//! The default store is sharded by topic. A store operation holds its lock only
//! for the state change itself;
//! the application's [`Fetch`] hook, the diff's encoding and its fan-out happen
//! after it is released, so a busy topic never stalls presence elsewhere.
//! Diffs of different connections commute on the client (they touch different
//! `phx_ref`s) and one connection's changes come from its one channel task in
//! order, so no ordering lock is needed across the fan-out.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use phx_presence::{ConnId, PresenceDiff, PresenceList, PresenceState, RefGen, SessionStats};
use phx_protocol::{events, Broadcast, Payload};
use serde_json::Value;

use crate::mailbox::{missed, Delivery, Inbox, SocketHandle};
use crate::metrics::Metrics;
use crate::pubsub::PubSub;
use crate::RuntimeError;

/// Where presences are kept: this node's own state, or a cluster's replicated
/// tracker. Operations return the diff for this node's subscribers.
///
/// ```
/// use std::sync::Mutex;
/// use phx_presence::{ConnId, PresenceDiff, PresenceList, PresenceState};
/// use phx_runtime::presence::PresenceStore;
/// use phx_runtime::RuntimeError;
/// use serde_json::Value;
///
/// /// The default store, spelled out.
/// struct Local(Mutex<PresenceState>);
/// impl PresenceStore for Local {
///     fn track(&self, topic: &str, key: &str, conn: u64, meta: Value, phx_ref: String)
///         -> Result<PresenceDiff, RuntimeError> {
///         Ok(self.0.lock().unwrap().track(topic, key, ConnId(conn), meta, phx_ref)?)
///     }
///     fn update(&self, topic: &str, key: &str, conn: u64, meta: Value, phx_ref: String)
///         -> Result<PresenceDiff, RuntimeError> {
///         Ok(self.0.lock().unwrap().update(topic, key, ConnId(conn), meta, phx_ref)?)
///     }
///     fn untrack(&self, topic: &str, key: &str, conn: u64) -> PresenceDiff {
///         self.0.lock().unwrap().untrack(topic, key, ConnId(conn))
///     }
///     fn untrack_conn(&self, conn: u64) -> Vec<(String, PresenceDiff)> {
///         self.0.lock().unwrap().untrack_all(ConnId(conn))
///     }
///     fn list(&self, topic: &str) -> PresenceList {
///         self.0.lock().unwrap().list(topic)
///     }
/// }
/// let endpoint = phx_runtime::Endpoint::builder()
///     .presence_store(std::sync::Arc::new(Local(Mutex::default())))
///     .build();
/// # let _ = endpoint;
/// ```
pub trait PresenceStore: Send + Sync + 'static {
    /// Tracks local connection `conn` under `key` on `topic`.
    fn track(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, RuntimeError>;
    /// Replaces the meta of a tracked entry (`phx_ref_prev` = the old ref).
    fn update(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, RuntimeError>;
    /// Untracks one entry (an empty diff when it is not tracked).
    fn untrack(&self, topic: &str, key: &str, conn: u64) -> PresenceDiff;
    /// Untracks everything of a local connection; one diff per topic.
    fn untrack_conn(&self, conn: u64) -> Vec<(String, PresenceDiff)>;
    /// Untracks everything of a local connection that tracks on `topic` only
    /// (a channel tracks on its own topic), so a store kept by topic need not
    /// look anywhere else. By default [`untrack_conn`](Self::untrack_conn).
    fn untrack_conn_on(&self, topic: &str, conn: u64) -> Vec<(String, PresenceDiff)> {
        let _ = topic;
        self.untrack_conn(conn)
    }
    /// The presences of `topic`, on every node the store knows.
    fn list(&self, topic: &str) -> PresenceList;
    /// The same presences as [`list`](Self::list), already encoded as the
    /// `presence_state` payload, for a store that can write it more cheaply than
    /// building a [`PresenceList`] first (the default store copies its stored
    /// metas). `None`, the default: the runtime encodes `list`.
    fn list_encoded(&self, topic: &str) -> Option<Payload> {
        let _ = topic;
        None
    }
}

/// Phoenix's `fetch/2`: adds per-key data beside `metas` (for example the user
/// record behind a key) to `presence_state` and to both halves of every
/// `presence_diff`. Called with the topic and the entries about to be sent, on
/// the node that sends them; set it with
/// [`EndpointBuilder::presence_fetch`](crate::EndpointBuilder::presence_fetch).
pub type Fetch = Arc<dyn Fn(&str, &mut PresenceList) + Send + Sync>;

/// The default store: this node's presences, in memory, in shards by topic so
/// that a busy topic (a 10 000-key `presence_state`) does not hold up the others.
struct LocalStore {
    shards: Box<[Mutex<PresenceState>]>,
    hasher: RandomState,
}

const SHARDS: usize = 32;

impl LocalStore {
    fn new() -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn lock(&self, topic: &str) -> std::sync::MutexGuard<'_, PresenceState> {
        let i = self.hasher.hash_one(topic) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PresenceStore for LocalStore {
    fn track(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, RuntimeError> {
        Ok(self
            .lock(topic)
            .track(topic, key, ConnId(conn), meta, phx_ref)?)
    }

    fn update(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, RuntimeError> {
        Ok(self
            .lock(topic)
            .update(topic, key, ConnId(conn), meta, phx_ref)?)
    }

    fn untrack(&self, topic: &str, key: &str, conn: u64) -> PresenceDiff {
        self.lock(topic).untrack(topic, key, ConnId(conn))
    }

    fn untrack_conn(&self, conn: u64) -> Vec<(String, PresenceDiff)> {
        let mut diffs = Vec::new();
        for shard in self.shards.iter() {
            let mut state = shard.lock().unwrap_or_else(|e| e.into_inner());
            diffs.extend(state.untrack_all(ConnId(conn)));
        }
        diffs
    }

    fn untrack_conn_on(&self, topic: &str, conn: u64) -> Vec<(String, PresenceDiff)> {
        self.lock(topic).untrack_all(ConnId(conn))
    }

    fn list(&self, topic: &str) -> PresenceList {
        self.lock(topic).list(topic)
    }

    fn list_encoded(&self, topic: &str) -> Option<Payload> {
        match self.lock(topic).list_json(topic) {
            Ok(raw) => Some(Payload::Json(raw)),
            Err(err) => {
                tracing::warn!(%topic, %err, "presence_state cannot be written from the stored metas");
                None
            }
        }
    }
}

/// A channel that asked to see its topic's presence changes.
#[derive(Clone)]
struct Watcher {
    chan_id: u64,
    socket: SocketHandle,
    inbox: Arc<dyn Inbox>,
}

/// The presences of an endpoint.
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    fetch: Option<Fetch>,
    refs: Mutex<RefGen>,
    /// Per topic, the channels watching its presence (empty unless a channel opts in).
    watchers: RwLock<HashMap<String, Arc<[Watcher]>>>,
    /// Sessions, signed-in users and per-topic counts, kept from every diff
    /// sent (so in a cluster they cover every node).
    stats: Mutex<SessionStats>,
    pubsub: PubSub,
    metrics: Arc<Metrics>,
    /// `Config::max_presence_meta`.
    max_meta: usize,
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Presence {
    pub(crate) fn new(
        pubsub: PubSub,
        metrics: Arc<Metrics>,
        store: Option<Arc<dyn PresenceStore>>,
        fetch: Option<Fetch>,
        max_meta: usize,
    ) -> Presence {
        Presence {
            store: store.unwrap_or_else(|| Arc::new(LocalStore::new())),
            fetch,
            // A random instance id makes refs differ across restarts and nodes.
            refs: Mutex::new(RefGen::new(rand::random())),
            watchers: RwLock::default(),
            stats: Mutex::default(),
            pubsub,
            metrics,
            max_meta,
        }
    }

    fn next_ref(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next(now)
    }

    /// The `presence_state` of a topic: key → metas (and what the [`Fetch`]
    /// hook adds), across the cluster when there is one.
    pub fn list(&self, topic: &str) -> PresenceList {
        let mut list = self.store.list(topic);
        if let Some(fetch) = &self.fetch {
            if !list.is_empty() {
                fetch(topic, &mut list);
            }
        }
        list
    }

    /// The `presence_state` payload of a topic: the store's own encoding when it
    /// has one and no [`Fetch`] hook has to see the entries first.
    pub(crate) fn state_payload(&self, topic: &str) -> Result<Payload, RuntimeError> {
        if self.fetch.is_none() {
            if let Some(payload) = self.store.list_encoded(topic) {
                return Ok(payload);
            }
        }
        Ok(Payload::json(&self.list(topic))?)
    }

    /// Session statistics (connected sessions, anonymous and signed in,
    /// distinct users, per topic), for an admin view.
    pub fn stats(&self) -> SessionStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `topic`'s presence diffs to this channel too.
    pub(crate) fn watch(
        &self,
        topic: &str,
        chan_id: u64,
        socket: SocketHandle,
        inbox: Arc<dyn Inbox>,
    ) {
        let mut watchers = self.watchers.write().unwrap_or_else(|e| e.into_inner());
        let slot = watchers
            .entry(topic.to_owned())
            .or_insert_with(|| Arc::new([]));
        let mut list = slot.to_vec();
        list.push(Watcher {
            chan_id,
            socket,
            inbox,
        });
        *slot = list.into();
    }

    pub(crate) fn unwatch(&self, topic: &str, chan_id: u64) {
        let mut watchers = self.watchers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = watchers.get_mut(topic) {
            let list: Vec<Watcher> = slot
                .iter()
                .filter(|w| w.chan_id != chan_id)
                .cloned()
                .collect();
            if list.is_empty() {
                watchers.remove(topic);
            } else {
                *slot = list.into();
            }
        }
    }

    /// A presence change another node caused (a remote join, leave or update, or
    /// a node that went down, left or restarted): sent to this node's subscribers.
    pub fn apply_remote(&self, topic: &str, diff: PresenceDiff) {
        self.send(topic, diff);
    }

    /// Counts, fetches, encodes and fans out one diff; no lock held but the
    /// watcher list's read lock while cloning it.
    fn send(&self, topic: &str, mut diff: PresenceDiff) {
        if diff.is_empty() {
            return;
        }
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            for (key, entry) in &diff.joins {
                for meta in &entry.metas {
                    stats.on_join(topic, key, meta);
                }
            }
            for (key, entry) in &diff.leaves {
                for meta in &entry.metas {
                    stats.on_leave(topic, key, meta);
                }
            }
        }
        if let Some(fetch) = &self.fetch {
            if !diff.joins.is_empty() {
                fetch(topic, &mut diff.joins);
            }
            if !diff.leaves.is_empty() {
                fetch(topic, &mut diff.leaves);
            }
        }
        let watchers = self
            .watchers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned();
        let payload = Payload::json(&diff);
        if let Some(list) = watchers {
            let shared = Arc::new(diff);
            for w in list.iter() {
                if w.inbox.presence(shared.clone()) == Delivery::Full {
                    missed(&w.socket, &self.metrics, topic, "presence change");
                }
            }
        }
        match payload {
            Ok(payload) => self.pubsub.publish_local(Arc::new(Broadcast::new(
                topic,
                events::PRESENCE_DIFF,
                payload,
            ))),
            Err(err) => tracing::warn!(%err, "presence diff cannot be encoded"),
        }
    }

    /// Refuses (and counts) an entry over `Config::max_presence_meta`: its key
    /// plus its meta's JSON, measured without writing it anywhere.
    fn check_size(&self, key: &str, meta: &Value) -> Result<(), RuntimeError> {
        let mut counter = ByteCount(key.len());
        if serde_json::to_writer(&mut counter, meta).is_err() {
            return Err(RuntimeError::channel(
                "presence meta cannot be written as JSON",
            ));
        }
        let size = counter.0;
        if size > self.max_meta {
            Metrics::inc(&self.metrics.presence_metas_too_large);
            tracing::warn!(
                size,
                limit = self.max_meta,
                "presence meta refused: too large"
            );
            return Err(RuntimeError::TooLarge {
                what: "presence meta",
                size,
                limit: self.max_meta,
            });
        }
        Ok(())
    }

    pub(crate) fn track(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
    ) -> Result<(), RuntimeError> {
        self.check_size(key, &meta)?;
        let diff = self.store.track(topic, key, conn, meta, self.next_ref())?;
        self.send(topic, diff);
        Ok(())
    }

    pub(crate) fn update(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
    ) -> Result<(), RuntimeError> {
        self.check_size(key, &meta)?;
        let diff = self.store.update(topic, key, conn, meta, self.next_ref())?;
        self.send(topic, diff);
        Ok(())
    }

    pub(crate) fn untrack(&self, topic: &str, key: &str, conn: u64) {
        let diff = self.store.untrack(topic, key, conn);
        self.send(topic, diff);
    }

    pub(crate) fn untrack_all(&self, conn: u64) {
        for (topic, diff) in self.store.untrack_conn(conn) {
            self.send(&topic, diff);
        }
    }

    /// Untracks a channel's presences, all on its own `topic`: one shard of the
    /// default store to visit instead of every shard.
    pub(crate) fn untrack_channel(&self, topic: &str, conn: u64) {
        for (topic, diff) in self.store.untrack_conn_on(topic, conn) {
            self.send(&topic, diff);
        }
    }
}
