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

/// Broadcasts sent but not yet acknowledged (`shout` replies `ok`) that the
/// publisher allows itself: full speed, but within the channel's mailbox (1 024),
/// as a client that respects backpressure would.
const WINDOW: u64 = 128;

/// The publishing client: sends `shout`s on `topic`, at most [`WINDOW`] of them
/// unanswered, while a reader task counts the replies (and skips its own copies
/// of the broadcasts).
struct Publisher {
    tx: futures::stream::SplitSink<Ws, Message>,
    replies: Arc<AtomicU64>,
    replied: Arc<tokio::sync::Notify>,
    reader: tokio::task::JoinHandle<()>,
    sent: u64,
}

impl Publisher {
    fn new(ws: Ws) -> Publisher {
        let (tx, mut rx) = ws.split();
        let replies = Arc::new(AtomicU64::new(0));
        let replied = Arc::new(tokio::sync::Notify::new());
        let (count, notify) = (replies.clone(), replied.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                if let Message::Text(t) = msg {
                    if t.as_str().contains("\"phx_reply\"") {
                        count.fetch_add(1, Ordering::Relaxed);
                        notify.notify_one();
                    }
                }
            }
            // The connection ended: wake the sender so that it sees the error.
            count.store(u64::MAX / 2, Ordering::Relaxed);
            notify.notify_one();
        });
        Publisher {
            tx,
            replies,
            replied,
            reader,
            sent: 0,
        }
    }

    /// Sends one broadcast request, first waiting for the window to open.
    async fn shout(&mut self, topic: &str, payload: &str) -> Result<(), String> {
        while self.sent >= self.replies.load(Ordering::Relaxed) + WINDOW {
            self.replied.notified().await;
        }
        if self.reader.is_finished() {
            return Err("the server closed the publisher's connection".into());
        }
        let frame = format!(
            r#"["1","{}",{},"shout",{payload}]"#,
            self.sent + 2,
            serde_json::Value::from(topic)
        );
        futures::SinkExt::send(&mut self.tx, Message::text(frame))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        self.sent += 1;
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Why a subscriber stopped before the end, from what the server sent last.
fn ended(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match msg {
        Some(Ok(Message::Close(Some(frame)))) => {
            format!(
                "closed by the server: {} {}",
                u16::from(frame.code),
                frame.reason
            )
        }
        Some(Ok(Message::Close(None))) | None => "closed by the server".into(),
        Some(Err(e)) => format!("receive error: {e}"),
        Some(Ok(_)) => "stopped".into(),
    }
}

/// Waits (at most `limit`) for every subscriber task; returns how many finished
/// and the first reason one gave for stopping early.
async fn finish(
    tasks: &mut JoinSet<Result<(), String>>,
    limit: Duration,
) -> (u64, u64, Option<String>) {
    let (mut complete, mut stopped, mut first) = (0, 0, None);
    let _ = tokio::time::timeout(limit, async {
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => complete += 1,
                Ok(Err(e)) => {
                    stopped += 1;
                    first.get_or_insert(e);
                }
                Err(e) => {
                    stopped += 1;
                    first.get_or_insert(e.to_string());
                }
            }
        }
    })
    .await;
    (complete, stopped, first)
}

/// Runs `fanout`.
pub async fn full(server: &Server, a: &FanoutArgs) -> Result<Outcome, String> {
    let (subscribers, messages) = (a.subscribers, a.messages);
    let (subs, publisher) = subscribe(server, "private:fan", subscribers).await?;
    let mut tasks = JoinSet::new();
    for mut ws in subs {
        tasks.spawn(async move {
            let mut seen = 0;
            while seen < messages {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains(r#","shout","#) => seen += 1,
                    Some(Ok(
                        Message::Text(_)
                        | Message::Binary(_)
                        | Message::Ping(_)
                        | Message::Pong(_)
                        | Message::Frame(_),
                    )) => {}
                    other => return Err(ended(other)),
                }
            }
            Ok(())
        });
    }
    let mut publisher = Publisher::new(publisher);
    let body = "x".repeat(100);
    let meter = Meter::start(server);
    let mut publish_error = None;
    for i in 0..messages {
        let payload = format!(r#"{{"n":{i},"body":"{body}"}}"#);
        if let Err(e) = publisher.shout("private:fan", &payload).await {
            publish_error = Some(e);
            break;
        }
    }
    let (finished, stopped, first_stop) = finish(&mut tasks, Duration::from_secs(120)).await;
    let usage = meter.read(server);
    drop(publisher);
    drop(tasks);
    let slow = server
        .metrics()
        .await?
        .get("phx_slow_clients_total")
        .copied()
        .unwrap_or(0);
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
        result: {
            let mut r = format!(
                "{} deliveries/s; {} per server CPU-second ({} of {} subscribers got all {} in {:.2} s)",
                group(deliveries / usage.wall),
                group(per_cpu),
                group(finished as f64),
                group(subscribers as f64),
                group(messages as f64),
                usage.wall
            );
            trouble(
                &mut r,
                stopped,
                first_stop.as_deref(),
                slow,
                publish_error.as_deref(),
            );
            r
        },
        usage,
        figures: object(json!({
            "subscribers": subscribers,
            "messages": messages,
            "subscribers_complete": finished,
            "subscribers_stopped": stopped,
            "slow_clients": slow,
            "deliveries": deliveries,
            "deliveries_per_s": (deliveries / usage.wall).round(),
            "deliveries_per_server_cpu_s": per_cpu.round(),
        })),
        complete: finished == subscribers as u64 && publish_error.is_none(),
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
    /// Why the subscriber stopped before the last broadcast, if it did.
    stopped: Option<String>,
    /// Told to stop waiting (the server fell behind): its deliveries so far count.
    cut_off: bool,
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
    // Raised when the stragglers' time is up: a subscriber then stops waiting and
    // hands in what it got, so a server that falls behind still gets percentiles
    // (of what it delivered) beside its count of missing deliveries.
    let (cut_off, _) = tokio::sync::watch::channel(false);
    for mut ws in subs {
        let mut stop = cut_off.subscribe();
        tasks.spawn(async move {
            let mut seen = Seen {
                latencies: Vec::with_capacity(messages as usize),
                ..Seen::default()
            };
            let mut received = vec![false; messages as usize];
            let mut highest: Option<u64> = None;
            loop {
                let msg = tokio::select! {
                    biased;
                    _ = stop.changed() => {
                        seen.cut_off = true;
                        break;
                    }
                    msg = ws.next() => msg,
                };
                let Some(Ok(Message::Text(t))) = msg else {
                    if matches!(msg, Some(Ok(Message::Close(_))) | Some(Err(_)) | None) {
                        seen.stopped = Some(ended(msg));
                        break;
                    }
                    continue;
                };
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
    let mut publisher = Publisher::new(publisher);
    let body = "x".repeat(100);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate.max(0.001)));
    let meter = Meter::start(server);
    let mut publish_error = None;
    for seq in 0..messages {
        tick.tick().await;
        let sent = epoch.elapsed().as_micros() as u64;
        let payload = format!(r#"{{"seq":{seq},"t":{sent},"body":"{body}"}}"#);
        if let Err(e) = publisher.shout("private:lat", &payload).await {
            publish_error = Some(e);
            break;
        }
    }
    // Subscribers end at the last sequence number; give stragglers 5 s.
    let mut all = Vec::with_capacity(subscribers * messages as usize);
    let (mut out_of_order, mut distinct, mut finished) = (0u64, 0u64, 0u64);
    let (mut stopped, mut first_stop) = (0u64, None);
    let mut cut = 0u64;
    let mut collect = |seen: Seen| {
        all.extend_from_slice(&seen.latencies);
        out_of_order += seen.out_of_order;
        distinct += seen.distinct;
        if seen.cut_off {
            cut += 1;
        } else {
            finished += 1;
        }
        if let Some(e) = seen.stopped {
            stopped += 1;
            first_stop.get_or_insert(e);
        }
    };
    let straggling = Instant::now() + Duration::from_secs(5);
    let mut timed_out = false;
    loop {
        let next = if timed_out {
            tokio::time::timeout(Duration::from_secs(10), tasks.join_next()).await
        } else {
            tokio::time::timeout_at(straggling.into(), tasks.join_next()).await
        };
        match next {
            Ok(Some(Ok(seen))) => collect(seen),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            // Time is up: the rest hand in what they got (bounded too).
            Err(_) if !timed_out => {
                timed_out = true;
                let _ = cut_off.send(true);
            }
            Err(_) => break,
        }
    }
    let usage = meter.read(server);
    drop(publisher);
    drop(tasks);
    let slow = server
        .metrics()
        .await?
        .get("phx_slow_clients_total")
        .copied()
        .unwrap_or(0);
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
    trouble(
        &mut result,
        stopped,
        first_stop.as_deref(),
        slow,
        publish_error.as_deref(),
    );
    if timed_out {
        result.push_str(&format!(
            "; {} subscribers never saw the last broadcast (cut off 5 s after it was sent; the percentiles are of what was delivered by then)",
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
            "subscribers_stopped": stopped,
            "subscribers_cut_off": cut,
            "slow_clients": slow,
            "p50_ms": p50,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
            "deliveries_per_server_cpu_s": per_cpu.round(),
        })),
        complete: missing == 0 && out_of_order == 0 && !timed_out && publish_error.is_none(),
    })
}

/// Appends what went wrong during a fan-out run to its result line: subscribers
/// that stopped early, slow-client disconnects, a publisher error.
fn trouble(
    result: &mut String,
    stopped: u64,
    first_stop: Option<&str>,
    slow: u64,
    publish_error: Option<&str>,
) {
    if let Some(e) = first_stop {
        result.push_str(&format!(
            "; {stopped} subscribers stopped early, first: {e}"
        ));
    }
    if slow > 0 {
        result.push_str(&format!("; {slow} disconnected as slow clients"));
    }
    if let Some(e) = publish_error {
        result.push_str(&format!("; publisher: {e}"));
    }
}
