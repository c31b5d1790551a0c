//! The limits on what a client can make the server hold, each over the wire:
//! frame size (Phoenix's default accepted), topic length, the HTTP request-head
//! deadline and idle keep-alive, the connection cap, drain in batches — and the
//! memory the server holds after them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use phx_runtime::{Config, Endpoint};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident memory of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads until the server closes the connection; false if it is still open
/// after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_frame_phoenix_accepts_is_accepted() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:big", r#"{"quiet":true}"#).await;
    let pad = "p".repeat(3_000_000);
    c.send(&format!(r#"["1","2","room:big","echo",{{"pad":"{pad}"}}]"#))
        .await;
    let v = c.recv_json().await;
    assert_eq!(v[4]["status"], json!("ok"));
    assert_eq!(
        v[4]["response"]["pad"].as_str().map(str::len),
        Some(3_000_000)
    );
    assert_eq!(Config::default().max_frame_size, 10_000_000);
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_off_at_the_deadline() {
    let s = start_endpoint(
        Endpoint::builder()
            .config(Config {
                http_header_timeout: Duration::from_millis(500),
                ..config()
            })
            .build(),
    )
    .await;
    let mut stream = TcpStream::connect(s.addr).await.expect("connect");
    stream
        .write_all(b"GET /socket/websocket HTTP/1.1\r\n")
        .await
        .expect("write");
    // One header byte every 100 ms: each byte would re-arm a per-read timeout.
    let trickle = async {
        for b in b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if stream.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    assert_eq!(s.endpoint.metrics().http_head_timeouts, 1);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let s = start_endpoint(
        Endpoint::builder()
            .config(Config {
                metrics_path: Some("/metrics".to_owned()),
                http_header_timeout: Duration::from_millis(500),
                ..config()
            })
            .build(),
    )
    .await;
    let mut stream = TcpStream::connect(s.addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Nothing more is sent: the kept-alive connection does not stay forever.
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
}

async fn metrics_over(stream: &mut TcpStream) -> Option<String> {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let s = start_endpoint(
        Endpoint::builder()
            .config(Config {
                metrics_path: Some("/metrics".to_owned()),
                max_connections: 1,
                ..config()
            })
            .channel("room:*", |_, _| TestRoom::default())
            .build(),
    )
    .await;
    let mut first = s.connect("vsn=2.0.0").await;
    joined(&mut first, "1", "room:cap", r#"{"quiet":true}"#).await;
    let addr: SocketAddr = s.addr;
    let waiting = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        metrics_over(&mut stream).await
    });
    // While the WebSocket holds the only slot, the second connection is held
    // back (counted) and not served.
    wait_until("the second connection held at the cap", WAIT, || {
        s.endpoint.metrics().connections_limited >= 1
    })
    .await;
    assert!(!waiting.is_finished(), "served past the connection cap");
    drop(first);
    let answer = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("served once the slot is free")
        .expect("task")
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("phx_http_connections_open"));
}

#[tokio::test]
async fn drain_closes_sockets_in_batches_with_1012() {
    let s = start_endpoint(
        Endpoint::builder()
            .config(Config {
                drain_batch_size: 1,
                drain_batch_interval: Duration::from_secs(1),
                ..config()
            })
            .channel("room:*", |_, _| TestRoom::default())
            .build(),
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = s.connect("vsn=2.0.0").await;
        joined(&mut c, "1", &format!("room:d{i}"), r#"{"quiet":true}"#).await;
        clients.push(c);
    }
    let endpoint = s.endpoint.clone();
    let drain = tokio::spawn(async move { endpoint.drain().await });
    // The first batch (one socket) closes at once; the others wait their turn.
    wait_until("the first drain batch", WAIT, || {
        s.endpoint.metrics().sockets_drained >= 1
    })
    .await;
    let first = s.endpoint.metrics().sockets_open;
    assert!(first >= 2, "only one batch closed at first, {first} open");
    for c in &mut clients {
        assert_eq!(c.close_code().await, Some(1012));
    }
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("drain ends")
        .expect("drain");
    assert_eq!(s.endpoint.metrics().sockets_drained, 3);
}

#[tokio::test]
async fn a_hundred_joins_with_megabyte_topics_are_refused_and_memory_stays_bounded() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    let before = rss_kib();
    for i in 0..100 {
        let topic = format!("room:{i}:{}", "t".repeat(1 << 20));
        c.send(&join(&i.to_string(), &topic, "{}")).await;
        let v = c.recv_json().await;
        assert_eq!(
            v[4],
            json!({"status": "error", "response": {"reason": "topic too long"}})
        );
    }
    joined(&mut c, "ok", "room:fine", r#"{"quiet":true}"#).await;
    let after = rss_kib();
    eprintln!("RSS before {before} KiB, after the limits scenario {after} KiB");
    assert_eq!(s.endpoint.metrics().topics_too_long, 100);
    // 100 topics of 1 MiB held five times over would be ~500 MiB.
    assert!(
        after < before + 200 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

#[tokio::test]
async fn client_bytes_over_the_socket_budget_wait_and_all_arrive_in_order() {
    let s = start(Config {
        socket_buffer_bytes: 6_000,
        ..config()
    })
    .await;
    let c = s.connect("vsn=2.0.0").await;
    let (mut tx, mut rx) = futures::StreamExt::split(c.ws);
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    tx.send(WsMessage::text(join(
        "1",
        "room:budget",
        r#"{"quiet":true}"#,
    )))
    .await
    .expect("send");
    let pad = "b".repeat(5_000);
    let writer = tokio::spawn(async move {
        for i in 0..200 {
            let f = format!(r#"["1","{i}","room:budget","echo",{{"pad":"{pad}"}}]"#);
            tx.feed(WsMessage::text(f)).await.expect("feed");
        }
        tx.flush().await.expect("flush");
        tx
    });
    let mut next = -1i64;
    while next < 199 {
        let msg = tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("replies keep coming")
            .expect("open")
            .expect("frame");
        let WsMessage::Text(t) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
        let want = if next < 0 {
            "1".to_owned()
        } else {
            next.to_string()
        };
        assert_eq!(v[1], json!(want), "replies in order");
        next += 1;
    }
    let _tx = writer.await.expect("writer");
    let m = s.endpoint.metrics();
    assert!(m.backpressure_waits >= 1, "{m:?}");
    assert_eq!(m.sockets_open, 1, "no disconnect");
}

#[tokio::test]
async fn frames_over_the_socket_byte_budget_mark_a_slow_client() {
    let s = start(Config {
        socket_buffer_bytes: 200_000,
        outbound_queue: 1_000_000,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:flood", r#"{"quiet":true}"#).await;
    c.send(r#"["1","2","room:flood","flood",{}]"#).await;
    // Do not read: 16 KiB pushes pile up until the byte budget says stop.
    wait_until(
        "the client counted as slow",
        Duration::from_secs(10),
        || s.endpoint.metrics().slow_clients > 0,
    )
    .await;
    assert_eq!(s.endpoint.metrics().slow_clients, 1);
    drop(c);
}

#[tokio::test]
async fn a_join_payload_over_the_limit_is_refused_before_the_channel_sees_it() {
    let s = start(Config {
        max_join_payload: 1024,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    let pad = "j".repeat(2_000);
    c.send(&join(
        "1",
        "room:j",
        &format!(r#"{{"quiet":true,"pad":"{pad}"}}"#),
    ))
    .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply[4],
        json!({"status": "error", "response": {"reason": "join payload too large"}})
    );
    joined(&mut c, "2", "room:j", r#"{"quiet":true}"#).await;
    let m = s.endpoint.metrics();
    assert_eq!(m.join_payloads_too_large, 1);
    assert_eq!(m.joins_refused, 1);
    assert_eq!(m.channels_open, 1, "the refused join left nothing behind");
}

/// Tracks `{"meta": ...}` on `track`, answering `too large` when refused.
struct Tracked;

impl phx_runtime::Channel for Tracked {
    type Info = ();

    async fn join(
        &mut self,
        _topic: &str,
        _payload: phx_runtime::Payload,
        _ctx: &mut phx_runtime::ChannelContext,
    ) -> Result<phx_runtime::Payload, phx_runtime::Payload> {
        Ok(phx_runtime::Payload::empty_object())
    }

    async fn handle_in(
        &mut self,
        _event: &str,
        payload: phx_runtime::Payload,
        ctx: &mut phx_runtime::ChannelContext,
    ) -> Result<phx_runtime::HandleIn, phx_runtime::RuntimeError> {
        let meta: serde_json::Value = payload.parse()?;
        match ctx.track("me", meta) {
            Ok(()) => Ok(phx_runtime::HandleIn::ok(json!({"tracked": true}))),
            Err(phx_runtime::RuntimeError::TooLarge { size, limit, .. }) => Ok(
                phx_runtime::HandleIn::error(json!({"size": size, "limit": limit})),
            ),
            Err(err) => Err(err),
        }
    }
}

#[tokio::test]
async fn a_presence_meta_over_the_limit_is_refused_and_not_tracked() {
    let s = start_endpoint(
        Endpoint::builder()
            .config(Config {
                max_presence_meta: 1024,
                ..config()
            })
            .channel("track:*", |_, _| Tracked)
            .build(),
    )
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "track:a", "{}").await;
    let pad = "m".repeat(2_000);
    c.send(&format!(r#"["1","2","track:a","track",{{"pad":"{pad}"}}]"#))
        .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(reply[4]["status"], json!("error"), "{reply}");
    assert_eq!(reply[4]["response"]["limit"], json!(1024));
    assert!(
        s.endpoint.presence().list("track:a").is_empty(),
        "nothing tracked"
    );
    c.send(r#"["1","3","track:a","track",{"name":"ok"}]"#).await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(reply[4]["status"], json!("ok"), "{reply}");
    assert_eq!(s.endpoint.presence().list("track:a").len(), 1);
    assert_eq!(s.endpoint.metrics().presence_metas_too_large, 1);
}

#[tokio::test]
async fn internal_topics_match_no_route() {
    let s = start_endpoint(
        Endpoint::builder()
            .config(config())
            .channel("*", |_, _| Tracked)
            .build(),
    )
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    for (i, topic) in ["phx_records:post", "phx:lp:00ff"].iter().enumerate() {
        let r = (i + 1).to_string();
        c.send(&join(&r, topic, "{}")).await;
        let reply = c.recv_event("phx_reply").await;
        assert_eq!(
            reply[4]["status"],
            json!("error"),
            "join of {topic}: {reply}"
        );
        assert_eq!(reply[4]["response"]["reason"], json!("unmatched topic"));
    }
    joined(&mut c, "9", "anything:else", "{}").await;
    let pubsub = s.endpoint.pubsub();
    let refused = pubsub.broadcast_external("phx:lp:00ff", "poll", json!({}).into());
    assert!(matches!(
        refused,
        Err(phx_runtime::RuntimeError::InternalTopic(_))
    ));
    assert!(pubsub
        .broadcast_external("anything:else", "news", json!({}).into())
        .is_ok());
    assert_eq!(s.endpoint.metrics().internal_topics_refused, 1);
}

/// One HTTP/1.1 request on its own connection; the body of the answer.
async fn http_body(addr: SocketAddr, head: String, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(body.as_bytes()).await.expect("body");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
        .await
        .expect("answered")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[tokio::test]
async fn longpoll_frames_waiting_for_a_poll_count_against_the_socket_budget() {
    const BUDGET: usize = 64 << 10;
    let s = start(Config {
        longpoll: true,
        socket_buffer_bytes: BUDGET,
        ..config()
    })
    .await;
    let opened = http_body(
        s.addr,
        "GET /socket/longpoll?vsn=2.0.0 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n".into(),
        "",
    )
    .await;
    let opened: serde_json::Value = serde_json::from_str(&opened).expect("json");
    let token = opened["token"].as_str().expect("token").to_owned();
    let join = join("1", "room:lpb", r#"{"quiet":true}"#);
    let posted = http_body(
        s.addr,
        format!(
            "POST /socket/longpoll?vsn=2.0.0&token={token} HTTP/1.1\r\nhost: a\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            join.len()
        ),
        &join,
    )
    .await;
    assert_eq!(posted, r#"{"status":200}"#);
    // Nobody polls; a WebSocket member shouts 20 × 16 KiB (5 budgets' worth).
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:lpb", r#"{"quiet":true}"#).await;
    let pad = "s".repeat(16 << 10);
    for i in 0..20 {
        c.send(&format!(
            r#"["1","{}","room:lpb","shout_from",{{"pad":"{pad}"}}]"#,
            i + 2
        ))
        .await;
        assert_eq!(c.recv_event("phx_reply").await[4]["status"], json!("ok"));
    }
    wait_until(
        "the session over its budget",
        Duration::from_secs(10),
        || s.endpoint.metrics().longpoll_over_budget > 0,
    )
    .await;
    let m = s.endpoint.metrics();
    assert_eq!(m.longpoll_over_budget, 1, "{m:?}");
    assert_eq!(m.slow_clients, 1);
    // The session is gone: its token opens a new one (410), with nothing of the flood.
    let polled = http_body(
        s.addr,
        format!("GET /socket/longpoll?vsn=2.0.0&token={token} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"),
        "",
    )
    .await;
    assert!(
        polled.len() < BUDGET,
        "a poll returned {} bytes",
        polled.len()
    );
    let polled: serde_json::Value = serde_json::from_str(&polled).expect("json");
    assert_eq!(polled["status"], json!(410));
}
