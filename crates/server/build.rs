//! Installs the demo page's npm packages (`npm ci` from the committed
//! `demo/package-lock.json`) when they are missing, so that `src/editing/demo.rs`
//! can embed phoenix's ESM build: on a fresh machine `cargo run -p phx-server`
//! then serves a working page.

use std::path::Path;
use std::process::Command;

fn main() {
    for file in [
        "index.html",
        "app.js",
        "style.css",
        "package.json",
        "package-lock.json",
    ] {
        println!("cargo:rerun-if-changed=demo/{file}");
    }
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let phoenix = demo.join("node_modules/phoenix/priv/static/phoenix.mjs");
    println!("cargo:rerun-if-changed={}", phoenix.display());
    if phoenix.exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&demo)
        .status();
    match status {
        Ok(s) if s.success() && phoenix.exists() => {}
        Ok(s) => panic!(
            "`npm ci` in {} failed ({s}); the demo page needs the phoenix npm package",
            demo.display()
        ),
        Err(err) => panic!(
            "cannot run npm ({err}); install Node.js and npm to build phx-server's demo page"
        ),
    }
}
