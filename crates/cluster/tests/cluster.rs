//! Nodes in one process, clustered through a real `redis-server` started by the
//! test: presence and broadcasts across nodes, crash, graceful leave, restart
//! under the same name, and Redis restarting under them.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use phx_cluster::{Event, LinkState, RemoteBroadcast};
use phx_presence::{Meta, TrackerConfig};
use serde_json::json;
use support::{fast, timing, wait_until, Redis, TestNode};

fn meta(r: &str) -> Meta {
    Meta::new(r, json!({"device": "test"}))
}

fn broadcasts(node: &TestNode) -> Vec<RemoteBroadcast> {
    node.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Broadcast(b) => Some(b),
            Event::Presence { .. } => None,
        })
        .collect()
}

fn left(node: &TestNode, topic: &str, key: &str) -> bool {
    node.events().iter().any(|e| {
        matches!(e, Event::Presence { topic: t, diff } if t == topic && diff.leaves.contains_key(key))
    })
}

async fn connected(nodes: &[&TestNode]) {
    wait_until(
        "every node connected to Redis",
        Duration::from_secs(10),
        || {
            nodes
                .iter()
                .all(|n| n.node.stats().link.state == LinkState::Connected)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_others_presences_and_broadcasts_in_order() {
    let redis = Redis::start();
    let cfg = fast(100, 1_000);
    let nodes: Vec<TestNode> = ["a", "b", "c"]
        .iter()
        .map(|n| TestNode::start(&redis, n, cfg))
        .collect();
    connected(&nodes.iter().collect::<Vec<_>>()).await;
    for (i, n) in nodes.iter().enumerate() {
        let diff = n
            .node
            .track("room:1", 1, &format!("user-{i}"), meta(&format!("r{i}")));
        assert!(
            diff.joins.contains_key(&format!("user-{i}")),
            "local diff at once"
        );
    }
    let all = vec!["user-0", "user-1", "user-2"];
    wait_until(
        "every node lists all three users",
        Duration::from_secs(10),
        || nodes.iter().all(|n| n.keys("room:1") == all),
    )
    .await;
    // Each node got the others' joins as presence diffs, and not its own.
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..3 {
            let joined = n.events().iter().any(|e| {
                matches!(e, Event::Presence { topic, diff } if topic == "room:1" && diff.joins.contains_key(&format!("user-{j}")))
            });
            assert_eq!(
                joined,
                i != j,
                "node {i} saw user-{j}'s join as a remote diff"
            );
        }
    }
    // Broadcasts: every node publishes 200; each other node gets them all, in order.
    for seq in 0..200u32 {
        for (i, n) in nodes.iter().enumerate() {
            let payload = Bytes::from(format!("{{\"from\":{i},\"n\":{seq}}}"));
            n.node.publish("room:1", "msg", payload).expect("queued");
        }
    }
    wait_until(
        "400 broadcasts at each node",
        Duration::from_secs(10),
        || nodes.iter().all(|n| broadcasts(n).len() >= 400),
    )
    .await;
    for (i, n) in nodes.iter().enumerate() {
        let got = broadcasts(n);
        assert_eq!(got.len(), 400, "node {i}: no duplicates, no own echoes");
        let mut per_publisher: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for b in &got {
            assert_ne!(&b.from, n.node.replica(), "own echo delivered");
            assert_eq!((b.topic.as_str(), b.event.as_str()), ("room:1", "msg"));
            per_publisher
                .entry(b.from.name.clone())
                .or_default()
                .push(b.seq);
        }
        for (publisher, seqs) in per_publisher {
            assert_eq!(
                seqs,
                (1..=200).collect::<Vec<u64>>(),
                "{publisher}'s order at node {i}"
            );
        }
        let stats = n.node.stats();
        assert_eq!(stats.broadcasts_lost, 0);
        assert_eq!(stats.bad_frames, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_disappears_within_down_period_plus_one_heartbeat() {
    let redis = Redis::start();
    let (period, down) = (200, 1_000);
    let a = TestNode::start(&redis, "a", fast(period, down));
    let b = TestNode::start(&redis, "b", fast(period, down));
    connected(&[&a, &b]).await;
    b.node.track("room:1", 1, "bob", meta("rb"));
    wait_until("a sees bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["bob"]
    })
    .await;
    let killed = Instant::now();
    b.kill();
    wait_until("a drops bob", Duration::from_secs(10), || {
        a.keys("room:1").is_empty()
    })
    .await;
    let took = killed.elapsed();
    // The spec's bound (down_period + one heartbeat), with the documented margin.
    let bound = timing(&fast(period, down)).crash_bound();
    assert!(took <= bound, "bob gone after {took:?}, bound {bound:?}");
    assert!(
        left(&a, "room:1", "bob"),
        "a presence_diff with bob's leave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_removes_presences_at_once() {
    let redis = Redis::start();
    // Default timing: only the goodbye can explain a quick leave.
    let a = TestNode::start(&redis, "a", TrackerConfig::default());
    let b = TestNode::start(&redis, "b", TrackerConfig::default());
    connected(&[&a, &b]).await;
    b.node.track("room:1", 1, "bob", meta("rb"));
    wait_until("a sees bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["bob"]
    })
    .await;
    let left_at = Instant::now();
    assert!(b.shutdown().await, "Redis took the goodbye");
    let window = timing(&TrackerConfig::default()).before_detection();
    wait_until("a drops bob at once", window, || {
        a.keys("room:1").is_empty()
    })
    .await;
    assert!(left_at.elapsed() < window, "sooner than down detection");
    assert!(left(&a, "room:1", "bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_the_same_name_replaces_its_old_entries_before_down_detection() {
    let redis = Redis::start();
    let a = TestNode::start(&redis, "a", TrackerConfig::default());
    let b = TestNode::start(&redis, "b", TrackerConfig::default());
    connected(&[&a, &b]).await;
    b.node.track("room:1", 1, "old-bob", meta("r-old"));
    wait_until("a sees old-bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["old-bob"]
    })
    .await;
    b.kill();
    let restarted = Instant::now();
    let b2 = TestNode::start(&redis, "b", TrackerConfig::default());
    b2.node.track("room:1", 1, "new-bob", meta("r-new"));
    // Sooner than down detection could have taken the old one away.
    let window = timing(&TrackerConfig::default()).before_detection();
    let took = wait_until("a shows only new-bob", window, || {
        a.keys("room:1") == ["new-bob"]
    })
    .await;
    assert!(restarted.elapsed() < window, "{took:?}");
    assert!(left(&a, "room:1", "old-bob"));
    let replicas = a.node.stats().replicas;
    assert_eq!(
        replicas.len(),
        1,
        "the old incarnation is forgotten: {replicas:?}"
    );
    assert_eq!(&replicas[0].0, b2.node.replica());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_presence_converges_without_ghosts_and_broadcasts_flow() {
    let mut redis = Redis::start();
    let cfg = fast(100, 500);
    let a = TestNode::start(&redis, "a", cfg);
    let b = TestNode::start(&redis, "b", cfg);
    let c = TestNode::start(&redis, "c", cfg);
    connected(&[&a, &b, &c]).await;
    a.node.track("room:1", 1, "ann", meta("ra"));
    b.node.track("room:1", 1, "ben", meta("rb1"));
    b.node.track("room:1", 2, "bea", meta("rb2"));
    c.node.track("room:1", 1, "cat", meta("rc"));
    let everyone = ["ann", "bea", "ben", "cat"];
    wait_until("all four everywhere", Duration::from_secs(10), || {
        [&a, &b, &c].iter().all(|n| n.keys("room:1") == everyone)
    })
    .await;

    redis.kill();
    wait_until(
        "the nodes notice Redis is gone",
        Duration::from_secs(10),
        || {
            [&a, &b, &c]
                .iter()
                .all(|n| n.node.stats().link.state == LinkState::Connecting)
        },
    )
    .await;
    // While Redis is away: local operations keep working...
    let diff = a.node.track("room:1", 2, "amy", meta("ra2"));
    assert!(diff.joins.contains_key("amy"));
    assert!(
        !b.node.untrack_conn(2).is_empty(),
        "bea leaves while Redis is away"
    );
    assert!(a.keys("room:1").contains(&"amy".to_owned()));
    let _ = a.node.publish("room:1", "lost", Bytes::from_static(b"{}"));
    // ...c dies unseen, and the others' copies go down after down_period.
    c.kill();
    wait_until(
        "remote presences hidden while cut off",
        Duration::from_secs(10),
        || a.keys("room:1") == ["amy", "ann"] && b.keys("room:1") == ["ben"],
    )
    .await;

    redis.restart();
    connected(&[&a, &b]).await;
    let exact = ["amy", "ann", "ben"];
    wait_until(
        "presence exact again, no ghosts",
        Duration::from_secs(10),
        || a.keys("room:1") == exact && b.keys("room:1") == exact,
    )
    .await;
    // It stays exact: c (dead) never comes back, bea (untracked) neither. The
    // wait is the point (nothing may change over it), so it is a sleep.
    tokio::time::sleep(timing(&cfg).steady()).await;
    assert_eq!(a.keys("room:1"), exact);
    assert_eq!(b.keys("room:1"), exact);
    for n in [&a, &b] {
        let link = n.node.stats().link;
        assert!(link.reconnects >= 1 && link.errors >= 1, "{link:?}");
    }
    // New broadcasts flow.
    a.node
        .publish("room:1", "after", Bytes::from_static(b"{\"n\":1}"))
        .expect("queued");
    wait_until("b gets the new broadcast", Duration::from_secs(10), || {
        broadcasts(&b).iter().any(|x| x.event == "after")
    })
    .await;
    assert!(
        !broadcasts(&b).iter().any(|x| x.event == "lost"),
        "at most once: dropped while away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_works_locally_when_redis_is_unreachable_from_the_start() {
    // A port with nothing listening: bind it, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = phx_cluster::NodeConfig::new(format!("redis://127.0.0.1:{port}/"), "alone");
    let (node, _events) = phx_cluster::Node::start(config).expect("starts without Redis");
    assert!(node
        .track("room:1", 1, "ann", meta("r1"))
        .joins
        .contains_key("ann"));
    assert_eq!(node.list("room:1").len(), 1);
    assert!(node.update("room:1", 1, "ann", meta("r2")).is_ok());
    assert!(node.update("room:1", 9, "nobody", meta("r3")).is_err());
    let _ = node.publish("room:1", "ev", Bytes::from_static(b"{}"));
    wait_until(
        "connection attempts counted",
        Duration::from_secs(5),
        || node.stats().link.errors >= 2,
    )
    .await;
    assert_eq!(node.stats().link.state, LinkState::Connecting);
    assert!(!node.shutdown().await, "no goodbye without Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_cluster_channel_is_counted_and_ignored() {
    let redis = Redis::start();
    let a = TestNode::start(&redis, "a", fast(100, 1_000));
    let b = TestNode::start(&redis, "b", fast(100, 1_000));
    connected(&[&a, &b]).await;
    let config = phx_cluster::TransportConfig::new(redis.url(), vec![]);
    let (raw, mut raw_events) = phx_cluster::Transport::start(config).expect("raw link");
    assert_eq!(
        raw_events.recv().await,
        Some(phx_cluster::TransportEvent::Connected)
    );
    // Not a frame; a frame of an unknown version; a gossip frame whose JSON is bad.
    let bad_gossip = phx_cluster::Frame::Gossip {
        from: phx_presence::Replica::new("mallory", 1),
        gossip: Bytes::from_static(b"{\"v\":1,\"msg\":{\"type\":\"heartbeat\"}}"),
    }
    .encode()
    .expect("encodes");
    for junk in [
        Bytes::from_static(b"\xff\x00junk"),
        Bytes::from_static(b"\x07\x00"),
        bad_gossip,
    ] {
        assert!(
            raw.publish_confirmed("phx:all", junk).await,
            "Redis took it"
        );
    }
    wait_until(
        "both nodes counted 3 bad frames",
        Duration::from_secs(5),
        || a.node.stats().bad_frames == 3 && b.node.stats().bad_frames == 3,
    )
    .await;
    // Still working.
    b.node.track("room:1", 1, "bob", meta("rb"));
    wait_until("a sees bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["bob"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_goodbye_cluster_traffic_flows_until_shutdown() {
    let redis = Redis::start();
    let a = TestNode::start(&redis, "a", TrackerConfig::default());
    let b = TestNode::start(&redis, "b", TrackerConfig::default());
    connected(&[&a, &b]).await;
    b.node.track("room:1", 1, "bob", meta("rb"));
    wait_until("a sees bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["bob"]
    })
    .await;
    assert!(b.node.leave().await, "Redis took the goodbye");
    assert!(b.node.leave().await, "a second leave reports the first");
    let window = timing(&TrackerConfig::default()).before_detection();
    wait_until("a drops bob at once", window, || {
        a.keys("room:1").is_empty()
    })
    .await;
    // Draining: broadcasts still cross in both directions.
    b.node
        .publish("room:1", "from-b", Bytes::from_static(b"{}"))
        .expect("queued");
    a.node
        .publish("room:1", "from-a", Bytes::from_static(b"{}"))
        .expect("queued");
    wait_until(
        "broadcasts cross after the goodbye",
        Duration::from_secs(10),
        || {
            broadcasts(&a).iter().any(|x| x.event == "from-b")
                && broadcasts(&b).iter().any(|x| x.event == "from-a")
        },
    )
    .await;
    assert!(b.shutdown().await, "shutdown reports the goodbye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_name_are_logged_and_counted_as_a_clash() {
    let redis = Redis::start();
    let cfg = fast(100, 1_000);
    let first = TestNode::start(&redis, "web", cfg);
    let second = TestNode::start(&redis, "web", cfg);
    let other = TestNode::start(&redis, "other", cfg);
    connected(&[&first, &second, &other]).await;
    wait_until("both count the clash", Duration::from_secs(10), || {
        first.node.stats().name_clashes > 0 && second.node.stats().name_clashes > 0
    })
    .await;
    assert_eq!(other.node.stats().name_clashes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_presence_hook_is_contained_counted_and_the_pump_goes_on() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let redis = Redis::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let builder = phx_runtime::Endpoint::builder().presence_fetch(move |topic, _entries| {
        if topic == "room:boom" {
            panic!("the application's fetch hook fails");
        }
        seen.fetch_add(1, Ordering::Relaxed);
    });
    let mut config = phx_cluster::NodeConfig::new(redis.url(), "a");
    config.tracker = fast(100, 1_000);
    let (cluster, _endpoint) = phx_cluster::Cluster::start(config, builder).expect("starts");
    let b = TestNode::start(&redis, "b", fast(100, 1_000));
    connected(&[&b]).await;
    b.node.track("room:boom", 1, "bob", meta("r1"));
    wait_until("the panic is counted", Duration::from_secs(10), || {
        cluster.stats().hook_panics >= 1
    })
    .await;
    b.node.track("room:ok", 2, "ben", meta("r2"));
    wait_until(
        "later events still reach the endpoint",
        Duration::from_secs(10),
        || calls.load(Ordering::Relaxed) >= 1,
    )
    .await;
    assert!(cluster.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_diffs_the_consumer_has_no_room_for_are_merged_not_dropped() {
    let redis = Redis::start();
    let mut config = phx_cluster::NodeConfig::new(redis.url(), "a");
    config.tracker = fast(100, 1_000);
    config.events = 2;
    let (a, mut events) = phx_cluster::Node::start(config).expect("starts");
    let b = TestNode::start(&redis, "b", fast(100, 1_000));
    connected(&[&b]).await;
    wait_until("a connected", Duration::from_secs(10), || {
        a.stats().link.state == LinkState::Connected
    })
    .await;
    // Many changes on several topics while nobody reads a's events.
    for i in 0..200u64 {
        let topic = format!("room:{}", i % 5);
        b.node
            .track(&topic, i, &format!("u{i}"), meta(&format!("r{i}")));
        if i % 3 == 0 {
            b.node.untrack(&topic, i, &format!("u{i}"));
        }
    }
    wait_until("a lists b's presences", Duration::from_secs(10), || {
        (0..5).all(|t| a.list(&format!("room:{t}")) == b.node.list(&format!("room:{t}")))
    })
    .await;
    // (The diffs are handed over just after the tracker changed: wait for them.)
    wait_until(
        "the consumer was too slow: diffs merged",
        Duration::from_secs(10),
        || a.stats().events_merged > 0,
    )
    .await;
    // Now read everything: applied in order, the diffs rebuild every topic.
    let mut mirror: BTreeMap<String, std::collections::BTreeSet<(String, String)>> =
        BTreeMap::new();
    let exact = |m: &BTreeMap<String, std::collections::BTreeSet<(String, String)>>| {
        (0..5).all(|t| {
            let topic = format!("room:{t}");
            let want: std::collections::BTreeSet<(String, String)> = a
                .list(&topic)
                .into_iter()
                .flat_map(|(k, e)| e.metas.into_iter().map(move |m| (k.clone(), m.phx_ref)))
                .collect();
            m.get(&topic).cloned().unwrap_or_default() == want
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exact(&mirror) {
        assert!(
            Instant::now() < deadline,
            "the merged diffs never rebuilt the topics"
        );
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        else {
            continue;
        };
        if let Event::Presence { topic, diff } = event {
            let set = mirror.entry(topic).or_default();
            for (k, e) in diff.joins {
                for m in e.metas {
                    set.insert((k.clone(), m.phx_ref));
                }
            }
            for (k, e) in diff.leaves {
                for m in e.metas {
                    set.remove(&(k.clone(), m.phx_ref));
                }
            }
        }
    }
    assert_eq!(a.stats().events_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_clock_set_back_is_taken_once_the_old_one_is_down() {
    let redis = Redis::start();
    let (period, down) = (100, 1_000);
    let a = TestNode::start(&redis, "a", fast(period, down));
    let b = TestNode::start_as(&redis, "b", Some(1_000_000), fast(period, down));
    connected(&[&a, &b]).await;
    b.node.track("room:1", 1, "old-bob", meta("r-old"));
    wait_until("a sees old-bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["old-bob"]
    })
    .await;
    b.kill();
    // The restarted process's incarnation is lower than the crashed one's.
    let b2 = TestNode::start_as(&redis, "b", Some(10), fast(period, down));
    b2.node.track("room:1", 1, "new-bob", meta("r-new"));
    // Taken once the old one is down (down_period), not after permdown (10 min here).
    wait_until("a shows only new-bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["new-bob"]
    })
    .await;
    assert!(left(&a, "room:1", "old-bob"));
    wait_until("b2 sees a's state", Duration::from_secs(10), || {
        b2.node
            .stats()
            .replicas
            .iter()
            .any(|(r, s)| r.name == "a" && *s == phx_presence::ReplicaStatus::Up)
    })
    .await;
    assert_eq!(
        a.node.stats().replicas,
        vec![(b2.node.replica().clone(), phx_presence::ReplicaStatus::Up)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_sequence_numbers_do_not_overflow() {
    let redis = Redis::start();
    let a = TestNode::start(&redis, "a", fast(100, 1_000));
    let b = TestNode::start(&redis, "b", fast(100, 1_000));
    connected(&[&a, &b]).await;
    let config = phx_cluster::TransportConfig::new(redis.url(), vec![]);
    let (raw, mut raw_events) = phx_cluster::Transport::start(config).expect("raw link");
    assert_eq!(
        raw_events.recv().await,
        Some(phx_cluster::TransportEvent::Connected)
    );
    for seq in [u64::MAX, u64::MAX, 1, u64::MAX - 1] {
        let frame = phx_cluster::Frame::Broadcast(RemoteBroadcast {
            from: phx_presence::Replica::new("mallory", 1),
            seq,
            topic: "room:1".into(),
            event: "forged".into(),
            payload: Bytes::from_static(b"{}"),
        })
        .encode()
        .expect("encodes");
        assert!(raw.publish_confirmed("phx:all", frame).await);
    }
    wait_until("the four arrive", Duration::from_secs(10), || {
        broadcasts(&a)
            .iter()
            .filter(|x| x.event == "forged")
            .count()
            == 4
    })
    .await;
    // The driver survived: presence still flows.
    b.node.track("room:1", 1, "bob", meta("rb"));
    wait_until("a sees bob", Duration::from_secs(10), || {
        a.keys("room:1") == ["bob"]
    })
    .await;
}
