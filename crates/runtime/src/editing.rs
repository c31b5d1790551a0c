//! Collaborative editing of records: one editing session per record, an owner who
//! may edit and spectators who watch the owner's unsaved changes live.
//!
//! An application plugs its records in by implementing [`Records`] (load,
//! validate, save, delete, list, create) and mounts an [`Editing`] per kind of
//! record on its endpoint. It then gets the whole wire contract of
//! `protocol-spec/editing.md`: topics `edit:<kind>:<id>` (roles, live form state,
//! save, delete, promotion of the next editor when the owner leaves) and
//! `events:<kind>` (the list of records and their created / updated / deleted
//! events).
//!
//! The session of a record is one shared state, not something each channel
//! recomputes from presence diffs: every editor's channel takes a seat on join
//! (joined_at from the server clock, and a server-assigned sequence that breaks
//! ties) and its [`Seat`] gives the seat back when dropped — with the channel,
//! however the channel ends (leave, crash, socket closed, abort). The first seat
//! in line is the owner; when it is given back, the next one is told at once.
//!
//! The code that talks to the [`Channel`] trait is the two small types at the end
//! of this file ([`EditorChannel`], [`EventsChannel`]); everything above them is
//! plain session logic.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use phx_protocol::Payload;
use serde_json::{json, Map, Value};

use crate::{Channel, ChannelContext, EndpointBuilder, Flow, HandleIn, RuntimeError};

/// Validation errors: field name → messages, sent as `{"errors": {...}}`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// A record: a JSON object with at least `id` and `title`.
pub type Record = Map<String, Value>;

/// Where an application keeps the records of one kind. Every method may be
/// called from many channels at once.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Mutex;
/// use phx_runtime::editing::{FieldErrors, Record, Records};
///
/// /// Notes kept in memory; the id is a counter.
/// #[derive(Default)]
/// struct Notes(Mutex<(u64, BTreeMap<String, Record>)>);
///
/// impl Records for Notes {
///     async fn load(&self, id: &str) -> Option<Record> {
///         self.0.lock().ok()?.1.get(id).cloned()
///     }
///     fn validate(&self, params: &Record) -> Result<(), FieldErrors> {
///         match params.get("title").and_then(|t| t.as_str()) {
///             Some(t) if !t.is_empty() => Ok(()),
///             _ => Err(BTreeMap::from([("title".into(), vec!["can't be blank".into()])])),
///         }
///     }
///     async fn save(&self, id: &str, mut params: Record) -> Option<Record> {
///         let mut notes = self.0.lock().ok()?;
///         let slot = notes.1.get_mut(id)?;
///         params.insert("id".into(), id.into());
///         *slot = params.clone();
///         Some(params)
///     }
///     async fn delete(&self, id: &str) -> bool {
///         self.0.lock().is_ok_and(|mut n| n.1.remove(id).is_some())
///     }
///     async fn list(&self) -> Vec<Record> {
///         self.0.lock().map(|n| n.1.values().cloned().collect()).unwrap_or_default()
///     }
///     async fn create(&self, mut params: Record) -> Option<Record> {
///         let mut notes = self.0.lock().ok()?;
///         notes.0 += 1;
///         let id = notes.0.to_string();
///         params.insert("id".into(), id.clone().into());
///         notes.1.insert(id, params.clone());
///         Some(params)
///     }
/// }
///
/// let endpoint = phx_runtime::Endpoint::builder();
/// let endpoint = phx_runtime::Editing::new("note", Notes::default()).mount(endpoint).build();
/// # let _ = endpoint;
/// ```
pub trait Records: Send + Sync + 'static {
    /// The saved record with this id, or `None` when there is none.
    fn load(&self, id: &str) -> impl Future<Output = Option<Record>> + Send;

    /// Checks params before `save` or `create`; nothing is stored when it fails.
    fn validate(&self, params: &Record) -> Result<(), FieldErrors>;

    /// Stores validated params as the record `id` (the store sets `id`); returns
    /// the saved record, or `None` when the record no longer exists.
    fn save(&self, id: &str, params: Record) -> impl Future<Output = Option<Record>> + Send;

    /// Deletes the record; false when there was none.
    fn delete(&self, id: &str) -> impl Future<Output = bool> + Send;

    /// Every record of the kind, for the `events:<kind>` join reply.
    fn list(&self) -> impl Future<Output = Vec<Record>> + Send;

    /// Stores validated params as a new record with an id the store chooses;
    /// `None` when it cannot be stored.
    fn create(&self, params: Record) -> impl Future<Output = Option<Record>> + Send;
}

/// Why an editing request is refused; each is one wire reply (`error` status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The kind or record does not exist: `{"reason": "not_found"}`.
    NotFound,
    /// Only the owner may do this: `{"reason": "not_owner"}`.
    NotOwner,
    /// Validation failed: `{"errors": {...}}`.
    Invalid(FieldErrors),
    /// The request is malformed: `{"reason": "bad_request"}`.
    BadRequest,
}

impl Denied {
    /// The reply payload.
    pub fn to_payload(&self) -> Payload {
        Payload::from(match self {
            Denied::NotFound => json!({"reason": "not_found"}),
            Denied::NotOwner => json!({"reason": "not_owner"}),
            Denied::Invalid(errors) => json!({"errors": errors}),
            Denied::BadRequest => json!({"reason": "bad_request"}),
        })
    }
}

/// Who is editing: the presence key and the name shown to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Editor {
    /// Presence key: the user id, or a key unique to the connection when anonymous.
    pub key: String,
    /// The user's display name.
    pub name: String,
    /// The user id, `None` for an anonymous editor.
    pub user_id: Option<String>,
}

impl Editor {
    /// Reads `{"user": {"id", "name"}}` from a join payload. Without a usable id
    /// the editor is anonymous and its key is `anonymous:<connection>`.
    pub fn from_join(params: &Value, connection: u64) -> Editor {
        let user = &params["user"];
        let user_id = match &user["id"] {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let name = match &user["name"] {
            Value::String(s) if !s.is_empty() => s.clone(),
            _ => "anonymous".to_owned(),
        };
        Editor {
            key: user_id
                .clone()
                .unwrap_or_else(|| format!("anonymous:{connection}")),
            name,
            user_id,
        }
    }
}

/// What the session tells one editor's connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// This connection is now the owner; `owner` is its own meta.
    Promoted {
        /// The new owner's meta.
        owner: Value,
    },
    /// The record was deleted: the channel must close.
    Closed,
}

/// Delivers a [`Notice`] to one editor's connection.
pub type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

/// A connection's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// First in line: may edit, save, delete.
    Owner,
    /// Read-only, watching the owner.
    Spectator,
}

impl Role {
    /// `"owner"` or `"spectator"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Spectator => "spectator",
        }
    }
}

/// The other editors of a deleted record; dropping this tells each of them to
/// close (after the deletion was announced, so they see it before they go).
#[must_use = "dropping it closes the other editors at once"]
pub struct Closing(Vec<Notify>);

impl Drop for Closing {
    fn drop(&mut self) {
        for notify in self.0.drain(..) {
            notify(Notice::Closed);
        }
    }
}

/// One editor's place in a session's line.
struct Place {
    seq: u64,
    joined_at: u64,
    meta: Value,
    notify: Notify,
}

/// The session of one record: who edits it and the owner's unsaved params.
#[derive(Default)]
struct Session {
    /// In line order: (joined_at, seq).
    line: Vec<Place>,
    form: Option<Value>,
    /// Bumped on every change of `form`.
    version: u64,
}

/// Every session of one kind, keyed by record id.
#[derive(Default)]
struct Sessions {
    seq: AtomicU64,
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes a place; tells the next in line when the owner left.
    fn leave(&self, id: &str, seq: u64) {
        let promoted = {
            let mut sessions = self.lock();
            let Some(session) = sessions.get_mut(id) else {
                return;
            };
            let Some(at) = session.line.iter().position(|p| p.seq == seq) else {
                return;
            };
            session.line.remove(at);
            if session.line.is_empty() {
                sessions.remove(id);
                None
            } else if at == 0 {
                session
                    .line
                    .first()
                    .map(|p| (p.notify.clone(), p.meta.clone()))
            } else {
                None
            }
        };
        if let Some((notify, owner)) = promoted {
            notify(Notice::Promoted { owner });
        }
    }

    fn is_owner(&self, id: &str, seq: u64) -> bool {
        self.lock()
            .get(id)
            .and_then(|s| s.line.first())
            .is_some_and(|p| p.seq == seq)
    }
}

/// An editor's seat in a session; dropping it leaves the session (and promotes
/// the next editor if this one owned the record). Keep it in the channel so it
/// goes when the channel goes.
pub struct Seat {
    sessions: Arc<Sessions>,
    id: String,
    seq: u64,
    key: String,
}

impl Seat {
    /// The record id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The server-assigned sequence of this seat (unique per kind).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The editor's presence key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.sessions.leave(&self.id, self.seq);
    }
}

/// What an editor gets on opening a record.
pub struct Opened {
    /// The seat to keep while editing.
    pub seat: Seat,
    /// The connection's role.
    pub role: Role,
    /// This connection's presence meta (`key`, `name`, `joined_at`, `seq`, `user_id`).
    pub meta: Value,
    /// The owner's meta (the connection's own when it is the owner).
    pub owner: Value,
    /// The session's unsaved params, or null.
    pub form: Value,
    /// The form's version, to notice a change made before the channel subscribed.
    pub version: u64,
    /// The saved record.
    pub record: Record,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The editing sessions of one kind of record, backed by the application's
/// [`Records`]. Cheap to clone: clones share the sessions.
pub struct Editing<R> {
    kind: Arc<str>,
    records: Arc<R>,
    sessions: Arc<Sessions>,
}

impl<R> Clone for Editing<R> {
    fn clone(&self) -> Self {
        Editing {
            kind: self.kind.clone(),
            records: self.records.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

impl<R: Records> Editing<R> {
    /// Sessions for records of `kind` (the `<kind>` of `edit:<kind>:<id>`).
    pub fn new(kind: &str, records: R) -> Editing<R> {
        Editing {
            kind: kind.into(),
            records: Arc::new(records),
            sessions: Arc::default(),
        }
    }

    /// Routes `edit:<kind>:*` and `events:<kind>` of `builder` to this kind.
    pub fn mount(&self, builder: EndpointBuilder) -> EndpointBuilder {
        let (edit, events) = (self.clone(), self.clone());
        builder
            .channel(&format!("edit:{}:*", self.kind), move |_, _| {
                EditorChannel {
                    editing: edit.clone(),
                    seat: None,
                    joined_version: 0,
                }
            })
            .channel(&self.events_topic(), move |_, _| EventsChannel {
                editing: events.clone(),
            })
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The application's records.
    pub fn records(&self) -> &R {
        &self.records
    }

    /// `events:<kind>`, where lifecycle events go.
    pub fn events_topic(&self) -> String {
        format!("events:{}", self.kind)
    }

    /// The record id of an `edit:<kind>:<id>` topic.
    pub fn record_id<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic
            .strip_prefix("edit:")?
            .strip_prefix(&*self.kind)?
            .strip_prefix(':')
            .filter(|id| !id.is_empty())
    }

    /// The metas of a record's editors, owner first.
    pub fn editors(&self, id: &str) -> Vec<Value> {
        self.sessions.lock().get(id).map_or_else(Vec::new, |s| {
            s.line.iter().map(|p| p.meta.clone()).collect()
        })
    }

    /// Opens a record for an editor: takes a place in line and answers with the
    /// role, the owner, the unsaved form and the saved record.
    pub async fn open(&self, id: &str, editor: Editor, notify: Notify) -> Result<Opened, Denied> {
        let record = self.records.load(id).await.ok_or(Denied::NotFound)?;
        let mut sessions = self.sessions.lock();
        let session = sessions.entry(id.to_owned()).or_default();
        let seq = self.sessions.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let joined_at = now_ms();
        let meta = json!({
            "key": editor.key,
            "name": editor.name,
            "joined_at": joined_at,
            "seq": seq,
            "user_id": editor.user_id,
        });
        let at = session
            .line
            .partition_point(|p| (p.joined_at, p.seq) < (joined_at, seq));
        session.line.insert(
            at,
            Place {
                seq,
                joined_at,
                meta: meta.clone(),
                notify,
            },
        );
        let owner = session.line[0].meta.clone();
        let role = if at == 0 {
            Role::Owner
        } else {
            Role::Spectator
        };
        let (form, version) = (session.form.clone().unwrap_or(Value::Null), session.version);
        drop(sessions);
        Ok(Opened {
            seat: Seat {
                sessions: self.sessions.clone(),
                id: id.to_owned(),
                seq,
                key: editor.key,
            },
            role,
            meta,
            owner,
            form,
            version,
            record,
        })
    }

    /// The owner's unsaved params become the session's form state. `Ok` gives
    /// the session's form version after the change.
    pub fn form_change(&self, seat: &Seat, params: Value) -> Result<u64, Denied> {
        if !params.is_object() {
            return Err(Denied::BadRequest);
        }
        let mut sessions = self.sessions.lock();
        let session = sessions.get_mut(&seat.id).ok_or(Denied::NotFound)?;
        if session.line.first().map(|p| p.seq) != Some(seat.seq) {
            return Err(Denied::NotOwner);
        }
        session.form = Some(params);
        session.version += 1;
        Ok(session.version)
    }

    /// The session's form state and its version.
    pub fn form(&self, id: &str) -> (Value, u64) {
        self.sessions.lock().get(id).map_or((Value::Null, 0), |s| {
            (s.form.clone().unwrap_or(Value::Null), s.version)
        })
    }

    /// Validates and saves the owner's params; on success the form state is cleared.
    pub async fn save(&self, seat: &Seat, params: Value) -> Result<Record, Denied> {
        if !self.sessions.is_owner(&seat.id, seat.seq) {
            return Err(Denied::NotOwner);
        }
        let Value::Object(params) = params else {
            return Err(Denied::BadRequest);
        };
        self.records.validate(&params).map_err(Denied::Invalid)?;
        let record = self
            .records
            .save(&seat.id, params)
            .await
            .ok_or(Denied::NotFound)?;
        if let Some(session) = self.sessions.lock().get_mut(&seat.id) {
            session.form = None;
            session.version += 1;
        }
        Ok(record)
    }

    /// Deletes the record on the owner's request. The other editors are told to
    /// close when the returned [`Closing`] is dropped: announce the deletion first.
    pub async fn delete(&self, seat: &Seat) -> Result<Closing, Denied> {
        if !self.sessions.is_owner(&seat.id, seat.seq) {
            return Err(Denied::NotOwner);
        }
        if !self.records.delete(&seat.id).await {
            return Err(Denied::NotFound);
        }
        let others: Vec<Notify> =
            self.sessions
                .lock()
                .remove(&seat.id)
                .map_or_else(Vec::new, |s| {
                    s.line
                        .into_iter()
                        .filter(|p| p.seq != seat.seq)
                        .map(|p| p.notify)
                        .collect()
                });
        Ok(Closing(others))
    }

    /// Validates and creates a record.
    pub async fn create(&self, params: Value) -> Result<Record, Denied> {
        let Value::Object(params) = params else {
            return Err(Denied::BadRequest);
        };
        self.records.validate(&params).map_err(Denied::Invalid)?;
        self.records.create(params).await.ok_or(Denied::BadRequest)
    }
}

fn params_of(payload: &Payload) -> Value {
    payload
        .parse::<Value>()
        .map(|mut v| v["params"].take())
        .unwrap_or(Value::Null)
}

fn record_id_of(record: &Record) -> Value {
    record.get("id").cloned().unwrap_or(Value::Null)
}

fn reply<I: Send + 'static>(
    result: Result<Value, Denied>,
    ctx: &ChannelContext<I>,
    event: &str,
) -> HandleIn {
    match result {
        Ok(response) => HandleIn::ok(response),
        Err(denied) => {
            match &denied {
                Denied::BadRequest => {
                    tracing::warn!(topic = %ctx.topic(), %event, "malformed editing request refused")
                }
                other => {
                    tracing::debug!(topic = %ctx.topic(), %event, ?other, "editing request refused")
                }
            }
            HandleIn::error(denied.to_payload())
        }
    }
}

/// The channel of one editor on `edit:<kind>:<id>`.
pub struct EditorChannel<R> {
    editing: Editing<R>,
    seat: Option<Seat>,
    /// The form's version when the join read it.
    joined_version: u64,
}

impl<R: Records> Channel for EditorChannel<R> {
    type Info = Notice;

    async fn join(
        &mut self,
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<Notice>,
    ) -> Result<Payload, Payload> {
        let not_found = || Denied::NotFound.to_payload();
        let id = self.editing.record_id(topic).ok_or_else(not_found)?;
        let params = payload.parse::<Value>().unwrap_or(Value::Null);
        let editor = Editor::from_join(&params, ctx.channel_id());
        let handle = ctx.handle();
        let topic_name = topic.to_owned();
        let notify: Notify = Arc::new(move |notice| {
            if let Err(err) = handle.send(notice) {
                tracing::warn!(topic = %topic_name, %err, "editing notice not delivered");
            }
        });
        let opened = self
            .editing
            .open(id, editor, notify)
            .await
            .map_err(|denied| denied.to_payload())?;
        self.joined_version = opened.version;
        self.seat = Some(opened.seat);
        Ok(Payload::from(json!({
            "role": opened.role.as_str(),
            "owner": opened.owner,
            "form": opened.form,
            "record": opened.record,
            "meta": opened.meta,
        })))
    }

    async fn after_join(&mut self, ctx: &mut ChannelContext<Notice>) -> Result<Flow, RuntimeError> {
        let Some(seat) = &self.seat else {
            return Ok(Flow::Stop);
        };
        let meta = self
            .editing
            .editors(seat.id())
            .into_iter()
            .find(|m| m["seq"] == seat.seq())
            .unwrap_or(Value::Null);
        ctx.track(seat.key(), meta)?;
        let state = ctx.presence_list()?;
        ctx.push("presence_state", state)?;
        // A change made between the join and the subscription was missed.
        let (form, version) = self.editing.form(seat.id());
        if version != self.joined_version {
            let by = self
                .editing
                .editors(seat.id())
                .first()
                .map(|m| m["key"].clone());
            ctx.push("form_change", json!({"params": form, "by": by}))?;
        }
        Ok(Flow::Continue)
    }

    async fn handle_info(
        &mut self,
        notice: Notice,
        ctx: &mut ChannelContext<Notice>,
    ) -> Result<Flow, RuntimeError> {
        match notice {
            Notice::Promoted { owner } => {
                ctx.push("role", json!({"role": "owner", "owner": owner}))?;
                Ok(Flow::Continue)
            }
            Notice::Closed => Ok(Flow::Stop),
        }
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
        match event {
            "form_change" => {
                let params = params_of(&payload);
                let changed = editing.form_change(seat, params.clone()).map(|_| {
                    let _ = ctx
                        .broadcast_from("form_change", json!({"params": params, "by": seat.key()}));
                    json!({})
                });
                Ok(reply(changed, ctx, event))
            }
            "save" => {
                let saved = editing.save(seat, params_of(&payload)).await;
                if let Ok(record) = &saved {
                    ctx.broadcast("saved", json!({"record": record}))?;
                    ctx.pubsub().broadcast(
                        &editing.events_topic(),
                        "updated",
                        Payload::from(json!({"id": record_id_of(record), "record": record})),
                    );
                }
                Ok(reply(
                    saved.map(|record| json!({"record": record})),
                    ctx,
                    event,
                ))
            }
            "delete" => match editing.delete(seat).await {
                Ok(closing) => {
                    // The reply first, then the events, then phx_close.
                    ctx.reply_ref().reply("ok", Payload::empty_object())?;
                    let deleted = json!({"id": seat.id()});
                    ctx.broadcast("deleted", deleted.clone())?;
                    ctx.pubsub().broadcast(
                        &editing.events_topic(),
                        "deleted",
                        Payload::from(deleted),
                    );
                    drop(closing);
                    Ok(HandleIn::Stop(None))
                }
                Err(denied) => Ok(reply(Err(denied), ctx, event)),
            },
            _ => {
                tracing::warn!(topic = %ctx.topic(), %event, "unknown editing event");
                Ok(HandleIn::error(json!({"reason": "unknown_event"})))
            }
        }
    }
}

/// The channel of `events:<kind>`: the list of records and their lifecycle events.
pub struct EventsChannel<R> {
    editing: Editing<R>,
}

impl<R: Records> Channel for EventsChannel<R> {
    type Info = ();

    async fn join(
        &mut self,
        _topic: &str,
        _payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        let records = self.editing.records.list().await;
        Ok(Payload::from(json!({"records": records})))
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        match event {
            "create" => {
                let created = self.editing.create(params_of(&payload)).await;
                if let Ok(record) = &created {
                    ctx.broadcast(
                        "created",
                        json!({"id": record_id_of(record), "record": record}),
                    )?;
                }
                Ok(reply(
                    created.map(|record| json!({"record": record})),
                    ctx,
                    event,
                ))
            }
            _ => {
                tracing::warn!(topic = %ctx.topic(), %event, "unknown events event");
                Ok(HandleIn::error(json!({"reason": "unknown_event"})))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Default)]
    struct Mem(StdMutex<BTreeMap<String, Record>>);

    impl Records for Mem {
        async fn load(&self, id: &str) -> Option<Record> {
            self.0.lock().ok()?.get(id).cloned()
        }
        fn validate(&self, params: &Record) -> Result<(), FieldErrors> {
            match params.get("title").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => Ok(()),
                _ => Err(BTreeMap::from([(
                    "title".to_owned(),
                    vec!["can't be blank".to_owned()],
                )])),
            }
        }
        async fn save(&self, id: &str, mut params: Record) -> Option<Record> {
            params.insert("id".into(), id.into());
            self.0.lock().ok()?.insert(id.to_owned(), params.clone());
            Some(params)
        }
        async fn delete(&self, id: &str) -> bool {
            self.0.lock().is_ok_and(|mut m| m.remove(id).is_some())
        }
        async fn list(&self) -> Vec<Record> {
            Vec::new()
        }
        async fn create(&self, params: Record) -> Option<Record> {
            Some(params)
        }
    }

    fn editing() -> Editing<Mem> {
        let mem = Mem::default();
        if let Ok(mut m) = mem.0.lock() {
            m.insert(
                "1".into(),
                json!({"id": "1", "title": "t"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        Editing::new("doc", mem)
    }

    fn recorder() -> (Notify, Arc<StdMutex<Vec<Notice>>>) {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let sink = seen.clone();
        (
            Arc::new(move |n| sink.lock().unwrap_or_else(|e| e.into_inner()).push(n)),
            seen,
        )
    }

    fn user(key: &str) -> Editor {
        Editor::from_join(&json!({"user": {"id": key, "name": key}}), 0)
    }

    #[tokio::test]
    async fn first_owns_next_is_promoted_once_and_form_survives() {
        let e = editing();
        let (n1, seen1) = recorder();
        let (n2, seen2) = recorder();
        let (n3, seen3) = recorder();
        let a = e.open("1", user("ann"), n1).await.unwrap();
        let b = e.open("1", user("bob"), n2).await.unwrap();
        let c = e.open("1", user("ann"), n3).await.unwrap();
        assert_eq!(
            (a.role, b.role, c.role),
            (Role::Owner, Role::Spectator, Role::Spectator)
        );
        assert_eq!(b.owner["key"], "ann");
        assert_eq!(
            e.form_change(&b.seat, json!({"title": "x"})),
            Err(Denied::NotOwner)
        );
        e.form_change(&a.seat, json!({"title": "draft"})).unwrap();
        drop(a.seat);
        assert_eq!(seen2.lock().unwrap().len(), 1, "bob is promoted");
        assert!(seen1.lock().unwrap().is_empty());
        assert!(seen3.lock().unwrap().is_empty(), "nobody else is told");
        assert_eq!(e.form("1").0, json!({"title": "draft"}));
        drop(c.seat);
        assert_eq!(
            seen2.lock().unwrap().len(),
            1,
            "a spectator leaving changes nothing"
        );
        assert!(matches!(
            e.save(&b.seat, json!({"title": ""})).await,
            Err(Denied::Invalid(errors)) if errors.contains_key("title")
        ));
        let saved = e.save(&b.seat, json!({"title": "new"})).await.unwrap();
        assert_eq!(saved["id"], "1");
        assert_eq!(e.form("1").0, Value::Null);
    }

    #[tokio::test]
    async fn delete_closes_the_others_and_unknown_ids_are_not_found() {
        let e = editing();
        let (n1, _) = recorder();
        let (n2, seen2) = recorder();
        let a = e.open("1", user("ann"), n1).await.unwrap();
        let _b = e
            .open("1", Editor::from_join(&json!({}), 7), n2)
            .await
            .unwrap();
        let closing = e.delete(&a.seat).await.unwrap();
        assert!(
            seen2.lock().unwrap().is_empty(),
            "told only when closing drops"
        );
        drop(closing);
        assert_eq!(*seen2.lock().unwrap(), vec![Notice::Closed]);
        let (n3, _) = recorder();
        assert!(matches!(
            e.open("1", user("cy"), n3).await,
            Err(Denied::NotFound)
        ));
    }

    #[test]
    fn anonymous_editors_get_a_key_per_connection() {
        let a = Editor::from_join(&json!({"user": {"name": "x"}}), 1);
        let b = Editor::from_join(&json!(null), 2);
        assert_ne!(a.key, b.key);
        assert_eq!(a.user_id, None);
        assert_eq!(Editor::from_join(&json!({"user": {"id": 5}}), 3).key, "5");
    }
}
