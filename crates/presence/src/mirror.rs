//! The client-side mirror: a copy of a topic's presences kept exact from
//! `presence_state` and `presence_diff`, with the merge rules of phoenix.js
//! (`phoenix/assets/js/phoenix/presence.js`, checked by its `presence_test.js`).
//!
//! - A diff applies its joins first, then its leaves, so an update (a leave of the
//!   old ref and a join of the new one under the same key) never drops the key.
//! - A join replaces the key's presence with the joined one, then puts back, in
//!   front, the current metas whose `phx_ref` is not among the joined ones.
//! - A leave removes the metas whose `phx_ref` it lists; a key with no metas left
//!   is deleted.
//! - A new state is compared with the mirror ref by ref and applied as a diff.
//! - [`ChannelPresence`] buffers diffs until a state arrives for the channel's
//!   current join (before the first state, and after every rejoin).

use phx_protocol::presence::{PresenceDiff, PresenceEntry};

use crate::PresenceList;

/// A change seen while merging, as phoenix.js reports it to `onJoin` / `onLeave`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `onJoin(key, current, new)`: `current` is the presence before the join, if any.
    Join {
        /// The key.
        key: String,
        /// The key's presence before the join.
        current: Option<PresenceEntry>,
        /// The joining metas.
        new: PresenceEntry,
    },
    /// `onLeave(key, current, left)`: `current` is what remains (possibly no metas).
    Leave {
        /// The key.
        key: String,
        /// The key's presence after the leave.
        current: PresenceEntry,
        /// The leaving metas.
        left: PresenceEntry,
    },
}

/// A mirror of one topic's presences.
///
/// ```
/// use phx_presence::{Mirror, PresenceDiff, Meta};
/// let mut m = Mirror::default();
/// let mut d = PresenceDiff::default();
/// d.add_join("alice", Meta::new("r1", serde_json::json!({})));
/// m.sync_diff(d);
/// assert_eq!(m.list()["alice"].metas.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirror {
    state: PresenceList,
}

impl Mirror {
    /// The mirrored presences.
    pub fn list(&self) -> &PresenceList {
        &self.state
    }

    /// Applies a full `presence_state`.
    pub fn sync_state(&mut self, new_state: PresenceList) -> Vec<Event> {
        let mut diff = PresenceDiff::default();
        for (key, presence) in &self.state {
            if !new_state.contains_key(key) {
                diff.leaves.insert(key.clone(), presence.clone());
            }
        }
        for (key, new_presence) in new_state {
            match self.state.get(&key) {
                Some(current) => {
                    let joined: Vec<_> = new_presence
                        .metas
                        .iter()
                        .filter(|m| !current.metas.iter().any(|c| c.phx_ref == m.phx_ref))
                        .cloned()
                        .collect();
                    let left: Vec<_> = current
                        .metas
                        .iter()
                        .filter(|c| !new_presence.metas.iter().any(|m| m.phx_ref == c.phx_ref))
                        .cloned()
                        .collect();
                    // As phoenix.js: the join keeps the new presence's other keys,
                    // the leave the current one's.
                    if !joined.is_empty() {
                        let entry = PresenceEntry {
                            metas: joined,
                            extra: new_presence.extra.clone(),
                        };
                        diff.joins.insert(key.clone(), entry);
                    }
                    if !left.is_empty() {
                        let entry = PresenceEntry {
                            metas: left,
                            extra: current.extra.clone(),
                        };
                        diff.leaves.insert(key, entry);
                    }
                }
                None => {
                    diff.joins.insert(key, new_presence);
                }
            }
        }
        self.sync_diff(diff)
    }

    /// Applies a `presence_diff`: joins first, then leaves.
    pub fn sync_diff(&mut self, diff: PresenceDiff) -> Vec<Event> {
        let mut events = Vec::new();
        for (key, new_presence) in diff.joins {
            let current = self.state.remove(&key);
            let mut merged = new_presence.clone();
            if let Some(current) = &current {
                let kept: Vec<_> = current
                    .metas
                    .iter()
                    .filter(|c| !new_presence.metas.iter().any(|m| m.phx_ref == c.phx_ref))
                    .cloned()
                    .collect();
                merged.metas.splice(0..0, kept);
            }
            self.state.insert(key.clone(), merged);
            events.push(Event::Join {
                key,
                current,
                new: new_presence,
            });
        }
        for (key, left) in diff.leaves {
            let Some(current) = self.state.get_mut(&key) else {
                continue;
            };
            current
                .metas
                .retain(|m| !left.metas.iter().any(|l| l.phx_ref == m.phx_ref));
            let remaining = current.clone();
            if remaining.metas.is_empty() {
                self.state.remove(&key);
            }
            events.push(Event::Leave {
                key,
                current: remaining,
                left,
            });
        }
        events
    }
}

/// phoenix.js's `Presence` object for one channel: diffs wait until a
/// `presence_state` has arrived for the channel's current join_ref.
#[derive(Debug, Clone, Default)]
pub struct ChannelPresence {
    join_ref: Option<String>,
    mirror: Mirror,
    pending: Vec<PresenceDiff>,
}

impl ChannelPresence {
    /// The mirrored presences.
    pub fn list(&self) -> &PresenceList {
        self.mirror.list()
    }

    /// A `presence_state` arrived while the channel's join_ref is `channel_join_ref`:
    /// applies it and every buffered diff. Returns the events (then `onSync`).
    pub fn on_state(&mut self, channel_join_ref: &str, state: PresenceList) -> Vec<Event> {
        self.join_ref = Some(channel_join_ref.to_owned());
        let mut events = self.mirror.sync_state(state);
        for diff in std::mem::take(&mut self.pending) {
            events.extend(self.mirror.sync_diff(diff));
        }
        events
    }

    /// A `presence_diff` arrived. `None` when it was buffered (no state yet for
    /// this join), otherwise the events of applying it.
    pub fn on_diff(&mut self, channel_join_ref: &str, diff: PresenceDiff) -> Option<Vec<Event>> {
        if self.join_ref.as_deref() != Some(channel_join_ref) {
            self.pending.push(diff);
            return None;
        }
        Some(self.mirror.sync_diff(diff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phx_protocol::presence::Meta;
    use serde_json::json;

    fn meta(r: &str) -> Meta {
        Meta::new(r, json!({"id": 1}))
    }

    fn entry(refs: &[&str]) -> PresenceEntry {
        PresenceEntry::new(refs.iter().map(|r| meta(r)).collect())
    }

    fn with_user(mut e: PresenceEntry, name: &str) -> PresenceEntry {
        e.extra.insert("user".into(), json!({ "name": name }));
        e
    }

    #[test]
    fn keys_beside_metas_follow_phoenix_js() {
        // A join replaces the key's other keys with the joined presence's; a leave
        // keeps the current ones; sync_state's join carries the new state's.
        let mut m = Mirror::default();
        let mut d = PresenceDiff::default();
        d.joins.insert("u1".into(), with_user(entry(&["1"]), "Ann"));
        m.sync_diff(d);
        assert_eq!(m.list()["u1"].extra["user"], json!({"name": "Ann"}));

        let mut d = PresenceDiff::default();
        d.joins
            .insert("u1".into(), with_user(entry(&["2"]), "Ann B."));
        d.leaves
            .insert("u1".into(), with_user(entry(&["1"]), "Ann"));
        m.sync_diff(d);
        assert_eq!(m.list()["u1"], with_user(entry(&["2"]), "Ann B."));

        let mut state = PresenceList::new();
        state.insert("u1".into(), with_user(entry(&["2", "3"]), "Ann C."));
        let events = m.sync_state(state);
        assert!(events.contains(&Event::Join {
            key: "u1".into(),
            current: Some(with_user(entry(&["2"]), "Ann B.")),
            new: with_user(entry(&["3"]), "Ann C."),
        }));
        assert_eq!(m.list()["u1"], with_user(entry(&["2", "3"]), "Ann C."));
    }

    fn list(items: &[(&str, &[&str])]) -> PresenceList {
        items
            .iter()
            .map(|(k, refs)| (k.to_string(), entry(refs)))
            .collect()
    }

    fn refs(m: &Mirror, key: &str) -> Vec<String> {
        m.list()
            .get(key)
            .map(|e| e.metas.iter().map(|m| m.phx_ref.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn sync_state_reports_joins_and_leaves() {
        let mut m = Mirror::default();
        m.sync_state(list(&[("u1", &["1"]), ("u2", &["2"])]));
        let events = m.sync_state(list(&[("u1", &["1", "1b"]), ("u3", &["3"])]));
        assert!(events.contains(&Event::Join {
            key: "u1".into(),
            current: Some(entry(&["1"])),
            new: entry(&["1b"])
        }));
        assert!(events.contains(&Event::Join {
            key: "u3".into(),
            current: None,
            new: entry(&["3"])
        }));
        assert!(events.contains(&Event::Leave {
            key: "u2".into(),
            current: entry(&[]),
            left: entry(&["2"])
        }));
        assert_eq!(m.list(), &list(&[("u1", &["1", "1b"]), ("u3", &["3"])]));
    }

    #[test]
    fn a_key_stays_while_other_metas_remain_and_goes_with_the_last() {
        let mut m = Mirror::default();
        m.sync_state(list(&[("u1", &["a", "b"])]));
        let mut d = PresenceDiff::default();
        d.leaves.insert("u1".into(), entry(&["a"]));
        m.sync_diff(d);
        assert_eq!(refs(&m, "u1"), vec!["b"]);
        let mut d = PresenceDiff::default();
        d.leaves.insert("u1".into(), entry(&["b"]));
        m.sync_diff(d);
        assert!(m.list().is_empty());
    }

    #[test]
    fn joins_apply_before_leaves_so_an_update_keeps_the_key() {
        let mut m = Mirror::default();
        m.sync_state(list(&[("u1", &["old"]), ("u2", &["x"])]));
        let mut d = PresenceDiff::default();
        d.joins.insert("u1".into(), entry(&["new"]));
        d.leaves.insert("u1".into(), entry(&["old"]));
        let events = m.sync_diff(d);
        assert_eq!(refs(&m, "u1"), vec!["new"]);
        assert!(
            matches!(&events[0], Event::Join { current: Some(c), .. } if c == &entry(&["old"]))
        );
    }

    #[test]
    fn a_join_puts_unrelated_current_metas_in_front() {
        let mut m = Mirror::default();
        m.sync_state(list(&[("u1", &["a", "b"])]));
        let mut d = PresenceDiff::default();
        d.joins.insert("u1".into(), entry(&["b", "c"]));
        m.sync_diff(d);
        assert_eq!(refs(&m, "u1"), vec!["a", "b", "c"]);
    }

    #[test]
    fn leaves_for_unknown_keys_are_ignored_and_odd_keys_are_fine() {
        let mut m = Mirror::default();
        let mut d = PresenceDiff::default();
        d.leaves.insert("ghost".into(), entry(&["z"]));
        d.joins.insert("__proto__".into(), entry(&["p"]));
        d.joins.insert("constructor".into(), entry(&["c"]));
        let events = m.sync_diff(d);
        assert_eq!(events.len(), 2);
        assert_eq!(m.list().len(), 2);
    }

    #[test]
    fn diffs_wait_for_the_state_of_the_current_join() {
        let mut p = ChannelPresence::default();
        let mut d = PresenceDiff::default();
        d.joins.insert("u2".into(), entry(&["2"]));
        assert!(p.on_diff("1", d).is_none(), "no state yet: buffered");
        p.on_state("1", list(&[("u1", &["1"])]));
        assert_eq!(
            p.list().len(),
            2,
            "the buffered diff is applied after the state"
        );
        // After a rejoin (new join_ref), diffs wait again for a fresh state.
        let mut d = PresenceDiff::default();
        d.leaves.insert("u1".into(), entry(&["1"]));
        assert!(p.on_diff("5", d).is_none());
        assert_eq!(p.list().len(), 2);
        p.on_state("5", list(&[("u1", &["1"]), ("u2", &["2"])]));
        assert_eq!(
            p.list().len(),
            1,
            "the leave applied after the rejoin state"
        );
        let mut d = PresenceDiff::default();
        d.joins.insert("u3".into(), entry(&["3"]));
        assert!(p.on_diff("5", d).is_some());
    }
}
