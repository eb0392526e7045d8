//! The handle a build's steps write their log lines to. It knows nothing of
//! where the lines go (the store's log writer, `store::log`), so the engine
//! and the pipeline can write logs without reaching the database.

use std::sync::Arc;

use tokio::sync::mpsc;

/// A cheap handle that prefixes each line with the service it is about.
#[derive(Clone)]
pub struct BuildLog {
    tx: mpsc::UnboundedSender<String>,
    prefix: Arc<str>,
}

impl BuildLog {
    /// A handle and the receiving end its lines go to; whoever stores the
    /// log reads them there.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Self {
            tx,
            prefix: Arc::from(""),
        };
        (log, rx)
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
