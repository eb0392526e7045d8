//! From a commit's tarball to one build context per service: the tar reading
//! with its safety checks, `.dockerignore`, and the inputs digest.
//!
//! Owns the files a build sees; imports only leaf types (manifest, types,
//! digest), never the engine, the registry or the store.

mod build_context;
pub mod dockerignore;
pub mod source;
mod sync_dir;

pub use build_context::{prepare, ContextError, ContextPolicy, PreparedContext};
pub use source::{unpack, Limits, SourceEntry, SourceError, SourceTree};
pub use sync_dir::{SyncDir, SyncEntry, WalkFilter};
