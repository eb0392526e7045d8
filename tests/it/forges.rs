//! Merges from Gitea, Forgejo and GitLab, for real: their deliveries (the
//! captured payloads in tests/fixtures/forges, re-pointed at a test
//! repository), the stand-in forge's API, the machine's engine and the TLS
//! registry. Each forge's bad signature, unmerged close and redelivery too.

use crate::support::forges::{FakeForge, Flavor};
use crate::support::*;
use serde_json::Value;

const TOKEN: &str = "forge-token-5d1e";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/forges/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn hex_hmac(body: &[u8]) -> String {
    sign(body).trim_start_matches("sha256=").to_string()
}

fn dockerfile_commit(forge: &FakeForge, repository: &str, sha: &str, service: &str) {
    forge.add_commit_files(
        repository,
        sha,
        &[
            (
                "dockerInfo.json",
                &format!(r#"{{"service_name":"{service}","version":"1.0.0"}}"#),
            ),
            ("Dockerfile", "FROM slipway-test-base:1\nCOPY . /src/\n"),
            ("hello.txt", "hello from a forge\n"),
        ],
    );
}

/// A Gitea (`forgejo`: Forgejo) delivery, with every header each sends:
/// GitHub's too, signed as GitHub would, so that only telling the forge by
/// its own headers keeps it from being taken for a GitHub delivery.
async fn deliver_gitea(
    slipway: &Slipway,
    forgejo: bool,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: &str,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/webhook", slipway.url))
        .header("content-type", "application/json")
        .header("x-gitea-delivery", delivery)
        .header("x-gitea-event", event)
        .header("x-gitea-event-type", event)
        .header("x-gitea-signature", signature)
        .header("x-gogs-delivery", delivery)
        .header("x-gogs-event", event)
        .header("x-gogs-signature", signature)
        .header("x-github-delivery", delivery)
        .header("x-github-event", event)
        .header("x-hub-signature-256", sign(body));
    if forgejo {
        request = request
            .header("x-forgejo-delivery", delivery)
            .header("x-forgejo-event", event)
            .header("x-forgejo-event-type", event)
            .header("x-forgejo-signature", signature);
    }
    let response = request.body(body.to_vec()).send().await.expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deliver_gitlab(slipway: &Slipway, token: &str, uuid: &str, body: &[u8]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/webhook", slipway.url))
        .header("content-type", "application/json")
        .header("user-agent", "GitLab/17.5.0")
        .header("x-gitlab-event", "Merge Request Hook")
        .header("x-gitlab-event-uuid", uuid)
        .header(
            "x-gitlab-webhook-uuid",
            "0b8f6f4e-0000-4000-8000-000000000001",
        )
        .header("idempotency-key", uuid)
        .header("x-gitlab-instance", "https://gitlab.example")
        .header("x-gitlab-token", token)
        .body(body.to_vec())
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn gitea_merge(repository: &str, sha: &str, merged: bool) -> Vec<u8> {
    let name = if merged {
        "gitea.pull_request.closed.merged.woodpecker.json"
    } else {
        "gitea.pull_request.closed.not_merged.woodpecker.json"
    };
    let mut payload = fixture(name);
    payload["repository"]["full_name"] = repository.into();
    payload["repository"]["html_url"] = format!("https://gitea.example/{repository}").into();
    if merged {
        payload["pull_request"]["merge_commit_sha"] = sha.into();
    }
    payload.to_string().into_bytes()
}

fn gitlab_merge(project: &str, sha: &str, name: &str) -> Vec<u8> {
    let mut payload = fixture(name);
    payload["project"]["path_with_namespace"] = project.into();
    payload["project"]["web_url"] = format!("https://gitlab.example/{project}").into();
    if !payload["object_attributes"]["merge_commit_sha"].is_null() {
        payload["object_attributes"]["merge_commit_sha"] = sha.into();
    }
    payload.to_string().into_bytes()
}

async fn start(flavor: Flavor) -> (FakeForge, TestRegistry, Slipway, FakeGitHub) {
    let forge = FakeForge::start(flavor, TOKEN).await;
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let (api, token) = match flavor {
        Flavor::Gitea => ("SLIPWAY_GITEA_API", "SLIPWAY_GITEA_TOKEN"),
        Flavor::GitLab => ("SLIPWAY_GITLAB_API", "SLIPWAY_GITLAB_TOKEN"),
    };
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry)
            .env(api, &forge.api_url())
            .env(token, TOKEN)
            .env("SLIPWAY_PR_COMMENT", "true")
            .env("SLIPWAY_PUBLIC_URL", "https://slipway.example"),
    )
    .await;
    (forge, registry, slipway, github)
}

/// Retries build `id` and waits for it: the sticky comment must be edited, not doubled.
async fn retry_keeps_one_comment(
    slipway: &Slipway,
    forge: &FakeForge,
    id: &str,
    repository: &str,
    image: &str,
) {
    let comments = |forge: &FakeForge| -> Vec<_> {
        forge
            .comments()
            .into_iter()
            .filter(|c| c.repository == repository)
            .collect()
    };
    let before = comments(forge);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].body.contains(image), "{}", before[0].body);
    let answer = reqwest::Client::new()
        .post(format!("{}/builds/{id}/retry", slipway.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status().as_u16(), 202);
    let retry: Value = answer.json().await.expect("JSON");
    let record = slipway
        .wait_for(retry["build_id"].as_str().expect("id"))
        .await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let after = comments(forge);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].id, after[0].edits), (before[0].id, 1));
}

fn states(forge: &FakeForge, sha: &str) -> Vec<String> {
    forge
        .statuses()
        .iter()
        .filter(|s| s.sha == sha)
        .filter_map(|s| s.body["state"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_and_a_forgejo_merge_are_published_with_statuses() {
    let (gitea, registry, slipway, github) = start(Flavor::Gitea).await;
    for (forgejo, repository, service) in [
        (false, "team/gitea-app", "gitea-app"),
        (true, "team/forgejo-app", "forgejo-app"),
    ] {
        let sha = sha();
        dockerfile_commit(&gitea, repository, &sha, service);
        let body = gitea_merge(repository, &sha, true);
        let delivery = uuid();
        let (status, json) = deliver_gitea(
            &slipway,
            forgejo,
            "pull_request",
            &delivery,
            &body,
            &hex_hmac(&body),
        )
        .await;
        assert_eq!(status, 202, "{json}");
        let id = json["build_id"].as_str().expect("build id").to_string();
        let record = slipway.wait_for(&id).await;
        assert_eq!(record["status"], "succeeded", "{record}\n{}", slipway.log());
        assert_eq!(record["forge"], if forgejo { "forgejo" } else { "gitea" });
        assert_eq!(record["commit"], sha.as_str());
        assert_eq!(record["repository"], repository);
        assert!(registry.tags(service).contains(&"1.0.0".to_string()));
        assert_eq!(states(&gitea, &sha), ["pending", "success"]);
        let last = gitea
            .statuses()
            .into_iter()
            .rfind(|s| s.sha == sha)
            .expect("a status");
        assert_eq!(last.repository, repository);
        assert_eq!(last.body["context"], "slipway");
        assert_eq!(
            last.body["target_url"],
            format!("https://slipway.example/builds/{id}/page")
        );
        // A redelivery is the same delivery id: a duplicate, not a second build.
        let (status, json) = deliver_gitea(
            &slipway,
            forgejo,
            "pull_request",
            &delivery,
            &body,
            &hex_hmac(&body),
        )
        .await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["duplicate"], true, "{json}");
        let image = format!("{service}:1.0.0");
        retry_keeps_one_comment(&slipway, &gitea, &id, repository, &image).await;
    }
    assert!(
        github.requests().is_empty(),
        "nothing went to GitHub: {:?}",
        github.requests()
    );
    let archives: Vec<String> = gitea
        .requests()
        .into_iter()
        .filter(|r| r.contains("/archive/"))
        .collect();
    // Each merge and its retry read the archive from Gitea.
    assert_eq!(archives.len(), 4, "{archives:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_deliveries_are_checked_by_their_own_signature() {
    let (gitea, _registry, slipway, _github) = start(Flavor::Gitea).await;
    let sha = sha();
    let body = gitea_merge("team/app", &sha, true);
    // GitHub's header is right; Gitea's is not: refused.
    let (status, json) = deliver_gitea(
        &slipway,
        false,
        "pull_request",
        &uuid(),
        &body,
        &"0".repeat(64),
    )
    .await;
    assert_eq!(status, 401, "{json}");
    let (status, json) = deliver_gitea(&slipway, true, "pull_request", &uuid(), &body, "").await;
    assert_eq!(status, 401, "{json}");
    let unmerged = gitea_merge("team/app", &sha, false);
    let (status, json) = deliver_gitea(
        &slipway,
        true,
        "pull_request",
        &uuid(),
        &unmerged,
        &hex_hmac(&unmerged),
    )
    .await;
    assert_eq!(
        (status, json["ignored"].is_string()),
        (200, true),
        "Forgejo: {json}"
    );
    let (status, json) = deliver_gitea(
        &slipway,
        false,
        "pull_request",
        &uuid(),
        &unmerged,
        &hex_hmac(&unmerged),
    )
    .await;
    assert_eq!((status, json["ignored"].is_string()), (200, true), "{json}");
    let push = fixture("gitea.push.woodpecker.json")
        .to_string()
        .into_bytes();
    let (status, json) =
        deliver_gitea(&slipway, false, "push", &uuid(), &push, &hex_hmac(&push)).await;
    assert_eq!((status, json["ignored"].is_string()), (200, true), "{json}");
    let (_, builds) = slipway.get_json("/builds").await;
    assert_eq!(
        builds["builds"].as_array().map(Vec::len),
        Some(0),
        "{builds}"
    );
    assert!(gitea.statuses().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_slipway_was_not_given_is_refused_by_name() {
    let (_github, _registry, slipway) = start_stack(&[]).await;
    let body = gitea_merge("team/app", &sha(), true);
    let (status, json) = deliver_gitea(
        &slipway,
        false,
        "pull_request",
        &uuid(),
        &body,
        &hex_hmac(&body),
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert!(json.to_string().contains("--gitea-api"), "{json}");
    let gitlab = gitlab_merge(
        "group/app",
        &sha(),
        "gitlab.merge_request.merge.woodpecker.json",
    );
    let (status, json) = deliver_gitlab(&slipway, SECRET, &uuid(), &gitlab).await;
    assert_eq!(status, 400, "{json}");
    assert!(json.to_string().contains("--gitlab-api"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_merge_in_a_subgroup_is_published_with_statuses() {
    let (gitlab, registry, slipway, github) = start(Flavor::GitLab).await;
    let project = "platform/backend/gl-app";
    let sha = sha();
    dockerfile_commit(&gitlab, project, &sha, "gl-app");
    let body = gitlab_merge(project, &sha, "gitlab.merge_request.merge.woodpecker.json");
    let delivery = uuid();
    let (status, json) = deliver_gitlab(&slipway, TOKEN, &delivery, &body).await;
    assert_eq!(
        status, 401,
        "the API token is not the webhook secret: {json}"
    );
    let (status, json) = deliver_gitlab(&slipway, SECRET, &delivery, &body).await;
    assert_eq!(status, 202, "{json}");
    let id = json["build_id"].as_str().expect("build id").to_string();
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{}", slipway.log());
    assert_eq!(record["forge"], "gitlab");
    assert_eq!(record["repository"], project);
    assert_eq!(record["pull_request"], 4);
    assert!(registry.tags("gl-app").contains(&"1.0.0".to_string()));
    assert_eq!(states(&gitlab, &sha), ["running", "success"]);
    let last = gitlab
        .statuses()
        .into_iter()
        .rfind(|s| s.sha == sha)
        .expect("a status");
    assert_eq!(last.repository, project);
    assert_eq!(last.body["name"], "slipway");
    assert_eq!(
        last.body["target_url"],
        format!("https://slipway.example/builds/{id}/page")
    );
    let (status, json) = deliver_gitlab(&slipway, SECRET, &delivery, &body).await;
    assert_eq!(
        (status, json["duplicate"].as_bool()),
        (200, Some(true)),
        "{json}"
    );
    retry_keeps_one_comment(&slipway, &gitlab, &id, project, "gl-app:1.0.0").await;
    assert_eq!(gitlab.comments()[0].number, 4, "the merge request's iid");
    let closed = gitlab_merge(project, &sha, "gitlab.merge_request.close.woodpecker.json");
    let (status, json) = deliver_gitlab(&slipway, SECRET, &uuid(), &closed).await;
    assert_eq!((status, json["ignored"].is_string()), (200, true), "{json}");
    assert!(github.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_merge_whose_delivery_never_came_is_caught_up() {
    let gitea = FakeForge::start(Flavor::Gitea, TOKEN).await;
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let repository = "team/gitea-missed";
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry)
            .env("SLIPWAY_GITEA_API", &gitea.api_url())
            .env("SLIPWAY_GITEA_TOKEN", TOKEN)
            .env("SLIPWAY_REPOSITORIES", repository)
            .env("SLIPWAY_CATCH_UP_INTERVAL", "1s"),
    )
    .await;
    let (first, missed) = (sha(), sha());
    dockerfile_commit(&gitea, repository, &first, "gitea-first");
    dockerfile_commit(&gitea, repository, &missed, "gitea-missed");
    let body = gitea_merge(repository, &first, true);
    let (status, json) = deliver_gitea(
        &slipway,
        false,
        "pull_request",
        &uuid(),
        &body,
        &hex_hmac(&body),
    )
    .await;
    assert_eq!(status, 202, "{json}");
    slipway
        .wait_for(json["build_id"].as_str().expect("id"))
        .await;
    gitea.add_merged_pull(repository, 12, &missed, "main");
    let caught = slipway
        .build_of_commit(&missed, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(caught["trigger"], "catch-up", "{caught}");
    assert_eq!(caught["forge"], "gitea");
    assert_eq!(caught["pull_request"], 12);
    let record = slipway.wait_for(caught["id"].as_str().expect("id")).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(registry.tags("gitea-missed").contains(&"1.0.0".to_string()));
    assert!(github.requests().is_empty(), "nothing asked of GitHub");
}
