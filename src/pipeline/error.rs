//! Why a build or one of its services failed, by kind: callers match the
//! variant, never the text. The text is what the build's record and log say.

use std::sync::Arc;
use std::time::Duration;

use crate::context::ContextError;
use crate::engine::EngineError;
use crate::github::ForgeError;
use crate::manifest::ManifestError;
use crate::registry::export::ExportError;
use crate::registry::RegistryError;
use crate::signing::attach::AttachError;
use crate::types::InvalidValue;

/// A failure of the whole build or of one service.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The build's record names no valid repository or commit.
    #[error(transparent)]
    InvalidRecord(#[from] InvalidValue),
    /// The build came from a forge this instance was not given (a record
    /// written by another instance, or before a restart without the option).
    #[error("the build comes from {0}, but this instance has no {api}: set it to build it", api = .0.api_option())]
    ForgeNotConfigured(crate::types::Forge),
    /// The commit has no manifest at `--manifest`.
    #[error(
        "no manifest: `{path}` not found at commit {commit} of {repo} (add it, or set --manifest)"
    )]
    NoManifest {
        path: String,
        commit: String,
        repo: String,
    },
    /// The forge did not give the manifest's file.
    #[error("could not read the manifest `{path}`: {source}")]
    ManifestUnreadable { path: String, source: ForgeError },
    /// The manifest is there and wrong.
    #[error("`{path}` at commit {commit}: {source}")]
    Manifest {
        path: String,
        commit: String,
        source: ManifestError,
    },
    /// `--work-dir` could not hold a temporary directory.
    #[error("temporary space unusable: {0}")]
    TempSpace(std::io::Error),
    /// The forge did not give the commit's tarball.
    #[error("could not download the commit's files: {0}")]
    Download(ForgeError),
    /// The commit's tarball could not be unpacked.
    #[error("could not read the commit's files: {0}")]
    Unpack(std::io::Error),
    /// A blocking step panicked or was cancelled; `what` names the step.
    #[error("{what} crashed: {source}")]
    Crashed {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    /// The registry lookup started early was stopped before it answered.
    #[error("registry lookup stopped: {0}")]
    LookupStopped(tokio::task::JoinError),
    /// The lookup started early, shared by the service that awaits it.
    #[error(transparent)]
    Lookup(#[from] Arc<PipelineError>),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The build (or a tag's lease) went to another instance, which
    /// publishes it; this one stops short of the registry.
    #[error("this instance lost the build's lease; the instance that took it over publishes it")]
    LeaseLost,
    /// Slipway is stopping; no new engine build starts.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The build and push took longer than `--build-timeout`.
    #[error("timed out after {} (--build-timeout)", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// `NAME:VERSION` is published already, from other inputs.
    #[error("{image} is already published from other sources ({}); published versions are immutable: bump `version` of `{service}` in the manifest", existing_inputs(.existing.as_deref(), .inputs))]
    Immutable {
        image: String,
        service: String,
        /// The published image's inputs, `None` when Slipway did not build it.
        existing: Option<String>,
        inputs: String,
    },
    /// `NAME:VERSION` no longer names what this build published or found,
    /// so no other tag is put on it.
    #[error("{image} names {} rather than {expected}, which this build published: its other tags were left as they are", .found.as_deref().unwrap_or("nothing"))]
    VersionMoved {
        image: String,
        expected: String,
        found: Option<String>,
    },
    /// A signing step ran without `--signing-key`.
    #[error("no signing key")]
    NoSigningKey,
    #[error("signing {image}: {source}")]
    Sign { image: String, source: AttachError },
    #[error("attesting {image}: {source}")]
    Attest { image: String, source: AttachError },
    #[error("reading the attestation of {image}: {source}")]
    ReadAttestation { image: String, source: AttachError },
    /// A multi-platform service's base is not there for one platform.
    #[error("the base image (FROM) is missing for {platform}: every FROM image must exist for each platform the service is built for ({detail})")]
    PlatformBaseMissing { platform: String, detail: String },
    /// A multi-platform service's platform cannot run where the engine is.
    #[error("{platform} programs cannot run on the engine's machine: install QEMU's binfmt handlers there (Debian: `apt-get install qemu-user-static binfmt-support`; elsewhere: `docker run --privileged --rm tonistiigi/binfmt --install {arch}`), then retry the build ({detail})")]
    PlatformCannotRun {
        platform: String,
        arch: String,
        detail: String,
    },
    /// One platform of a multi-platform service failed otherwise.
    #[error("{platform}: {source}")]
    PlatformFailed {
        platform: String,
        source: Box<PipelineError>,
    },
}

impl PipelineError {
    /// This failure, as one of `platform`'s build or push.
    pub fn for_platform(self, platform: &crate::platform::Platform) -> Self {
        match self {
            PipelineError::Engine(EngineError::BaseMissing(detail)) => {
                PipelineError::PlatformBaseMissing {
                    platform: platform.to_string(),
                    detail,
                }
            }
            PipelineError::Engine(EngineError::CannotRun(detail)) => {
                PipelineError::PlatformCannotRun {
                    platform: platform.to_string(),
                    arch: platform.arch().to_string(),
                    detail,
                }
            }
            other => PipelineError::PlatformFailed {
                platform: platform.to_string(),
                source: Box::new(other),
            },
        }
    }
}

fn existing_inputs(existing: Option<&str>, inputs: &str) -> String {
    existing
        .map(|e| format!("inputs {e}, these are {inputs}"))
        .unwrap_or_else(|| "not built by Slipway".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_texts_records_and_logs_show_are_kept() {
        let immutable = PipelineError::Immutable {
            image: "reg:5443/api:1.0.0".into(),
            service: "api".into(),
            existing: None,
            inputs: "sha256:aa".into(),
        };
        assert_eq!(
            immutable.to_string(),
            "reg:5443/api:1.0.0 is already published from other sources (not built by Slipway); published versions are immutable: bump `version` of `api` in the manifest"
        );
        let other = PipelineError::Immutable {
            image: "reg:5443/api:1.0.0".into(),
            service: "api".into(),
            existing: Some("sha256:bb".into()),
            inputs: "sha256:aa".into(),
        };
        assert!(other
            .to_string()
            .contains("(inputs sha256:bb, these are sha256:aa)"));
        assert_eq!(
            PipelineError::TimedOut(Duration::from_secs(20)).to_string(),
            "timed out after 20s (--build-timeout)"
        );
        assert_eq!(
            PipelineError::LeaseLost.to_string(),
            "this instance lost the build's lease; the instance that took it over publishes it"
        );
    }
}
