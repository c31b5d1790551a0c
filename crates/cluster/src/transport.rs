//! The Redis link: publishes bytes on channels, receives the subscribed
//! channels' messages as a stream of events, and reconnects with backoff.
//!
//! One tokio task owns two Redis connections: a pub/sub connection subscribed
//! to the configured channels, and a multiplexed connection for `PUBLISH`.
//! Outgoing messages wait in a queue bounded in messages and in bytes and go
//! out in order, batched in pipelines; so Redis relays one node's messages on a
//! channel in the order the node published them. A second, small queue (the
//! fast lane, [`Transport::publish_urgent`]) holds control messages — the
//! tracker's heartbeats and gossip — and is always emptied first, so that a
//! node busy with broadcasts is never taken for dead. When either connection fails
//! (Redis restarted, the socket dropped, a connection or a ping not answered
//! within its deadline: a stalled link), the task reports
//! [`TransportEvent::Disconnected`], drops what is queued (counted), waits
//! (backoff doubling from `backoff_min` to `backoff_max`), reconnects,
//! resubscribes and reports [`TransportEvent::Connected`] — the cue for the node
//! to resynchronise. The task ends when every [`Transport`] handle is dropped.
//!
//! With a [`ClusterKey`] every message is sealed ([`crate::seal`]): encrypted,
//! authenticated and numbered; what arrives is opened before it is reported,
//! and a forged or replayed message is dropped, logged and counted. The URL may
//! be `rediss://` (TLS, through rustls) and may carry a user and password
//! (Redis AUTH / ACL): `rediss://user:password@host:6380/`.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::seal::{ClusterKey, Opener, Rejection, Sealer};
use crate::ClusterError;

/// Messages the fast lane holds at most (small control messages; the byte
/// bound of the ordinary queue applies to both).
const URGENT_QUEUE: usize = 4_096;

/// How many queued messages go out in one pipeline at most.
const MAX_BATCH: usize = 512;

/// Settings of the Redis link that do not depend on who uses it: what
/// [`NodeConfig`](crate::NodeConfig) carries for its link.
///
/// ```
/// use std::time::Duration;
/// use phx_cluster::{ClusterKey, LinkOptions};
///
/// let options = LinkOptions {
///     key: Some(ClusterKey::derive(&[9u8; 64]).unwrap()),
///     ping_interval: Duration::from_millis(250),
///     ..LinkOptions::default()
/// };
/// assert_eq!(options.queue_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The key that seals every message (see [`crate::seal`]); `None` sends
    /// them in clear and believes whatever arrives (tests, trusted networks).
    pub key: Option<ClusterKey>,
    /// A CA certificate (PEM) to trust for `rediss://` instead of the system's.
    pub tls_ca: Option<Vec<u8>>,
    /// Outgoing queue size in messages: beyond it publishing fails with
    /// [`ClusterError::QueueFull`] (counted in [`LinkStats::dropped`]).
    pub queue: usize,
    /// Outgoing queue size in bytes (sealed sizes), bounded the same way.
    pub queue_bytes: usize,
    /// Incoming events not yet taken by the consumer; beyond it Redis reading waits.
    pub events: usize,
    /// First wait before reconnecting.
    pub backoff_min: Duration,
    /// Longest wait before reconnecting.
    pub backoff_max: Duration,
    /// How often the subscriber connection is pinged.
    pub ping_interval: Duration,
    /// How long a ping, a connection attempt (with its subscriptions) or a
    /// publish may take before the link counts as stalled and is re-established.
    pub deadline: Duration,
    /// How far a sealed message's send time may be from this node's clock.
    pub max_frame_age: Duration,
}

impl Default for LinkOptions {
    /// No key, the system's CAs, queues of 65 536 messages and 64 MiB, backoff
    /// 100 ms to 2 s, pings every second answered within 2 s, messages up to
    /// 60 s old.
    fn default() -> LinkOptions {
        LinkOptions {
            key: None,
            tls_ca: None,
            queue: 65_536,
            queue_bytes: 64 << 20,
            events: 65_536,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            deadline: Duration::from_secs(2),
            max_frame_age: Duration::from_secs(60),
        }
    }
}

/// Settings of the Redis link.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379/` or
    /// `rediss://user:password@redis.internal:6380/`.
    pub url: String,
    /// The channels to subscribe to.
    pub channels: Vec<String>,
    /// Who seals the messages: the node's name.
    pub node: String,
    /// Queues, timing, TLS and the cluster key.
    pub options: LinkOptions,
}

impl TransportConfig {
    /// [`LinkOptions::default`] for `url` and `channels`, as node `link`.
    pub fn new(url: impl Into<String>, channels: Vec<String>) -> TransportConfig {
        TransportConfig::for_node(url, channels, "link", LinkOptions::default())
    }

    /// The link of node `node` with `options`.
    pub fn for_node(
        url: impl Into<String>,
        channels: Vec<String>,
        node: impl Into<String>,
        options: LinkOptions,
    ) -> TransportConfig {
        TransportConfig {
            url: url.into(),
            channels,
            node: node.into(),
            options,
        }
    }
}

/// The link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting, or waiting to reconnect.
    Connecting,
    /// Subscribed and able to publish.
    Connected,
    /// Stopped (every handle dropped).
    Closed,
}

/// Counters of the link, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// The state now.
    pub state: LinkState,
    /// Messages handed to Redis.
    pub published: u64,
    /// Messages received from Redis.
    pub received: u64,
    /// Failed connection attempts, failed publishes, lost links.
    pub errors: u64,
    /// Successful connections after the first.
    pub reconnects: u64,
    /// Messages dropped: queue full (in messages or bytes), or queued while
    /// Redis was away.
    pub dropped: u64,
    /// The bytes of the dropped messages.
    pub dropped_bytes: u64,
    /// Bytes waiting in the outgoing queue now.
    pub queued_bytes: u64,
    /// Times the link was found stalled: a connection, ping or publish not
    /// answered within the deadline.
    pub stalls: u64,
    /// Messages dropped because they were not sealed with the cluster's key
    /// (malformed, altered, forged).
    pub forged: u64,
    /// Authentic messages dropped as replays: seen before, or too old.
    pub replayed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    state: AtomicU8,
    published: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    dropped: AtomicU64,
    dropped_bytes: AtomicU64,
    queued_bytes: AtomicUsize,
    stalls: AtomicU64,
    forged: AtomicU64,
    replayed: AtomicU64,
}

impl Counters {
    fn set_state(&self, state: LinkState) {
        let v = match state {
            LinkState::Connecting => 0,
            LinkState::Connected => 1,
            LinkState::Closed => 2,
        };
        self.state.store(v, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes `n` bytes off the outgoing queue's count.
    fn dequeued(&self, n: usize) {
        // Every message's bytes were added when it was queued.
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(n))
            });
    }
}

/// What the link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    /// Subscribed (first time or after a reconnect): resynchronise now.
    Connected,
    /// The link is down; messages published meanwhile are dropped.
    Disconnected,
    /// A message on a subscribed channel.
    Message {
        /// The channel.
        channel: String,
        /// The bytes.
        payload: Bytes,
    },
}

struct Outgoing {
    channel: String,
    payload: Bytes,
    sent: Option<oneshot::Sender<bool>>,
}

/// A handle on the Redis link; cheap to clone.
///
/// ```no_run
/// use bytes::Bytes;
/// use phx_cluster::{Transport, TransportConfig, TransportEvent};
///
/// # async fn demo() -> Result<(), phx_cluster::ClusterError> {
/// let config = TransportConfig::new("redis://127.0.0.1:6379/", vec!["demo".into()]);
/// let (link, mut events) = Transport::start(config)?;
/// while let Some(event) = events.recv().await {
///     match event {
///         TransportEvent::Connected => link.publish("demo", Bytes::from_static(b"hi"))?,
///         TransportEvent::Message { payload, .. } => { assert_eq!(&payload[..], b"hi"); break }
///         TransportEvent::Disconnected => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Transport {
    out: mpsc::Sender<Outgoing>,
    /// The fast lane: small control messages (heartbeats, presence gossip)
    /// that go out before anything waiting in `out`.
    urgent: mpsc::Sender<Outgoing>,
    counters: Arc<Counters>,
    sealer: Option<Arc<Sealer>>,
    queue_bytes: usize,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Transport {
    /// Starts the link on the current tokio runtime. Fails only on a
    /// configuration that cannot work (a URL that cannot be parsed, a CA for a
    /// plain `redis://` URL, a node name over 65 535 bytes): an unreachable,
    /// refusing or stalled Redis is retried in the background.
    pub fn start(
        config: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<TransportEvent>), ClusterError> {
        // The redis crate leaves rustls's crypto provider to the application;
        // an error only means one is installed already. rustls deprecates
        // ring's provider for lacking post-quantum key exchange; the classical
        // (ECDHE) one is what Redis servers offer today, and ring builds with
        // no C toolchain beyond cc (aws-lc-rs needs more).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match &config.options.tls_ca {
            Some(ca) => redis::Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
            None => redis::Client::open(config.url.as_str())?,
        };
        let (sealer, opener) = match &config.options.key {
            Some(key) => (
                Some(Arc::new(Sealer::new(key.clone(), config.node.clone())?)),
                Some(Opener::new(key.clone(), config.options.max_frame_age)),
            ),
            None => {
                warn!(node = %config.node, "cluster link: no cluster secret, messages travel unsealed");
                (None, None)
            }
        };
        let (out_tx, out_rx) = mpsc::channel(config.options.queue.max(1));
        let (urgent_tx, urgent_rx) = mpsc::channel(URGENT_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(config.options.events.max(1));
        let counters = Arc::new(Counters::default());
        let queue_bytes = config.options.queue_bytes;
        let lanes = Lanes {
            urgent: urgent_rx,
            out: out_rx,
        };
        tokio::spawn(run(client, config, opener, lanes, ev_tx, counters.clone()));
        Ok((
            Transport {
                out: out_tx,
                urgent: urgent_tx,
                counters,
                sealer,
                queue_bytes,
            },
            ev_rx,
        ))
    }

    fn enqueue(&self, msg: Outgoing) -> Result<(), ClusterError> {
        self.enqueue_on(&self.out, msg)
    }

    fn enqueue_on(
        &self,
        lane: &mpsc::Sender<Outgoing>,
        mut msg: Outgoing,
    ) -> Result<(), ClusterError> {
        if let Some(sealer) = &self.sealer {
            msg.payload = sealer.seal(&msg.payload)?;
        }
        let len = msg.payload.len();
        let c = &self.counters;
        let room = c
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                q.checked_add(len).filter(|&n| n <= self.queue_bytes)
            });
        if room.is_err() {
            Counters::add(&c.dropped, 1);
            Counters::add(&c.dropped_bytes, len as u64);
            return Err(ClusterError::QueueFull);
        }
        lane.try_send(msg).map_err(|e| {
            c.dequeued(len);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    Counters::add(&c.dropped, 1);
                    Counters::add(&c.dropped_bytes, len as u64);
                    ClusterError::QueueFull
                }
                mpsc::error::TrySendError::Closed(_) => ClusterError::Closed,
            }
        })
    }

    /// Queues `payload` for `channel` (sealed when the link has a key); never waits.
    pub fn publish(&self, channel: &str, payload: Bytes) -> Result<(), ClusterError> {
        self.enqueue(Outgoing {
            channel: channel.to_owned(),
            payload,
            sent: None,
        })
    }

    /// Queues `payload` for `channel` in the fast lane: it is published before
    /// anything already waiting in the ordinary queue (within the same byte
    /// bound). For small control messages whose lateness costs more than
    /// their order: heartbeats, presence gossip.
    pub fn publish_urgent(&self, channel: &str, payload: Bytes) -> Result<(), ClusterError> {
        self.enqueue_on(
            &self.urgent,
            Outgoing {
                channel: channel.to_owned(),
                payload,
                sent: None,
            },
        )
    }

    /// Queues `payload` for `channel` and waits until Redis took it; `false`
    /// when it was dropped (Redis away) or the link closed.
    pub async fn publish_confirmed(&self, channel: &str, payload: Bytes) -> bool {
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue(Outgoing {
            channel: channel.to_owned(),
            payload,
            sent: Some(tx),
        });
        queued.is_ok() && rx.await.unwrap_or(false)
    }

    /// The state and counters now.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            state: match c.state.load(Ordering::Relaxed) {
                1 => LinkState::Connected,
                2 => LinkState::Closed,
                _ => LinkState::Connecting,
            },
            published: c.published.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            dropped_bytes: c.dropped_bytes.load(Ordering::Relaxed),
            queued_bytes: c.queued_bytes.load(Ordering::Relaxed) as u64,
            stalls: c.stalls.load(Ordering::Relaxed),
            forged: c.forged.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
        }
    }
}

struct Link {
    sink: PubSubSink,
    stream: PubSubStream,
    conn: MultiplexedConnection,
}

async fn connect(client: &redis::Client, channels: &[String]) -> Result<Link, ClusterError> {
    // No response timeout of the crate's own on the publish connection: the
    // session applies the link's deadline to every publish itself.
    let publisher = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let pubsub = client.get_async_pubsub().await?;
    let (mut sink, stream) = pubsub.split();
    for channel in channels {
        sink.subscribe(channel).await?;
    }
    let conn = client
        .get_multiplexed_async_connection_with_config(&publisher)
        .await?;
    Ok(Link { sink, stream, conn })
}

/// Why a connected session ended.
enum End {
    Lost,
    Closed,
}

async fn run(
    client: redis::Client,
    config: TransportConfig,
    mut opener: Option<Opener>,
    mut lanes: Lanes,
    events: mpsc::Sender<TransportEvent>,
    counters: Arc<Counters>,
) {
    let options = &config.options;
    let mut backoff = options.backoff_min;
    let mut connected_before = false;
    loop {
        counters.set_state(LinkState::Connecting);
        let attempt = tokio::time::timeout(options.deadline, connect(&client, &config.channels));
        let attempt = match attempt.await {
            Ok(result) => result,
            Err(_) => {
                Counters::add(&counters.stalls, 1);
                Err(ClusterError::Deadline(options.deadline, "connecting"))
            }
        };
        match attempt {
            Ok(link) => {
                if connected_before {
                    Counters::add(&counters.reconnects, 1);
                    info!(url = %redacted(&config.url), "cluster link: reconnected to Redis");
                } else {
                    info!(url = %redacted(&config.url), "cluster link: connected to Redis");
                }
                connected_before = true;
                backoff = options.backoff_min;
                counters.set_state(LinkState::Connected);
                if events.send(TransportEvent::Connected).await.is_err() {
                    break;
                }
                match session(link, options, &mut opener, &mut lanes, &events, &counters).await {
                    End::Closed => break,
                    End::Lost => {
                        Counters::add(&counters.errors, 1);
                        counters.set_state(LinkState::Connecting);
                        if events.send(TransportEvent::Disconnected).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                Counters::add(&counters.errors, 1);
                if connected_before {
                    debug!(error = %e, "cluster link: cannot connect to Redis");
                } else {
                    warn!(error = %e, "cluster link: cannot connect to Redis");
                }
            }
        }
        // Wait before retrying; what is published meanwhile is dropped.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                msg = lanes.urgent.recv() => match msg {
                    Some(msg) => drop_msg(msg, &counters),
                    None => {
                        counters.set_state(LinkState::Closed);
                        return;
                    }
                },
                msg = lanes.out.recv() => match msg {
                    Some(msg) => drop_msg(msg, &counters),
                    None => {
                        counters.set_state(LinkState::Closed);
                        return;
                    }
                },
            }
        }
        backoff = backoff.saturating_mul(2).min(options.backoff_max);
    }
    counters.set_state(LinkState::Closed);
}

fn drop_msg(msg: Outgoing, counters: &Counters) {
    counters.dequeued(msg.payload.len());
    Counters::add(&counters.dropped, 1);
    Counters::add(&counters.dropped_bytes, msg.payload.len() as u64);
    if let Some(sent) = msg.sent {
        let _ = sent.send(false);
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Opens a message's payload when the link seals; `None` when it is refused
/// (counted, and logged: the first ten of each kind, then one in a thousand,
/// so that a flood on Redis cannot flood the logs).
fn open(opener: &mut Option<Opener>, payload: &[u8], counters: &Counters) -> Option<Bytes> {
    let Some(opener) = opener else {
        return Some(Bytes::copy_from_slice(payload));
    };
    match opener.open(payload) {
        Ok(opened) => Some(opened.frame),
        Err(rejection) => {
            let counter = match rejection {
                Rejection::Forged(_) => &counters.forged,
                Rejection::Replayed(_) => &counters.replayed,
            };
            let total = counter.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            if total <= 10 || total.is_multiple_of(1_000) {
                warn!(%rejection, bytes = payload.len(), total, "cluster link: message dropped");
            }
            None
        }
    }
}

/// The two outgoing queues of a link: the fast lane and the ordinary one.
struct Lanes {
    urgent: mpsc::Receiver<Outgoing>,
    out: mpsc::Receiver<Outgoing>,
}

/// Publishes the `n` messages in `batch` in one pipeline and empties it;
/// `Err` ends the session (the link closed, or Redis failed or stalled).
async fn publish(
    link: &mut Link,
    batch: &mut Vec<Outgoing>,
    n: usize,
    options: &LinkOptions,
    counters: &Counters,
) -> Result<(), End> {
    if n == 0 {
        return Err(End::Closed);
    }
    let mut pipe = redis::pipe();
    for msg in batch.iter() {
        pipe.cmd("PUBLISH")
            .arg(&msg.channel)
            .arg(&msg.payload[..])
            .ignore();
    }
    let query = pipe.query_async::<()>(&mut link.conn);
    let result = match tokio::time::timeout(options.deadline, query).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => {
            Counters::add(&counters.stalls, 1);
            Err("no answer within the deadline (stalled)".to_owned())
        }
    };
    let ok = result.is_ok();
    if ok {
        Counters::add(&counters.published, n as u64);
    }
    for msg in batch.drain(..) {
        if ok {
            counters.dequeued(msg.payload.len());
            if let Some(sent) = msg.sent {
                let _ = sent.send(true);
            }
        } else {
            drop_msg(msg, counters);
        }
    }
    result.map_err(|e| {
        warn!(error = %e, "cluster link: publish failed");
        End::Lost
    })
}

async fn session(
    mut link: Link,
    options: &LinkOptions,
    opener: &mut Option<Opener>,
    lanes: &mut Lanes,
    events: &mpsc::Sender<TransportEvent>,
    counters: &Counters,
) -> End {
    let mut ping = tokio::time::interval(options.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut urgent = Vec::new();
    loop {
        // Biased: the fast lane first, so that a heartbeat never waits behind
        // a queue of broadcasts; then what Redis sent, then the ordinary queue.
        tokio::select! {
            biased;
            n = lanes.urgent.recv_many(&mut urgent, MAX_BATCH) => {
                if let Err(end) = publish(&mut link, &mut urgent, n, options, counters).await {
                    return end;
                }
            }
            msg = link.stream.next() => {
                let Some(msg) = msg else {
                    warn!("cluster link: Redis subscription lost");
                    return End::Lost;
                };
                Counters::add(&counters.received, 1);
                let Some(payload) = open(opener, msg.get_payload_bytes(), counters) else {
                    continue;
                };
                let event = TransportEvent::Message {
                    channel: msg.get_channel_name().to_owned(),
                    payload,
                };
                if events.send(event).await.is_err() {
                    return End::Closed;
                }
            }
            n = lanes.out.recv_many(&mut batch, MAX_BATCH) => {
                if let Err(end) = publish(&mut link, &mut batch, n, options, counters).await {
                    return end;
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(options.deadline, link.sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    Counters::add(&counters.stalls, 1);
                    warn!(deadline = ?options.deadline, "cluster link: Redis did not answer a ping in time (stalled link)");
                    return End::Lost;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_the_logs() {
        assert_eq!(
            redacted("rediss://phx:s3cret@redis.internal:6380/0"),
            "rediss://phx:***@redis.internal:6380/0"
        );
        assert_eq!(
            redacted("redis://:pw@127.0.0.1:6379/"),
            "redis://:***@127.0.0.1:6379/"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
