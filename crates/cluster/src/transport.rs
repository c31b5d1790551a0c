//! The Redis link: publishes bytes on channels, receives the subscribed
//! channels' messages as a stream of events, and reconnects with backoff.
//!
//! One tokio task owns two Redis connections: a pub/sub connection subscribed
//! to the configured channels, and a multiplexed connection for `PUBLISH`.
//! Outgoing messages wait in a bounded queue and go out in order, batched in
//! pipelines; so Redis relays one node's messages on a channel in the order the
//! node published them. When either connection fails (Redis restarted, the
//! socket dropped, a ping unanswered), the task reports
//! [`TransportEvent::Disconnected`], drops what is queued (counted), waits
//! (backoff doubling from `backoff_min` to `backoff_max`), reconnects,
//! resubscribes and reports [`TransportEvent::Connected`] — the cue for the node
//! to resynchronise. The task ends when every [`Transport`] handle is dropped.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::ClusterError;

/// How many queued messages go out in one pipeline at most.
const MAX_BATCH: usize = 512;

/// Settings of the Redis link.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The Redis URL, e.g. `redis://127.0.0.1:6379/`.
    pub url: String,
    /// The channels to subscribe to.
    pub channels: Vec<String>,
    /// Outgoing queue size: publishing beyond it fails with [`ClusterError::QueueFull`].
    pub queue: usize,
    /// Incoming events not yet taken by the consumer; beyond it Redis reading waits.
    pub events: usize,
    /// First wait before reconnecting.
    pub backoff_min: Duration,
    /// Longest wait before reconnecting.
    pub backoff_max: Duration,
    /// How often the subscriber connection is pinged (a silent link is dropped).
    pub ping_interval: Duration,
}

impl TransportConfig {
    /// Defaults for `url` and `channels`: queues of 65 536, backoff 100 ms to
    /// 5 s, pings every 5 s.
    pub fn new(url: impl Into<String>, channels: Vec<String>) -> TransportConfig {
        TransportConfig {
            url: url.into(),
            channels,
            queue: 65_536,
            events: 65_536,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
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
    /// Messages dropped: queue full, or queued while Redis was away.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    state: AtomicU8,
    published: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    dropped: AtomicU64,
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
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Transport {
    /// Starts the link on the current tokio runtime. Fails only on a URL that
    /// cannot be parsed: an unreachable Redis is retried in the background.
    pub fn start(
        config: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<TransportEvent>), ClusterError> {
        let client = redis::Client::open(config.url.as_str())?;
        let (out_tx, out_rx) = mpsc::channel(config.queue.max(1));
        let (ev_tx, ev_rx) = mpsc::channel(config.events.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(client, config, out_rx, ev_tx, counters.clone()));
        Ok((
            Transport {
                out: out_tx,
                counters,
            },
            ev_rx,
        ))
    }

    fn enqueue(&self, msg: Outgoing) -> Result<(), ClusterError> {
        self.out.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Counters::add(&self.counters.dropped, 1);
                ClusterError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => ClusterError::Closed,
        })
    }

    /// Queues `payload` for `channel`; never waits.
    pub fn publish(&self, channel: &str, payload: Bytes) -> Result<(), ClusterError> {
        self.enqueue(Outgoing {
            channel: channel.to_owned(),
            payload,
            sent: None,
        })
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
        }
    }
}

struct Link {
    sink: PubSubSink,
    stream: PubSubStream,
    conn: MultiplexedConnection,
}

async fn connect(client: &redis::Client, channels: &[String]) -> Result<Link, ClusterError> {
    let pubsub = client.get_async_pubsub().await?;
    let (mut sink, stream) = pubsub.split();
    for channel in channels {
        sink.subscribe(channel).await?;
    }
    let conn = client.get_multiplexed_async_connection().await?;
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
    mut out: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<TransportEvent>,
    counters: Arc<Counters>,
) {
    let mut backoff = config.backoff_min;
    let mut connected_before = false;
    loop {
        counters.set_state(LinkState::Connecting);
        match connect(&client, &config.channels).await {
            Ok(link) => {
                if connected_before {
                    Counters::add(&counters.reconnects, 1);
                    info!(url = %config.url, "cluster link: reconnected to Redis");
                } else {
                    info!(url = %config.url, "cluster link: connected to Redis");
                }
                connected_before = true;
                backoff = config.backoff_min;
                counters.set_state(LinkState::Connected);
                if events.send(TransportEvent::Connected).await.is_err() {
                    break;
                }
                match session(link, &config, &mut out, &events, &counters).await {
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
                debug!(error = %e, "cluster link: cannot connect to Redis");
            }
        }
        // Wait before retrying; what is published meanwhile is dropped.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                msg = out.recv() => match msg {
                    Some(msg) => drop_msg(msg, &counters),
                    None => {
                        counters.set_state(LinkState::Closed);
                        return;
                    }
                },
            }
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
    counters.set_state(LinkState::Closed);
}

fn drop_msg(msg: Outgoing, counters: &Counters) {
    Counters::add(&counters.dropped, 1);
    if let Some(sent) = msg.sent {
        let _ = sent.send(false);
    }
}

async fn session(
    mut link: Link,
    config: &TransportConfig,
    out: &mut mpsc::Receiver<Outgoing>,
    events: &mpsc::Sender<TransportEvent>,
    counters: &Counters,
) -> End {
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            msg = link.stream.next() => {
                let Some(msg) = msg else {
                    warn!("cluster link: Redis subscription lost");
                    return End::Lost;
                };
                Counters::add(&counters.received, 1);
                let event = TransportEvent::Message {
                    channel: msg.get_channel_name().to_owned(),
                    payload: Bytes::copy_from_slice(msg.get_payload_bytes()),
                };
                if events.send(event).await.is_err() {
                    return End::Closed;
                }
            }
            n = out.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return End::Closed;
                }
                let mut pipe = redis::pipe();
                for msg in &batch {
                    pipe.cmd("PUBLISH").arg(&msg.channel).arg(&msg.payload[..]).ignore();
                }
                let result: Result<(), redis::RedisError> = pipe.query_async(&mut link.conn).await;
                let ok = result.is_ok();
                if ok {
                    Counters::add(&counters.published, n as u64);
                }
                for msg in batch.drain(..) {
                    if ok {
                        if let Some(sent) = msg.sent {
                            let _ = sent.send(true);
                        }
                    } else {
                        drop_msg(msg, counters);
                    }
                }
                if let Err(e) = result {
                    warn!(error = %e, "cluster link: publish failed");
                    return End::Lost;
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(config.ping_interval, link.sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    warn!("cluster link: Redis did not answer a ping");
                    return End::Lost;
                }
            }
        }
    }
}
