//! The socket and channel lifecycle over real WebSocket connections, checked
//! against what Phoenix does (protocol-spec/socket.md), in V1 and V2.

mod support;

use std::time::Duration;

use phx_runtime::{CheckOrigin, Config};
use serde_json::json;
use support::*;

#[tokio::test]
async fn heartbeat_reply_is_exact_in_both_serializers() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    c.send(r#"[null,"1","phoenix","heartbeat",{}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"[null,"1","phoenix","phx_reply",{"response":{},"status":"ok"}]"#
    );
    let mut c = s.connect("vsn=1.0.0").await;
    c.send(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}"#)
        .await;
    assert_eq!(
        c.recv().await,
        r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"7","topic":"phoenix"}"#
    );
    // No vsn at all means V1.
    let mut c = s.connect("").await;
    c.send(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"8"}"#)
        .await;
    assert!(c.recv().await.starts_with(r#"{"event":"phx_reply""#));
}

#[tokio::test]
async fn join_reply_comes_before_pushes_and_broadcasts() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    c.send(&join("11", "room:lobby", "{}")).await;
    assert_eq!(
        c.recv().await,
        r#"["11","11","room:lobby","phx_reply",{"response":{},"status":"ok"}]"#
    );
    assert_eq!(
        c.recv().await,
        r#"["11",null,"room:lobby","joined",{"status":"connected","topic":"room:lobby"}]"#
    );
    assert_eq!(
        c.recv().await,
        r#"[null,null,"room:lobby","user_entered",{"user":"u"}]"#
    );
}

#[tokio::test]
async fn v1_join_reply_and_pushes_carry_no_join_ref() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=1.0.0").await;
    c.send(r#"{"topic":"room:v1","event":"phx_join","payload":{},"ref":"1"}"#)
        .await;
    assert_eq!(
        c.recv().await,
        r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"1","topic":"room:v1"}"#
    );
    assert_eq!(
        c.recv().await,
        r#"{"event":"joined","payload":{"status":"connected","topic":"room:v1"},"ref":null,"topic":"room:v1"}"#
    );
    assert_eq!(
        c.recv().await,
        r#"{"event":"user_entered","payload":{"user":"u"},"ref":null,"topic":"room:v1"}"#
    );
    // V1 phx_close after a leave carries ref null (the join had no join_ref).
    c.send(r#"{"topic":"room:v1","event":"phx_leave","payload":{},"ref":"2"}"#)
        .await;
    assert_eq!(
        c.recv().await,
        r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"2","topic":"room:v1"}"#
    );
    assert_eq!(
        c.recv().await,
        r#"{"event":"phx_close","payload":{},"ref":null,"topic":"room:v1"}"#
    );
}

#[tokio::test]
async fn leave_replies_then_closes_then_terminate_pushes() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "11", "room:leave", r#"{"quiet":true}"#).await;
    c.send(r#"["11","2","room:leave","phx_leave",{}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"["11","2","room:leave","phx_reply",{"response":{},"status":"ok"}]"#
    );
    assert_eq!(c.recv().await, r#"["11","11","room:leave","phx_close",{}]"#);
    assert_eq!(
        c.recv().await,
        r#"["11",null,"room:leave","you_left",{"message":"bye!"}]"#
    );
    // The topic is no longer joined.
    c.send(r#"["11","3","room:leave","echo",{}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"[null,"3","room:leave","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#
    );
}

#[tokio::test]
async fn leave_of_an_unjoined_topic_is_ok_echoing_refs() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    c.send(r#"["5","6","room:never","phx_leave",{}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"["5","6","room:never","phx_reply",{"response":{},"status":"ok"}]"#
    );
}

#[tokio::test]
async fn duplicate_join_replies_then_closes_the_old_join_ref() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:dup", r#"{"quiet":true}"#).await;
    c.send(&join("2", "room:dup", r#"{"quiet":true}"#)).await;
    assert_eq!(
        c.recv().await,
        r#"["2","2","room:dup","phx_reply",{"response":{},"status":"ok"}]"#
    );
    assert_eq!(c.recv().await, r#"["1","1","room:dup","phx_close",{}]"#);
    // The new channel answers; the old one (killed, no terminate) sends nothing more.
    c.send(r#"["2","3","room:dup","echo",{"a":1}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"["2","3","room:dup","phx_reply",{"response":{"a":1},"status":"ok"}]"#
    );
}

#[tokio::test]
async fn stale_join_ref_messages_and_leaves_are_dropped() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "4", "room:stale", r#"{"quiet":true}"#).await;
    c.send(r#"["3","5","room:stale","echo",{}]"#).await;
    c.send(r#"["3","6","room:stale","phx_leave",{}]"#).await;
    // Null join_ref is accepted.
    c.send(r#"[null,"7","room:stale","echo",{"n":7}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"["4","7","room:stale","phx_reply",{"response":{"n":7},"status":"ok"}]"#
    );
    c.send(r#"[null,"8","room:stale","phx_leave",{}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"["4","8","room:stale","phx_reply",{"response":{},"status":"ok"}]"#
    );
    assert_eq!(c.recv().await, r#"["4","4","room:stale","phx_close",{}]"#);
}

#[tokio::test]
async fn unmatched_topics_get_phoenix_exact_error_with_null_join_ref() {
    let s = start(config()).await;
    for vsn in ["1.0.0", "2.0.0"] {
        let mut c = s.connect(&format!("vsn={vsn}")).await;
        if vsn == "2.0.0" {
            c.send(r#"["1","1","unmatched-topic","phx_join",{}]"#).await;
            assert_eq!(
                c.recv().await,
                r#"[null,"1","unmatched-topic","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#
            );
            c.send(r#"["1","2","room:notjoined","echo",{}]"#).await;
            assert_eq!(
                c.recv().await,
                r#"[null,"2","room:notjoined","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]"#
            );
        } else {
            c.send(r#"{"topic":"unmatched-topic","event":"phx_join","payload":{},"ref":"1"}"#)
                .await;
            assert_eq!(
                c.recv().await,
                r#"{"event":"phx_reply","payload":{"response":{"reason":"unmatched topic"},"status":"error"},"ref":"1","topic":"unmatched-topic"}"#
            );
        }
    }
    assert!(s.endpoint.metrics().unmatched_topics >= 3);
}

#[tokio::test]
async fn channel_limit_refuses_with_too_many_channels() {
    let s = start(Config {
        max_channels: 2,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:a", r#"{"quiet":true}"#).await;
    joined(&mut c, "2", "room:b", r#"{"quiet":true}"#).await;
    c.send(&join("3", "room:c", "{}")).await;
    assert_eq!(
        c.recv().await,
        r#"["3","3","room:c","phx_reply",{"response":{"reason":"too many channels joined"},"status":"error"}]"#
    );
}

#[tokio::test]
async fn default_limit_is_100_channels() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    for i in 1..=100 {
        joined(
            &mut c,
            &i.to_string(),
            &format!("room:{i}"),
            r#"{"quiet":true}"#,
        )
        .await;
    }
    c.send(&join("101", "room:101", "{}")).await;
    let reply = c.recv_json().await;
    assert_eq!(
        reply,
        json!(["101", "101", "room:101", "phx_reply", {"response": {"reason": "too many channels joined"}, "status": "error"}])
    );
}

#[tokio::test]
async fn crash_sends_phx_error_and_spares_other_channels() {
    let s = start(config()).await;
    for (vsn, event) in [("2.0.0", "boom"), ("2.0.0", "fail")] {
        let mut c = s.connect(&format!("vsn={vsn}")).await;
        joined(&mut c, "1", "room:crash", r#"{"quiet":true}"#).await;
        joined(&mut c, "2", "other:fine", r#"{"quiet":true}"#).await;
        c.send(&format!(r#"["1","3","room:crash","{event}",{{}}]"#))
            .await;
        let err = c.recv_event("phx_error").await;
        assert_eq!(
            err,
            json!(["1", "1", "room:crash", "phx_error", {"reason": "channel_crash"}])
        );
        c.send(r#"["2","4","other:fine","echo",{"still":"here"}]"#)
            .await;
        assert_eq!(
            c.recv_event("phx_reply").await[4],
            json!({"response": {"still": "here"}, "status": "ok"})
        );
        // The crashed topic can be joined again.
        joined(&mut c, "5", "room:crash", r#"{"quiet":true}"#).await;
    }
    assert!(s.endpoint.metrics().channel_crashes >= 2);
}

#[tokio::test]
async fn join_errors_and_join_crashes() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    c.send(&join("11", "room:no", r#"{"refuse":true}"#)).await;
    assert_eq!(
        c.recv().await,
        r#"["11","11","room:no","phx_reply",{"response":{"reason":"refused"},"status":"error"}]"#
    );
    c.send(&join("12", "room:panic", r#"{"panic":true}"#)).await;
    assert_eq!(
        c.recv().await,
        r#"["12","12","room:panic","phx_reply",{"response":{"reason":"join crashed"},"status":"error"}]"#
    );
    // A refused join sends no phx_close and leaves nothing joined.
    c.send(r#"["11","13","room:no","echo",{}]"#).await;
    assert_eq!(
        c.recv_json().await[4]["response"],
        json!({"reason": "unmatched topic"})
    );
}

#[tokio::test]
async fn stop_sends_phx_close() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:stop", r#"{"quiet":true}"#).await;
    c.send(r#"["1","2","room:stop","stop",{}]"#).await;
    assert_eq!(c.recv().await, r#"["1","1","room:stop","phx_close",{}]"#);
}

#[tokio::test]
async fn vsn_negotiation_refuses_unknown_versions() {
    let s = start(config()).await;
    for vsn in ["2.1.0", "123.1.1", "garbage", "3.0.0"] {
        assert_eq!(
            s.try_connect(&format!("vsn={vsn}"), &[]).await.err(),
            Some(403),
            "vsn {vsn}"
        );
    }
    assert!(s.try_connect("vsn=2.0.0", &[]).await.is_ok());
    assert!(s.try_connect("vsn=1.0.0", &[]).await.is_ok());
}

#[tokio::test]
async fn check_origin_policies() {
    let s = start(Config::default()).await; // Phoenix's default: host must be localhost
    assert!(s
        .try_connect("vsn=2.0.0", &[("origin", "http://localhost:4000")])
        .await
        .is_ok());
    assert_eq!(
        s.try_connect("vsn=2.0.0", &[("origin", "https://evil.com")])
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        s.try_connect("vsn=2.0.0", &[("origin", "null")])
            .await
            .err(),
        Some(403)
    );
    assert!(
        s.try_connect("vsn=2.0.0", &[]).await.is_ok(),
        "no Origin header passes"
    );
    let s = start(Config {
        check_origin: CheckOrigin::list(["//example.com"]),
        ..config()
    })
    .await;
    assert!(s
        .try_connect("vsn=2.0.0", &[("origin", "https://example.com")])
        .await
        .is_ok());
    assert_eq!(
        s.try_connect("vsn=2.0.0", &[("origin", "http://notallowed.com")])
            .await
            .err(),
        Some(403)
    );
    let s = start(config()).await;
    assert!(s
        .try_connect("vsn=2.0.0", &[("origin", "http://anything.example")])
        .await
        .is_ok());
}

#[tokio::test]
async fn connect_refusals_use_the_handlers_status() {
    let s = start(config()).await;
    assert_eq!(
        s.try_connect("vsn=2.0.0&reject=1", &[]).await.err(),
        Some(403)
    );
    assert_eq!(
        s.try_connect("vsn=2.0.0&reject=429", &[]).await.err(),
        Some(429)
    );
    assert!(s.endpoint.metrics().sockets_refused >= 2);
}

async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[tokio::test]
async fn plain_http_requests_get_400() {
    let s = start(config()).await;
    let resp = raw_http(
        s.addr,
        "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nhost: localhost\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("'connection' header must contain 'upgrade'"),
        "{resp}"
    );
    let resp = raw_http(
        s.addr,
        "POST /socket/websocket HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[tokio::test]
async fn auth_token_subprotocol_is_accepted_and_echoed() {
    use base64::Engine;
    let s = start(config()).await;
    let token = base64::engine::general_purpose::STANDARD_NO_PAD.encode("secret-token");
    let protocols = format!("phoenix, base64url.bearer.phx.{token}");
    let mut c = s
        .try_connect("vsn=2.0.0", &[("sec-websocket-protocol", &protocols)])
        .await
        .expect("accepted");
    assert_eq!(
        c.response_headers
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or("")),
        Some("phoenix")
    );
    c.send(&join("1", "room:auth", r#"{"whoami":true}"#)).await;
    assert_eq!(
        c.recv_json().await[4]["response"],
        json!({"auth_token": "secret-token"})
    );
}

#[tokio::test]
async fn configured_subprotocols() {
    let s = start(Config {
        subprotocols: Some(vec!["sip".into()]),
        ..config()
    })
    .await;
    let c = s
        .try_connect("vsn=2.0.0", &[("sec-websocket-protocol", "sip")])
        .await
        .expect("sip accepted");
    assert_eq!(
        c.response_headers
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or("")),
        Some("sip")
    );
    assert_eq!(
        s.try_connect("vsn=2.0.0", &[("sec-websocket-protocol", "mqtt")])
            .await
            .err(),
        Some(403)
    );
    assert!(
        s.try_connect("vsn=2.0.0", &[]).await.is_ok(),
        "no subprotocol offered passes"
    );
}

#[tokio::test]
async fn disconnect_broadcast_closes_every_socket_of_the_id_with_1001() {
    let s = start(config()).await;
    let mut a = s.connect("vsn=2.0.0&user_id=42").await;
    let mut b = s.connect("vsn=1.0.0&user_id=42").await;
    let mut other = s.connect("vsn=2.0.0&user_id=7").await;
    joined(&mut a, "1", "room:d1", r#"{"quiet":true}"#).await;
    s.endpoint.pubsub().broadcast(
        "users_socket:42",
        "disconnect",
        phx_runtime::Payload::empty_object(),
    );
    assert_eq!(a.close_code().await, Some(1001));
    assert_eq!(b.close_code().await, Some(1001));
    other.send(r#"[null,"1","phoenix","heartbeat",{}]"#).await;
    assert!(
        other.recv().await.contains("phx_reply"),
        "other users stay connected"
    );
}

#[tokio::test]
async fn idle_sockets_are_closed_and_heartbeating_ones_stay() {
    let s = start(Config {
        idle_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut idle = s.connect("vsn=2.0.0").await;
    let mut alive = s.connect("vsn=2.0.0").await;
    // Heartbeat every 100 ms (a third of the timeout: the pause between two
    // heartbeats is the point, and leaves 200 ms for a slow round trip) for as
    // long as it takes the idle socket to be closed, then once more.
    let mut beats = 0;
    let closed = loop {
        beats += 1;
        alive
            .send(&format!(r#"[null,"{beats}","phoenix","heartbeat",{{}}]"#))
            .await;
        assert!(alive.recv().await.contains("phx_reply"));
        tokio::select! {
            code = idle.close_code() => break code,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    assert_eq!(closed, Some(1001));
    assert!(
        beats > 1,
        "the idle socket outlived at least one heartbeat pause"
    );
    alive
        .send(r#"[null,"last","phoenix","heartbeat",{}]"#)
        .await;
    assert!(
        alive.recv().await.contains("phx_reply"),
        "the heartbeating socket is still open"
    );
    assert_eq!(s.endpoint.metrics().idle_timeouts, 1);
}

#[derive(Debug)]
enum Bad {
    Text(&'static str),
    Binary(Vec<u8>),
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let s = start(config()).await;
    let mut bystander = s.connect("vsn=2.0.0").await;
    let cases: [(&str, Bad); 5] = [
        ("vsn=2.0.0", Bad::Text("{not json")),
        ("vsn=2.0.0", Bad::Text(r#"["1","2","t","e"]"#)),
        (
            "vsn=1.0.0",
            Bad::Text(r#"[null,"1","phoenix","heartbeat",{}]"#),
        ),
        ("vsn=2.0.0", Bad::Binary(vec![0, 5, 5])),
        (
            "vsn=2.0.0",
            Bad::Binary(vec![1, 0, 0, 1, 2, b't', b'o', b'k']),
        ),
    ];
    for (query, bad) in cases {
        let mut c = s.connect(query).await;
        let what = format!("{bad:?}");
        match bad {
            Bad::Text(t) => c.send(t).await,
            Bad::Binary(b) => c.send_bin(b).await,
        }
        assert_eq!(c.close_code().await, Some(1011), "{query} {what}");
    }
    bystander
        .send(r#"[null,"1","phoenix","heartbeat",{}]"#)
        .await;
    assert!(bystander.recv().await.contains("phx_reply"));
    assert!(s.endpoint.metrics().malformed_frames >= 5);
}

#[tokio::test]
async fn oversize_frames_close_with_1009() {
    let s = start(Config {
        max_frame_size: 1024,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    let big = format!(
        r#"[null,"1","phoenix","heartbeat",{{"pad":"{}"}}]"#,
        "x".repeat(4096)
    );
    c.send(&big).await;
    assert_eq!(c.close_code().await, Some(1009));
    assert_eq!(s.endpoint.metrics().oversize_frames, 1);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected() {
    let s = start(Config {
        outbound_queue: 64,
        ..config()
    })
    .await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:slow", r#"{"quiet":true}"#).await;
    c.send(r#"["1","2","room:slow","flood",{}]"#).await;
    // Do not read: the server's queue for this client fills and it is dropped.
    wait_until(
        "the client counted as slow",
        Duration::from_secs(10),
        || s.endpoint.metrics().slow_clients > 0,
    )
    .await;
    assert_eq!(s.endpoint.metrics().slow_clients, 1);
    wait_until("the slow socket gone", Duration::from_secs(10), || {
        s.endpoint.metrics().sockets_open == 0
    })
    .await;
}

#[tokio::test]
async fn drain_closes_sockets_with_1012() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:drain", r#"{"quiet":true}"#).await;
    let endpoint = s.endpoint.clone();
    let drain = tokio::spawn(async move { endpoint.drain().await });
    assert_eq!(c.close_code().await, Some(1012));
    drain.await.expect("drain finishes");
    assert_eq!(s.endpoint.metrics().sockets_open, 0);
}

#[tokio::test]
async fn broadcast_reaches_all_and_broadcast_from_skips_the_sender() {
    let s = start(config()).await;
    let mut a = s.connect("vsn=2.0.0").await;
    let mut b = s.connect("vsn=1.0.0").await;
    joined(&mut a, "1", "room:bc", r#"{"quiet":true}"#).await;
    b.send(r#"{"topic":"room:bc","event":"phx_join","payload":{"quiet":true},"ref":"1","join_ref":"1"}"#).await;
    b.recv_event("phx_reply").await;
    a.send(r#"["1","2","room:bc","shout",{"n":1}]"#).await;
    assert_eq!(a.recv().await, r#"[null,null,"room:bc","shout",{"n":1}]"#);
    assert_eq!(
        b.recv().await,
        r#"{"event":"shout","payload":{"n":1},"ref":null,"topic":"room:bc"}"#
    );
    a.recv_event("phx_reply").await;
    a.send(r#"["1","3","room:bc","shout_from",{"n":2}]"#).await;
    assert_eq!(
        b.recv().await,
        r#"{"event":"shout","payload":{"n":2},"ref":null,"topic":"room:bc"}"#
    );
    assert_eq!(
        a.recv().await,
        r#"["1","3","room:bc","phx_reply",{"response":{},"status":"ok"}]"#
    );
    // Application code outside any channel: lifecycle events of a record.
    s.endpoint
        .pubsub()
        .broadcast("room:bc", "updated", json!({"id": 42}).into());
    assert_eq!(
        a.recv().await,
        r#"[null,null,"room:bc","updated",{"id":42}]"#
    );
    assert_eq!(
        b.recv().await,
        r#"{"event":"updated","payload":{"id":42},"ref":null,"topic":"room:bc"}"#
    );
}

#[tokio::test]
async fn intercepted_events_arrive_as_pushes_with_join_ref() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "7", "room:int", r#"{"quiet":true}"#).await;
    c.send(r#"["7","8","room:int","new_msg",{"body":"hi"}]"#)
        .await;
    assert_eq!(
        c.recv().await,
        r#"["7",null,"room:int","new_msg",{"body":"hi","transport":"websocket"}]"#
    );
}

#[tokio::test]
async fn binary_pushes_and_replies_are_byte_exact() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "11", "room:bin", r#"{"quiet":true}"#).await;
    let mut frame = vec![0u8, 2, 1, 8, 3];
    frame.extend(b"11");
    frame.extend(b"2");
    frame.extend(b"room:bin");
    frame.extend(b"bin");
    frame.extend([1, 2]);
    c.send_bin(frame).await;
    // Push: kind 0, no ref: 00 | 2 | 8 | 12 | "11" "room:bin" "binary_event" | 00 01
    let push = format!(
        "hex:0002080c{}{}{}0001",
        hex(b"11"),
        hex(b"room:bin"),
        hex(b"binary_event")
    );
    assert_eq!(c.recv().await, push);
    // Reply: kind 1: 01 | 2 | 1 | 8 | 2 | "11" "2" "room:bin" "ok" | 01 02 03 04
    let reply = format!(
        "hex:0102010802{}{}{}{}01020304",
        hex(b"11"),
        hex(b"2"),
        hex(b"room:bin"),
        hex(b"ok")
    );
    assert_eq!(c.recv().await, reply);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn pings_get_pongs() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    c.ws.send(Message::Ping(bytes::Bytes::from_static(b"123")))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(WAIT, c.ws.next())
        .await
        .expect("pong in time");
    assert!(
        matches!(pong, Some(Ok(Message::Pong(ref p))) if p.as_ref() == b"123"),
        "{pong:?}"
    );
}

#[tokio::test]
async fn metrics_count_sockets_and_joins() {
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    joined(&mut c, "1", "room:m", r#"{"quiet":true}"#).await;
    let m = s.endpoint.metrics();
    assert_eq!(m.sockets_open, 1);
    assert_eq!(m.channels_open, 1);
    assert_eq!(m.joins_ok, 1);
    assert!(m.to_prometheus().contains("phx_joins_ok 1"));
}

#[tokio::test]
async fn numeric_refs_are_accepted_and_echoed_as_numbers() {
    // Some clients (e.g. the phyllo crate) send refs as JSON numbers; Phoenix does not
    // check their type and answers with the same values.
    let s = start(config()).await;
    let mut c = s.connect("vsn=2.0.0").await;
    c.send(r#"[null,7,"phoenix","heartbeat",{}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"[null,7,"phoenix","phx_reply",{"response":{},"status":"ok"}]"#
    );
    c.send(r#"[1,1,"room:num","phx_join",{"quiet":true}]"#)
        .await;
    assert_eq!(
        c.recv().await,
        r#"[1,1,"room:num","phx_reply",{"response":{},"status":"ok"}]"#
    );
    c.send(r#"[1,2,"room:num","echo",{"n":2}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"[1,2,"room:num","phx_reply",{"response":{"n":2},"status":"ok"}]"#
    );
    // A string "1" is not the number 1: as in Phoenix, it is a different join_ref.
    c.send(r#"["1",3,"room:num","echo",{}]"#).await;
    c.send(r#"[null,4,"phoenix","heartbeat",{}]"#).await;
    assert_eq!(
        c.recv().await,
        r#"[null,4,"phoenix","phx_reply",{"response":{},"status":"ok"}]"#
    );
}
