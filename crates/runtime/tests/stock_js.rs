//! Stock phoenix.js (the npm `phoenix` package, untouched) against the runtime:
//! join, push and reply, broadcast, presence, crash and automatic rejoin.
//!
//! Needs Node.js and npm; the packages come from `tests/js/package-lock.json`.

mod support;

use std::process::Command;

use phx_runtime::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_phoenix_js_client_works_unchanged() {
    let js = support::stock_js_dir();

    let endpoint = Endpoint::builder()
        .config(phx_runtime::Config {
            check_origin: phx_runtime::CheckOrigin::Disabled,
            ..phx_runtime::Config::default()
        })
        .channel("room:*", |_, _| support::PresenceRoom::default())
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = endpoint.clone();
    let server = tokio::spawn(async move {
        phx_runtime::serve(listener, &served, async {
            let _ = stopped.await;
        })
        .await
    });

    let url = format!("ws://{addr}/socket");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("stock_client.cjs")
            .arg(url)
            .current_dir(js)
            .output()
            .expect("node is needed to run the stock phoenix client (install Node.js)")
    })
    .await
    .expect("node ran");
    let _ = stop.send(());
    let _ = server.await;
    endpoint.drain().await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stock client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok crash then automatic rejoin"),
        "{stdout}"
    );
    phx_testkit::assert_all_passed(&stdout);
}
