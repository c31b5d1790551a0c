//! The records stores with real components, over the wire with stock
//! phoenix.js (`tests/js/editing_stores.cjs`): SQLite records survive a restart
//! of phx-server; two phx-server nodes on one PostgreSQL and one Redis (all
//! started here on free ports, always stopped) see each other's creates, an
//! UPDATE / DELETE made in psql, a stale save refused as `conflict`, the
//! database stopped (`unavailable`, sockets and presence unaffected) and
//! started again (working again without a restart of phx-server).
//!
//! Needs Node.js and npm, `redis-server`, and PostgreSQL 15
//! (`/usr/lib/postgresql/15/bin`, Debian's `postgresql` package, or `PG_BIN`).

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

const TOKEN: &str = "editing-stores-token";

/// Runs `node editing_stores.cjs <args>`, answering its database requests
/// with `act`; returns its output lines and the final line.
fn script(args: &[String], mut act: impl FnMut(&str)) -> (Vec<String>, String) {
    let mut child = Command::new("node")
        .arg("editing_stores.cjs")
        .args(args)
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
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = Vec::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.ends_with(" passed, 0 failed") || line.starts_with("error") => {
                seen.push(line.clone());
                break line;
            }
            Ok(line) if line.starts_with("sql ") || line.ends_with(" db") => {
                act(&line);
                writeln!(stdin, "done").expect("script stdin");
                seen.push(line);
            }
            Ok(line) => seen.push(line),
            Err(_) => break "no result within the time limit".to_owned(),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    (seen, outcome)
}

#[test]
fn sqlite_records_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("phx.db").display());
    let mut server = Server::start(Some(TOKEN), &["--database-url", &url]);
    let (seen, outcome) = script(
        &["write".into(), format!("ws://{}/socket", server.addr)],
        |_| {},
    );
    assert_eq!(outcome, "1 passed, 0 failed", "{seen:#?}");
    let id = seen
        .iter()
        .find_map(|l| l.strip_prefix("id "))
        .expect("the record id")
        .to_owned();
    server.terminate();
    assert!(dir.path().join("phx.db").exists(), "the database is a file");

    let server = Server::start(Some(TOKEN), &["--database-url", &url]);
    let (seen, outcome) = script(
        &["read".into(), format!("ws://{}/socket", server.addr), id],
        |_| {},
    );
    assert_eq!(outcome, "1 passed, 0 failed", "{seen:#?}");
}

#[test]
fn two_nodes_share_one_postgresql() {
    let mut pg = Postgres::start();
    let redis = Redis::start();
    let url = pg.url();
    let start = |name: &str| {
        Server::start(
            Some(TOKEN),
            &[
                "--no-check-origin",
                "--database-url",
                &url,
                "--redis-url",
                &redis.url(),
                "--node-name",
                name,
                "--secret-key-base",
                "editing-stores-test-secret-of-at-least-sixty-four-bytes-for-the-cluster",
            ],
        )
    };
    let (a, b) = (start("pg-a"), start("pg-b"));
    let (seen, outcome) = script(
        &[
            "pg".into(),
            format!("ws://{}/socket", a.addr),
            format!("http://{}", a.admin),
            format!("ws://{}/socket", b.addr),
            format!("http://{}", b.admin),
            TOKEN.into(),
        ],
        |line| match line {
            "stop db" => pg.stop(),
            "start db" => pg.resume(),
            sql => {
                pg.psql(sql.trim_start_matches("sql "));
            }
        },
    );
    println!("{}", seen.join("\n"));
    assert_eq!(outcome, "6 passed, 0 failed", "{seen:#?}");
    // The same records on both nodes: one table, ids from the database.
    let rows = pg.psql("SELECT count(*) FROM phx_records WHERE kind = 'entity'");
    assert_eq!(rows, "3", "the two seeded entities and the test's record");
    // Once the node says its database is up again, its LISTEN hears other
    // programs' changes again (the script waited for "up" before the UPDATE).
    assert!(
        seen.iter().any(|l| l == "after-restart notification seen"),
        "a psql UPDATE after the database restart reached the list page: {seen:#?}"
    );
    drop((a, b));
}
