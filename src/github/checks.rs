//! Check runs (GitHub Apps only): the `slipway` check on the merge commit,
//! queued or in progress, then completed with the images. A check run gives
//! the pull request page its "Re-run" button, which comes back as a
//! `check_run` `rerequested` delivery carrying `external_id`: the build's id.

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
