//! Counters for what the runtime does and what went wrong, cheap enough to bump on
//! every frame (relaxed atomics), readable at any time as a [`MetricsSnapshot`] and
//! rendered in the Prometheus text format by [`MetricsSnapshot::to_prometheus`].

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Live counters and gauges of one endpoint.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[doc = $doc])* pub(crate) $name: AtomicU64,)*
        }

        /// A copy of every counter at one moment.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct MetricsSnapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Metrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl MetricsSnapshot {
            /// Every counter with its name (without the `phx_` prefix), its
            /// description, and whether it is a gauge (a level, not a running total),
            /// for exporting through a metrics library.
            pub fn entries(&self) -> Vec<MetricEntry> {
                vec![$(MetricEntry {
                    name: stringify!($name),
                    help: concat!($($doc,)*).trim_ascii(),
                    gauge: concat!($($doc,)*).contains("(gauge)"),
                    value: self.$name,
                },)*]
            }

            /// Renders the snapshot in the Prometheus text exposition format.
            pub fn to_prometheus(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str(concat!("# HELP phx_", stringify!($name), " ", $($doc,)* "\n"));
                    out.push_str(concat!("phx_", stringify!($name), " "));
                    out.push_str(&self.$name.to_string());
                    out.push('\n');
                )*
                out
            }
        }
    };
}

/// One counter of a [`MetricsSnapshot`], as [`MetricsSnapshot::entries`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricEntry {
    /// The counter's name, without the `phx_` prefix (`channels_open`).
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// A level that goes up and down (sockets open now), not a running total.
    pub gauge: bool,
    /// Its value.
    pub value: u64,
}

metrics! {
    /// Sockets connected now (gauge).
    sockets_open,
    /// Sockets accepted since start.
    sockets_accepted,
    /// Connections refused: bad vsn, origin, subprotocol or the handler's refusal.
    sockets_refused,
    /// Channels joined now (gauge).
    channels_open,
    /// Joins accepted since start.
    joins_ok,
    /// Joins answered with an error since start.
    joins_refused,
    /// Channels that crashed (panic or error) and sent phx_error.
    channel_crashes,
    /// Frames received from clients.
    frames_in,
    /// Frames written to clients.
    frames_out,
    /// Broadcasts published.
    broadcasts,
    /// Broadcasts received from other nodes of a cluster.
    remote_broadcasts,
    /// Broadcasts the cluster adapter could not queue or send to other nodes.
    adapter_errors,
    /// Malformed frames: the connection was closed.
    malformed_frames,
    /// Frames over the size limit: the connection was closed.
    oversize_frames,
    /// Clients disconnected because their outbound queue was full.
    slow_clients,
    /// Sockets closed for sending nothing within the idle timeout.
    idle_timeouts,
    /// Client messages that waited for room in a full channel mailbox (the socket
    /// stopped reading its client meanwhile).
    backpressure_waits,
    /// Sockets closed because a channel took nothing within the stall timeout.
    channels_stuck,
    /// Messages a channel or a PubSub subscription had to see but could not queue;
    /// the socket was closed so that its client resyncs.
    dropped_messages,
    /// Joins refused because the topic was over the length limit.
    topics_too_long,
    /// Joins refused because the join payload was over the size limit.
    join_payloads_too_large,
    /// Presence tracks and updates refused because the entry was over the size limit.
    presence_metas_too_large,
    /// Long-poll sessions ended because the frames waiting for a poll passed the
    /// socket's byte budget (also counted as slow clients).
    longpoll_over_budget,
    /// Broadcasts from outside the application (a client's request, the admin
    /// API) refused because they named an internal topic (`phx_*`, `phx:*`).
    internal_topics_refused,
    /// Messages for a topic the socket has not joined.
    unmatched_topics,
    /// Long-poll sessions open now (gauge).
    longpoll_sessions,
    /// Long-poll requests refused by a limit (body or line size, session cap).
    longpoll_refused,
    /// HTTP connections open now, WebSockets included (gauge).
    http_connections_open,
    /// Times the connection cap was reached (new connections waited).
    connections_limited,
    /// HTTP connections closed because a request head did not arrive in time.
    http_head_timeouts,
    /// Sockets closed by a drain.
    sockets_drained,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}
