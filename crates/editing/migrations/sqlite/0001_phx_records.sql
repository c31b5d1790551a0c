-- The records of every kind (see protocol-spec/editing.md, "Stores").
-- `record` holds the fields other than `id` and `version` as JSON text.
CREATE TABLE IF NOT EXISTS phx_records (
    kind TEXT NOT NULL,
    id TEXT,
    record TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(record)),
    version INTEGER NOT NULL DEFAULT 1,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_by TEXT,
    PRIMARY KEY (kind, id)
);

-- The last id the database chose (ids are never given twice).
CREATE TABLE IF NOT EXISTS phx_record_ids (last INTEGER NOT NULL);
INSERT INTO phx_record_ids (last) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM phx_record_ids);

-- An INSERT without an id gets the next number, past every numeric id of its kind.
CREATE TRIGGER IF NOT EXISTS phx_records_id AFTER INSERT ON phx_records
WHEN NEW.id IS NULL
BEGIN
    UPDATE phx_record_ids SET last = MAX(last, (
        SELECT COALESCE(MAX(CAST(id AS INTEGER)), 0) FROM phx_records
        WHERE kind = NEW.kind AND id <> '' AND id NOT GLOB '*[^0-9]*'
    )) + 1;
    UPDATE phx_records SET id = (SELECT CAST(last AS TEXT) FROM phx_record_ids) WHERE rowid = NEW.rowid;
END;

-- Every UPDATE raises the version by one, whoever makes it.
CREATE TRIGGER IF NOT EXISTS phx_records_version AFTER UPDATE ON phx_records
WHEN NEW.version = OLD.version AND NEW.id IS OLD.id
BEGIN
    UPDATE phx_records
    SET version = OLD.version + 1, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE rowid = NEW.rowid;
END;
