//! The one error type of `phx-cluster`.

use phx_presence::PresenceError;

/// What can go wrong in the cluster layer.
///
/// ```
/// use phx_cluster::{ClusterError, ClusterKey};
///
/// // A cluster secret too short to derive keys from is refused up front.
/// let err = ClusterKey::derive(b"short").err();
/// assert!(matches!(err, Some(ClusterError::Invalid { .. })), "{err:?}");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL cannot be parsed, or Redis refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A configuration the tracker refuses, or a presence operation that failed
    /// (an update of something not tracked).
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// A node name or topic that cannot go on the wire (empty, or too long).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A message from another node that cannot be decoded.
    #[error("bad cluster frame: {0}")]
    Frame(String),
    /// Redis did not answer within the link's deadline (a stalled link).
    #[error("Redis did not answer within {0:?} ({1})")]
    Deadline(std::time::Duration, &'static str),
    /// The outgoing queue is full (Redis is slow or away): the message is dropped.
    #[error("outgoing queue full: message dropped")]
    QueueFull,
    /// The node or its transport has shut down.
    #[error("cluster link closed")]
    Closed,
}
