//! `POST /webhook`: read the body under a cap, tell which forge sent it, check
//! its signature before anything else, decide, admit, answer. No call to a
//! forge or Docker happens before the answer goes out.
//!
//! Owns the forges' delivery formats and signatures; hands merges to the
//! intake, never to the queue, the store's writer or the pipeline directly.

pub mod payload;
pub mod signature;

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::json;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::reply::{self, error_reply, json_reply};
use crate::state::AppState;
use crate::store::{BuildRecord, Trigger};
use crate::trigger::{self, Decision, RerunRequest};
use crate::types::Forge;

/// GitHub caps payloads at 25 MB; anything larger is not from GitHub.
pub const MAX_BODY_BYTES: usize = 25 << 20;

pub fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("webhook")
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || state.clone()))
        .then(handle)
}

async fn handle<S, B>(method: Method, headers: HeaderMap, body: S, state: Arc<AppState>) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let (response, outcome) = respond(method, &headers, body, &state).await;
    state.metrics.delivery(outcome);
    response
}

/// An answer, and what it meant for the deliveries metric.
type Answer = (Response, &'static str);

async fn respond<S, B>(method: Method, headers: &HeaderMap, body: S, state: &AppState) -> Answer
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    if method != Method::POST {
        let mut reply = error_reply(StatusCode::METHOD_NOT_ALLOWED, "use POST for /webhook");
        reply
            .headers_mut()
            .insert("allow", warp::http::HeaderValue::from_static("POST"));
        return (reply, "rejected_method");
    }
    let body = match read_capped(headers, body).await {
        Ok(body) => body,
        Err(reply) => return (reply, "rejected_too_large"),
    };
    let forge = sender(headers);
    if let Err(err) = authenticate(
        forge,
        headers,
        state.webhook_secret.expose().as_bytes(),
        &body,
    ) {
        tracing::warn!(%err, %forge, "webhook rejected");
        return (
            error_reply(StatusCode::UNAUTHORIZED, err),
            "rejected_signature",
        );
    }
    if !state.intake.takes(forge) {
        let reply = error_reply(
            StatusCode::BAD_REQUEST,
            format!(
                "a {forge} delivery, but this instance has no {}: set it to take {forge}'s merges",
                forge.api_option()
            ),
        );
        return (reply, "rejected_payload");
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let json = match payload::json_body(content_type, &body) {
        Ok(json) => json,
        Err(err @ payload::PayloadError::UnsupportedContentType(_)) => {
            let reply = error_reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, err);
            return (reply, "rejected_content_type");
        }
        Err(err) => {
            return (
                error_reply(StatusCode::BAD_REQUEST, err),
                "rejected_payload",
            )
        }
    };
    let event_header = event_header(forge);
    let event = match headers.get(event_header).map(|v| v.to_str()) {
        Some(Ok(event)) => event,
        Some(Err(_)) => {
            let reply = error_reply(
                StatusCode::BAD_REQUEST,
                format!("{event_header} header is not ASCII text"),
            );
            return (reply, "rejected_payload");
        }
        None => {
            let reply = error_reply(
                StatusCode::BAD_REQUEST,
                format!("{event_header} header missing"),
            );
            return (reply, "rejected_payload");
        }
    };
    let delivery = delivery_id(forge, headers);
    match trigger::decide(forge, event, json.bytes(), state.intake.branches()) {
        Err(err) => (
            error_reply(StatusCode::BAD_REQUEST, err),
            "rejected_payload",
        ),
        Ok(Decision::Rerun(request)) => rerun(state, request).await,
        Ok(Decision::Ignore(reason)) => {
            if event.starts_with("installation") {
                tracing::info!(event, "GitHub App installation changed");
            }
            (
                json_reply(StatusCode::OK, json!({ "ignored": reason })),
                "ignored",
            )
        }
        Ok(Decision::Build(pr)) => match state.intake.refusal(&pr) {
            Some(reason) => (
                json_reply(StatusCode::OK, json!({ "ignored": reason })),
                "ignored",
            ),
            None => {
                let record = BuildRecord::queued(pr, delivery, Trigger::Webhook);
                let admitted = state.intake.admit(record).await;
                reply::admission(admitted, state.intake.max_queued_builds())
            }
        },
    }
}

/// "Re-run" on the check run: a new build of the build it reported (or of
/// the newest build of that commit, for a suite), as `POST /builds/<id>/retry` does.
async fn rerun(state: &AppState, request: RerunRequest) -> Answer {
    let original = match &request.build {
        Some(id) => state.store.get(id).await,
        None => newest_build_of(state, &request).await,
    };
    match original {
        Ok(Some(original))
            if original.commit == request.commit.as_str()
                && original
                    .repository
                    .eq_ignore_ascii_case(request.repository.as_str()) =>
        {
            let admitted = state.intake.admit(BuildRecord::rerun(original)).await;
            reply::admission(admitted, state.intake.max_queued_builds())
        }
        Ok(_) => (
            json_reply(
                StatusCode::OK,
                json!({ "ignored": format!("no build of {} here to run again", request.commit) }),
            ),
            "ignored",
        ),
        Err(err) => (
            error_reply(StatusCode::SERVICE_UNAVAILABLE, err),
            "rejected_store",
        ),
    }
}

async fn newest_build_of(
    state: &AppState,
    request: &RerunRequest,
) -> Result<Option<BuildRecord>, crate::store::StoreError> {
    let filter = crate::store::ListFilter {
        repository: Some(request.repository.to_string()),
        status: None,
        limit: 200,
    };
    Ok(state
        .store
        .list(&filter)
        .await?
        .into_iter()
        .find(|b| b.commit == request.commit.as_str()))
}

/// Which forge sent the delivery. Gitea and Forgejo send GitHub's headers
/// too (`X-GitHub-Event`, `X-Hub-Signature-256`), so theirs are looked for
/// first: a Gitea delivery is never taken for a GitHub one.
fn sender(headers: &HeaderMap) -> Forge {
    if headers.contains_key("x-forgejo-event") {
        Forge::Forgejo
    } else if headers.contains_key("x-gitea-event") {
        Forge::Gitea
    } else if headers.contains_key("x-gitlab-event") {
        Forge::GitLab
    } else {
        Forge::GitHub
    }
}

fn authenticate(
    forge: Forge,
    headers: &HeaderMap,
    secret: &[u8],
    body: &[u8],
) -> Result<(), signature::SignatureError> {
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    match forge {
        Forge::GitHub => signature::verify(secret, header("x-hub-signature-256"), body),
        Forge::Gitea => signature::verify_hex(
            secret,
            "X-Gitea-Signature",
            header("x-gitea-signature"),
            body,
        ),
        Forge::Forgejo => signature::verify_hex(
            secret,
            "X-Forgejo-Signature",
            header("x-forgejo-signature"),
            body,
        ),
        Forge::GitLab => signature::verify_token(secret, header("x-gitlab-token")),
    }
}

fn event_header(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "x-github-event",
        Forge::Gitea => "x-gitea-event",
        Forge::Forgejo => "x-forgejo-event",
        Forge::GitLab => "x-gitlab-event",
    }
}

/// The delivery's id, the same on a redelivery. GitLab's `Idempotency-Key`
/// stays the same across its retries; older GitLabs send only the event UUID.
fn delivery_id(forge: Forge, headers: &HeaderMap) -> Option<String> {
    let names: &[&str] = match forge {
        Forge::GitHub => &["x-github-delivery"],
        Forge::Gitea => &["x-gitea-delivery"],
        Forge::Forgejo => &["x-forgejo-delivery", "x-gitea-delivery"],
        Forge::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
    };
    names
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(|d| d.chars().take(100).collect())
}

/// Reads the body, refusing it as soon as it passes the cap, whether or not
/// a Content-Length announced it.
async fn read_capped<S, B>(headers: &HeaderMap, mut body: S) -> Result<Vec<u8>, Response>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let too_large = || {
        error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {MAX_BODY_BYTES} bytes"),
        )
    };
    let announced = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(announced.unwrap_or(0).min(1 << 20) as usize);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk
            .map_err(|e| error_reply(StatusCode::BAD_REQUEST, format!("reading body: {e}")))?;
        if buf.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.to_vec())
}
