//! `--auth none | phoenix-token | jwt`: who may connect to `phx-server`.
//!
//! With `none` (the default, as the demo needs) every socket is accepted and has
//! no verified identity: what a client says about itself (a `user_id` connect
//! param, a join payload's `user`) is never counted as signed in. With a token
//! kind, a socket must send a valid token (`params: {token}`); its verified
//! [`phx_runtime::Identity`] goes in the socket's assigns and its id is
//! `users_socket:<user id>` (`phx_runtime::auth`, `protocol-spec/auth.md`).

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use phx_runtime::auth::{Jwt, PhoenixToken, TokenAuth, Verifier};
use phx_runtime::{ConnectRequest, Connection, Refusal, SocketHandler};

/// The kinds of `--auth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    /// Accept every socket; nothing is verified.
    #[default]
    None,
    /// `Phoenix.Token` signed with `--secret-key-base` and `--token-salt`.
    PhoenixToken,
    /// JWT: HS256 with `--jwt-secret`, or RS256/ES256 with `--jwt-public-key`.
    Jwt,
}

/// What the auth flags say, read from the command line.
pub struct AuthFlags<'a> {
    pub kind: AuthKind,
    pub secret_key_base: Option<&'a str>,
    pub token_salt: &'a str,
    pub token_max_age_secs: u64,
    pub jwt_secret: Option<&'a str>,
    pub jwt_public_key: Option<&'a PathBuf>,
}

impl AuthFlags<'_> {
    /// The verifier the flags ask for (`None` for `--auth none`), or why the
    /// flags cannot work (the server then refuses to start).
    pub fn verifier(&self) -> Result<Option<Verifier>, String> {
        match self.kind {
            AuthKind::None => Ok(None),
            AuthKind::PhoenixToken => {
                let secret = self
                    .secret_key_base
                    .filter(|s| !s.is_empty())
                    .ok_or("--auth phoenix-token needs --secret-key-base (PHX_SECRET_KEY_BASE), the Phoenix app's secret_key_base")?;
                let verifier = PhoenixToken::new(secret.as_bytes(), self.token_salt)
                    .map_err(|e| e.to_string())?
                    .max_age(Duration::from_secs(self.token_max_age_secs));
                Ok(Some(Verifier::PhoenixToken(verifier)))
            }
            AuthKind::Jwt => {
                let secret = self.jwt_secret.filter(|s| !s.is_empty());
                let jwt = match (secret, self.jwt_public_key) {
                    (Some(secret), None) => Jwt::hs256(secret.as_bytes()),
                    (None, Some(path)) => {
                        let pem = std::fs::read(path)
                            .map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
                        Jwt::public_key_pem(&pem)
                    }
                    (Some(_), Some(_)) => {
                        return Err("--auth jwt takes --jwt-secret or --jwt-public-key, not both".into())
                    }
                    (None, None) => {
                        return Err("--auth jwt needs --jwt-secret (PHX_JWT_SECRET) or --jwt-public-key <pem file>".into())
                    }
                };
                Ok(Some(Verifier::Jwt(Box::new(
                    jwt.map_err(|e| e.to_string())?,
                ))))
            }
        }
    }
}

/// The app's socket handler, behind a token check when auth is on.
pub enum Guarded<H> {
    /// `--auth none`.
    Open(H),
    /// A token is required.
    Token(TokenAuth<Verifier, H>),
}

impl<H: SocketHandler> Guarded<H> {
    /// Guards `inner` with `verifier` (none: open).
    pub fn new(verifier: Option<Verifier>, inner: H) -> Guarded<H> {
        match verifier {
            None => Guarded::Open(inner),
            Some(v) => Guarded::Token(TokenAuth::new(v).wrapping(inner)),
        }
    }
}

impl<H: SocketHandler> SocketHandler for Guarded<H> {
    async fn connect(&self, req: &ConnectRequest) -> Result<Connection, Refusal> {
        match self {
            Guarded::Open(inner) => inner.connect(req).await,
            Guarded::Token(auth) => auth.connect(req).await,
        }
    }
}
