//! Test harness: an endpoint with test channels on a free loopback port, a raw
//! WebSocket client with bounded waits, and a guard that stops the server.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use phx_runtime::{
    Channel, ChannelContext, Config, ConnectRequest, Connection, Endpoint, Flow, HandleIn, Payload,
    Refusal, RuntimeError, SocketHandler,
};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[allow(unused_imports)] // not every test file waits
pub use phx_testkit::wait_until;

/// How long any single wait may take before the test fails (an upper bound only).
pub const WAIT: Duration = Duration::from_secs(3);

/// Values the test handler stores in the socket's assigns.
#[derive(Clone, Debug)]
pub struct AuthToken(pub Option<String>);

/// Refuses `reject=1` with 403 and `reject=429` with 429; `user_id=U` becomes `users_socket:U`.
pub struct TestSocket;

impl SocketHandler for TestSocket {
    async fn connect(&self, req: &ConnectRequest) -> Result<Connection, Refusal> {
        match req.params.get("reject").map(String::as_str) {
            Some("1") => return Err(Refusal::forbidden()),
            Some("429") => return Err(Refusal::status(phx_runtime::StatusCode::TOO_MANY_REQUESTS)),
            _ => {}
        }
        let mut conn = Connection::new().assign(AuthToken(req.info.auth_token.clone()));
        if let Some(u) = req.params.get("user_id") {
            conn = conn.id(format!("users_socket:{u}"));
        }
        Ok(conn)
    }
}

/// A channel in the spirit of Phoenix's test RoomChannel.
#[derive(Default)]
pub struct TestRoom {
    quiet: bool,
}

impl Channel for TestRoom {
    type Info = ();

    async fn join(
        &mut self,
        _topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        let params: Value = payload.parse().unwrap_or(Value::Null);
        if params["refuse"] == json!(true) {
            return Err(json!({"reason": "refused"}).into());
        }
        if params["panic"] == json!(true) {
            panic!("join crashed on purpose");
        }
        if params["whoami"] == json!(true) {
            let token = ctx.assigns().get::<AuthToken>().and_then(|t| t.0.clone());
            return Ok(json!({"auth_token": token}).into());
        }
        if params["push_in_join"] == json!(true) {
            // Phoenix raises here; the runtime refuses with NotJoined.
            let refused = ctx.push("early", json!({})).is_err();
            return Ok(json!({"push_refused": refused}).into());
        }
        self.quiet = params["quiet"] == json!(true);
        Ok(Payload::empty_object())
    }

    async fn after_join(&mut self, ctx: &mut ChannelContext) -> Result<Flow, RuntimeError> {
        if !self.quiet {
            let topic = ctx.topic().to_owned();
            ctx.push("joined", json!({"status": "connected", "topic": topic}))?;
            ctx.broadcast("user_entered", json!({"user": "u"}))?;
        }
        Ok(Flow::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        match event {
            "echo" => Ok(HandleIn::ok(payload)),
            "boom" => panic!("boom"),
            "fail" => Err(RuntimeError::channel("failed on purpose")),
            "stop" => Ok(HandleIn::Stop(None)),
            "noreply" => Ok(HandleIn::NoReply),
            "shout" => {
                ctx.broadcast("shout", payload)?;
                Ok(HandleIn::ok(Payload::empty_object()))
            }
            "shout_from" => {
                ctx.broadcast_from("shout", payload)?;
                Ok(HandleIn::ok(Payload::empty_object()))
            }
            "new_msg" => {
                ctx.broadcast("new_msg", payload)?;
                Ok(HandleIn::NoReply)
            }
            "bin" => {
                ctx.push(
                    "binary_event",
                    Payload::Binary(bytes::Bytes::from_static(&[0, 1])),
                )?;
                let mut data = payload.as_binary().map(|b| b.to_vec()).unwrap_or_default();
                data.extend([3, 4]);
                Ok(HandleIn::ok(Payload::Binary(data.into())))
            }
            "flood" => {
                let big = "x".repeat(16 * 1024);
                for i in 0..100_000 {
                    if ctx.push("flood", json!({"i": i, "pad": big})).is_err() {
                        break;
                    }
                }
                Ok(HandleIn::NoReply)
            }
            _ => Ok(HandleIn::error(json!({"reason": "unhandled event"}))),
        }
    }

    fn intercepts(&self) -> Vec<String> {
        vec!["new_msg".to_owned()]
    }

    async fn handle_out(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<Flow, RuntimeError> {
        let mut body: Value = payload.parse()?;
        body["transport"] = json!(ctx.transport().as_str());
        ctx.push(event, body)?;
        Ok(Flow::Continue)
    }

    async fn terminate(&mut self, _reason: &phx_runtime::ExitReason, ctx: &mut ChannelContext) {
        let _ = ctx.push("you_left", json!({"message": "bye!"}));
    }
}

/// A running server; dropping it stops accepting and closes its sockets.
pub struct Server {
    pub addr: SocketAddr,
    pub endpoint: Endpoint,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let endpoint = self.endpoint.clone();
        // Close every socket so no task outlives the test.
        tokio::spawn(async move { endpoint.drain().await });
    }
}

/// Starts an endpoint with [`TestSocket`] and [`TestRoom`] at `room:*` and `other:*`.
pub async fn start(config: Config) -> Server {
    let endpoint = Endpoint::builder()
        .config(config)
        .handler(TestSocket)
        .channel("room:*", |_, _| TestRoom::default())
        .channel("other:*", |_, _| TestRoom::default())
        .build();
    start_endpoint(endpoint).await
}

/// Serves any endpoint at `/socket` on a free loopback port.
pub async fn start_endpoint(endpoint: Endpoint) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = endpoint.clone();
    tokio::spawn(async move {
        let _ = phx_runtime::serve(listener, &served, async {
            let _ = stopped.await;
        })
        .await;
    });
    Server {
        addr,
        endpoint,
        stop: Some(stop),
    }
}

/// The default test configuration: any origin, long-poll off.
pub fn config() -> Config {
    Config {
        check_origin: phx_runtime::CheckOrigin::Disabled,
        ..Config::default()
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw client.
pub struct Client {
    pub ws: Ws,
    pub response_headers: tungstenite::http::HeaderMap,
}

impl Server {
    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/socket/websocket?{query}", self.addr)
    }

    /// Connects with `query` (e.g. `vsn=2.0.0`).
    pub async fn connect(&self, query: &str) -> Client {
        self.try_connect(query, &[]).await.expect("connect")
    }

    /// Connects with extra request headers; an HTTP refusal comes back as its status.
    pub async fn try_connect(&self, query: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
        let mut req = self.url(query).into_client_request().expect("request");
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
        {
            Ok((ws, resp)) => Ok(Client {
                ws,
                response_headers: resp.headers().clone(),
            }),
            Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("unexpected connect error: {e}"),
        }
    }
}

impl Client {
    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn send_bin(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next data frame, as text (binary frames are returned as `hex:<hex>`).
    pub async fn recv(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("stream open")
                .expect("frame ok");
            match msg {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Binary(b) => {
                    return format!(
                        "hex:{}",
                        b.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    )
                }
                Message::Close(c) => panic!("closed while waiting for a frame: {c:?}"),
                _ => {}
            }
        }
    }

    /// The next data frame parsed as JSON.
    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Frames until one whose event (V2 index 3 or V1 "event") is `event`.
    pub async fn recv_event(&mut self, event: &str) -> Value {
        loop {
            let v = self.recv_json().await;
            let e = if v.is_array() {
                v[3].clone()
            } else {
                v["event"].clone()
            };
            if e == json!(event) {
                return v;
            }
        }
    }

    /// Asserts that no data frame arrives within `dur`.
    pub async fn expect_silence(&mut self, dur: Duration) {
        match tokio::time::timeout(dur, self.ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Text(t)))) => panic!("unexpected frame: {t}"),
            Ok(other) => panic!("unexpected event: {other:?}"),
        }
    }

    /// Waits for the server's close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed within the wait")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// A V2 join frame.
pub fn join(join_ref: &str, topic: &str, payload: &str) -> String {
    format!(r#"["{join_ref}","{join_ref}","{topic}","phx_join",{payload}]"#)
}

/// Joins `topic` on V2 as `join_ref` and consumes the ok reply.
pub async fn joined(c: &mut Client, join_ref: &str, topic: &str, payload: &str) {
    c.send(&join(join_ref, topic, payload)).await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply[4]["status"],
        json!("ok"),
        "join of {topic} failed: {reply}"
    );
}

/// The presence room the tests share, as the conformance app (and most
/// applications) write one: joining with `{"user": U, "meta": M}` tracks `U`
/// (default `anon`) with the meta `M` (default `{}`) and pushes
/// `presence_state`. Events: `echo` replies with its payload, `shout`
/// broadcasts it, `update_meta` replaces the joiner's meta, `crash` fails.
#[derive(Default)]
pub struct PresenceRoom {
    user: String,
    meta: Value,
}

impl Channel for PresenceRoom {
    type Info = ();

    async fn join(
        &mut self,
        _topic: &str,
        payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        let params: Value = payload.parse().unwrap_or(Value::Null);
        self.user = params["user"].as_str().unwrap_or("anon").to_owned();
        self.meta = params.get("meta").cloned().unwrap_or_else(|| json!({}));
        Ok(Payload::empty_object())
    }

    async fn after_join(&mut self, ctx: &mut ChannelContext) -> Result<Flow, RuntimeError> {
        ctx.track(&self.user, self.meta.clone())?;
        let state = ctx.presence_list()?;
        ctx.push("presence_state", state)?;
        Ok(Flow::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        match event {
            "echo" => Ok(HandleIn::ok(payload)),
            "shout" => {
                ctx.broadcast("shout", payload)?;
                Ok(HandleIn::ok(Payload::empty_object()))
            }
            "update_meta" => {
                ctx.update(&self.user, payload.parse()?)?;
                Ok(HandleIn::ok(Payload::empty_object()))
            }
            "crash" => Err(RuntimeError::channel("crash requested")),
            _ => Ok(HandleIn::error(json!({"reason": "unhandled event"}))),
        }
    }
}

/// `tests/js`, where the stock phoenix.js tests run, with its packages
/// installed from the committed lock file (`npm ci`) if they are not yet.
pub fn stock_js_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/phoenix").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm is needed to install the stock phoenix client (install Node.js and npm)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    dir
}
