//! The seams a cluster plugs into, without Redis: the PubSub [`Adapter`] (two
//! endpoints joined by an in-memory bus), remote presence diffs, and the
//! presence `fetch` hook, all checked over real sockets where a client sees them.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use phx_presence::PresenceDiff;
use phx_protocol::presence::Meta;
use phx_protocol::Broadcast;
use phx_runtime::pubsub::{Adapter, LocalPubSub, PublishFuture};
use phx_runtime::{Endpoint, RuntimeError};
use serde_json::{json, Value};
use support::{joined, PresenceRoom, WAIT};

/// What the adapters of one in-memory "cluster" share.
#[derive(Default)]
struct Bus {
    nodes: Mutex<Vec<LocalPubSub>>,
    hooks: Mutex<Vec<String>>,
}

/// Delivers every broadcast to every node of the bus, its own included (the
/// runtime must drop that echo).
struct BusAdapter {
    id: String,
    bus: Arc<Bus>,
    fail: bool,
}

impl Adapter for BusAdapter {
    fn node_id(&self) -> &str {
        &self.id
    }

    fn publish(&self, broadcast: Arc<Broadcast>) -> PublishFuture {
        if self.fail {
            return Box::pin(async { Err(RuntimeError::adapter("link down")) });
        }
        let nodes = self.bus.nodes.lock().expect("bus").clone();
        for node in nodes {
            node.deliver(&self.id, (*broadcast).clone());
        }
        Box::pin(async { Ok(()) })
    }

    fn first_subscriber(&self, topic: &str) {
        self.bus
            .hooks
            .lock()
            .expect("hooks")
            .push(format!("{}+{topic}", self.id));
    }

    fn last_subscriber_gone(&self, topic: &str) {
        self.bus
            .hooks
            .lock()
            .expect("hooks")
            .push(format!("{}-{topic}", self.id));
    }
}

fn endpoint_on(bus: &Arc<Bus>, id: &str, fail: bool) -> Endpoint {
    let (bus, id) = (bus.clone(), id.to_owned());
    Endpoint::builder()
        .config(support::config())
        .channel("room:*", |_, _| PresenceRoom::default())
        .adapter(move |local| -> Arc<dyn Adapter> {
            bus.nodes.lock().expect("bus").push(local);
            Arc::new(BusAdapter { id, bus, fail })
        })
        .build()
}

/// The next broadcast of event `n` (presence diffs share the topic).
async fn next_n(sub: &mut phx_runtime::pubsub::Subscription) -> Arc<Broadcast> {
    loop {
        let b = tokio::time::timeout(WAIT, sub.recv())
            .await
            .expect("in time")
            .expect("subscribed");
        if b.event == "n" {
            return b;
        }
    }
}

#[tokio::test]
async fn broadcasts_cross_nodes_once_and_in_order_and_echoes_are_dropped() {
    let bus = Arc::new(Bus::default());
    let a = support::start_endpoint(endpoint_on(&bus, "a", false)).await;
    let b = support::start_endpoint(endpoint_on(&bus, "b", false)).await;
    let mut on_a = a.endpoint.pubsub().subscribe("room:x", 256);
    let mut on_b = b.endpoint.pubsub().subscribe("room:x", 256);
    // A socket on node b, in a channel: it gets a's broadcasts as frames.
    let mut client = b.connect("vsn=2.0.0").await;
    joined(&mut client, "1", "room:x", r#"{"user":"bob"}"#).await;

    for i in 0..100 {
        a.endpoint
            .pubsub()
            .broadcast("room:x", "n", json!({"i": i}).into());
    }
    for i in 0..100 {
        let got = next_n(&mut on_b).await;
        assert_eq!(got.payload.parse::<Value>().expect("json"), json!({"i": i}));
        let mine = next_n(&mut on_a).await;
        assert_eq!(
            mine.payload.parse::<Value>().expect("json"),
            json!({"i": i})
        );
    }
    // Exactly once on a: its own echo from the bus was dropped.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), on_a.recv())
            .await
            .is_err(),
        "an echo reached a subscriber twice"
    );
    let mut seen = 0;
    while seen < 100 {
        let frame = client.recv_json().await;
        if frame[3] == "n" {
            assert_eq!(frame[4], json!({"i": seen}));
            seen += 1;
        }
    }
    assert_eq!(b.endpoint.metrics().remote_broadcasts, 100);
    assert_eq!(a.endpoint.metrics().remote_broadcasts, 0);

    // Hooks: the first subscriber of a topic, and the last one leaving it.
    let sub = a.endpoint.pubsub().subscribe("room:hooks", 4);
    drop(sub);
    let hooks = bus.hooks.lock().expect("hooks").clone();
    assert!(hooks.contains(&"a+room:hooks".to_owned()), "{hooks:?}");
    assert!(hooks.contains(&"a-room:hooks".to_owned()), "{hooks:?}");
}

#[tokio::test]
async fn adapter_failures_are_counted_and_local_delivery_goes_on() {
    let bus = Arc::new(Bus::default());
    let a = support::start_endpoint(endpoint_on(&bus, "a", true)).await;
    let mut local = a.endpoint.pubsub().subscribe("room:f", 16);
    a.endpoint
        .pubsub()
        .broadcast("room:f", "x", json!({}).into());
    assert!(tokio::time::timeout(WAIT, local.recv())
        .await
        .expect("in time")
        .is_some());
    support::wait_until("the adapter failure counted", WAIT, || {
        a.endpoint.metrics().adapter_errors > 0
    })
    .await;
}

/// The next `presence_diff` frame whose payload satisfies `want`.
async fn diff_where(c: &mut support::Client, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = c.recv_event("presence_diff").await;
        if want(&v[4]) {
            return v;
        }
    }
}

#[tokio::test]
async fn fetch_adds_data_beside_metas_in_state_and_both_halves_of_diffs() {
    let endpoint = Endpoint::builder()
        .config(support::config())
        .channel("room:*", |_, _| PresenceRoom::default())
        .presence_fetch(|topic, entries| {
            for (key, entry) in entries.iter_mut() {
                entry.extra.insert(
                    "user".into(),
                    json!({"name": key.to_uppercase(), "topic": topic}),
                );
            }
        })
        .build();
    let s = support::start_endpoint(endpoint).await;
    let mut alice = s.connect("vsn=2.0.0").await;
    joined(
        &mut alice,
        "1",
        "room:f1",
        r#"{"user":"alice","meta":{"device":"test"}}"#,
    )
    .await;
    let state = alice.recv_event("presence_state").await;
    assert_eq!(
        state[4]["alice"]["user"],
        json!({"name": "ALICE", "topic": "room:f1"})
    );
    assert_eq!(state[4]["alice"]["metas"][0]["device"], json!("test"));

    let mut bob = s.connect("vsn=2.0.0").await;
    joined(
        &mut bob,
        "1",
        "room:f1",
        r#"{"user":"bob","meta":{"device":"test"}}"#,
    )
    .await;
    let join = diff_where(&mut alice, |d| !d["joins"]["bob"].is_null()).await;
    assert_eq!(join[4]["joins"]["bob"]["user"]["name"], json!("BOB"));
    assert_eq!(join[4]["joins"]["bob"]["metas"][0]["device"], json!("test"));
    drop(bob);
    let leave = diff_where(&mut alice, |d| !d["leaves"]["bob"].is_null()).await;
    assert_eq!(leave[4]["leaves"]["bob"]["user"]["name"], json!("BOB"));
    assert_eq!(leave[4]["joins"], json!({}));
}

#[tokio::test]
async fn remote_presence_diffs_reach_local_members() {
    let s = support::start_endpoint(
        Endpoint::builder()
            .config(support::config())
            .channel("room:*", |_, _| PresenceRoom::default())
            .build(),
    )
    .await;
    let mut alice = s.connect("vsn=2.0.0").await;
    joined(&mut alice, "1", "room:r1", r#"{"user":"alice"}"#).await;
    let _state = alice.recv_event("presence_state").await;
    let mut diff = PresenceDiff::default();
    diff.add_join("carol", Meta::new("REMOTE1", json!({"node": "b"})));
    s.endpoint.presence().apply_remote("room:r1", diff);
    let got = diff_where(&mut alice, |d| !d["joins"]["carol"].is_null()).await;
    assert_eq!(
        got[4]["joins"]["carol"]["metas"][0]["phx_ref"],
        json!("REMOTE1")
    );
    assert_eq!(s.endpoint.presence().stats().sessions(), 2);
}
