//! `GET /builds/<id>/log` with `Accept: text/event-stream`: the lines
//! already written, then new ones as they are stored, then an `end` event
//! with the build's status. Each watcher reads through its own bounded
//! buffer; one that falls behind catches up from the store, so no watcher
//! ever slows the build or another watcher.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Reply};

use super::builds::find;
use super::ApiError;
use crate::state::AppState;
use crate::store::log::LogEvent;
use crate::store::{BuildStatus, LogLine};

const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events buffered per watcher before it is considered slow.
const WATCHER_BUFFER: usize = 256;

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("builds" / String / "log")
        .and(warp::get())
        .and(wants_event_stream())
        .and(warp::any().map(move || state.clone()))
        .then(event_stream)
}

fn wants_event_stream() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("accept")
        .and_then(|accept: Option<String>| async move {
            if accept.is_some_and(|a| a.contains("text/event-stream")) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

async fn event_stream(id: String, state: Arc<AppState>) -> Response {
    // Subscribe before reading the store, so nothing falls between the two.
    let live = state.hub.subscribe(&id);
    let record = match find(&state, &id).await {
        Ok(record) => record,
        Err(err) => {
            state.hub.release(&id);
            return err.into_response();
        }
    };
    let backlog = match state.store.read_log(&id, 0).await {
        Ok(lines) => lines,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let finished = record.status.is_finished().then_some(record.status);
    if finished.is_some() {
        state.hub.release(&id);
    }
    let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
    tokio::spawn(feed(state, id, backlog, finished, live, tx));
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(events)).into_response()
}

fn line_event(line: &LogLine) -> Event {
    Event::default().id(line.seq.to_string()).data(&line.text)
}

fn end_event(status: BuildStatus) -> Event {
    Event::default()
        .event("end")
        .data(serde_json::json!({ "status": status.as_str() }).to_string())
}

/// Feeds one watcher until the build ends or the watcher leaves.
async fn feed(
    state: Arc<AppState>,
    id: String,
    backlog: Vec<LogLine>,
    finished: Option<BuildStatus>,
    mut live: broadcast::Receiver<LogEvent>,
    tx: mpsc::Sender<Event>,
) {
    let mut watcher = Watcher {
        state,
        id,
        tx,
        last_seq: 0,
    };
    if watcher.send_lines(&backlog).await.is_err() {
        return;
    }
    if let Some(status) = finished {
        let _ = watcher.tx.send(end_event(status)).await;
        return;
    }
    loop {
        // Lines of a build another instance runs come through the store: a
        // notice pokes the watcher, and a quiet spell makes it look anyway.
        let event = tokio::select! {
            event = live.recv() => Some(event),
            () = tokio::time::sleep(STORE_POLL) => None,
        };
        let step = match event {
            Some(Ok(LogEvent::Line(line))) => watcher.send_lines(&[line]).await.map(|()| false),
            Some(Ok(LogEvent::End(status))) => watcher.end(status).await.map(|()| true),
            Some(Ok(LogEvent::Stored)) | Some(Err(broadcast::error::RecvError::Lagged(_))) => {
                watcher.catch_up().await.map(|()| false)
            }
            Some(Err(broadcast::error::RecvError::Closed)) => {
                live = watcher.state.hub.subscribe(&watcher.id);
                watcher.catch_up_or_end().await
            }
            None => watcher.catch_up_or_end().await,
        };
        if !matches!(step, Ok(false)) {
            return;
        }
    }
}

/// How long a watcher waits without news before it reads the store.
const STORE_POLL: Duration = Duration::from_millis(500);

/// The watcher gone, or the store not answering: the stream ends.
struct Gone;

struct Watcher {
    state: Arc<AppState>,
    id: String,
    tx: mpsc::Sender<Event>,
    last_seq: u64,
}

impl Watcher {
    /// Sends the lines it has not sent yet, in order, each once.
    async fn send_lines(&mut self, lines: &[LogLine]) -> Result<(), Gone> {
        for line in lines {
            if line.seq <= self.last_seq {
                continue;
            }
            self.tx.send(line_event(line)).await.map_err(|_| Gone)?;
            self.last_seq = line.seq;
        }
        Ok(())
    }

    async fn catch_up(&mut self) -> Result<(), Gone> {
        let missed = self
            .state
            .store
            .read_log(&self.id, self.last_seq)
            .await
            .map_err(|_| Gone)?;
        self.send_lines(&missed).await
    }

    /// The rest of the log, then the end.
    async fn end(&mut self, status: BuildStatus) -> Result<(), Gone> {
        self.catch_up().await?;
        self.tx.send(end_event(status)).await.map_err(|_| Gone)
    }

    /// Reads the store; true once the build has ended (and the end was sent).
    async fn catch_up_or_end(&mut self) -> Result<bool, Gone> {
        // The status first: a finished build's lines were all stored before it.
        let record = self.state.store.get(&self.id).await.map_err(|_| Gone)?;
        match record.map(|r| r.status).filter(|s| s.is_finished()) {
            Some(status) => self.end(status).await.map(|()| true),
            None => self.catch_up().await.map(|()| false),
        }
    }
}
