//! `/builds`: records, plain-text logs, and retry.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::short;
use crate::app::AppState;
use crate::store::{now_rfc3339, BuildRecord, BuildStatus, ListFilter};
use crate::webhook::{admit_record, error_reply, json_reply};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = warp::any().map(move || state.clone());
    let list = warp::path!("builds")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .then(list_builds);
    let one = warp::path!("builds" / String)
        .and(warp::get())
        .and(with_state.clone())
        .then(get_build);
    let log = warp::path!("builds" / String / "log")
        .and(warp::get())
        .and(with_state.clone())
        .then(plain_log);
    let retry = warp::path!("builds" / String / "retry")
        .and(warp::post())
        .and(with_state)
        .then(retry);
    list.or(one).unify().or(log).unify().or(retry).unify()
}

pub fn list_filter(query: &HashMap<String, String>) -> Result<ListFilter, Response> {
    let status = match query.get("status") {
        None => None,
        Some(raw) => Some(BuildStatus::parse(raw).ok_or_else(|| {
            error_reply(
                StatusCode::BAD_REQUEST,
                "status must be one of queued, running, succeeded, failed",
            )
        })?),
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if n > 0 => n.min(MAX_LIMIT),
        Some(_) => {
            return Err(error_reply(
                StatusCode::BAD_REQUEST,
                "limit must be a positive number",
            ))
        }
    };
    Ok(ListFilter {
        repository: query.get("repository").cloned(),
        status,
        limit,
    })
}

async fn list_builds(query: HashMap<String, String>, state: Arc<AppState>) -> Response {
    let filter = match list_filter(&query) {
        Ok(filter) => filter,
        Err(reply) => return reply,
    };
    match state.store.list(&filter).await {
        Ok(builds) => json_reply(StatusCode::OK, json!({ "builds": builds })),
        Err(err) => store_error(err),
    }
}

/// The record, or the answer to give instead (404, 500).
pub async fn find(state: &AppState, id: &str) -> Result<BuildRecord, Response> {
    match state.store.get(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(error_reply(
            StatusCode::NOT_FOUND,
            format!("no build {}", short(id)),
        )),
        Err(err) => Err(store_error(err)),
    }
}

async fn get_build(id: String, state: Arc<AppState>) -> Response {
    match find(&state, &id).await {
        Ok(record) => warp::reply::json(&record).into_response(),
        Err(reply) => reply,
    }
}

async fn plain_log(id: String, state: Arc<AppState>) -> Response {
    if let Err(reply) = find(&state, &id).await {
        return reply;
    }
    match state.store.read_log(&id, 0).await {
        Ok(lines) => {
            let mut text = String::new();
            for line in lines {
                text.push_str(&line.text);
                text.push('\n');
            }
            warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8")
                .into_response()
        }
        Err(err) => store_error(err),
    }
}

/// A new build of the same commit. Published versions stay immutable, so
/// services already published from the same sources are skipped.
async fn retry(id: String, state: Arc<AppState>) -> Response {
    let original = match find(&state, &id).await {
        Ok(record) => record,
        Err(reply) => return reply,
    };
    let record = BuildRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        status: BuildStatus::Queued,
        delivery: None,
        created_at: now_rfc3339(),
        started_at: None,
        finished_at: None,
        error: None,
        services: vec![],
        retry_of: Some(original.id.clone()),
        ..original
    };
    admit_record(&state, &record).await.0
}

pub fn store_error(err: crate::store::StoreError) -> Response {
    tracing::error!(%err, "store error");
    error_reply(StatusCode::INTERNAL_SERVER_ERROR, err)
}
