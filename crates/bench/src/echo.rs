//! `echo`: C clients, each on its own channel, doing request/reply round trips
//! (`echo` → `phx_reply`) back to back for a while: replies per second and per
//! server CPU-second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::client;
use crate::report::{group, object, Outcome};
use crate::server::{Meter, Server};

/// The `echo` scenario's parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct EchoArgs {
    /// Clients, each with its own connection and channel.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
}

/// Runs the scenario.
pub async fn run(server: &Server, a: &EchoArgs) -> Result<Outcome, String> {
    let url = server.url();
    // The ramp finishes joins in any order: each connection keeps its own topic.
    let results = client::ramp(a.clients, None, 200, |i| {
        let url = url.clone();
        async move {
            let topic = format!("private:echo-{i}");
            let ws = client::join(&url, &topic, r#"{"token":"letmein"}"#).await?;
            Ok((topic, ws))
        }
    })
    .await;
    let (conns, failed, first) = client::opened(results);
    if failed > 0 {
        return Err(format!(
            "{failed} echo clients could not join: {}",
            first.unwrap_or_default()
        ));
    }
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(a.seconds);
    let meter = Meter::start(server);
    let mut tasks = JoinSet::new();
    for (topic, mut ws) in conns {
        let (count, errors) = (count.clone(), errors.clone());
        tasks.spawn(async move {
            let mut reference = 2u64;
            while Instant::now() < stop {
                let sent =
                    client::send(&mut ws, 1, reference, &topic, "echo", r#"{"body":"hello"}"#)
                        .await;
                let status = match sent {
                    Ok(()) => client::wait_reply(&mut ws, reference).await,
                    Err(e) => Err(e),
                };
                if status.as_deref() != Ok("ok") {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return Some(format!("{topic}: {status:?}"));
                }
                count.fetch_add(1, Ordering::Relaxed);
                reference += 1;
            }
            None
        });
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(e)) = done {
            first_error.get_or_insert(e);
        }
    }
    let usage = meter.read(server);
    let replies = count.load(Ordering::Relaxed) as f64;
    let errors = errors.load(Ordering::Relaxed);
    let per_cpu = replies / usage.server_cpu.max(0.01);
    let mut result = format!(
        "{} round trips/s; {} per server CPU-second",
        group(replies / usage.wall),
        group(per_cpu)
    );
    if errors > 0 {
        result.push_str(&format!(
            "; {errors} clients failed, first: {}",
            first_error.unwrap_or_default()
        ));
    }
    Ok(Outcome {
        scenario: "echo",
        what: format!("request/reply round trips, {} clients", a.clients),
        command: format!(
            "phx-bench echo --clients {} --seconds {}",
            a.clients, a.seconds
        ),
        result,
        usage,
        figures: object(json!({
            "clients": a.clients,
            "round_trips": replies,
            "round_trips_per_s": (replies / usage.wall).round(),
            "round_trips_per_server_cpu_s": per_cpu.round(),
            "failed_clients": errors,
        })),
        complete: errors == 0,
    })
}
