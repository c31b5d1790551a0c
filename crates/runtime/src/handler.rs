//! The application's socket handler: who may connect, what the socket remembers
//! about them (its assigns), and its optional id (`users_socket:42`).
//!
//! This is Phoenix's `connect/3` and `id/1` (`phoenix/lib/phoenix/socket.ex`): a
//! refusal answers the WebSocket upgrade with HTTP 403 (or the status the handler
//! picks) and a long-poll connect with `{"status":403}`.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::StatusCode;

/// Query (and path) parameters of the connect request, percent-decoded. A key
/// given several times keeps its last value; nested keys such as `user[id]` are
/// kept as written.
pub type Params = BTreeMap<String, String>;

/// Which transport a socket uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// `<mount>/websocket`.
    WebSocket,
    /// `<mount>/longpoll`.
    LongPoll,
}

impl TransportKind {
    /// `websocket` or `longpoll`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::LongPoll => "longpoll",
        }
    }
}

/// What the server knows about the connect request (Phoenix's `connect_info`).
///
/// Its `Debug` output never shows the auth token:
///
/// ```
/// let info = phx_runtime::ConnectInfo {
///     auth_token: Some("s3cr3t".to_owned()),
///     ..Default::default()
/// };
/// assert!(!format!("{info:?}").contains("s3cr3t"));
/// ```
#[derive(Clone, Default)]
pub struct ConnectInfo {
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// Request path, e.g. `/socket/websocket`.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// The `Host` header.
    pub host: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// Every `x-*` request header (names lowercase).
    pub x_headers: Vec<(String, String)>,
    /// `traceparent` and `tracestate`, when present.
    pub trace_context_headers: Vec<(String, String)>,
    /// Every `sec-websocket-*` request header.
    pub sec_websocket_headers: Vec<(String, String)>,
    /// The Phoenix 1.8 auth token (`authToken` client option), when one was sent.
    pub auth_token: Option<String>,
}

impl std::fmt::Debug for ConnectInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectInfo")
            .field("peer", &self.peer)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("host", &self.host)
            .field("user_agent", &self.user_agent)
            .field("x_headers", &self.x_headers)
            .field("trace_context_headers", &self.trace_context_headers)
            .field(
                "sec_websocket_headers",
                &Redacted(&self.sec_websocket_headers),
            )
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `sec-websocket-protocol` carries the auth token: its value is not shown.
struct Redacted<'a>(&'a [(String, String)]);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if name == "sec-websocket-protocol" && value.contains("bearer") {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            }))
            .finish()
    }
}

/// The connect request handed to [`SocketHandler::connect`].
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    /// Query parameters (`vsn` included).
    pub params: Params,
    /// Request details.
    pub info: ConnectInfo,
    /// The transport in use.
    pub transport: TransportKind,
}

/// A type map of per-socket values set at connect and readable by every channel of
/// the socket (Phoenix's socket assigns).
///
/// ```
/// #[derive(Debug, PartialEq)]
/// struct UserId(u64);
/// let assigns = phx_runtime::Assigns::new().with(UserId(42));
/// assert_eq!(assigns.get::<UserId>(), Some(&UserId(42)));
/// ```
#[derive(Clone, Default)]
pub struct Assigns {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Assigns {
    /// No values.
    pub fn new() -> Assigns {
        Assigns::default()
    }

    /// Adds (or replaces) the value of type `T`.
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> Assigns {
        self.insert(value);
        self
    }

    /// Adds (or replaces) the value of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if set.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
    }
}

impl std::fmt::Debug for Assigns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Assigns({} values)", self.values.len())
    }
}

/// A user identity the server has verified (from a signed token), as the socket
/// handler puts it in the socket's [`Assigns`].
///
/// Channels trust only this: a user id read from a join payload or from connect
/// params is something the client says about itself. An application that
/// verifies tokens itself inserts one of these; the verifiers of `phx_runtime`
/// do it for it.
///
/// ```
/// use phx_runtime::{Assigns, Identity};
/// let assigns = Assigns::new().with(Identity::new("42").with_name("Ann"));
/// let who = assigns.get::<Identity>().unwrap();
/// assert_eq!((who.user_id.as_str(), who.name.as_deref()), ("42", Some("Ann")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The verified user id; a number is written as its decimal string.
    pub user_id: String,
    /// The user's display name, when the token carries one.
    pub name: Option<String>,
}

impl Identity {
    /// An identity with no name.
    pub fn new(user_id: impl Into<String>) -> Identity {
        Identity {
            user_id: user_id.into(),
            name: None,
        }
    }

    /// Sets the display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Identity {
        self.name = Some(name.into());
        self
    }
}

/// An accepted connection: its assigns and its optional socket id.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// Values every channel of the socket can read.
    pub assigns: Assigns,
    /// The socket id; a `disconnect` broadcast to it closes the socket.
    pub id: Option<String>,
}

impl Connection {
    /// A connection with no assigns and no id.
    pub fn new() -> Connection {
        Connection::default()
    }

    /// Sets the socket id, e.g. `users_socket:42`.
    pub fn id(mut self, id: impl Into<String>) -> Connection {
        self.id = Some(id.into());
        self
    }

    /// Adds an assign.
    pub fn assign<T: Any + Send + Sync>(mut self, value: T) -> Connection {
        self.assigns.insert(value);
        self
    }
}

/// A refused connection, with the HTTP status of the refusal (403 by default).
///
/// ```
/// use phx_runtime::{Refusal, StatusCode};
///
/// assert_eq!(Refusal::forbidden().status, StatusCode::FORBIDDEN);
/// let busy = Refusal::status(StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(busy.status.as_u16(), 429);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status answering a WebSocket upgrade (long-poll always answers
    /// `{"status":403}`, as Phoenix does).
    pub status: StatusCode,
}

impl Refusal {
    /// 403 Forbidden, Phoenix's answer to `:error`.
    pub fn forbidden() -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
        }
    }

    /// Any status, e.g. 429 for rate limiting (Phoenix's custom `error_handler`).
    pub fn status(status: StatusCode) -> Refusal {
        Refusal { status }
    }
}

/// Decides who may connect. Implemented by the application.
///
/// ```
/// use phx_runtime::{ConnectRequest, Connection, Refusal, SocketHandler};
///
/// struct UserSocket;
/// impl SocketHandler for UserSocket {
///     async fn connect(&self, req: &ConnectRequest) -> Result<Connection, Refusal> {
///         match req.params.get("user_id") {
///             Some(id) => Ok(Connection::new().id(format!("users_socket:{id}"))),
///             None => Err(Refusal::forbidden()),
///         }
///     }
/// }
/// ```
pub trait SocketHandler: Send + Sync + 'static {
    /// Accepts or refuses a connection.
    fn connect(
        &self,
        req: &ConnectRequest,
    ) -> impl Future<Output = Result<Connection, Refusal>> + Send;
}

/// Accepts everyone, with no assigns and no id.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl SocketHandler for AcceptAll {
    async fn connect(&self, _req: &ConnectRequest) -> Result<Connection, Refusal> {
        Ok(Connection::new())
    }
}

/// The object-safe form of [`SocketHandler`] the endpoint stores.
pub(crate) trait DynHandler: Send + Sync + 'static {
    fn connect<'a>(&'a self, req: &'a ConnectRequest)
        -> BoxFuture<'a, Result<Connection, Refusal>>;
}

impl<H: SocketHandler> DynHandler for H {
    fn connect<'a>(
        &'a self,
        req: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Connection, Refusal>> {
        Box::pin(SocketHandler::connect(self, req))
    }
}

/// Parses a query string into [`Params`].
pub(crate) fn parse_query(query: &str) -> Params {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_decodes_and_keeps_last() {
        let p = parse_query("vsn=2.0.0&user_id=a%20b&x=1&x=2&flag&n=%zz&&plus=a+b");
        assert_eq!(p["vsn"], "2.0.0");
        assert_eq!(p["user_id"], "a b");
        assert_eq!(p["x"], "2");
        assert_eq!(p["flag"], "");
        assert_eq!(p["n"], "%zz");
        assert_eq!(p["plus"], "a b");
    }

    #[test]
    fn truncated_percent_escape_is_kept() {
        assert_eq!(parse_query("a=%4")["a"], "%4");
        assert_eq!(parse_query("a=%")["a"], "%");
        assert_eq!(parse_query("a=%é1")["a"], "%é1");
    }
}
