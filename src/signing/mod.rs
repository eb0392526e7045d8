//! Signatures and provenance for published images, in cosign's layout:
//! beside the registry push, which pushes the image by digest first so that
//! these go up before its tag does.
//!
//! Owns cosign's formats and keys; imports the registry client to attach
//! them, never the engine, the store or the pipeline.

pub mod attach;
pub mod base_images;
pub mod cosign;
pub mod keys;
pub mod provenance;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;

use crate::registry::Registry;
use crate::types::ImageName;
pub use attach::AttachError;
use cosign::{Kind, Layer};
pub use keys::{KeyError, SigningKey};
use provenance::Provenance;

/// Signs with the `--signing-key`.
#[derive(Debug, Clone)]
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        SigningKey::load(path).map(Self::new)
    }

    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// Makes sure the image's `.sig` signs `reference` (`HOST/NAME:VERSION`)
    /// for `digest`, adding a layer when it does not; returns the digest of
    /// the `.sig` manifest and whether a signature was added.
    pub async fn sign(
        &self,
        registry: &Registry,
        name: &ImageName,
        reference: &str,
        digest: &str,
        optional: &serde_json::Value,
    ) -> Result<(String, bool), AttachError> {
        let existing = attach::existing(registry, name, Kind::Signature, digest).await?;
        if let Some(sig) = &existing.digest {
            let signed =
                attach::signed_references(registry, name, &existing.attachments, digest).await?;
            if signed.iter().any(|r| r == reference) {
                return Ok((sig.clone(), false));
            }
        }
        let layer = self.signature_layer(reference, digest, optional);
        let sig = attach::add(registry, name, Kind::Signature, digest, existing, layer).await?;
        Ok((sig, true))
    }

    /// The simple-signing layer for `reference` at `digest`.
    pub fn signature_layer(
        &self,
        reference: &str,
        digest: &str,
        optional: &serde_json::Value,
    ) -> Layer {
        let payload = cosign::simple_signing_payload(reference, digest, optional);
        let signature = self.key.sign(&payload);
        let annotations = BTreeMap::from([(
            cosign::SIGNATURE_ANNOTATION.to_string(),
            base64::engine::general_purpose::STANDARD.encode(signature),
        )]);
        Layer::new(cosign::SIMPLE_SIGNING_MEDIA_TYPE, payload, annotations)
    }

    /// Adds a signed provenance attestation to the image's `.att`; returns
    /// the digest of the `.att` manifest.
    pub async fn attest(
        &self,
        registry: &Registry,
        name: &ImageName,
        provenance: &Provenance<'_>,
    ) -> Result<String, AttachError> {
        let digest = provenance.digest;
        let existing = attach::existing(registry, name, Kind::Attestation, digest).await?;
        let layer = self.attestation_layer(provenance);
        attach::add(registry, name, Kind::Attestation, digest, existing, layer).await
    }

    /// The DSSE layer cosign's `attest` writes, for `provenance`.
    pub fn attestation_layer(&self, provenance: &Provenance<'_>) -> Layer {
        let envelope = provenance::envelope(&self.key, &provenance.statement());
        // cosign writes an empty signature annotation on attestations: the
        // signature is inside the envelope.
        let annotations = BTreeMap::from([
            (cosign::SIGNATURE_ANNOTATION.to_string(), String::new()),
            (
                cosign::PREDICATE_TYPE_ANNOTATION.to_string(),
                provenance::PREDICATE_TYPE.to_string(),
            ),
        ]);
        Layer::new(cosign::DSSE_MEDIA_TYPE, envelope, annotations)
    }

    /// The digest of the image's `.att` manifest, if it has one.
    pub async fn attestation(
        &self,
        registry: &Registry,
        name: &ImageName,
        digest: &str,
    ) -> Result<Option<String>, AttachError> {
        Ok(attach::existing(registry, name, Kind::Attestation, digest)
            .await?
            .digest)
    }
}
