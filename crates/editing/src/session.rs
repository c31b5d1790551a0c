//! The session of one record on one node: its line of editors (the first is
//! the owner), the owner's unsaved form, and the version that form started from.
//!
//! Every editor's channel takes a seat on join (joined_at from the server
//! clock, the node's id and a sequence that break ties) and its [`Seat`] gives
//! the place back when dropped — with the channel, however the channel ends.
//! When the first place is given back the next editor is told at once. In a
//! cluster the line also holds the other nodes' editors (see `sync`); every
//! node orders the line by `(joined_at, node, seq)` and so agrees on the owner.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use phx_runtime::pubsub::PubSub;
use phx_runtime::{Assigns, Identity, Payload};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::error::Denied;

/// Who is editing, as the channel learnt it on join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Editor {
    /// Presence key: the user id, or a key unique to the connection when anonymous.
    pub key: String,
    /// The user's display name.
    pub name: String,
    /// The user id, `None` for an anonymous editor.
    pub user_id: Option<String>,
    /// Whether the user id comes from a verified [`Identity`] (a token the
    /// socket handler checked) rather than from the join payload.
    pub verified: bool,
}

impl Editor {
    /// The editor of a join: the socket's verified [`Identity`] when its
    /// handler put one in the assigns (the payload's `user` is then ignored),
    /// otherwise the payload's `{"user": {"id", "name"}}`, unverified. Without
    /// a usable id the editor is anonymous and its key is
    /// `anonymous:<connection>`, so `connection` must be unique among the
    /// record's editors (the channel passes its node's id and channel id).
    ///
    /// ```
    /// use phx_editing::Editor;
    /// use phx_runtime::{Assigns, Identity};
    /// let params = serde_json::json!({"user": {"id": "mallory", "name": "Ann"}});
    /// let assigns = Assigns::new().with(Identity::new("42").with_name("Ann"));
    /// let ann = Editor::from_join(&assigns, &params, "node1:7");
    /// assert_eq!((ann.key.as_str(), ann.verified), ("42", true));
    /// let guest = Editor::from_join(&Assigns::new(), &serde_json::json!({}), "node1:8");
    /// assert_eq!((guest.key.as_str(), guest.user_id), ("anonymous:node1:8", None));
    /// ```
    pub fn from_join(assigns: &Assigns, params: &Value, connection: &str) -> Editor {
        if let Some(who) = assigns.get::<Identity>() {
            return Editor {
                key: who.user_id.clone(),
                name: who.name.clone().unwrap_or_else(|| who.user_id.clone()),
                user_id: Some(who.user_id.clone()),
                verified: true,
            };
        }
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
            verified: false,
        }
    }
}

/// An editor's presence meta on `edit:<kind>:<id>` (the runtime adds `phx_ref`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditorMeta {
    /// The presence key.
    pub key: String,
    /// The display name.
    pub name: String,
    /// When the editor joined, in ms since the epoch (server clock).
    pub joined_at: u64,
    /// The editor's node (random id).
    pub node: String,
    /// A per-node sequence that breaks ties.
    pub seq: u64,
    /// The user id, `null` when anonymous.
    pub user_id: Option<String>,
    /// True only when the user id comes from a verified identity.
    #[serde(default)]
    pub verified: bool,
}

impl EditorMeta {
    /// The line's order, the same on every node: `(joined_at, node, seq)`.
    fn order(&self) -> (u64, &str, u64) {
        (self.joined_at, &self.node, self.seq)
    }

    /// The JSON sent to clients.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What the session tells one editor's connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// This connection is now the owner; `owner` is its own meta.
    Promoted {
        /// The new owner's meta.
        owner: EditorMeta,
    },
    /// In a cluster only: an editor on another node turned out to be ahead in
    /// line (both joined before either heard of the other).
    Demoted {
        /// The owner's meta.
        owner: EditorMeta,
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

/// One editor's place in a line, on this node or another.
pub(crate) struct Place {
    pub(crate) meta: EditorMeta,
    /// How to reach the editor: `Some` for this node's editors only.
    pub(crate) notify: Option<Notify>,
}

impl Place {
    /// A place read from a presence meta; `None` when the meta is not an editor's.
    pub(crate) fn remote(meta: &Value) -> Option<Place> {
        Some(Place {
            meta: EditorMeta::deserialize(meta).ok()?,
            notify: None,
        })
    }

    fn is(&self, node: &str, seq: u64) -> bool {
        self.meta.node == node && self.meta.seq == seq
    }
}

/// Where a session stands with the other nodes.
#[derive(Debug, Default)]
pub(crate) enum SyncState {
    /// Nothing pending.
    #[default]
    InStep,
    /// The session just started and asked the owner's node for the unsaved
    /// form; `heard` is set when another node's form change arrived meanwhile
    /// (it is newer than the answer).
    AskingForm {
        answer: oneshot::Sender<()>,
        heard: bool,
    },
    /// The follower fell behind and may have missed presence changes: the
    /// next editor to open the record here resyncs the line.
    Behind,
}

/// The session of one record on this node.
#[derive(Default)]
pub(crate) struct Session {
    /// In line order: `(joined_at, node, seq)`.
    pub(crate) line: Vec<Place>,
    /// The owner's unsaved params.
    pub(crate) form: Option<Value>,
    /// Bumped on every change of `form`.
    pub(crate) form_version: u64,
    /// The record version the form started from: a save is made against it.
    pub(crate) base: i64,
    pub(crate) sync: SyncState,
    /// Other nodes' owners that said they left before their presence leave
    /// arrived (a late presence join of theirs must not bring them back).
    pub(crate) gone: VecDeque<(String, u64)>,
    /// Where this node says its owner left; set when the session starts.
    pub(crate) pubsub: Option<PubSub>,
    /// The task following the record's topics (presence, other nodes' changes).
    pub(crate) follower: Option<AbortHandle>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.follower.take() {
            task.abort();
        }
    }
}

pub(crate) type Told = Vec<(Notify, Notice)>;

/// How many owners that left early a session remembers (see `Session::gone`).
const GONE_KEPT: usize = 64;

impl Session {
    /// The identity `(node, seq)` of the first in line.
    pub(crate) fn first(&self) -> Option<(String, u64)> {
        self.line.first().map(|p| (p.meta.node.clone(), p.meta.seq))
    }

    pub(crate) fn is_first(&self, node: &str, seq: u64) -> bool {
        self.line.first().is_some_and(|p| p.is(node, seq))
    }

    pub(crate) fn owner_is_local(&self) -> bool {
        self.line.first().is_some_and(|p| p.notify.is_some())
    }

    pub(crate) fn has_local(&self) -> bool {
        self.line.iter().any(|p| p.notify.is_some())
    }

    pub(crate) fn insert(&mut self, place: Place) {
        if self
            .line
            .iter()
            .any(|p| p.is(&place.meta.node, place.meta.seq))
        {
            return;
        }
        let at = self
            .line
            .partition_point(|p| p.meta.order() < place.meta.order());
        self.line.insert(at, place);
    }

    pub(crate) fn remove(&mut self, node: &str, seq: u64) {
        self.line.retain(|p| !p.is(node, seq));
    }

    /// Who must be told after the line changed from one whose first was `before`:
    /// a local editor that became first is promoted; a local owner that is no
    /// longer first (another node's editor sorted ahead) is demoted.
    pub(crate) fn tell(&self, before: Option<(String, u64)>) -> Told {
        let mut told = Told::new();
        let Some(first) = self.line.first() else {
            return told;
        };
        if before
            .as_ref()
            .is_some_and(|(node, seq)| first.is(node, *seq))
        {
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
            let demoted = self.line.iter().find(|p| p.is(&node, seq));
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
    pub(crate) fn sync_remote(&mut self, me: &str, list: &Value) {
        self.line.retain(|p| p.meta.node == me);
        for place in metas(list).filter_map(Place::remote) {
            if place.meta.node != me {
                self.insert(place);
            }
        }
    }

    /// Applies another node's presence changes (a `presence_diff` payload).
    pub(crate) fn apply_diff(&mut self, me: &str, diff: &Value) {
        for place in metas(&diff["leaves"]).filter_map(Place::remote) {
            if place.meta.node != me {
                self.remove(&place.meta.node, place.meta.seq);
                self.gone.retain(|(node, seq)| !place.is(node, *seq));
            }
        }
        for place in metas(&diff["joins"]).filter_map(Place::remote) {
            let gone = self.gone.iter().any(|(node, seq)| place.is(node, *seq));
            if place.meta.node != me && !gone {
                self.insert(place);
            }
        }
    }

    /// Another node's owner left (said at once by its node, ahead of the
    /// presence leave, which comes with the tracker's next heartbeat).
    pub(crate) fn owner_left(&mut self, node: &str, seq: u64) {
        self.remove(node, seq);
        if self.gone.len() == GONE_KEPT {
            self.gone.pop_front();
        }
        self.gone.push_back((node.to_owned(), seq));
    }

    /// The form changed (here or on another node).
    pub(crate) fn set_form(&mut self, form: Option<Value>) {
        self.form = form;
        self.form_version += 1;
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

pub(crate) fn tell(told: Told) {
    for (notify, notice) in told {
        notify(notice);
    }
}

/// Every session of one kind on this node, keyed by record id.
pub(crate) struct Sessions {
    pub(crate) kind: Arc<str>,
    /// This node's id in editors' metas: random, so unique across a cluster.
    pub(crate) node: Arc<str>,
    pub(crate) seq: AtomicU64,
    pub(crate) by_id: Mutex<HashMap<String, Session>>,
    /// Refused requests, per [`Denied::REASONS`].
    pub(crate) refusals: [AtomicU64; Denied::REASONS.len()],
    /// Joined channels per topic (`edit:…` and `events:…`) on this node.
    pub(crate) joined: Mutex<HashMap<String, usize>>,
}

impl Sessions {
    pub(crate) fn new(kind: &str) -> Sessions {
        Sessions {
            kind: kind.into(),
            node: format!("{:016x}", rand::random::<u64>()).into(),
            seq: AtomicU64::new(0),
            by_id: Mutex::default(),
            refusals: Default::default(),
            joined: Mutex::default(),
        }
    }

    /// Counts a joined channel of `topic` until the returned guard drops.
    pub(crate) fn join_topic(self: &Arc<Self>, topic: &str) -> Joined {
        *self
            .joined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.to_owned())
            .or_default() += 1;
        Joined {
            sessions: self.clone(),
            topic: topic.to_owned(),
        }
    }

    /// Joined channels per topic.
    pub(crate) fn topics(&self) -> Vec<(String, usize)> {
        let joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        joined.iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn edit_topic(&self, id: &str) -> String {
        format!("edit:{}:{id}", self.kind)
    }

    /// The internal topic where the nodes' sessions of a record ask each other
    /// for the unsaved form (no client can join it: `edit:` and `events:` are
    /// the only topics the kind routes).
    pub(crate) fn sync_topic(&self, id: &str) -> String {
        format!("phx_editing:{}:{id}", self.kind)
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Removes a local place; tells the next in line when the owner left. The
    /// session ends with its last local editor.
    pub(crate) fn leave(&self, id: &str, seq: u64) {
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

    pub(crate) fn is_owner(&self, id: &str, seq: u64) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|s| s.is_first(&self.node, seq))
    }
}

/// An editor's seat in a session; dropping it leaves the session (and promotes
/// the next editor if this one owned the record). Keep it in the channel so it
/// goes when the channel goes.
pub struct Seat {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) key: String,
    pub(crate) name: String,
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

    /// The editor's display name (who saved, in the record's `updated_by`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.sessions.leave(&self.id, self.seq);
    }
}

/// A joined channel, counted on its topic until dropped (with the channel).
pub(crate) struct Joined {
    sessions: Arc<Sessions>,
    topic: String,
}

impl Drop for Joined {
    fn drop(&mut self) {
        let mut joined = self
            .sessions
            .joined
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = joined.get_mut(&self.topic) {
            *n -= 1;
            if *n == 0 {
                joined.remove(&self.topic);
            }
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_identity_wins_over_the_join_payload() {
        let params = json!({"user": {"id": "mallory", "name": "Mallory"}});
        let assigns = Assigns::new().with(Identity::new("42").with_name("Ann"));
        let editor = Editor::from_join(&assigns, &params, "n:1");
        assert_eq!(
            editor,
            Editor {
                key: "42".into(),
                name: "Ann".into(),
                user_id: Some("42".into()),
                verified: true
            }
        );
        let nameless = Editor::from_join(&Assigns::new().with(Identity::new("7")), &params, "n:2");
        assert_eq!((nameless.key.as_str(), nameless.name.as_str()), ("7", "7"));
        assert!(nameless.verified);
    }

    #[test]
    fn without_an_identity_the_payload_user_is_an_unverified_display_identity() {
        let none = Assigns::new();
        let ann = Editor::from_join(&none, &json!({"user": {"id": 5, "name": "Ann"}}), "n:3");
        assert_eq!(
            (ann.key.as_str(), ann.name.as_str(), ann.verified),
            ("5", "Ann", false)
        );
        let a = Editor::from_join(&none, &json!({"user": {"name": "x"}}), "n:1");
        let b = Editor::from_join(&none, &json!(null), "n:2");
        assert_ne!(a.key, b.key);
        assert_eq!((a.user_id, b.name.as_str()), (None, "anonymous"));
    }

    #[test]
    fn metas_round_trip_and_ignore_the_runtime_fields() {
        let meta = EditorMeta {
            key: "42".into(),
            name: "Ann".into(),
            joined_at: 3,
            node: "n".into(),
            seq: 1,
            user_id: Some("42".into()),
            verified: true,
        };
        let mut wire = meta.to_value();
        assert_eq!(wire["verified"], true);
        wire["phx_ref"] = json!("r1");
        let place = Place::remote(&wire).unwrap();
        assert_eq!(place.meta, meta);
        assert!(
            Place::remote(&json!({"key": "x"})).is_none(),
            "not an editor's meta"
        );
    }
}
