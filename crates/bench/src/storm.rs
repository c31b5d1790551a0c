//! `storm`: N clients connect and join at once, as fast as the generator can open
//! them: how many joins are answered, how fast, and whether every channel that was
//! joined is still open once the storm has passed (none lost).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{self, Tally};
use crate::report::{group, object, Outcome};
use crate::server::{listen_overflows, Meter, Server};

/// The `storm` scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Clients joining at once (keep under ~19 000 here).
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Joins in flight at most (default: all of them).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Join R presence rooms (client i into room i mod R) instead of one plain channel.
    #[arg(long)]
    pub rooms: Option<usize>,
}

/// Runs the scenario.
pub async fn run(server: &Server, a: &StormArgs) -> Result<Outcome, String> {
    let url = server.url();
    let n = a.clients;
    let rooms = a.rooms.map(|r| r.max(1));
    let tally = Arc::new(Tally::default());
    let overflows_before = listen_overflows();
    let meter = Meter::start(server);
    let results = client::ramp(n, None, a.concurrency.unwrap_or(n), |i| {
        let url = url.clone();
        let tally = tally.clone();
        async move {
            let started = Instant::now();
            let ws = match rooms {
                Some(r) => {
                    client::join(
                        &url,
                        &format!("room:storm-{}", i % r),
                        &format!(r#"{{"user":"u{i}"}}"#),
                    )
                    .await
                }
                None => client::join(&url, "private:storm", r#"{"token":"letmein"}"#).await,
            }?;
            Ok((client::drain(ws, &tally), started.elapsed()))
        }
    })
    .await;
    let storm = meter.read(server);
    let overflows = listen_overflows().saturating_sub(overflows_before);
    let (joined, failed, first_error) = client::opened(results);
    let mut times: Vec<Duration> = joined.iter().map(|(_, t)| *t).collect();
    times.sort_unstable();
    let answered = joined.len();
    server.settle(Duration::from_secs(30)).await;
    let usage = meter.read(server);
    let metrics = server.metrics().await?;
    let channels_open = server.channels_open(&metrics, answered);
    let closed = Tally::get(&tally.closed);
    drop(joined);
    let crashed = Tally::get(&tally.channel_errors);
    let lost = (answered as u64)
        .saturating_sub(channels_open)
        .max(closed)
        .max(crashed);
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    let mut result = format!(
        "{} of {} joins answered in {:.2} s ({} joins/s; join time p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms); {} channels lost",
        group(answered as f64),
        group(n as f64),
        storm.wall,
        group(answered as f64 / storm.wall),
        p50,
        p99,
        max,
        group(lost as f64),
    );
    if overflows > 0 {
        result.push_str(&format!(
            "; {} connects overflowed the accept queue (each waits for a SYN retransmission)",
            group(overflows as f64)
        ));
    }
    if let Some(e) = first_error {
        result.push_str(&format!("; {failed} failed, first: {e}"));
    }
    Ok(Outcome {
        scenario: "storm",
        what: format!(
            "join storm: {} clients connect and join at the generator's fastest rate{}",
            group(n as f64),
            rooms.map_or_else(
                || " (one plain channel)".to_owned(),
                |r| format!(" ({r} presence rooms)")
            )
        ),
        command: format!(
            "phx-bench storm --clients {n}{}",
            rooms.map_or_else(String::new, |r| format!(" --rooms {r}"))
        ),
        result,
        usage: storm,
        figures: object(json!({
            "clients": n,
            "rooms": rooms,
            "joins_answered": answered,
            "join_failures": failed,
            "storm_s": storm.wall,
            "joins_per_s": (answered as f64 / storm.wall).round(),
            "join_p50_ms": p50,
            "join_p99_ms": p99,
            "join_max_ms": max,
            "channels_open": channels_open,
            "channels_lost": lost,
            "channels_crashed": crashed,
            "listen_overflows": overflows,
            "server_cpu_with_settling_s": usage.server_cpu,
        })),
        complete: failed == 0 && lost == 0,
    })
}
