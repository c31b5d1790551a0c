//! One replica's entries, indexed by topic, and the numbered operations that
//! change them.
//!
//! A replica is the only writer of its own entries. Each change is an [`Op`]; the
//! n-th op a replica makes is op number n, and its [`ReplicaData::clock`] is the
//! number of ops applied. Copies of a replica's data on other nodes therefore
//! converge by applying the same ops in the same order, or by taking a newer
//! whole copy.

use std::collections::{BTreeMap, BTreeSet};

use phx_protocol::presence::Meta;
use serde::{Deserialize, Serialize};

use crate::PresenceError;

/// One change a replica makes to its own entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// An entry joins, or replaces the meta of the same entry.
    Join {
        /// The topic.
        topic: String,
        /// The connection, as numbered by the owning node.
        conn: u64,
        /// The presence key.
        key: String,
        /// Its meta.
        meta: Meta,
    },
    /// An entry leaves.
    Leave {
        /// The topic.
        topic: String,
        /// The connection.
        conn: u64,
        /// The presence key.
        key: String,
    },
}

impl Op {
    fn topic(&self) -> &str {
        match self {
            Op::Join { topic, .. } | Op::Leave { topic, .. } => topic,
        }
    }
}

/// Ops `start + 1 ..= start + ops.len()` of one replica.
///
/// ```
/// use phx_presence::{Delta, Meta, Op};
/// use serde_json::json;
///
/// let join = |conn: u64| Op::Join {
///     topic: "room:1".into(),
///     conn,
///     key: format!("user-{conn}"),
///     meta: Meta::new(format!("ref-{conn}"), json!({})),
/// };
/// let delta = Delta { start: 40, ops: (1..=3).map(join).collect() };
/// assert_eq!(delta.end(), 43);
/// // Cut to a message budget, the pieces follow on from one another.
/// let pieces = delta.split(1);
/// let starts: Vec<u64> = pieces.iter().map(|d| d.start).collect();
/// assert_eq!(starts, [40, 41, 42]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The replica's clock before the first op.
    pub start: u64,
    /// The ops, in order.
    pub ops: Vec<Op>,
}

/// The largest clock a message may carry. Clocks count ops, so no honest node
/// gets near it; a larger one (a forged or corrupt message) is refused, so that
/// clock arithmetic never overflows.
pub const MAX_CLOCK: u64 = 1 << 62;

impl Delta {
    /// The clock after the last op (saturating: a delta from the wire has had
    /// its clocks checked against [`MAX_CLOCK`] before it is applied).
    pub fn end(&self) -> u64 {
        let len = u64::try_from(self.ops.len()).unwrap_or(u64::MAX);
        self.start.saturating_add(len)
    }

    /// Refuses a delta whose clocks are out of range.
    pub(crate) fn check(&self) -> Result<(), PresenceError> {
        let len = u64::try_from(self.ops.len()).unwrap_or(u64::MAX);
        match self.start.checked_add(len) {
            Some(end) if end <= MAX_CLOCK => Ok(()),
            _ => Err(PresenceError::Wire(format!(
                "delta from {} with {} ops is out of range",
                self.start,
                self.ops.len()
            ))),
        }
    }

    /// Splits the delta into consecutive deltas whose encoding stays within
    /// `budget` bytes each (an op larger than the budget goes alone).
    pub fn split(self, budget: usize) -> Vec<Delta> {
        let mut start = self.start;
        cut(self.ops, budget, encoded_len)
            .into_iter()
            .map(|ops| {
                let delta = Delta { start, ops };
                start = delta.end();
                delta
            })
            .collect()
    }
}

/// Cuts `items` into consecutive runs whose sizes (`len` of each) add up to at
/// most `budget` per run; an item larger than the budget makes a run alone.
/// Always at least one run (empty when there are no items): the one splitter
/// of heartbeat deltas, transfer deltas and whole-state parts.
fn cut<T>(
    items: impl IntoIterator<Item = T>,
    budget: usize,
    len: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut size = 0;
    for item in items {
        let n = len(&item);
        if !run.is_empty() && size + n > budget {
            runs.push(std::mem::take(&mut run));
            size = 0;
        }
        size += n;
        run.push(item);
    }
    if !run.is_empty() || runs.is_empty() {
        runs.push(run);
    }
    runs
}

/// The size of a value's JSON encoding plus a separator.
fn encoded_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0) + 1
}

/// Entries of one topic: (connection, key) → (number of the op that added it, meta).
pub(crate) type TopicEntries = BTreeMap<(u64, String), (u64, Meta)>;

/// Presence changes, grouped by topic.
pub(crate) type Diffs = BTreeMap<String, phx_protocol::presence::PresenceDiff>;

/// Everything one replica owns, as of `clock` ops, indexed by topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireData", into = "WireData")]
pub struct ReplicaData {
    clock: u64,
    topics: BTreeMap<String, TopicEntries>,
    len: usize,
}

impl ReplicaData {
    /// The number of ops applied.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no live entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries of one topic.
    pub(crate) fn topic(&self, topic: &str) -> Option<&TopicEntries> {
        self.topics.get(topic)
    }

    /// Whether (topic, conn, key) is a live entry.
    pub(crate) fn contains(&self, topic: &str, conn: u64, key: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|t| t.contains_key(&(conn, key.to_owned())))
    }

    /// The topics with at least one entry.
    pub(crate) fn topic_names(&self) -> impl Iterator<Item = &String> {
        self.topics.keys()
    }

    /// Applies the next op; records what it changes in `diffs` when given.
    /// Refuses (returns false) to go past [`MAX_CLOCK`].
    pub(crate) fn apply(&mut self, op: &Op, diffs: Option<&mut Diffs>) -> bool {
        if self.clock >= MAX_CLOCK {
            return false;
        }
        self.clock += 1;
        match op {
            Op::Join {
                topic,
                conn,
                key,
                meta,
            } => {
                let entries = self.topics.entry(topic.clone()).or_default();
                let old = entries.insert((*conn, key.clone()), (self.clock, meta.clone()));
                if old.is_none() {
                    self.len += 1;
                }
                if let Some(diffs) = diffs {
                    let diff = diffs.entry(topic.clone()).or_default();
                    if let Some((_, old)) = old {
                        diff.add_leave(key.clone(), old);
                    }
                    diff.add_join(key.clone(), meta.clone());
                }
            }
            Op::Leave { topic, conn, key } => {
                let Some(entries) = self.topics.get_mut(topic) else {
                    return true;
                };
                let old = entries.remove(&(*conn, key.clone()));
                if entries.is_empty() {
                    self.topics.remove(topic);
                }
                if let Some((_, old)) = old {
                    self.len -= 1;
                    if let Some(diffs) = diffs {
                        diffs
                            .entry(op.topic().to_owned())
                            .or_default()
                            .add_leave(key.clone(), old);
                    }
                }
            }
        }
        true
    }

    /// Applies the part of `delta` that continues this data; returns false when
    /// the delta starts beyond this data's clock (a gap: ops are missing).
    pub(crate) fn apply_delta(&mut self, delta: &Delta, mut diffs: Option<&mut Diffs>) -> bool {
        if delta.start > self.clock {
            return false;
        }
        let skip = usize::try_from(self.clock - delta.start).unwrap_or(usize::MAX);
        for op in delta.ops.iter().skip(skip) {
            if !self.apply(op, diffs.as_deref_mut()) {
                return false;
            }
        }
        true
    }

    /// Adds the entries of `part` (a piece of a state at the same clock, see
    /// [`ReplicaData::chunks`]); entries already present are kept.
    pub(crate) fn absorb(&mut self, part: ReplicaData) {
        self.clock = self.clock.max(part.clock);
        for (topic, entries) in part.topics {
            let mine = self.topics.entry(topic).or_default();
            for (id, value) in entries {
                if let std::collections::btree_map::Entry::Vacant(v) = mine.entry(id) {
                    v.insert(value);
                    self.len += 1;
                }
            }
        }
    }

    /// The state cut into pieces (each with this clock and some entries) whose
    /// encoding stays within `budget` bytes each; a topic too large for one
    /// piece is spread over several. An entry larger than the budget goes alone.
    pub fn chunks(&self, budget: usize) -> Vec<ReplicaData> {
        let entries = self.topics.iter().flat_map(|(topic, entries)| {
            entries
                .iter()
                .map(move |((conn, key), (seq, meta))| (topic, *conn, key, *seq, meta))
        });
        let size = |&(topic, conn, key, seq, meta): &(&String, u64, &String, u64, &Meta)| {
            encoded_len(&WireEntryRef {
                topic,
                conn,
                key,
                seq,
                meta,
            })
        };
        cut(entries, budget, size)
            .into_iter()
            .map(|run| {
                let mut part = ReplicaData {
                    clock: self.clock,
                    ..ReplicaData::default()
                };
                for (topic, conn, key, seq, meta) in run {
                    part.topics
                        .entry(topic.clone())
                        .or_default()
                        .insert((conn, key.clone()), (seq, meta.clone()));
                    part.len += 1;
                }
                part
            })
            .collect()
    }

    /// Every entry as a join (`join = true`) or as a leave.
    pub(crate) fn all_as(&self, join: bool, diffs: &mut Diffs) {
        for (topic, entries) in &self.topics {
            let diff = diffs.entry(topic.clone()).or_default();
            for ((_, key), (_, meta)) in entries {
                if join {
                    diff.add_join(key.clone(), meta.clone());
                } else {
                    diff.add_leave(key.clone(), meta.clone());
                }
            }
        }
    }

    /// The presence changes from `self` to `new`.
    pub(crate) fn compare(&self, new: &ReplicaData, diffs: &mut Diffs) {
        let topics: BTreeSet<&String> = self.topics.keys().chain(new.topics.keys()).collect();
        let empty = TopicEntries::new();
        for topic in topics {
            let old = self.topics.get(topic).unwrap_or(&empty);
            let cur = new.topics.get(topic).unwrap_or(&empty);
            for (id, (_, meta)) in old {
                if cur.get(id).map(|(_, m)| m) != Some(meta) {
                    diffs
                        .entry(topic.clone())
                        .or_default()
                        .add_leave(id.1.clone(), meta.clone());
                }
            }
            for (id, (_, meta)) in cur {
                if old.get(id).map(|(_, m)| m) != Some(meta) {
                    diffs
                        .entry(topic.clone())
                        .or_default()
                        .add_join(id.1.clone(), meta.clone());
                }
            }
        }
    }
}

/// One entry on the wire, borrowed (to measure it).
#[derive(Serialize)]
struct WireEntryRef<'a> {
    topic: &'a str,
    conn: u64,
    key: &'a str,
    seq: u64,
    meta: &'a Meta,
}

/// One entry on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireEntry {
    topic: String,
    conn: u64,
    key: String,
    /// The number of the op that added it.
    seq: u64,
    meta: Meta,
}

/// [`ReplicaData`] on the wire: the clock and a flat list of entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireData {
    clock: u64,
    entries: Vec<WireEntry>,
}

impl From<ReplicaData> for WireData {
    fn from(data: ReplicaData) -> WireData {
        let mut entries = Vec::with_capacity(data.len);
        for (topic, map) in data.topics {
            for ((conn, key), (seq, meta)) in map {
                entries.push(WireEntry {
                    topic: topic.clone(),
                    conn,
                    key,
                    seq,
                    meta,
                });
            }
        }
        WireData {
            clock: data.clock,
            entries,
        }
    }
}

impl TryFrom<WireData> for ReplicaData {
    type Error = PresenceError;

    fn try_from(wire: WireData) -> Result<ReplicaData, PresenceError> {
        if wire.clock > MAX_CLOCK {
            return Err(PresenceError::Wire(format!(
                "clock {} out of range",
                wire.clock
            )));
        }
        let mut data = ReplicaData {
            clock: wire.clock,
            ..ReplicaData::default()
        };
        for e in wire.entries {
            if e.seq == 0 || e.seq > wire.clock {
                return Err(PresenceError::Wire(format!(
                    "entry {:?} numbered {} outside the clock {}",
                    e.key, e.seq, wire.clock
                )));
            }
            let old = data
                .topics
                .entry(e.topic)
                .or_default()
                .insert((e.conn, e.key.clone()), (e.seq, e.meta));
            if old.is_some() {
                return Err(PresenceError::Wire(format!(
                    "entry {:?} listed twice",
                    e.key
                )));
            }
            data.len += 1;
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_fills_each_run_up_to_the_budget_and_lets_a_large_item_go_alone() {
        let runs = cut([3, 4, 2, 9, 1, 1], 7, |n: &usize| *n);
        assert_eq!(runs, vec![vec![3, 4], vec![2], vec![9], vec![1, 1]]);
        let none: Vec<Vec<usize>> = cut(Vec::new(), 7, |n: &usize| *n);
        assert_eq!(none, vec![Vec::<usize>::new()], "one empty run, never none");
    }

    #[test]
    fn split_deltas_follow_on_and_parts_keep_the_clock() {
        let join = |conn: u64| Op::Join {
            topic: "room".to_owned(),
            conn,
            key: format!("user{conn}"),
            meta: Meta::new(format!("ref{conn}"), serde_json::Value::Null),
        };
        let delta = Delta {
            start: 10,
            ops: (0..5).map(join).collect(),
        };
        let one = encoded_len(&join(0));
        let pieces = delta.clone().split(2 * one);
        assert_eq!(
            pieces
                .iter()
                .map(|d| (d.start, d.ops.len()))
                .collect::<Vec<_>>(),
            vec![(10, 2), (12, 2), (14, 1)]
        );
        assert_eq!(
            pieces.into_iter().flat_map(|d| d.ops).collect::<Vec<_>>(),
            delta.ops
        );

        let mut data = ReplicaData::default();
        assert!(data.apply_delta(
            &Delta {
                start: 0,
                ops: (0..5).map(join).collect(),
            },
            None
        ));
        let parts = data.chunks(2 * one + 40);
        assert!(parts.len() > 1, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.clock() == 5));
        assert_eq!(parts.iter().map(|p| p.len).sum::<usize>(), 5);
    }
}
