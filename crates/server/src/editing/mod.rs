//! The collaborative-editing app phx-server hosts by default: record kinds
//! `entity`, `data` and `post` kept in memory, plugged into the runtime's
//! editing sessions (`phx_runtime::editing`), and the socket handler that counts
//! connected sockets (anonymous and signed in) for the admin stats.
//!
//! The wire contract is `protocol-spec/editing.md`; the demo page is [`demo`].

pub mod demo;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use phx_runtime::editing::{Denied, FieldErrors, Record, Records};
use phx_runtime::{
    Channel, ChannelContext, ConnectRequest, Connection, Editing, EndpointBuilder, HandleIn,
    Identity, Payload, PubSub, Refusal, RuntimeError, SocketHandler, Subscription,
};
use serde_json::{json, Value};

/// The kinds hosted by default.
pub const KINDS: [&str; 3] = ["entity", "data", "post"];

/// The records of one kind, in memory, in creation order. Cheap to clone:
/// clones share the store.
///
/// In a cluster every node keeps a full copy: once [`MemoryRecords::replicate`]
/// runs, each create, save and delete is sent to the other nodes' copies over
/// PubSub (topic `phx_records:<kind>`, which no client can join), and a node
/// that starts asks the others for their records. Ids are unique cluster-wide:
/// a node's own counter followed by its id suffix.
#[derive(Clone, Default)]
pub struct MemoryRecords {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    store: Mutex<Store>,
    /// Set once replication runs.
    link: OnceLock<Link>,
}

/// How this node's copy reaches the others'.
struct Link {
    pubsub: PubSub,
    topic: String,
    /// This copy's id in replication messages (random: unique per process).
    from: String,
    /// Appended to the ids this node chooses (`-<node>`), empty on one node.
    id_suffix: String,
}

#[derive(Default)]
struct Store {
    /// The last numeric id handed out.
    last_id: u64,
    /// Creation order → record.
    by_order: BTreeMap<u64, Record>,
    /// Record id → creation order.
    order_of: HashMap<String, u64>,
    next_order: u64,
}

impl Store {
    fn insert(&mut self, record: Record) {
        let Some(id) = record.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        if let Some(order) = self.order_of.get(&id) {
            self.by_order.insert(*order, record);
            return;
        }
        self.next_order += 1;
        self.order_of.insert(id, self.next_order);
        self.by_order.insert(self.next_order, record);
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.order_of.remove(id) {
            Some(order) => self.by_order.remove(&order).is_some(),
            None => false,
        }
    }

    fn replace(&mut self, records: impl IntoIterator<Item = Record>) {
        let last_id = self.last_id;
        *self = Store {
            last_id,
            ..Store::default()
        };
        for record in records {
            self.insert(record);
        }
    }
}

/// How many replication messages may wait for a node's copy.
const REPLICATION_CAPACITY: usize = 4096;

impl MemoryRecords {
    /// A store holding `seed` (objects with a string `id`).
    pub fn with(seed: impl IntoIterator<Item = Value>) -> MemoryRecords {
        let store = MemoryRecords::default();
        {
            let mut inner = store.lock();
            for value in seed {
                if let Value::Object(record) = value {
                    if let Some(n) = record
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(|id| id.parse::<u64>().ok())
                    {
                        inner.last_id = inner.last_id.max(n);
                    }
                    inner.insert(record);
                }
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps this copy and the other nodes' copies of kind `kind` in step
    /// through `pubsub` until the returned task is aborted; `node` (the
    /// cluster node's name, `None` on one node) makes the ids this node
    /// chooses unique in the cluster. Call once, before serving.
    pub fn replicate(
        &self,
        kind: &str,
        pubsub: &PubSub,
        node: Option<&str>,
    ) -> tokio::task::JoinHandle<()> {
        let topic = format!("phx_records:{kind}");
        let subscription = pubsub.subscribe(&topic, REPLICATION_CAPACITY);
        let id_suffix = node.map_or(String::new(), |n| {
            let clean: String = n
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("-{clean}")
        });
        let link = Link {
            pubsub: pubsub.clone(),
            topic,
            from: format!("{:016x}", rand::random::<u64>()),
            id_suffix,
        };
        if self.inner.link.set(link).is_err() {
            tracing::warn!(%kind, "records already replicated");
        }
        self.send("state?", json!({}));
        let store = self.clone();
        tokio::spawn(store.follow(subscription))
    }

    /// Tells the other nodes' copies about a change of this one.
    fn send(&self, event: &str, mut payload: Value) {
        if let Some(link) = self.inner.link.get() {
            payload["from"] = Value::from(link.from.as_str());
            link.pubsub
                .broadcast(&link.topic, event, Payload::from(payload));
        }
    }

    /// Applies the other nodes' changes to this copy.
    async fn follow(self, mut subscription: Subscription) {
        let Some(link) = self.inner.link.get() else {
            return;
        };
        // Only the first answer to this node's `state?` is taken.
        let mut synced = false;
        loop {
            let Some(b) = subscription.recv().await else {
                tracing::warn!(topic = %link.topic, "records replication fell behind; resubscribing and resyncing");
                subscription = link.pubsub.subscribe(&link.topic, REPLICATION_CAPACITY);
                synced = false;
                self.send("state?", json!({}));
                continue;
            };
            let Ok(msg) = b.payload.parse::<Value>() else {
                tracing::warn!(topic = %link.topic, "replication message is not JSON");
                continue;
            };
            if msg["from"].as_str() == Some(link.from.as_str()) {
                continue;
            }
            match (b.event.as_str(), msg) {
                ("put", Value::Object(mut msg)) => {
                    if let Some(Value::Object(record)) = msg.remove("record") {
                        self.lock().insert(record);
                    }
                }
                ("delete", msg) => {
                    if let Some(id) = msg["id"].as_str() {
                        self.lock().remove(id);
                    }
                }
                ("state?", msg) => {
                    let records = self.lock().by_order.values().cloned().collect::<Vec<_>>();
                    self.send("state!", json!({"to": msg["from"], "records": records}));
                }
                ("state!", Value::Object(mut msg))
                    if !synced
                        && msg.get("to").and_then(Value::as_str) == Some(link.from.as_str()) =>
                {
                    synced = true;
                    if let Some(Value::Array(records)) = msg.remove("records") {
                        self.lock()
                            .replace(records.into_iter().filter_map(|r| match r {
                                Value::Object(r) => Some(r),
                                _ => None,
                            }));
                    }
                }
                _ => {}
            }
        }
    }
}

impl Records for MemoryRecords {
    async fn load(&self, id: &str) -> Option<Record> {
        let store = self.lock();
        let order = store.order_of.get(id)?;
        store.by_order.get(order).cloned()
    }

    fn validate(&self, params: &Record) -> Result<(), FieldErrors> {
        match params.get("title") {
            Some(Value::String(title)) if !title.trim().is_empty() => Ok(()),
            Some(Value::String(_)) | None | Some(Value::Null) => Err(FieldErrors::from([(
                "title".to_owned(),
                vec!["can't be blank".to_owned()],
            )])),
            Some(_) => Err(FieldErrors::from([(
                "title".to_owned(),
                vec!["must be a string".to_owned()],
            )])),
        }
    }

    async fn save(&self, id: &str, mut params: Record) -> Option<Record> {
        {
            let mut store = self.lock();
            store.order_of.get(id)?;
            params.insert("id".to_owned(), Value::from(id));
            store.insert(params.clone());
        }
        self.send("put", json!({"record": params}));
        Some(params)
    }

    async fn delete(&self, id: &str) -> bool {
        if !self.lock().remove(id) {
            return false;
        }
        self.send("delete", json!({"id": id}));
        true
    }

    async fn list(&self) -> Vec<Record> {
        self.lock().by_order.values().cloned().collect()
    }

    async fn create(&self, mut params: Record) -> Option<Record> {
        let suffix = self
            .inner
            .link
            .get()
            .map_or("", |link| link.id_suffix.as_str());
        {
            let mut store = self.lock();
            store.last_id += 1;
            let id = format!("{}{suffix}", store.last_id);
            params.insert("id".to_owned(), Value::from(id));
            store.insert(params.clone());
        }
        self.send("put", json!({"record": params}));
        Some(params)
    }
}

/// A few records per kind so that the demo has something to open.
fn seed(kind: &str) -> Vec<Value> {
    match kind {
        "entity" => vec![
            json!({"id": "1", "title": "Acme Corporation", "body": "Supplier of anvils and rockets."}),
            json!({"id": "2", "title": "Globex", "body": "Cypress Creek campus."}),
        ],
        "data" => {
            vec![json!({"id": "1", "title": "Quarterly figures", "body": "Q1 12, Q2 15, Q3 19."})]
        }
        "post" => vec![
            json!({"id": "docs/my-post", "title": "Editing together", "body": "Open this post in two tabs."}),
            json!({"id": "1", "title": "Release notes", "body": "What changed this week."}),
        ],
        _ => Vec::new(),
    }
}

/// The editing app: one [`Editing`] per default kind.
pub struct App {
    kinds: Vec<Editing<MemoryRecords>>,
    /// Joins of an `edit:` or `events:` topic of a kind not hosted.
    unknown_kind: Arc<AtomicU64>,
}

impl App {
    /// The default kinds, seeded with a few records each.
    pub fn new() -> App {
        App {
            kinds: KINDS
                .iter()
                .map(|kind| Editing::new(kind, MemoryRecords::with(seed(kind))))
                .collect(),
            unknown_kind: Arc::default(),
        }
    }

    /// Mounts every kind on `builder`; `edit:` and `events:` topics of any
    /// other kind are refused with `not_found`.
    pub fn mount(&self, mut builder: EndpointBuilder) -> EndpointBuilder {
        for editing in &self.kinds {
            builder = editing.mount(builder);
        }
        let (edit, events) = (self.unknown_kind.clone(), self.unknown_kind.clone());
        builder
            .channel("edit:*", move |_, _| UnknownKind(edit.clone()))
            .channel("events:*", move |_, _| UnknownKind(events.clone()))
    }

    /// Starts keeping every kind's records in step with the other nodes'
    /// (`node`: this node's cluster name; `None` on one node).
    pub fn replicate(&self, pubsub: &PubSub, node: Option<&str>) {
        for editing in &self.kinds {
            // The task runs for the life of the process.
            drop(editing.records().replicate(editing.kind(), pubsub, node));
        }
    }

    /// Refused editing requests so far: `(kind, reason, count)`; joins of a kind
    /// not hosted are `("unknown", "not_found", n)`.
    pub fn refusals(&self) -> Vec<(String, &'static str, u64)> {
        self.kinds
            .iter()
            .flat_map(|e| {
                e.refusals()
                    .into_iter()
                    .map(|(reason, n)| (e.kind().to_owned(), reason, n))
            })
            .chain([(
                "unknown".to_owned(),
                "not_found",
                self.unknown_kind.load(Ordering::Relaxed),
            )])
            .collect()
    }
}

/// Answers a join of an unknown kind with `not_found` (and counts it).
struct UnknownKind(Arc<AtomicU64>);

impl Channel for UnknownKind {
    type Info = ();

    async fn join(
        &mut self,
        topic: &str,
        _payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<Payload, Payload> {
        self.0.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%topic, "join of an unknown kind");
        Err(Denied::NotFound.to_payload())
    }

    async fn handle_in(
        &mut self,
        _event: &str,
        _payload: Payload,
        _ctx: &mut ChannelContext,
    ) -> Result<HandleIn, RuntimeError> {
        Ok(HandleIn::Stop(None))
    }
}

/// Connected sockets, anonymous and signed in (with a verified `Identity`).
#[derive(Default)]
pub struct SocketSessions {
    anonymous: AtomicU64,
    signed_in: AtomicU64,
    users: Mutex<HashMap<String, u64>>,
}

impl SocketSessions {
    fn users(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Anonymous sockets connected now.
    pub fn anonymous(&self) -> u64 {
        self.anonymous.load(Ordering::Relaxed)
    }

    /// Signed-in sockets connected now.
    pub fn signed_in(&self) -> u64 {
        self.signed_in.load(Ordering::Relaxed)
    }

    /// Distinct users among the signed-in sockets.
    pub fn distinct_users(&self) -> usize {
        self.users().len()
    }

    fn open(self: &Arc<Self>, user_id: Option<String>) -> SessionGuard {
        match &user_id {
            Some(user) => {
                self.signed_in.fetch_add(1, Ordering::Relaxed);
                *self.users().entry(user.clone()).or_default() += 1;
            }
            None => {
                self.anonymous.fetch_add(1, Ordering::Relaxed);
            }
        }
        SessionGuard {
            sessions: self.clone(),
            user_id,
        }
    }
}

/// Kept in a socket's assigns: the socket is counted until they are dropped
/// with the socket.
struct SessionGuard {
    sessions: Arc<SocketSessions>,
    user_id: Option<String>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        match &self.user_id {
            Some(user) => {
                self.sessions.signed_in.fetch_sub(1, Ordering::Relaxed);
                let mut users = self.sessions.users();
                if let Some(n) = users.get_mut(user) {
                    *n -= 1;
                    if *n == 0 {
                        users.remove(user);
                    }
                }
            }
            None => {
                self.sessions.anonymous.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Wraps the app's socket handler and counts the sockets it accepts.
pub struct Counted<H> {
    /// The handler deciding who may connect.
    pub inner: H,
    /// Where the sockets are counted.
    pub sessions: Arc<SocketSessions>,
}

impl<H: SocketHandler> SocketHandler for Counted<H> {
    async fn connect(&self, req: &ConnectRequest) -> Result<Connection, Refusal> {
        let conn = self.inner.connect(req).await?;
        // Only a verified identity (from a token) counts as signed in; a
        // `user_id` connect param is what the client says about itself.
        let user_id = conn
            .assigns
            .get::<Identity>()
            .map(|who| who.user_id.clone());
        Ok(conn.assign(self.sessions.open(user_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_records_keep_order_and_choose_ids() {
        let store = MemoryRecords::with(seed("post"));
        let created = store
            .create(
                json!({"title": "new"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            )
            .await
            .unwrap_or_default();
        assert_eq!(
            created["id"], "2",
            "ids continue after the seeded numeric ids"
        );
        let titles: Vec<Value> = store
            .list()
            .await
            .into_iter()
            .map(|r| r["title"].clone())
            .collect();
        assert_eq!(
            titles,
            vec![
                json!("Editing together"),
                json!("Release notes"),
                json!("new")
            ]
        );
        assert!(store.load("docs/my-post").await.is_some());
        assert!(store.delete("docs/my-post").await);
        assert!(store.load("docs/my-post").await.is_none());
        assert!(
            store.save("docs/my-post", Record::new()).await.is_none(),
            "a deleted record is not saved again"
        );
        assert!(store.validate(&Record::new()).is_err());
        assert!(store
            .validate(json!({"title": " "}).as_object().unwrap_or(&Record::new()))
            .is_err());
    }

    /// Waits (bounded) until `cond` holds for the store.
    async fn until(store: &MemoryRecords, cond: impl Fn(&[Record]) -> bool) -> bool {
        for _ in 0..200 {
            if cond(&store.list().await) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn copies_on_two_nodes_stay_in_step_and_choose_distinct_ids() {
        // Two nodes' copies of one kind, sharing one PubSub as a cluster would.
        let pubsub = PubSub::new();
        let (a, b) = (
            MemoryRecords::with(seed("post")),
            MemoryRecords::with(seed("post")),
        );
        let tasks = [
            a.replicate("post", &pubsub, Some("web 1")),
            b.replicate("post", &pubsub, Some("web-2")),
        ];
        let new = |title: &str| {
            json!({"title": title})
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let on_a = a.create(new("from a")).await.unwrap_or_default();
        let on_b = b.create(new("from b")).await.unwrap_or_default();
        assert_eq!(
            (on_a["id"].clone(), on_b["id"].clone()),
            (json!("2-web_1"), json!("2-web-2"))
        );
        assert!(
            until(&b, |r| r.iter().any(|r| r["id"] == "2-web_1")).await,
            "created on A, listed on B"
        );
        assert!(until(&a, |r| r.iter().any(|r| r["id"] == "2-web-2")).await);
        b.save("2-web_1", new("saved on b"))
            .await
            .unwrap_or_default();
        assert!(
            until(&a, |r| r.iter().any(|r| r["title"] == "saved on b")).await,
            "saved on B, seen on A"
        );
        assert!(a.delete("docs/my-post").await);
        assert!(
            until(&b, |r| r.iter().all(|r| r["id"] != "docs/my-post")).await,
            "deleted everywhere"
        );
        assert!(b.load("docs/my-post").await.is_none());

        // A node started later takes the others' records in place of its seed.
        let c = MemoryRecords::with(seed("post"));
        let late = c.replicate("post", &pubsub, Some("web-3"));
        assert!(
            until(&c, |r| r.len() == 3
                && r.iter().all(|r| r["id"] != "docs/my-post"))
            .await
        );
        for task in tasks.into_iter().chain([late]) {
            task.abort();
        }
    }

    #[test]
    fn sockets_are_counted_until_their_guard_drops() {
        let sessions = Arc::new(SocketSessions::default());
        let a = sessions.open(Some("u1".into()));
        let b = sessions.open(Some("u1".into()));
        let c = sessions.open(None);
        assert_eq!(
            (
                sessions.signed_in(),
                sessions.anonymous(),
                sessions.distinct_users()
            ),
            (2, 1, 1)
        );
        drop((a, c));
        assert_eq!(
            (
                sessions.signed_in(),
                sessions.anonymous(),
                sessions.distinct_users()
            ),
            (1, 0, 1)
        );
        drop(b);
        assert_eq!(sessions.distinct_users(), 0);
    }
}
