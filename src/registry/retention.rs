//! The registry calls retention needs beyond publishing: a manifest read by
//! digest, and a manifest deleted by digest (which the registry does to
//! every tag on it). oci-client has no delete, so that one goes over
//! reqwest, authorized as the client's own requests are.

use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use reqwest::StatusCode;

use super::{
    is_not_found, read_ca_pem, Registry, RegistryError, RegistrySettings, ACCEPTED_MANIFESTS,
};
use crate::types::ImageName;

/// What a DELETE of a manifest came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Already gone: another instance, or an earlier run, deleted it.
    Absent,
    /// The registry does not delete (distribution's `storage.delete.enabled`
    /// is false: 405 UNSUPPORTED); the registry's own words.
    Refused(String),
}

impl Registry {
    /// The manifest `NAME@DIGEST`, or none when the registry no longer has it.
    pub async fn manifest_by_digest(
        &self,
        name: &ImageName,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let reference = self.by_digest(name, digest);
        self.retrying(&format!("reading manifest {digest}"), || async {
            self.authenticate(&reference).await?;
            match self
                .client
                .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
                .await
            {
                Ok((manifest, _)) => Ok(Some(manifest.to_vec())),
                Err(err) if is_not_found(&err) => Ok(None),
                Err(err) => Err(self.classify(err, reference.repository())),
            }
        })
        .await
    }

    /// The `Authorization` header for a write to `NAME`: the bearer token
    /// the client holds for a push, else the basic credentials.
    // TODO(lead): replace with the shared authorizer
    async fn write_authorization(&self, name: &ImageName) -> Result<Option<String>, RegistryError> {
        let reference = self.by_digest(name, "sha256:0");
        let token = self
            .client
            .auth(&reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.classify(e, reference.repository()))?;
        Ok(match (token, &self.auth) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Basic(user, password)) => {
                use base64::Engine as _;
                let pair = format!("{user}:{password}");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, _) => None,
        })
    }
}

/// Deletes manifests by digest, with the registry's TLS trust and credentials.
#[derive(Clone)]
pub struct Deleter {
    registry: Registry,
    http: reqwest::Client,
    base: String,
}

impl Deleter {
    pub fn new(registry: Registry, settings: &RegistrySettings<'_>) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(path) = settings.ca_file {
            let bad = |reason: String| RegistryError::BadCa {
                path: path.display().to_string(),
                reason,
            };
            let pem = read_ca_pem(path)?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .build()
            .map_err(|e| registry.failed(format!("HTTP client: {e}")))?;
        let scheme = if settings.plain_http { "http" } else { "https" };
        Ok(Self {
            base: format!("{scheme}://{}", registry.host),
            registry,
            http,
        })
    }

    /// `DELETE /v2/NAME/manifests/DIGEST`, retried while the registry is
    /// unreachable; a manifest already gone is no error.
    pub async fn delete(&self, name: &ImageName, digest: &str) -> Result<Deleted, RegistryError> {
        let registry = &self.registry;
        registry
            .retrying(&format!("deleting manifest {digest}"), || {
                self.try_delete(name, digest)
            })
            .await
    }

    async fn try_delete(&self, name: &ImageName, digest: &str) -> Result<Deleted, RegistryError> {
        let registry = &self.registry;
        let repository = registry.repository(name);
        let url = format!("{}/v2/{repository}/manifests/{digest}", self.base);
        let mut request = self.http.delete(&url);
        if let Some(authorization) = registry.write_authorization(name).await? {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = request
            .send()
            .await
            .map_err(|e| registry.request_error(&e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        match status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(Deleted::Deleted),
            StatusCode::NOT_FOUND => Ok(Deleted::Absent),
            StatusCode::METHOD_NOT_ALLOWED => Ok(Deleted::Refused(super::short(body.trim()))),
            StatusCode::UNAUTHORIZED => Err(RegistryError::Unauthorized {
                registry: registry.host.clone(),
                user: registry.user.clone(),
            }),
            StatusCode::FORBIDDEN => Err(RegistryError::Forbidden {
                registry: registry.host.clone(),
                repository,
            }),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(RegistryError::Unreachable {
                    registry: registry.host.clone(),
                    reason: format!("answered {s}"),
                })
            }
            s => Err(registry.failed(format!(
                "DELETE of manifest {digest} answered {s}: {}",
                super::short(body.trim())
            ))),
        }
    }
}
