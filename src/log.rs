//! A build's log: lines from every service, written to the store in batches
//! by one task per build, so the engine's output never waits on the disk.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::store::Store;

/// A cheap handle that prefixes each line with the service it is about.
#[derive(Clone)]
pub struct BuildLog {
    tx: mpsc::UnboundedSender<String>,
    prefix: Arc<str>,
}

impl BuildLog {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: Arc<dyn Store>, build_id: String) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_lines(store, build_id, rx));
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
    build_id: String,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        if let Err(err) = store.append_log(&build_id, &batch).await {
            tracing::error!(%err, build = %build_id, "could not store log lines");
        }
        batch.clear();
    }
}
