//! The operators' listener (`--admin-bind`, loopback by default): `GET /api/stats`,
//! `GET /metrics` (Prometheus text) and `POST /api/broadcast`. Every request needs
//! `Authorization: Bearer <token>` with the token of `--api-token` /
//! `PHX_API_TOKEN`; without a configured token every request is refused (401).
//! The main port serves none of these paths.

use std::sync::Arc;

use bytes::Bytes;
use phx_cluster::{Cluster, LinkState};
use phx_presence::ReplicaStatus;
use phx_runtime::{Endpoint, Payload};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use warp::filters::BoxedFilter;
use warp::http::{Response, StatusCode};
use warp::reply::Response as Reply;
use warp::Filter;

use crate::editing::{App, SocketSessions};

/// The largest `POST /api/broadcast` body accepted.
const MAX_BODY: u64 = 1 << 20;

/// What the admin listener reads.
#[derive(Clone)]
pub struct Admin {
    endpoint: Endpoint,
    app: Arc<App>,
    clustered: bool,
    sessions: Arc<SocketSessions>,
    token: Option<Arc<str>>,
    registry: Arc<Registry>,
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
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RuntimeCollector {
            endpoint: endpoint.clone(),
            sessions: sessions.clone(),
        }));
        registry.register_collector(Box::new(EditingCollector(app.clone())));
        let clustered = cluster.is_some();
        if let Some(cluster) = cluster {
            registry.register_collector(Box::new(ClusterCollector(cluster)));
        }
        Admin {
            endpoint,
            app,
            clustered,
            sessions,
            token: token.filter(|t| !t.is_empty()).map(Into::into),
            registry: Arc::new(registry),
        }
    }

    /// Whether the `Authorization` header carries the configured token.
    fn authorized(&self, header: Option<&str>) -> bool {
        let (Some(token), Some(given)) =
            (&self.token, header.and_then(|h| h.strip_prefix("Bearer ")))
        else {
            return false;
        };
        // Compare every byte so that the time taken does not tell how much matched.
        let (a, b) = (token.as_bytes(), given.trim().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    /// `POST /api/broadcast`.
    fn broadcast(&self, body: &[u8]) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Request {
            topic: String,
            event: String,
            #[serde(default)]
            payload: Option<Value>,
        }
        let req: Request = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if req.topic.is_empty() || req.event.is_empty() {
            return Err("topic and event must not be empty".to_owned());
        }
        let payload = req.payload.unwrap_or_else(|| json!({}));
        self.endpoint
            .pubsub()
            .broadcast(&req.topic, &req.event, Payload::from(payload));
        Ok(())
    }

    /// Answers one admin request.
    fn answer(&self, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Reply {
        if !self.authorized(auth) {
            tracing::warn!(%method, %path, "admin request without a valid token");
            return json_reply(StatusCode::UNAUTHORIZED, &json!({"error": "unauthorized"}));
        }
        match (method, path) {
            ("GET", "/api/stats") => json_reply(StatusCode::OK, &self.stats()),
            ("GET", "/metrics") => Response::builder()
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(self.metrics().into())
                .unwrap_or_default(),
            ("POST", "/api/broadcast") => match self.broadcast(body) {
                Ok(()) => json_reply(StatusCode::OK, &json!({"ok": true})),
                Err(why) => {
                    tracing::warn!(%why, "bad admin broadcast");
                    json_reply(StatusCode::BAD_REQUEST, &json!({"error": why}))
                }
            },
            _ => json_reply(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    /// The warp routes of the admin listener.
    pub fn routes(self) -> BoxedFilter<(Reply,)> {
        warp::method()
            .and(warp::path::full())
            .and(warp::header::optional::<String>("authorization"))
            .and(
                warp::body::content_length_limit(MAX_BODY)
                    .and(warp::body::bytes())
                    .or(warp::any().map(Bytes::new))
                    .unify(),
            )
            .map(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      auth: Option<String>,
                      body: Bytes| {
                    self.answer(method.as_str(), path.as_str(), auth.as_deref(), &body)
                },
            )
            .boxed()
    }
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string().into())
        .unwrap_or_default()
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
                "Sockets whose connect params carry user_id.",
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
        let counters: [(&str, &str, u64); 11] = [
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
                "Messages dropped because the Redis queue was full.",
                s.link.dropped,
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
