//! The conformance app: the channels `conformance/contract.md` describes, which any
//! Phoenix-channels server can host so one client-side suite can check both.
//!
//! - `room:*`: public rooms with presence; `room:admin` adds server-side
//!   broadcasts (to the app's own `room:*` and `private:*` topics only:
//!   `{"reason":"topic not allowed"}` otherwise) and `disconnect_user`. A meta over the endpoint's presence
//!   limit is refused with `{"reason":"meta too large"}`.
//! - `private:*`: joins only with `{"token": "letmein"}`, no presence.
//! - The socket refuses `reject=1` and takes `users_socket:<user_id>` as its id.

use std::time::{SystemTime, UNIX_EPOCH};

use phx_runtime::{
    Channel, ChannelContext, ConnectRequest, Connection, EndpointBuilder, Flow, HandleIn, Payload,
    Refusal, RuntimeError, SocketHandler,
};
use serde_json::{json, Map, Value};

/// The conformance socket handler.
pub struct ConformanceSocket;

impl SocketHandler for ConformanceSocket {
    async fn connect(&self, req: &ConnectRequest) -> Result<Connection, Refusal> {
        if req.params.get("reject").map(String::as_str) == Some("1") {
            return Err(Refusal::forbidden());
        }
        let mut conn = Connection::new();
        if let Some(user) = req.params.get("user_id") {
            conn = conn.id(format!("users_socket:{user}"));
        }
        Ok(conn)
    }
}

/// Routes the conformance channels on `builder` (the socket handler is
/// [`ConformanceSocket`], set by the caller).
pub fn mount(builder: EndpointBuilder) -> EndpointBuilder {
    builder
        .channel("room:*", |topic, _| Room::new(true, topic == "room:admin"))
        .channel("private:*", |_, _| Room::new(false, false))
}

/// Milliseconds since the epoch, for `online_at`.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A room (with presence) or a private room (without).
struct Room {
    presence: bool,
    admin: bool,
    key: String,
    meta: Map<String, Value>,
}

impl Room {
    fn new(presence: bool, admin: bool) -> Room {
        Room {
            presence,
            admin,
            key: String::new(),
            meta: Map::new(),
        }
    }

    /// The meta the contract asks for: the client's object plus `online_at`.
    fn meta_with_online_at(meta: &Map<String, Value>) -> Value {
        let mut meta = meta.clone();
        meta.insert("online_at".to_owned(), json!(now_ms()));
        Value::Object(meta)
    }
}

fn object(payload: &Payload) -> Map<String, Value> {
    match payload.parse::<Value>() {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

impl Channel for Room {
    type Info = ();

    async fn join(
        &mut self,
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        let params = object(&payload);
        if !self.presence {
            if params.get("token").and_then(Value::as_str) != Some("letmein") {
                return Err(json!({"reason": "unauthorized"}).into());
            }
            return Ok(json!({"topic": topic}).into());
        }
        self.key = match params.get("user") {
            Some(Value::String(user)) => user.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => format!("anon:{}", ctx.channel_id()),
        };
        self.meta = match params.get("meta") {
            Some(Value::Object(meta)) => meta.clone(),
            _ => Map::new(),
        };
        Ok(json!({"topic": topic}).into())
    }

    /// Tracks the member and pushes `presence_state`: after the join reply, before
    /// the reply to anything the client sent after its join.
    async fn after_join(&mut self, ctx: &mut ChannelContext) -> Result<Flow, RuntimeError> {
        if self.presence {
            ctx.track(&self.key, Room::meta_with_online_at(&self.meta))?;
            let state = ctx.presence_list()?;
            ctx.push("presence_state", state)?;
        }
        Ok(Flow::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        let ok_empty = || HandleIn::ok(Payload::empty_object());
        match event {
            "echo" => Ok(HandleIn::ok(payload)),
            "echo_error" => Ok(HandleIn::error(payload)),
            "shout" => {
                ctx.broadcast("shout", payload)?;
                Ok(ok_empty())
            }
            "shout_others" => {
                ctx.broadcast_from("shout", payload)?;
                Ok(ok_empty())
            }
            "push_me" => {
                let req = object(&payload);
                let event = req.get("event").and_then(Value::as_str).unwrap_or("push");
                let payload = req.get("payload").cloned().unwrap_or_else(|| json!({}));
                ctx.push(event, payload)?;
                Ok(HandleIn::NoReply)
            }
            "update_meta" => {
                if self.presence {
                    let meta = object(&payload);
                    match ctx.update(&self.key, Room::meta_with_online_at(&meta)) {
                        Ok(()) => self.meta = meta,
                        Err(RuntimeError::TooLarge { .. }) => {
                            return Ok(HandleIn::error(json!({"reason": "meta too large"})));
                        }
                        Err(err) => return Err(err),
                    }
                }
                Ok(ok_empty())
            }
            "crash" => Err(RuntimeError::channel("crash requested by the client")),
            "stop" => Ok(HandleIn::Stop(None)),
            "noreply" => Ok(HandleIn::NoReply),
            "binary_echo" if payload.as_binary().is_some() => Ok(HandleIn::ok(payload)),
            "broadcast" if self.admin => {
                let req = object(&payload);
                let topic = req.get("topic").and_then(Value::as_str).unwrap_or_default();
                let event = req.get("event").and_then(Value::as_str).unwrap_or_default();
                let payload = req.get("payload").cloned().unwrap_or_else(|| json!({}));
                // Only the conformance app's own topics (`room:*`, `private:*`): never
                // an internal topic, nor another app's topics on the same endpoint (an
                // edit topic's presence, a record's `deleted`).
                if !(topic.starts_with("room:") || topic.starts_with("private:")) {
                    tracing::warn!(%topic, "conformance broadcast outside its own topics refused");
                    return Ok(HandleIn::error(json!({"reason": "topic not allowed"})));
                }
                match ctx
                    .pubsub()
                    .broadcast_external(topic, event, payload.into())
                {
                    Ok(()) => Ok(ok_empty()),
                    Err(_) => Ok(HandleIn::error(json!({"reason": "topic not allowed"}))),
                }
            }
            "disconnect_user" if self.admin => {
                let req = object(&payload);
                let user = match req.get("user_id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                ctx.pubsub().broadcast(
                    &format!("users_socket:{user}"),
                    "disconnect",
                    Payload::empty_object(),
                );
                Ok(ok_empty())
            }
            _ => Ok(HandleIn::error(json!({"reason": "unhandled event"}))),
        }
    }
}
