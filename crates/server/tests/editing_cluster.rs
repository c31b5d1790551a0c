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

use std::time::Duration;

use common::{cluster_node, Script, Server};
use phx_testkit::{ClusterTiming, Postgres, Redis};

const TOKEN: &str = "editing-cluster-token";

/// The cluster's down period and heartbeat, as phx-server's defaults.
const DOWN_PERIOD_MS: u64 = 5_000;
const HEARTBEAT_MS: u64 = 1_500;

fn node(redis: &Redis, pg: &Postgres, name: &str) -> Server {
    cluster_node(
        &redis.url(),
        name,
        TOKEN,
        &[
            "--database-url",
            &pg.url(),
            "--down-period-ms",
            &DOWN_PERIOD_MS.to_string(),
            "--heartbeat-ms",
            &HEARTBEAT_MS.to_string(),
        ],
    )
}

#[test]
fn the_editing_contract_holds_across_two_nodes() {
    let redis = Redis::start();
    let pg = Postgres::start();
    let (mut a, b) = (node(&redis, &pg, "n1"), node(&redis, &pg, "n2"));
    let mut script = Script::start(
        "editing_cluster.cjs",
        &[
            format!("ws://{}/socket", a.addr),
            format!("http://{}", a.admin),
            format!("ws://{}/socket", b.addr),
            format!("http://{}", b.admin),
            TOKEN.to_owned(),
        ],
    );
    let seen = script.run(Duration::from_secs(120), |line| {
        (line == "kill A").then(|| {
            a.kill();
            "killed"
        })
    });
    drop(script);
    let log = seen.join("\n");
    println!("{log}");
    phx_testkit::assert_all_passed(&log);

    // Promotion after the kill comes within the down period plus a heartbeat
    // (and the documented margin, which covers the client hearing of it).
    let after_kill: u64 = seen
        .iter()
        .find_map(|l| l.strip_prefix("measured promotion_after_kill_ms "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no promotion figure in {log}"));
    assert!(
        u128::from(after_kill)
            <= ClusterTiming::from_ms(HEARTBEAT_MS, DOWN_PERIOD_MS)
                .crash_bound()
                .as_millis(),
        "promotion {after_kill} ms after the kill"
    );
    drop(b);
}
