//! The JSON answers every HTTP handler gives, the webhook's and the API's
//! alike, so an admission reads the same whichever door it came through.

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::admission::AdmissionError;
use crate::store::Admission;

pub fn json_reply(status: StatusCode, body: serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

pub fn error_reply(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_reply(status, json!({ "error": message.to_string() }))
}

/// The answer to an admission, and what it meant for the deliveries metric.
pub fn admission(
    admitted: Result<Admission, AdmissionError>,
    max_queued_builds: u64,
) -> (Response, &'static str) {
    match admitted {
        Ok(Admission::Created(id)) => {
            let body =
                json!({ "build_id": id, "status": "queued", "url": format!("/builds/{id}") });
            (json_reply(StatusCode::ACCEPTED, body), "accepted")
        }
        Ok(Admission::Duplicate(id)) => {
            let body = json!({ "build_id": id, "duplicate": true, "url": format!("/builds/{id}") });
            (json_reply(StatusCode::OK, body), "duplicate")
        }
        Ok(Admission::QueueFull) => {
            tracing::warn!(
                limit = max_queued_builds,
                "queue full; delivery refused with 503"
            );
            let message =
                format!("{max_queued_builds} builds are already waiting; redeliver later");
            (redeliver_later(message), "rejected_queue_full")
        }
        Err(err) => {
            tracing::error!(%err, "could not store the delivery; refused with 503");
            let message = "could not record the build; redeliver later";
            (redeliver_later(message), "error")
        }
    }
}

/// Nothing was stored: 503 with `Retry-After`, so the sender knows the same
/// delivery can come again, and a monitor does not count a server bug.
fn redeliver_later(message: impl std::fmt::Display) -> Response {
    let mut reply = error_reply(StatusCode::SERVICE_UNAVAILABLE, message);
    reply
        .headers_mut()
        .insert("retry-after", warp::http::HeaderValue::from_static("60"));
    reply
}
