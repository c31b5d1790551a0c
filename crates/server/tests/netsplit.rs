//! Net splits: one `phx-server` node cut off from a real `redis-server` by a
//! loopback TCP proxy while the other keeps its direct link, for longer than
//! the down period, in the two ways real networks fail:
//!
//! - the proxy resets every connection and every new one (the link fails);
//! - the proxy keeps the connections open but relays nothing, holding the
//!   bytes, and delivers them when the stall ends (only the link's pings and
//!   deadlines can tell).
//!
//! Expected, with stock phoenix.js clients on both sides: each side drops the
//! other's presences within the down period plus one heartbeat; the cut-off
//! node's `/metrics` shows its link down; local channels keep working and
//! joins and leaves go on on both sides; after the split every client's
//! presence list (each node's mirror) is exact again and broadcasts cross
//! again, exactly once, within 10 s. The measured detection times and time to
//! heal are printed (`cargo test -- --nocapture`).
//!
//! Needs `redis-server`, Node.js and npm.

mod common;
mod split_support;

use std::time::{Duration, Instant};

use phx_testkit::wait_for;
use phx_testkit::Redis;
use split_support::{metric, metrics, node, Client, Mode, Proxy};

/// The cluster's timing in these tests (short, so that splits are quick).
const DOWN_MS: u64 = 3_000;
const HEARTBEAT_MS: u64 = 300;
const PING_MS: u64 = 300;
const DEADLINE_MS: u64 = 1_000;

/// The bound on noticing a split: the down period plus one heartbeat, then
/// as much again for a loaded machine and the client hearing of it.
const DETECT: Duration = Duration::from_millis(2 * (DOWN_MS + HEARTBEAT_MS));
/// The bound on healing, from the issue.
const HEAL: Duration = Duration::from_secs(10);
/// For everything else.
const SETTLE: Duration = Duration::from_secs(15);

fn flags() -> Vec<String> {
    [
        ("--down-period-ms", DOWN_MS),
        ("--heartbeat-ms", HEARTBEAT_MS),
        ("--redis-ping-ms", PING_MS),
        ("--redis-deadline-ms", DEADLINE_MS),
    ]
    .iter()
    .flat_map(|(flag, v)| [flag.to_string(), v.to_string()])
    .collect()
}

fn split(mode: Mode) {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port);
    let flags = flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = node(&redis.url(), "n1", &flags);
    let n2 = node(&proxy.url(), "n2", &flags);
    let topic = format!("room:split-{mode:?}");
    let mut alice = Client::start(&n1, &topic, "alice");
    let mut bob = Client::start(&n2, &topic, "bob");
    alice.expect("presence alice,bob", SETTLE);
    bob.expect("presence alice,bob", SETTLE);
    alice.send("shout before");
    bob.expect("shout before", SETTLE);

    // The split.
    let cut = Instant::now();
    proxy.set(mode);
    // The cut-off node's /metrics says its link is down (a stall only once a
    // ping or a connection attempt misses its deadline).
    let link_down = wait_for("n2's /metrics shows its Redis link down", DETECT, || {
        metrics(&n2).contains("phx_cluster_redis_up 0")
    });
    // Each side drops the other's presences (lines are stamped on arrival).
    let n1_saw = alice.expect("presence alice", DETECT) - cut;
    let n2_saw = bob.expect("presence bob", DETECT) - cut;
    eprintln!(
        "{mode:?} split: n2's link down in /metrics within {link_down:?}; n1 (direct) dropped \
         n2's presences after {n1_saw:?}, n2 (cut off) dropped n1's after {n2_saw:?} \
         (down period {DOWN_MS} ms, heartbeat {HEARTBEAT_MS} ms, ping {PING_MS} ms, deadline {DEADLINE_MS} ms)"
    );
    assert!(metrics(&n1).contains("phx_cluster_redis_up 1"));
    if mode == Mode::Stall {
        assert!(
            metric(&n2, "phx_cluster_redis_stalls_total") >= 1,
            "the stall was noticed by a deadline: {}",
            metrics(&n2)
        );
    }

    // Local channels keep working on both sides; joins and leaves go on.
    let mut carol = Client::start(&n2, &topic, "carol");
    bob.expect("presence bob,carol", SETTLE);
    carol.expect("presence bob,carol", SETTLE);
    carol.send("shout local-n2");
    bob.expect("shout local-n2", SETTLE);
    let mut erin = Client::start(&n2, &topic, "erin");
    bob.expect("presence bob,carol,erin", SETTLE);
    erin.send("quit");
    bob.expect("presence bob,carol", SETTLE);

    let mut dave = Client::start(&n1, &topic, "dave");
    alice.expect("presence alice,dave", SETTLE);
    dave.expect("presence alice,dave", SETTLE);
    alice.send("shout local-n1");
    dave.expect("shout local-n1", SETTLE);
    let mut frank = Client::start(&n1, &topic, "frank");
    alice.expect("presence alice,dave,frank", SETTLE);
    frank.send("quit");
    alice.expect("presence alice,dave", SETTLE);

    // The split lasts more than twice the down period.
    let hold = Duration::from_millis(2 * DOWN_MS + 1_000);
    if let Some(left) = hold.checked_sub(cut.elapsed()) {
        std::thread::sleep(left);
    }
    let lasted = cut.elapsed();

    // The split ends: every mirror exact again within 10 s.
    let heal = Instant::now();
    proxy.set(Mode::Pass);
    let all = "presence alice,bob,carol,dave";
    let mut healed = Duration::ZERO;
    for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
        healed = healed.max(client.expect(all, HEAL) - heal);
    }
    eprintln!(
        "{mode:?} split of {lasted:?}: every presence mirror exact {healed:?} after it ended"
    );

    // Broadcasts cross again, exactly once, both ways.
    let mut markers = Vec::new();
    for i in 0..5 {
        alice.send(&format!("shout after-n1-{i}"));
        bob.send(&format!("shout after-n2-{i}"));
        markers.push(format!("shout after-n1-{i}"));
        markers.push(format!("shout after-n2-{i}"));
    }
    for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
        client.expect_all(&markers, HEAL);
    }
    let crossed = heal.elapsed();
    // Last markers from each side: whatever was to arrive twice has arrived.
    alice.send("shout end-n1");
    bob.send("shout end-n2");
    let ends = ["shout end-n1".to_owned(), "shout end-n2".to_owned()];
    for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
        client.expect_all(&ends, SETTLE);
        client.drain();
        for m in markers.iter().chain(&ends) {
            assert_eq!(
                client.count(m),
                1,
                "{}: {m:?} exactly once: {:?}",
                client.name,
                client.lines
            );
        }
        assert_eq!(
            client.last("presence "),
            Some(all),
            "{}: the presence list stays exact",
            client.name
        );
    }
    for client in [&alice, &bob] {
        assert_eq!(client.count("shout before"), 1, "{}", client.name);
    }
    eprintln!("{mode:?} split: broadcasts crossed both ways {crossed:?} after it ended");

    // Both nodes see each other up, links up, nothing forged.
    for n in [&n1, &n2] {
        wait_for("both links up and the other node up", SETTLE, || {
            let text = metrics(n);
            text.contains("phx_cluster_redis_up 1")
                && text.contains("phx_cluster_nodes{status=\"up\"} 1")
        });
        assert_eq!(metric(n, "phx_cluster_frames_forged_total"), 0);
    }
    drop((erin, frank));
}

#[test]
fn a_node_whose_redis_connections_are_reset_and_refused() {
    split(Mode::Reset);
}

#[test]
fn a_node_whose_redis_connections_stall_holding_their_bytes() {
    split(Mode::Stall);
}
