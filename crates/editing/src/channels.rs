//! The two channel kinds a mounted [`Editing`] routes: [`EditorChannel`] on
//! `edit:<kind>:<id>` (roles, live form, save, delete) and [`EventsChannel`]
//! on `events:<kind>` (pages of the list, create, lifecycle events).

use std::sync::Arc;

use phx_runtime::{
    Channel, ChannelContext, EndpointBuilder, Flow, HandleIn, Payload, ReplyStatus, RuntimeError,
};
use serde_json::{json, Value};

use crate::editing::Editing;
use crate::error::Denied;
use crate::record::{Cursor, Page, Record, Records};
use crate::session::{Editor, EditorMeta, Joined, Notice, Notify, Seat};

impl<R: Records> Editing<R> {
    /// Routes `edit:<kind>:*` and `events:<kind>` of `builder` to this kind.
    pub fn mount(&self, builder: EndpointBuilder) -> EndpointBuilder {
        let (edit, events) = (self.clone(), self.clone());
        builder
            .channel(&format!("edit:{}:*", self.kind()), move |_, _| {
                EditorChannel {
                    editing: edit.clone(),
                    seat: None,
                    meta: None,
                    joined_form_version: 0,
                    joined: None,
                }
            })
            .channel(&self.events_topic(), move |_, _| EventsChannel {
                editing: events.clone(),
                joined: None,
            })
    }

    /// The reply to a client's request; a refusal is logged and counted.
    fn reply<I: Send + 'static>(
        &self,
        result: Result<Value, Denied>,
        ctx: &ChannelContext<I>,
        event: &str,
    ) -> HandleIn {
        match result {
            Ok(response) => HandleIn::ok(response),
            Err(denied) => {
                self.refused(ctx.topic(), event, &denied);
                HandleIn::error(denied.to_payload())
            }
        }
    }
}

fn params_of(payload: &Value) -> Value {
    payload["params"].clone()
}

fn record_id_of(record: &Record) -> Value {
    record.get("id").cloned().unwrap_or(Value::Null)
}

fn page_reply(page: Page) -> Value {
    json!({
        "records": page.records,
        "total": page.total,
        "next": page.next.map(Cursor::encode),
    })
}

/// The channel of one editor on `edit:<kind>:<id>`.
pub struct EditorChannel<R> {
    editing: Editing<R>,
    seat: Option<Seat>,
    /// This connection's presence meta.
    meta: Option<EditorMeta>,
    /// The form's version when the join read it.
    joined_form_version: u64,
    /// Counts this channel on its topic while it lives.
    joined: Option<Joined>,
}

impl<R: Records> Channel for EditorChannel<R> {
    type Info = Notice;

    async fn join(
        &mut self,
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<Notice>,
    ) -> Result<Payload, Payload> {
        let refuse = |denied: Denied| {
            self.editing.refused(topic, "phx_join", &denied);
            denied.to_payload()
        };
        let Some(id) = self.editing.record_id(topic) else {
            return Err(refuse(Denied::NotFound));
        };
        let params = payload.parse::<Value>().unwrap_or(Value::Null);
        let connection = format!("{}:{}", self.editing.sessions.node, ctx.channel_id());
        let editor = Editor::from_join(ctx.assigns(), &params, &connection);
        let handle = ctx.handle();
        let topic_name = topic.to_owned();
        let notify: Notify = Arc::new(move |notice| {
            if let Err(err) = handle.send(notice) {
                tracing::warn!(topic = %topic_name, %err, "editing notice not delivered");
            }
        });
        let pubsub = ctx.pubsub().clone();
        let ctx: &ChannelContext<Notice> = ctx;
        let presence = || {
            ctx.presence_list()
                .ok()
                .and_then(|list| list.parse::<Value>().ok())
                .unwrap_or(Value::Null)
        };
        let opened = self
            .editing
            .open(id, editor, notify, &pubsub, &presence)
            .await
            .map_err(refuse)?;
        self.joined_form_version = opened.form_version;
        let reply = json!({
            "role": opened.role.as_str(),
            "owner": opened.owner,
            "form": opened.form,
            "record": opened.record,
            "meta": opened.meta,
        });
        self.meta = Some(opened.meta);
        self.seat = Some(opened.seat);
        self.joined = Some(self.editing.sessions.join_topic(topic));
        Ok(Payload::from(reply))
    }

    async fn after_join(&mut self, ctx: &mut ChannelContext<Notice>) -> Result<Flow, RuntimeError> {
        let (Some(seat), Some(meta)) = (&self.seat, &self.meta) else {
            return Ok(Flow::Stop);
        };
        ctx.track(seat.key(), meta.to_value())?;
        let state = ctx.presence_list()?;
        ctx.push("presence_state", state)?;
        // A change made between the join and the subscription was missed.
        let (form, version) = self.editing.form(seat.id());
        if version != self.joined_form_version {
            let by = self
                .editing
                .editors(seat.id())
                .first()
                .map(|m| m.key.clone());
            ctx.push("form_change", json!({"params": form, "by": by}))?;
        }
        Ok(Flow::Continue)
    }

    async fn handle_info(
        &mut self,
        notice: Notice,
        ctx: &mut ChannelContext<Notice>,
    ) -> Result<Flow, RuntimeError> {
        let (role, owner) = match notice {
            Notice::Promoted { owner } => ("owner", owner),
            Notice::Demoted { owner } => ("spectator", owner),
        };
        ctx.push("role", json!({"role": role, "owner": owner}))?;
        Ok(Flow::Continue)
    }

    fn intercepts(&self) -> Vec<String> {
        vec!["deleted".to_owned()]
    }

    /// `deleted`, from the owner on any node or from the database: the client
    /// sees it, then the channel closes (`phx_close`) without promoting anyone.
    async fn handle_out(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<Notice>,
    ) -> Result<Flow, RuntimeError> {
        ctx.push(event, payload)?;
        if event != "deleted" {
            return Ok(Flow::Continue);
        }
        if let Some(seat) = &self.seat {
            self.editing.end(seat.id());
        }
        Ok(Flow::Stop)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<Notice>,
    ) -> Result<HandleIn, RuntimeError> {
        let Some(seat) = &self.seat else {
            return Ok(HandleIn::Stop(None));
        };
        let editing = &self.editing;
        let payload = payload.parse::<Value>().unwrap_or(Value::Null);
        match event {
            "form_change" => {
                let params = params_of(&payload);
                let changed = editing.form_change(seat, params.clone()).map(|_| {
                    let _ = ctx
                        .broadcast_from("form_change", json!({"params": params, "by": seat.key()}));
                    json!({})
                });
                Ok(editing.reply(changed, ctx, event))
            }
            "save" => {
                let params = params_of(&payload);
                let version = payload["version"]
                    .as_i64()
                    .or_else(|| params["version"].as_i64());
                let saved = editing.save(seat, params, version).await;
                if let Ok(record) = &saved {
                    // The editors on every node; `updated` on events:<kind>
                    // comes from the store's change, once per node.
                    ctx.broadcast("saved", json!({"record": record}))?;
                }
                Ok(editing.reply(saved.map(|record| json!({"record": record})), ctx, event))
            }
            "delete" => match editing.delete(seat).await {
                Ok(()) => {
                    // The reply first, then the event, then phx_close; the
                    // other editors (on every node) close on the broadcast.
                    ctx.reply_ref()
                        .reply(ReplyStatus::Ok, Payload::empty_object())?;
                    let deleted = json!({"id": seat.id()});
                    ctx.push("deleted", deleted.clone())?;
                    ctx.broadcast_from("deleted", deleted)?;
                    Ok(HandleIn::Stop(None))
                }
                Err(denied) => Ok(editing.reply(Err(denied), ctx, event)),
            },
            _ => Ok(editing.reply(Err(Denied::UnknownEvent), ctx, event)),
        }
    }
}

/// The channel of `events:<kind>`: pages of the list and lifecycle events.
pub struct EventsChannel<R> {
    editing: Editing<R>,
    /// Counts this channel on its topic while it lives.
    joined: Option<Joined>,
}

impl<R: Records> Channel for EventsChannel<R> {
    type Info = ();

    /// Replies with the newest page: `{"records", "total", "next"}`.
    async fn join(
        &mut self,
        topic: &str,
        _payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        match self.editing.page(None).await {
            Ok(page) => {
                self.joined = Some(self.editing.sessions.join_topic(topic));
                Ok(Payload::from(page_reply(page)))
            }
            Err(denied) => {
                self.editing.refused(topic, "phx_join", &denied);
                Err(denied.to_payload())
            }
        }
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        let payload = payload.parse::<Value>().unwrap_or(Value::Null);
        let result = match event {
            // `created` reaches every member (the creator too) from the
            // store's change, once per node.
            "create" => {
                let by = ctx
                    .assigns()
                    .get::<phx_runtime::Identity>()
                    .map(|who| who.name.clone().unwrap_or_else(|| who.user_id.clone()))
                    .unwrap_or_default();
                self.editing
                    .create(params_of(&payload), &by)
                    .await
                    .map(|record| json!({"id": record_id_of(&record), "record": record}))
            }
            "list" => match &payload["after"] {
                Value::String(after) => match Cursor::decode(after) {
                    Some(cursor) => self.editing.page(Some(cursor)).await.map(page_reply),
                    None => Err(Denied::BadRequest),
                },
                Value::Null => self.editing.page(None).await.map(page_reply),
                _ => Err(Denied::BadRequest),
            },
            _ => Err(Denied::UnknownEvent),
        };
        Ok(self.editing.reply(result, ctx, event))
    }
}
