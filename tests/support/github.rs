//! A stand-in for the parts of GitHub's REST API that slipway talks to.
//!
//! Two listeners run on the test's tokio runtime: the API itself and a
//! stand-in for codeload.github.com, which serves the tarballs the API
//! redirects to. They are on different ports so that a client which
//! (correctly) drops credentials on cross-host redirects is exercised the
//! same way as against the real thing.

// Each integration test binary compiles this module on its own and uses only
// part of it; unused helpers must not turn into warnings there.

mod app;
mod hooks;

pub use app::{FakeCheckRun, IssuedToken};

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use warp::http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

const API: &str = "api";
const CODELOAD: &str = "codeload";

const DOCS_ROOT: &str = "https://docs.github.com/rest";
const DOCS_CONTENTS: &str = "https://docs.github.com/rest/repos/contents#get-repository-content";
const DOCS_TARBALL: &str =
    "https://docs.github.com/rest/repos/contents#download-a-repository-archive-tar";
const DOCS_STATUSES: &str = "https://docs.github.com/rest/commits/statuses#create-a-commit-status";
const DOCS_HOOKS: &str = "https://docs.github.com/rest/repos/webhooks";
const DOCS_PULLS: &str = "https://docs.github.com/rest/pulls/pulls#list-pull-requests";
const DOCS_COMMENTS: &str = "https://docs.github.com/rest/issues/comments";
const DOCS_RATE_LIMIT: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";

/// The hourly allowance GitHub gives an authenticated caller.
const RATE_LIMIT: u64 = 5000;
/// Timestamp stamped on every tarball entry, standing in for the commit time.
const COMMIT_TIME: u64 = 1_700_000_000;
/// GitHub rejects longer commit status descriptions.
const MAX_STATUS_DESCRIPTION: usize = 140;

/// One path of a registered commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeEntry {
    File { contents: Vec<u8>, executable: bool },
    Symlink { target: String },
}

/// A request either listener received, in arrival order.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// "api" or "codeload".
    pub listener: &'static str,
    /// As sent, still percent-encoded.
    pub path_and_query: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
}

/// A commit status GitHub accepted.
#[derive(Clone, Debug)]
pub struct RecordedStatus {
    pub sha: String,
    /// The request body as sent.
    pub body: Value,
}

/// A canned fault for the next N matching requests.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and a GitHub-style JSON error body.
    Status(u16),
    /// 403 "API rate limit exceeded" with `x-ratelimit-remaining: 0`.
    RateLimited,
    /// Answer normally, but only after this long.
    #[allow(dead_code)] // only tests/process/faults.rs delays GitHub
    Delay(Duration),
    /// Answer as things stand on arrival, but send the answer this much later.
    SlowAnswer(Duration),
}

/// Handle on a running fake; clones share the same servers and state.
#[derive(Clone)]
pub struct FakeGitHub {
    shared: Arc<Shared>,
    // Dropping the last clone drops these senders, which is what tells both
    // servers to shut down (see `serve`).
    _stop: Arc<Vec<oneshot::Sender<()>>>,
}

impl FakeGitHub {
    pub async fn start() -> FakeGitHub {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// Listens on `ip` (an address of this machine that a client elsewhere,
    /// a container say, reaches it at), and names it in its URLs.
    pub async fn start_on(ip: std::net::IpAddr) -> FakeGitHub {
        let api = bind(ip).await;
        let codeload = bind(ip).await;
        let shared = Arc::new(Shared {
            api_url: base_url(&api),
            codeload_url: base_url(&codeload),
            rate_limit_reset: unix_now() + 3600,
            state: Mutex::default(),
        });
        let stop = vec![
            serve(api, API, shared.clone()),
            serve(codeload, CODELOAD, shared.clone()),
        ];
        FakeGitHub {
            shared,
            _stop: Arc::new(stop),
        }
    }

    /// e.g. "http://127.0.0.1:PORT" — what the service gets as --github-api
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// Registers the files of one commit of `owner/name`; paths are repository-relative with '/'.
    /// The most recently added commit doubles as the default branch's head.
    pub fn add_commit(&self, repository: &str, sha: &str, files: Vec<(String, FakeEntry)>) {
        let mut state = self.shared.lock();
        let repo = state.repo_mut(repository);
        repo.commits.entry(sha.to_string()).or_default().files = files.into_iter().collect();
        repo.head = Some(sha.to_string());
    }

    /// Convenience: regular non-executable files from (path, text).
    pub fn add_commit_files(&self, repository: &str, sha: &str, files: &[(&str, &str)]) {
        let files = files
            .iter()
            .map(|(path, text)| {
                let entry = FakeEntry::File {
                    contents: text.as_bytes().to_vec(),
                    executable: false,
                };
                (path.to_string(), entry)
            })
            .collect();
        self.add_commit(repository, sha, files);
    }

    /// Serve these exact bytes as the tarball of that commit (for malformed/malicious tarball tests).
    /// The commit exists from then on even if `add_commit` was never called for it.
    pub fn set_raw_tarball(&self, repository: &str, sha: &str, bytes: Vec<u8>) {
        let mut state = self.shared.lock();
        let repo = state.repo_mut(repository);
        repo.head.get_or_insert_with(|| sha.to_string());
        repo.commits.entry(sha.to_string()).or_default().raw_tarball = Some(bytes);
    }

    /// From now on every repository is private and only this token may see it.
    pub fn require_token(&self, token: &str) {
        self.shared.lock().token = Some(token.to_string());
    }

    /// The next `times` requests whose path contains `path_contains` get this fault instead of the normal answer.
    /// Matches the percent-encoded path and query, on either listener; faults match in the order injected.
    pub fn inject_fault(&self, path_contains: &str, fault: Fault, times: usize) {
        if let Fault::Status(code) = fault {
            // Fail here, in the test, rather than later inside a server task.
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "invalid HTTP status {code}"
            );
        }
        self.shared.lock().faults.push(PendingFault {
            path_contains: path_contains.to_string(),
            fault,
            remaining: times,
        });
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// A GitHub App installed on every repository: from now on repository
    /// calls need one of its live installation tokens. `public_key` is the
    /// App key's PKCS#1 `RSAPublicKey` DER; tokens live `token_ttl`.
    pub fn install_app(&self, app_id: u64, public_key: Vec<u8>, token_ttl: Duration) {
        self.shared.lock().app = Some(app::FakeApp {
            app_id,
            public_key,
            installation_id: 4242,
            token_ttl,
            tokens: vec![],
            jwts_accepted: 0,
        });
    }

    /// Installation tokens handed out so far.
    pub fn installation_tokens(&self) -> Vec<IssuedToken> {
        let state = self.shared.lock();
        state
            .app
            .as_ref()
            .map(|a| a.tokens.clone())
            .unwrap_or_default()
    }

    /// Revokes every installation token handed out so far (GitHub answers 401 to them).
    pub fn revoke_installation_tokens(&self) {
        let mut state = self.shared.lock();
        if let Some(app) = state.app.as_mut() {
            app.tokens.iter_mut().for_each(|t| t.revoked = true);
        }
    }

    pub fn check_runs(&self) -> Vec<FakeCheckRun> {
        self.shared.lock().check_runs.clone()
    }

    pub fn statuses(&self) -> Vec<RecordedStatus> {
        self.shared.lock().statuses.clone()
    }
}

/// Builds the gzip tarball GitHub would serve (pub so tests can craft variants).
///
/// Like `git archive`, which GitHub uses: a pax global header carrying the
/// commit id, then everything under `{owner}-{repo}-{sha[..7]}/` in git's tree
/// order, each directory right before its contents. Paths are written as
/// given, without validation, so tests can smuggle in `..` and the like.
pub fn github_tarball(repository: &str, sha: &str, files: &[(String, FakeEntry)]) -> Vec<u8> {
    let top = format!("{}-{}/", repository.replace('/', "-"), short_sha(sha));
    git_archive(&top, sha, files)
}

/// What `git archive --prefix=TOP` makes of `files`, gzipped: the forges
/// differ only in the top folder they name.
pub fn git_archive(top: &str, sha: &str, files: &[(String, FakeEntry)]) -> Vec<u8> {
    let top = top.to_string();
    let mut tar = tar::Builder::new(Vec::new());
    append_pax(
        &mut tar,
        tar::EntryType::XGlobalHeader,
        "pax_global_header",
        &[("comment", sha.as_bytes())],
    );
    append_item(&mut tar, &top, &TarItem::Dir);
    for (path, item) in tree_order(files) {
        append_item(&mut tar, &format!("{top}{path}"), &item);
    }
    let mut archive = tar.into_inner().expect("writing to a Vec cannot fail");
    // git pads archives to whole 10 KiB records, as tar(1) does.
    archive.resize(archive.len().div_ceil(10240) * 10240, 0);
    gzip(&archive)
}

// ===== state =====

#[derive(Default)]
struct Commit {
    files: BTreeMap<String, FakeEntry>,
    raw_tarball: Option<Vec<u8>>,
}

struct Repo {
    /// Spelled as registered; lookups ignore case, as GitHub's do.
    name: String,
    commits: HashMap<String, Commit>,
    /// What a request without a ref gets, like a default branch.
    head: Option<String>,
}

struct PendingFault {
    path_contains: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    token: Option<String>,
    faults: Vec<PendingFault>,
    requests: Vec<RecordedRequest>,
    statuses: Vec<RecordedStatus>,
    api_requests: u64,
    hooks: Vec<FakeHook>,
    deliveries: Vec<FakeDelivery>,
    pulls: Vec<FakePull>,
    comments: Vec<FakeComment>,
    /// The GitHub App, once `install_app` made one.
    app: Option<app::FakeApp>,
    check_runs: Vec<FakeCheckRun>,
    /// Deliveries an API call asked for, sent once its answer is out.
    outbox: Vec<Outbound>,
    next_id: u64,
}

/// A repository webhook, as GitHub stores it.
#[derive(Clone, Debug)]
pub struct FakeHook {
    pub id: u64,
    /// Lowercased owner/name.
    pub repository: String,
    pub active: bool,
    pub events: Vec<String>,
    pub url: String,
    pub content_type: String,
    pub secret: Option<String>,
    pub insecure_ssl: String,
    pub last_response: Value,
}

/// One attempt to deliver an event to a hook.
#[derive(Clone, Debug)]
pub struct FakeDelivery {
    pub id: u64,
    pub hook_id: u64,
    pub guid: String,
    pub event: String,
    pub action: Option<String>,
    pub redelivery: bool,
    /// 0 when the connection failed.
    pub status_code: u16,
    pub status: String,
    pub delivered_at: String,
    pub payload: Vec<u8>,
}

/// A pull request, for the pulls listing.
#[derive(Clone, Debug)]
pub struct FakePull {
    pub repository: String,
    pub number: u64,
    pub merge_commit_sha: String,
    pub base: String,
    pub merged_at: Option<String>,
    pub updated_at: String,
}

#[derive(Clone, Debug)]
pub struct FakeComment {
    pub id: u64,
    pub repository: String,
    pub issue: u64,
    pub body: String,
}

/// A delivery to send: to this hook, this event and payload, this GUID.
#[derive(Clone, Debug)]
struct Outbound {
    hook_id: u64,
    guid: String,
    event: String,
    payload: Vec<u8>,
    redelivery: bool,
}

struct Shared {
    api_url: String,
    codeload_url: String,
    rate_limit_reset: u64,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not take every
        // later request down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn repo_mut(&mut self, repository: &str) -> &mut Repo {
        self.repos
            .entry(repository.to_ascii_lowercase())
            .or_insert_with(|| Repo {
                name: repository.to_string(),
                commits: HashMap::new(),
                head: None,
            })
    }

    fn repo(&self, repository: &str) -> Option<&Repo> {
        self.repos.get(&repository.to_ascii_lowercase())
    }

    /// The repository and commit a request names; no ref means the head.
    fn commit(&self, repository: &str, reference: Option<&str>) -> Option<(&Repo, &str, &Commit)> {
        let repo = self.repo(repository)?;
        let sha = reference
            .filter(|r| !r.is_empty())
            .or(repo.head.as_deref())?;
        let (sha, commit) = repo.commits.get_key_value(sha)?;
        Some((repo, sha, commit))
    }

    /// Records the request and hands back the fault it should get, if any.
    fn record(&mut self, req: &Incoming) -> Option<Fault> {
        let path_and_query = req.path_and_query();
        if req.listener == API {
            self.api_requests += 1;
        }
        let pending = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && path_and_query.contains(&f.path_contains));
        let fault = pending.map(|f| {
            f.remaining -= 1;
            f.fault.clone()
        });
        self.requests.push(RecordedRequest {
            listener: req.listener,
            path_and_query,
            authorization: req.header(AUTHORIZATION),
            accept: req.header(ACCEPT),
        });
        fault
    }

    /// The answer refusing this caller, if it may not proceed: GitHub hides
    /// private repositories from anonymous callers behind a 404, but answers
    /// a token it does not recognise with 401.
    fn refusal(&self, authorization: Option<&str>, docs: &str) -> Option<Response<Vec<u8>>> {
        if self.app.is_some() {
            return match authorization.and_then(presented_token) {
                Some(token) if self.live_installation_token(token) => None,
                Some(_) => Some(github_error(
                    StatusCode::UNAUTHORIZED,
                    "Bad credentials",
                    DOCS_ROOT,
                )),
                None => Some(not_found(docs)),
            };
        }
        let expected = self.token.as_deref()?;
        let Some(header) = authorization else {
            return Some(not_found(docs));
        };
        if presented_token(header) == Some(expected) {
            return None;
        }
        let status = StatusCode::UNAUTHORIZED;
        Some(github_error(status, "Bad credentials", DOCS_ROOT))
    }
}

/// The token of `Bearer <token>` or `token <token>`, GitHub's two schemes.
fn presented_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    known.then(|| token.trim())
}

impl Commit {
    /// Where a symlink inside the repository points, if that is a regular file.
    fn resolve_symlink(&self, link: &str, target: &str) -> Option<(&str, &[u8])> {
        if target.starts_with('/') {
            return None;
        }
        let parent = link.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut parts: Vec<&str> = parent.split('/').filter(|p| !p.is_empty()).collect();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                name => parts.push(name),
            }
        }
        match self.files.get_key_value(parts.join("/").as_str())? {
            (path, FakeEntry::File { contents, .. }) => Some((path, contents)),
            (_, FakeEntry::Symlink { .. }) => None,
        }
    }

    /// GitHub's listing of a directory; `None` if nothing lives under it.
    fn list_dir(&self, dir: &str) -> Option<Value> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut children = BTreeMap::new();
        for (path, entry) in self.files.range(prefix.clone()..) {
            let Some(rest) = path.strip_prefix(&prefix) else {
                break;
            };
            let item = match rest.split_once('/') {
                Some((subdir, _)) => {
                    let dir = format!("{prefix}{subdir}");
                    describe(&dir, "dir", 0, fake_object_id("tree", dir.as_bytes()))
                }
                None => describe_entry(path, entry),
            };
            let name = item["name"].as_str().unwrap_or_default().to_string();
            children.insert(name, item);
        }
        if children.is_empty() && !dir.is_empty() {
            return None;
        }
        Some(Value::Array(children.into_values().collect()))
    }
}

// ===== servers =====

async fn bind(ip: std::net::IpAddr) -> TcpListener {
    TcpListener::bind((ip, 0))
        .await
        .expect("bind a port for the fake GitHub")
}

fn base_url(listener: &TcpListener) -> String {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    format!("http://{addr}")
}

/// Serves `listener` on the current runtime until the returned sender drops.
fn serve(listener: TcpListener, name: &'static str, shared: Arc<Shared>) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    // Every request reaches `handle` so that the fake, not warp, decides what
    // a 404 looks like.
    let routes = warp::method()
        .and(warp::path::full())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(
            move |method, path: warp::path::FullPath, query, headers, body| {
                let req = Incoming {
                    listener: name,
                    method,
                    path: path.as_str().to_string(),
                    query,
                    headers,
                    body,
                };
                handle(shared.clone(), req)
            },
        );
    let server = warp::serve(routes).incoming(listener).graceful(async {
        // Resolves with an error once the sender is dropped.
        let _ = stopped.await;
    });
    tokio::spawn(server.run());
    stop
}

/// The query string, empty when the request had none (warp rejects that case).
fn raw_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// What one listener received.
struct Incoming {
    listener: &'static str,
    method: Method,
    /// Percent-encoded, as sent.
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Incoming {
    fn path_and_query(&self) -> String {
        match self.query.as_str() {
            "" => self.path.clone(),
            query => format!("{}?{query}", self.path),
        }
    }

    fn header(&self, name: HeaderName) -> Option<String> {
        let value = self.headers.get(name)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }

    /// Decoded path segments; empty ones (from `//` or a trailing `/`) dropped.
    fn segments(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect()
    }

    fn query_param(&self, key: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| percent_decode(k, true) == key)
            .map(|(_, v)| percent_decode(v, true))
    }
}

async fn handle(shared: Arc<Shared>, req: Incoming) -> Response<Vec<u8>> {
    let fault = shared.lock().record(&req);
    let mut response = match fault {
        Some(Fault::Delay(pause)) => {
            tokio::time::sleep(pause).await;
            route(&shared, &req)
        }
        Some(Fault::SlowAnswer(pause)) => {
            let answer = route(&shared, &req);
            tokio::time::sleep(pause).await;
            answer
        }
        Some(fault) => fault_response(&fault),
        None => route(&shared, &req),
    };
    if req.listener == API {
        add_rate_limit_headers(&shared, &mut response);
    }
    let outbox = std::mem::take(&mut shared.lock().outbox);
    for outbound in outbox {
        tokio::spawn(hooks::send_delivery(shared.clone(), outbound));
    }
    response
}

fn route(shared: &Shared, req: &Incoming) -> Response<Vec<u8>> {
    let segments = req.segments();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut state = shared.lock();
    if req.listener == CODELOAD {
        return codeload(&state, &req.method, &segments);
    }
    let authorization = req.header(AUTHORIZATION);
    if let Some(answer) = app::route(
        &mut state,
        &req.method,
        &segments,
        authorization.as_deref(),
        &req.body,
    ) {
        return answer;
    }
    let endpoint = Endpoint::parse(&req.method, &segments);
    let docs = endpoint.as_ref().map_or(DOCS_ROOT, Endpoint::docs);
    if let Some(refused) = state.refusal(req.header(AUTHORIZATION).as_deref(), docs) {
        return refused;
    }
    match endpoint {
        None => not_found(DOCS_ROOT),
        Some(Endpoint::Contents { repository, path }) => {
            let raw = req
                .header(ACCEPT)
                .is_some_and(|accept| accept.contains("application/vnd.github.raw"));
            let reference = req.query_param("ref");
            get_contents(&state, &repository, reference.as_deref(), &path, raw)
        }
        Some(Endpoint::Tarball {
            repository,
            reference,
        }) => tarball_redirect(shared, &state, &repository, reference.as_deref()),
        Some(Endpoint::CreateStatus { repository, sha }) => {
            create_status(shared, &mut state, &repository, &sha, &req.body)
        }
        Some(Endpoint::Hooks { repository, rest }) => {
            if req.header(AUTHORIZATION).is_none() {
                // GitHub hides hooks from whoever may not administer them.
                return not_found(DOCS_HOOKS);
            }
            hooks::hooks_endpoint(
                shared,
                &mut state,
                &req.method,
                &repository,
                &rest,
                &req.body,
            )
        }
        Some(Endpoint::Pulls { repository }) => hooks::list_pulls(&state, &repository, req),
        Some(Endpoint::Comments { repository, rest }) => {
            hooks::comments_endpoint(&mut state, &req.method, &repository, &rest, &req.body)
        }
    }
}

/// The API endpoints the fake implements.
enum Endpoint {
    Contents {
        repository: String,
        path: String,
    },
    Tarball {
        repository: String,
        reference: Option<String>,
    },
    CreateStatus {
        repository: String,
        sha: String,
    },
    Hooks {
        repository: String,
        rest: Vec<String>,
    },
    Pulls {
        repository: String,
    },
    Comments {
        repository: String,
        rest: Vec<String>,
    },
}

impl Endpoint {
    fn parse(method: &Method, segments: &[&str]) -> Option<Endpoint> {
        let ["repos", owner, name, kind, rest @ ..] = segments else {
            return None;
        };
        let repository = format!("{owner}/{name}");
        let parts: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        match *kind {
            "hooks" => {
                return Some(Endpoint::Hooks {
                    repository,
                    rest: parts,
                })
            }
            "pulls" if parts.is_empty() && method == Method::GET => {
                return Some(Endpoint::Pulls { repository })
            }
            "issues" => {
                return Some(Endpoint::Comments {
                    repository,
                    rest: parts,
                })
            }
            _ => {}
        }
        let rest = rest.join("/");
        match (method, *kind) {
            (&Method::GET, "contents") => Some(Endpoint::Contents {
                repository,
                path: rest,
            }),
            (&Method::GET, "tarball") => Some(Endpoint::Tarball {
                repository,
                reference: Some(rest).filter(|r| !r.is_empty()),
            }),
            (&Method::POST, "statuses") if !rest.is_empty() => Some(Endpoint::CreateStatus {
                repository,
                sha: rest,
            }),
            _ => None,
        }
    }

    fn docs(&self) -> &'static str {
        match self {
            Endpoint::Contents { .. } => DOCS_CONTENTS,
            Endpoint::Tarball { .. } => DOCS_TARBALL,
            Endpoint::CreateStatus { .. } => DOCS_STATUSES,
            Endpoint::Hooks { .. } => DOCS_HOOKS,
            Endpoint::Pulls { .. } => DOCS_PULLS,
            Endpoint::Comments { .. } => DOCS_COMMENTS,
        }
    }
}

// ===== endpoints =====

fn get_contents(
    state: &State,
    repository: &str,
    reference: Option<&str>,
    path: &str,
    raw: bool,
) -> Response<Vec<u8>> {
    let Some((_, _, commit)) = state.commit(repository, reference) else {
        return not_found(DOCS_CONTENTS);
    };
    match commit.files.get_key_value(path) {
        Some((path, FakeEntry::File { contents, .. })) => file_response(path, contents, raw),
        Some((path, FakeEntry::Symlink { target })) => symlink_response(commit, path, target, raw),
        // Directories are listed as JSON whatever the Accept header says.
        None => match commit.list_dir(path) {
            Some(listing) => json_response(StatusCode::OK, &listing),
            None => not_found(DOCS_CONTENTS),
        },
    }
}

fn file_response(path: &str, contents: &[u8], raw: bool) -> Response<Vec<u8>> {
    if raw {
        return raw_response(contents);
    }
    let mut file = describe(
        path,
        "file",
        contents.len(),
        fake_object_id("blob", contents),
    );
    file["encoding"] = json!("base64");
    file["content"] = json!(github_base64(contents));
    json_response(StatusCode::OK, &file)
}

/// GitHub answers with the target when it is a file in the repository,
/// otherwise describes the link itself.
fn symlink_response(commit: &Commit, path: &str, target: &str, raw: bool) -> Response<Vec<u8>> {
    if let Some((target_path, contents)) = commit.resolve_symlink(path, target) {
        return file_response(target_path, contents, raw);
    }
    if raw {
        return raw_response(target.as_bytes());
    }
    let mut link = describe_symlink(path, target);
    link["target"] = json!(target);
    json_response(StatusCode::OK, &link)
}

fn raw_response(contents: &[u8]) -> Response<Vec<u8>> {
    respond(
        StatusCode::OK,
        "application/vnd.github.raw",
        contents.to_vec(),
    )
}

/// The metadata GitHub gives every content object.
fn describe(path: &str, kind: &str, size: usize, sha: String) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({ "type": kind, "size": size, "name": name, "path": path, "sha": sha })
}

fn describe_entry(path: &str, entry: &FakeEntry) -> Value {
    match entry {
        FakeEntry::File { contents, .. } => describe(
            path,
            "file",
            contents.len(),
            fake_object_id("blob", contents),
        ),
        FakeEntry::Symlink { target } => describe_symlink(path, target),
    }
}

fn describe_symlink(path: &str, target: &str) -> Value {
    // git stores a link as a blob holding its target.
    let sha = fake_object_id("blob", target.as_bytes());
    describe(path, "symlink", target.len(), sha)
}

/// Base64 the way GitHub sends it: a newline after every 60 characters and
/// after the last line (Ruby's `Base64.encode64`).
fn github_base64(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 60 + 1);
    for (i, c) in encoded.chars().enumerate() {
        if i > 0 && i % 60 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    if !encoded.is_empty() {
        out.push('\n');
    }
    out
}

/// A stable 40-hex id in place of git's SHA-1 object ids.
fn fake_object_id(kind: &str, data: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{kind} {}\0", data.len()));
    hasher.update(data);
    hex::encode(hasher.finalize())[..40].to_string()
}

fn tarball_redirect(
    shared: &Shared,
    state: &State,
    repository: &str,
    reference: Option<&str>,
) -> Response<Vec<u8>> {
    let Some((repo, sha, _)) = state.commit(repository, reference) else {
        return not_found(DOCS_TARBALL);
    };
    let location = format!("{}/{}/legacy.tar.gz/{sha}", shared.codeload_url, repo.name);
    let mut response = respond(StatusCode::FOUND, "text/html;charset=utf-8", Vec::new());
    set_header(&mut response, "location", &location);
    response
}

/// codeload.github.com: no authentication, plain-text 404s.
fn codeload(state: &State, method: &Method, segments: &[&str]) -> Response<Vec<u8>> {
    let [owner, name, "legacy.tar.gz", reference @ ..] = segments else {
        return codeload_not_found();
    };
    let repository = format!("{owner}/{name}");
    let reference = reference.join("/");
    let found = state
        .commit(&repository, Some(&reference))
        .filter(|_| method == Method::GET);
    let Some((repo, sha, commit)) = found else {
        return codeload_not_found();
    };
    let tarball = commit.raw_tarball.clone().unwrap_or_else(|| {
        let files: Vec<_> = commit
            .files
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        github_tarball(&repo.name, sha, &files)
    });
    let mut response = respond(StatusCode::OK, "application/x-gzip", tarball);
    let filename = format!("{}-{}.tar.gz", repo.name.replace('/', "-"), short_sha(sha));
    set_header(
        &mut response,
        "content-disposition",
        &format!("attachment; filename={filename}"),
    );
    response
}

fn codeload_not_found() -> Response<Vec<u8>> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        b"404: Not Found".to_vec(),
    )
}

fn create_status(
    shared: &Shared,
    state: &mut State,
    repository: &str,
    sha: &str,
    body: &[u8],
) -> Response<Vec<u8>> {
    let Some(repo) = state.repo(repository) else {
        return not_found(DOCS_STATUSES);
    };
    let name = repo.name.clone();
    let commit_exists = repo.commits.contains_key(sha);
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return github_error(
            StatusCode::BAD_REQUEST,
            "Problems parsing JSON",
            DOCS_STATUSES,
        );
    };
    if let Some(invalid) = status_problem(&body) {
        return invalid;
    }
    if !commit_exists {
        let message = format!("No commit found for SHA: {sha}");
        return github_error(StatusCode::UNPROCESSABLE_ENTITY, &message, DOCS_STATUSES);
    }
    state.statuses.push(RecordedStatus {
        sha: sha.to_string(),
        body: body.clone(),
    });
    let mut created = body;
    created["id"] = json!(state.statuses.len());
    created["url"] = json!(format!("{}/repos/{name}/statuses/{sha}", shared.api_url));
    if created.get("context").is_none() {
        created["context"] = json!("default");
    }
    json_response(StatusCode::CREATED, &created)
}

/// The answer GitHub gives a status it will not accept, if any.
fn status_problem(body: &Value) -> Option<Response<Vec<u8>>> {
    let Some(fields) = body.as_object() else {
        let status = StatusCode::BAD_REQUEST;
        return Some(github_error(status, "Problems parsing JSON", DOCS_STATUSES));
    };
    let state = fields.get("state").and_then(Value::as_str);
    if !matches!(state, Some("error" | "failure" | "pending" | "success")) {
        let message = "state is not included in the list";
        return Some(validation_failed("state", message));
    }
    let description = fields.get("description").and_then(Value::as_str);
    if description.is_some_and(|d| d.chars().count() > MAX_STATUS_DESCRIPTION) {
        let message = "description is too long (maximum is 140 characters)";
        return Some(validation_failed("description", message));
    }
    None
}

fn validation_failed(field: &str, message: &str) -> Response<Vec<u8>> {
    let body = json!({
        "message": "Validation Failed",
        "errors": [{ "resource": "Status", "code": "custom", "field": field, "message": message }],
        "documentation_url": DOCS_STATUSES,
        "status": "422",
    });
    json_response(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

// ===== faults and headers =====

fn fault_response(fault: &Fault) -> Response<Vec<u8>> {
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).expect("checked by inject_fault");
            let message = status.canonical_reason().unwrap_or("Injected fault");
            github_error(status, message, DOCS_ROOT)
        }
        Fault::RateLimited => {
            let message = "API rate limit exceeded for user ID 1.";
            let mut response = github_error(StatusCode::FORBIDDEN, message, DOCS_RATE_LIMIT);
            set_header(&mut response, "x-ratelimit-limit", &RATE_LIMIT.to_string());
            set_header(&mut response, "x-ratelimit-remaining", "0");
            set_header(&mut response, "x-ratelimit-used", &RATE_LIMIT.to_string());
            set_header(
                &mut response,
                "x-ratelimit-reset",
                &(unix_now() + 60).to_string(),
            );
            set_header(&mut response, "x-ratelimit-resource", "core");
            response
        }
        Fault::Delay(_) | Fault::SlowAnswer(_) => unreachable!("delays answer normally"),
    }
}

/// Counts down from `RATE_LIMIT`; headers a fault already set win.
fn add_rate_limit_headers(shared: &Shared, response: &mut Response<Vec<u8>>) {
    let used = shared.lock().api_requests;
    let values = [
        ("x-ratelimit-limit", RATE_LIMIT.to_string()),
        (
            "x-ratelimit-remaining",
            RATE_LIMIT.saturating_sub(used).to_string(),
        ),
        ("x-ratelimit-used", used.to_string()),
        ("x-ratelimit-reset", shared.rate_limit_reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ];
    for (name, value) in values {
        if !response.headers().contains_key(name) {
            set_header(response, name, &value);
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    set_header(&mut response, CONTENT_TYPE.as_str(), content_type);
    response
}

fn set_header(response: &mut Response<Vec<u8>>, name: &'static str, value: &str) {
    let value =
        HeaderValue::from_bytes(value.as_bytes()).expect("header value without control characters");
    response.headers_mut().insert(name, value);
}

fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    respond(status, "application/json; charset=utf-8", bytes)
}

fn github_error(status: StatusCode, message: &str, docs: &str) -> Response<Vec<u8>> {
    let body = json!({
        "message": message,
        "documentation_url": docs,
        "status": status.as_u16().to_string(),
    });
    json_response(status, &body)
}

fn not_found(docs: &str) -> Response<Vec<u8>> {
    github_error(StatusCode::NOT_FOUND, "Not Found", docs)
}

// ===== tarballs =====

enum TarItem<'a> {
    Dir,
    Entry(&'a FakeEntry),
}

/// Every path and its ancestor directories in `git archive` order: sorting
/// bytewise with a `/` after directory names yields a depth-first walk with
/// git's tree ordering.
fn tree_order(files: &[(String, FakeEntry)]) -> BTreeMap<String, TarItem<'_>> {
    let mut items = BTreeMap::new();
    for (path, entry) in files {
        for (i, _) in path.match_indices('/') {
            items.insert(path[..=i].to_string(), TarItem::Dir);
        }
        items.insert(path.clone(), TarItem::Entry(entry));
    }
    items
}

fn append_item(tar: &mut tar::Builder<Vec<u8>>, path: &str, item: &TarItem) {
    let (kind, mode, data, link): (_, _, &[u8], _) = match item {
        TarItem::Dir => (tar::EntryType::Directory, 0o755, &[], None),
        TarItem::Entry(FakeEntry::File {
            contents,
            executable,
        }) => {
            let mode = if *executable { 0o755 } else { 0o644 };
            (tar::EntryType::Regular, mode, contents, None)
        }
        TarItem::Entry(FakeEntry::Symlink { target }) => {
            (tar::EntryType::Symlink, 0o777, &[], Some(target.as_str()))
        }
    };
    let mut header = base_header(kind, mode, data.len());
    let id = fake_object_id("entry", path.as_bytes());
    let ustar = header.as_ustar_mut().expect("a ustar header");
    // Like git, fall back to pax records for what ustar cannot hold.
    let mut pax: Vec<(&str, &[u8])> = Vec::new();
    if !set_ustar_path(ustar, path.as_bytes()) {
        fill(&mut ustar.name, format!("{id}.data").as_bytes());
        pax.push(("path", path.as_bytes()));
    }
    if let Some(target) = link {
        if !fill(&mut ustar.linkname, target.as_bytes()) {
            fill(
                &mut ustar.linkname,
                format!("see {id}.paxheader").as_bytes(),
            );
            pax.push(("linkpath", target.as_bytes()));
        }
    }
    if !pax.is_empty() {
        append_pax(
            tar,
            tar::EntryType::XHeader,
            &format!("{id}.paxheader"),
            &pax,
        );
    }
    header.set_cksum();
    tar.append(&header, data)
        .expect("writing to a Vec cannot fail");
}

fn append_pax(
    tar: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    records: &[(&str, &[u8])],
) {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut header = base_header(kind, 0o666, data.len());
    let ustar = header.as_ustar_mut().expect("a ustar header");
    fill(&mut ustar.name, name.as_bytes());
    header.set_cksum();
    tar.append(&header, data.as_slice())
        .expect("writing to a Vec cannot fail");
}

/// A ustar header as `git archive` fills it, minus name, link and checksum.
fn base_header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size as u64);
    header.set_mtime(COMMIT_TIME);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root").expect("short name");
    header.set_groupname("root").expect("short name");
    header
}

/// `"<len> key=value\n"`, where len counts the whole record including itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// Stores `path` in name, or split across prefix and name at a '/' as git
/// does; false if it fits neither way.
fn set_ustar_path(ustar: &mut tar::UstarHeader, path: &[u8]) -> bool {
    if path.len() <= ustar.name.len() {
        return fill(&mut ustar.name, path);
    }
    let mut end = path.len();
    if path.ends_with(b"/") {
        end -= 1;
    }
    end = end.min(ustar.prefix.len());
    let split = path[1..end.max(1)]
        .iter()
        .rposition(|&b| b == b'/')
        .map(|i| i + 1);
    match split {
        Some(at) if path.len() - at - 1 <= ustar.name.len() => {
            fill(&mut ustar.prefix, &path[..at]) && fill(&mut ustar.name, &path[at + 1..])
        }
        _ => false,
    }
}

/// Copies `value` into a NUL-padded header field; false if it does not fit.
fn fill(field: &mut [u8], value: &[u8]) -> bool {
    if value.len() > field.len() {
        return false;
    }
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
    true
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(data)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

// ===== small helpers =====

/// Decodes %XX escapes (and '+' in query strings); malformed escapes stay as they are.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i + 1..i + 3).filter(|_| bytes[i] == b'%');
        match escaped.and_then(|hex| hex::decode(hex).ok()) {
            Some(byte) => {
                out.extend(byte);
                i += 3;
            }
            None => {
                out.push(if plus_is_space && bytes[i] == b'+' {
                    b' '
                } else {
                    bytes[i]
                });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
