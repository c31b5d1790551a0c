//! The presence state of one node: topic → key → one meta per tracked connection,
//! and the `presence_diff` each change causes (`phoenix/lib/phoenix/presence.ex`,
//! `phoenix_pubsub/lib/phoenix/tracker/shard.ex`).
//!
//! Every operation is a plain function of the state: no clocks (the caller passes
//! the new `phx_ref`), no I/O. Tracking order is kept within a key; a connection's
//! entries are indexed so that untracking all of them never scans every topic.
//!
//! Metas are kept encoded, as the JSON object they are on the wire: a meta is
//! written far more often (into every joiner's `presence_state`) than read back,
//! an encoded meta takes a tenth of the memory of a decoded one (whose field map
//! alone allocates a 640-byte first node), and [`PresenceState::list_json`] writes
//! a topic's `presence_state` by copying them instead of cloning and encoding
//! every meta again.

use std::collections::{BTreeMap, HashMap};

use phx_protocol::presence::{Meta, PresenceDiff, PresenceEntry};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::{PresenceError, PresenceList, SessionStats};

/// Identifies one tracked connection (the runtime uses one per joined channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A diff with one join.
pub fn join_diff(key: &str, meta: Meta) -> PresenceDiff {
    let mut diff = PresenceDiff::default();
    diff.add_join(key, meta);
    diff
}

/// A diff with one leave.
pub fn leave_diff(key: &str, meta: Meta) -> PresenceDiff {
    let mut diff = PresenceDiff::default();
    diff.add_leave(key, meta);
    diff
}

/// One tracked connection under a key: its meta as the JSON object it is on the
/// wire (`phx_ref` and `phx_ref_prev` included).
#[derive(Debug, Clone)]
struct Tracked {
    conn: ConnId,
    meta: Box<RawValue>,
}

impl Tracked {
    fn new(conn: ConnId, meta: &Meta) -> Result<Tracked, PresenceError> {
        let meta = serde_json::value::to_raw_value(meta)
            .map_err(|e| PresenceError::Meta(e.to_string()))?;
        Ok(Tracked { conn, meta })
    }

    /// The meta, decoded again. It was written by [`Tracked::new`], so it always
    /// decodes; were it ever not to, an empty meta is better than a panic.
    fn meta(&self) -> Meta {
        serde_json::from_str(self.meta.get()).unwrap_or_else(|_| Meta::new("", Value::Null))
    }
}

type Keys = BTreeMap<String, Vec<Tracked>>;

/// The presences of one node. See the crate docs for an example.
#[derive(Debug, Clone, Default)]
pub struct PresenceState {
    topics: HashMap<String, Keys>,
    by_conn: HashMap<ConnId, Vec<(String, String)>>,
    stats: SessionStats,
}

impl PresenceState {
    /// An empty state.
    pub fn new() -> PresenceState {
        PresenceState::default()
    }

    /// Tracks `conn` under `key` on `topic` with `meta` and the ref `phx_ref`.
    /// Tracking the same topic, key and connection twice is an error; the same
    /// connection may track other keys or topics, and a key may have many connections.
    pub fn track(
        &mut self,
        topic: &str,
        key: &str,
        conn: ConnId,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, PresenceError> {
        let already = self
            .topics
            .get(topic)
            .and_then(|keys| keys.get(key))
            .is_some_and(|metas| metas.iter().any(|t| t.conn == conn));
        if already {
            return Err(PresenceError::AlreadyTracked {
                topic: topic.to_owned(),
                key: key.to_owned(),
            });
        }
        let meta = Meta::new(phx_ref, meta);
        let tracked = Tracked::new(conn, &meta)?;
        let metas = self
            .topics
            .entry(topic.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default();
        // Most keys have one connection: no room for four.
        metas.reserve_exact(1);
        metas.push(tracked);
        let entries = self.by_conn.entry(conn).or_default();
        entries.reserve_exact(1);
        entries.push((topic.to_owned(), key.to_owned()));
        self.stats.on_join(topic, key, &meta);
        Ok(join_diff(key, meta))
    }

    /// Stops tracking `conn` under `key` on `topic`; an empty diff when it was not tracked.
    pub fn untrack(&mut self, topic: &str, key: &str, conn: ConnId) -> PresenceDiff {
        let diff = self.remove(topic, key, conn);
        if let Some(list) = self.by_conn.get_mut(&conn) {
            list.retain(|(t, k)| !(t == topic && k == key));
            if list.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
        self.shrink();
        diff
    }

    fn remove(&mut self, topic: &str, key: &str, conn: ConnId) -> PresenceDiff {
        let mut diff = PresenceDiff::default();
        let Some(keys) = self.topics.get_mut(topic) else {
            return diff;
        };
        if let Some(metas) = keys.get_mut(key) {
            if let Some(i) = metas.iter().position(|t| t.conn == conn) {
                let meta = metas.remove(i).meta();
                self.stats.on_leave(topic, key, &meta);
                diff.add_leave(key, meta);
            }
            if metas.is_empty() {
                keys.remove(key);
            }
        }
        if keys.is_empty() {
            self.topics.remove(topic);
        }
        diff
    }

    /// Gives memory back once the maps have emptied well below their size: a burst
    /// of connections must not leave its tables behind for good.
    fn shrink(&mut self) {
        if self.by_conn.capacity() > 64 && self.by_conn.len() * 4 < self.by_conn.capacity() {
            self.by_conn.shrink_to(self.by_conn.len() * 2);
        }
        if self.topics.capacity() > 64 && self.topics.len() * 4 < self.topics.capacity() {
            self.topics.shrink_to(self.topics.len() * 2);
        }
    }

    /// Stops tracking everything `conn` tracks, on every topic: one diff per topic.
    pub fn untrack_all(&mut self, conn: ConnId) -> Vec<(String, PresenceDiff)> {
        let entries = self.by_conn.remove(&conn).unwrap_or_default();
        let mut out: Vec<(String, PresenceDiff)> = Vec::new();
        for (topic, key) in entries {
            let diff = self.remove(&topic, &key, conn);
            match out.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, merged)) => {
                    for (k, entry) in diff.leaves {
                        merged
                            .leaves
                            .entry(k)
                            .or_default()
                            .metas
                            .extend(entry.metas);
                    }
                }
                None => out.push((topic, diff)),
            }
        }
        self.shrink();
        out
    }

    /// Replaces the meta of `conn` under `key`: the new meta gets `phx_ref` and
    /// `phx_ref_prev` = the old ref. One diff: the old meta leaves, the new joins.
    pub fn update(
        &mut self,
        topic: &str,
        key: &str,
        conn: ConnId,
        meta: Value,
        phx_ref: String,
    ) -> Result<PresenceDiff, PresenceError> {
        let slot = self
            .topics
            .get_mut(topic)
            .and_then(|keys| keys.get_mut(key))
            .and_then(|metas| metas.iter_mut().find(|t| t.conn == conn))
            .ok_or_else(|| PresenceError::NoPresence {
                topic: topic.to_owned(),
                key: key.to_owned(),
            })?;
        let old = slot.meta();
        let mut new = Meta::new(phx_ref, meta);
        new.phx_ref_prev = Some(old.phx_ref.clone());
        *slot = Tracked::new(conn, &new)?;
        self.stats.on_leave(topic, key, &old);
        self.stats.on_join(topic, key, &new);
        let mut diff = PresenceDiff::default();
        diff.add_leave(key, old);
        diff.add_join(key, new);
        Ok(diff)
    }

    /// The `presence_state` of a topic: keys as strings, metas in tracking order.
    pub fn list(&self, topic: &str) -> PresenceList {
        self.topics
            .get(topic)
            .map(|keys| {
                keys.iter()
                    .map(|(k, metas)| (k.clone(), entry(metas)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `presence_state` of a topic already encoded: the same JSON as
    /// encoding [`list`](Self::list), written from the stored metas without
    /// decoding them.
    ///
    /// ```
    /// use phx_presence::{ConnId, PresenceState};
    /// use serde_json::json;
    ///
    /// let mut state = PresenceState::new();
    /// state.track("room:1", "alice", ConnId(1), json!({"device": "phone"}), "F1".into()).unwrap();
    /// let encoded = state.list_json("room:1").unwrap();
    /// assert_eq!(encoded.get(), serde_json::to_string(&state.list("room:1")).unwrap());
    /// ```
    pub fn list_json(&self, topic: &str) -> Result<Box<RawValue>, serde_json::Error> {
        match self.topics.get(topic) {
            Some(keys) => serde_json::value::to_raw_value(&EncodedKeys(keys)),
            None => serde_json::value::to_raw_value(&EncodedKeys(&Keys::new())),
        }
    }

    /// One key's presence on a topic.
    pub fn get_by_key(&self, topic: &str, key: &str) -> Option<PresenceEntry> {
        self.topics.get(topic)?.get(key).map(|metas| entry(metas))
    }

    /// Distinct keys (users) on a topic.
    pub fn key_count(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, BTreeMap::len)
    }

    /// Whether a key is present on a topic.
    pub fn contains(&self, topic: &str, key: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|keys| keys.contains_key(key))
    }

    /// Connections (metas) of one key on a topic: one user on several devices.
    pub fn conn_count(&self, topic: &str, key: &str) -> usize {
        self.topics
            .get(topic)
            .and_then(|keys| keys.get(key))
            .map_or(0, Vec::len)
    }

    /// The topics that have presences.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// Session statistics, maintained on every change.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }
}

/// A topic's keys as `presence_state`: `{"<key>": {"metas": [meta, …]}, …}`,
/// each meta copied as it is stored (serde_json writes a `RawValue` verbatim,
/// without parsing it again).
struct EncodedKeys<'a>(&'a Keys);

impl Serialize for EncodedKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, metas) in self.0 {
            map.serialize_entry(key, &EncodedEntry(metas))?;
        }
        map.end()
    }
}

struct EncodedEntry<'a>(&'a [Tracked]);

impl Serialize for EncodedEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("metas", &EncodedMetas(self.0))?;
        map.end()
    }
}

struct EncodedMetas<'a>(&'a [Tracked]);

impl Serialize for EncodedMetas<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for tracked in self.0 {
            seq.serialize_element(&*tracked.meta)?;
        }
        seq.end()
    }
}

fn entry(metas: &[Tracked]) -> PresenceEntry {
    PresenceEntry::new(metas.iter().map(Tracked::meta).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(n: u32) -> String {
        format!("ref{n:013}")
    }

    #[test]
    fn empty_list_when_nothing_is_tracked() {
        assert!(PresenceState::new().list("t").is_empty());
    }

    #[test]
    fn track_lists_and_diffs_the_join() {
        let mut s = PresenceState::new();
        let d = s
            .track("t", "u1", ConnId(1), json!({"name": "u1"}), r(1))
            .unwrap();
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"joins": {"u1": {"metas": [{"name": "u1", "phx_ref": r(1)}]}}, "leaves": {}})
        );
        assert_eq!(
            serde_json::to_value(s.list("t")).unwrap(),
            json!({"u1": {"metas": [{"name": "u1", "phx_ref": r(1)}]}})
        );
    }

    #[test]
    fn multi_device_keeps_tracking_order() {
        let mut s = PresenceState::new();
        s.track("t", "1", ConnId(1), json!({"d": "a"}), r(1))
            .unwrap();
        s.track("t", "1", ConnId(2), json!({"d": "b"}), r(2))
            .unwrap();
        let e = s.get_by_key("t", "1").unwrap();
        assert_eq!(
            e.metas
                .iter()
                .map(|m| m.phx_ref.clone())
                .collect::<Vec<_>>(),
            vec![r(1), r(2)]
        );
        assert_eq!((s.key_count("t"), s.conn_count("t", "1")), (1, 2));
        assert!(s.get_by_key("t", "nobody").is_none() && s.get_by_key("other", "1").is_none());
    }

    #[test]
    fn double_track_is_an_error_but_other_keys_and_topics_are_fine() {
        let mut s = PresenceState::new();
        s.track("t", "k", ConnId(1), json!({}), r(1)).unwrap();
        assert!(matches!(
            s.track("t", "k", ConnId(1), json!({}), r(2)),
            Err(PresenceError::AlreadyTracked { .. })
        ));
        s.track("t", "k2", ConnId(1), json!({}), r(3)).unwrap();
        s.track("t2", "k", ConnId(1), json!({}), r(4)).unwrap();
    }

    #[test]
    fn untrack_leaves_only_that_key_and_is_a_noop_when_absent() {
        let mut s = PresenceState::new();
        s.track("t", "a", ConnId(1), json!({}), r(1)).unwrap();
        s.track("t", "b", ConnId(1), json!({}), r(2)).unwrap();
        let d = s.untrack("t", "a", ConnId(1));
        assert_eq!(d.leaves["a"].metas[0].phx_ref, r(1));
        assert!(d.joins.is_empty());
        assert!(s.contains("t", "b") && !s.contains("t", "a"));
        assert!(s.untrack("t", "zzz", ConnId(9)).is_empty());
    }

    #[test]
    fn untrack_all_covers_every_topic() {
        let mut s = PresenceState::new();
        s.track("t1", "a", ConnId(1), json!({}), r(1)).unwrap();
        s.track("t2", "a", ConnId(1), json!({}), r(2)).unwrap();
        s.track("t2", "b", ConnId(1), json!({}), r(3)).unwrap();
        s.track("t2", "a", ConnId(2), json!({}), r(4)).unwrap();
        let mut out = s.untrack_all(ConnId(1));
        out.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].1.leaves.len(), 2);
        assert_eq!(s.conn_count("t2", "a"), 1);
        assert!(s.untrack_all(ConnId(1)).is_empty());
        assert_eq!(s.topics().count(), 1);
    }

    #[test]
    fn list_json_is_the_encoded_list() {
        let mut s = PresenceState::new();
        assert_eq!(s.list_json("t").unwrap().get(), "{}");
        s.track(
            "t",
            "b\"q",
            ConnId(1),
            json!({"z": 1, "a": [true, null]}),
            r(1),
        )
        .unwrap();
        s.track("t", "a", ConnId(2), json!({"n": 1.5e300, "s": "é\n"}), r(2))
            .unwrap();
        s.track("t", "a", ConnId(3), json!("not an object"), r(3))
            .unwrap();
        s.update("t", "a", ConnId(2), json!({"n": -7}), r(4))
            .unwrap();
        s.track("other", "a", ConnId(4), json!({}), r(5)).unwrap();
        assert_eq!(
            s.list_json("t").unwrap().get(),
            serde_json::to_string(&s.list("t")).unwrap()
        );
        assert_eq!(
            serde_json::from_str::<Value>(s.list_json("t").unwrap().get()).unwrap(),
            json!({
                "a": {"metas": [
                    {"n": -7, "phx_ref": r(4), "phx_ref_prev": r(2)},
                    {"phx_ref": r(3)}
                ]},
                "b\"q": {"metas": [{"a": [true, null], "phx_ref": r(1), "z": 1}]}
            })
        );
    }

    #[test]
    fn update_is_one_diff_with_phx_ref_prev() {
        let mut s = PresenceState::new();
        s.track("t", "u1", ConnId(1), json!({"name": "u1"}), r(1))
            .unwrap();
        let d = s
            .update("t", "u1", ConnId(1), json!({"name": "updated"}), r(2))
            .unwrap();
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"joins": {"u1": {"metas": [{"name": "updated", "phx_ref": r(2), "phx_ref_prev": r(1)}]}},
                   "leaves": {"u1": {"metas": [{"name": "u1", "phx_ref": r(1)}]}}})
        );
        assert_eq!(s.list("t")["u1"].metas.len(), 1);
        assert!(matches!(
            s.update("t", "nope", ConnId(1), json!({}), r(3)),
            Err(PresenceError::NoPresence { .. })
        ));
    }

    #[test]
    fn stats_follow_every_change() {
        let mut s = PresenceState::new();
        s.track(
            "t",
            "alice",
            ConnId(1),
            json!({"user_id": 1, "verified": true}),
            r(1),
        )
        .unwrap();
        s.track(
            "t",
            "alice",
            ConnId(2),
            json!({"user_id": 1, "verified": true}),
            r(2),
        )
        .unwrap();
        s.track("u", "anon:1", ConnId(3), json!({}), r(3)).unwrap();
        // A user_id the client chose, without "verified": true, is anonymous.
        s.track("u", "mallory", ConnId(4), json!({"user_id": 7}), r(4))
            .unwrap();
        s.track(
            "u",
            "eve",
            ConnId(5),
            json!({"user_id": 8, "verified": "yes"}),
            r(5),
        )
        .unwrap();
        let st = s.stats();
        assert_eq!(
            (
                st.sessions(),
                st.signed_in(),
                st.anonymous(),
                st.distinct_users()
            ),
            (5, 2, 3, 1)
        );
        assert_eq!(st.topic_sessions("t"), 2);
        s.update("u", "anon:1", ConnId(3), json!({"user_id": 9}), r(6))
            .unwrap();
        assert_eq!(s.stats().signed_in(), 2);
        s.update(
            "u",
            "anon:1",
            ConnId(3),
            json!({"user_id": 9, "verified": true}),
            r(7),
        )
        .unwrap();
        assert_eq!((s.stats().signed_in(), s.stats().distinct_users()), (3, 2));
        s.untrack_all(ConnId(1));
        s.untrack_all(ConnId(2));
        assert_eq!(
            (
                s.stats().sessions(),
                s.stats().signed_in(),
                s.stats().distinct_users(),
                s.stats().topic_sessions("t")
            ),
            (3, 1, 1, 0)
        );
    }
}
