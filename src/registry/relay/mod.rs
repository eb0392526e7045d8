//! A registry on loopback for the engine to push through. The engine treats
//! `127.0.0.0/8` as a plain-HTTP registry with no configuration, remembers
//! which compressed blob each of its layers became, and asks before it
//! uploads: so a publish costs what changed, not the image's size, where
//! `docker save` would write out every layer first. Blobs go on to the real
//! registry as they arrive (with its CA and credentials, which the engine
//! never sees); the manifest stops here, so Slipway can add its labels and
//! sign before anything is tagged. BuildKit also reads the registry cache
//! through it (see `pull`).

mod pull;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, BodyStream, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

mod upstream;

use super::{PushStats, Registry, RegistryError};
use upstream::{Failure, UploadStart, Upstream};

/// The engine sends manifests of a few KiB; anything far larger is not one.
const MANIFEST_MAX: usize = 4 << 20;
/// The user name the engine presents; the password is this process's secret.
const RELAY_USER: &str = "slipway-relay";

/// A reply's body: a few bytes, or a blob streamed from the registry.
type ReplyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
type Reply = Response<ReplyBody>;

fn full_body(bytes: Bytes) -> ReplyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the engine pushed under a session's tag: its manifest, untouched.
#[derive(Debug, Clone)]
pub struct RelayedManifest {
    pub bytes: Vec<u8>,
    pub stats: PushStats,
}

impl RelayedManifest {
    /// The digest the engine now believes its image has at the relay.
    pub fn engine_digest(&self) -> String {
        super::export::sha256_digest(&self.bytes)
    }
}

/// `--relay-listen` and `--relay-advertise`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayAddresses {
    /// Where to listen; `None` is loopback.
    pub listen: Option<SocketAddr>,
    /// Where the engine reaches the relay; `None` is where it listens.
    pub advertise: Option<SocketAddr>,
}

impl RelayAddresses {
    /// The address the engine pushes to, given the one listened on: every
    /// address (0.0.0.0) is reached on loopback.
    pub fn advertised(&self, listen: SocketAddr) -> SocketAddr {
        match self.advertise {
            Some(addr) => addr,
            None if listen.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, listen.port()))
            }
            None => listen,
        }
    }
}

/// The loopback registry. Only pushes that Slipway started get through: each
/// request must carry this process's random password, which the engine gets
/// from Slipway with each push and nobody else knows.
pub struct Relay {
    /// Where it listens.
    listen: SocketAddr,
    /// Where the engine reaches it: the same, unless Slipway runs in a
    /// container and the port is published on the engine's loopback.
    addr: SocketAddr,
    password: String,
    upstream: Upstream,
    /// Where blobs already are: base layers learnt from the registry.
    registry: Registry,
    sessions: Mutex<HashMap<String, Session>>,
    /// Relay upload id → the registry's upload location and bytes so far.
    uploads: Mutex<HashMap<String, (String, u64)>>,
    /// Set when a push showed the relay cannot serve: the engine could not
    /// reach it, or the registry wants credentials the relay cannot give.
    unusable: std::sync::atomic::AtomicBool,
    /// Blob bytes BuildKit read as cache, by repository.
    pulled: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

struct Session {
    repository: String,
    done: Option<oneshot::Sender<Vec<u8>>>,
    stats: Arc<SessionStats>,
}

/// Blobs by digest: the engine asks again after each upload, and a blob it
/// uploaded was not "already there".
#[derive(Default)]
struct SessionStats {
    uploaded: Mutex<HashMap<String, u64>>,
    present: Mutex<HashSet<String>>,
}

impl SessionStats {
    fn found(&self, digest: &str) {
        if let Ok(mut present) = self.present.lock() {
            present.insert(digest.to_string());
        }
    }

    fn uploaded(&self, digest: &str, bytes: u64) {
        if let Ok(mut uploaded) = self.uploaded.lock() {
            uploaded.insert(digest.to_string(), bytes);
        }
    }

    fn totals(&self) -> PushStats {
        let uploaded = self.uploaded.lock().map(|u| u.clone()).unwrap_or_default();
        let present = self.present.lock().map(|p| p.clone()).unwrap_or_default();
        PushStats {
            blobs_pushed: uploaded.len(),
            blobs_present: present
                .iter()
                .filter(|d| !uploaded.contains_key(*d))
                .count(),
            bytes_pushed: uploaded.values().sum(),
        }
    }
}

/// A push the engine is about to make through the relay; dropping it ends
/// the session.
pub struct RelaySession {
    relay: Arc<Relay>,
    repository: String,
    token: String,
    manifest: oneshot::Receiver<Vec<u8>>,
    stats: Arc<SessionStats>,
}

impl RelaySession {
    /// `127.0.0.1:PORT/REPOSITORY` (the advertised address), the name the engine pushes to.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.relay.addr, self.repository)
    }

    /// The tag the engine pushes: a one-time token naming this session.
    pub fn tag(&self) -> &str {
        &self.token
    }

    /// The credentials the engine must present, as `(user, password)`.
    pub fn credentials(&self) -> (&str, &str) {
        (RELAY_USER, &self.relay.password)
    }

    /// The manifest the engine pushed, once its push has ended.
    pub fn manifest(mut self) -> Option<RelayedManifest> {
        let bytes = self.manifest.try_recv().ok()?;
        let stats = self.stats.totals();
        Some(RelayedManifest { bytes, stats })
    }
}

impl Drop for RelaySession {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.relay.sessions.lock() {
            sessions.remove(&self.token);
        }
    }
}

impl Relay {
    /// Listens and serves until the process ends. Without an address to
    /// listen on (or with port 0) it takes loopback (or that address) on the
    /// port kept in `port_file`, where it is free: the engine remembers which
    /// blobs it pushed per registry address, so a new port would cost one
    /// full push.
    pub async fn start(
        registry: Registry,
        addresses: RelayAddresses,
        port_file: &Path,
    ) -> Result<Arc<Self>, RegistryError> {
        let listener = listen(addresses.listen, port_file).await?;
        let listen = listener
            .local_addr()
            .map_err(|e| relay_failed(e.to_string()))?;
        if let Err(err) = std::fs::write(port_file, listen.port().to_string()) {
            tracing::warn!(%err, file = %port_file.display(), "could not keep the relay's port for the next start");
        }
        if !listen.ip().is_loopback() {
            tracing::info!(%listen, "the relay listens beyond loopback: only its password keeps others out, so publish its port on the engine's loopback only");
        }
        let relay = Arc::new(Self {
            listen,
            addr: addresses.advertised(listen),
            password: random_password(),
            upstream: Upstream::new(registry.http.clone()),
            registry,
            sessions: Mutex::default(),
            uploads: Mutex::default(),
            unusable: std::sync::atomic::AtomicBool::new(false),
            pulled: Mutex::default(),
        });
        tokio::spawn(serve(listener, relay.clone()));
        Ok(relay)
    }

    /// Where the engine pushes to: the first part of every name it gives
    /// the images it pushes here.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the relay listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Whether pushes should still try the relay.
    pub fn usable(&self) -> bool {
        !self.unusable.load(Ordering::Relaxed)
    }

    /// Every push exports from now on.
    pub fn give_up(&self) {
        self.unusable.store(true, Ordering::Relaxed);
    }

    /// Opens a session for one push of the engine into `repository` (the
    /// registry's repository path).
    pub fn session(self: &Arc<Self>, repository: &str) -> RelaySession {
        let token = format!("slipway-{}", uuid::Uuid::new_v4().simple());
        let (done, manifest) = oneshot::channel();
        let stats = Arc::new(SessionStats::default());
        let session = Session {
            repository: repository.to_string(),
            done: Some(done),
            stats: stats.clone(),
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(token.clone(), session);
        }
        RelaySession {
            relay: self.clone(),
            repository: repository.to_string(),
            token,
            manifest,
            stats,
        }
    }

    /// The counters of the session pushing into `repository`, if one is.
    fn stats_for(&self, repository: &str) -> Option<Arc<SessionStats>> {
        let sessions = self.sessions.lock().ok()?;
        sessions
            .values()
            .find(|s| s.repository == repository)
            .map(|s| s.stats.clone())
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let expected = format!("{RELAY_USER}:{}", self.password);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(expected)
        );
        let given = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        subtle::ConstantTimeEq::ct_eq(given, expected.as_bytes()).into()
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Reply {
        if !self.authorized(&request) {
            return challenge();
        }
        let path = request.uri().path().to_string();
        let Some(route) = Route::parse(request.method(), &path) else {
            return error(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "not served by the relay",
            );
        };
        let outcome = match route {
            Route::Base => Ok(empty(StatusCode::OK)),
            Route::BlobHead { repository, digest } => self.blob_head(&repository, &digest).await,
            Route::UploadStart { repository } => self.upload_start(&repository, &request).await,
            Route::UploadPatch { repository, id } => {
                self.upload_patch(&repository, &id, request).await
            }
            Route::UploadPut { repository, id } => self.upload_put(&repository, &id, request).await,
            Route::ManifestPut { repository, tag } => {
                self.manifest_put(&repository, &tag, request).await
            }
            Route::Read(read) => self.read(&read, &request).await,
        };
        outcome.unwrap_or_else(|failure| {
            let message = match failure {
                Failure::CredentialsRefused(message) => {
                    self.give_up();
                    message
                }
                Failure::Other(message) => message,
            };
            tracing::warn!(%message, "loopback relay could not pass a request on");
            error(StatusCode::BAD_GATEWAY, "UNKNOWN", &message)
        })
    }

    /// A blob the repository lacks but another one holds (a base pushed by
    /// the docker CLI, say) is mounted, so the engine skips it too.
    async fn blob_head(&self, repository: &str, digest: &str) -> Result<Reply, Failure> {
        let size = match self.upstream.blob_size(repository, digest).await? {
            Some(size) => Some(size),
            None => self.mount_known(repository, digest).await?,
        };
        match size {
            Some(size) => {
                if let Some(stats) = self.stats_for(repository) {
                    stats.found(digest);
                }
                Ok(blob_found(size, digest))
            }
            None => Ok(empty(StatusCode::NOT_FOUND)),
        }
    }

    async fn mount_known(&self, repository: &str, digest: &str) -> Result<Option<u64>, Failure> {
        let Some(from) = self
            .registry
            .repository_holding(digest)
            .filter(|holder| holder != repository)
        else {
            return Ok(None);
        };
        let query = format!("mount={digest}&from={from}");
        match self.upstream.start_upload(repository, &query).await? {
            UploadStart::Mounted(_) => self.upstream.blob_size(repository, digest).await,
            UploadStart::Location(_) => Ok(None),
        }
    }

    /// A plain start, or a cross-repository mount the registry may grant.
    async fn upload_start(
        &self,
        repository: &str,
        request: &Request<Incoming>,
    ) -> Result<Reply, Failure> {
        let query = request.uri().query().unwrap_or_default();
        let started = self.upstream.start_upload(repository, query).await?;
        match started {
            UploadStart::Mounted(digest) => {
                if let Some(stats) = self.stats_for(repository) {
                    stats.found(&digest);
                }
                Ok(blob_created(repository, &digest))
            }
            UploadStart::Location(location) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                self.remember_upload(&id, location, 0);
                Ok(upload_accepted(repository, &id, 0))
            }
        }
    }

    async fn upload_patch(
        &self,
        repository: &str,
        id: &str,
        request: Request<Incoming>,
    ) -> Result<Reply, Failure> {
        let (location, before) = self.upload(id)?;
        let counted = Arc::new(AtomicU64::new(0));
        let body = counting_body(request.into_body(), counted.clone());
        let location = self.upstream.patch(repository, &location, body).await?;
        let received = before + counted.load(Ordering::Relaxed);
        self.remember_upload(id, location, received);
        Ok(upload_accepted(repository, id, received))
    }

    async fn upload_put(
        &self,
        repository: &str,
        id: &str,
        request: Request<Incoming>,
    ) -> Result<Reply, Failure> {
        let (location, before) = self.upload(id)?;
        let Some(digest) = query_value(request.uri().query(), "digest") else {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "digest missing",
            ));
        };
        let counted = Arc::new(AtomicU64::new(0));
        let body = counting_body(request.into_body(), counted.clone());
        self.upstream
            .commit(repository, &location, &digest, body)
            .await?;
        if let Ok(mut uploads) = self.uploads.lock() {
            uploads.remove(id);
        }
        let size = before + counted.load(Ordering::Relaxed);
        self.registry.remember_blob(repository, &digest, size);
        if let Some(stats) = self.stats_for(repository) {
            stats.uploaded(&digest, size);
        }
        Ok(blob_created(repository, &digest))
    }

    /// The engine's manifest ends its push: it is handed to the session that
    /// named the tag, and goes no further on its own.
    async fn manifest_put(
        &self,
        repository: &str,
        tag: &str,
        request: Request<Incoming>,
    ) -> Result<Reply, Failure> {
        let body = read_limited(request.into_body(), MANIFEST_MAX).await?;
        let digest = super::export::sha256_digest(&body);
        let sender = self.sessions.lock().ok().and_then(|mut sessions| {
            let session = sessions.get_mut(tag)?;
            (session.repository == repository)
                .then(|| session.done.take())
                .flatten()
        });
        let Some(sender) = sender else {
            return Ok(error(
                StatusCode::FORBIDDEN,
                "DENIED",
                "the relay takes only manifests of pushes Slipway started",
            ));
        };
        let _ = sender.send(body);
        let location = format!("/v2/{repository}/manifests/{digest}");
        Ok(with_headers(
            StatusCode::CREATED,
            &[("docker-content-digest", digest), ("location", location)],
        ))
    }

    fn remember_upload(&self, id: &str, location: String, received: u64) {
        if let Ok(mut uploads) = self.uploads.lock() {
            uploads.insert(id.to_string(), (location, received));
        }
    }

    fn upload(&self, id: &str) -> Result<(String, u64), String> {
        self.uploads
            .lock()
            .ok()
            .and_then(|u| u.get(id).cloned())
            .ok_or_else(|| format!("unknown upload {id}"))
    }
}

async fn listen(
    addr: Option<SocketAddr>,
    port_file: &Path,
) -> Result<tokio::net::TcpListener, RegistryError> {
    let addr = addr.unwrap_or_else(|| SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)));
    if addr.port() != 0 {
        return tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| relay_failed(format!("could not listen on {addr}: {e}")));
    }
    let kept = std::fs::read_to_string(port_file)
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok());
    if let Some(port) = kept {
        if let Ok(listener) = tokio::net::TcpListener::bind((addr.ip(), port)).await {
            return Ok(listener);
        }
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| relay_failed(format!("could not listen on {}: {e}", addr.ip())))
}

async fn serve(listener: tokio::net::TcpListener, relay: Arc<Relay>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let relay = relay.clone();
                async move { Ok::<_, Infallible>(relay.handle(request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The distribution API paths the engine's push uses, and a pull's reads
/// (of the build cache).
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    BlobHead { repository: String, digest: String },
    UploadStart { repository: String },
    UploadPatch { repository: String, id: String },
    UploadPut { repository: String, id: String },
    ManifestPut { repository: String, tag: String },
    Read(pull::Read),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v2/")?;
        if rest.is_empty() {
            return (method == Method::GET).then_some(Route::Base);
        }
        if let Some(repository) = rest.strip_suffix("/blobs/uploads/") {
            return (method == Method::POST).then(|| Route::UploadStart {
                repository: repository.to_string(),
            });
        }
        if let Some((repository, id)) = rest.rsplit_once("/blobs/uploads/") {
            let (repository, id) = (repository.to_string(), id.to_string());
            return match *method {
                Method::PATCH => Some(Route::UploadPatch { repository, id }),
                Method::PUT => Some(Route::UploadPut { repository, id }),
                _ => None,
            };
        }
        if let Some((repository, digest)) = rest.rsplit_once("/blobs/") {
            return match *method {
                Method::HEAD => Some(Route::BlobHead {
                    repository: repository.to_string(),
                    digest: digest.to_string(),
                }),
                _ => pull::Read::blob(method, repository, digest).map(Route::Read),
            };
        }
        let (repository, tag) = rest.rsplit_once("/manifests/")?;
        match *method {
            Method::PUT => Some(Route::ManifestPut {
                repository: repository.to_string(),
                tag: tag.to_string(),
            }),
            _ => pull::Read::manifest(method, repository, tag).map(Route::Read),
        }
    }
}

/// The engine's request body, streamed on, counting its bytes.
fn counting_body(body: Incoming, counted: Arc<AtomicU64>) -> reqwest::Body {
    let stream = BodyStream::new(body)
        .try_filter_map(|frame| futures::future::ready(Ok(frame.into_data().ok())))
        .map(move |chunk| {
            if let Ok(bytes) = &chunk {
                counted.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
    reqwest::Body::wrap_stream(stream)
}

async fn read_limited(body: Incoming, limit: usize) -> Result<Vec<u8>, String> {
    let limited = http_body_util::Limited::new(body, limit);
    let collected = limited
        .collect()
        .await
        .map_err(|e| format!("reading the manifest: {e}"))?;
    Ok(collected.to_bytes().to_vec())
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

fn random_password() -> String {
    let mut bytes = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}

fn relay_failed(reason: String) -> RegistryError {
    RegistryError::Failed {
        registry: "loopback relay".into(),
        reason,
    }
}

fn empty(status: StatusCode) -> Reply {
    with_headers(status, &[])
}

/// A reply with no body, the distribution API's version header, and `headers`.
fn with_headers(status: StatusCode, headers: &[(&'static str, String)]) -> Reply {
    let mut reply = Response::new(full_body(Bytes::new()));
    *reply.status_mut() = status;
    let version = (
        "docker-distribution-api-version",
        "registry/2.0".to_string(),
    );
    for (name, value) in std::iter::once(&version).chain(headers) {
        if let Ok(value) = hyper::header::HeaderValue::from_str(value) {
            reply.headers_mut().insert(*name, value);
        }
    }
    reply
}

fn challenge() -> Reply {
    let realm = "Basic realm=\"slipway-relay\"".to_string();
    with_headers(StatusCode::UNAUTHORIZED, &[("www-authenticate", realm)])
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut reply = with_headers(status, &[("content-type", "application/json".into())]);
    *reply.body_mut() = full_body(Bytes::from(body.to_string()));
    reply
}

fn blob_found(size: u64, digest: &str) -> Reply {
    with_headers(
        StatusCode::OK,
        &[
            ("content-length", size.to_string()),
            ("docker-content-digest", digest.to_string()),
            ("content-type", "application/octet-stream".into()),
        ],
    )
}

fn blob_created(repository: &str, digest: &str) -> Reply {
    with_headers(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{repository}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
        ],
    )
}

fn upload_accepted(repository: &str, id: &str, received: u64) -> Reply {
    with_headers(
        StatusCode::ACCEPTED,
        &[
            ("location", format!("/v2/{repository}/blobs/uploads/{id}")),
            ("docker-upload-uuid", id.to_string()),
            ("range", format!("0-{}", received.saturating_sub(1))),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_reaches_a_relay_on_every_address_through_loopback() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("addr");
        let default = RelayAddresses::default();
        assert_eq!(
            default.advertised(addr("127.0.0.1:4000")),
            addr("127.0.0.1:4000")
        );
        assert_eq!(
            default.advertised(addr("0.0.0.0:5444")),
            addr("127.0.0.1:5444")
        );
        assert_eq!(
            default.advertised(addr("[::]:5444")),
            addr("127.0.0.1:5444")
        );
        let published = RelayAddresses {
            listen: Some(addr("0.0.0.0:5444")),
            advertise: Some(addr("127.0.0.1:15444")),
        };
        assert_eq!(
            published.advertised(addr("0.0.0.0:5444")),
            addr("127.0.0.1:15444")
        );
    }

    #[tokio::test]
    async fn a_relay_listens_where_it_is_told_and_keeps_a_chosen_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("relay-port");
        let taken = listen(None, &port_file).await.expect("loopback");
        let first = taken.local_addr().expect("addr");
        assert!(first.ip().is_loopback());
        drop(taken);
        std::fs::write(&port_file, first.port().to_string()).expect("keep");
        let again = listen(None, &port_file).await.expect("loopback");
        assert_eq!(again.local_addr().expect("addr"), first, "the kept port");
        let busy = listen(Some(first), &port_file)
            .await
            .expect_err("the port is taken");
        assert!(busy.to_string().contains(&first.to_string()), "{busy}");
        drop(again);
        let every = listen(
            Some(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))),
            &port_file,
        )
        .await
        .expect("every address");
        assert!(every.local_addr().expect("addr").ip().is_unspecified());
    }

    #[test]
    fn the_engine_push_paths_are_recognised() {
        let (repo, id) = (|| "team/api".to_string(), || "u1".to_string());
        let cases = [
            (Method::GET, "/v2/", Some(Route::Base)),
            (
                Method::HEAD,
                "/v2/team/api/blobs/sha256:ab",
                Some(Route::BlobHead {
                    repository: repo(),
                    digest: "sha256:ab".into(),
                }),
            ),
            (
                Method::POST,
                "/v2/team/api/blobs/uploads/",
                Some(Route::UploadStart { repository: repo() }),
            ),
            (
                Method::PATCH,
                "/v2/team/api/blobs/uploads/u1",
                Some(Route::UploadPatch {
                    repository: repo(),
                    id: id(),
                }),
            ),
            (
                Method::PUT,
                "/v2/team/api/blobs/uploads/u1",
                Some(Route::UploadPut {
                    repository: repo(),
                    id: id(),
                }),
            ),
            (
                Method::PUT,
                "/v2/team/api/manifests/slipway-x",
                Some(Route::ManifestPut {
                    repository: repo(),
                    tag: "slipway-x".into(),
                }),
            ),
            (
                Method::GET,
                "/v2/api/manifests/x",
                Some(Route::Read(
                    pull::Read::manifest(&Method::GET, "api", "x").expect("read"),
                )),
            ),
            (Method::POST, "/v2/api/manifests/x", None),
            (Method::DELETE, "/v2/api/blobs/sha256:ab", None),
            (Method::GET, "/other", None),
        ];
        for (method, path, expected) in cases {
            assert_eq!(Route::parse(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn a_blob_uploaded_in_the_session_is_not_counted_as_already_there() {
        let stats = SessionStats::default();
        stats.found("sha256:base");
        stats.uploaded("sha256:new", 1000);
        // The engine asks after each upload too.
        stats.found("sha256:new");
        stats.found("sha256:base");
        let totals = stats.totals();
        assert_eq!(totals.blobs_pushed, 1);
        assert_eq!(totals.bytes_pushed, 1000);
        assert_eq!(totals.blobs_present, 1);
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_value(Some("mount=sha256%3Aab&from=x"), "mount").as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(query_value(None, "digest"), None);
    }
}
