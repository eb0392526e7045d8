//! The relay's read side, for `--build-cache registry`: BuildKit imports the
//! previous version (its manifest, its config with the inline cache
//! metadata, and the layers it reuses) from here, over the plain HTTP on
//! loopback every engine speaks to 127.0.0.0/8 with no configuration. That
//! is all Engine 20.10's BuildKit (0.8) speaks there: told the registry on
//! 127.0.0.1 itself, it talks plain HTTP to its TLS port and gets 400.
//! Requests go on to the registry with its CA and credentials, which the
//! engine never sees (it gets the relay's password from the build session),
//! and the answers stream back.

use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::{Failure, Relay, Reply, RELAY_USER};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The request headers a pull's answer depends on.
const ASKED: [&str; 3] = ["accept", "range", "if-none-match"];
/// The answer headers a pull reads.
const ANSWERED: [&str; 6] = [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "docker-content-digest",
    "etag",
];

/// One read of a pull, passed on to the registry as it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Read {
    head: bool,
    kind: Kind,
    repository: String,
    reference: String,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    Manifest,
    Blob,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Manifest => "manifests",
            Kind::Blob => "blobs",
        }
    }
}

impl Read {
    /// `GET` or `HEAD` of `/v2/REPOSITORY/manifests/REFERENCE`.
    pub fn manifest(method: &Method, repository: &str, reference: &str) -> Option<Self> {
        Self::new(method, Kind::Manifest, repository, reference)
    }

    /// `GET /v2/REPOSITORY/blobs/DIGEST` (a `HEAD` is the push's check).
    pub fn blob(method: &Method, repository: &str, digest: &str) -> Option<Self> {
        (*method == Method::GET)
            .then(|| Self::new(method, Kind::Blob, repository, digest))
            .flatten()
    }

    fn new(method: &Method, kind: Kind, repository: &str, reference: &str) -> Option<Self> {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        let plain = |text: &str| !text.is_empty() && !text.split('/').any(|p| p == "..");
        (plain(repository) && plain(reference) && !reference.contains('/')).then(|| Self {
            head,
            kind,
            repository: repository.to_string(),
            reference: reference.to_string(),
        })
    }
}

impl Relay {
    /// The credentials BuildKit presents to read through the relay, as
    /// `(user, password)`: the same the engine pushes with.
    pub fn credentials(&self) -> (&str, &str) {
        (RELAY_USER, &self.password)
    }

    /// Blob bytes read through the relay so far for `repository`.
    pub fn pulled_bytes(&self, repository: &str) -> u64 {
        self.pulled
            .lock()
            .map(|pulled| {
                pulled
                    .get(repository)
                    .map_or(0, |count| count.load(Ordering::Relaxed))
            })
            .unwrap_or_default()
    }

    /// Passes a read on to the registry and its answer back.
    pub(super) async fn read(
        &self,
        read: &Read,
        request: &Request<Incoming>,
    ) -> Result<Reply, Failure> {
        let path = format!(
            "{}/{}/{}",
            read.repository,
            read.kind.path(),
            read.reference
        );
        let method = if read.head { Method::HEAD } else { Method::GET };
        let headers: Vec<_> = ASKED
            .iter()
            .flat_map(|name| {
                request
                    .headers()
                    .get_all(*name)
                    .iter()
                    .map(move |v| (*name, v.clone()))
            })
            .collect();
        let response = self
            .upstream
            .read(&read.repository, method, &path, &headers)
            .await?;
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            // Not the relay's password: the engine must not take it as one.
            return Err(Failure::Other(format!(
                "reading {} for the build cache: the registry answered {status}",
                read.repository
            )));
        }
        let mut reply = Response::builder().status(status);
        for name in ANSWERED {
            if let Some(value) = response.headers().get(name) {
                reply = reply.header(name, value);
            }
        }
        let reply = reply.header("docker-distribution-api-version", "registry/2.0");
        let body = if read.head {
            super::full_body(bytes::Bytes::new())
        } else {
            self.counted(read, response)
        };
        reply
            .body(body)
            .map_err(|e| Failure::Other(format!("answering a read: {e}")))
    }

    /// The registry's answer streamed on; a blob's bytes are counted.
    fn counted(&self, read: &Read, response: reqwest::Response) -> super::ReplyBody {
        let counter = (read.kind == Kind::Blob).then(|| self.counter(&read.repository));
        let stream = response
            .bytes_stream()
            .map_err(std::io::Error::other)
            .map_ok(move |bytes| {
                if let Some(counter) = &counter {
                    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Frame::data(bytes)
            });
        StreamBody::new(stream).boxed_unsync()
    }

    fn counter(&self, repository: &str) -> Arc<AtomicU64> {
        match self.pulled.lock() {
            Ok(mut pulled) => pulled.entry(repository.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_plain_paths_only() {
        assert!(Read::manifest(&Method::HEAD, "team/api", "1.2.0").is_some());
        assert!(Read::blob(&Method::GET, "team/api", "sha256:ab").is_some());
        assert!(Read::blob(&Method::HEAD, "team/api", "sha256:ab").is_none());
        assert!(Read::manifest(&Method::DELETE, "team/api", "1.2.0").is_none());
        assert!(Read::manifest(&Method::GET, "team/../x", "1.2.0").is_none());
        assert!(Read::manifest(&Method::GET, "team/api", "").is_none());
    }
}
