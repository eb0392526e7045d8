//! The one writer of new builds. Deliveries that arrive while a commit is
//! under way wait for it and go into the next transaction together (group
//! commit): under load the store pays one commit for many deliveries rather
//! than one each, and no delivery waits longer than one commit for its turn.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{within, Admission, BatchAdmission, BuildRecord, Store, StoreError};

/// GitHub gives a delivery 10 s: past this, the answer is `503 … redeliver
/// later`. A batch that commits after all is found as a duplicate then.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most admissions in one transaction: bounds how long the last of them
/// waits for the commit.
pub const MAX_BATCH: usize = 512;

/// Admissions waiting for the writer; past this, callers wait to hand theirs in.
const WAITING: usize = 4 * MAX_BATCH;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmissionError {
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error(
        "the build store's writer has stopped (the service is shutting down); redeliver later"
    )]
    Stopped,
}

struct Request {
    record: BuildRecord,
    reply: oneshot::Sender<Result<Admission, AdmissionError>>,
}

/// A handle on the admission writer; clones share it.
#[derive(Clone)]
pub struct Admissions {
    tx: mpsc::Sender<Request>,
}

impl Admissions {
    /// Starts the writer on the current runtime.
    pub fn start(store: Arc<dyn Store>, max_queued: u64) -> Self {
        let (tx, rx) = mpsc::channel(WAITING);
        tokio::spawn(write(store, max_queued, rx));
        Self { tx }
    }

    /// Admits `record` as `Store::admit` would, in the writer's next batch.
    pub async fn admit(&self, record: BuildRecord) -> Result<Admission, AdmissionError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { record, reply })
            .await
            .map_err(|_| AdmissionError::Stopped)?;
        answer.await.unwrap_or(Err(AdmissionError::Stopped))
    }
}

/// Takes whatever piled up (at least one, at most `MAX_BATCH`), admits it in
/// one transaction, answers, repeats. No deliberate wait: an idle service
/// commits each delivery on its own, at once.
async fn write(store: Arc<dyn Store>, max_queued: u64, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (records, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|r| (r.record, r.reply)).unzip();
        let answers = within(
            "the admission",
            ADMIT_TIMEOUT,
            store.admit_batch(&records, max_queued),
        )
        .await;
        answer_each(replies, answers);
    }
}

fn answer_each(
    replies: Vec<oneshot::Sender<Result<Admission, AdmissionError>>>,
    answers: Result<BatchAdmission, StoreError>,
) {
    let mut answers = match answers {
        Ok(answers) => answers.into_iter(),
        Err(err) => {
            let err = AdmissionError::Store(Arc::new(err));
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
    };
    for reply in replies {
        let answer = answers
            .next()
            .unwrap_or(Err(StoreError::Unanswered))
            .map_err(|e| AdmissionError::Store(Arc::new(e)));
        // A caller that gave up (its connection closed) needs no answer.
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{queued_record, SqliteStore};

    fn record(id: &str, delivery: &str, commit: &str) -> BuildRecord {
        queued_record(id, Some(delivery), commit)
    }

    #[tokio::test]
    async fn concurrent_admissions_are_all_answered_and_deduplicated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let admissions = Admissions::start(store.clone(), 1_000);
        // 300 deliveries of 100 commits: each commit is built once.
        let calls = (0..300).map(|i| {
            let admissions = admissions.clone();
            let rec = record(&format!("b{i}"), &format!("d{i}"), &format!("c{}", i % 100));
            tokio::spawn(async move { admissions.admit(rec).await })
        });
        let mut created = 0;
        let mut duplicates = 0;
        for call in futures::future::join_all(calls).await {
            match call.expect("task").expect("admitted") {
                Admission::Created(_) => created += 1,
                Admission::Duplicate(_) => duplicates += 1,
                Admission::QueueFull => panic!("the queue has room"),
            }
        }
        assert_eq!((created, duplicates), (100, 200));
        assert_eq!(store.queued_count().await.expect("count"), 100);
    }

    #[tokio::test]
    async fn a_stopped_writer_is_an_error_not_a_hang() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let admissions = Admissions { tx };
        let answer = admissions.admit(record("a", "d", "c")).await;
        assert!(matches!(answer, Err(AdmissionError::Stopped)));
    }
}
