//! The team's registry, spoken to directly over the distribution API. The
//! Docker Engine needs no registry configuration; the private CA is trusted
//! here. One file per job:
//! - `published`: what the registry holds (tags, manifests, labels);
//! - `upload`: pushing an image's blobs and manifest, streamed; `index`: a
//!   multi-platform image index;
//! - `auth` and `http`: credentials, one token-aware path for every raw
//!   request (the relay's and deletes); `error`: what failures mean;
//! - `relay`: the loopback registry the engine pushes through.
//!
//! An adapter: imports only leaf types and retry, never the engine, the
//! store or the pipeline; publish policy (immutability, tags) is the
//! pipeline's.

mod auth;
mod bases;
pub mod compress;
mod error;
pub mod export;
mod http;
pub mod index;
mod layers;
mod published;
pub mod relay;
pub mod retention;
mod upload;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::retry::{with_backoff, Backoff};
use crate::secret::Secret;
use crate::types::{ImageName, Version};
use compress::Written;
use export::MANIFEST_MEDIA_TYPE;
use layers::LayerMap;

pub use error::RegistryError;
pub use http::Deleted;
pub use published::{Published, Untagged};
pub use upload::PushStats;

/// The label carrying the digest of a service's build inputs.
pub const INPUTS_LABEL: &str = "io.slipway.inputs";

/// The label carrying the version an image was published as.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

const ACCEPTED_MANIFESTS: &[&str] = &[
    MANIFEST_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

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
    /// Raw requests (the relay's, deletes), with the same credentials.
    http: Arc<http::RegistryHttp>,
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
            config.extra_root_certificates.push(auth::read_ca(path)?);
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
            http: Arc::new(http::RegistryHttp::new(settings)?),
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

    pub(super) fn reference(&self, name: &ImageName, version: &Version) -> Reference {
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

    pub(super) fn by_digest(&self, name: &ImageName, digest: &str) -> Reference {
        let repository = ImageName::within(self.namespace.as_ref(), name);
        Reference::with_digest(self.host.clone(), repository.to_string(), digest.into())
    }

    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        with_backoff(Backoff::REGISTRY, what, op, RegistryError::is_transient).await
    }
}
