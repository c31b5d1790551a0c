//! The operators' listener (`--admin-bind`, loopback by default): `GET /api/stats`,
//! `GET /metrics` (Prometheus text) and `POST /api/broadcast`. Every request needs
//! `Authorization: Bearer <token>` with the token of `--api-token` /
//! `PHX_API_TOKEN`; without a configured token every request is refused (401).
//! The main port serves none of these paths.
//!
//! The listener runs on the runtime's own accept loop ([`phx_runtime::serve`]):
//! a connection cap and a deadline for every request head. The token is checked
//! from the head alone, before a byte of the body is read; a broadcast body, with
//! a `content-length` or chunked, is read up to [`MAX_BODY`] bytes within the
//! head deadline (413 past the size, 408 past the deadline). A broadcast may not
//! name an internal topic (`phx_*`, `phx:*`: 403).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use phx_cluster::{Cluster, LinkState};
use phx_presence::ReplicaStatus;
use phx_runtime::body::{Body, BoxError};
use phx_runtime::{Endpoint, Metrics, Payload, RuntimeError};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::editing::{App, SocketSessions};

/// The largest `POST /api/broadcast` body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// A response of the admin listener.
type Reply = Response<Full<Bytes>>;

/// What the admin listener reads, and its own counters.
#[derive(Clone)]
pub struct Admin {
    endpoint: Endpoint,
    app: Arc<App>,
    clustered: bool,
    sessions: Arc<SocketSessions>,
    token: Option<Arc<str>>,
    registry: Arc<Registry>,
    counters: Arc<AdminCounters>,
    /// How long a broadcast body may take to arrive (the head deadline).
    body_timeout: Duration,
}

/// The admin listener's counters: its connections (kept by the runtime's accept
/// loop) and the requests it refused.
#[derive(Debug, Default)]
pub struct AdminCounters {
    /// Connections, the cap reached, head deadlines missed.
    pub listener: Arc<Metrics>,
    /// Requests without a valid token.
    pub unauthorized: AtomicU64,
    /// Broadcast bodies refused: over the size limit or not in time.
    pub bodies_refused: AtomicU64,
    /// Broadcasts refused: not the expected JSON, or an internal topic.
    pub broadcasts_refused: AtomicU64,
}

impl Admin {
    /// An admin view of `endpoint`; `token` is the bearer token (none: refuse all).
    /// With `cluster`, `/metrics` also shows the Redis link and the cluster's counters.
    pub fn new(
        endpoint: Endpoint,
        sessions: Arc<SocketSessions>,
        app: Arc<App>,
        token: Option<String>,
        cluster: Option<Arc<Cluster>>,
    ) -> Admin {
        let counters = Arc::new(AdminCounters::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RuntimeCollector {
            endpoint: endpoint.clone(),
            sessions: sessions.clone(),
        }));
        registry.register_collector(Box::new(AdminCollector(counters.clone())));
        registry.register_collector(Box::new(EditingCollector(app.clone())));
        let clustered = cluster.is_some();
        if let Some(cluster) = cluster {
            registry.register_collector(Box::new(ClusterCollector(cluster)));
        }
        Admin {
            body_timeout: endpoint.config().http_header_timeout,
            endpoint,
            app,
            clustered,
            sessions,
            token: token.filter(|t| !t.is_empty()).map(Into::into),
            registry: Arc::new(registry),
            counters,
        }
    }

    /// The counters the admin listener's accept loop keeps.
    pub fn listener_metrics(&self) -> Arc<Metrics> {
        self.counters.listener.clone()
    }

    /// Whether the `Authorization` header carries the configured token.
    fn authorized(&self, header: Option<&str>) -> bool {
        let (Some(token), Some(given)) =
            (&self.token, header.and_then(|h| h.strip_prefix("Bearer ")))
        else {
            return false;
        };
        // Constant time: neither how much matched nor the length shows in the timing.
        phx_runtime::auth::secure_compare(token.as_bytes(), given.trim().as_bytes())
    }

    /// `GET /api/stats`.
    pub fn stats(&self) -> Value {
        let presence = self.endpoint.presence().stats();
        // Every topic with its joined channels on this node: the editing
        // app's own count (edit:… and events:…), and presence for the other
        // apps' topics; `presences_by_topic` is presence's view (every node).
        let by_topic: Map<String, Value> = presence
            .topics()
            .map(|(topic, n)| (topic.to_owned(), json!(n)))
            .collect();
        let mut topics = by_topic.clone();
        topics.retain(|topic, _| !topic.starts_with("edit:") && !topic.starts_with("events:"));
        for (topic, n) in self.app.topics() {
            topics.insert(topic, json!(n));
        }
        let db = self.app.database();
        let shared = phx_editing::Records::shared(db);
        let mut database = json!({
            "backend": db.backend(),
            "shared": shared,
        });
        if self.clustered && !shared {
            database["warning"] =
                json!("clustered over Redis with SQLite: each node's records are its own");
        }
        json!({
            "database": self.app.health().as_str(),
            "records": database,
            "sockets": self.endpoint.metrics().sockets_open,
            "sessions": {
                "anonymous": self.sessions.anonymous(),
                "signed_in": self.sessions.signed_in(),
            },
            "users": self.sessions.distinct_users(),
            "topics": topics,
            "presences_by_topic": by_topic,
            "presences": presence.sessions(),
        })
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%err, "metrics cannot be encoded");
        }
        out
    }

    /// `POST /api/broadcast`: the status and why, when refused.
    fn broadcast(&self, body: &[u8]) -> Result<(), (StatusCode, String)> {
        #[derive(Deserialize)]
        struct Request {
            topic: String,
            event: String,
            #[serde(default)]
            payload: Option<Value>,
        }
        let bad = |why: String| (StatusCode::BAD_REQUEST, why);
        let req: Request = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        if req.topic.is_empty() || req.event.is_empty() {
            return Err(bad("topic and event must not be empty".to_owned()));
        }
        let payload = req.payload.unwrap_or_else(|| json!({}));
        self.endpoint
            .pubsub()
            .broadcast_external(&req.topic, &req.event, Payload::from(payload))
            .map_err(|err| match err {
                RuntimeError::InternalTopic(_) => (StatusCode::FORBIDDEN, err.to_string()),
                other => bad(other.to_string()),
            })
    }

    /// Answers one admin request: the token first, from the head alone; the
    /// body only for a broadcast, and bounded.
    async fn answer(self, req: Request<Body>) -> Reply {
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        if !self.authorized(auth) {
            self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%method, %path, "admin request without a valid token");
            return json_reply(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/api/stats") => json_reply(StatusCode::OK, &self.stats()),
            ("GET", "/metrics") => Response::builder()
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(self.metrics())))
                .unwrap_or_default(),
            ("POST", "/api/broadcast") => {
                let body = match self.read_body(req).await {
                    Ok(body) => body,
                    Err((status, why)) => {
                        self.counters.bodies_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%why, "admin broadcast body refused");
                        return json_reply(status, &json!({"error": why}));
                    }
                };
                match self.broadcast(&body) {
                    Ok(()) => json_reply(StatusCode::OK, &json!({"ok": true})),
                    Err((status, why)) => {
                        self.counters
                            .broadcasts_refused
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%why, "bad admin broadcast");
                        json_reply(status, &json!({"error": why}))
                    }
                }
            }
            _ => json_reply(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    /// Reads a request body of at most [`MAX_BODY`] bytes, `content-length` or
    /// chunked, within the head deadline.
    async fn read_body(&self, req: Request<Body>) -> Result<Bytes, (StatusCode, String)> {
        let too_large = || {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over the limit of {MAX_BODY} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        match tokio::time::timeout(self.body_timeout, read_limited(req.into_body())).await {
            Ok(Ok(Some(body))) => Ok(body),
            Ok(Ok(None)) => Err(too_large()),
            Ok(Err(err)) => Err((StatusCode::BAD_REQUEST, format!("body not readable: {err}"))),
            Err(_) => Err((
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time".to_owned(),
            )),
        }
    }
}

/// The body's bytes, or `None` once they pass [`MAX_BODY`] (nothing more is
/// read). Frame by frame rather than `http_body_util::Limited`, whose boxed
/// error rustc cannot prove `Send` for every lifetime inside the service's
/// future (rust-lang/rust#64552).
async fn read_limited(mut body: Body) -> Result<Option<Bytes>, BoxError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf.freeze()))
}

/// The admin listener as a `tower::Service`, for [`phx_runtime::serve`].
impl tower_service::Service<Request<Body>> for Admin {
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Reply, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let admin = self.clone();
        Box::pin(async move { Ok(admin.answer(req).await) })
    }
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

/// Reads the admin listener's own counters on every scrape.
struct AdminCollector(Arc<AdminCounters>);

impl std::fmt::Debug for AdminCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCollector")
    }
}

impl Collector for AdminCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let listener = self.0.listener.snapshot();
        let open = gauge(listener.http_connections_open);
        open.encode(encoder.encode_descriptor(
            "phx_admin_connections_open",
            "Connections to the admin listener open now.",
            None,
            open.metric_type(),
        )?)?;
        let counters: [(&str, &str, u64); 5] = [
            (
                "phx_admin_connections_limited",
                "Times the admin listener's connection cap was reached.",
                listener.connections_limited,
            ),
            (
                "phx_admin_head_timeouts",
                "Admin connections closed: request head not received in time.",
                listener.http_head_timeouts,
            ),
            (
                "phx_admin_unauthorized",
                "Admin requests without a valid token.",
                self.0.unauthorized.load(Ordering::Relaxed),
            ),
            (
                "phx_admin_bodies_refused",
                "Admin request bodies refused (too large or too slow).",
                self.0.bodies_refused.load(Ordering::Relaxed),
            ),
            (
                "phx_admin_broadcasts_refused",
                "Admin broadcasts refused (malformed, or an internal topic).",
                self.0.broadcasts_refused.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Reads the runtime's counters and presence statistics on every scrape.
struct RuntimeCollector {
    endpoint: Endpoint,
    sessions: Arc<SocketSessions>,
}

impl std::fmt::Debug for RuntimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeCollector")
    }
}

fn gauge(n: impl TryInto<i64>) -> ConstGauge<i64> {
    ConstGauge::new(n.try_into().unwrap_or(i64::MAX))
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.endpoint.metrics();
        let presence = self.endpoint.presence().stats();

        // Every runtime counter, under its own name: limits hit, backpressure,
        // drops and drains included.
        for entry in m.entries() {
            let name = format!("phx_{}", entry.name);
            if entry.gauge {
                let g = gauge(entry.value);
                g.encode(encoder.encode_descriptor(&name, entry.help, None, g.metric_type())?)?;
            } else {
                let c = ConstCounter::new(entry.value);
                c.encode(encoder.encode_descriptor(&name, entry.help, None, c.metric_type())?)?;
            }
        }

        let joins = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "phx_joins",
            "Channel joins by result.",
            None,
            joins.metric_type(),
        )?;
        for (result, value) in [("ok", m.joins_ok), ("refused", m.joins_refused)] {
            ConstCounter::new(value).encode(family.encode_family(&[("result", result)])?)?;
        }

        // Every closed socket has one reason; those the runtime does not name are "closed".
        let closed = m.sockets_accepted.saturating_sub(m.sockets_open);
        let named = [
            ("slow_client", m.slow_clients),
            ("idle_timeout", m.idle_timeouts),
            ("malformed_frame", m.malformed_frames),
            ("oversize_frame", m.oversize_frames),
            ("channel_stuck", m.channels_stuck),
            ("messages_dropped", m.dropped_messages),
            ("drained", m.sockets_drained),
        ];
        let other = closed.saturating_sub(named.iter().map(|(_, n)| n).sum());
        let mut family = encoder.encode_descriptor(
            "phx_disconnects",
            "Sockets closed, by reason.",
            None,
            joins.metric_type(),
        )?;
        for (reason, value) in named.into_iter().chain([("closed", other)]) {
            ConstCounter::new(value).encode(family.encode_family(&[("reason", reason)])?)?;
        }

        let gauges: [(&str, &str, ConstGauge<i64>); 4] = [
            (
                "phx_presences",
                "Presences tracked now (one per connection and topic).",
                gauge(presence.sessions()),
            ),
            (
                "phx_presence_users",
                "Distinct signed-in users in presence.",
                gauge(presence.distinct_users()),
            ),
            (
                "phx_presence_topics",
                "Topics with at least one presence.",
                gauge(presence.topics().count()),
            ),
            (
                "phx_sessions_signed_in",
                "Sockets with an identity verified from a token (--auth).",
                gauge(self.sessions.signed_in()),
            ),
        ];
        for (name, help, g) in gauges {
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let largest = gauge(presence.topics().map(|(_, n)| n).max().unwrap_or(0));
        largest.encode(encoder.encode_descriptor(
            "phx_presence_largest_topic",
            "Presences on the busiest topic.",
            None,
            largest.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Reads the editing app's refusal counters on every scrape.
struct EditingCollector(Arc<App>);

impl std::fmt::Debug for EditingCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EditingCollector")
    }
}

impl Collector for EditingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = gauge(i64::from(self.0.health() == phx_editing::Health::Up));
        up.encode(encoder.encode_descriptor(
            "phx_database_up",
            "1 when the records database answered its last query or probe, else 0.",
            None,
            up.metric_type(),
        )?)?;
        let limits = self.0.limits();
        for (name, help, value) in [
            (
                "phx_editing_max_record_bytes",
                "Largest record the editing app stores, in bytes.",
                u64::try_from(limits.max_record_bytes).unwrap_or(u64::MAX),
            ),
            (
                "phx_editing_max_records_per_kind",
                "Most records one kind may hold.",
                limits.max_records_per_kind,
            ),
        ] {
            let g = gauge(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let kind = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "phx_editing_refusals",
            "Editing requests refused (joins and client events), by kind and reason.",
            None,
            kind.metric_type(),
        )?;
        for (kind, reason, n) in self.0.refusals() {
            ConstCounter::new(n)
                .encode(family.encode_family(&[("kind", kind.as_str()), ("reason", reason)])?)?;
        }
        Ok(())
    }
}

/// Reads the cluster node's Redis link state and counters on every scrape.
struct ClusterCollector(Arc<Cluster>);

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCollector")
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let up = gauge(i64::from(s.link.state == LinkState::Connected));
        up.encode(encoder.encode_descriptor(
            "phx_cluster_redis_up",
            "1 when the Redis link is connected and subscribed, else 0.",
            None,
            up.metric_type(),
        )?)?;
        let queued = gauge(s.link.queued_bytes);
        queued.encode(encoder.encode_descriptor(
            "phx_cluster_redis_queued_bytes",
            "Bytes waiting in the outgoing queue towards Redis.",
            None,
            queued.metric_type(),
        )?)?;
        let counters = [
            (
                "phx_cluster_redis_published",
                "Messages published to Redis.",
                s.link.published,
            ),
            (
                "phx_cluster_redis_received",
                "Messages received from Redis.",
                s.link.received,
            ),
            (
                "phx_cluster_redis_errors",
                "Redis errors (failed publishes, lost connections).",
                s.link.errors,
            ),
            (
                "phx_cluster_redis_reconnects",
                "Reconnections to Redis.",
                s.link.reconnects,
            ),
            (
                "phx_cluster_redis_dropped",
                "Messages dropped because the Redis queue was full (in messages or bytes) or Redis was away.",
                s.link.dropped,
            ),
            (
                "phx_cluster_redis_dropped_bytes",
                "Bytes of the messages dropped towards Redis.",
                s.link.dropped_bytes,
            ),
            (
                "phx_cluster_redis_stalls",
                "Times the Redis link was found stalled (connect, ping or publish past the deadline) and re-established.",
                s.link.stalls,
            ),
            (
                "phx_cluster_frames_forged",
                "Messages on Redis dropped because they were not sealed with the cluster key (forged, altered, malformed).",
                s.link.forged,
            ),
            (
                "phx_cluster_frames_replayed",
                "Authentic messages on Redis dropped as replays (seen before, or too old).",
                s.link.replayed,
            ),
            (
                "phx_cluster_broadcasts_sent",
                "Broadcasts sent to other nodes.",
                s.broadcasts_sent,
            ),
            (
                "phx_cluster_broadcasts_received",
                "Broadcasts received from other nodes.",
                s.broadcasts_received,
            ),
            (
                "phx_cluster_broadcasts_lost",
                "Broadcasts of other nodes known lost (sequence gaps).",
                s.broadcasts_lost,
            ),
            (
                "phx_cluster_gossip_sent",
                "Presence tracker messages sent.",
                s.gossip_sent,
            ),
            (
                "phx_cluster_gossip_received",
                "Presence tracker messages received.",
                s.gossip_received,
            ),
            (
                "phx_cluster_bad_frames",
                "Messages from other nodes that could not be decoded.",
                s.bad_frames,
            ),
            (
                "phx_cluster_name_clashes",
                "Messages carrying this node's name from another incarnation (same --node-name twice).",
                s.name_clashes,
            ),
            (
                "phx_cluster_hook_panics",
                "Panics of application hooks applying other nodes' events (contained).",
                s.hook_panics,
            ),
            (
                "phx_cluster_events_merged",
                "Presence diffs merged per topic while the event consumer had no room.",
                s.events_merged,
            ),
            (
                "phx_cluster_gossip_dropped",
                "Presence tracker messages given up (Redis away or outbox full).",
                s.gossip_dropped,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let nodes = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "phx_cluster_nodes",
            "Other nodes known, by status.",
            None,
            nodes.metric_type(),
        )?;
        for status in [
            ReplicaStatus::Up,
            ReplicaStatus::Syncing,
            ReplicaStatus::Down,
            ReplicaStatus::Left,
        ] {
            let n = s.replicas.iter().filter(|(_, st)| *st == status).count();
            let label = format!("{status:?}").to_lowercase();
            gauge(n).encode(family.encode_family(&[("status", label.as_str())])?)?;
        }
        Ok(())
    }
}
