//! The Docker Engine: build an image from a context tar, and export it in
//! docker-save format for the registry push.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio_util::io::ReaderStream;

use crate::log::BuildLog;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Docker Engine unreachable ({0}); is dockerd running and is DOCKER_HOST right?")]
    Unreachable(String),
    #[error("build failed: {0}")]
    BuildFailed(String),
    #[error("the engine finished the build without reporting an image")]
    NoImage,
    #[error("Docker Engine error: {0}")]
    Api(String),
    #[error("could not read the build context: {0}")]
    Context(#[from] std::io::Error),
}

impl From<bollard::errors::Error> for EngineError {
    fn from(err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match err {
            E::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Api(format!("{status_code}: {message}")),
            E::HyperResponseError { .. } | E::IOError { .. } | E::SocketNotFoundError(_) => {
                EngineError::Unreachable(err.to_string())
            }
            other => EngineError::Api(other.to_string()),
        }
    }
}

/// What one service's build asks of the engine.
pub struct BuildRequest<'a> {
    pub context_tar: &'a Path,
    pub dockerfile: &'a str,
    pub tag: &'a str,
    pub build_args: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub network: Option<&'a str>,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Finds the engine as the Docker CLI does (DOCKER_HOST, else the local
    /// socket) and agrees on an API version, so Engine 20.10 (API 1.41) and
    /// current engines both work.
    pub async fn connect(request_timeout: Duration) -> Result<Self, EngineError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| EngineError::Unreachable(e.to_string()))?
            .with_timeout(request_timeout);
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        Ok(Self { docker })
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(EngineError::from)
    }

    /// Builds the image and returns its id, streaming the engine's output
    /// into `log`.
    pub async fn build(
        &self,
        req: BuildRequest<'_>,
        log: &BuildLog,
    ) -> Result<String, EngineError> {
        let options = BuildImageOptions {
            dockerfile: req.dockerfile.to_string(),
            t: Some(req.tag.to_string()),
            buildargs: Some(req.build_args.clone().into_iter().collect()),
            target: req.target.unwrap_or_default().to_string(),
            networkmode: req.network.map(str::to_string),
            rm: true,
            forcerm: true,
            ..Default::default()
        };
        let file = tokio::fs::File::open(req.context_tar).await?;
        let body = bollard::body_try_stream(ReaderStream::new(file));
        let mut output = self.docker.build_image(options, None, Some(body));
        let mut image_id = None;
        while let Some(item) = output.next().await {
            let info = item.map_err(build_error)?;
            if let Some(detail) = info.error_detail {
                let message = detail
                    .message
                    .unwrap_or_else(|| "unknown engine error".into());
                log.line(&format!("error: {}", message.trim_end()));
                return Err(EngineError::BuildFailed(message.trim().to_string()));
            }
            if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                log.text(text);
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        match image_id {
            Some(id) => Ok(id),
            None => self.image_id(req.tag).await,
        }
    }

    async fn image_id(&self, tag: &str) -> Result<String, EngineError> {
        let inspect = self.docker.inspect_image(tag).await?;
        inspect.id.ok_or(EngineError::NoImage)
    }

    /// The image id and the registry digests (`NAME@sha256:…`) of a local
    /// image, for the provenance's base images.
    pub async fn image_digests(&self, image: &str) -> Result<(String, Vec<String>), EngineError> {
        let inspect = self.docker.inspect_image(image).await?;
        let id = inspect.id.ok_or(EngineError::NoImage)?;
        Ok((id, inspect.repo_digests.unwrap_or_default()))
    }

    /// The image in docker-save format (a tar holding `manifest.json`).
    pub fn export(
        &self,
        image: &str,
    ) -> impl Stream<Item = Result<Bytes, EngineError>> + Send + 'static {
        self.docker.export_image(image).map_err(EngineError::from)
    }
}

/// Engine 20.10 reports a failed RUN as a stream error rather than an
/// errorDetail line; both mean the Dockerfile failed.
fn build_error(err: bollard::errors::Error) -> EngineError {
    match err {
        bollard::errors::Error::DockerStreamError { error } => EngineError::BuildFailed(error),
        other => other.into(),
    }
}
