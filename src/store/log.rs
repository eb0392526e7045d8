//! A build's stored log: lines from every service, written to the store in
//! batches by one task per build, so the engine's output never waits on the
//! disk; and a hub that hands the same lines to live watchers as they are
//! stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::{BuildStatus, Fence, LogLine, Store, StoreError};
use crate::log::BuildLog;

/// How long lines gather before they are stored together: one write (and,
/// with PostgreSQL, one notice to the other instances) per batch, not per line.
const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// Lines stored in one write at most.
const MAX_BATCH: usize = 1024;

/// Lines a watcher may fall behind by before it re-reads the store.
const WATCH_BUFFER: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Line(LogLine),
    /// The build ended; nothing follows.
    End(BuildStatus),
    /// Lines were stored by another instance: read them from the store.
    Stored,
}

/// Live log channels of running builds, created when someone watches.
#[derive(Default)]
pub struct LogHub {
    channels: Mutex<HashMap<String, broadcast::Sender<LogEvent>>>,
}

impl LogHub {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<LogEvent>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self, build_id: &str) -> broadcast::Receiver<LogEvent> {
        self.channels()
            .entry(build_id.to_string())
            .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
            .subscribe()
    }

    /// Sends to watchers, if any; a build nobody watches pays only a lookup.
    fn publish(&self, build_id: &str, event: LogEvent) {
        if let Some(tx) = self.channels().get(build_id) {
            let _ = tx.send(event);
        }
    }

    /// Another instance stored lines of `build_id`.
    pub fn poke(&self, build_id: &str) {
        self.publish(build_id, LogEvent::Stored);
    }

    /// Notices may have been lost: every watcher looks at the store again.
    pub fn poke_all(&self) {
        for tx in self.channels().values() {
            let _ = tx.send(LogEvent::Stored);
        }
    }

    pub fn finish(&self, build_id: &str, status: BuildStatus) {
        if let Some(tx) = self.channels().remove(build_id) {
            let _ = tx.send(LogEvent::End(status));
        }
    }

    /// Drops the channel of a build that turned out to be over already.
    pub fn release(&self, build_id: &str) {
        let mut channels = self.channels();
        if channels
            .get(build_id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            channels.remove(build_id);
        }
    }
}

/// Starts the writer task of a build's log; it ends when every handle is
/// dropped. Lines are written as the attempt `fence` names: once another
/// instance takes the build over, they are dropped.
pub fn start(
    store: Arc<dyn Store>,
    hub: Arc<LogHub>,
    fence: Fence,
) -> (BuildLog, tokio::task::JoinHandle<()>) {
    let (log, rx) = BuildLog::channel();
    let writer = tokio::spawn(write_lines(store, hub, fence, rx));
    (log, writer)
}

async fn write_lines(
    store: Arc<dyn Store>,
    hub: Arc<LogHub>,
    fence: Fence,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        gather(&mut rx, &mut batch).await;
        match store.append_log(&fence, &batch).await {
            Ok(lines) => {
                for line in lines {
                    hub.publish(&fence.build, LogEvent::Line(line));
                }
            }
            Err(err @ StoreError::LeaseLost { .. }) => {
                return tracing::warn!(%err, "log lines dropped");
            }
            Err(err) => tracing::error!(%err, build = %fence.build, "could not store log lines"),
        }
        batch.clear();
    }
}

/// Adds what arrives within the batch window; the end of the build's log
/// (every handle dropped) ends the window at once.
async fn gather(rx: &mut mpsc::UnboundedReceiver<String>, batch: &mut Vec<String>) {
    let window = tokio::time::sleep(BATCH_WINDOW);
    tokio::pin!(window);
    while batch.len() < MAX_BATCH {
        tokio::select! {
            received = rx.recv_many(batch, MAX_BATCH - batch.len()) => {
                if received == 0 {
                    return;
                }
            }
            () = &mut window => return,
        }
    }
}
