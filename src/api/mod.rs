//! The results API and the pages people watch: build records, logs (plain
//! or live), retry, health, metrics, and `--api-token` in front of them.
//!
//! Owns the HTTP read side; imports the store, the shared state and replies,
//! never the pipeline's steps or the webhook.

mod auth;
mod builds;
mod page;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::reply::{error_reply, json_reply};
use crate::state::AppState;

pub use auth::Unauthorized;

/// Every route but the webhook. `/healthz` is open; the rest sit behind
/// `--api-token` when it is set.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = warp::any().map({
        let state = state.clone();
        move || state.clone()
    });
    let health = warp::path!("healthz")
        .and(warp::get())
        .and(with_state.clone())
        .then(healthz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state.clone())
        .then(metrics);
    let guarded = stream::routes(state.clone())
        .or(builds::routes(state.clone()))
        .unify()
        .or(page::routes(state.clone()))
        .unify()
        .or(metrics)
        .unify();
    health
        .or(auth::login(state.clone()))
        .unify()
        .or(auth::require(state).and(guarded))
        .unify()
}

/// Turns rejections into the JSON error answers the API gives everywhere.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let reply = if rejection.find::<Unauthorized>().is_some() {
        let mut reply = error_reply(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token: send Authorization: Bearer TOKEN",
        );
        reply.headers_mut().insert(
            "www-authenticate",
            warp::http::HeaderValue::from_static("Bearer"),
        );
        reply
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        error_reply(StatusCode::BAD_REQUEST, "invalid query string")
    } else if rejection.is_not_found() {
        error_reply(StatusCode::NOT_FOUND, "not found")
    } else {
        error_reply(StatusCode::BAD_REQUEST, format!("{rejection:?}"))
    };
    Ok(reply)
}

async fn metrics(state: Arc<AppState>) -> Response {
    let queued = state.store.queued_count().await.unwrap_or(0);
    warp::reply::with_header(
        state
            .metrics
            .render(queued, &state.pipeline.settings.instance_id),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}

/// 200 while webhooks can be taken (the store answers); the engine and the
/// registry are reported, not required, since builds wait out their outages.
async fn healthz(state: Arc<AppState>) -> Response {
    let store_ok = state.store.ping().await;
    let database = state.store.kind();
    let instance = &state.pipeline.settings.instance_id;
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
        Ok(()) => json_reply(
            StatusCode::OK,
            json!({ "status": "ok", "store": "ok", "database": database, "instance": instance, "engine": engine, "registry": registry }),
        ),
        Err(err) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "store": err.to_string(), "database": database, "instance": instance, "engine": engine, "registry": registry }),
        ),
    }
}

/// Why an API request cannot be answered with what it asked for.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no build {0}")]
    NoBuild(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

impl ApiError {
    pub fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoBuild(_) => StatusCode::NOT_FOUND,
            ApiError::Store(err) => {
                tracing::error!(%err, "store error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error_reply(status, self)
    }
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}
