//! Benchmark (not a test): saves per second through the wire for a store, and
//! with PostgreSQL the latency from an `UPDATE` made in the database to the
//! `updated` event at a client.
//!
//! ```sh
//! cargo run --release -p phx-editing --example saves -- sqlite::memory:
//! cargo run --release -p phx-editing --example saves -- sqlite:///tmp/bench.db
//! cargo run --release -p phx-editing --example saves -- postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! It serves one kind (`bench`) on a free loopback port and drives it with
//! `CLIENTS` WebSocket clients (V2 JSON), each the owner of its own record,
//! each saving `SAVES` times one after another (a save waits for its reply).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use phx_editing::{Database, Editing, Records};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 8;
const SAVES: usize = 250;
const UPDATES: usize = 200;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn client(addr: &str) -> Ws {
    let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

/// Pushes and waits for the reply to that push.
async fn call(ws: &mut Ws, r: u64, topic: &str, event: &str, payload: Value) -> Value {
    let frame = json!(["1", r.to_string(), topic, event, payload]).to_string();
    ws.send(Message::text(frame)).await.expect("send");
    loop {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("socket closed");
        };
        let v: Value = serde_json::from_str(&text).expect("JSON");
        if v[3] == "phx_reply" && v[1] == r.to_string().as_str() {
            return v[4].clone();
        }
    }
}

/// The `p`th percentile of sorted durations.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite::memory:".to_owned());
    let db = Database::connect(&url).await?;
    let bench = Editing::new("bench", db.clone());
    let endpoint = bench.mount(phx_runtime::Endpoint::builder()).build();
    bench.start(endpoint.pubsub());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let served = endpoint.clone();
    tokio::spawn(async move {
        let _ = phx_runtime::serve(listener, &served, std::future::pending()).await;
    });

    // One record per client, created over the wire.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut ws = client(&addr).await;
        call(&mut ws, 1, "events:bench", "phx_join", json!({})).await;
        let created = call(
            &mut ws,
            2,
            "events:bench",
            "create",
            json!({"params": {"title": format!("r{i}")}}),
        )
        .await;
        let id = created["response"]["record"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let topic = format!("edit:bench:{id}");
        let joined = call(
            &mut ws,
            3,
            &topic,
            "phx_join",
            json!({"user": {"id": format!("u{i}"), "name": "U"}}),
        )
        .await;
        assert_eq!(joined["response"]["role"], "owner");
        clients.push((ws, topic));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(mut ws, topic)| {
            tokio::spawn(async move {
                for n in 0..SAVES {
                    let r = call(
                        &mut ws,
                        10 + n as u64,
                        &topic,
                        "save",
                        json!({"params": {"title": format!("save {n}")}}),
                    )
                    .await;
                    assert_eq!(r["status"], "ok", "{r}");
                }
                ws
            })
        })
        .collect();
    let mut kept = Vec::new();
    for t in tasks {
        kept.push(t.await?);
    }
    let took = started.elapsed();
    let total = CLIENTS * SAVES;
    println!(
        "store {}: {total} saves by {CLIENTS} owners in {:.2} s = {:.0} saves/s",
        db.backend(),
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );

    if let Database::Postgres(_) = &db {
        // UPDATE in the database → `updated` on events:bench at a client.
        let pool = sqlx::PgPool::connect(&url).await?;
        let mut watcher = client(&addr).await;
        call(&mut watcher, 1, "events:bench", "phx_join", json!({})).await;
        let id = db.page("bench", None, 1).await?.records[0]["id"]
            .as_str()
            .unwrap_or("1")
            .to_owned();
        let mut latencies = Vec::with_capacity(UPDATES);
        for n in 0..UPDATES {
            let title = format!("psql {n}");
            let t0 = Instant::now();
            sqlx::query("UPDATE phx_records SET record = jsonb_set(record, '{title}', to_jsonb($1::text)) WHERE kind = 'bench' AND id = $2")
                .bind(&title)
                .bind(&id)
                .execute(&pool)
                .await?;
            loop {
                let Some(Ok(Message::Text(text))) = watcher.next().await else {
                    panic!("socket closed");
                };
                let v: Value = serde_json::from_str(&text)?;
                if v[3] == "updated" && v[4]["record"]["title"] == title.as_str() {
                    break;
                }
            }
            latencies.push(t0.elapsed());
        }
        latencies.sort();
        println!(
            "postgres UPDATE → updated event ({UPDATES} updates, one at a time): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(&latencies, 0.5).as_secs_f64() * 1e3,
            pct(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies[latencies.len() - 1].as_secs_f64() * 1e3
        );
        sqlx::query("DELETE FROM phx_records WHERE kind = 'bench'")
            .execute(&pool)
            .await?;
    }
    drop(kept);
    Ok(())
}
