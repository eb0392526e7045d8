//! Signing one service's image with `--signing-key`: between the push of its
//! manifest by digest and its tag, so no tag is ever visible unsigned; and
//! for a skipped service, adding the signature it lacks.

use std::time::Instant;

use super::service::{Done, ServiceJob, Signed};
use super::PipelineError;
use crate::engine::Engine;
use crate::platform::Platform;
use crate::registry::Untagged;
use crate::signing::base_images;
use crate::signing::provenance::{BaseImage, Provenance};
use crate::store::{now_rfc3339, BuildRecord};

impl ServiceJob {
    /// Signs the image pushed as `digest` and attests its provenance; the
    /// two go to the registry at once.
    pub(super) async fn sign_pushed(
        &self,
        digest: &str,
        engine: &Engine,
    ) -> Result<Option<Signed>, PipelineError> {
        if self.pipeline.settings.signer.is_none() {
            return Ok(None);
        }
        let started = Instant::now();
        let build = self.shared.lock().await.clone();
        let image = self.image();
        let (signature, attestation) = tokio::join!(
            self.signature(&build, digest, &image),
            self.attestation(&build, digest, engine)
        );
        let ((signature, added), attestation) = (signature?, attestation?);
        self.log.line(&format!(
            "signed {}: signature {signature}{}, provenance {attestation}, in {} ms",
            self.image(),
            if added { "" } else { " (there already)" },
            started.elapsed().as_millis()
        ));
        Ok(Some(Signed {
            signature,
            attestation: Some(attestation),
        }))
    }

    /// Signs the index pushed as `digest` and attests the provenance of
    /// each platform's manifest it lists; answers the index's signature and
    /// each manifest's attestation, in the order of `manifests`.
    pub(super) async fn sign_index(
        &self,
        digest: &str,
        manifests: &[(Platform, Untagged)],
        engine: &Engine,
    ) -> Result<(Option<Signed>, Vec<Option<String>>), PipelineError> {
        if self.pipeline.settings.signer.is_none() {
            return Ok((None, vec![None; manifests.len()]));
        }
        let started = Instant::now();
        let build = self.shared.lock().await.clone();
        let image = self.image();
        let attestations = manifests
            .iter()
            .map(|(_, untagged)| self.attestation(&build, &untagged.digest, engine));
        let (signature, attestations) = tokio::join!(
            self.signature(&build, digest, &image),
            futures::future::try_join_all(attestations)
        );
        let ((signature, added), attestations) = (signature?, attestations?);
        self.log.line(&format!(
            "signed {image}: signature {signature}{} for the index, provenance {} for its platforms, in {} ms",
            if added { "" } else { " (there already)" },
            attestations.join(", "),
            started.elapsed().as_millis()
        ));
        let signed = Signed {
            signature,
            attestation: None,
        };
        Ok((Some(signed), attestations.into_iter().map(Some).collect()))
    }

    /// Pushes the signed provenance of this build of the image.
    async fn attestation(
        &self,
        build: &BuildRecord,
        digest: &str,
        engine: &Engine,
    ) -> Result<String, PipelineError> {
        let Some(signer) = &self.pipeline.settings.signer else {
            return Err(PipelineError::NoSigningKey);
        };
        let base_images = self.base_images(engine).await;
        let finished_on = now_rfc3339();
        let image = self.image();
        let provenance = Provenance {
            image: &image,
            digest,
            repository: &build.repository,
            source_url: &build.source_url,
            pull_request: build.pull_request,
            base_ref: &build.base_ref,
            commit: &build.commit,
            manifest_path: &self.pipeline.settings.manifest_path,
            service: self.spec.name.as_str(),
            version: self.spec.version.as_str(),
            context: self.spec.context.as_str(),
            dockerfile: self.spec.dockerfile.as_str(),
            target: self.spec.target.as_deref(),
            build_args: &self.spec.build_args,
            base_images: &base_images,
            instance: &self.pipeline.settings.instance_id,
            build_id: &build.id,
            started_on: build.started_at.as_deref().unwrap_or(&finished_on),
            finished_on: &finished_on,
        };
        let attestation = signer
            .attest(&self.pipeline.registry, &self.spec.name, &provenance)
            .await
            .map_err(|source| PipelineError::Attest { image, source })?;
        self.pipeline.metrics.signed("attestation");
        Ok(attestation)
    }

    /// A skipped image keeps its signature; one published before signing
    /// was on gets one now. Its provenance is left as it is: this build did
    /// not make the image, so it has none to give.
    pub(super) async fn keep_signed(
        &self,
        outcome: Result<Done, PipelineError>,
    ) -> Result<Done, PipelineError> {
        let (Ok(Done::Skipped { digest, .. }), Some(signer)) =
            (&outcome, &self.pipeline.settings.signer)
        else {
            return outcome;
        };
        let build = self.shared.lock().await.clone();
        let (signature, added) = self.signature(&build, digest, &self.image()).await?;
        let attestation = signer
            .attestation(&self.pipeline.registry, &self.spec.name, digest)
            .await
            .map_err(|source| PipelineError::ReadAttestation {
                image: self.image(),
                source,
            })?;
        if added {
            self.log.line(&format!(
                "signed {}, which was unsigned: signature {signature}",
                self.image()
            ));
        }
        Ok(Done::Skipped {
            digest: digest.clone(),
            signed: Some(Signed {
                signature,
                attestation,
            }),
        })
    }

    /// Makes sure the `.sig` of `digest` signs `reference` (the version's,
    /// or a tag's); says whether a signature was added.
    pub(super) async fn signature(
        &self,
        build: &BuildRecord,
        digest: &str,
        reference: &str,
    ) -> Result<(String, bool), PipelineError> {
        let Some(signer) = &self.pipeline.settings.signer else {
            return Err(PipelineError::NoSigningKey);
        };
        let optional = serde_json::json!({
            "repository": build.repository,
            "pull_request": build.pull_request,
            "commit": build.commit,
            "build": build.id,
        });
        let image = reference.to_string();
        // Two versions of one image signed at once would each add their
        // layer to what they read, and the later push would drop the other's.
        let fence = self.fence().await;
        let _sig = self
            .pipeline
            .lock_tag(&format!("{}@{digest}.sig", self.spec.name), &fence)
            .await
            .ok_or(PipelineError::LeaseLost)?;
        let (signature, added) = signer
            .sign(
                &self.pipeline.registry,
                &self.spec.name,
                &image,
                digest,
                &optional,
            )
            .await
            .map_err(|source| PipelineError::Sign {
                image: image.clone(),
                source,
            })?;
        if added {
            self.pipeline.metrics.signed("signature");
        }
        Ok((signature, added))
    }

    /// Names the engine gave an image when it pushed it through the relay
    /// are not registry digests of anything.
    fn without_relay_names(&self, digests: Vec<String>) -> Vec<String> {
        let Some(relay) = &self.pipeline.settings.relay else {
            return digests;
        };
        let prefix = format!("{}/", relay.addr());
        digests
            .into_iter()
            .filter(|digest| !digest.starts_with(&prefix))
            .collect()
    }

    /// The Dockerfile's base images, by digest as the engine holds them.
    async fn base_images(&self, engine: &Engine) -> Vec<BaseImage> {
        let dockerfile = self
            .tree
            .read_file(self.spec.dockerfile.as_str())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let references = base_images::from_images(
            &dockerfile,
            &self.spec.build_args,
            self.spec.target.as_deref(),
        );
        let mut bases = Vec::with_capacity(references.len());
        for reference in references {
            let found = engine
                .image_digests(&reference)
                .await
                .ok()
                .map(|(id, digests)| (id, self.without_relay_names(digests)));
            bases.push(BaseImage {
                repo_digest: found
                    .as_ref()
                    .and_then(|(_, digests)| repo_digest(&reference, digests)),
                image_id: found.map(|(id, _)| id),
                reference,
            });
        }
        bases
    }
}

/// The digest the image was pulled by: the one of its own repository, else
/// any (`NAME@sha256:…`); a reference by digest is its own.
fn repo_digest(reference: &str, repo_digests: &[String]) -> Option<String> {
    if let Some((_, digest)) = reference.split_once('@') {
        return Some(digest.to_string());
    }
    let repository = match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => reference,
    };
    let entries: Vec<(&str, &str)> = repo_digests
        .iter()
        .filter_map(|entry| entry.split_once('@'))
        .collect();
    entries
        .iter()
        .find(|(repo, _)| *repo == repository)
        .or(entries.first())
        .map(|(_, digest)| digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::repo_digest;

    #[test]
    fn repo_digest_prefers_the_images_own_repository() {
        let digests = vec![
            "mirror.example/busybox@sha256:aa".to_string(),
            "busybox@sha256:bb".to_string(),
        ];
        assert_eq!(
            repo_digest("busybox:1.36", &digests).as_deref(),
            Some("sha256:bb")
        );
        assert_eq!(
            repo_digest("other:1", &digests).as_deref(),
            Some("sha256:aa")
        );
        assert_eq!(
            repo_digest("x@sha256:cc", &[]).as_deref(),
            Some("sha256:cc")
        );
        assert_eq!(repo_digest("localhost:5000/x", &[]), None);
    }
}
