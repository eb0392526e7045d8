//! The REST client: the manifest at a commit, the commit's tarball, commit
//! statuses, and the JSON calls the other GitHub modules make. The token goes
//! to the API host only, never to the host a tarball redirect points at.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{header, Method, StatusCode, Url};
use tokio::io::AsyncWriteExt;

use crate::retry::{with_backoff, Backoff};
use crate::secret::Secret;
use crate::types::{CommitSha, Repository};

const USER_AGENT: &str = concat!("slipway/", env!("CARGO_PKG_VERSION"));
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("{what} not found on GitHub (a private repository needs --github-token)")]
    NotFound { what: String },
    #[error("GitHub rejected the token (401 Bad credentials): check --github-token")]
    Unauthorized,
    #[error("GitHub API rate limit exhausted{}; set --github-token for a higher limit", reset_note(.reset))]
    RateLimited { reset: Option<String> },
    #[error("GitHub refused access (403): {0}")]
    Forbidden(String),
    #[error("GitHub answered {status} for {what}: {message}")]
    Http {
        status: u16,
        what: String,
        message: String,
    },
    #[error("GitHub unreachable for {what}: {reason}")]
    Unreachable { what: String, reason: String },
    #[error("GitHub sent too many redirects for {0}")]
    TooManyRedirects(String),
    #[error(
        "tarball is larger than {0} bytes compressed; raise --max-source-bytes if this is expected"
    )]
    TarballTooLarge(u64),
    #[error("could not write the tarball to temporary space: {0}")]
    Disk(#[from] std::io::Error),
    #[error("invalid --github-api URL `{0}`")]
    BadBaseUrl(String),
}

fn reset_note(reset: &Option<String>) -> String {
    reset
        .as_ref()
        .map(|r| format!(" until {r}"))
        .unwrap_or_default()
}

impl GitHubError {
    fn is_transient(&self) -> bool {
        matches!(self, GitHubError::Unreachable { .. })
            || matches!(self, GitHubError::Http { status, .. } if *status >= 500 || *status == 429)
    }
}

#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    api: Url,
    token: Option<Secret>,
    timeout: Duration,
}

impl GitHub {
    /// `timeout` bounds connecting, each read of a download, and a whole API call.
    pub fn new(api: &str, token: Option<Secret>, timeout: Duration) -> Result<Self, GitHubError> {
        let api = Url::parse(api).map_err(|_| GitHubError::BadBaseUrl(api.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // Redirects are followed by hand so the token never leaves the API host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .read_timeout(timeout)
            .build()
            .map_err(|e| GitHubError::BadBaseUrl(e.to_string()))?;
        Ok(Self {
            http,
            api,
            token,
            timeout,
        })
    }

    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, url.clone())
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &self.token {
            if same_origin(&url, &self.api) {
                req = req.bearer_auth(token.expose());
            }
        }
        req
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// One JSON call (`body` sent as JSON when given), retried while GitHub
    /// is unreachable or answers 5xx; an empty answer (204) is `Null`.
    pub(super) async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<serde_json::Value, GitHubError> {
        with_backoff(
            Backoff::GITHUB,
            what,
            || async {
                let mut req = self
                    .request(method.clone(), url.clone())
                    .header(header::ACCEPT, "application/vnd.github+json")
                    .timeout(self.timeout);
                if let Some(body) = body {
                    req = req.json(body);
                }
                let resp = classify(req.send().await, what).await?;
                let bytes = resp.bytes().await.map_err(|e| unreachable(what, &e))?;
                if bytes.is_empty() {
                    return Ok(serde_json::Value::Null);
                }
                serde_json::from_slice(&bytes).map_err(|e| GitHubError::Http {
                    status: 200,
                    what: what.to_string(),
                    message: format!("answer is not JSON: {e}"),
                })
            },
            GitHubError::is_transient,
        )
        .await
    }

    /// The file at `path` in `commit`, as bytes.
    pub async fn file_at(
        &self,
        repo: &Repository,
        commit: &CommitSha,
        path: &str,
    ) -> Result<Vec<u8>, GitHubError> {
        let mut segments = vec!["repos", repo.owner(), repo.name(), "contents"];
        segments.extend(path.split('/').filter(|s| !s.is_empty()));
        let mut url = self.url(&segments);
        url.query_pairs_mut().append_pair("ref", commit.as_str());
        let what = format!("`{path}` at commit {commit} of {repo}");
        let body = with_backoff(
            Backoff::GITHUB,
            &what,
            || async {
                let resp = self
                    .request(Method::GET, url.clone())
                    .header(header::ACCEPT, "application/vnd.github.raw+json")
                    .timeout(self.timeout)
                    .send()
                    .await;
                classify(resp, &what)
                    .await?
                    .bytes()
                    .await
                    .map_err(|e| unreachable(&what, &e))
            },
            GitHubError::is_transient,
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
    ) -> Result<u64, GitHubError> {
        let url = self.url(&[
            "repos",
            repo.owner(),
            repo.name(),
            "tarball",
            commit.as_str(),
        ]);
        let what = format!("tarball of commit {commit} of {repo}");
        with_backoff(
            Backoff::GITHUB,
            &what,
            || self.try_download(url.clone(), &what, dest, max_bytes),
            GitHubError::is_transient,
        )
        .await
    }

    /// Posts a commit status (`pending`, `success`, `failure`) under the context `slipway`.
    pub async fn post_status(
        &self,
        repo: &Repository,
        commit: &CommitSha,
        status: &CommitStatus,
    ) -> Result<(), GitHubError> {
        let url = self.url(&[
            "repos",
            repo.owner(),
            repo.name(),
            "statuses",
            commit.as_str(),
        ]);
        let what = format!("commit status on {commit} of {repo}");
        let mut body = serde_json::json!({
            "state": status.state,
            "context": "slipway",
            "description": status.description.chars().take(140).collect::<String>(),
        });
        if let Some(target) = &status.target_url {
            body["target_url"] = serde_json::Value::String(target.clone());
        }
        with_backoff(
            Backoff::GITHUB,
            &what,
            || async {
                let resp = self
                    .request(Method::POST, url.clone())
                    .header(header::ACCEPT, "application/vnd.github+json")
                    .json(&body)
                    .timeout(self.timeout)
                    .send()
                    .await;
                classify(resp, &what).await.map(|_| ())
            },
            GitHubError::is_transient,
        )
        .await
    }

    async fn try_download(
        &self,
        mut url: Url,
        what: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, GitHubError> {
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.request(Method::GET, url.clone()).send().await;
            let resp = match resp {
                Ok(r) if r.status().is_redirection() => {
                    url = redirect_target(&url, &r).ok_or_else(|| GitHubError::Http {
                        status: r.status().as_u16(),
                        what: what.to_string(),
                        message: "redirect without a usable Location".into(),
                    })?;
                    continue;
                }
                other => classify(other, what).await?,
            };
            return stream_to_file(resp, what, dest, max_bytes).await;
        }
        Err(GitHubError::TooManyRedirects(what.to_string()))
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
    resp: reqwest::Response,
    what: &str,
    dest: &Path,
    max_bytes: u64,
) -> Result<u64, GitHubError> {
    let mut file = tokio::fs::File::create(dest).await?;
    let mut written: u64 = 0;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| unreachable(what, &e))?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(GitHubError::TarballTooLarge(max_bytes));
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(written)
}

/// Turns an answer into the body's response or a typed error.
async fn classify(
    resp: Result<reqwest::Response, reqwest::Error>,
    what: &str,
) -> Result<reqwest::Response, GitHubError> {
    let resp = resp.map_err(|e| unreachable(what, &e))?;
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
        StatusCode::NOT_FOUND => GitHubError::NotFound {
            what: what.to_string(),
        },
        StatusCode::UNAUTHORIZED => GitHubError::Unauthorized,
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS if rate_limited => {
            GitHubError::RateLimited { reset }
        }
        StatusCode::FORBIDDEN => GitHubError::Forbidden(message),
        _ => GitHubError::Http {
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

fn unreachable(what: &str, err: &reqwest::Error) -> GitHubError {
    let reason = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "could not connect".to_string()
    } else {
        err.without_url_string()
    };
    GitHubError::Unreachable {
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
