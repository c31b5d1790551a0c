//! Long-poll across a cluster, as Phoenix routes it over PubSub: every session
//! listens on `phx:lp:<session id>`; a node that gets a request for a session
//! it does not hold publishes it there with a private reply topic, and the
//! session's node acknowledges at once and answers when the local path would.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::session::{SessionHandle, SessionId, Sessions};
use crate::metrics::Metrics;
use crate::state::EndpointState;

/// How long a node waits for the session's node to acknowledge a relayed request.
const RELAY_ACK: Duration = Duration::from_secs(2);

/// The PubSub topic a session listens on for requests that reached other nodes.
fn session_topic(id: &SessionId) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("phx:lp:{hex}")
}

/// Relays a request to the node holding session `id`: the answer's payload,
/// or `None` when no node acknowledged it within [`RELAY_ACK`].
pub(super) async fn relay_request(
    shared: &EndpointState,
    id: &SessionId,
    event: &str,
    mut request: Value,
) -> Option<Value> {
    let reply_topic = format!("phx:lpr:{:032x}", rand::random::<u128>());
    let mut replies = shared.pubsub.subscribe(&reply_topic, 4);
    request["reply"] = Value::String(reply_topic);
    let payload = phx_protocol::Payload::json(&request).ok()?;
    shared.pubsub.broadcast(&session_topic(id), event, payload);
    let acked = tokio::time::timeout(RELAY_ACK, async {
        while let Some(b) = replies.recv().await {
            if b.event == "ack" {
                return true;
            }
        }
        false
    })
    .await;
    if acked != Ok(true) {
        tracing::debug!("long-poll request: no node holds its session");
        return None;
    }
    // The session's node answers within a window (a poll's or a POST's bound).
    let bound = shared.config.longpoll_window + RELAY_ACK;
    let answered = tokio::time::timeout(bound, async {
        while let Some(b) = replies.recv().await {
            if b.event == "answer" {
                return b.payload.parse::<Value>().ok();
            }
        }
        None
    })
    .await;
    match answered {
        Ok(Some(body)) => Some(body),
        // Acknowledged but not answered in time: answer as the local path would.
        Ok(None) | Err(_) => Some(json!({"status": 408, "messages": []})),
    }
}

/// Serves the requests other nodes relay to session `id` until it ends.
pub(super) async fn relay_session(
    shared: Arc<EndpointState>,
    sessions: Arc<Sessions>,
    id: SessionId,
    handle: SessionHandle,
) {
    let mut requests = shared.pubsub.subscribe(&session_topic(&id), 64);
    loop {
        let req = tokio::select! {
            () = handle.polls.closed() => break,
            req = requests.recv() => match req {
                Some(req) => req,
                None => {
                    // Fell behind: listen again.
                    requests = shared.pubsub.subscribe(&session_topic(&id), 64);
                    continue;
                }
            },
        };
        if sessions.get(&id).is_none() {
            break; // ended (a malformed frame): unanswered, the asker says 410
        }
        let Ok(body) = req.payload.parse::<Value>() else {
            tracing::warn!("relayed long-poll request is not JSON: ignored");
            continue;
        };
        let Some(reply) = body.get("reply").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        let (shared, handle, event) = (shared.clone(), handle.clone(), req.event.clone());
        tokio::spawn(async move {
            shared
                .pubsub
                .broadcast(&reply, "ack", phx_protocol::Payload::empty_object());
            let answer = match event.as_str() {
                "poll" => match handle.poll(&shared).await {
                    Some(messages) => json!({"messages": messages}),
                    None => json!({"status": 410, "messages": []}),
                },
                "post" => {
                    let text = body.get("body").and_then(Value::as_str).unwrap_or_default();
                    let ndjson = body.get("ndjson").and_then(Value::as_bool) == Some(true);
                    match handle.decode(&shared, text.as_bytes(), ndjson) {
                        Ok(messages) => {
                            json!({"status": handle.hand_over(&shared, messages).await})
                        }
                        Err(why) => {
                            Metrics::inc(&shared.metrics.malformed_frames);
                            tracing::warn!(%why, "relayed long-poll POST: malformed frame");
                            json!({"status": 400})
                        }
                    }
                }
                _ => return,
            };
            match phx_protocol::Payload::json(&answer) {
                Ok(payload) => shared.pubsub.broadcast(&reply, "answer", payload),
                Err(err) => tracing::warn!(%err, "long-poll relay answer not encodable"),
            }
        });
    }
}
