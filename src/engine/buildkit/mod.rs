//! The BuildKit builder, as `docker buildx build` uses it: `POST /build`
//! with `version=2` and `remote=client-session`, naming a session of
//! Slipway's own that serves the build context and the build secrets,
//! the status stream turned into plain progress lines, a watchdog for a
//! stream that goes silent, and the engine's build cancelled whenever
//! Slipway stops following it (time-out, shutdown, watchdog, a failure).

mod auth;
mod filesync;
mod progress;
mod session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost::Message as _;

use super::address::{empty_body, error_text, EngineAddress, RequestBody};
use super::cache::INLINE_CACHE_ARG;
use super::{build_failure, BuildRequest, BuildSecrets, EngineError, ImageBuilder};
use crate::log::BuildLog;
use progress::Progress;
use session::Session;

/// A line of the engine's JSON stream longer than this is not one it sends.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub(super) struct BuildKitBuilder {
    /// `Err`: why this engine cannot be reached for a session.
    address: Result<EngineAddress, String>,
    secrets: Arc<BuildSecrets>,
    stall_limit: Duration,
    fallback: Box<dyn ImageBuilder>,
    /// Set once the engine showed it cannot do BuildKit, so later builds go
    /// straight to the fallback.
    unsupported: Mutex<Option<String>>,
}

impl BuildKitBuilder {
    pub fn new(
        secrets: Arc<BuildSecrets>,
        stall_limit: Duration,
        fallback: Box<dyn ImageBuilder>,
    ) -> Self {
        Self {
            address: EngineAddress::from_env(),
            secrets,
            stall_limit,
            fallback,
            unsupported: Mutex::new(None),
        }
    }

    fn known_unsupported(&self) -> Option<String> {
        self.unsupported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn build_with_buildkit(
        &self,
        req: &BuildRequest<'_>,
        log: &BuildLog,
    ) -> Result<String, EngineError> {
        let address = self
            .address
            .as_ref()
            .map_err(|why| EngineError::NoBuildKit(why.clone()))?;
        let cache_from = req.cache.and_then(|cache| cache.from.clone());
        let session = Session::open(
            address,
            self.secrets.clone(),
            req.context.clone(),
            cache_from,
        )
        .await?;
        // Armed until the stream ends well: every other way out stops the build in the engine.
        let mut cancel = CancelOnDrop::new(address.clone(), session.id.clone());
        let response = address.send(build_request(req, &session.id)?).await?;
        let status = response.response.status();
        if status == http::StatusCode::BAD_REQUEST || status == http::StatusCode::NOT_IMPLEMENTED {
            let text = error_text(response).await;
            cancel.disarm();
            return Err(if text.to_ascii_lowercase().contains("buildkit") {
                EngineError::NoBuildKit(text)
            } else {
                EngineError::Api(text)
            });
        }
        if !status.is_success() {
            return Err(EngineError::Api(error_text(response).await));
        }
        let (response, _connection) = response.into_parts();
        let image = self.follow(response.into_body(), &session, log).await?;
        cancel.disarm();
        match image {
            Some(id) => Ok(id),
            None => Err(EngineError::NoImage),
        }
    }

    /// Reads the engine's answer to the end: progress into `log`, the image id out.
    async fn follow(
        &self,
        mut body: Incoming,
        session: &Session,
        log: &BuildLog,
    ) -> Result<Option<String>, EngineError> {
        let mut progress = Progress::default();
        let mut pending = Vec::new();
        let mut image = None;
        loop {
            let frame = tokio::select! {
                frame = tokio::time::timeout(self.stall_limit, body.frame()) => frame,
                _ = session.secret_missing.cancelled() => return Err(missing_secret(session)),
                _ = session.closed.cancelled() => return Err(EngineError::SessionClosed),
            };
            let frame = match frame {
                Err(_) => return Err(EngineError::Stalled(self.stall_limit)),
                Ok(None) => break,
                Ok(Some(frame)) => frame.map_err(|e| EngineError::Unreachable(e.to_string()))?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                self.message(&line, &mut progress, &mut image, log)?;
            }
            if pending.len() > MAX_MESSAGE_BYTES {
                return Err(EngineError::Api(
                    "the engine sent an over-long message".into(),
                ));
            }
        }
        self.message(&pending, &mut progress, &mut image, log)?;
        if let Some(error) = progress.cache_import_error() {
            log.line(&self.secrets.mask(&format!(
                "the registry cache was not used: the engine could not import it ({error}); this build ran without it"
            )));
        }
        if !session.missing_secrets().is_empty() {
            return Err(missing_secret(session));
        }
        Ok(image)
    }

    fn message(
        &self,
        line: &[u8],
        progress: &mut Progress,
        image: &mut Option<String>,
        log: &BuildLog,
    ) -> Result<(), EngineError> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        let message: StreamMessage = serde_json::from_slice(line).map_err(|e| {
            EngineError::Api(format!("unreadable build output from the engine: {e}"))
        })?;
        if let Some(error) = message.error_text() {
            log.line(&self.secrets.mask(&format!("error: {error}")));
            return Err(build_failure(
                self.secrets.mask(&error),
                progress.saw_exec_format,
            ));
        }
        match (message.id.as_deref(), message.aux) {
            (Some("moby.buildkit.trace"), Some(serde_json::Value::String(encoded))) => {
                let status = decode_status(&encoded)?;
                for text in progress.lines(status) {
                    progress.saw_exec_format |= text.contains("exec format error");
                    log.line(&self.secrets.mask(&text));
                }
            }
            (Some("moby.image.id"), Some(aux)) => {
                *image = aux["ID"].as_str().map(str::to_string);
            }
            _ => {
                if let Some(text) = message.stream {
                    log.text(&self.secrets.mask(&text));
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ImageBuilder for BuildKitBuilder {
    async fn build(&self, req: &BuildRequest<'_>, log: &BuildLog) -> Result<String, EngineError> {
        let reason = match self.known_unsupported() {
            Some(reason) => reason,
            None => match self.build_with_buildkit(req, log).await {
                Err(EngineError::NoBuildKit(reason)) => {
                    *self.unsupported.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(reason.clone());
                    reason
                }
                other => return other,
            },
        };
        log.line(&format!(
            "this engine cannot build with BuildKit ({reason}); building with the classic builder instead"
        ));
        if req.cache.is_some_and(|cache| cache.from.is_some()) {
            log.line("the registry cache was not used: only BuildKit imports it");
        }
        self.fallback.build(req, log).await
    }
}

fn missing_secret(session: &Session) -> EngineError {
    EngineError::MissingSecret(session.missing_secrets().join(", "))
}

fn decode_status(encoded: &str) -> Result<StatusResponse, EngineError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| EngineError::Api(format!("unreadable BuildKit status: {e}")))?;
    StatusResponse::decode(bytes.as_slice())
        .map_err(|e| EngineError::Api(format!("unreadable BuildKit status: {e}")))
}

/// One JSON message of the engine's build stream.
#[derive(serde::Deserialize)]
struct StreamMessage {
    id: Option<String>,
    aux: Option<serde_json::Value>,
    stream: Option<String>,
    error: Option<String>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

impl StreamMessage {
    fn error_text(&self) -> Option<String> {
        self.error_detail
            .as_ref()
            .and_then(|d| d.message.clone())
            .or_else(|| self.error.clone())
            .map(|e| e.trim().to_string())
    }
}

fn build_request(
    req: &BuildRequest<'_>,
    session: &str,
) -> Result<hyper::Request<RequestBody>, EngineError> {
    let build_args = with_inline_cache(req);
    let mut query = vec![
        ("version", "2".to_string()),
        ("remote", "client-session".to_string()),
        ("session", session.to_string()),
        ("buildid", session.to_string()),
        ("dockerfile", req.dockerfile.to_string()),
        ("t", req.tag.to_string()),
        (
            "buildargs",
            serde_json::to_string(&build_args).map_err(|e| EngineError::Api(e.to_string()))?,
        ),
    ];
    if let Some(from) = req.cache.and_then(|cache| cache.from.as_ref()) {
        let references = [from.reference.as_str()];
        query.push((
            "cachefrom",
            serde_json::to_string(&references).map_err(|e| EngineError::Api(e.to_string()))?,
        ));
    }
    if let Some(target) = req.target {
        query.push(("target", target.to_string()));
    }
    if let Some(network) = req.network {
        query.push(("networkmode", network.to_string()));
    }
    if let Some(platform) = req.platform {
        query.push(("platform", platform.to_string()));
    }
    let query = serde_urlencoded::to_string(&query).map_err(|e| EngineError::Api(e.to_string()))?;
    // The context comes through the session, not as the body: an uploaded
    // body breaks on the containerd image store (moby/moby#47717).
    hyper::Request::post(format!("/build?{query}"))
        .body(empty_body())
        .map_err(|e| EngineError::Api(e.to_string()))
}

/// The build args, with inline cache metadata asked for under
/// `--build-cache registry` (unless the manifest set the arg itself).
fn with_inline_cache(req: &BuildRequest<'_>) -> std::collections::BTreeMap<String, String> {
    let mut args = req.build_args.clone();
    if req.cache.is_some() {
        args.entry(INLINE_CACHE_ARG.to_string())
            .or_insert_with(|| "1".to_string());
    }
    args
}

/// Asks the engine to stop a build that Slipway no longer follows. Closing
/// the connection alone stops it too; asking is the engine's documented way.
struct CancelOnDrop {
    target: Option<(EngineAddress, String)>,
}

impl CancelOnDrop {
    fn new(address: EngineAddress, build_id: String) -> Self {
        Self {
            target: Some((address, build_id)),
        }
    }

    fn disarm(&mut self) {
        self.target = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some((address, build_id)) = self.target.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let Ok(request) =
                hyper::Request::post(format!("/build/cancel?id={build_id}")).body(empty_body())
            else {
                return;
            };
            match address.send(request).await {
                Ok(answer) => tracing::info!(status = %answer.response.status(), "asked the engine to cancel the build"),
                Err(err) => tracing::warn!(%err, "could not ask the engine to cancel the build"),
            }
        });
    }
}
