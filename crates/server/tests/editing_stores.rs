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

use std::time::Duration;

use common::{cluster_node, Script, Server};
use phx_testkit::{Postgres, Redis};

const TOKEN: &str = "editing-stores-token";

/// Runs `node editing_stores.cjs <args>`, answering its database requests
/// (`sql <statement>`, `stop db`, `start db`) with `act`; returns its output
/// lines after checking that every check it ran passed.
fn script(args: &[String], mut act: impl FnMut(&str)) -> Vec<String> {
    let seen = Script::start("editing_stores.cjs", args).run(Duration::from_secs(300), |line| {
        (line.starts_with("sql ") || line.ends_with(" db")).then(|| {
            act(line);
            "done"
        })
    });
    phx_testkit::assert_all_passed(&seen.join("\n"));
    seen
}

#[test]
fn sqlite_records_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("phx.db").display());
    let mut server = Server::start(Some(TOKEN), &["--database-url", &url]);
    let seen = script(
        &["write".into(), format!("ws://{}/socket", server.addr)],
        |_| {},
    );
    let id = seen
        .iter()
        .find_map(|l| l.strip_prefix("id "))
        .expect("the record id")
        .to_owned();
    server.terminate();
    assert!(dir.path().join("phx.db").exists(), "the database is a file");

    let server = Server::start(Some(TOKEN), &["--database-url", &url]);
    // `script` checks that every check passed (the record read back).
    script(
        &["read".into(), format!("ws://{}/socket", server.addr), id],
        |_| {},
    );
}

#[test]
fn two_nodes_share_one_postgresql() {
    let mut pg = Postgres::start();
    let redis = Redis::start();
    let url = pg.url();
    let start = |name: &str| cluster_node(&redis.url(), name, TOKEN, &["--database-url", &url]);
    let (a, b) = (start("pg-a"), start("pg-b"));
    let seen = script(
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
