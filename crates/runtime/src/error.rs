//! The one error type of the runtime crate.

use phx_protocol::ProtocolError;

use crate::body::BoxError;

/// What went wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A frame could not be decoded or encoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A payload could not be serialized to or parsed from JSON.
    #[error("payload is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A socket's outbound queue is full: the client is not reading.
    #[error("the socket's outbound queue is full (slow client)")]
    SlowClient,
    /// A channel's mailbox is full: the message was not queued.
    #[error("the channel's mailbox is full")]
    MailboxFull,
    /// `push` or `broadcast` inside `join`: the channel is not joined yet
    /// (Phoenix raises); do it in `after_join`.
    #[error("push and broadcast are only possible once the channel has joined (use after_join)")]
    NotJoined,
    /// The socket or channel this handle points to has ended.
    #[error("the socket or channel has closed")]
    Closed,
    /// A presence operation failed.
    #[error(transparent)]
    Presence(#[from] phx_presence::PresenceError),
    /// A cluster adapter could not carry a broadcast, or one from another node
    /// could not be read.
    /// The adapter's own error is kept as the source.
    #[error("cluster adapter: {0}")]
    Adapter(#[source] BoxError),
    /// Something a peer sent is over a configured size limit (`what` names it).
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large (`presence meta`).
        what: &'static str,
        /// Its size, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A broadcast from outside the application named an internal topic
    /// (`phx_*`, `phx:*`), which only the runtime and its apps may reach.
    #[error("topic {0:?} is internal: no outside broadcast may reach it")]
    InternalTopic(String),
    /// The configuration cannot be used (an origin entry without a host).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Token verification cannot be set up: a secret too short, a key that is
    /// not a public key in PEM.
    #[error("token verification: {0}")]
    AuthConfig(String),
    /// A channel handler failed; the channel crashes and its client gets
    /// `phx_error`. What failed is kept as the source.
    #[error("channel failed: {0}")]
    Channel(#[source] BoxError),
}

impl RuntimeError {
    /// A channel failure, for `?` in channel handlers: from a message or from
    /// the error that caused it (kept as the source).
    ///
    /// ```
    /// use phx_runtime::RuntimeError;
    ///
    /// let err = RuntimeError::channel("no such room");
    /// assert_eq!(err.to_string(), "channel failed: no such room");
    ///
    /// let parse = "x".parse::<u32>().map_err(RuntimeError::channel);
    /// let err = parse.unwrap_err();
    /// assert!(std::error::Error::source(&err).is_some());
    /// ```
    pub fn channel(cause: impl Into<BoxError>) -> RuntimeError {
        RuntimeError::Channel(cause.into())
    }

    /// A cluster adapter failure, keeping the adapter's error as the source.
    pub fn adapter(cause: impl Into<BoxError>) -> RuntimeError {
        RuntimeError::Adapter(cause.into())
    }
}
