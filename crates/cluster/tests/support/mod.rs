//! Test support: a real `redis-server` on a free loopback port, in its own temp
//! dir with its own config (no persistence), killed when the guard drops (also
//! when a test panics); and nodes whose events are collected for assertions.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phx_cluster::{Event, Node, NodeConfig};
use phx_presence::TrackerConfig;
use tokio::task::JoinHandle;

/// A `redis-server` child process.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Redis {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts one with extra configuration lines (e.g. a lower pub/sub
    /// output buffer limit); they hold across [`Redis::restart`].
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = free_port();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "phx-cluster-redis-{}-{port}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\nlogfile {}\ndaemonize no\nprotected-mode yes\n",
            dir.display(),
            dir.join("redis.log").display()
        );
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(dir.join("redis.conf"), conf).expect("write redis.conf");
        let mut redis = Redis {
            port,
            dir,
            child: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg(self.dir.join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fast timing for tests where the behaviour allows it.
pub fn fast(period_ms: u64, down_ms: u64) -> TrackerConfig {
    TrackerConfig {
        broadcast_period_ms: period_ms,
        down_period_ms: down_ms,
        permdown_period_ms: 600_000,
        ..TrackerConfig::default()
    }
}

/// A node whose events are collected.
pub struct TestNode {
    pub node: Node,
    pub events: Arc<Mutex<Vec<Event>>>,
    drain: JoinHandle<()>,
}

impl TestNode {
    pub fn start(redis: &Redis, name: &str, tracker: TrackerConfig) -> TestNode {
        TestNode::start_as(redis, name, None, tracker)
    }

    /// Starts one with a given incarnation number (`None`: the wall clock).
    pub fn start_as(
        redis: &Redis,
        name: &str,
        incarnation: Option<u64>,
        tracker: TrackerConfig,
    ) -> TestNode {
        let mut config = NodeConfig::new(redis.url(), name);
        config.tracker = tracker;
        config.incarnation = incarnation;
        let (node, mut rx) = Node::start(config).expect("node starts");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let drain = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                sink.lock().expect("events lock").push(e);
            }
        });
        TestNode {
            node,
            events,
            drain,
        }
    }

    /// The keys listed on `topic`, sorted.
    pub fn keys(&self, topic: &str) -> Vec<String> {
        self.node.list(topic).into_keys().collect()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// Stops it like a crash (no goodbye).
    pub fn kill(self) {
        self.drain.abort();
        drop(self.node);
    }

    /// Stops it gracefully; whether the goodbye went out.
    pub async fn shutdown(self) -> bool {
        self.drain.abort();
        self.node.shutdown().await
    }
}

/// Polls `cond` every 20 ms until it holds; the time it took, or a panic with
/// `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
