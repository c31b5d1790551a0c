//! Endpoint configuration: limits, timeouts and policies, with Phoenix's defaults
//! where Phoenix has one and a documented choice where it has none.

use std::time::Duration;

use crate::origin::CheckOrigin;

/// How an endpoint's sockets behave: the one place an endpoint is configured
/// (its builder takes the whole of it with
/// [`EndpointBuilder::config`](crate::EndpointBuilder::config)). Start from
/// [`Config::default`] and change fields.
///
/// ```
/// use std::time::Duration;
/// use phx_runtime::{CheckOrigin, Config, Endpoint};
///
/// let config = Config {
///     idle_timeout: Duration::from_secs(30),
///     check_origin: CheckOrigin::list(["//example.com"]),
///     metrics_path: Some("/metrics".to_owned()),
///     ..Config::default()
/// };
/// let endpoint = Endpoint::builder().config(config).build();
/// assert_eq!(endpoint.config().idle_timeout, Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the transports are served (default `/socket`: `/socket/websocket`
    /// and `/socket/longpoll`); a trailing `/` is ignored.
    pub mount: String,
    /// Also answer `GET <path>` with the endpoint's counters in the Prometheus
    /// text format (e.g. `/metrics`). Default `None`: off.
    pub metrics_path: Option<String>,
    /// Which browser origins may connect (default: Phoenix's `true` with host `localhost`).
    pub check_origin: CheckOrigin,
    /// Accept the Phoenix 1.8 auth token carried in `Sec-WebSocket-Protocol`
    /// (`base64url.bearer.phx.<token>`), answering with subprotocol `phoenix`. Default on.
    pub auth_token: bool,
    /// Subprotocols the WebSocket accepts (Phoenix's `:subprotocols`); `None` skips the check.
    pub subprotocols: Option<Vec<String>>,
    /// Close a socket that sends nothing for this long (Phoenix: 60 s).
    pub idle_timeout: Duration,
    /// Largest frame or message accepted from a client; a larger one closes the
    /// connection with 1009. Default 10 000 000 bytes, what Phoenix's WebSocket
    /// adapter passes Bandit (`max_frame_size`), so payloads Phoenix accepts are
    /// accepted here.
    pub max_frame_size: usize,
    /// Channels one socket may join at once (Phoenix: 100).
    pub max_channels: usize,
    /// Frames that may wait for a socket's writer; a client that lets it fill is
    /// disconnected as a slow client (close 1013). Default 1024.
    pub outbound_queue: usize,
    /// Bytes that may wait per socket in each direction: frames queued for the
    /// client (past it the client is too slow: 1013; on long-poll, frames waiting
    /// for a poll count too, and past it the session ends), and client messages queued
    /// in its channels' mailboxes (past it the socket stops reading the client
    /// until they are taken). A single message always fits. Default 32 MiB, so
    /// 1 024 queued 10 MB frames cannot pile up behind one slow channel.
    pub socket_buffer_bytes: usize,
    /// Messages that may wait in a channel's mailbox. Default 1024. When it is
    /// full, the socket stops reading its client until there is room again.
    pub channel_mailbox: usize,
    /// How long a socket waits for one of its channels to take the client's next
    /// message or to finish joining before it gives up and closes with 1013.
    /// Default 30 s.
    pub channel_stall_timeout: Duration,
    /// Longest topic a client may join, in bytes; a longer one is refused with
    /// `{"reason":"topic too long"}`. Default 1 KiB (Phoenix has none, but a
    /// topic is copied into several places for as long as the channel lives).
    pub max_topic_length: usize,
    /// Largest join payload a client may send, in bytes (its JSON text, or its
    /// binary payload); a larger one is refused with
    /// `{"reason":"join payload too large"}` before the channel sees it. Default
    /// 64 KiB (Phoenix has none; a channel may keep what it joined with for its
    /// whole life, in its state and in presence).
    pub max_join_payload: usize,
    /// Largest presence entry a channel may track or update, in bytes (the key
    /// plus the meta's JSON); a larger one is refused with
    /// [`RuntimeError::TooLarge`](crate::RuntimeError::TooLarge) and nothing is
    /// tracked. Default 64 KiB: every meta is kept for as long as its channel
    /// lives and copied into each `presence_state` and `presence_diff`.
    pub max_presence_meta: usize,
    /// Serve the long-poll transport at `<mount>/longpoll` (default on).
    pub longpoll: bool,
    /// How long a long-poll GET waits for messages (Phoenix: 10 s).
    pub longpoll_window: Duration,
    /// Secret that signs long-poll session tokens (random per start by default).
    pub secret: Vec<u8>,
    /// How long draining on shutdown may take before sockets are dropped.
    pub drain_timeout: Duration,
    /// Sockets closed per drain batch (Phoenix's drainer: 10 000).
    pub drain_batch_size: usize,
    /// Time between drain batches (Phoenix's drainer: 2 s).
    pub drain_batch_interval: Duration,
    /// Deadline for a whole HTTP request head however slowly its bytes come, and
    /// for a kept-alive connection to start its next request. Default 30 s.
    pub http_header_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog. Default
    /// 16 384 (Bandit's default connection count).
    pub max_connections: usize,
    /// Largest long-poll POST body, in bytes (413 past it). Default 10 000 000.
    pub longpoll_max_body: usize,
    /// Largest line of a long-poll ndjson POST, in bytes (400 past it).
    /// Default 10 000 000, as the WebSocket frame limit.
    pub longpoll_max_line: usize,
    /// Long-poll sessions open at once; a new one past the cap is refused with
    /// `{"status":403}` (the client reconnects later). Default 16 384.
    pub max_longpoll_sessions: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mount: "/socket".to_owned(),
            metrics_path: None,
            check_origin: CheckOrigin::default(),
            auth_token: true,
            subprotocols: None,
            idle_timeout: Duration::from_secs(60),
            max_frame_size: 10_000_000,
            max_channels: 100,
            outbound_queue: 1024,
            socket_buffer_bytes: 32 << 20,
            channel_mailbox: 1024,
            channel_stall_timeout: Duration::from_secs(30),
            max_topic_length: 1024,
            max_join_payload: 64 << 10,
            max_presence_meta: 64 << 10,
            longpoll: true,
            longpoll_window: Duration::from_secs(10),
            secret: rand::random::<[u8; 32]>().to_vec(),
            drain_timeout: Duration::from_secs(30),
            drain_batch_size: 10_000,
            drain_batch_interval: Duration::from_secs(2),
            http_header_timeout: Duration::from_secs(30),
            max_connections: 16_384,
            longpoll_max_body: 10_000_000,
            longpoll_max_line: 10_000_000,
            max_longpoll_sessions: 16_384,
        }
    }
}
