//! The JWT verifier (HS256): any string a client sends as its token is refused
//! or accepted without a panic; any JSON object signed with the right key as its
//! claims is accepted only with a `sub` and an `exp` in the future, and then
//! names the user of its `sub`.

#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use phx_runtime::auth::{Jwt, TokenVerifier};

const SECRET: &[u8] = b"fuzz-jwt-secret-of-at-least-32-bytes!!";

fuzz_target!(|data: &[u8]| {
    let Ok(verifier) = Jwt::hs256(SECRET) else {
        return;
    };
    let now = SystemTime::now();
    let _ = verifier.verify(&String::from_utf8_lossy(data), now);

    // Claims chosen by the fuzzer, properly signed.
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(data) else {
        return;
    };
    let Ok(token) = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET),
    ) else {
        return;
    };
    if let Ok(identity) = verifier.verify(&token, now) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // `exp` is a JSON number: an integer or, as some issuers write it, a float.
        let exp = claims.get("exp").and_then(serde_json::Value::as_f64);
        assert!(
            exp.is_some_and(|e| e + 30.0 >= secs as f64),
            "accepted without a live exp: {claims:?}"
        );
        let sub = match claims.get("sub") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            other => panic!("accepted with sub {other:?}"),
        };
        assert_eq!(identity.user_id, sub);
    }
});
