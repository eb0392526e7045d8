//! What the registry holds: tags, manifests and the labels Slipway reads
//! back (the inputs digest that makes a re-merge a skip, the version).

use oci_client::manifest::OciDescriptor;
use oci_client::Reference;

use super::error::is_not_found;
use super::{
    Registry, RegistryError, ACCEPTED_MANIFESTS, INPUTS_LABEL, OCI_MANIFEST_MEDIA_TYPE,
    VERSION_LABEL,
};
use crate::retry::{with_backoff, Backoff};
use crate::types::{ImageName, Version};

/// What the registry holds at `NAME:VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Absent,
    Present {
        digest: String,
        /// The `io.slipway.inputs` label, when the image has one.
        inputs: Option<String>,
    },
}

/// An image manifest in the registry that no tag names yet.
#[derive(Debug, Clone)]
pub struct Untagged {
    pub(super) manifest: Vec<u8>,
    pub(super) media_type: &'static str,
    pub digest: String,
}

impl Registry {
    /// Looks `NAME:VERSION` up, with the inputs label of what is there.
    pub async fn lookup(
        &self,
        name: &ImageName,
        version: &Version,
    ) -> Result<Published, RegistryError> {
        let reference = self.reference(name, version);
        with_backoff(
            Backoff::REGISTRY,
            &format!("looking up {}", self.image_ref(name, version)),
            || self.try_lookup(&reference),
            RegistryError::is_transient,
        )
        .await
    }

    async fn try_lookup(&self, reference: &Reference) -> Result<Published, RegistryError> {
        let Some((manifest, digest)) = self.pull_manifest(reference).await? else {
            return Ok(Published::Absent);
        };
        if let Some(inputs) = super::index::index_inputs(&manifest) {
            return Ok(Published::Present { digest, inputs });
        }
        let config = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| serde_json::from_value::<OciDescriptor>(m["config"].clone()).ok());
        // Anything else without a config was not pushed by Slipway.
        let Some(config) = config else {
            return Ok(Published::Present {
                digest,
                inputs: None,
            });
        };
        let mut config_bytes = Vec::new();
        self.client
            .pull_blob(reference, &config, &mut config_bytes)
            .await
            .map_err(|e| self.classify(e, reference.repository()))?;
        Ok(Published::Present {
            digest,
            inputs: inputs_label(&config_bytes),
        })
    }

    /// Every tag of `NAME`'s repository (`GET /v2/<name>/tags/list`), page
    /// by page; empty when nothing was ever pushed there.
    pub async fn tags(&self, name: &ImageName) -> Result<Vec<String>, RegistryError> {
        /// The page size distribution serves at most by default.
        const PAGE: usize = 1000;
        /// A registry that ignored `last` would serve the same page for ever.
        const MAX_PAGES: usize = 1000;
        // The tag is no part of the tag list's URL.
        let reference =
            Reference::with_tag(self.host.clone(), self.repository(name), "latest".into());
        let what = format!("listing the tags of {}", self.repository(name));
        let mut tags: Vec<String> = Vec::new();
        for _ in 0..MAX_PAGES {
            let last = tags.last().cloned();
            let page = self
                .retrying(&what, || async {
                    self.authenticate(&reference).await?;
                    match self
                        .client
                        .list_tags(&reference, &self.auth, Some(PAGE), last.as_deref())
                        .await
                    {
                        Ok(page) => Ok(page.tags),
                        Err(err) if is_not_found(&err) => Ok(Vec::new()),
                        Err(err) => Err(self.classify(err, reference.repository())),
                    }
                })
                .await?;
            // An empty page, or one that does not move past `last` (a
            // registry that ignores it), ends the list; a short page is not
            // trusted to, as registries may serve fewer than `n`.
            let advanced = match (page.last(), &last) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(end), Some(last)) => end > last && !page.contains(last),
            };
            if !advanced {
                break;
            }
            tags.extend(page);
        }
        Ok(tags)
    }

    /// What `NAME:TAG` names: its digest and the version label of its
    /// config (none for an index or an image without the label); none when
    /// the tag is absent.
    pub async fn labelled_version(
        &self,
        name: &ImageName,
        tag: &Version,
    ) -> Result<Option<(String, Option<String>)>, RegistryError> {
        let Some((manifest, digest)) = self.manifest(name, tag).await? else {
            return Ok(None);
        };
        if let Some(version) = super::index::index_annotation(&manifest, VERSION_LABEL) {
            return Ok(Some((digest, version)));
        }
        let config = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| m["config"]["digest"].as_str().map(str::to_string));
        let Some(config) = config else {
            return Ok(Some((digest, None)));
        };
        let config = self.blob(name, &config).await?;
        Ok(Some((digest, label(&config, VERSION_LABEL))))
    }

    /// The manifest `NAME:TAG` names, ready to be put under other tags as
    /// it is (the same bytes, so the same digest); none when it is absent.
    pub async fn tagged(
        &self,
        name: &ImageName,
        tag: &Version,
    ) -> Result<Option<Untagged>, RegistryError> {
        let Some((manifest, digest)) = self.manifest(name, tag).await? else {
            return Ok(None);
        };
        let media_type = manifest_media_type(&manifest).ok_or_else(|| {
            self.failed(format!(
                "the manifest of {} has no media type Slipway can tag",
                self.image_ref(name, tag)
            ))
        })?;
        Ok(Some(Untagged {
            manifest,
            media_type,
            digest,
        }))
    }

    /// The manifest at `NAME:TAG` and its digest, or none.
    pub async fn manifest(
        &self,
        name: &ImageName,
        tag: &Version,
    ) -> Result<Option<(Vec<u8>, String)>, RegistryError> {
        let reference = self.reference(name, tag);
        let what = format!("reading {}", self.image_ref(name, tag));
        self.retrying(&what, || self.pull_manifest(&reference))
            .await
    }

    /// The manifest `reference` names and its digest, or none; one try.
    pub(super) async fn pull_manifest(
        &self,
        reference: &Reference,
    ) -> Result<Option<(Vec<u8>, String)>, RegistryError> {
        self.authenticate(reference).await?;
        match self
            .client
            .pull_manifest_raw(reference, &self.auth, ACCEPTED_MANIFESTS)
            .await
        {
            Ok((manifest, digest)) => Ok(Some((manifest.to_vec(), digest))),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(self.classify(err, reference.repository())),
        }
    }

    /// A small blob of `NAME`'s repository, read whole.
    pub async fn blob(&self, name: &ImageName, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let reference = self.by_digest(name, digest);
        let descriptor = OciDescriptor {
            digest: digest.to_string(),
            ..Default::default()
        };
        self.retrying(&format!("reading blob {digest}"), || async {
            let mut bytes = Vec::new();
            self.client
                .pull_blob(&reference, &descriptor, &mut bytes)
                .await
                .map_err(|e| self.classify(e, reference.repository()))?;
            Ok(bytes)
        })
        .await
    }
}

/// The media type a manifest is PUT with: its own `mediaType`, or for an
/// OCI manifest that omits it (the field is optional), what its shape says.
fn manifest_media_type(manifest: &[u8]) -> Option<&'static str> {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    match manifest["mediaType"].as_str() {
        Some(declared) => ACCEPTED_MANIFESTS.iter().copied().find(|m| *m == declared),
        None if manifest["manifests"].is_array() => Some("application/vnd.oci.image.index.v1+json"),
        None if manifest["config"].is_object() => Some(OCI_MANIFEST_MEDIA_TYPE),
        None => None,
    }
}

fn inputs_label(config: &[u8]) -> Option<String> {
    label(config, INPUTS_LABEL)
}

fn label(config: &[u8], key: &str) -> Option<String> {
    let config: serde_json::Value = serde_json::from_slice(config).ok()?;
    config["config"]["Labels"][key].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::super::MANIFEST_MEDIA_TYPE;
    use super::*;

    #[test]
    fn a_manifest_is_retagged_with_its_own_media_type() {
        let docker = format!(r#"{{"mediaType":"{MANIFEST_MEDIA_TYPE}","config":{{}}}}"#);
        assert_eq!(
            manifest_media_type(docker.as_bytes()),
            Some(MANIFEST_MEDIA_TYPE)
        );
        assert_eq!(
            manifest_media_type(br#"{"schemaVersion":2,"config":{}}"#),
            Some(OCI_MANIFEST_MEDIA_TYPE)
        );
        assert_eq!(
            manifest_media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(manifest_media_type(br#"{"mediaType":"text/plain"}"#), None);
        assert_eq!(manifest_media_type(b"nope"), None);
    }

    #[test]
    fn inputs_label_is_read_from_the_config() {
        let config = br#"{"config":{"Labels":{"io.slipway.inputs":"sha256:abc"}}}"#;
        assert_eq!(inputs_label(config).as_deref(), Some("sha256:abc"));
        assert_eq!(inputs_label(br#"{"config":{"Labels":null}}"#), None);
        assert_eq!(inputs_label(b"not json"), None);
    }
}
