-- The records of every kind (see protocol-spec/editing.md, "Stores"); any
-- program may INSERT, UPDATE or DELETE here: ids, versions and the change
-- notifications are the database's.
CREATE SEQUENCE IF NOT EXISTS phx_records_id_seq;

CREATE TABLE IF NOT EXISTS phx_records (
    kind text NOT NULL,
    id text NOT NULL,
    record jsonb NOT NULL DEFAULT '{}'::jsonb,
    version bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text,
    position bigserial,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS phx_records_kind_position ON phx_records (kind, position);

-- An INSERT without an id gets the next number of the sequence not taken in its kind.
CREATE OR REPLACE FUNCTION phx_records_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS NULL THEN
        LOOP
            NEW.id := nextval('phx_records_id_seq')::text;
            EXIT WHEN NOT EXISTS (SELECT 1 FROM phx_records WHERE kind = NEW.kind AND id = NEW.id);
        END LOOP;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER phx_records_id BEFORE INSERT ON phx_records
    FOR EACH ROW EXECUTE FUNCTION phx_records_id();

-- Every UPDATE raises the version by one, whoever makes it; `updated_by` is
-- phx-editing's editor, or NULL for any other program.
CREATE OR REPLACE FUNCTION phx_records_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    NEW.updated_by := nullif(current_setting('phx.user', true), '');
    RETURN NEW;
END $$;
CREATE TRIGGER phx_records_version BEFORE UPDATE ON phx_records
    FOR EACH ROW EXECUTE FUNCTION phx_records_version();

-- Every change is announced on channel `phx_records` (every node LISTENs):
-- {"op": "INSERT"|"UPDATE"|"DELETE", "kind", "id", "by": "phx-editing" or ""}.
CREATE OR REPLACE FUNCTION phx_records_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row phx_records;
BEGIN
    IF TG_OP = 'DELETE' THEN row := OLD; ELSE row := NEW; END IF;
    PERFORM pg_notify('phx_records', json_build_object(
        'op', TG_OP, 'kind', row.kind, 'id', row.id,
        'by', coalesce(current_setting('phx.origin', true), ''))::text);
    RETURN NULL;
END $$;
CREATE TRIGGER phx_records_notify AFTER INSERT OR UPDATE OR DELETE ON phx_records
    FOR EACH ROW EXECUTE FUNCTION phx_records_notify();
