//! [`Editing`]: the sessions of one kind of record over a [`Records`] store —
//! open, form changes, save against a version, delete, create, pages of the
//! list — and the follower that turns the store's changes into events.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use phx_protocol::Broadcast;
use phx_runtime::pubsub::PubSub;
use phx_runtime::Payload;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

use crate::error::{Denied, FieldErrors};
use crate::record::{fields_of, Change, Cursor, Fields, Limits, Op, Page, Record, Records};
use crate::session::{
    now_ms, tell, Editor, EditorMeta, Notify, Place, Role, Seat, Sessions, SyncState,
};

/// How long a new session waits for the owner's node to send the unsaved form.
const FORM_WAIT: Duration = Duration::from_millis(500);

/// The origin of the store's change events when delivered on this node: not a
/// node id, so the runtime delivers them here and sends them nowhere else
/// (every node hears the store's changes itself).
const STORE_ORIGIN: &str = "phx-editing:store";

/// Checks a record's fields before a save or create.
pub type Validator = Arc<dyn Fn(&Fields) -> Result<(), FieldErrors> + Send + Sync>;

/// What an editor gets on opening a record.
pub struct Opened {
    /// The seat to keep while editing.
    pub seat: Seat,
    /// The connection's role.
    pub role: Role,
    /// This connection's presence meta.
    pub meta: EditorMeta,
    /// The owner's meta (the connection's own when it is the owner).
    pub owner: Option<EditorMeta>,
    /// The session's unsaved params, or null.
    pub form: Value,
    /// The form's version, to notice a change made before the channel subscribed.
    pub form_version: u64,
    /// The saved record (with its `version`).
    pub record: Record,
}

/// The editing sessions of one kind of record, backed by a [`Records`] store.
/// Cheap to clone: clones share the sessions.
///
/// ```no_run
/// # async fn run() -> Result<(), phx_editing::RecordsError> {
/// use phx_editing::{Database, Editing};
/// let db = Database::connect("sqlite::memory:").await?;
/// let notes = Editing::new("note", db);
/// let endpoint = notes.mount(phx_runtime::Endpoint::builder()).build();
/// notes.start(endpoint.pubsub());
/// # Ok(()) }
/// ```
pub struct Editing<R> {
    pub(crate) records: Arc<R>,
    pub(crate) sessions: Arc<Sessions>,
    limits: Limits,
    validate: Option<Validator>,
}

impl<R> Clone for Editing<R> {
    fn clone(&self) -> Self {
        Editing {
            records: self.records.clone(),
            sessions: self.sessions.clone(),
            limits: self.limits,
            validate: self.validate.clone(),
        }
    }
}

impl<R: Records> Editing<R> {
    /// Sessions for records of `kind` (the `<kind>` of `edit:<kind>:<id>`).
    pub fn new(kind: &str, records: R) -> Editing<R> {
        Editing {
            records: Arc::new(records),
            sessions: Arc::new(Sessions::new(kind)),
            limits: Limits::default(),
            validate: None,
        }
    }

    /// Bounds on record size, records per kind and page size.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The application's check of a record's fields (after the size check).
    pub fn validator(
        mut self,
        check: impl Fn(&Fields) -> Result<(), FieldErrors> + Send + Sync + 'static,
    ) -> Self {
        self.validate = Some(Arc::new(check));
        self
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.sessions.kind
    }

    /// The store.
    pub fn records(&self) -> &R {
        &self.records
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

    /// Requests refused so far, per reason (see [`Denied::REASONS`]).
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Denied::REASONS
            .iter()
            .zip(&self.sessions.refusals)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts (and logs) a refused request.
    pub(crate) fn refused(&self, topic: &str, event: &str, denied: &Denied) {
        self.sessions.refusals[denied.index()].fetch_add(1, Ordering::Relaxed);
        match denied {
            Denied::BadRequest | Denied::UnknownEvent | Denied::TooLarge | Denied::TooMany => {
                tracing::warn!(%topic, %event, reason = denied.reason(), "editing request refused")
            }
            other => {
                tracing::debug!(%topic, %event, reason = other.reason(), "editing request refused")
            }
        }
    }

    /// Joined channels of this kind on this node, per topic.
    pub fn topics(&self) -> Vec<(String, usize)> {
        self.sessions.topics()
    }

    /// The metas of a record's editors on every node this one knows, owner first.
    pub fn editors(&self, id: &str) -> Vec<EditorMeta> {
        self.sessions.lock().get(id).map_or_else(Vec::new, |s| {
            s.line.iter().map(|p| p.meta.clone()).collect()
        })
    }

    /// Opens a record for an editor: takes a place in line and answers with the
    /// role, the owner, the unsaved form and the saved record.
    ///
    /// `pubsub` carries the session's traffic with other nodes and `presence`
    /// reads the record topic's presence list (`key → {"metas": [...]}`), where
    /// other nodes' editors are found. It is read once per session, under the
    /// session's lock right after the session subscribed to the topic, so that
    /// no change falls between the list and the diffs that follow it. The first
    /// editor of a record on this node whose line already has editors
    /// elsewhere asks the owner's node for the unsaved form (waiting at most
    /// half a second).
    pub async fn open(
        &self,
        id: &str,
        editor: Editor,
        notify: Notify,
        pubsub: &PubSub,
        presence: &(dyn Fn() -> Value + Sync),
    ) -> Result<Opened, Denied> {
        let record = self.records.load(self.kind(), id).await?;
        let version = record.get("version").and_then(Value::as_i64).unwrap_or(1);
        let me = self.sessions.node.clone();
        let (seq, meta, told, waiter) = {
            let mut sessions = self.sessions.lock();
            let created = !sessions.contains_key(id);
            let session = sessions.entry(id.to_owned()).or_default();
            if created {
                session.follower = Some(crate::sync::start(&self.sessions, id, pubsub));
                session.pubsub = Some(pubsub.clone());
                session.base = version;
            }
            let before = session.first();
            if created || matches!(session.sync, SyncState::Behind) {
                if !created {
                    session.sync = SyncState::InStep;
                }
                session.sync_remote(&me, &presence());
            }
            let told = session.tell(before);
            let seq = self.sessions.next_seq();
            // The server clock, but never ahead of someone already in line
            // (another node's clock may run ahead of this one's).
            let mut joined_at = now_ms();
            if let Some(last) = session.line.last() {
                if (joined_at, &*me, seq)
                    < (last.meta.joined_at, last.meta.node.as_str(), last.meta.seq)
                {
                    joined_at = last.meta.joined_at + u64::from(*me < *last.meta.node);
                }
            }
            let meta = EditorMeta {
                key: editor.key.clone(),
                name: editor.name.clone(),
                joined_at,
                node: me.to_string(),
                seq,
                user_id: editor.user_id.clone(),
                verified: editor.verified,
            };
            session.insert(Place {
                meta: meta.clone(),
                notify: Some(notify),
            });
            let waiter = if created && session.line.len() > 1 {
                let (tx, rx) = oneshot::channel();
                session.sync = SyncState::AskingForm {
                    answer: tx,
                    heard: false,
                };
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
            name: editor.name,
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
        let owner = session.line.first().map(|p| p.meta.clone());
        let role = if session.is_first(&me, seq) {
            Role::Owner
        } else {
            Role::Spectator
        };
        let (form, form_version) = (
            session.form.clone().unwrap_or(Value::Null),
            session.form_version,
        );
        drop(sessions);
        Ok(Opened {
            seat,
            role,
            meta,
            owner,
            form,
            form_version,
            record,
        })
    }

    /// The owner's unsaved params become the session's form state. `Ok` gives
    /// the session's form version after the change.
    pub fn form_change(&self, seat: &Seat, params: Value) -> Result<u64, Denied> {
        if !params.is_object() {
            return Err(Denied::BadRequest);
        }
        if params.to_string().len() > self.limits.max_record_bytes {
            return Err(Denied::TooLarge);
        }
        let mut sessions = self.sessions.lock();
        let session = sessions.get_mut(&seat.id).ok_or(Denied::NotFound)?;
        if !session.is_first(&self.sessions.node, seat.seq) {
            return Err(Denied::NotOwner);
        }
        session.set_form(Some(params));
        Ok(session.form_version)
    }

    /// The session's form state and its version.
    pub fn form(&self, id: &str) -> (Value, u64) {
        self.sessions.lock().get(id).map_or((Value::Null, 0), |s| {
            (s.form.clone().unwrap_or(Value::Null), s.form_version)
        })
    }

    /// The size check and the application's validation.
    fn check(&self, params: Value) -> Result<Fields, Denied> {
        let Value::Object(params) = params else {
            return Err(Denied::BadRequest);
        };
        let fields = fields_of(params);
        if Value::Object(fields.clone()).to_string().len() > self.limits.max_record_bytes {
            return Err(Denied::TooLarge);
        }
        if let Some(validate) = &self.validate {
            validate(&fields).map_err(Denied::Invalid)?;
        }
        Ok(fields)
    }

    /// Validates and saves the owner's params against `version` (default: the
    /// version the session's form started from); on success the form state is
    /// cleared. A stale version is refused with the stored record.
    pub async fn save(
        &self,
        seat: &Seat,
        params: Value,
        version: Option<i64>,
    ) -> Result<Record, Denied> {
        let base = {
            let sessions = self.sessions.lock();
            let session = sessions
                .get(&seat.id)
                .filter(|s| s.is_first(&self.sessions.node, seat.seq))
                .ok_or(Denied::NotOwner)?;
            session.base
        };
        let fields = self.check(params)?;
        let record = self
            .records
            .save(
                self.kind(),
                &seat.id,
                fields,
                version.unwrap_or(base),
                &seat.name,
            )
            .await?;
        if let Some(session) = self.sessions.lock().get_mut(&seat.id) {
            session.set_form(None);
            session.base = record
                .get("version")
                .and_then(Value::as_i64)
                .unwrap_or(base);
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
        self.records.delete(self.kind(), &seat.id).await?;
        self.end(&seat.id);
        Ok(())
    }

    /// Ends a record's session on this node without promoting anyone (the
    /// record is gone).
    pub(crate) fn end(&self, id: &str) {
        let session = self.sessions.lock().remove(id);
        drop(session);
    }

    /// Validates and creates a record; `by` is the creator's name.
    pub async fn create(&self, params: Value, by: &str) -> Result<Record, Denied> {
        let fields = self.check(params)?;
        Ok(self
            .records
            .create(self.kind(), fields, by, self.limits.max_records_per_kind)
            .await?)
    }

    /// A page of the list, newest first, starting after `from`.
    pub async fn page(&self, from: Option<Cursor>) -> Result<Page, Denied> {
        Ok(self
            .records
            .page(self.kind(), from, self.limits.page_size)
            .await?)
    }

    /// Follows the store's changes of this kind and tells this node's clients
    /// (each node hears every change itself, so nothing is sent to other
    /// nodes): `created` / `updated` / `deleted` on `events:<kind>` and, for a
    /// change not made through phx-editing, `updated` `{"record"}` or
    /// `deleted` on `edit:<kind>:<id>`. Runs until the store is dropped.
    pub fn start(&self, pubsub: &PubSub) -> tokio::task::JoinHandle<()> {
        let changes = self.records.changes();
        tokio::spawn(self.clone().follow_changes(changes, pubsub.clone()))
    }

    async fn follow_changes(self, mut changes: broadcast::Receiver<Change>, pubsub: PubSub) {
        let local = pubsub.local();
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(kind = %self.kind(), missed = n, "record changes missed (follower too slow)");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if change.kind != self.kind() {
                continue;
            }
            let deliver = |topic: String, event: &str, payload: Value| {
                local.deliver(
                    STORE_ORIGIN,
                    Broadcast::new(topic, event, Payload::from(payload)),
                );
            };
            let edit_topic = self.sessions.edit_topic(&change.id);
            match change.op {
                Op::Deleted => {
                    deliver(self.events_topic(), "deleted", json!({"id": change.id}));
                    if !change.ours {
                        deliver(edit_topic, "deleted", json!({"id": change.id}));
                    }
                }
                op => {
                    let record = match self.records.load(self.kind(), &change.id).await {
                        Ok(record) => record,
                        Err(err) => {
                            tracing::debug!(kind = %self.kind(), id = %change.id, %err, "changed record not loaded");
                            continue;
                        }
                    };
                    let event = json!({"id": change.id, "record": record});
                    deliver(self.events_topic(), op.event(), event);
                    if op == Op::Updated && !change.ours {
                        deliver(edit_topic, "updated", json!({"record": record}));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Notice;
    use crate::SqliteRecords;
    use phx_runtime::Assigns;
    use std::sync::Mutex as StdMutex;

    async fn editing() -> Editing<SqliteRecords> {
        let db = SqliteRecords::connect("sqlite::memory:").await.unwrap();
        db.seed(
            "doc",
            "1",
            json!({"title": "t"}).as_object().cloned().unwrap(),
        )
        .await
        .unwrap();
        Editing::new("doc", db).validator(|fields| {
            match fields.get("title").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => Ok(()),
                _ => Err(FieldErrors::from([(
                    "title".to_owned(),
                    vec!["can't be blank".to_owned()],
                )])),
            }
        })
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
        Editor::from_join(
            &Assigns::new(),
            &json!({"user": {"id": key, "name": key}}),
            "n:0",
        )
    }

    /// Opens `1` on one node (no other node's editors known).
    async fn open(
        e: &Editing<SqliteRecords>,
        editor: Editor,
        notify: Notify,
    ) -> Result<Opened, Denied> {
        e.open("1", editor, notify, &PubSub::new(), &|| json!({}))
            .await
    }

    fn keys(e: &Editing<SqliteRecords>) -> Vec<String> {
        e.editors("1").into_iter().map(|m| m.key).collect()
    }

    #[tokio::test]
    async fn first_owns_next_is_promoted_once_and_form_survives() {
        let e = editing().await;
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
        assert_eq!(b.owner.as_ref().map(|o| o.key.as_str()), Some("ann"));
        assert_eq!(a.record["version"], 1);
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
            e.save(&b.seat, json!({"title": ""}), None).await,
            Err(Denied::Invalid(errors)) if errors.contains_key("title")
        ));
        let saved = e
            .save(&b.seat, json!({"title": "new"}), None)
            .await
            .unwrap();
        assert_eq!(
            (saved["id"].clone(), saved["version"].clone()),
            (json!("1"), json!(2))
        );
        assert_eq!(saved["updated_by"], "bob", "who saved last");
        assert_eq!(e.form("1").0, Value::Null);
        // The next save is made against the new version: no conflict.
        let again = e
            .save(&b.seat, json!({"title": "newer"}), None)
            .await
            .unwrap();
        assert_eq!(again["version"], 3);
    }

    #[tokio::test]
    async fn a_stale_version_is_a_conflict_with_the_stored_record_and_nothing_is_written() {
        let e = editing().await;
        let (n1, _) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        // Another writer moves the record on (version 2) behind the session's back.
        e.records()
            .save(
                "doc",
                "1",
                json!({"title": "theirs"}).as_object().cloned().unwrap(),
                1,
                "x",
            )
            .await
            .unwrap();
        let stale = e.save(&a.seat, json!({"title": "mine"}), None).await;
        assert!(
            matches!(&stale, Err(Denied::Conflict(stored)) if stored["title"] == "theirs" && stored["version"] == 2),
            "{stale:?}"
        );
        // Overwriting on purpose: the save carries the stored version.
        let mine = e
            .save(&a.seat, json!({"title": "mine"}), Some(2))
            .await
            .unwrap();
        assert_eq!(
            (mine["title"].clone(), mine["version"].clone()),
            (json!("mine"), json!(3))
        );
    }

    #[tokio::test]
    async fn sizes_and_counts_are_bounded() {
        let e = editing().await.limits(Limits {
            max_record_bytes: 64,
            max_records_per_kind: 2,
            page_size: 1,
        });
        let big = "x".repeat(100);
        assert_eq!(
            e.create(json!({"title": big}), "ann").await,
            Err(Denied::TooLarge)
        );
        let (n1, _) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        assert_eq!(
            e.form_change(&a.seat, json!({"title": big})),
            Err(Denied::TooLarge)
        );
        assert_eq!(
            e.save(&a.seat, json!({"title": big}), None).await,
            Err(Denied::TooLarge)
        );
        e.create(json!({"title": "two"}), "ann").await.unwrap();
        assert_eq!(
            e.create(json!({"title": "three"}), "ann").await,
            Err(Denied::TooMany)
        );
        let page = e.page(None).await.unwrap();
        assert_eq!((page.records.len(), page.total), (1, 2));
        let rest = e.page(page.next).await.unwrap();
        assert_eq!((rest.records.len(), rest.next), (1, None));
    }

    #[tokio::test]
    async fn delete_ends_the_session_without_promotion_and_unknown_ids_are_not_found() {
        let e = editing().await;
        let (n1, _) = recorder();
        let (n2, seen2) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        let b = open(
            &e,
            Editor::from_join(&Assigns::new(), &json!({}), "n:7"),
            n2,
        )
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
        let e = editing().await;
        let pubsub = PubSub::new();
        let (n1, seen1) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        assert_eq!(a.role, Role::Owner);
        assert_eq!(a.meta.node, &*e.sessions.node);
        // Another node's editor who joined in the same millisecond: its node id
        // ("!" sorts before every hex digit) puts it first on every node.
        let remote = json!({"key": "zed", "name": "Zed", "joined_at": a.meta.joined_at,
                            "node": "!", "seq": 99, "user_id": "zed", "phx_ref": "r1"});
        e.sessions
            .follow("1", &diff("joins", remote.clone()), &pubsub);
        let owner = e.editors("1")[0].clone();
        assert_eq!(owner.key, "zed");
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
            Notice::Promoted { owner } if owner.key == "ann"
        ));
        e.form_change(&a.seat, json!({"title": "mine"})).unwrap();
        // A later joiner on this node never sorts before those already in line,
        // even when another node's clock runs ahead.
        let ahead = json!({"key": "fut", "name": "F", "joined_at": now_ms() + 60_000,
                           "node": "~", "seq": 1, "user_id": "fut"});
        e.sessions.follow("1", &diff("joins", ahead), &pubsub);
        let (n2, _) = recorder();
        let b = e
            .open("1", user("bob"), n2, &pubsub, &|| json!({}))
            .await
            .unwrap();
        assert_eq!(keys(&e), vec!["ann", "fut", "bob"]);
        assert_eq!(b.role, Role::Spectator);
    }

    #[tokio::test]
    async fn an_owner_that_says_it_left_is_not_brought_back_by_a_late_presence_join() {
        let e = editing().await;
        let pubsub = PubSub::new();
        let (n1, seen1) = recorder();
        let a = open(&e, user("ann"), n1).await.unwrap();
        let zed = json!({"key": "zed", "name": "Zed", "joined_at": 1, "node": "other",
                         "seq": 4, "user_id": "zed"});
        e.sessions.follow("1", &diff("joins", zed.clone()), &pubsub);
        assert_eq!(keys(&e)[0], "zed");
        let left = Broadcast::new(
            "phx_editing:doc:1",
            "left",
            Payload::from(json!({"node": "other", "seq": 4})),
        );
        e.sessions.follow("1", &left, &pubsub);
        assert!(matches!(
            seen1.lock().unwrap().last(),
            Some(Notice::Promoted { owner }) if owner.key == "ann"
        ));
        e.sessions.follow("1", &diff("joins", zed.clone()), &pubsub);
        assert_eq!(
            e.editors("1").len(),
            1,
            "a late presence join does not bring it back"
        );
        e.sessions.follow("1", &diff("leaves", zed), &pubsub);
        assert!(e
            .sessions
            .lock()
            .get("1")
            .is_some_and(|s| s.gone.is_empty()));
        assert!(e.form_change(&a.seat, json!({"title": "t"})).is_ok());
    }

    #[tokio::test]
    async fn a_new_session_gets_the_unsaved_form_and_its_base_version_from_the_owners_node() {
        // Two "nodes" (two sessions of the same kind) sharing one PubSub.
        let (node_a, node_b) = (editing().await, editing().await);
        let pubsub = PubSub::new();
        let (n1, _) = recorder();
        let a = node_a
            .open("1", user("ann"), n1, &pubsub, &|| json!({}))
            .await
            .unwrap();
        node_a
            .form_change(&a.seat, json!({"title": "unsaved"}))
            .unwrap();
        let mut meta = a.meta.to_value();
        meta["phx_ref"] = json!("r");
        let presence = json!({"ann": {"metas": [meta]}});
        let (n2, _) = recorder();
        let b = node_b
            .open("1", user("bob"), n2, &pubsub, &|| presence.clone())
            .await
            .unwrap();
        assert_eq!(b.role, Role::Spectator);
        assert_eq!(b.owner.map(|o| o.key), Some("ann".to_owned()));
        assert_eq!(b.form, json!({"title": "unsaved"}));
    }

    #[tokio::test]
    async fn refusals_are_counted_by_reason() {
        let e = editing().await;
        let (n1, _) = recorder();
        let (n2, _) = recorder();
        let _a = open(&e, user("ann"), n1).await.unwrap();
        let b = open(&e, user("bob"), n2).await.unwrap();
        for denied in [
            e.form_change(&b.seat, json!({})).unwrap_err(),
            e.save(&b.seat, json!({}), None).await.unwrap_err(),
            Denied::NotFound,
            Denied::Unavailable,
        ] {
            e.refused("edit:doc:1", "test", &denied);
        }
        let counts = e.refusals();
        assert!(counts.contains(&("not_owner", 2)), "{counts:?}");
        assert!(counts.contains(&("not_found", 1)), "{counts:?}");
        assert!(counts.contains(&("unavailable", 1)), "{counts:?}");
        assert!(counts.contains(&("invalid", 0)), "{counts:?}");
    }
}
