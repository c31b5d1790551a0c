//! The demo page opened at an address the origin check refuses says so, in
//! real headless Chromium (Debian's `chromium`, driven by `playwright-core`):
//! a server started with `--host example.com` and opened at
//! `http://127.0.0.1:PORT/` shows a notice naming the refused address, the
//! address that works and the flag; the same page at an allowed address
//! connects and shows none. Screenshots go to
//! `target/test-artifacts/demo-origin/`.
//!
//! Needs Node.js, npm and `/usr/bin/chromium` (or `CHROMIUM`).

mod common;

use std::path::PathBuf;

use common::{node, Server};

fn chromium_present() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium) or set CHROMIUM"
    );
}

fn artifact(name: &str) -> String {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/demo-origin");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir.join(format!("{name}.png")).display().to_string()
}

/// Runs the browser script; its output, asserting it passed.
fn browse(url: String, expect: &str, shot: &str, names: &[String]) -> String {
    let mut args = vec![url, expect.to_owned(), artifact(shot)];
    args.extend(names.iter().cloned());
    let output = node("origin_notice.cjs", &args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    stdout
}

#[test]
fn a_refused_origin_is_named_on_the_page() {
    chromium_present();
    let server = Server::start(None, &["--host", "example.com"]);
    let port = server.addr.rsplit(':').next().expect("a port").to_owned();
    let stdout = browse(
        format!("http://{}/", server.addr),
        "refused",
        "refused",
        &[
            format!("http://example.com:{port}/"),
            "--host 127.0.0.1".to_owned(),
        ],
    );
    assert!(
        stdout.contains("refused by the server's origin check"),
        "{stdout}"
    );
}

#[test]
fn an_allowed_origin_connects_with_no_notice() {
    chromium_present();
    // The default: on a loopback bind, 127.0.0.1 is one of the names allowed.
    let server = Server::start(None, &[]);
    let stdout = browse(
        format!("http://{}/", server.addr),
        "allowed",
        "allowed",
        &[],
    );
    assert!(stdout.contains("ok the page connects"), "{stdout}");
}
