//! The `Phoenix.Token` verifier: tokens a Phoenix application signs with
//! `Phoenix.Token.sign(endpoint_or_secret, salt, data)`.
//!
//! The format (plug_crypto 2.1: `lib/plug/crypto.ex`,
//! `lib/plug/crypto/message_verifier.ex`, `lib/plug/crypto/key_generator.ex`;
//! byte by byte in `protocol-spec/auth.md`):
//!
//! ```text
//! key     = PBKDF2-HMAC-SHA256(secret_key_base, salt, 1000 iterations, 32 bytes)
//! message = :erlang.term_to_binary({data, signed_at_ms, max_age_secs})
//! token   = "SFMyNTY" "." base64url(message) "." base64url(HMAC-SHA256(key, "SFMyNTY." base64url(message)))
//! ```
//!
//! (`SFMyNTY` is `HS256` in base64; `SFMzODQ` and `SFM1MTI` name HMAC-SHA384 and
//! -SHA512, which plug_crypto also accepts.) The key is derived once, when the
//! verifier is made, not per connect.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

use super::etf::{self, Term};
use super::{TokenRefusal, TokenVerifier, MAX_TOKEN_BYTES};
use crate::{Identity, RuntimeError};

/// The shortest `secret_key_base` accepted: Phoenix refuses shorter ones
/// (`Phoenix.Endpoint.Supervisor` checks 64 bytes).
pub const MIN_SECRET_KEY_BASE: usize = 64;

/// PBKDF2 parameters of `Plug.Crypto.KeyGenerator` as `Phoenix.Token` uses them.
const KEY_ITERATIONS: u32 = 1000;
const KEY_LENGTH: usize = 32;

/// The max age a token gets when `sign` was given none (plug_crypto's default).
const DEFAULT_MAX_AGE_SECS: f64 = 86_400.0;

/// Verifies `Phoenix.Token` tokens signed with one `secret_key_base` and salt.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use phx_runtime::auth::{PhoenixToken, TokenVerifier};
///
/// let secret = "a secret_key_base of at least sixty-four bytes, as Phoenix requires it";
/// let verifier = PhoenixToken::new(secret.as_bytes(), "user socket").unwrap();
/// // What `Phoenix.Token.sign(secret, "user socket", 42, signed_at: 1_700_000_000)` returns.
/// let message = [131, 104, 3, 97, 42, 110, 6, 0, 0, 104, 229, 207, 139, 1, 98, 0, 1, 81, 128];
/// let token = verifier.sign_message(&message);
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
/// assert_eq!(verifier.verify(&token, now).unwrap().user_id, "42");
/// ```
#[derive(Clone)]
pub struct PhoenixToken {
    key: [u8; KEY_LENGTH],
    max_age_secs: Option<f64>,
}

impl std::fmt::Debug for PhoenixToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoenixToken")
            .field("key", &"<redacted>")
            .field("max_age_secs", &self.max_age_secs)
            .finish()
    }
}

impl PhoenixToken {
    /// Derives the key for `salt` from `secret_key_base` (at least 64 bytes).
    /// Tokens are then checked against the max age signed into each (86 400 s
    /// unless the signer chose another); see [`PhoenixToken::max_age`].
    pub fn new(secret_key_base: &[u8], salt: &str) -> Result<PhoenixToken, RuntimeError> {
        if secret_key_base.len() < MIN_SECRET_KEY_BASE {
            return Err(RuntimeError::AuthConfig(format!(
                "the secret_key_base must be at least {MIN_SECRET_KEY_BASE} bytes (it has {})",
                secret_key_base.len()
            )));
        }
        let mut key = [0u8; KEY_LENGTH];
        pbkdf2::pbkdf2_hmac::<Sha256>(secret_key_base, salt.as_bytes(), KEY_ITERATIONS, &mut key);
        Ok(PhoenixToken {
            key,
            max_age_secs: None,
        })
    }

    /// Overrides the max age signed into the tokens, as
    /// `Phoenix.Token.verify(socket, salt, token, max_age: 86400)` does.
    pub fn max_age(mut self, max_age: std::time::Duration) -> PhoenixToken {
        self.max_age_secs = Some(max_age.as_secs_f64());
        self
    }

    /// Signs `message` (an encoded term) the way
    /// `Plug.Crypto.MessageVerifier.sign(message, key)` does: for tests, fuzzing
    /// and tools that mint tokens without Elixir.
    pub fn sign_message(&self, message: &[u8]) -> String {
        let plain = format!("SFMyNTY.{}", URL_SAFE_NO_PAD.encode(message));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(plain.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{plain}.{signature}")
    }

    /// Checks the signature and returns the signed message (the encoded term).
    fn open(&self, token: &str) -> Result<Vec<u8>, TokenRefusal> {
        let mut parts = token.split('.');
        let (Some(protected), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenRefusal::Malformed);
        };
        let message = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenRefusal::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenRefusal::Malformed)?;
        let signed = &token.as_bytes()[..protected.len() + 1 + payload.len()];
        let valid = match protected {
            "SFMyNTY" => check::<Hmac<Sha256>>(&self.key, signed, &signature),
            "SFMzODQ" => check::<Hmac<Sha384>>(&self.key, signed, &signature),
            "SFM1MTI" => check::<Hmac<Sha512>>(&self.key, signed, &signature),
            _ => return Err(TokenRefusal::Malformed),
        };
        if valid {
            Ok(message)
        } else {
            Err(TokenRefusal::Invalid)
        }
    }
}

/// Compares the MAC of `signed` with `signature` in constant time.
fn check<M: Mac + hmac::digest::KeyInit>(key: &[u8], signed: &[u8], signature: &[u8]) -> bool {
    match <M as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(signed);
            mac.verify_slice(signature).is_ok()
        }
        Err(_) => false,
    }
}

impl TokenVerifier for PhoenixToken {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, TokenRefusal> {
        if token.is_empty() {
            return Err(TokenRefusal::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::Malformed);
        }
        let message = self.open(token)?;
        let term = etf::decode(&message).map_err(|err| {
            tracing::debug!(reason = err.0, "signed Phoenix.Token payload is not a term");
            TokenRefusal::Malformed
        })?;
        // Plug.Crypto.decode/2: {data, signed, max_age} | {data, signed} | %{data:, signed:}
        let (data, signed_ms, own_max_age) = match term {
            Term::Tuple(mut items) if items.len() == 3 => {
                let max_age = items.pop();
                let signed = items.pop();
                let data = items.pop();
                (data, signed, max_age)
            }
            Term::Tuple(mut items) if items.len() == 2 => {
                let signed = items.pop();
                let data = items.pop();
                (data, signed, None)
            }
            ref map @ Term::Map(_) => (
                map.map_get("data").cloned(),
                map.map_get("signed").cloned(),
                None,
            ),
            _ => return Err(TokenRefusal::Malformed),
        };
        let (Some(data), Some(Term::Int(signed_ms))) = (data, signed_ms) else {
            return Err(TokenRefusal::Malformed);
        };
        let max_age = match (self.max_age_secs, own_max_age) {
            (Some(configured), _) => MaxAge::Secs(configured),
            (None, None) => MaxAge::Secs(DEFAULT_MAX_AGE_SECS),
            (None, Some(Term::Int(secs))) => MaxAge::Secs(secs as f64),
            (None, Some(Term::Float(secs))) => MaxAge::Secs(secs),
            (None, Some(Term::Atom(a))) if a == "infinity" => MaxAge::Infinity,
            (None, Some(_)) => return Err(TokenRefusal::Malformed),
        };
        if max_age.expired(signed_ms, now) {
            return Err(TokenRefusal::Expired);
        }
        identity(&data).ok_or(TokenRefusal::Unsupported)
    }
}

enum MaxAge {
    Secs(f64),
    Infinity,
}

impl MaxAge {
    /// plug_crypto's `expired?/2`: `max_age <= 0` is expired, else
    /// `signed + trunc(max_age * 1000) < now_ms`.
    fn expired(&self, signed_ms: i128, now: SystemTime) -> bool {
        let MaxAge::Secs(secs) = *self else {
            return false;
        };
        if secs.is_nan() || secs <= 0.0 {
            return true;
        }
        let now_ms = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_millis()).unwrap_or(i128::MAX),
            Err(_) => 0,
        };
        // `as` saturates: an absurdly large max age means "never".
        let max_age_ms = (secs * 1000.0).trunc() as i128;
        signed_ms.saturating_add(max_age_ms) < now_ms
    }
}

/// The identity a token's data names: an integer or a non-empty string is the
/// user id; a map has `id` (integer or non-empty string) and an optional string
/// `name`, with atom or string keys.
fn identity(data: &Term) -> Option<Identity> {
    match data {
        Term::Map(_) => {
            let id = user_id(data.map_get("id")?)?;
            let name = match data.map_get("name") {
                Some(Term::Binary(b)) => Some(String::from_utf8(b.clone()).ok()?),
                _ => None,
            };
            Some(Identity { user_id: id, name })
        }
        other => user_id(other).map(Identity::new),
    }
}

fn user_id(term: &Term) -> Option<String> {
    match term {
        Term::Int(n) => Some(n.to_string()),
        Term::Binary(b) if !b.is_empty() => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// `{data, signed_at_ms, max_age}` as term_to_binary writes it.
    fn message(data: &[u8], signed_ms: u64, max_age: u32) -> Vec<u8> {
        let mut m = vec![131, 104, 3];
        m.extend(data);
        m.extend([110, 8, 0]);
        m.extend(signed_ms.to_le_bytes());
        m.push(98);
        m.extend(max_age.to_be_bytes());
        m
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            PhoenixToken::new(&SECRET[..63], "user socket"),
            Err(RuntimeError::AuthConfig(_))
        ));
    }

    #[test]
    fn expiry_follows_plug_crypto() {
        let v = PhoenixToken::new(SECRET, "s").unwrap();
        let token = v.sign_message(&message(&[97, 1], 1_000_000, 10));
        assert_eq!(v.verify(&token, at(1_010)).unwrap().user_id, "1");
        // signed + max_age < now: expired; equal is still valid.
        assert_eq!(
            v.verify(&token, at(1_010) + Duration::from_millis(1)),
            Err(TokenRefusal::Expired)
        );
        let v = v.max_age(Duration::from_secs(3600));
        assert!(
            v.verify(&token, at(2_000)).is_ok(),
            "the verifier's max_age wins"
        );
        let zero = v.clone().max_age(Duration::ZERO);
        assert_eq!(zero.verify(&token, at(1_000)), Err(TokenRefusal::Expired));
    }

    #[test]
    fn tampering_is_refused() {
        let v = PhoenixToken::new(SECRET, "s").unwrap();
        let token = v.sign_message(&message(&[97, 1], 1_000_000, 10));
        let (head, sig) = token.rsplit_once('.').unwrap();
        let other = v.sign_message(&message(&[97, 2], 1_000_000, 10));
        let (_, other_sig) = other.rsplit_once('.').unwrap();
        assert_eq!(
            v.verify(&format!("{head}.{other_sig}"), at(1_001)),
            Err(TokenRefusal::Invalid)
        );
        let wrong_salt = PhoenixToken::new(SECRET, "t").unwrap();
        assert_eq!(
            wrong_salt.verify(&token, at(1_001)),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(
            v.verify(&format!("{head}.{sig}.x"), at(1_001)),
            Err(TokenRefusal::Malformed)
        );
        assert_eq!(
            v.verify(&token.replacen("SFMyNTY", "SFMyNTZ", 1), at(1_001)),
            Err(TokenRefusal::Malformed)
        );
        assert_eq!(v.verify("", at(1_001)), Err(TokenRefusal::Missing));
        assert_eq!(
            v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), at(1_001)),
            Err(TokenRefusal::Malformed)
        );
    }

    #[test]
    fn signed_garbage_is_malformed_not_a_panic() {
        let v = PhoenixToken::new(SECRET, "s").unwrap();
        for message in [
            &b""[..],
            &[131],
            &[131, 97, 1],
            &[131, 104, 3, 97, 1, 97, 2, 100, 0, 3, b'f', b'o', b'o'],
        ] {
            assert_eq!(
                v.verify(&v.sign_message(message), at(1)),
                Err(TokenRefusal::Malformed)
            );
        }
    }
}
