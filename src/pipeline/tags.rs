//! The tags a service sets beside `NAME:VERSION` (`latest`, the semver
//! aliases, `sha-…`, literal ones): after the version's tag and its
//! signature are up, so every tag names a signed manifest. Each is a
//! manifest PUT of the version's own bytes: no blob moves.

use super::service::ServiceJob;
use super::PipelineError;
use crate::tags;
use crate::types::CommitSha;

/// The tags one publish set.
#[derive(Debug, Default)]
pub(super) struct Tagged {
    pub(super) tags: Vec<String>,
    /// The `.sig` manifest once the tags' references are signed in it too.
    pub(super) signature: Option<String>,
}

impl ServiceJob {
    /// Sets the service's other tags on the manifest its version names
    /// (`digest`, published or skipped by this build); returns the tags set.
    ///
    /// The tag list is read, the decision made and the tags put under the
    /// image's moving-tags lease: two publishes of one image, on any
    /// instances, never interleave, and the later to decide sees the other's
    /// version in the list. Each publish's version is tagged before it
    /// decides, so whichever order they run in, `latest` ends on the higher.
    pub(super) async fn set_tags(&self, digest: &str) -> Result<Tagged, PipelineError> {
        if self.spec.tags.is_empty() {
            return Ok(Tagged::default());
        }
        let registry = &self.pipeline.registry;
        let (name, version) = (&self.spec.name, &self.spec.version);
        let commit = CommitSha::parse(&self.labels.revision)?;
        let fence = self.fence().await;
        // `#` is in no tag, so the key never meets a version's tag lease.
        let key = format!(
            "{}/{}#moving-tags",
            registry.host(),
            registry.repository(name)
        );
        let lease = self
            .pipeline
            .lock_tag(&key, &fence)
            .await
            .ok_or(PipelineError::LeaseLost)?;
        let untagged = registry.tagged(name, version).await?;
        let untagged = match untagged {
            Some(found) if found.digest == digest => found,
            other => {
                return Err(PipelineError::VersionMoved {
                    image: self.image(),
                    expected: digest.to_string(),
                    found: other.map(|u| u.digest),
                })
            }
        };
        let existing = registry.tags(name).await?;
        let mut plan = tags::plan(version, &self.spec.tags, &commit, &existing);
        self.keep_versions(&mut plan, digest, &existing).await?;
        for held in &plan.held {
            self.log.line(held);
        }
        // Each tag's reference is signed before that tag goes up, as the
        // version's is: policies that match the signed reference exactly
        // (containers/image's `matchRepoDigestOrExact`) accept a pull by tag.
        let mut signature = None;
        if self.pipeline.settings.signer.is_some() && !plan.tags.is_empty() {
            let build = self.shared.lock().await.clone();
            for tag in &plan.tags {
                let reference = registry.image_ref(name, tag);
                let (sig, _added) = self.signature(&build, digest, &reference).await?;
                signature = Some(sig);
            }
        }
        let mut set = Vec::with_capacity(plan.tags.len());
        for tag in &plan.tags {
            self.still_holds(&fence, &lease).await?;
            registry.tag(name, tag, &untagged).await?;
            set.push(tag.to_string());
        }
        if !set.is_empty() {
            self.log.line(&format!(
                "tagged {} also as {}",
                self.image(),
                set.join(", ")
            ));
        }
        Ok(Tagged {
            tags: set,
            signature,
        })
    }

    /// Holds back any tag of `plan` that is a published version already
    /// (its image's version label is the tag): an image versioned `1.4`
    /// before the team moved to `1.4.1` and `semver` must stay what it is,
    /// since versions are immutable.
    async fn keep_versions(
        &self,
        plan: &mut tags::Plan,
        digest: &str,
        existing: &[String],
    ) -> Result<(), PipelineError> {
        let registry = &self.pipeline.registry;
        let mut kept = Vec::with_capacity(plan.tags.len());
        for tag in std::mem::take(&mut plan.tags) {
            if existing.iter().any(|t| t == tag.as_str()) {
                let at = registry.labelled_version(&self.spec.name, &tag).await?;
                if let Some((other, Some(label))) = at {
                    if other != digest && label == tag.as_str() {
                        plan.held.push(format!(
                            "`{tag}` stays: it is the published version {}, and versions are immutable",
                            registry.image_ref(&self.spec.name, &tag)
                        ));
                        continue;
                    }
                }
            }
            kept.push(tag);
        }
        plan.tags = kept;
        Ok(())
    }
}
