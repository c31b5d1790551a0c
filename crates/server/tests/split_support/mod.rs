//! Shared by the net-split and cluster-security tests: stock phoenix.js
//! clients that keep every line they print, a loopback TCP proxy that can cut
//! one node off Redis (reset and refuse, or stall), and a raw Redis client
//! speaking RESP over a plain socket (publish bytes, record a channel).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdStream;
use std::process::{Child, ChildStdin};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::common::{self, Server};

/// The admin token of the nodes these tests start.
pub const TOKEN: &str = "split-admin-token";
/// A phx-server node with the conformance app (the `room:*` shouts the
/// clients use), clustered over `redis_url` with `extra` flags.
pub fn node(redis_url: &str, name: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--conformance"];
    args.extend_from_slice(extra);
    common::cluster_node(redis_url, name, TOKEN, &args)
}

/// The node's `/metrics` text.
pub fn metrics(server: &Server) -> String {
    let (status, body) = common::http(
        &server.admin,
        "GET",
        "/metrics",
        Some(&format!("Bearer {TOKEN}")),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// A counter or gauge of `/metrics` (0 when absent).
pub fn metric(server: &Server, name: &str) -> u64 {
    let text = metrics(server);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A stock phoenix.js client (`tests/js/cluster_client.cjs`) in its own node
/// process, killed on drop; every line it printed is kept.
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<(Instant, String)>,
    /// Every line so far.
    pub lines: Vec<String>,
    /// When each line arrived.
    pub times: Vec<Instant>,
    /// Lines already matched by [`Client::expect`].
    cursor: usize,
    pub name: String,
}

impl Client {
    /// Joins `topic` as `user` on `server` over WebSocket.
    pub fn start(server: &Server, topic: &str, user: &str) -> Client {
        let argv = [
            "cluster_client.cjs".to_owned(),
            format!("ws://{}/socket", server.addr),
            topic.to_owned(),
            user.to_owned(),
            "websocket".to_owned(),
        ];
        let (child, stdin, rx) = common::node_script(&argv);
        Client {
            child,
            stdin,
            rx,
            lines: Vec::new(),
            times: Vec::new(),
            cursor: 0,
            name: user.to_owned(),
        }
    }

    fn pull(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok((at, line)) => {
                assert!(!line.starts_with("error"), "{}: {line}", self.name);
                self.lines.push(line);
                self.times.push(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for a line equal to `want` after the last one matched; when it
    /// arrived. Panics after `limit`.
    pub fn expect(&mut self, want: &str, limit: Duration) -> Instant {
        let start = Instant::now();
        loop {
            if let Some(i) = self.lines[self.cursor..].iter().position(|l| l == want) {
                self.cursor += i + 1;
                return self.times[self.cursor - 1];
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() || !self.pull(left) {
                panic!(
                    "{}: no {want:?} within {limit:?}; saw {:?}",
                    self.name,
                    &self.lines[self.cursor..]
                );
            }
        }
    }

    /// Waits until every line of `wanted` was printed (in any order, after
    /// the last one matched by [`Client::expect`]).
    pub fn expect_all(&mut self, wanted: &[String], limit: Duration) {
        let start = Instant::now();
        loop {
            let seen = &self.lines[self.cursor..];
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !seen.contains(w))
                .cloned()
                .collect();
            if missing.is_empty() {
                return;
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() || !self.pull(left) {
                panic!(
                    "{}: {missing:?} missing after {limit:?}; saw {:?}",
                    self.name,
                    &self.lines[self.cursor..]
                );
            }
        }
    }

    /// The last line starting with `prefix`.
    pub fn last(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find(|l| l.starts_with(prefix))
            .map(String::as_str)
    }

    /// Takes the lines printed so far without waiting.
    pub fn drain(&mut self) {
        while self.pull(Duration::ZERO) {}
    }

    /// How many lines equal `line` (of those taken so far).
    pub fn count(&self, line: &str) -> usize {
        self.lines.iter().filter(|l| *l == line).count()
    }

    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("client stdin");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does with the bytes between a node and Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relays both ways.
    Pass,
    /// Resets every connection and every new one (the link fails).
    Reset,
    /// Keeps connections open but relays nothing; the bytes wait (in its
    /// buffers and the kernel's) and go on when the mode changes back.
    Stall,
}

/// Connections a proxy relays at once; more are reset.
const MAX_CONNECTIONS: usize = 64;
/// Bytes a proxy holds per connection and direction (the kernel's buffers aside).
const BUFFER: usize = 16 * 1024;

/// A loopback TCP proxy in front of a Redis port, stopped on drop.
pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy binds");
        let port = listener.local_addr().expect("proxy addr").port();
        let (mode, watch) = watch::channel(Mode::Pass);
        runtime.spawn(accept(listener, upstream, watch));
        Proxy {
            port,
            mode,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Linger 0: closing sends RST, not FIN. (tokio deprecates `set_linger`
/// because a nonzero linger blocks the closing thread; zero never does.)
#[allow(deprecated)]
fn linger_zero(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

fn reset(stream: TcpStream) {
    linger_zero(&stream);
    drop(stream);
}

async fn accept(listener: TcpListener, upstream: u16, mode: watch::Receiver<Mode>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == Mode::Reset {
            reset(client);
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            reset(client);
            continue;
        };
        let mode = mode.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                reset(client);
                return;
            };
            for s in [&client, &server] {
                linger_zero(s);
                let _ = s.set_nodelay(true);
            }
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pump(cr, sw, mode.clone()), pump(sr, cw, mode));
        });
    }
}

/// Waits while stalled; false when the connection must be reset.
async fn flowing(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Pass => return true,
            Mode::Reset => return false,
            Mode::Stall => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

async fn until_reset(mode: &mut watch::Receiver<Mode>) {
    loop {
        if *mode.borrow_and_update() == Mode::Reset || mode.changed().await.is_err() {
            return;
        }
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        if !flowing(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Read before a stall began: held until it ends.
        if !flowing(&mut mode).await {
            return;
        }
        tokio::select! {
            written = to.write_all(&buf[..n]) => if written.is_err() { return },
            () = until_reset(&mut mode) => return,
        }
    }
}

/// `PUBLISH channel payload` on a plain connection; the receivers Redis counted.
pub fn publish(redis_port: u16, channel: &str, payload: &[u8]) -> i64 {
    let mut stream = StdStream::connect(("127.0.0.1", redis_port)).expect("redis connect");
    let mut cmd = Vec::new();
    write!(
        cmd,
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    )
    .expect("format");
    cmd.extend_from_slice(payload);
    cmd.extend_from_slice(b"\r\n");
    stream.write_all(&cmd).expect("publish");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    line.trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("PUBLISH answered {line:?}"))
}

/// A message on Redis: its channel and its bytes.
pub type Seen = (String, Vec<u8>);

/// A plain `PSUBSCRIBE` connection keeping every message it sees (what an
/// eavesdropper on Redis reads), on a thread; stopped on drop.
pub struct Spy {
    messages: Arc<Mutex<Vec<Seen>>>,
    stream: StdStream,
}

fn read_bulk(reader: &mut BufReader<StdStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
    let mut data = vec![0u8; len.checked_add(2)?];
    reader.read_exact(&mut data).ok()?;
    data.truncate(len);
    Some(data)
}

impl Spy {
    pub fn start(redis_port: u16, pattern: &str) -> Spy {
        let mut stream = StdStream::connect(("127.0.0.1", redis_port)).expect("spy connects");
        write!(
            stream,
            "*2\r\n$10\r\nPSUBSCRIBE\r\n${}\r\n{pattern}\r\n",
            pattern.len()
        )
        .expect("psubscribe");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        // The subscription's confirmation: *3, psubscribe, pattern, :1.
        let mut line = String::new();
        reader.read_line(&mut line).expect("confirmation");
        read_bulk(&mut reader).expect("kind");
        read_bulk(&mut reader).expect("pattern");
        line.clear();
        reader.read_line(&mut line).expect("count");
        std::thread::spawn(move || loop {
            // *4, pmessage, pattern, channel, payload.
            let mut head = String::new();
            if reader.read_line(&mut head).unwrap_or(0) == 0 {
                return;
            }
            let (Some(_), Some(_), Some(channel), Some(payload)) = (
                read_bulk(&mut reader),
                read_bulk(&mut reader),
                read_bulk(&mut reader),
                read_bulk(&mut reader),
            ) else {
                return;
            };
            let channel = String::from_utf8_lossy(&channel).into_owned();
            sink.lock().expect("spy lock").push((channel, payload));
        });
        Spy { messages, stream }
    }

    /// The messages seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.messages.lock().expect("spy lock").clone()
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
