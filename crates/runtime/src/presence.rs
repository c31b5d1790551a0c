//! Live presence: channels track their connections on a topic, every change is
//! broadcast to the topic as `presence_diff`, and a channel's presences leave the
//! moment it ends, however it ends (leave, socket close, crash, kill).
//!
//! Diffs are broadcast while the state lock is held, so every subscriber sees
//! them in the order the state changed (Phoenix serialises them through its
//! tracker process; `phoenix/lib/phoenix/presence.ex`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use phx_protocol::presence::{Meta, PresenceDiff, PresenceEntry, PresenceState};
use phx_protocol::{events, Broadcast, Payload};
use serde_json::Value;

use crate::endpoint::Shared;
use crate::pubsub::PubSub;
use crate::RuntimeError;

// ---- TEMPORARY state until phx-presence lands ----
#[derive(Default)]
struct State {
    topics: BTreeMap<String, BTreeMap<String, Vec<(u64, Meta)>>>,
    by_conn: HashMap<u64, Vec<(String, String)>>,
    counter: u64,
}

impl State {
    fn new_ref(&mut self) -> String {
        self.counter += 1;
        format!("{:016}", self.counter)
    }
    fn track(
        &mut self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
    ) -> Result<PresenceDiff, RuntimeError> {
        let r = self.new_ref();
        let metas = self
            .topics
            .entry(topic.into())
            .or_default()
            .entry(key.into())
            .or_default();
        if metas.iter().any(|(c, _)| *c == conn) {
            return Err(RuntimeError::Presence("already tracked".into()));
        }
        let m = Meta::new(r, meta);
        metas.push((conn, m.clone()));
        self.by_conn
            .entry(conn)
            .or_default()
            .push((topic.into(), key.into()));
        let mut d = PresenceDiff::default();
        d.add_join(key, m);
        Ok(d)
    }
    fn untrack(&mut self, topic: &str, key: &str, conn: u64) -> PresenceDiff {
        let mut d = PresenceDiff::default();
        if let Some(keys) = self.topics.get_mut(topic) {
            if let Some(metas) = keys.get_mut(key) {
                if let Some(i) = metas.iter().position(|(c, _)| *c == conn) {
                    let (_, m) = metas.remove(i);
                    d.add_leave(key, m);
                }
                if metas.is_empty() {
                    keys.remove(key);
                }
            }
            if keys.is_empty() {
                self.topics.remove(topic);
            }
        }
        if let Some(list) = self.by_conn.get_mut(&conn) {
            list.retain(|(t, k)| !(t == topic && k == key));
        }
        d
    }
    fn update(
        &mut self,
        topic: &str,
        key: &str,
        conn: u64,
        meta: Value,
    ) -> Result<PresenceDiff, RuntimeError> {
        let r = self.new_ref();
        let m = self
            .topics
            .get_mut(topic)
            .and_then(|k| k.get_mut(key))
            .and_then(|ms| ms.iter_mut().find(|(c, _)| *c == conn))
            .ok_or_else(|| RuntimeError::Presence("no presence".into()))?;
        let old = m.1.clone();
        let mut new = Meta::new(r, meta);
        new.phx_ref_prev = Some(old.phx_ref.clone());
        m.1 = new.clone();
        let mut d = PresenceDiff::default();
        d.add_leave(key, old);
        d.add_join(key, new);
        Ok(d)
    }
    fn untrack_all(&mut self, conn: u64) -> Vec<(String, PresenceDiff)> {
        let list = self.by_conn.remove(&conn).unwrap_or_default();
        list.into_iter()
            .map(|(t, k)| {
                let d = self.untrack(&t, &k, conn);
                (t, d)
            })
            .collect()
    }
    fn list(&self, topic: &str) -> PresenceState {
        self.topics
            .get(topic)
            .map(|keys| {
                keys.iter()
                    .map(|(k, ms)| {
                        (
                            k.clone(),
                            PresenceEntry {
                                metas: ms.iter().map(|(_, m)| m.clone()).collect(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
// ---- end TEMPORARY ----

/// The presences of an endpoint on this node.
pub struct Presence {
    state: Mutex<State>,
    pubsub: PubSub,
}

impl Presence {
    pub(crate) fn new(pubsub: PubSub) -> Presence {
        Presence {
            state: Mutex::new(State::default()),
            pubsub,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `presence_state` of a topic: key → metas.
    pub fn list(&self, topic: &str) -> PresenceState {
        self.lock().list(topic)
    }

    fn broadcast(&self, topic: &str, diff: &PresenceDiff) {
        if diff.is_empty() {
            return;
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
        let diff = state.track(topic, key, conn, meta)?;
        self.broadcast(topic, &diff);
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
        let diff = state.update(topic, key, conn, meta)?;
        self.broadcast(topic, &diff);
        Ok(())
    }

    pub(crate) fn untrack(&self, topic: &str, key: &str, conn: u64) {
        let mut state = self.lock();
        let diff = state.untrack(topic, key, conn);
        self.broadcast(topic, &diff);
    }

    pub(crate) fn untrack_all(&self, conn: u64) {
        let mut state = self.lock();
        for (topic, diff) in state.untrack_all(conn) {
            self.broadcast(&topic, &diff);
        }
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

    pub(crate) fn leave_all(&mut self) {
        if std::mem::take(&mut self.tracked) {
            self.shared.presence.untrack_all(self.conn);
        }
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.leave_all();
    }
}

impl crate::ChannelContext {
    /// Tracks this connection's presence on the channel's topic under `key`; every
    /// member gets a `presence_diff` with the join. One key may have many
    /// connections (one user, several devices).
    pub fn track(&mut self, key: &str, meta: Value) -> Result<(), RuntimeError> {
        let (shared, conn) = (self.presence.shared.clone(), self.presence.conn);
        shared.presence.track(self.topic(), key, conn, meta)?;
        self.presence.tracked = true;
        Ok(())
    }

    /// Replaces this connection's meta under `key` (new `phx_ref`, `phx_ref_prev` =
    /// the old one); members get one diff with the leave and the join.
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
        Ok(Payload::json(
            &self.presence.shared.presence.list(self.topic()),
        )?)
    }
}
