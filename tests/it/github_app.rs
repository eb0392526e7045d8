//! Slipway as a GitHub App, against the stand-in GitHub acting as GitHub
//! does for Apps: a JWT signed with the App's key, installation tokens that
//! expire or get revoked, check runs only an App may write, and the check
//! run's "Re-run" coming back as a `check_run` `rerequested` delivery.

use std::time::Duration;

use crate::support::*;
use serde_json::json;

const REPO: &str = "acme/app-mode";
const APP_ID: u64 = 77;

/// An App key as GitHub hands it out (PKCS#1 PEM), and its public half.
fn app_key(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("app.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("key");
    assert!(
        text.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "{text:.40}"
    );
    let der: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .expect("PEM body");
    let key = ring::signature::RsaKeyPair::from_der(&der).expect("RSA key");
    use ring::signature::KeyPair;
    (path, key.public_key().as_ref().to_vec())
}

async fn start(token_ttl: Duration) -> (FakeGitHub, TestRegistry, Slipway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_path, public_key) = app_key(dir.path());
    let github = FakeGitHub::start().await;
    github.install_app(APP_ID, public_key, token_ttl);
    let registry = TestRegistry::start();
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry)
            .env("SLIPWAY_GITHUB_APP_ID", &APP_ID.to_string())
            .env("SLIPWAY_GITHUB_APP_KEY", &key_path.display().to_string())
            .env("SLIPWAY_PUBLIC_URL", "https://slipway.example"),
    )
    .await;
    (github, registry, slipway, dir)
}

fn add_service(github: &FakeGitHub, sha: &str, service: &str) {
    github.add_commit_files(
        REPO,
        sha,
        &[
            (
                "dockerInfo.json",
                &format!(r#"{{"service_name":"{service}","version":"1.0.0"}}"#),
            ),
            ("Dockerfile", "FROM slipway-test-base:1\nCOPY . /src/\n"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_run_lives_through_a_build_and_its_rerun() {
    let (github, registry, slipway, key_dir) = start(Duration::from_secs(3600)).await;
    let sha = sha();
    add_service(&github, &sha, "app-mode");
    let id = slipway.merge(REPO, &sha).await;
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{}", slipway.log());
    assert!(registry.tags("app-mode").contains(&"1.0.0".to_string()));

    let runs = github.check_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run.name, "slipway");
    assert_eq!(run.head_sha, sha);
    assert_eq!(run.status, "completed");
    assert_eq!(run.conclusion.as_deref(), Some("success"));
    assert_eq!(run.external_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        run.details_url.as_deref(),
        Some(format!("https://slipway.example/builds/{id}/page").as_str())
    );
    let summary = run.output["summary"].as_str().unwrap_or_default();
    let digest = record["services"][0]["digest"].as_str().expect("digest");
    assert!(
        summary.contains("app-mode:1.0.0") && summary.contains(digest),
        "{summary}"
    );
    let statuses: Vec<&str> = run
        .writes
        .iter()
        .filter_map(|w| w["status"].as_str())
        .collect();
    // Queued at admission (the webhook answered first), then the build's own.
    assert_eq!(statuses, ["queued", "in_progress", "completed"]);
    assert!(
        github.statuses().is_empty(),
        "an App reports check runs, not statuses"
    );

    // The PR page's "Re-run".
    let rerequest = json!({
        "action": "rerequested",
        "check_run": {"id": run.id, "name": "slipway", "head_sha": sha, "external_id": id, "status": "completed"},
        "repository": {"full_name": REPO},
        "installation": {"id": 4242},
    });
    let (status, answer) = slipway
        .deliver("check_run", &uuid(), rerequest.to_string().as_bytes())
        .await;
    assert_eq!(status, 202, "{answer}");
    let rerun_id = answer["build_id"].as_str().expect("build id").to_string();
    let rerun = slipway.wait_for(&rerun_id).await;
    assert_eq!(rerun["status"], "succeeded", "{rerun}");
    assert_eq!(rerun["trigger"], "rerun");
    assert_eq!(rerun["retry_of"], id.as_str());
    let runs = github.check_runs();
    assert_eq!(runs.len(), 1, "the same check run is updated: {runs:?}");
    let statuses: Vec<&str> = runs[0]
        .writes
        .iter()
        .filter_map(|w| w["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        [
            "queued",
            "in_progress",
            "completed",
            "queued",
            "in_progress",
            "completed"
        ]
    );
    assert_eq!(runs[0].conclusion.as_deref(), Some("success"));

    // "Re-run all checks": the suite names no build; the newest of that commit runs again.
    let suite = json!({
        "action": "rerequested",
        "check_suite": {"id": 7, "head_sha": sha},
        "repository": {"full_name": REPO},
    });
    let (status, answer) = slipway
        .deliver("check_suite", &uuid(), suite.to_string().as_bytes())
        .await;
    assert_eq!(status, 202, "{answer}");
    let suite_id = answer["build_id"].as_str().expect("build id").to_string();
    let suite_build = slipway.wait_for(&suite_id).await;
    assert_eq!(suite_build["trigger"], "rerun", "{suite_build}");
    assert_eq!(github.check_runs().len(), 1, "still the one check run");

    // Someone else's check run, and other check actions, are not Slipway's business.
    let other = json!({
        "action": "rerequested",
        "check_run": {"name": "lint", "head_sha": sha, "external_id": id},
        "repository": {"full_name": REPO},
    });
    let (status, answer) = slipway
        .deliver("check_run", &uuid(), other.to_string().as_bytes())
        .await;
    assert_eq!(
        (status, answer["ignored"].is_string()),
        (200, true),
        "{answer}"
    );
    for event in ["installation", "installation_repositories"] {
        let body = json!({"action": "created", "installation": {"id": 4242}});
        let (status, _) = slipway
            .deliver(event, &uuid(), body.to_string().as_bytes())
            .await;
        assert_eq!(status, 200);
    }

    // Neither the key nor a token shows in the log.
    let log = slipway.log() + &slipway.build_log(&id).await;
    let key = std::fs::read_to_string(key_dir.path().join("app.pem")).expect("key");
    let key_line = key.lines().nth(1).expect("a key line");
    assert!(!log.contains(key_line));
    for token in github.installation_tokens() {
        assert!(!log.contains(&token.token), "a token in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installation_tokens_are_renewed_before_they_expire_and_after_a_401() {
    // A token that lives no longer than the renewal margin is renewed on
    // every call: expiry is read from expires_at, not assumed.
    let (github, _registry, slipway, _dir) = start(Duration::from_secs(300)).await;
    let renewed = sha();
    add_service(&github, &renewed, "renewed");
    let record = slipway.wait_for(&slipway.merge(REPO, &renewed).await).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let issued = github.installation_tokens().len();
    assert!(issued >= 3, "a new token for each call: {issued}");

    let (github, _registry, slipway, _dir) = start(Duration::from_secs(3600)).await;
    let first = sha();
    add_service(&github, &first, "revoked");
    let record = slipway.wait_for(&slipway.merge(REPO, &first).await).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(github.installation_tokens().len(), 1, "one token, cached");
    // Revoked (as an App's token is when the App is reinstalled): the next
    // call gets a 401, and Slipway renews once and goes on.
    github.revoke_installation_tokens();
    let second = sha();
    add_service(&github, &second, "revoked2");
    let record = slipway.wait_for(&slipway.merge(REPO, &second).await).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{}", slipway.log());
    assert_eq!(github.installation_tokens().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_catches_up_the_merges_of_the_repositories_it_is_installed_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_path, public_key) = app_key(dir.path());
    let github = FakeGitHub::start().await;
    github.install_app(APP_ID, public_key, Duration::from_secs(3600));
    let registry = TestRegistry::start();
    let (first, missed) = (sha(), sha());
    add_service(&github, &first, "caught-first");
    add_service(&github, &missed, "caught-up");
    // No --repositories: the App's installations say which repositories.
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry)
            .env("SLIPWAY_GITHUB_APP_ID", &APP_ID.to_string())
            .env("SLIPWAY_GITHUB_APP_KEY", &key_path.display().to_string())
            .env("SLIPWAY_CATCH_UP_INTERVAL", "1s"),
    )
    .await;
    let first_build = slipway.wait_for(&slipway.merge(REPO, &first).await).await;
    assert_eq!(first_build["status"], "succeeded", "{first_build}");
    // Merged, but its delivery never came.
    github.add_merged_pull(REPO, 9, &missed, "main", 0);
    let caught = slipway
        .build_of_commit(&missed, Duration::from_secs(30))
        .await;
    assert_eq!(caught["trigger"], "catch-up", "{caught}");
    assert_eq!(caught["pull_request"], 9);
    let record = slipway.wait_for(caught["id"].as_str().expect("id")).await;
    assert_eq!(record["status"], "succeeded", "{record}");
}
