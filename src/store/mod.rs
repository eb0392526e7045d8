//! Build records and logs, behind a small interface so that a shared
//! Postgres store can replace SQLite without touching the pipeline.
//!
//! Owns persistence (records, queue, logs and their live fan-out); imports
//! only leaf types and the log handle, never an adapter or the pipeline.

mod clock;
pub mod log;
mod postgres;
mod record;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use clock::{Clock, ManualClock};
pub use postgres::PostgresStore;
pub use record::{
    now_rfc3339, BuildRecord, BuildStatus, PlatformRecord, ServiceRecord, ServiceStatus, Trigger,
};
pub use sqlite::SqliteStore;

use crate::secret::Secret;

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
    #[error(
        "build store did not answer {what} within {after:?}; check that the database is reachable"
    )]
    TimedOut { what: &'static str, after: Duration },
    #[error("build {build}: attempt {attempt} no longer holds it (its lease ran out and another instance took it over); this instance stops it")]
    LeaseLost { build: String, attempt: u32 },
}

/// `call`, or `TimedOut` after `after`. A database cut off by the network
/// leaves a query waiting on a connection that will never answer; the
/// callers that must act on time (the webhook, leases) do not wait for it.
pub async fn within<T>(
    what: &'static str,
    after: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(after, call)
        .await
        .unwrap_or(Err(StoreError::TimedOut { what, after }))
}

/// Which claim of a build a write comes from: a build's id and the attempt
/// an instance holds. A write naming an attempt that was taken over changes
/// nothing and answers `StoreError::LeaseLost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub build: String,
    pub attempt: u32,
}

impl Fence {
    pub fn of(record: &BuildRecord) -> Self {
        Self {
            build: record.id.clone(),
            attempt: record.attempt,
        }
    }

    fn lost(&self) -> StoreError {
        StoreError::LeaseLost {
            build: self.build.clone(),
            attempt: self.attempt,
        }
    }

    /// How a tag lease names its holder.
    fn holder(&self) -> String {
        format!("{}#{}", self.build, self.attempt)
    }
}

/// A build an instance has just claimed: running, on its lease, with its
/// attempt raised.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub record: BuildRecord,
    /// The instance that held it before, when this claim takes it over.
    pub taken_from: Option<String>,
}

/// What a backend that shares its queue tells the instances listening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A build was admitted: try to claim.
    Queued,
    /// Log lines of this build were stored.
    Logged(String),
    /// The listener lost its connection, and with it any notice sent
    /// meanwhile: look at everything again.
    Missed,
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
    /// Writes the record of `record.attempt` on `record.instance`:
    /// `LeaseLost`, and nothing written, once another attempt holds the
    /// build or it was handed back to the queue.
    async fn save(&self, record: &BuildRecord) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<BuildRecord>, StoreError>;
    async fn list(&self, filter: &ListFilter) -> Result<Vec<BuildRecord>, StoreError>;
    /// How many builds wait to start.
    async fn queued_count(&self) -> Result<u64, StoreError>;
    /// Builds left queued or running, oldest first.
    async fn unfinished(&self) -> Result<Vec<BuildRecord>, StoreError>;
    /// Appends lines to the log of the build `fence` holds; returns them
    /// numbered, in order. `LeaseLost` once another attempt holds the build.
    async fn append_log(&self, fence: &Fence, lines: &[String])
        -> Result<Vec<LogLine>, StoreError>;
    /// The build's log lines numbered above `after` (all of them for 0).
    async fn read_log(&self, id: &str, after: u64) -> Result<Vec<LogLine>, StoreError>;
    /// Claims the oldest build that waits (queued, or running on a lease
    /// that ran out) for `lease`, on the store's clock: running, on
    /// `instance`, its attempt raised. `None` when nothing waits.
    async fn claim(&self, instance: &str, lease: Duration) -> Result<Option<Claimed>, StoreError>;
    /// Extends the lease `fence` holds; false once another attempt holds it.
    async fn renew(&self, fence: &Fence, lease: Duration) -> Result<bool, StoreError>;
    /// Puts a build `fence` holds back in the queue, for another instance
    /// (or this one, later) to claim; false when it was no longer held.
    async fn hand_back(&self, fence: &Fence) -> Result<bool, StoreError>;
    /// Ends at once the leases a previous run of `instance` held: it is not
    /// running them any more, so they need not wait out their leases.
    async fn release_instance(&self, instance: &str) -> Result<u64, StoreError>;
    /// Takes (or renews) the lease of one image tag for the build `fence`
    /// holds; false while another build's lease on it runs.
    async fn lease_tag(
        &self,
        tag: &str,
        fence: &Fence,
        lease: Duration,
    ) -> Result<bool, StoreError>;
    /// Gives the tag's lease up, if `fence` still holds it.
    async fn release_tag(&self, tag: &str, fence: &Fence) -> Result<(), StoreError>;
    /// Whether the store answers, for `/healthz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// `sqlite` or `postgresql`.
    fn kind(&self) -> &'static str;
    /// Notices from other instances (PostgreSQL's LISTEN), for a store that
    /// several instances share; `None` for one that only this process writes.
    fn notices(&self) -> Option<tokio::sync::mpsc::Receiver<Notice>> {
        None
    }
    /// Since when missed merges of `repository` are caught up: its first
    /// build's creation, else the first time this was asked (`now` then).
    async fn catch_up_since(&self, repository: &str, now: &str) -> Result<String, StoreError>;
}

/// A queued webhook build of `o/r`, for tests.
#[cfg(test)]
pub(crate) fn queued_record(id: &str, delivery: Option<&str>, commit: &str) -> BuildRecord {
    use crate::types::{CommitSha, Forge, Repository};
    let merge = crate::trigger::MergedPullRequest {
        repository: Repository::parse("o/r").expect("a repository"),
        number: 1,
        commit: CommitSha::parse(&"0".repeat(40)).expect("a commit"),
        base_ref: "main".into(),
        source_url: "https://github.com/o/r".into(),
        forge: Forge::GitHub,
    };
    // The store keys on these; any text does for it.
    BuildRecord {
        id: id.into(),
        commit: commit.into(),
        ..BuildRecord::queued(merge, delivery.map(Into::into), Trigger::Webhook)
    }
}
