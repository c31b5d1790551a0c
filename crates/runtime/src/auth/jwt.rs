//! The JWT verifier (RFC 7519), on the `jsonwebtoken` crate: HS256 with a shared
//! secret, RS256 or ES256 with a public key in PEM.
//!
//! The signature and the algorithm are checked by `jsonwebtoken` (only the one
//! algorithm of the key is accepted, so `none` and an HS256 token "signed" with
//! a public key are refused); the time claims are checked here against the
//! `now` the caller passes, with a leeway of 30 s: `exp` is required and a token
//! is expired when `exp + 30 < now`; a `nbf` later than `now + 30` is refused.
//! `sub` is the user id (a string, or an integer written in decimal) and `name`
//! the optional display name.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::{TokenRefusal, TokenVerifier, MAX_TOKEN_BYTES};
use crate::{Identity, RuntimeError};

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The shortest HS256 secret accepted: 32 bytes, the hash's size (RFC 7518 §3.2).
pub const MIN_HS256_SECRET: usize = 32;

/// Verifies JWTs signed with one key.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use phx_runtime::auth::{Jwt, TokenVerifier};
///
/// let verifier = Jwt::hs256(b"a shared secret of at least 32 bytes!!").unwrap();
/// // header {"alg":"HS256","typ":"JWT"}, claims {"sub":42,"name":"Ann","exp":1700000000}
/// let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
///              eyJzdWIiOjQyLCJuYW1lIjoiQW5uIiwiZXhwIjoxNzAwMDAwMDAwfQ.\
///              6_cFRxaIQ1kwsJP1ezSp97b86vhjdX5Qhj9wiTLtgC8";
/// let who = verifier.verify(token, UNIX_EPOCH + Duration::from_secs(1_699_999_000)).unwrap();
/// assert_eq!((who.user_id.as_str(), who.name.as_deref()), ("42", Some("Ann")));
/// ```
#[derive(Clone)]
pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// The claims read; any others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    name: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
}

impl Jwt {
    /// HS256 with a shared secret of at least [`MIN_HS256_SECRET`] bytes.
    pub fn hs256(secret: &[u8]) -> Result<Jwt, RuntimeError> {
        if secret.len() < MIN_HS256_SECRET {
            return Err(RuntimeError::AuthConfig(format!(
                "the JWT secret must be at least {MIN_HS256_SECRET} bytes (it has {})",
                secret.len()
            )));
        }
        Ok(Jwt::with(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// RS256 or ES256, after the kind of the public key in `pem` (an RSA key or a
    /// P-256 EC key, `-----BEGIN PUBLIC KEY-----` or `BEGIN RSA PUBLIC KEY`).
    pub fn public_key_pem(pem: &[u8]) -> Result<Jwt, RuntimeError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Jwt::with(key, Algorithm::RS256));
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(Jwt::with(key, Algorithm::ES256)),
            Err(err) => Err(RuntimeError::AuthConfig(format!(
                "the JWT public key is neither an RSA nor an EC public key in PEM: {err}"
            ))),
        }
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Jwt {
        let mut validation = Validation::new(algorithm);
        // Time claims are checked in `verify` against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Jwt { key, validation }
    }

    /// Requires `aud` to be one of `audiences` (without this, `aud` is not read).
    pub fn audience(mut self, audiences: &[&str]) -> Jwt {
        self.validation.set_audience(audiences);
        self.validation.validate_aud = true;
        self.validation
            .required_spec_claims
            .insert("aud".to_owned());
        self
    }

    /// The algorithm this verifier accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.validation
            .algorithms
            .first()
            .copied()
            .unwrap_or(Algorithm::HS256)
    }
}

impl TokenVerifier for Jwt {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, TokenRefusal> {
        if token.is_empty() {
            return Err(TokenRefusal::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::Malformed);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_)
                | ErrorKind::MissingRequiredClaim(_) => TokenRefusal::Malformed,
                _ => TokenRefusal::Invalid,
            })?
            .claims;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let leeway = LEEWAY_SECS as f64;
        match claims.exp.as_ref().and_then(Value::as_f64) {
            None => return Err(TokenRefusal::Malformed),
            Some(exp) if exp + leeway < now => return Err(TokenRefusal::Expired),
            Some(_) => {}
        }
        match claims.nbf.as_ref().map(Value::as_f64) {
            Some(None) => return Err(TokenRefusal::Malformed),
            Some(Some(nbf)) if nbf > now + leeway => return Err(TokenRefusal::Invalid),
            _ => {}
        }
        let user_id = match claims.sub {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => return Err(TokenRefusal::Unsupported),
        };
        let name = match claims.name {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        Ok(Identity { user_id, name })
    }
}
