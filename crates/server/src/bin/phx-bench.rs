//! `phx-bench`: the project's load generator. It starts `phx-server --conformance`
//! (the binary next to itself) on a free loopback port, drives it with real
//! WebSocket clients, and reads the server's memory and CPU time from `/proc`.
//!
//! - `memory`: N idle connections, each joined to one channel: server RSS growth
//!   per connection.
//! - `fanout`: S subscribers on one topic, M broadcasts: deliveries per second and
//!   per server CPU-second.
//! - `echo`: C clients doing request/reply round trips for a while: replies per
//!   second and per server CPU-second.
//! - `presence`: C clients in one presence room, each keeping a phoenix.js-style
//!   mirror; L of them leave: time until every remaining mirror is exact.
//!
//! The load generator shares the machine with the server, so per-CPU-second
//! figures are the fairer ones. Everything stays on 127.0.0.1 and every run is
//! bounded in count and time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Parser, Debug)]
#[command(name = "phx-bench", about = "Load generator for phx-server")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Path of the phx-server binary (default: next to phx-bench).
    #[arg(long, global = true)]
    server: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Server memory per idle connection joined to one channel.
    Memory {
        /// Connections to hold (keep under ~19 000 here: the open-files limit is 20 000).
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Join a presence room (one topic per connection) instead of a plain channel.
        #[arg(long)]
        presence: bool,
    },
    /// Broadcast fan-out to many subscribers of one topic.
    Fanout {
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        messages: usize,
    },
    /// Presence: clients in one room keep phoenix.js-style mirrors; some leave;
    /// how long until every remaining mirror is exact.
    Presence {
        #[arg(long, default_value_t = 1_000)]
        clients: usize,
        #[arg(long, default_value_t = 500)]
        leave: usize,
    },
    /// Request/reply round trips.
    Echo {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The server under test; killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(path: Option<String>) -> Result<Server, String> {
        let path = match path {
            Some(p) => p.into(),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("phx-server"),
        };
        let mut child = Command::new(&path)
            .args([
                "--port",
                "0",
                "--conformance",
                "--idle-timeout-secs",
                "3600",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("unexpected server banner: {line:?}"))?;
        Ok(Server {
            url: format!("ws://{addr}/socket/websocket?vsn=2.0.0"),
            child,
        })
    }

    fn proc_field(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id())).unwrap_or_default()
    }

    /// Resident set size in bytes.
    fn rss(&self) -> u64 {
        self.proc_field("status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// User + system CPU time in seconds.
    fn cpu(&self) -> f64 {
        let stat = self.proc_field("stat");
        // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(url: &str) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Reads frames until one contains `needle`.
async fn wait_for(ws: &mut Ws, needle: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains(needle) => return Ok(()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("connection closed".into()),
            Err(_) => return Err(format!("timed out waiting for {needle}")),
        }
    }
}

/// Connects and joins `topic` with `payload`, waiting for the ok reply.
async fn join(url: &str, topic: &str, payload: &str) -> Result<Ws, String> {
    let mut ws = connect(url).await?;
    let frame = format!(
        r#"["1","1",{},"phx_join",{payload}]"#,
        serde_json::Value::from(topic)
    );
    ws.send(Message::text(frame))
        .await
        .map_err(|e| e.to_string())?;
    wait_for(&mut ws, r#""status":"ok""#).await?;
    Ok(ws)
}

/// Opens `n` joined connections, `parallel` at a time.
async fn join_many(
    url: &str,
    n: usize,
    topic_of: impl Fn(usize) -> String,
    payload: &str,
) -> Result<Vec<Ws>, String> {
    let results: Vec<Result<Ws, String>> = futures::stream::iter(0..n)
        .map(|i| {
            let topic = topic_of(i);
            async move { join(url, &topic, payload).await }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn memory(server: &Server, n: usize, presence: bool) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss();
    let started = Instant::now();
    let conns = if presence {
        join_many(
            &server.url,
            n,
            |i| format!("room:mem-{i}"),
            r#"{"user":"u"}"#,
        )
        .await?
    } else {
        join_many(
            &server.url,
            n,
            |_| "private:mem".to_owned(),
            r#"{"token":"letmein"}"#,
        )
        .await?
    };
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "memory: {n} idle connections joined to {} ({:.1} s to open): server RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes ({:.2} KiB) per connection",
        if presence { "a presence room each" } else { "one plain channel" },
        opened.as_secs_f64(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per,
        per / 1024.0
    );
    drop(conns);
    Ok(())
}

async fn fanout(server: &Server, subscribers: usize, messages: usize) -> Result<(), String> {
    let payload = r#"{"token":"letmein"}"#;
    let subs = join_many(
        &server.url,
        subscribers,
        |_| "private:fan".to_owned(),
        payload,
    )
    .await?;
    let mut publisher = join(&server.url, "private:fan", payload).await?;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut ws in subs {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < messages {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains(r#","shout","#) => seen += 1,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let body = "x".repeat(100);
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    for i in 0..messages {
        let frame = format!(
            r#"["1","{}","private:fan","shout",{{"n":{i},"body":"{body}"}}]"#,
            i + 2
        );
        publisher
            .send(Message::text(frame))
            .await
            .map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < subscribers as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = server.cpu() - cpu0;
    let finished = done.load(Ordering::Relaxed);
    let deliveries = finished as f64 * messages as f64;
    println!(
        "fanout: {messages} broadcasts x {subscribers} subscribers: {finished} subscribers got all in {wall:.2} s; {:.0} deliveries/s; server CPU {cpu:.2} s, {:.0} deliveries per server CPU-second",
        deliveries / wall,
        if cpu > 0.0 { deliveries / cpu } else { f64::NAN }
    );
    for t in tasks {
        t.abort();
    }
    if finished < subscribers as u64 {
        return Err(format!(
            "only {finished} of {subscribers} subscribers got every broadcast"
        ));
    }
    Ok(())
}

async fn echo(server: &Server, clients: usize, seconds: u64) -> Result<(), String> {
    let conns = join_many(
        &server.url,
        clients,
        |i| format!("private:echo-{i}"),
        r#"{"token":"letmein"}"#,
    )
    .await?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let count = count.clone();
            tokio::spawn(async move {
                let mut n = 2u64;
                while Instant::now() < stop {
                    let frame =
                        format!(r#"["1","{n}","private:echo-{i}","echo",{{"body":"hello"}}]"#);
                    if ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                    if wait_for(&mut ws, "phx_reply").await.is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = server.cpu() - cpu0;
    let replies = count.load(Ordering::Relaxed) as f64;
    println!(
        "echo: {clients} clients, {wall:.1} s: {replies:.0} round trips, {:.0} replies/s; server CPU {cpu:.2} s, {:.0} replies per server CPU-second",
        replies / wall,
        if cpu > 0.0 { replies / cpu } else { f64::NAN }
    );
    Ok(())
}

async fn presence(server: &Server, clients: usize, leave: usize) -> Result<(), String> {
    use phx_presence::{ChannelPresence, PresenceDiff};
    use std::collections::BTreeSet;
    let leave = leave.min(clients);
    let all: BTreeSet<String> = (0..clients).map(|i| format!("u{i}")).collect();
    let stay: Arc<BTreeSet<String>> = Arc::new((leave..clients).map(|i| format!("u{i}")).collect());
    let all = Arc::new(all);
    let synced = Arc::new(AtomicU64::new(0));
    let converged = Arc::new(AtomicU64::new(0));
    let (go, _) = tokio::sync::watch::channel(false);
    let t_start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let url = server.url.clone();
        let (all, stay, synced, converged) =
            (all.clone(), stay.clone(), synced.clone(), converged.clone());
        let mut go = go.subscribe();
        tasks.push(tokio::spawn(async move {
            let payload = format!(r#"{{"user":"u{i}"}}"#);
            let Ok(mut ws) = join(&url, "room:presence-bench", &payload).await else {
                return;
            };
            let mut mirror = ChannelPresence::default();
            let mut phase = 0;
            loop {
                // Cheap test first (sizes), the full comparison only when they match.
                let exact = |want: &BTreeSet<String>| {
                    let list = mirror.list();
                    list.len() == want.len()
                        && list
                            .iter()
                            .all(|(k, e)| e.metas.len() == 1 && want.contains(k))
                };
                if phase == 0 && exact(&all) {
                    synced.fetch_add(1, Ordering::Relaxed);
                    phase = 1;
                    if i < leave {
                        let _ = go.wait_for(|g| *g).await;
                        return; // dropping the connection: this client leaves
                    }
                }
                if phase == 1 && *go.borrow() && exact(&stay) {
                    converged.fetch_add(1, Ordering::Relaxed);
                    phase = 2;
                }
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    return;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
                    continue;
                };
                match v[3].as_str() {
                    Some("presence_state") => {
                        if let Ok(state) = serde_json::from_value(v[4].clone()) {
                            mirror.on_state("1", state);
                        }
                    }
                    Some("presence_diff") => {
                        if let Ok(diff) = serde_json::from_value::<PresenceDiff>(v[4].clone()) {
                            mirror.on_diff("1", diff);
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while synced.load(Ordering::Relaxed) < clients as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let joined_in = t_start.elapsed();
    if synced.load(Ordering::Relaxed) < clients as u64 {
        return Err(format!(
            "only {} of {clients} mirrors saw everyone",
            synced.load(Ordering::Relaxed)
        ));
    }
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    let _ = go.send(true);
    let remaining = (clients - leave) as u64;
    while converged.load(Ordering::Relaxed) < remaining && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = t0.elapsed();
    let cpu = server.cpu() - cpu0;
    let done = converged.load(Ordering::Relaxed);
    println!(
        "presence: {clients} clients joined one room, every mirror exact after {:.2} s; {leave} left: {done} of {remaining} remaining mirrors exact after {:.0} ms (server CPU in that time: {:.2} s)",
        joined_in.as_secs_f64(),
        took.as_secs_f64() * 1000.0,
        cpu
    );
    for t in tasks {
        t.abort();
    }
    if done < remaining {
        return Err("not every mirror converged".into());
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let server = match Server::start(args.server.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("phx-bench: {e}");
            std::process::exit(2);
        }
    };
    let result = match args.cmd {
        Cmd::Memory {
            connections,
            presence,
        } => memory(&server, connections, presence).await,
        Cmd::Fanout {
            subscribers,
            messages,
        } => fanout(&server, subscribers, messages).await,
        Cmd::Echo { clients, seconds } => echo(&server, clients, seconds).await,
        Cmd::Presence { clients, leave } => presence(&server, clients, leave).await,
    };
    drop(server);
    if let Err(e) = result {
        eprintln!("phx-bench: {e}");
        std::process::exit(1);
    }
}
