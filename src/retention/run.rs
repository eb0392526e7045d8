//! Runs retention on the registry: one repository at a time under its
//! moving-tags lease (the one tag moves take, so no tag moves onto a
//! version while it is being deleted, and two instances never delete in the
//! same repository at once), after each publish and on an interval.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_util::task::AbortOnDropHandle;

use super::plan::{self, Plan};
use super::{read_listing, RetentionError};
use crate::config::RetentionPolicy;
use crate::metrics::Metrics;
use crate::registry::{Deleted, Registry};
use crate::store::{within, Fence, ListFilter, Store};
use crate::types::{ImageName, Version};

/// How long a run waits for a repository whose lease another holds (a tag
/// move, or another instance's retention) before leaving it to the next.
const LEASE_WAIT: Duration = Duration::from_secs(120);
const LEASE_RETRY: Duration = Duration::from_millis(250);
/// The build records read for the images Slipway published.
const RECORDS_READ: usize = 10_000;
/// A listing is read again when tags appeared while deciding, at most so often.
const MAX_REREADS: usize = 3;

pub struct RetentionSettings {
    pub policy: RetentionPolicy,
    pub dry_run: bool,
    /// `--lease`: how long the repository's lease lasts unless renewed.
    pub lease: Duration,
}

pub struct Retention {
    settings: RetentionSettings,
    registry: Registry,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Set when the registry refused a delete: said once, then not tried
    /// again until Slipway restarts.
    refused: AtomicBool,
}

impl Retention {
    pub fn new(
        settings: RetentionSettings,
        registry: Registry,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings,
            registry,
            store,
            metrics,
            refused: AtomicBool::new(false),
        }
    }

    /// What retention would do to `name` now; reads only.
    pub async fn plan(&self, name: &ImageName) -> Result<Plan, RetentionError> {
        let listing = read_listing(&self.registry, name).await?;
        Ok(plan::plan(
            &listing,
            &self.settings.policy,
            OffsetDateTime::now_utc(),
        ))
    }

    /// The images this registry and namespace hold that Slipway's records
    /// say it published (or found published from the same sources).
    pub async fn images(&self) -> Result<Vec<ImageName>, RetentionError> {
        let filter = ListFilter {
            repository: None,
            status: None,
            limit: RECORDS_READ,
        };
        let mut images = BTreeSet::new();
        for record in self.store.list(&filter).await? {
            for service in record.services.iter().filter(|s| s.digest.is_some()) {
                let (Ok(name), Ok(version)) = (
                    ImageName::parse(&service.name),
                    Version::parse(&service.version),
                ) else {
                    continue;
                };
                // A record from another registry or namespace is not this one's.
                if service.image.as_deref() == Some(&self.registry.image_ref(&name, &version)) {
                    images.insert(name.to_string());
                }
            }
        }
        Ok(images
            .into_iter()
            .filter_map(|n| ImageName::parse(&n).ok())
            .collect())
    }

    /// Runs on `name` in the background, after a publish of it.
    pub fn after_publish(self: &Arc<Self>, name: &ImageName) {
        let (this, name) = (self.clone(), name.clone());
        tokio::spawn(async move { this.run_logged(&name).await });
    }

    /// Runs on every image Slipway published, every `interval`, the first
    /// time one interval after the start.
    pub async fn every(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            self.run_all().await;
        }
    }

    pub async fn run_all(&self) {
        match self.images().await {
            Ok(images) => {
                for name in images {
                    self.run_logged(&name).await;
                }
            }
            Err(err) => {
                tracing::warn!(%err, "retention: could not read which images Slipway published; trying again next time")
            }
        }
    }

    async fn run_logged(&self, name: &ImageName) {
        if let Err(err) = self.run(name).await {
            tracing::warn!(%err, image = %self.registry.repository(name), "retention did not finish; the next run takes it up");
        }
    }

    /// Applies retention to `name` under its lease; returns the deletions
    /// made (or, in a dry run, that would be). Another instance's run that
    /// deleted a manifest first leaves it counted once, there.
    pub async fn run(&self, name: &ImageName) -> Result<Vec<plan::Deletion>, RetentionError> {
        let repository = self.registry.repository(name);
        if self.refuses() {
            tracing::debug!(%repository, "retention skipped: the registry refuses deletes");
            return Ok(Vec::new());
        }
        let Some(lease) = self.lease(&repository).await? else {
            tracing::info!(%repository, "retention skipped this time: another instance or a tag move holds the repository");
            return Ok(Vec::new());
        };
        let plan = self.settled_plan(name).await?;
        let mut done = Vec::new();
        for deletion in plan.deletions {
            // Another run here may have met the refusal while this one waited.
            if self.refuses() {
                break;
            }
            if self.settings.dry_run {
                tracing::info!(%repository, digest = %deletion.digest, "retention (dry run) would delete {} ({})", deletion.target, deletion.digest);
                self.metrics.retention_deleted(deletion.target.kind(), true);
                done.push(deletion);
                continue;
            }
            if !lease.still_held(self.settings.lease).await {
                return Err(RetentionError::LeaseLost { repository });
            }
            if self.delete(name, &repository, &deletion).await? {
                done.push(deletion);
            }
        }
        Ok(done)
    }

    fn refuses(&self) -> bool {
        self.refused.load(Ordering::Relaxed) && !self.settings.dry_run
    }

    /// Deletes one manifest; whether this run deleted it.
    async fn delete(
        &self,
        name: &ImageName,
        repository: &str,
        deletion: &plan::Deletion,
    ) -> Result<bool, RetentionError> {
        let digest = &deletion.digest;
        match self.registry.delete_manifest(name, digest).await? {
            Deleted::Deleted => {
                tracing::info!(%repository, %digest, "retention deleted {} ({digest})", deletion.target);
                self.metrics
                    .retention_deleted(deletion.target.kind(), false);
                Ok(true)
            }
            Deleted::Absent => {
                tracing::debug!(%repository, %digest, "already deleted");
                Ok(false)
            }
            Deleted::Unsupported => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::error!(registry = %self.registry.host(), "retention: the registry refuses to delete manifests (405); enable deletes in its configuration (distribution: `storage: delete: enabled: true`, or REGISTRY_STORAGE_DELETE_ENABLED=true) and restart it, then Slipway. Retention deletes nothing until then");
                }
                Ok(false)
            }
        }
    }

    /// The plan, from a listing no tag appeared in while it was read: a
    /// version pushed meanwhile with the same bytes as an old one shares
    /// its manifest, which must not be deleted then.
    async fn settled_plan(&self, name: &ImageName) -> Result<Plan, RetentionError> {
        let mut listing = read_listing(&self.registry, name).await?;
        for _ in 0..MAX_REREADS {
            let now: BTreeSet<String> = self.registry.tags(name).await?.into_iter().collect();
            let seen: BTreeSet<String> = listing.tags.keys().cloned().collect();
            if now.is_subset(&seen) {
                break;
            }
            listing = read_listing(&self.registry, name).await?;
        }
        Ok(plan::plan(
            &listing,
            &self.settings.policy,
            OffsetDateTime::now_utc(),
        ))
    }

    /// Takes the repository's moving-tags lease, waiting a while for
    /// another holder; `None` when it stays taken.
    async fn lease(&self, repository: &str) -> Result<Option<RepositoryLease>, RetentionError> {
        // The key set_tags takes (see pipeline::tags): tag moves and
        // retention exclude each other.
        let key = format!("{}/{repository}#moving-tags", self.registry.host());
        let fence = Fence {
            build: format!("retention-{}", uuid::Uuid::new_v4()),
            attempt: 0,
        };
        let lease = self.settings.lease;
        let started = Instant::now();
        loop {
            let taken = within(
                "a retention lease",
                lease,
                self.store.lease_tag(&key, &fence, lease),
            )
            .await?;
            if taken {
                break;
            }
            if started.elapsed() > LEASE_WAIT {
                return Ok(None);
            }
            tokio::time::sleep(LEASE_RETRY).await;
        }
        let renewer = {
            let (store, key, fence) = (self.store.clone(), key.clone(), fence.clone());
            AbortOnDropHandle::new(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let _ = store.lease_tag(&key, &fence, lease).await;
                }
            }))
        };
        Ok(Some(RepositoryLease {
            store: self.store.clone(),
            key,
            fence,
            _renewer: renewer,
        }))
    }
}

/// A repository held by one retention run; given back when dropped.
struct RepositoryLease {
    store: Arc<dyn Store>,
    key: String,
    fence: Fence,
    _renewer: AbortOnDropHandle<()>,
}

impl RepositoryLease {
    async fn still_held(&self, lease: Duration) -> bool {
        let renewal = self.store.lease_tag(&self.key, &self.fence, lease);
        matches!(
            within("a retention lease", lease / 3, renewal).await,
            Ok(true)
        )
    }
}

impl Drop for RepositoryLease {
    fn drop(&mut self) {
        let (store, key, fence) = (self.store.clone(), self.key.clone(), self.fence.clone());
        // Best effort: a lease not given back runs out by itself.
        tokio::spawn(async move {
            let _ = store.release_tag(&key, &fence).await;
        });
    }
}
