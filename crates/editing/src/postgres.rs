//! The shared store: PostgreSQL, one database for every node of a cluster.
//! Ids, versions and change notifications are the database's (triggers the
//! migrations install), so a change made by any program — psql, a backend, a
//! migration — reaches every node through `LISTEN phx_records`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::broadcast;

use crate::error::RecordsError;
use crate::record::{assemble, Change, Cursor, Fields, Health, Op, Page, Record, Records};
use crate::store::{Guard, Pooled, INNER_TIMEOUT};

/// What the notify trigger says of a change (`phx_records` channel).
#[derive(Deserialize)]
struct Notified {
    op: String,
    kind: String,
    id: String,
    #[serde(default)]
    by: String,
}

/// The `phx.origin` of phx-editing's own writes: the notification then says
/// `"by": "phx-editing"`, and the editors are not told twice.
const ORIGIN: &str = "phx-editing";

/// The longest wait between two attempts to listen again after losing the
/// connection.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

const COLUMNS: &str = "id, version, record, updated_by, position";

const COUNT: &str = "SELECT count(*) FROM phx_records WHERE kind = $1";

/// How long the change listener waits before checking that its connection
/// still hears (a notification it sends itself).
const QUIET: Duration = Duration::from_secs(3);

/// The listener's own liveness notification.
const PING: &str = r#"{"op":"PING"}"#;

/// Records in PostgreSQL; cheap to clone (clones share the pool).
///
/// ```no_run
/// use phx_editing::{Records, RecordsError, PgRecords};
///
/// # async fn run() -> Result<(), RecordsError> {
/// let db = PgRecords::connect("postgres://phx@10.0.0.7:5432/phx").await?;
/// // An UPDATE made by psql or another program reaches every node as a change.
/// let mut changes = db.changes();
/// while let Ok(change) = changes.recv().await {
///     println!("{} {}:{} (ours: {})", change.op.event(), change.kind, change.id, change.ours);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgRecords {
    db: Pooled<Postgres>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A record and its position in the list.
fn record_of(row: &PgRow) -> Result<(Record, i64), sqlx::Error> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    let Json(fields): Json<Value> = row.try_get("record")?;
    let by: Option<String> = row.try_get("updated_by")?;
    let mut record = assemble(id, version, fields);
    if let Some(by) = by {
        record.insert("updated_by".to_owned(), Value::String(by));
    }
    Ok((record, row.try_get("position")?))
}

impl PgRecords {
    /// Connects to `url` (`postgres://user@host:port/db`), applies the
    /// migrations, and starts listening for changes and probing health.
    pub async fn connect(url: &str) -> Result<PgRecords, RecordsError> {
        // The server gives up on a statement, and the pool on a connection,
        // before the 5 s bound on a call: a call is then rarely cancelled
        // half-way (which could leave a pooled connection mid-transaction).
        let options = PgConnectOptions::from_str(url)
            .map_err(RecordsError::from_db)?
            .options([("statement_timeout", "4s")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(INNER_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(RecordsError::from_db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| RecordsError::Unavailable(format!("migrations failed: {e}")))?;
        let store = PgRecords {
            db: Pooled::new(pool),
        };
        tokio::spawn(listen(options, store.db.guard.clone()));
        Ok(store)
    }

    /// How many records `kind` holds.
    pub async fn count(&self, kind: &str) -> Result<u64, RecordsError> {
        self.db.count(COUNT, kind).await
    }

    /// Stores a record with the given id unless one exists.
    pub async fn seed(&self, kind: &str, id: &str, fields: Fields) -> Result<(), RecordsError> {
        self.db
            .guard
            .run(async {
                sqlx::query(
                    "INSERT INTO phx_records (kind, id, record) VALUES ($1, $2, $3) \
                     ON CONFLICT (kind, id) DO NOTHING",
                )
                .bind(kind)
                .bind(id)
                .bind(Json(Value::Object(fields)))
                .execute(&self.db.pool)
                .await
                .map(drop)
                .map_err(RecordsError::from_db)
            })
            .await
    }

    /// A transaction whose writes say they are phx-editing's, by `by`.
    async fn ours(&self, by: &str) -> Result<Transaction<'static, Postgres>, RecordsError> {
        let mut tx = self.db.pool.begin().await.map_err(RecordsError::from_db)?;
        sqlx::query("SELECT set_config('phx.origin', $1, true), set_config('phx.user', $2, true)")
            .bind(ORIGIN)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(RecordsError::from_db)?;
        Ok(tx)
    }
}

impl Records for PgRecords {
    async fn load(&self, kind: &str, id: &str) -> Result<Record, RecordsError> {
        self.db.guard.run(self.load_in_pool(kind, id)).await
    }

    async fn create(
        &self,
        kind: &str,
        fields: Fields,
        by: &str,
        max: u64,
    ) -> Result<Record, RecordsError> {
        self.db.guard
            .run(async {
                let mut tx = self.ours(by).await?;
                let max = i64::try_from(max).unwrap_or(i64::MAX);
                let row = sqlx::query(&format!(
                    "INSERT INTO phx_records (kind, record, updated_by) \
                     SELECT $1, $2, $3 WHERE (SELECT count(*) FROM phx_records WHERE kind = $1) < $4 \
                     RETURNING {COLUMNS}"
                ))
                .bind(kind)
                .bind(Json(Value::Object(fields)))
                .bind((!by.is_empty()).then_some(by))
                .bind(max)
                .fetch_optional(&mut *tx)
                .await
                .map_err(RecordsError::from_db)?
                .ok_or(RecordsError::Full(u64::try_from(max).unwrap_or(0)))?;
                let (record, _) = record_of(&row).map_err(RecordsError::from_db)?;
                tx.commit().await.map_err(RecordsError::from_db)?;
                Ok(record)
            })
            .await
    }

    async fn save(
        &self,
        kind: &str,
        id: &str,
        fields: Fields,
        version: i64,
        by: &str,
    ) -> Result<Record, RecordsError> {
        self.db.guard
            .run(async {
                let mut tx = self.ours(by).await?;
                let row = sqlx::query(&format!(
                    "UPDATE phx_records SET record = $3 WHERE kind = $1 AND id = $2 AND version = $4 \
                     RETURNING {COLUMNS}"
                ))
                .bind(kind)
                .bind(id)
                .bind(Json(Value::Object(fields)))
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(RecordsError::from_db)?;
                let Some(row) = row else {
                    drop(tx);
                    let stored = self.load_in_pool(kind, id).await?;
                    return Err(RecordsError::Conflict {
                        expected: version,
                        stored: Box::new(stored),
                    });
                };
                let (record, _) = record_of(&row).map_err(RecordsError::from_db)?;
                tx.commit().await.map_err(RecordsError::from_db)?;
                Ok(record)
            })
            .await
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), RecordsError> {
        self.db
            .guard
            .run(async {
                let mut tx = self.ours("").await?;
                let done = sqlx::query("DELETE FROM phx_records WHERE kind = $1 AND id = $2")
                    .bind(kind)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(RecordsError::from_db)?;
                if done.rows_affected() == 0 {
                    return Err(RecordsError::NotFound);
                }
                tx.commit().await.map_err(RecordsError::from_db)
            })
            .await
    }

    async fn page(
        &self,
        kind: &str,
        from: Option<Cursor>,
        size: u32,
    ) -> Result<Page, RecordsError> {
        let rows = format!(
            "SELECT {COLUMNS} FROM phx_records WHERE kind = $1 AND position < $2 \
             ORDER BY position DESC LIMIT $3"
        );
        self.db
            .page(&rows, COUNT, kind, from, size, record_of)
            .await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.db.guard.changes()
    }

    fn health(&self) -> Health {
        self.db.guard.health()
    }

    fn shared(&self) -> bool {
        true
    }
}

impl PgRecords {
    /// A record, read outside any transaction (not bounded by itself).
    async fn load_in_pool(&self, kind: &str, id: &str) -> Result<Record, RecordsError> {
        let sql = format!("SELECT {COLUMNS} FROM phx_records WHERE kind = $1 AND id = $2");
        self.db.record(&sql, kind, id, record_of).await
    }
}

/// Follows `LISTEN phx_records` on a connection of its own (never one of the
/// pool's, which a cancelled call could have left inside a transaction, where
/// LISTEN would never take effect), reconnecting with a backoff (0.25 s
/// doubling to 1 s) when it is lost. What is changed while no connection
/// listens is not announced (at most once).
async fn listen(options: PgConnectOptions, guard: Guard) {
    guard.set_following(false);
    let mut backoff = Duration::from_millis(250);
    loop {
        if guard.closed() {
            return;
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(INNER_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options.clone());
        let listener = match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen("phx_records").await {
                Ok(()) => Some(listener),
                Err(err) => {
                    tracing::warn!(%err, "LISTEN phx_records failed");
                    None
                }
            },
            Err(err) => {
                tracing::warn!(%err, "cannot connect to listen for record changes");
                None
            }
        };
        if let Some(mut listener) = listener {
            guard.set_following(true);
            if backoff > Duration::from_millis(250) {
                tracing::warn!("listening for record changes again (changes made meanwhile were not announced)");
            }
            backoff = Duration::from_millis(250);
            guard.mark_up();
            // Liveness: after a quiet period the listener notifies itself on
            // its own connection; no echo within the next period means the
            // connection no longer hears (reconnect).
            let mut pinged = false;
            loop {
                let got = match tokio::time::timeout(QUIET, listener.try_recv()).await {
                    Ok(got) => got,
                    Err(_) if pinged => {
                        tracing::warn!("the LISTEN connection stopped hearing; reconnecting");
                        break;
                    }
                    Err(_) => {
                        let ping = sqlx::query("SELECT pg_notify('phx_records', $1)")
                            .bind(PING)
                            .execute(&mut listener)
                            .await;
                        if let Err(err) = ping {
                            tracing::warn!(%err, "the LISTEN connection failed its liveness ping");
                            break;
                        }
                        pinged = true;
                        continue;
                    }
                };
                pinged = false;
                // try_recv: Ok(None) when the connection was lost (then
                // notifications may have been missed); reconnect explicitly.
                match got {
                    Ok(Some(note)) if note.payload() == PING => {}
                    Ok(Some(note)) => match serde_json::from_str::<Notified>(note.payload()) {
                        Ok(n) => match Op::from_sql(&n.op) {
                            Some(op) => guard.announce(Change {
                                op,
                                kind: n.kind,
                                id: n.id,
                                ours: n.by == ORIGIN,
                            }),
                            None => tracing::warn!(op = %n.op, "unknown change notified"),
                        },
                        Err(err) => tracing::warn!(%err, "unreadable change notification"),
                    },
                    Ok(None) => {
                        tracing::warn!(
                            "lost the LISTEN connection; changes made meanwhile are not announced"
                        );
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(%err, "LISTEN connection failed");
                        break;
                    }
                }
            }
        }
        guard.set_following(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
