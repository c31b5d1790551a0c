//! `phx-server`: the Phoenix Channels runtime with ready-made apps.
//!
//! `phx-server --port 4000 --conformance` hosts the conformance app at `/socket`
//! (the contract in `conformance/contract.md`). Logs go to stderr through
//! `tracing` (filter with `RUST_LOG`); `/metrics` serves the counters in the
//! Prometheus text format.

mod conformance;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use phx_runtime::{CheckOrigin, Config};
use warp::Filter;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(name = "phx-server", version, about = "A Phoenix Channels server")]
struct Args {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Host the conformance app's channels at /socket.
    #[arg(long)]
    conformance: bool,
    /// Turn long-poll off (WebSocket-only mode): /socket/longpoll answers 404.
    #[arg(long)]
    no_longpoll: bool,
    /// How long a long-poll GET waits for messages, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    longpoll_window_ms: u64,
    /// Close sockets that send nothing for this many seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    /// The host browsers' origins must match (Phoenix's check_origin: true).
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Allowed origins instead of --host, e.g. --check-origin //example.com (repeatable).
    #[arg(long)]
    check_origin: Vec<String>,
    /// Accept every origin (Phoenix's check_origin: false).
    #[arg(long)]
    no_check_origin: bool,
    /// Largest frame accepted from a client, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_frame_size: usize,
}

impl Args {
    fn config(&self) -> Config {
        let check_origin = if self.no_check_origin {
            CheckOrigin::Disabled
        } else if !self.check_origin.is_empty() {
            CheckOrigin::list(&self.check_origin)
        } else {
            CheckOrigin::Host(self.host.clone())
        };
        Config {
            check_origin,
            longpoll: !self.no_longpoll,
            longpoll_window: Duration::from_millis(self.longpoll_window_ms),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_frame_size: self.max_frame_size,
            ..Config::default()
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !args.conformance {
        tracing::info!("no app chosen: hosting the conformance app (pass --conformance to say so)");
    }
    let endpoint = conformance::endpoint(args.config());
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let addr = listener.local_addr()?;
    println!("phx-server listening on http://{addr} (socket at ws://{addr}/socket/websocket)");

    let metrics_endpoint = endpoint.clone();
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .map(move || metrics_endpoint.metrics().to_prometheus());
    let routes = endpoint
        .routes("/socket")
        .or(metrics)
        .map(warp::reply::Reply::into_response)
        .boxed();
    phx_runtime::serve(listener, routes, phx_runtime::shutdown_signal()).await?;
    tracing::info!("shutting down: draining sockets");
    endpoint.drain().await;
    Ok(())
}
