//! Replies in request order and flow control, over real WebSockets: pipelined
//! joins answered in order (V1 and V2), heartbeats after joins, `after_join`
//! pushes before the reply to anything sent later, 10 000 pipelined pushes on one
//! channel, a publisher shouting into its own topic, heartbeats under a broadcast
//! stream, and the cases where a channel falls behind for good.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use phx_presence::PresenceDiff;
use phx_runtime::{
    Channel, ChannelContext, Config, Endpoint, Flow, HandleIn, Payload, RuntimeError,
};
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A room whose `after_join` tracks the member and pushes `presence_state`, as the
/// conformance app does; `echo`, `crash`, `sleep` (5 s), `nap` (`ms`), `shout`,
/// and typed infos.
#[derive(Default)]
struct Lobby {
    user: String,
    watch: bool,
}

/// The topics whose [`Lobby`] has begun a `sleep` (so a test can wait until the
/// channel is busy instead of guessing how long that takes).
static SLEEPING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn asleep(topic: &str) {
    SLEEPING
        .lock()
        .expect("sleeping lock")
        .push(topic.to_owned());
}

fn is_asleep(topic: &str) -> bool {
    SLEEPING
        .lock()
        .expect("sleeping lock")
        .iter()
        .any(|t| t == topic)
}

/// The typed application messages of [`Lobby`].
enum LobbyInfo {
    Say(String),
    Stop,
}

impl Channel for Lobby {
    type Info = LobbyInfo;

    async fn join(
        &mut self,
        _topic: &str,
        payload: Payload,
        _ctx: &mut ChannelContext<LobbyInfo>,
    ) -> Result<Payload, Payload> {
        let p: Value = payload.parse().unwrap_or(Value::Null);
        self.user = p["user"].as_str().unwrap_or("anon").to_owned();
        self.watch = p["watch"] == json!(true);
        Ok(Payload::empty_object())
    }

    async fn after_join(
        &mut self,
        ctx: &mut ChannelContext<LobbyInfo>,
    ) -> Result<Flow, RuntimeError> {
        if self.watch {
            ctx.watch_presence();
        }
        ctx.track(&self.user, json!({}))?;
        let state = ctx.presence_list()?;
        ctx.push("presence_state", state)?;
        Ok(Flow::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<LobbyInfo>,
    ) -> Result<HandleIn, RuntimeError> {
        match event {
            "echo" => Ok(HandleIn::ok(payload)),
            "crash" => Err(RuntimeError::channel("crash requested")),
            "shout" => {
                ctx.broadcast("shout", payload)?;
                Ok(HandleIn::ok(Payload::empty_object()))
            }
            "sleep" => {
                asleep(ctx.topic());
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(HandleIn::NoReply)
            }
            "nap" => {
                let ms = payload.parse::<Value>()?["ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(HandleIn::NoReply)
            }
            "say_later" => {
                let text = payload.parse::<Value>()?["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let handle = ctx.handle();
                tokio::spawn(async move { handle.send_wait(LobbyInfo::Say(text)).await });
                Ok(HandleIn::NoReply)
            }
            "stop_later" => {
                ctx.send_self(LobbyInfo::Stop)?;
                Ok(HandleIn::NoReply)
            }
            _ => Ok(HandleIn::error(json!({"reason": "unhandled event"}))),
        }
    }

    async fn handle_info(
        &mut self,
        info: LobbyInfo,
        ctx: &mut ChannelContext<LobbyInfo>,
    ) -> Result<Flow, RuntimeError> {
        match info {
            LobbyInfo::Say(text) => {
                ctx.push("said", json!({"text": text}))?;
                Ok(Flow::Continue)
            }
            LobbyInfo::Stop => Ok(Flow::Stop),
        }
    }

    fn intercepts(&self) -> Vec<String> {
        vec!["slow_out".to_owned()]
    }

    async fn handle_presence(
        &mut self,
        diff: &PresenceDiff,
        ctx: &mut ChannelContext<LobbyInfo>,
    ) -> Result<Flow, RuntimeError> {
        let joins: Vec<&String> = diff.joins.keys().collect();
        let leaves: Vec<&String> = diff.leaves.keys().collect();
        ctx.push("seen_presence", json!({"joins": joins, "leaves": leaves}))?;
        Ok(Flow::Continue)
    }
}

async fn start_lobby(config: Config) -> Server {
    let endpoint = Endpoint::builder()
        .config(config)
        .channel("lobby:*", |_, _| Lobby::default())
        .channel("room:*", |topic: &str, _: &phx_runtime::Assigns| {
            if topic == "room:factory_panic" {
                panic!("factory refuses this topic");
            }
            support::TestRoom::default()
        })
        .channel("private:*", |_, _| Refuser)
        .build();
    start_endpoint(endpoint).await
}

/// Refuses every join.
struct Refuser;

impl Channel for Refuser {
    type Info = ();
    async fn join(
        &mut self,
        _t: &str,
        _p: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        Err(json!({"reason": "unauthorized"}).into())
    }
    async fn handle_in(
        &mut self,
        _e: &str,
        _p: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        Ok(HandleIn::NoReply)
    }
}

/// Sends every frame in one write burst, without reading.
async fn pipeline(c: &mut Client, frames: &[String]) {
    for f in frames {
        c.ws.feed(WsMessage::text(f.clone())).await.expect("feed");
    }
    c.ws.flush().await.expect("flush");
}

/// The refs of the next `n` replies (V2), skipping other frames.
async fn reply_refs(c: &mut Client, n: usize) -> Vec<String> {
    let mut refs = Vec::new();
    while refs.len() < n {
        let v = c.recv_json().await;
        if v[3] == json!("phx_reply") {
            refs.push(v[1].as_str().unwrap_or_default().to_owned());
        }
    }
    refs
}

#[tokio::test]
async fn forty_pipelined_joins_and_a_heartbeat_are_answered_in_order() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    let mut frames: Vec<String> = (1..=40)
        .map(|i| match i % 4 {
            // A refused private join and an unmatched topic between ordinary joins.
            1 => format!(r#"["{i}","{i}","private:{i}","phx_join",{{}}]"#),
            2 => format!(r#"["{i}","{i}","nowhere:{i}","phx_join",{{}}]"#),
            _ => join(&i.to_string(), &format!("room:{i}"), r#"{"quiet":true}"#),
        })
        .collect();
    frames.push(r#"[null,"hb","phoenix","heartbeat",{}]"#.to_owned());
    pipeline(&mut c, &frames).await;
    let mut expected: Vec<String> = (1..=40).map(|i| i.to_string()).collect();
    expected.push("hb".to_owned());
    assert_eq!(reply_refs(&mut c, 41).await, expected);
}

#[tokio::test]
async fn pipelined_v1_joins_are_answered_in_order() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=1.0.0").await;
    let mut frames: Vec<String> = (1..=40)
        .map(|i| format!(r#"{{"topic":"room:{i}","event":"phx_join","payload":{{"quiet":true}},"ref":"{i}"}}"#))
        .collect();
    frames.push(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"hb"}"#.to_owned());
    pipeline(&mut c, &frames).await;
    let mut refs = Vec::new();
    while refs.len() < 41 {
        let v = c.recv_json().await;
        if v["event"] == json!("phx_reply") {
            refs.push(v["ref"].as_str().unwrap_or_default().to_owned());
        }
    }
    let mut expected: Vec<String> = (1..=40).map(|i| i.to_string()).collect();
    expected.push("hb".to_owned());
    assert_eq!(refs, expected);
}

/// Frames on `topic` until `count` of interest arrived, with presence_diff left out.
async fn events_on(c: &mut Client, count: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while out.len() < count {
        let v = c.recv_json().await;
        let event = v[3].as_str().unwrap_or_default().to_owned();
        if event != "presence_diff" {
            out.push((event, v));
        }
    }
    out
}

#[tokio::test]
async fn join_then_echo_gets_reply_presence_state_then_echo_every_time() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    for i in 0..50 {
        let topic = format!("lobby:{i}");
        let frames = [
            join("1", &topic, r#"{"user":"a"}"#),
            format!(r#"["1","2","{topic}","echo",{{"n":{i}}}]"#),
        ];
        pipeline(&mut c, &frames).await;
        let got = events_on(&mut c, 3).await;
        let kinds: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            kinds,
            ["phx_reply", "presence_state", "phx_reply"],
            "trial {i}"
        );
        assert_eq!(got[0].1[1], json!("1"));
        assert_eq!(got[2].1[1], json!("2"));
        assert_eq!(got[2].1[4]["response"], json!({"n": i}));
    }
}

#[tokio::test]
async fn join_then_crash_gets_presence_state_before_phx_error_every_time() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    for i in 0..50 {
        let topic = format!("lobby:crash{i}");
        let frames = [
            join("1", &topic, r#"{"user":"a"}"#),
            format!(r#"["1","2","{topic}","crash",{{}}]"#),
        ];
        pipeline(&mut c, &frames).await;
        let got = events_on(&mut c, 3).await;
        let kinds: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            kinds,
            ["phx_reply", "presence_state", "phx_error"],
            "trial {i}"
        );
    }
}

#[tokio::test]
async fn ten_thousand_pipelined_pushes_are_all_answered_in_order() {
    let s = start_lobby(config()).await;
    let c = s.connect("vsn=2.0.0").await;
    let (mut tx, mut rx) = c.ws.split();
    tx.send(WsMessage::text(join("1", "lobby:many", r#"{"user":"p"}"#)))
        .await
        .expect("send");
    const N: usize = 10_000;
    let began = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let f = format!(r#"["1","{i}","lobby:many","echo",{{"i":{i}}}]"#);
            tx.feed(WsMessage::text(f)).await.expect("feed");
        }
        tx.flush().await.expect("flush");
        tx
    });
    let mut next = 0usize;
    let mut saw_join = false;
    while next < N {
        let msg = tokio::time::timeout(Duration::from_secs(20), rx.next())
            .await
            .expect("replies keep coming")
            .expect("open")
            .expect("frame");
        let WsMessage::Text(text) = msg else {
            panic!("unexpected frame {msg:?}")
        };
        let v: Value = serde_json::from_str(text.as_str()).expect("json");
        if v[3] != json!("phx_reply") {
            continue;
        }
        if !saw_join {
            assert_eq!(v[1], json!("1"), "the join reply comes first");
            saw_join = true;
            continue;
        }
        assert_eq!(v[1], json!(next.to_string()), "replies in request order");
        assert_eq!(v[4]["status"], json!("ok"));
        next += 1;
    }
    let elapsed = began.elapsed();
    let _tx = writer.await.expect("writer");
    eprintln!("10000 pipelined pushes answered in order in {elapsed:?}");
    assert_eq!(s.endpoint.metrics().channels_stuck, 0);
    assert_eq!(s.endpoint.metrics().sockets_open, 1, "no disconnect");
}

#[tokio::test]
async fn a_publisher_shouting_into_its_own_topic_is_slowed_not_cut_off() {
    let s = start_lobby(config()).await;
    let mut subs = Vec::new();
    for i in 0..2 {
        let mut c = s.connect("vsn=2.0.0").await;
        joined(&mut c, "1", "lobby:shout", &format!(r#"{{"user":"s{i}"}}"#)).await;
        subs.push(c);
    }
    let publisher = s.connect("vsn=2.0.0").await;
    let (mut tx, mut rx) = publisher.ws.split();
    tx.send(WsMessage::text(join(
        "1",
        "lobby:shout",
        r#"{"user":"pub"}"#,
    )))
    .await
    .expect("send");
    const N: usize = 2_000;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let f = format!(r#"["1","{i}","lobby:shout","shout",{{"i":{i}}}]"#);
            tx.feed(WsMessage::text(f)).await.expect("feed");
        }
        tx.flush().await.expect("flush");
        tx
    });
    // The publisher reads its replies and its own shouts.
    let reader = tokio::spawn(async move {
        let (mut replies, mut shouts) = (0, 0);
        while replies < N + 1 || shouts < N {
            let msg = tokio::time::timeout(Duration::from_secs(20), rx.next())
                .await
                .expect("frames keep coming")
                .expect("open")
                .expect("frame");
            match msg {
                WsMessage::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("json");
                    match v[3].as_str() {
                        Some("phx_reply") => replies += 1,
                        Some("shout") => shouts += 1,
                        _ => {}
                    }
                }
                WsMessage::Close(frame) => panic!("publisher closed: {frame:?}"),
                _ => {}
            }
        }
        (replies, shouts)
    });
    for c in &mut subs {
        for i in 0..N {
            let v = c.recv_event("shout").await;
            assert_eq!(v[4]["i"], json!(i), "subscribers get every shout, in order");
        }
    }
    assert_eq!(reader.await.expect("reader"), (N + 1, N));
    let _tx = writer.await.expect("writer");
    assert_eq!(s.endpoint.metrics().channels_stuck, 0);
    assert_eq!(s.endpoint.metrics().dropped_messages, 0);
}

#[tokio::test]
async fn a_heartbeat_is_answered_within_a_second_under_a_broadcast_stream() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "lobby:stream", r#"{"user":"r"}"#).await;
    let pubsub = s.endpoint.pubsub().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let streamer = tokio::spawn(async move {
        let pad = "x".repeat(200);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..100 {
                pubsub.broadcast("lobby:stream", "tick", json!({"pad": pad}).into());
            }
            tokio::task::yield_now().await;
        }
    });
    // Let the stream run at full speed first.
    for _ in 0..2_000 {
        c.recv().await;
    }
    for i in 0..5 {
        let hb = format!(r#"[null,"hb{i}","phoenix","heartbeat",{{}}]"#);
        let sent = Instant::now();
        c.send(&hb).await;
        loop {
            let v = c.recv_json().await;
            if v[1] == json!(format!("hb{i}")) {
                break;
            }
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "heartbeat {i} took {:?}",
            sent.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    streamer.await.expect("streamer");
}

#[tokio::test]
async fn a_channel_stuck_past_the_stall_timeout_ends_the_socket_with_1013() {
    let s = start_lobby(Config {
        channel_mailbox: 1,
        channel_stall_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "lobby:stuck", r#"{"user":"x"}"#).await;
    let frames: Vec<String> = std::iter::once(r#"["1","2","lobby:stuck","sleep",{}]"#.to_owned())
        .chain((3..10).map(|i| format!(r#"["1","{i}","lobby:stuck","echo",{{}}]"#)))
        .collect();
    pipeline(&mut c, &frames).await;
    assert_eq!(c.close_code().await, Some(1013));
    assert_eq!(s.endpoint.metrics().channels_stuck, 1);
    assert!(s.endpoint.metrics().backpressure_waits >= 1);
}

#[tokio::test]
async fn an_intercepted_broadcast_that_cannot_be_queued_closes_the_socket() {
    let s = start_lobby(Config {
        channel_mailbox: 1,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "lobby:icpt", r#"{"user":"x"}"#).await;
    c.send(r#"["1","2","lobby:icpt","sleep",{}]"#).await;
    // Wait until the channel is busy sleeping, then overfill its mailbox.
    wait_until("the channel asleep", WAIT, || is_asleep("lobby:icpt")).await;
    for _ in 0..3 {
        s.endpoint
            .pubsub()
            .broadcast("lobby:icpt", "slow_out", Payload::empty_object());
    }
    assert_eq!(c.close_code().await, Some(1013));
    assert!(s.endpoint.metrics().dropped_messages >= 1);
}

#[tokio::test]
async fn a_lagging_pubsub_subscription_ends_instead_of_skipping() {
    let s = start_lobby(config()).await;
    let mut sub = s.endpoint.pubsub().subscribe("events:x", 2);
    for i in 0..3 {
        s.endpoint
            .pubsub()
            .broadcast("events:x", "e", json!({"i": i}).into());
    }
    assert_eq!(
        sub.recv().await.map(|b| b.event.clone()),
        Some("e".to_owned())
    );
    assert!(sub.recv().await.is_some());
    assert!(sub.recv().await.is_none(), "the hole ends the subscription");
    assert_eq!(s.endpoint.metrics().dropped_messages, 1);
}

#[tokio::test]
async fn panics_in_the_factory_or_join_end_only_that_join() {
    let s = start_lobby(Config {
        max_channels: 2,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    for i in 0..5 {
        c.send(&join(&format!("f{i}"), "room:factory_panic", "{}"))
            .await;
        let v = c.recv_json().await;
        assert_eq!(
            v[4],
            json!({"status": "error", "response": {"reason": "join crashed"}})
        );
        c.send(&join(
            &format!("j{i}"),
            &format!("room:p{i}"),
            r#"{"panic":true}"#,
        ))
        .await;
        let v = c.recv_json().await;
        assert_eq!(
            v[4],
            json!({"status": "error", "response": {"reason": "join crashed"}})
        );
    }
    // Crashes after the join leave no entry behind either.
    for i in 0..5 {
        joined(&mut c, "c", &format!("room:crash{i}"), r#"{"quiet":true}"#).await;
        c.send(&format!(r#"["c","x","room:crash{i}","boom",{{}}]"#))
            .await;
        assert_eq!(
            c.recv_event("phx_error").await[2],
            json!(format!("room:crash{i}"))
        );
    }
    // None of those count toward max_channels (2).
    joined(&mut c, "a", "room:a", r#"{"quiet":true}"#).await;
    joined(&mut c, "b", "room:b", r#"{"quiet":true}"#).await;
    assert!(s.endpoint.metrics().channel_crashes >= 15);
}

#[tokio::test]
async fn push_inside_join_is_refused() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    c.send(&join("1", "room:early", r#"{"push_in_join":true}"#))
        .await;
    let v = c.recv_json().await;
    assert_eq!(
        v[4],
        json!({"status": "ok", "response": {"push_refused": true}})
    );
}

#[tokio::test]
async fn typed_infos_reach_handle_info() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "lobby:info", r#"{"user":"i"}"#).await;
    c.send(r#"["1","2","lobby:info","say_later",{"text":"hi"}]"#)
        .await;
    assert_eq!(c.recv_event("said").await[4], json!({"text": "hi"}));
    c.send(r#"["1","3","lobby:info","stop_later",{}]"#).await;
    c.recv_event("phx_close").await;
}

#[tokio::test]
async fn a_watching_channel_sees_presence_changes_on_its_topic() {
    let s = start_lobby(config()).await;
    let mut w = s.connect("vsn=2.0.0").await;
    joined(&mut w, "1", "lobby:watch", r#"{"user":"w","watch":true}"#).await;
    // Its own join first.
    assert_eq!(
        w.recv_event("seen_presence").await[4],
        json!({"joins": ["w"], "leaves": []})
    );
    let mut other = s.connect("vsn=2.0.0").await;
    joined(&mut other, "1", "lobby:watch", r#"{"user":"o"}"#).await;
    assert_eq!(
        w.recv_event("seen_presence").await[4],
        json!({"joins": ["o"], "leaves": []})
    );
    drop(other);
    assert_eq!(
        w.recv_event("seen_presence").await[4],
        json!({"joins": [], "leaves": ["o"]})
    );
}

#[tokio::test]
async fn a_binary_frame_on_a_v1_socket_is_read_as_json_text() {
    let s = start_lobby(config()).await;
    let mut c = s.connect("vsn=1.0.0").await;
    c.send_bin(br#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"b1"}"#.to_vec())
        .await;
    let v = c.recv_json().await;
    assert_eq!(v["ref"], json!("b1"));
    assert_eq!(v["payload"]["status"], json!("ok"));
}

#[tokio::test]
async fn a_topic_over_the_length_limit_is_refused() {
    let s = start_lobby(Config {
        max_topic_length: 64,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    let topic = format!("room:{}", "t".repeat(100));
    c.send(&join("1", &topic, "{}")).await;
    let v = c.recv_json().await;
    assert_eq!(
        v[4],
        json!({"status": "error", "response": {"reason": "topic too long"}})
    );
    assert_eq!(s.endpoint.metrics().topics_too_long, 1);
    // The socket lives on.
    joined(&mut c, "2", "room:short", r#"{"quiet":true}"#).await;
}

#[tokio::test]
async fn a_wait_on_a_busy_channel_is_not_the_client_idling() {
    // The channel naps for 2 s, past the idle timeout (800 ms); the socket reads
    // nothing meanwhile (flow control), so the idle clock starts again after.
    let s = start_lobby(Config {
        channel_mailbox: 1,
        idle_timeout: Duration::from_millis(800),
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "lobby:busy", r#"{"user":"x"}"#).await;
    let frames: Vec<String> =
        std::iter::once(r#"["1","2","lobby:busy","nap",{"ms":2000}]"#.to_owned())
            .chain((3..5).map(|i| format!(r#"["1","{i}","lobby:busy","echo",{{}}]"#)))
            .collect();
    // The nap holds the channel, "3" fills its mailbox, "4" waits: the socket
    // reads nothing more until the nap ends, and "4" is its last client frame.
    pipeline(&mut c, &frames).await;
    assert_eq!(reply_refs(&mut c, 2).await, ["3", "4"]);
    // Quiet for a quarter of the idle timeout: this pause is the point (had the
    // idle clock kept running through the 2 s wait, the socket would be closed
    // by now), so it is a sleep and not a wait for a condition.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(r#"[null,"hb","phoenix","heartbeat",{}]"#).await;
    assert_eq!(
        reply_refs(&mut c, 1).await,
        ["hb"],
        "still open after the wait"
    );
    assert_eq!(s.endpoint.metrics().idle_timeouts, 0);
    assert!(s.endpoint.metrics().backpressure_waits >= 1);
}
