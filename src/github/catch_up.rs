//! Merges Slipway missed. GitHub does not redeliver a failed delivery by
//! itself, so the recently closed pull requests of each served repository
//! are listed, and every merge since the repository's first build here that
//! has no build yet is built with trigger `catch-up`. Gitea and Forgejo list
//! theirs the same way; a GitHub App's repositories are those it is
//! installed on, filtered by `--repositories`.
//!
//! The pulls listing was chosen over the hooks' delivery log: it needs only
//! read access to pull requests (the delivery log needs admin rights on the
//! hooks), it knows merges whose delivery was never attempted (a hook that
//! was missing, inactive or pointed elsewhere), and it is not limited to the
//! three days GitHub keeps deliveries.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::client::{ForgeError, GitHub};
use crate::state::AppState;
use crate::store::{now_rfc3339, Admission, BuildRecord, Trigger};
use crate::trigger::MergedPullRequest;
use crate::types::{CommitSha, Forge, Repository};

const PER_PAGE: usize = 50;
/// A round reads at most this many pages per repository; older merges than
/// that are left alone (at 50 a page, 500 pull requests closed since).
const MAX_PAGES: usize = 10;

/// The fields of a listed pull request that a catch-up needs.
#[derive(Debug, Deserialize)]
struct ListedPull {
    number: u64,
    merged_at: Option<String>,
    updated_at: Option<String>,
    merge_commit_sha: Option<String>,
    base: ListedBase,
}

#[derive(Debug, Deserialize)]
struct ListedBase {
    #[serde(rename = "ref")]
    branch: String,
    repo: Option<ListedRepo>,
}

#[derive(Debug, Deserialize)]
struct ListedRepo {
    html_url: Option<String>,
}

/// A merged pull request as listed, with when it was merged.
#[derive(Debug)]
pub struct Merge {
    pub pull: MergedPullRequest,
    pub merged_at: OffsetDateTime,
}

fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(raw, &Rfc3339).ok()
}

impl ListedPull {
    fn into_merge(self, repo: &Repository, forge: Forge) -> Option<Merge> {
        let merged_at = parse_time(self.merged_at.as_deref()?)?;
        let commit = CommitSha::parse(self.merge_commit_sha.as_deref()?).ok()?;
        let source_url = self
            .base
            .repo
            .and_then(|r| r.html_url)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .unwrap_or_else(|| format!("https://github.com/{repo}"));
        Some(Merge {
            pull: MergedPullRequest {
                repository: repo.clone(),
                number: self.number,
                commit,
                base_ref: self.base.branch,
                source_url,
                forge,
            },
            merged_at,
        })
    }
}

impl GitHub {
    /// Pull requests of `repo` merged at or after `since`, oldest first.
    /// Pages are read newest-updated first until one is older than `since`.
    pub async fn merged_since(
        &self,
        repo: &Repository,
        since: OffsetDateTime,
    ) -> Result<Vec<Merge>, ForgeError> {
        let what = format!("closed pull requests of {repo}");
        let mut merges = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.url(&["repos", repo.owner(), repo.name(), "pulls"]);
            match self.site() {
                // Gitea's names for the same listing.
                Forge::Gitea | Forge::Forgejo => url
                    .query_pairs_mut()
                    .append_pair("state", "closed")
                    .append_pair("sort", "recentupdate")
                    .append_pair("limit", &PER_PAGE.to_string())
                    .append_pair("page", &page.to_string()),
                Forge::GitHub | Forge::GitLab => url
                    .query_pairs_mut()
                    .append_pair("state", "closed")
                    .append_pair("sort", "updated")
                    .append_pair("direction", "desc")
                    .append_pair("per_page", &PER_PAGE.to_string())
                    .append_pair("page", &page.to_string()),
            };
            let value = self.call(Method::GET, url, None, &what).await?;
            let pulls: Vec<ListedPull> =
                serde_json::from_value(value).map_err(|e| ForgeError::Http {
                    site: self.site(),
                    status: 200,
                    what: what.clone(),
                    message: format!("unexpected listing: {e}"),
                })?;
            let full = pulls.len() == PER_PAGE;
            let mut older_seen = false;
            for pull in pulls {
                // A pull updated before `since` was merged before it too.
                if pull
                    .updated_at
                    .as_deref()
                    .and_then(parse_time)
                    .is_some_and(|t| t < since)
                {
                    older_seen = true;
                    continue;
                }
                let merge = pull.into_merge(repo, self.site());
                if let Some(merge) = merge.filter(|m| m.merged_at >= since) {
                    merges.push(merge);
                }
            }
            if !full || older_seen {
                break;
            }
        }
        merges.sort_by_key(|m| m.merged_at);
        Ok(merges)
    }
}

/// Where missed merges are looked for: a forge's client, and the repositories
/// to look at there (`None`: those the GitHub App is installed on, filtered
/// by `--repositories`).
pub struct Source {
    pub forge: GitHub,
    pub repositories: Option<Vec<Repository>>,
}

/// Runs a round at start and then every `interval`, until the process ends.
pub async fn run(state: Arc<AppState>, sources: Vec<Source>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for source in &sources {
            let repos = match &source.repositories {
                Some(repos) => repos.clone(),
                None => match source.forge.installation_repositories().await {
                    Ok(repos) => repos
                        .into_iter()
                        .filter(|r| state.intake.serves(r))
                        .collect(),
                    Err(err) => {
                        tracing::warn!(%err, "could not list the GitHub App's repositories; trying again at the next interval");
                        continue;
                    }
                },
            };
            for repo in &repos {
                match round(&state, &source.forge, repo).await {
                    Ok(_) => {}
                    // With several forges, a repository lives on one of them.
                    Err(CatchUpError::GitHub(ForgeError::NotFound { .. }))
                        if source.forge.site() != Forge::GitHub =>
                    {
                        tracing::debug!(repository = %repo, forge = %source.forge.site(), "not on this forge");
                    }
                    Err(err) => {
                        tracing::warn!(repository = %repo, %err, "catch-up of missed merges failed; trying again at the next interval")
                    }
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("{0}")]
    GitHub(#[from] ForgeError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Admission(#[from] crate::admission::AdmissionError),
    #[error("the store holds an unreadable time `{0}`")]
    BadTime(String),
}

/// Admits every merge of `repo` since its first build here that has no
/// build; returns how many were admitted.
pub async fn round(
    state: &AppState,
    forge: &GitHub,
    repo: &Repository,
) -> Result<usize, CatchUpError> {
    let since = state
        .store
        .catch_up_since(repo.as_str(), &now_rfc3339())
        .await?;
    // GitHub's times are whole seconds: the merge that led to the first
    // build is usually in that build's own second.
    let since = parse_time(&since)
        .and_then(|t| t.replace_nanosecond(0).ok())
        .ok_or(CatchUpError::BadTime(since))?;
    let merges = forge.merged_since(repo, since).await?;
    let mut admitted = 0;
    for merge in merges {
        if state.intake.refusal(&merge.pull).is_some() {
            continue;
        }
        let record = BuildRecord::queued(merge.pull, None, Trigger::CatchUp);
        match state.intake.admit(record).await? {
            Admission::Created(_) => {
                state.metrics.catch_up_build();
                admitted += 1;
            }
            Admission::Duplicate(_) => {}
            Admission::QueueFull => {
                tracing::warn!("queue full; the remaining missed merges wait for the next round");
                break;
            }
        }
    }
    Ok(admitted)
}
