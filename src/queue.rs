//! The job queue, kept in the store: an instance claims the oldest build
//! that waits, holds it on a lease it renews while the build runs, and
//! stops the build the moment the lease is lost. Admissions here, notices
//! from other instances, and a poll wake the claimer; the poll also finds
//! builds whose instance stopped answering (their leases ran out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::pipeline::Pipeline;
use crate::store::{within, Claimed, Fence, Store};

/// How long a claim may take before the claimer tries again.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// What the claimer needs to know, fixed for the life of the service.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `--instance-id`.
    pub instance: String,
    /// `--lease`.
    pub lease: Duration,
    /// `--queue-poll`.
    pub poll: Duration,
    /// `--max-concurrent-builds`.
    pub max_builds: usize,
}

#[derive(Clone)]
pub struct Queue {
    wake: Arc<Notify>,
    held: Arc<Held>,
    stop: CancellationToken,
}

/// The builds this instance holds, each with the token that stops it.
#[derive(Default)]
struct Held {
    builds: Mutex<HashMap<String, (Fence, CancellationToken)>>,
}

impl Held {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Fence, CancellationToken)>> {
        self.builds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Queue {
    /// Starts the claimer. Builds run on `tracker`, so shutdown can wait for them.
    pub fn start(pipeline: Arc<Pipeline>, settings: QueueSettings, tracker: TaskTracker) -> Self {
        let queue = Self {
            wake: Arc::new(Notify::new()),
            held: Arc::default(),
            stop: CancellationToken::new(),
        };
        tokio::spawn(claim_loop(pipeline, settings, queue.clone(), tracker));
        queue
    }

    /// Something may wait in the queue: a build was admitted, or handed back.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// No build is claimed from here on (shutdown).
    pub fn stop_claiming(&self) {
        self.stop.cancel();
        self.wake.notify_one();
    }

    /// Stops the builds still running here and puts them back in the queue,
    /// where another instance (or this one's next run) claims them.
    pub async fn hand_back_all(&self, store: &Arc<dyn Store>) {
        let held: Vec<(Fence, CancellationToken)> =
            self.held.map().drain().map(|(_, v)| v).collect();
        for (fence, stop) in held {
            stop.cancel();
            match store.hand_back(&fence).await {
                Ok(true) => tracing::info!(build = %fence.build, "build handed back to the queue"),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(%err, build = %fence.build, "could not hand the build back; another instance takes it over once its lease runs out")
                }
            }
        }
    }
}

async fn claim_loop(
    pipeline: Arc<Pipeline>,
    settings: QueueSettings,
    queue: Queue,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(settings.max_builds));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            () = queue.stop.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        if queue.stop.is_cancelled() {
            return;
        }
        let claim = pipeline.store.claim(&settings.instance, settings.lease);
        match within("a claim", CLAIM_TIMEOUT, claim).await {
            Ok(Some(claimed)) => run(&pipeline, &settings, &queue, &tracker, claimed, permit),
            Ok(None) => {
                drop(permit);
                wait_for_work(&queue, settings.poll).await;
            }
            Err(err) => {
                drop(permit);
                tracing::warn!(%err, "could not claim a build; trying again");
                wait_for_work(&queue, settings.poll).await;
            }
        }
    }
}

async fn wait_for_work(queue: &Queue, poll: Duration) {
    tokio::select! {
        () = queue.wake.notified() => {}
        () = tokio::time::sleep(poll) => {}
        () = queue.stop.cancelled() => {}
    }
}

/// Runs a claimed build on the builds' threads, renewing its lease meanwhile.
fn run(
    pipeline: &Arc<Pipeline>,
    settings: &QueueSettings,
    queue: &Queue,
    tracker: &TaskTracker,
    claimed: Claimed,
    permit: OwnedSemaphorePermit,
) {
    let fence = Fence::of(&claimed.record);
    let lost = CancellationToken::new();
    queue
        .held
        .map()
        .insert(fence.build.clone(), (fence.clone(), lost.clone()));
    // A build this instance's previous run left is resumed, not taken over.
    let takeover = claimed
        .taken_from
        .as_deref()
        .is_some_and(|from| from != settings.instance);
    pipeline.metrics.claimed(takeover);
    let keeper = AbortOnDropHandle::new(tokio::spawn(keep_lease(
        pipeline.clone(),
        fence.clone(),
        settings.lease,
        lost.clone(),
    )));
    let (pipeline, held) = (pipeline.clone(), queue.held.clone());
    let builds = build_runtime().cloned().unwrap_or_else(Handle::current);
    tracker.spawn_on(
        async move {
            pipeline.run(claimed, lost).await;
            drop(keeper);
            held.map().remove(&fence.build);
            drop(permit);
        },
        &builds,
    );
}

/// Renews the lease every third of it. The build stops when the store says
/// another attempt holds it, or when no renewal went through for a whole
/// lease (the database unreachable): by then another instance may have it.
async fn keep_lease(
    pipeline: Arc<Pipeline>,
    fence: Fence,
    lease: Duration,
    lost: CancellationToken,
) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        // A renewal stuck on a cut connection must not outlast the lease.
        match within(
            "a lease renewal",
            lease / 3,
            pipeline.store.renew(&fence, lease),
        )
        .await
        {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(build = %fence.build, attempt = fence.attempt, "lease lost: another instance took the build over; stopping it here");
                break;
            }
            Err(err) if renewed.elapsed() >= lease => {
                tracing::warn!(%err, build = %fence.build, "lease not renewed for a whole lease; stopping the build here, another instance takes it over");
                break;
            }
            Err(err) => {
                tracing::warn!(%err, build = %fence.build, "could not renew the lease; trying again")
            }
        }
    }
    pipeline.metrics.lease_lost();
    lost.cancel();
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
