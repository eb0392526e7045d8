//! cosign's layout in the registry: the simple-signing payload, and the OCI
//! manifests under `sha256-<hex>.sig` and `.att` whose layers carry the
//! signatures. Pure data; [`super::attach`] talks to the registry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::registry::export::sha256_digest;
use crate::types::Version;

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Which of an image's two attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signature,
    Attestation,
}

impl Kind {
    /// `sha256-<hex>.sig` or `.att`, the tag cosign looks the attachment up by.
    pub fn tag(self, image_digest: &str) -> Option<Version> {
        let hex = image_digest.strip_prefix("sha256:")?;
        let suffix = match self {
            Kind::Signature => "sig",
            Kind::Attestation => "att",
        };
        Version::parse(&format!("sha256-{hex}.{suffix}")).ok()
    }
}

/// The payload cosign signs for an image: what it is (the manifest digest)
/// and the reference it was published as. `optional` is free-form.
pub fn simple_signing_payload(
    reference: &str,
    digest: &str,
    optional: &serde_json::Value,
) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": optional,
    })
    .to_string()
    .into_bytes()
}

/// The reference and digest a simple-signing payload names, if it is one.
pub fn signed_reference(payload: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let critical = &value["critical"];
    Some((
        critical["identity"]["docker-reference"]
            .as_str()?
            .to_string(),
        critical["image"]["docker-manifest-digest"]
            .as_str()?
            .to_string(),
    ))
}

/// One layer of an attachment manifest, with its blob.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub descriptor: Descriptor,
}

impl Layer {
    pub fn new(media_type: &str, blob: Vec<u8>, annotations: BTreeMap<String, String>) -> Self {
        let descriptor = Descriptor {
            media_type: media_type.to_string(),
            size: blob.len() as u64,
            digest: sha256_digest(&blob),
            annotations,
        };
        Self { blob, descriptor }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The layers of a `.sig` or `.att` manifest: new layers are added after
/// the ones there, so earlier signatures stay valid and in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachments {
    pub layers: Vec<Descriptor>,
}

impl Attachments {
    /// Reads a manifest found at an attachment tag. Anything that is not an
    /// image manifest with layers (an index, garbage) yields none, and is
    /// replaced: a tag of that name holds nothing cosign could read.
    pub fn parse(manifest: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Manifest {
            #[serde(default)]
            layers: Vec<Descriptor>,
        }
        let layers = serde_json::from_slice::<Manifest>(manifest)
            .map(|m| m.layers)
            .unwrap_or_default();
        Self { layers }
    }

    pub fn holds(&self, digest: &str) -> bool {
        self.layers.iter().any(|l| l.digest == digest)
    }

    /// The config blob: as cosign writes it, one diff id per layer.
    pub fn config(&self) -> Vec<u8> {
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.digest.as_str()).collect();
        json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes()
    }

    /// The OCI image manifest for these layers and `config`.
    pub fn manifest(&self, config: &[u8]) -> Vec<u8> {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": OCI_CONFIG_MEDIA_TYPE,
                "size": config.len(),
                "digest": sha256_digest(config),
            },
            "layers": self.layers,
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_cosigns_layout_and_reads_back() {
        let payload = simple_signing_payload(
            "reg:5443/api:1.0.0",
            "sha256:ab",
            &json!({"commit": "c0ffee"}),
        );
        let text = String::from_utf8(payload.clone()).expect("utf-8");
        assert!(text.starts_with(r#"{"critical":{"identity":{"docker-reference":"reg:5443/api:1.0.0"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":{"#));
        assert_eq!(
            signed_reference(&payload),
            Some(("reg:5443/api:1.0.0".into(), "sha256:ab".into()))
        );
        assert_eq!(signed_reference(b"{}"), None);
    }

    #[test]
    fn tags_and_manifests() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            Kind::Signature.tag(&digest).map(|v| v.to_string()),
            Some(format!("sha256-{}.sig", "a".repeat(64)))
        );
        assert!(Kind::Attestation.tag("md5:x").is_none());
        let layer = Layer::new(SIMPLE_SIGNING_MEDIA_TYPE, b"{}".to_vec(), BTreeMap::new());
        let mut attachments = Attachments::parse(b"not json");
        assert!(attachments.layers.is_empty());
        attachments.layers.push(layer.descriptor.clone());
        let manifest = attachments.manifest(&attachments.config());
        assert_eq!(Attachments::parse(&manifest), attachments);
        assert!(attachments.holds(&layer.descriptor.digest));
    }
}
