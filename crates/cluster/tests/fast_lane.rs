//! The link's fast lane: a control message (a tracker heartbeat) published
//! while thousands of broadcasts wait in the ordinary queue reaches the other
//! node before them, so a node busy with broadcasts is not taken for dead.
//! Real `redis-server`, two links.

mod support;

use std::time::Duration;

use bytes::Bytes;
use phx_cluster::{LinkOptions, LinkState, Transport, TransportConfig, TransportEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_message_overtakes_queued_broadcasts() {
    let redis = support::Redis::start();
    let channel = "phx:all".to_owned();
    let link = |name: &str| {
        Transport::start(TransportConfig::for_node(
            redis.url(),
            vec![channel.clone()],
            name,
            LinkOptions::default(),
        ))
        .expect("link starts")
    };
    let (a, _a_events) = link("a");
    let (b, mut b_events) = link("b");
    support::wait_until("both links connected", Duration::from_secs(10), || {
        a.stats().state == LinkState::Connected && b.stats().state == LinkState::Connected
    })
    .await;

    // 10 MB of broadcasts queued at once, then one heartbeat.
    const QUEUED: usize = 10_000;
    let filler = Bytes::from(vec![b'x'; 1024]);
    for _ in 0..QUEUED {
        a.publish(&channel, filler.clone()).expect("queued");
    }
    a.publish_urgent(&channel, Bytes::from_static(b"heartbeat"))
        .expect("queued in the fast lane");

    let mut before = 0;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), b_events.recv())
            .await
            .expect("messages keep coming")
            .expect("link open");
        if let TransportEvent::Message { payload, .. } = event {
            if &payload[..] == b"heartbeat" {
                break;
            }
            before += 1;
        }
    }
    // Without the fast lane it would come last, after all of them.
    assert!(
        before < QUEUED,
        "the heartbeat came after {before} of {QUEUED} queued broadcasts"
    );
    println!(
        "the heartbeat overtook {} queued broadcasts",
        QUEUED - before
    );
}
