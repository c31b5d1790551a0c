//! A chat room: join with a nickname, `new_msg` is broadcast to the room, and
//! presence says who is in it. Connect with stock phoenix.js:
//!
//! ```js
//! const socket = new Socket("ws://127.0.0.1:4000/socket")
//! socket.connect()
//! const room = socket.channel("room:lobby", {nick: "ada"})
//! room.on("new_msg", m => console.log(m.nick, m.body))
//! room.join()
//! room.push("new_msg", {body: "hello"})
//! ```
//!
//! Run it with `cargo run -p phx-runtime --example chat`.

use phx_runtime::{Channel, ChannelContext, Endpoint, Flow, HandleIn, Payload, RuntimeError};
use serde_json::{json, Value};

/// One member of a room.
#[derive(Default)]
struct ChatRoom {
    nick: String,
}

impl Channel for ChatRoom {
    type Info = ();

    async fn join(
        &mut self,
        _topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        let params: Value = payload.parse().unwrap_or(Value::Null);
        match params["nick"].as_str() {
            Some(nick) if !nick.trim().is_empty() => self.nick = nick.trim().to_owned(),
            _ => return Err(json!({"reason": "a nick is required"}).into()),
        }
        let _ = ctx;
        Ok(json!({"nick": self.nick}).into())
    }

    /// Runs once the join reply is out: everyone sees us arrive; we get the full
    /// list of who is here before anything else.
    async fn after_join(&mut self, ctx: &mut ChannelContext) -> Result<Flow, RuntimeError> {
        ctx.track(&self.nick, json!({"online_at": now_ms()}))?;
        let who = ctx.presence_list()?;
        ctx.push("presence_state", who)?;
        Ok(Flow::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        match event {
            "new_msg" => {
                let body: Value = payload.parse()?;
                let text = body["body"].as_str().unwrap_or_default();
                ctx.broadcast("new_msg", json!({"nick": self.nick, "body": text}))?;
                Ok(HandleIn::ok(Payload::empty_object()))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let endpoint = Endpoint::builder()
        .channel("room:*", |_, _| ChatRoom::default())
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    println!("chat on ws://127.0.0.1:4000/socket (topics room:*)");
    phx_runtime::serve(listener, &endpoint, phx_runtime::shutdown_signal()).await?;
    endpoint.drain().await;
    Ok(())
}
