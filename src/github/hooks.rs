//! The repository webhook that delivers to Slipway: create it, or find and
//! update the one made before, so that running `hook install` again never
//! adds a second hook; then ping it and see whether the ping arrived.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::{ForgeError, GitHub};
use crate::secret::Secret;
use crate::types::Repository;

/// Hooks listed per page, and pages read at most (GitHub allows 20 hooks per event).
const PER_PAGE: usize = 100;
const MAX_PAGES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no GitHub token: set --github-token (or SLIPWAY_GITHUB_TOKEN) to a token with the Webhooks read and write permission on {0}")]
    NoToken(Repository),
    #[error("{0} not found, or the token may not manage its hooks: the token needs the Webhooks read and write permission")]
    NoAccess(Repository),
    #[error("`{0}` is not an http(s) URL; give Slipway's public base URL, e.g. https://example.ngrok.app")]
    BadUrl(String),
    #[error("{0}")]
    GitHub(ForgeError),
    #[error("GitHub's answer about the hooks of {repo} is not what its API documents: {reason}")]
    Unexpected { repo: Repository, reason: String },
}

impl HookError {
    fn from_github(repo: &Repository, err: ForgeError) -> Self {
        match err {
            ForgeError::NotFound { .. } => HookError::NoAccess(repo.clone()),
            other => HookError::GitHub(other),
        }
    }
}

/// The hook as GitHub describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Hook {
    pub id: u64,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub config: HookConfig,
    #[serde(default)]
    pub last_response: Option<LastResponse>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HookConfig {
    #[serde(default)]
    pub url: Option<String>,
}

/// GitHub's record of the hook's latest delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct LastResponse {
    pub code: Option<u16>,
    pub status: Option<String>,
    pub message: Option<String>,
}

impl LastResponse {
    pub fn summary(&self) -> String {
        let code = self.code.map(|c| c.to_string());
        [code, self.status.clone(), self.message.clone()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One attempt GitHub made to deliver an event to the hook.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub guid: String,
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub redelivery: bool,
}

impl Delivery {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// What `install` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Created,
    Updated,
    /// GitHub had a hook with this URL already (422 "Hook already exists").
    Adopted,
}

impl Installed {
    pub fn as_str(self) -> &'static str {
        match self {
            Installed::Created => "created",
            Installed::Updated => "updated",
            Installed::Adopted => "adopted",
        }
    }
}

/// `BASE/webhook`, from Slipway's public base URL.
pub fn webhook_url(base: &str) -> Result<String, HookError> {
    let base = base.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(base).map_err(|_| HookError::BadUrl(base.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(HookError::BadUrl(base.to_string()));
    }
    if base.ends_with("/webhook") {
        return Ok(base.to_string());
    }
    Ok(format!("{base}/webhook"))
}

/// The hook's configuration. The secret is always sent: GitHub drops it
/// from a hook whose config is updated without it.
fn config(url: &str, secret: &Secret) -> serde_json::Value {
    json!({
        "url": url,
        "content_type": "json",
        "secret": secret.expose(),
        "insecure_ssl": "0",
    })
}

/// Slipway's hook among `hooks`: the one already at `url`, else one that
/// delivers `pull_request` to a `/webhook` path (an earlier URL of Slipway's).
fn ours<'a>(hooks: &'a [Hook], url: &str) -> Option<&'a Hook> {
    let at = |h: &&Hook| h.config.url.as_deref() == Some(url);
    let looks_like_ours = |h: &&Hook| {
        h.events.iter().any(|e| e == "pull_request")
            && h.config
                .url
                .as_deref()
                .is_some_and(|u| u.trim_end_matches('/').ends_with("/webhook"))
    };
    hooks
        .iter()
        .find(at)
        .or_else(|| hooks.iter().find(looks_like_ours))
}

impl GitHub {
    fn hooks_url(&self, repo: &Repository, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["repos", repo.owner(), repo.name(), "hooks"];
        segments.extend_from_slice(rest);
        self.url(&segments)
    }

    async fn hooks_call(
        &self,
        repo: &Repository,
        method: Method,
        url: reqwest::Url,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HookError> {
        if !self.has_token() {
            return Err(HookError::NoToken(repo.clone()));
        }
        let what = format!("the webhooks of {repo}");
        self.call(method, url, body, &what)
            .await
            .map_err(|e| HookError::from_github(repo, e))
    }

    fn decode<T: serde::de::DeserializeOwned>(
        repo: &Repository,
        value: serde_json::Value,
    ) -> Result<T, HookError> {
        serde_json::from_value(value).map_err(|e| HookError::Unexpected {
            repo: repo.clone(),
            reason: e.to_string(),
        })
    }

    pub async fn list_hooks(&self, repo: &Repository) -> Result<Vec<Hook>, HookError> {
        let mut hooks = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.hooks_url(repo, &[]);
            url.query_pairs_mut()
                .append_pair("per_page", &PER_PAGE.to_string())
                .append_pair("page", &page.to_string());
            let value = self.hooks_call(repo, Method::GET, url, None).await?;
            let batch: Vec<Hook> = Self::decode(repo, value)?;
            let last = batch.len() < PER_PAGE;
            hooks.extend(batch);
            if last {
                break;
            }
        }
        Ok(hooks)
    }

    pub async fn get_hook(&self, repo: &Repository, id: u64) -> Result<Hook, HookError> {
        let url = self.hooks_url(repo, &[&id.to_string()]);
        let value = self.hooks_call(repo, Method::GET, url, None).await?;
        Self::decode(repo, value)
    }

    /// Points Slipway's hook of `repo` at `url` (made by [`webhook_url`]):
    /// updates the one installed before, or creates it.
    pub async fn install_hook(
        &self,
        repo: &Repository,
        url: &str,
        secret: &Secret,
    ) -> Result<(Hook, Installed), HookError> {
        let hooks = self.list_hooks(repo).await?;
        if let Some(hook) = ours(&hooks, url) {
            let hook = self.update_hook(repo, hook.id, url, secret).await?;
            return Ok((hook, Installed::Updated));
        }
        let body = json!({
            "name": "web",
            "active": true,
            "events": ["pull_request"],
            "config": config(url, secret),
        });
        let created = self
            .hooks_call(repo, Method::POST, self.hooks_url(repo, &[]), Some(&body))
            .await;
        match created {
            Ok(value) => Ok((Self::decode(repo, value)?, Installed::Created)),
            // A hook made meanwhile, or one `ours` did not recognise.
            Err(HookError::GitHub(ForgeError::Http { status: 422, .. })) => {
                let hooks = self.list_hooks(repo).await?;
                let Some(existing) = hooks.iter().find(|h| h.config.url.as_deref() == Some(url))
                else {
                    return Err(HookError::Unexpected {
                        repo: repo.clone(),
                        reason: format!("422 for a new hook, yet no hook points at {url}"),
                    });
                };
                let hook = self.update_hook(repo, existing.id, url, secret).await?;
                Ok((hook, Installed::Adopted))
            }
            Err(err) => Err(err),
        }
    }

    async fn update_hook(
        &self,
        repo: &Repository,
        id: u64,
        url: &str,
        secret: &Secret,
    ) -> Result<Hook, HookError> {
        let body = json!({
            "active": true,
            "events": ["pull_request"],
            "config": config(url, secret),
        });
        let endpoint = self.hooks_url(repo, &[&id.to_string()]);
        let value = self
            .hooks_call(repo, Method::PATCH, endpoint, Some(&body))
            .await?;
        Self::decode(repo, value)
    }

    /// Moves the hook to `url` with the config endpoint, secret included.
    pub async fn repoint_hook(
        &self,
        repo: &Repository,
        id: u64,
        url: &str,
        secret: &Secret,
    ) -> Result<(), HookError> {
        let endpoint = self.hooks_url(repo, &[&id.to_string(), "config"]);
        let body = config(url, secret);
        self.hooks_call(repo, Method::PATCH, endpoint, Some(&body))
            .await
            .map(|_| ())
    }

    pub async fn ping_hook(&self, repo: &Repository, id: u64) -> Result<(), HookError> {
        let endpoint = self.hooks_url(repo, &[&id.to_string(), "pings"]);
        self.hooks_call(repo, Method::POST, endpoint, None)
            .await
            .map(|_| ())
    }

    /// The hook's recent deliveries, newest first.
    pub async fn deliveries(&self, repo: &Repository, id: u64) -> Result<Vec<Delivery>, HookError> {
        let mut endpoint = self.hooks_url(repo, &[&id.to_string(), "deliveries"]);
        endpoint
            .query_pairs_mut()
            .append_pair("per_page", &PER_PAGE.to_string());
        let value = self.hooks_call(repo, Method::GET, endpoint, None).await?;
        let mut deliveries: Vec<Delivery> = Self::decode(repo, value)?;
        deliveries.sort_by_key(|d| std::cmp::Reverse(d.id));
        Ok(deliveries)
    }

    /// Pings the hook and waits up to `wait` for GitHub to record the
    /// ping's delivery; `None` when it has not by then.
    pub async fn ping_and_wait(
        &self,
        repo: &Repository,
        id: u64,
        wait: Duration,
    ) -> Result<Option<Delivery>, HookError> {
        let seen = self.deliveries(repo, id).await?.first().map_or(0, |d| d.id);
        self.ping_hook(repo, id).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let latest = self.deliveries(repo, id).await?;
            if let Some(ping) = latest
                .into_iter()
                .find(|d| d.id > seen && d.event == "ping")
            {
                return Ok(Some(ping));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: u64, url: &str, events: &[&str]) -> Hook {
        Hook {
            id,
            events: events.iter().map(|e| e.to_string()).collect(),
            config: HookConfig {
                url: Some(url.into()),
            },
            last_response: None,
        }
    }

    #[test]
    fn webhook_urls_end_in_webhook_once() {
        assert_eq!(
            webhook_url("https://a.ngrok.app/").ok().as_deref(),
            Some("https://a.ngrok.app/webhook")
        );
        assert_eq!(
            webhook_url("https://a.ngrok.app/webhook").ok().as_deref(),
            Some("https://a.ngrok.app/webhook")
        );
        assert!(webhook_url("a.ngrok.app").is_err());
        assert!(webhook_url("ftp://a.ngrok.app").is_err());
    }

    #[test]
    fn our_hook_is_the_one_at_the_url_else_the_pull_request_webhook() {
        let hooks = vec![
            hook(1, "https://ci.example/hooks", &["push", "pull_request"]),
            hook(2, "https://old.ngrok.app/webhook", &["pull_request"]),
            hook(3, "https://new.ngrok.app/webhook", &["pull_request"]),
        ];
        assert_eq!(
            ours(&hooks, "https://new.ngrok.app/webhook").map(|h| h.id),
            Some(3)
        );
        assert_eq!(
            ours(&hooks, "https://third.ngrok.app/webhook").map(|h| h.id),
            Some(2)
        );
        assert!(ours(&hooks[..1], "https://x/webhook").is_none());
    }
}
