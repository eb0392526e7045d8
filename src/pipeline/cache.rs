//! `--build-cache registry` for one service: its previous version in the
//! registry, named at the loopback relay (which the engine reaches with no
//! configuration, and through which it reads the registry), is BuildKit's
//! cache; the image it builds carries inline cache metadata for the next.

use super::service::ServiceJob;
use crate::config::BuildCache;
use crate::engine::{BuilderKind, CacheSource, RegistryCache};
use crate::secret::Secret;
use crate::tags::SemVer;
use crate::types::Version;

impl ServiceJob {
    /// The cache this service's build gets; `None` with `--build-cache local`
    /// or `--builder classic`.
    /// Whatever stands in the way of the cache is one log line, and the build
    /// goes on without it.
    pub(super) async fn registry_cache(&self) -> Option<RegistryCache> {
        // The classic builder neither imports cache nor writes inline cache.
        let settings = &self.pipeline.settings;
        if settings.build_cache != BuildCache::Registry
            || settings.engine.builder != BuilderKind::Buildkit
        {
            return None;
        }
        let from = match self.cache_source().await {
            Ok(from) => from,
            Err(why) => {
                self.log
                    .line(&format!("the registry cache was not used: {why}"));
                None
            }
        };
        Some(RegistryCache { from })
    }

    /// The previous version at the relay; `Ok(None)` for a first version.
    async fn cache_source(&self) -> Result<Option<CacheSource>, String> {
        let Some(relay) = self.pipeline.usable_relay() else {
            return Err(
                "the engine reads it through the loopback relay, which is off here (--push-path export, or the engine could not reach it)"
                    .into(),
            );
        };
        let registry = &self.pipeline.registry;
        let tags = registry
            .tags(&self.spec.name)
            .await
            .map_err(|e| format!("its tags could not be listed ({e})"))?;
        let Some(previous) = previous_version(&self.spec.version, &tags) else {
            return Ok(None);
        };
        let host = relay.addr().to_string();
        let reference = format!("{host}/{}:{previous}", registry.repository(&self.spec.name));
        self.log.line(&format!(
            "build cache: {previous}, the previous version in the registry (read through the loopback relay)"
        ));
        let (user, password) = relay.credentials();
        Ok(Some(CacheSource {
            reference,
            host,
            user: user.to_string(),
            password: Secret::new(password),
        }))
    }

    /// Blob bytes the engine has read through the relay for this image.
    pub(super) fn cache_bytes_pulled(&self) -> Option<u64> {
        let relay = self.pipeline.settings.relay.as_ref()?;
        Some(relay.pulled_bytes(&self.pipeline.registry.repository(&self.spec.name)))
    }

    /// After the build: how much of the cache the engine read.
    pub(super) fn log_cache_read(&self, cache: Option<&RegistryCache>, before: Option<u64>) {
        if cache.is_none_or(|cache| cache.from.is_none()) {
            return;
        }
        if let (Some(before), Some(after)) = (before, self.cache_bytes_pulled()) {
            self.log.line(&format!(
                "build cache: {} KiB of layers read from the registry",
                after.saturating_sub(before) / 1024
            ));
        }
    }
}

/// The version whose layers `version` most likely shares: the highest
/// semantic version below it (a hotfix `1.4.2` published after `2.0.0` is
/// built like `1.4.1`, not like `2.0.0`), else the highest above it; none
/// for a first version, or one that is no semantic version. Aliases
/// (`1.4`), `latest` and signature tags are never versions.
pub fn previous_version(version: &Version, tags: &[String]) -> Option<String> {
    let this = SemVer::parse(version.as_str())?;
    let versions: Vec<(SemVer, &String)> = tags
        .iter()
        .filter(|tag| tag.as_str() != version.as_str())
        .filter_map(|tag| Some((SemVer::parse(tag)?, tag)))
        .filter(|(semver, _)| *semver != this)
        .collect();
    let below = versions
        .iter()
        .filter(|(v, _)| *v < this)
        .max_by(|a, b| a.0.cmp(&b.0));
    let above = || {
        versions
            .iter()
            .filter(|(v, _)| *v > this)
            .max_by(|a, b| a.0.cmp(&b.0))
    };
    below.or_else(above).map(|(_, tag)| (*tag).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn previous(version: &str, tags: &[&str]) -> Option<String> {
        let version = Version::parse(version).expect("version");
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        previous_version(&version, &tags)
    }

    #[test]
    fn the_highest_version_below_is_the_cache() {
        let tags = [
            "1.0.0",
            "1.2.0",
            "1.10.0",
            "2.0.0",
            "latest",
            "1",
            "1.2",
            "sha256-ab.sig",
        ];
        assert_eq!(previous("1.11.0", &tags).as_deref(), Some("1.10.0"));
        assert_eq!(previous("1.2.1", &tags).as_deref(), Some("1.2.0"));
        assert_eq!(previous("3.0.0", &tags).as_deref(), Some("2.0.0"));
    }

    #[test]
    fn a_version_below_every_other_takes_the_highest() {
        assert_eq!(
            previous("0.9.0", &["1.0.0", "2.0.0"]).as_deref(),
            Some("2.0.0")
        );
    }

    #[test]
    fn a_first_version_or_a_non_semantic_one_has_none() {
        assert_eq!(previous("1.0.0", &[]), None);
        assert_eq!(previous("1.0.0", &["1.0.0", "latest", "1"]), None);
        assert_eq!(previous("nightly", &["1.0.0"]), None);
    }

    #[test]
    fn pre_releases_and_v_prefixes_count() {
        assert_eq!(
            previous("2.0.0", &["2.0.0-rc.1", "1.9.0"]).as_deref(),
            Some("2.0.0-rc.1")
        );
        assert_eq!(previous("v1.3.0", &["v1.2.0"]).as_deref(), Some("v1.2.0"));
    }
}
