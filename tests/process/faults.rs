//! Faults in GitHub, the engine, the registry and the disk fail only the
//! builds they touch, with a message that says what happened; and a kill in
//! the middle of a push loses nothing.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

const REPO: &str = "acme/faults";

fn simple_commit(github: &FakeGitHub, name: &str, dockerfile: &str) -> String {
    let commit = sha();
    let manifest = format!(r#"{{"service_name":"{name}","version":"1"}}"#);
    github.add_commit_files(
        REPO,
        &commit,
        &[("dockerInfo.json", &manifest), ("Dockerfile", dockerfile)],
    );
    commit
}

/// A service with one big layer of random data, so that its push takes a while.
fn big_layer_commit(github: &FakeGitHub, name: &str, megabytes: u32) -> String {
    let commit = sha();
    let dockerfile = format!("FROM slipway-test-base:1\nRUN echo {commit} && head -c {megabytes}000000 /dev/urandom > /blob\n");
    let manifest = format!(r#"{{"service_name":"{name}","version":"1"}}"#);
    github.add_commit_files(
        REPO,
        &commit,
        &[("dockerInfo.json", &manifest), ("Dockerfile", &dockerfile)],
    );
    commit
}

async fn wait_until(what: &str, limit: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn service_status(slipway: &Slipway, id: &str) -> String {
    let (_, record) = slipway.get_json(&format!("/builds/{id}")).await;
    record["services"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_too_slow_fails_the_build_saying_so() {
    let (github, _registry, slipway) = start_stack(&[("SLIPWAY_GITHUB_TIMEOUT", "1s")]).await;
    let commit = simple_commit(&github, "slow", "FROM slipway-test-base:1\n");
    github.inject_fault("/contents/", Fault::Delay(Duration::from_secs(3)), 10);
    let record = slipway.wait_for(&slipway.merge(REPO, &commit).await).await;
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("timed out") && error.contains("dockerInfo.json"),
        "{error}"
    );
    let attempts = github
        .requests()
        .iter()
        .filter(|r| r.path_and_query.contains("/contents/"))
        .count();
    assert_eq!(attempts, 5, "retried with backoff, then gave up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_restarted_mid_push_is_retried_and_succeeds() {
    let (github, mut registry, slipway) = start_stack(&[]).await;
    let commit = big_layer_commit(&github, "resilient", 40);
    let id = slipway.merge(REPO, &commit).await;
    wait_until("the push", Duration::from_secs(120), async || {
        service_status(&slipway, &id).await == "pushing"
    })
    .await;
    registry.stop();
    wait_until("a retry", Duration::from_secs(60), async || {
        slipway.log().contains("transient failure, retrying")
    })
    .await;
    registry.restart();
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(registry.tags("resilient"), vec!["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_at_push_time_fails_with_unreachable() {
    let (github, mut registry, slipway) = start_stack(&[]).await;
    let commit = big_layer_commit(&github, "stranded", 5);
    let id = slipway.merge(REPO, &commit).await;
    wait_until("the build", Duration::from_secs(120), async || {
        matches!(
            service_status(&slipway, &id).await.as_str(),
            "building" | "pushing"
        )
    })
    .await;
    registry.stop();
    let record = slipway.wait_for(&id).await;
    let error = record["services"][0]["error"].as_str().unwrap_or_default();
    assert_eq!(record["status"], "failed");
    assert!(
        error.contains("unreachable") && error.contains(&registry.host),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_socket_gone_fails_the_service_clearly() {
    let (github, _registry, slipway) =
        start_stack(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]).await;
    let commit = simple_commit(&github, "noengine", "FROM slipway-test-base:1\n");
    let record = slipway.wait_for(&slipway.merge(REPO, &commit).await).await;
    let error = record["services"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("Docker Engine unreachable"), "{error}");
    let (_, health) = slipway.get_json("/healthz").await;
    assert_ne!(health["engine"], "ok", "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_build_killed_or_timed_out_fails_the_service() {
    // The classic builder runs each step in a container the test can kill;
    // tests/it/buildkit.rs does the same to a BuildKit step's process.
    let (github, _registry, slipway) = start_stack(&[
        ("SLIPWAY_BUILD_TIMEOUT", "20s"),
        ("SLIPWAY_BUILDER", "classic"),
    ])
    .await;
    let marker = format!("killme-{}", &sha()[..10]);
    let killed = simple_commit(
        &github,
        "killed",
        &format!("FROM slipway-test-base:1\nRUN echo {marker} && sleep 60\n"),
    );
    let id = slipway.merge(REPO, &killed).await;
    let container = {
        let mut found = String::new();
        wait_until("the build container", Duration::from_secs(60), async || {
            let out = docker(&["ps", "--no-trunc", "--format", "{{.ID}} {{.Command}}"]);
            found = out
                .lines()
                .find(|l| l.contains(&marker))
                .and_then(|l| l.split(' ').next())
                .unwrap_or_default()
                .to_string();
            !found.is_empty()
        })
        .await;
        found
    };
    docker(&["kill", &container]);
    let record = slipway.wait_for(&id).await;
    let error = record["services"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("build failed:") && error.contains("non-zero code"),
        "the engine's message: {error}"
    );

    let slow = simple_commit(
        &github,
        "sleepy",
        &format!("FROM slipway-test-base:1\nRUN echo {marker}-2 && sleep 120\n"),
    );
    let started = Instant::now();
    let record = slipway.wait_for(&slipway.merge(REPO, &slow).await).await;
    let error = record["services"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out after 20s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(100));
    // Dropping the build's connection made the engine cancel the build.
    wait_until(
        "the cancelled build's container to go",
        Duration::from_secs(30),
        async || {
            !docker(&["ps", "--no-trunc", "--format", "{{.Command}}"])
                .contains(&format!("{marker}-2"))
        },
    )
    .await;
}

/// A data dir on a small tmpfs, filled up while the service runs: the
/// delivery is refused with 503 and `Retry-After` (GitHub shows it, and it
/// can be redelivered), never acknowledged and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_data_dir_refuses_deliveries_instead_of_losing_them() {
    if support::on_postgres() {
        // The records are in PostgreSQL then: a full data dir does not touch them.
        return println!("skipped: the store is PostgreSQL, not the data dir");
    }
    let mount = tempfile::tempdir().expect("tempdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("mount");
    assert!(mounted.success(), "mounting a tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let data = mount.path().join("data");
    let github = FakeGitHub::start().await;
    let options = SlipwayOptions::without_registry(&github)
        .env("SLIPWAY_DATA_DIR", &data.display().to_string());
    let slipway = Slipway::start(options).await;
    let filler = mount.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .output();

    let commit = sha();
    let body = merged_pr_payload(REPO, &commit, 3, "main").to_string();
    let delivery = uuid();
    let mut refused = 0;
    for _ in 0..50 {
        let (status, headers, answer) = slipway
            .deliver_with_headers("pull_request", &delivery, body.as_bytes())
            .await;
        assert_ne!(status, 500, "a full disk is not a server bug: {answer}");
        if status == 503 {
            assert!(
                answer["error"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("redeliver later"),
                "{answer}"
            );
            assert!(headers.contains_key("retry-after"), "{headers:?}");
            refused += 1;
            break;
        }
        // SQLite may still fit a few pages; make it need more.
        let another = merged_pr_payload(REPO, &sha(), 4, "main").to_string();
        slipway
            .deliver("pull_request", &uuid(), another.as_bytes())
            .await;
    }
    assert_eq!(refused, 1, "a full disk is reported, not swallowed");
    std::fs::remove_file(&filler).expect("free space");
    let (status, answer) = slipway
        .deliver("pull_request", &delivery, body.as_bytes())
        .await;
    assert_eq!(
        status, 202,
        "the redelivery is taken once there is room: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_push_then_restart_publishes_exactly_once() {
    let (github, registry, mut slipway) = start_stack(&[]).await;
    let commit = big_layer_commit(&github, "killedpush", 150);
    let id = slipway.merge(REPO, &commit).await;
    // Killed once the image is built: while its layers go up, through the
    // loopback relay or after an export.
    wait_until("the upload", Duration::from_secs(120), async || {
        let (_, record) = slipway.get_json(&format!("/builds/{id}")).await;
        record["services"][0]["status"] == "pushing"
    })
    .await;
    let killed_at = Instant::now();
    slipway.kill();
    slipway.restart().await;
    let record = slipway.wait_for(&id).await;
    let recovered = killed_at.elapsed();
    assert_eq!(record["status"], "succeeded", "{record}");
    let log = slipway.build_log(&id).await;
    assert!(
        log.contains("running it again"),
        "the push was cut off and redone:\n{log}"
    );
    assert_eq!(registry.tags("killedpush"), vec!["1"], "exactly one tag");
    let digest = record["services"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let image = format!("{}/killedpush:1", registry.host);
    pull_fresh(&image);
    let pulled = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    assert!(pulled.trim().ends_with(&digest), "{pulled} vs {digest}");
    println!("SIGKILL mid-push: build succeeded {recovered:.1?} after the kill (restart included)");
}
