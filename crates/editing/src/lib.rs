//! Collaborative editing of records over Phoenix Channels: one editing session
//! per record, an owner who may edit and spectators who watch the owner's
//! unsaved changes live; records kept in SQLite (embedded) or PostgreSQL
//! (shared by a cluster), with versions, conflicts and changes made by other
//! programs announced live.
//!
//! An application mounts an [`Editing`] per kind of record on its endpoint and
//! gets the wire contract of `protocol-spec/editing.md`: `edit:<kind>:<id>`
//! (roles, live form, save against a version, delete, promotion of the next
//! editor) and `events:<kind>` (pages of the list, create, and the created /
//! updated / deleted events), on one node or across a cluster.
//!
//! The modules, one concern each:
//!
//! ```text
//!  channels   EditorChannel, EventsChannel: the Channel trait side
//!  editing    Editing: open, save, delete, create, pages; store changes → events
//!  sync       a session kept in step with the other nodes' sessions
//!  session    the line of editors, the owner's form, seats, typed presence metas
//!  record     Records (the store trait), Change, Page, Limits
//!  store      timeouts, health, Database (the store a URL names)
//!  sqlite     SqliteRecords: the embedded default
//!  postgres   PgRecords: shared, with LISTEN/NOTIFY
//!  error      RecordsError (stores) and Denied (wire replies)
//! ```
//!
//! ```no_run
//! use phx_editing::{Database, Editing};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let db = Database::connect("sqlite://notes.db").await?;
//!     let notes = Editing::new("note", db);
//!     let endpoint = notes.mount(phx_runtime::Endpoint::builder()).build();
//!     notes.start(endpoint.pubsub());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//!     phx_runtime::serve(listener, &endpoint, phx_runtime::shutdown_signal()).await?;
//!     Ok(())
//! }
//! ```

#![deny(missing_docs)]

mod channels;
mod editing;
mod error;
mod postgres;
mod record;
mod session;
mod sqlite;
mod store;
mod sync;

pub use channels::{EditorChannel, EventsChannel};
pub use editing::{Editing, Opened, Validator};
pub use error::{Denied, FieldErrors, RecordsError};
pub use postgres::PgRecords;
pub use record::{Change, Cursor, Fields, Health, Limits, Op, Page, Record, Records};
pub use session::{Editor, EditorMeta, Notice, Notify, Role, Seat};
pub use sqlite::SqliteRecords;
pub use store::{Database, DB_TIMEOUT};
