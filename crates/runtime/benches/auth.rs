//! What a token costs at connect: deriving the Phoenix.Token key (once per
//! verifier, not per connect) and verifying one token of each kind.

use std::time::{Duration, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use phx_runtime::auth::{Jwt, PhoenixToken, TokenVerifier};

const SECRET: &str = "a secret_key_base of at least sixty-four bytes, as Phoenix requires it";
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn auth(c: &mut Criterion) {
    c.bench_function("phoenix token key derivation (PBKDF2, 1000 rounds)", |b| {
        b.iter(|| PhoenixToken::new(black_box(SECRET.as_bytes()), "user socket"))
    });

    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
    let phoenix = PhoenixToken::new(SECRET.as_bytes(), "user socket").expect("key");
    // {%{id: 7, name: "Ann"}, 1_700_000_000_000, 86_400}
    let mut message = vec![131, 104, 3, 116, 0, 0, 0, 2, 119, 2, b'i', b'd', 97, 7];
    message.extend([
        119, 4, b'n', b'a', b'm', b'e', 109, 0, 0, 0, 3, b'A', b'n', b'n',
    ]);
    message.extend([110, 6, 0, 0, 104, 229, 207, 139, 1, 98, 0, 1, 81, 128]);
    let token = phoenix.sign_message(&message);
    c.bench_function("verify phoenix token", |b| {
        b.iter(|| phoenix.verify(black_box(&token), now))
    });

    let claims = serde_json::json!({"sub": 7, "name": "Ann", "exp": 1_700_000_600});
    let secret = b"a JWT secret shared with the backend, 32+ bytes";
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign");
    let hs_verifier = Jwt::hs256(secret).expect("verifier");
    c.bench_function("verify jwt hs256", |b| {
        b.iter(|| hs_verifier.verify(black_box(&hs), now))
    });

    for (alg, name) in [(Algorithm::RS256, "rs256"), (Algorithm::ES256, "es256")] {
        let read = |file: String| std::fs::read(format!("{VECTORS}/{file}")).expect("key");
        let private = read(format!("jwt-{name}-private.pem"));
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private),
            _ => EncodingKey::from_ec_pem(&private),
        }
        .expect("private key");
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign");
        let verifier = Jwt::public_key_pem(&read(format!("jwt-{name}-public.pem"))).expect("key");
        c.bench_function(&format!("verify jwt {name}"), |b| {
            b.iter(|| verifier.verify(black_box(&token), now))
        });
    }
}

criterion_group!(benches, auth);
criterion_main!(benches);
