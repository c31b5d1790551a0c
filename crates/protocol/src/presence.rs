//! The `presence_state` and `presence_diff` payloads, as Phoenix writes them.
//!
//! `presence_state` is `{"<key>": {"metas": [meta, …], …}, …}`; `presence_diff` is
//! `{"joins": <state>, "leaves": <state>}`, both maps always present. Each meta is
//! the application's object plus `phx_ref` (16 URL-safe characters), and after an
//! update also `phx_ref_prev`; an entry may carry keys beside `metas` that the
//! application's `fetch/2` added. Facts from `phoenix/lib/phoenix/presence.ex` and
//! `phoenix_pubsub/lib/phoenix/tracker/shard.ex` (v1.8.12, v2.2.0).
//!
//! ```
//! use phx_protocol::presence::{Meta, PresenceDiff};
//!
//! let mut diff = PresenceDiff::default();
//! diff.add_join("alice", Meta::new("F1", serde_json::json!({"device": "phone"})));
//! let json = serde_json::to_string(&diff).unwrap();
//! assert_eq!(json, r#"{"joins":{"alice":{"metas":[{"device":"phone","phx_ref":"F1"}]}},"leaves":{}}"#);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One connection's presence metadata: the application's fields plus the refs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The application's fields (`online_at`, `device`, …), sorted by key.
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
    /// This presence's unique ref.
    pub phx_ref: String,
    /// The ref this presence had before its last update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phx_ref_prev: Option<String>,
}

impl Meta {
    /// A meta from an application value (its fields if it is an object; otherwise none).
    pub fn new(phx_ref: impl Into<String>, fields: Value) -> Meta {
        let fields = match fields {
            Value::Object(map) => map
                .into_iter()
                .filter(|(k, _)| k != "phx_ref" && k != "phx_ref_prev")
                .collect(),
            _ => BTreeMap::new(),
        };
        Meta {
            fields,
            phx_ref: phx_ref.into(),
            phx_ref_prev: None,
        }
    }

    /// The application's fields as a JSON object.
    pub fn fields_value(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<_, _>>(),
        )
    }
}

/// One key's presence: its metas (one per connection) and any keys an application
/// put next to them.
///
/// Phoenix's `fetch/2` callback may add keys beside `metas` (a `user` record loaded
/// once per key, say); they travel in `presence_state` and in both halves of
/// `presence_diff`, so they are kept here in [`extra`](PresenceEntry::extra) and
/// written next to `metas`, every key in sorted order.
///
/// ```
/// use phx_protocol::presence::{Meta, PresenceEntry};
///
/// let mut entry = PresenceEntry::new(vec![Meta::new("F1", serde_json::json!({}))]);
/// entry.extra.insert("user".into(), serde_json::json!({"name": "Ann"}));
/// let json = serde_json::to_string(&entry).unwrap();
/// assert_eq!(json, r#"{"metas":[{"phx_ref":"F1"}],"user":{"name":"Ann"}}"#);
/// assert_eq!(serde_json::from_str::<PresenceEntry>(&json).unwrap(), entry);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceEntry {
    /// One meta per tracked connection of this key.
    pub metas: Vec<Meta>,
    /// The keys beside `metas` (never `metas` itself), sorted by name.
    pub extra: BTreeMap<String, Value>,
}

impl PresenceEntry {
    /// An entry with these metas and no extra keys.
    pub fn new(metas: Vec<Meta>) -> PresenceEntry {
        PresenceEntry {
            metas,
            extra: BTreeMap::new(),
        }
    }
}

impl Serialize for PresenceEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.extra.len() + 1))?;
        let mut metas_written = false;
        for (k, v) in self.extra.iter().filter(|(k, _)| *k != "metas") {
            if !metas_written && k.as_str() > "metas" {
                map.serialize_entry("metas", &self.metas)?;
                metas_written = true;
            }
            map.serialize_entry(k, v)?;
        }
        if !metas_written {
            map.serialize_entry("metas", &self.metas)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PresenceEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PresenceEntry, D::Error> {
        struct EntryVisitor;
        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = PresenceEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a presence {"metas": [...], ...}"#)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PresenceEntry, A::Error> {
                let mut metas = None;
                let mut extra = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "metas" {
                        metas = Some(map.next_value::<Vec<Meta>>()?);
                    } else {
                        let value = map.next_value::<Value>()?;
                        extra.insert(key, value);
                    }
                }
                let metas = metas.ok_or_else(|| serde::de::Error::missing_field("metas"))?;
                Ok(PresenceEntry { metas, extra })
            }
        }
        d.deserialize_map(EntryVisitor)
    }
}

/// The `presence_state` payload: key → entry. Keys are always strings.
pub type PresenceState = BTreeMap<String, PresenceEntry>;

/// The `presence_diff` payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// Keys that gained metas.
    pub joins: PresenceState,
    /// Keys that lost metas.
    pub leaves: PresenceState,
}

impl PresenceDiff {
    /// Whether the diff has neither joins nor leaves.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// Every entry of both halves, joins first: where an application attaches the
    /// keys its `fetch/2`-style hook loads (Phoenix runs `fetch` on each half).
    pub fn entries_mut(&mut self) -> impl Iterator<Item = (&String, &mut PresenceEntry)> {
        self.joins.iter_mut().chain(self.leaves.iter_mut())
    }

    /// Adds one joining meta under `key`.
    pub fn add_join(&mut self, key: impl Into<String>, meta: Meta) {
        self.joins.entry(key.into()).or_default().metas.push(meta);
    }

    /// Adds one leaving meta under `key`.
    pub fn add_leave(&mut self, key: impl Into<String>, meta: Meta) {
        self.leaves.entry(key.into()).or_default().metas.push(meta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_beside_metas_are_written_in_sorted_order() {
        let mut entry = PresenceEntry::new(vec![Meta::new("R", json!({"d": 1}))]);
        entry.extra.insert("zone".into(), json!(2));
        entry.extra.insert("avatar".into(), json!(1));
        entry.extra.insert("metas".into(), json!("never written"));
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"avatar":1,"metas":[{"d":1,"phx_ref":"R"}],"zone":2}"#
        );
    }

    #[test]
    fn an_entry_needs_metas() {
        assert!(serde_json::from_str::<PresenceEntry>(r#"{"user":{}}"#).is_err());
        let e: PresenceEntry = serde_json::from_str(r#"{"user":{"n":1},"metas":[]}"#).unwrap();
        assert_eq!(e.extra["user"], json!({"n": 1}));
        assert!(e.metas.is_empty());
    }

    #[test]
    fn both_halves_of_a_diff_carry_their_keys() {
        let text = r#"{"joins":{"7":{"metas":[{"phx_ref":"B","phx_ref_prev":"A"}],"user":"Ann"}},"leaves":{"7":{"metas":[{"phx_ref":"A"}],"user":"Ann"}}}"#;
        let mut diff: PresenceDiff = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&diff).unwrap(), text);
        for (_, entry) in diff.entries_mut() {
            entry.extra.insert("user".into(), json!("Ann B."));
        }
        assert_eq!(diff.joins["7"].extra["user"], json!("Ann B."));
        assert_eq!(diff.leaves["7"].extra["user"], json!("Ann B."));
    }
}
