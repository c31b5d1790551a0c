//! Three replicas exchange gossip over a network that reorders, duplicates and
//! loses messages, while time passes (so replicas go down, come back and are
//! forgotten) and nodes restart under the same name (with a later or an
//! earlier incarnation number, after a goodbye or a crash). Every message goes
//! through the wire encoding and stays within `max_message_bytes`. Whatever
//! happens:
//!
//! - the joins and leaves each node emits (local and remote), applied to a
//!   mirror as a Phoenix client applies `presence_diff`, always rebuild exactly
//!   what its `list()` shows;
//! - no node ever shows an entry again once it learnt of its removal;
//! - once the network heals every node lists exactly what the live owners track.

use std::collections::{BTreeMap, BTreeSet};

use phx_presence::{Gossip, Meta, PresenceDiff, Replica, Tracker, TrackerConfig};
use proptest::prelude::*;

const TOPICS: [&str; 2] = ["t1", "t2"];
const NODES: usize = 3;

#[derive(Debug, Clone)]
enum Action {
    Track {
        node: usize,
        conn: u64,
        key: u8,
        topic: usize,
    },
    UntrackConn {
        node: usize,
        conn: u64,
    },
    Untrack {
        node: usize,
        conn: u64,
        key: u8,
        topic: usize,
    },
    Update {
        node: usize,
        conn: u64,
        key: u8,
        topic: usize,
    },
    Heartbeat {
        node: usize,
    },
    Deliver {
        dest: usize,
        pick: usize,
        keep_copy: bool,
    },
    Drop {
        dest: usize,
        pick: usize,
    },
    Restart {
        node: usize,
        /// The new incarnation number is lower than every earlier one (a
        /// clock set back); otherwise higher.
        skewed: bool,
        /// Say goodbye first.
        goodbye: bool,
    },
    Wait {
        ms: u64,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let entry = (0..NODES, 0..4u64, 0..3u8, 0..TOPICS.len());
    prop_oneof![
        6 => entry.clone().prop_map(|(node, conn, key, topic)| Action::Track { node, conn, key, topic }),
        2 => (0..NODES, 0..4u64).prop_map(|(node, conn)| Action::UntrackConn { node, conn }),
        2 => entry.clone().prop_map(|(node, conn, key, topic)| Action::Untrack { node, conn, key, topic }),
        2 => entry.prop_map(|(node, conn, key, topic)| Action::Update { node, conn, key, topic }),
        5 => (0..NODES).prop_map(|node| Action::Heartbeat { node }),
        10 => (0..NODES, any::<usize>(), any::<bool>())
            .prop_map(|(dest, pick, keep_copy)| Action::Deliver { dest, pick, keep_copy }),
        3 => (0..NODES, any::<usize>()).prop_map(|(dest, pick)| Action::Drop { dest, pick }),
        2 => (0..NODES, any::<bool>(), any::<bool>())
            .prop_map(|(node, skewed, goodbye)| Action::Restart { node, skewed, goodbye }),
        2 => (0..700u64).prop_map(|ms| Action::Wait { ms }),
        1 => (0..3_000u64).prop_map(|ms| Action::Wait { ms }),
    ]
}

struct Net {
    nodes: Vec<Tracker>,
    /// Messages in flight to each node, as bytes on the wire.
    queues: Vec<Vec<Vec<u8>>>,
    /// Per node, the refs it was told were removed.
    gone: Vec<BTreeSet<String>>,
    /// What the live owners track: (node, topic, conn, key) → phx_ref.
    model: BTreeMap<(usize, usize, u64, u8), String>,
    refs: u64,
    now: u64,
    /// Per node, what its emitted diffs say is there: (topic, key, phx_ref).
    mirrors: Vec<BTreeSet<(String, String, String)>>,
    /// Incarnation numbers still unused above and below every used one.
    vsn_high: u64,
    vsn_low: u64,
    config: TrackerConfig,
    /// Whether "a removed entry never returns" is checked: not once a
    /// replica may be forgotten (permdown) while its old messages are still
    /// in flight, as its entries are then news again.
    ghosts_checked: bool,
}

/// What a node shows: (topic, key, phx_ref).
fn shown(t: &Tracker) -> BTreeSet<(String, String, String)> {
    TOPICS
        .iter()
        .flat_map(|topic| {
            t.list(topic).into_iter().flat_map(move |(key, e)| {
                e.metas
                    .into_iter()
                    .map(move |m| (topic.to_string(), key.clone(), m.phx_ref))
            })
        })
        .collect()
}

fn visible(t: &Tracker) -> BTreeSet<String> {
    TOPICS
        .iter()
        .flat_map(|topic| {
            t.list(topic)
                .into_values()
                .flat_map(|e| e.metas.into_iter().map(|m| m.phx_ref))
        })
        .collect()
}

const MAX_MESSAGE: usize = 1024;

/// Fast timing; `permdown` 2 s (reached by the waits) or 20 min (never).
fn config(permdown: bool) -> TrackerConfig {
    TrackerConfig {
        broadcast_period_ms: 100,
        down_period_ms: 500,
        permdown_period_ms: if permdown { 2_000 } else { 1_200_000 },
        max_delta_ops: 8,
        max_message_bytes: MAX_MESSAGE,
    }
}

impl Net {
    fn new(permdown: bool) -> Net {
        Net {
            config: config(permdown),
            ghosts_checked: !permdown,
            nodes: (0..NODES)
                .map(|i| {
                    Tracker::new(Replica::new(format!("n{i}"), 1_000), config(permdown)).unwrap()
                })
                .collect(),
            queues: vec![Vec::new(); NODES],
            gone: vec![BTreeSet::new(); NODES],
            model: BTreeMap::new(),
            refs: 0,
            now: 0,
            mirrors: vec![BTreeSet::new(); NODES],
            vsn_high: 1_001,
            vsn_low: 999,
        }
    }

    /// Applies diffs a node emitted to its mirror, as a client applies
    /// `presence_diff` (joins, then leaves); a join of something already there
    /// or a leave of something absent is a failure.
    fn emit<'a>(
        &mut self,
        node: usize,
        diffs: impl IntoIterator<Item = (&'a str, &'a PresenceDiff)>,
    ) -> Result<(), TestCaseError> {
        for (topic, diff) in diffs {
            for (key, entry) in &diff.joins {
                for m in &entry.metas {
                    let id = (topic.to_owned(), key.clone(), m.phx_ref.clone());
                    prop_assert!(
                        self.mirrors[node].insert(id.clone()),
                        "node {} joins {:?} twice",
                        node,
                        id
                    );
                }
            }
            for (key, entry) in &diff.leaves {
                for m in &entry.metas {
                    let id = (topic.to_owned(), key.clone(), m.phx_ref.clone());
                    prop_assert!(
                        self.mirrors[node].remove(&id),
                        "node {} leaves {:?} not there",
                        node,
                        id
                    );
                }
            }
        }
        let listed = shown(&self.nodes[node]);
        prop_assert_eq!(
            &self.mirrors[node],
            &listed,
            "node {}'s emitted diffs rebuild list()",
            node
        );
        Ok(())
    }

    fn tick(&mut self, node: usize) -> Result<(), TestCaseError> {
        let now = self.now;
        let diffs = self.nodes[node].tick(now);
        self.emit(node, diffs.iter().map(|(t, d)| (t.as_str(), d)))
    }

    fn meta(&mut self) -> Meta {
        self.refs += 1;
        Meta::new(format!("ref{:013}", self.refs), serde_json::json!({}))
    }

    /// Sends a message: to its recipient when it has one, to every other node otherwise.
    fn send(&mut self, from: usize, msg: Gossip) -> Result<(), TestCaseError> {
        let bytes = msg.encode();
        prop_assert!(
            bytes.len() <= MAX_MESSAGE,
            "a message of {} bytes: {:?}",
            bytes.len(),
            msg
        );
        match msg.recipient() {
            Some(to) => {
                if let Some(i) = self.nodes.iter().position(|n| n.replica().name == to.name) {
                    self.queues[i].push(bytes);
                }
            }
            None => {
                for dest in (0..NODES).filter(|d| *d != from) {
                    self.queues[dest].push(bytes.clone());
                }
            }
        }
        Ok(())
    }

    /// Checks that `dest` shows nothing whose removal it has applied.
    fn check(&self, dest: usize) -> Result<(), TestCaseError> {
        if !self.ghosts_checked {
            return Ok(());
        }
        for r in visible(&self.nodes[dest]) {
            prop_assert!(
                !self.gone[dest].contains(&r),
                "node {} shows {} again",
                dest,
                r
            );
        }
        Ok(())
    }

    fn run_queue(&mut self, dest: usize, pick: usize, keep: bool) -> Result<(), TestCaseError> {
        if self.queues[dest].is_empty() {
            return Ok(());
        }
        let i = pick % self.queues[dest].len();
        let bytes = if keep {
            self.queues[dest][i].clone()
        } else {
            self.queues[dest].remove(i)
        };
        let msg = Gossip::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let now = self.now;
        self.tick(dest)?;
        let (diffs, replies) = self.nodes[dest].handle(msg, now);
        self.emit(dest, diffs.iter().map(|(t, d)| (t.as_str(), d)))?;
        // Leaves reported by a message are removals (or a restarted node's old
        // incarnation): unlike a replica going down, they never come back.
        for diff in diffs.values() {
            for entry in diff.leaves.values() {
                self.gone[dest].extend(entry.metas.iter().map(|m| m.phx_ref.clone()));
            }
        }
        self.check(dest)?;
        for reply in replies {
            self.send(dest, reply)?;
        }
        Ok(())
    }

    fn heartbeat(&mut self, node: usize) -> Result<(), TestCaseError> {
        self.tick(node)?;
        self.check(node)?;
        for hb in self.nodes[node].heartbeat() {
            self.send(node, hb)?;
        }
        Ok(())
    }

    /// Heals the network: time moves on in small steps, everyone heartbeats and
    /// every message is delivered in order.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        // Long enough for a lost transfer to be asked again (down_period).
        for _ in 0..12 {
            self.now += 100;
            for n in 0..NODES {
                self.heartbeat(n)?;
            }
            for _ in 0..200 {
                let mut any = false;
                for dest in 0..NODES {
                    if !self.queues[dest].is_empty() {
                        any = true;
                        self.run_queue(dest, 0, false)?;
                    }
                }
                if !any {
                    break;
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn replicas_converge_and_removed_entries_never_return(actions in prop::collection::vec(action(), 0..150)) {
        run(Net::new(false), actions)?;
    }

    #[test]
    fn replicas_converge_when_replicas_are_forgotten(actions in prop::collection::vec(action(), 0..150)) {
        run(Net::new(true), actions)?;
    }
}

fn run(mut net: Net, actions: Vec<Action>) -> Result<(), TestCaseError> {
    {
        for a in actions {
            match a {
                Action::Track {
                    node,
                    conn,
                    key,
                    topic,
                } => {
                    let meta = net.meta();
                    net.model
                        .insert((node, topic, conn, key), meta.phx_ref.clone());
                    let d = net.nodes[node].track(TOPICS[topic], conn, &format!("k{key}"), meta);
                    net.emit(node, [(TOPICS[topic], &d)])?;
                }
                Action::UntrackConn { node, conn } => {
                    net.model
                        .retain(|(n, _, c, _), _| !(*n == node && *c == conn));
                    let diffs = net.nodes[node].untrack_conn(conn);
                    net.emit(node, diffs.iter().map(|(t, d)| (t.as_str(), d)))?;
                }
                Action::Untrack {
                    node,
                    conn,
                    key,
                    topic,
                } => {
                    net.model.remove(&(node, topic, conn, key));
                    let d = net.nodes[node].untrack(TOPICS[topic], conn, &format!("k{key}"));
                    net.emit(node, [(TOPICS[topic], &d)])?;
                }
                Action::Update {
                    node,
                    conn,
                    key,
                    topic,
                } => {
                    let meta = net.meta();
                    let phx_ref = meta.phx_ref.clone();
                    let tracked = net.model.contains_key(&(node, topic, conn, key));
                    let res = net.nodes[node].update(TOPICS[topic], conn, &format!("k{key}"), meta);
                    prop_assert_eq!(res.is_ok(), tracked);
                    if let Ok(d) = res {
                        net.model.insert((node, topic, conn, key), phx_ref);
                        net.emit(node, [(TOPICS[topic], &d)])?;
                    }
                }
                Action::Heartbeat { node } => net.heartbeat(node)?,
                Action::Deliver {
                    dest,
                    pick,
                    keep_copy,
                } => net.run_queue(dest, pick, keep_copy)?,
                Action::Drop { dest, pick } => {
                    if !net.queues[dest].is_empty() {
                        let i = pick % net.queues[dest].len();
                        net.queues[dest].remove(i);
                    }
                }
                Action::Restart {
                    node,
                    skewed,
                    goodbye,
                } => {
                    if goodbye {
                        let bye = net.nodes[node].goodbye();
                        prop_assert!(net.nodes[node].heartbeat().is_empty());
                        net.send(node, bye)?;
                    }
                    let vsn = if skewed {
                        net.vsn_low -= 1;
                        net.vsn_low + 1
                    } else {
                        net.vsn_high += 1;
                        net.vsn_high - 1
                    };
                    let name = net.nodes[node].replica().name.clone();
                    let mut fresh = Tracker::new(Replica::new(name, vsn), net.config).unwrap();
                    net.model.retain(|(n, _, _, _), _| *n != node);
                    // Messages in flight to the old process are lost with it.
                    net.queues[node].clear();
                    net.gone[node].clear();
                    net.mirrors[node].clear();
                    let hello = fresh.hello();
                    std::mem::swap(&mut net.nodes[node], &mut fresh);
                    net.send(node, hello)?;
                }
                Action::Wait { ms } => net.now += ms,
            }
        }
        // Old duplicates may still be in flight; deliver them last-first.
        for dest in 0..NODES {
            while !net.queues[dest].is_empty() {
                let last = net.queues[dest].len() - 1;
                net.run_queue(dest, last, false)?;
            }
        }
        net.heal()?;
        let expected: BTreeSet<String> = net.model.values().cloned().collect();
        for n in 0..NODES {
            prop_assert_eq!(
                &visible(&net.nodes[n]),
                &expected,
                "node {} lists what the owners track",
                n
            );
        }
        for topic in TOPICS {
            let a = net.nodes[0].list(topic);
            for n in 1..NODES {
                prop_assert_eq!(
                    &a,
                    &net.nodes[n].list(topic),
                    "n0 and n{} differ on {}",
                    n,
                    topic
                );
            }
        }
    }
    Ok(())
}
