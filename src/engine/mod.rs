//! The Docker Engine: images are built by one of two builders behind
//! [`ImageBuilder`] (BuildKit, as today's `docker build`, or the classic
//! builder), then exported in docker-save format for the registry push.
//!
//! An adapter: owns every Engine API call; imports the context it sends and
//! the log handle it writes to, never the store, the registry or the pipeline.

mod address;
mod buildkit;
mod cache;
mod classic;
mod secrets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};

use crate::context::SyncDir;
use crate::log::BuildLog;
use crate::platform::Platform;
pub use cache::{CacheSource, RegistryCache};
pub use secrets::{BuildSecrets, SecretError, SecretSpec};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's address could not be dialled: which one, and why.
    #[error("cannot reach the Docker Engine at {address}: {reason}")]
    CannotReach {
        address: String,
        reason: ReachFailure,
    },
    /// The connection failed past dialling (it broke, or the answer was not HTTP).
    #[error("Docker Engine unreachable ({0}); is dockerd running and is DOCKER_HOST right?")]
    Unreachable(String),
    #[error("build failed: {0}")]
    BuildFailed(String),
    /// The build failed because a `FROM` image could not be had (for the
    /// platform built, when one was asked for).
    #[error("build failed: a base image (FROM) is missing: {0}")]
    BaseMissing(String),
    /// The build failed because a program of the image could not be run on
    /// the engine's machine: built for a platform the kernel has no binfmt
    /// handler (emulator) for.
    #[error("build failed: the engine's machine cannot run the image's programs (exec format error): {0}")]
    CannotRun(String),
    #[error("the engine finished the build without reporting an image")]
    NoImage,
    #[error("Docker Engine error: {0}")]
    Api(String),
    #[error("could not read the build context: {0}")]
    Context(#[from] std::io::Error),
    #[error("the engine cannot build with BuildKit: {0}")]
    NoBuildKit(String),
    #[error("the engine sent no build progress for {}; the build was stopped (a step that prints nothing for that long needs a higher --build-stall-timeout)", humantime::format_duration(*.0))]
    Stalled(Duration),
    #[error(
        "the engine closed the BuildKit session in the middle of the build; the build was stopped"
    )]
    SessionClosed,
    #[error("the Dockerfile asks for build secret `{0}`, which is not configured: start Slipway with --build-secret {0}=PATH")]
    MissingSecret(String),
    /// The engine could not dial the registry it was told to push to
    /// (nothing listens on that address where the engine is, as with a
    /// loopback relay seen from another network namespace). Says what the
    /// engine said.
    #[error(transparent)]
    RegistryUnreachable(Box<EngineError>),
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

/// A push's failure, as [`EngineError::RegistryUnreachable`] when the
/// engine's own dialing of the registry failed.
fn registry_unreachable(err: EngineError) -> EngineError {
    let message = err.to_string();
    if message.contains("dial tcp") || message.contains("connection refused") {
        EngineError::RegistryUnreachable(Box::new(err))
    } else {
        err
    }
}

/// What the engine's words for a failed build say it was: a missing base
/// and a program the machine cannot run are told apart from the rest, as
/// each has its own remedy. `saw_exec_format` says the build's output had
/// the kernel's "exec format error" (runc prints it; the error itself may
/// only give the exit code).
fn build_failure(text: String, saw_exec_format: bool) -> EngineError {
    /// How BuildKit and the classic builder word a `FROM` image they cannot get.
    const BASE_MISSING: &[&str] = &[
        "no match for platform",
        "no matching manifest for",
        "failed to resolve source metadata",
        "pull access denied",
        "manifest unknown",
        "failed to do request",
    ];
    if saw_exec_format || text.contains("exec format error") {
        EngineError::CannotRun(text)
    } else if BASE_MISSING.iter().any(|words| text.contains(words)) {
        EngineError::BaseMissing(text)
    } else {
        EngineError::BuildFailed(text)
    }
}

/// Why dialling the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum ReachFailure {
    /// The socket's group may use it, and this process is not in that group.
    #[error("permission denied (the socket belongs to group {gid}; run Slipway in that group)")]
    SocketGroup { gid: u32 },
    /// The socket's group may not use it either.
    #[error("permission denied (the socket belongs to user {uid} and has mode {mode:o}; run Slipway as that user, or give the socket's group read and write)")]
    SocketMode { uid: u32, mode: u32 },
    #[error("permission denied")]
    PermissionDenied,
    #[error("no socket there; is dockerd running, and is DOCKER_HOST right?")]
    NoSocket,
    #[error("connection refused; is dockerd running, and is DOCKER_HOST right?")]
    Refused,
    #[error("{0}")]
    Other(String),
}

/// Which builder `--builder` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuilderKind {
    /// BuildKit, as `docker build` on Engine 23 and later.
    Buildkit,
    /// The legacy builder (`DOCKER_BUILDKIT=0`).
    Classic,
}

#[derive(Debug, thiserror::Error)]
pub enum BuilderConfigError {
    #[error("--build-network `{0}` is not one BuildKit takes (default, host or none); use one of those, or --builder classic")]
    BuildKitNetwork(String),
    #[error("--build-secret needs --builder buildkit: the classic builder cannot mount secrets")]
    SecretsNeedBuildKit,
}

/// How images are built, fixed for the life of the service.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub builder: BuilderKind,
    pub secrets: Arc<BuildSecrets>,
    /// The BuildKit watchdog: this long without a word from the engine fails the build.
    pub stall_limit: Duration,
    /// Limit for one engine API call.
    pub request_timeout: Duration,
}

impl EngineSettings {
    /// Refuses, at start, combinations a build would only fail on later.
    pub fn check(&self, network: Option<&str>) -> Result<(), BuilderConfigError> {
        match self.builder {
            BuilderKind::Buildkit => match network {
                None | Some("default" | "host" | "none") => Ok(()),
                Some(other) => Err(BuilderConfigError::BuildKitNetwork(other.to_string())),
            },
            BuilderKind::Classic if !self.secrets.is_empty() => {
                Err(BuilderConfigError::SecretsNeedBuildKit)
            }
            BuilderKind::Classic => Ok(()),
        }
    }
}

/// A context tar as it is written.
pub type ContextTar = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// What one service's build asks of the engine.
pub struct BuildRequest<'a> {
    /// The context as a tar, made when the classic builder asks for it.
    pub context_tar: &'a (dyn Fn() -> ContextTar + Send + Sync),
    /// The same context folder, which BuildKit reads through its session.
    pub context: &'a SyncDir,
    pub dockerfile: &'a str,
    pub tag: &'a str,
    pub build_args: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub network: Option<&'a str>,
    /// The platform to build for; none: the engine's own.
    pub platform: Option<&'a Platform>,
    /// `--build-cache registry`, which only BuildKit takes.
    pub cache: Option<&'a RegistryCache>,
}

/// Builds an image from a context tar, streaming progress into the log,
/// and answers the image id.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync {
    async fn build(&self, req: &BuildRequest<'_>, log: &BuildLog) -> Result<String, EngineError>;
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    builder: Arc<dyn ImageBuilder>,
    /// Where the engine listens, to say why it stopped answering.
    address: Option<address::EngineAddress>,
}

/// Why a call to the engine failed: when it is one of reaching it, dialling
/// its address again says which address, and why (a socket this process may
/// not open, none at all, nothing listening).
async fn diagnosed(
    address: Option<&address::EngineAddress>,
    err: bollard::errors::Error,
) -> EngineError {
    use bollard::errors::Error as E;
    let reaching = matches!(
        err,
        E::HyperLegacyError { .. }
            | E::HyperResponseError { .. }
            | E::IOError { .. }
            | E::SocketNotFoundError(_)
    );
    match address {
        Some(address) if reaching => match address.probe().await {
            Err(cannot_reach) => cannot_reach,
            Ok(()) => EngineError::CannotReach {
                address: address.to_string(),
                reason: ReachFailure::Other(err.to_string()),
            },
        },
        _ => EngineError::from(err),
    }
}

/// Only the images named after the registry: the containerd image store lists
/// slowly (over a second for 200 images), and the others cannot be bases the
/// registry holds. A pattern's `*` stops at `/`, so each depth of repository
/// path has its own; a digest reference (`HOST/base@sha256:…`) matches too.
fn images_of_registry(registry_host: &str) -> bollard::query_parameters::ListImagesOptions {
    const DEEPEST_PATH: usize = 4;
    let patterns = (1..=DEEPEST_PATH)
        .map(|depth| format!("{registry_host}{}", "/*".repeat(depth)))
        .collect();
    bollard::query_parameters::ListImagesOptions {
        filters: Some(std::collections::HashMap::from([(
            "reference".to_string(),
            patterns,
        )])),
        ..Default::default()
    }
}

impl Engine {
    /// Finds the engine as the Docker CLI does (DOCKER_HOST, else the local
    /// socket) and agrees on an API version, so Engine 20.10 (API 1.41) and
    /// current engines both work.
    pub async fn connect(settings: &EngineSettings) -> Result<Self, EngineError> {
        let address = address::EngineAddress::from_env().ok();
        let docker = Docker::connect_with_defaults()
            .map_err(|e| EngineError::Unreachable(e.to_string()))?
            .with_timeout(settings.request_timeout);
        let docker = match docker.negotiate_version().await {
            Ok(docker) => docker,
            Err(err) => return Err(diagnosed(address.as_ref(), err).await),
        };
        let classic = Box::new(classic::ClassicBuilder {
            docker: docker.clone(),
        });
        let builder: Arc<dyn ImageBuilder> = match settings.builder {
            BuilderKind::Classic => Arc::from(classic as Box<dyn ImageBuilder>),
            BuilderKind::Buildkit => Arc::new(buildkit::BuildKitBuilder::new(
                settings.secrets.clone(),
                settings.stall_limit,
                classic,
            )),
        };
        Ok(Self {
            docker,
            builder,
            address,
        })
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        match self.docker.ping().await {
            Ok(_) => Ok(()),
            Err(err) => Err(diagnosed(self.address.as_ref(), err).await),
        }
    }

    /// Builds the image and returns its id, streaming the engine's output
    /// into `log`.
    pub async fn build(
        &self,
        req: BuildRequest<'_>,
        log: &BuildLog,
    ) -> Result<String, EngineError> {
        match self.builder.build(&req, log).await {
            Err(EngineError::NoImage) => self.image_id(req.tag).await,
            other => other,
        }
    }

    /// The images in the engine's store that `image` was built on and that
    /// the registry at `registry_host` may hold, as (repository, manifest
    /// digest), closest (the most layers shared) first: the closest base
    /// holds every layer the farther ones do. On the containerd image store
    /// every image has a repository digest, pushed or not, so a caller tries
    /// them in turn; `image` itself is never one.
    pub async fn registry_bases(&self, image: &str, registry_host: &str) -> Vec<(String, String)> {
        let Ok(inspect) = self.docker.inspect_image(image).await else {
            return Vec::new();
        };
        let own_id = inspect.id.unwrap_or_default();
        let layers = inspect.root_fs.and_then(|r| r.layers).unwrap_or_default();
        let listed = self
            .docker
            .list_images(Some(images_of_registry(registry_host)))
            .await
            .unwrap_or_default();
        let prefix = format!("{registry_host}/");
        let mut bases = Vec::new();
        for summary in listed.into_iter().filter(|s| s.id != own_id) {
            let Some((repository, digest)) = summary
                .repo_digests
                .iter()
                .find_map(|d| d.strip_prefix(&prefix)?.split_once('@'))
            else {
                continue;
            };
            let Ok(base_layers) = self.layers(&summary.id).await else {
                continue;
            };
            if !base_layers.is_empty() && layers.starts_with(&base_layers) {
                bases.push((
                    base_layers.len(),
                    repository.to_string(),
                    digest.to_string(),
                ));
            }
        }
        bases.sort_by_key(|b| std::cmp::Reverse(b.0));
        bases.into_iter().map(|(_, r, d)| (r, d)).collect()
    }

    /// The image's layers by content digest (diff id), bottom first.
    async fn layers(&self, image: &str) -> Result<Vec<String>, EngineError> {
        let inspect = self.docker.inspect_image(image).await?;
        Ok(inspect.root_fs.and_then(|r| r.layers).unwrap_or_default())
    }

    /// The image id and the registry digests (`NAME@sha256:…`) of a local
    /// image, for the provenance's base images.
    pub async fn image_digests(&self, image: &str) -> Result<(String, Vec<String>), EngineError> {
        let inspect = self.docker.inspect_image(image).await?;
        let id = inspect.id.ok_or(EngineError::NoImage)?;
        Ok((id, inspect.repo_digests.unwrap_or_default()))
    }

    async fn image_id(&self, tag: &str) -> Result<String, EngineError> {
        let inspect = self.docker.inspect_image(tag).await?;
        inspect.id.ok_or(EngineError::NoImage)
    }

    /// Has the engine push `image` as `repository:tag` to a registry that
    /// takes `credentials`, then drops that name again.
    pub async fn push_as(
        &self,
        image: &str,
        repository: &str,
        tag: &str,
        credentials: (&str, &str),
    ) -> Result<(), EngineError> {
        use bollard::query_parameters::{PushImageOptions, TagImageOptions};
        let tag_options = TagImageOptions {
            repo: Some(repository.to_string()),
            tag: Some(tag.to_string()),
        };
        self.docker.tag_image(image, Some(tag_options)).await?;
        let credentials = bollard::auth::DockerCredentials {
            username: Some(credentials.0.to_string()),
            password: Some(credentials.1.to_string()),
            ..Default::default()
        };
        let push_options = PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let pushed = self
            .docker
            .push_image(repository, Some(push_options), Some(credentials))
            .map_err(EngineError::from)
            .try_for_each(|info| async move {
                match info.error_detail.and_then(|d| d.message) {
                    Some(message) => Err(EngineError::Api(message)),
                    None => Ok(()),
                }
            })
            .await;
        self.forget_name(&format!("{repository}:{tag}")).await;
        pushed.map_err(registry_unreachable)
    }

    /// Drops a name of an image (`NAME:TAG` or `NAME@DIGEST`), never the image.
    pub async fn forget_name(&self, name: &str) {
        let untag = bollard::query_parameters::RemoveImageOptions {
            noprune: true,
            ..Default::default()
        };
        if let Err(err) = self.docker.remove_image(name, Some(untag), None).await {
            tracing::debug!(%err, name, "could not drop an image name");
        }
    }

    /// The image in docker-save format (a tar holding `manifest.json`).
    pub fn export(
        &self,
        image: &str,
    ) -> impl Stream<Item = Result<Bytes, EngineError>> + Send + 'static {
        self.docker.export_image(image).map_err(EngineError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_builds_are_told_apart() {
        // As Engine 20.10's BuildKit words a base without the platform asked for.
        let missing = "failed to solve with frontend dockerfile.v0: failed to create LLB definition: no match for platform in manifest sha256:aa: not found";
        assert!(matches!(
            build_failure(missing.into(), false),
            EngineError::BaseMissing(_)
        ));
        let cannot_run =
            "process \"/bin/sh -c uname -m\" did not complete successfully: exit code: 1";
        assert!(matches!(
            build_failure(cannot_run.into(), true),
            EngineError::CannotRun(_)
        ));
        assert!(matches!(
            build_failure(cannot_run.into(), false),
            EngineError::BuildFailed(_)
        ));
    }

    #[test]
    fn a_registry_the_engine_cannot_dial_is_recognised() {
        // As Engine 20.10 words it when nothing listens on its own loopback.
        let refused = EngineError::Api(
            "Get \"http://127.0.0.1:41234/v2/\": dial tcp 127.0.0.1:41234: connect: connection refused".into(),
        );
        let text = refused.to_string();
        let classified = registry_unreachable(refused);
        assert!(matches!(classified, EngineError::RegistryUnreachable(_)));
        assert_eq!(classified.to_string(), text);
        let other = EngineError::Api("received unexpected HTTP status: 502 Bad Gateway".into());
        assert!(matches!(registry_unreachable(other), EngineError::Api(_)));
    }
}
