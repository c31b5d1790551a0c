//! Broadcast fan-out to the subscribers of one topic, two ways:
//!
//! - `fanout`: M broadcasts sent as fast as the publisher can, S subscribers:
//!   deliveries per second and per server CPU-second.
//! - `latency`: broadcasts at a steady rate, each carrying its send time and a
//!   sequence number: end-to-end latency percentiles, missing and out-of-order
//!   deliveries, deliveries per server CPU-second at that rate.
//!
//! Subscribers join a plain (`private:`) channel so that only the broadcasts flow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::report::{group, object, Outcome};
use crate::server::{Meter, Server};

const TOKEN: &str = r#"{"token":"letmein"}"#;

/// The `fanout` scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers of the topic.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Broadcasts to send.
    #[arg(long, default_value_t = 1_000)]
    pub messages: usize,
}

/// The `latency` scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Subscribers of the topic.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds to keep sending.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

/// Joins `n` subscribers and one publisher to `topic`.
async fn subscribe(server: &Server, topic: &str, n: usize) -> Result<(Vec<Ws>, Ws), String> {
    let url = server.url();
    let url = &url;
    let results = client::ramp(n, None, 200, move |_| client::join(url, topic, TOKEN)).await;
    let (subs, failed, first) = client::opened(results);
    if failed > 0 {
        return Err(format!(
            "{failed} of {n} subscribers could not join: {}",
            first.unwrap_or_default()
        ));
    }
    let publisher = client::join(url, topic, TOKEN).await?;
    Ok((subs, publisher))
}

/// Keeps reading the publisher's socket (replies and its own copies of the
/// broadcasts) so that the server never sees it as a slow client.
fn drain_publisher(mut rx: futures::stream::SplitStream<Ws>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} })
}

/// Runs `fanout`.
pub async fn full(server: &Server, a: &FanoutArgs) -> Result<Outcome, String> {
    let (subscribers, messages) = (a.subscribers, a.messages);
    let (subs, publisher) = subscribe(server, "private:fan", subscribers).await?;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for mut ws in subs {
        let done = done.clone();
        tasks.spawn(async move {
            let mut seen = 0;
            while seen < messages {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains(r#","shout","#) => seen += 1,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    let (mut tx, rx) = publisher.split();
    let reader = drain_publisher(rx);
    let body = "x".repeat(100);
    let meter = Meter::start(server);
    for i in 0..messages {
        let frame = format!(
            r#"["1","{}","private:fan","shout",{{"n":{i},"body":"{body}"}}]"#,
            i + 2
        );
        futures::SinkExt::send(&mut tx, Message::text(frame))
            .await
            .map_err(|e| format!("publish: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < subscribers as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let usage = meter.read(server);
    reader.abort();
    drop(tasks);
    let finished = done.load(Ordering::Relaxed);
    let deliveries = finished as f64 * messages as f64;
    let per_cpu = deliveries / usage.server_cpu.max(0.01);
    Ok(Outcome {
        scenario: "fanout",
        what: format!(
            "broadcast fan-out at full speed, {} broadcasts × {} subscribers",
            group(messages as f64),
            group(subscribers as f64)
        ),
        command: format!("phx-bench fanout --subscribers {subscribers} --messages {messages}"),
        result: format!(
            "{} deliveries/s; {} per server CPU-second ({} of {} subscribers got all {} in {:.2} s)",
            group(deliveries / usage.wall),
            group(per_cpu),
            group(finished as f64),
            group(subscribers as f64),
            group(messages as f64),
            usage.wall
        ),
        usage,
        figures: object(json!({
            "subscribers": subscribers,
            "messages": messages,
            "subscribers_complete": finished,
            "deliveries": deliveries,
            "deliveries_per_s": (deliveries / usage.wall).round(),
            "deliveries_per_server_cpu_s": per_cpu.round(),
        })),
        complete: finished == subscribers as u64,
    })
}

/// What one subscriber saw in the steady-rate run.
#[derive(Default)]
struct Seen {
    /// End-to-end latency of every delivery, in microseconds.
    latencies: Vec<u32>,
    /// Deliveries whose sequence number was below one already seen.
    out_of_order: u64,
    /// Distinct sequence numbers received.
    distinct: u64,
}

/// Runs `latency`.
pub async fn steady(server: &Server, a: &LatencyArgs) -> Result<Outcome, String> {
    let subscribers = a.subscribers;
    let messages = (a.rate * a.seconds).round().max(1.0) as u64;
    let (subs, publisher) = subscribe(server, "private:lat", subscribers).await?;
    // Every timestamp is microseconds since this instant, on this process's clock.
    let epoch = Instant::now();
    let last = messages - 1;
    let mut tasks = JoinSet::new();
    for mut ws in subs {
        tasks.spawn(async move {
            let mut seen = Seen {
                latencies: Vec::with_capacity(messages as usize),
                ..Seen::default()
            };
            let mut received = vec![false; messages as usize];
            let mut highest: Option<u64> = None;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                let text = t.as_str();
                if !text.contains(r#","shout","#) {
                    continue;
                }
                let now = epoch.elapsed().as_micros() as u64;
                let (Some(seq), Some(sent)) = (
                    client::field_u64(text, "\"seq\":"),
                    client::field_u64(text, "\"t\":"),
                ) else {
                    continue;
                };
                seen.latencies
                    .push(u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX));
                if highest.is_some_and(|h| seq < h) {
                    seen.out_of_order += 1;
                }
                highest = highest.max(Some(seq));
                if let Some(slot) = received.get_mut(seq as usize) {
                    if !*slot {
                        *slot = true;
                        seen.distinct += 1;
                    }
                }
                if seq == last {
                    break;
                }
            }
            seen
        });
    }
    let (mut tx, rx) = publisher.split();
    let reader = drain_publisher(rx);
    let body = "x".repeat(100);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate.max(0.001)));
    let meter = Meter::start(server);
    for seq in 0..messages {
        tick.tick().await;
        let sent = epoch.elapsed().as_micros() as u64;
        let frame = format!(
            r#"["1","{}","private:lat","shout",{{"seq":{seq},"t":{sent},"body":"{body}"}}]"#,
            seq + 2
        );
        futures::SinkExt::send(&mut tx, Message::text(frame))
            .await
            .map_err(|e| format!("publish: {e}"))?;
    }
    // Subscribers end at the last sequence number; give stragglers 5 s.
    let mut all = Vec::with_capacity(subscribers * messages as usize);
    let (mut out_of_order, mut distinct, mut finished) = (0u64, 0u64, 0u64);
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(seen) = joined {
                all.extend_from_slice(&seen.latencies);
                out_of_order += seen.out_of_order;
                distinct += seen.distinct;
                finished += 1;
            }
        }
    };
    let timed_out = tokio::time::timeout(Duration::from_secs(5), collect)
        .await
        .is_err();
    let usage = meter.read(server);
    reader.abort();
    drop(tasks);
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all[i.min(all.len() - 1)]) / 1000.0
    };
    let (p50, p99, p999, max) = (pct(0.50), pct(0.99), pct(0.999), pct(1.0));
    let expected = subscribers as u64 * messages;
    let delivered = all.len() as u64;
    let missing = expected.saturating_sub(distinct);
    let per_cpu = delivered as f64 / usage.server_cpu.max(0.01);
    let mut result = format!(
        "p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms; {} missing, {} out of order; {} deliveries per server CPU-second ({} deliveries/s)",
        group(missing as f64),
        group(out_of_order as f64),
        group(per_cpu),
        group(delivered as f64 / usage.wall),
    );
    if timed_out {
        result.push_str(&format!(
            "; {} subscribers never saw the last broadcast",
            subscribers as u64 - finished
        ));
    }
    Ok(Outcome {
        scenario: "latency",
        what: format!(
            "fan-out at a steady rate, {} subscribers × {} broadcasts/s for {} s, end-to-end latency",
            group(subscribers as f64),
            a.rate,
            a.seconds
        ),
        command: format!(
            "phx-bench latency --subscribers {subscribers} --rate {} --seconds {}",
            a.rate, a.seconds
        ),
        result,
        usage,
        figures: object(json!({
            "subscribers": subscribers,
            "rate_per_s": a.rate,
            "messages": messages,
            "expected_deliveries": expected,
            "deliveries": delivered,
            "missing": missing,
            "out_of_order": out_of_order,
            "p50_ms": p50,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
            "deliveries_per_server_cpu_s": per_cpu.round(),
        })),
        complete: missing == 0 && out_of_order == 0 && !timed_out,
    })
}
