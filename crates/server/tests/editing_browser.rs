//! The demo page in real headless Chromium (Debian's `chromium`, driven by the
//! `playwright-core` npm package): two browser contexts on one record — owner and
//! spectator, live typing, promotion when the owner's page closes, the version
//! and who saved, a change made in PostgreSQL arriving live, and a conflict
//! (reload or overwrite). A screenshot of each step is kept under
//! `target/test-artifacts/editing-browser/`.
//!
//! Needs Node.js, npm, `/usr/bin/chromium` (`.ci/run` installs it; set
//! `CHROMIUM` to use another binary) and PostgreSQL 15 (started here).

mod common;

use std::path::PathBuf;

use common::{node, Server};

#[test]
fn two_browsers_edit_one_record() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium) or set CHROMIUM"
    );
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-artifacts/editing-browser");
    // The page is opened at 127.0.0.1, so that is the host origins must match.
    let pg = phx_testkit::Postgres::start();
    let url = pg.url();
    let server = Server::start(Some("t"), &["--host", "127.0.0.1", "--database-url", &url]);
    let output = node(
        "browser.cjs",
        &[
            format!("http://{}", server.addr),
            artifacts.display().to_string(),
            pg.psql_path(),
            url.clone(),
        ],
    );
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    phx_testkit::assert_all_passed(&stdout);
    for step in [
        "1-owner",
        "2-spectator",
        "3-spectator-sees-typing",
        "4-promoted",
        "5-promoted-edits-and-saves",
        "6-external-change",
        "7-conflict",
        "8-overwritten",
    ] {
        assert!(
            artifacts.join(format!("{step}.png")).exists(),
            "screenshot {step}"
        );
    }
}
