//! Keeping a record's session in step with the other nodes of a cluster: a
//! task per session follows the record's topic (other nodes' presence diffs,
//! their owner's form changes and saves) and an internal topic
//! (`phx_editing:<kind>:<id>`: "owner left", "who has the form?" and its
//! answer). On one node the same task sees only this node's own traffic.

use std::sync::{Arc, Weak};

use phx_protocol::Broadcast;
use phx_runtime::pubsub::{PubSub, Subscription};
use phx_runtime::Payload;
use serde_json::{json, Value};

use crate::session::{tell, Sessions, SyncState};

/// How many broadcasts of a record's topics may wait for its session's follower.
pub(crate) const FOLLOW_CAPACITY: usize = 4096;

impl Sessions {
    /// A broadcast on the record's topic or its internal topic, as the session's
    /// follower sees it. Changes this node made itself are already applied.
    pub(crate) fn follow(&self, id: &str, b: &Broadcast, pubsub: &PubSub) {
        let payload = b.payload.parse::<Value>().unwrap_or(Value::Null);
        let mut answer = None;
        let told = {
            let mut sessions = self.lock();
            let Some(session) = sessions.get_mut(id) else {
                return;
            };
            let before = session.first();
            let heard = |sync: &mut SyncState| {
                if let SyncState::AskingForm { heard, .. } = sync {
                    *heard = true;
                }
            };
            match b.event.as_str() {
                "presence_diff" => session.apply_diff(&self.node, &payload),
                // The owner's node applied its own change already; another
                // node's owner's change is applied here, in publish order.
                "form_change" if !session.owner_is_local() => {
                    session.set_form(Some(payload["params"].clone()));
                    heard(&mut session.sync);
                }
                "saved" if !session.owner_is_local() => {
                    session.set_form(None);
                    if let Some(version) = payload["record"]["version"].as_i64() {
                        session.base = version;
                    }
                    heard(&mut session.sync);
                }
                "deleted" => {
                    // The editors' channels close themselves on this broadcast.
                    sessions.remove(id);
                    return;
                }
                "form?" if session.owner_is_local() => {
                    if let Some(to) = payload["from"].as_str().filter(|f| *f != &*self.node) {
                        answer = Some(json!({
                            "to": to,
                            "form": session.form.clone().unwrap_or(Value::Null),
                            "base": session.base,
                        }));
                    }
                }
                "left" if payload["node"].as_str() != Some(&*self.node) => {
                    if let (Some(node), Some(seq)) =
                        (payload["node"].as_str(), payload["seq"].as_u64())
                    {
                        session.owner_left(node, seq);
                    }
                }
                "form!" if payload["to"].as_str() == Some(&*self.node) => {
                    if let SyncState::AskingForm { answer, heard } =
                        std::mem::take(&mut session.sync)
                    {
                        if !heard {
                            let form = Some(payload["form"].clone()).filter(|f| !f.is_null());
                            session.set_form(form);
                            if let Some(base) = payload["base"].as_i64() {
                                session.base = base;
                            }
                        }
                        let _ = answer.send(());
                    }
                }
                _ => {}
            }
            session.tell(before)
        };
        tell(told);
        if let Some(answer) = answer {
            pubsub.broadcast(&self.sync_topic(id), "form!", Payload::from(answer));
        }
    }
}

/// Follows a record's topic and internal topic for its session on this node,
/// until the session ends (which aborts this task).
pub(crate) async fn follow(
    sessions: Weak<Sessions>,
    id: String,
    pubsub: PubSub,
    mut edit: Subscription,
    mut sync: Subscription,
) {
    loop {
        // The record's topic first: what another node published there before
        // it said on the internal topic that its owner left (its last
        // form_change) is applied before the promotion that follows.
        let (got, from_edit) = tokio::select! {
            biased;
            b = edit.recv() => (b, true),
            b = sync.recv() => (b, false),
        };
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        match got {
            Some(b) => sessions.follow(&id, &b, &pubsub),
            None => {
                // Fell behind: a presence change may be lost until the next
                // editor of this record joins here (the join resyncs the line).
                tracing::warn!(record = %id, kind = %sessions.kind, "editing session fell behind its topic; resubscribing");
                if let Some(session) = sessions.lock().get_mut(&id) {
                    session.sync = SyncState::Behind;
                }
                if from_edit {
                    edit = pubsub.subscribe(&sessions.edit_topic(&id), FOLLOW_CAPACITY);
                } else {
                    sync = pubsub.subscribe(&sessions.sync_topic(&id), FOLLOW_CAPACITY);
                }
            }
        }
    }
}

/// Starts the follower of a new session.
pub(crate) fn start(
    sessions: &Arc<Sessions>,
    id: &str,
    pubsub: &PubSub,
) -> tokio::task::AbortHandle {
    let edit = pubsub.subscribe(&sessions.edit_topic(id), FOLLOW_CAPACITY);
    let sync = pubsub.subscribe(&sessions.sync_topic(id), FOLLOW_CAPACITY);
    tokio::spawn(follow(
        Arc::downgrade(sessions),
        id.to_owned(),
        pubsub.clone(),
        edit,
        sync,
    ))
    .abort_handle()
}
