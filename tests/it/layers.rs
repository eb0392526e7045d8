//! Publishing pays for what changed, not for the image's size: base layers
//! the registry already holds (pushed by the docker CLI, or by Slipway
//! before a restart) are mounted or skipped, never compressed and uploaded.
//! Each case runs on both push paths: the engine pushing through Slipway's
//! loopback relay (the default), and `docker save` with Slipway's upload.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;
use serde_json::json;

const REPO: &str = "acme/layers";
const BIG_MB: u32 = 20;

/// KiB uploaded, from the service's `published … (N KiB)` log line.
fn uploaded_kib(log: &str, service: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.starts_with(&format!("[{service}] published ")))
        .unwrap_or_else(|| panic!("no published line for {service}:\n{log}"));
    line.split(" blobs pushed (")
        .nth(1)
        .and_then(|rest| rest.split(" KiB)").next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line}"))
}

/// `docker build` of a Dockerfile given on standard input, with the classic builder.
fn cli_build(tag: &str, dockerfile: &str) {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker build");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dockerfile.as_bytes())
        .expect("write Dockerfile");
    assert!(child.wait().expect("docker build").success());
}

/// The log line that says which push path published the service.
fn path_line(push_path: &str) -> &'static str {
    match push_path {
        "relay" => "pushed by the engine through the loopback relay",
        _ => "exported ",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_pushed_by_the_docker_cli_is_not_uploaded_again_through_the_relay() {
    a_base_pushed_by_the_docker_cli_is_not_uploaded_again("relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_pushed_by_the_docker_cli_is_not_uploaded_again_when_exported() {
    a_base_pushed_by_the_docker_cli_is_not_uploaded_again("export").await;
}

async fn a_base_pushed_by_the_docker_cli_is_not_uploaded_again(push_path: &str) {
    let (github, registry, slipway) = start_stack(&[("SLIPWAY_PUSH_PATH", push_path)]).await;
    let base = format!("{}/mirror/base:{}", registry.host, &sha()[..8]);
    cli_build(
        &base,
        &format!(
            "FROM slipway-test-base:1\nRUN echo {} && head -c {BIG_MB}000000 /dev/urandom > /base-blob\n",
            sha()
        ),
    );
    docker(&["push", &base]);

    let commit = sha();
    github.add_commit_files(
        REPO,
        &commit,
        &[
            (
                "dockerInfo.json",
                &json!({"service_name": "on-mirror", "version": "1.0.0"}).to_string(),
            ),
            (
                "Dockerfile",
                &format!("FROM {base}\nCOPY app.txt /app.txt\n"),
            ),
            ("app.txt", "the small change"),
        ],
    );
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    assert!(
        log.contains("[on-mirror] base mirror/base@sha256:"),
        "the base was recognised:\n{log}"
    );
    assert!(log.contains(path_line(push_path)), "{log}");
    let kib = uploaded_kib(&log, "on-mirror");
    assert!(
        kib < 1024,
        "only the new layer and the config go up, not the {BIG_MB} MB base: {kib} KiB\n{log}"
    );
    let image = format!("{}/on-mirror:1.0.0", registry.host);
    pull_fresh(&image);
    assert_eq!(docker_run(&image, &["cat", "/app.txt"]), "the small change");
    let size = docker_run(&image, &["sh", "-c", "wc -c < /base-blob"]);
    assert_eq!(size.trim(), format!("{BIG_MB}000000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_pushed_before_a_restart_are_not_uploaded_again_through_the_relay() {
    layers_pushed_before_a_restart_are_not_uploaded_again("relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_pushed_before_a_restart_are_not_uploaded_again_when_exported() {
    layers_pushed_before_a_restart_are_not_uploaded_again("export").await;
}

async fn layers_pushed_before_a_restart_are_not_uploaded_again(push_path: &str) {
    let (github, registry, mut slipway) = start_stack(&[("SLIPWAY_PUSH_PATH", push_path)]).await;
    let nonce = sha();
    let dockerfile = format!(
        "FROM slipway-test-base:1\nRUN echo {nonce} && head -c {BIG_MB}000000 /dev/urandom > /blob\nCOPY which.txt /which.txt\n"
    );
    let publish = |name: &str| {
        let commit = sha();
        let manifest = json!({"service_name": name, "version": "1.0.0"}).to_string();
        github.add_commit_files(
            REPO,
            &commit,
            &[
                ("dockerInfo.json", &manifest),
                ("Dockerfile", &dockerfile),
                ("which.txt", name),
            ],
        );
        commit
    };
    let first = publish("big-one");
    let id = slipway.merge(REPO, &first).await;
    assert_eq!(slipway.wait_for(&id).await["status"], "succeeded");
    let log = slipway.build_log(&id).await;
    assert!(
        uploaded_kib(&log, "big-one") > 1024 * BIG_MB as u64 * 9 / 10,
        "{log}"
    );

    slipway.restart().await;
    let second = publish("big-two");
    let id = slipway.merge(REPO, &second).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    assert!(log.contains(path_line(push_path)), "{log}");
    let kib = uploaded_kib(&log, "big-two");
    assert!(
        kib < 1024,
        "the big layer is mounted from big-one's repository: {kib} KiB\n{log}"
    );
    // What lets the next start skip the layers: the engine's own memory of
    // the relay's address, or Slipway's layer map.
    let kept = match push_path {
        "relay" => "relay-port",
        _ => "registry-layers.json",
    };
    assert!(slipway.data_dir.join(kept).exists(), "{kept} is kept");
    if push_path == "relay" {
        let port = std::fs::read_to_string(slipway.data_dir.join("relay-port")).expect("port");
        let relay = format!("127.0.0.1:{}/", port.trim());
        let names = docker(&["images", "--digests", "--format", "{{.Repository}}"]);
        assert!(
            !names.lines().any(|name| name.starts_with(&relay)),
            "the engine keeps no name of the relay's (a base's provenance would pick it up):\n{names}"
        );
    }
    let image = format!("{}/big-two:1.0.0", registry.host);
    pull_fresh(&image);
    assert_eq!(docker_run(&image, &["cat", "/which.txt"]), "big-two");
}
