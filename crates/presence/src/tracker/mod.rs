//! The replicated tracker: presence kept consistent across nodes, as a pure state
//! machine. The cluster driver (`phx-cluster`) runs it over Redis; nothing here
//! reads a clock or does I/O: time is passed in as `now_ms` (any monotonic
//! milliseconds) and messages come in and go out as [`Gossip`] values.
//!
//! # How it works
//!
//! Each node is a [`Replica`] (a name plus an incarnation `vsn` that grows with
//! every restart) and the only writer of its own entries. Its changes are
//! numbered ops ([`Op`]); every `broadcast_period` the node sends a heartbeat
//! carrying its clock and the ops since its previous heartbeat. A receiver applies
//! ops that continue exactly where its copy stands; when it notices a gap (from a
//! delta that starts too late, or from a clock ahead of its copy) it sends a
//! [`Gossip::TransferReq`] saying how far it is, and gets back the missing ops, or
//! the whole state when they are no longer kept. Since each replica's data has a
//! single writer and a growing clock, copies converge whatever the order,
//! duplication or loss of messages, and a removed entry never comes back.
//!
//! A remote replica is shown (its presences are listed and reported as joins)
//! only once its copy is complete, so a node that joins, comes back from a
//! netsplit or restarts never shows a partial or stale state:
//!
//! - first heard, or heard again after being down: **syncing** (hidden) until the
//!   copy has caught up with the clock the replica announced, then **up** (every
//!   entry reported as a join);
//! - silent for `down_period`: **down** (its presences leave, the copy is kept);
//! - a message from a newer `vsn` of a known name: the node restarted, and the old
//!   incarnation's presences leave at once; messages from an older `vsn` are
//!   ignored;
//! - [`Gossip::Goodbye`]: **left** (its presences leave at once; later messages of
//!   that incarnation are ignored);
//! - silent for `permdown_period` (down or left): forgotten.
//!
//! A node that starts or reconnects sends [`Gossip::Hello`]; every node answers
//! with its whole state, so the newcomer does not wait for heartbeats.
//!
//! Entries are indexed by topic (per replica) and local ones by connection, so
//! [`Tracker::list`] costs the size of the topic (plus one lookup per node) and
//! [`Tracker::untrack_conn`] the number of that connection's entries.
//!
//! # Where this differs from Phoenix on purpose
//!
//! Phoenix's tracker (`phoenix_pubsub` 2.x, `lib/phoenix/tracker/{shard,state,
//! clock,replica}.ex`) keeps an observed-remove set with dots and causal contexts,
//! exchanges vector clocks every `clock_sample_periods` to pick transfer partners,
//! and keeps three generations of deltas. Here:
//!
//! - one op log per replica instead of dots: the writer is single, so a clock per
//!   replica is the whole causal context, and a gap is repaired from the last
//!   `max_delta_ops` ops kept by the owner (Phoenix: delta generations of 100,
//!   1 000 and 10 000), or by a full transfer;
//! - `down_period` is 5 s by default (Phoenix: 30 s) so a dead node's users vanish
//!   quickly; heartbeats go out every `broadcast_period` (1.5 s, as Phoenix) even
//!   when idle (Phoenix stays silent up to 10 periods);
//! - a restarted node is recognised on its first message of any kind, and `vsn`
//!   is ordered: an older incarnation's late messages are ignored (Phoenix's
//!   `Replica.put_heartbeat` takes any heartbeat with a different `vsn` as the
//!   new incarnation, so a late heartbeat of the old one would swap them back);
//! - a goodbye leaves a tombstone until `permdown_period`, so late messages of
//!   the departed incarnation cannot revive it (Phoenix downs and permdowns it,
//!   forgetting it at once);
//! - a replica that comes back is hidden until its copy is complete (Phoenix
//!   re-reports the stale copy as joins, then corrects it);
//! - joining nodes say hello and get every state at once; a graceful shutdown
//!   always says goodbye (Phoenix only with `permdown_on_shutdown`);
//! - one tracker per node (Phoenix shards by topic, `pool_size` 1 by default).

mod data;
mod gossip;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use phx_protocol::presence::{Meta, PresenceDiff};

use data::Diffs;
pub use data::{Delta, Op, ReplicaData};
pub use gossip::{Gossip, Replica, Transfer, WIRE_VERSION};

use crate::{PresenceError, PresenceList};

/// Timing and sizes of a tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// How often heartbeats go out (Phoenix: 1 500 ms).
    pub broadcast_period_ms: u64,
    /// Silence after which a replica is down (Phoenix: 30 s; here 5 s by default).
    pub down_period_ms: u64,
    /// Silence after which a down or departed replica is forgotten (Phoenix: 20 min).
    pub permdown_period_ms: u64,
    /// How many of its latest ops a node keeps to repair others' gaps with a delta.
    pub max_delta_ops: usize,
}

impl Default for TrackerConfig {
    fn default() -> TrackerConfig {
        TrackerConfig {
            broadcast_period_ms: 1_500,
            down_period_ms: 5_000,
            permdown_period_ms: 1_200_000,
            max_delta_ops: 1_000,
        }
    }
}

impl TrackerConfig {
    /// Phoenix's checks: `down_period >= 2 × broadcast_period`, `permdown > down`;
    /// and a period of at least 1 ms.
    ///
    /// ```
    /// use phx_presence::TrackerConfig;
    /// assert!(TrackerConfig::default().validate().is_ok());
    /// let bad = TrackerConfig { down_period_ms: 2_000, ..TrackerConfig::default() };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), PresenceError> {
        if self.broadcast_period_ms == 0 {
            return Err(PresenceError::InvalidConfig(
                "broadcast_period must be at least 1 ms",
            ));
        }
        if self.down_period_ms < self.broadcast_period_ms.saturating_mul(2) {
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

/// What a tracker knows of a remote replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaStatus {
    /// Heard from, copy complete: its presences are listed.
    Up,
    /// Heard from, copy still catching up: hidden until complete.
    Syncing,
    /// Silent for longer than `down_period`: hidden, copy kept.
    Down,
    /// Said goodbye: gone; later messages of this incarnation are ignored.
    Left,
}

#[derive(Debug, Clone)]
struct Remote {
    vsn: u64,
    data: ReplicaData,
    status: ReplicaStatus,
    last_heard: u64,
    /// The highest clock the replica announced.
    announced: u64,
}

impl Remote {
    fn new(vsn: u64, now_ms: u64, status: ReplicaStatus) -> Remote {
        Remote {
            vsn,
            data: ReplicaData::default(),
            status,
            last_heard: now_ms,
            announced: 0,
        }
    }

    fn replica(&self, name: &str) -> Replica {
        Replica::new(name, self.vsn)
    }

    /// Diffs go out only for a replica that is shown.
    fn diffs<'a>(&self, diffs: &'a mut Diffs) -> Option<&'a mut Diffs> {
        (self.status == ReplicaStatus::Up).then_some(diffs)
    }

    /// A syncing replica whose copy caught up is shown.
    fn settle(&mut self, diffs: &mut Diffs) {
        if self.status == ReplicaStatus::Syncing && self.data.clock() >= self.announced {
            self.status = ReplicaStatus::Up;
            self.data.all_as(true, diffs);
        }
    }
}

/// One node's tracker. See the module docs.
///
/// ```
/// use phx_presence::{Meta, Replica, Tracker, TrackerConfig};
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
    /// Local connection → its (topic, key) entries.
    by_conn: HashMap<u64, BTreeSet<(String, String)>>,
    /// The latest local ops: op number `log_start + 1 + i` at index `i`.
    log: VecDeque<Op>,
    log_start: u64,
    /// The local clock at the previous heartbeat.
    sent: u64,
    /// Remote replicas by name.
    remotes: BTreeMap<String, Remote>,
}

impl Tracker {
    /// A tracker for replica `me`; refuses a configuration Phoenix would refuse.
    pub fn new(me: Replica, config: TrackerConfig) -> Result<Tracker, PresenceError> {
        config.validate()?;
        Ok(Tracker {
            me,
            config,
            local: ReplicaData::default(),
            by_conn: HashMap::new(),
            log: VecDeque::new(),
            log_start: 0,
            sent: 0,
            remotes: BTreeMap::new(),
        })
    }

    /// This node's replica.
    pub fn replica(&self) -> &Replica {
        &self.me
    }

    /// The configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// This node's own entries.
    pub fn local(&self) -> &ReplicaData {
        &self.local
    }

    fn local_op(&mut self, op: Op) -> Diffs {
        let mut diffs = Diffs::new();
        self.local.apply(&op, Some(&mut diffs));
        self.log.push_back(op);
        while self.log.len() > self.config.max_delta_ops {
            self.log.pop_front();
            self.log_start += 1;
        }
        diffs
    }

    /// Tracks (or re-tracks, replacing the meta) a local connection's key on a
    /// topic; returns the diff for the local subscribers.
    pub fn track(&mut self, topic: &str, conn: u64, key: &str, meta: Meta) -> PresenceDiff {
        self.by_conn
            .entry(conn)
            .or_default()
            .insert((topic.to_owned(), key.to_owned()));
        let op = Op::Join {
            topic: topic.to_owned(),
            conn,
            key: key.to_owned(),
            meta,
        };
        self.local_op(op).remove(topic).unwrap_or_default()
    }

    /// Untracks a local connection's key (no-op when not tracked).
    pub fn untrack(&mut self, topic: &str, conn: u64, key: &str) -> PresenceDiff {
        if !self.local.contains(topic, conn, key) {
            return PresenceDiff::default();
        }
        if let Some(set) = self.by_conn.get_mut(&conn) {
            set.remove(&(topic.to_owned(), key.to_owned()));
            if set.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
        let op = Op::Leave {
            topic: topic.to_owned(),
            conn,
            key: key.to_owned(),
        };
        self.local_op(op).remove(topic).unwrap_or_default()
    }

    /// Replaces a local entry's meta: one diff with the leave of the old meta and
    /// the join of the new. Phoenix's `{:error, :nopresence}` when not tracked.
    pub fn update(
        &mut self,
        topic: &str,
        conn: u64,
        key: &str,
        meta: Meta,
    ) -> Result<PresenceDiff, PresenceError> {
        if !self.local.contains(topic, conn, key) {
            return Err(PresenceError::NoPresence {
                topic: topic.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(self.track(topic, conn, key, meta))
    }

    /// Untracks everything of a local connection; returns the diffs per topic.
    pub fn untrack_conn(&mut self, conn: u64) -> Vec<(String, PresenceDiff)> {
        let Some(ids) = self.by_conn.remove(&conn) else {
            return Vec::new();
        };
        let mut out = Diffs::new();
        for (topic, key) in ids {
            let op = Op::Leave { topic, conn, key };
            for (topic, d) in self.local_op(op) {
                let merged = out.entry(topic).or_default();
                for (k, e) in d.leaves {
                    merged.leaves.entry(k).or_default().metas.extend(e.metas);
                }
            }
        }
        out.into_iter().collect()
    }

    /// The heartbeat to send now: this node's clock and its ops since the
    /// previous heartbeat (left out when the log no longer holds them all; the
    /// receivers then ask for a transfer).
    pub fn heartbeat(&mut self) -> Gossip {
        let clock = self.local.clock();
        let delta = if self.sent < clock {
            self.ops_since(self.sent)
        } else {
            None
        };
        self.sent = clock;
        Gossip::Heartbeat {
            from: self.me.clone(),
            clock,
            delta,
        }
    }

    /// The local ops after `have`, when the log still holds them.
    fn ops_since(&self, have: u64) -> Option<Delta> {
        if have < self.log_start || have > self.local.clock() {
            return None;
        }
        let skip = usize::try_from(have - self.log_start).ok()?;
        Some(Delta {
            start: have,
            ops: self.log.iter().skip(skip).cloned().collect(),
        })
    }

    /// The message to send on start and after a reconnect: everyone answers with
    /// its state.
    pub fn hello(&self) -> Gossip {
        Gossip::Hello {
            from: self.me.clone(),
            clock: self.local.clock(),
        }
    }

    /// The message announcing a graceful shutdown.
    pub fn goodbye(&self) -> Gossip {
        Gossip::Goodbye {
            from: self.me.clone(),
        }
    }

    /// Records that `from` was heard at `now_ms` announcing `clock`: replaces an
    /// older incarnation, wakes a down replica. `None` when the message must be
    /// ignored (our own, from an older incarnation, or from one that left).
    fn heard(
        &mut self,
        from: &Replica,
        clock: u64,
        now_ms: u64,
        diffs: &mut Diffs,
    ) -> Option<&mut Remote> {
        if from.name == self.me.name {
            return None;
        }
        let fresh = Remote::new(from.vsn, now_ms, ReplicaStatus::Syncing);
        let remote = match self.remotes.entry(from.name.clone()) {
            std::collections::btree_map::Entry::Vacant(v) => v.insert(fresh),
            std::collections::btree_map::Entry::Occupied(o) => {
                let remote = o.into_mut();
                if remote.vsn > from.vsn {
                    return None;
                }
                if remote.vsn < from.vsn {
                    if remote.status == ReplicaStatus::Up {
                        remote.data.all_as(false, diffs);
                    }
                    *remote = fresh;
                }
                remote
            }
        };
        match remote.status {
            ReplicaStatus::Left => return None,
            ReplicaStatus::Down => remote.status = ReplicaStatus::Syncing,
            ReplicaStatus::Up | ReplicaStatus::Syncing => {}
        }
        remote.last_heard = remote.last_heard.max(now_ms);
        remote.announced = remote.announced.max(clock);
        Some(remote)
    }

    /// Handles a message from another tracker at `now_ms`. Returns the presence
    /// diffs it causes (per topic, for the local subscribers) and the messages to
    /// send in answer (see [`Gossip::recipient`]).
    pub fn handle(
        &mut self,
        msg: Gossip,
        now_ms: u64,
    ) -> (BTreeMap<String, PresenceDiff>, Vec<Gossip>) {
        let mut diffs = Diffs::new();
        let mut replies = Vec::new();
        match msg {
            Gossip::Heartbeat { from, clock, delta } => {
                self.on_heartbeat(from, clock, delta, now_ms, &mut diffs, &mut replies)
            }
            Gossip::Hello { from, clock } => {
                self.on_hello(from, clock, now_ms, &mut diffs, &mut replies)
            }
            Gossip::TransferReq { from, to, have } => {
                self.on_transfer_req(from, to, have, now_ms, &mut diffs, &mut replies)
            }
            Gossip::TransferAck { from, transfer, .. } => {
                self.on_transfer_ack(from, transfer, now_ms, &mut diffs)
            }
            Gossip::Goodbye { from } => self.on_goodbye(from, now_ms, &mut diffs),
        }
        diffs.retain(|_, d| !d.is_empty());
        (diffs, replies)
    }

    /// A heartbeat: the sender is alive; it may carry its latest ops. A gap
    /// between what we hold and what it announces asks for a transfer.
    fn on_heartbeat(
        &mut self,
        from: Replica,
        clock: u64,
        delta: Option<Delta>,
        now_ms: u64,
        diffs: &mut Diffs,
        replies: &mut Vec<Gossip>,
    ) {
        let me = self.me.clone();
        if let Some(remote) = self.heard(&from, clock, now_ms, diffs) {
            if let Some(delta) = &delta {
                let d = remote.diffs(diffs);
                remote.data.apply_delta(delta, d);
            }
            remote.settle(diffs);
            if remote.data.clock() < remote.announced {
                replies.push(Gossip::TransferReq {
                    from: me,
                    to: from,
                    have: remote.data.clock(),
                });
            }
        }
    }

    /// A node that starts or reconnects: it gets our full state, and we ask
    /// for what we lack of its own.
    fn on_hello(
        &mut self,
        from: Replica,
        clock: u64,
        now_ms: u64,
        diffs: &mut Diffs,
        replies: &mut Vec<Gossip>,
    ) {
        let me = self.me.clone();
        if let Some(remote) = self.heard(&from, clock, now_ms, diffs) {
            remote.settle(diffs);
            if remote.data.clock() < remote.announced {
                replies.push(Gossip::TransferReq {
                    from: me.clone(),
                    to: from.clone(),
                    have: remote.data.clock(),
                });
            }
            replies.push(Gossip::TransferAck {
                from: me,
                to: from,
                transfer: Transfer::Full {
                    data: self.local.clone(),
                },
            });
        }
    }

    /// A request for our ops since `have`: the delta if we still keep it,
    /// else our full state.
    fn on_transfer_req(
        &mut self,
        from: Replica,
        to: Replica,
        have: u64,
        now_ms: u64,
        diffs: &mut Diffs,
        replies: &mut Vec<Gossip>,
    ) {
        if to != self.me || self.heard(&from, 0, now_ms, diffs).is_none() {
            return;
        }
        let transfer = match self.ops_since(have) {
            Some(delta) => Transfer::Delta { delta },
            None => Transfer::Full {
                data: self.local.clone(),
            },
        };
        replies.push(Gossip::TransferAck {
            from: self.me.clone(),
            to: from,
            transfer,
        });
    }

    /// The answer to a transfer request (or a hello): a delta to apply, or a
    /// full state that replaces an older copy.
    fn on_transfer_ack(
        &mut self,
        from: Replica,
        transfer: Transfer,
        now_ms: u64,
        diffs: &mut Diffs,
    ) {
        let end = match &transfer {
            Transfer::Delta { delta } => delta.end(),
            Transfer::Full { data } => data.clock(),
        };
        let Some(remote) = self.heard(&from, end, now_ms, diffs) else {
            return;
        };
        match transfer {
            Transfer::Delta { delta } => {
                let d = remote.diffs(diffs);
                remote.data.apply_delta(&delta, d);
            }
            Transfer::Full { data } => {
                if data.clock() > remote.data.clock() {
                    if remote.status == ReplicaStatus::Up {
                        remote.data.compare(&data, diffs);
                    }
                    remote.data = data;
                }
            }
        }
        remote.settle(diffs);
    }

    /// A graceful leave: the sender's presences leave at once.
    fn on_goodbye(&mut self, from: Replica, now_ms: u64, diffs: &mut Diffs) {
        if let Some(remote) = self.heard(&from, 0, now_ms, diffs) {
            if remote.status == ReplicaStatus::Up {
                remote.data.all_as(false, diffs);
            }
            remote.status = ReplicaStatus::Left;
            remote.data = ReplicaData::default();
        }
    }

    /// Checks liveness at `now_ms`: replicas silent past `down_period` go down
    /// (their presences leave); down or departed replicas silent past
    /// `permdown_period` are forgotten. Call it often (several times per
    /// broadcast period) so a dead node is noticed soon after `down_period`.
    pub fn tick(&mut self, now_ms: u64) -> BTreeMap<String, PresenceDiff> {
        let mut diffs = Diffs::new();
        let config = self.config;
        self.remotes.retain(|_, remote| {
            let silent = now_ms.saturating_sub(remote.last_heard);
            match remote.status {
                ReplicaStatus::Down | ReplicaStatus::Left => silent <= config.permdown_period_ms,
                ReplicaStatus::Up | ReplicaStatus::Syncing => {
                    if silent > config.down_period_ms {
                        if remote.status == ReplicaStatus::Up {
                            remote.data.all_as(false, &mut diffs);
                        }
                        remote.status = ReplicaStatus::Down;
                    }
                    true
                }
            }
        });
        diffs.retain(|_, d| !d.is_empty());
        diffs
    }

    /// Forgets every remote replica at once, reporting the shown ones' presences
    /// as leaves (for a node cut off from the cluster that prefers to show only
    /// its own presences; they come back through hellos and heartbeats).
    pub fn forget_remotes(&mut self) -> BTreeMap<String, PresenceDiff> {
        let mut diffs = Diffs::new();
        for remote in std::mem::take(&mut self.remotes).into_values() {
            if remote.status == ReplicaStatus::Up {
                remote.data.all_as(false, &mut diffs);
            }
        }
        diffs.retain(|_, d| !d.is_empty());
        diffs
    }

    /// The remote replicas this tracker knows, with their status.
    pub fn replicas(&self) -> Vec<(Replica, ReplicaStatus)> {
        self.remotes
            .iter()
            .map(|(name, r)| (r.replica(name), r.status))
            .collect()
    }

    /// The presences of a topic across this node and every shown replica. Metas
    /// are ordered by node name, then by when they were tracked, so every node
    /// lists a topic in the same order.
    pub fn list(&self, topic: &str) -> PresenceList {
        let mut rows: Vec<(&str, u64, &String, &Meta)> = Vec::new();
        let local = std::iter::once((self.me.name.as_str(), &self.local));
        let remotes = self
            .remotes
            .iter()
            .filter(|(_, r)| r.status == ReplicaStatus::Up)
            .map(|(name, r)| (name.as_str(), &r.data));
        for (name, data) in local.chain(remotes) {
            if let Some(entries) = data.topic(topic) {
                for ((_, key), (seq, meta)) in entries {
                    rows.push((name, *seq, key, meta));
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

    /// The topics with presences on this node or a shown replica.
    pub fn topics(&self) -> BTreeSet<String> {
        let mut topics: BTreeSet<String> = self.local.topic_names().cloned().collect();
        for remote in self.remotes.values() {
            if remote.status == ReplicaStatus::Up {
                topics.extend(remote.data.topic_names().cloned());
            }
        }
        topics
    }

    /// Entries of a topic stored here, hidden replicas included (Phoenix's
    /// `dirty_list`, counted).
    pub fn dirty_count(&self, topic: &str) -> usize {
        std::iter::once(&self.local)
            .chain(self.remotes.values().map(|r| &r.data))
            .filter_map(|d| d.topic(topic))
            .map(|t| t.len())
            .sum()
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
            max_delta_ops: 4,
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
        // Silent past down, then past permdown: purged.
        assert!(b.tick(800 + 600)["t"].leaves.contains_key("u3"));
        b.tick(800 + 1_600);
        assert!(b.replicas().is_empty());
        assert_eq!(b.dirty_count("t"), 0);
    }

    #[test]
    fn graceful_permdown_drops_presences_at_once() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        b.handle(a.heartbeat(), 0);
        let (d, _) = b.handle(a.goodbye(), 1);
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(b.list("t").is_empty());
        assert_eq!(
            b.replicas(),
            vec![(Replica::new("a", 1), ReplicaStatus::Left)]
        );
        // A late heartbeat of the departed incarnation changes nothing.
        let (d, replies) = b.handle(a.heartbeat(), 2);
        assert!(d.is_empty() && replies.is_empty());
        // Forgotten after permdown_period.
        b.tick(2 + 1_600);
        assert!(b.replicas().is_empty());
    }

    #[test]
    fn an_older_incarnation_is_ignored_once_a_newer_one_is_seen() {
        let (mut old, mut new, mut b) = (t("a", 1), t("a", 2), t("b", 1));
        old.track("t", 1, "ghost", m("1"));
        new.track("t", 1, "fresh", m("2"));
        let late = old.heartbeat();
        b.handle(new.heartbeat(), 0);
        let (d, replies) = b.handle(late, 1);
        assert!(d.is_empty() && replies.is_empty());
        assert_eq!(
            b.list("t").keys().cloned().collect::<Vec<_>>(),
            vec!["fresh"]
        );
    }

    #[test]
    fn a_replica_is_hidden_until_its_copy_is_complete() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        let _lost = a.heartbeat();
        a.track("t", 2, "u2", m("2"));
        // b hears of a through an idle heartbeat: a is known but not complete.
        let (d, replies) = b.handle(a.heartbeat(), 0);
        assert!(d.is_empty() && b.list("t").is_empty());
        assert_eq!(b.replicas()[0].1, ReplicaStatus::Syncing);
        assert!(matches!(replies[0], Gossip::TransferReq { have: 0, .. }));
        // Down while b's copy is stale: coming back, it stays hidden until repaired.
        let (_, acks) = a.handle(replies[0].clone(), 0);
        b.handle(acks[0].clone(), 0);
        assert_eq!(b.list("t").len(), 2);
        assert!(b.tick(600)["t"].leaves.len() == 2);
        a.untrack_conn(1);
        let _lost = a.heartbeat();
        let (d, replies) = b.handle(a.heartbeat(), 700);
        assert!(d.is_empty(), "no stale joins: {d:?}");
        let (_, acks) = a.handle(replies[0].clone(), 700);
        assert!(
            matches!(
                &acks[0],
                Gossip::TransferAck {
                    transfer: Transfer::Delta { .. },
                    ..
                }
            ),
            "a gap still in the log is repaired with a delta"
        );
        let (d, _) = b.handle(acks[0].clone(), 700);
        assert_eq!(d["t"].joins.keys().cloned().collect::<Vec<_>>(), vec!["u2"]);
        assert!(d["t"].leaves.is_empty());
    }

    #[test]
    fn a_gap_beyond_the_log_gets_the_whole_state() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        for i in 0..10 {
            a.track("t", i, &format!("u{i}"), m(&i.to_string()));
        }
        let hb = a.heartbeat();
        assert!(
            matches!(
                &hb,
                Gossip::Heartbeat {
                    delta: None,
                    clock: 10,
                    ..
                }
            ),
            "more ops than the log keeps: no delta"
        );
        let (_, replies) = b.handle(hb, 0);
        let (_, acks) = a.handle(replies[0].clone(), 0);
        assert!(matches!(
            &acks[0],
            Gossip::TransferAck {
                transfer: Transfer::Full { .. },
                ..
            }
        ));
        let (d, _) = b.handle(acks[0].clone(), 0);
        assert_eq!(d["t"].joins.len(), 10);
        assert_eq!(b.list("t"), a.list("t"));
    }

    #[test]
    fn hello_gets_everyones_state_at_once() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        a.heartbeat();
        let (_, replies) = a.handle(b.hello(), 0);
        let ack = replies
            .into_iter()
            .find(|r| matches!(r, Gossip::TransferAck { .. }))
            .expect("a answers the hello with its state");
        assert_eq!(ack.recipient(), Some(b.replica()));
        let (d, _) = b.handle(ack, 0);
        assert!(d["t"].joins.contains_key("u1"));
    }

    #[test]
    fn untrack_conn_removes_only_that_connection_across_topics() {
        let mut a = t("a", 1);
        a.track("t1", 1, "u", m("1"));
        a.track("t2", 1, "u", m("2"));
        a.track("t1", 2, "v", m("3"));
        let gone = a.untrack_conn(1);
        assert_eq!(gone.len(), 2);
        assert!(gone
            .iter()
            .all(|(_, d)| d.leaves.contains_key("u") && d.joins.is_empty()));
        assert_eq!(a.list("t1").keys().cloned().collect::<Vec<_>>(), vec!["v"]);
        assert!(a.list("t2").is_empty());
        assert!(a.untrack_conn(1).is_empty());
        assert_eq!(a.topics().into_iter().collect::<Vec<_>>(), vec!["t1"]);
    }

    #[test]
    fn every_message_survives_the_wire_and_bad_input_is_refused() {
        let mut a = t("a", 1);
        a.track("t", 1, "u", m("1"));
        let msgs = vec![
            a.heartbeat(),
            a.hello(),
            a.goodbye(),
            Gossip::TransferReq {
                from: a.replica().clone(),
                to: Replica::new("b", 2),
                have: 3,
            },
            Gossip::TransferAck {
                from: a.replica().clone(),
                to: Replica::new("b", 2),
                transfer: Transfer::Full {
                    data: a.local().clone(),
                },
            },
        ];
        for msg in msgs {
            assert_eq!(Gossip::decode(&msg.encode()).unwrap(), msg);
        }
        let wire = String::from_utf8(a.hello().encode()).unwrap();
        assert!(
            wire.starts_with(r#"{"v":1,"msg":{"type":"hello""#),
            "{wire}"
        );
        for bad in [
            &b"nope"[..],
            br#"{"v":2,"msg":{"type":"goodbye","from":{"name":"a","vsn":1}}}"#,
            br#"{"v":1,"msg":{"type":"shout"}}"#,
            br#"{"v":1,"msg":{"type":"transfer_ack","from":{"name":"a","vsn":1},"to":{"name":"b","vsn":1},"transfer":{"kind":"full","data":{"clock":1,"entries":[{"topic":"t","conn":1,"key":"u","seq":5,"meta":{"phx_ref":"x"}}]}}}}"#,
        ] {
            assert!(matches!(Gossip::decode(bad), Err(PresenceError::Wire(_))));
        }
    }
}
