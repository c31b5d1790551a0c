//! Session statistics, kept up to date on every join and leave so that reading
//! them is O(1): connected sessions, anonymous vs signed-in, distinct users,
//! sessions per topic. They feed an admin view.
//!
//! The rule: a meta is *signed in* only when it has `"verified": true`, which an
//! application writes for a user whose identity came from a signed token (the
//! socket's verified `Identity`); every other meta is *anonymous*, whatever it
//! says about itself (a `user_id` the client chose proves nothing). Distinct users
//! are the distinct keys of signed-in metas, across all topics.

use std::collections::HashMap;

use phx_protocol::presence::Meta;
use serde_json::Value;

/// Counts of the presences of one node.
///
/// ```
/// use phx_presence::{Meta, SessionStats};
/// use serde_json::json;
///
/// let mut stats = SessionStats::default();
/// let signed = Meta::new("r1", json!({"verified": true}));
/// let claims = Meta::new("r2", json!({"user_id": "alice"})); // proves nothing
/// stats.on_join("room:1", "alice", &signed);
/// stats.on_join("room:2", "alice", &signed);
/// stats.on_join("room:1", "guest-7", &claims);
/// assert_eq!((stats.sessions(), stats.signed_in(), stats.anonymous()), (3, 2, 1));
/// assert_eq!(stats.distinct_users(), 1);
/// stats.on_leave("room:1", "guest-7", &claims);
/// assert_eq!(stats.topic_sessions("room:1"), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    sessions: usize,
    signed_in: usize,
    users: HashMap<String, usize>,
    topics: HashMap<String, usize>,
}

/// Adds one to `name`'s count, copying the name only when it is new (most joins
/// are into a topic that already has members).
fn bump(counts: &mut HashMap<String, usize>, name: &str) {
    match counts.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            counts.insert(name.to_owned(), 1);
        }
    }
}

fn signed_in(meta: &Meta) -> bool {
    meta.fields.get("verified") == Some(&Value::Bool(true))
}

impl SessionStats {
    /// Records one meta joining `topic` under `key`.
    pub fn on_join(&mut self, topic: &str, key: &str, meta: &Meta) {
        self.sessions += 1;
        bump(&mut self.topics, topic);
        if signed_in(meta) {
            self.signed_in += 1;
            bump(&mut self.users, key);
        }
    }

    /// Records one meta leaving `topic` under `key`.
    pub fn on_leave(&mut self, topic: &str, key: &str, meta: &Meta) {
        self.sessions = self.sessions.saturating_sub(1);
        if let Some(n) = self.topics.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                self.topics.remove(topic);
            }
        }
        if signed_in(meta) {
            self.signed_in = self.signed_in.saturating_sub(1);
            if let Some(n) = self.users.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(key);
                }
            }
        }
    }

    /// Connected sessions (metas), all topics.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// Sessions whose meta says `"verified": true`.
    pub fn signed_in(&self) -> usize {
        self.signed_in
    }

    /// Sessions whose meta is not verified.
    pub fn anonymous(&self) -> usize {
        self.sessions - self.signed_in
    }

    /// Distinct keys among the signed-in (verified) sessions.
    pub fn distinct_users(&self) -> usize {
        self.users.len()
    }

    /// Sessions on one topic.
    pub fn topic_sessions(&self, topic: &str) -> usize {
        self.topics.get(topic).copied().unwrap_or(0)
    }

    /// Every topic with presences and its number of sessions.
    pub fn topics(&self) -> impl Iterator<Item = (&str, usize)> {
        self.topics.iter().map(|(topic, n)| (topic.as_str(), *n))
    }

    /// A JSON summary for an admin view.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "sessions": self.sessions,
            "signed_in": self.signed_in,
            "anonymous": self.anonymous(),
            "distinct_users": self.distinct_users(),
            "topics": self.topics.len(),
        })
    }
}
