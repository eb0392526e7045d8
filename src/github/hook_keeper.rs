//! `--manage-hooks`: keeps each served repository's hook pointed at
//! Slipway's current public URL. A free ngrok tunnel gets a new URL at every
//! restart; the agent's API is polled so that GitHub has the new one within
//! a poll interval. What GitHub last said about each hook is kept for the page.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::GitHub;
use super::hooks::{webhook_url, HookError};
use crate::secret::Secret;
use crate::types::Repository;

/// Where Slipway's public URL comes from.
#[derive(Debug, Clone)]
pub enum PublicUrl {
    Fixed(String),
    Tunnel { ngrok_api: String },
}

impl PublicUrl {
    async fn current(&self) -> Result<String, String> {
        match self {
            PublicUrl::Fixed(url) => Ok(url.clone()),
            PublicUrl::Tunnel { ngrok_api } => crate::setup::tunnel::public_url(ngrok_api)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// One repository's hook as last seen, for the page.
#[derive(Debug, Clone, Default)]
pub struct HookState {
    pub id: Option<u64>,
    pub url: Option<String>,
    /// GitHub's `last_response` of the hook, summed up.
    pub last_response: Option<String>,
    pub error: Option<String>,
}

/// The hooks' states, shared with the page.
#[derive(Default)]
pub struct HookBoard(Mutex<BTreeMap<String, HookState>>);

impl HookBoard {
    pub fn snapshot(&self) -> Vec<(String, HookState)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn update(&self, repo: &Repository, change: impl FnOnce(&mut HookState)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        change(map.entry(repo.to_string()).or_default());
    }
}

pub struct HookKeeper {
    pub github: GitHub,
    pub repos: Vec<Repository>,
    pub public_url: PublicUrl,
    pub secret: Secret,
    pub interval: Duration,
    pub board: Arc<HookBoard>,
}

impl HookKeeper {
    /// Runs until the process ends.
    pub async fn run(self) {
        // The URL each repository's hook was last pointed at.
        let mut applied: BTreeMap<String, String> = BTreeMap::new();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let url = match self.public_url.current().await.map(|u| webhook_url(&u)) {
                Ok(Ok(url)) => url,
                Ok(Err(err)) => {
                    self.report_all(&err.to_string());
                    continue;
                }
                Err(err) => {
                    self.report_all(&err);
                    continue;
                }
            };
            for repo in &self.repos {
                if applied.get(repo.as_str()) == Some(&url) && self.refresh(repo, &url).await {
                    continue;
                }
                if self.point(repo, &url).await {
                    applied.insert(repo.to_string(), url.clone());
                } else {
                    applied.remove(repo.as_str());
                }
            }
        }
    }

    fn report_all(&self, error: &str) {
        tracing::warn!(%error, "no public URL for the webhooks yet");
        for repo in &self.repos {
            self.board
                .update(repo, |s| s.error = Some(format!("no public URL: {error}")));
        }
    }

    async fn point(&self, repo: &Repository, url: &str) -> bool {
        match self.github.install_hook(repo, url, &self.secret).await {
            Ok((hook, done)) => {
                tracing::info!(repository = %repo, hook = hook.id, %url, "webhook {}", done.as_str());
                self.board.update(repo, |s| {
                    s.id = Some(hook.id);
                    s.url = Some(url.to_string());
                    s.last_response = hook.last_response.as_ref().map(|r| r.summary());
                    s.error = None;
                });
                true
            }
            Err(err) => {
                tracing::warn!(repository = %repo, %err, "could not point the webhook at Slipway");
                self.board.update(repo, |s| s.error = Some(err.to_string()));
                false
            }
        }
    }

    /// Reads the hook's state; false when it no longer points at `url`
    /// (changed or deleted by someone), so that it is pointed again.
    async fn refresh(&self, repo: &Repository, url: &str) -> bool {
        let id = self
            .board
            .snapshot()
            .into_iter()
            .find_map(|(name, s)| (name == repo.as_str()).then_some(s.id).flatten());
        let Some(id) = id else {
            return false;
        };
        match self.github.get_hook(repo, id).await {
            Ok(hook) => {
                let still = hook.config.url.as_deref() == Some(url);
                self.board.update(repo, |s| {
                    s.url = hook.config.url.clone();
                    s.last_response = hook.last_response.as_ref().map(|r| r.summary());
                    s.error = None;
                });
                still
            }
            Err(HookError::NoAccess(_)) => false,
            Err(err) => {
                self.board.update(repo, |s| s.error = Some(err.to_string()));
                true
            }
        }
    }
}
