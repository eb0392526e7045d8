//! The real registry, as the relay passes the engine's push on: raw HTTP, so
//! an upload streams through without its digest known beforehand, with the
//! registry's one auth path (a bearer token where the registry has a token
//! service, else the basic credentials).

use std::sync::Arc;

use reqwest::{Method, StatusCode};

use super::super::http::RegistryHttp;
use super::query_value;
use crate::registry::RegistryError;

pub(super) enum UploadStart {
    Mounted(String),
    Location(String),
}

pub(super) struct Upstream {
    http: Arc<RegistryHttp>,
}

impl Upstream {
    pub(super) fn new(http: Arc<RegistryHttp>) -> Self {
        Self { http }
    }

    pub(super) async fn blob_size(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<u64>, Failure> {
        let url = self.http.url(&format!("{repository}/blobs/{digest}"));
        let response = self
            .http
            .send(repository, |client| client.head(&url))
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Some(content_length(&response))),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(refusal("checking a blob", other)),
        }
    }

    /// A cross-repository mount needs pull rights on the other repository
    /// too, which a token service may not grant: then a plain start.
    pub(super) async fn start_upload(
        &self,
        repository: &str,
        query: &str,
    ) -> Result<UploadStart, Failure> {
        let started = self.try_start_upload(repository, query).await;
        match started {
            Err(Failure::CredentialsRefused(_)) if query.contains("mount=") => {
                self.try_start_upload(repository, "").await
            }
            started => started,
        }
    }

    async fn try_start_upload(
        &self,
        repository: &str,
        query: &str,
    ) -> Result<UploadStart, Failure> {
        let mut url = self.http.url(&format!("{repository}/blobs/uploads/"));
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let response = self
            .http
            .send(repository, |client| client.post(&url))
            .await?;
        match response.status() {
            StatusCode::CREATED => {
                let digest = query_value(Some(query), "mount").unwrap_or_default();
                Ok(UploadStart::Mounted(digest))
            }
            StatusCode::ACCEPTED => Ok(UploadStart::Location(self.location(&response)?)),
            other => Err(refusal("starting an upload", other)),
        }
    }

    /// A read (a manifest or a blob, for the build cache), with the
    /// engine's own `Accept` and range headers.
    pub(super) async fn read(
        &self,
        repository: &str,
        method: Method,
        path: &str,
        headers: &[(&'static str, reqwest::header::HeaderValue)],
    ) -> Result<reqwest::Response, Failure> {
        let url = self.http.url(path);
        let response = self
            .http
            .send(repository, |client| {
                headers.iter().fold(
                    client.request(method.clone(), &url),
                    |request, (name, value)| request.header(*name, value.clone()),
                )
            })
            .await?;
        Ok(response)
    }

    /// The upload's start fetched the token this streamed body goes with.
    pub(super) async fn patch(
        &self,
        repository: &str,
        location: &str,
        body: reqwest::Body,
    ) -> Result<String, Failure> {
        let request = self
            .http
            .request(Method::PATCH, location)
            .header("content-type", "application/octet-stream")
            .body(body);
        let response = self.http.send_once(repository, request).await?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT => Ok(self.location(&response)?),
            other => Err(refusal("uploading a blob", other)),
        }
    }

    pub(super) async fn commit(
        &self,
        repository: &str,
        location: &str,
        digest: &str,
        body: reqwest::Body,
    ) -> Result<(), Failure> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let request = self
            .http
            .request(Method::PUT, &url)
            .header("content-type", "application/octet-stream")
            .body(body);
        let response = self.http.send_once(repository, request).await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            other => Err(refusal("finishing an upload", other)),
        }
    }

    fn location(&self, response: &reqwest::Response) -> Result<String, String> {
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| self.http.absolute(l))
            .ok_or_else(|| "the registry gave no upload location".to_string())
    }
}

fn content_length(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// Why the relay could not pass a request on.
#[derive(Debug)]
pub(super) enum Failure {
    /// The registry refused the credentials (or the token they got): the
    /// relay stops, and Slipway pushes these itself.
    CredentialsRefused(String),
    Other(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Other(message)
    }
}

impl From<RegistryError> for Failure {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Unauthorized { .. } => Failure::CredentialsRefused(format!(
                "{err}; Slipway pushes these itself from now on"
            )),
            err => Failure::Other(err.to_string()),
        }
    }
}

fn refusal(what: &str, status: StatusCode) -> Failure {
    match status {
        StatusCode::UNAUTHORIZED => Failure::CredentialsRefused(format!(
            "{what}: the registry refused the relay's credentials (401); Slipway pushes these itself from now on"
        )),
        other => Failure::Other(format!("{what}: the registry answered {other}")),
    }
}
