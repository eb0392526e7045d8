//! The decision: does this delivery publish images, and if not, why not.

use crate::types::{CommitSha, Repository};
use crate::webhook::payload::{self, PayloadError, PullRequestEvent};

/// A merged pull request, validated: everything a build needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedPullRequest {
    pub repository: Repository,
    pub number: u64,
    /// `merge_commit_sha`: what landed on the base branch, never the PR's head.
    pub commit: CommitSha,
    pub base_ref: String,
    /// The repository's web URL, for the `org.opencontainers.image.source` label.
    pub source_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Build(MergedPullRequest),
    Ignore(String),
}

/// Why merges into `base` do not publish under `--branches`, or `None`
/// when they do (`branches` empty: every branch publishes).
pub fn branch_refusal(branches: &[String], base: &str) -> Option<String> {
    (!branches.is_empty() && !branches.iter().any(|b| b == base))
        .then(|| format!("base branch `{}` is not in --branches", short(base)))
}

/// Decides what to do with one delivery. `branches` empty means every base branch.
pub fn decide(event: &str, json: &[u8], branches: &[String]) -> Result<Decision, PayloadError> {
    if event != "pull_request" {
        payload::check_json(json)?;
        return Ok(Decision::Ignore(if event == "ping" {
            "ping".to_string()
        } else {
            format!("event `{}` is not handled", short(event))
        }));
    }
    let event = payload::parse_pull_request_event(json)?;
    let action = event
        .action
        .as_deref()
        .ok_or(PayloadError::MissingField("action"))?;
    if action != "closed" {
        return Ok(Decision::Ignore(format!(
            "action `{}` is not `closed`",
            short(action)
        )));
    }
    let merged = merged_flag(&event)?;
    if !merged {
        return Ok(Decision::Ignore(
            "pull request closed without merging".to_string(),
        ));
    }
    let merged = merged_pull_request(event)?;
    if let Some(reason) = branch_refusal(branches, &merged.base_ref) {
        return Ok(Decision::Ignore(reason));
    }
    Ok(Decision::Build(merged))
}

fn merged_flag(event: &PullRequestEvent) -> Result<bool, PayloadError> {
    let pr = event
        .pull_request
        .as_ref()
        .ok_or(PayloadError::MissingField("pull_request"))?;
    pr.merged
        .ok_or(PayloadError::MissingField("pull_request.merged"))
}

fn merged_pull_request(event: PullRequestEvent) -> Result<MergedPullRequest, PayloadError> {
    let pr = event
        .pull_request
        .ok_or(PayloadError::MissingField("pull_request"))?;
    let repo = event
        .repository
        .ok_or(PayloadError::MissingField("repository"))?;
    let full_name = repo
        .full_name
        .ok_or(PayloadError::MissingField("repository.full_name"))?;
    let repository =
        Repository::parse(&full_name).map_err(|e| invalid("repository.full_name", e))?;
    let sha = pr
        .merge_commit_sha
        .ok_or(PayloadError::MissingField("pull_request.merge_commit_sha"))?;
    let commit = CommitSha::parse(&sha).map_err(|e| invalid("pull_request.merge_commit_sha", e))?;
    let number = pr
        .number
        .ok_or(PayloadError::MissingField("pull_request.number"))?;
    let base_ref = pr
        .base
        .and_then(|b| b.branch)
        .ok_or(PayloadError::MissingField("pull_request.base.ref"))?;
    let source_url = repo
        .html_url
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .unwrap_or_else(|| format!("https://github.com/{repository}"));
    Ok(MergedPullRequest {
        repository,
        number,
        commit,
        base_ref,
        source_url,
    })
}

fn invalid(field: &'static str, err: impl ToString) -> PayloadError {
    PayloadError::InvalidField {
        field,
        reason: err.to_string(),
    }
}

/// Event and action names come from the sender; keep echoes of them short.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn merged_fixture_builds_the_merge_commit_not_the_head() {
        let json = fixture("pull_request.closed.merged.ailisp-reallyfastci.json");
        let Ok(Decision::Build(pr)) = decide("pull_request", &json, &[]) else {
            panic!("expected a build");
        };
        assert_eq!(
            pr.commit.as_str(),
            "a21683865c088b5fe1906cf6552d15a285a4986d"
        );
        assert_eq!(pr.repository.as_str(), "ailisp/gcbapp-buildconfig-example");
        assert_eq!(pr.number, 3);
        assert_eq!(pr.base_ref, "master");
        assert_eq!(
            pr.source_url,
            "https://github.com/ailisp/gcbapp-buildconfig-example"
        );
    }

    #[test]
    fn closed_without_merge_is_ignored_despite_its_merge_commit_sha() {
        let json = fixture("pull_request.closed.not_merged.octokit-webhooks.json");
        assert!(matches!(
            decide("pull_request", &json, &[]),
            Ok(Decision::Ignore(_))
        ));
    }

    #[test]
    fn other_actions_and_events_are_ignored() {
        for name in [
            "pull_request.opened.octokit-webhooks.json",
            "pull_request.synchronize.octokit-webhooks.json",
        ] {
            assert!(matches!(
                decide("pull_request", &fixture(name), &[]),
                Ok(Decision::Ignore(_))
            ));
        }
        let ping = fixture("ping.octokit-webhooks.json");
        assert_eq!(
            decide("ping", &ping, &[]),
            Ok(Decision::Ignore("ping".into()))
        );
        assert!(matches!(
            decide("push", b"{}", &[]),
            Ok(Decision::Ignore(_))
        ));
        assert!(decide("push", b"{", &[]).is_err());
    }

    #[test]
    fn branches_filter_the_base() {
        let json = fixture("pull_request.closed.merged.ailisp-reallyfastci.json");
        let only_main = vec!["main".to_string()];
        assert!(matches!(
            decide("pull_request", &json, &only_main),
            Ok(Decision::Ignore(_))
        ));
        let with_master = vec!["main".to_string(), "master".to_string()];
        assert!(matches!(
            decide("pull_request", &json, &with_master),
            Ok(Decision::Build(_))
        ));
    }

    fn merged_with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Decision, PayloadError> {
        let mut value: serde_json::Value = serde_json::from_slice(&fixture(
            "pull_request.closed.merged.ailisp-reallyfastci.json",
        ))
        .expect("fixture is JSON");
        edit(&mut value);
        decide("pull_request", value.to_string().as_bytes(), &[])
    }

    #[test]
    fn missing_or_bad_fields_are_errors() {
        let missing = |path: &'static [&'static str]| {
            merged_with(|v| {
                let (last, parents) = path.split_last().expect("non-empty");
                let mut node = v;
                for p in parents {
                    node = &mut node[*p];
                }
                node.as_object_mut().map(|o| o.remove(*last));
            })
        };
        assert!(missing(&["pull_request"]).is_err());
        assert!(missing(&["pull_request", "merged"]).is_err());
        assert!(missing(&["pull_request", "merge_commit_sha"]).is_err());
        assert!(missing(&["repository"]).is_err());
        assert!(
            merged_with(|v| v["pull_request"]["merge_commit_sha"] = serde_json::Value::Null)
                .is_err()
        );
        assert!(merged_with(|v| v["repository"]["full_name"] = "../../etc".into()).is_err());
        assert!(merged_with(|v| v["repository"]["full_name"] = "a/..".into()).is_err());
    }
}
