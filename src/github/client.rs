//! The REST client: the manifest at a commit, the commit's tarball, commit
//! statuses, and the JSON calls the other GitHub modules make. The token goes
//! to the API host only, never to the host a tarball redirect points at.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{header, Method, StatusCode, Url};
use tokio::io::AsyncWriteExt;

use super::app::{repository_of, AppAuth, AppTokenError};
use crate::retry::{with_backoff, Backoff};
use crate::secret::Secret;
use crate::types::{CommitSha, Forge, Repository};

const USER_AGENT: &str = concat!("slipway/", env!("CARGO_PKG_VERSION"));
const MAX_REDIRECTS: usize = 5;

/// A failed call to a forge's API. Gitea, Forgejo and GitLab are spoken to by
/// the same client, so each message names the forge and the token option.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{what} not found on {site} (a private repository needs {})", .site.token_option())]
    NotFound { site: Forge, what: String },
    #[error("{site} rejected the token (401 Bad credentials): check {}", .site.token_option())]
    Unauthorized { site: Forge },
    #[error("{site} API rate limit exhausted{}; set {} for a higher limit", reset_note(.reset), .site.token_option())]
    RateLimited { site: Forge, reset: Option<String> },
    #[error("{site} refused access (403): {message}")]
    Forbidden { site: Forge, message: String },
    #[error("{site} answered {status} for {what}: {message}")]
    Http {
        site: Forge,
        status: u16,
        what: String,
        message: String,
    },
    #[error("{site} unreachable for {what}: {reason}")]
    Unreachable {
        site: Forge,
        what: String,
        reason: String,
    },
    #[error("too many redirects for {0}")]
    TooManyRedirects(String),
    #[error(
        "tarball is larger than {0} bytes compressed; raise --max-source-bytes if this is expected"
    )]
    TarballTooLarge(u64),
    #[error("could not write the tarball to temporary space: {0}")]
    Disk(#[from] std::io::Error),
    #[error("invalid {option} URL `{url}`")]
    BadBaseUrl { option: &'static str, url: String },
    #[error(transparent)]
    App(#[from] AppTokenError),
}

fn reset_note(reset: &Option<String>) -> String {
    reset
        .as_ref()
        .map(|r| format!(" until {r}"))
        .unwrap_or_default()
}

impl ForgeError {
    fn is_transient(&self) -> bool {
        matches!(self, ForgeError::Unreachable { .. })
            || matches!(self, ForgeError::Http { status, .. } if *status >= 500 || *status == 429)
    }
}

/// GitHub's REST client. Gitea and Forgejo speak the same API for what
/// Slipway needs, and GitLab's calls share its transport (retries, redirects,
/// the token kept on the API host, typed errors), so the other forges' adapters
/// (`crate::forge`) hold one of these made for their site.
#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    api: Url,
    auth: Auth,
    timeout: Duration,
    site: Forge,
}

/// How calls to the API host are authenticated.
#[derive(Clone)]
enum Auth {
    Anonymous,
    Token(Secret),
    /// A GitHub App: each repository's installation token.
    App(Arc<AppAuth>),
}

impl GitHub {
    /// `timeout` bounds connecting, each read of a download, and a whole API call.
    pub fn new(api: &str, token: Option<Secret>, timeout: Duration) -> Result<Self, ForgeError> {
        Self::for_site(Forge::GitHub, api, token, timeout)
    }

    pub fn for_site(
        site: Forge,
        api: &str,
        token: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, ForgeError> {
        let option = site.api_option();
        let bad_url = |url: String| ForgeError::BadBaseUrl { option, url };
        let api = Url::parse(api).map_err(|_| bad_url(api.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // Redirects are followed by hand so the token never leaves the API host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .read_timeout(timeout)
            .build()
            .map_err(|e| bad_url(e.to_string()))?;
        Ok(Self {
            http,
            api,
            auth: token.map_or(Auth::Anonymous, Auth::Token),
            timeout,
            site,
        })
    }

    /// Acts as the GitHub App instead of with a token.
    pub fn as_app(mut self, app: Arc<AppAuth>) -> Self {
        self.auth = Auth::App(app);
        self
    }

    /// The forge this client speaks to.
    pub fn site(&self) -> Forge {
        self.site
    }

    pub fn is_app(&self) -> bool {
        matches!(self.auth, Auth::App(_))
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn request(
        &self,
        method: Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder, ForgeError> {
        let req = self
            .http
            .request(method, url.clone())
            .header("X-GitHub-Api-Version", "2022-11-28");
        if !same_origin(&url, &self.api) {
            return Ok(req);
        }
        Ok(match &self.auth {
            Auth::Anonymous => req,
            Auth::Token(token) => match self.site {
                Forge::GitHub => req.bearer_auth(token.expose()),
                // Gitea's documented form; Forgejo takes it too.
                Forge::Gitea | Forge::Forgejo => {
                    req.header(header::AUTHORIZATION, format!("token {}", token.expose()))
                }
                Forge::GitLab => req.header("PRIVATE-TOKEN", token.expose()),
            },
            Auth::App(app) => match repository_of(&self.api, &url) {
                Some(repo) => {
                    let token = app.token_for(&self.http, &self.api, &repo).await?;
                    req.bearer_auth(token.expose())
                }
                None => req,
            },
        })
    }

    /// Sends a request `build` finishes; as an App, a 401 renews the
    /// installation token once and sends again (a token revoked or expired
    /// early).
    async fn send(
        &self,
        method: Method,
        url: &Url,
        what: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ForgeError> {
        let first = build(self.request(method.clone(), url.clone()).await?)
            .send()
            .await;
        match classify(self.site, first, what).await {
            Err(ForgeError::Unauthorized { .. }) if self.forget_token(url) => {
                let again = build(self.request(method, url.clone()).await?).send().await;
                classify(self.site, again, what).await
            }
            other => other,
        }
    }

    fn forget_token(&self, url: &Url) -> bool {
        let (Auth::App(app), Some(repo)) = (&self.auth, repository_of(&self.api, url)) else {
            return false;
        };
        app.forget(&repo);
        true
    }

    /// As a GitHub App: every repository of every installation
    /// (`GET /installation/repositories` with each installation's token).
    /// Without an App, none.
    pub async fn installation_repositories(&self) -> Result<Vec<Repository>, ForgeError> {
        const PER_PAGE: usize = 100;
        const MAX_PAGES: usize = 10;
        let Auth::App(app) = &self.auth else {
            return Ok(Vec::new());
        };
        let what = "the GitHub App's repositories";
        let mut repositories = Vec::new();
        for installation in app.installations(&self.http, &self.api).await? {
            let token = app
                .installation_token(&self.http, &self.api, installation)
                .await?;
            for page in 1..=MAX_PAGES {
                let mut url = self.url(&["installation", "repositories"]);
                url.query_pairs_mut()
                    .append_pair("per_page", &PER_PAGE.to_string())
                    .append_pair("page", &page.to_string());
                let resp = self
                    .http
                    .get(url)
                    .header(header::ACCEPT, "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28")
                    .bearer_auth(token.expose())
                    .timeout(self.timeout)
                    .send()
                    .await;
                let listing: serde_json::Value = classify(self.site, resp, what)
                    .await?
                    .json()
                    .await
                    .map_err(|e| unreachable(self.site, what, &e))?;
                let names: Vec<Repository> = listing["repositories"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|r| r["full_name"].as_str())
                            .filter_map(|name| Repository::parse(name).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                let last = names.len() < PER_PAGE;
                for repo in names {
                    app.remember(&repo, installation);
                    repositories.push(repo);
                }
                if last {
                    break;
                }
            }
        }
        Ok(repositories)
    }

    pub fn has_token(&self) -> bool {
        !matches!(self.auth, Auth::Anonymous)
    }

    /// One JSON call (`body` sent as JSON when given), retried while GitHub
    /// is unreachable or answers 5xx; an empty answer (204) is `Null`.
    pub(crate) async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<serde_json::Value, ForgeError> {
        with_backoff(
            Backoff::GITHUB,
            what,
            || async {
                let resp = self
                    .send(method.clone(), &url, what, |req| {
                        let req = req
                            .header(header::ACCEPT, "application/vnd.github+json")
                            .timeout(self.timeout);
                        match body {
                            Some(body) => req.json(body),
                            None => req,
                        }
                    })
                    .await?;
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| unreachable(self.site, what, &e))?;
                if bytes.is_empty() {
                    return Ok(serde_json::Value::Null);
                }
                serde_json::from_slice(&bytes).map_err(|e| ForgeError::Http {
                    site: self.site,
                    status: 200,
                    what: what.to_string(),
                    message: format!("answer is not JSON: {e}"),
                })
            },
            ForgeError::is_transient,
        )
        .await
    }

    /// The file at `path` in `commit`, as bytes.
    pub async fn file_at(
        &self,
        repo: &Repository,
        commit: &CommitSha,
        path: &str,
    ) -> Result<Vec<u8>, ForgeError> {
        let url = match self.site {
            // One segment, so the path's slashes are encoded as GitLab wants.
            Forge::GitLab => {
                let mut url = self.url(&[
                    "projects",
                    repo.as_str(),
                    "repository",
                    "files",
                    path.trim_start_matches('/'),
                    "raw",
                ]);
                url.query_pairs_mut().append_pair("ref", commit.as_str());
                url
            }
            Forge::GitHub | Forge::Gitea | Forge::Forgejo => {
                let mut segments = vec!["repos", repo.owner(), repo.name(), "contents"];
                segments.extend(path.split('/').filter(|s| !s.is_empty()));
                let mut url = self.url(&segments);
                url.query_pairs_mut().append_pair("ref", commit.as_str());
                url
            }
        };
        let what = format!("`{path}` at commit {commit} of {repo}");
        self.fetch_file(url, &what).await
    }

    /// A file's bytes from `url`: raw, or the contents API's base64 JSON decoded.
    pub(crate) async fn fetch_file(&self, url: Url, what: &str) -> Result<Vec<u8>, ForgeError> {
        let body = with_backoff(
            Backoff::GITHUB,
            what,
            || async {
                self.send(Method::GET, &url, what, |req| {
                    req.header(header::ACCEPT, "application/vnd.github.raw+json")
                        .timeout(self.timeout)
                })
                .await?
                .bytes()
                .await
                .map_err(|e| unreachable(self.site, what, &e))
            },
            ForgeError::is_transient,
        )
        .await?;
        Ok(decode_contents(body.to_vec()))
    }

    /// Downloads the gzip tarball of `commit` into `dest`, following GitHub's
    /// redirect to its download host.
    pub async fn download_tarball(
        &self,
        repo: &Repository,
        commit: &CommitSha,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, ForgeError> {
        let url = match self.site {
            Forge::GitHub => self.url(&[
                "repos",
                repo.owner(),
                repo.name(),
                "tarball",
                commit.as_str(),
            ]),
            Forge::Gitea | Forge::Forgejo => self.url(&[
                "repos",
                repo.owner(),
                repo.name(),
                "archive",
                &format!("{commit}.tar.gz"),
            ]),
            Forge::GitLab => {
                let mut url =
                    self.url(&["projects", repo.as_str(), "repository", "archive.tar.gz"]);
                url.query_pairs_mut().append_pair("sha", commit.as_str());
                url
            }
        };
        let what = format!("tarball of commit {commit} of {repo}");
        self.download(url, &what, dest, max_bytes).await
    }

    /// Downloads `url` into `dest`, following redirects (the token stays on the API host).
    pub(crate) async fn download(
        &self,
        url: Url,
        what: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, ForgeError> {
        with_backoff(
            Backoff::GITHUB,
            what,
            || self.try_download(url.clone(), what, dest, max_bytes),
            ForgeError::is_transient,
        )
        .await
    }

    /// Posts a commit status (`pending`, `success`, `failure`) under the context `slipway`.
    pub async fn post_status(
        &self,
        repo: &Repository,
        commit: &CommitSha,
        status: &CommitStatus,
    ) -> Result<(), ForgeError> {
        let what = format!("commit status on {commit} of {repo}");
        let description: String = status.description.chars().take(140).collect();
        let (url, mut body) = match self.site {
            Forge::GitHub | Forge::Gitea | Forge::Forgejo => (
                self.url(&[
                    "repos",
                    repo.owner(),
                    repo.name(),
                    "statuses",
                    commit.as_str(),
                ]),
                serde_json::json!({
                    "state": status.state,
                    "context": "slipway",
                    "description": description,
                }),
            ),
            Forge::GitLab => (
                self.url(&["projects", repo.as_str(), "statuses", commit.as_str()]),
                serde_json::json!({
                    "state": gitlab_state(status.state),
                    "name": "slipway",
                    "description": description,
                }),
            ),
        };
        if let Some(target) = &status.target_url {
            body["target_url"] = serde_json::Value::String(target.clone());
        }
        with_backoff(
            Backoff::GITHUB,
            &what,
            || async {
                self.send(Method::POST, &url, &what, |req| {
                    req.header(header::ACCEPT, "application/vnd.github+json")
                        .json(&body)
                        .timeout(self.timeout)
                })
                .await
                .map(|_| ())
            },
            ForgeError::is_transient,
        )
        .await
    }

    async fn try_download(
        &self,
        mut url: Url,
        what: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, ForgeError> {
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.request(Method::GET, url.clone()).await?.send().await;
            let resp = match resp {
                Ok(r) if r.status().is_redirection() => {
                    url = redirect_target(&url, &r).ok_or_else(|| ForgeError::Http {
                        site: self.site,
                        status: r.status().as_u16(),
                        what: what.to_string(),
                        message: "redirect without a usable Location".into(),
                    })?;
                    continue;
                }
                other => classify(self.site, other, what).await?,
            };
            return stream_to_file(self.site, resp, what, dest, max_bytes).await;
        }
        Err(ForgeError::TooManyRedirects(what.to_string()))
    }
}

/// A commit status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// `pending`, `success` or `failure`.
    pub state: &'static str,
    pub description: String,
    pub target_url: Option<String>,
}

/// GitLab's commit states: `pending`, `running`, `success`, `failed`, `canceled`.
fn gitlab_state(state: &str) -> &'static str {
    match state {
        "success" => "success",
        "failure" | "error" => "failed",
        _ => "running",
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn redirect_target(from: &Url, resp: &reqwest::Response) -> Option<Url> {
    let location = resp.headers().get(header::LOCATION)?.to_str().ok()?;
    from.join(location).ok()
}

async fn stream_to_file(
    site: Forge,
    resp: reqwest::Response,
    what: &str,
    dest: &Path,
    max_bytes: u64,
) -> Result<u64, ForgeError> {
    let mut file = tokio::fs::File::create(dest).await?;
    let mut written: u64 = 0;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| unreachable(site, what, &e))?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(ForgeError::TarballTooLarge(max_bytes));
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(written)
}

/// Turns an answer into the body's response or a typed error.
async fn classify(
    site: Forge,
    resp: Result<reqwest::Response, reqwest::Error>,
    what: &str,
) -> Result<reqwest::Response, ForgeError> {
    let resp = resp.map_err(|e| unreachable(site, what, &e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let rate_limited = resp
        .headers()
        .get("x-ratelimit-remaining")
        .is_some_and(|v| v.as_bytes() == b"0");
    let reset = resp
        .headers()
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    let message = error_message(resp).await;
    Err(match status {
        StatusCode::NOT_FOUND => ForgeError::NotFound {
            site,
            what: what.to_string(),
        },
        StatusCode::UNAUTHORIZED => ForgeError::Unauthorized { site },
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS if rate_limited => {
            ForgeError::RateLimited { site, reset }
        }
        StatusCode::FORBIDDEN => ForgeError::Forbidden { site, message },
        _ => ForgeError::Http {
            site,
            status: status.as_u16(),
            what: what.to_string(),
            message,
        },
    })
}

/// GitHub's `{"message": ...}`, or the start of whatever else came back.
async fn error_message(resp: reqwest::Response) -> String {
    let body = resp.bytes().await.unwrap_or_default();
    let from_json = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    text.chars().take(200).collect()
}

fn unreachable(site: Forge, what: &str, err: &reqwest::Error) -> ForgeError {
    let reason = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "could not connect".to_string()
    } else {
        err.without_url_string()
    };
    ForgeError::Unreachable {
        site,
        what: what.to_string(),
        reason,
    }
}

/// The raw media type gives the file itself; some servers still answer with
/// the JSON object and base64 content, which is decoded here.
fn decode_contents(body: Vec<u8>) -> Vec<u8> {
    use base64::Engine;
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return body;
    };
    let is_encoded_file = obj.get("type").and_then(|t| t.as_str()) == Some("file")
        && obj.get("encoding").and_then(|e| e.as_str()) == Some("base64");
    let content = obj.get("content").and_then(|c| c.as_str());
    match (is_encoded_file, content) {
        (true, Some(content)) => {
            let compact: String = content.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap_or(body)
        }
        _ => body,
    }
}

trait WithoutUrl {
    fn without_url_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    /// reqwest puts the URL in its messages; ours carry no secret, but the
    /// message is clearer without it.
    fn without_url_string(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(&format!(" ({url})"), "");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_contents_are_decoded_and_raw_kept() {
        let json = br#"{"type":"file","encoding":"base64","content":"eyJh\nIjoxfQ==\n"}"#.to_vec();
        assert_eq!(decode_contents(json), br#"{"a":1}"#);
        let raw = br#"{"services":[]}"#.to_vec();
        assert_eq!(decode_contents(raw.clone()), raw);
    }

    #[test]
    fn urls_keep_the_enterprise_prefix_and_encode_segments() {
        let gh = GitHub::new("https://ghe.example/api/v3/", None, Duration::from_secs(5))
            .expect("client");
        let url = gh.url(&["repos", "o", "r", "contents", "dir", "a b.json"]);
        assert_eq!(
            url.as_str(),
            "https://ghe.example/api/v3/repos/o/r/contents/dir/a%20b.json"
        );
    }

    #[test]
    fn token_stays_on_the_api_origin() {
        let api = Url::parse("https://api.github.com").expect("url");
        assert!(same_origin(
            &Url::parse("https://api.github.com/x").expect("url"),
            &api
        ));
        assert!(!same_origin(
            &Url::parse("https://codeload.github.com/x").expect("url"),
            &api
        ));
        assert!(!same_origin(
            &Url::parse("http://api.github.com/x").expect("url"),
            &api
        ));
    }
}
