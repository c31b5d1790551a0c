//! A simulation of the cluster's presence traffic, in one process and without
//! Redis: five trackers, 100 000 presences (20 000 per node on 1 000 topics),
//! every message encoded as the frame a node would publish and decoded by each
//! receiver, delivered in order. It reports, for the README's sizing section:
//!
//! - the wire cost of an op and of an entry (which sets the delta-or-state
//!   threshold: a delta is sent when it has no more ops than the state has
//!   entries);
//! - the largest message sent;
//! - for a node that starts into the running cluster, a node that restarts,
//!   and every node reconnecting after Redis restarted: the bytes each node
//!   publishes until every node lists exactly what the owners track, and the
//!   processing time to get there (encode, decode and merge, one core).
//!
//! Run it with `cargo run --release -p phx-cluster --example sim`.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use phx_cluster::Frame;
use phx_presence::{Delta, Gossip, Meta, Op, Replica, Tracker, TrackerConfig};
use serde_json::json;

const NODES: usize = 5;
const PER_NODE: u64 = 20_000;
const TOPICS: u64 = 1_000;

fn meta(node: usize, i: u64, vsn: u64) -> Meta {
    Meta::new(
        format!("F{node}{vsn:06}{i:010}"),
        json!({"device": "browser", "online_at": 1_700_000_000_000u64 + i, "name": format!("user number {i}")}),
    )
}

fn track_all(t: &mut Tracker, node: usize, vsn: u64) {
    for i in 0..PER_NODE {
        t.track(
            &format!("room:{}", i % TOPICS),
            i,
            &format!("user-{node}-{i}"),
            meta(node, i, vsn),
        );
    }
}

struct Sim {
    nodes: Vec<Tracker>,
    /// (sender, bytes of the frame).
    wire: VecDeque<(usize, Bytes)>,
    sent_bytes: Vec<u64>,
    sent_msgs: Vec<u64>,
    largest: usize,
    now: u64,
    /// Nodes in the cluster (the others neither send nor receive).
    joined: Vec<bool>,
    /// Time spent handling messages (encode, decode, merge).
    busy: std::time::Duration,
}

impl Sim {
    fn send(&mut self, from: usize, gossip: Gossip) {
        let frame = Frame::Gossip {
            from: self.nodes[from].replica().clone(),
            gossip: Bytes::from(gossip.encode()),
        };
        let bytes = frame.encode().expect("encodes");
        self.largest = self.largest.max(bytes.len());
        self.sent_bytes[from] += bytes.len() as u64;
        self.sent_msgs[from] += 1;
        self.wire.push_back((from, bytes));
    }

    /// Delivers everything on the wire (and what it causes), in order.
    fn run(&mut self) {
        let started = Instant::now();
        while let Some((from, bytes)) = self.wire.pop_front() {
            let Frame::Gossip { gossip, .. } = Frame::decode(bytes).expect("decodes") else {
                continue;
            };
            let msg = Gossip::decode(&gossip).expect("decodes");
            let to = msg.recipient().map(|r| r.name.clone());
            for dest in 0..NODES {
                if dest == from || !self.joined[dest] {
                    continue;
                }
                if let Some(name) = &to {
                    if &self.nodes[dest].replica().name != name {
                        continue;
                    }
                }
                let (_, replies) = self.nodes[dest].handle(msg.clone(), self.now);
                for r in replies {
                    self.send(dest, r);
                }
            }
        }
        self.busy += started.elapsed();
    }

    fn heartbeats(&mut self) {
        self.now += 1_500;
        for n in 0..NODES {
            if !self.joined[n] {
                continue;
            }
            for hb in self.nodes[n].heartbeat() {
                self.send(n, hb);
            }
        }
        self.run();
    }

    fn converged(&self) -> bool {
        let all = |t: &Tracker| -> BTreeSet<(String, String)> {
            (0..TOPICS)
                .flat_map(|k| {
                    t.list(&format!("room:{k}"))
                        .into_iter()
                        .flat_map(|(key, e)| {
                            e.metas.into_iter().map(move |m| (key.clone(), m.phx_ref))
                        })
                })
                .collect()
        };
        let first = all(&self.nodes[0]);
        first.len() == NODES * PER_NODE as usize && self.nodes[1..].iter().all(|t| all(t) == first)
    }

    /// Runs heartbeat rounds until every node lists everything; reports.
    fn converge(&mut self, what: &str) {
        let mut rounds = 0;
        self.busy = std::time::Duration::ZERO;
        self.run();
        while !self.converged() {
            rounds += 1;
            assert!(rounds < 20, "{what}: no convergence");
            self.heartbeats();
        }
        let took = self.busy;
        println!("\n{what}: converged after {rounds} heartbeat round(s), {took:.2?} of processing");
        for n in 0..NODES {
            println!(
                "  node {n} sent {:>10} bytes in {:>5} messages",
                self.sent_bytes[n], self.sent_msgs[n]
            );
        }
        println!("  largest message so far: {} bytes", self.largest);
        self.sent_bytes = vec![0; NODES];
        self.sent_msgs = vec![0; NODES];
    }
}

fn main() {
    let config = TrackerConfig::default();
    // The cost of an op and of an entry on the wire.
    let mut probe = Tracker::new(Replica::new("probe", 1), config).expect("config");
    track_all(&mut probe, 0, 1);
    let ops: Vec<Op> = (0..1_000u64)
        .map(|i| Op::Join {
            topic: format!("room:{}", i % TOPICS),
            conn: i,
            key: format!("user-0-{i}"),
            meta: meta(0, i, 1),
        })
        .collect();
    let op_bytes = serde_json::to_vec(&Delta { start: 0, ops })
        .expect("json")
        .len() as f64
        / 1_000.0;
    let state = probe.local().chunks(usize::MAX);
    let entry_bytes = serde_json::to_vec(&state[0]).expect("json").len() as f64 / PER_NODE as f64;
    let leave_bytes = serde_json::to_vec(&Op::Leave {
        topic: "room:1".into(),
        conn: 1,
        key: "user-0-1".into(),
    })
    .expect("json")
    .len();
    let idle = {
        let mut t =
            Tracker::new(Replica::new("phx@web-1", 1_700_000_000_000_000), config).expect("config");
        let hb = t.heartbeat().remove(0);
        Frame::Gossip {
            from: t.replica().clone(),
            gossip: Bytes::from(hb.encode()),
        }
        .encode()
        .expect("encodes")
        .len()
    };
    println!("wire cost: join op {op_bytes:.0} bytes, leave op {leave_bytes} bytes, state entry {entry_bytes:.0} bytes, idle heartbeat {idle} bytes");
    println!(
        "delta-or-state threshold: ops / entries = {:.2} bytes ratio per item, so a delta is sent while ops <= entries",
        op_bytes / entry_bytes
    );

    let mut sim = Sim {
        nodes: (0..NODES)
            .map(|n| Tracker::new(Replica::new(format!("node-{n}"), 1), config).expect("config"))
            .collect(),
        wire: VecDeque::new(),
        sent_bytes: vec![0; NODES],
        sent_msgs: vec![0; NODES],
        largest: 0,
        now: 0,
        joined: vec![true; NODES],
        busy: std::time::Duration::ZERO,
    };
    sim.joined[NODES - 1] = false;
    // Four nodes run and know each other; each tracks its 20 000.
    for n in 0..NODES {
        track_all(&mut sim.nodes[n], n, 1);
    }
    for n in 0..NODES - 1 {
        let hello = sim.nodes[n].hello();
        sim.send(n, hello);
    }
    sim.run();
    // The fifth node's first hello: what it costs to join a running cluster.
    sim.sent_bytes = vec![0; NODES];
    sim.sent_msgs = vec![0; NODES];
    sim.joined[NODES - 1] = true;
    let hello = sim.nodes[NODES - 1].hello();
    sim.send(NODES - 1, hello);
    sim.converge("a node joins (80 000 presences elsewhere, 20 000 its own)");

    // Node 4 restarts: a new incarnation whose clients come back.
    let mut fresh =
        Tracker::new(Replica::new(format!("node-{}", NODES - 1), 2), config).expect("config");
    track_all(&mut fresh, NODES - 1, 2);
    sim.nodes[NODES - 1] = fresh;
    let hello = sim.nodes[NODES - 1].hello();
    sim.send(NODES - 1, hello);
    sim.converge("a node restarts (new incarnation, its 20 000 clients back)");

    // Redis restarts: every node reconnects and says hello with its clocks.
    for n in 0..NODES {
        let hello = sim.nodes[n].hello();
        sim.send(n, hello);
    }
    sim.converge("Redis restarts (every node says hello with its clocks)");

    // Churn: 1 % of the presences change (leave and join again) between two heartbeats.
    // One quiet heartbeat round first, so that the next one carries only the churn
    // (no round has run since the start: the transfers above needed none).
    sim.heartbeats();
    sim.sent_bytes = vec![0; NODES];
    sim.sent_msgs = vec![0; NODES];
    for n in 0..NODES {
        for i in (0..PER_NODE).step_by(100) {
            let topic = format!("room:{}", i % TOPICS);
            let key = format!("user-{n}-{i}");
            sim.nodes[n].untrack(&topic, i, &key);
            sim.nodes[n].track(&topic, i, &key, meta(n, i, 3));
        }
    }
    sim.converge("1 % churn (200 leaves and 200 joins per node) in one heartbeat");
}
