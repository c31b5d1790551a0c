//! The replicated tracker: presence kept consistent across nodes, as a pure state
//! machine. The cluster driver (`phx-cluster`) runs it over Redis; nothing here
//! reads a clock or does I/O: time is passed in as `now_ms` (any monotonic
//! milliseconds) and messages come in and go out as [`Gossip`] values.
//!
//! # How it works
//!
//! Each node is a [`Replica`] (a name plus an incarnation `vsn`, a new one with
//! every restart) and the only writer of its own entries. Its changes are
//! numbered ops ([`Op`]); every `broadcast_period` the node sends a heartbeat
//! carrying its clock and the ops since its previous heartbeat. A receiver applies
//! ops that continue exactly where its copy stands; when it notices a gap (from a
//! delta that starts too late, or from a clock ahead of its copy) it sends a
//! numbered [`Gossip::TransferReq`] saying how far it is (at most one in flight
//! per replica, asked again after `down_period`), and gets back the missing ops
//! when they are still kept and no more than the entries of the whole state
//! (an op and an entry cost about the same on the wire), else the whole state.
//! Since each replica's data has a single writer and a growing clock, copies
//! converge whatever the order, duplication or loss of messages, and a removed
//! entry never comes back.
//!
//! No message exceeds `max_message_bytes` (60 KiB by default): heartbeats and
//! deltas are cut into consecutive deltas, a whole state into numbered parts
//! ([`Transfer::Part`], by topic, a large topic over several parts) that the
//! receiver assembles before installing it.
//!
//! A remote replica is shown (its presences are listed and reported as joins)
//! only once its copy is complete, so a node that joins, comes back from a
//! netsplit or restarts never shows a partial or stale state:
//!
//! - first heard, or heard again after being down: **syncing** (hidden) until the
//!   copy has caught up with the clock the replica announced, then **up** (every
//!   entry reported as a join);
//! - silent for `down_period`: **down** (its presences leave, the copy is kept);
//! - a message from another `vsn` of a known name: a restart, or a late message
//!   of a dead incarnation. A newer `vsn` is asked for a proof of life (a
//!   request it must answer) while the known one stays shown; an older one is
//!   ignored while the known one is alive, and taken (after the same proof)
//!   once the known one is down or left, so a restart with the clock set back
//!   waits at most `down_period`. The old incarnation's presences leave when
//!   the new one is taken; a replaced incarnation is never taken again;
//! - down, then heard again: hidden until it answered a request made since (a
//!   late heartbeat of a crashed node brings nobody back);
//! - [`Gossip::Goodbye`]: **left** (its presences leave at once; later messages of
//!   that incarnation are ignored);
//! - silent for `permdown_period` (down or left): forgotten.
//!
//! A node that starts or reconnects sends [`Gossip::Hello`] with what it holds
//! of every replica; each node answers with what it misses (a delta after a
//! Redis restart, the whole state in parts for a newcomer), so it does not wait
//! for heartbeats.
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
//!   `max_delta_ops` (10 000) ops kept by the owner (Phoenix: delta generations
//!   of 100, 1 000 and 10 000), or by a full transfer;
//! - `down_period` is 5 s by default (Phoenix: 30 s) so a dead node's users vanish
//!   quickly; heartbeats go out every `broadcast_period` (1.5 s, as Phoenix) even
//!   when idle (Phoenix stays silent up to 10 periods);
//! - a restarted node is recognised on its first message of any kind and taken
//!   once it answered a request; a replaced incarnation's late messages are
//!   ignored (Phoenix's `Replica.put_heartbeat` takes any heartbeat with a
//!   different `vsn` as the new incarnation, so a late heartbeat of the old one
//!   would swap them back);
//! - a goodbye leaves a tombstone until `permdown_period`, so late messages of
//!   the departed incarnation cannot revive it (Phoenix downs and permdowns it,
//!   forgetting it at once);
//! - a replica that comes back is hidden until its copy is complete (Phoenix
//!   re-reports the stale copy as joins, then corrects it);
//! - joining nodes say hello with their clocks and get what they miss at once;
//!   a graceful shutdown always says goodbye (Phoenix only with
//!   `permdown_on_shutdown`);
//! - one tracker per node (Phoenix shards by topic, `pool_size` 1 by default).

mod data;
mod gossip;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use phx_protocol::presence::{Meta, PresenceDiff};

use data::Diffs;
pub use data::{Delta, Op, ReplicaData, MAX_CLOCK};
pub use gossip::{Gossip, Have, Replica, Transfer, MAX_PARTS, WIRE_VERSION};

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
    /// The largest encoded tracker message this node sends (a presence whose
    /// own entry is larger still goes alone). Default 60 KiB, which keeps every
    /// cluster frame under 64 KiB.
    pub max_message_bytes: usize,
}

impl Default for TrackerConfig {
    fn default() -> TrackerConfig {
        TrackerConfig {
            broadcast_period_ms: 1_500,
            down_period_ms: 5_000,
            permdown_period_ms: 1_200_000,
            max_delta_ops: 10_000,
            max_message_bytes: 60 * 1024,
        }
    }
}

impl TrackerConfig {
    /// Phoenix's checks: `down_period >= 2 × broadcast_period`, `permdown > down`;
    /// a period of at least 1 ms, and messages of at least 1 KiB.
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
        if self.max_message_bytes < 1024 {
            return Err(PresenceError::InvalidConfig(
                "max_message_bytes must be at least 1 024",
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
    /// Heard from, copy still catching up (or, after being down, not yet
    /// proven alive): hidden until complete.
    Syncing,
    /// Silent for longer than `down_period`: hidden, copy kept.
    Down,
    /// Said goodbye: gone; later messages of this incarnation are ignored.
    Left,
}

/// The parts of a state transfer received so far.
#[derive(Debug, Clone)]
struct Assembly {
    clock: u64,
    parts: u32,
    got: BTreeSet<u32>,
    data: ReplicaData,
}

#[derive(Debug, Clone)]
struct Remote {
    vsn: u64,
    data: ReplicaData,
    status: ReplicaStatus,
    last_heard: u64,
    /// The highest clock the replica announced.
    announced: u64,
    /// The transfer asked for and not complete: (request id, when asked).
    pending: Option<(u64, u64)>,
    /// A state transfer being assembled.
    assembly: Option<Assembly>,
    /// It went down (or a lower incarnation replaced a lost one): it is shown
    /// again only once it answered a request made since, which a dead node
    /// cannot do (a late heartbeat proves nothing).
    needs_proof: bool,
    /// Incarnations of this name replaced before: never taken again.
    retired: Vec<u64>,
    /// The incarnation this one replaced, retired once this one proves alive.
    replaces: Option<u64>,
    /// A newer incarnation heard while this one is up, asked to prove it is
    /// alive: (its number, the request, when asked).
    candidate: Option<(u64, u64, u64)>,
}

/// How many replaced incarnations of a name are remembered.
const RETIRED: usize = 16;

impl Remote {
    fn new(vsn: u64, now_ms: u64) -> Remote {
        Remote {
            vsn,
            data: ReplicaData::default(),
            status: ReplicaStatus::Syncing,
            last_heard: now_ms,
            announced: 0,
            pending: None,
            assembly: None,
            needs_proof: false,
            retired: Vec::new(),
            replaces: None,
            candidate: None,
        }
    }

    /// Not proven alive since it was (re)heard: any other incarnation may
    /// replace it.
    fn unproven(&self) -> bool {
        self.needs_proof && self.status == ReplicaStatus::Syncing
    }

    /// It answered a request made since it was heard again.
    fn proven(&mut self) {
        self.needs_proof = false;
        if let Some(old) = self.replaces.take() {
            self.retired.push(old);
            if self.retired.len() > RETIRED {
                self.retired.remove(0);
            }
        }
    }

    fn replica(&self, name: &str) -> Replica {
        Replica::new(name, self.vsn)
    }

    /// Diffs go out only for a replica that is shown.
    fn diffs<'a>(&self, diffs: &'a mut Diffs) -> Option<&'a mut Diffs> {
        (self.status == ReplicaStatus::Up).then_some(diffs)
    }

    fn caught_up(&self) -> bool {
        self.data.clock() >= self.announced && !self.needs_proof
    }

    /// Takes (part of) an answer to request `id` (0: to a hello): a delta to
    /// apply, or a part of a whole state, installed once every part is in.
    fn receive(&mut self, id: u64, transfer: Transfer, now_ms: u64, diffs: &mut Diffs) {
        if id != 0 && self.pending.is_some_and(|(p, _)| p == id) {
            self.proven();
        }
        match transfer {
            Transfer::Delta { delta } => {
                let d = self.diffs(diffs);
                self.data.apply_delta(&delta, d);
            }
            Transfer::Part { part, parts, data } => {
                let clock = data.clock();
                if clock > self.data.clock() {
                    let fresh = match &self.assembly {
                        Some(a) => a.clock < clock || (a.clock == clock && a.parts != parts),
                        None => true,
                    };
                    if fresh {
                        self.assembly = Some(Assembly {
                            clock,
                            parts,
                            got: BTreeSet::new(),
                            data: ReplicaData::default(),
                        });
                        if self.pending.is_none() && !self.needs_proof {
                            // An answer to a hello is in flight: no need to ask.
                            self.pending = Some((0, now_ms));
                        }
                    }
                    let complete = match &mut self.assembly {
                        Some(a) if a.clock == clock => {
                            if a.got.insert(part) {
                                a.data.absorb(data);
                            }
                            a.got.len() == usize::try_from(a.parts).unwrap_or(usize::MAX)
                        }
                        _ => false,
                    };
                    if complete {
                        if let Some(a) = self.assembly.take() {
                            self.install(a.data, diffs);
                        }
                    }
                }
            }
        }
        if self
            .assembly
            .as_ref()
            .is_some_and(|a| a.clock <= self.data.clock())
        {
            self.assembly = None;
        }
        self.settle(diffs);
    }

    /// A syncing replica whose copy caught up (and that proved alive) is shown.
    fn settle(&mut self, diffs: &mut Diffs) {
        if self.caught_up() {
            self.pending = None;
            if self.status == ReplicaStatus::Syncing {
                self.status = ReplicaStatus::Up;
                self.data.all_as(true, diffs);
            }
        }
    }

    /// Hides the replica (its presences leave) and forgets transfers in flight.
    fn hide(&mut self, status: ReplicaStatus, diffs: &mut Diffs) {
        if self.status == ReplicaStatus::Up {
            self.data.all_as(false, diffs);
        }
        self.status = status;
        self.pending = None;
        self.assembly = None;
    }

    /// Installs a complete state newer than the copy.
    fn install(&mut self, data: ReplicaData, diffs: &mut Diffs) {
        if data.clock() > self.data.clock() {
            if self.status == ReplicaStatus::Up {
                self.data.compare(&data, diffs);
            }
            self.data = data;
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
/// let (diffs, _replies) = b.handle(a.heartbeat().remove(0), 0);
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
    /// The last transfer request number used.
    next_id: u64,
    /// Said goodbye: no more heartbeats.
    leaving: bool,
}

/// Room left in a message for everything but the entries or ops.
const ENVELOPE_BYTES: usize = 512;

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
            next_id: 0,
            leaving: false,
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

    /// The bytes a message to `to` may spend on entries or ops.
    fn budget(&self, to: &str) -> usize {
        self.config
            .max_message_bytes
            .saturating_sub(ENVELOPE_BYTES + 2 * (self.me.name.len() + to.len()))
            .max(1)
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
    /// previous heartbeat, in as many messages as `max_message_bytes` needs
    /// (each announcing the clock its ops reach). When the log no longer holds
    /// them all, one heartbeat with the clock alone: the receivers ask for a
    /// transfer. Nothing once [`Tracker::goodbye`] was called.
    pub fn heartbeat(&mut self) -> Vec<Gossip> {
        if self.leaving {
            return Vec::new();
        }
        let clock = self.local.clock();
        let pieces = if self.sent < clock {
            self.ops_since(self.sent)
                .map(|d| d.split(self.budget("")))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.sent = clock;
        if pieces.is_empty() {
            return vec![Gossip::Heartbeat {
                from: self.me.clone(),
                clock,
                delta: None,
            }];
        }
        pieces
            .into_iter()
            .map(|d| Gossip::Heartbeat {
                from: self.me.clone(),
                clock: d.end(),
                delta: Some(d),
            })
            .collect()
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

    /// The message to send on start and after a reconnect: it carries what
    /// this node holds of every replica, and each answers with what is missing.
    pub fn hello(&self) -> Gossip {
        Gossip::Hello {
            from: self.me.clone(),
            clock: self.local.clock(),
            have: self
                .remotes
                .iter()
                .filter(|(_, r)| r.status != ReplicaStatus::Left)
                .map(|(name, r)| Have {
                    replica: r.replica(name),
                    clock: r.data.clock(),
                })
                .collect(),
        }
    }

    /// The message announcing a graceful shutdown; no heartbeat goes out after it.
    pub fn goodbye(&mut self) -> Gossip {
        self.leaving = true;
        Gossip::Goodbye {
            from: self.me.clone(),
        }
    }

    /// The answer to `to`, who holds our ops up to `have` (when known): the
    /// missing ops when the log holds them and they are no more than the
    /// entries of the whole state (an op and an entry cost about the same on
    /// the wire: see the simulation in `phx-cluster`), else the whole state;
    /// either way cut to `max_message_bytes`.
    fn answer(&self, to: Replica, id: u64, have: Option<u64>, replies: &mut Vec<Gossip>) {
        let budget = self.budget(&to.name);
        if let Some(delta) = have.and_then(|h| self.ops_since(h)) {
            if delta.ops.len() <= self.local.len() {
                for delta in delta.split(budget) {
                    replies.push(Gossip::TransferAck {
                        from: self.me.clone(),
                        to: to.clone(),
                        id,
                        transfer: Transfer::Delta { delta },
                    });
                }
                return;
            }
        }
        let chunks = self.local.chunks(budget);
        let parts = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        for (part, data) in (0..parts).zip(chunks) {
            replies.push(Gossip::TransferAck {
                from: self.me.clone(),
                to: to.clone(),
                id,
                transfer: Transfer::Part { part, parts, data },
            });
        }
    }

    /// Records that `from` was heard at `now_ms` announcing `clock`: replaces an
    /// older incarnation (or any other one when the known one is down or
    /// gone), wakes a down replica (hidden until it proves alive). `None` when
    /// the message must be ignored (our own, from another incarnation while
    /// the known one is alive, from one that left, or, unless `replace`,
    /// from any incarnation but the known one).
    #[allow(clippy::too_many_arguments)]
    fn heard<'a>(
        remotes: &'a mut BTreeMap<String, Remote>,
        me: &Replica,
        from: &Replica,
        replace: bool,
        clock: u64,
        now_ms: u64,
        ack_id: Option<u64>,
        ask: (&mut u64, u64, &mut Vec<Gossip>),
        diffs: &mut Diffs,
    ) -> Option<&'a mut Remote> {
        if from.name == me.name {
            return None;
        }
        let remote = match remotes.entry(from.name.clone()) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Remote::new(from.vsn, now_ms))
            }
            std::collections::btree_map::Entry::Occupied(o) => {
                let remote = o.into_mut();
                if remote.vsn != from.vsn {
                    if !replace || remote.retired.contains(&from.vsn) {
                        return None;
                    }
                    let newer = from.vsn > remote.vsn;
                    let gone = matches!(remote.status, ReplicaStatus::Down | ReplicaStatus::Left)
                        || remote.unproven();
                    if !newer && !gone {
                        return None;
                    }
                    let mut proven = None;
                    if !gone {
                        // A newer incarnation while the known one is alive: a
                        // restart, or a late message of a dead incarnation.
                        // The known one stays shown until the newer answers.
                        let (next_id, timeout_ms, replies) = ask;
                        match remote.candidate {
                            Some((vsn, id, _)) if vsn == from.vsn && ack_id == Some(id) => {
                                proven = Some(id);
                            }
                            Some((vsn, _, at))
                                if vsn == from.vsn && now_ms.saturating_sub(at) < timeout_ms => {}
                            _ => {
                                *next_id = next_id.wrapping_add(1).max(1);
                                remote.candidate = Some((from.vsn, *next_id, now_ms));
                                replies.push(Gossip::TransferReq {
                                    from: me.clone(),
                                    to: from.clone(),
                                    id: *next_id,
                                    have: 0,
                                });
                            }
                        }
                        proven?;
                    }
                    remote.hide(ReplicaStatus::Left, diffs);
                    let retired = std::mem::take(&mut remote.retired);
                    let old = remote.vsn;
                    *remote = Remote::new(from.vsn, now_ms);
                    remote.retired = retired;
                    remote.replaces = Some(old);
                    // The new incarnation shows once it answered a request (one
                    // round trip): a late message of a dead incarnation cannot,
                    // so it never brings its users back nor locks out the live
                    // one, whichever has the higher number.
                    remote.needs_proof = true;
                    if let Some(id) = proven {
                        remote.pending = Some((id, now_ms));
                    }
                }
                remote
            }
        };
        match remote.status {
            ReplicaStatus::Left => return None,
            ReplicaStatus::Down => {
                remote.status = ReplicaStatus::Syncing;
                remote.needs_proof = true;
            }
            ReplicaStatus::Up | ReplicaStatus::Syncing => {}
        }
        remote.last_heard = remote.last_heard.max(now_ms);
        remote.announced = remote.announced.max(clock);
        Some(remote)
    }

    /// Asks `from` for what its copy lacks (or for a proof of life), unless a
    /// transfer is already in flight and not yet timed out (`down_period`).
    fn request(
        remote: &mut Remote,
        me: &Replica,
        from: &Replica,
        now_ms: u64,
        timeout_ms: u64,
        next_id: &mut u64,
        replies: &mut Vec<Gossip>,
    ) {
        if remote.caught_up() || remote.status == ReplicaStatus::Left {
            return;
        }
        if let Some((_, at)) = remote.pending {
            if now_ms.saturating_sub(at) < timeout_ms {
                return;
            }
        }
        *next_id = next_id.wrapping_add(1).max(1);
        remote.pending = Some((*next_id, now_ms));
        replies.push(Gossip::TransferReq {
            from: me.clone(),
            to: from.clone(),
            id: *next_id,
            have: remote.data.clock(),
        });
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
            Gossip::Hello { from, clock, have } => {
                self.on_hello(from, clock, have, now_ms, &mut diffs, &mut replies)
            }
            Gossip::TransferReq { from, to, id, have } => {
                if to == self.me && from.name != self.me.name {
                    self.hear_and_ask(&from, 0, None, now_ms, &mut diffs, &mut replies, |_, _| {});
                    // Answered even when the asker's incarnation is not (yet)
                    // taken here: a restarted node must not wait for our proof
                    // of its own life to get our state.
                    self.answer(from, id, Some(have), &mut replies);
                }
            }
            Gossip::TransferAck {
                from,
                to,
                id,
                transfer,
            } => {
                // An answer to a previous incarnation of this node proves nothing.
                if to == self.me {
                    self.on_transfer_ack(from, id, transfer, now_ms, &mut diffs, &mut replies)
                }
            }
            Gossip::Goodbye { from } => {
                if let Some(remote) = Self::heard(
                    &mut self.remotes,
                    &self.me,
                    &from,
                    false,
                    0,
                    now_ms,
                    None,
                    (&mut self.next_id, self.config.down_period_ms, &mut replies),
                    &mut diffs,
                ) {
                    remote.hide(ReplicaStatus::Left, &mut diffs);
                    remote.data = ReplicaData::default();
                }
            }
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
        self.hear_and_ask(
            &from,
            clock,
            None,
            now_ms,
            diffs,
            replies,
            |remote, diffs| {
                if let Some(delta) = &delta {
                    let d = remote.diffs(diffs);
                    remote.data.apply_delta(delta, d);
                }
                remote.settle(diffs);
            },
        );
    }

    /// A node that starts or reconnects: it gets what it lacks of our state
    /// (by its `have`), and we ask for what we lack of its own.
    fn on_hello(
        &mut self,
        from: Replica,
        clock: u64,
        have: Vec<Have>,
        now_ms: u64,
        diffs: &mut Diffs,
        replies: &mut Vec<Gossip>,
    ) {
        if from.name == self.me.name {
            return;
        }
        self.hear_and_ask(
            &from,
            clock,
            None,
            now_ms,
            diffs,
            replies,
            |remote, diffs| remote.settle(diffs),
        );
        // Answered even when its incarnation is not (yet) taken here (a
        // restart asked for a proof of life first): it gets our state at once.
        let mine = have.iter().find(|h| h.replica == self.me).map(|h| h.clock);
        self.answer(from, 0, mine, replies);
    }

    /// (Part of) the answer to a transfer request or a hello: a delta to
    /// apply, or a part of a whole state, installed once every part is in.
    fn on_transfer_ack(
        &mut self,
        from: Replica,
        id: u64,
        transfer: Transfer,
        now_ms: u64,
        diffs: &mut Diffs,
        replies: &mut Vec<Gossip>,
    ) {
        let end = match &transfer {
            Transfer::Delta { delta } => delta.end(),
            Transfer::Part { data, .. } => data.clock(),
        };
        self.hear_and_ask(
            &from,
            end,
            Some(id),
            now_ms,
            diffs,
            replies,
            |remote, diffs| remote.receive(id, transfer, now_ms, diffs),
        );
    }

    /// Hears `from` announcing `clock` (see [`Tracker::heard`]; `ack_id`: the
    /// request the message answers), lets `update` bring our copy of it up to
    /// date, then asks it for what that copy still lacks (see
    /// [`Tracker::request`]). Nothing when the message is to be ignored.
    #[allow(clippy::too_many_arguments)]
    fn hear_and_ask(
        &mut self,
        from: &Replica,
        clock: u64,
        ack_id: Option<u64>,
        now_ms: u64,
        diffs: &mut Diffs,
        replies: &mut Vec<Gossip>,
        update: impl FnOnce(&mut Remote, &mut Diffs),
    ) {
        let Some(remote) = Self::heard(
            &mut self.remotes,
            &self.me,
            from,
            true,
            clock,
            now_ms,
            ack_id,
            (&mut self.next_id, self.config.down_period_ms, replies),
            diffs,
        ) else {
            return;
        };
        update(remote, diffs);
        Self::request(
            remote,
            &self.me,
            from,
            now_ms,
            self.config.down_period_ms,
            &mut self.next_id,
            replies,
        );
    }

    /// Checks liveness at `now_ms`: replicas silent past `down_period` go down
    /// (their presences leave); down or departed replicas silent past
    /// `permdown_period` are forgotten. Call it often (several times per
    /// broadcast period) so a dead node is noticed soon after `down_period`,
    /// and only after handling every message that arrived before `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> BTreeMap<String, PresenceDiff> {
        let mut diffs = Diffs::new();
        let config = self.config;
        self.remotes.retain(|_, remote| {
            let silent = now_ms.saturating_sub(remote.last_heard);
            match remote.status {
                ReplicaStatus::Down | ReplicaStatus::Left => silent <= config.permdown_period_ms,
                ReplicaStatus::Up | ReplicaStatus::Syncing => {
                    if silent > config.down_period_ms {
                        remote.hide(ReplicaStatus::Down, &mut diffs);
                        remote.needs_proof = true;
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
            max_message_bytes: 1024,
        }
    }

    /// The one heartbeat message of a small change.
    fn hb(t: &mut Tracker) -> Gossip {
        let mut v = t.heartbeat();
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
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
        let (d, _) = b.handle(hb(&mut a), 0);
        assert!(d["t"].joins.contains_key("u1"));
        a.untrack_conn(1);
        let (d, _) = b.handle(hb(&mut a), 10);
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(b.list("t").is_empty());
        // The same heartbeat again changes nothing (idempotent).
        a.track("t", 2, "u2", m("2"));
        let hb = hb(&mut a);
        b.handle(hb.clone(), 20);
        let (d, _) = b.handle(hb, 21);
        assert!(d.is_empty());
    }

    #[test]
    fn a_lost_heartbeat_is_repaired_by_a_transfer() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        let _lost = hb(&mut a);
        a.track("t", 2, "u2", m("2"));
        let (d, replies) = b.handle(hb(&mut a), 0);
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
        b.handle(hb(&mut a), 0);
        // Silent past down_period: leaves, hidden, kept.
        let d = b.tick(600);
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(b.list("t").is_empty());
        assert_eq!(b.dirty_count("t"), 1);
        assert_eq!(b.replicas()[0].1, ReplicaStatus::Down);
        // The same incarnation comes back: hidden until it answers a request
        // made since (a late heartbeat of a dead node proves nothing).
        let (d, replies) = b.handle(hb(&mut a), 700);
        assert!(d.is_empty() && b.list("t").is_empty());
        assert_eq!(b.replicas()[0].1, ReplicaStatus::Syncing);
        let (_, acks) = a.handle(replies[0].clone(), 700);
        let (d, _) = b.handle(acks[0].clone(), 700);
        assert!(d["t"].joins.contains_key("u1"));
        // A restart (new vsn): once it answered a request (a late message of a
        // dead incarnation could not), the old entries go and the new come.
        let mut a2 = t("a", 2);
        a2.track("t", 3, "u3", m("3"));
        let (d, replies) = b.handle(hb(&mut a2), 800);
        assert!(d.is_empty(), "{d:?}");
        let (_, acks) = a2.handle(replies[0].clone(), 800);
        let (d, _) = b.handle(acks[0].clone(), 800);
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
        b.handle(hb(&mut a), 0);
        a.track("t", 2, "u2", m("2"));
        let late = hb(&mut a);
        let (d, _) = b.handle(a.goodbye(), 1);
        assert!(a.heartbeat().is_empty(), "no heartbeat after the goodbye");
        assert!(d["t"].leaves.contains_key("u1"));
        assert!(b.list("t").is_empty());
        assert_eq!(
            b.replicas(),
            vec![(Replica::new("a", 1), ReplicaStatus::Left)]
        );
        // A late heartbeat of the departed incarnation changes nothing.
        let (d, replies) = b.handle(late, 2);
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
        let late = hb(&mut old);
        b.handle(hb(&mut new), 0);
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
        let _lost = hb(&mut a);
        a.track("t", 2, "u2", m("2"));
        // b hears of a through an idle heartbeat: a is known but not complete.
        let (d, replies) = b.handle(hb(&mut a), 0);
        assert!(d.is_empty() && b.list("t").is_empty());
        assert_eq!(b.replicas()[0].1, ReplicaStatus::Syncing);
        assert!(matches!(replies[0], Gossip::TransferReq { have: 0, .. }));
        // Down while b's copy is stale: coming back, it stays hidden until repaired.
        let (_, acks) = a.handle(replies[0].clone(), 0);
        b.handle(acks[0].clone(), 0);
        assert_eq!(b.list("t").len(), 2);
        assert!(b.tick(600)["t"].leaves.len() == 2);
        a.untrack_conn(1);
        let _lost = hb(&mut a);
        let (d, replies) = b.handle(hb(&mut a), 700);
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
        let hb = hb(&mut a);
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
        assert!(acks.len() > 1, "the state goes in several parts");
        for (i, ack) in acks.iter().enumerate() {
            assert!(
                ack.encode().len() <= 1024,
                "part {i} within max_message_bytes"
            );
            assert!(matches!(
                ack,
                Gossip::TransferAck { transfer: Transfer::Part { part, .. }, .. } if *part as usize == i
            ));
        }
        // Parts in any order, some twice: the state shows once all are in.
        let mut joins = 0;
        for ack in acks.iter().rev().chain(acks.iter()) {
            let (d, _) = b.handle(ack.clone(), 0);
            joins += d.get("t").map_or(0, |d| d.joins.len());
        }
        assert_eq!(joins, 10);
        assert_eq!(b.list("t"), a.list("t"));
    }

    #[test]
    fn hello_gets_everyones_state_at_once() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        hb(&mut a);
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
            hb(&mut a),
            a.hello(),
            a.clone().goodbye(),
            Gossip::TransferReq {
                from: a.replica().clone(),
                to: Replica::new("b", 2),
                id: 4,
                have: 3,
            },
            Gossip::TransferAck {
                from: a.replica().clone(),
                to: Replica::new("b", 2),
                id: 4,
                transfer: Transfer::Part {
                    part: 0,
                    parts: 1,
                    data: a.local().clone(),
                },
            },
        ];
        for msg in msgs {
            assert_eq!(Gossip::decode(&msg.encode()).unwrap(), msg);
        }
        let wire = String::from_utf8(a.hello().encode()).unwrap();
        assert!(
            wire.starts_with(r#"{"v":2,"msg":{"type":"hello""#),
            "{wire}"
        );
        for bad in [
            &b"nope"[..],
            br#"{"v":1,"msg":{"type":"goodbye","from":{"name":"a","vsn":1}}}"#,
            br#"{"v":2,"msg":{"type":"shout"}}"#,
            br#"{"v":2,"msg":{"type":"transfer_ack","from":{"name":"a","vsn":1},"to":{"name":"b","vsn":1},"id":1,"transfer":{"kind":"part","part":0,"parts":1,"data":{"clock":1,"entries":[{"topic":"t","conn":1,"key":"u","seq":5,"meta":{"phx_ref":"x"}}]}}}}"#,
            // Numbers out of range: clocks that would overflow, parts out of order.
            br#"{"v":2,"msg":{"type":"heartbeat","from":{"name":"a","vsn":1},"clock":1,"delta":{"start":18446744073709551615,"ops":[{"op":"leave","topic":"t","conn":1,"key":"u"}]}}}"#,
            br#"{"v":2,"msg":{"type":"heartbeat","from":{"name":"a","vsn":1},"clock":18446744073709551615}}"#,
            br#"{"v":2,"msg":{"type":"transfer_ack","from":{"name":"a","vsn":1},"to":{"name":"b","vsn":1},"id":1,"transfer":{"kind":"part","part":3,"parts":3,"data":{"clock":1,"entries":[]}}}}"#,
            br#"{"v":2,"msg":{"type":"transfer_req","from":{"name":"a","vsn":1},"to":{"name":"b","vsn":1},"id":1,"have":18446744073709551615}}"#,
        ] {
            assert!(matches!(Gossip::decode(bad), Err(PresenceError::Wire(_))));
        }
    }

    #[test]
    fn a_restart_with_the_clock_set_back_is_accepted_once_the_old_one_is_gone() {
        let (mut old, mut b) = (t("a", 1_000), t("b", 1));
        old.track("t", 1, "ghost", m("1"));
        b.handle(hb(&mut old), 0);
        let mut skewed = t("a", 10);
        skewed.track("t", 1, "fresh", m("2"));
        // While the old incarnation is up, a lower one is a late message: ignored.
        let (d, replies) = b.handle(hb(&mut skewed), 10);
        assert!(d.is_empty() && replies.is_empty());
        // Once the old one is down, the lower incarnation is taken, after it
        // answered a request (proof that it is alive, not a late message).
        assert!(b.tick(600)["t"].leaves.contains_key("ghost"));
        let (d, replies) = b.handle(hb(&mut skewed), 700);
        assert!(d.is_empty(), "{d:?}");
        let (_, acks) = skewed.handle(replies[0].clone(), 700);
        let mut joined = BTreeMap::new();
        for ack in acks {
            joined.extend(b.handle(ack, 700).0);
        }
        assert!(joined["t"].joins.contains_key("fresh"));
        assert_eq!(
            b.replicas(),
            vec![(Replica::new("a", 10), ReplicaStatus::Up)]
        );
        // After a goodbye, any other incarnation is taken at once.
        b.handle(skewed.goodbye(), 800);
        let mut again = t("a", 5);
        let (_, replies) = b.handle(again.hello(), 810);
        let req = replies
            .iter()
            .find(|r| matches!(r, Gossip::TransferReq { .. }))
            .expect("a request for a proof of life");
        for ack in again.handle(req.clone(), 810).1 {
            b.handle(ack, 810);
        }
        assert_eq!(
            b.replicas(),
            vec![(Replica::new("a", 5), ReplicaStatus::Up)]
        );
    }

    #[test]
    fn a_late_heartbeat_of_a_dead_node_does_not_bring_its_users_back() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "u1", m("1"));
        b.handle(hb(&mut a), 0);
        let late = hb(&mut a);
        assert!(b.tick(600)["t"].leaves.contains_key("u1"));
        // a is dead: its heartbeat arrives late; nobody answers the request.
        let (d, replies) = b.handle(late.clone(), 610);
        assert!(d.is_empty() && b.list("t").is_empty());
        assert_eq!(replies.len(), 1, "one request");
        // More late copies do not ask again while the request is in flight.
        let (_, replies) = b.handle(late, 620);
        assert!(replies.is_empty(), "at most one transfer in flight");
        let d = b.tick(610 + 600);
        assert!(d.is_empty(), "never shown, so no second leave");
        assert_eq!(b.replicas()[0].1, ReplicaStatus::Down);
    }

    #[test]
    fn a_hello_with_clocks_is_answered_with_a_delta() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        for i in 0..3 {
            a.track("t", i, &format!("u{i}"), m(&i.to_string()));
        }
        let (_, replies) = a.handle(b.hello(), 0);
        for r in replies {
            if r.recipient() == Some(b.replica()) && matches!(r, Gossip::TransferAck { .. }) {
                b.handle(r, 0);
            }
        }
        assert_eq!(b.list("t").len(), 3);
        a.track("t", 9, "u9", m("9"));
        // b reconnects: its hello says it holds a's ops up to 3.
        let (_, replies) = a.handle(b.hello(), 10);
        let acks: Vec<_> = replies
            .into_iter()
            .filter(|r| matches!(r, Gossip::TransferAck { .. }))
            .collect();
        assert!(
            matches!(&acks[..], [Gossip::TransferAck { transfer: Transfer::Delta { delta }, .. }] if delta.start == 3 && delta.ops.len() == 1),
            "{acks:?}"
        );
        let (d, _) = b.handle(acks[0].clone(), 10);
        assert!(d["t"].joins.contains_key("u9"));
    }

    #[test]
    fn big_heartbeats_are_cut_into_bounded_messages_applied_in_order() {
        let config = TrackerConfig {
            max_delta_ops: 100,
            ..cfg()
        };
        let mut a = Tracker::new(Replica::new("a", 1), config).unwrap();
        let mut b = t("b", 1);
        for i in 0..40 {
            a.track("t", i, &format!("user-{i}"), m(&format!("ref-{i}")));
        }
        let hbs = a.heartbeat();
        assert!(hbs.len() > 1);
        let mut joins = 0;
        for h in hbs {
            assert!(h.encode().len() <= 1024);
            let (d, r) = b.handle(h, 0);
            assert!(r.is_empty(), "no gap: {r:?}");
            joins += d.get("t").map_or(0, |d| d.joins.len());
        }
        assert_eq!(joins, 40);
        assert_eq!(b.list("t"), a.list("t"));
    }

    #[test]
    fn two_live_processes_with_one_name_never_mix_their_entries() {
        let (mut low, mut high, mut b) = (t("a", 1), t("a", 2), t("b", 1));
        low.track("t", 1, "low", m("1"));
        high.track("t", 1, "high", m("2"));
        let shown = |b: &Tracker| b.list("t").into_keys().collect::<Vec<_>>();
        let mut seen = BTreeSet::new();
        for round in 0..20u64 {
            let now = round * 100;
            for g in [low.heartbeat(), high.heartbeat()].concat() {
                let (_, replies) = b.handle(g, now);
                for r in replies {
                    // Each process answers what is addressed to it.
                    for p in [&mut low, &mut high] {
                        for ack in p.handle(r.clone(), now).1 {
                            if ack.recipient() == Some(b.replica()) {
                                b.handle(ack, now);
                            }
                        }
                    }
                }
                let keys = shown(&b);
                assert!(keys.len() <= 1, "never both at once: {keys:?}");
                if seen.contains("high") {
                    assert_eq!(keys, ["high"], "once the higher one showed, it stays");
                }
                seen.extend(keys);
            }
        }
        assert!(seen.contains("high"), "the higher incarnation wins");
    }

    #[test]
    fn a_restarted_node_gets_the_state_at_once_while_it_proves_alive() {
        let (mut a, mut b) = (t("a", 1), t("b", 1));
        a.track("t", 1, "old", m("1"));
        b.track("t", 1, "bee", m("2"));
        b.handle(hb(&mut a), 0);
        let mut a2 = t("a", 2);
        let (d, replies) = b.handle(a2.hello(), 10);
        assert!(d.is_empty(), "the old one stays until the new one answers");
        assert!(replies
            .iter()
            .any(|r| matches!(r, Gossip::TransferReq { to, .. } if to == a2.replica())));
        let mut got = BTreeMap::new();
        for r in &replies {
            if let Gossip::TransferAck { to, .. } = r {
                assert_eq!(to, a2.replica());
                got.extend(a2.handle(r.clone(), 10).0);
            }
        }
        assert!(got["t"].joins.contains_key("bee"), "{got:?}");
    }
}
