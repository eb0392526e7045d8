//! The job queue: build ids in, one task per build out, at most a fixed
//! number of builds at a time. The store is the queue's memory; this channel
//! only wakes the workers, so nothing admitted is lost on a crash.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::TaskTracker;

use crate::pipeline::Pipeline;

#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<String>,
}

impl Queue {
    /// Starts the dispatcher. Builds run on `tracker`, so shutdown can wait for them.
    pub fn start(pipeline: Arc<Pipeline>, max_builds: usize, tracker: TaskTracker) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(
            pipeline,
            rx,
            Arc::new(Semaphore::new(max_builds)),
            tracker,
        ));
        Self { tx }
    }

    pub fn push(&self, build_id: String) {
        if self.tx.send(build_id).is_err() {
            // Only after shutdown began; the build stays queued in the store
            // and runs at the next start.
            tracing::warn!("queue closed; build stays queued for the next start");
        }
    }
}

async fn dispatch(
    pipeline: Arc<Pipeline>,
    mut rx: mpsc::UnboundedReceiver<String>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    while let Some(id) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        if tracker.is_closed() {
            break;
        }
        let pipeline = pipeline.clone();
        tracker.spawn(async move {
            pipeline.run(&id).await;
            drop(permit);
        });
    }
}
