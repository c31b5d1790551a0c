//! Live presence over real sockets: `presence_state` after every join, a
//! `presence_diff` for every change, and no ghosts however a connection ends.

mod support;

use phx_presence::{ChannelPresence, PresenceDiff, PresenceList};
use phx_runtime::Endpoint;
use serde_json::{json, Value};
use support::{Client, PresenceRoom, WAIT};

struct Server {
    inner: support::Server,
}

async fn start() -> Server {
    let endpoint = Endpoint::builder()
        .config(support::config())
        .channel("room:*", |_, _| PresenceRoom::default())
        .build();
    Server {
        inner: support::start_endpoint(endpoint).await,
    }
}

impl Server {
    async fn member(&self, topic: &str, join_ref: &str, user: &str, meta: Value) -> Client {
        let mut c = self.inner.connect("vsn=2.0.0").await;
        let payload = json!({"user": user, "meta": meta}).to_string();
        c.send(&support::join(join_ref, topic, &payload)).await;
        c
    }

    fn list(&self, topic: &str) -> PresenceList {
        self.inner.endpoint.presence().list(topic)
    }
}

/// Follows presence events on a client the way phoenix.js's Presence does, until
/// `done` says the mirror is as expected.
async fn follow(
    c: &mut Client,
    join_ref: &str,
    mirror: &mut ChannelPresence,
    done: impl Fn(&PresenceList) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(mirror.list()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mirror never reached the expected state: {:?}",
            mirror.list()
        );
        let v = c.recv_json().await;
        match v[3].as_str() {
            Some("presence_state") => {
                mirror.on_state(
                    join_ref,
                    serde_json::from_value(v[4].clone()).expect("state"),
                );
            }
            Some("presence_diff") => {
                let diff: PresenceDiff = serde_json::from_value(v[4].clone()).expect("diff");
                mirror.on_diff(join_ref, diff);
            }
            _ => {}
        }
    }
}

fn keys(list: &PresenceList) -> Vec<String> {
    list.keys().cloned().collect()
}

#[tokio::test]
async fn joiner_gets_state_and_members_get_diffs() {
    let s = start().await;
    let mut alice = s
        .member("room:p1", "1", "alice", json!({"device": "phone"}))
        .await;
    let mut m_alice = ChannelPresence::default();
    follow(&mut alice, "1", &mut m_alice, |l| keys(l) == ["alice"]).await;
    let mut bob = s.member("room:p1", "1", "bob", json!({})).await;
    let mut m_bob = ChannelPresence::default();
    follow(&mut bob, "1", &mut m_bob, |l| keys(l) == ["alice", "bob"]).await;
    follow(&mut alice, "1", &mut m_alice, |l| {
        keys(l) == ["alice", "bob"]
    })
    .await;
    assert_eq!(m_alice.list(), &s.list("room:p1"));
    assert_eq!(m_bob.list(), &s.list("room:p1"));
    let meta = &s.list("room:p1")["alice"].metas[0];
    assert_eq!(meta.fields["device"], json!("phone"));
    assert_eq!(meta.phx_ref.len(), 16);
}

#[tokio::test]
async fn one_user_on_two_devices_is_one_key_with_two_metas() {
    let s = start().await;
    let mut phone = s
        .member("room:p2", "1", "carol", json!({"device": "phone"}))
        .await;
    let mut m = ChannelPresence::default();
    follow(&mut phone, "1", &mut m, |l| l.contains_key("carol")).await;
    let mut laptop = s
        .member("room:p2", "1", "carol", json!({"device": "laptop"}))
        .await;
    follow(&mut phone, "1", &mut m, |l| {
        l.get("carol").is_some_and(|e| e.metas.len() == 2)
    })
    .await;
    // The laptop leaves by closing its socket: carol stays, on one device.
    laptop.ws.close(None).await.ok();
    follow(&mut phone, "1", &mut m, |l| {
        l.get("carol").is_some_and(|e| e.metas.len() == 1)
    })
    .await;
    assert_eq!(m.list()["carol"].metas[0].fields["device"], json!("phone"));
    assert_eq!(m.list(), &s.list("room:p2"));
}

#[tokio::test]
async fn update_is_one_diff_with_leave_and_join_and_phx_ref_prev() {
    let s = start().await;
    let mut c = s
        .member("room:p3", "1", "dan", json!({"status": "online"}))
        .await;
    let mut m = ChannelPresence::default();
    follow(&mut c, "1", &mut m, |l| l.contains_key("dan")).await;
    let old_ref = s.list("room:p3")["dan"].metas[0].phx_ref.clone();
    c.send(r#"["1","5","room:p3","update_meta",{"status":"away"}]"#)
        .await;
    let diff = c.recv_event("presence_diff").await;
    assert_eq!(
        diff[4]["leaves"]["dan"]["metas"][0]["phx_ref"],
        json!(old_ref)
    );
    assert_eq!(
        diff[4]["joins"]["dan"]["metas"][0]["phx_ref_prev"],
        json!(old_ref)
    );
    assert_eq!(diff[4]["joins"]["dan"]["metas"][0]["status"], json!("away"));
    assert_ne!(
        diff[4]["joins"]["dan"]["metas"][0]["phx_ref"],
        json!(old_ref)
    );
}

#[tokio::test]
async fn leaving_by_phx_leave_crash_or_close_leaves_no_ghost() {
    let s = start().await;
    let mut watcher = s.member("room:p4", "1", "watcher", json!({})).await;
    let mut m = ChannelPresence::default();
    follow(&mut watcher, "1", &mut m, |l| l.contains_key("watcher")).await;
    let mut a = s.member("room:p4", "1", "a", json!({})).await;
    let mut b = s.member("room:p4", "1", "b", json!({})).await;
    let c = s.member("room:p4", "1", "c", json!({})).await;
    follow(&mut watcher, "1", &mut m, |l| l.len() == 4).await;
    a.send(r#"["1","9","room:p4","phx_leave",{}]"#).await;
    follow(&mut watcher, "1", &mut m, |l| !l.contains_key("a")).await;
    // The leaver gets its reply and close, not its own leave diff.
    a.recv_event("phx_close").await;
    b.send(r#"["1","9","room:p4","crash",{}]"#).await;
    follow(&mut watcher, "1", &mut m, |l| !l.contains_key("b")).await;
    drop(c); // the TCP connection just goes away
    follow(&mut watcher, "1", &mut m, |l| !l.contains_key("c")).await;
    assert_eq!(keys(m.list()), ["watcher"]);
    assert_eq!(m.list(), &s.list("room:p4"));
}

#[tokio::test]
async fn late_joiner_sees_everyone() {
    let s = start().await;
    let mut first = Vec::new();
    for u in ["u1", "u2", "u3"] {
        let mut c = s.member("room:p5", "1", u, json!({"n": u})).await;
        c.recv_event("presence_state").await;
        first.push(c);
    }
    let mut late = s.member("room:p5", "1", "late", json!({})).await;
    let mut m = ChannelPresence::default();
    follow(&mut late, "1", &mut m, |l| l.len() == 4).await;
    assert_eq!(keys(m.list()), ["late", "u1", "u2", "u3"]);
}

#[tokio::test]
async fn a_killed_client_process_leaves_presence() {
    let s = start().await;
    let mut watcher = s.member("room:p6", "1", "watcher", json!({})).await;
    let mut m = ChannelPresence::default();
    follow(&mut watcher, "1", &mut m, |l| l.contains_key("watcher")).await;
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let script = format!(
        "const W=require('ws');const w=new W('{}');w.on('open',()=>w.send('[\"1\",\"1\",\"room:p6\",\"phx_join\",{{\"user\":\"victim\"}}]'));setInterval(()=>{{}},1000);",
        s.inner.url("vsn=2.0.0")
    );
    assert!(
        js.join("node_modules/ws").exists(),
        "run npm ci in crates/runtime/tests/js (scripts/test does)"
    );
    let mut child = std::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .current_dir(&js)
        .spawn()
        .expect("node is needed for this test");
    follow(&mut watcher, "1", &mut m, |l| l.contains_key("victim")).await;
    child.kill().expect("kill the client process");
    let _ = child.wait();
    follow(&mut watcher, "1", &mut m, |l| !l.contains_key("victim")).await;
    assert!(!s.list("room:p6").contains_key("victim"));
}

#[tokio::test]
async fn session_stats_follow_presence() {
    let s = start().await;
    let mut a = s
        .member("room:p7", "1", "a", json!({"user_id": 1, "verified": true}))
        .await;
    a.recv_event("presence_state").await;
    let mut b = s.member("room:p7", "1", "b", json!({})).await;
    b.recv_event("presence_state").await;
    // A user_id without "verified": true is what the client says: anonymous.
    let mut c = s.member("room:p7", "1", "c", json!({"user_id": 2})).await;
    c.recv_event("presence_state").await;
    let stats = s.inner.endpoint.presence().stats();
    assert_eq!(
        (stats.sessions(), stats.signed_in(), stats.anonymous()),
        (3, 1, 2)
    );
    drop(c);
    drop(a);
    support::wait_until("the closed session counted out", WAIT, || {
        s.inner.endpoint.presence().stats().sessions() == 1
    })
    .await;
}
