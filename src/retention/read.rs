//! Reads one repository as [`super::plan`] needs it: every tag's digest,
//! and for each manifest a tag names, its platform manifests and the labels
//! of its config. Manifests are immutable, so each digest is read once.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::plan::{Listing, Manifest};
use super::RetentionError;
use crate::registry::{Registry, INPUTS_LABEL, VERSION_LABEL};
use crate::types::{ImageName, Version};

const CREATED_LABEL: &str = "org.opencontainers.image.created";

/// Registry reads in flight at once for one repository.
const PARALLEL_READS: usize = 8;

/// A tag, and the manifest it names with that manifest's digest (none
/// when the tag went away since the list was read).
type Resolved = (String, Option<(Vec<u8>, String)>);

/// A manifest described, with an index's platform manifests.
type Described = (String, Manifest, Vec<(String, Manifest)>);

/// The repository `name` as the registry holds it now.
pub async fn read_listing(
    registry: &Registry,
    name: &ImageName,
) -> Result<Listing, RetentionError> {
    let tags = registry.tags(name).await?;
    let resolved: Vec<Resolved> = futures::stream::iter(tags)
        .map(|tag| async move {
            let parsed = Version::parse(&tag).map_err(|_| RetentionError::BadTag {
                repository: registry.repository(name),
                tag: tag.clone(),
            })?;
            let found = registry.manifest(name, &parsed).await?;
            Ok::<_, RetentionError>((tag, found))
        })
        .buffer_unordered(PARALLEL_READS)
        .try_collect()
        .await?;
    let mut listing = Listing::default();
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (tag, found) in resolved {
        // A tag deleted since the list was read names nothing.
        if let Some((bytes, digest)) = found {
            if !is_attachment_tag(&tag) {
                bodies.entry(digest.clone()).or_insert(bytes);
            }
            listing.tags.insert(tag, digest);
        }
    }
    let described: Vec<Described> = futures::stream::iter(bodies)
        .map(|(digest, bytes)| async move {
            let (manifest, children) = describe(registry, name, &bytes).await?;
            Ok::<_, RetentionError>((digest, manifest, children))
        })
        .buffer_unordered(PARALLEL_READS)
        .try_collect()
        .await?;
    for (digest, manifest, children) in described {
        listing.manifests.insert(digest, manifest);
        listing.manifests.extend(children);
    }
    note_gone_subjects(registry, name, &mut listing).await?;
    Ok(listing)
}

fn is_attachment_tag(tag: &str) -> bool {
    tag.starts_with("sha256-") && (tag.ends_with(".sig") || tag.ends_with(".att"))
}

/// The subjects of `.sig`/`.att` tags that are no longer in the registry.
/// An image pushed by digest whose tag is not up yet (a publish under way)
/// is there, so its signature is not taken for an orphan.
async fn note_gone_subjects(
    registry: &Registry,
    name: &ImageName,
    listing: &mut Listing,
) -> Result<(), RetentionError> {
    let subjects: Vec<String> = listing
        .tags
        .keys()
        .filter(|tag| is_attachment_tag(tag))
        .filter_map(|tag| {
            let hex = tag.strip_prefix("sha256-")?.split('.').next()?;
            Some(format!("sha256:{hex}"))
        })
        .filter(|subject| !listing.manifests.contains_key(subject))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for subject in subjects {
        if registry.manifest_by_digest(name, &subject).await?.is_none() {
            listing.gone.insert(subject);
        }
    }
    Ok(())
}

/// What retention needs of a manifest: for an image, its config's labels;
/// for an index, its platform manifests, and the labels of the first (every
/// platform of one version carries the same ones).
async fn describe(
    registry: &Registry,
    name: &ImageName,
    bytes: &[u8],
) -> Result<(Manifest, Vec<(String, Manifest)>), RetentionError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let children: Vec<String> = value["manifests"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| m["digest"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let Some(first) = children.first() else {
        let manifest = image_labels(registry, name, &value).await?;
        return Ok((manifest, Vec::new()));
    };
    let mut described = Vec::with_capacity(children.len());
    let mut labels = Manifest::default();
    if let Some(child) = registry.manifest_by_digest(name, first).await? {
        let child: serde_json::Value = serde_json::from_slice(&child).unwrap_or_default();
        labels = image_labels(registry, name, &child).await?;
    }
    for child in &children {
        described.push((child.clone(), Manifest::default()));
    }
    let index = Manifest { children, ..labels };
    Ok((index, described))
}

async fn image_labels(
    registry: &Registry,
    name: &ImageName,
    manifest: &serde_json::Value,
) -> Result<Manifest, RetentionError> {
    let Some(config) = manifest["config"]["digest"].as_str() else {
        return Ok(Manifest::default());
    };
    let config = registry.blob(name, config).await?;
    Ok(from_config(&config))
}

/// The labels of an image config; publish time from Slipway's `created`
/// label, else the config's own `created`.
fn from_config(config: &[u8]) -> Manifest {
    let config: serde_json::Value = serde_json::from_slice(config).unwrap_or_default();
    let labels = &config["config"]["Labels"];
    let time = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|raw| OffsetDateTime::parse(raw, &Rfc3339).ok())
    };
    Manifest {
        children: Vec::new(),
        version: labels[VERSION_LABEL].as_str().map(str::to_string),
        slipway: labels[INPUTS_LABEL].is_string(),
        created: time(&labels[CREATED_LABEL]).or_else(|| time(&config["created"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_publish_time_come_from_the_config() {
        let config = br#"{"created":"2020-01-01T00:00:00Z","config":{"Labels":{
            "org.opencontainers.image.version":"1.4.0",
            "io.slipway.inputs":"sha256:abc",
            "org.opencontainers.image.created":"2026-12-07T10:00:00Z"}}}"#;
        let m = from_config(config);
        assert_eq!(m.version.as_deref(), Some("1.4.0"));
        assert!(m.slipway);
        assert_eq!(m.created.map(|t| t.unix_timestamp()), Some(1_796_637_600));
        let foreign = from_config(br#"{"created":"2020-01-01T00:00:00Z","config":{}}"#);
        assert!(!foreign.slipway);
        assert_eq!(foreign.created.map(|t| t.year()), Some(2020));
        assert_eq!(from_config(b"not json"), Manifest::default());
    }
}
