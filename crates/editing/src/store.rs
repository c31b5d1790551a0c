//! What both stores share: every database call bounded by [`DB_TIMEOUT`], the
//! database's health as last seen (and a probe that keeps it current), the
//! change feed, the calls both make the same way around their own SQL
//! (`Pooled`), and [`Database`], the store a URL names.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Encode, Executor, FromRow, IntoArguments, Pool, Type};
use tokio::sync::broadcast;

use crate::error::RecordsError;
use crate::postgres::PgRecords;
use crate::record::{Change, Cursor, Fields, Health, Page, Record, Records};
use crate::sqlite::SqliteRecords;

/// The longest any database call may take before it is answered `unavailable`.
pub const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// What the database and the pool are given (statement timeout, acquire
/// timeout, SQLite's busy timeout): less than [`DB_TIMEOUT`], so that a call
/// usually ends by itself rather than being cancelled half-way.
pub(crate) const INNER_TIMEOUT: Duration = Duration::from_secs(4);

/// How often the health probe runs.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How many changes may wait for a slow follower of the change feed.
const CHANGES_CAPACITY: usize = 4096;

/// A store's health flag and change feed; cheap to clone.
#[derive(Clone)]
pub(crate) struct Guard {
    up: Arc<AtomicBool>,
    /// Whether the change feed hears the database (PostgreSQL's LISTEN
    /// connection; always true for a store whose feed is in-process).
    following: Arc<AtomicBool>,
    changes: broadcast::Sender<Change>,
}

impl Guard {
    pub(crate) fn new() -> Guard {
        Guard {
            up: Arc::new(AtomicBool::new(true)),
            following: Arc::new(AtomicBool::new(true)),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
        }
    }

    /// Runs one database call, at most [`DB_TIMEOUT`]; keeps the health flag current.
    pub(crate) async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, RecordsError>>,
    ) -> Result<T, RecordsError> {
        let result = match tokio::time::timeout(DB_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(RecordsError::Unavailable("no answer in 5 s".to_owned())),
        };
        match &result {
            Err(RecordsError::Unavailable(why)) => {
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::error!(%why, "the database is down");
                }
            }
            _ => self.mark_up(),
        }
        result
    }

    /// Whether the store that owns this guard is gone (only its tasks hold it).
    pub(crate) fn closed(&self) -> bool {
        Arc::strong_count(&self.up) <= 2
    }

    pub(crate) fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("the database is up again");
        }
    }

    /// Records whether the change feed currently hears the database. While it
    /// does not, the store counts as down: a change made then would not be
    /// announced, so "up" promises that changes from now on are.
    pub(crate) fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Relaxed);
    }

    pub(crate) fn health(&self) -> Health {
        if self.up.load(Ordering::Relaxed) && self.following.load(Ordering::Relaxed) {
            Health::Up
        } else {
            Health::Down
        }
    }

    pub(crate) fn announce(&self, change: Change) {
        // No receiver is not an error: nobody follows the feed yet.
        let _ = self.changes.send(change);
    }

    pub(crate) fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Probes the database with `probe` every second while `alive` holds.
    pub(crate) fn watch<F, Fut>(&self, probe: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), RecordsError>> + Send,
    {
        let guard = self.clone();
        let weak = Arc::downgrade(&self.up);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if weak.strong_count() <= 1 {
                    // Only this task holds the flag: the store is gone.
                    return;
                }
                let _ = guard.run(probe()).await;
            }
        });
    }
}

/// A store's pool and its [`Guard`], whatever the database: the calls both
/// stores make the same way, each with its own SQL. Cheap to clone.
pub(crate) struct Pooled<DB: sqlx::Database> {
    pub(crate) pool: Pool<DB>,
    pub(crate) guard: Guard,
}

impl<DB: sqlx::Database> Clone for Pooled<DB> {
    fn clone(&self) -> Self {
        Pooled {
            pool: self.pool.clone(),
            guard: self.guard.clone(),
        }
    }
}

/// Reads a record and its position in the list from a row.
pub(crate) type ReadRow<R> = fn(&R) -> Result<(Record, i64), sqlx::Error>;

impl<DB> Pooled<DB>
where
    DB: sqlx::Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    /// Wraps `pool` and starts its health probe (`SELECT 1` every second).
    pub(crate) fn new(pool: Pool<DB>) -> Pooled<DB> {
        let store = Pooled {
            pool,
            guard: Guard::new(),
        };
        let pool = store.pool.clone();
        store.guard.watch(move || {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(drop)
                    .map_err(RecordsError::from_db)
            }
        });
        store
    }

    /// The number `sql` counts, with `kind` as its one parameter; bounded.
    pub(crate) async fn count(&self, sql: &str, kind: &str) -> Result<u64, RecordsError> {
        self.guard
            .run(async {
                let n: i64 = sqlx::query_scalar(sql)
                    .bind(kind)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(RecordsError::from_db)?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }

    /// The one record `sql` selects with `kind` and `id` as its parameters
    /// (not bounded: for use inside a call that is); `NotFound` when none.
    pub(crate) async fn record(
        &self,
        sql: &str,
        kind: &str,
        id: &str,
        read: ReadRow<DB::Row>,
    ) -> Result<Record, RecordsError> {
        let row = sqlx::query(sql)
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(RecordsError::from_db)?
            .ok_or(RecordsError::NotFound)?;
        read(&row)
            .map(|(record, _)| record)
            .map_err(RecordsError::from_db)
    }

    /// A page of `kind`'s records, newest first; bounded. `rows_sql` selects
    /// with the kind, the position to start before and the row limit as its
    /// parameters; `total_sql` counts the kind's records.
    pub(crate) async fn page(
        &self,
        rows_sql: &str,
        total_sql: &str,
        kind: &str,
        from: Option<Cursor>,
        size: u32,
        read: ReadRow<DB::Row>,
    ) -> Result<Page, RecordsError> {
        self.guard
            .run(async {
                // One row more than the page holds tells whether more follow.
                let rows = sqlx::query(rows_sql)
                    .bind(kind)
                    .bind(from.map_or(i64::MAX, |c| c.0))
                    .bind(i64::from(size) + 1)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(RecordsError::from_db)?;
                let total: i64 = sqlx::query_scalar(total_sql)
                    .bind(kind)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(RecordsError::from_db)?;
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                let mut records = Vec::with_capacity(rows.len().min(size));
                let mut last = None;
                for row in rows.iter().take(size) {
                    let (record, position) = read(row).map_err(RecordsError::from_db)?;
                    records.push(record);
                    last = Some(position);
                }
                let next = if rows.len() > size {
                    last.map(Cursor)
                } else {
                    None
                };
                Ok(Page {
                    records,
                    total: u64::try_from(total).unwrap_or(0),
                    next,
                })
            })
            .await
    }
}

/// The store a database URL names: `sqlite:…` or `postgres://…`.
///
/// ```no_run
/// # async fn run() -> Result<(), phx_editing::RecordsError> {
/// let db = phx_editing::Database::connect("sqlite::memory:").await?;
/// assert!(!phx_editing::Records::shared(&db));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub enum Database {
    /// An embedded SQLite file (or memory).
    Sqlite(SqliteRecords),
    /// A PostgreSQL server every node of a cluster shares.
    Postgres(PgRecords),
}

impl Database {
    /// Connects, applies the crate's migrations and starts the health probe
    /// (and, for PostgreSQL, the change listener).
    pub async fn connect(url: &str) -> Result<Database, RecordsError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(PgRecords::connect(url).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Database::Sqlite(SqliteRecords::connect(url).await?))
        } else {
            Err(RecordsError::Unavailable(format!(
                "unsupported database URL {url:?}: use sqlite:… or postgres://…"
            )))
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    /// How many records `kind` holds.
    pub async fn count(&self, kind: &str) -> Result<u64, RecordsError> {
        match self {
            Database::Sqlite(s) => s.count(kind).await,
            Database::Postgres(p) => p.count(kind).await,
        }
    }

    /// Stores a record with the id given (for seeding); nothing when it exists.
    pub async fn seed(&self, kind: &str, id: &str, fields: Fields) -> Result<(), RecordsError> {
        match self {
            Database::Sqlite(s) => s.seed(kind, id, fields).await,
            Database::Postgres(p) => p.seed(kind, id, fields).await,
        }
    }
}

impl Records for Database {
    async fn load(&self, kind: &str, id: &str) -> Result<Record, RecordsError> {
        match self {
            Database::Sqlite(s) => s.load(kind, id).await,
            Database::Postgres(p) => p.load(kind, id).await,
        }
    }

    async fn create(
        &self,
        kind: &str,
        fields: Fields,
        by: &str,
        max: u64,
    ) -> Result<Record, RecordsError> {
        match self {
            Database::Sqlite(s) => s.create(kind, fields, by, max).await,
            Database::Postgres(p) => p.create(kind, fields, by, max).await,
        }
    }

    async fn save(
        &self,
        kind: &str,
        id: &str,
        fields: Fields,
        version: i64,
        by: &str,
    ) -> Result<Record, RecordsError> {
        match self {
            Database::Sqlite(s) => s.save(kind, id, fields, version, by).await,
            Database::Postgres(p) => p.save(kind, id, fields, version, by).await,
        }
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), RecordsError> {
        match self {
            Database::Sqlite(s) => s.delete(kind, id).await,
            Database::Postgres(p) => p.delete(kind, id).await,
        }
    }

    async fn page(
        &self,
        kind: &str,
        from: Option<Cursor>,
        size: u32,
    ) -> Result<Page, RecordsError> {
        match self {
            Database::Sqlite(s) => s.page(kind, from, size).await,
            Database::Postgres(p) => p.page(kind, from, size).await,
        }
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        match self {
            Database::Sqlite(s) => s.changes(),
            Database::Postgres(p) => p.changes(),
        }
    }

    fn health(&self) -> Health {
        match self {
            Database::Sqlite(s) => s.health(),
            Database::Postgres(p) => p.health(),
        }
    }

    fn shared(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }
}
