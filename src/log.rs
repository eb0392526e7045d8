//! A build's log: lines from every service, written to the store in batches
//! by one task per build, so the engine's output never waits on the disk;
//! and a hub that hands the same lines to live watchers as they are stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use crate::store::{BuildStatus, LogLine, Store};

/// Lines a watcher may fall behind by before it re-reads the store.
const WATCH_BUFFER: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Line(LogLine),
    /// The build ended; nothing follows.
    End(BuildStatus),
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

/// A cheap handle that prefixes each line with the service it is about.
#[derive(Clone)]
pub struct BuildLog {
    tx: mpsc::UnboundedSender<String>,
    prefix: Arc<str>,
}

impl BuildLog {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        hub: Arc<LogHub>,
        build_id: String,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_lines(store, hub, build_id, rx));
        let log = Self {
            tx,
            prefix: Arc::from(""),
        };
        (log, writer)
    }

    pub fn for_service(&self, name: &str) -> Self {
        Self {
            tx: self.tx.clone(),
            prefix: Arc::from(format!("[{name}] ")),
        }
    }

    pub fn line(&self, text: &str) {
        // Carriage returns (progress bars) would break server-sent events.
        let text = text.replace('\r', "");
        // A closed channel means the build is over; late lines have nowhere to go.
        let _ = self.tx.send(format!("{}{}", self.prefix, text));
    }

    /// Engine output: may hold several lines, or a partial one.
    pub fn text(&self, text: &str) {
        for line in text.lines() {
            let line = line.trim_end();
            if !line.is_empty() {
                self.line(line);
            }
        }
    }
}

async fn write_lines(
    store: Arc<dyn Store>,
    hub: Arc<LogHub>,
    build_id: String,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        match store.append_log(&build_id, &batch).await {
            Ok(lines) => {
                for line in lines {
                    hub.publish(&build_id, LogEvent::Line(line));
                }
            }
            Err(err) => tracing::error!(%err, build = %build_id, "could not store log lines"),
        }
        batch.clear();
    }
}
