//! Collaborative editing of records: one editing session per record, an owner who
//! may edit and spectators who watch the owner's unsaved changes live.
//!
//! An application plugs its records in by implementing [`Records`] (load,
//! validate, save, delete, list, create) and mounts an [`Editing`] per kind of
//! record on its endpoint. It then gets the whole wire contract of
//! `protocol-spec/editing.md`: topics `edit:<kind>:<id>` (roles, live form state,
//! save, delete, promotion of the next editor when the owner leaves) and
//! `events:<kind>` (the list of records and their created / updated / deleted
//! events), on one node or across a cluster.
//!
//! The session of a record is one shared state per node, not something each
//! channel recomputes from presence diffs: every editor's channel takes a seat on
//! join (joined_at from the server clock, the node's id and a sequence that break
//! ties) and its [`Seat`] gives the seat back when dropped — with the channel,
//! however the channel ends (leave, crash, socket closed, abort). The first seat
//! in line is the owner; when it is given back, the next one is told at once.
//!
//! In a cluster the line also holds the other nodes' editors: the session
//! follows its record's topic (their presence diffs, their owner's form changes)
//! and, when it starts, asks the owner's node for the unsaved form over an
//! internal topic. Every node orders the line by `(joined_at, node, seq)` and so
//! agrees on the owner.
//!
//! The code that talks to the [`Channel`] trait is the two small types at the end
//! of this file ([`EditorChannel`], [`EventsChannel`]); everything above them is
//! plain session logic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use phx_protocol::{Broadcast, Payload};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::pubsub::{PubSub, Subscription};
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
    /// The event is not part of the contract: `{"reason": "unknown_event"}`.
    UnknownEvent,
}

impl Denied {
    /// The reply payload.
    pub fn to_payload(&self) -> Payload {
        Payload::from(match self {
            Denied::Invalid(errors) => json!({"errors": errors}),
            other => json!({"reason": other.reason()}),
        })
    }

    /// A short name for logs and metrics: `not_found`, `not_owner`, `invalid`,
    /// `bad_request` or `unknown_event`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::NotFound => "not_found",
            Denied::NotOwner => "not_owner",
            Denied::Invalid(_) => "invalid",
            Denied::BadRequest => "bad_request",
            Denied::UnknownEvent => "unknown_event",
        }
    }
}

/// How many requests were refused, per reason, since the [`Editing`] was made.
#[derive(Debug, Default)]
struct Refusals([AtomicU64; 5]);

impl Refusals {
    const REASONS: [&'static str; 5] = [
        "not_found",
        "not_owner",
        "invalid",
        "bad_request",
        "unknown_event",
    ];

    fn count(&self, denied: &Denied) {
        let i = Self::REASONS
            .iter()
            .position(|r| *r == denied.reason())
            .unwrap_or(0);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Self::REASONS
            .iter()
            .zip(&self.0)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
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
    /// the editor is anonymous and its key is `anonymous:<connection>`, so
    /// `connection` must be unique among the record's editors (the channel
    /// passes its node's id and its channel id, unique cluster-wide).
    ///
    /// ```
    /// use phx_runtime::editing::Editor;
    /// let params = serde_json::json!({"user": {"name": "Ann"}});
    /// let ann = Editor::from_join(&params, "node1:7");
    /// assert_eq!((ann.key.as_str(), ann.user_id), ("anonymous:node1:7", None));
    /// ```
    pub fn from_join(params: &Value, connection: &str) -> Editor {
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
    /// In a cluster only: an editor on another node turned out to be ahead in
    /// line (both joined before either heard of the other); `owner` is its meta.
    Demoted {
        /// The owner's meta.
        owner: Value,
    },
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

/// One editor's place in a session's line, on this node or another.
struct Place {
    joined_at: u64,
    node: Arc<str>,
    seq: u64,
    meta: Value,
    /// How to reach the editor: `Some` for this node's editors only.
    notify: Option<Notify>,
}

impl Place {
    /// The line's order, the same on every node: `(joined_at, node, seq)`.
    fn order(&self) -> (u64, &str, u64) {
        (self.joined_at, &self.node, self.seq)
    }

    /// A place read from a presence meta; `None` when the meta is not an editor's.
    fn remote(meta: &Value) -> Option<Place> {
        let mut meta = meta.as_object()?.clone();
        meta.remove("phx_ref");
        meta.remove("phx_ref_prev");
        Some(Place {
            joined_at: meta.get("joined_at")?.as_u64()?,
            node: meta.get("node")?.as_str()?.into(),
            seq: meta.get("seq")?.as_u64()?,
            meta: Value::Object(meta),
            notify: None,
        })
    }
}

/// The session of one record on this node: the whole line (this node's editors
/// and, in a cluster, the others') and the owner's unsaved params.
#[derive(Default)]
struct Session {
    /// In line order: `(joined_at, node, seq)`.
    line: Vec<Place>,
    form: Option<Value>,
    /// Bumped on every change of `form`.
    version: u64,
    /// A form request to the other nodes waits for its answer.
    waiting: Option<oneshot::Sender<()>>,
    /// A form change of another node was heard while the request waited.
    heard: bool,
    /// The follower fell behind and may have missed other nodes' presence
    /// changes: the next editor to open the record here resyncs the line.
    stale: bool,
    /// Other nodes' owners that said they left before their presence leave
    /// arrived (a late presence join of theirs must not bring them back).
    gone: VecDeque<(Arc<str>, u64)>,
    /// Where this node says its owner left; set when the session starts.
    pubsub: Option<PubSub>,
    /// The task following the record's topics (presence, other nodes' changes).
    follower: Option<AbortHandle>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.follower.take() {
            task.abort();
        }
    }
}

type Told = Vec<(Notify, Notice)>;

impl Session {
    /// The identity `(node, seq)` of the first in line.
    fn first(&self) -> Option<(Arc<str>, u64)> {
        self.line.first().map(|p| (p.node.clone(), p.seq))
    }

    fn is_first(&self, node: &str, seq: u64) -> bool {
        self.line
            .first()
            .is_some_and(|p| &*p.node == node && p.seq == seq)
    }

    fn owner_is_local(&self) -> bool {
        self.line.first().is_some_and(|p| p.notify.is_some())
    }

    fn has_local(&self) -> bool {
        self.line.iter().any(|p| p.notify.is_some())
    }

    fn insert(&mut self, place: Place) {
        if self
            .line
            .iter()
            .any(|p| p.node == place.node && p.seq == place.seq)
        {
            return;
        }
        let at = self.line.partition_point(|p| p.order() < place.order());
        self.line.insert(at, place);
    }

    fn remove(&mut self, node: &str, seq: u64) {
        self.line.retain(|p| !(&*p.node == node && p.seq == seq));
    }

    /// Who must be told after the line changed from one whose first was `before`:
    /// a local editor that became first is promoted; a local owner that is no
    /// longer first (another node's editor sorted ahead) is demoted.
    fn tell(&self, before: Option<(Arc<str>, u64)>) -> Told {
        let mut told = Told::new();
        let Some(first) = self.line.first() else {
            return told;
        };
        if before.as_ref() == Some(&(first.node.clone(), first.seq)) {
            return told;
        }
        if let Some(notify) = &first.notify {
            told.push((
                notify.clone(),
                Notice::Promoted {
                    owner: first.meta.clone(),
                },
            ));
        }
        if let Some((node, seq)) = before {
            let demoted = self.line.iter().find(|p| p.node == node && p.seq == seq);
            if let Some(notify) = demoted.and_then(|p| p.notify.as_ref()) {
                told.push((
                    notify.clone(),
                    Notice::Demoted {
                        owner: first.meta.clone(),
                    },
                ));
            }
        }
        told
    }

    /// Makes the other nodes' places those of a presence list (`key → {metas}`).
    fn sync_remote(&mut self, me: &str, list: &Value) {
        self.line.retain(|p| &*p.node == me);
        for place in metas(list).filter_map(Place::remote) {
            if &*place.node != me {
                self.insert(place);
            }
        }
    }

    /// Applies another node's presence changes (a `presence_diff` payload).
    fn apply_diff(&mut self, me: &str, diff: &Value) {
        for place in metas(&diff["leaves"]).filter_map(Place::remote) {
            if &*place.node != me {
                self.remove(&place.node, place.seq);
                self.gone
                    .retain(|(node, seq)| !(*node == place.node && *seq == place.seq));
            }
        }
        for place in metas(&diff["joins"]).filter_map(Place::remote) {
            let gone = self
                .gone
                .iter()
                .any(|(node, seq)| *node == place.node && *seq == place.seq);
            if &*place.node != me && !gone {
                self.insert(place);
            }
        }
    }

    /// Another node's owner left (said at once by its node, ahead of the
    /// presence leave, which comes with the tracker's next heartbeat).
    fn owner_left(&mut self, node: &str, seq: u64) {
        self.remove(node, seq);
        if self.gone.len() == GONE_KEPT {
            self.gone.pop_front();
        }
        self.gone.push_back((node.into(), seq));
    }
}

/// Every meta of a presence list or diff half (`key → {"metas": [...]}`).
fn metas(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|entry| entry["metas"].as_array())
        .flatten()
}

fn tell(told: Told) {
    for (notify, notice) in told {
        notify(notice);
    }
}

/// How many owners that left early a session remembers (see `Session::gone`).
const GONE_KEPT: usize = 64;

/// How many broadcasts of a record's topics may wait for its session's follower.
const FOLLOW_CAPACITY: usize = 4096;

/// How long a new session waits for the owner's node to send the unsaved form.
const FORM_WAIT: Duration = Duration::from_millis(500);

/// Every session of one kind on this node, keyed by record id.
struct Sessions {
    kind: Arc<str>,
    /// This node's id in editors' metas: random, so unique across a cluster.
    node: Arc<str>,
    seq: AtomicU64,
    by_id: Mutex<HashMap<String, Session>>,
    refusals: Refusals,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn edit_topic(&self, id: &str) -> String {
        format!("edit:{}:{id}", self.kind)
    }

    /// The internal topic where the nodes' sessions of a record ask each other
    /// for the unsaved form (no client can join it: `edit:` and `events:` are
    /// the only topics the kind routes).
    fn sync_topic(&self, id: &str) -> String {
        format!("phx_editing:{}:{id}", self.kind)
    }

    /// Removes a local place; tells the next in line when the owner left. The
    /// session ends with its last local editor.
    fn leave(&self, id: &str, seq: u64) {
        let (told, say) = {
            let mut sessions = self.lock();
            let Some(session) = sessions.get_mut(id) else {
                return;
            };
            let before = session.first();
            let was_owner = session.is_first(&self.node, seq);
            session.remove(&self.node, seq);
            // The other nodes hear of an owner leaving at once, not only with
            // the presence leave of the tracker's next heartbeat.
            let others_waiting = session.line.iter().any(|p| p.notify.is_none());
            let say = (was_owner && others_waiting)
                .then(|| session.pubsub.clone())
                .flatten();
            if session.has_local() {
                (session.tell(before), say)
            } else {
                sessions.remove(id);
                (Told::new(), say)
            }
        };
        tell(told);
        if let Some(pubsub) = say {
            pubsub.broadcast(
                &self.sync_topic(id),
                "left",
                Payload::from(json!({"node": &*self.node, "seq": seq})),
            );
        }
    }

    fn is_owner(&self, id: &str, seq: u64) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|s| s.is_first(&self.node, seq))
    }

    /// A broadcast on the record's topic or its internal topic, as the session's
    /// follower sees it. Changes this node made itself are already applied.
    fn follow(&self, id: &str, b: &Broadcast, pubsub: &PubSub) {
        let payload = b.payload.parse::<Value>().unwrap_or(Value::Null);
        let mut answer = None;
        let told = {
            let mut sessions = self.lock();
            let Some(session) = sessions.get_mut(id) else {
                return;
            };
            let before = session.first();
            match b.event.as_str() {
                "presence_diff" => session.apply_diff(&self.node, &payload),
                // The owner's node applied its own change already; another
                // node's owner's change is applied here, in publish order.
                "form_change" if !session.owner_is_local() => {
                    session.form = Some(payload["params"].clone());
                    session.version += 1;
                    session.heard = true;
                }
                "saved" if !session.owner_is_local() => {
                    session.form = None;
                    session.version += 1;
                    session.heard = true;
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
                    if let Some(waiter) = session.waiting.take() {
                        if !session.heard {
                            session.form = Some(payload["form"].clone()).filter(|f| !f.is_null());
                            session.version += 1;
                        }
                        let _ = waiter.send(());
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
async fn follow(
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
                    session.stale = true;
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

    /// The server-assigned sequence of this seat (unique per kind and node).
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
    /// This connection's presence meta (`key`, `name`, `joined_at`, `node`,
    /// `seq`, `user_id`).
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

/// A random id for this node's editors: unique across a cluster in practice.
fn node_id() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

/// The editing sessions of one kind of record, backed by the application's
/// [`Records`]. Cheap to clone: clones share the sessions.
pub struct Editing<R> {
    records: Arc<R>,
    sessions: Arc<Sessions>,
}

impl<R> Clone for Editing<R> {
    fn clone(&self) -> Self {
        Editing {
            records: self.records.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

impl<R: Records> Editing<R> {
    /// Sessions for records of `kind` (the `<kind>` of `edit:<kind>:<id>`).
    pub fn new(kind: &str, records: R) -> Editing<R> {
        Editing {
            records: Arc::new(records),
            sessions: Arc::new(Sessions {
                kind: kind.into(),
                node: node_id(),
                seq: AtomicU64::new(0),
                by_id: Mutex::default(),
                refusals: Refusals::default(),
            }),
        }
    }

    /// Routes `edit:<kind>:*` and `events:<kind>` of `builder` to this kind.
    pub fn mount(&self, builder: EndpointBuilder) -> EndpointBuilder {
        let (edit, events) = (self.clone(), self.clone());
        builder
            .channel(&format!("edit:{}:*", self.kind()), move |_, _| {
                EditorChannel {
                    editing: edit.clone(),
                    seat: None,
                    meta: Value::Null,
                    joined_version: 0,
                }
            })
            .channel(&self.events_topic(), move |_, _| EventsChannel {
                editing: events.clone(),
            })
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.sessions.kind
    }

    /// The application's records.
    pub fn records(&self) -> &R {
        &self.records
    }

    /// Requests refused so far, per reason (`not_found`, `not_owner`,
    /// `invalid`, `bad_request`, `unknown_event`), for metrics.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.sessions.refusals.snapshot()
    }

    /// Counts (and logs) a refused request.
    fn refused(&self, topic: &str, event: &str, denied: &Denied) {
        self.sessions.refusals.count(denied);
        match denied {
            Denied::BadRequest | Denied::UnknownEvent => {
                tracing::warn!(%topic, %event, reason = denied.reason(), "malformed editing request refused")
            }
            other => {
                tracing::debug!(%topic, %event, reason = other.reason(), "editing request refused")
            }
        }
    }

    /// `events:<kind>`, where lifecycle events go.
    pub fn events_topic(&self) -> String {
        format!("events:{}", self.kind())
    }

    /// The record id of an `edit:<kind>:<id>` topic.
    pub fn record_id<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic
            .strip_prefix("edit:")?
            .strip_prefix(self.kind())?
            .strip_prefix(':')
            .filter(|id| !id.is_empty())
    }

    /// The metas of a record's editors on every node this one knows, owner first.
    pub fn editors(&self, id: &str) -> Vec<Value> {
        self.sessions.lock().get(id).map_or_else(Vec::new, |s| {
            s.line.iter().map(|p| p.meta.clone()).collect()
        })
    }

    /// Opens a record for an editor: takes a place in line and answers with the
    /// role, the owner, the unsaved form and the saved record.
    ///
    /// `pubsub` carries the session's traffic with other nodes and `presence`
    /// reads the record topic's presence list (`key → {"metas": [...]}`), where
    /// other nodes' editors are found; on one node it may give an empty
    /// object. It is read once per session, under the session's lock right
    /// after the session subscribed to the topic, so that no change falls
    /// between the list and the diffs that follow it. The first editor of a
    /// record on this node whose line already has editors elsewhere asks the
    /// owner's node for the unsaved form (waiting at most half a second).
    pub async fn open(
        &self,
        id: &str,
        editor: Editor,
        notify: Notify,
        pubsub: &PubSub,
        presence: &(dyn Fn() -> Value + Sync),
    ) -> Result<Opened, Denied> {
        let record = self.records.load(id).await.ok_or(Denied::NotFound)?;
        let me = self.sessions.node.clone();
        let (seq, meta, told, waiter) = {
            let mut sessions = self.sessions.lock();
            let created = !sessions.contains_key(id);
            let session = sessions.entry(id.to_owned()).or_default();
            if created {
                let edit = pubsub.subscribe(&self.sessions.edit_topic(id), FOLLOW_CAPACITY);
                let sync = pubsub.subscribe(&self.sessions.sync_topic(id), FOLLOW_CAPACITY);
                let task = tokio::spawn(follow(
                    Arc::downgrade(&self.sessions),
                    id.to_owned(),
                    pubsub.clone(),
                    edit,
                    sync,
                ));
                session.follower = Some(task.abort_handle());
                session.pubsub = Some(pubsub.clone());
            }
            let before = session.first();
            if created || std::mem::take(&mut session.stale) {
                session.sync_remote(&me, &presence());
            }
            let told = session.tell(before);
            let seq = self.sessions.seq.fetch_add(1, Ordering::Relaxed) + 1;
            // The server clock, but never ahead of someone already in line
            // (another node's clock may run ahead of this one's).
            let mut joined_at = now_ms();
            if let Some(last) = session.line.last() {
                if (joined_at, &*me, seq) < last.order() {
                    joined_at = last.joined_at + u64::from(*me < *last.node);
                }
            }
            let meta = json!({
                "key": editor.key,
                "name": editor.name,
                "joined_at": joined_at,
                "node": &*me,
                "seq": seq,
                "user_id": editor.user_id,
            });
            session.insert(Place {
                joined_at,
                node: me.clone(),
                seq,
                meta: meta.clone(),
                notify: Some(notify),
            });
            let waiter = if created && session.line.len() > 1 {
                let (tx, rx) = oneshot::channel();
                session.waiting = Some(tx);
                session.heard = false;
                Some(rx)
            } else {
                None
            };
            (seq, meta, told, waiter)
        };
        tell(told);
        let seat = Seat {
            sessions: self.sessions.clone(),
            id: id.to_owned(),
            seq,
            key: editor.key,
        };
        if let Some(waiter) = waiter {
            pubsub.broadcast(
                &self.sessions.sync_topic(id),
                "form?",
                Payload::from(json!({"from": &*me})),
            );
            if tokio::time::timeout(FORM_WAIT, waiter).await.is_err() {
                tracing::warn!(kind = %self.kind(), record = %id, "no node answered with the unsaved form");
            }
        }
        let sessions = self.sessions.lock();
        let session = sessions.get(id).ok_or(Denied::NotFound)?;
        let owner = session.line.first().map_or(Value::Null, |p| p.meta.clone());
        let role = if session.is_first(&me, seq) {
            Role::Owner
        } else {
            Role::Spectator
        };
        let (form, version) = (session.form.clone().unwrap_or(Value::Null), session.version);
        drop(sessions);
        Ok(Opened {
            seat,
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
        if !session.is_first(&self.sessions.node, seat.seq) {
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

    /// Deletes the record on the owner's request and ends its session here
    /// without promoting anyone. The caller announces the deletion with a
    /// `deleted` broadcast on the record's topic, which closes every editor's
    /// channel on every node.
    pub async fn delete(&self, seat: &Seat) -> Result<(), Denied> {
        if !self.sessions.is_owner(&seat.id, seat.seq) {
            return Err(Denied::NotOwner);
        }
        if !self.records.delete(&seat.id).await {
            return Err(Denied::NotFound);
        }
        self.end(&seat.id);
        Ok(())
    }

    /// Ends a record's session on this node without promoting anyone (the
    /// record is gone).
    fn end(&self, id: &str) {
        let session = self.sessions.lock().remove(id);
        drop(session);
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

impl<R: Records> Editing<R> {
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

/// The channel of one editor on `edit:<kind>:<id>`.
pub struct EditorChannel<R> {
    editing: Editing<R>,
    seat: Option<Seat>,
    /// This connection's presence meta.
    meta: Value,
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
        let refuse = |denied: Denied| {
            self.editing.refused(topic, "phx_join", &denied);
            denied.to_payload()
        };
        let Some(id) = self.editing.record_id(topic) else {
            return Err(refuse(Denied::NotFound));
        };
        let params = payload.parse::<Value>().unwrap_or(Value::Null);
        let connection = format!("{}:{}", self.editing.sessions.node, ctx.channel_id());
        let editor = Editor::from_join(&params, &connection);
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
        self.joined_version = opened.version;
        self.meta = opened.meta.clone();
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
        ctx.track(seat.key(), self.meta.clone())?;
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

    /// `deleted`, from the owner on any node: the client sees it, then the
    /// channel closes (`phx_close`) without promoting anyone.
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
                let saved = editing.save(seat, params_of(&payload)).await;
                if let Ok(record) = &saved {
                    ctx.broadcast("saved", json!({"record": record}))?;
                    ctx.pubsub().broadcast(
                        &editing.events_topic(),
                        "updated",
                        Payload::from(json!({"id": record_id_of(record), "record": record})),
                    );
                }
                Ok(editing.reply(saved.map(|record| json!({"record": record})), ctx, event))
            }
            "delete" => match editing.delete(seat).await {
                Ok(()) => {
                    // The reply first, then the events, then phx_close; the
                    // other editors (on every node) close on the broadcast.
                    ctx.reply_ref().reply("ok", Payload::empty_object())?;
                    let deleted = json!({"id": seat.id()});
                    ctx.push("deleted", deleted.clone())?;
                    ctx.broadcast_from("deleted", deleted.clone())?;
                    ctx.pubsub().broadcast(
                        &editing.events_topic(),
                        "deleted",
                        Payload::from(deleted),
                    );
                    Ok(HandleIn::Stop(None))
                }
                Err(denied) => Ok(editing.reply(Err(denied), ctx, event)),
            },
            _ => Ok(editing.reply(Err(Denied::UnknownEvent), ctx, event)),
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
        let created = match event {
            "create" => self.editing.create(params_of(&payload)).await,
            _ => Err(Denied::UnknownEvent),
        };
        if let Ok(record) = &created {
            ctx.broadcast(
                "created",
                json!({"id": record_id_of(record), "record": record}),
            )?;
        }
        Ok(self
            .editing
            .reply(created.map(|record| json!({"record": record})), ctx, event))
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
        Editor::from_join(&json!({"user": {"id": key, "name": key}}), "n:0")
    }

    /// Opens `id` on one node (no other node's editors known).
    async fn open(e: &Editing<Mem>, editor: Editor, notify: Notify) -> Result<Opened, Denied> {
        e.open("1", editor, notify, &PubSub::new(), &|| json!({}))
            .await
    }

    #[tokio::test]
    async fn first_owns_next_is_promoted_once_and_form_survives() {
        let e = editing();
        let (n1, seen1) = recorder();
        let (n2, seen2) = recorder();
        let (n3, seen3) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        let b = open(&e, user("bob"), n2).await.unwrap();
        let c = open(&e, user("ann"), n3).await.unwrap();
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
    async fn delete_ends_the_session_without_promotion_and_unknown_ids_are_not_found() {
        let e = editing();
        let (n1, _) = recorder();
        let (n2, seen2) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        let b = open(&e, Editor::from_join(&json!({}), "n:7"), n2)
            .await
            .unwrap();
        e.delete(&a.seat).await.unwrap();
        drop(a.seat);
        drop(b.seat);
        assert!(
            seen2.lock().unwrap().is_empty(),
            "nobody is promoted on a deleted record"
        );
        let (n3, _) = recorder();
        assert!(matches!(
            open(&e, user("cy"), n3).await,
            Err(Denied::NotFound)
        ));
    }

    fn diff(half: &str, meta: Value) -> Broadcast {
        Broadcast::new(
            "edit:doc:1",
            "presence_diff",
            Payload::from(json!({half: {meta["key"].as_str().unwrap_or("k"): {"metas": [meta]}}})),
        )
    }

    #[tokio::test]
    async fn the_line_is_ordered_by_joined_at_node_seq_across_nodes() {
        let e = editing();
        let pubsub = PubSub::new();
        let (n1, seen1) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        assert_eq!(a.role, Role::Owner);
        assert_eq!(a.meta["node"], json!(&*e.sessions.node));
        // Another node's editor who joined in the same millisecond: its node id
        // ("!" sorts before every hex digit) puts it first on every node.
        let remote = json!({"key": "zed", "name": "Zed", "joined_at": a.meta["joined_at"],
                            "node": "!", "seq": 99, "user_id": "zed", "phx_ref": "r1"});
        e.sessions
            .follow("1", &diff("joins", remote.clone()), &pubsub);
        let owner = e.editors("1")[0].clone();
        assert_eq!(
            (owner["key"].clone(), owner.get("phx_ref")),
            (json!("zed"), None)
        );
        assert_eq!(
            *seen1.lock().unwrap(),
            vec![Notice::Demoted {
                owner: owner.clone()
            }],
            "the local owner learns it is behind"
        );
        assert_eq!(
            e.form_change(&a.seat, json!({"title": "x"})),
            Err(Denied::NotOwner)
        );
        // The remote owner types: this node keeps its form.
        let typed = Broadcast::new(
            "edit:doc:1",
            "form_change",
            Payload::from(json!({"params": {"title": "remote draft"}, "by": "zed"})),
        );
        e.sessions.follow("1", &typed, &pubsub);
        assert_eq!(e.form("1").0, json!({"title": "remote draft"}));
        // Its node goes (leave diff): ann is owner again, and continues from the form.
        e.sessions.follow("1", &diff("leaves", remote), &pubsub);
        assert_eq!(seen1.lock().unwrap().len(), 2);
        assert!(matches!(
            &seen1.lock().unwrap()[1],
            Notice::Promoted { owner } if owner["key"] == "ann"
        ));
        e.form_change(&a.seat, json!({"title": "mine"})).unwrap();
        // A later joiner on this node never sorts before those already in line,
        // even when another node's clock runs ahead.
        let ahead = json!({"key": "fut", "name": "F", "joined_at": now_ms() + 60_000,
                           "node": "~", "seq": 1, "user_id": "fut"});
        e.sessions.follow("1", &diff("joins", ahead), &pubsub);
        let (n2, _) = recorder();
        // The session exists: the presence list is not read again.
        let b = e
            .open("1", user("bob"), n2, &pubsub, &|| json!({}))
            .await
            .unwrap();
        let line: Vec<Value> = e.editors("1").iter().map(|m| m["key"].clone()).collect();
        assert_eq!(line, vec![json!("ann"), json!("fut"), json!("bob")]);
        assert_eq!(b.role, Role::Spectator);
    }

    #[tokio::test]
    async fn an_owner_that_says_it_left_is_not_brought_back_by_a_late_presence_join() {
        let e = editing();
        let pubsub = PubSub::new();
        let (n1, seen1) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        let zed = json!({"key": "zed", "name": "Zed", "joined_at": 1, "node": "other",
                         "seq": 4, "user_id": "zed"});
        e.sessions.follow("1", &diff("joins", zed.clone()), &pubsub);
        assert_eq!(e.editors("1")[0]["key"], "zed");
        let left = Broadcast::new(
            "phx_editing:doc:1",
            "left",
            Payload::from(json!({"node": "other", "seq": 4})),
        );
        e.sessions.follow("1", &left, &pubsub);
        assert!(matches!(
            seen1.lock().unwrap().last(),
            Some(Notice::Promoted { owner }) if owner["key"] == "ann"
        ));
        // Its presence join, late (a resync, say), does not bring it back...
        e.sessions.follow("1", &diff("joins", zed.clone()), &pubsub);
        assert_eq!(e.editors("1").len(), 1);
        // ...and its presence leave is the last word.
        e.sessions.follow("1", &diff("leaves", zed), &pubsub);
        assert!(e
            .sessions
            .lock()
            .get("1")
            .is_some_and(|s| s.gone.is_empty()));
        assert!(e.form_change(&a.seat, json!({"title": "t"})).is_ok());
    }

    #[tokio::test]
    async fn a_new_session_gets_the_unsaved_form_from_the_owners_node() {
        // Two "nodes" (two sessions of the same kind) sharing one PubSub.
        let (node_a, node_b) = (editing(), editing());
        let pubsub = PubSub::new();
        let (n1, _) = recorder();
        let a = node_a
            .open("1", user("ann"), n1, &pubsub, &|| json!({}))
            .await
            .unwrap();
        node_a
            .form_change(&a.seat, json!({"title": "unsaved"}))
            .unwrap();
        let mut meta = a.meta.clone();
        meta["phx_ref"] = json!("r");
        let presence = json!({"ann": {"metas": [meta]}});
        let (n2, _) = recorder();
        let b = node_b
            .open("1", user("bob"), n2, &pubsub, &|| presence.clone())
            .await
            .unwrap();
        assert_eq!(b.role, Role::Spectator);
        assert_eq!(b.owner["key"], "ann");
        assert_eq!(b.form, json!({"title": "unsaved"}));
    }

    #[tokio::test]
    async fn refusals_are_counted_by_reason() {
        let e = editing();
        let (n1, _) = recorder();
        let (n2, _) = recorder();
        let _a = open(&e, user("ann"), n1).await.unwrap();
        let b = open(&e, user("bob"), n2).await.unwrap();
        for denied in [
            e.form_change(&b.seat, json!({})).unwrap_err(),
            e.save(&b.seat, json!({})).await.unwrap_err(),
            Denied::NotFound,
        ] {
            e.refused("edit:doc:1", "test", &denied);
        }
        let counts = e.refusals();
        assert!(counts.contains(&("not_owner", 2)), "{counts:?}");
        assert!(counts.contains(&("not_found", 1)), "{counts:?}");
        assert!(counts.contains(&("invalid", 0)), "{counts:?}");
    }

    #[test]
    fn anonymous_editors_get_a_key_per_connection() {
        let a = Editor::from_join(&json!({"user": {"name": "x"}}), "n:1");
        let b = Editor::from_join(&json!(null), "n:2");
        assert_ne!(a.key, b.key);
        assert_eq!(a.user_id, None);
        assert_eq!(
            Editor::from_join(&json!({"user": {"id": 5}}), "n:3").key,
            "5"
        );
    }
}
