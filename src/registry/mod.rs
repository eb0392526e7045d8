//! The team's registry, spoken to directly over the distribution API: look a
//! tag up, push blobs the registry lacks, then the manifest. The Docker
//! Engine needs no registry configuration; the private CA is trusted here.
//!
//! An adapter: owns every registry call (publish policy aside); imports only
//! leaf types and retry, never the engine, the store or the pipeline.

mod bases;
pub mod compress;
pub mod export;
mod layers;
pub mod relay;
pub mod retention;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio_util::io::ReaderStream;

use crate::retry::{with_backoff, Backoff};
use crate::secret::Secret;
use crate::types::{ImageName, Version};
use compress::Written;
use export::{ExportedImage, RawLayer, MANIFEST_MEDIA_TYPE};
use layers::{KnownLayer, LayerMap};

/// The label carrying the digest of a service's build inputs.
pub const INPUTS_LABEL: &str = "io.slipway.inputs";

/// The label carrying the version an image was published as.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// Layers compressed and uploaded at once, as the engine's own push does
/// (`max-concurrent-uploads`, 5); each holds one 256 KiB read buffer.
const PARALLEL_LAYER_PUSHES: usize = 5;

const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

const ACCEPTED_MANIFESTS: &[&str] = &[
    MANIFEST_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} rejected the credentials{} (401): check --registry-user and --registry-password", user_note(.user))]
    Unauthorized {
        registry: String,
        user: Option<String>,
    },
    #[error("registry {registry} denied access to {repository} (403): the user lacks push rights")]
    Forbidden {
        registry: String,
        repository: String,
    },
    #[error("the TLS certificate of registry {registry} is not trusted ({reason}): pass the CA that signed it with --registry-ca")]
    Untrusted { registry: String, reason: String },
    #[error("registry {registry} unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} failed: {reason}")]
    Failed { registry: String, reason: String },
    #[error("registry {registry} reports manifest digest {reported}, but the pushed manifest is {expected}")]
    DigestMismatch {
        registry: String,
        expected: String,
        reported: String,
    },
    #[error("could not read the CA file {path}: {reason}")]
    BadCa { path: String, reason: String },
    #[error("{0}")]
    Export(#[from] export::ExportError),
}

fn user_note(user: &Option<String>) -> String {
    user.as_ref()
        .map(|u| format!(" of user `{u}`"))
        .unwrap_or_default()
}

impl RegistryError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Unreachable { .. } | RegistryError::Failed { .. }
        )
    }
}

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
    manifest: Vec<u8>,
    media_type: &'static str,
    pub digest: String,
}

#[derive(Debug, Clone, Default)]
pub struct PushStats {
    pub blobs_pushed: usize,
    pub blobs_present: usize,
    pub bytes_pushed: u64,
}

/// Where and how to reach the registry.
pub struct RegistrySettings<'a> {
    pub host: &'a str,
    pub ca_file: Option<&'a Path>,
    pub user: Option<&'a str>,
    pub password: Option<&'a Secret>,
    pub namespace: Option<&'a ImageName>,
    pub plain_http: bool,
}

#[derive(Clone)]
pub struct Registry {
    client: Arc<Client>,
    /// Content digest (diff id) of each layer pushed or seen in a base →
    /// its pushed (gzip) form, so an unchanged layer is never compressed twice.
    layers: Arc<LayerMap>,
    /// Base manifests already read by digest, with how many layers each taught.
    bases_learnt: Arc<Mutex<HashMap<String, usize>>>,
    /// When each repository was last authenticated.
    authenticated: Arc<Mutex<HashMap<String, Instant>>>,
    auth: RegistryAuth,
    host: String,
    user: Option<String>,
    namespace: Option<ImageName>,
}

impl Registry {
    pub fn new(settings: &RegistrySettings<'_>) -> Result<Self, RegistryError> {
        let mut config = ClientConfig {
            protocol: if settings.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        if let Some(path) = settings.ca_file {
            config.extra_root_certificates.push(read_ca(path)?);
        }
        let auth = match (settings.user, settings.password) {
            (Some(user), Some(password)) => {
                RegistryAuth::Basic(user.to_string(), password.expose().to_string())
            }
            _ => RegistryAuth::Anonymous,
        };
        Ok(Self {
            client: Arc::new(Client::new(config)),
            layers: Arc::default(),
            bases_learnt: Arc::default(),
            authenticated: Arc::default(),
            auth,
            host: settings.host.to_string(),
            user: settings.user.map(str::to_string),
            namespace: settings.namespace.cloned(),
        })
    }

    /// `host[:port]`, as image references name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Keeps the layer map in `file`, across restarts.
    pub fn keep_layers_in(mut self, file: &Path) -> Self {
        self.layers = Arc::new(LayerMap::kept_in(file));
        self
    }

    /// A repository known to hold the compressed blob `digest`, for a mount.
    pub fn repository_holding(&self, digest: &str) -> Option<String> {
        self.layers.holder(digest)
    }

    /// Notes a blob the relay passed on, so a later push (after a restart,
    /// from an engine that keeps no memory of the relay's pushes, such as
    /// the containerd image store) mounts it instead of uploading it again.
    pub fn remember_blob(&self, repository: &str, digest: &str, size: u64) {
        let blob = Written {
            digest: digest.to_string(),
            size,
        };
        self.remember_layer(digest, &blob, repository);
    }

    /// `[NAMESPACE/]NAME`: the repository's path in the registry.
    pub fn repository(&self, name: &ImageName) -> String {
        ImageName::within(self.namespace.as_ref(), name).to_string()
    }

    /// `REGISTRY[/NAMESPACE]/NAME:VERSION`.
    pub fn image_ref(&self, name: &ImageName, version: &Version) -> String {
        format!(
            "{}/{}:{}",
            self.host,
            ImageName::within(self.namespace.as_ref(), name),
            version
        )
    }

    fn reference(&self, name: &ImageName, version: &Version) -> Reference {
        let repository = ImageName::within(self.namespace.as_ref(), name);
        Reference::with_tag(
            self.host.clone(),
            repository.to_string(),
            version.to_string(),
        )
    }

    /// Checks that the registry answers `/v2/` at all (for health checks).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let probe = Reference::with_tag(self.host.clone(), "slipway-health".into(), "probe".into());
        self.client
            .auth(&probe, &self.auth, RegistryOperation::Pull)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(e, "slipway-health"))
    }

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
        self.authenticate(reference).await?;
        let pulled = self
            .client
            .pull_manifest_raw(reference, &self.auth, ACCEPTED_MANIFESTS)
            .await;
        let (manifest, digest) = match pulled {
            Ok(found) => found,
            Err(err) if is_not_found(&err) => return Ok(Published::Absent),
            Err(err) => return Err(self.classify(err, reference.repository())),
        };
        let config = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| serde_json::from_value::<OciDescriptor>(m["config"].clone()).ok());
        // An index, or anything without a config, was not pushed by Slipway.
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

    /// Each auth costs round trips; the client keeps what it learns (basic
    /// credentials for good, bearer tokens until they expire, 60 s at the
    /// least), so a repository is authenticated again only after a while.
    async fn authenticate(&self, reference: &Reference) -> Result<(), RegistryError> {
        const FRESH: Duration = Duration::from_secs(45);
        let repository = reference.repository().to_string();
        let fresh = |at: &Instant| at.elapsed() < FRESH;
        if self
            .authenticated
            .lock()
            .ok()
            .and_then(|m| m.get(&repository).copied())
            .is_some_and(|at| fresh(&at))
        {
            return Ok(());
        }
        for op in [RegistryOperation::Pull, RegistryOperation::Push] {
            self.client
                .auth(reference, &self.auth, op)
                .await
                .map_err(|e| self.classify(e, reference.repository()))?;
        }
        if let Ok(mut map) = self.authenticated.lock() {
            map.insert(repository, Instant::now());
        }
        Ok(())
    }

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
    async fn push_by_digest(
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

    fn by_digest(&self, name: &ImageName, digest: &str) -> Reference {
        let repository = ImageName::within(self.namespace.as_ref(), name);
        Reference::with_digest(self.host.clone(), repository.to_string(), digest.into())
    }

    /// The manifest at `NAME:TAG` and its digest, or none.
    pub async fn manifest(
        &self,
        name: &ImageName,
        tag: &Version,
    ) -> Result<Option<(Vec<u8>, String)>, RegistryError> {
        let reference = self.reference(name, tag);
        let what = format!("reading {}", self.image_ref(name, tag));
        self.retrying(&what, || async {
            self.authenticate(&reference).await?;
            match self
                .client
                .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
                .await
            {
                Ok((manifest, digest)) => Ok(Some((manifest.to_vec(), digest))),
                Err(err) if is_not_found(&err) => Ok(None),
                Err(err) => Err(self.classify(err, reference.repository())),
            }
        })
        .await
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

    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        with_backoff(Backoff::REGISTRY, what, op, RegistryError::is_transient).await
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

    fn remember_layer(&self, content_digest: &str, blob: &Written, repository: &str) {
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

    async fn push_small_blob(
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

    async fn blob_exists(
        &self,
        reference: &Reference,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        self.client
            .blob_exists(reference, digest)
            .await
            .map_err(|e| self.classify(e, reference.repository()))
    }

    async fn push_manifest(
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

    fn failed(&self, reason: String) -> RegistryError {
        RegistryError::Failed {
            registry: self.host.clone(),
            reason,
        }
    }

    /// Maps the client's errors to ones that say what to do.
    fn classify(&self, err: OciDistributionError, repository: &str) -> RegistryError {
        let registry = self.host.clone();
        let status = match &err {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => 401,
            OciDistributionError::ServerError { code, .. } => *code,
            OciDistributionError::RegistryError { envelope, .. } => {
                envelope_status(&envelope.errors)
            }
            OciDistributionError::RequestError(e) => return self.request_error(e),
            _ => 0,
        };
        match status {
            401 => RegistryError::Unauthorized {
                registry,
                user: self.user.clone(),
            },
            403 => RegistryError::Forbidden {
                registry,
                repository: repository.to_string(),
            },
            s if s >= 500 || s == 429 => RegistryError::Unreachable {
                registry,
                reason: format!("answered {s}"),
            },
            _ => RegistryError::Failed {
                registry,
                reason: short(&err.to_string()),
            },
        }
    }

    fn request_error(&self, err: &reqwest::Error) -> RegistryError {
        let registry = self.host.clone();
        let chain = error_chain(err);
        let tls = ["certificate", "UnknownIssuer", "x509", "InvalidCertificate"];
        if tls.iter().any(|needle| chain.contains(needle)) {
            return RegistryError::Untrusted {
                registry,
                reason: short(&chain),
            };
        }
        let reason = if err.is_timeout() {
            "timed out".to_string()
        } else if err.is_connect() {
            format!("could not connect ({})", short(&chain))
        } else {
            short(&chain)
        };
        RegistryError::Unreachable { registry, reason }
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

fn envelope_status(errors: &[oci_client::errors::OciError]) -> u16 {
    let codes: Vec<&OciErrorCode> = errors.iter().map(|e| &e.code).collect();
    if codes
        .iter()
        .any(|c| matches!(c, OciErrorCode::Unauthorized))
    {
        401
    } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
        403
    } else if codes
        .iter()
        .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
    {
        404
    } else {
        400
    }
}

fn is_not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope_status(&envelope.errors) == 404
        }
        _ => false,
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

fn read_ca(path: &Path) -> Result<oci_client::client::Certificate, RegistryError> {
    Ok(oci_client::client::Certificate {
        encoding: oci_client::client::CertificateEncoding::Pem,
        data: read_ca_pem(path)?,
    })
}

fn read_ca_pem(path: &Path) -> Result<Vec<u8>, RegistryError> {
    let bad = |reason: String| RegistryError::BadCa {
        path: path.display().to_string(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(data)
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(inner) = source {
        parts.push(format!("{inner:?}"));
        source = inner.source();
    }
    parts.join(": ")
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
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
