//! The SQLite store: one file in the data dir. Each record is kept whole as
//! JSON beside the columns that queries and uniqueness need.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::runtime::Handle;

use std::time::Duration;

use super::clock::{millis, Clock};
use super::{
    Admission, BatchAdmission, BuildRecord, BuildStatus, Claimed, Fence, ListFilter, LogLine,
    Store, StoreError,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS builds (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    status     TEXT NOT NULL,
    repository TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    delivery   TEXT,
    retry_of   TEXT,
    record     TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS builds_by_delivery ON builds(delivery) WHERE delivery IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS builds_by_commit ON builds(repository, commit_sha) WHERE retry_of IS NULL;
CREATE INDEX IF NOT EXISTS builds_by_status ON builds(status);
CREATE TABLE IF NOT EXISTS log_lines (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id TEXT NOT NULL,
    line     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_lines_by_build ON log_lines(build_id, seq);
CREATE TABLE IF NOT EXISTS watched (
    repository TEXT PRIMARY KEY,
    since      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tag_leases (
    tag         TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    lease_until INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS queued_on_insert AFTER INSERT ON builds
    WHEN NEW.status = 'queued'
    BEGIN UPDATE counters SET value = value + 1 WHERE name = 'queued'; END;
CREATE TRIGGER IF NOT EXISTS queued_on_update AFTER UPDATE OF status ON builds
    WHEN (OLD.status = 'queued') <> (NEW.status = 'queued')
    BEGIN UPDATE counters
          SET value = value + (CASE WHEN NEW.status = 'queued' THEN 1 ELSE -1 END)
          WHERE name = 'queued'; END;
CREATE TRIGGER IF NOT EXISTS queued_on_delete AFTER DELETE ON builds
    WHEN OLD.status = 'queued'
    BEGIN UPDATE counters SET value = value - 1 WHERE name = 'queued'; END;
";

// Counting queued rows on every admission is O(queue): at tens of thousands of
// queued builds it cost milliseconds per delivery, under the writer's lock. The
// triggers keep the count in one row instead; it is recounted once at open, so
// a database written before the triggers existed starts right.
const RECOUNT_QUEUED: &str = "
INSERT OR REPLACE INTO counters (name, value)
    VALUES ('queued', (SELECT COUNT(*) FROM builds WHERE status = 'queued'));
";

/// The queue's columns, added to databases written before there was a queue
/// in the store. A lease is in milliseconds since the epoch on this
/// machine's clock: one instance uses a SQLite file, so there is no other.
const QUEUE_COLUMNS: [(&str, &str); 3] = [
    ("attempt", "INTEGER NOT NULL DEFAULT 0"),
    ("instance", "TEXT"),
    ("lease_until", "INTEGER"),
];

fn add_queue_columns(conn: &Connection) -> rusqlite::Result<()> {
    let present: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('builds')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for (column, definition) in QUEUE_COLUMNS {
        if !present.iter().any(|name| name == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE builds ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS builds_claimable ON builds(seq) WHERE status IN ('queued', 'running')",
    )
}

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The runtime that opened the store does its blocking work, whoever
    /// calls: builds call from lower-priority threads, and the lock must not
    /// be held at their priority while an admission waits for it.
    runtime: Option<Handle>,
    /// What leases are read against: this machine's clock unless a test sets it.
    clock: Clock,
}

impl SqliteStore {
    /// Opens (or creates) `slipway.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("slipway.db");
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        // WAL keeps readers off the writer's back; NORMAL sync survives a
        // process kill, which is the failure the service must not lose work to.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
        )
        .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        add_queue_columns(&conn).map_err(open_err)?;
        conn.execute_batch(RECOUNT_QUEUED).map_err(open_err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            runtime: Handle::try_current().ok(),
            clock: Clock::Store,
        })
    }

    /// The same store, reading leases against `clock` (tests set the time by hand).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    async fn blocking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let task = move || {
            // A panic while holding the lock leaves SQLite consistent (each
            // statement is atomic), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            op(&mut guard)
        };
        match &self.runtime {
            Some(runtime) => runtime.spawn_blocking(task),
            None => tokio::task::spawn_blocking(task),
        }
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(format!("store task failed: {e}"))))?
    }
}

fn duplicate_of(conn: &Connection, record: &BuildRecord) -> rusqlite::Result<Option<String>> {
    let by_commit = record.retry_of.is_none();
    conn.prepare_cached(
        "SELECT id FROM builds
         WHERE (?1 IS NOT NULL AND delivery = ?1)
            OR (?4 AND repository = ?2 AND commit_sha = ?3 AND retry_of IS NULL)
         ORDER BY seq LIMIT 1",
    )?
    .query_row(
        params![record.delivery, record.repository, record.commit, by_commit],
        |row| row.get(0),
    )
    .optional()
}

fn queued_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT value FROM counters WHERE name = 'queued'")?
        .query_row([], |row| row.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or_default())
}

fn insert(conn: &Connection, record: &BuildRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO builds (id, status, repository, commit_sha, delivery, retry_of, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        record.id,
        record.status.as_str(),
        record.repository,
        record.commit,
        record.delivery,
        record.retry_of,
        serde_json::to_string(record)?
    ])?;
    Ok(())
}

fn decode_rows(rows: Vec<String>) -> Result<Vec<BuildRecord>, StoreError> {
    rows.iter()
        .map(|json| serde_json::from_str(json).map_err(StoreError::from))
        .collect()
}

fn admit_batch(
    conn: &mut Connection,
    records: &[BuildRecord],
    max_queued: u64,
) -> Result<BatchAdmission, StoreError> {
    let mut tx = conn.transaction()?;
    let mut answers = Vec::with_capacity(records.len());
    for record in records {
        let answer = admit_one(&mut tx, record, max_queued);
        // Some errors (a full disk, an I/O error) make SQLite roll back the
        // whole transaction: the earlier answers are void then, and so is the batch.
        if let Err(err) = answer {
            if tx.is_autocommit() {
                return Err(err);
            }
            answers.push(Err(err));
            continue;
        }
        answers.push(answer);
    }
    tx.commit()?;
    Ok(answers)
}

/// One record inside a batch, under its own savepoint so that its failure
/// undoes only its own write.
fn admit_one(
    tx: &mut Transaction<'_>,
    record: &BuildRecord,
    max_queued: u64,
) -> Result<Admission, StoreError> {
    let one = tx.savepoint()?;
    if let Some(existing) = duplicate_of(&one, record)? {
        return Ok(Admission::Duplicate(existing));
    }
    if queued_count(&one)? >= max_queued {
        return Ok(Admission::QueueFull);
    }
    insert(&one, record)?;
    one.commit()?;
    Ok(Admission::Created(record.id.clone()))
}

fn save(conn: &Connection, record: &BuildRecord) -> Result<(), StoreError> {
    let json = serde_json::to_string(record)?;
    let written = conn
        .prepare_cached(
            "UPDATE builds SET status = ?2, record = ?3
             WHERE id = ?1 AND attempt = ?4 AND instance IS ?5",
        )?
        .execute(params![
            record.id,
            record.status.as_str(),
            json,
            record.attempt,
            record.instance
        ])?;
    if written == 0 {
        return Err(Fence::of(record).lost());
    }
    Ok(())
}

/// When a lease taken at `now` (milliseconds since the epoch) runs out.
fn lease_end(now: i64, lease: Duration) -> i64 {
    now.saturating_add(millis(lease))
}

fn claim(
    conn: &mut Connection,
    instance: &str,
    lease: Duration,
    now: i64,
) -> Result<Option<Claimed>, StoreError> {
    let tx = conn.transaction()?;
    let next: Option<(i64, String, Option<String>, u32, String)> = tx
        .prepare_cached(
            "SELECT seq, status, instance, attempt, record FROM builds
             WHERE status = 'queued'
                OR (status = 'running' AND (lease_until IS NULL OR lease_until < ?1))
             ORDER BY seq LIMIT 1",
        )?
        .query_row([now], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .optional()?;
    let Some((seq, status, previous, attempt, json)) = next else {
        return Ok(None);
    };
    let mut record: BuildRecord = serde_json::from_str(&json)?;
    record.status = BuildStatus::Running;
    record.instance = Some(instance.to_string());
    record.attempt = attempt.saturating_add(1);
    tx.prepare_cached(
        "UPDATE builds SET status = 'running', attempt = ?2, instance = ?3, lease_until = ?4,
         record = ?5 WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        record.attempt,
        instance,
        lease_end(now, lease),
        serde_json::to_string(&record)?
    ])?;
    tx.commit()?;
    let taken_from = (status == BuildStatus::Running.as_str())
        .then_some(previous)
        .flatten();
    Ok(Some(Claimed { record, taken_from }))
}

fn renew(conn: &Connection, fence: &Fence, lease: Duration, now: i64) -> Result<bool, StoreError> {
    let renewed = conn
        .prepare_cached(
            "UPDATE builds SET lease_until = ?3
             WHERE id = ?1 AND attempt = ?2 AND status = 'running'",
        )?
        .execute(params![fence.build, fence.attempt, lease_end(now, lease)])?;
    Ok(renewed == 1)
}

fn hand_back(conn: &Connection, fence: &Fence) -> Result<bool, StoreError> {
    let handed = conn
        .prepare_cached(
            "UPDATE builds SET status = 'queued', instance = NULL, lease_until = NULL,
             record = json_set(record, '$.status', 'queued', '$.instance', NULL)
             WHERE id = ?1 AND attempt = ?2 AND status = 'running'",
        )?
        .execute(params![fence.build, fence.attempt])?;
    Ok(handed == 1)
}

/// One instance uses a SQLite file, so every running build is this
/// instance's, left by its previous run.
fn release_instance(conn: &Connection) -> Result<u64, StoreError> {
    let released = conn
        .prepare_cached("UPDATE builds SET lease_until = NULL WHERE status = 'running'")?
        .execute([])?;
    Ok(released as u64)
}

fn lease_tag(
    conn: &Connection,
    tag: &str,
    fence: &Fence,
    lease: Duration,
    now: i64,
) -> Result<bool, StoreError> {
    let taken = conn
        .prepare_cached(
            "INSERT INTO tag_leases (tag, holder, lease_until) VALUES (?1, ?2, ?3)
             ON CONFLICT (tag) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
             WHERE tag_leases.holder = excluded.holder OR tag_leases.lease_until < ?4",
        )?
        .execute(params![tag, fence.holder(), lease_end(now, lease), now])?;
    Ok(taken == 1)
}

fn release_tag(conn: &Connection, tag: &str, fence: &Fence) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM tag_leases WHERE tag = ?1 AND holder = ?2")?
        .execute(params![tag, fence.holder()])?;
    Ok(())
}

fn get(conn: &Connection, id: &str) -> Result<Option<BuildRecord>, StoreError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT record FROM builds WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    json.map(|j| serde_json::from_str(&j).map_err(StoreError::from))
        .transpose()
}

fn list(conn: &Connection, filter: &ListFilter) -> Result<Vec<BuildRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM builds
         WHERE (?1 IS NULL OR repository = ?1) AND (?2 IS NULL OR status = ?2)
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let status = filter.status.map(BuildStatus::as_str);
    let rows = stmt
        .query_map(params![filter.repository, status, limit], |row| {
            row.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    decode_rows(rows)
}

fn unfinished(conn: &Connection) -> Result<Vec<BuildRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM builds WHERE status IN ('queued', 'running') ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    decode_rows(rows)
}

fn append_log(
    conn: &mut Connection,
    fence: &Fence,
    lines: Vec<String>,
) -> Result<Vec<LogLine>, StoreError> {
    let tx = conn.transaction()?;
    let held = tx
        .prepare_cached("SELECT 1 FROM builds WHERE id = ?1 AND attempt = ?2")?
        .exists(params![fence.build, fence.attempt])?;
    if !held {
        return Err(fence.lost());
    }
    let id = &fence.build;
    let mut numbered = Vec::with_capacity(lines.len());
    {
        let mut stmt =
            tx.prepare_cached("INSERT INTO log_lines (build_id, line) VALUES (?1, ?2)")?;
        for text in lines {
            stmt.execute(params![id, text])?;
            let seq = u64::try_from(tx.last_insert_rowid()).unwrap_or_default();
            numbered.push(LogLine { seq, text });
        }
    }
    tx.commit()?;
    Ok(numbered)
}

fn read_log(conn: &Connection, id: &str, after: u64) -> Result<Vec<LogLine>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, line FROM log_lines WHERE build_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let lines = stmt
        .query_map(params![id, after], |row| {
            Ok(LogLine {
                seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or_default(),
                text: row.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines)
}

fn catch_up_since(conn: &Connection, repository: &str, now: &str) -> Result<String, StoreError> {
    let first: Option<String> = conn
        .prepare_cached(
            "SELECT record FROM builds WHERE repository = ?1 COLLATE NOCASE ORDER BY seq LIMIT 1",
        )?
        .query_row([repository], |row| row.get(0))
        .optional()?;
    if let Some(json) = first {
        let record: BuildRecord = serde_json::from_str(&json)?;
        return Ok(record.created_at);
    }
    let key = repository.to_ascii_lowercase();
    conn.prepare_cached("INSERT OR IGNORE INTO watched (repository, since) VALUES (?1, ?2)")?
        .execute(params![key, now])?;
    Ok(conn
        .prepare_cached("SELECT since FROM watched WHERE repository = ?1")?
        .query_row([key], |row| row.get(0))?)
}

// Each call runs on the blocking pool: SQLite waits on the disk, and the
// async workers must stay free to answer webhooks in milliseconds.
#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn admit_batch(
        &self,
        records: &[BuildRecord],
        max_queued: u64,
    ) -> Result<BatchAdmission, StoreError> {
        let records = records.to_vec();
        self.blocking(move |conn| admit_batch(conn, &records, max_queued))
            .await
    }

    async fn save(&self, record: &BuildRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.blocking(move |conn| save(conn, &record)).await
    }

    async fn get(&self, id: &str) -> Result<Option<BuildRecord>, StoreError> {
        let id = id.to_string();
        self.blocking(move |conn| get(conn, &id)).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<BuildRecord>, StoreError> {
        let filter = filter.clone();
        self.blocking(move |conn| list(conn, &filter)).await
    }

    async fn queued_count(&self) -> Result<u64, StoreError> {
        self.blocking(|conn| Ok(queued_count(conn)?)).await
    }

    async fn unfinished(&self) -> Result<Vec<BuildRecord>, StoreError> {
        self.blocking(|conn| unfinished(conn)).await
    }

    async fn append_log(
        &self,
        fence: &Fence,
        lines: &[String],
    ) -> Result<Vec<LogLine>, StoreError> {
        let fence = fence.clone();
        let lines = lines.to_vec();
        self.blocking(move |conn| append_log(conn, &fence, lines))
            .await
    }

    async fn claim(&self, instance: &str, lease: Duration) -> Result<Option<Claimed>, StoreError> {
        let (instance, clock) = (instance.to_string(), self.clock.clone());
        self.blocking(move |conn| claim(conn, &instance, lease, clock.now_ms()))
            .await
    }

    async fn renew(&self, fence: &Fence, lease: Duration) -> Result<bool, StoreError> {
        let (fence, clock) = (fence.clone(), self.clock.clone());
        self.blocking(move |conn| renew(conn, &fence, lease, clock.now_ms()))
            .await
    }

    async fn hand_back(&self, fence: &Fence) -> Result<bool, StoreError> {
        let fence = fence.clone();
        self.blocking(move |conn| hand_back(conn, &fence)).await
    }

    async fn release_instance(&self, _instance: &str) -> Result<u64, StoreError> {
        self.blocking(|conn| release_instance(conn)).await
    }

    async fn lease_tag(
        &self,
        tag: &str,
        fence: &Fence,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (tag, fence, clock) = (tag.to_string(), fence.clone(), self.clock.clone());
        self.blocking(move |conn| lease_tag(conn, &tag, &fence, lease, clock.now_ms()))
            .await
    }

    async fn release_tag(&self, tag: &str, fence: &Fence) -> Result<(), StoreError> {
        let (tag, fence) = (tag.to_string(), fence.clone());
        self.blocking(move |conn| release_tag(conn, &tag, &fence))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|conn| Ok(conn.execute_batch("SELECT 1")?))
            .await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn read_log(&self, id: &str, after: u64) -> Result<Vec<LogLine>, StoreError> {
        let id = id.to_string();
        self.blocking(move |conn| read_log(conn, &id, after)).await
    }

    async fn catch_up_since(&self, repository: &str, now: &str) -> Result<String, StoreError> {
        let (repository, now) = (repository.to_string(), now.to_string());
        self.blocking(move |conn| catch_up_since(conn, &repository, &now))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queued_record as record;

    fn created(id: &str) -> Admission {
        Admission::Created(id.into())
    }

    fn answers(batch: BatchAdmission) -> Vec<Admission> {
        batch.into_iter().map(|a| a.expect("answered")).collect()
    }

    #[tokio::test]
    async fn a_batch_deduplicates_inside_itself_and_against_stored_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store
            .admit(&record("old", Some("d0"), "c0"), 10)
            .await
            .expect("admit");
        let batch = [
            record("a", Some("d1"), "c1"),
            record("b", Some("d1"), "c2"), // same delivery as a
            record("c", Some("d2"), "c1"), // same commit as a
            record("d", Some("d3"), "c0"), // same commit as the stored build
            record("e", Some("d0"), "c9"), // same delivery as the stored build
            record("f", Some("d4"), "c4"),
        ];
        let got = answers(store.admit_batch(&batch, 10).await.expect("batch"));
        let dup = |id: &str| Admission::Duplicate(id.into());
        assert_eq!(
            got,
            [
                created("a"),
                dup("a"),
                dup("a"),
                dup("old"),
                dup("old"),
                created("f")
            ]
        );
        assert_eq!(store.queued_count().await.expect("count"), 3);
    }

    #[tokio::test]
    async fn the_queue_limit_counts_the_builds_created_earlier_in_the_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store
            .admit(&record("old", Some("d0"), "c0"), 3)
            .await
            .expect("admit");
        let batch = [
            record("a", Some("d1"), "c1"),
            record("b", Some("d2"), "c2"),
            record("c", Some("d3"), "c3"),
            record("d", Some("d1"), "c1"), // a duplicate is still answered as one
        ];
        let got = answers(store.admit_batch(&batch, 3).await.expect("batch"));
        assert_eq!(
            got,
            [
                created("a"),
                created("b"),
                Admission::QueueFull,
                Admission::Duplicate("a".into())
            ]
        );
        assert_eq!(store.queued_count().await.expect("count"), 3);
    }

    #[tokio::test]
    async fn one_failing_record_does_not_sink_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        // Same build id, new delivery and commit: the insert breaks the id's
        // uniqueness, which no duplicate check catches.
        let batch = [
            record("a", Some("d1"), "c1"),
            record("a", Some("d2"), "c2"),
            record("b", Some("d3"), "c3"),
        ];
        let got = store.admit_batch(&batch, 10).await.expect("batch");
        assert_eq!(got[0].as_ref().expect("first"), &created("a"));
        assert!(got[1].is_err(), "{:?}", got[1]);
        assert_eq!(got[2].as_ref().expect("third"), &created("b"));
        drop(store);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(store.queued_count().await.expect("count"), 2);
        let kept = store.get("a").await.expect("get").expect("stored");
        assert_eq!(kept.commit, "c1", "the failed record left nothing behind");
    }

    #[tokio::test]
    async fn queued_count_follows_status_changes_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        for (id, delivery, commit) in [("a", "d1", "c1"), ("b", "d2", "c2"), ("c", "d3", "c3")] {
            store
                .admit(&record(id, Some(delivery), commit), 10)
                .await
                .expect("admit");
        }
        assert_eq!(store.queued_count().await.expect("count"), 3);
        let mut a = record("a", Some("d1"), "c1");
        a.status = BuildStatus::Running;
        store.save(&a).await.expect("save");
        store.save(&a).await.expect("save again, same status");
        assert_eq!(store.queued_count().await.expect("count"), 2);
        a.status = BuildStatus::Queued;
        store.save(&a).await.expect("requeue");
        assert_eq!(store.queued_count().await.expect("count"), 3);
        drop(store);

        // A counter gone wrong (or a database from before the counter) is
        // recounted at open.
        let conn = Connection::open(dir.path().join("slipway.db")).expect("raw open");
        conn.execute("UPDATE counters SET value = 99", [])
            .expect("spoil");
        drop(conn);
        let store = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(store.queued_count().await.expect("count"), 3);
    }

    #[tokio::test]
    async fn records_and_logs_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            let mut rec = record("a", Some("d1"), "c1");
            store.admit(&rec, 10).await.expect("admit");
            rec.status = BuildStatus::Running;
            store.save(&rec).await.expect("save");
            store
                .append_log(&Fence::of(&rec), &["one".into(), "two".into()])
                .await
                .expect("log");
        }
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let rec = store.get("a").await.expect("get").expect("exists");
        assert_eq!(rec.status, BuildStatus::Running);
        assert_eq!(store.unfinished().await.expect("unfinished").len(), 1);
        let lines = store.read_log("a", 0).await.expect("log");
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        let after_first = store.read_log("a", lines[0].seq).await.expect("log");
        assert_eq!(after_first.len(), 1);
        let filter = ListFilter {
            status: Some(BuildStatus::Succeeded),
            limit: 10,
            ..Default::default()
        };
        assert!(store.list(&filter).await.expect("list").is_empty());
    }
}
