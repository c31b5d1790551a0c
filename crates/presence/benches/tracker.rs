//! The replicated tracker's hot paths on a cluster-sized state: listing a topic
//! and cleaning up a connection must cost the topic's (or connection's) size,
//! not the size of everything tracked; merging deltas and full transfers.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use phx_presence::{Gossip, Meta, Replica, Tracker, TrackerConfig};
use serde_json::json;

/// Three nodes; each tracks 100 users on each of 100 topics (30 000 entries in
/// all), and every node holds complete copies of the others.
fn cluster() -> Vec<Tracker> {
    let mut nodes: Vec<Tracker> = ["a", "b", "c"]
        .iter()
        .map(|n| Tracker::new(Replica::new(*n, 1), TrackerConfig::default()).unwrap())
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for topic in 0..100u64 {
            for user in 0..100u64 {
                let conn = user;
                let meta = Meta::new(format!("{i}-{topic}-{user}"), json!({"online_at": user}));
                node.track(
                    &format!("room:{topic}"),
                    conn,
                    &format!("u{i}-{user}"),
                    meta,
                );
            }
        }
    }
    let hellos: Vec<Gossip> = nodes.iter().map(Tracker::hello).collect();
    for (i, hello) in hellos.into_iter().enumerate() {
        let mut acks = Vec::new();
        for (j, node) in nodes.iter_mut().enumerate() {
            if i != j {
                acks.extend(node.handle(hello.clone(), 0).1);
            }
        }
        for ack in acks {
            if let Gossip::TransferAck { .. } = ack {
                nodes[i].handle(ack, 0);
            }
        }
    }
    nodes
}

fn tracker(c: &mut Criterion) {
    let nodes = cluster();
    assert_eq!(nodes[0].list("room:7").len(), 300);
    c.bench_function(
        "tracker list of a 300-entry topic among 30 000 entries",
        |b| b.iter(|| black_box(nodes[0].list(black_box("room:7")))),
    );
    c.bench_function("tracker untrack_conn of a connection on 100 topics", |b| {
        b.iter_batched_ref(
            || nodes[0].clone(),
            |t| black_box(t.untrack_conn(black_box(42))),
            BatchSize::LargeInput,
        )
    });
    c.bench_function(
        "tracker full transfer of 10 000 entries in 60 KiB parts (encode + decode + merge)",
        |b| {
            let mut from = nodes[1].clone();
            let acks = from
                .handle(
                    Gossip::TransferReq {
                        from: Replica::new("z", 1),
                        to: Replica::new("b", 1),
                        id: 1,
                        have: 0,
                    },
                    0,
                )
                .1;
            let z = Tracker::new(Replica::new("z", 1), TrackerConfig::default()).unwrap();
            b.iter_batched_ref(
                || {
                    let bytes: Vec<Vec<u8>> = acks.iter().map(Gossip::encode).collect();
                    (z.clone(), bytes)
                },
                |(z, parts)| {
                    for bytes in parts.iter() {
                        black_box(z.handle(Gossip::decode(bytes).unwrap(), 0));
                    }
                },
                BatchSize::LargeInput,
            )
        },
    );
}

criterion_group!(benches, tracker);
criterion_main!(benches);
