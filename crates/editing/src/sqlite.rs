//! The embedded store: one SQLite file (bundled SQLite, WAL), the default of
//! phx-server. Each node's file is its own; changes are announced by this
//! process as it makes them (a write by another program is not seen).

use std::str::FromStr;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite};
use tokio::sync::broadcast;

use crate::error::RecordsError;
use crate::record::{assemble, Change, Cursor, Fields, Health, Op, Page, Record, Records};
use crate::store::{Pooled, INNER_TIMEOUT};

/// Records in a SQLite database; cheap to clone (clones share the pool).
/// See [`Records`] for an example.
#[derive(Clone)]
pub struct SqliteRecords {
    db: Pooled<Sqlite>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const COLUMNS: &str = "id, version, record, updated_by, rowid";

const COUNT: &str = "SELECT count(*) FROM phx_records WHERE kind = ?";

/// A record and its position in the list (its rowid).
fn record_of(row: &SqliteRow) -> Result<(Record, i64), sqlx::Error> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    let text: String = row.try_get("record")?;
    let by: Option<String> = row.try_get("updated_by")?;
    let fields = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut record = assemble(id, version, fields);
    if let Some(by) = by {
        record.insert("updated_by".to_owned(), Value::String(by));
    }
    Ok((record, row.try_get("rowid")?))
}

fn json_text(fields: &Fields) -> String {
    Value::Object(fields.clone()).to_string()
}

impl SqliteRecords {
    /// Opens (creating it when missing) the database of `url`
    /// (`sqlite://phx.db`, `sqlite:///var/lib/phx/phx.db`, `sqlite::memory:`)
    /// and applies the migrations.
    pub async fn connect(url: &str) -> Result<SqliteRecords, RecordsError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| RecordsError::Unavailable(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(INNER_TIMEOUT);
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if memory {
            // One connection, kept forever: a memory database lives as long as it.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        }
        .acquire_timeout(INNER_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(RecordsError::from_db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| RecordsError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(SqliteRecords {
            db: Pooled::new(pool),
        })
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
                sqlx::query("INSERT OR IGNORE INTO phx_records (kind, id, record) VALUES (?, ?, ?)")
                    .bind(kind)
                    .bind(id)
                    .bind(json_text(&fields))
                    .execute(&self.db.pool)
                    .await
                    .map(drop)
                    .map_err(RecordsError::from_db)
            })
            .await
    }
}

impl Records for SqliteRecords {
    async fn load(&self, kind: &str, id: &str) -> Result<Record, RecordsError> {
        let sql = format!("SELECT {COLUMNS} FROM phx_records WHERE kind = ? AND id = ?");
        let call = self.db.record(&sql, kind, id, record_of);
        self.db.guard.run(call).await
    }

    async fn create(
        &self,
        kind: &str,
        fields: Fields,
        by: &str,
        max: u64,
    ) -> Result<Record, RecordsError> {
        let record = self
            .db
            .guard
            .run(async {
                let mut tx = self.db.pool.begin().await.map_err(RecordsError::from_db)?;
                let max = i64::try_from(max).unwrap_or(i64::MAX);
                let done = sqlx::query(
                    "INSERT INTO phx_records (kind, record, updated_by) \
                     SELECT ?1, ?2, ?3 WHERE (SELECT count(*) FROM phx_records WHERE kind = ?1) < ?4",
                )
                .bind(kind)
                .bind(json_text(&fields))
                .bind((!by.is_empty()).then_some(by))
                .bind(max)
                .execute(&mut *tx)
                .await
                .map_err(RecordsError::from_db)?;
                if done.rows_affected() == 0 {
                    return Err(RecordsError::Full(u64::try_from(max).unwrap_or(0)));
                }
                let row = sqlx::query(&format!("SELECT {COLUMNS} FROM phx_records WHERE rowid = ?"))
                    .bind(done.last_insert_rowid())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(RecordsError::from_db)?;
                let (record, _) = record_of(&row).map_err(RecordsError::from_db)?;
                tx.commit().await.map_err(RecordsError::from_db)?;
                Ok(record)
            })
            .await?;
        self.announce(Op::Created, kind, &record);
        Ok(record)
    }

    async fn save(
        &self,
        kind: &str,
        id: &str,
        fields: Fields,
        version: i64,
        by: &str,
    ) -> Result<Record, RecordsError> {
        let record = self
            .db
            .guard
            .run(async {
                let mut tx = self.db.pool.begin().await.map_err(RecordsError::from_db)?;
                let done = sqlx::query(
                    "UPDATE phx_records SET record = ?, updated_by = ? \
                     WHERE kind = ? AND id = ? AND version = ?",
                )
                .bind(json_text(&fields))
                .bind((!by.is_empty()).then_some(by))
                .bind(kind)
                .bind(id)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(RecordsError::from_db)?;
                let row = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM phx_records WHERE kind = ? AND id = ?"
                ))
                .bind(kind)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(RecordsError::from_db)?
                .ok_or(RecordsError::NotFound)?;
                let (record, _) = record_of(&row).map_err(RecordsError::from_db)?;
                if done.rows_affected() == 0 {
                    return Err(RecordsError::Conflict {
                        expected: version,
                        stored: Box::new(record),
                    });
                }
                tx.commit().await.map_err(RecordsError::from_db)?;
                Ok(record)
            })
            .await?;
        self.announce(Op::Updated, kind, &record);
        Ok(record)
    }

    async fn delete(&self, kind: &str, id: &str) -> Result<(), RecordsError> {
        self.db
            .guard
            .run(async {
                let done = sqlx::query("DELETE FROM phx_records WHERE kind = ? AND id = ?")
                    .bind(kind)
                    .bind(id)
                    .execute(&self.db.pool)
                    .await
                    .map_err(RecordsError::from_db)?;
                if done.rows_affected() == 0 {
                    return Err(RecordsError::NotFound);
                }
                Ok(())
            })
            .await?;
        self.db.guard.announce(Change {
            op: Op::Deleted,
            kind: kind.to_owned(),
            id: id.to_owned(),
            ours: true,
        });
        Ok(())
    }

    async fn page(
        &self,
        kind: &str,
        from: Option<Cursor>,
        size: u32,
    ) -> Result<Page, RecordsError> {
        let rows = format!(
            "SELECT {COLUMNS} FROM phx_records WHERE kind = ? AND rowid < ? \
             ORDER BY rowid DESC LIMIT ?"
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
        false
    }
}

impl SqliteRecords {
    fn announce(&self, op: Op, kind: &str, record: &Record) {
        if let Some(id) = record.get("id").and_then(Value::as_str) {
            self.db.guard.announce(Change {
                op,
                kind: kind.to_owned(),
                id: id.to_owned(),
                ours: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        v.as_object().cloned().unwrap_or_default()
    }

    #[tokio::test]
    async fn versions_conflicts_ids_limits_and_pages() {
        let db = SqliteRecords::connect("sqlite::memory:").await.unwrap();
        let mut changes = db.changes();
        db.seed("entity", "1", fields(json!({"title": "seeded"})))
            .await
            .unwrap();
        db.seed("entity", "7", fields(json!({"title": "seven"})))
            .await
            .unwrap();
        let one = db.load("entity", "1").await.unwrap();
        assert_eq!(
            (one["title"].clone(), one["version"].clone()),
            (json!("seeded"), json!(1))
        );
        let created = db
            .create("entity", fields(json!({"title": "new"})), "ann", 10)
            .await
            .unwrap();
        assert_eq!(created["id"], "8", "past every numeric id of the kind");
        assert_eq!(changes.recv().await.unwrap().op, Op::Created);
        let saved = db
            .save("entity", "1", fields(json!({"title": "b"})), 1, "ann")
            .await
            .unwrap();
        assert_eq!(saved["version"], 2);
        let stale = db
            .save("entity", "1", fields(json!({"title": "c"})), 1, "bob")
            .await;
        assert!(
            matches!(&stale, Err(RecordsError::Conflict { stored, .. }) if stored["title"] == "b"),
            "{stale:?}"
        );
        assert_eq!(
            db.load("entity", "1").await.unwrap()["title"],
            "b",
            "nothing written"
        );
        sqlx::query(
            "UPDATE phx_records SET record = json_set(record, '$.title', 'outside') WHERE id = '1'",
        )
        .execute(&db.db.pool)
        .await
        .unwrap();
        assert_eq!(
            db.load("entity", "1").await.unwrap()["version"],
            3,
            "any UPDATE raises the version"
        );
        assert_eq!(
            db.create("entity", Fields::new(), "x", 3).await,
            Err(RecordsError::Full(3))
        );
        let first = db.page("entity", None, 2).await.unwrap();
        assert_eq!(first.total, 3);
        assert_eq!(
            first
                .records
                .iter()
                .map(|r| r["id"].clone())
                .collect::<Vec<_>>(),
            vec![json!("8"), json!("7")]
        );
        let rest = db.page("entity", first.next, 2).await.unwrap();
        assert_eq!((rest.records.len(), rest.next), (1, None));
        db.delete("entity", "8").await.unwrap();
        assert_eq!(db.delete("entity", "8").await, Err(RecordsError::NotFound));
        assert_eq!(db.load("entity", "8").await, Err(RecordsError::NotFound));
        let again = db.create("entity", Fields::new(), "x", 10).await.unwrap();
        assert_eq!(again["id"], "9", "ids are never given twice");
        assert_eq!(db.health(), Health::Up);
    }
}
