//! Test support: nodes whose events are collected for assertions, on the
//! throwaway `redis-server` and the bounded waits of `phx-testkit`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use phx_cluster::{Event, Node, NodeConfig};
use phx_presence::TrackerConfig;
use tokio::task::JoinHandle;

#[allow(unused_imports)] // the cross-node bench includes this file and waits for nothing
pub use phx_testkit::{wait_until, ClusterTiming, Redis};

/// The windows of a cluster running with `tracker`'s periods.
pub fn timing(tracker: &TrackerConfig) -> ClusterTiming {
    ClusterTiming::from_ms(tracker.broadcast_period_ms, tracker.down_period_ms)
}

/// Fast timing for tests where the behaviour allows it.
pub fn fast(period_ms: u64, down_ms: u64) -> TrackerConfig {
    TrackerConfig {
        broadcast_period_ms: period_ms,
        down_period_ms: down_ms,
        permdown_period_ms: 600_000,
        ..TrackerConfig::default()
    }
}

/// A node whose events are collected.
pub struct TestNode {
    pub node: Node,
    pub events: Arc<Mutex<Vec<Event>>>,
    drain: JoinHandle<()>,
}

impl TestNode {
    pub fn start(redis: &Redis, name: &str, tracker: TrackerConfig) -> TestNode {
        TestNode::start_as(redis, name, None, tracker)
    }

    /// Starts one with a given incarnation number (`None`: the wall clock).
    pub fn start_as(
        redis: &Redis,
        name: &str,
        incarnation: Option<u64>,
        tracker: TrackerConfig,
    ) -> TestNode {
        let mut config = NodeConfig::new(redis.url(), name);
        config.tracker = tracker;
        config.incarnation = incarnation;
        let (node, mut rx) = Node::start(config).expect("node starts");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let drain = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                sink.lock().expect("events lock").push(e);
            }
        });
        TestNode {
            node,
            events,
            drain,
        }
    }

    /// The keys listed on `topic`, sorted.
    pub fn keys(&self, topic: &str) -> Vec<String> {
        self.node.list(topic).into_keys().collect()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// Stops it like a crash (no goodbye).
    pub fn kill(self) {
        self.drain.abort();
        drop(self.node);
    }

    /// Stops it gracefully; whether the goodbye went out.
    pub async fn shutdown(self) -> bool {
        self.drain.abort();
        self.node.shutdown().await
    }
}
