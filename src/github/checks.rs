//! Check runs (GitHub Apps only): the `slipway` check on the merge commit,
//! queued or in progress, then completed with the images. A check run gives
//! the pull request page its "Re-run" button, which comes back as a
//! `check_run` `rerequested` delivery carrying `external_id`: the build's id.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Method;

use super::client::{ForgeError, GitHub};
use crate::types::{CommitSha, Repository};

pub use crate::types::CHECK_RUN_NAME as CHECK_NAME;

/// What a check run shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    /// `queued`, `in_progress` or `completed`.
    pub status: &'static str,
    /// With `completed`: `success` or `failure`.
    pub conclusion: Option<&'static str>,
    pub title: String,
    pub summary: String,
    pub details_url: Option<String>,
    /// The build's id, so a "Re-run" names the build to retry.
    pub external_id: String,
}

impl GitHub {
    /// Updates the check run `existing`, or creates one on `commit`; returns its id.
    pub async fn upsert_check_run(
        &self,
        repo: &Repository,
        commit: &CommitSha,
        existing: Option<u64>,
        run: &CheckRun,
    ) -> Result<u64, ForgeError> {
        let mut body = serde_json::json!({
            "name": CHECK_NAME,
            "status": run.status,
            "external_id": run.external_id,
            "output": {
                "title": run.title.chars().take(200).collect::<String>(),
                "summary": run.summary.chars().take(60_000).collect::<String>(),
            },
        });
        if let Some(conclusion) = run.conclusion {
            body["conclusion"] = conclusion.into();
        }
        if let Some(url) = &run.details_url {
            body["details_url"] = url.clone().into();
        }
        let what = format!("check run on {commit} of {repo}");
        let answer = match existing {
            Some(id) => {
                let url = self.url(&[
                    "repos",
                    repo.owner(),
                    repo.name(),
                    "check-runs",
                    &id.to_string(),
                ]);
                self.call(Method::PATCH, url, Some(&body), &what).await?
            }
            None => {
                body["head_sha"] = commit.as_str().into();
                let url = self.url(&["repos", repo.owner(), repo.name(), "check-runs"]);
                self.call(Method::POST, url, Some(&body), &what).await?
            }
        };
        answer["id"].as_u64().ok_or_else(|| ForgeError::Http {
            site: crate::types::Forge::GitHub,
            status: 201,
            what,
            message: "the answer has no check run id".into(),
        })
    }
}

/// The check runs announced at admission, by build: the announcement runs
/// in the background (the webhook is answered first), and the build, when
/// it starts, waits for it and updates that check run rather than adding
/// a second one.
#[derive(Default)]
pub struct Announcements {
    by_build: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>>,
}

/// What a check run is announced for.
pub struct Announcement {
    pub repository: Repository,
    pub commit: CommitSha,
    pub build: String,
    /// The check run a retry inherits: set back to queued.
    pub existing: Option<u64>,
    pub details_url: Option<String>,
}

impl Announcements {
    /// Posts the `queued` check run in the background.
    pub fn announce(self: &Arc<Self>, github: GitHub, announcement: Announcement) {
        let slot = Arc::new(tokio::sync::Mutex::new(None));
        // Held before the task starts, so a build that starts at once waits for it.
        let Ok(mut guard) = slot.clone().try_lock_owned() else {
            return;
        };
        self.lock().insert(announcement.build.clone(), slot);
        tokio::spawn(async move {
            let run = CheckRun {
                status: "queued",
                conclusion: None,
                title: "queued".to_string(),
                summary: "Waiting for a build slot.".to_string(),
                details_url: announcement.details_url.clone(),
                external_id: announcement.build.clone(),
            };
            let written = github
                .upsert_check_run(
                    &announcement.repository,
                    &announcement.commit,
                    announcement.existing,
                    &run,
                )
                .await;
            match written {
                Ok(id) => *guard = Some(id),
                Err(err) => tracing::warn!(%err, "could not announce the check run"),
            }
        });
    }

    /// The check run announced for `build`, once its announcement is done.
    pub async fn announced(&self, build: &str) -> Option<u64> {
        let slot = self.lock().remove(build)?;
        let id = *slot.lock().await;
        id
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>> {
        self.by_build.lock().unwrap_or_else(|p| p.into_inner())
    }
}
