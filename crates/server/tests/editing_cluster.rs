//! The collaborative-editing contract across a cluster: two `phx-server` nodes
//! over one real `redis-server` (free ports, always stopped), driven by stock
//! phoenix.js clients (`tests/js/editing_cluster.cjs`): owner on node A and
//! spectator on node B, form changes mirrored across, a node with no session
//! getting the unsaved form, promotion across nodes when the owner's socket
//! closes (and nobody else told), save / create / delete seen on the other
//! node, near-simultaneous joins on both nodes, and promotion on B within the
//! down period after node A is killed with SIGKILL.
//!
//! The records are in one PostgreSQL both nodes share (started here too).
//!
//! Needs `redis-server`, PostgreSQL 15, Node.js and npm.

mod common;
mod pg;
#[path = "../../cluster/tests/support/mod.rs"]
mod redis;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{js_dir, Server};
use pg::Postgres;
use redis::Redis;

const TOKEN: &str = "editing-cluster-token";

/// The cluster's down period and heartbeat, as phx-server's defaults.
const DOWN_PERIOD_MS: u64 = 5_000;
const HEARTBEAT_MS: u64 = 1_500;

fn node(redis: &Redis, pg: &Postgres, name: &str) -> Server {
    Server::start(
        Some(TOKEN),
        &[
            "--no-check-origin",
            "--database-url",
            &pg.url(),
            "--redis-url",
            &redis.url(),
            "--node-name",
            name,
            "--down-period-ms",
            &DOWN_PERIOD_MS.to_string(),
            "--heartbeat-ms",
            &HEARTBEAT_MS.to_string(),
            // Required with --redis-url: it seals the cluster's messages.
            "--secret-key-base",
            "editing-cluster-test-secret-that-is-at-least-sixty-four-bytes-long",
        ],
    )
}

#[test]
fn the_editing_contract_holds_across_two_nodes() {
    let redis = Redis::start();
    let pg = Postgres::start();
    let (mut a, b) = (node(&redis, &pg, "n1"), node(&redis, &pg, "n2"));
    let mut child = Command::new("node")
        .arg("editing_cluster.cjs")
        .args([
            format!("ws://{}/socket", a.addr),
            format!("http://{}", a.admin),
            format!("ws://{}/socket", b.addr),
            format!("http://{}", b.admin),
            TOKEN.to_owned(),
        ])
        .current_dir(js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is needed for the phoenix.js tests (install Node.js)");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line == "kill A" => {
                a.kill();
                writeln!(stdin, "killed").expect("script stdin");
                seen.push(line);
            }
            Ok(line) if line.ends_with(" passed, 0 failed") || line.starts_with("error") => {
                seen.push(line.clone());
                break line;
            }
            Ok(line) => seen.push(line),
            Err(_) => break "no result within the time limit".to_owned(),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    println!("{log}");
    assert_eq!(outcome, "9 passed, 0 failed", "{log}");

    // Promotion after the kill comes within the down period plus a heartbeat
    // (and a generous second for the client to hear of it).
    let after_kill: u64 = seen
        .iter()
        .find_map(|l| l.strip_prefix("measured promotion_after_kill_ms "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no promotion figure in {log}"));
    assert!(
        after_kill <= DOWN_PERIOD_MS + HEARTBEAT_MS + 1_000,
        "promotion {after_kill} ms after the kill"
    );
    drop(b);
}
