//! `presence`: C clients join one presence room and each keeps a phoenix.js-style
//! mirror of it (`presence_state` then `presence_diff`s, through `phx-presence`'s
//! client mirror); once every mirror holds all C, L of them leave at once (their
//! connections drop) and the scenario times how long until every remaining mirror
//! is exact again — the time a user waits to see the room right.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use phx_presence::{ChannelPresence, PresenceDiff};
use serde::de::IgnoredAny;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client;
use crate::report::{group, object, Outcome};
use crate::server::{Meter, Server};

/// The `presence` scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceArgs {
    /// Clients in the room.
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Clients that leave at once.
    #[arg(long, default_value_t = 500)]
    pub leave: usize,
}

/// A V2 frame with only its event and raw payload kept.
type Frame<'a> = (IgnoredAny, IgnoredAny, IgnoredAny, String, &'a RawValue);

/// Whether `mirror` lists exactly the keys of `want`, one meta each.
fn exact(mirror: &ChannelPresence, want: &BTreeSet<String>) -> bool {
    let list = mirror.list();
    list.len() == want.len()
        && list
            .iter()
            .all(|(k, e)| e.metas.len() == 1 && want.contains(k))
}

/// Runs the scenario.
pub async fn run(server: &Server, a: &PresenceArgs) -> Result<Outcome, String> {
    let clients = a.clients;
    let leave = a.leave.min(clients);
    let all: Arc<BTreeSet<String>> = Arc::new((0..clients).map(|i| format!("u{i}")).collect());
    let stay: Arc<BTreeSet<String>> = Arc::new((leave..clients).map(|i| format!("u{i}")).collect());
    let synced = Arc::new(AtomicU64::new(0));
    let converged = Arc::new(AtomicU64::new(0));
    let (go, _) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let url = server.url();
        let (all, stay, synced, converged) =
            (all.clone(), stay.clone(), synced.clone(), converged.clone());
        let mut go = go.subscribe();
        tasks.spawn(async move {
            let payload = format!(r#"{{"user":"u{i}"}}"#);
            let Ok(mut ws) = client::join(&url, "room:presence-bench", &payload).await else {
                return;
            };
            let mut mirror = ChannelPresence::default();
            let mut phase = 0;
            loop {
                if phase == 0 && exact(&mirror, &all) {
                    synced.fetch_add(1, Ordering::Relaxed);
                    phase = 1;
                    if i < leave {
                        let _ = go.wait_for(|g| *g).await;
                        return; // dropping the connection: this client leaves
                    }
                }
                if phase == 1 && *go.borrow() && exact(&mirror, &stay) {
                    converged.fetch_add(1, Ordering::Relaxed);
                    phase = 2;
                }
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    return;
                };
                // Parse only presence frames, and only their payloads (the generator
                // plays 1 000 browser tabs on the same cores as the server).
                let text = t.as_str();
                if !text.contains("\"presence_") {
                    continue;
                }
                let Ok((_, _, _, event, payload)) = serde_json::from_str::<Frame>(text) else {
                    continue;
                };
                match event.as_str() {
                    "presence_state" => {
                        if let Ok(state) = serde_json::from_str(payload.get()) {
                            mirror.on_state("1", state);
                        }
                    }
                    "presence_diff" => {
                        if let Ok(diff) = serde_json::from_str::<PresenceDiff>(payload.get()) {
                            mirror.on_diff("1", diff);
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while synced.load(Ordering::Relaxed) < clients as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let joined_in = started.elapsed().as_secs_f64();
    let synced = synced.load(Ordering::Relaxed);
    if synced < clients as u64 {
        return Err(format!("only {synced} of {clients} mirrors saw everyone"));
    }
    let meter = Meter::start(server);
    let _ = go.send(true);
    let remaining = (clients - leave) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while converged.load(Ordering::Relaxed) < remaining && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let usage = meter.read(server);
    drop(tasks);
    let done = converged.load(Ordering::Relaxed);
    Ok(Outcome {
        scenario: "presence",
        what: format!(
            "presence settling: {} clients in one room keep phoenix.js-style mirrors; {} leave at once",
            group(clients as f64),
            group(leave as f64)
        ),
        command: format!("phx-bench presence --clients {clients} --leave {leave}"),
        result: format!(
            "every remaining mirror exact {:.0} ms after the leave ({} of {}); all {} mirrors had been exact {:.2} s after the joins began",
            usage.wall * 1000.0,
            group(done as f64),
            group(remaining as f64),
            group(clients as f64),
            joined_in
        ),
        usage,
        figures: object(json!({
            "clients": clients,
            "left": leave,
            "settle_ms": (usage.wall * 1000.0).round(),
            "mirrors_exact": done,
            "mirrors_remaining": remaining,
            "all_joined_s": joined_in,
        })),
        complete: done == remaining,
    })
}
