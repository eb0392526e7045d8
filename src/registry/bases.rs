//! Base images the registry already holds, under whatever compression put
//! them there (a `docker push` of a mirrored base, say): their manifest and
//! config pair each layer's diff id with the registry's blob, so a build on
//! top of them mounts or skips those layers instead of compressing and
//! uploading them again.

use oci_client::manifest::OciDescriptor;
use oci_client::{Reference, RegistryOperation};

use super::layers::KnownLayer;
use super::{Registry, RegistryError, ACCEPTED_MANIFESTS};

/// Layer media types whose blobs a gzip layer descriptor may name.
const GZIP_LAYERS: [&str; 2] = [
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
];

impl Registry {
    /// Reads the layers of `repository@digest`, an image this registry
    /// holds; returns how many layers it learnt.
    pub async fn learn_base(
        &self,
        repository: &str,
        manifest_digest: &str,
    ) -> Result<usize, RegistryError> {
        // A manifest by digest never changes, and what it taught is kept in
        // the layer map: read each base once per process.
        if let Some(learnt) = self.bases_learnt().get(manifest_digest) {
            return Ok(*learnt);
        }
        let reference = Reference::with_digest(
            self.host.clone(),
            repository.to_string(),
            manifest_digest.to_string(),
        );
        let classify = |e| self.classify(e, repository);
        self.client
            .auth(&reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(classify)?;
        let (manifest, _) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(classify)?;
        let Some((config, layers)) = image_parts(&manifest) else {
            return Ok(0);
        };
        let mut config_bytes = Vec::new();
        self.client
            .pull_blob(&reference, &config, &mut config_bytes)
            .await
            .map_err(classify)?;
        let learnt = pair_layers(&config_bytes, &layers, repository);
        let count = learnt.len();
        self.layers.insert_all(learnt);
        self.bases_learnt()
            .insert(manifest_digest.to_string(), count);
        Ok(count)
    }

    fn bases_learnt(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        self.bases_learnt.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The config and layers of a single-platform image manifest; `None` for an
/// index or anything else.
fn image_parts(manifest: &[u8]) -> Option<(OciDescriptor, Vec<OciDescriptor>)> {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let config = serde_json::from_value(manifest.get("config")?.clone()).ok()?;
    let layers = serde_json::from_value(manifest.get("layers")?.clone()).ok()?;
    Some((config, layers))
}

/// Each gzip layer's diff id (from the config's `rootfs.diff_ids`, in layer
/// order) with the blob that holds it.
fn pair_layers(
    config: &[u8],
    layers: &[OciDescriptor],
    repository: &str,
) -> Vec<(String, KnownLayer)> {
    let diff_ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|c| serde_json::from_value(c["rootfs"]["diff_ids"].clone()).ok())
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Vec::new();
    }
    diff_ids
        .into_iter()
        .zip(layers)
        .filter(|(_, layer)| GZIP_LAYERS.contains(&layer.media_type.as_str()))
        .filter_map(|(diff_id, layer)| {
            let size = u64::try_from(layer.size).ok()?;
            let known = KnownLayer {
                digest: layer.digest.clone(),
                size,
                repository: repository.to_string(),
            };
            Some((diff_id, known))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_layers_pair_with_their_diff_ids() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": "sha256:c"},
            "layers": [
                {"mediaType": GZIP_LAYERS[0], "size": 10, "digest": "sha256:gz1"},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "size": 5, "digest": "sha256:zst"}
            ]
        });
        let (_, layers) = image_parts(manifest.to_string().as_bytes()).expect("an image");
        let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:raw1","sha256:raw2"]}}"#;
        let paired = pair_layers(config, &layers, "mirror/base");
        assert_eq!(paired.len(), 1, "zstd blobs cannot stand for a gzip layer");
        assert_eq!(paired[0].0, "sha256:raw1");
        assert_eq!(paired[0].1.digest, "sha256:gz1");
        assert_eq!(paired[0].1.repository, "mirror/base");
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(image_parts(index).is_none());
        assert!(pair_layers(br#"{"rootfs":{"diff_ids":[]}}"#, &layers, "x").is_empty());
    }
}
