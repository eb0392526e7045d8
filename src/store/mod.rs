//! Build records and logs, behind a small interface so that a shared
//! Postgres store can replace SQLite without touching the pipeline.

mod postgres;
mod record;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use postgres::PostgresStore;
pub use record::{now_rfc3339, BuildRecord, BuildStatus, ServiceRecord, ServiceStatus, Trigger};
pub use sqlite::SqliteStore;

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("build store at {path}: {source}; check that the data dir is writable")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("build store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("build store holds an unreadable record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("build store: {0}")]
    Io(#[from] std::io::Error),
    #[error("build store: PostgreSQL: {0}; check --database and that PostgreSQL is up")]
    Postgres(#[from] sqlx::Error),
    #[error("build store: PostgreSQL schema migration: {0}; check that --database's user may create tables, and that no newer Slipway migrated this database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("--database (SLIPWAY_DATABASE) is not a usable PostgreSQL URL: {0}")]
    DatabaseUrl(String),
    #[error("--database (SLIPWAY_DATABASE) must be a postgres:// or postgresql:// URL, not {0}; leave it unset for SQLite in --data-dir")]
    UnsupportedDatabase(String),
    #[error("build store already holds a build with id {0}")]
    IdTaken(String),
    #[error("build store gave no answer for a record; redeliver it")]
    Unanswered,
}

/// One line of a build's log. `seq` grows with every line written, so a
/// reader that has seen up to `seq` knows exactly what it missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub seq: u64,
    pub text: String,
}

/// What admitting a delivery led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Created(String),
    /// Same delivery id, or the same repository and commit, already has this build.
    Duplicate(String),
    /// `max_queued` builds are already waiting.
    QueueFull,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub repository: Option<String>,
    pub status: Option<BuildStatus>,
    pub limit: usize,
}

/// The store `--database` names: PostgreSQL for a `postgres://` URL,
/// SQLite in `data_dir` when unset.
pub async fn open(
    database: Option<&Secret>,
    data_dir: &Path,
) -> Result<Arc<dyn Store>, StoreError> {
    let Some(url) = database.map(Secret::expose) else {
        return Ok(Arc::new(SqliteStore::open(data_dir)?));
    };
    if !is_postgres_url(url) {
        return Err(StoreError::UnsupportedDatabase(describe_scheme(url)));
    }
    Ok(Arc::new(PostgresStore::open(url).await?))
}

fn is_postgres_url(url: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| {
        url.len() > scheme.len()
            && url
                .get(..scheme.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    })
}

/// Names what was given without repeating it: the value may hold a password.
fn describe_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _))
            if (1..=20).contains(&scheme.len())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("a {scheme}:// URL")
        }
        _ => "a value without a URL scheme".to_string(),
    }
}

/// One answer per record of a batch, in the records' order.
pub type BatchAdmission = Vec<Result<Admission, StoreError>>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a new build unless it duplicates one, atomically: a build
    /// answered 202 is stored before the answer goes out.
    async fn admit(&self, record: &BuildRecord, max_queued: u64) -> Result<Admission, StoreError> {
        let mut answers = self
            .admit_batch(std::slice::from_ref(record), max_queued)
            .await?;
        answers.pop().unwrap_or(Err(StoreError::Unanswered))
    }
    /// Admits `records` in order, each as `admit` would (a record may
    /// duplicate one earlier in the same batch, and each created build counts
    /// towards `max_queued` for the next), in one durable write: one commit
    /// for many deliveries is what lets the webhook keep up under load.
    /// An `Ok` answer is stored once this returns; a record that fails alone
    /// gets its own `Err` without sinking the others, and `Err` for the whole
    /// call means none of them was answered as stored.
    async fn admit_batch(
        &self,
        records: &[BuildRecord],
        max_queued: u64,
    ) -> Result<BatchAdmission, StoreError>;
    async fn save(&self, record: &BuildRecord) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<BuildRecord>, StoreError>;
    async fn list(&self, filter: &ListFilter) -> Result<Vec<BuildRecord>, StoreError>;
    /// How many builds wait to start.
    async fn queued_count(&self) -> Result<u64, StoreError>;
    /// Builds left queued or running, oldest first.
    async fn unfinished(&self) -> Result<Vec<BuildRecord>, StoreError>;
    /// Appends lines to a build's log; returns them numbered, in order.
    async fn append_log(&self, id: &str, lines: &[String]) -> Result<Vec<LogLine>, StoreError>;
    /// The build's log lines numbered above `after` (all of them for 0).
    async fn read_log(&self, id: &str, after: u64) -> Result<Vec<LogLine>, StoreError>;
    /// Since when missed merges of `repository` are caught up: its first
    /// build's creation, else the first time this was asked (`now` then).
    async fn catch_up_since(&self, repository: &str, now: &str) -> Result<String, StoreError>;
}

/// A queued webhook build of `o/r`, for tests.
#[cfg(test)]
pub(crate) fn queued_record(id: &str, delivery: Option<&str>, commit: &str) -> BuildRecord {
    BuildRecord {
        id: id.into(),
        status: BuildStatus::Queued,
        repository: "o/r".into(),
        pull_request: 1,
        commit: commit.into(),
        base_ref: "main".into(),
        delivery: delivery.map(Into::into),
        created_at: now_rfc3339(),
        started_at: None,
        finished_at: None,
        error: None,
        services: vec![],
        source_url: "https://github.com/o/r".into(),
        retry_of: None,
        instance: None,
        trigger: Default::default(),
        pr_comment: None,
    }
}
