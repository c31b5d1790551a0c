//! The collaborative-editing wire contract (`protocol-spec/editing.md`) over the
//! wire with stock phoenix.js: roles, FIFO, ties, multi-tab, spectator refusals,
//! late-joiner form state, promotion on close, create / save / delete and their
//! events, stats, metrics (refusals counted by kind and reason) and the broadcast API with and without the token.
//!
//! Needs Node.js and npm; the packages come from `tests/js/package-lock.json`.

mod common;

use common::{http, node, Server};

#[test]
fn the_editing_contract_holds_for_stock_phoenix_js() {
    let token = "test-token-1";
    let server = Server::start(Some(token), &[]);
    let output = node(
        "editing.cjs",
        &[
            format!("ws://{}/socket", server.addr),
            format!("http://{}", server.admin),
            token.to_owned(),
            format!("http://{}", server.addr),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "contract failed:\n{stdout}\n{stderr}"
    );

    // Once every client is gone, nothing is counted any more.
    let auth = format!("Bearer {token}");
    let idle = "\"sessions\":{\"anonymous\":0,\"signed_in\":0}";
    let mut stats = String::new();
    phx_testkit::wait_for(
        "sockets and presences uncounted once every client is gone",
        std::time::Duration::from_secs(10),
        || {
            let (status, body) = http(&server.admin, "GET", "/api/stats", Some(&auth));
            assert_eq!(status, 200);
            stats = body;
            stats.contains(idle) && stats.contains("\"presences\":0")
        },
    );
    for idle in [
        "\"sockets\":0",
        "\"users\":0",
        "\"topics\":{}",
        "\"presences\":0",
    ] {
        assert!(stats.contains(idle), "{idle} in {stats}");
    }
    drop(server);
    println!("{stdout}");
    assert!(
        stdout.contains("ok owner's socket closes: the next connection gets role owner"),
        "{stdout}"
    );
    phx_testkit::assert_all_passed(&stdout);
}

#[test]
fn without_a_configured_token_every_admin_request_is_refused() {
    let server = Server::start(None, &[]);
    for (method, path) in [
        ("GET", "/api/stats"),
        ("GET", "/metrics"),
        ("POST", "/api/broadcast"),
        ("GET", "/nope"),
    ] {
        for auth in [None, Some("Bearer "), Some("Bearer anything")] {
            let (status, _) = http(&server.admin, method, path, auth);
            assert_eq!(status, 401, "{method} {path} with {auth:?}");
        }
    }
}

#[test]
fn conformance_mode_hosts_both_apps_and_the_demo_page() {
    let server = Server::start(Some("t"), &["--conformance"]);
    let (status, body) = http(&server.addr, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(body.contains("/assets/app.js"), "{body}");
    let (status, body) = http(&server.addr, "GET", "/assets/phoenix.mjs", None);
    assert_eq!(status, 200);
    assert!(body.contains("export"), "phoenix's ESM build is served");
    assert_eq!(http(&server.addr, "GET", "/assets/nope.js", None).0, 404);
    assert_eq!(http(&server.admin, "GET", "/nope", Some("Bearer t")).0, 404);
    let (status, stats) = http(&server.admin, "GET", "/api/stats", Some("Bearer t"));
    assert_eq!(status, 200);
    assert!(stats.contains("\"sockets\":0"), "{stats}");
}
