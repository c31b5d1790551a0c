//! The endpoint inside an application's own axum server: axum serves the pages
//! and the API, and the endpoint, mounted as a `tower::Service`, serves the
//! sockets at `/socket/websocket` and `/socket/longpoll`.
//!
//! Run it with `cargo run -p phx-runtime --example axum`, then connect stock
//! phoenix.js to `ws://127.0.0.1:4000/socket`.

use axum::routing::get;
use phx_runtime::{Channel, ChannelContext, Endpoint, HandleIn, Payload, RuntimeError};

/// Echoes every event back to its sender.
struct Echo;

impl Channel for Echo {
    type Info = ();

    async fn join(
        &mut self,
        _topic: &str,
        _payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        Ok(Payload::empty_object())
    }

    async fn handle_in(
        &mut self,
        _event: &str,
        payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        Ok(HandleIn::ok(payload))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let endpoint = Endpoint::builder().channel("echo:*", |_, _| Echo).build();
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async { "an axum app with Phoenix channels at /socket" }),
        )
        .route_service("/socket/websocket", endpoint.service())
        .route_service("/socket/longpoll", endpoint.service());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    println!("listening on http://127.0.0.1:4000 (sockets at ws://127.0.0.1:4000/socket)");
    axum::serve(listener, app)
        .with_graceful_shutdown(phx_runtime::shutdown_signal())
        .await?;
    endpoint.drain().await;
    Ok(())
}
