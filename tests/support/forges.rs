//! Stand-ins for a Gitea (or Forgejo) server and a GitLab server: the calls
//! Slipway makes to each, as their API documents them and with their quirks.
//!
//! - Gitea (`/api/v1`): `contents` answers JSON with base64 content whatever
//!   the `Accept` header says; the archive's top folder is the repository's
//!   name; a token goes in `Authorization: token …`; statuses take GitHub's
//!   body (`state` one of pending, success, error, failure, warning).
//! - GitLab (`/api/v4`): a project is named by its URL-encoded path
//!   (`group%2Fsub%2Fproject`), so is a file; the archive's top folder is
//!   `PROJECT-SHA-SHA`; a token goes in `PRIVATE-TOKEN`; statuses take
//!   `state` (pending, running, success, failed, canceled) and `name`, and
//!   refuse to move a status to the state it is already in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use warp::http::{Response, StatusCode};
use warp::Filter;

use super::github::{git_archive, FakeEntry};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Gitea,
    GitLab,
}

/// A commit status the forge accepted.
#[derive(Clone, Debug)]
pub struct ForgeStatus {
    /// `owner/name` (Gitea) or the project path (GitLab), decoded.
    pub repository: String,
    pub sha: String,
    pub body: Value,
}

/// A pull request comment (GitLab: a merge request note), with its edits.
#[derive(Clone, Debug)]
pub struct ForgeComment {
    pub id: u64,
    pub repository: String,
    pub number: u64,
    pub body: String,
    pub edits: usize,
}

#[derive(Default)]
struct State {
    commits: HashMap<(String, String), Vec<(String, FakeEntry)>>,
    statuses: Vec<ForgeStatus>,
    comments: Vec<ForgeComment>,
    /// Merged pull requests, for the pulls listing: (repository, number, sha, base, merged at).
    merged: Vec<(String, u64, String, String, String)>,
    /// Every request's method and raw path, in arrival order.
    requests: Vec<String>,
}

/// A running stand-in; dropping it stops the server.
pub struct FakeForge {
    flavor: Flavor,
    base: String,
    state: Arc<Mutex<State>>,
    _stop: oneshot::Sender<()>,
}

impl FakeForge {
    /// A forge whose API takes `token` and nothing else.
    pub async fn start(flavor: Flavor, token: &str) -> FakeForge {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = (state.clone(), token.to_string());
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |method, path: warp::path::FullPath, query, headers, body| {
                    let (state, token) = &shared;
                    let request = Request {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                        body,
                    };
                    answer(flavor, token, state, &request)
                },
            );
        let server = warp::serve(routes)
            .incoming(listener)
            .graceful(async {
                let _ = stopped.await;
            })
            .run();
        tokio::spawn(server);
        FakeForge {
            flavor,
            base,
            state,
            _stop: stop,
        }
    }

    /// What Slipway gets as `--gitea-api` or `--gitlab-api`.
    pub fn api_url(&self) -> String {
        match self.flavor {
            Flavor::Gitea => format!("{}/api/v1", self.base),
            Flavor::GitLab => format!("{}/api/v4", self.base),
        }
    }

    pub fn add_commit_files(&self, repository: &str, sha: &str, files: &[(&str, &str)]) {
        let files = files
            .iter()
            .map(|(path, contents)| {
                (
                    path.to_string(),
                    FakeEntry::File {
                        contents: contents.as_bytes().to_vec(),
                        executable: false,
                    },
                )
            })
            .collect();
        self.lock()
            .commits
            .insert((repository.to_string(), sha.to_string()), files);
    }

    pub fn statuses(&self) -> Vec<ForgeStatus> {
        self.lock().statuses.clone()
    }

    /// A pull request of `repository` merged just now at `sha` into `base`,
    /// shown by the pulls listing (no delivery is sent).
    pub fn add_merged_pull(&self, repository: &str, number: u64, sha: &str, base: &str) {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a time");
        self.lock().merged.push((
            repository.to_string(),
            number,
            sha.to_string(),
            base.to_string(),
            now,
        ));
    }

    pub fn comments(&self) -> Vec<ForgeComment> {
        self.lock().comments.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Request {
    method: warp::http::Method,
    path: String,
    query: String,
    headers: warp::http::HeaderMap,
    body: bytes::Bytes,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn query_param(&self, key: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&self.query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The path's segments after the API prefix, percent-decoded one by one,
    /// so an encoded `/` stays inside its segment as GitLab wants.
    fn segments(&self, prefix: &str) -> Option<Vec<String>> {
        let rest = self.path.strip_prefix(prefix)?;
        Some(
            rest.split('/')
                .filter(|s| !s.is_empty())
                .map(percent_decode)
                .collect(),
        )
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(
    flavor: Flavor,
    token: &str,
    state: &Mutex<State>,
    request: &Request,
) -> Response<Vec<u8>> {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.requests.push(format!(
        "{} {}?{}",
        request.method, request.path, request.query
    ));
    match flavor {
        Flavor::Gitea => gitea(token, &mut state, request),
        Flavor::GitLab => gitlab(token, &mut state, request),
    }
}

fn gitea(token: &str, state: &mut State, request: &Request) -> Response<Vec<u8>> {
    if request.header("authorization") != Some(&format!("token {token}")) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "token is required", "url": "https://gitea.example/api/swagger"}),
        );
    }
    let Some(segments) = request.segments("/api/v1/") else {
        return gitea_not_found();
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["repos", owner, name, "contents", path @ ..]) => {
            let repository = format!("{owner}/{name}");
            let Some(files) = request
                .query_param("ref")
                .and_then(|sha| state.commits.get(&(repository, sha)))
            else {
                return gitea_not_found();
            };
            let path = path.join("/");
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, FakeEntry::File { contents, .. })) => {
                    use base64::Engine;
                    json_response(
                        StatusCode::OK,
                        json!({
                            "name": path.rsplit('/').next(),
                            "path": path,
                            "type": "file",
                            "encoding": "base64",
                            "content": base64::engine::general_purpose::STANDARD.encode(contents),
                        }),
                    )
                }
                _ => gitea_not_found(),
            }
        }
        ("GET", ["repos", owner, name, "archive", archive]) => {
            let Some(sha) = archive.strip_suffix(".tar.gz") else {
                return gitea_not_found();
            };
            match state
                .commits
                .get(&(format!("{owner}/{name}"), sha.to_string()))
            {
                Some(files) => bytes_response(
                    "application/octet-stream",
                    git_archive(&format!("{name}/"), sha, files),
                ),
                None => gitea_not_found(),
            }
        }
        ("GET", ["repos", owner, name, "pulls"]) => {
            let repository = format!("{owner}/{name}");
            // Gitea's own parameter names; GitHub's would be ignored here.
            if request.query_param("sort").as_deref() != Some("recentupdate")
                || request.query_param("limit").is_none()
            {
                return json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "unexpected listing parameters"}),
                );
            }
            if request.query_param("page").as_deref() != Some("1") {
                return json_response(StatusCode::OK, json!([]));
            }
            let pulls: Vec<Value> = state
                .merged
                .iter()
                .rev()
                .filter(|(repo, ..)| *repo == repository)
                .map(|(_, number, sha, base, at)| {
                    json!({
                        "number": number, "state": "closed", "merged": true,
                        "merged_at": at, "updated_at": at, "merge_commit_sha": sha,
                        "base": {"ref": base, "repo": {"full_name": repository, "html_url": format!("https://gitea.example/{repository}")}},
                    })
                })
                .collect();
            json_response(StatusCode::OK, Value::Array(pulls))
        }
        ("POST", ["repos", owner, name, "issues", number, "comments"]) => {
            add_comment(state, format!("{owner}/{name}"), number, &request.body)
        }
        ("PATCH", ["repos", owner, name, "issues", "comments", id]) => {
            edit_comment(state, &format!("{owner}/{name}"), id, &request.body)
        }
        ("POST", ["repos", owner, name, "statuses", sha]) => {
            let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
                return json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "invalid JSON"}),
                );
            };
            let valid = ["pending", "success", "error", "failure", "warning"];
            if !body["state"].as_str().is_some_and(|s| valid.contains(&s)) {
                return json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "[State]: invalid state"}),
                );
            }
            state.statuses.push(ForgeStatus {
                repository: format!("{owner}/{name}"),
                sha: sha.to_string(),
                body: body.clone(),
            });
            json_response(StatusCode::CREATED, body)
        }
        _ => gitea_not_found(),
    }
}

fn gitea_not_found() -> Response<Vec<u8>> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"errors": ["object does not exist"], "message": "The target couldn't be found.", "url": "https://gitea.example/api/swagger"}),
    )
}

fn gitlab(token: &str, state: &mut State, request: &Request) -> Response<Vec<u8>> {
    if request.header("private-token") != Some(token) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"}),
        );
    }
    let Some(segments) = request.segments("/api/v4/") else {
        return gitlab_not_found("404 Not Found");
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["projects", project, "repository", "files", path, "raw"]) => {
            let Some(files) = request
                .query_param("ref")
                .and_then(|sha| state.commits.get(&(project.to_string(), sha)))
            else {
                return gitlab_not_found("404 Commit Not Found");
            };
            match files.iter().find(|(p, _)| p == path) {
                Some((_, FakeEntry::File { contents, .. })) => {
                    bytes_response("text/plain", contents.clone())
                }
                _ => gitlab_not_found("404 File Not Found"),
            }
        }
        ("GET", ["projects", project, "repository", "archive.tar.gz"]) => {
            let Some(sha) = request.query_param("sha") else {
                return gitlab_not_found("404 Not Found");
            };
            match state.commits.get(&(project.to_string(), sha.clone())) {
                Some(files) => {
                    let name = project.rsplit('/').next().unwrap_or(project);
                    bytes_response(
                        "application/octet-stream",
                        git_archive(&format!("{name}-{sha}-{sha}/"), &sha, files),
                    )
                }
                None => gitlab_not_found("404 Not Found"),
            }
        }
        ("POST", ["projects", project, "merge_requests", iid, "notes"]) => {
            add_comment(state, project.to_string(), iid, &request.body)
        }
        ("PUT", ["projects", project, "merge_requests", _, "notes", id]) => {
            edit_comment(state, project, id, &request.body)
        }
        ("POST", ["projects", project, "statuses", sha]) => {
            gitlab_status(state, project, sha, &request.body)
        }
        _ => gitlab_not_found("404 Not Found"),
    }
}

/// GitLab takes the status as form or JSON fields; a move to the state the
/// status already has is refused, as GitLab's state machine does.
fn gitlab_status(state: &mut State, project: &str, sha: &str, body: &[u8]) -> Response<Vec<u8>> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": "400 Bad request"}),
        );
    };
    let valid = ["pending", "running", "success", "failed", "canceled"];
    let Some(new_state) = body["state"].as_str().filter(|s| valid.contains(s)) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "state does not have a valid value"}),
        );
    };
    let name = body["name"].as_str().unwrap_or("default");
    let current = state
        .statuses
        .iter()
        .rev()
        .find(|s| {
            s.repository == project
                && s.sha == sha
                && s.body["name"].as_str().unwrap_or("default") == name
        })
        .and_then(|s| s.body["state"].as_str().map(str::to_string));
    if current.as_deref() == Some(new_state) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"message": format!("Cannot transition status via :{new_state} from :{new_state}")}),
        );
    }
    state.statuses.push(ForgeStatus {
        repository: project.to_string(),
        sha: sha.to_string(),
        body: body.clone(),
    });
    json_response(
        StatusCode::CREATED,
        json!({"sha": sha, "status": new_state, "name": name}),
    )
}

fn add_comment(
    state: &mut State,
    repository: String,
    number: &str,
    body: &[u8],
) -> Response<Vec<u8>> {
    let (Ok(number), Some(text)) = (
        number.parse::<u64>(),
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| b["body"].as_str().map(str::to_string)),
    ) else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "body is required"}),
        );
    };
    let id = 900 + state.comments.len() as u64;
    state.comments.push(ForgeComment {
        id,
        repository,
        number,
        body: text.clone(),
        edits: 0,
    });
    json_response(StatusCode::CREATED, json!({"id": id, "body": text}))
}

fn edit_comment(state: &mut State, repository: &str, id: &str, body: &[u8]) -> Response<Vec<u8>> {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b["body"].as_str().map(str::to_string));
    let comment = state
        .comments
        .iter_mut()
        .find(|c| c.id.to_string() == id && c.repository == repository);
    match (comment, text) {
        (Some(comment), Some(text)) => {
            comment.body = text;
            comment.edits += 1;
            json_response(
                StatusCode::OK,
                json!({"id": comment.id, "body": comment.body}),
            )
        }
        (None, _) => json_response(StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
        (_, None) => json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "body is required"}),
        ),
    }
}

fn gitlab_not_found(message: &str) -> Response<Vec<u8>> {
    json_response(StatusCode::NOT_FOUND, json!({"message": message}))
}

fn json_response(status: StatusCode, body: Value) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string().into_bytes())
        .expect("response")
}

fn bytes_response(content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(body)
        .expect("response")
}
