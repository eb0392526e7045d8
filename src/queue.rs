//! The job queue: build ids in, one task per build out, at most a fixed
//! number of builds at a time. The store is the queue's memory; this channel
//! only wakes the workers, so nothing admitted is lost on a crash.

use std::sync::{Arc, OnceLock};

use tokio::runtime::{Handle, Runtime};
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
        let builds = build_runtime().cloned().unwrap_or_else(Handle::current);
        tracker.spawn_on(
            async move {
                pipeline.run(&id).await;
                drop(permit);
            },
            &builds,
        );
    }
}

/// How much lower than the service's threads builds run (a nice value).
const BUILD_NICENESS: i32 = 10;

/// Builds run on their own threads at a lower CPU priority: a build's
/// bookkeeping (GitHub calls, log lines, JSON) then waits for the webhook's
/// answers on a busy machine, never the other way round. The store does its
/// work on the service's own threads (see `SqliteStore`), so a build never
/// holds the store's lock at the lower priority.
fn build_runtime() -> Option<&'static Handle> {
    static BUILDS: OnceLock<Option<Runtime>> = OnceLock::new();
    BUILDS
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("slipway-build")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .inspect_err(|err| {
                    tracing::warn!(%err, "builds share the webhook's threads: no threads of their own");
                })
                .ok()
        })
        .as_ref()
        .map(Runtime::handle)
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux a nice value belongs to the thread, not the whole process.
    let thread = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(thread), BUILD_NICENESS) {
        tracing::debug!(%err, "build thread keeps the service's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
