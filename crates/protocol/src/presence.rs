//! The `presence_state` and `presence_diff` payloads, as Phoenix writes them.
//!
//! `presence_state` is `{"<key>": {"metas": [meta, …]}, …}`; `presence_diff` is
//! `{"joins": <state>, "leaves": <state>}`, both maps always present. Each meta is
//! the application's object plus `phx_ref` (16 URL-safe characters), and after an
//! update also `phx_ref_prev`. Facts from `phoenix/lib/phoenix/presence.ex` and
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

/// One key's presence: its metas (one per connection), in tracking order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// One meta per tracked connection of this key.
    pub metas: Vec<Meta>,
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

    /// Adds one joining meta under `key`.
    pub fn add_join(&mut self, key: impl Into<String>, meta: Meta) {
        self.joins.entry(key.into()).or_default().metas.push(meta);
    }

    /// Adds one leaving meta under `key`.
    pub fn add_leave(&mut self, key: impl Into<String>, meta: Meta) {
        self.leaves.entry(key.into()).or_default().metas.push(meta);
    }
}
