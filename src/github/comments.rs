//! The sticky comment on a merged pull request: created once, then edited
//! in place by every later build of the same merge (a retry). Gitea and
//! Forgejo take GitHub's issue-comment calls; GitLab's are merge request notes.

use reqwest::Method;
use serde_json::json;

use super::client::{ForgeError, GitHub};
use crate::types::{Forge, Repository};

impl GitHub {
    /// Writes `body` into comment `existing` when given (and still there),
    /// else adds a comment to pull request `number`; returns the comment id.
    pub async fn upsert_pr_comment(
        &self,
        repo: &Repository,
        number: u64,
        existing: Option<u64>,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let payload = json!({ "body": body });
        let what = format!("the Slipway comment on {repo}#{number}");
        if let Some(id) = existing {
            let url = self.comment_url(repo, number, Some(id));
            let method = match self.site() {
                Forge::GitLab => Method::PUT,
                Forge::GitHub | Forge::Gitea | Forge::Forgejo => Method::PATCH,
            };
            match self.call(method, url, Some(&payload), &what).await {
                Ok(_) => return Ok(id),
                // Deleted by someone: a new one takes its place.
                Err(ForgeError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let url = self.comment_url(repo, number, None);
        let created = self.call(Method::POST, url, Some(&payload), &what).await?;
        created["id"].as_u64().ok_or_else(|| ForgeError::Http {
            site: self.site(),
            status: 201,
            what,
            message: "the created comment has no id".into(),
        })
    }

    /// A comment `existing` on pull request `number`, or where a new one is posted.
    fn comment_url(&self, repo: &Repository, number: u64, existing: Option<u64>) -> reqwest::Url {
        let number = number.to_string();
        let existing = existing.map(|id| id.to_string());
        match (self.site(), existing.as_deref()) {
            (Forge::GitLab, None) => self.url(&[
                "projects",
                repo.as_str(),
                "merge_requests",
                &number,
                "notes",
            ]),
            (Forge::GitLab, Some(id)) => self.url(&[
                "projects",
                repo.as_str(),
                "merge_requests",
                &number,
                "notes",
                id,
            ]),
            (_, None) => self.url(&[
                "repos",
                repo.owner(),
                repo.name(),
                "issues",
                &number,
                "comments",
            ]),
            (_, Some(id)) => {
                self.url(&["repos", repo.owner(), repo.name(), "issues", "comments", id])
            }
        }
    }
}
