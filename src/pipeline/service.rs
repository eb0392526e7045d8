//! One service of one build: its context, the immutability check, the
//! engine build, and the push, within `--build-timeout`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use tokio::sync::Mutex;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{save, Pipeline, PipelineError, TagLease};
use crate::context::{self, PreparedContext, SourceTree, SyncDir};
use crate::engine::{BuildRequest, ContextTar, Engine, EngineError, RegistryCache};
use crate::log::BuildLog;
use crate::manifest::ServiceSpec;
use crate::platform::Platform;
use crate::registry::relay::RelayedManifest;
use crate::registry::{self, export, Published, PushStats, Untagged};
use crate::store::{now_rfc3339, BuildRecord, Fence, PlatformRecord, ServiceRecord, ServiceStatus};
use futures::future::{BoxFuture, Shared};

#[derive(Clone)]
pub(super) struct BuildLabels {
    pub(super) revision: String,
    pub(super) source: String,
}

/// One service of one build.
pub(super) struct ServiceJob {
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) shared: Arc<Mutex<BuildRecord>>,
    pub(super) tree: Arc<SourceTree>,
    pub(super) log: BuildLog,
    pub(super) labels: BuildLabels,
    pub(super) index: usize,
    pub(super) spec: ServiceSpec,
    /// The registry's answer for `NAME:VERSION`, asked before the sources came.
    pub(super) published: PendingLookup,
}

/// A registry lookup already under way; every copy yields the same answer.
pub(super) type PendingLookup = Shared<BoxFuture<'static, Result<Published, Arc<PipelineError>>>>;

/// How a service ended, short of failing.
pub(super) enum Done {
    Published {
        digest: String,
        stats: PushStats,
        signed: Option<Signed>,
        /// With several platforms: each one's manifest, which the index lists.
        platforms: Vec<PlatformRecord>,
    },
    Skipped {
        digest: String,
        signed: Option<Signed>,
    },
}

impl Done {
    /// The manifest `NAME:VERSION` names.
    fn digest(&self) -> &str {
        match self {
            Done::Published { digest, .. } | Done::Skipped { digest, .. } => digest,
        }
    }
}

impl ServiceJob {
    pub(super) async fn run(self) {
        let started = Instant::now();
        let outcome = self.keep_signed(self.publish().await).await;
        let skipped_platforms = self.skipped_platforms(&outcome).await;
        let elapsed = started.elapsed();
        match &outcome {
            Ok(Done::Published { digest, stats, .. }) => {
                self.log.line(&format!(
                    "published {} ({digest}): {} blobs pushed ({} KiB), {} already present, in {elapsed:?}",
                    self.image(),
                    stats.blobs_pushed,
                    stats.bytes_pushed / 1024,
                    stats.blobs_present
                ));
                tracing::info!(%digest, "published");
            }
            Ok(Done::Skipped { digest, .. }) => {
                self.log.line(&format!(
                    "skipped: {} is already published from the same sources ({digest})",
                    self.image()
                ));
                tracing::info!(%digest, "skipped");
            }
            Err(error) => {
                self.log.line(&format!("failed: {error}"));
                tracing::warn!(%error, "service failed");
            }
        }
        // A skipped service sets its tags too: a re-merge that adds a tag
        // gets it, and a publish whose tags failed is mended by a retry.
        // Every decision is made afresh from the registry, so this never
        // moves `latest` or an alias back.
        let tagged = match &outcome {
            Ok(done) => Some(self.set_tags(done.digest()).await),
            Err(_) => None,
        };
        if let Some(Err(error)) = &tagged {
            self.log
                .line(&format!("failed: its tags were not set: {error}"));
            tracing::warn!(%error, "tags not set");
        }
        if let (Ok(Done::Published { .. }), Some(retention)) = (&outcome, &self.pipeline.retention)
        {
            retention.after_publish(&self.spec.name);
        }
        let elapsed = started.elapsed();
        self.update(|s| {
            s.duration_ms = Some(elapsed.as_millis() as u64);
            match &outcome {
                Ok(Done::Published {
                    digest,
                    signed,
                    platforms,
                    ..
                }) => {
                    s.status = ServiceStatus::Succeeded;
                    s.digest = Some(digest.clone());
                    s.platforms = platforms.clone();
                    Signed::record(signed, s);
                }
                Ok(Done::Skipped { digest, signed }) => {
                    s.status = ServiceStatus::Skipped;
                    s.digest = Some(digest.clone());
                    s.platforms = skipped_platforms;
                    Signed::record(signed, s);
                }
                Err(error) => {
                    s.status = ServiceStatus::Failed;
                    s.error = Some(error.to_string());
                }
            }
            match &tagged {
                Some(Ok(tagged)) => {
                    s.tags = Some(tagged.tags.clone());
                    if let Some(signature) = &tagged.signature {
                        s.signature = Some(signature.clone());
                    }
                }
                Some(Err(error)) => {
                    // The version is up (its digest stays in the record);
                    // the tags the manifest asked for are not.
                    s.status = ServiceStatus::Failed;
                    s.error = Some(format!(
                        "{} is published, but its tags were not set: {error}",
                        self.image()
                    ));
                }
                None => {}
            }
        })
        .await;
    }

    /// The claim of the build this service belongs to.
    pub(super) async fn fence(&self) -> Fence {
        Fence::of(&*self.shared.lock().await)
    }

    /// Re-checked just before anything is tagged in the registry: the build
    /// and the tag are still this instance's, their leases renewed.
    pub(super) async fn still_holds(
        &self,
        fence: &Fence,
        tag: &TagLease,
    ) -> Result<(), PipelineError> {
        let lease = self.pipeline.settings.lease;
        if self.pipeline.holds(fence).await && tag.still_held(lease).await {
            Ok(())
        } else {
            Err(PipelineError::LeaseLost)
        }
    }

    pub(super) fn image(&self) -> String {
        self.pipeline
            .registry
            .image_ref(&self.spec.name, &self.spec.version)
    }

    pub(super) async fn update(&self, change: impl FnOnce(&mut ServiceRecord)) {
        let mut record = self.shared.lock().await;
        if let Some(service) = record.services.get_mut(self.index) {
            change(service);
        }
        let _saved = save(&self.pipeline.store, &record).await;
    }

    async fn publish(&self) -> Result<Done, PipelineError> {
        let work = tempfile::Builder::new()
            .prefix("service-")
            .tempdir_in(&self.pipeline.settings.work_dir)
            .map_err(PipelineError::TempSpace)?;
        let context = self.prepare_context().await?;
        // With platforms named, the inputs cover them too (the image's label).
        let inputs = self.inputs(&context.inputs_digest);
        self.log.line(&format!(
            "context: {} files, inputs {inputs}",
            context.files
        ));
        let published = self.published.clone().await?;
        if let Some(done) = self.immutable(published, &inputs)? {
            return Ok(done);
        }
        // The slot bounds engine builds; it is released before the push, so
        // the next service builds while this one uploads.
        let slot = self
            .pipeline
            .service_slots
            .acquire()
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        let timeout = self.pipeline.settings.build_timeout;
        let work_dir = work.path().to_path_buf();
        let platforms = self.platforms();
        let publish = async {
            if platforms.len() > 1 {
                self.build_and_push_platforms(&context, &inputs, work_dir, slot, platforms)
                    .await
            } else {
                self.build_and_push(&context, &inputs, work_dir, slot).await
            }
        };
        tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| PipelineError::TimedOut(timeout))?
    }

    /// What the service is built for: its own `platforms`, else
    /// `--platforms`; empty: the engine's own platform.
    pub(super) fn platforms(&self) -> &[Platform] {
        if self.spec.platforms.is_empty() {
            &self.pipeline.settings.platforms
        } else {
            &self.spec.platforms
        }
    }

    /// The context's inputs, and the platforms when some are named: the
    /// same sources built for other platforms are another image.
    fn inputs(&self, context_inputs: &str) -> String {
        let platforms = self.platforms();
        if platforms.is_empty() {
            return context_inputs.to_string();
        }
        let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        export::sha256_digest(format!("{context_inputs}\nplatforms {}", names.join(",")).as_bytes())
    }

    async fn prepare_context(&self) -> Result<PreparedContext, PipelineError> {
        let tree = self.tree.clone();
        let spec = self.spec.clone();
        let policy = self.pipeline.settings.policy;
        tokio::task::spawn_blocking(move || context::prepare(&tree, &spec, policy))
            .await
            .map_err(|source| PipelineError::Crashed {
                what: "preparing the context",
                source,
            })?
            .map_err(PipelineError::from)
    }

    pub(super) async fn lookup(&self) -> Result<Published, PipelineError> {
        self.pipeline
            .lookup(&self.spec.name, &self.spec.version)
            .await
    }

    /// Published versions are immutable: same inputs → skip, other inputs → refuse.
    pub(super) fn immutable(
        &self,
        published: Published,
        inputs: &str,
    ) -> Result<Option<Done>, PipelineError> {
        match published {
            Published::Absent => Ok(None),
            Published::Present {
                digest,
                inputs: Some(existing),
            } if existing == inputs => Ok(Some(Done::Skipped {
                digest,
                signed: None,
            })),
            Published::Present {
                inputs: existing, ..
            } => Err(PipelineError::Immutable {
                image: self.image(),
                service: self.spec.name.to_string(),
                existing,
                inputs: inputs.to_string(),
            }),
        }
    }

    async fn build_and_push(
        &self,
        context: &PreparedContext,
        inputs: &str,
        work_dir: PathBuf,
        slot: tokio::sync::SemaphorePermit<'_>,
    ) -> Result<Done, PipelineError> {
        self.update(|s| s.status = ServiceStatus::Building).await;
        let engine = self.pipeline.engine().await?;
        let image = self.image();
        let platform = self.platforms().first();
        let cache = self.registry_cache().await;
        let pulled_before = self.cache_bytes_pulled();
        let image_id = self
            .build_image(engine, context, platform, cache.as_ref(), &self.log)
            .await
            .map_err(|err| match platform {
                Some(platform) => err.for_platform(platform),
                None => err,
            })?;
        self.log_cache_read(cache.as_ref(), pulled_before);
        drop(slot);
        self.update(|s| s.status = ServiceStatus::Pushing).await;
        let push_started = Instant::now();
        let labels = self.labels(inputs);
        let ready = self
            .ready_for_registry(engine, &image_id, work_dir, &labels)
            .await?;
        // One push per tag at a time, across instances; and someone may have
        // published the tag while this one built.
        let fence = self.fence().await;
        let Some(tag_lease) = self.pipeline.lock_tag(&image, &fence).await else {
            return Err(PipelineError::LeaseLost);
        };
        if let Some(done) = self.immutable(self.lookup().await?, inputs)? {
            return Ok(done);
        }
        let registry = &self.pipeline.registry;
        let (name, version) = (&self.spec.name, &self.spec.version);
        let (untagged, stats) = self.push_ready(ready, &labels).await?;
        self.still_holds(&fence, &tag_lease).await?;
        // Signed before the tag goes up: no tag is ever visible unsigned.
        let signed = self.sign_pushed(&untagged.digest, engine).await?;
        self.still_holds(&fence, &tag_lease).await?;
        let digest = registry.tag(name, version, &untagged).await?;
        self.pipeline.metrics.pushed(
            push_started.elapsed(),
            stats.bytes_pushed,
            stats.blobs_pushed as u64,
            stats.blobs_present as u64,
        );
        Ok(Done::Published {
            digest,
            stats,
            signed,
            platforms: Vec::new(),
        })
    }

    /// Has the engine build the image (for `platform`, when one is named);
    /// answers its id.
    pub(super) async fn build_image(
        &self,
        engine: &Engine,
        context: &PreparedContext,
        platform: Option<&Platform>,
        cache: Option<&RegistryCache>,
        log: &BuildLog,
    ) -> Result<String, PipelineError> {
        let image = match platform {
            Some(platform) if self.platforms().len() > 1 => self.local_name(platform),
            _ => self.image(),
        };
        let sync_dir = SyncDir::new(self.tree.clone(), self.spec.context.as_str());
        let classic_tar = || -> ContextTar { Box::pin(context.classic_tar()) };
        let request = BuildRequest {
            context_tar: &classic_tar,
            context: &sync_dir,
            dockerfile: self.spec.dockerfile_in_context(),
            tag: &image,
            build_args: &self.spec.build_args,
            target: self.spec.target.as_deref(),
            network: self.pipeline.settings.build_network.as_deref(),
            platform,
            cache,
        };
        let build_started = Instant::now();
        let image_id = engine.build(request, log).await?;
        let target = platform.map(|p| format!(" for {p}")).unwrap_or_default();
        log.line(&format!(
            "built {image_id}{target} in {:.2?}",
            build_started.elapsed()
        ));
        Ok(image_id)
    }

    /// Pushes the image by digest (no tag names it yet) by the path it took.
    pub(super) async fn push_ready(
        &self,
        ready: Ready,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Untagged, PushStats), PipelineError> {
        let registry = &self.pipeline.registry;
        let (name, version) = (&self.spec.name, &self.spec.version);
        match ready {
            Ready::Exported(exported) => {
                let mut stats = PushStats::default();
                let untagged = registry
                    .push_untagged(name, version, &exported, &mut stats)
                    .await?;
                Ok((untagged, stats))
            }
            Ready::Relayed(relayed) => {
                let untagged = registry
                    .push_relayed(name, version, &relayed, labels)
                    .await?;
                Ok((untagged, relayed.stats))
            }
        }
    }

    /// The image's layers on their way: pushed by the engine through the
    /// loopback relay where it can reach it (only changed layers are read),
    /// else exported whole for Slipway's own upload.
    pub(super) async fn ready_for_registry(
        &self,
        engine: &Engine,
        image_id: &str,
        work_dir: PathBuf,
        labels: &BTreeMap<String, String>,
    ) -> Result<Ready, PipelineError> {
        if let Some(relayed) = self.through_relay(engine, image_id).await {
            return Ok(Ready::Relayed(relayed));
        }
        let started = Instant::now();
        let (exported, ()) = tokio::join!(
            export_image(engine, image_id, work_dir),
            self.learn_bases(engine, image_id)
        );
        let mut exported = exported?;
        exported.add_labels(labels)?;
        self.log.line(&format!(
            "exported {} layers in {:.2?}",
            exported.layers.len(),
            started.elapsed()
        ));
        Ok(Ready::Exported(exported))
    }

    /// Has the engine push the image's blobs through the relay, which keeps
    /// its manifest back; `None` (with the reason logged) means export.
    async fn through_relay(&self, engine: &Engine, image_id: &str) -> Option<RelayedManifest> {
        let relay = self.pipeline.usable_relay()?;
        // The engine knows only the blobs it pushed itself; the relay mounts
        // those of bases others pushed, once they are learnt.
        self.learn_bases(engine, image_id).await;
        let repository = self.pipeline.registry.repository(&self.spec.name);
        let session = relay.session(&repository);
        let relay_repository = session.repository();
        let started = Instant::now();
        let pushed = engine
            .push_as(
                image_id,
                &relay_repository,
                session.tag(),
                session.credentials(),
            )
            .await;
        match (pushed, session.manifest()) {
            (Ok(()), Some(relayed)) => {
                // The engine took the relay's answer as a registry digest of
                // the image; it names nothing real, so it must not linger
                // (a base image's provenance would pick it up).
                let engine_name = format!("{relay_repository}@{}", relayed.engine_digest());
                engine.forget_name(&engine_name).await;
                self.log.line(&format!(
                    "pushed by the engine through the loopback relay: {} blobs uploaded ({} KiB), {} already in the registry, in {:.2?}",
                    relayed.stats.blobs_pushed,
                    relayed.stats.bytes_pushed / 1024,
                    relayed.stats.blobs_present,
                    started.elapsed()
                ));
                Some(relayed)
            }
            (Ok(()), None) => {
                self.log.line("the engine's push through the loopback relay sent no manifest; exporting the image instead");
                None
            }
            (Err(err @ EngineError::RegistryUnreachable(_)), _) => {
                relay.give_up();
                self.log.line(&format!("the engine cannot reach Slipway's loopback relay ({err}): it runs in another network namespace, so images are exported from now on"));
                None
            }
            (Err(err), _) => {
                self.log.line(&format!(
                    "the engine's push through the loopback relay failed ({err}); exporting the image instead"
                ));
                None
            }
        }
    }

    /// Teaches the registry client the layers of bases the registry holds,
    /// so they are mounted or skipped rather than compressed and uploaded.
    async fn learn_bases(&self, engine: &Engine, image_id: &str) {
        let registry = &self.pipeline.registry;
        for (repository, digest) in engine.registry_bases(image_id, registry.host()).await {
            match registry.learn_base(&repository, &digest).await {
                Ok(learnt) => {
                    self.log.line(&format!(
                        "base {repository}@{digest} is in the registry: {learnt} of its layers need no upload"
                    ));
                    return;
                }
                Err(err) => {
                    tracing::debug!(%err, "could not read a base image from the registry")
                }
            }
        }
    }

    pub(super) fn labels(&self, inputs: &str) -> BTreeMap<String, String> {
        [
            (
                "org.opencontainers.image.revision",
                self.labels.revision.clone(),
            ),
            (
                "org.opencontainers.image.source",
                self.labels.source.clone(),
            ),
            (registry::VERSION_LABEL, self.spec.version.to_string()),
            ("org.opencontainers.image.created", now_rfc3339()),
            ("org.opencontainers.image.title", self.spec.name.to_string()),
            (registry::INPUTS_LABEL, inputs.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// The image on its way to the registry, by one of the two push paths.
pub(super) enum Ready {
    Exported(export::ExportedImage),
    Relayed(RelayedManifest),
}

/// Streams the engine's export into blobs on disk, never holding a layer in memory.
async fn export_image(
    engine: &Engine,
    image_id: &str,
    work_dir: PathBuf,
) -> Result<export::ExportedImage, PipelineError> {
    let stream = engine.export(image_id).map_err(std::io::Error::other);
    let reader = SyncIoBridge::new(StreamReader::new(stream));
    tokio::task::spawn_blocking(move || export::read_docker_save(reader, &work_dir))
        .await
        .map_err(|source| PipelineError::Crashed {
            what: "reading the exported image",
            source,
        })?
        .map_err(PipelineError::from)
}

/// Where an image's signature and attestation are.
#[derive(Debug, Clone)]
pub(super) struct Signed {
    pub(super) signature: String,
    pub(super) attestation: Option<String>,
}

impl Signed {
    pub(super) fn record(signed: &Option<Signed>, service: &mut ServiceRecord) {
        if let Some(signed) = signed {
            service.signature = Some(signed.signature.clone());
            service.attestation = signed.attestation.clone();
        }
    }
}
