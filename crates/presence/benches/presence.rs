//! Presence costs: track + untrack, `presence_state` encoding of a 10 000-key
//! topic, and merging a 1 000-entry delta into a remote tracker.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use phx_presence::{ConnId, Meta, PresenceState, RefGen, Replica, Tracker, TrackerConfig};
use serde_json::json;

fn presence(c: &mut Criterion) {
    let mut refs = RefGen::new(1);
    let mut state = PresenceState::new();
    for i in 0..1_000u64 {
        state
            .track(
                "room:big",
                &format!("user{i}"),
                ConnId(i),
                json!({"online_at": i}),
                refs.next(i),
            )
            .unwrap();
    }
    let mut n = 1_000_000u64;
    c.bench_function("track + untrack (topic with 1 000 keys)", |b| {
        b.iter(|| {
            n += 1;
            let d = state
                .track(
                    "room:big",
                    "visitor",
                    ConnId(n),
                    json!({"online_at": n}),
                    refs.next(n),
                )
                .unwrap();
            black_box(d);
            black_box(state.untrack_all(ConnId(n)));
        })
    });

    let mut big = PresenceState::new();
    for i in 0..10_000u64 {
        big.track(
            "room:10k",
            &format!("user{i}"),
            ConnId(i),
            json!({"online_at": 1_795_490_017_014u64 + i, "device": "web"}),
            refs.next(i),
        )
        .unwrap();
    }
    c.bench_function("presence_state of a 10 000-key topic (list + JSON)", |b| {
        b.iter(|| serde_json::to_vec(&big.list(black_box("room:10k"))).unwrap())
    });

    c.bench_function("merge a 1 000-entry delta into a remote tracker", |b| {
        b.iter_batched(
            || {
                let mut a = Tracker::new(Replica::new("a", 1), TrackerConfig::default()).unwrap();
                for i in 0..1_000u64 {
                    a.track(
                        "room:1",
                        i,
                        &format!("u{i}"),
                        Meta::new(format!("r{i}"), json!({"online_at": i})),
                    );
                }
                let b = Tracker::new(Replica::new("b", 1), TrackerConfig::default()).unwrap();
                (a.heartbeat(), b)
            },
            |(hbs, mut b)| {
                for hb in hbs {
                    black_box(b.handle(hb, 0));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, presence);
criterion_main!(benches);
