//! `churn`: W clients cycle through join/leave in R presence rooms until C cycles are
//! done or the time bound passes; every K-th cycle ends by closing the TCP connection
//! without a goodbye (no `phx_leave`, no close frame) and the client reconnects.
//! Afterwards the scenario checks that nothing is left behind: the server's
//! `/metrics` (channels and sockets open, and any presence gauge it has), a fresh
//! client in every room (its `presence_state` must hold nobody else), and the RSS
//! against its value before the churn. The RSS is also read after a warm-up of a
//! tenth of the cycles (run first, with the same clients and rooms): a leak keeps
//! growing after it, while what a server takes once (code paged in, the allocator
//! keeping the peak working set of the concurrent clients) does not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::client::{self, Ws};
use crate::report::{group, object, Outcome};
use crate::server::{Meter, Server};

/// The `churn` scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ChurnArgs {
    /// Join/leave cycles in all.
    #[arg(long, default_value_t = 100_000)]
    pub cycles: u64,
    /// Clients cycling at the same time.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Presence rooms the clients cycle through.
    #[arg(long, default_value_t = 100)]
    pub rooms: u64,
    /// Every K-th cycle closes the TCP connection instead of leaving.
    #[arg(long, default_value_t = 10)]
    pub abrupt_every: u64,
    /// Stop starting cycles after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub max_seconds: f64,
}

/// Counts shared by the churning clients.
#[derive(Default)]
struct Counts {
    next: AtomicU64,
    joined: AtomicU64,
    left: AtomicU64,
    abrupt: AtomicU64,
    errors: AtomicU64,
}

/// One client's loop: join, then leave or drop the connection, again and again.
async fn churn_client(
    url: String,
    who: usize,
    a: ChurnArgs,
    deadline: Instant,
    counts: Arc<Counts>,
) -> Option<String> {
    let mut conn: Option<Ws> = None;
    let mut reference = 1u64;
    let mut first_error = None;
    let payload = format!(r#"{{"user":"churn-{who}"}}"#);
    loop {
        let cycle = counts.next.fetch_add(1, Ordering::Relaxed);
        if cycle >= a.cycles || Instant::now() >= deadline {
            return first_error;
        }
        if conn.is_none() {
            match client::connect(&url).await {
                Ok(ws) => conn = Some(ws),
                Err(e) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                    continue;
                }
            }
        }
        let Some(ws) = conn.as_mut() else {
            continue;
        };
        let topic = format!("room:churn-{}", cycle % a.rooms.max(1));
        let join_ref = reference;
        reference += 2;
        if let Err(e) = client::join_on(ws, join_ref, &topic, &payload).await {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            first_error.get_or_insert(e);
            conn = None;
            continue;
        }
        counts.joined.fetch_add(1, Ordering::Relaxed);
        if a.abrupt_every > 0 && cycle % a.abrupt_every == 0 {
            conn = None; // dropped: the TCP connection closes without a goodbye
            counts.abrupt.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let left = match client::send(ws, join_ref, join_ref + 1, &topic, "phx_leave", "{}").await {
            Ok(()) => client::wait_reply(ws, join_ref + 1).await,
            Err(e) => Err(e),
        };
        match left {
            Ok(status) if status == "ok" => {
                counts.left.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert(format!("leave of {topic}: {other:?}"));
                conn = None;
            }
        }
    }
}

/// Joins `topic` as a fresh client and counts the presences other than its own.
async fn presences_left(url: &str, topic: &str) -> Result<usize, String> {
    let mut ws = client::join(url, topic, r#"{"user":"probe"}"#).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client::next_text(&mut ws, deadline).await?;
        if !text.contains("\"presence_state\"") {
            continue;
        }
        let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if frame[3] != "presence_state" {
            continue;
        }
        let state = frame[4]
            .as_object()
            .ok_or("presence_state is not an object")?;
        return Ok(state.keys().filter(|k| *k != "probe").count());
    }
}

/// Runs `a.cycles` cycles with `a.clients` clients (or until `deadline`); the first error.
async fn cycle_all(
    url: &str,
    a: &ChurnArgs,
    deadline: Instant,
    counts: &Arc<Counts>,
) -> Option<String> {
    let mut clients = JoinSet::new();
    for who in 0..a.clients {
        clients.spawn(churn_client(
            url.to_owned(),
            who,
            a.clone(),
            deadline,
            counts.clone(),
        ));
    }
    let mut first_error = None;
    while let Some(done) = clients.join_next().await {
        if let Ok(Some(e)) = done {
            first_error.get_or_insert(e);
        }
    }
    first_error
}

/// Runs the scenario.
pub async fn run(server: &Server, a: &ChurnArgs) -> Result<Outcome, String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss();
    let url = server.url();
    // The warm-up: a tenth of the cycles, then the same settling as after the churn.
    let warmup = Arc::new(Counts::default());
    let warm_cycles = ChurnArgs {
        cycles: a.cycles / 10,
        ..a.clone()
    };
    let warm_deadline = Instant::now() + Duration::from_secs_f64(a.max_seconds);
    let warm_error = cycle_all(&url, &warm_cycles, warm_deadline, &warmup).await;
    server.settle(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warm = server.rss();
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs_f64(a.max_seconds);
    let meter = Meter::start(server);
    let first_error = cycle_all(&url, a, deadline, &counts).await.or(warm_error);
    let churn_wall = meter.read(server).wall;
    server.settle(Duration::from_secs(30)).await;
    let usage = meter.read(server);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss();
    let metrics = server.metrics().await?;
    let gauge = |name: &str| metrics.get(name).copied().unwrap_or(0);
    let (channels, sockets) = (gauge("phx_channels_open"), gauge("phx_sockets_open"));
    // Any presence gauge the server exposes (none is required by the runtime today).
    let presence_gauges: serde_json::Map<String, Value> = metrics
        .iter()
        .filter(|(k, _)| k.contains("presence"))
        .map(|(k, v)| (k.clone(), Value::from(*v)))
        .collect();
    let rooms: Vec<String> = (0..a.rooms.max(1))
        .map(|r| format!("room:churn-{r}"))
        .collect();
    let (url, rooms) = (&url, &rooms);
    let probes = client::ramp(rooms.len(), None, 10, move |i| {
        presences_left(url, &rooms[i])
    })
    .await;
    let (counts_left, probe_failures, probe_error) = client::opened(probes);
    let leftover: usize = counts_left.iter().sum();

    let c = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let (joined, left, abrupt, errors) = (
        c(&counts.joined),
        c(&counts.left),
        c(&counts.abrupt),
        c(&counts.errors),
    );
    let cycles = left + abrupt;
    let rss_ratio = after as f64 / before.max(1) as f64;
    let warm_ratio = after as f64 / warm.max(1) as f64;
    let mut result = format!(
        "{} cycles in {:.1} s ({} closed without a goodbye), {} cycles/s; afterwards {} presences, {} channels, {} sockets; RSS {:.1} MiB before, {:.1} MiB after ({:+.0} %); {:.1} MiB after a warm-up of {} cycles ({:+.1} % since)",
        group(cycles as f64),
        churn_wall,
        group(abrupt as f64),
        group(cycles as f64 / churn_wall),
        group(leftover as f64),
        group(channels as f64),
        group(sockets as f64),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (rss_ratio - 1.0) * 100.0,
        warm as f64 / 1048576.0,
        group((a.cycles / 10) as f64),
        (warm_ratio - 1.0) * 100.0,
    );
    if errors > 0 {
        result.push_str(&format!(
            "; {errors} errors, first: {}",
            first_error.unwrap_or_default()
        ));
    }
    if probe_failures > 0 {
        result.push_str(&format!(
            "; {probe_failures} rooms could not be probed: {}",
            probe_error.unwrap_or_default()
        ));
    }
    Ok(Outcome {
        scenario: "churn",
        what: format!(
            "churn: {} join/leave cycles with presence ({} clients, {} rooms, every {}th closes TCP without a goodbye), at most {} s",
            group(a.cycles as f64),
            a.clients,
            a.rooms,
            a.abrupt_every,
            a.max_seconds
        ),
        command: format!("phx-bench churn --cycles {} --clients {}", a.cycles, a.clients),
        result,
        usage,
        figures: object(json!({
            "cycles_target": a.cycles,
            "cycles": cycles,
            "joins": joined,
            "leaves": left,
            "abrupt_closes": abrupt,
            "errors": errors,
            "churn_s": churn_wall,
            "presences_left": leftover,
            "rooms_unprobed": probe_failures,
            "channels_open": channels,
            "sockets_open": sockets,
            "presence_gauges": presence_gauges,
            "rss_before_bytes": before,
            "rss_after_bytes": after,
            "rss_after_over_before": rss_ratio,
            "rss_after_warmup_bytes": warm,
            "rss_after_over_warmup": warm_ratio,
        })),
        complete: errors == 0 && probe_failures == 0 && leftover == 0 && channels == 0 && sockets == 0,
    })
}
