//! `phx-server`: the Phoenix Channels runtime with ready-made apps.
//!
//! `phx-server` hosts the collaborative-editing app at `/socket` and its demo
//! page at `/` (`protocol-spec/editing.md`); `--conformance` adds the conformance
//! app's channels (`conformance/contract.md`). The operators' listener
//! (`--admin-bind`) serves `/api/stats`, `/metrics` and `/api/broadcast` behind a
//! bearer token. Logs go to stderr through `tracing` (filter with `RUST_LOG`).

mod admin;
mod conformance;
mod editing;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use phx_runtime::{AcceptAll, CheckOrigin, Config, Endpoint};
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
    /// Also host the conformance app's channels at /socket.
    #[arg(long)]
    conformance: bool,
    /// Address of the operators' listener (/api/stats, /metrics, /api/broadcast);
    /// default: 127.0.0.1 and the main port + 1 (a free port when --port is 0).
    #[arg(long)]
    admin_bind: Option<SocketAddr>,
    /// Bearer token every admin request must carry; without one, every admin
    /// request is refused (401).
    #[arg(long, env = "PHX_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
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
    let sessions = Arc::new(editing::SocketSessions::default());
    let builder = Endpoint::builder().config(args.config());
    let builder = if args.conformance {
        conformance::mount(builder).handler(editing::Counted {
            inner: conformance::ConformanceSocket,
            sessions: sessions.clone(),
        })
    } else {
        builder.handler(editing::Counted {
            inner: AcceptAll,
            sessions: sessions.clone(),
        })
    };
    let endpoint = editing::mount(builder).build();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let addr = listener.local_addr()?;
    println!("phx-server listening on http://{addr} (socket at ws://{addr}/socket/websocket)");

    let admin_addr = args.admin_bind.unwrap_or_else(|| {
        let port = if args.port == 0 {
            0
        } else {
            args.port.saturating_add(1)
        };
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    });
    if args.api_token.as_deref().is_none_or(str::is_empty) {
        tracing::warn!("no --api-token / PHX_API_TOKEN: every admin request will be refused");
    }
    let admin = admin::Admin::new(endpoint.clone(), sessions, args.api_token.clone());
    match tokio::net::TcpListener::bind(admin_addr).await {
        Ok(admin_listener) => {
            let admin_addr = admin_listener.local_addr()?;
            // Not println!: a parent that read only the first banner line may have
            // closed the pipe, and that must not stop the server.
            let _ = writeln!(
                std::io::stdout(),
                "phx-server admin on http://{admin_addr} (/api/stats, /metrics, /api/broadcast)"
            );
            tokio::spawn(phx_runtime::serve(
                admin_listener,
                admin.routes(),
                std::future::pending(),
            ));
        }
        Err(err) => {
            tracing::error!(%err, %admin_addr, "the admin listener cannot bind; running without it")
        }
    }

    let routes = endpoint
        .routes("/socket")
        .or(editing::demo::routes())
        .unify()
        .boxed();
    phx_runtime::serve(listener, routes, phx_runtime::shutdown_signal()).await?;
    tracing::info!("shutting down: draining sockets");
    endpoint.drain().await;
    Ok(())
}
