//! Long-poll session tokens: `base64url(id ‖ HMAC-SHA256(secret, id))`, so a
//! token names one session and cannot be guessed or forged without the
//! endpoint's secret (`Config::secret`, the same on every node of a cluster).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::session::SessionId;

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// `base64url(id ‖ HMAC-SHA256(secret, id))`.
pub(super) fn sign(secret: &[u8], id: &SessionId) -> String {
    let mut m = mac(secret);
    m.update(id);
    let mut bytes = id.to_vec();
    bytes.extend_from_slice(&m.finalize().into_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The session id of a well-signed token.
pub(super) fn verify(secret: &[u8], token: &str) -> Option<SessionId> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    if bytes.len() != 16 + 32 {
        return None;
    }
    let (id, tag) = bytes.split_at(16);
    let mut m = mac(secret);
    m.update(id);
    m.verify_slice(tag).ok()?;
    id.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_with_its_secret_and_unaltered() {
        let id: SessionId = [7; 16];
        let token = sign(b"secret", &id);
        assert_eq!(verify(b"secret", &token), Some(id));
        assert_eq!(verify(b"other secret", &token), None);
        let mut altered = token.into_bytes();
        altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(verify(b"secret", &altered), None);
        assert_eq!(verify(b"secret", "not a token"), None);
    }
}
