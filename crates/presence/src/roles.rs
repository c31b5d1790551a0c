//! Collaborative-editing roles. Several people open the same record's edit form;
//! each connection is tracked with a `joined_at` meta field (integer milliseconds).
//! Sorted by `joined_at` — ties broken by the server-assigned `seq` meta field
//! when there is one, then by `phx_ref` — the first is the **owner**,
//! who may edit; everyone else is a **spectator** who sees the owner's changes.
//! When the owner leaves, the next in line becomes owner.
//!
//! ```
//! use phx_presence::{roles, Meta, PresenceEntry, PresenceList};
//! use serde_json::json;
//!
//! let mut list = PresenceList::new();
//! list.insert("bob".into(), PresenceEntry::new(vec![Meta::new("b", json!({"joined_at": 20}))]));
//! list.insert("ann".into(), PresenceEntry::new(vec![Meta::new("a", json!({"joined_at": 10}))]));
//! assert_eq!(roles::owner(&list).unwrap().0, "ann");
//! assert!(matches!(roles::role_of(&list, "b"), Some(roles::Role::Spectator { .. })));
//! ```

use phx_protocol::presence::Meta;

use crate::PresenceList;

/// A connection's role.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// The first in line: may edit.
    Owner,
    /// Read-only; `owner` is the owner's meta.
    Spectator {
        /// The owner's meta.
        owner: Meta,
    },
}

fn number(meta: &Meta, field: &str) -> u64 {
    meta.fields
        .get(field)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(u64::MAX)
}

fn joined_at(meta: &Meta) -> u64 {
    number(meta, "joined_at")
}

/// Every connection (key, meta), first in line first: by `joined_at`, then `seq`
/// (the sequence a server assigns to each editor, the same for every client),
/// then `phx_ref`. A meta without a numeric `joined_at` sorts last.
pub fn sorted(list: &PresenceList) -> Vec<(String, Meta)> {
    let mut all: Vec<(String, Meta)> = list
        .iter()
        .flat_map(|(key, entry)| entry.metas.iter().map(move |m| (key.clone(), m.clone())))
        .collect();
    all.sort_by(|(_, a), (_, b)| {
        joined_at(a)
            .cmp(&joined_at(b))
            .then_with(|| number(a, "seq").cmp(&number(b, "seq")))
            .then_with(|| a.phx_ref.cmp(&b.phx_ref))
    });
    all
}

/// The owner, if anyone is present.
pub fn owner(list: &PresenceList) -> Option<(String, Meta)> {
    sorted(list).into_iter().next()
}

/// Everyone but the owner, in line order.
pub fn spectators(list: &PresenceList) -> Vec<(String, Meta)> {
    sorted(list).into_iter().skip(1).collect()
}

/// The role of the connection whose presence has `phx_ref`.
pub fn role_of(list: &PresenceList, phx_ref: &str) -> Option<Role> {
    let all = sorted(list);
    let position = all.iter().position(|(_, m)| m.phx_ref == phx_ref)?;
    Some(if position == 0 {
        Role::Owner
    } else {
        Role::Spectator {
            owner: all[0].1.clone(),
        }
    })
}

/// When the owner differs between two lists: `Some(new owner)` (`Some(None)` when
/// nobody is left); `None` when ownership did not change.
pub fn owner_changed(
    before: &PresenceList,
    after: &PresenceList,
) -> Option<Option<(String, Meta)>> {
    let (old, new) = (owner(before), owner(after));
    let same = match (&old, &new) {
        (Some((_, a)), Some((_, b))) => a.phx_ref == b.phx_ref,
        (None, None) => true,
        _ => false,
    };
    if same {
        None
    } else {
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnId, PresenceState};
    use serde_json::json;

    fn track(s: &mut PresenceState, key: &str, conn: u64, at: u64, r: &str) {
        s.track(
            "doc:1",
            key,
            ConnId(conn),
            json!({"joined_at": at}),
            r.to_owned(),
        )
        .unwrap();
    }

    #[test]
    fn first_by_joined_at_owns_and_the_next_takes_over() {
        let mut s = PresenceState::new();
        track(&mut s, "bob", 2, 200, "rb");
        track(&mut s, "ann", 1, 100, "ra");
        track(&mut s, "cid", 3, 300, "rc");
        let before = s.list("doc:1");
        assert_eq!(owner(&before).unwrap().0, "ann");
        assert_eq!(
            spectators(&before)
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            vec!["bob", "cid"]
        );
        assert_eq!(role_of(&before, "ra"), Some(Role::Owner));
        assert!(
            matches!(role_of(&before, "rc"), Some(Role::Spectator { owner }) if owner.phx_ref == "ra")
        );
        s.untrack_all(ConnId(1));
        let after = s.list("doc:1");
        assert_eq!(owner_changed(&before, &after).unwrap().unwrap().0, "bob");
        s.untrack_all(ConnId(3));
        assert_eq!(
            owner_changed(&after, &s.list("doc:1")),
            None,
            "a spectator leaving changes nothing"
        );
    }

    #[test]
    fn ties_break_by_phx_ref_and_devices_count_separately() {
        let mut s = PresenceState::new();
        track(&mut s, "zed", 1, 100, "r2");
        track(&mut s, "amy", 2, 100, "r9");
        track(&mut s, "zed", 3, 100, "r1");
        let list = s.list("doc:1");
        assert_eq!(
            sorted(&list)
                .iter()
                .map(|(_, m)| m.phx_ref.as_str())
                .collect::<Vec<_>>(),
            vec!["r1", "r2", "r9"]
        );
        assert_eq!(role_of(&list, "r1"), Some(Role::Owner));
    }

    #[test]
    fn ties_break_by_seq_before_phx_ref() {
        let mut s = PresenceState::new();
        let meta = |seq: u64| json!({"joined_at": 100, "seq": seq});
        s.track("doc:1", "a", ConnId(1), meta(9), "r1".to_owned())
            .unwrap();
        s.track("doc:1", "b", ConnId(2), meta(3), "r2".to_owned())
            .unwrap();
        assert_eq!(owner(&s.list("doc:1")).unwrap().0, "b");
    }

    #[test]
    fn empty_and_unknown() {
        let empty = PresenceList::new();
        assert!(owner(&empty).is_none());
        assert!(role_of(&empty, "x").is_none());
        let mut s = PresenceState::new();
        track(&mut s, "a", 1, 1, "r");
        assert_eq!(owner_changed(&s.list("doc:1"), &empty), Some(None));
    }
}
