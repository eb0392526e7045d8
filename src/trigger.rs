//! The decision: does this delivery publish images, and if not, why not.

use crate::types::{CommitSha, Forge, Repository};
use crate::webhook::payload::{self, MergeRequestEvent, PayloadError, PullRequestEvent};

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
    /// Where the sources are read and the statuses go.
    pub forge: Forge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Build(MergedPullRequest),
    /// "Re-run" on Slipway's check run (or its suite): build that commit again.
    Rerun(RerunRequest),
    Ignore(String),
}

/// A check run's or check suite's `rerequested`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerunRequest {
    pub repository: Repository,
    pub commit: CommitSha,
    /// The build the check run reported (its `external_id`); a suite names none.
    pub build: Option<String>,
}

/// Why merges into `base` do not publish under `--branches`, or `None`
/// when they do (`branches` empty: every branch publishes).
pub fn branch_refusal(branches: &[String], base: &str) -> Option<String> {
    (!branches.is_empty() && !branches.iter().any(|b| b == base))
        .then(|| format!("base branch `{}` is not in --branches", short(base)))
}

/// Decides what to do with one delivery from `forge`. `branches` empty means
/// every base branch. Gitea and Forgejo send GitHub's `pull_request` payload
/// for what Slipway reads; GitLab sends its own.
pub fn decide(
    forge: Forge,
    event: &str,
    json: &[u8],
    branches: &[String],
) -> Result<Decision, PayloadError> {
    let decision = match forge {
        Forge::GitLab => decide_gitlab(event, json)?,
        Forge::GitHub | Forge::Gitea | Forge::Forgejo => decide_github(forge, event, json)?,
    };
    Ok(match decision {
        Decision::Build(merged) => match branch_refusal(branches, &merged.base_ref) {
            Some(reason) => Decision::Ignore(reason),
            None => Decision::Build(merged),
        },
        ignored => ignored,
    })
}

fn decide_github(forge: Forge, event: &str, json: &[u8]) -> Result<Decision, PayloadError> {
    if forge == Forge::GitHub && (event == "check_run" || event == "check_suite") {
        return decide_rerun(event, json);
    }
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
    Ok(Decision::Build(merged_pull_request(forge, event)?))
}

/// A `check_run` (of Slipway's check, by name) or `check_suite` whose
/// action is `rerequested` is a rerun; anything else about checks is ignored.
fn decide_rerun(event: &str, json: &[u8]) -> Result<Decision, PayloadError> {
    let value: serde_json::Value = payload::parse_value(json)?;
    if value["action"] != "rerequested" {
        return Ok(Decision::Ignore(format!(
            "{event} action is not `rerequested`"
        )));
    }
    let object = &value[event];
    if event == "check_run" && object["name"] != crate::types::CHECK_RUN_NAME {
        return Ok(Decision::Ignore("not Slipway's check run".to_string()));
    }
    let full_name = value["repository"]["full_name"]
        .as_str()
        .ok_or(PayloadError::MissingField("repository.full_name"))?;
    let repository =
        Repository::parse(full_name).map_err(|e| invalid("repository.full_name", e))?;
    let sha = object["head_sha"]
        .as_str()
        .ok_or(PayloadError::MissingField("head_sha"))?;
    let commit = CommitSha::parse(sha).map_err(|e| invalid("head_sha", e))?;
    let build = object["external_id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= 100)
        .map(str::to_string);
    Ok(Decision::Rerun(RerunRequest {
        repository,
        commit,
        build,
    }))
}

/// GitLab's `Merge Request Hook`: built when `object_attributes.action` is
/// `merge`. A fast-forward merge makes no merge commit (`merge_commit_sha`
/// null): the target branch then stands at the squash commit when there is
/// one, else at the merge request's last commit.
fn decide_gitlab(event: &str, json: &[u8]) -> Result<Decision, PayloadError> {
    if event != "Merge Request Hook" {
        payload::check_json(json)?;
        return Ok(Decision::Ignore(format!(
            "event `{}` is not handled",
            short(event)
        )));
    }
    let event: MergeRequestEvent = payload::parse_merge_request_event(json)?;
    let attributes = event
        .object_attributes
        .ok_or(PayloadError::MissingField("object_attributes"))?;
    let action = attributes
        .action
        .as_deref()
        .ok_or(PayloadError::MissingField("object_attributes.action"))?;
    if action != "merge" {
        return Ok(Decision::Ignore(format!(
            "action `{}` is not `merge`",
            short(action)
        )));
    }
    let project = event.project.ok_or(PayloadError::MissingField("project"))?;
    let path = project
        .path_with_namespace
        .ok_or(PayloadError::MissingField("project.path_with_namespace"))?;
    let repository =
        Repository::parse_nested(&path).map_err(|e| invalid("project.path_with_namespace", e))?;
    let (sha, field) = match (
        attributes.merge_commit_sha,
        attributes.squash_commit_sha,
        attributes.last_commit.and_then(|c| c.id),
    ) {
        (Some(sha), _, _) => (sha, "object_attributes.merge_commit_sha"),
        (None, Some(sha), _) => (sha, "object_attributes.squash_commit_sha"),
        (None, None, Some(sha)) => (sha, "object_attributes.last_commit.id"),
        (None, None, None) => {
            return Err(PayloadError::MissingField(
                "object_attributes.merge_commit_sha",
            ))
        }
    };
    let commit = CommitSha::parse(&sha).map_err(|e| invalid(field, e))?;
    let number = attributes
        .iid
        .ok_or(PayloadError::MissingField("object_attributes.iid"))?;
    let base_ref = attributes.target_branch.ok_or(PayloadError::MissingField(
        "object_attributes.target_branch",
    ))?;
    let source_url = project
        .web_url
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .ok_or(PayloadError::MissingField("project.web_url"))?;
    Ok(Decision::Build(MergedPullRequest {
        repository,
        number,
        commit,
        base_ref,
        source_url,
        forge: Forge::GitLab,
    }))
}

fn merged_flag(event: &PullRequestEvent) -> Result<bool, PayloadError> {
    let pr = event
        .pull_request
        .as_ref()
        .ok_or(PayloadError::MissingField("pull_request"))?;
    pr.merged
        .ok_or(PayloadError::MissingField("pull_request.merged"))
}

fn merged_pull_request(
    forge: Forge,
    event: PullRequestEvent,
) -> Result<MergedPullRequest, PayloadError> {
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
        forge,
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
        let Ok(Decision::Build(pr)) = decide(Forge::GitHub, "pull_request", &json, &[]) else {
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
            decide(Forge::GitHub, "pull_request", &json, &[]),
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
                decide(Forge::GitHub, "pull_request", &fixture(name), &[]),
                Ok(Decision::Ignore(_))
            ));
        }
        let ping = fixture("ping.octokit-webhooks.json");
        assert_eq!(
            decide(Forge::GitHub, "ping", &ping, &[]),
            Ok(Decision::Ignore("ping".into()))
        );
        assert!(matches!(
            decide(Forge::GitHub, "push", b"{}", &[]),
            Ok(Decision::Ignore(_))
        ));
        assert!(decide(Forge::GitHub, "push", b"{", &[]).is_err());
    }

    #[test]
    fn branches_filter_the_base() {
        let json = fixture("pull_request.closed.merged.ailisp-reallyfastci.json");
        let only_main = vec!["main".to_string()];
        assert!(matches!(
            decide(Forge::GitHub, "pull_request", &json, &only_main),
            Ok(Decision::Ignore(_))
        ));
        let with_master = vec!["main".to_string(), "master".to_string()];
        assert!(matches!(
            decide(Forge::GitHub, "pull_request", &json, &with_master),
            Ok(Decision::Build(_))
        ));
    }

    fn merged_with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Decision, PayloadError> {
        let mut value: serde_json::Value = serde_json::from_slice(&fixture(
            "pull_request.closed.merged.ailisp-reallyfastci.json",
        ))
        .expect("fixture is JSON");
        edit(&mut value);
        decide(
            Forge::GitHub,
            "pull_request",
            value.to_string().as_bytes(),
            &[],
        )
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

    #[test]
    fn gitea_merges_read_as_github_ones_do() {
        let json = fixture("forges/gitea.pull_request.closed.merged.woodpecker.json");
        let Ok(Decision::Build(pr)) = decide(Forge::Gitea, "pull_request", &json, &[]) else {
            panic!("expected a build");
        };
        assert_eq!(
            pr.commit.as_str(),
            "f2440f050054df0f8ecabcace648f1683509064c"
        );
        assert_eq!(pr.repository.as_str(), "anbraten/test-repo");
        assert_eq!(pr.source_url, "https://gitea.com/anbraten/test-repo");
        assert_eq!(pr.forge, Forge::Gitea);
        let closed = fixture("forges/gitea.pull_request.closed.not_merged.woodpecker.json");
        assert!(matches!(
            decide(Forge::Forgejo, "pull_request", &closed, &[]),
            Ok(Decision::Ignore(_))
        ));
        let push = fixture("forges/gitea.push.woodpecker.json");
        assert!(matches!(
            decide(Forge::Gitea, "push", &push, &[]),
            Ok(Decision::Ignore(_))
        ));
    }

    #[test]
    fn gitlab_merges_build_the_merge_commit() {
        let json = fixture("forges/gitlab.merge_request.merge.woodpecker.json");
        let Ok(Decision::Build(mr)) = decide(Forge::GitLab, "Merge Request Hook", &json, &[])
        else {
            panic!("expected a build");
        };
        assert_eq!(
            mr.commit.as_str(),
            "43411b53d670203e887c4985c4e58e8e6b7c109e"
        );
        assert_eq!(mr.repository.as_str(), "anbraten/woodpecker-test");
        assert_eq!(mr.number, 4);
        assert_eq!(mr.base_ref, "main");
        assert_eq!(mr.forge, Forge::GitLab);
        let only_release = vec!["release".to_string()];
        assert!(matches!(
            decide(Forge::GitLab, "Merge Request Hook", &json, &only_release),
            Ok(Decision::Ignore(_))
        ));
        let closed = fixture("forges/gitlab.merge_request.close.woodpecker.json");
        assert!(matches!(
            decide(Forge::GitLab, "Merge Request Hook", &closed, &[]),
            Ok(Decision::Ignore(_))
        ));
        let push = fixture("forges/gitlab.push.woodpecker.json");
        assert!(matches!(
            decide(Forge::GitLab, "Push Hook", &push, &[]),
            Ok(Decision::Ignore(_))
        ));
    }

    #[test]
    fn a_gitlab_fast_forward_merge_builds_where_the_target_now_stands() {
        let mut value: serde_json::Value = serde_json::from_slice(&fixture(
            "forges/gitlab.merge_request.merge.woodpecker.json",
        ))
        .expect("fixture is JSON");
        value["object_attributes"]["merge_commit_sha"] = serde_json::Value::Null;
        value["project"]["path_with_namespace"] = "group/sub/project".into();
        let Ok(Decision::Build(mr)) = decide(
            Forge::GitLab,
            "Merge Request Hook",
            value.to_string().as_bytes(),
            &[],
        ) else {
            panic!("expected a build");
        };
        assert_eq!(
            Some(mr.commit.as_str()),
            value["object_attributes"]["last_commit"]["id"].as_str()
        );
        assert_eq!(mr.repository.as_str(), "group/sub/project");
        value["object_attributes"]["squash_commit_sha"] = "b".repeat(40).into();
        let Ok(Decision::Build(squashed)) = decide(
            Forge::GitLab,
            "Merge Request Hook",
            value.to_string().as_bytes(),
            &[],
        ) else {
            panic!("expected a build");
        };
        assert_eq!(squashed.commit.as_str(), "b".repeat(40));
    }
}
