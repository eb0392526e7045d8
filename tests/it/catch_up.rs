//! Merges made while Slipway was away are built once it is back, exactly
//! once, and never one older than the repository's first build here; the
//! sticky comment on a merged pull request.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

const TOKEN: &str = "ghp_catchuptesttoken0123456789";
const REPO: &str = "acme/missed";

async fn builds_of(slipway: &Slipway, sha: &str) -> Vec<Value> {
    let (status, list) = slipway
        .get_json(&format!("/builds?repository={REPO}&limit=500"))
        .await;
    assert_eq!(status, 200);
    list["builds"]
        .as_array()
        .map(|b| b.iter().filter(|b| b["commit"] == sha).cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_made_while_slipway_was_down_is_built_once_when_it_is_back() {
    let github = FakeGitHub::start().await;
    let (first, older, missed, elsewhere) = (sha(), sha(), sha(), sha());
    for commit in [&first, &older, &missed, &elsewhere] {
        github.add_commit_files(REPO, commit, &[("README", "no manifest")]);
    }
    let mut slipway = Slipway::start(SlipwayOptions::without_registry(&github).envs(&[
        ("SLIPWAY_REPOSITORIES", REPO),
        ("SLIPWAY_GITHUB_TOKEN", TOKEN),
        ("SLIPWAY_CATCH_UP_INTERVAL", "2s"),
        ("SLIPWAY_BRANCHES", "main"),
    ]))
    .await;
    let hook = github.add_hook(
        REPO,
        &format!("{}/webhook", slipway.url),
        &["pull_request"],
        Some(SECRET),
    );

    let delivered = github.merge_pull(REPO, 1, &first, "main").await;
    assert_eq!(delivered[0].status_code, 202, "{delivered:?}");
    // Merged an hour before the first build here: history, never built.
    github.add_merged_pull(REPO, 0, &older, "main", 3600);

    slipway.kill();
    let failed = github.merge_pull(REPO, 2, &missed, "main").await;
    assert_eq!(failed[0].status_code, 0, "the delivery failed: {failed:?}");
    // Missed too, but --branches does not publish it, as for a webhook.
    let _ = github.merge_pull(REPO, 3, &elsewhere, "feature").await;

    let restarted = Instant::now();
    slipway.restart().await;
    let record = loop {
        if let Some(build) = builds_of(&slipway, &missed).await.into_iter().next() {
            break build;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "missed merge not caught up\n{}",
            slipway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "restart to the missed merge's build: {:?}",
        restarted.elapsed()
    );
    assert_eq!(record["trigger"], "catch-up", "{record}");
    assert_eq!(record["pull_request"], 2);
    assert_eq!(record["base_ref"], "main");
    slipway.wait_for(record["id"].as_str().expect("id")).await;

    // Several rounds later: still once, and the older merge never.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(builds_of(&slipway, &missed).await.len(), 1);
    assert!(
        builds_of(&slipway, &older).await.is_empty(),
        "a merge older than the first build was built"
    );
    let metrics = slipway.get_text("/metrics").await;
    assert!(
        metrics.contains("slipway_catch_up_builds_total 1"),
        "{metrics}"
    );

    // The user has GitHub redeliver the failed delivery (same GUID) once the
    // hook points at Slipway again: a duplicate, nothing built twice.
    github.set_hook_url(hook, &format!("{}/webhook", slipway.url));
    let attempts = format!(
        "{}/repos/{REPO}/hooks/{hook}/deliveries/{}/attempts",
        github.api_url(),
        failed[0].id
    );
    let resp = reqwest::Client::new()
        .post(attempts)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("redeliver");
    assert_eq!(resp.status().as_u16(), 202);
    let redelivered = loop {
        if let Some(d) = github.deliveries().into_iter().find(|d| d.redelivery) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(redelivered.guid, failed[0].guid);
    assert_eq!(redelivered.status_code, 200, "answered as a duplicate");
    assert_eq!(builds_of(&slipway, &missed).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_installation_publishes_no_history_but_catches_up_from_its_start() {
    let github = FakeGitHub::start().await;
    let (history, missed) = (sha(), sha());
    for commit in [&history, &missed] {
        github.add_commit_files(REPO, commit, &[("README", "no manifest")]);
    }
    github.add_merged_pull(REPO, 1, &history, "main", 600);
    let mut slipway = Slipway::start(SlipwayOptions::without_registry(&github).envs(&[
        ("SLIPWAY_REPOSITORIES", REPO),
        ("SLIPWAY_GITHUB_TOKEN", TOKEN),
        ("SLIPWAY_CATCH_UP_INTERVAL", "1s"),
    ]))
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    slipway.kill();
    // Merged while the new installation, with no build yet, was down.
    github.add_merged_pull(REPO, 2, &missed, "main", 0);
    slipway.restart().await;
    let started = Instant::now();
    while builds_of(&slipway, &missed).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not caught up\n{}",
            slipway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        builds_of(&slipway, &history).await.is_empty(),
        "history was published"
    );
    assert_eq!(builds_of(&slipway, &missed).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pr_comment_is_created_then_updated_by_a_retry() {
    let github = FakeGitHub::start().await;
    let commit = sha();
    github.add_commit_files(REPO, &commit, &[("README", "no manifest")]);
    let slipway = Slipway::start(SlipwayOptions::without_registry(&github).envs(&[
        ("SLIPWAY_GITHUB_TOKEN", TOKEN),
        ("SLIPWAY_PR_COMMENT", "true"),
        ("SLIPWAY_PUBLIC_URL", "https://slipway.example"),
    ]))
    .await;
    let body = merged_pr_payload(REPO, &commit, 9, "main").to_string();
    let (status, answer) = slipway
        .deliver("pull_request", &uuid(), body.as_bytes())
        .await;
    assert_eq!(status, 202, "{answer}");
    let first = answer["build_id"].as_str().expect("id").to_string();
    slipway.wait_for(&first).await;
    let comments = wait_for_comment(&github, &first).await;
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.contains("no manifest"),
        "{}",
        comments[0].body
    );

    let resp = reqwest::Client::new()
        .post(format!("{}/builds/{first}/retry", slipway.url))
        .send()
        .await
        .expect("retry");
    assert_eq!(resp.status().as_u16(), 202);
    let retry: Value = resp.json().await.expect("json");
    let second = retry["build_id"].as_str().expect("id").to_string();
    let record = slipway.wait_for(&second).await;
    assert_eq!(record["trigger"], "retry");
    let comments = wait_for_comment(&github, &second).await;
    assert_eq!(
        comments.len(),
        1,
        "the retry edits the same comment: {comments:?}"
    );
    assert!(!comments[0].body.contains(&first));
}

async fn wait_for_comment(github: &FakeGitHub, build: &str) -> Vec<support::github::FakeComment> {
    let started = Instant::now();
    loop {
        let comments = github.comments(REPO, 9);
        if comments.iter().any(|c| c.body.contains(build)) {
            return comments;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no comment for {build}: {comments:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
