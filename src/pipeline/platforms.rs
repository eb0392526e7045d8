//! A service built for several platforms: each platform is its own engine
//! build, pushed by digest by the usual path (relay or export); then an OCI
//! image index of them is pushed by digest, signed, and only then tagged.
//! One failed platform fails the service before anything is tagged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::{FutureExt, StreamExt, TryStreamExt};

use super::service::{Done, Ready, ServiceJob};
use super::PipelineError;
use crate::context::PreparedContext;
use crate::engine::{Engine, RegistryCache};
use crate::platform::Platform;
use crate::registry::{PushStats, Untagged};
use crate::store::{PlatformRecord, ServiceStatus};
use crate::types::Version;

impl ServiceJob {
    pub(super) async fn build_and_push_platforms(
        &self,
        context: &PreparedContext,
        inputs: &str,
        work_dir: PathBuf,
        slot: tokio::sync::SemaphorePermit<'_>,
        platforms: &[Platform],
    ) -> Result<Done, PipelineError> {
        self.update(|s| s.status = ServiceStatus::Building).await;
        let engine = self.pipeline.engine().await?;
        let labels = self.labels(inputs);
        // Each platform's build takes a build slot: the service's own, and
        // as many more as are free, so an emulated build overlaps a native
        // one without going past --max-concurrent-builds. Each build has a
        // name of its own in the engine (`local_name`).
        let mut slots = vec![slot];
        while slots.len() < platforms.len() {
            match self.pipeline.service_slots.try_acquire() {
                Ok(more) => slots.push(more),
                Err(_) => break,
            }
        }
        // One cache (and one line saying which) for every platform's build.
        let cache = self.registry_cache().await;
        let pulled_before = self.cache_bytes_pulled();
        let builds: Vec<_> = platforms
            .iter()
            .map(|platform| {
                self.on_its_way(
                    engine,
                    context,
                    &work_dir,
                    &labels,
                    cache.as_ref(),
                    platform,
                )
                .boxed()
            })
            .collect();
        let ready: Vec<(Platform, Ready)> = futures::stream::iter(builds)
            .buffered(slots.len())
            .try_collect()
            .await?;
        self.log_cache_read(cache.as_ref(), pulled_before);
        drop(slots);
        self.update(|s| s.status = ServiceStatus::Pushing).await;
        let push_started = Instant::now();
        let image = self.image();
        let fence = self.fence().await;
        let Some(tag_lease) = self.pipeline.lock_tag(&image, &fence).await else {
            return Err(PipelineError::LeaseLost);
        };
        if let Some(done) = self.immutable(self.lookup().await?, inputs)? {
            return Ok(done);
        }
        let (pushed, stats) = self.push_platforms(ready, &labels).await?;
        let registry = &self.pipeline.registry;
        let (name, version) = (&self.spec.name, &self.spec.version);
        let index = registry.push_index(name, version, &pushed, &labels).await?;
        self.still_holds(&fence, &tag_lease).await?;
        // The index's signature and each platform's provenance go up before
        // the tag: no tag is ever visible unsigned.
        let (signed, attestations) = self.sign_index(&index.digest, &pushed, engine).await?;
        self.still_holds(&fence, &tag_lease).await?;
        let digest = registry.tag(name, version, &index).await?;
        self.log.line(&format!(
            "{image} is an index of {}",
            pushed
                .iter()
                .map(|(platform, untagged)| format!("{platform} ({})", untagged.digest))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.pipeline.metrics.pushed(
            push_started.elapsed(),
            stats.bytes_pushed,
            stats.blobs_pushed as u64,
            stats.blobs_present as u64,
        );
        let platforms = pushed
            .iter()
            .zip(attestations)
            .map(|((platform, untagged), attestation)| PlatformRecord {
                platform: platform.to_string(),
                digest: untagged.digest.clone(),
                attestation,
            })
            .collect();
        Ok(Done::Published {
            digest,
            stats,
            signed,
            platforms,
        })
    }

    /// `platform`'s image built and on its way to the registry (pushed
    /// through the relay, or exported).
    async fn on_its_way(
        &self,
        engine: &Engine,
        context: &PreparedContext,
        work_dir: &Path,
        labels: &BTreeMap<String, String>,
        cache: Option<&RegistryCache>,
        platform: &Platform,
    ) -> Result<(Platform, Ready), PipelineError> {
        let log = self
            .log
            .for_service(&format!("{} {platform}", self.spec.name));
        let ready = async {
            let image_id = self
                .build_image(engine, context, Some(platform), cache, &log)
                .await?;
            let dir = work_dir.join(platform.to_string().replace('/', "-"));
            std::fs::create_dir_all(&dir).map_err(PipelineError::TempSpace)?;
            self.ready_for_registry(engine, &image_id, dir, labels)
                .await
        };
        match ready.await {
            Ok(ready) => Ok((platform.clone(), ready)),
            Err(err) => Err(err.for_platform(platform)),
        }
    }

    /// The engine's name for `platform`'s build, `NAME:VERSION-OS-ARCH`:
    /// builds running at once under one name fail on the containerd image
    /// store ("already exists").
    pub(super) fn local_name(&self, platform: &Platform) -> String {
        let slug = platform.to_string().replace('/', "-");
        let version = self.spec.version.as_str();
        // A tag is at most 128 characters, all ASCII.
        let keep = 127usize.saturating_sub(slug.len()).min(version.len());
        let tag = format!("{}-{slug}", version.get(..keep).unwrap_or(version));
        match Version::parse(&tag) {
            Ok(tag) => self.pipeline.registry.image_ref(&self.spec.name, &tag),
            Err(_) => self.image(),
        }
    }

    /// Each platform's image, pushed by digest; with the counts of them all.
    async fn push_platforms(
        &self,
        ready: Vec<(Platform, Ready)>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Vec<(Platform, Untagged)>, PushStats), PipelineError> {
        let mut stats = PushStats::default();
        let mut pushed = Vec::with_capacity(ready.len());
        for (platform, on_its_way) in ready {
            let (untagged, counts) = self
                .push_ready(on_its_way, labels)
                .await
                .map_err(|err| err.for_platform(&platform))?;
            stats.blobs_pushed += counts.blobs_pushed;
            stats.blobs_present += counts.blobs_present;
            stats.bytes_pushed += counts.bytes_pushed;
            pushed.push((platform, untagged));
        }
        Ok((pushed, stats))
    }

    /// The platforms a skipped multi-platform service's index lists, for its
    /// record; none for any other outcome (or when the index cannot be read:
    /// the record then just lacks them).
    pub(super) async fn skipped_platforms(
        &self,
        outcome: &Result<Done, PipelineError>,
    ) -> Vec<PlatformRecord> {
        if !matches!(outcome, Ok(Done::Skipped { .. })) || self.platforms().len() < 2 {
            return Vec::new();
        }
        let registry = &self.pipeline.registry;
        match registry
            .index_entries(&self.spec.name, &self.spec.version)
            .await
        {
            Ok(entries) => entries
                .into_iter()
                .map(|entry| PlatformRecord {
                    platform: entry.platform,
                    digest: entry.digest,
                    attestation: None,
                })
                .collect(),
            Err(err) => {
                tracing::debug!(%err, "could not read the index of a skipped service");
                Vec::new()
            }
        }
    }
}
