//! `phx-server --auth`: with `phoenix-token` or `jwt`, only sockets with a valid
//! token connect (WebSocket upgrade 403 and long-poll `{"status":403}` for the
//! others) and `/api/stats` counts them as signed in, by user; with `none`, a
//! `user_id` in the connect params is anonymous. Bad auth flags stop the server
//! at start.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use phx_runtime::auth::PhoenixToken;
use serde_json::{json, Value};

const API: &str = "api-token-for-auth-tests";
const SECRET_KEY_BASE: &str =
    "phx-server auth tests: a secret_key_base of at least sixty-four bytes, not a real one";
const JWT_SECRET: &str = "a JWT secret shared with the backend, 32+ bytes";

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit")
}

/// `Phoenix.Token.sign(secret_key_base, salt, data, signed_at: …)` for a data
/// term already encoded (`:erlang.term_to_binary`), as plug_crypto lays it out.
fn phoenix_token(salt: &str, data: &[u8], signed_ms: u64) -> String {
    let mut message = vec![131, 104, 3];
    message.extend(data);
    message.extend([110, 8, 0]);
    message.extend(signed_ms.to_le_bytes());
    message.extend([98, 0, 1, 81, 128]); // 86 400
    PhoenixToken::new(SECRET_KEY_BASE.as_bytes(), salt)
        .expect("key")
        .sign_message(&message)
}

/// `%{id: id, name: name}` as term_to_binary writes it.
fn map_data(id: u8, name: &str) -> Vec<u8> {
    let mut d = vec![116, 0, 0, 0, 2, 119, 2, b'i', b'd', 97, id];
    d.extend([119, 4, b'n', b'a', b'm', b'e', 109, 0, 0, 0]);
    d.push(u8::try_from(name.len()).expect("short name"));
    d.extend(name.as_bytes());
    d
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

/// Opens a WebSocket with `query`; returns the HTTP status and, on 101, the
/// open stream (kept open to stay counted).
fn upgrade(addr: &str, query: &str) -> (u16, Option<TcpStream>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /socket/websocket?{query} HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\n\
         connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-version: 13\r\n\r\n"
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, (status == 101).then_some(stream))
}

/// The long-poll answer to opening a session with `query`.
fn longpoll(addr: &str, query: &str) -> Value {
    let (status, body) = http(addr, "GET", &format!("/socket/longpoll?{query}"), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn stats(server: &Server) -> Value {
    let (status, body) = http(
        &server.admin,
        "GET",
        "/api/stats",
        Some(&format!("Bearer {API}")),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Waits (bounded) until the stats show `sessions` and `users`.
fn wait_stats(server: &Server, sessions: Value, users: Value) -> Value {
    let mut s = Value::Null;
    phx_testkit::wait_for(
        &format!("stats with sessions {sessions} and users {users}"),
        Duration::from_secs(10),
        || {
            s = stats(server);
            s["sessions"] == sessions && s["users"] == users
        },
    );
    s
}

#[test]
fn phoenix_tokens_decide_who_connects_and_who_is_signed_in() {
    let server = Server::start(
        Some(API),
        &[
            "--no-check-origin",
            "--auth",
            "phoenix-token",
            "--secret-key-base",
            SECRET_KEY_BASE,
        ],
    );
    let now = now_ms();
    let ann = phoenix_token("user socket", &map_data(7, "Ann"), now);
    let ann_int = phoenix_token("user socket", &[97, 7], now);
    let bob = phoenix_token("user socket", &[109, 0, 0, 0, 3, b'b', b'o', b'b'], now);
    let (s1, a1) = upgrade(
        &server.addr,
        &format!("vsn=2.0.0&token={}", urlencode(&ann)),
    );
    let (s2, a2) = upgrade(
        &server.addr,
        &format!("vsn=2.0.0&token={}", urlencode(&ann_int)),
    );
    let (s3, b1) = upgrade(
        &server.addr,
        &format!("vsn=2.0.0&token={}", urlencode(&bob)),
    );
    assert_eq!((s1, s2, s3), (101, 101, 101));
    let lp = longpoll(
        &server.addr,
        &format!("vsn=2.0.0&token={}", urlencode(&bob)),
    );
    assert_eq!(lp["status"], 410, "{lp}");

    let refused = [
        ("wrong salt", phoenix_token("another salt", &[97, 7], now)),
        (
            "expired",
            phoenix_token("user socket", &[97, 7], now - 86_401_000),
        ),
        ("forged", {
            let (head, _) = ann.rsplit_once('.').expect("three parts");
            format!("{head}.{}", "A".repeat(43))
        }),
        ("malformed", "SFMyNTY.@@@.x".to_owned()),
        (
            "unsupported data",
            phoenix_token("user socket", &[106], now),
        ),
    ];
    for (why, token) in &refused {
        let query = format!("vsn=2.0.0&token={}", urlencode(token));
        assert_eq!(upgrade(&server.addr, &query).0, 403, "{why}");
        assert_eq!(
            longpoll(&server.addr, &query),
            json!({"status": 403}),
            "{why}"
        );
    }
    // No token, or a user_id that the client chose: refused.
    assert_eq!(upgrade(&server.addr, "vsn=2.0.0&user_id=7").0, 403);
    assert_eq!(
        longpoll(&server.addr, "vsn=2.0.0&user_id=7"),
        json!({"status": 403})
    );

    // 3 WebSockets and the long-poll session: 4 signed in, 2 users (7 and bob).
    let s = wait_stats(&server, json!({"anonymous": 0, "signed_in": 4}), json!(2));
    assert_eq!(
        s["sessions"],
        json!({"anonymous": 0, "signed_in": 4}),
        "{s}"
    );
    assert_eq!(s["users"], 2, "{s}");
    drop((a1, a2, b1));
    let (_, metrics) = http(
        &server.admin,
        "GET",
        "/metrics",
        Some(&format!("Bearer {API}")),
    );
    assert!(
        metrics.contains("phx_sessions_signed_in"),
        "signed-in gauge exported: {metrics}"
    );
}

#[test]
fn jwt_with_a_shared_secret() {
    let mut cmd_server = Server::start(
        Some(API),
        &[
            "--no-check-origin",
            "--auth",
            "jwt",
            "--jwt-secret",
            JWT_SECRET,
        ],
    );
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let exp = now_ms() / 1000 + 600;
    let token = |claims: Value, key: &EncodingKey| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).expect("encode")
    };
    let good = token(json!({"sub": 42, "name": "Ann", "exp": exp}), &key);
    let (status, open) = upgrade(
        &cmd_server.addr,
        &format!("vsn=2.0.0&token={}", urlencode(&good)),
    );
    assert_eq!(status, 101);
    let expired = token(json!({"sub": 42, "exp": exp - 600 - 31}), &key);
    let forged = token(
        json!({"sub": 42, "exp": exp}),
        &EncodingKey::from_secret(b"not the backend's secret, 32 bytes long"),
    );
    for bad in [expired, forged, "a.b.c".to_owned()] {
        let query = format!("vsn=2.0.0&token={}", urlencode(&bad));
        assert_eq!(upgrade(&cmd_server.addr, &query).0, 403);
        assert_eq!(longpoll(&cmd_server.addr, &query), json!({"status": 403}));
    }
    let s = wait_stats(
        &cmd_server,
        json!({"anonymous": 0, "signed_in": 1}),
        json!(1),
    );
    assert_eq!(s["users"], 1, "{s}");
    drop(open);
    cmd_server.kill();
}

#[test]
fn with_auth_none_a_user_id_param_is_anonymous() {
    let server = Server::start(Some(API), &["--no-check-origin"]);
    let (status, socket) = upgrade(&server.addr, "vsn=2.0.0&user_id=42");
    assert_eq!(status, 101);
    let s = wait_stats(&server, json!({"anonymous": 1, "signed_in": 0}), json!(0));
    assert_eq!(
        s["sessions"],
        json!({"anonymous": 1, "signed_in": 0}),
        "{s}"
    );
    assert_eq!(s["users"], 0, "{s}");
    drop(socket);
}

#[test]
fn bad_auth_flags_stop_the_server_at_start() {
    let short = "x".repeat(63);
    let err = common::refused_start(
        &["--auth", "phoenix-token", "--secret-key-base", &short],
        &[],
    );
    assert!(err.contains("at least 64 bytes"), "{err}");
    let err = common::refused_start(&["--auth", "phoenix-token"], &[]);
    assert!(err.contains("--secret-key-base"), "{err}");
    let err = common::refused_start(&["--auth", "jwt"], &[]);
    assert!(err.contains("--jwt-secret"), "{err}");
    let err = common::refused_start(&["--auth", "jwt"], &[("PHX_JWT_SECRET", "short")]);
    assert!(err.contains("at least 32 bytes"), "{err}");
    let err = common::refused_start(
        &["--auth", "jwt", "--jwt-public-key", "/nonexistent.pem"],
        &[],
    );
    assert!(err.contains("/nonexistent.pem"), "{err}");
}

/// One V2 push over `ws` (on the channel joined with `join_ref`); returns the
/// reply's `{status, response}`.
async fn call(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    (join_ref, reference): (&str, &str),
    topic: &str,
    event: &str,
    payload: Value,
) -> Value {
    use futures::{SinkExt, StreamExt};
    let frame = json!([join_ref, reference, topic, event, payload]).to_string();
    ws.send(tokio_tungstenite::tungstenite::Message::text(frame))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .expect("a frame");
        let Ok(text) = msg.to_text() else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if frame[1] == reference && frame[3] == "phx_reply" {
            return frame[4].clone();
        }
    }
}

/// With auth on, the editing app takes the user from the verified token only:
/// a join payload naming someone else changes nothing (presence key, user id,
/// name, `verified`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_an_editor_cannot_choose_its_identity() {
    let server = Server::start(
        Some(API),
        &[
            "--no-check-origin",
            "--auth",
            "jwt",
            "--jwt-secret",
            JWT_SECRET,
        ],
    );
    let claims = json!({"sub": 42, "name": "Ann", "exp": now_ms() / 1000 + 600});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode");
    let url = format!(
        "ws://{}/socket/websocket?vsn=2.0.0&token={}",
        server.addr,
        urlencode(&token)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("a verified socket connects");

    let list = call(&mut ws, ("1", "1"), "events:entity", "phx_join", json!({})).await;
    assert_eq!(list["status"], "ok", "{list}");
    let created = call(
        &mut ws,
        ("1", "2"),
        "events:entity",
        "create",
        json!({"params": {"title": "Mine"}}),
    )
    .await;
    assert_eq!(created["status"], "ok", "{created}");
    let id = created["response"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    let forged = json!({"user": {"id": "mallory", "name": "Mallory"}});
    let joined = call(
        &mut ws,
        ("3", "3"),
        &format!("edit:entity:{id}"),
        "phx_join",
        forged,
    )
    .await;
    assert_eq!(joined["status"], "ok", "{joined}");
    let me = &joined["response"]["meta"];
    assert_eq!(me["key"], "42", "{joined}");
    assert_eq!(me["user_id"], "42", "{joined}");
    assert_eq!(me["name"], "Ann", "{joined}");
    assert_eq!(me["verified"], true, "{joined}");
    assert_eq!(joined["response"]["owner"]["key"], "42", "{joined}");
}
