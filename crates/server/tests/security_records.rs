//! Attack replays on the editing app's records (issue 22): what a stranger can
//! make the server keep is bounded. Huge records are refused without growing
//! the server's memory, a kind cannot be filled past its limit, and the
//! `events:<kind>` join reply stays under page size × record bound however
//! many records the kind holds (the rest is reached page by page with `list`).
//!
//! Drives `phx-server` over a raw WebSocket (V2 JSON frames).

mod common;

use common::{http, Server};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client that pushes and waits for the reply to each push.
struct Client {
    ws: Ws,
    next_ref: u64,
}

impl Client {
    async fn connect(addr: &str) -> Client {
        let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client { ws, next_ref: 0 }
    }

    /// Sends `[join_ref, ref, topic, event, payload]`; returns the reply's
    /// `{"status", "response"}` and the reply frame's length.
    async fn call(&mut self, topic: &str, event: &str, payload: Value) -> (Value, usize) {
        self.next_ref += 1;
        let r = self.next_ref.to_string();
        let frame = json!(["1", r, topic, event, payload]).to_string();
        self.ws.send(Message::text(frame)).await.expect("send");
        loop {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(30), self.ws.next())
                .await
                .expect("a reply in time")
                .expect("open")
                .expect("frame");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).expect("JSON");
            if v[3] == "phx_reply" && v[1] == r.as_str() {
                return (v[4].clone(), text.len());
            }
        }
    }
}

/// The resident memory of a process, in bytes (Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

#[tokio::test]
async fn twenty_creates_of_5_mb_are_refused_and_memory_stays_bounded() {
    let server = Server::start(Some("t"), &[]);
    let mut c = Client::connect(&server.addr).await;
    let (joined, _) = c.call("events:entity", "phx_join", json!({})).await;
    assert_eq!(joined["status"], "ok", "{joined}");
    let total = joined["response"]["total"].as_u64().expect("total");
    let before = rss(server.pid());
    let huge = "x".repeat(5 << 20);
    for _ in 0..20 {
        let (reply, _) = c
            .call(
                "events:entity",
                "create",
                json!({"params": {"title": huge}}),
            )
            .await;
        assert_eq!(
            reply["status"],
            "error",
            "{}",
            &reply.to_string()[..200.min(reply.to_string().len())]
        );
        assert_eq!(reply["response"], json!({"reason": "too_large"}));
    }
    // And through an editor: form changes and saves of 5 MB are refused too.
    let (ed, _) = c
        .call(
            "edit:entity:1",
            "phx_join",
            json!({"user": {"id": "m", "name": "M"}}),
        )
        .await;
    assert_eq!(ed["response"]["role"], "owner", "{ed}");
    for event in ["form_change", "save"] {
        let (reply, _) = c
            .call("edit:entity:1", event, json!({"params": {"title": huge}}))
            .await;
        assert_eq!(reply["response"], json!({"reason": "too_large"}), "{event}");
    }
    let after = rss(server.pid());
    let grown = after.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "RSS grew by {grown} bytes over 110 MB refused ({before} → {after})"
    );
    let (again, _) = c.call("events:entity", "phx_join", json!({})).await;
    assert_eq!(
        again["response"]["total"].as_u64(),
        Some(total),
        "nothing was stored"
    );
    let (_, metrics) = http(&server.admin, "GET", "/metrics", Some("Bearer t"));
    assert!(
        metrics.contains("phx_editing_refusals_total{kind=\"entity\",reason=\"too_large\"} 22"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("refusals"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.contains("phx_editing_max_record_bytes 65536"),
        "the limit is shown"
    );
}

#[tokio::test]
async fn a_kind_cannot_be_filled_past_its_limit_and_the_events_join_reply_stays_bounded() {
    const MAX_RECORD: usize = 4096;
    const PAGE: usize = 10;
    const LIMIT: u64 = 40;
    let server = Server::start(
        Some("t"),
        &[
            "--max-record-bytes",
            &MAX_RECORD.to_string(),
            "--list-page-size",
            &PAGE.to_string(),
            "--max-records-per-kind",
            &LIMIT.to_string(),
        ],
    );
    let mut c = Client::connect(&server.addr).await;
    let (joined, _) = c.call("events:entity", "phx_join", json!({})).await;
    let seeded = joined["response"]["total"].as_u64().expect("total");
    let body = "b".repeat(MAX_RECORD - 100);
    let mut created = 0;
    for i in 0..LIMIT + 5 {
        let (reply, _) = c
            .call(
                "events:entity",
                "create",
                json!({"params": {"title": format!("r{i}"), "body": body}}),
            )
            .await;
        if reply["status"] == "ok" {
            created += 1;
        } else {
            assert_eq!(
                reply["response"],
                json!({"reason": "too_many_records"}),
                "{reply}"
            );
        }
    }
    assert_eq!(created + seeded, LIMIT, "the kind holds at most its limit");
    // A fresh join: the newest page only, bounded, with the total and a cursor.
    let mut d = Client::connect(&server.addr).await;
    let (page, len) = d.call("events:entity", "phx_join", json!({})).await;
    let bound = PAGE * (MAX_RECORD + 200) + 200;
    assert!(len < bound, "the join reply is {len} bytes, over {bound}");
    assert_eq!(page["response"]["total"].as_u64(), Some(LIMIT));
    assert_eq!(
        page["response"]["records"].as_array().map(Vec::len),
        Some(PAGE)
    );
    // Every record is reachable page by page.
    let mut seen = PAGE;
    let mut next = page["response"]["next"].clone();
    while let Value::String(cursor) = next {
        let (more, len) = d
            .call("events:entity", "list", json!({"after": cursor}))
            .await;
        assert!(len < bound);
        seen += more["response"]["records"].as_array().map_or(0, Vec::len);
        next = more["response"]["next"].clone();
    }
    assert_eq!(seen as u64, LIMIT);
    let (bad, _) = d
        .call("events:entity", "list", json!({"after": "not a cursor"}))
        .await;
    assert_eq!(bad["response"], json!({"reason": "bad_request"}));
}
