//! The replicated tracker: presence kept consistent across nodes, as a pure data
//! structure in the spirit of `Phoenix.Tracker.State`
//! (`phoenix_pubsub/lib/phoenix/tracker/state.ex`, `shard.ex`, `replica.ex`).
//!
//! Each node (a [`Replica`]: a name plus an incarnation `vsn` that changes on every
//! restart) is the only writer of its own entries. Its changes are numbered
//! operations; heartbeats carry the operations made since the previous heartbeat
//! (a delta) and the sender's clocks. A receiver applies a delta only when it
//! continues exactly where its copy of that replica stands; a gap (a lost
//! heartbeat) is noticed from the delta or from the clocks, and the receiver asks
//! for the replica's whole state, which replaces its copy when it is newer. Because
//! a replica's data has one writer and a growing clock, copies converge whatever
//! the order, duplication or loss of messages, and an untracked entry never comes
//! back.
//!
//! Liveness follows Phoenix: a replica silent for `down_period` is **down** (its
//! presences leave, and are hidden, but kept); a heartbeat with the same `vsn`
//! brings it back **up** (they join again); a heartbeat with a new `vsn` for a known
//! name means it restarted (the old entries are purged); silence past
//! `permdown_period` purges it. Time is passed in (`now_ms`); nothing here reads a
//! clock or sends anything — the caller ships [`Gossip`] over its PubSub.

use std::collections::BTreeMap;

use phx_protocol::presence::{Meta, PresenceDiff};
use serde::{Deserialize, Serialize};

use crate::{PresenceError, PresenceList};

/// A node incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Replica {
    /// The node's name (stable across restarts).
    pub name: String,
    /// The incarnation: different after every restart.
    pub vsn: u64,
}

impl Replica {
    /// A replica.
    pub fn new(name: impl Into<String>, vsn: u64) -> Replica {
        Replica {
            name: name.into(),
            vsn,
        }
    }
}

/// Timing of the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// How often heartbeats go out (Phoenix: 1500 ms).
    pub broadcast_period_ms: u64,
    /// Silence after which a replica is down (Phoenix: 30 s; here 5 s by default).
    pub down_period_ms: u64,
    /// Silence after which a replica is purged (Phoenix: 20 min).
    pub permdown_period_ms: u64,
}

impl Default for TrackerConfig {
    fn default() -> TrackerConfig {
        TrackerConfig {
            broadcast_period_ms: 1_500,
            down_period_ms: 5_000,
            permdown_period_ms: 1_200_000,
        }
    }
}

impl TrackerConfig {
    /// Phoenix's checks: `down_period >= 2 × broadcast_period`, `permdown > down`.
    pub fn validate(&self) -> Result<(), PresenceError> {
        if self.down_period_ms < 2 * self.broadcast_period_ms {
            return Err(PresenceError::InvalidConfig(
                "down_period must be at least twice broadcast_period",
            ));
        }
        if self.permdown_period_ms <= self.down_period_ms {
            return Err(PresenceError::InvalidConfig(
                "permdown_period must be longer than down_period",
            ));
        }
        Ok(())
    }
}

/// What identifies one tracked entry: topic, connection, key.
pub type EntryId = (String, u64, String);

/// One change made by a replica to its own entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// An entry joins (or replaces its meta).
    Join {
        /// Which entry.
        id: EntryId,
        /// Its meta.
        meta: Meta,
    },
    /// An entry leaves.
    Leave {
        /// Which entry.
        id: EntryId,
    },
}

/// Everything one replica owns, as of `clock` operations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaData {
    /// Operations applied.
    pub clock: u64,
    /// Live entries, each with the number of the operation that added it (for order).
    pub entries: BTreeMap<EntryId, (u64, Meta)>,
}

/// Operations `start + 1 ..= start + ops.len()` of one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The sender's clock before the first operation.
    pub start: u64,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// What trackers say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Gossip {
    /// Periodic: liveness, the delta since the last heartbeat, and the sender's clock.
    Heartbeat {
        /// The sender.
        from: Replica,
        /// New operations, if any.
        delta: Option<Delta>,
        /// The sender's own clock.
        clock: u64,
    },
    /// "Send me your whole state."
    TransferReq {
        /// The asker.
        from: Replica,
        /// The replica asked.
        to: Replica,
    },
    /// The answer to a transfer request.
    TransferAck {
        /// The sender.
        from: Replica,
        /// Its whole state.
        data: ReplicaData,
    },
    /// The sender shuts down for good: drop its presences now.
    GracefulPermdown {
        /// The sender.
        from: Replica,
    },
}

/// Whether a remote replica's presences are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaStatus {
    /// Heard from recently.
    Up,
    /// Silent for longer than `down_period`: presences hidden and reported as leaves.
    Down,
}

#[derive(Debug, Clone)]
struct Remote {
    data: ReplicaData,
    status: ReplicaStatus,
    last_heard: u64,
}

/// Topic-grouped diffs.
type Diffs = BTreeMap<String, PresenceDiff>;

fn add_join(diffs: &mut Diffs, id: &EntryId, meta: &Meta) {
    diffs
        .entry(id.0.clone())
        .or_default()
        .add_join(id.2.clone(), meta.clone());
}

fn add_leave(diffs: &mut Diffs, id: &EntryId, meta: &Meta) {
    diffs
        .entry(id.0.clone())
        .or_default()
        .add_leave(id.2.clone(), meta.clone());
}

/// Applies one op to a replica's data; records the presence change in `diffs`.
fn apply(data: &mut ReplicaData, op: &Op, diffs: Option<&mut Diffs>) {
    data.clock += 1;
    match op {
        Op::Join { id, meta } => {
            let old = data.entries.insert(id.clone(), (data.clock, meta.clone()));
            if let Some(diffs) = diffs {
                if let Some((_, old)) = old {
                    add_leave(diffs, id, &old);
                }
                add_join(diffs, id, meta);
            }
        }
        Op::Leave { id } => {
            let old = data.entries.remove(id);
            if let (Some(diffs), Some((_, old))) = (diffs, old) {
                add_leave(diffs, id, &old);
            }
        }
    }
}

/// Every entry of `data` as joins (`join = true`) or leaves.
fn all_as(data: &ReplicaData, join: bool, diffs: &mut Diffs) {
    for (id, (_, meta)) in &data.entries {
        if join {
            add_join(diffs, id, meta);
        } else {
            add_leave(diffs, id, meta);
        }
    }
}

/// The presence changes between two versions of a replica's data.
fn compare(old: &ReplicaData, new: &ReplicaData, diffs: &mut Diffs) {
    for (id, (_, meta)) in &old.entries {
        match new.entries.get(id) {
            Some((_, m)) if m == meta => {}
            _ => add_leave(diffs, id, meta),
        }
    }
    for (id, (_, meta)) in &new.entries {
        match old.entries.get(id) {
            Some((_, m)) if m == meta => {}
            _ => add_join(diffs, id, meta),
        }
    }
}

/// One node's tracker. See the module docs.
///
/// ```
/// use phx_presence::{Replica, Tracker, TrackerConfig, Meta};
/// use serde_json::json;
///
/// let mut a = Tracker::new(Replica::new("a", 1), TrackerConfig::default()).unwrap();
/// let mut b = Tracker::new(Replica::new("b", 1), TrackerConfig::default()).unwrap();
/// a.track("room:1", 7, "alice", Meta::new("r1", json!({})));
/// let (diffs, _replies) = b.handle(a.heartbeat(), 0);
/// assert!(diffs["room:1"].joins.contains_key("alice"));
/// assert!(b.list("room:1").contains_key("alice"));
/// ```
#[derive(Debug, Clone)]
pub struct Tracker {
    me: Replica,
    config: TrackerConfig,
    local: ReplicaData,
    pending: Delta,
    remotes: BTreeMap<Replica, Remote>,
}

impl Tracker {
    /// A tracker for replica `me`.
    pub fn new(me: Replica, config: TrackerConfig) -> Result<Tracker, PresenceError> {
        config.validate()?;
        Ok(Tracker {
            me,
            config,
            local: ReplicaData::default(),
            pending: Delta {
                start: 0,
                ops: Vec::new(),
            },
            remotes: BTreeMap::new(),
        })
    }

    /// This node's replica.
    pub fn replica(&self) -> &Replica {
        &self.me
    }

    fn local_op(&mut self, op: Op) -> Diffs {
        let mut diffs = Diffs::new();
        apply(&mut self.local, &op, Some(&mut diffs));
        self.pending.ops.push(op);
        diffs
    }

    /// Tracks a local connection; returns the local diff.
    pub fn track(&mut self, topic: &str, conn: u64, key: &str, meta: Meta) -> PresenceDiff {
        let id = (topic.to_owned(), conn, key.to_owned());
        self.local_op(Op::Join { id, meta })
            .remove(topic)
            .unwrap_or_default()
    }

    /// Untracks a local connection's key (no-op when not tracked).
    pub fn untrack(&mut self, topic: &str, conn: u64, key: &str) -> PresenceDiff {
        let id = (topic.to_owned(), conn, key.to_owned());
        if !self.local.entries.contains_key(&id) {
            return PresenceDiff::default();
        }
        self.local_op(Op::Leave { id })
            .remove(topic)
            .unwrap_or_default()
    }

    /// Replaces a local entry's meta (one diff: leave of the old, join of the new).
    pub fn update(
        &mut self,
        topic: &str,
        conn: u64,
        key: &str,
        meta: Meta,
    ) -> Result<PresenceDiff, PresenceError> {
        let id = (topic.to_owned(), conn, key.to_owned());
        if !self.local.entries.contains_key(&id) {
            return Err(PresenceError::NoPresence {
                topic: topic.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(self
            .local_op(Op::Join { id, meta })
            .remove(topic)
            .unwrap_or_default())
    }

    /// Untracks everything of a local connection.
    pub fn untrack_conn(&mut self, conn: u64) -> Vec<(String, PresenceDiff)> {
        let ids: Vec<EntryId> = self
            .local
            .entries
            .keys()
            .filter(|id| id.1 == conn)
            .cloned()
            .collect();
        let mut out = Diffs::new();
        for id in ids {
            for (topic, d) in self.local_op(Op::Leave { id }) {
                let merged = out.entry(topic).or_default();
                for (k, e) in d.leaves {
                    merged.leaves.entry(k).or_default().metas.extend(e.metas);
                }
            }
        }
        out.into_iter().collect()
    }

    /// The heartbeat to broadcast now: it carries the operations since the last one.
    pub fn heartbeat(&mut self) -> Gossip {
        let delta = if self.pending.ops.is_empty() {
            None
        } else {
            let next = Delta {
                start: self.local.clock,
                ops: Vec::new(),
            };
            Some(std::mem::replace(&mut self.pending, next))
        };
        if delta.is_none() {
            self.pending.start = self.local.clock;
        }
        Gossip::Heartbeat {
            from: self.me.clone(),
            delta,
            clock: self.local.clock,
        }
    }

    /// The message announcing a graceful shutdown.
    pub fn graceful_permdown(&self) -> Gossip {
        Gossip::GracefulPermdown {
            from: self.me.clone(),
        }
    }

    /// Handles a message from another tracker at `now_ms`. Returns the local
    /// presence diffs it causes (per topic) and the messages to send in answer.
    pub fn handle(
        &mut self,
        msg: Gossip,
        now_ms: u64,
    ) -> (BTreeMap<String, PresenceDiff>, Vec<Gossip>) {
        let mut diffs = Diffs::new();
        let mut replies = Vec::new();
        match msg {
            Gossip::Heartbeat { from, delta, clock } => {
                if from.name == self.me.name {
                    return (diffs, replies);
                }
                self.replace_incarnations(&from, &mut diffs);
                let remote = self.remotes.entry(from.clone()).or_insert_with(|| Remote {
                    data: ReplicaData::default(),
                    status: ReplicaStatus::Up,
                    last_heard: now_ms,
                });
                remote.last_heard = now_ms;
                if remote.status == ReplicaStatus::Down {
                    remote.status = ReplicaStatus::Up;
                    all_as(&remote.data, true, &mut diffs);
                }
                if let Some(delta) = delta {
                    if delta.start > remote.data.clock {
                        replies.push(Gossip::TransferReq {
                            from: self.me.clone(),
                            to: from.clone(),
                        });
                    } else {
                        for (i, op) in delta.ops.iter().enumerate() {
                            if delta.start + i as u64 + 1 > remote.data.clock {
                                apply(&mut remote.data, op, Some(&mut diffs));
                            }
                        }
                    }
                }
                let asked = replies
                    .iter()
                    .any(|r| matches!(r, Gossip::TransferReq { .. }));
                if clock > remote.data.clock && !asked {
                    replies.push(Gossip::TransferReq {
                        from: self.me.clone(),
                        to: from,
                    });
                }
            }
            Gossip::TransferReq { from, to } => {
                if to == self.me {
                    let _ = from;
                    replies.push(Gossip::TransferAck {
                        from: self.me.clone(),
                        data: self.local.clone(),
                    });
                }
            }
            Gossip::TransferAck { from, data } => {
                if from.name == self.me.name {
                    return (diffs, replies);
                }
                self.replace_incarnations(&from, &mut diffs);
                let remote = self.remotes.entry(from).or_insert_with(|| Remote {
                    data: ReplicaData::default(),
                    status: ReplicaStatus::Up,
                    last_heard: now_ms,
                });
                if data.clock > remote.data.clock {
                    if remote.status == ReplicaStatus::Up {
                        compare(&remote.data, &data, &mut diffs);
                    }
                    remote.data = data;
                }
            }
            Gossip::GracefulPermdown { from } => {
                if let Some(remote) = self.remotes.remove(&from) {
                    if remote.status == ReplicaStatus::Up {
                        all_as(&remote.data, false, &mut diffs);
                    }
                }
            }
        }
        (diffs, replies)
    }

    /// A heartbeat from a new incarnation of a known node: the old one is purged.
    fn replace_incarnations(&mut self, from: &Replica, diffs: &mut Diffs) {
        let stale: Vec<Replica> = self
            .remotes
            .keys()
            .filter(|r| r.name == from.name && r.vsn != from.vsn)
            .cloned()
            .collect();
        for r in stale {
            if let Some(old) = self.remotes.remove(&r) {
                if old.status == ReplicaStatus::Up {
                    all_as(&old.data, false, diffs);
                }
            }
        }
    }

    /// Checks liveness at `now_ms`: replicas silent past `down_period` go down
    /// (their presences leave), past `permdown_period` are purged.
    pub fn tick(&mut self, now_ms: u64) -> BTreeMap<String, PresenceDiff> {
        let mut diffs = Diffs::new();
        let config = self.config;
        self.remotes.retain(|_, remote| {
            let silent = now_ms.saturating_sub(remote.last_heard);
            if silent > config.permdown_period_ms {
                if remote.status == ReplicaStatus::Up {
                    all_as(&remote.data, false, &mut diffs);
                }
                return false;
            }
            if silent > config.down_period_ms && remote.status == ReplicaStatus::Up {
                remote.status = ReplicaStatus::Down;
                all_as(&remote.data, false, &mut diffs);
            }
            true
        });
        diffs
    }

    /// The replicas this tracker knows, with their status.
    pub fn replicas(&self) -> Vec<(Replica, ReplicaStatus)> {
        self.remotes
            .iter()
            .map(|(r, remote)| (r.clone(), remote.status))
            .collect()
    }

    /// The presences of a topic across every up replica, this one included.
    /// Metas are ordered by replica, then by when they were tracked.
    pub fn list(&self, topic: &str) -> PresenceList {
        let mut rows: Vec<(&Replica, u64, &String, &Meta)> = Vec::new();
        for (id, (n, meta)) in &self.local.entries {
            if id.0 == topic {
                rows.push((&self.me, *n, &id.2, meta));
            }
        }
        for (replica, remote) in &self.remotes {
            if remote.status != ReplicaStatus::Up {
                continue;
            }
            for (id, (n, meta)) in &remote.data.entries {
                if id.0 == topic {
                    rows.push((replica, *n, &id.2, meta));
                }
            }
        }
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut list = PresenceList::new();
        for (_, _, key, meta) in rows {
            list.entry(key.clone())
                .or_default()
                .metas
                .push(meta.clone());
        }
        list
    }

    /// Like [`Tracker::list`] but including down replicas (Phoenix's `dirty_list`).
    pub fn dirty_count(&self, topic: &str) -> usize {
        let local = self.local.entries.keys().filter(|id| id.0 == topic).count();
        local
            + self
                .remotes
                .values()
                .map(|r| r.data.entries.keys().filter(|id| id.0 == topic).count())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> TrackerConfig {
        TrackerConfig {
            broadcast_period_ms: 100,
            down_period_ms: 500,
            permdown_period_ms: 1_500,
        }
    }

    fn t(name: &str, vsn: u64) -> Tracker {
        Tracker::new(Replica::new(name, vsn), cfg()).unwrap()
    }

    fn m(r: &str) -> Meta {
        Meta::new(r, json!({"r": r}))
    }

    #[test]
    fn config_is_validated_like_phoenix() {
        let bad = TrackerConfig {
            down_period_ms: 150,
            ..cfg()
        };
        assert!(Tracker::new(Replica::new("a", 1), bad).is_err());
        let bad = TrackerConfig {
            permdown_period_ms: 500,
            ..cfg()
        };
        assert!(Tracker::new(Replica::new("a", 1), bad).is_err());
        assert_eq!(TrackerConfig::default().down_period_ms, 5_000);
    }

    #[test]
    fn local_track_untrack_update_produce_local_diffs() {
        let mut a = t("a", 1);
        assert!(a.track("t", 1, "u", m("1")).joins.contains_key("u"));
        let d = a.update("t", 1, "u", m("2")).unwrap();
        assert_eq!(
            (
                d.joins["u"].metas[0].phx_ref.as_str(),
                d.leaves["u"].metas[0].phx_ref.as_str()
            ),
            ("2", "1")
        );
        assert!(a.update("t", 9, "nobody", m("x")).is_err());
        assert!(
            a.untrack("t", 5, "zzz").is_empty(),
            "untracking nothing is a no-op"
        );
        assert!(a.untrack("t", 1, "u").leaves.contains_key("u"));
        assert!(a.list("t").is_empty());
    }

    #[test]
    fn remote_joins_and_leaves_replicate() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        let (d, _) = b.handle(a.heartbeat(), 0);
        assert!(d["t"].joins.contains_key("u1"));
        a.untrack_conn(1);
        let (d, _) = b.handle(a.heartbeat(), 10);
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(b.list("t").is_empty());
        // The same heartbeat again changes nothing (idempotent).
        a.track("t", 2, "u2", m("2"));
        let hb = a.heartbeat();
        b.handle(hb.clone(), 20);
        let (d, _) = b.handle(hb, 21);
        assert!(d.is_empty());
    }

    #[test]
    fn a_lost_heartbeat_is_repaired_by_a_transfer() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        let _lost = a.heartbeat();
        a.track("t", 2, "u2", m("2"));
        let (d, replies) = b.handle(a.heartbeat(), 0);
        assert!(d.is_empty(), "a gap is not applied");
        let req = replies.into_iter().next().expect("asks for a transfer");
        let (_, acks) = a.handle(req, 0);
        let (d, _) = b.handle(acks.into_iter().next().expect("an ack"), 0);
        assert_eq!(d["t"].joins.len(), 2);
        assert_eq!(b.list("t"), a.list("t"));
    }

    #[test]
    fn down_up_new_incarnation_and_permdown() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        b.handle(a.heartbeat(), 0);
        // Silent past down_period: leaves, hidden, kept.
        let d = b.tick(600);
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(b.list("t").is_empty());
        assert_eq!(b.dirty_count("t"), 1);
        assert_eq!(b.replicas()[0].1, ReplicaStatus::Down);
        // The same incarnation comes back: joins again.
        let (d, _) = b.handle(a.heartbeat(), 700);
        assert!(d["t"].joins.contains_key("u1"));
        // A restart (new vsn): the old entries go.
        let mut a2 = t("a", 2);
        a2.track("t", 3, "u3", m("3"));
        let (d, _) = b.handle(a2.heartbeat(), 800);
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(d["t"].joins.contains_key("u3"));
        assert_eq!(b.list("t").keys().cloned().collect::<Vec<_>>(), vec!["u3"]);
        // Silent past permdown: purged.
        b.tick(800 + 1_600);
        assert!(b.replicas().is_empty());
        assert_eq!(b.dirty_count("t"), 0);
    }

    #[test]
    fn graceful_permdown_drops_presences_at_once() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        b.handle(a.heartbeat(), 0);
        let (d, _) = b.handle(a.graceful_permdown(), 1);
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(b.replicas().is_empty() && b.list("t").is_empty());
    }
}
