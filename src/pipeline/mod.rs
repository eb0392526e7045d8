//! One build, start to end: source → context → build → publish → record.
//! Each service is its own span and fails on its own.
//!
//! Owns the order of the steps; imports every step's module, and nothing
//! imports it but the wiring, the queue and the shared state.

mod cache;
mod comment;
mod error;
mod platforms;
mod service;
mod sign;
mod tags;

pub use error::PipelineError;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Mutex, OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::context::{self, ContextPolicy, Limits, SourceTree};
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::forge::Forges;
use crate::github::checks::{Announcements, CheckRun};
use crate::github::{CommitStatus, ForgeError, GitHub};
use crate::log::BuildLog;
use crate::manifest::{self, ServiceEntry, ServiceSpec};
use crate::metrics::Metrics;
use crate::registry::{Published, Registry};
use crate::store::log::LogHub;
use crate::store::{
    now_rfc3339, within, BuildRecord, BuildStatus, Claimed, Fence, ServiceRecord, ServiceStatus,
    Store, StoreError,
};
use crate::types::{CommitSha, Forge, ImageName, Repository, Version};
use service::{BuildLabels, PendingLookup, ServiceJob};

/// What the pipeline needs that is fixed for the life of the service.
pub struct PipelineSettings {
    pub manifest_path: String,
    pub limits: Limits,
    pub build_timeout: Duration,
    pub build_network: Option<String>,
    /// `--platforms`: what a service without its own `platforms` is built for
    /// (empty: the engine's own).
    pub platforms: Vec<crate::platform::Platform>,
    pub engine: EngineSettings,
    pub policy: ContextPolicy,
    /// Temporary space for tarballs, contexts and exported layers.
    pub work_dir: PathBuf,
    /// `--public-url`, for links to build pages.
    pub public_url: Option<String>,
    /// `--pr-comment`: keep a comment on the merged PR listing the images.
    pub pr_comment: bool,
    /// `--signing-key`: every published image is signed.
    pub signer: Option<crate::signing::Signer>,
    /// `--instance-id`, the builder in provenance.
    pub instance_id: String,
    /// `--lease`: how long a build and an image tag stay with this instance
    /// unless renewed.
    pub lease: Duration,
    /// The loopback registry the engine pushes through (`--push-path relay`).
    pub relay: Option<Arc<crate::registry::relay::Relay>>,
    /// `--build-cache`: whether BuildKit gets the previous version as cache.
    pub build_cache: crate::config::BuildCache,
}

pub struct Pipeline {
    pub store: Arc<dyn Store>,
    pub forges: Forges,
    /// Check runs announced at admission, taken over when the build starts.
    pub announcements: Arc<Announcements>,
    pub registry: Registry,
    pub settings: PipelineSettings,
    pub hub: Arc<LogHub>,
    pub metrics: Arc<Metrics>,
    /// `--retention`: run on an image after each publish of it.
    pub retention: Option<Arc<crate::retention::Retention>>,
    engine: OnceCell<Engine>,
    /// Service images built (and pushed) at once, across all builds.
    service_slots: Semaphore,
    /// One lock per image tag, held from the last registry check to the end
    /// of the push, so two builds here never race for the same tag.
    tag_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        forges: Forges,
        registry: Registry,
        settings: PipelineSettings,
        max_concurrent_builds: usize,
    ) -> Self {
        Self {
            store,
            forges,
            announcements: Arc::default(),
            registry,
            settings,
            hub: Arc::new(LogHub::default()),
            metrics: Arc::new(Metrics::default()),
            retention: None,
            engine: OnceCell::new(),
            service_slots: Semaphore::new(max_concurrent_builds),
            tag_locks: std::sync::Mutex::default(),
        }
    }

    /// The relay, unless a push showed it cannot serve here.
    fn usable_relay(&self) -> Option<&Arc<crate::registry::relay::Relay>> {
        self.settings.relay.as_ref().filter(|relay| relay.usable())
    }

    /// Holds `image`'s tag for the build `fence` names: one push per tag at
    /// a time in this process (a mutex) and across instances (a lease row in
    /// the store, renewed while held). `None` once the build's lease is lost.
    async fn lock_tag(&self, image: &str, fence: &Fence) -> Option<TagLease> {
        let lock = {
            let mut locks = self.tag_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(image.to_string()).or_default().clone()
        };
        let local = lock.lock_owned().await;
        let lease = self.settings.lease;
        loop {
            match self.store.lease_tag(image, fence, lease).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(%err, image, "could not take the tag's lease; trying again")
                }
            }
            if !self.holds(fence).await {
                return None;
            }
            tokio::time::sleep(TAG_LEASE_RETRY).await;
        }
        let renewer = AbortOnDropHandle::new(tokio::spawn(renew_tag(
            self.store.clone(),
            image.to_string(),
            fence.clone(),
            lease,
        )));
        Some(TagLease {
            store: self.store.clone(),
            tag: image.to_string(),
            fence: fence.clone(),
            _renewer: renewer,
            _local: local,
        })
    }

    /// Whether `fence` still holds its build, with the lease renewed: asked
    /// just before anything goes to the registry under the build's name.
    async fn holds(&self, fence: &Fence) -> bool {
        let lease = self.settings.lease;
        match within("a lease renewal", lease / 3, self.store.renew(fence, lease)).await {
            Ok(held) => held,
            Err(err) => {
                tracing::warn!(%err, "could not confirm the build's lease; not pushing");
                false
            }
        }
    }

    /// The engine, connected on first use so that Slipway can start (and take
    /// webhooks) while the engine is still coming up.
    pub async fn engine(&self) -> Result<&Engine, EngineError> {
        self.engine
            .get_or_try_init(|| Engine::connect(&self.settings.engine))
            .await
    }

    /// Runs a claimed build to its end and records the result, unless
    /// `lost` says its lease went to another instance: then it stops where
    /// it is, and writes, pushes and posts nothing more.
    #[tracing::instrument(name = "build", skip_all, fields(build = %claimed.record.id, repository = %claimed.record.repository, commit = %claimed.record.commit, attempt = claimed.record.attempt))]
    pub async fn run(self: &Arc<Self>, claimed: Claimed, lost: CancellationToken) {
        let started = Instant::now();
        self.metrics.build_started();
        let status = tokio::select! {
            status = self.run_claimed(claimed) => status,
            () = lost.cancelled() => None,
        };
        match status {
            Some(status) => self
                .metrics
                .build_finished(status.as_str(), started.elapsed()),
            None => self.metrics.build_stopped(),
        }
    }

    /// The build's final status, `None` when its lease was lost.
    async fn run_claimed(self: &Arc<Self>, claimed: Claimed) -> Option<BuildStatus> {
        let Claimed {
            mut record,
            taken_from,
        } = claimed;
        record.started_at = Some(now_rfc3339());
        record.finished_at = None;
        record.error = None;
        record.services.clear();
        let (log, writer) =
            crate::store::log::start(self.store.clone(), self.hub.clone(), Fence::of(&record));
        match taken_from {
            Some(other) if other != self.settings.instance_id => log.line(&format!(
                "--- instance {other} stopped answering during this build; {} takes it over (attempt {}) ---",
                self.settings.instance_id, record.attempt
            )),
            _ if record.attempt > 1 => {
                log.line("--- Slipway stopped during this build; running it again ---")
            }
            _ => {}
        }
        log.line(&format!(
            "build {} of {} at {} (PR #{})",
            record.id, record.repository, record.commit, record.pull_request
        ));
        if !save(&self.store, &record).await {
            return None;
        }
        self.report(&mut record, "pending", "building images".into())
            .await;
        let shared = Arc::new(Mutex::new(record));
        if let Err(error) = self.execute(&shared, &log).await {
            log.line(&format!("build failed: {error}"));
            shared.lock().await.error = Some(error.to_string());
        }
        let mut record = shared.lock().await;
        for service in record
            .services
            .iter_mut()
            .filter(|s| !s.status.is_finished())
        {
            service.status = ServiceStatus::Failed;
            service.error.get_or_insert_with(|| {
                "not built: the build failed before this service ran".into()
            });
        }
        record.status = record.outcome();
        record.finished_at = Some(now_rfc3339());
        log.line(&format!("build {}", record.status.as_str()));
        tracing::info!(status = record.status.as_str(), "build finished");
        // The last lines are stored before the status that ends the log.
        drop(log);
        let _ = writer.await;
        if !save(&self.store, &record).await {
            return None;
        }
        self.hub.finish(&record.id, record.status);
        for service in &record.services {
            self.metrics.service_finished(service.status.as_str());
        }
        let state = if record.status == BuildStatus::Succeeded {
            "success"
        } else {
            "failure"
        };
        let summary = describe(&record);
        self.report(&mut record, state, summary).await;
        self.update_pr_comment(&mut record).await;
        Some(record.status)
    }

    /// Tells the forge how the build stands: a check run when Slipway is a
    /// GitHub App, else a commit status. A failure to report never fails
    /// the build: it is logged and left.
    async fn report(&self, record: &mut BuildRecord, state: &'static str, description: String) {
        let github = self.forges.github();
        if record.forge == Forge::GitHub && github.is_app() {
            return self.report_check_run(record, state, description).await;
        }
        self.post_status(record, state, description).await
    }

    async fn report_check_run(&self, record: &mut BuildRecord, state: &'static str, title: String) {
        let (Ok(repo), Ok(commit)) = (record_repository(record), CommitSha::parse(&record.commit))
        else {
            return;
        };
        let (status, conclusion) = match state {
            "pending" => ("in_progress", None),
            "success" => ("completed", Some("success")),
            _ => ("completed", Some("failure")),
        };
        let run = CheckRun {
            status,
            conclusion,
            title,
            summary: check_summary(record),
            details_url: self.build_page(record),
            external_id: record.id.clone(),
        };
        // A retry's check run is set back to queued at admission: that comes first.
        let announced = self.announcements.announced(&record.id).await;
        let existing = record.check_run.or(announced);
        let github = self.forges.github();
        match github
            .upsert_check_run(&repo, &commit, existing, &run)
            .await
        {
            Ok(id) if record.check_run != Some(id) => {
                record.check_run = Some(id);
                save(&self.store, record).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, state, "could not report the check run"),
        }
    }

    pub fn build_page(&self, record: &BuildRecord) -> Option<String> {
        self.settings
            .public_url
            .as_ref()
            .map(|base| format!("{}/builds/{}/page", base.trim_end_matches('/'), record.id))
    }

    async fn post_status(&self, record: &BuildRecord, state: &'static str, description: String) {
        let (Ok(repo), Ok(commit)) = (record_repository(record), CommitSha::parse(&record.commit))
        else {
            return;
        };
        let status = CommitStatus {
            state,
            description,
            target_url: self.build_page(record),
        };
        let Some(forge) = self.forges.client(record.forge) else {
            return;
        };
        if !forge.has_token() {
            return;
        }
        if let Err(err) = forge.post_status(&repo, &commit, &status).await {
            tracing::warn!(%err, state, "could not post the commit status");
        }
    }

    /// Returns the whole-build error, if any.
    async fn execute(
        self: &Arc<Self>,
        shared: &Arc<Mutex<BuildRecord>>,
        log: &BuildLog,
    ) -> Result<(), PipelineError> {
        let (repo, commit, source_url, forge) = {
            let r = shared.lock().await;
            let repo = record_repository(&r)?;
            let commit = CommitSha::parse(&r.commit)?;
            let forge = self
                .forges
                .client(r.forge)
                .ok_or(PipelineError::ForgeNotConfigured(r.forge))?;
            (repo, commit, r.source_url.clone(), forge)
        };
        let entries = self.read_manifest(forge, &repo, &commit).await?;
        let services = self.service_records(&entries);
        {
            let mut r = shared.lock().await;
            r.services = services;
            save(&self.store, &r).await;
        }
        let specs: Vec<(usize, ServiceSpec)> = entries
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| e.spec.ok().map(|s| (i, s)))
            .collect();
        if specs.is_empty() {
            log.line("no service in the manifest is valid; nothing to build");
            return Ok(());
        }
        // What the registry holds is asked while the sources download: for a
        // merge that publishes nothing new, that is most of the work. Each
        // service awaits only its own answer, once its context is ready.
        let lookups: Vec<PendingLookup> = specs
            .iter()
            .map(|(_, spec)| self.start_lookup(spec))
            .collect();
        let tree = Arc::new(self.fetch_source(forge, &repo, &commit, log).await?);
        let labels_base = BuildLabels {
            revision: commit.to_string(),
            source: source_url,
        };
        let tasks = specs.into_iter().zip(lookups).map(|((index, spec), published)| {
            let job = ServiceJob {
                published,
                pipeline: self.clone(),
                shared: shared.clone(),
                tree: tree.clone(),
                log: log.for_service(spec.name.as_str()),
                labels: labels_base.clone(),
                index,
                spec,
            };
            let span = tracing::info_span!("service", service = %job.spec.name, version = %job.spec.version);
            // Aborted with the build when its lease is lost: dropping the
            // engine's stream stops the engine's build too.
            AbortOnDropHandle::new(tokio::spawn(job.run().instrument(span)))
        });
        for result in futures::future::join_all(tasks).await {
            if let Err(err) = result {
                tracing::error!(%err, "service task panicked");
            }
        }
        Ok(())
    }

    /// What the registry holds at `NAME:VERSION`, with the error as the
    /// service's message.
    async fn lookup(
        &self,
        name: &ImageName,
        version: &Version,
    ) -> Result<Published, PipelineError> {
        Ok(self.registry.lookup(name, version).await?)
    }

    /// Starts asking the registry for `NAME:VERSION` now; the answer is
    /// awaited later. Dropping every copy of it cancels the request.
    fn start_lookup(self: &Arc<Self>, spec: &ServiceSpec) -> PendingLookup {
        let pipeline = self.clone();
        let (name, version) = (spec.name.clone(), spec.version.clone());
        let task = AbortOnDropHandle::new(tokio::spawn(
            async move { pipeline.lookup(&name, &version).await }.in_current_span(),
        ));
        async move {
            task.await
                .unwrap_or_else(|e| Err(PipelineError::LookupStopped(e)))
                .map_err(Arc::new)
        }
        .boxed()
        .shared()
    }

    async fn read_manifest(
        &self,
        forge: &GitHub,
        repo: &Repository,
        commit: &CommitSha,
    ) -> Result<Vec<ServiceEntry>, PipelineError> {
        let path = &self.settings.manifest_path;
        let bytes = forge
            .file_at(repo, commit, path)
            .await
            .map_err(|e| match e {
                ForgeError::NotFound { .. } => PipelineError::NoManifest {
                    path: path.clone(),
                    commit: commit.to_string(),
                    repo: repo.to_string(),
                },
                source => PipelineError::ManifestUnreadable {
                    path: path.clone(),
                    source,
                },
            })?;
        manifest::parse(&bytes).map_err(|source| PipelineError::Manifest {
            path: path.clone(),
            commit: commit.to_string(),
            source,
        })
    }

    fn service_records(&self, entries: &[ServiceEntry]) -> Vec<ServiceRecord> {
        entries
            .iter()
            .map(|entry| ServiceRecord {
                name: entry.name.clone(),
                version: entry.version.clone(),
                image: entry
                    .spec
                    .as_ref()
                    .ok()
                    .map(|s| self.registry.image_ref(&s.name, &s.version)),
                status: if entry.spec.is_ok() {
                    ServiceStatus::Pending
                } else {
                    ServiceStatus::Failed
                },
                digest: None,
                signature: None,
                attestation: None,
                tags: None,
                platforms: Vec::new(),
                error: entry.spec.as_ref().err().cloned(),
                duration_ms: None,
            })
            .collect()
    }

    /// Downloads the commit's tarball once for all its services, and unpacks it.
    async fn fetch_source(
        &self,
        forge: &GitHub,
        repo: &Repository,
        commit: &CommitSha,
        log: &BuildLog,
    ) -> Result<SourceTree, PipelineError> {
        let work = tempfile::Builder::new()
            .prefix("tarball-")
            .tempdir_in(&self.settings.work_dir)
            .map_err(PipelineError::TempSpace)?;
        let tarball = work.path().join("source.tar.gz");
        let started = Instant::now();
        let size = forge
            .download_tarball(repo, commit, &tarball, self.settings.limits.max_bytes)
            .await
            .map_err(PipelineError::Download)?;
        log.line(&format!(
            "downloaded {} KiB of sources in {:?}",
            size / 1024,
            started.elapsed()
        ));
        let limits = self.settings.limits;
        let commit = commit.clone();
        let work_dir = self.settings.work_dir.clone();
        let tree = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&tarball)?;
            context::unpack(file, &commit, limits, &work_dir).map_err(std::io::Error::other)
        })
        .await
        .map_err(|source| PipelineError::Crashed {
            what: "unpacking the sources",
            source,
        })?
        .map_err(PipelineError::Unpack)?;
        log.line(&format!("unpacked {} entries", tree.entries().len()));
        Ok(tree)
    }
}

/// The record's repository: GitLab's may have subgroups.
fn record_repository(record: &BuildRecord) -> Result<Repository, PipelineError> {
    Ok(match record.forge {
        Forge::GitLab => Repository::parse_nested(&record.repository)?,
        Forge::GitHub | Forge::Gitea | Forge::Forgejo => Repository::parse(&record.repository)?,
    })
}

/// The check run's summary: the images table, and why the build failed.
fn check_summary(record: &BuildRecord) -> String {
    if record.services.is_empty() {
        return "Reading the manifest and the sources.".to_string();
    }
    let mut summary = comment::images_table(record);
    if let Some(error) = &record.error {
        summary.push_str(&format!("\nBuild failed: {error}"));
    }
    summary
}

/// The one-line summary of a finished build, for its commit status.
fn describe(record: &BuildRecord) -> String {
    if let Some(error) = &record.error {
        return format!("build failed: {error}");
    }
    let count = |status| {
        record
            .services
            .iter()
            .filter(|s| s.status == status)
            .count()
    };
    let failed = count(ServiceStatus::Failed);
    if failed > 0 {
        return format!("{failed} of {} services failed", record.services.len());
    }
    let published = count(ServiceStatus::Succeeded);
    let images = if published == 1 { "image" } else { "images" };
    match count(ServiceStatus::Skipped) {
        0 => format!("{published} {images} published"),
        skipped => format!("{published} {images} published, {skipped} skipped"),
    }
}

/// False once the build's lease is lost: nothing more is written for it.
pub(super) async fn save(store: &Arc<dyn Store>, record: &BuildRecord) -> bool {
    match store.save(record).await {
        Ok(()) => true,
        Err(err @ StoreError::LeaseLost { .. }) => {
            tracing::warn!(%err, "record not saved");
            false
        }
        Err(err) => {
            tracing::error!(%err, build = %record.id, "could not save build record");
            true
        }
    }
}

/// How often a build waiting for a tag another build holds asks again.
const TAG_LEASE_RETRY: Duration = Duration::from_millis(250);

/// An image tag held by one build; given back when dropped.
pub(super) struct TagLease {
    store: Arc<dyn Store>,
    tag: String,
    fence: Fence,
    _renewer: AbortOnDropHandle<()>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

impl TagLease {
    /// Whether the lease is still this build's, renewed: asked just before the push.
    pub(super) async fn still_held(&self, lease: Duration) -> bool {
        let renewal = self.store.lease_tag(&self.tag, &self.fence, lease);
        matches!(within("a tag lease", lease / 3, renewal).await, Ok(true))
    }
}

impl Drop for TagLease {
    fn drop(&mut self) {
        let (store, tag, fence) = (self.store.clone(), self.tag.clone(), self.fence.clone());
        // Best effort: a lease not given back runs out by itself.
        tokio::spawn(async move {
            if let Err(err) = store.release_tag(&tag, &fence).await {
                tracing::debug!(%err, tag, "tag lease left to run out");
            }
        });
    }
}

async fn renew_tag(store: Arc<dyn Store>, tag: String, fence: Fence, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        if let Err(err) = store.lease_tag(&tag, &fence, lease).await {
            tracing::warn!(%err, tag, "could not renew the tag's lease");
        }
    }
}
