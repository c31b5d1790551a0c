//! `phx-server`: the Phoenix Channels runtime with ready-made apps.
//!
//! `phx-server` hosts the collaborative-editing app at `/socket` and its demo
//! page at `/` (`protocol-spec/editing.md`); `--conformance` adds the conformance
//! app's channels (`conformance/contract.md`). The operators' listener
//! (`--admin-bind`) serves `/api/stats`, `/metrics` and `/api/broadcast` behind a
//! bearer token. `--redis-url` (with `--node-name`) joins a cluster over Redis
//! (phx-cluster); SIGTERM then says goodbye to the other nodes before draining.
//! Records are kept in SQLite (`phx.db` in the working directory) unless
//! `--database-url` / `PHX_DATABASE_URL` names another database (PostgreSQL for
//! a cluster). Logs go to stderr through `tracing` (filter with `RUST_LOG`).

mod admin;
mod conformance;
mod editing;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use phx_cluster::{Cluster, NodeConfig};
use phx_runtime::{AcceptAll, CheckOrigin, Config, Endpoint};

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
    /// Largest frame accepted from a client, in bytes (Phoenix/Bandit: 10 000 000).
    #[arg(long, default_value_t = 10_000_000)]
    max_frame_size: usize,
    /// Bytes that may wait per socket in each direction (frames for the client,
    /// client messages for its channels).
    #[arg(long, default_value_t = 32 << 20)]
    socket_buffer_bytes: usize,
    /// Longest topic a client may join, in bytes.
    #[arg(long, default_value_t = 1024)]
    max_topic_length: usize,
    /// Seconds a channel may leave its socket waiting before the socket closes (1013).
    #[arg(long, default_value_t = 30)]
    channel_stall_secs: u64,
    /// Seconds for a whole HTTP request head (and for an idle keep-alive connection).
    #[arg(long, default_value_t = 30)]
    http_header_timeout_secs: u64,
    /// Connections served at once.
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// Largest long-poll POST body, in bytes.
    #[arg(long, default_value_t = 10_000_000)]
    longpoll_max_body: usize,
    /// Largest line of a long-poll ndjson POST, in bytes.
    #[arg(long, default_value_t = 10_000_000)]
    longpoll_max_line: usize,
    /// Long-poll sessions open at once.
    #[arg(long, default_value_t = 16_384)]
    max_longpoll_sessions: usize,
    /// Sockets closed per batch when draining on shutdown.
    #[arg(long, default_value_t = 10_000)]
    drain_batch_size: usize,
    /// Milliseconds between drain batches.
    #[arg(long, default_value_t = 2_000)]
    drain_batch_interval_ms: u64,
    /// Join a cluster through this Redis (e.g. redis://127.0.0.1:6379/):
    /// broadcasts and presence cover every node. Without it: one node, in memory.
    #[arg(long, env = "PHX_REDIS_URL")]
    redis_url: Option<String>,
    /// This node's name in the cluster: unique, and the same across restarts
    /// (default: phx@<bind>:<port>).
    #[arg(long, env = "PHX_NODE_NAME")]
    node_name: Option<String>,
    /// Milliseconds of silence after which another node counts as down (and its
    /// presences leave).
    #[arg(long, default_value_t = 5_000)]
    down_period_ms: u64,
    /// Milliseconds between this node's heartbeats to the others.
    #[arg(long, default_value_t = 1_500)]
    heartbeat_ms: u64,
    /// The secret that signs long-poll session tokens; every node of a cluster
    /// needs the same one. Without it a random one is made (and long-poll
    /// sessions cannot move between nodes or survive a restart).
    #[arg(long, env = "PHX_SECRET_KEY_BASE", hide_env_values = true)]
    secret_key_base: Option<String>,
    /// Where the editing app keeps its records: `sqlite://phx.db` (a file in the
    /// working directory, created on first start), `sqlite:///var/lib/phx/phx.db`,
    /// `sqlite::memory:` (throwaway), or `postgres://user@host:5432/db` (shared by
    /// every node of a cluster).
    #[arg(long, env = "PHX_DATABASE_URL", default_value = "sqlite://phx.db")]
    database_url: String,
    /// Largest record (its JSON fields) the editing app stores, in bytes.
    #[arg(long, default_value_t = 64 << 10)]
    max_record_bytes: usize,
    /// Most records one kind may hold.
    #[arg(long, default_value_t = 10_000)]
    max_records_per_kind: u64,
    /// Records per page of the `events:<kind>` list (join reply and `list`).
    #[arg(long, default_value_t = 100)]
    list_page_size: u32,
}

impl Args {
    fn limits(&self) -> phx_editing::Limits {
        phx_editing::Limits {
            max_record_bytes: self.max_record_bytes,
            max_records_per_kind: self.max_records_per_kind,
            page_size: self.list_page_size.clamp(1, 10_000),
        }
    }

    fn config(&self) -> Config {
        let check_origin = if self.no_check_origin {
            CheckOrigin::Disabled
        } else if !self.check_origin.is_empty() {
            CheckOrigin::list(&self.check_origin)
        } else {
            CheckOrigin::Host(self.host.clone())
        };
        let mut config = Config {
            check_origin,
            longpoll: !self.no_longpoll,
            longpoll_window: Duration::from_millis(self.longpoll_window_ms),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_frame_size: self.max_frame_size,
            max_topic_length: self.max_topic_length,
            socket_buffer_bytes: self.socket_buffer_bytes,
            channel_stall_timeout: Duration::from_secs(self.channel_stall_secs),
            http_header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            max_connections: self.max_connections,
            longpoll_max_body: self.longpoll_max_body,
            longpoll_max_line: self.longpoll_max_line,
            max_longpoll_sessions: self.max_longpoll_sessions,
            drain_batch_size: self.drain_batch_size,
            drain_batch_interval: Duration::from_millis(self.drain_batch_interval_ms),
            ..Config::default()
        };
        match self.secret_key_base.as_deref().filter(|s| !s.is_empty()) {
            Some(secret) => config.secret = secret.as_bytes().to_vec(),
            None => tracing::warn!(
                "no --secret-key-base / PHX_SECRET_KEY_BASE: long-poll tokens are signed with a random key \
                 (sessions do not survive a restart or move between nodes)"
            ),
        }
        config
    }

    fn node_config(&self, redis_url: &str) -> NodeConfig {
        let name = self
            .node_name
            .clone()
            .unwrap_or_else(|| format!("phx@{}:{}", self.bind, self.port));
        let mut config = NodeConfig::new(redis_url, name);
        config.tracker.broadcast_period_ms = self.heartbeat_ms.max(1);
        config.tracker.down_period_ms = self.down_period_ms.max(1);
        config
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
    let app = editing::App::connect(&args.database_url, args.limits())
        .await
        .map_err(|e| std::io::Error::other(format!("cannot open the database: {e}")))?;
    let app = Arc::new(app);
    tracing::info!(backend = app.database().backend(), "records database ready");
    if args.redis_url.is_some() && !phx_editing::Records::shared(app.database()) {
        tracing::warn!(
            "--redis-url with a SQLite database: each node's records are its own (not shared); \
             use --database-url postgres://… on every node to share them"
        );
    }
    let builder = app.mount(builder);
    let (cluster, endpoint) = match &args.redis_url {
        Some(url) => {
            let (cluster, endpoint) = Cluster::start(args.node_config(url), builder)
                .map_err(|e| std::io::Error::other(format!("cannot join the cluster: {e}")))?;
            tracing::info!(node = %cluster.stats().me.name, redis = %url, "clustered over Redis");
            (Some(Arc::new(cluster)), endpoint)
        }
        None => (None, builder.build()),
    };
    app.start(endpoint.pubsub());
    let listener = phx_runtime::bind(SocketAddr::new(args.bind, args.port))?;
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
    let admin = admin::Admin::new(
        endpoint.clone(),
        sessions,
        app,
        args.api_token.clone(),
        cluster.clone(),
    );
    match tokio::net::TcpListener::bind(admin_addr).await {
        Ok(admin_listener) => {
            let admin_addr = admin_listener.local_addr()?;
            // Not println!: a parent that read only the first banner line may have
            // closed the pipe, and that must not stop the server.
            let _ = writeln!(
                std::io::stdout(),
                "phx-server admin on http://{admin_addr} (/api/stats, /metrics, /api/broadcast)"
            );
            tokio::spawn(warp::serve(admin.routes()).incoming(admin_listener).run());
        }
        Err(err) => {
            tracing::error!(%err, %admin_addr, "the admin listener cannot bind; running without it")
        }
    }

    let service = endpoint
        .service()
        .fallback(warp::service(editing::demo::routes()));
    phx_runtime::serve(listener, service, phx_runtime::shutdown_signal()).await?;
    if let Some(cluster) = &cluster {
        // First the goodbye, so that the other nodes drop our presences at once.
        let sent = cluster.shutdown().await;
        tracing::info!(goodbye_sent = sent, "left the cluster");
    }
    tracing::info!("shutting down: draining sockets");
    endpoint.drain().await;
    Ok(())
}
