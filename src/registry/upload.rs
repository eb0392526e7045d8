//! Pushing an image: the blobs the registry lacks (each layer compressed
//! once, streamed as it is compressed, mounted where another repository has
//! it), then the manifest by digest, then its tag.

use std::path::{Path, PathBuf};

use futures::{FutureExt, StreamExt, TryStreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::Reference;
use tokio_util::io::ReaderStream;

use super::compress::{self, Written};
use super::export::{self, ExportedImage, RawLayer, MANIFEST_MEDIA_TYPE};
use super::layers::KnownLayer;
use super::published::Untagged;
use super::{relay, Registry, RegistryError, OCI_MANIFEST_MEDIA_TYPE};
use crate::retry::{with_backoff, Backoff};
use crate::types::{ImageName, Version};

/// Layers compressed and uploaded at once, as the engine's own push does
/// (`max-concurrent-uploads`, 5); each holds one 256 KiB read buffer.
const PARALLEL_LAYER_PUSHES: usize = 5;

/// Compressed gzip members queued for a streamed upload: a few MiB each, so
/// a layer in flight holds this many at most, beside the compressors' own.
const MEMBERS_AHEAD: usize = 2;

/// Feeds compressed members into a streamed upload.
struct UploadFeed(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl std::io::Write for UploadFeed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A streamed upload either failed, or met a registry that takes no
/// chunked uploads (then the layer goes up from a file instead).
#[derive(Debug)]
enum StreamError {
    Refused(String),
    Failed(RegistryError),
}

impl From<RegistryError> for StreamError {
    fn from(err: RegistryError) -> Self {
        StreamError::Failed(err)
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Refused(reason) => write!(f, "chunked upload refused: {reason}"),
            StreamError::Failed(err) => err.fmt(f),
        }
    }
}

impl StreamError {
    fn is_transient(&self) -> bool {
        matches!(self, StreamError::Failed(err) if err.is_transient())
    }
}

#[derive(Debug, Clone, Default)]
pub struct PushStats {
    pub blobs_pushed: usize,
    pub blobs_present: usize,
    pub bytes_pushed: u64,
}

impl Registry {
    /// Pushes the blobs the registry lacks, then the manifest under its tag;
    /// returns the manifest digest the registry reports.
    pub async fn push(
        &self,
        name: &ImageName,
        version: &Version,
        image: &ExportedImage,
        stats: &mut PushStats,
    ) -> Result<String, RegistryError> {
        let untagged = self.push_untagged(name, version, image, stats).await?;
        self.tag(name, version, &untagged).await
    }

    /// Pushes the blobs the registry lacks, then the manifest by its digest:
    /// no tag names it yet, so what goes with it (signatures) can be pushed
    /// before [`Registry::tag`] makes it visible.
    pub async fn push_untagged(
        &self,
        name: &ImageName,
        version: &Version,
        image: &ExportedImage,
        stats: &mut PushStats,
    ) -> Result<Untagged, RegistryError> {
        let reference = self.reference(name, version);
        let what = format!("pushing {}", self.image_ref(name, version));
        self.retrying(&what, || self.authenticate(&reference))
            .await?;
        let pushes: Vec<_> = image
            .layers
            .iter()
            .map(|raw| self.push_layer(&reference, raw, &what).boxed())
            .collect();
        let outcomes: Vec<(Written, bool)> = futures::stream::iter(pushes)
            .buffered(PARALLEL_LAYER_PUSHES)
            .try_collect()
            .await?;
        let mut pushed_layers = Vec::with_capacity(outcomes.len());
        for (blob, pushed) in outcomes {
            stats.record(pushed, blob.size);
            pushed_layers.push(blob);
        }
        let config = image.config.clone();
        let config_digest = image.config_digest();
        let pushed = self
            .retrying(&what, || {
                self.push_small_blob(&reference, config.clone(), &config_digest)
            })
            .await?;
        stats.record(pushed, config.len() as u64);
        let manifest = image.manifest(&pushed_layers);
        self.push_by_digest(name, &what, manifest, MANIFEST_MEDIA_TYPE)
            .await
    }

    /// Pushes `manifest` under its digest only: no tag names it yet.
    pub(super) async fn push_by_digest(
        &self,
        name: &ImageName,
        what: &str,
        manifest: Vec<u8>,
        media_type: &'static str,
    ) -> Result<Untagged, RegistryError> {
        let digest = export::sha256_digest(&manifest);
        let by_digest = self.by_digest(name, &digest);
        self.retrying(what, || {
            self.push_manifest(&by_digest, manifest.clone(), media_type)
        })
        .await?;
        Ok(Untagged {
            manifest,
            media_type,
            digest,
        })
    }

    /// Finishes a push the engine made through the loopback relay: its
    /// layers are in the registry already; the config goes up with
    /// `labels`, then the manifest naming it, by digest.
    pub async fn push_relayed(
        &self,
        name: &ImageName,
        version: &Version,
        relayed: &relay::RelayedManifest,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Untagged, RegistryError> {
        let bad = |reason: String| {
            export::ExportError::BadManifest(format!("engine's manifest: {reason}"))
        };
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&relayed.bytes).map_err(|e| bad(e.to_string()))?;
        let media_type = match manifest["mediaType"].as_str() {
            Some(MANIFEST_MEDIA_TYPE) => MANIFEST_MEDIA_TYPE,
            Some(OCI_MANIFEST_MEDIA_TYPE) => OCI_MANIFEST_MEDIA_TYPE,
            other => {
                return Err(bad(format!("media type {other:?} is not an image manifest")).into())
            }
        };
        let Some(config_digest) = manifest["config"]["digest"].as_str().map(str::to_string) else {
            return Err(bad("no config digest".into()).into());
        };
        let config = self.blob(name, &config_digest).await?;
        let config = export::with_labels(&config, labels)?;
        self.put_blob(name, &config).await?;
        manifest["config"]["digest"] = export::sha256_digest(&config).into();
        manifest["config"]["size"] = config.len().into();
        let manifest = manifest.to_string().into_bytes();
        let reference = self.reference(name, version);
        let what = format!("pushing {}", self.image_ref(name, version));
        self.retrying(&what, || self.authenticate(&reference))
            .await?;
        self.push_by_digest(name, &what, manifest, media_type).await
    }

    /// Puts the tag on a manifest pushed by [`Registry::push_untagged`].
    pub async fn tag(
        &self,
        name: &ImageName,
        version: &Version,
        untagged: &Untagged,
    ) -> Result<String, RegistryError> {
        self.put_manifest(name, version, &untagged.manifest, untagged.media_type)
            .await
    }

    /// Uploads a small blob to `NAME`'s repository unless it is there.
    pub async fn put_blob(&self, name: &ImageName, bytes: &[u8]) -> Result<(), RegistryError> {
        let digest = export::sha256_digest(bytes);
        let reference = self.by_digest(name, &digest);
        self.retrying(&format!("pushing blob {digest}"), || async {
            self.authenticate(&reference).await?;
            self.push_small_blob(&reference, bytes.to_vec(), &digest)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Pushes `manifest` under `NAME:TAG`; returns its digest.
    pub async fn put_manifest(
        &self,
        name: &ImageName,
        tag: &Version,
        manifest: &[u8],
        media_type: &'static str,
    ) -> Result<String, RegistryError> {
        let reference = self.reference(name, tag);
        let what = format!("pushing {}", self.image_ref(name, tag));
        self.retrying(&what, || async {
            self.authenticate(&reference).await?;
            self.push_manifest(&reference, manifest.to_vec(), media_type)
                .await
        })
        .await
    }

    /// Pushes one layer unless the registry has it; returns the pushed form
    /// (gzip) and whether it was uploaded. A layer pushed before is
    /// recognised by its content digest, without compressing it again, and
    /// mounted from the repository it went to rather than uploaded again.
    async fn push_layer(
        &self,
        reference: &Reference,
        raw: &RawLayer,
        what: &str,
    ) -> Result<(Written, bool), RegistryError> {
        let known = self
            .layers
            .get(&raw.digest)
            .or_else(|| self.layers.by_blob(&raw.digest));
        if let Some(known) = known {
            let present = self
                .retrying(what, || self.blob_exists(reference, &known.digest))
                .await?;
            if present || self.mounted(reference, &known).await {
                return Ok((known.blob(), false));
            }
        }
        let (blob, uploaded) = match self.stream_if_raw(reference, raw, what).await? {
            Some(blob) => (blob, true),
            None => {
                let (path, blob) = self.compressed(raw).await?;
                let uploaded = self
                    .retrying(what, || self.upload_if_missing(reference, &path, &blob))
                    .await?;
                (blob, uploaded)
            }
        };
        self.remember_layer(&raw.digest, &blob, reference.repository());
        Ok((blob, uploaded))
    }

    /// A layer the engine exported uncompressed goes up as it is compressed,
    /// as a chunked upload: compression and upload overlap, and nothing more
    /// is written to disk. `None` for a layer that is gzip already, or a
    /// registry that refuses chunked uploads: those go up from a file.
    async fn stream_if_raw(
        &self,
        reference: &Reference,
        raw: &RawLayer,
        what: &str,
    ) -> Result<Option<Written>, RegistryError> {
        let path = raw.path.clone();
        let gzip = tokio::task::spawn_blocking(move || compress::is_gzip(&path))
            .await
            .map_err(|e| self.failed(format!("reading a layer crashed: {e}")))?
            .map_err(|e| self.failed(format!("reading a layer: {e}")))?;
        if gzip {
            return Ok(None);
        }
        let streamed = with_backoff(
            Backoff::REGISTRY,
            what,
            || self.stream_compressed(reference, raw),
            StreamError::is_transient,
        )
        .await;
        match streamed {
            Ok(blob) => Ok(Some(blob)),
            Err(StreamError::Refused(reason)) => {
                tracing::info!(%reason, "registry refused a chunked upload; uploading from a file");
                Ok(None)
            }
            Err(StreamError::Failed(err)) => Err(err),
        }
    }

    async fn stream_compressed(
        &self,
        reference: &Reference,
        raw: &RawLayer,
    ) -> Result<Written, StreamError> {
        let (feed, rx) = tokio::sync::mpsc::channel(MEMBERS_AHEAD);
        let path = raw.path.clone();
        let compressing = tokio::task::spawn_blocking(move || {
            let written = compress::gzip_into(&path, UploadFeed(feed.clone()));
            if let Err(err) = &written {
                // Fails the upload before it is committed with a short blob.
                let _ = feed.blocking_send(Err(std::io::Error::new(err.kind(), err.to_string())));
            }
            written
        });
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(rx).map_err(OciDistributionError::IoError);
        let uploaded = self
            .client
            .push_blob_stream_chunked(reference, stream)
            .await;
        let written = compressing
            .await
            .map_err(|e| self.failed(format!("compression crashed: {e}")))?;
        let uploaded = uploaded.map_err(|err| match err {
            OciDistributionError::SpecViolationError(reason) => StreamError::Refused(reason),
            OciDistributionError::ServerError {
                code: 405 | 416, ..
            } => StreamError::Refused(err.to_string()),
            err => StreamError::Failed(self.classify(err, reference.repository())),
        })?;
        let written = written.map_err(|e| self.failed(format!("compressing a layer: {e}")))?;
        if uploaded.blob_digest != written.digest {
            return Err(self
                .failed(format!(
                    "the registry took {} for a layer compressed to {}",
                    uploaded.blob_digest, written.digest
                ))
                .into());
        }
        Ok(written)
    }

    /// Asks the registry to link a blob it holds in another repository. Any
    /// failure just means an upload instead.
    async fn mounted(&self, reference: &Reference, known: &KnownLayer) -> bool {
        if known.repository == reference.repository() {
            return false;
        }
        let source =
            Reference::with_tag(self.host.clone(), known.repository.clone(), "latest".into());
        let mounted = self
            .client
            .mount_blob(reference, &source, &known.digest)
            .await;
        mounted.is_ok() && matches!(self.blob_exists(reference, &known.digest).await, Ok(true))
    }

    pub(super) fn remember_layer(&self, content_digest: &str, blob: &Written, repository: &str) {
        let known = KnownLayer {
            digest: blob.digest.clone(),
            size: blob.size,
            repository: repository.to_string(),
        };
        self.layers
            .insert_all([(content_digest.to_string(), known)]);
    }

    /// The layer in the form it is pushed in: as it is when the engine
    /// exported it gzipped already, else gzipped on every core.
    async fn compressed(&self, raw: &RawLayer) -> Result<(PathBuf, Written), RegistryError> {
        let raw = raw.clone();
        let io_err = |e: std::io::Error| self.failed(format!("compressing a layer: {e}"));
        tokio::task::spawn_blocking(move || {
            if compress::is_gzip(&raw.path)? {
                let written = Written {
                    digest: raw.digest.clone(),
                    size: raw.size,
                };
                return Ok((raw.path.clone(), written));
            }
            let dest = raw.path.with_extension("tar.gz");
            let written = compress::gzip_file(&raw.path, &dest)?;
            // The raw copy is no longer needed; free the space early.
            let _ = std::fs::remove_file(&raw.path);
            Ok((dest, written))
        })
        .await
        .map_err(|e| self.failed(format!("compression crashed: {e}")))?
        .map_err(io_err)
    }

    async fn upload_if_missing(
        &self,
        reference: &Reference,
        path: &Path,
        blob: &Written,
    ) -> Result<bool, RegistryError> {
        if self.blob_exists(reference, &blob.digest).await? {
            return Ok(false);
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| self.failed(format!("reading layer {}: {e}", blob.digest)))?;
        let stream =
            ReaderStream::with_capacity(file, 256 << 10).map_err(OciDistributionError::IoError);
        self.client
            .push_blob_stream(reference, stream, &blob.digest, Some(blob.size))
            .await
            .map_err(|e| self.classify(e, reference.repository()))?;
        Ok(true)
    }

    pub(super) async fn push_small_blob(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        if self.blob_exists(reference, digest).await? {
            return Ok(false);
        }
        self.client
            .push_blob(reference, bytes, digest)
            .await
            .map_err(|e| self.classify(e, reference.repository()))?;
        Ok(true)
    }

    pub(super) async fn blob_exists(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        self.client
            .blob_exists(reference, digest)
            .await
            .map_err(|e| self.classify(e, reference.repository()))
    }

    pub(super) async fn push_manifest(
        &self,
        reference: &Reference,
        manifest: Vec<u8>,
        media_type: &'static str,
    ) -> Result<String, RegistryError> {
        let expected = export::sha256_digest(&manifest);
        let content_type = reqwest::header::HeaderValue::from_static(media_type);
        self.client
            .push_manifest_raw(reference, manifest, content_type)
            .await
            .map_err(|e| self.classify(e, reference.repository()))?;
        let reported = self
            .client
            .fetch_manifest_digest(reference, &self.auth)
            .await
            .map_err(|e| self.classify(e, reference.repository()))?;
        if reported != expected {
            return Err(RegistryError::DigestMismatch {
                registry: self.host.clone(),
                expected,
                reported,
            });
        }
        Ok(reported)
    }
}

impl PushStats {
    fn record(&mut self, pushed: bool, size: u64) {
        if pushed {
            self.blobs_pushed += 1;
            self.bytes_pushed += size;
        } else {
            self.blobs_present += 1;
        }
    }
}
