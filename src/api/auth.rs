//! `--api-token`: `Authorization: Bearer TOKEN`, or the cookie a browser
//! gets by opening any page once with `?token=TOKEN`.

use std::collections::HashMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::state::AppState;

const COOKIE: &str = "slipway_token";

#[derive(Debug)]
pub struct Unauthorized;

impl warp::reject::Reject for Unauthorized {}

fn matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Passes when no token is configured, or the request carries it.
pub fn require(state: Arc<AppState>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::cookie::optional::<String>(COOKIE))
        .and_then(
            move |authorization: Option<String>, cookie: Option<String>| {
                let state = state.clone();
                async move {
                    let Some(expected) = &state.api_token else {
                        return Ok(());
                    };
                    let bearer = authorization
                        .as_deref()
                        .and_then(|a| a.strip_prefix("Bearer "));
                    let presented = bearer.or(cookie.as_deref());
                    match presented {
                        Some(given) if matches(expected.expose(), given.trim()) => Ok(()),
                        _ => Err(warp::reject::custom(Unauthorized)),
                    }
                }
            },
        )
        .untuple_one()
}

/// `GET <any page>?token=TOKEN`: sets the cookie and redirects to the page
/// without the token in its address, so it stays out of history and logs.
pub fn login(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::get()
        .and(warp::path::full())
        .and(warp::query::<HashMap<String, String>>())
        .and_then(
            move |path: warp::path::FullPath, query: HashMap<String, String>| {
                let state = state.clone();
                async move {
                    let (Some(expected), Some(given)) = (&state.api_token, query.get("token"))
                    else {
                        return Err(warp::reject::not_found());
                    };
                    if !matches(expected.expose(), given) {
                        return Err(warp::reject::custom(Unauthorized));
                    }
                    let cookie = format!("{COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict");
                    let reply = warp::reply::with_status("", StatusCode::SEE_OTHER);
                    let reply = warp::reply::with_header(reply, header::LOCATION, path.as_str());
                    let reply = warp::reply::with_header(reply, header::SET_COOKIE, cookie);
                    Ok::<_, warp::Rejection>(reply.into_response())
                }
            },
        )
}
