//! Three replicas exchange gossip over a network that reorders, duplicates and
//! loses messages, while time passes (so replicas go down and come back) and
//! nodes restart under the same name. Every message goes through the wire
//! encoding. Whatever happens, once the network heals every node lists exactly
//! what the live owners track, and no node ever shows an entry again once it
//! learnt of its removal.

use std::collections::{BTreeMap, BTreeSet};

use phx_presence::{Gossip, Meta, Replica, Tracker, TrackerConfig};
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
        1 => (0..NODES).prop_map(|node| Action::Restart { node }),
        2 => (0..3_000u64).prop_map(|ms| Action::Wait { ms }),
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

fn config() -> TrackerConfig {
    TrackerConfig {
        max_delta_ops: 8,
        ..TrackerConfig::default()
    }
}

impl Net {
    fn new() -> Net {
        Net {
            nodes: (0..NODES)
                .map(|i| Tracker::new(Replica::new(format!("n{i}"), 1), config()).unwrap())
                .collect(),
            queues: vec![Vec::new(); NODES],
            gone: vec![BTreeSet::new(); NODES],
            model: BTreeMap::new(),
            refs: 0,
            now: 0,
        }
    }

    fn meta(&mut self) -> Meta {
        self.refs += 1;
        Meta::new(format!("ref{:013}", self.refs), serde_json::json!({}))
    }

    /// Sends a message: to its recipient when it has one, to every other node otherwise.
    fn send(&mut self, from: usize, msg: Gossip) {
        let bytes = msg.encode();
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
    }

    /// Checks that `dest` shows nothing whose removal it has applied.
    fn check(&self, dest: usize) -> Result<(), TestCaseError> {
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
        self.nodes[dest].tick(now);
        let (diffs, replies) = self.nodes[dest].handle(msg, now);
        // Leaves reported by a message are removals (or a restarted node's old
        // incarnation): unlike a replica going down, they never come back.
        for diff in diffs.values() {
            for entry in diff.leaves.values() {
                self.gone[dest].extend(entry.metas.iter().map(|m| m.phx_ref.clone()));
            }
        }
        self.check(dest)?;
        for reply in replies {
            self.send(dest, reply);
        }
        Ok(())
    }

    fn heartbeat(&mut self, node: usize) -> Result<(), TestCaseError> {
        let now = self.now;
        self.nodes[node].tick(now);
        self.check(node)?;
        let hb = self.nodes[node].heartbeat();
        self.send(node, hb);
        Ok(())
    }

    /// Heals the network: time moves on in small steps, everyone heartbeats and
    /// every message is delivered in order.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..6 {
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
        let mut net = Net::new();
        for a in actions {
            match a {
                Action::Track { node, conn, key, topic } => {
                    let meta = net.meta();
                    net.model.insert((node, topic, conn, key), meta.phx_ref.clone());
                    net.nodes[node].track(TOPICS[topic], conn, &format!("k{key}"), meta);
                }
                Action::UntrackConn { node, conn } => {
                    net.model.retain(|(n, _, c, _), _| !(*n == node && *c == conn));
                    net.nodes[node].untrack_conn(conn);
                }
                Action::Untrack { node, conn, key, topic } => {
                    net.model.remove(&(node, topic, conn, key));
                    net.nodes[node].untrack(TOPICS[topic], conn, &format!("k{key}"));
                }
                Action::Update { node, conn, key, topic } => {
                    let meta = net.meta();
                    let phx_ref = meta.phx_ref.clone();
                    let tracked = net.model.contains_key(&(node, topic, conn, key));
                    let res = net.nodes[node].update(TOPICS[topic], conn, &format!("k{key}"), meta);
                    prop_assert_eq!(res.is_ok(), tracked);
                    if tracked {
                        net.model.insert((node, topic, conn, key), phx_ref);
                    }
                }
                Action::Heartbeat { node } => net.heartbeat(node)?,
                Action::Deliver { dest, pick, keep_copy } => net.run_queue(dest, pick, keep_copy)?,
                Action::Drop { dest, pick } => {
                    if !net.queues[dest].is_empty() {
                        let i = pick % net.queues[dest].len();
                        net.queues[dest].remove(i);
                    }
                }
                Action::Restart { node } => {
                    let old = net.nodes[node].replica().clone();
                    let mut fresh = Tracker::new(Replica::new(old.name, old.vsn + 1), config()).unwrap();
                    net.model.retain(|(n, _, _, _), _| *n != node);
                    // Messages in flight to the old process are lost with it.
                    net.queues[node].clear();
                    net.gone[node].clear();
                    let hello = fresh.hello();
                    std::mem::swap(&mut net.nodes[node], &mut fresh);
                    net.send(node, hello);
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
            prop_assert_eq!(&visible(&net.nodes[n]), &expected, "node {} lists what the owners track", n);
        }
        for topic in TOPICS {
            let a = net.nodes[0].list(topic);
            for n in 1..NODES {
                prop_assert_eq!(&a, &net.nodes[n].list(topic), "n0 and n{} differ on {}", n, topic);
            }
        }
    }
}
