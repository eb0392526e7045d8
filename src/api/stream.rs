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
use crate::app::AppState;
use crate::log::LogEvent;
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
    let mut last_seq = 0;
    for line in &backlog {
        if tx.send(line_event(line)).await.is_err() {
            return;
        }
        last_seq = line.seq;
    }
    if let Some(status) = finished {
        let _ = tx.send(end_event(status)).await;
        return;
    }
    loop {
        match live.recv().await {
            Ok(LogEvent::Line(line)) if line.seq > last_seq => {
                last_seq = line.seq;
                if tx.send(line_event(&line)).await.is_err() {
                    return;
                }
            }
            Ok(LogEvent::Line(_)) => {}
            Ok(LogEvent::End(status)) => {
                let _ = tx.send(end_event(status)).await;
                return;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let Ok(missed) = state.store.read_log(&id, last_seq).await else {
                    return;
                };
                for line in &missed {
                    if tx.send(line_event(line)).await.is_err() {
                        return;
                    }
                    last_seq = line.seq;
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                // The build ended while this watcher was catching up.
                if let Ok(Some(record)) = state.store.get(&id).await {
                    if let Ok(rest) = state.store.read_log(&id, last_seq).await {
                        for line in &rest {
                            if tx.send(line_event(line)).await.is_err() {
                                return;
                            }
                        }
                    }
                    let _ = tx.send(end_event(record.status)).await;
                }
                return;
            }
        }
    }
}
