//! `--build-cache registry` as one build sees it: what BuildKit imports as
//! cache, from where the engine reaches it, and the credentials its session
//! hands out for that host alone.

use crate::secret::Secret;

/// The build arg that has BuildKit write inline cache metadata into the
/// image's config, so the next version can import it from the registry.
pub const INLINE_CACHE_ARG: &str = "BUILDKIT_INLINE_CACHE";

/// The registry cache for one build. The image always carries inline cache
/// metadata; `from` is what it imports, when there is a previous version.
#[derive(Debug, Clone, Default)]
pub struct RegistryCache {
    pub from: Option<CacheSource>,
}

/// A previous version of the image, named as the engine reaches it.
#[derive(Debug, Clone)]
pub struct CacheSource {
    /// `HOST:PORT/REPOSITORY:TAG`, as BuildKit pulls it.
    pub reference: String,
    /// `HOST:PORT`, the registry host BuildKit asks the session credentials for.
    pub host: String,
    pub user: String,
    pub password: Secret,
}
