//! Signed identities on connect: a [`SocketHandler`] that verifies the token a
//! client sends in its connect params and puts the verified [`Identity`] in the
//! socket's assigns, as a Phoenix application's `connect/3` does with
//! `Phoenix.Token.verify(socket, "user socket", token, max_age: 86400)`.
//!
//! Two verifiers implement [`TokenVerifier`]: [`PhoenixToken`] (tokens signed by
//! `Phoenix.Token.sign/4`, so a Phoenix backend's login code keeps working) and
//! [`Jwt`] (HS256, RS256, ES256). The formats, byte by byte, and what is refused
//! are in `protocol-spec/auth.md`.
//!
//! [`TokenAuth`] reads the `token` param (phoenix.js:
//! `new Socket("/socket", {params: {token}})`), or else Phoenix 1.8's `authToken`
//! (sent in `sec-websocket-protocol`), verifies it and accepts the socket with
//! the [`Identity`] assigned and the id `users_socket:<user id>`; a missing or
//! refused token refuses the connect (HTTP 403 on the WebSocket upgrade,
//! `{"status":403}` on long-poll). It wraps the application's own handler
//! ([`TokenAuth::wrapping`]), or an application calls
//! [`TokenAuth::identify`] or a verifier from its own handler.

mod etf;
mod jwt;
mod phoenix_token;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{AcceptAll, ConnectRequest, Connection, Identity, Refusal, SocketHandler};

pub use jwt::{Jwt, LEEWAY_SECS, MIN_HS256_SECRET};
pub use phoenix_token::{PhoenixToken, MIN_SECRET_KEY_BASE};

/// Longest token accepted, in bytes; a longer one is refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. Every refusal refuses the connect the same way (403);
/// the kind is for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenRefusal {
    /// No token was sent.
    Missing,
    /// Not a token of the expected format (or longer than [`MAX_TOKEN_BYTES`]).
    Malformed,
    /// The signature does not match: forged, altered, or signed with another
    /// key, salt or algorithm.
    Invalid,
    /// Signed, but older than its max age (or past `exp`).
    Expired,
    /// Signed and fresh, but its data names no user (e.g. a list, an empty id).
    Unsupported,
}

impl TokenRefusal {
    /// Every kind, in the order of [`TokenRefusal::as_str`]'s counters.
    pub const ALL: [TokenRefusal; 5] = [
        TokenRefusal::Missing,
        TokenRefusal::Malformed,
        TokenRefusal::Invalid,
        TokenRefusal::Expired,
        TokenRefusal::Unsupported,
    ];

    /// `missing`, `malformed`, `invalid`, `expired` or `unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefusal::Missing => "missing",
            TokenRefusal::Malformed => "malformed",
            TokenRefusal::Invalid => "invalid",
            TokenRefusal::Expired => "expired",
            TokenRefusal::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a token and says whose it is. `now` is the time to check expiry
/// against (a parameter, so that tests can use fixed vectors).
pub trait TokenVerifier: Send + Sync + 'static {
    /// The verified identity, or why the token is refused.
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, TokenRefusal>;
}

impl<V: TokenVerifier + ?Sized> TokenVerifier for Box<V> {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, TokenRefusal> {
        (**self).verify(token, now)
    }
}

impl<V: TokenVerifier + ?Sized> TokenVerifier for Arc<V> {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, TokenRefusal> {
        (**self).verify(token, now)
    }
}

/// Either verifier, chosen at run time (e.g. from a command-line flag).
#[derive(Clone, Debug)]
pub enum Verifier {
    /// `Phoenix.Token`.
    PhoenixToken(PhoenixToken),
    /// JWT (boxed: its key and validation rules are the larger variant).
    Jwt(Box<Jwt>),
}

impl TokenVerifier for Verifier {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, TokenRefusal> {
        match self {
            Verifier::PhoenixToken(v) => v.verify(token, now),
            Verifier::Jwt(v) => v.verify(token, now),
        }
    }
}

/// The source of "now" for expiry checks.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Refusals by kind, since the handler was made.
#[derive(Debug, Default)]
struct Refusals([AtomicU64; 5]);

/// A [`SocketHandler`] that accepts only sockets with a valid token, and gives
/// them their [`Identity`] and the id `users_socket:<user id>`.
///
/// ```
/// use phx_runtime::auth::{PhoenixToken, TokenAuth};
/// use phx_runtime::{Endpoint, SocketHandler};
///
/// let secret = "a secret_key_base of at least sixty-four bytes, as Phoenix requires it";
/// let verifier = PhoenixToken::new(secret.as_bytes(), "user socket").unwrap()
///     .max_age(std::time::Duration::from_secs(86_400));
/// let endpoint = Endpoint::builder().handler(TokenAuth::new(verifier)).build();
/// ```
///
/// Channels read the identity from the assigns:
/// `ctx.assigns().get::<phx_runtime::Identity>()`.
pub struct TokenAuth<V, H = AcceptAll> {
    verifier: V,
    inner: H,
    clock: Clock,
    refusals: Arc<Refusals>,
}

impl<V: TokenVerifier> TokenAuth<V> {
    /// Verifies with `verifier`, against the system clock.
    pub fn new(verifier: V) -> TokenAuth<V> {
        TokenAuth {
            verifier,
            inner: AcceptAll,
            clock: Arc::new(SystemTime::now),
            refusals: Arc::default(),
        }
    }
}

impl<V: TokenVerifier, H> TokenAuth<V, H> {
    /// Once the token is verified, asks `inner` too: its refusal refuses the
    /// connect, its assigns are kept, but the verified [`Identity`] replaces any
    /// it set and the socket id is always `users_socket:<verified id>` (an app
    /// that wants another id calls [`TokenAuth::identify`] from its own handler).
    pub fn wrapping<I: SocketHandler>(self, inner: I) -> TokenAuth<V, I> {
        TokenAuth {
            verifier: self.verifier,
            inner,
            clock: self.clock,
            refusals: self.refusals,
        }
    }

    /// Checks expiry against `clock` instead of the system clock.
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &V {
        &self.verifier
    }

    /// The identity the request's token proves: the `token` connect param, else
    /// the Phoenix 1.8 auth token. Logs and counts a refusal.
    pub fn identify(&self, req: &ConnectRequest) -> Result<Identity, TokenRefusal> {
        let token = req
            .params
            .get("token")
            .or(req.info.auth_token.as_ref())
            .map(String::as_str)
            .unwrap_or("");
        let result = self.verifier.verify(token, (self.clock)());
        if let Err(refusal) = result {
            let i = TokenRefusal::ALL
                .iter()
                .position(|r| *r == refusal)
                .unwrap_or(0);
            self.refusals.0[i].fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                reason = refusal.as_str(),
                transport = req.transport.as_str(),
                peer = ?req.info.peer,
                "connect token refused"
            );
        }
        result
    }

    /// How many connects were refused for `reason` so far.
    pub fn refused(&self, reason: TokenRefusal) -> u64 {
        TokenRefusal::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.refusals.0[i].load(Ordering::Relaxed))
    }
}

impl<V: TokenVerifier, H: SocketHandler> SocketHandler for TokenAuth<V, H> {
    async fn connect(&self, req: &ConnectRequest) -> Result<Connection, Refusal> {
        let identity = self.identify(req).map_err(|_| Refusal::forbidden())?;
        let mut conn = self.inner.connect(req).await?;
        conn.id = Some(format!("users_socket:{}", identity.user_id));
        conn.assigns.insert(identity);
        Ok(conn)
    }
}

/// Whether two secrets (or tokens) are equal, in time that depends on neither
/// their contents nor their lengths: both are hashed with SHA-256 first and the
/// digests compared in constant time (`subtle`).
///
/// ```
/// assert!(phx_runtime::auth::secure_compare(b"s3cr3t", b"s3cr3t"));
/// assert!(!phx_runtime::auth::secure_compare(b"s3cr3t", b"s3cr3"));
/// ```
pub fn secure_compare(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}
