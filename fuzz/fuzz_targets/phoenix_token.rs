//! The Phoenix.Token verifier: any string a client sends as its token is refused
//! or accepted without a panic, and any bytes signed as a token's message reach
//! the bounded term decoder, which accepts or refuses them without a panic. An
//! accepted token stops verifying once one character of its signature changes.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use phx_runtime::auth::{PhoenixToken, TokenVerifier};

const SECRET: &[u8] = b"fuzz-secret-key-base-fuzz-secret-key-base-fuzz-secret-key-base-00";

/// The key derivation (PBKDF2) runs once, as in the server.
static VERIFIER: OnceLock<Option<PhoenixToken>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some(verifier) = VERIFIER.get_or_init(|| PhoenixToken::new(SECRET, "user socket").ok())
    else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    // As a client would send it.
    let _ = verifier.verify(&String::from_utf8_lossy(data), now);

    // As a signed message: past the signature, into the term decoder.
    let token = verifier.sign_message(data);
    let first = verifier.verify(&token, now);
    assert_eq!(
        first,
        verifier.verify(&token, now),
        "verification is deterministic"
    );
    if let Ok(identity) = first {
        assert!(
            !identity.user_id.is_empty(),
            "an accepted token names a user"
        );
        // Flip the signature's first character.
        let at = token.rfind('.').expect("three parts") + 1;
        let mut forged = token.into_bytes();
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("base64url stays ASCII");
        assert!(
            verifier.verify(&forged, now).is_err(),
            "a changed signature verifies"
        );
    }
});
