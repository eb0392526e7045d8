//! The classic (legacy) builder: `POST /build` without a session, as
//! `DOCKER_BUILDKIT=0 docker build` does. Kept for `--builder classic` and
//! for engines that cannot do BuildKit.

use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use futures::StreamExt;

use super::{build_failure, BuildRequest, EngineError, ImageBuilder};
use crate::log::BuildLog;

pub(super) struct ClassicBuilder {
    pub docker: Docker,
}

#[async_trait::async_trait]
impl ImageBuilder for ClassicBuilder {
    async fn build(&self, req: &BuildRequest<'_>, log: &BuildLog) -> Result<String, EngineError> {
        let options = BuildImageOptions {
            dockerfile: req.dockerfile.to_string(),
            t: Some(req.tag.to_string()),
            buildargs: Some(req.build_args.clone().into_iter().collect()),
            target: req.target.unwrap_or_default().to_string(),
            networkmode: req.network.map(str::to_string),
            platform: req.platform.map(ToString::to_string).unwrap_or_default(),
            rm: true,
            forcerm: true,
            ..Default::default()
        };
        let body = bollard::body_try_stream((req.context_tar)());
        let mut output = self.docker.build_image(options, None, Some(body));
        let mut image_id = None;
        while let Some(item) = output.next().await {
            let info = item.map_err(build_error)?;
            if let Some(detail) = info.error_detail {
                let message = detail
                    .message
                    .unwrap_or_else(|| "unknown engine error".into());
                log.line(&format!("error: {}", message.trim_end()));
                return Err(build_failure(message.trim().to_string(), false));
            }
            if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                log.text(text);
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        image_id.ok_or(EngineError::NoImage)
    }
}

/// Engine 20.10 reports a failed RUN as a stream error rather than an
/// errorDetail line; both mean the Dockerfile failed.
fn build_error(err: bollard::errors::Error) -> EngineError {
    match err {
        bollard::errors::Error::DockerStreamError { error } => build_failure(error, false),
        other => other.into(),
    }
}
