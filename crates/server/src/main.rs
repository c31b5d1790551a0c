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
mod auth;
mod conformance;
mod editing;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use phx_cluster::{Cluster, ClusterKey, NodeConfig};
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
    /// Largest join payload a client may send, in bytes (refused past it).
    #[arg(long, default_value_t = 64 << 10)]
    max_join_payload: usize,
    /// Largest presence entry (key and meta) a channel may track, in bytes.
    #[arg(long, default_value_t = 64 << 10)]
    max_presence_meta: usize,
    /// Connections the admin listener serves at once (its head deadline is
    /// --http-header-timeout-secs).
    #[arg(long, default_value_t = 64)]
    admin_max_connections: usize,
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
    /// This node's name in the cluster: unique, and the same across restarts.
    /// Required with --redis-url (two nodes with one name would hide each
    /// other's presences).
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
    /// sessions cannot move between nodes or survive a restart). With
    /// --redis-url it is required (at least 64 bytes): the cluster's messages
    /// on Redis are encrypted and authenticated with keys derived from it.
    #[arg(long, env = "PHX_SECRET_KEY_BASE", hide_env_values = true)]
    secret_key_base: Option<String>,
    /// A CA certificate (PEM file) to trust for a rediss:// --redis-url instead
    /// of the system's CAs.
    #[arg(long)]
    redis_ca_file: Option<std::path::PathBuf>,
    /// Milliseconds between pings of the Redis link.
    #[arg(long, default_value_t = 1_000)]
    redis_ping_ms: u64,
    /// Milliseconds a ping, a connection or a publish to Redis may take before
    /// the link counts as stalled and is re-established.
    #[arg(long, default_value_t = 2_000)]
    redis_deadline_ms: u64,
    /// Bytes that may wait to be published to Redis; beyond it messages are
    /// dropped (counted in phx_cluster_redis_dropped_bytes).
    #[arg(long, default_value_t = 64 << 20)]
    redis_queue_bytes: usize,
    /// How logs are written to stderr: `text` (for people; coloured only when
    /// stderr is a terminal) or `json` (one object per line, for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Who may connect: anyone (none; nothing a client says about itself counts
    /// as signed in), or only sockets with a valid token in `params: {token}`
    /// (protocol-spec/auth.md).
    #[arg(long, value_enum, default_value_t = auth::AuthKind::None)]
    auth: auth::AuthKind,
    /// The salt of Phoenix.Token.sign/verify (with --secret-key-base, >= 64 bytes).
    #[arg(long, default_value = "user socket")]
    token_salt: String,
    /// Oldest Phoenix.Token accepted, in seconds (Phoenix.Token.verify's max_age).
    #[arg(long, default_value_t = 86_400)]
    token_max_age_secs: u64,
    /// HS256 secret of --auth jwt (at least 32 bytes).
    #[arg(long, env = "PHX_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM file of the RSA (RS256) or P-256 (ES256) public key of --auth jwt.
    #[arg(long)]
    jwt_public_key: Option<std::path::PathBuf>,
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

/// The two log formats of `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// The shortest `--secret-key-base` accepted, in bytes: what Phoenix's
/// `mix phx.gen.secret` makes and Plug's cookie store requires.
const MIN_SECRET_KEY_BASE: usize = 64;

impl Args {
    fn limits(&self) -> phx_editing::Limits {
        phx_editing::Limits {
            max_record_bytes: self.max_record_bytes,
            max_records_per_kind: self.max_records_per_kind,
            page_size: self.list_page_size.clamp(1, 10_000),
        }
    }

    /// The endpoint configuration, or why the options cannot start a server
    /// (what Phoenix refuses at start-up: an origin entry without a host, a
    /// secret key base under 64 bytes).
    fn config(&self) -> Result<Config, String> {
        let check_origin = if self.no_check_origin {
            CheckOrigin::Disabled
        } else if !self.check_origin.is_empty() {
            CheckOrigin::try_list(&self.check_origin).map_err(|e| format!("--check-origin: {e}"))?
        } else if self.host == "localhost" && self.bind.is_loopback() {
            // Bound to loopback, the page is reached as localhost, 127.0.0.1 or
            // [::1] (the banner prints the second): all three name this machine.
            CheckOrigin::list(["//localhost", "//127.0.0.1", "//[::1]"])
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
            max_join_payload: self.max_join_payload,
            max_presence_meta: self.max_presence_meta,
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
            Some(secret) if secret.len() < MIN_SECRET_KEY_BASE => {
                return Err(format!(
                    "--secret-key-base / PHX_SECRET_KEY_BASE is {} bytes; at least {MIN_SECRET_KEY_BASE} bytes \
                     are required (as Phoenix: `mix phx.gen.secret` makes one)",
                    secret.len()
                ));
            }
            Some(secret) => config.secret = secret.as_bytes().to_vec(),
            None => tracing::warn!(
                "no --secret-key-base / PHX_SECRET_KEY_BASE: long-poll tokens are signed with a random key \
                 (sessions do not survive a restart or move between nodes)"
            ),
        }
        Ok(config)
    }

    fn auth(&self) -> auth::AuthFlags<'_> {
        auth::AuthFlags {
            kind: self.auth,
            secret_key_base: self.secret_key_base.as_deref(),
            token_salt: &self.token_salt,
            token_max_age_secs: self.token_max_age_secs,
            jwt_secret: self.jwt_secret.as_deref(),
            jwt_public_key: self.jwt_public_key.as_ref(),
        }
    }

    /// The node's settings; refuses a missing or short `--secret-key-base`
    /// (every message between nodes is sealed with keys derived from it) and
    /// an unreadable `--redis-ca-file`.
    fn node_config(&self, redis_url: &str) -> Result<NodeConfig, String> {
        let name = self
            .node_name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                "--redis-url needs --node-name (or PHX_NODE_NAME): a name unique in the cluster \
                 and the same across restarts, e.g. --node-name web-1"
                    .to_owned()
            })?;
        let mut config = NodeConfig::new(redis_url, name);
        config.tracker.broadcast_period_ms = self.heartbeat_ms.max(1);
        config.tracker.down_period_ms = self.down_period_ms.max(1);
        let secret = self.secret_key_base.as_deref().unwrap_or("");
        let key = ClusterKey::derive(secret.as_bytes()).map_err(|e| {
            format!(
                "--redis-url needs --secret-key-base / PHX_SECRET_KEY_BASE, the same on every node, \
                 of at least {} bytes (e.g. `openssl rand -base64 48`): it seals the cluster's \
                 messages on Redis ({e})",
                phx_cluster::seal::MIN_SECRET_LEN
            )
        })?;
        config.link.key = Some(key);
        if let Some(path) = &self.redis_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--redis-ca-file {}: {e}", path.display()))?;
            config.link.tls_ca = Some(pem);
        }
        config.link.ping_interval = Duration::from_millis(self.redis_ping_ms.max(1));
        config.link.deadline = Duration::from_millis(self.redis_deadline_ms.max(1));
        config.link.queue_bytes = self.redis_queue_bytes;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    init_logs(args.log_format);
    let verifier = args.auth().verifier().map_err(std::io::Error::other)?;
    let sessions = Arc::new(editing::SocketSessions::default());
    let config = args
        .config()
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    // The demo page tells a browser whose address the check refuses.
    let check_origin = config.check_origin.clone();
    let builder = Endpoint::builder().config(config);
    let builder = if args.conformance {
        conformance::mount(builder).handler(editing::Counted {
            inner: auth::Guarded::new(verifier, conformance::ConformanceSocket),
            sessions: sessions.clone(),
        })
    } else {
        builder.handler(editing::Counted {
            inner: auth::Guarded::new(verifier, AcceptAll),
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
            let config = args.node_config(url).map_err(|e| {
                tracing::error!("{e}");
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
            })?;
            let (cluster, endpoint) = Cluster::start(config, builder)
                .map_err(|e| std::io::Error::other(format!("cannot join the cluster: {e}")))?;
            tracing::info!(node = %cluster.stats().me.name, "clustered over Redis");
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
            let limits = phx_runtime::HttpLimits {
                max_connections: args.admin_max_connections,
                header_timeout: Duration::from_secs(args.http_header_timeout_secs),
            };
            let metrics = admin.listener_metrics();
            tokio::spawn(phx_runtime::serve(
                admin_listener,
                phx_runtime::HttpApp::new(admin, limits, metrics),
                std::future::pending(),
            ));
        }
        Err(err) => {
            tracing::error!(%err, %admin_addr, "the admin listener cannot bind; running without it")
        }
    }

    let service = endpoint
        .service()
        .fallback(warp::service(editing::demo::routes(check_origin)));
    phx_runtime::serve(listener, service, phx_runtime::shutdown_signal()).await?;
    if let Some(cluster) = &cluster {
        // First the goodbye (confirmed by Redis), so that the other nodes drop
        // our presences at once; cluster traffic keeps flowing while draining.
        let sent = cluster.leave().await;
        tracing::info!(goodbye_sent = sent, "left the cluster");
    }
    tracing::info!("shutting down: draining sockets");
    endpoint.drain().await;
    if let Some(cluster) = &cluster {
        cluster.shutdown().await;
    }
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): text with colour only
/// when stderr is a terminal (a log file gets no escape codes), or JSON lines.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_node_needs_an_explicit_name() {
        let args = Args::parse_from(["phx-server", "--redis-url", "redis://127.0.0.1:1/"]);
        let err = args
            .node_config("redis://127.0.0.1:1/")
            .expect_err("no --node-name");
        assert!(err.to_string().contains("--node-name"), "{err}");
        let args = Args::parse_from([
            "phx-server",
            "--node-name",
            "web-1",
            "--secret-key-base",
            &"k".repeat(64),
        ]);
        let config = args.node_config("redis://127.0.0.1:1/").expect("named");
        assert_eq!(config.name, "web-1");
    }
}
