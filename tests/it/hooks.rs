//! The repository webhook without GitHub's settings page: `slipway hook
//! install`, `--manage-hooks` following a tunnel whose URL changes, and the
//! `--repositories` allow-list.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

const TOKEN: &str = "ghp_hooktesttoken0123456789";
const REPO: &str = "acme/hooked";

struct Installed {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn hook_install(
    github: &FakeGitHub,
    repo: &str,
    url: Option<&str>,
    token: Option<&str>,
) -> Installed {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.args(["hook", "install", repo, "--ping-wait", "5s"])
        .env_clear()
        .env("SLIPWAY_GITHUB_API", github.api_url())
        .env("SLIPWAY_WEBHOOK_SECRET", SECRET)
        // Nothing listens there: the tunnel is never the answer in these tests.
        .env(
            "SLIPWAY_NGROK_API",
            format!("http://127.0.0.1:{}", free_port()),
        );
    if let Some(url) = url {
        cmd.args(["--url", url]);
    }
    if let Some(token) = token {
        cmd.env("SLIPWAY_GITHUB_TOKEN", token);
    }
    let out = cmd.output().await.expect("slipway hook install runs");
    let installed = Installed {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for text in [&installed.stdout, &installed.stderr] {
        assert!(
            !text.contains(TOKEN) && !text.contains(SECRET),
            "a secret in the output: {text}"
        );
    }
    installed
}

fn only_hook(github: &FakeGitHub) -> FakeHook {
    let hooks = github.hooks(REPO);
    assert_eq!(hooks.len(), 1, "exactly one hook: {hooks:?}");
    hooks.into_iter().next().expect("one hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_again_and_with_a_new_url_keeps_one_hook_with_its_secret() {
    let github = FakeGitHub::start().await;
    github.add_commit_files(REPO, &sha(), &[("README", "hi")]);
    let slipway = Slipway::start(SlipwayOptions::without_registry(&github)).await;

    let first = hook_install(&github, REPO, Some(&slipway.url), Some(TOKEN)).await;
    assert!(first.ok, "{}{}", first.stdout, first.stderr);
    let hook = only_hook(&github);
    assert!(
        first.stdout.contains(&format!("hook {} created", hook.id)),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("ping reached Slipway: 200"),
        "{}",
        first.stdout
    );
    assert_eq!(hook.url, format!("{}/webhook", slipway.url));
    assert_eq!(hook.events, vec!["pull_request"]);
    assert_eq!(hook.content_type, "json");
    assert_eq!(hook.insecure_ssl, "0");
    assert_eq!(hook.secret.as_deref(), Some(SECRET));
    // GitHub's own pings were signed with the secret and answered by Slipway.
    let pings: Vec<_> = github
        .deliveries()
        .into_iter()
        .filter(|d| d.event == "ping")
        .collect();
    assert!(
        !pings.is_empty() && pings.iter().all(|d| d.status_code == 200),
        "{pings:?}"
    );

    let again = hook_install(&github, REPO, Some(&slipway.url), Some(TOKEN)).await;
    assert!(again.ok, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains(&format!("hook {} updated", hook.id)),
        "{}",
        again.stdout
    );
    assert_eq!(only_hook(&github).id, hook.id);

    let moved_to = format!("http://127.0.0.1:{}", free_port());
    let moved = hook_install(&github, REPO, Some(&format!("{moved_to}/")), Some(TOKEN)).await;
    assert!(moved.ok, "{}{}", moved.stdout, moved.stderr);
    let after = only_hook(&github);
    assert_eq!(after.id, hook.id);
    assert_eq!(after.url, format!("{moved_to}/webhook"));
    assert_eq!(
        after.secret.as_deref(),
        Some(SECRET),
        "the secret survives the update"
    );
    assert!(
        moved.stdout.contains("ping did not reach Slipway"),
        "{}",
        moved.stdout
    );
    let failed = github.deliveries().into_iter().last().expect("a delivery");
    assert_eq!(
        (failed.event.as_str(), failed.status_code),
        ("ping", 0),
        "a refused connection is a failed delivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installs_at_once_make_one_hook_the_second_adopting_it_after_422() {
    let github = FakeGitHub::start().await;
    github.add_commit_files(REPO, &sha(), &[("README", "hi")]);
    let url = format!("http://127.0.0.1:{}", free_port());
    // One installer's listing is made before the other creates the hook, and
    // reaches it late: its create then gets GitHub's 422 "Hook already exists".
    github.inject_fault(
        "/hooks?per_page",
        Fault::SlowAnswer(Duration::from_secs(4)),
        1,
    );
    let (a, b) = tokio::join!(
        hook_install(&github, REPO, Some(&url), Some(TOKEN)),
        hook_install(&github, REPO, Some(&url), Some(TOKEN)),
    );
    let hook = only_hook(&github);
    let outputs = format!("{}{}{}{}", a.stdout, a.stderr, b.stdout, b.stderr);
    assert!(a.ok && b.ok, "{outputs}");
    assert!(
        outputs.contains(&format!("hook {} created", hook.id)),
        "{outputs}"
    );
    assert!(
        outputs.contains(&format!("hook {} adopted", hook.id)),
        "{outputs}"
    );
    assert_eq!(hook.secret.as_deref(), Some(SECRET));
}

#[tokio::test]
async fn a_hand_made_hook_at_the_same_url_is_taken_over() {
    let github = FakeGitHub::start().await;
    github.add_commit_files(REPO, &sha(), &[("README", "hi")]);
    let url = format!("http://127.0.0.1:{}", free_port());
    let id = github.add_hook(REPO, &format!("{url}/webhook"), &["push"], None);
    let installed = hook_install(&github, REPO, Some(&url), Some(TOKEN)).await;
    assert!(installed.ok, "{}{}", installed.stdout, installed.stderr);
    assert!(
        installed.stdout.contains(&format!("hook {id} updated")),
        "{}",
        installed.stdout
    );
    let hook = only_hook(&github);
    assert_eq!(hook.events, vec!["pull_request"]);
    assert_eq!(hook.secret.as_deref(), Some(SECRET));
}

#[tokio::test]
async fn install_errors_are_one_clear_line() {
    let github = FakeGitHub::start().await;
    github.add_commit_files(REPO, &sha(), &[("README", "hi")]);
    let url = "https://slipway.example";
    let no_token = hook_install(&github, REPO, Some(url), None).await;
    assert!(!no_token.ok);
    assert!(
        no_token.stderr.contains("--github-token")
            && no_token.stderr.contains("Webhooks read and write"),
        "{}",
        no_token.stderr
    );
    let missing = hook_install(&github, "acme/absent", Some(url), Some(TOKEN)).await;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains("the token needs the Webhooks read and write permission"),
        "{}",
        missing.stderr
    );
    github.require_token("another-token-entirely");
    let refused = hook_install(&github, REPO, Some(url), Some(TOKEN)).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    github.inject_fault("/hooks", Fault::RateLimited, 1);
    let limited = hook_install(&github, REPO, Some(url), Some("another-token-entirely")).await;
    assert!(!limited.ok);
    assert!(limited.stderr.contains("rate limit"), "{}", limited.stderr);
    let no_url = hook_install(&github, REPO, None, Some(TOKEN)).await;
    assert!(!no_url.ok);
    assert!(no_url.stderr.contains("no public URL"), "{}", no_url.stderr);
    for out in [&no_token, &missing, &refused, &limited, &no_url] {
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "one line: {}",
            out.stderr
        );
    }
}

/// The ngrok agent's local API, with a tunnel URL the test changes.
async fn fake_ngrok(url: Arc<Mutex<String>>) -> String {
    use warp::Filter;
    let route = warp::path!("api" / "tunnels").map(move || {
        let public = url.lock().expect("url").clone();
        warp::reply::json(&json!({"tunnels": [
            {"name": "command_line", "public_url": public, "proto": "https"}
        ], "uri": "/api/tunnels"}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(warp::serve(route).incoming(listener).run());
    format!("http://{addr}")
}

async fn wait_for_hook_url(github: &FakeGitHub, url: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let hooks = github.hooks(REPO);
        if hooks.len() == 1 && hooks[0].url == url {
            assert_eq!(hooks[0].secret.as_deref(), Some(SECRET));
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "hook did not follow to {url}: {hooks:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_hooks_follow_the_tunnel_url() {
    let github = FakeGitHub::start().await;
    github.add_commit_files(REPO, &sha(), &[("README", "hi")]);
    let tunnel = Arc::new(Mutex::new("https://first-7f3a.ngrok.app".to_string()));
    let ngrok = fake_ngrok(tunnel.clone()).await;
    let slipway = Slipway::start(SlipwayOptions::without_registry(&github).envs(&[
        ("SLIPWAY_REPOSITORIES", REPO),
        ("SLIPWAY_GITHUB_TOKEN", TOKEN),
        ("SLIPWAY_MANAGE_HOOKS", "true"),
        ("SLIPWAY_NGROK_API", &ngrok),
        ("SLIPWAY_HOOKS_POLL_INTERVAL", "1s"),
        ("SLIPWAY_CATCH_UP_INTERVAL", "0"),
    ]))
    .await;
    wait_for_hook_url(
        &github,
        "https://first-7f3a.ngrok.app/webhook",
        Duration::from_secs(20),
    )
    .await;
    *tunnel.lock().expect("url") = "https://second-9c1d.ngrok.app".to_string();
    let took = wait_for_hook_url(
        &github,
        "https://second-9c1d.ngrok.app/webhook",
        Duration::from_secs(60),
    )
    .await;
    eprintln!("hook followed the new tunnel URL in {took:?}");
    // Changed by hand on the settings page: pointed back.
    github.set_hook_url(only_hook(&github).id, "https://elsewhere.example/webhook");
    wait_for_hook_url(
        &github,
        "https://second-9c1d.ngrok.app/webhook",
        Duration::from_secs(30),
    )
    .await;
    // The page shows the hook and what GitHub last got from it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let page = slipway.get_text("/").await;
    assert!(
        page.contains("https://second-9c1d.ngrok.app/webhook"),
        "{page}"
    );
    assert!(page.contains(REPO), "{page}");
}

#[tokio::test]
async fn deliveries_from_repositories_not_served_are_ignored_and_nothing_is_fetched() {
    let github = FakeGitHub::start().await;
    let slipway = Slipway::start(
        SlipwayOptions::without_registry(&github)
            .env("SLIPWAY_REPOSITORIES", "acme/served,acme/also"),
    )
    .await;
    let body = merged_pr_payload("mallory/other", &sha(), 1, "main").to_string();
    let (status, answer) = slipway
        .deliver("pull_request", &uuid(), body.as_bytes())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["ignored"],
        "repository mallory/other is not in --repositories"
    );
    let served = merged_pr_payload("Acme/Served", &sha(), 2, "main").to_string();
    let (status, answer) = slipway
        .deliver("pull_request", &uuid(), served.as_bytes())
        .await;
    assert_eq!(
        status, 202,
        "names are matched as GitHub does, ignoring case: {answer}"
    );
    let record = slipway
        .wait_for(answer["build_id"].as_str().expect("id"))
        .await;
    assert_eq!(record["trigger"], "webhook");
    assert!(
        github
            .requests()
            .iter()
            .all(|r| !r.path_and_query.contains("mallory")),
        "nothing of the other repository was fetched"
    );
}

#[tokio::test]
async fn the_stand_in_drops_the_secret_on_a_config_update_without_it_as_github_does() {
    let github = FakeGitHub::start().await;
    github.add_commit_files(REPO, &sha(), &[("README", "hi")]);
    let id = github.add_hook(
        REPO,
        "https://a.example/webhook",
        &["pull_request"],
        Some(SECRET),
    );
    let resp = reqwest::Client::new()
        .patch(format!(
            "{}/repos/{REPO}/hooks/{id}/config",
            github.api_url()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({ "url": "https://b.example/webhook" }))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 200);
    let hook = only_hook(&github);
    assert_eq!(hook.url, "https://b.example/webhook");
    assert_eq!(
        hook.secret, None,
        "the trap Slipway avoids by always sending the secret"
    );
}
