//! A second, independent client: `phoenix_channels_client`, a Phoenix Channels
//! client published on crates.io and written without this project, joins, pushes,
//! and receives broadcasts against `phx-server --conformance` — non-JS clients work
//! unchanged too.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use phoenix_channels_client::{Client, Config, Payload};
use serde_json::json;
use url::Url;

/// `phx-server --conformance` on a free port; killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_phx-server"))
            .args([
                "--port",
                "0",
                "--conformance",
                "--database-url",
                "sqlite::memory:",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("phx-server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("banner");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("the banner names the address")
            .to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_rust_client_joins_pushes_and_receives_broadcasts() {
    let server = Server::start();
    let url = Url::parse(&format!("ws://{}/socket/websocket", server.addr)).expect("url");
    let topic = "room:independent-client";
    let wait = Some(Duration::from_secs(5));

    let mut a = Client::new(Config::new(url.clone()).expect("config")).expect("client a");
    let mut b = Client::new(Config::new(url).expect("config")).expect("client b");
    a.connect().await.expect("a connects");
    b.connect().await.expect("b connects");
    let chan_a = a.join(topic, wait).await.expect("a joins");
    let chan_b = b.join(topic, wait).await.expect("b joins");

    // b listens for broadcasts.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    chan_b
        .on("shout", move |_channel: Arc<_>, payload: &Payload| {
            let _ = tx.send(payload.clone());
        })
        .await
        .expect("b subscribes");

    // Push and reply.
    let reply = chan_a
        .send("echo", json!({"from": "rust client"}))
        .await
        .expect("echo is answered");
    assert_eq!(reply, Payload::Value(json!({"from": "rust client"})));

    // a's shout is broadcast to b.
    chan_a
        .send("shout", json!({"n": 1}))
        .await
        .expect("shout is answered");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("b receives the broadcast in time")
        .expect("the handler ran");
    assert_eq!(got, Payload::Value(json!({"n": 1})));
    let _ = a.disconnect().await;
    let _ = b.disconnect().await;
}
