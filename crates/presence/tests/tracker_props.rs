//! Three replicas exchange gossip over a network that reorders, duplicates and
//! loses messages. Whatever happens, once they heal they all list the same
//! presences — exactly what the owners track — and no replica ever shows an
//! untracked entry again.

use std::collections::{BTreeSet, HashMap};

use phx_presence::{Gossip, Meta, Replica, Tracker, TrackerConfig};
use proptest::prelude::*;

const TOPICS: [&str; 2] = ["t1", "t2"];

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
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..3usize, 0..4u64, 0..3u8, 0..2usize).prop_map(|(node, conn, key, topic)| {
            Action::Track {
                node,
                conn,
                key,
                topic,
            }
        }),
        (0..3usize, 0..4u64).prop_map(|(node, conn)| Action::UntrackConn { node, conn }),
        (0..3usize, 0..4u64, 0..3u8, 0..2usize).prop_map(|(node, conn, key, topic)| {
            Action::Update {
                node,
                conn,
                key,
                topic,
            }
        }),
        (0..3usize).prop_map(|node| Action::Heartbeat { node }),
        (0..3usize, any::<usize>(), any::<bool>()).prop_map(|(dest, pick, keep_copy)| {
            Action::Deliver {
                dest,
                pick,
                keep_copy,
            }
        }),
        (0..3usize, any::<usize>()).prop_map(|(dest, pick)| Action::Drop { dest, pick }),
    ]
}

struct Net {
    nodes: Vec<Tracker>,
    queues: Vec<Vec<Gossip>>,
    gone: Vec<BTreeSet<String>>,
    refs: u64,
}

fn index_of(nodes: &[Tracker], r: &Replica) -> Option<usize> {
    nodes.iter().position(|n| n.replica() == r)
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

impl Net {
    fn new() -> Net {
        let cfg = TrackerConfig::default();
        Net {
            nodes: (0..3)
                .map(|i| Tracker::new(Replica::new(format!("n{i}"), 1), cfg).unwrap())
                .collect(),
            queues: vec![Vec::new(); 3],
            gone: vec![BTreeSet::new(); 3],
            refs: 0,
        }
    }

    fn meta(&mut self) -> Meta {
        self.refs += 1;
        Meta::new(format!("ref{:013}", self.refs), serde_json::json!({}))
    }

    fn broadcast(&mut self, from: usize, msg: Gossip) {
        for dest in 0..3 {
            if dest != from {
                self.queues[dest].push(msg.clone());
            }
        }
    }

    /// Delivers one message, routing replies; checks that nothing gone comes back.
    fn deliver(&mut self, dest: usize, msg: Gossip) -> Result<(), TestCaseError> {
        let before = visible(&self.nodes[dest]);
        let (_, replies) = self.nodes[dest].handle(msg, 0);
        let after = visible(&self.nodes[dest]);
        for r in &after {
            prop_assert!(
                !self.gone[dest].contains(r),
                "node {dest} shows {r} again after it left"
            );
        }
        self.gone[dest].extend(before.difference(&after).cloned());
        for reply in replies {
            let target = match &reply {
                Gossip::TransferReq { to, .. } => index_of(&self.nodes, to),
                Gossip::TransferAck { .. } => None,
                _ => None,
            };
            match (target, &reply) {
                (Some(t), _) => self.queues[t].push(reply),
                (None, Gossip::TransferAck { .. }) => {}
                _ => {}
            }
        }
        Ok(())
    }

    /// Transfer requests are answered straight away to the asker.
    fn run_queue(&mut self, dest: usize, pick: usize, keep: bool) -> Result<(), TestCaseError> {
        if self.queues[dest].is_empty() {
            return Ok(());
        }
        let i = pick % self.queues[dest].len();
        let msg = if keep {
            self.queues[dest][i].clone()
        } else {
            self.queues[dest].remove(i)
        };
        if let Gossip::TransferReq { from, .. } = &msg {
            let asker = index_of(&self.nodes, from);
            let (_, acks) = self.nodes[dest].handle(msg.clone(), 0);
            if let Some(asker) = asker {
                for ack in acks {
                    self.queues[asker].push(ack);
                }
            }
            return Ok(());
        }
        self.deliver(dest, msg)
    }

    /// Heals the network: everyone heartbeats, every message is delivered in order.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..6 {
            for n in 0..3 {
                let hb = self.nodes[n].heartbeat();
                self.broadcast(n, hb);
            }
            for _ in 0..50 {
                let mut any = false;
                for dest in 0..3 {
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
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn replicas_converge_and_untracked_entries_never_return(actions in prop::collection::vec(action(), 0..120)) {
        let mut net = Net::new();
        let mut tracked: HashMap<(usize, u64, u8, usize), ()> = HashMap::new();
        for a in actions {
            match a {
                Action::Track { node, conn, key, topic } => {
                    if tracked.insert((node, conn, key, topic), ()).is_none() {
                        let meta = net.meta();
                        net.nodes[node].track(TOPICS[topic], conn, &format!("k{key}"), meta);
                    }
                }
                Action::UntrackConn { node, conn } => {
                    tracked.retain(|(n, c, _, _), _| !(*n == node && *c == conn));
                    net.nodes[node].untrack_conn(conn);
                }
                Action::Update { node, conn, key, topic } => {
                    let meta = net.meta();
                    let _ = net.nodes[node].update(TOPICS[topic], conn, &format!("k{key}"), meta);
                }
                Action::Heartbeat { node } => {
                    let hb = net.nodes[node].heartbeat();
                    net.broadcast(node, hb);
                }
                Action::Deliver { dest, pick, keep_copy } => net.run_queue(dest, pick, keep_copy)?,
                Action::Drop { dest, pick } => {
                    if !net.queues[dest].is_empty() {
                        let i = pick % net.queues[dest].len();
                        net.queues[dest].remove(i);
                    }
                }
            }
        }
        // Old duplicates may still be in flight; deliver them in any order first.
        for dest in 0..3 {
            while !net.queues[dest].is_empty() {
                let last = net.queues[dest].len() - 1;
                net.run_queue(dest, last, false)?;
            }
        }
        net.heal()?;
        for topic in TOPICS {
            let a = net.nodes[0].list(topic);
            prop_assert_eq!(&a, &net.nodes[1].list(topic), "n0 and n1 differ on {}", topic);
            prop_assert_eq!(&a, &net.nodes[2].list(topic), "n0 and n2 differ on {}", topic);
            let listed: usize = a.values().map(|e| e.metas.len()).sum();
            let owned: usize = net.nodes.iter().map(|n| n.dirty_count(topic)).sum::<usize>();
            // Each node's dirty count includes its copies of the others: 3 copies of everything.
            prop_assert_eq!(listed * 3, owned, "every owned entry is listed once everywhere");
        }
    }
}
