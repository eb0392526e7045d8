//! Multi-platform images: the manifests pushed for each platform, listed in
//! an OCI image index that is pushed by digest like a manifest and tagged
//! the same way. The index carries what the lookup reads from a manifest's
//! config labels (the inputs, the version) as annotations.

use std::collections::BTreeMap;

use super::{Registry, RegistryError, Untagged, INPUTS_LABEL};
use crate::platform::Platform;
use crate::types::{ImageName, Version};

pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// One platform's entry of an index, as it is in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// `os/arch[/variant]`.
    pub platform: String,
    pub digest: String,
}

impl Registry {
    /// Pushes by digest (no tag names it yet) the index of `manifests`, each
    /// already pushed by digest, with `annotations` on the index itself.
    pub async fn push_index(
        &self,
        name: &ImageName,
        version: &Version,
        manifests: &[(Platform, Untagged)],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Untagged, RegistryError> {
        let index = index_bytes(manifests, annotations);
        let reference = self.reference(name, version);
        let what = format!("pushing the index of {}", self.image_ref(name, version));
        self.retrying(&what, || self.authenticate(&reference))
            .await?;
        self.push_by_digest(name, &what, index, OCI_INDEX_MEDIA_TYPE)
            .await
    }

    /// The platforms and manifest digests the index at `NAME:VERSION` lists;
    /// empty when it is a plain manifest or absent.
    pub async fn index_entries(
        &self,
        name: &ImageName,
        version: &Version,
    ) -> Result<Vec<IndexEntry>, RegistryError> {
        let Some((manifest, _)) = self.manifest(name, version).await? else {
            return Ok(Vec::new());
        };
        Ok(entries(&manifest))
    }
}

fn index_bytes(
    manifests: &[(Platform, Untagged)],
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(platform, untagged)| {
            serde_json::json!({
                "mediaType": untagged.media_type,
                "digest": untagged.digest,
                "size": untagged.manifest.len(),
                "platform": platform.to_oci(),
            })
        })
        .collect();
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": manifests,
        "annotations": annotations,
    })
    .to_string()
    .into_bytes()
}

fn as_index(manifest: &[u8]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    value["manifests"].is_array().then_some(value)
}

/// For an index, `Some` with its annotation `key`; `None` for anything
/// else, whose config is where such things are.
pub(super) fn index_annotation(manifest: &[u8], key: &str) -> Option<Option<String>> {
    let index = as_index(manifest)?;
    Some(index["annotations"][key].as_str().map(str::to_string))
}

/// For an index, `Some` with the inputs it was published from (none when
/// Slipway did not push it).
pub(super) fn index_inputs(manifest: &[u8]) -> Option<Option<String>> {
    index_annotation(manifest, INPUTS_LABEL)
}

fn entries(manifest: &[u8]) -> Vec<IndexEntry> {
    let Some(index) = as_index(manifest) else {
        return Vec::new();
    };
    let Some(list) = index["manifests"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| {
            let platform = &entry["platform"];
            let mut shown = format!(
                "{}/{}",
                platform["os"].as_str()?,
                platform["architecture"].as_str()?
            );
            if let Some(variant) = platform["variant"].as_str() {
                shown = format!("{shown}/{variant}");
            }
            Some(IndexEntry {
                platform: shown,
                digest: entry["digest"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// The digest an index of `manifests` would have; for tests of the shape.
#[cfg(test)]
fn digest_of(manifests: &[(Platform, Untagged)]) -> String {
    super::export::sha256_digest(&index_bytes(manifests, &BTreeMap::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untagged(byte: &str) -> Untagged {
        let manifest = format!("{{\"config\":\"{byte}\"}}").into_bytes();
        Untagged {
            digest: crate::registry::export::sha256_digest(&manifest),
            manifest,
            media_type: super::super::OCI_MANIFEST_MEDIA_TYPE,
        }
    }

    #[test]
    fn an_index_lists_each_platform_and_reads_back() {
        let amd = Platform::parse("linux/amd64").expect("valid");
        let arm = Platform::parse("linux/arm/v7").expect("valid");
        let manifests = vec![(amd, untagged("a")), (arm, untagged("b"))];
        let annotations = BTreeMap::from([(INPUTS_LABEL.to_string(), "sha256:in".to_string())]);
        let bytes = index_bytes(&manifests, &annotations);
        let index: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(index["mediaType"], OCI_INDEX_MEDIA_TYPE);
        assert_eq!(index["manifests"][1]["platform"]["variant"], "v7");
        assert_eq!(index["manifests"][0]["size"], manifests[0].1.manifest.len());
        assert_eq!(index_inputs(&bytes), Some(Some("sha256:in".to_string())));
        assert_eq!(index_inputs(&manifests[0].1.manifest), None);
        let listed = entries(&bytes);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].platform, "linux/arm/v7");
        assert_eq!(listed[0].digest, manifests[0].1.digest);
        assert_ne!(digest_of(&manifests), digest_of(&manifests[..1]));
    }
}
