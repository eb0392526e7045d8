//! Which compressed blob in the registry holds each layer, by the layer's
//! content digest (its diff id). Filled by pushes and by reading the
//! manifests of base images the registry holds; kept in a file so a restart
//! does not pay one full push. A cache only: every entry is checked against
//! the registry before it is trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::compress::Written;

/// A layer's pushed form, and a repository that holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct KnownLayer {
    pub digest: String,
    pub size: u64,
    pub repository: String,
}

impl KnownLayer {
    pub fn blob(&self) -> Written {
        Written {
            digest: self.digest.clone(),
            size: self.size,
        }
    }
}

#[derive(Default)]
pub(super) struct LayerMap {
    known: Mutex<HashMap<String, KnownLayer>>,
    file: Option<PathBuf>,
}

impl LayerMap {
    /// The map kept in `file`; an unreadable file starts it empty.
    pub fn kept_in(file: &Path) -> Self {
        let known = std::fs::read(file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            known: Mutex::new(known),
            file: Some(file.to_path_buf()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, KnownLayer>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, diff_id: &str) -> Option<KnownLayer> {
        self.known().get(diff_id).cloned()
    }

    /// A repository known to hold the compressed blob `digest`.
    pub fn holder(&self, digest: &str) -> Option<String> {
        self.by_blob(digest).map(|layer| layer.repository)
    }

    /// The layer whose compressed blob is `digest`: how a layer the engine
    /// exports gzipped already (the containerd image store does) is known.
    pub fn by_blob(&self, digest: &str) -> Option<KnownLayer> {
        self.known()
            .values()
            .find(|layer| layer.digest == digest)
            .cloned()
    }

    pub fn insert_all(&self, layers: impl IntoIterator<Item = (String, KnownLayer)>) {
        let snapshot = {
            let mut known = self.known();
            let before = known.len();
            let mut changed = false;
            for (diff_id, layer) in layers {
                changed |= known.insert(diff_id, layer.clone()).as_ref() != Some(&layer);
            }
            if !changed && known.len() == before {
                return;
            }
            known.clone()
        };
        self.save(&snapshot);
    }

    /// Written aside and renamed, so a crash leaves the old map or the new one.
    fn save(&self, snapshot: &HashMap<String, KnownLayer>) {
        let Some(file) = &self.file else {
            return;
        };
        let aside = file.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let written = serde_json::to_vec(snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&aside, bytes))
            .and_then(|()| std::fs::rename(&aside, file));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&aside);
            tracing::warn!(%err, file = %file.display(), "could not keep the layer map");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("layers.json");
        let layer = KnownLayer {
            digest: "sha256:gz".into(),
            size: 7,
            repository: "base".into(),
        };
        LayerMap::kept_in(&file).insert_all([("sha256:raw".to_string(), layer.clone())]);
        assert_eq!(LayerMap::kept_in(&file).get("sha256:raw"), Some(layer));
        std::fs::write(&file, "not json").expect("write");
        assert_eq!(LayerMap::kept_in(&file).get("sha256:raw"), None);
    }
}
