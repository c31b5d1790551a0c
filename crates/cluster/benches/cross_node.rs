//! Cross-node broadcast throughput and latency: two nodes, one real
//! `redis-server` (started here on a free port, stopped at the end).
//!
//! Run: `cargo bench -p phx-cluster --bench cross_node`. Prints one line per
//! figure; the README's table takes them from here.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use phx_cluster::{ClusterError, Event, LinkState, Node, NodeConfig};
use tokio::sync::mpsc;

const THROUGHPUT_MSGS: u64 = 50_000;
const LATENCY_MSGS: u64 = 2_000;

fn start(redis: &support::Redis, name: &str) -> (Node, mpsc::Receiver<Event>) {
    let mut config = NodeConfig::new(redis.url(), name);
    config.tracker = support::fast(100, 1_000);
    Node::start(config).expect("node starts")
}

/// A broadcast payload of about 100 bytes carrying a number (nanoseconds since `base`).
fn payload(n: u128) -> Bytes {
    Bytes::from(format!(
        "{{\"body\":\"the quick brown fox jumps over the lazy dog, twice over\",\"t\":{n:>20}}}"
    ))
}

fn stamp(payload: &[u8]) -> u128 {
    let text = std::str::from_utf8(payload).unwrap_or("");
    let digits = text.rsplit(':').next().unwrap_or("").trim_end_matches('}');
    digits.trim().parse().unwrap_or(0)
}

async fn publish(node: &Node, payload: Bytes) {
    loop {
        match node.publish("room:bench", "msg", payload.clone()) {
            Ok(()) => return,
            Err(ClusterError::QueueFull) => tokio::task::yield_now().await,
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

async fn next_broadcast(rx: &mut mpsc::Receiver<Event>) -> Bytes {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Event::Broadcast(b))) => return b.payload,
            Ok(Some(Event::Presence { .. })) => {}
            Ok(None) | Err(_) => panic!("broadcasts stopped arriving"),
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let redis = support::Redis::start();
        let (a, _a_events) = start(&redis, "a");
        let (b, mut b_events) = start(&redis, "b");
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.stats().link.state != LinkState::Connected
            || b.stats().link.state != LinkState::Connected
        {
            assert!(Instant::now() < deadline, "nodes did not connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Throughput: a publishes as fast as its queue takes them; b receives all.
        let start = Instant::now();
        let receiver = tokio::spawn(async move {
            for _ in 0..THROUGHPUT_MSGS {
                next_broadcast(&mut b_events).await;
            }
            (start.elapsed(), b_events)
        });
        for n in 0..THROUGHPUT_MSGS {
            publish(&a, payload(u128::from(n))).await;
        }
        let (took, mut b_events) = receiver.await.expect("receiver");
        let rate = THROUGHPUT_MSGS as f64 / took.as_secs_f64();
        println!(
            "cross-node broadcast throughput: {THROUGHPUT_MSGS} msgs of ~100 B in {:.0} ms = {rate:.0} msgs/s",
            took.as_secs_f64() * 1e3
        );

        // Latency: one message every 500 µs; each carries its send time.
        let base = Instant::now();
        let receiver = tokio::spawn(async move {
            let mut lat = Vec::with_capacity(LATENCY_MSGS as usize);
            for _ in 0..LATENCY_MSGS {
                let p = next_broadcast(&mut b_events).await;
                let sent = stamp(&p);
                lat.push(base.elapsed().as_nanos().saturating_sub(sent));
            }
            lat
        });
        let mut tick = tokio::time::interval(Duration::from_micros(500));
        for _ in 0..LATENCY_MSGS {
            tick.tick().await;
            publish(&a, payload(base.elapsed().as_nanos())).await;
        }
        let mut lat = receiver.await.expect("receiver");
        lat.sort_unstable();
        let pct = |p: f64| {
            let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
            lat[i] as f64 / 1e3
        };
        println!(
            "cross-node broadcast latency ({LATENCY_MSGS} msgs at 2 000/s): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        let stats = b.stats();
        println!(
            "receiver: {} received, {} lost, {} bad frames",
            stats.broadcasts_received, stats.broadcasts_lost, stats.bad_frames
        );
    });
}
