//! Signed identities on connect: tokens signed by the real Phoenix 1.7.24 and
//! 1.8.12 (`tests/vectors/phoenix-token-*.json`, made by `scripts/phoenix-tokens`)
//! and JWTs (HS256, RS256, ES256) accepted with the right user; forged, expired,
//! wrongly salted and malformed tokens refused at connect over the wire
//! (WebSocket upgrade 403, long-poll `{"status":403}`); the stock phoenix.js
//! client gets its identity with `params: {token}`.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use phx_runtime::auth::{Jwt, PhoenixToken, TokenAuth, TokenRefusal, TokenVerifier, Verifier};
use phx_runtime::{
    Channel, ChannelContext, Config, Endpoint, HandleIn, Identity, Payload, RuntimeError,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{join, Server};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

/// The time every committed Phoenix vector is checked at (the script's
/// `verify_at_ms`: an hour after `signed_at`).
const VERIFY_AT_SECS: u64 = 1_700_003_600;

const JWT_SECRET: &[u8] = b"a JWT secret shared with the backend, 32+ bytes";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn vectors(version: &str) -> Value {
    let path = format!("{VECTORS}/phoenix-token-{version}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("vector JSON")
}

fn phoenix_verifier(v: &Value, max_age: Option<u64>) -> PhoenixToken {
    let secret = v["secret_key_base"].as_str().expect("secret");
    let verifier = PhoenixToken::new(secret.as_bytes(), "user socket").expect("verifier");
    match max_age {
        Some(secs) => verifier.max_age(Duration::from_secs(secs)),
        None => verifier,
    }
}

fn check_phoenix_vectors(version: &str, phoenix: &str) {
    let v = vectors(version);
    assert_eq!(v["phoenix"], phoenix, "vectors of the wrong Phoenix");
    assert_eq!(v["verify_at_ms"], json!(VERIFY_AT_SECS * 1000));
    // As phx-server runs it: max_age 86 400 s given at verify, as in
    // `Phoenix.Token.verify(socket, "user socket", token, max_age: 86400)`.
    let server = phoenix_verifier(&v, Some(86_400));
    // As `Phoenix.Token.verify/3` without max_age: the token's own max age.
    let own = phoenix_verifier(&v, None);
    let tokens = v["tokens"].as_array().expect("tokens");
    assert!(tokens.len() >= 15);
    for case in tokens {
        let name = case["name"].as_str().expect("name");
        let token = case["token"].as_str().expect("token");
        let expect = &case["expect"];
        let got = server.verify(token, at(VERIFY_AT_SECS));
        match expect["error"].as_str() {
            Some(error) => assert_eq!(
                got.map_err(TokenRefusal::as_str),
                Err(error),
                "{phoenix} {name}"
            ),
            None => {
                let want = Identity {
                    user_id: expect["user_id"].as_str().expect("user_id").to_owned(),
                    name: expect["name"].as_str().map(str::to_owned),
                };
                assert_eq!(got, Ok(want.clone()), "{phoenix} {name}");
                let own_result = own.verify(token, at(VERIFY_AT_SECS));
                if expect["expired_by_own_max_age"] == json!(true) {
                    assert_eq!(own_result, Err(TokenRefusal::Expired), "{phoenix} {name}");
                } else {
                    assert_eq!(own_result, Ok(want), "{phoenix} {name} (own max_age)");
                }
            }
        }
    }
    // A day and a second later, every token is expired.
    let first = tokens[0]["token"].as_str().expect("token");
    assert_eq!(
        server.verify(first, at(1_700_000_000 + 86_401)),
        Err(TokenRefusal::Expired)
    );
    // Another secret_key_base: invalid.
    let other = PhoenixToken::new(&[b'x'; 64], "user socket").expect("verifier");
    assert_eq!(
        other.verify(first, at(VERIFY_AT_SECS)),
        Err(TokenRefusal::Invalid)
    );
}

#[test]
fn tokens_signed_by_phoenix_1_7_24_are_verified() {
    check_phoenix_vectors("1.7", "1.7.24");
}

#[test]
fn tokens_signed_by_phoenix_1_8_12_are_verified() {
    check_phoenix_vectors("1.8", "1.8.12");
}

fn jwt(claims: Value, alg: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("encode")
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/{name}")).expect("test key")
}

#[test]
fn jwt_claims_and_time_with_leeway() {
    let v = Jwt::hs256(JWT_SECRET).expect("verifier");
    let key = EncodingKey::from_secret(JWT_SECRET);
    let now = 1_700_000_000u64;
    let ok = |claims: Value| v.verify(&jwt(claims, Algorithm::HS256, &key), at(now));
    assert_eq!(
        ok(json!({"sub": 42, "name": "Ann", "exp": now + 60})),
        Ok(Identity::new("42").with_name("Ann"))
    );
    assert_eq!(
        ok(json!({"sub": "u-1", "exp": now})),
        Ok(Identity::new("u-1"))
    );
    assert!(
        ok(json!({"sub": "a", "exp": now - 30})).is_ok(),
        "30 s leeway"
    );
    assert_eq!(
        ok(json!({"sub": "a", "exp": now - 31})),
        Err(TokenRefusal::Expired)
    );
    assert_eq!(
        ok(json!({"sub": "a"})),
        Err(TokenRefusal::Malformed),
        "exp is required"
    );
    assert_eq!(
        ok(json!({"sub": "a", "exp": now + 60, "nbf": now + 31})),
        Err(TokenRefusal::Invalid)
    );
    assert!(ok(json!({"sub": "a", "exp": now + 60, "nbf": now + 30})).is_ok());
    for sub in [json!(null), json!(""), json!(1.5)] {
        assert_eq!(
            ok(json!({"sub": sub, "exp": now + 60})),
            Err(TokenRefusal::Unsupported),
            "sub {sub}"
        );
    }
    // jsonwebtoken itself reads `sub` as a string or number: others are malformed.
    for sub in [json!({"id": 1}), json!([1])] {
        assert_eq!(
            ok(json!({"sub": sub, "exp": now + 60})),
            Err(TokenRefusal::Malformed),
            "sub {sub}"
        );
    }
    assert_eq!(ok(json!({"exp": now + 60})), Err(TokenRefusal::Unsupported));
    // Another secret, another algorithm, no signature, garbage.
    let other = EncodingKey::from_secret(b"another secret of thirty-two bytes!!");
    let claims = json!({"sub": 1, "exp": now + 60});
    assert_eq!(
        v.verify(&jwt(claims.clone(), Algorithm::HS256, &other), at(now)),
        Err(TokenRefusal::Invalid)
    );
    assert_eq!(
        v.verify(&jwt(claims.clone(), Algorithm::HS512, &key), at(now)),
        Err(TokenRefusal::Invalid)
    );
    let signed = jwt(claims, Algorithm::HS256, &key);
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        signed.split('.').nth(1).expect("claims")
    );
    // `"alg":"none"` is no algorithm jsonwebtoken knows: refused as malformed.
    assert_eq!(v.verify(&unsigned, at(now)), Err(TokenRefusal::Malformed));
    assert_eq!(v.verify("not.a.jwt", at(now)), Err(TokenRefusal::Malformed));
    assert_eq!(v.verify("", at(now)), Err(TokenRefusal::Missing));
    assert!(Jwt::hs256(b"short").is_err(), "short secrets are refused");
}

#[test]
fn jwt_rs256_and_es256_with_a_public_key() {
    let now = 1_700_000_000u64;
    let claims = json!({"sub": 7, "name": "Bo", "exp": now + 60});
    for (alg, private, public) in [
        (
            Algorithm::RS256,
            "jwt-rs256-private.pem",
            "jwt-rs256-public.pem",
        ),
        (
            Algorithm::ES256,
            "jwt-es256-private.pem",
            "jwt-es256-public.pem",
        ),
    ] {
        let public = pem(public);
        let v = Jwt::public_key_pem(&public).expect("public key");
        assert_eq!(v.algorithm(), alg);
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem(private)),
            _ => EncodingKey::from_ec_pem(&pem(private)),
        }
        .expect("private key");
        let token = jwt(claims.clone(), alg, &key);
        assert_eq!(
            v.verify(&token, at(now)),
            Ok(Identity::new("7").with_name("Bo")),
            "{alg:?}"
        );
        // Algorithm confusion: an HS256 token "signed" with the public key.
        let confused = jwt(
            claims.clone(),
            Algorithm::HS256,
            &EncodingKey::from_secret(&public),
        );
        assert_eq!(
            v.verify(&confused, at(now)),
            Err(TokenRefusal::Invalid),
            "{alg:?}"
        );
        // A flipped signature byte.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 5;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert!(v.verify(&forged, at(now)).is_err(), "{alg:?}");
    }
    assert!(
        Jwt::public_key_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err()
    );
}

/// Replies to a join with the identity the socket handler assigned.
struct WhoAmI;

impl Channel for WhoAmI {
    type Info = ();

    async fn join(
        &mut self,
        _topic: &str,
        _payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        Ok(match ctx.assigns().get::<Identity>() {
            Some(who) => json!({"user_id": who.user_id, "name": who.name}).into(),
            None => json!({"user_id": null}).into(),
        })
    }

    async fn handle_in(
        &mut self,
        _event: &str,
        payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        Ok(HandleIn::ok(payload))
    }
}

/// An endpoint whose sockets need a token of `verifier`, checked at `now`.
async fn serve(verifier: Verifier, now: SystemTime) -> (Server, TokenAuthCounters) {
    let auth = TokenAuth::new(verifier).clock(move || now);
    let counters = TokenAuthCounters(std::sync::Arc::new(std::sync::Mutex::new(None)));
    let endpoint = Endpoint::builder()
        .config(Config {
            longpoll: true,
            ..support::config()
        })
        .handler(CountingAuth {
            auth,
            seen: counters.clone(),
        })
        .channel("whoami:*", |_, _| WhoAmI)
        .build();
    (support::start_endpoint(endpoint).await, counters)
}

/// The last refusal the wrapped handler saw: shows that an app can call
/// `TokenAuth::identify` from its own handler.
#[derive(Clone)]
struct TokenAuthCounters(std::sync::Arc<std::sync::Mutex<Option<TokenRefusal>>>);

struct CountingAuth {
    auth: TokenAuth<Verifier>,
    seen: TokenAuthCounters,
}

impl phx_runtime::SocketHandler for CountingAuth {
    async fn connect(
        &self,
        req: &phx_runtime::ConnectRequest,
    ) -> Result<phx_runtime::Connection, phx_runtime::Refusal> {
        match self.auth.identify(req) {
            Ok(who) => Ok(phx_runtime::Connection::new()
                .id(format!("users_socket:{}", who.user_id))
                .assign(who)),
            Err(refusal) => {
                *self.seen.0.lock().expect("lock") = Some(refusal);
                Err(phx_runtime::Refusal::forbidden())
            }
        }
    }
}

fn query(token: &str) -> String {
    format!("vsn=2.0.0&token={}", urlencode(token))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The identity a WebSocket connected with `token` gets, or the HTTP refusal.
async fn ws_identity(s: &Server, token: &str) -> Result<Value, u16> {
    let mut c = s.try_connect(&query(token), &[]).await?;
    c.send(&join("1", "whoami:x", "{}")).await;
    let reply = c.recv_json().await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    Ok(reply[4]["response"].clone())
}

/// The long-poll answer to opening a session with `token`.
async fn longpoll_open(addr: SocketAddr, token: &str) -> Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /socket/longpoll?{} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        query(token)
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(support::WAIT, stream.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("")).expect("JSON body")
}

fn phoenix_vector_token(v: &Value, name: &str) -> String {
    v["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|c| c["name"] == name))
        .and_then(|c| c["token"].as_str())
        .unwrap_or_else(|| panic!("no vector {name}"))
        .to_owned()
}

#[tokio::test]
async fn phoenix_tokens_over_the_wire() {
    let v = vectors("1.8");
    let verifier = Verifier::PhoenixToken(phoenix_verifier(&v, Some(86_400)));
    let (s, seen) = serve(verifier, at(VERIFY_AT_SECS)).await;

    let map = phoenix_vector_token(&v, "map with atom keys");
    assert_eq!(
        ws_identity(&s, &map).await,
        Ok(json!({"user_id": "7", "name": "Ann"}))
    );
    let int = phoenix_vector_token(&v, "integer");
    assert_eq!(
        ws_identity(&s, &int).await,
        Ok(json!({"user_id": "42", "name": null}))
    );
    let open = longpoll_open(s.addr, &int).await;
    assert_eq!(open["status"], 410, "{open}");

    let valid = phoenix_vector_token(&v, "string");
    let (head, _) = valid.rsplit_once('.').expect("three parts");
    let forged = format!("{head}.{}", "A".repeat(43));
    let refused = [
        (forged, TokenRefusal::Invalid),
        (
            phoenix_vector_token(&v, "wrong salt"),
            TokenRefusal::Invalid,
        ),
        (phoenix_vector_token(&v, "expired"), TokenRefusal::Expired),
        (
            phoenix_vector_token(&v, "list data"),
            TokenRefusal::Unsupported,
        ),
        ("SFMyNTY.not base64!.x".to_owned(), TokenRefusal::Malformed),
        ("garbage".to_owned(), TokenRefusal::Malformed),
        (String::new(), TokenRefusal::Missing),
    ];
    for (token, why) in refused {
        assert_eq!(ws_identity(&s, &token).await, Err(403), "{why:?}");
        assert_eq!(*seen.0.lock().expect("lock"), Some(why));
        assert_eq!(
            longpoll_open(s.addr, &token).await,
            json!({"status": 403}),
            "{why:?}"
        );
    }
    // No token param at all.
    assert_eq!(s.try_connect("vsn=2.0.0", &[]).await.err(), Some(403));
    assert!(s.endpoint.metrics().sockets_refused >= 15);
}

#[tokio::test]
async fn jwt_over_the_wire_and_the_users_socket_id() {
    let now = 1_700_000_000u64;
    let verifier = Verifier::Jwt(Box::new(Jwt::hs256(JWT_SECRET).expect("verifier")));
    let (s, _) = serve(verifier, at(now)).await;
    let key = EncodingKey::from_secret(JWT_SECRET);
    let token = jwt(json!({"sub": 42, "exp": now + 60}), Algorithm::HS256, &key);
    assert_eq!(
        ws_identity(&s, &token).await,
        Ok(json!({"user_id": "42", "name": null}))
    );
    let open = longpoll_open(s.addr, &token).await;
    assert_eq!(open["status"], 410, "{open}");

    // The socket id is users_socket:42: a disconnect broadcast to it closes it.
    let mut c = s.try_connect(&query(&token), &[]).await.expect("connect");
    s.endpoint
        .pubsub()
        .broadcast("users_socket:42", "disconnect", Payload::empty_object());
    assert_eq!(c.close_code().await, Some(1001));

    let expired = jwt(json!({"sub": 42, "exp": now - 31}), Algorithm::HS256, &key);
    let forged = jwt(
        json!({"sub": 42, "exp": now + 60}),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not the backend's secret, 32 bytes long"),
    );
    for token in [expired, forged, "x.y.z".to_owned()] {
        assert_eq!(ws_identity(&s, &token).await, Err(403));
        assert_eq!(longpoll_open(s.addr, &token).await, json!({"status": 403}));
    }
}

#[tokio::test]
async fn token_auth_wraps_the_apps_handler() {
    struct NoBobs;
    impl phx_runtime::SocketHandler for NoBobs {
        async fn connect(
            &self,
            req: &phx_runtime::ConnectRequest,
        ) -> Result<phx_runtime::Connection, phx_runtime::Refusal> {
            if req.params.get("nick").is_some_and(|n| n == "bob") {
                return Err(phx_runtime::Refusal::status(
                    phx_runtime::StatusCode::TOO_MANY_REQUESTS,
                ));
            }
            // A self-declared identity: the verified one replaces it.
            Ok(phx_runtime::Connection::new().assign(Identity::new("mallory")))
        }
    }
    let now = 1_700_000_000u64;
    let auth = TokenAuth::new(Jwt::hs256(JWT_SECRET).expect("verifier"))
        .clock(move || at(now))
        .wrapping(NoBobs);
    let endpoint = Endpoint::builder()
        .config(support::config())
        .handler(auth)
        .channel("whoami:*", |_, _| WhoAmI)
        .build();
    let s = support::start_endpoint(endpoint).await;
    let key = EncodingKey::from_secret(JWT_SECRET);
    let token = jwt(
        json!({"sub": "ann", "exp": now + 60}),
        Algorithm::HS256,
        &key,
    );
    assert_eq!(
        ws_identity(&s, &token).await,
        Ok(json!({"user_id": "ann", "name": null}))
    );
    let q = format!("{}&nick=bob", query(&token));
    assert_eq!(s.try_connect(&q, &[]).await.err(), Some(429));
    assert_eq!(ws_identity(&s, "bad").await, Err(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_phoenix_js_gets_its_identity_from_params_token() {
    let js = support::stock_js_dir();
    let v = vectors("1.7");
    let verifier = Verifier::PhoenixToken(phoenix_verifier(&v, Some(86_400)));
    let (s, _) = serve(verifier, at(VERIFY_AT_SECS)).await;
    let good = phoenix_vector_token(&v, "map with string keys");
    let expired = phoenix_vector_token(&v, "expired");
    let url = format!("ws://{}/socket", s.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("auth_client.cjs")
            .args([url, good, expired])
            .current_dir(js)
            .output()
            .expect("node is needed to run the stock phoenix client (install Node.js)")
    })
    .await
    .expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stock client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok websocket identity u-9 Bob"), "{stdout}");
    assert!(stdout.contains("ok longpoll identity u-9 Bob"), "{stdout}");
    phx_testkit::assert_all_passed(&stdout);
}

#[tokio::test]
async fn phoenix_1_8_auth_token_option_is_verified_too() {
    use base64::Engine;
    let now = 1_700_000_000u64;
    let verifier = Verifier::Jwt(Box::new(Jwt::hs256(JWT_SECRET).expect("verifier")));
    let (s, _) = serve(verifier, at(now)).await;
    let key = EncodingKey::from_secret(JWT_SECRET);
    let protocols = |token: &str| {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
        format!("phoenix, base64url.bearer.phx.{b64}")
    };
    // `new Socket(url, {authToken})`: the token rides in sec-websocket-protocol.
    let good = jwt(
        json!({"sub": "zoe", "exp": now + 60}),
        Algorithm::HS256,
        &key,
    );
    let mut c = s
        .try_connect(
            "vsn=2.0.0",
            &[("sec-websocket-protocol", &protocols(&good))],
        )
        .await
        .expect("accepted");
    c.send(&join("1", "whoami:x", "{}")).await;
    assert_eq!(
        c.recv_json().await[4]["response"],
        json!({"user_id": "zoe", "name": null})
    );
    let expired = jwt(
        json!({"sub": "zoe", "exp": now - 60}),
        Algorithm::HS256,
        &key,
    );
    assert_eq!(
        s.try_connect(
            "vsn=2.0.0",
            &[("sec-websocket-protocol", &protocols(&expired))]
        )
        .await
        .err(),
        Some(403)
    );
}
