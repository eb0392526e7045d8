-- Build records are kept whole as JSON beside the columns that the queries,
-- the uniqueness rules and the queue limit need.
CREATE TABLE builds (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    status     TEXT NOT NULL,
    repository TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    delivery   TEXT,
    retry_of   TEXT,
    record     JSONB NOT NULL
);
-- Admission's deduplication: `INSERT ... ON CONFLICT DO NOTHING` lands on these.
CREATE UNIQUE INDEX builds_by_delivery ON builds (delivery) WHERE delivery IS NOT NULL;
CREATE UNIQUE INDEX builds_by_commit ON builds (repository, commit_sha) WHERE retry_of IS NULL;
CREATE INDEX builds_by_status ON builds (status, seq);
CREATE INDEX builds_by_repository ON builds (lower(repository), seq);

-- Log lines are numbered per build; log_heads holds each build's last number,
-- so an append takes the next numbers under that one row's lock.
CREATE TABLE log_heads (
    build_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
CREATE TABLE log_lines (
    build_id TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
);

CREATE TABLE watched (
    repository TEXT PRIMARY KEY,
    since      TEXT NOT NULL
);

-- One row counting the queued builds. Admission locks it (FOR UPDATE), which
-- both serialises admissions against the limit and reads the count in O(1);
-- a trigger keeps it right on every insert, status change and delete.
CREATE TABLE queue_counter (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    queued   BIGINT NOT NULL
);
INSERT INTO queue_counter (queued) SELECT count(*) FROM builds WHERE status = 'queued';

CREATE FUNCTION count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta BIGINT := 0;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        IF NEW.status = 'queued' THEN delta := delta + 1; END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        IF OLD.status = 'queued' THEN delta := delta - 1; END IF;
    END IF;
    IF delta <> 0 THEN
        UPDATE queue_counter SET queued = queued + delta;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER builds_count_queued
    AFTER INSERT OR UPDATE OF status OR DELETE ON builds
    FOR EACH ROW EXECUTE FUNCTION count_queued();
