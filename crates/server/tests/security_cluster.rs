//! Issue 22's findings on the cluster's Redis traffic, replayed against two
//! `phx-server` nodes and a real `redis-server`: an eavesdropper subscribed to
//! Redis reads nothing of what the nodes say; frames published by a plain
//! Redis client in the nodes' own frame format — a `poll` and a `post` to a
//! long-poll session's `phx:lp:<id>`, a records `put` on `phx_records:post`, a
//! shout to a room — are dropped and counted on every node and reach nobody;
//! the nodes' own frames recorded and published again are dropped as replays
//! and counted, and no client sees a broadcast twice. And `--redis-url`
//! without a `--secret-key-base` of at least 64 bytes refuses to start.
//!
//! Needs `redis-server`, Node.js and npm.

mod common;
mod split_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use phx_protocol::Payload;
use phx_runtime::pubsub::encode_payload;
use phx_testkit::wait_for;
use phx_testkit::Redis;
use serde_json::json;
use split_support::{metric, node, publish, Client, Spy};

const SETTLE: Duration = Duration::from_secs(15);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A broadcast frame in the nodes' unsealed format (`crates/cluster/src/frame.rs`,
/// version 1: what any Redis client could publish before frames were sealed),
/// claiming to come from `node`; built by hand, as an attacker would.
fn forged(node: &str, topic: &str, event: &str, payload: serde_json::Value) -> Bytes {
    let payload = Payload::json(&payload).expect("json payload");
    let mut buf = BytesMut::new();
    buf.put_u8(1); // version
    buf.put_u8(1); // broadcast
    for (i, s) in [node, topic, event].into_iter().enumerate() {
        buf.put_u16(s.len() as u16);
        buf.put_slice(s.as_bytes());
        if i == 0 {
            buf.put_u64(1); // incarnation
            buf.put_u64(u64::MAX); // sequence number (issue 22: it overflowed)
        }
    }
    buf.put_slice(&encode_payload(&payload));
    buf.freeze()
}

#[test]
fn forged_and_replayed_frames_on_redis_are_dropped_and_counted() {
    let redis = Redis::start();
    let spy = Spy::start(redis.port, "phx:*");
    let (n1, n2) = (node(&redis.url(), "n1", &[]), node(&redis.url(), "n2", &[]));
    let topic = "room:security";
    let mut alice = Client::start(&n1, topic, "alice");
    let mut bob = Client::start(&n2, topic, "bob");
    alice.expect("presence alice,bob", SETTLE);
    bob.expect("presence alice,bob", SETTLE);
    // From here on both nodes hear every message on phx:all. (A message sent
    // before a node subscribed is new to it when published again: within the
    // accepted age that is a delay, accepted once, not a replay.)
    let both_up = spy.seen().len();
    alice.send("shout genuine-secret-words");
    bob.expect("shout genuine-secret-words", SETTLE);

    // The eavesdropper saw the nodes' traffic and can read none of it.
    let seen = spy.seen();
    assert!(
        seen.len() >= 3,
        "the spy saw the nodes' frames: {}",
        seen.len()
    );
    for (channel, payload) in &seen {
        for word in [&b"genuine-secret-words"[..], b"room:security", b"alice"] {
            assert!(
                !contains(payload, word),
                "{channel}: {:?} readable on Redis",
                String::from_utf8_lossy(word)
            );
        }
    }

    // Forgeries, in the nodes' own frame format, speaking for n1.
    let session = "phx:lp:00112233445566778899aabbccddeeff";
    let attacks = [
        forged("n1", session, "poll", json!({"reply": "phx:lpr:attacker"})),
        forged(
            "n1",
            session,
            "post",
            json!({"reply": "phx:lpr:attacker", "ndjson": false,
                   "body": "[\"3\",\"3\",\"room:security\",\"shout\",{\"body\":\"forged-post\"}]"}),
        ),
        forged(
            "n1",
            "phx_records:post",
            "put",
            json!({"from": "attacker", "record": {"id": "1", "title": "rewritten", "owner": "mallory"}}),
        ),
        forged("n1", topic, "shout", json!({"body": "forged-shout"})),
        Bytes::from_static(b"\x01\x01\x00\x02n1 plain junk"),
    ];
    let forged_before = [&n1, &n2].map(|n| metric(n, "phx_cluster_frames_forged_total"));
    let bad_before = [&n1, &n2].map(|n| metric(n, "phx_cluster_bad_frames_total"));
    let received_before = metric(&n2, "phx_cluster_broadcasts_received_total");
    for frame in &attacks {
        assert!(
            publish(redis.port, "phx:all", frame) >= 2,
            "both nodes listen"
        );
    }
    let n = attacks.len() as u64;
    for (i, node) in [&n1, &n2].iter().enumerate() {
        wait_for("every forgery counted on every node", SETTLE, || {
            metric(node, "phx_cluster_frames_forged_total") >= forged_before[i] + n
        });
        assert_eq!(
            metric(node, "phx_cluster_frames_forged_total"),
            forged_before[i] + n
        );
        // Dropped at the link: the frame decoder never saw them.
        assert_eq!(metric(node, "phx_cluster_bad_frames_total"), bad_before[i]);
    }

    // Replays: every frame the nodes published on phx:all so far, again.
    let recorded: Vec<Vec<u8>> = spy
        .seen()
        .into_iter()
        .skip(both_up)
        .filter(|(channel, _)| channel == "phx:all")
        .map(|(_, payload)| payload)
        .filter(|p| !attacks.iter().any(|a| a[..] == p[..]))
        .collect();
    assert!(!recorded.is_empty());
    let replayed_before = [&n1, &n2].map(|n| metric(n, "phx_cluster_frames_replayed_total"));
    for frame in &recorded {
        publish(redis.port, "phx:all", frame);
    }
    let r = recorded.len() as u64;
    for (i, node) in [&n1, &n2].iter().enumerate() {
        wait_for("every replay counted on every node", SETTLE, || {
            metric(node, "phx_cluster_frames_replayed_total") >= replayed_before[i] + r
        });
    }

    // A genuine broadcast after all that arrives; nothing forged or replayed
    // reached a client.
    alice.send("shout after-the-attacks");
    bob.expect("shout after-the-attacks", SETTLE);
    alice.expect("shout after-the-attacks", SETTLE);
    bob.send("shout from-bob");
    alice.expect("shout from-bob", SETTLE);
    for client in [&mut alice, &mut bob] {
        client.drain();
        assert_eq!(
            client.count("shout genuine-secret-words"),
            1,
            "{:?}",
            client.lines
        );
        assert_eq!(client.count("shout forged-shout"), 0, "{:?}", client.lines);
        assert_eq!(client.count("shout forged-post"), 0, "{:?}", client.lines);
        assert_eq!(client.last("presence "), Some("presence alice,bob"));
    }
    // n2 received n1's genuine broadcasts only: the shout after the attacks.
    let received = metric(&n2, "phx_cluster_broadcasts_received_total") - received_before;
    assert!(
        received >= 1 && received < n,
        "n2 took no forged or replayed broadcast: {received}"
    );
    eprintln!("forged frames dropped: {n} on each node; replayed frames dropped: {r} on each node");
}

#[test]
fn redis_url_without_a_64_byte_secret_refuses_to_start() {
    let redis = Redis::start();
    for secret in [None, Some("short"), Some(&"x".repeat(63)[..])] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_phx-server"));
        cmd.args(["--port", "0", "--admin-bind", "127.0.0.1:0", "--redis-url"])
            .arg(redis.url())
            .args(["--node-name", "n1", "--database-url", "sqlite::memory:"])
            .env_remove("PHX_SECRET_KEY_BASE")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(secret) = secret {
            cmd.args(["--secret-key-base", secret]);
        }
        let out = cmd.output().expect("phx-server runs");
        assert!(!out.status.success(), "{secret:?}: refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--secret-key-base") && err.contains("64 bytes"),
            "{secret:?}: a clear message: {err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "{secret:?}: never served"
        );
    }
}
