//! Putting a signature or an attestation beside an image in the registry:
//! read what is at its tag, add the new layer after the ones there, push the
//! blobs, then the manifest.

use crate::registry::{Registry, RegistryError};
use crate::types::ImageName;

use super::cosign::{self, Attachments, Kind, Layer, OCI_MANIFEST_MEDIA_TYPE};

/// What is at an image's `.sig` or `.att` tag.
pub struct Existing {
    pub attachments: Attachments,
    /// The digest of the manifest there, if there is one.
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("`{0}` is not a sha256 digest")]
    BadDigest(String),
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

pub async fn existing(
    registry: &Registry,
    name: &ImageName,
    kind: Kind,
    image_digest: &str,
) -> Result<Existing, AttachError> {
    let tag = kind
        .tag(image_digest)
        .ok_or_else(|| AttachError::BadDigest(image_digest.to_string()))?;
    Ok(match registry.manifest(name, &tag).await? {
        Some((manifest, digest)) => Existing {
            attachments: Attachments::parse(&manifest),
            digest: Some(digest),
        },
        None => Existing {
            attachments: Attachments::default(),
            digest: None,
        },
    })
}

/// The image references the simple-signing layers of a `.sig` sign for
/// `image_digest`. Layers that are not ours to read are left out.
pub async fn signed_references(
    registry: &Registry,
    name: &ImageName,
    existing: &Attachments,
    image_digest: &str,
) -> Result<Vec<String>, AttachError> {
    let mut references = Vec::new();
    for layer in existing
        .layers
        .iter()
        .filter(|l| l.media_type == cosign::SIMPLE_SIGNING_MEDIA_TYPE)
    {
        let payload = registry.blob(name, &layer.digest).await?;
        if let Some((reference, digest)) = cosign::signed_reference(&payload) {
            if digest == image_digest {
                references.push(reference);
            }
        }
    }
    Ok(references)
}

/// Adds `layer` to what is at the image's `kind` tag; returns the digest of
/// the manifest now there.
pub async fn add(
    registry: &Registry,
    name: &ImageName,
    kind: Kind,
    image_digest: &str,
    existing: Existing,
    layer: Layer,
) -> Result<String, AttachError> {
    let tag = kind
        .tag(image_digest)
        .ok_or_else(|| AttachError::BadDigest(image_digest.to_string()))?;
    if let (true, Some(digest)) = (
        existing.attachments.holds(&layer.descriptor.digest),
        &existing.digest,
    ) {
        return Ok(digest.clone());
    }
    let mut attachments = existing.attachments;
    attachments.layers.push(layer.descriptor);
    let config = attachments.config();
    futures::try_join!(
        registry.put_blob(name, &layer.blob),
        registry.put_blob(name, &config)
    )?;
    let manifest = attachments.manifest(&config);
    Ok(registry
        .put_manifest(name, &tag, &manifest, OCI_MANIFEST_MEDIA_TYPE)
        .await?)
}
