//! The collaborative-editing app phx-server hosts by default: record kinds
//! `entity`, `data` and `post` in one database (SQLite `phx.db` unless
//! `--database-url` names another, PostgreSQL for a cluster), each mounted as a
//! `phx_editing::Editing`, and the socket handler that counts connected sockets
//! (anonymous and signed in) for the admin stats.
//!
//! The wire contract is `protocol-spec/editing.md`; the demo page is [`demo`].

pub mod demo;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use phx_editing::{
    Database, Denied, Editing, FieldErrors, Fields, Health, Limits, Records, RecordsError,
};
use phx_runtime::pubsub::PubSub;
use phx_runtime::{
    Channel, ChannelContext, ConnectRequest, Connection, EndpointBuilder, HandleIn, Identity,
    Payload, Refusal, RuntimeError, SocketHandler,
};
use serde_json::{json, Value};

/// The kinds hosted by default.
pub const KINDS: [&str; 3] = ["entity", "data", "post"];

/// A record needs a non-blank string `title`.
pub fn validate(fields: &Fields) -> Result<(), FieldErrors> {
    match fields.get("title") {
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

/// A few records per kind so that the demo has something to open: stored
/// once, when the database holds no record of the kind yet.
fn seed(kind: &str) -> Vec<(&'static str, Value)> {
    match kind {
        "entity" => vec![
            (
                "1",
                json!({"title": "Acme Corporation", "body": "Supplier of anvils and rockets."}),
            ),
            (
                "2",
                json!({"title": "Globex", "body": "Cypress Creek campus."}),
            ),
        ],
        "data" => vec![(
            "1",
            json!({"title": "Quarterly figures", "body": "Q1 12, Q2 15, Q3 19."}),
        )],
        "post" => vec![
            (
                "docs/my-post",
                json!({"title": "Editing together", "body": "Open this post in two tabs."}),
            ),
            (
                "1",
                json!({"title": "Release notes", "body": "What changed this week."}),
            ),
        ],
        _ => Vec::new(),
    }
}

/// The editing app: one [`Editing`] per default kind, all on one database.
pub struct App {
    database: Database,
    limits: Limits,
    kinds: Vec<Editing<Database>>,
    /// Joins of an `edit:` or `events:` topic of a kind not hosted.
    unknown_kind: Arc<AtomicU64>,
}

impl App {
    /// Connects to the database (migrations applied), seeds the demo records
    /// of each kind still empty, and makes the default kinds.
    pub async fn connect(url: &str, limits: Limits) -> Result<App, RecordsError> {
        let database = Database::connect(url).await?;
        for kind in KINDS {
            if database.count(kind).await? == 0 {
                for (id, fields) in seed(kind) {
                    let fields = fields.as_object().cloned().unwrap_or_default();
                    database.seed(kind, id, fields).await?;
                }
            }
        }
        let kinds = KINDS
            .iter()
            .map(|kind| {
                Editing::new(kind, database.clone())
                    .limits(limits)
                    .validator(validate)
            })
            .collect();
        Ok(App {
            database,
            limits,
            kinds,
            unknown_kind: Arc::default(),
        })
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The bounds on records.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the database is up, as last seen.
    pub fn health(&self) -> Health {
        self.database.health()
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

    /// Starts announcing the database's changes to this node's clients.
    pub fn start(&self, pubsub: &PubSub) {
        for editing in &self.kinds {
            // The task runs for the life of the process.
            drop(editing.start(pubsub));
        }
    }

    /// Joined editing channels per topic (`edit:…` and `events:…`).
    pub fn topics(&self) -> Vec<(String, usize)> {
        self.kinds.iter().flat_map(|e| e.topics()).collect()
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
    async fn a_fresh_database_gets_the_demo_records_once() {
        let app = App::connect("sqlite::memory:", Limits::default())
            .await
            .unwrap();
        assert_eq!(app.database().count("post").await.unwrap(), 2);
        let post = app.database().load("post", "docs/my-post").await.unwrap();
        assert_eq!(
            (post["title"].clone(), post["version"].clone()),
            (json!("Editing together"), json!(1))
        );
        assert!(validate(&Fields::new()).is_err());
        assert!(validate(json!({"title": " "}).as_object().unwrap()).is_err());
        assert!(validate(json!({"title": 3}).as_object().unwrap()).is_err());
        assert!(validate(json!({"title": "ok"}).as_object().unwrap()).is_ok());
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
