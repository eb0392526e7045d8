//! Raw requests to the registry, for what oci-client cannot do: the relay's
//! streamed uploads, whose digest is known only at the end, and deletes.
//! Every one goes through [`RegistryHttp::send`], so a registry with a token
//! service (distribution's `auth: token`, Harbor, GitLab's) is answered with
//! a bearer token for the scope it asks, and one with basic auth gets the
//! basic credentials.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};

use super::auth::{read_ca_pem, Challenge, TokenReply, Tokens};
use super::{Registry, RegistryError, RegistrySettings};
use crate::secret::Secret;
use crate::types::ImageName;

pub(super) struct RegistryHttp {
    client: reqwest::Client,
    base: String,
    host: String,
    user: Option<String>,
    /// `Basic …` of the registry user, for registries that take it and for
    /// the token service.
    basic: Option<Secret>,
    tokens: Tokens,
}

/// What a manifest delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Nothing had that digest (deleted before, by someone else).
    Absent,
    /// The registry does not delete (distribution without
    /// `storage.delete.enabled`: 405 UNSUPPORTED).
    Unsupported,
}

impl RegistryHttp {
    pub(super) fn new(settings: &RegistrySettings<'_>) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120));
        if let Some(path) = settings.ca_file {
            let pem = read_ca_pem(path)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| RegistryError::BadCa {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| RegistryError::Failed {
            registry: settings.host.to_string(),
            reason: format!("HTTP client: {e}"),
        })?;
        let scheme = if settings.plain_http { "http" } else { "https" };
        let basic = settings
            .user
            .zip(settings.password)
            .map(|(user, password)| {
                let pair = format!("{user}:{}", password.expose());
                Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            });
        Ok(Self {
            client,
            base: format!("{scheme}://{}", settings.host),
            host: settings.host.to_string(),
            user: settings.user.map(str::to_string),
            basic,
            tokens: Tokens::default(),
        })
    }

    /// `https://HOST/v2/{path}`.
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// Relative `Location`s are the registry's own paths.
    pub(super) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// Sends the request `make` builds for `repository`; a 401 with a bearer
    /// challenge fetches a token for the scope it names and sends it once
    /// more (so `make` must build the same request again: a streamed body
    /// goes with [`RegistryHttp::send_once`]).
    pub(super) async fn send(
        &self,
        repository: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let response = self.send_once(repository, make(&self.client)).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                self.fetch_token(repository, &realm, service.as_deref(), scope.as_deref())
                    .await?;
                self.send_once(repository, make(&self.client)).await
            }
            _ => Ok(response),
        }
    }

    /// Sends `request` with the repository's token, else the basic
    /// credentials; no second try.
    pub(super) async fn send_once(
        &self,
        repository: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let authorization = self.tokens.get(repository).or_else(|| self.basic.clone());
        let request = match authorization {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value.expose()),
            None => request,
        };
        request.send().await.map_err(|e| self.unreachable(e))
    }

    pub(super) fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Asks the token service for the challenged scope (each space-separated
    /// scope its own parameter, as the token spec has it), with the basic
    /// credentials when there are some.
    async fn fetch_token(
        &self,
        repository: &str,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<(), RegistryError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        query.extend(service.map(|s| ("service", s)));
        query.extend(
            scope
                .into_iter()
                .flat_map(str::split_whitespace)
                .map(|s| ("scope", s)),
        );
        let mut request = self.client.get(realm).query(&query);
        if let Some(basic) = &self.basic {
            request = request.header(reqwest::header::AUTHORIZATION, basic.expose());
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.unauthorized()),
            other => return Err(self.failed(format!("its token service answered {other}"))),
        }
        let reply: TokenReply = response
            .json()
            .await
            .map_err(|e| self.failed(format!("its token service's answer: {e}")))?;
        self.tokens
            .keep(repository, reply)
            .map(|_| ())
            .ok_or_else(|| self.failed("its token service gave no token".into()))
    }

    pub(super) fn unauthorized(&self) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.host.clone(),
            user: self.user.clone(),
        }
    }

    fn failed(&self, reason: String) -> RegistryError {
        RegistryError::Failed {
            registry: self.host.clone(),
            reason,
        }
    }

    fn unreachable(&self, err: reqwest::Error) -> RegistryError {
        // Without the URL: a token service's query may name the user.
        RegistryError::Unreachable {
            registry: self.host.clone(),
            reason: err.without_url().to_string(),
        }
    }
}

impl Registry {
    /// Deletes the manifest `digest` of `NAME`'s repository, and with it
    /// every tag on it (the registry's own semantics).
    pub async fn delete_manifest(
        &self,
        name: &ImageName,
        digest: &str,
    ) -> Result<Deleted, RegistryError> {
        let repository = self.repository(name);
        let url = self.http.url(&format!("{repository}/manifests/{digest}"));
        let what = format!("deleting {repository}@{digest}");
        self.retrying(&what, || async {
            let response = self
                .http
                .send(&repository, |client| client.delete(&url))
                .await?;
            self.deleted(response.status(), &repository, &what)
        })
        .await
    }

    fn deleted(
        &self,
        status: StatusCode,
        repository: &str,
        what: &str,
    ) -> Result<Deleted, RegistryError> {
        match status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(Deleted::Deleted),
            StatusCode::NOT_FOUND => Ok(Deleted::Absent),
            StatusCode::METHOD_NOT_ALLOWED => Ok(Deleted::Unsupported),
            StatusCode::UNAUTHORIZED => Err(self.http.unauthorized()),
            StatusCode::FORBIDDEN => Err(RegistryError::Forbidden {
                registry: self.host.clone(),
                repository: repository.to_string(),
            }),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(RegistryError::Unreachable {
                    registry: self.host.clone(),
                    reason: format!("{what}: answered {s}"),
                })
            }
            other => Err(self.failed(format!("{what}: answered {other}"))),
        }
    }
}
