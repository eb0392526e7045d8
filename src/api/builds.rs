//! `/builds`: records, plain-text logs, and retry.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{short, ApiError};
use crate::reply::{self, json_reply};
use crate::state::AppState;
use crate::store::{BuildRecord, BuildStatus, ListFilter};

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

pub fn list_filter(query: &HashMap<String, String>) -> Result<ListFilter, ApiError> {
    let status = match query.get("status") {
        None => None,
        Some(raw) => Some(BuildStatus::parse(raw).ok_or_else(|| {
            ApiError::BadRequest("status must be one of queued, running, succeeded, failed".into())
        })?),
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if n > 0 => n.min(MAX_LIMIT),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "limit must be a positive number".into(),
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
    let builds = async { Ok::<_, ApiError>(state.store.list(&list_filter(&query)?).await?) };
    match builds.await {
        Ok(builds) => json_reply(StatusCode::OK, json!({ "builds": builds })),
        Err(err) => err.into_response(),
    }
}

pub async fn find(state: &AppState, id: &str) -> Result<BuildRecord, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::NoBuild(short(id)))
}

async fn get_build(id: String, state: Arc<AppState>) -> Response {
    match find(&state, &id).await {
        Ok(record) => warp::reply::json(&record).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn plain_log(id: String, state: Arc<AppState>) -> Response {
    let lines = async {
        find(&state, &id).await?;
        Ok::<_, ApiError>(state.store.read_log(&id, 0).await?)
    };
    match lines.await {
        Ok(lines) => {
            let mut text = String::new();
            for line in lines {
                text.push_str(&line.text);
                text.push('\n');
            }
            warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8")
                .into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// A new build of the same commit. Published versions stay immutable, so
/// services already published from the same sources are skipped.
async fn retry(id: String, state: Arc<AppState>) -> Response {
    let original = match find(&state, &id).await {
        Ok(record) => record,
        Err(err) => return err.into_response(),
    };
    let admitted = state.intake.admit(BuildRecord::retry(original)).await;
    reply::admission(admitted, state.intake.max_queued_builds()).0
}
