//! Retention (`--retention keep=N[,max-age=D]`): per image repository
//! Slipway published to, keep the newest versions and what any kept tag
//! reaches, and delete the rest with their signatures and attestations.
//!
//! [`plan`] decides (pure); [`read`] reads a repository into what it
//! decides from; [`run`] runs it under the repository's moving-tags lease,
//! after each publish and every `--retention-interval`. Imports the
//! registry, the store and the metrics; only the wiring and the pipeline
//! import it.

pub mod plan;
mod read;
mod report;
mod run;

pub use plan::{Deletion, Kept, Listing, Manifest, Plan, Target};
pub use read::read_listing;
pub use report::plan_command;
pub use run::{Retention, RetentionSettings};

use crate::registry::RegistryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "tag `{tag}` of {repository} is not a valid tag; retention leaves this repository alone"
    )]
    BadTag { repository: String, tag: String },
    #[error("`retention plan` needs --retention (or SLIPWAY_RETENTION), e.g. keep=10")]
    NoPolicy,
    #[error("the retention lease on {repository} was lost (the store stopped answering?); the rest waits for the next run")]
    LeaseLost { repository: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Version(tag) => write!(f, "version {tag}"),
            Target::Platform { version } => write!(f, "a platform manifest of {version}"),
            Target::Signature { subject } => write!(f, "the signature of {subject}"),
            Target::Attestation { subject } => write!(f, "the attestation of {subject}"),
        }
    }
}

impl Target {
    /// The `kind` label of `slipway_retention_deleted_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Version(_) => "version",
            Target::Platform { .. } => "platform",
            Target::Signature { .. } => "signature",
            Target::Attestation { .. } => "attestation",
        }
    }
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kept::Newest(1) => f.write_str("the newest"),
            Kept::Newest(n) => write!(f, "newest #{n}"),
            Kept::Young => f.write_str("younger than max-age"),
            Kept::AgeUnknown => f.write_str("publish time unknown, max-age cannot apply"),
            Kept::Reached(tag) => write!(f, "tag `{tag}` points at it"),
        }
    }
}
