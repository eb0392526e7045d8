//! The PostgreSQL store (`--database postgres://…`). Same shape as the SQLite
//! store: each record kept whole as JSON beside the columns that queries,
//! uniqueness and the queue limit need. Queries are checked at run time
//! (sqlx's query macros would need a live database to build).

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, PgTransaction};

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use super::clock::Clock;
use super::{
    Admission, BatchAdmission, BuildRecord, BuildStatus, Claimed, Fence, ListFilter, LogLine,
    Notice, Store, StoreError,
};

/// The schema, embedded in the binary: a running instance never depends on
/// files beside it, and every instance of one build migrates alike.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "builds",
        include_str!("../../migrations/postgres/0001_builds.sql"),
    ),
    (
        2,
        "queue",
        include_str!("../../migrations/postgres/0002_queue.sql"),
    ),
];

/// The channels instances notify each other on: one per batch of admitted
/// builds (payload empty), one per batch of log lines (the build's id).
const QUEUE_CHANNEL: &str = "slipway_queue";
const LOG_CHANNEL: &str = "slipway_log";
/// Notices waiting for the instance to take them; more are dropped, which
/// costs only a wake-up (the queue is polled, and watchers re-read).
const NOTICE_BUFFER: usize = 256;

#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sqlx::SqlSafeStr::into_sql_str(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

pub struct PostgresStore {
    pool: PgPool,
    /// What leases are read against: the server's `now()` unless a test sets it.
    clock: Clock,
}

/// The time leases are read against in a query whose parameter `$n` is
/// [`Clock::manual_ms`]: the time a test set, else the server's `now()`.
macro_rules! now_sql {
    ($n:literal) => {
        concat!("coalesce(to_timestamp($", $n, "::float8 / 1000), now())")
    };
}

impl PostgresStore {
    /// Connects to `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // The parse error names the part at fault, never the URL (it holds a password).
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::DatabaseUrl(e.to_string()))?;
        migrate(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            clock: Clock::Store,
        })
    }

    /// The same store, reading leases against `clock` (tests set the time by hand).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// Runs the migrations on a connection of its own. sqlx's Postgres migrator
/// takes a session advisory lock (`pg_advisory_lock`, keyed on the database
/// name) before it even creates its table, so instances starting together
/// take turns. A failed run returns without unlocking: closing the
/// connection is what releases the lock, which a pooled connection would not.
async fn migrate(options: &PgConnectOptions) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded).await?;
    let mut conn = PgConnection::connect_with(options).await?;
    let ran = migrator.run_direct(None, &mut conn, false).await;
    // Closing is best effort: a connection dropped unclosed ends the session too.
    let _ = conn.close().await;
    Ok(ran?)
}

/// Sent when the transaction commits, and only then (PostgreSQL's NOTIFY).
async fn notify(tx: &mut PgConnection, channel: &str, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Forwards notifications until the instance stops listening. Notices sent
/// while the connection is down are lost; `Missed` tells the instance to look
/// again once it is back, and its polling covers the time between.
async fn listen(pool: PgPool, notices: mpsc::Sender<Notice>) {
    let mut listener = None;
    loop {
        if notices.is_closed() {
            return;
        }
        let Some(active) = listener.as_mut() else {
            match subscribe(&pool).await {
                Ok(subscribed) => {
                    listener = Some(subscribed);
                    let _ = notices.try_send(Notice::Missed);
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for other instances' notices; polling meanwhile");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        match active.try_recv().await {
            Ok(Some(notification)) => {
                let notice = match notification.channel() {
                    QUEUE_CHANNEL => Notice::Queued,
                    _ => Notice::Logged(notification.payload().to_string()),
                };
                // A full buffer drops the notice: the poll catches it up.
                let _ = notices.try_send(notice);
            }
            Ok(None) => {
                let _ = notices.try_send(Notice::Missed);
            }
            Err(err) => {
                tracing::warn!(%err, "lost the connection for notices; reconnecting");
                listener = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([QUEUE_CHANNEL, LOG_CHANNEL]).await?;
    Ok(listener)
}

/// Attempts are small; a column of PostgreSQL's `integer`.
fn attempt_column(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn decode(json: &str) -> Result<BuildRecord, StoreError> {
    Ok(serde_json::from_str(json)?)
}

fn decode_rows(rows: Vec<String>) -> Result<Vec<BuildRecord>, StoreError> {
    rows.iter().map(|json| decode(json)).collect()
}

/// Locks the queue counter for the rest of the transaction and reads it.
/// Every admission takes this one row lock, so the count it compares with
/// `max_queued` cannot change under it; O(1), unlike a `count(*)` of the queue.
///
/// Whatever moves a build into or out of `queued` (a claim, a hand-back)
/// takes it too, and first: its trigger would take it after the build's
/// row, while an admission holding it may wait for that row's new index
/// entries (a delivery of the same commit), a deadlock.
async fn lock_queued_count(tx: &mut PgConnection) -> Result<u64, StoreError> {
    let queued: i64 = sqlx::query_scalar("SELECT queued FROM queue_counter FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    Ok(to_u64(queued))
}

/// The build `record` duplicates: same delivery, or (for all but retries)
/// the same repository and commit.
async fn duplicate_of(
    tx: &mut PgConnection,
    record: &BuildRecord,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM builds
         WHERE ($1::text IS NOT NULL AND delivery = $1)
            OR ($4 AND repository = $2 AND commit_sha = $3 AND retry_of IS NULL)
         ORDER BY seq LIMIT 1",
    )
    .bind(&record.delivery)
    .bind(&record.repository)
    .bind(&record.commit)
    .bind(record.retry_of.is_none())
    .fetch_optional(&mut *tx)
    .await?)
}

/// Inserts unless a unique index says it is a duplicate; true when inserted.
async fn insert_new(tx: &mut PgConnection, record: &BuildRecord) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO builds (id, status, repository, commit_sha, delivery, retry_of, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
         ON CONFLICT DO NOTHING",
    )
    .bind(&record.id)
    .bind(record.status.as_str())
    .bind(&record.repository)
    .bind(&record.commit)
    .bind(&record.delivery)
    .bind(&record.retry_of)
    .bind(serde_json::to_string(record)?)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// One admission inside an open transaction.
async fn admit_in(
    tx: &mut PgConnection,
    record: &BuildRecord,
    max_queued: u64,
) -> Result<Admission, StoreError> {
    if lock_queued_count(tx).await? >= max_queued {
        // A duplicate is answered as one even when the queue is full.
        return Ok(match duplicate_of(tx, record).await? {
            Some(existing) => Admission::Duplicate(existing),
            None => Admission::QueueFull,
        });
    }
    if insert_new(tx, record).await? {
        return Ok(Admission::Created(record.id.clone()));
    }
    // ON CONFLICT waited for any concurrent insert of the same delivery or
    // commit to commit; this statement's fresh snapshot sees that row.
    match duplicate_of(tx, record).await? {
        Some(existing) => Ok(Admission::Duplicate(existing)),
        None => Err(StoreError::IdTaken(record.id.clone())),
    }
}

/// One record of a batch, under its own savepoint so that its failure
/// undoes only its own write.
async fn admit_savepoint(
    tx: &mut PgTransaction<'_>,
    record: &BuildRecord,
    max_queued: u64,
) -> Result<Result<Admission, StoreError>, StoreError> {
    let mut savepoint = tx.begin().await?;
    let answer = admit_in(&mut savepoint, record, max_queued).await;
    if answer.is_ok() {
        savepoint.commit().await?;
    } else {
        savepoint.rollback().await?;
    }
    Ok(answer)
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn admit_batch(
        &self,
        records: &[BuildRecord],
        max_queued: u64,
    ) -> Result<BatchAdmission, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut answers = Vec::with_capacity(records.len());
        for record in records {
            answers.push(admit_savepoint(&mut tx, record, max_queued).await?);
        }
        if answers
            .iter()
            .any(|answer| matches!(answer, Ok(Admission::Created(_))))
        {
            notify(&mut tx, QUEUE_CHANNEL, "").await?;
        }
        tx.commit().await?;
        Ok(answers)
    }

    async fn save(&self, record: &BuildRecord) -> Result<(), StoreError> {
        let written = sqlx::query(
            "UPDATE builds SET status = $2, record = $3::jsonb
             WHERE id = $1 AND attempt = $4 AND instance IS NOT DISTINCT FROM $5",
        )
        .bind(&record.id)
        .bind(record.status.as_str())
        .bind(serde_json::to_string(record)?)
        .bind(attempt_column(record.attempt))
        .bind(&record.instance)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if written == 0 {
            return Err(Fence::of(record).lost());
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<BuildRecord>, StoreError> {
        let json: Option<String> =
            sqlx::query_scalar("SELECT record::text FROM builds WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        json.as_deref().map(decode).transpose()
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<BuildRecord>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record::text FROM builds
             WHERE ($1::text IS NULL OR repository = $1) AND ($2::text IS NULL OR status = $2)
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(&filter.repository)
        .bind(filter.status.map(BuildStatus::as_str))
        .bind(to_i64(filter.limit as u64))
        .fetch_all(&self.pool)
        .await?;
        decode_rows(rows)
    }

    async fn queued_count(&self) -> Result<u64, StoreError> {
        let queued: i64 = sqlx::query_scalar("SELECT queued FROM queue_counter")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(queued))
    }

    async fn unfinished(&self) -> Result<Vec<BuildRecord>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record::text FROM builds WHERE status IN ('queued', 'running') ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        decode_rows(rows)
    }

    async fn append_log(
        &self,
        fence: &Fence,
        lines: &[String],
    ) -> Result<Vec<LogLine>, StoreError> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let id = &fence.build;
        let count = to_i64(lines.len() as u64);
        let mut tx = self.pool.begin().await?;
        // The share lock keeps a takeover (which raises the attempt) waiting
        // until these lines are in: an attempt's lines all precede the next's.
        let held: Option<i32> = sqlx::query_scalar(
            "SELECT attempt FROM builds WHERE id = $1 AND attempt = $2 FOR SHARE",
        )
        .bind(id)
        .bind(attempt_column(fence.attempt))
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Err(fence.lost());
        }
        // The head row's lock orders concurrent appends to one build.
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO log_heads (build_id, last_seq) VALUES ($1, $2)
             ON CONFLICT (build_id) DO UPDATE SET last_seq = log_heads.last_seq + EXCLUDED.last_seq
             RETURNING last_seq",
        )
        .bind(id)
        .bind(count)
        .fetch_one(&mut *tx)
        .await?;
        let first = last - count + 1;
        sqlx::query(
            "INSERT INTO log_lines (build_id, seq, line)
             SELECT $1, $2 + n - 1, line FROM unnest($3::text[]) WITH ORDINALITY AS t(line, n)",
        )
        .bind(id)
        .bind(first)
        .bind(lines)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, LOG_CHANNEL, id).await?;
        tx.commit().await?;
        Ok(lines
            .iter()
            .zip(first..)
            .map(|(text, seq)| LogLine {
                seq: to_u64(seq),
                text: text.clone(),
            })
            .collect())
    }

    async fn read_log(&self, id: &str, after: u64) -> Result<Vec<LogLine>, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, line FROM log_lines WHERE build_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(id)
        .bind(to_i64(after))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, text)| LogLine {
                seq: to_u64(seq),
                text,
            })
            .collect())
    }

    async fn claim(&self, instance: &str, lease: Duration) -> Result<Option<Claimed>, StoreError> {
        // SKIP LOCKED: instances claiming at once each take a different
        // build instead of queueing behind one row. The lease runs on the
        // database's clock, the one clock all instances share.
        // An idle instance asks this every poll: one read, no lock, no
        // transaction, unless there is something to claim.
        let now = self.clock.manual_ms();
        let waiting: bool = sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM builds
                WHERE status = 'queued'
                   OR (status = 'running' AND (lease_until IS NULL OR lease_until < ",
            now_sql!(1),
            ")))"
        ))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        if !waiting {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        lock_queued_count(&mut tx).await?;
        let row: Option<(String, String, Option<String>)> = sqlx::query_as(concat!(
            "WITH next AS (
                SELECT seq, status AS was, instance AS previous FROM builds
                WHERE status = 'queued'
                   OR (status = 'running' AND (lease_until IS NULL OR lease_until < ",
            now_sql!(3),
            "))
                ORDER BY seq LIMIT 1
                FOR UPDATE SKIP LOCKED
             )
             UPDATE builds AS b
             SET status = 'running', attempt = b.attempt + 1, instance = $1,
                 lease_until = ",
            now_sql!(3),
            " + make_interval(secs => $2),
                 record = b.record || jsonb_build_object(
                     'status', 'running', 'instance', $1::text, 'attempt', b.attempt + 1)
             FROM next WHERE b.seq = next.seq
             RETURNING b.record::text, next.was, next.previous"
        ))
        .bind(instance)
        .bind(lease.as_secs_f64())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some((json, was, previous)) = row else {
            return Ok(None);
        };
        let taken_from = (was == BuildStatus::Running.as_str())
            .then_some(previous)
            .flatten();
        Ok(Some(Claimed {
            record: decode(&json)?,
            taken_from,
        }))
    }

    async fn renew(&self, fence: &Fence, lease: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query(concat!(
            "UPDATE builds SET lease_until = ",
            now_sql!(4),
            " + make_interval(secs => $3)
             WHERE id = $1 AND attempt = $2 AND status = 'running'"
        ))
        .bind(&fence.build)
        .bind(attempt_column(fence.attempt))
        .bind(lease.as_secs_f64())
        .bind(self.clock.manual_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    async fn hand_back(&self, fence: &Fence) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_queued_count(&mut tx).await?;
        let handed = sqlx::query(
            "UPDATE builds SET status = 'queued', instance = NULL, lease_until = NULL,
                 record = record || jsonb_build_object('status', 'queued', 'instance', NULL)
             WHERE id = $1 AND attempt = $2 AND status = 'running'",
        )
        .bind(&fence.build)
        .bind(attempt_column(fence.attempt))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        notify(&mut tx, QUEUE_CHANNEL, "").await?;
        tx.commit().await?;
        Ok(handed == 1)
    }

    async fn release_instance(&self, instance: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE builds SET lease_until = NULL WHERE status = 'running' AND instance = $1",
        )
        .bind(instance)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        notify(&mut tx, QUEUE_CHANNEL, "").await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn lease_tag(
        &self,
        tag: &str,
        fence: &Fence,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let taken = sqlx::query(concat!(
            "INSERT INTO tag_leases (tag, holder, lease_until)
             VALUES ($1, $2, ",
            now_sql!(4),
            " + make_interval(secs => $3))
             ON CONFLICT (tag) DO UPDATE
                 SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until
                 WHERE tag_leases.holder = EXCLUDED.holder OR tag_leases.lease_until < ",
            now_sql!(4)
        ))
        .bind(tag)
        .bind(fence.holder())
        .bind(lease.as_secs_f64())
        .bind(self.clock.manual_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn release_tag(&self, tag: &str, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM tag_leases WHERE tag = $1 AND holder = $2")
            .bind(tag)
            .bind(fence.holder())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn notices(&self) -> Option<mpsc::Receiver<Notice>> {
        let (tx, rx) = mpsc::channel(NOTICE_BUFFER);
        tokio::spawn(listen(self.pool.clone(), tx));
        Some(rx)
    }

    async fn catch_up_since(&self, repository: &str, now: &str) -> Result<String, StoreError> {
        // Repository names compare as GitHub does, ignoring ASCII case.
        let key = repository.to_ascii_lowercase();
        let first: Option<String> = sqlx::query_scalar(
            "SELECT record->>'created_at' FROM builds WHERE lower(repository) = $1
             ORDER BY seq LIMIT 1",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(created_at) = first {
            return Ok(created_at);
        }
        sqlx::query(
            "INSERT INTO watched (repository, since) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT since FROM watched WHERE repository = $1")
                .bind(&key)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
