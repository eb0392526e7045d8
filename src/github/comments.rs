//! The sticky comment on a merged pull request: created once, then edited
//! in place by every later build of the same merge (a retry).

use reqwest::Method;
use serde_json::json;

use super::client::{ForgeError, GitHub};
use crate::types::Repository;

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
            let id_text = id.to_string();
            let url = self.url(&[
                "repos",
                repo.owner(),
                repo.name(),
                "issues",
                "comments",
                &id_text,
            ]);
            match self.call(Method::PATCH, url, Some(&payload), &what).await {
                Ok(_) => return Ok(id),
                // Deleted by someone: a new one takes its place.
                Err(ForgeError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let number_text = number.to_string();
        let url = self.url(&[
            "repos",
            repo.owner(),
            repo.name(),
            "issues",
            &number_text,
            "comments",
        ]);
        let created = self.call(Method::POST, url, Some(&payload), &what).await?;
        created["id"].as_u64().ok_or_else(|| ForgeError::Http {
            site: crate::types::Forge::GitHub,
            status: 201,
            what,
            message: "the created comment has no id".into(),
        })
    }
}
