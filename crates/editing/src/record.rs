//! Records and where they are kept: the [`Records`] trait every store
//! implements, the [`Change`]s a store reports, and the [`Limits`] on what a
//! stranger can make a store keep.

use std::future::Future;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::error::RecordsError;

/// A record as clients see it: its fields plus `id` (a string) and `version`
/// (an integer the store raises on every save).
pub type Record = Map<String, Value>;

/// A record's fields without `id` and `version`: what is stored in `record`.
pub type Fields = Map<String, Value>;

/// One page of a kind's records, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The records of the page, newest first.
    pub records: Vec<Record>,
    /// How many records the kind holds.
    pub total: u64,
    /// Where the next (older) page starts, `None` on the last page.
    pub next: Option<Cursor>,
}

/// Where a page starts: records strictly older than this position. Opaque to
/// clients (sent as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    /// The wire form.
    pub fn encode(self) -> String {
        self.0.to_string()
    }

    /// Reads a cursor a client sent back; `None` when it is not one.
    pub fn decode(text: &str) -> Option<Cursor> {
        text.parse().ok().filter(|n| *n > 0).map(Cursor)
    }
}

/// What happened to a record, as a store reports it once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub op: Op,
    /// The record's kind.
    pub kind: String,
    /// The record's id.
    pub id: String,
    /// Whether phx-editing made the change itself (then the editors were told
    /// already: `saved` or `deleted` on the record's topic).
    pub ours: bool,
}

/// The three changes of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Inserted.
    Created,
    /// Updated (its version was raised).
    Updated,
    /// Deleted.
    Deleted,
}

impl Op {
    /// `created`, `updated` or `deleted`: the event on `events:<kind>`.
    pub fn event(self) -> &'static str {
        match self {
            Op::Created => "created",
            Op::Updated => "updated",
            Op::Deleted => "deleted",
        }
    }

    /// Reads a trigger's `TG_OP` (`INSERT`, `UPDATE`, `DELETE`).
    pub fn from_sql(op: &str) -> Option<Op> {
        match op {
            "INSERT" => Some(Op::Created),
            "UPDATE" => Some(Op::Updated),
            "DELETE" => Some(Op::Deleted),
            _ => None,
        }
    }
}

/// Bounds on what clients can make the store keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest record, in bytes of its JSON fields (default 64 KiB).
    pub max_record_bytes: usize,
    /// The most records one kind may hold (default 10 000).
    pub max_records_per_kind: u64,
    /// Records per page of `events:<kind>` (the join reply and `list`; default 100).
    pub page_size: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_record_bytes: 64 << 10,
            max_records_per_kind: 10_000,
            page_size: 100,
        }
    }
}

/// The database is reachable or not, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last query (or probe) succeeded.
    Up,
    /// The last query (or probe) failed or timed out.
    Down,
}

impl Health {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Where records of every kind are kept. Every method may be called from many
/// channels at once and gives up with [`RecordsError::Unavailable`] after a
/// bounded time. Writes raise `version`; [`Records::changes`] reports every
/// change once.
///
/// Implemented by [`crate::SqliteRecords`] and [`crate::PgRecords`]; any
/// other store with these semantics plugs in the same way.
///
/// ```
/// use phx_editing::{Op, Records, RecordsError, SqliteRecords};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), RecordsError> {
/// let db = SqliteRecords::connect("sqlite::memory:").await?;
/// let mut changes = db.changes();
/// let fields = json!({"title": "draft"}).as_object().cloned().unwrap_or_default();
/// let note = db.create("note", fields.clone(), "ann", 100).await?;
/// assert_eq!((note["version"].clone(), changes.recv().await.unwrap().op), (json!(1), Op::Created));
/// let id = note["id"].as_str().unwrap_or_default();
/// db.save("note", id, fields.clone(), 1, "ann").await?;
/// // A save against a version that is no longer the stored one writes nothing.
/// let stale = db.save("note", id, fields, 1, "bob").await;
/// assert!(matches!(stale, Err(RecordsError::Conflict { expected: 1, .. })));
/// assert_eq!(db.page("note", None, 10).await?.total, 1);
/// # Ok(()) }
/// ```
pub trait Records: Send + Sync + 'static {
    /// The record, or [`RecordsError::NotFound`].
    fn load(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<Record, RecordsError>> + Send;

    /// Stores `fields` as a new record with an id the database chooses, `by`
    /// (an editor's name) as who saved it last; refused with
    /// [`RecordsError::Full`] when the kind holds `max` records.
    fn create(
        &self,
        kind: &str,
        fields: Fields,
        by: &str,
        max: u64,
    ) -> impl Future<Output = Result<Record, RecordsError>> + Send;

    /// Replaces the fields of record `id` if its version is still `version`
    /// (`by` saved it); otherwise [`RecordsError::Conflict`] and nothing is written.
    fn save(
        &self,
        kind: &str,
        id: &str,
        fields: Fields,
        version: i64,
        by: &str,
    ) -> impl Future<Output = Result<Record, RecordsError>> + Send;

    /// Deletes the record, or [`RecordsError::NotFound`].
    fn delete(&self, kind: &str, id: &str)
        -> impl Future<Output = Result<(), RecordsError>> + Send;

    /// A page of the kind's records, newest first, starting after `from`.
    fn page(
        &self,
        kind: &str,
        from: Option<Cursor>,
        size: u32,
    ) -> impl Future<Output = Result<Page, RecordsError>> + Send;

    /// Every change of every record from now on, each reported once on this
    /// node (whoever made it, where the store can see it).
    fn changes(&self) -> broadcast::Receiver<Change>;

    /// The database as last seen.
    fn health(&self) -> Health;

    /// Whether every node of a cluster sees the same records (a shared
    /// database) or each its own (an embedded one).
    fn shared(&self) -> bool;
}

/// Splits a stored row into the record clients see.
pub(crate) fn assemble(id: String, version: i64, fields: Value) -> Record {
    let mut record = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    record.insert("id".to_owned(), Value::String(id));
    record.insert("version".to_owned(), Value::from(version));
    record
}

/// The fields to store: everything but `id`, `version` and `updated_by`
/// (the store's).
pub(crate) fn fields_of(mut params: Map<String, Value>) -> Fields {
    params.remove("id");
    params.remove("version");
    params.remove("updated_by");
    params
}
