//! The cluster under stress, against a real `redis-server` whose pub/sub output
//! limit is lowered to 256 KB (a scaled-down model of the 32 MB default that
//! ~150 000 presences would reach): 3 000 presences on one node (about 520 KB
//! of state), a second node that joins, then Redis restarting under both. Each
//! time, the second node's mirror of the topic (its emitted presence diffs,
//! applied as a client applies `presence_diff`) must become exact within 10 s
//! and stay exact, with no reconnect loop (Redis closing a subscriber for an
//! oversized message would show as reconnects), and no message between nodes
//! over 64 KiB.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use phx_cluster::{Event, LinkState};
use phx_presence::Meta;
use phx_presence::TrackerConfig;
use serde_json::json;
use support::{fast, timing, wait_until, Redis, TestNode};

const TOPIC: &str = "room:big";
const PRESENCES: u64 = 3_000;

/// (key, phx_ref) pairs.
type Shown = BTreeSet<(String, String)>;

/// What `node`'s presence events say is on the topic.
fn mirror(node: &TestNode) -> Shown {
    let mut shown = Shown::new();
    for event in node.events() {
        if let Event::Presence { topic, diff } = event {
            if topic != TOPIC {
                continue;
            }
            for (key, entry) in diff.joins {
                for m in entry.metas {
                    shown.insert((key.clone(), m.phx_ref));
                }
            }
            for (key, entry) in diff.leaves {
                for m in entry.metas {
                    shown.remove(&(key.clone(), m.phx_ref));
                }
            }
        }
    }
    shown
}

fn listed(node: &TestNode) -> Shown {
    node.node
        .list(TOPIC)
        .into_iter()
        .flat_map(|(key, e)| e.metas.into_iter().map(move |m| (key.clone(), m.phx_ref)))
        .collect()
}

/// The tracker periods of these tests: fast, with a down period long enough
/// that a large state's transfer is not taken for a dead node.
fn config() -> TrackerConfig {
    fast(200, 2_000)
}

async fn exact_and_stays(a: &TestNode, b: &TestNode, what: &str) {
    let expected = listed(a);
    assert_eq!(expected.len(), PRESENCES as usize);
    let took = wait_until(what, Duration::from_secs(10), || {
        mirror(b) == expected && listed(b) == expected
    })
    .await;
    println!("{what}: exact after {took:?}");
    // It stays exact (no flapping, no reconnect loop taking it away) over the
    // steady window of the configuration, looked at every heartbeat.
    let t = timing(&config());
    let looks = (t.steady().as_millis() / t.heartbeat.as_millis()).max(1);
    for _ in 0..looks {
        tokio::time::sleep(t.heartbeat).await;
        assert!(mirror(b) == expected, "{what}: the mirror stays exact");
        assert!(listed(b) == expected, "{what}: the list stays exact");
    }
}

async fn connected(nodes: &[&TestNode]) {
    wait_until("connected to Redis", Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| n.node.stats().link.state == LinkState::Connected)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_state_reaches_a_joining_node_and_survives_a_redis_restart_under_a_256kb_pubsub_limit(
) {
    let mut redis = Redis::start_with(&["client-output-buffer-limit pubsub 256kb 128kb 5"]);
    let cfg = config();
    let a = TestNode::start(&redis, "a", cfg);
    connected(&[&a]).await;
    for i in 0..PRESENCES {
        let meta = Meta::new(
            format!("F{i:017}"),
            json!({"device": "browser", "online_at": 1_700_000_000_000u64 + i, "name": format!("user number {i}")}),
        );
        a.node.track(TOPIC, i, &format!("user-{i:05}"), meta);
    }
    // Let two of a's heartbeats carry its ops first (they go to nobody yet).
    tokio::time::sleep(2 * timing(&cfg).heartbeat).await;

    let b = TestNode::start(&redis, "b", cfg);
    connected(&[&b]).await;
    exact_and_stays(&a, &b, "the joining node").await;
    for n in [&a, &b] {
        let s = n.node.stats();
        assert_eq!(s.link.reconnects, 0, "no reconnect loop: {:?}", s.link);
        assert!(
            s.largest_gossip <= 64 * 1024,
            "largest message {} bytes",
            s.largest_gossip
        );
        assert_eq!(s.events_dropped, 0);
    }

    redis.restart();
    connected(&[&a, &b]).await;
    exact_and_stays(&a, &b, "after the Redis restart").await;
    for n in [&a, &b] {
        let s = n.node.stats();
        assert_eq!(s.link.reconnects, 1, "one reconnect, no loop: {:?}", s.link);
        assert!(
            s.largest_gossip <= 64 * 1024,
            "largest message {} bytes",
            s.largest_gossip
        );
        println!(
            "{}: largest message {} bytes, {} tracker messages sent",
            s.me.name, s.largest_gossip, s.gossip_sent
        );
    }
}
