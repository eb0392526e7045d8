-- The shared queue: an instance claims a build by raising its attempt and
-- taking a lease on the database's clock. Every write for a build names the
-- attempt it holds, so an instance whose lease was taken over writes nothing.
ALTER TABLE builds
    ADD COLUMN attempt     INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN instance    TEXT,
    ADD COLUMN lease_until TIMESTAMPTZ;

-- What a claim scans: builds waiting, and running builds whose lease may have
-- run out, oldest first. Finished builds (almost all rows) stay out of it.
CREATE INDEX builds_claimable ON builds (seq) WHERE status IN ('queued', 'running');

-- One push per tag at a time across instances: a lease row, not a session
-- advisory lock, which a frozen instance would hold for ever.
CREATE TABLE tag_leases (
    tag         TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
