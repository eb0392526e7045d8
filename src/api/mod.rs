//! The results API: build records, logs, health and metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::app::AppState;
use crate::store::{BuildStatus, ListFilter};
use crate::webhook::{error_reply, json_reply};

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
        .then(get_log);
    let health = warp::path!("healthz")
        .and(warp::get())
        .and(with_state.clone())
        .then(healthz);
    let metrics =
        warp::path!("metrics")
            .and(warp::get())
            .and(with_state)
            .map(|state: Arc<AppState>| {
                warp::reply::with_header(
                    state.metrics.render(),
                    "content-type",
                    "text/plain; version=0.0.4",
                )
                .into_response()
            });
    list.or(one)
        .unify()
        .or(log)
        .unify()
        .or(health)
        .unify()
        .or(metrics)
        .unify()
}

async fn list_builds(query: HashMap<String, String>, state: Arc<AppState>) -> Response {
    let status = match query.get("status") {
        None => None,
        Some(raw) => match BuildStatus::parse(raw) {
            Some(status) => Some(status),
            None => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    "status must be one of queued, running, succeeded, failed",
                )
            }
        },
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if n > 0 => n.min(MAX_LIMIT),
        Some(_) => return error_reply(StatusCode::BAD_REQUEST, "limit must be a positive number"),
    };
    let filter = ListFilter {
        repository: query.get("repository").cloned(),
        status,
        limit,
    };
    match state.store.list(&filter).await {
        Ok(builds) => json_reply(StatusCode::OK, json!({ "builds": builds })),
        Err(err) => store_error(err),
    }
}

async fn get_build(id: String, state: Arc<AppState>) -> Response {
    match state.store.get(&id).await {
        Ok(Some(record)) => warp::reply::json(&record).into_response(),
        Ok(None) => error_reply(StatusCode::NOT_FOUND, format!("no build {}", short(&id))),
        Err(err) => store_error(err),
    }
}

async fn get_log(id: String, state: Arc<AppState>) -> Response {
    match state.store.get(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error_reply(StatusCode::NOT_FOUND, format!("no build {}", short(&id))),
        Err(err) => return store_error(err),
    }
    match state.store.read_log(&id).await {
        Ok(log) => warp::reply::with_header(log, "content-type", "text/plain; charset=utf-8")
            .into_response(),
        Err(err) => store_error(err),
    }
}

/// 200 while webhooks can be taken (the store answers); the engine and the
/// registry are reported, not required, since builds wait out their outages.
async fn healthz(state: Arc<AppState>) -> Response {
    let store_ok = state
        .store
        .list(&ListFilter {
            limit: 1,
            ..Default::default()
        })
        .await;
    let probe = Duration::from_secs(3);
    let engine = async {
        match tokio::time::timeout(probe, state.pipeline.engine()).await {
            Ok(Ok(engine)) => match tokio::time::timeout(probe, engine.ping()).await {
                Ok(Ok(())) => "ok".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        }
    };
    let registry = async {
        match tokio::time::timeout(probe, state.pipeline.registry.ping()).await {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        }
    };
    let (engine, registry) = tokio::join!(engine, registry);
    match store_ok {
        Ok(_) => json_reply(
            StatusCode::OK,
            json!({ "status": "ok", "engine": engine, "registry": registry }),
        ),
        Err(err) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "store": err.to_string(), "engine": engine, "registry": registry }),
        ),
    }
}

fn store_error(err: crate::store::StoreError) -> Response {
    tracing::error!(%err, "store error");
    error_reply(StatusCode::INTERNAL_SERVER_ERROR, err)
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}
