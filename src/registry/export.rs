//! Reading an image exported by the engine (docker-save format): the config
//! as bytes, each layer spilled to a temp file as it is, with the digest of
//! its content (its diff id). Compression comes later, and only for layers
//! the registry lacks. Handles the classic layout of Engine 20.10
//! (`<id>/layer.tar`) and the OCI layout of Engine 25+ (`blobs/sha256/<hex>`,
//! with compat symlinks).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::HashingWriter;
use sha2::{Digest, Sha256};

/// Entries at most this large are kept in memory (configs, manifests, tiny
/// layers); larger ones are layers and go straight to disk.
const IN_MEMORY_MAX: u64 = 1 << 20;

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("exported image has no manifest.json")]
    NoManifest,
    #[error("exported image's manifest.json is unreadable: {0}")]
    BadManifest(String),
    #[error("exported image lacks `{0}`, which its manifest.json names")]
    Missing(String),
    #[error("could not read the exported image: {0}")]
    Io(#[from] io::Error),
}

/// A layer as the engine exported it, on disk.
#[derive(Debug, Clone)]
pub struct RawLayer {
    pub path: PathBuf,
    /// `sha256:` of the content as it is (the uncompressed tar: its diff id).
    pub digest: String,
    pub size: u64,
}

#[derive(Debug)]
pub struct ExportedImage {
    pub config: Vec<u8>,
    pub layers: Vec<RawLayer>,
    dir: tempfile::TempDir,
}

impl ExportedImage {
    /// Adds labels to the image config (see [`with_labels`]).
    pub fn add_labels(&mut self, labels: &BTreeMap<String, String>) -> Result<(), ExportError> {
        self.config = with_labels(&self.config, labels)?;
        Ok(())
    }

    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    /// Temporary space that lives as long as the image.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Docker schema 2 manifest for this image, given the pushed layers.
    pub fn manifest(&self, pushed: &[super::compress::Written]) -> Vec<u8> {
        let layers: Vec<_> = pushed
            .iter()
            .map(|l| serde_json::json!({"mediaType": LAYER_MEDIA_TYPE, "size": l.size, "digest": l.digest}))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": self.config.len(), "digest": self.config_digest()},
            "layers": layers,
        });
        manifest.to_string().into_bytes()
    }
}

/// The image config with `labels` added. Done at push time rather than in
/// the build because the engine's classic builder turns each label into a
/// step (a container commit), and a label that changes every build
/// (`created`) would defeat its cache for every step after it.
pub fn with_labels(
    config: &[u8],
    labels: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ExportError> {
    let bad = |e: serde_json::Error| ExportError::BadManifest(format!("image config: {e}"));
    let mut config: serde_json::Value = serde_json::from_slice(config).map_err(bad)?;
    let Some(inner) = config.get_mut("config").and_then(|c| c.as_object_mut()) else {
        return Err(ExportError::BadManifest(
            "image config has no `config` object".into(),
        ));
    };
    let existing = inner
        .entry("Labels")
        .or_insert_with(|| serde_json::json!({}));
    if !existing.is_object() {
        *existing = serde_json::json!({});
    }
    if let Some(map) = existing.as_object_mut() {
        for (key, value) in labels {
            map.insert(key.clone(), serde_json::Value::String(value.clone()));
        }
    }
    serde_json::to_vec(&config).map_err(bad)
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Deserialize)]
struct SaveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Default)]
struct Contents {
    small: HashMap<String, Vec<u8>>,
    spilled: HashMap<String, RawLayer>,
    links: HashMap<String, String>,
}

/// Reads a docker-save tar from `reader`, spilling layers into `work_dir`.
pub fn read_docker_save(reader: impl Read, work_dir: &Path) -> Result<ExportedImage, ExportError> {
    let dir = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(work_dir)?;
    let mut contents = Contents::default();
    let mut archive = tar::Archive::new(reader);
    for (index, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned());
                if let Some(target) = target {
                    contents.links.insert(path.clone(), resolve(&path, &target));
                }
            }
            tar::EntryType::Regular if entry.size() <= IN_MEMORY_MAX => {
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes)?;
                contents.small.insert(path, bytes);
            }
            tar::EntryType::Regular => {
                let layer = spill(&mut entry, &dir.path().join(format!("layer-{index}.tar")))?;
                contents.spilled.insert(path, layer);
            }
            _ => {}
        }
    }
    assemble(contents, dir)
}

fn assemble(mut contents: Contents, dir: tempfile::TempDir) -> Result<ExportedImage, ExportError> {
    let manifest = contents
        .small
        .get("manifest.json")
        .ok_or(ExportError::NoManifest)?;
    let mut manifests: Vec<SaveManifest> =
        serde_json::from_slice(manifest).map_err(|e| ExportError::BadManifest(e.to_string()))?;
    if manifests.is_empty() {
        return Err(ExportError::BadManifest("it lists no image".into()));
    }
    let save = manifests.swap_remove(0);
    let config_path = contents.follow(&clean(&save.config));
    let config = contents
        .small
        .get(&config_path)
        .cloned()
        .ok_or(ExportError::Missing(save.config))?;
    let mut layers = Vec::with_capacity(save.layers.len());
    for (index, layer) in save.layers.iter().enumerate() {
        let path = contents.follow(&clean(layer));
        let raw = match (contents.spilled.get(&path), contents.small.remove(&path)) {
            (Some(raw), _) => raw.clone(),
            (None, Some(bytes)) => {
                let dest = dir.path().join(format!("small-{index}.tar"));
                let raw = spill(&mut bytes.as_slice(), &dest)?;
                contents.spilled.insert(path, raw.clone());
                raw
            }
            (None, None) => return Err(ExportError::Missing(layer.clone())),
        };
        layers.push(raw);
    }
    Ok(ExportedImage {
        config,
        layers,
        dir,
    })
}

impl Contents {
    fn follow(&self, path: &str) -> String {
        let mut current = path.to_string();
        // Bounded: a link cycle in a hostile tar must not hang the push.
        for _ in 0..8 {
            match self.links.get(&current) {
                Some(next) => current = next.clone(),
                None => break,
            }
        }
        current
    }
}

fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn resolve(link: &str, target: &str) -> String {
    let parent = link.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    clean(&format!("{parent}/{target}"))
}

/// Copies an entry into `dest`, hashing it on the way.
fn spill(reader: &mut impl Read, dest: &Path) -> io::Result<RawLayer> {
    let mut out = HashingWriter::new(BufWriter::with_capacity(256 << 10, File::create(dest)?));
    io::copy(&mut BufReader::with_capacity(256 << 10, reader), &mut out)?;
    let written = out.finish()?;
    Ok(RawLayer {
        path: dest.to_path_buf(),
        digest: written.digest(),
        size: written.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, path, *data)
                .expect("append");
        }
        for (path, target) in links {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, path, target)
                .expect("link");
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn classic_layout_is_read() {
        let layer = vec![7u8; 2 << 20];
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":null,"Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        let tar = tar_of(
            &[
                ("l1/layer.tar", &layer),
                ("l2/layer.tar", b"small"),
                ("abc.json", b"{}"),
                ("manifest.json", manifest),
            ],
            &[],
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let image = read_docker_save(tar.as_slice(), dir.path()).expect("reads");
        assert_eq!(image.config, b"{}");
        assert_eq!(image.layers.len(), 2);
        let raw = std::fs::read(&image.layers[0].path).expect("layer");
        assert_eq!(raw, layer);
        assert_eq!(image.layers[0].digest, sha256_digest(&layer));
        assert_eq!(image.layers[1].size, 5);
        let pushed = vec![
            super::super::compress::Written {
                digest: "sha256:a".into(),
                size: 1,
            },
            super::super::compress::Written {
                digest: "sha256:b".into(),
                size: 2,
            },
        ];
        let manifest: serde_json::Value =
            serde_json::from_slice(&image.manifest(&pushed)).expect("json");
        assert_eq!(manifest["layers"][1]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(manifest["layers"][1]["digest"], "sha256:b");
    }

    #[test]
    fn oci_layout_with_compat_links_is_read() {
        let manifest = br#"[{"Config":"blobs/sha256/cfg","Layers":["blobs/sha256/aaa"]}]"#;
        let tar = tar_of(
            &[
                ("blobs/sha256/aaa", b"layer-bytes"),
                ("blobs/sha256/cfg", b"{\"a\":1}"),
                ("manifest.json", manifest),
            ],
            &[("xyz/layer.tar", "../blobs/sha256/aaa")],
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let image = read_docker_save(tar.as_slice(), dir.path()).expect("reads");
        assert_eq!(image.config, b"{\"a\":1}");
        assert_eq!(image.layers.len(), 1);
    }

    #[test]
    fn labels_are_added_to_the_config() {
        let manifest = br#"[{"Config":"c.json","Layers":[]}]"#;
        let config = br#"{"config":{"Labels":{"keep":"me"},"Cmd":["sh"]},"rootfs":{}}"#;
        let tar = tar_of(&[("c.json", config), ("manifest.json", manifest)], &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut image = read_docker_save(tar.as_slice(), dir.path()).expect("reads");
        let before = image.config_digest();
        let labels = BTreeMap::from([(
            "org.opencontainers.image.title".to_string(),
            "api".to_string(),
        )]);
        image.add_labels(&labels).expect("labels");
        let config: serde_json::Value = serde_json::from_slice(&image.config).expect("json");
        assert_eq!(config["config"]["Labels"]["keep"], "me");
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.title"],
            "api"
        );
        assert_eq!(config["config"]["Cmd"][0], "sh");
        assert_ne!(image.config_digest(), before);
    }

    #[test]
    fn missing_parts_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let no_manifest = tar_of(&[("x", b"y")], &[]);
        assert!(matches!(
            read_docker_save(no_manifest.as_slice(), dir.path()),
            Err(ExportError::NoManifest)
        ));
        let manifest = br#"[{"Config":"c.json","Layers":["gone/layer.tar"]}]"#;
        let missing = tar_of(&[("c.json", b"{}"), ("manifest.json", manifest)], &[]);
        assert!(matches!(
            read_docker_save(missing.as_slice(), dir.path()),
            Err(ExportError::Missing(_))
        ));
    }
}
