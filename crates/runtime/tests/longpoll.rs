//! The long-poll transport over raw HTTP: sessions, tokens, batches, expiry and
//! cleanup, disconnect, and WebSocket-only mode.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use phx_runtime::{Config, Payload};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    code: u16,
    body: Value,
}

/// One HTTP/1.1 request on its own connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body_text = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Reply {
        code,
        body: serde_json::from_str(body_text).unwrap_or(Value::Null),
    }
}

fn lp_config() -> Config {
    Config {
        longpoll_window: Duration::from_millis(200),
        ..support::config()
    }
}

async fn open(addr: SocketAddr, query: &str) -> String {
    let r = http(addr, "GET", &format!("/socket/longpoll?{query}"), &[], "").await;
    assert_eq!(
        (r.code, r.body["status"].clone()),
        (200, json!(410)),
        "{:?}",
        r.body
    );
    r.body["token"].as_str().expect("token").to_owned()
}

async fn post(addr: SocketAddr, token: &str, lines: &[String]) -> Value {
    let path = format!("/socket/longpoll?vsn=2.0.0&token={token}");
    http(
        addr,
        "POST",
        &path,
        &[("content-type", "application/x-ndjson")],
        &lines.join("\n"),
    )
    .await
    .body
}

/// Polls until `n` frames came (a few polls at most).
async fn frames(addr: SocketAddr, token: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..10 {
        if out.len() >= n {
            break;
        }
        let r = http(
            addr,
            "GET",
            &format!("/socket/longpoll?vsn=2.0.0&token={token}"),
            &[],
            "",
        )
        .await;
        for m in r.body["messages"].as_array().cloned().unwrap_or_default() {
            out.push(
                serde_json::from_str(m.as_str().expect("frames are strings")).expect("frame JSON"),
            );
        }
    }
    out
}

fn join(topic: &str) -> String {
    json!(["1", "1", topic, "phx_join", {"quiet": true}]).to_string()
}

#[tokio::test]
async fn session_join_and_poll() {
    let s = support::start(lp_config()).await;
    let token = open(s.addr, "vsn=2.0.0").await;
    assert_eq!(
        post(s.addr, &token, &[join("room:lp1")]).await,
        json!({"status": 200})
    );
    let got = frames(s.addr, &token, 1).await;
    assert_eq!(
        got[0],
        json!(["1", "1", "room:lp1", "phx_reply", {"response": {}, "status": "ok"}])
    );
    let r = http(
        s.addr,
        "GET",
        &format!("/socket/longpoll?vsn=2.0.0&token={token}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.body["status"], json!(204));
    assert_eq!(s.endpoint.metrics().longpoll_sessions, 1);
}

#[tokio::test]
async fn ndjson_reads_the_first_100_lines_and_base64_binary_lines() {
    let s = support::start(lp_config()).await;
    let token = open(s.addr, "vsn=2.0.0").await;
    let mut lines = vec![join("room:lp2")];
    // A kind-0 binary push as base64: join_ref "1", ref "2", topic, event "bin", data 01 02.
    let mut bin = vec![0u8, 1, 1, 8, 3];
    bin.extend(b"1");
    bin.extend(b"2");
    bin.extend(b"room:lp2");
    bin.extend(b"bin");
    bin.extend([1, 2]);
    use base64::Engine;
    lines.push(base64::engine::general_purpose::STANDARD.encode(&bin));
    for i in 0..120 {
        lines.push(json!(["1", format!("e{i}"), "room:lp2", "echo", {"i": i}]).to_string());
    }
    assert_eq!(post(s.addr, &token, &lines).await, json!({"status": 200}));
    let got = frames(s.addr, &token, 100).await;
    let echoes: Vec<&Value> = got
        .iter()
        .filter(|f| f[1].as_str().is_some_and(|r| r.starts_with('e')))
        .collect();
    assert_eq!(
        echoes.len(),
        98,
        "100 lines: the join, the binary push and 98 echoes"
    );
    assert_eq!(echoes[97][4]["response"], json!({"i": 97}));
}

#[tokio::test]
async fn stale_join_refs_are_dropped_and_malformed_frames_end_the_session() {
    let s = support::start(lp_config()).await;
    let token = open(s.addr, "vsn=2.0.0").await;
    let stale = json!(["stale", "2", "room:lp3", "echo", {}]).to_string();
    let ok = json!(["1", "3", "room:lp3", "echo", {"fine": 1}]).to_string();
    post(s.addr, &token, &[join("room:lp3"), stale, ok]).await;
    let got = frames(s.addr, &token, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1][1], json!("3"));
    assert_eq!(
        post(s.addr, &token, &["[broken".to_owned()]).await,
        json!({"status": 400})
    );
    assert_eq!(
        post(s.addr, &token, &[join("room:lp3")]).await,
        json!({"status": 410})
    );
    assert!(s.endpoint.metrics().malformed_frames >= 1);
}

#[tokio::test]
async fn an_unpolled_session_expires_and_its_presence_leaves() {
    let endpoint = phx_runtime::Endpoint::builder()
        .config(lp_config())
        .channel("room:*", |_, _| support::PresenceRoom::default())
        .build();
    let s = support::start_endpoint(endpoint).await;
    let token = open(s.addr, "vsn=2.0.0").await;
    post(
        s.addr,
        &token,
        &[json!(["1", "1", "room:lp4", "phx_join", {}]).to_string()],
    )
    .await;
    frames(s.addr, &token, 1).await;
    assert_eq!(s.endpoint.presence().list("room:lp4").len(), 1);
    // Stop polling: within 1.5 windows (checked every 1.5 windows) the session ends.
    support::wait_until("the idle session ended", Duration::from_secs(5), || {
        s.endpoint.metrics().longpoll_sessions == 0
    })
    .await;
    assert!(
        s.endpoint.presence().list("room:lp4").is_empty(),
        "no ghost presence"
    );
    assert_eq!(
        post(s.addr, &token, &[join("room:lp4")]).await,
        json!({"status": 410})
    );
}

#[tokio::test]
async fn disconnect_ends_the_session() {
    let s = support::start(lp_config()).await;
    let token = open(s.addr, "vsn=2.0.0&user_id=77").await;
    s.endpoint
        .pubsub()
        .broadcast("users_socket:77", "disconnect", Payload::empty_object());
    support::wait_until("the session ended", support::WAIT, || {
        s.endpoint.metrics().longpoll_sessions == 0
    })
    .await;
    assert_eq!(
        post(s.addr, &token, &[join("room:lp5")]).await,
        json!({"status": 410})
    );
    let r = http(
        s.addr,
        "GET",
        &format!("/socket/longpoll?vsn=2.0.0&token={token}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.body["status"], json!(410));
    assert_ne!(
        r.body["token"],
        json!(token),
        "a new session, with a new token"
    );
}

#[tokio::test]
async fn refusals_and_methods() {
    let s = support::start(Config {
        check_origin: phx_runtime::CheckOrigin::list(["//example.com"]),
        ..lp_config()
    })
    .await;
    let get =
        |q: &'static str, h: &'static [(&'static str, &'static str)]| http(s.addr, "GET", q, h, "");
    assert_eq!(
        get("/socket/longpoll?vsn=2.0.0&reject=1", &[]).await.body,
        json!({"status": 403})
    );
    assert_eq!(
        get("/socket/longpoll?vsn=9.0.0", &[]).await.body,
        json!({"status": 403})
    );
    assert_eq!(
        get(
            "/socket/longpoll?vsn=2.0.0",
            &[("origin", "http://evil.com")]
        )
        .await
        .body,
        json!({"status": 403})
    );
    assert_eq!(
        get(
            "/socket/longpoll?vsn=2.0.0",
            &[("origin", "https://example.com")]
        )
        .await
        .body["status"],
        json!(410)
    );
    assert_eq!(
        http(s.addr, "PUT", "/socket/longpoll", &[], "").await.code,
        400
    );
    let forged = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        post(s.addr, forged, &[join("room:x")]).await,
        json!({"status": 410})
    );
}

#[tokio::test]
async fn websocket_only_mode_does_not_serve_longpoll() {
    let s = support::start(Config {
        longpoll: false,
        ..lp_config()
    })
    .await;
    assert_eq!(
        http(s.addr, "GET", "/socket/longpoll?vsn=2.0.0", &[], "")
            .await
            .code,
        404
    );
    let mut c = s.connect("vsn=2.0.0").await;
    c.send(r#"[null,"1","phoenix","heartbeat",{}]"#).await;
    assert!(c.recv().await.contains("phx_reply"));
}

#[tokio::test]
async fn pipelined_joins_in_one_post_are_answered_in_order() {
    let s = support::start(lp_config()).await;
    let token = open(s.addr, "vsn=2.0.0").await;
    let mut lines: Vec<String> = (1..=40)
        .map(|i| {
            let topic = if i % 5 == 0 {
                format!("nowhere:{i}")
            } else {
                format!("room:lp{i}")
            };
            json!([i.to_string(), i.to_string(), topic, "phx_join", {"quiet": true}]).to_string()
        })
        .collect();
    lines.push(r#"[null,"hb","phoenix","heartbeat",{}]"#.to_owned());
    assert_eq!(post(s.addr, &token, &lines).await, json!({"status": 200}));
    let got = frames(s.addr, &token, 41).await;
    let refs: Vec<Value> = got
        .iter()
        .filter(|f| f[3] == json!("phx_reply"))
        .map(|f| f[1].clone())
        .collect();
    let mut expected: Vec<Value> = (1..=40).map(|i| json!(i.to_string())).collect();
    expected.push(json!("hb"));
    assert_eq!(refs, expected);
}

#[tokio::test]
async fn long_poll_limits_body_line_sessions_and_origin() {
    let s = support::start_endpoint(
        phx_runtime::Endpoint::builder()
            .config(Config {
                check_origin: phx_runtime::CheckOrigin::Host("example.com".to_owned()),
                longpoll_max_body: 4_000,
                longpoll_max_line: 300,
                max_longpoll_sessions: 1,
                ..lp_config()
            })
            .channel("room:*", |_, _| support::TestRoom::default())
            .build(),
    )
    .await;
    let good = [("origin", "https://example.com")];
    let r = http(s.addr, "GET", "/socket/longpoll?vsn=2.0.0", &good, "").await;
    assert_eq!(r.body["status"], json!(410));
    let token = r.body["token"].as_str().expect("token").to_owned();
    let path = format!("/socket/longpoll?vsn=2.0.0&token={token}");
    // check_origin holds on every request, not only the one that opened the session.
    let evil = [("origin", "https://evil.com")];
    let r = http(s.addr, "POST", &path, &evil, &join("room:x")).await;
    assert_eq!(r.body, json!({"status": 403}));
    // The session cap: a second session is refused.
    let r = http(s.addr, "GET", "/socket/longpoll?vsn=2.0.0", &good, "").await;
    assert_eq!(r.body, json!({"status": 403}));
    // A body over the limit is refused before it is read; a line over the limit too.
    let big = "x".repeat(5_000);
    let r = http(s.addr, "POST", &path, &good, &big).await;
    assert_eq!(r.code, 413);
    let long_line = json!(["1", "1", "room:y", "phx_join", {"pad": "y".repeat(400)}]).to_string();
    let ndjson = [
        ("origin", "https://example.com"),
        ("content-type", "application/x-ndjson"),
    ];
    let r = http(s.addr, "POST", &path, &ndjson, &long_line).await;
    assert_eq!(r.body, json!({"status": 400}));
    let m = s.endpoint.metrics();
    assert!(m.longpoll_refused >= 3, "{m:?}");
}

#[tokio::test]
async fn a_post_behind_a_full_channel_mailbox_waits_and_loses_nothing() {
    let s = support::start(Config {
        channel_mailbox: 1,
        ..lp_config()
    })
    .await;
    let token = open(s.addr, "vsn=2.0.0").await;
    let mut lines = vec![join("room:lpflow")];
    lines.extend(
        (0..60).map(|i| json!(["1", i.to_string(), "room:lpflow", "echo", {"i": i}]).to_string()),
    );
    assert_eq!(post(s.addr, &token, &lines).await, json!({"status": 200}));
    let got = frames(s.addr, &token, 61).await;
    let refs: Vec<Value> = got
        .iter()
        .filter(|f| f[3] == json!("phx_reply"))
        .map(|f| f[1].clone())
        .collect();
    let mut expected = vec![json!("1")];
    expected.extend((0..60).map(|i| json!(i.to_string())));
    assert_eq!(refs, expected, "every line handled, in order");
}

/// A room whose `sleep` keeps the channel busy for 10 s.
struct Sleeper;

impl phx_runtime::Channel for Sleeper {
    type Info = ();

    async fn join(
        &mut self,
        _t: &str,
        _p: Payload,
        _ctx: &mut phx_runtime::ChannelContext,
    ) -> Result<Payload, Payload> {
        Ok(Payload::empty_object())
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        _ctx: &mut phx_runtime::ChannelContext,
    ) -> Result<phx_runtime::HandleIn, phx_runtime::RuntimeError> {
        if event == "sleep" {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Ok(phx_runtime::HandleIn::ok(payload))
    }
}

#[tokio::test]
async fn a_post_behind_a_busy_channel_answers_408_within_a_window() {
    // Phoenix answers {"status":408} when its session does not take a message
    // within the window; the POST must not outlast phoenix.js's request timeout.
    let endpoint = phx_runtime::Endpoint::builder()
        .config(Config {
            channel_mailbox: 1,
            // Unpolled, the session lives 1.5 windows: longer than the POST's bound.
            longpoll_window: Duration::from_secs(2),
            ..lp_config()
        })
        .channel("room:*", |_, _| Sleeper)
        .build();
    let s = support::start_endpoint(endpoint).await;
    let token = open(s.addr, "vsn=2.0.0").await;
    let mut lines = vec![join("room:busy")];
    lines.push(json!(["1", "2", "room:busy", "sleep", {}]).to_string());
    lines.extend((3..6).map(|i| json!(["1", i.to_string(), "room:busy", "echo", {}]).to_string()));
    // The channel sleeps 10 s, past the 5 s the request helper waits: only the
    // window's bound can answer in time.
    assert_eq!(post(s.addr, &token, &lines).await, json!({"status": 408}));
    // The join went through before the POST gave up.
    let got = frames(s.addr, &token, 1).await;
    assert_eq!(got.first().map(|f| f[1].clone()), Some(json!("1")));
    assert!(s.endpoint.metrics().backpressure_waits >= 1);
}
