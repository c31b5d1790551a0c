//! Live presence: channels track their connections on a topic, every change is
//! broadcast to the topic as `presence_diff`, and a channel's presences leave the
//! moment it ends, however it ends (leave, socket close, crash, kill).
//!
//! Diffs are broadcast while the state lock is held, so every subscriber sees
//! them in the order the state changed (Phoenix serialises them through its
//! tracker process; `phoenix/lib/phoenix/presence.ex`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use phx_presence::{ConnId, PresenceDiff, PresenceList, PresenceState, RefGen, SessionStats};
use phx_protocol::{events, Broadcast, Payload};
use serde_json::Value;

use crate::mailbox::{missed, Delivery, Inbox, SocketHandle};
use crate::metrics::Metrics;
use crate::pubsub::PubSub;
use crate::RuntimeError;

/// A channel that asked to see its topic's presence changes.
struct Watcher {
    chan_id: u64,
    socket: SocketHandle,
    inbox: Arc<dyn Inbox>,
}

/// The node's presence state, the generator of its `phx_ref`s, and the channels
/// watching presence (empty unless a channel opts in).
struct State {
    presences: PresenceState,
    refs: RefGen,
    watchers: HashMap<String, Vec<Watcher>>,
}

impl State {
    fn next_ref(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.refs.next(now)
    }
}

/// The presences of an endpoint on this node.
pub struct Presence {
    state: Mutex<State>,
    pubsub: PubSub,
    metrics: Arc<Metrics>,
}

impl Presence {
    pub(crate) fn new(pubsub: PubSub, metrics: Arc<Metrics>) -> Presence {
        Presence {
            state: Mutex::new(State {
                presences: PresenceState::new(),
                // A random instance id makes refs differ across restarts.
                refs: RefGen::new(rand::random()),
                watchers: HashMap::new(),
            }),
            pubsub,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `presence_state` of a topic: key → metas.
    pub fn list(&self, topic: &str) -> PresenceList {
        self.lock().presences.list(topic)
    }

    /// Session statistics of this node (connected sessions, anonymous and signed
    /// in, distinct users, per topic), for an admin view.
    pub fn stats(&self) -> SessionStats {
        self.lock().presences.stats().clone()
    }

    /// Sends `diff` to the channels watching `topic`'s presence.
    pub(crate) fn watch(
        &self,
        topic: &str,
        chan_id: u64,
        socket: SocketHandle,
        inbox: Arc<dyn Inbox>,
    ) {
        self.lock()
            .watchers
            .entry(topic.to_owned())
            .or_default()
            .push(Watcher {
                chan_id,
                socket,
                inbox,
            });
    }

    pub(crate) fn unwatch(&self, topic: &str, chan_id: u64) {
        let mut state = self.lock();
        if let Some(list) = state.watchers.get_mut(topic) {
            list.retain(|w| w.chan_id != chan_id);
            if list.is_empty() {
                state.watchers.remove(topic);
            }
        }
    }

    fn broadcast(
        &self,
        watchers: &HashMap<String, Vec<Watcher>>,
        topic: &str,
        diff: &PresenceDiff,
    ) {
        if diff.is_empty() {
            return;
        }
        if let Some(list) = watchers.get(topic) {
            let shared = Arc::new(diff.clone());
            for w in list {
                if w.inbox.presence(shared.clone()) == Delivery::Full {
                    missed(&w.socket, &self.metrics, topic, "presence change");
                }
            }
        }
        match Payload::json(diff) {
            Ok(payload) => self.pubsub.publish(
                Arc::new(Broadcast::new(topic, events::PRESENCE_DIFF, payload)),
                None,
            ),
            Err(err) => tracing::warn!(%err, "presence diff cannot be encoded"),
        }
    }

    pub(crate) fn track(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
    ) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let phx_ref = state.next_ref();
        let diff = state
            .presences
            .track(topic, key, ConnId(conn), meta, phx_ref)?;
        self.broadcast(&state.watchers, topic, &diff);
        Ok(())
    }

    pub(crate) fn update(
        &self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
    ) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let phx_ref = state.next_ref();
        let diff = state
            .presences
            .update(topic, key, ConnId(conn), meta, phx_ref)?;
        self.broadcast(&state.watchers, topic, &diff);
        Ok(())
    }

    pub(crate) fn untrack(&self, topic: &str, key: &str, conn: u64) {
        let mut state = self.lock();
        let diff = state.presences.untrack(topic, key, ConnId(conn));
        self.broadcast(&state.watchers, topic, &diff);
    }

    pub(crate) fn untrack_all(&self, conn: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        for (topic, diff) in state.presences.untrack_all(ConnId(conn)) {
            self.broadcast(&state.watchers, &topic, &diff);
        }
    }
}
