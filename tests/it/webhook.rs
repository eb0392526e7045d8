//! `POST /webhook` as the contract states it, against the real binary.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

const REPO: &str = "acme/hooks";

/// Slipway with a stand-in GitHub that knows no commit and a registry
/// address where nothing listens: only the HTTP answers matter here.
async fn slipway(extra: &[(&str, &str)]) -> (FakeGitHub, Slipway) {
    let github = FakeGitHub::start().await;
    let slipway = Slipway::start(SlipwayOptions::without_registry(&github).envs(extra)).await;
    (github, slipway)
}

async fn post(slipway: &Slipway, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/webhook", slipway.url))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("answered");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn signed_headers(event: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-github-event", event.into()),
        ("x-github-delivery", uuid()),
        ("x-hub-signature-256", sign(body)),
    ]
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[tokio::test]
async fn ping_and_ignored_events() {
    let (_gh, slipway) = slipway(&[]).await;
    let ping = fixture("ping.ailisp-reallyfastci.json");
    assert_eq!(
        slipway.deliver("ping", &uuid(), &ping).await,
        (200, json!({"ignored": "ping"}))
    );
    for name in [
        "pull_request.opened.octokit-webhooks.json",
        "pull_request.synchronize.octokit-webhooks.json",
        "pull_request.closed.not_merged.octokit-webhooks.json",
    ] {
        let (status, body) = slipway
            .deliver("pull_request", &uuid(), &fixture(name))
            .await;
        assert_eq!(status, 200, "{name}");
        assert!(body["ignored"].is_string(), "{name}: {body}");
    }
    let (status, body) = slipway.deliver("issues", &uuid(), b"{}").await;
    assert_eq!((status, body["ignored"].is_string()), (200, true));
}

#[tokio::test]
async fn signatures_are_checked_before_anything_else() {
    let (github, slipway) = slipway(&[]).await;
    let body = merged_pr_payload(REPO, &sha(), 1, "main")
        .to_string()
        .into_bytes();
    let good = sign(&body);
    let cases: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some(good[..good.len() - 4].to_string()),
        Some(format!("sha256={}", "zz".repeat(32))),
        Some(good.replace("sha256=", "sha1=")),
        Some(sign(b"another body")),
    ];
    for signature in cases {
        let mut headers = signed_headers("pull_request", &body);
        headers.retain(|(k, _)| *k != "x-hub-signature-256");
        if let Some(sig) = &signature {
            headers.push(("x-hub-signature-256", sig.clone()));
        }
        let (status, answer) = post(&slipway, &headers, body.clone()).await;
        assert_eq!(status, 401, "{signature:?}: {answer}");
        assert!(answer["error"].is_string());
    }
    let (status, builds) = slipway.get_json("/builds").await;
    assert_eq!(
        (status, builds["builds"].as_array().map(Vec::len)),
        (200, Some(0)),
        "no work from unsigned requests"
    );
    assert!(github.requests().is_empty(), "nothing reached GitHub");
}

#[tokio::test]
async fn malformed_requests_get_the_contract_codes() {
    let (_gh, slipway) = slipway(&[]).await;
    let body = merged_pr_payload(REPO, &sha(), 1, "main")
        .to_string()
        .into_bytes();

    let mut text = signed_headers("pull_request", &body);
    text[0].1 = "text/plain".into();
    assert_eq!(post(&slipway, &text, body.clone()).await.0, 415);

    let mut no_event = signed_headers("pull_request", &body);
    no_event.retain(|(k, _)| *k != "x-github-event");
    assert_eq!(post(&slipway, &no_event, body.clone()).await.0, 400);

    let not_json = b"{not json".to_vec();
    assert_eq!(
        post(
            &slipway,
            &signed_headers("pull_request", &not_json),
            not_json
        )
        .await
        .0,
        400
    );

    let mut no_sha = merged_pr_payload(REPO, &sha(), 1, "main");
    no_sha["pull_request"]["merge_commit_sha"] = Value::Null;
    let no_sha = no_sha.to_string().into_bytes();
    let (status, answer) = post(&slipway, &signed_headers("pull_request", &no_sha), no_sha).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("merge_commit_sha"),
        "{answer}"
    );

    let mut traversal = merged_pr_payload(REPO, &sha(), 1, "main");
    traversal["repository"]["full_name"] = json!("../../etc");
    let traversal = traversal.to_string().into_bytes();
    assert_eq!(
        post(
            &slipway,
            &signed_headers("pull_request", &traversal),
            traversal
        )
        .await
        .0,
        400
    );

    assert_eq!(raw_status(&slipway, &announced_oversize()).await, 413);
    assert_eq!(raw_status(&slipway, &chunked_oversize()).await, 413);

    let resp = reqwest::get(format!("{}/webhook", slipway.url))
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 405);

    // Still up and answering.
    let ping = fixture("ping.octokit-webhooks.json");
    assert_eq!(slipway.deliver("ping", &uuid(), &ping).await.0, 200);
}

#[tokio::test]
async fn form_encoded_deliveries_are_accepted() {
    let (_gh, slipway) = slipway(&[]).await;
    let payload = merged_pr_payload(REPO, &sha(), 5, "main").to_string();
    let body = serde_urlencoded::to_string([("payload", payload)])
        .expect("form")
        .into_bytes();
    let mut headers = signed_headers("pull_request", &body);
    headers[0].1 = "application/x-www-form-urlencoded".into();
    let (status, answer) = post(&slipway, &headers, body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued");
}

#[tokio::test]
async fn redeliveries_and_same_commit_are_duplicates() {
    let (_gh, slipway) = slipway(&[]).await;
    let commit = sha();
    let body = merged_pr_payload(REPO, &commit, 9, "main")
        .to_string()
        .into_bytes();
    let delivery = uuid();
    let (status, first) = slipway.deliver("pull_request", &delivery, &body).await;
    assert_eq!(status, 202, "{first}");
    let id = first["build_id"].as_str().expect("id").to_string();
    assert_eq!(first["url"], format!("/builds/{id}"));
    let expected = json!({"build_id": id, "duplicate": true, "url": format!("/builds/{id}")});
    assert_eq!(
        slipway.deliver("pull_request", &delivery, &body).await,
        (200, expected.clone())
    );
    assert_eq!(
        slipway.deliver("pull_request", &uuid(), &body).await,
        (200, expected)
    );

    let (status, record) = slipway.get_json(&format!("/builds/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(record["commit"], commit);
    assert_eq!(record["pull_request"], 9);
    assert_eq!(record["delivery"], delivery);
    let (_, list) = slipway
        .get_json(&format!("/builds?repository={REPO}"))
        .await;
    assert_eq!(list["builds"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn branches_filter_and_results_endpoints() {
    let (_gh, slipway) = slipway(&[("SLIPWAY_BRANCHES", "main,release")]).await;
    let dev = merged_pr_payload(REPO, &sha(), 2, "dev")
        .to_string()
        .into_bytes();
    let (status, body) = slipway.deliver("pull_request", &uuid(), &dev).await;
    assert_eq!(status, 200);
    assert!(
        body["ignored"].as_str().unwrap_or("").contains("dev"),
        "{body}"
    );
    let release = merged_pr_payload(REPO, &sha(), 3, "release")
        .to_string()
        .into_bytes();
    assert_eq!(
        slipway.deliver("pull_request", &uuid(), &release).await.0,
        202
    );

    assert_eq!(slipway.get_json("/builds/does-not-exist").await.0, 404);
    assert_eq!(slipway.get_json("/builds?status=bogus").await.0, 400);
    assert_eq!(
        slipway.get_json("/builds?limit=1").await.1["builds"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let resp = reqwest::get(format!("{}/builds/does-not-exist/log", slipway.url))
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 404);
    let (status, health) = slipway.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

/// Not a timed assertion: prints the answer times, for the closing note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answer_time_is_reported() {
    let (_gh, slipway) = slipway(&[("SLIPWAY_MAX_QUEUED_BUILDS", "100000")]).await;
    let client = reqwest::Client::new();
    let mut merged = Vec::new();
    let mut ignored = Vec::new();
    let opened = fixture("pull_request.opened.octokit-webhooks.json");
    for i in 0..200 {
        let body = merged_pr_payload(REPO, &sha(), i, "main")
            .to_string()
            .into_bytes();
        for (times, event_body) in [(&mut merged, &body), (&mut ignored, &opened)] {
            let started = Instant::now();
            let resp = client
                .post(format!("{}/webhook", slipway.url))
                .header("content-type", "application/json")
                .header("x-github-event", "pull_request")
                .header("x-github-delivery", uuid())
                .header("x-hub-signature-256", sign(event_body))
                .body(event_body.clone())
                .send()
                .await
                .expect("answered");
            assert!(resp.status().is_success());
            times.push(started.elapsed());
        }
    }
    for (name, times) in [
        ("merged (202)", &mut merged),
        ("ignored (200)", &mut ignored),
    ] {
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "webhook answer time, {name}: p50 {:?}, p99 {:?}, max {:?} over {} deliveries",
            pct(0.5),
            pct(0.99),
            times[times.len() - 1],
            times.len()
        );
        assert!(pct(0.5) < Duration::from_secs(5), "sanity only");
    }
}

/// Headers announcing a body over the cap; the body is never sent, so the
/// answer must come without reading it.
fn announced_oversize() -> Vec<u8> {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         x-github-event: ping\r\nx-hub-signature-256: sha256={}\r\ncontent-length: {}\r\n\r\n",
        "0".repeat(64),
        25 * 1024 * 1024 + 1
    )
    .into_bytes()
}

/// A chunked body, no Content-Length, that grows past the cap.
fn chunked_oversize() -> Vec<u8> {
    let mut request = format!(
        "POST /webhook HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         x-github-event: ping\r\nx-hub-signature-256: sha256={}\r\ntransfer-encoding: chunked\r\n\r\n",
        "0".repeat(64)
    )
    .into_bytes();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..26 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Sends raw bytes (ignoring a server that stops reading) and returns the
/// status code of the answer.
async fn raw_status(slipway: &Slipway, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = slipway.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    let sender = tokio::spawn(async move {
        for piece in request.chunks(64 * 1024) {
            if writer.write_all(piece).await.is_err() {
                break;
            }
        }
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    sender.abort();
    let head = String::from_utf8_lossy(&answer[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}
