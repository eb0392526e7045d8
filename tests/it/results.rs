//! Build results people watch: live logs, restarts, commit statuses,
//! retry, metrics and the API token, against the real engine and registry.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

const REPO: &str = "acme/watch";

/// A service whose build prints `ticks` lines, one every 200 ms, each with the
/// kernel's uptime (shared with the test) so delivery latency can be measured.
fn ticking_commit(github: &FakeGitHub, sha: &str, name: &str, ticks: u32) {
    // The first RUN is unique so the engine's cache never replays the ticks.
    let dockerfile = format!(
        "FROM slipway-test-base:1\n\
         RUN echo {sha}\n\
         RUN for i in $(seq 1 {ticks}); do echo \"tick $i $(cut -d' ' -f1 /proc/uptime)\"; sleep 0.2; done\n"
    );
    let manifest = format!(r#"{{"service_name":"{name}","version":"1"}}"#);
    github.add_commit_files(
        REPO,
        sha,
        &[("dockerInfo.json", &manifest), ("Dockerfile", &dockerfile)],
    );
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|u| u.parse().ok()))
        .unwrap_or(0.0)
}

/// Waits until the build's first service reaches `status`.
async fn wait_for_service(slipway: &Slipway, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (_, record) = slipway.get_json(&format!("/builds/{id}")).await;
        if record["services"][0]["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service of {id} never reached {status}");
}

/// A watcher that connects and then never reads.
async fn stalled_watcher(slipway: &Slipway, id: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = slipway.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET /builds/{id}/log HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    stream
}

/// `tick N UPTIME` printed by the ticking step, wherever the builder puts
/// it in the line (BuildKit prefixes the step number and its time).
fn tick(line: &str) -> Option<(u32, f64)> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let at = parts.iter().position(|p| *p == "tick")?;
    Some((
        parts.get(at + 1)?.parse().ok()?,
        parts.get(at + 2)?.parse().ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_log_streams_every_line_in_order_to_many_watchers() {
    const WATCHERS: usize = 50;
    let (github, _registry, slipway) = start_stack(&[]).await;
    let sha = sha();
    ticking_commit(&github, &sha, "ticker", 15);
    let id = slipway.merge(REPO, &sha).await;

    let stalled = stalled_watcher(&slipway, &id).await;
    let url = format!("{}/builds/{id}/log", slipway.url);
    let timed = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut record = |data: &str| {
                if let Some(sent) = tick(data).map(|(_, sent)| sent) {
                    latencies.push(uptime() - sent);
                }
            };
            let events = sse_events(&url, Some(&mut record)).await;
            (events, latencies)
        })
    };
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { sse_events(&url, None).await })
        })
        .collect();

    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let (events, mut latencies) = timed.await.expect("timed watcher");
    let plain: Vec<String> = slipway
        .build_log(&id)
        .await
        .lines()
        .map(str::to_string)
        .collect();
    let streamed: Vec<String> = events
        .iter()
        .filter(|(e, _)| e.is_none())
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(streamed, plain, "every line, in order");
    assert_eq!(
        events.last().map(|(e, d)| (e.clone(), d.clone())),
        Some((Some("end".into()), r#"{"status":"succeeded"}"#.into()))
    );
    let ticks = streamed.iter().filter(|l| tick(l).is_some()).count();
    assert_eq!(ticks, 15, "{streamed:?}");
    for watcher in watchers {
        let events = watcher.await.expect("watcher");
        let lines: Vec<String> = events
            .iter()
            .filter(|(e, _)| e.is_none())
            .map(|(_, d)| d.clone())
            .collect();
        assert_eq!(lines, plain);
    }
    drop(stalled);

    let (late_lines, status) = slipway.watch(&id).await;
    assert_eq!(
        (late_lines, status),
        (plain, "succeeded".to_string()),
        "a late watcher gets it all"
    );

    latencies.sort_by(f64::total_cmp);
    if !latencies.is_empty() {
        println!(
            "engine line → SSE client latency over {} lines with {} other watchers and one stalled: median {:.0} ms, max {:.0} ms (10 ms resolution)",
            latencies.len(),
            WATCHERS,
            latencies[latencies.len() / 2] * 1000.0,
            latencies[latencies.len() - 1] * 1000.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_build_loses_nothing() {
    let (github, registry, mut slipway) = start_stack(&[]).await;
    let sha = sha();
    ticking_commit(&github, &sha, "survivor", 20);
    let id = slipway.merge(REPO, &sha).await;
    wait_for_service(&slipway, &id, "building").await;
    slipway.kill();
    slipway.restart().await;
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(registry.tags("survivor"), vec!["1"]);
    let log = slipway.build_log(&id).await;
    assert!(log.contains("running it again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_build_finish() {
    let (github, _registry, mut slipway) = start_stack(&[("SLIPWAY_SHUTDOWN_GRACE", "120s")]).await;
    let sha = sha();
    ticking_commit(&github, &sha, "graceful", 10);
    let id = slipway.merge(REPO, &sha).await;
    wait_for_service(&slipway, &id, "building").await;
    let stopped = tokio::task::block_in_place(|| slipway.terminate(Duration::from_secs(120)));
    assert!(stopped, "exits cleanly after the build:\n{}", slipway.log());
    slipway.restart().await;
    let (_, record) = slipway.get_json(&format!("/builds/{id}")).await;
    assert_eq!(
        record["status"], "succeeded",
        "finished before exit: {record}"
    );
    assert!(!slipway.build_log(&id).await.contains("running it again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_statuses_go_pending_then_final() {
    let public = "https://slipway.example.test";
    let (github, _registry, slipway) = start_stack(&[
        ("SLIPWAY_GITHUB_TOKEN", "gh-status-token"),
        ("SLIPWAY_PUBLIC_URL", public),
    ])
    .await;
    let good = sha();
    ticking_commit(&github, &good, "fine", 1);
    let good_id = slipway.merge(REPO, &good).await;
    assert_eq!(slipway.wait_for(&good_id).await["status"], "succeeded");
    let bad = sha();
    github.add_commit_files(
        REPO,
        &bad,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"broken","version":"1"}"#,
            ),
            ("Dockerfile", "FROM slipway-test-base:1\nRUN false\n"),
        ],
    );
    let bad_id = slipway.merge(REPO, &bad).await;
    assert_eq!(slipway.wait_for(&bad_id).await["status"], "failed");

    let statuses = github.statuses();
    let states = |sha: &str| -> Vec<Value> {
        statuses
            .iter()
            .filter(|s| s.sha == sha)
            .map(|s| s.body.clone())
            .collect()
    };
    let good_states = states(&good);
    assert_eq!(
        good_states
            .iter()
            .map(|s| s["state"].clone())
            .collect::<Vec<_>>(),
        ["pending", "success"]
    );
    for status in &good_states {
        assert_eq!(status["context"], "slipway");
        assert_eq!(
            status["target_url"],
            format!("{public}/builds/{good_id}/page")
        );
    }
    assert_eq!(good_states[1]["description"], "1 image published");
    let bad_states = states(&bad);
    assert_eq!(
        bad_states
            .iter()
            .map(|s| s["state"].clone())
            .collect::<Vec<_>>(),
        ["pending", "failure"]
    );
    assert_eq!(bad_states[1]["description"], "1 of 1 services failed");
    assert!(!slipway.log().contains("gh-status-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_builds_the_same_commit_again_and_skips_what_is_published() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let sha = sha();
    ticking_commit(&github, &sha, "again", 1);
    let id = slipway.merge(REPO, &sha).await;
    assert_eq!(slipway.wait_for(&id).await["status"], "succeeded");
    let resp = reqwest::Client::new()
        .post(format!("{}/builds/{id}/retry", slipway.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 202);
    let answer: Value = resp.json().await.expect("json");
    let retry_id = answer["build_id"].as_str().expect("new id").to_string();
    assert_ne!(retry_id, id);
    assert_eq!(answer["url"], format!("/builds/{retry_id}"));
    let record = slipway.wait_for(&retry_id).await;
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["commit"], sha);
    assert_eq!(record["retry_of"], id);
    assert_eq!(service(&record, "again")["status"], "skipped");
    let missing = reqwest::Client::new()
        .post(format!("{}/builds/nope/retry", slipway.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(missing.status().as_u16(), 404);
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn assert_prometheus_text(text: &str) {
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" HELP ") || comment.starts_with(" TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "value of {line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_move() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let get = || async { slipway.get_text("/metrics").await };
    let before = get().await;
    assert_prometheus_text(&before);
    let sha = sha();
    ticking_commit(&github, &sha, "counted", 1);
    let id = slipway.merge(REPO, &sha).await;
    let body = merged_pr_payload(REPO, &sha, 7, "main").to_string();
    assert_eq!(
        slipway
            .deliver("pull_request", &uuid(), body.as_bytes())
            .await
            .0,
        200
    );
    assert_eq!(slipway.deliver("ping", &uuid(), b"{}").await.0, 200);
    let resp = reqwest::Client::new()
        .post(format!("{}/webhook", slipway.url))
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 401);
    slipway.wait_for(&id).await;
    let after = get().await;
    assert_prometheus_text(&after);
    for (series, delta) in [
        (
            "slipway_webhook_deliveries_total{outcome=\"accepted\"}",
            1.0,
        ),
        (
            "slipway_webhook_deliveries_total{outcome=\"duplicate\"}",
            1.0,
        ),
        ("slipway_webhook_deliveries_total{outcome=\"ignored\"}", 1.0),
        (
            "slipway_webhook_deliveries_total{outcome=\"rejected_signature\"}",
            1.0,
        ),
        ("slipway_builds_total{status=\"succeeded\"}", 1.0),
        ("slipway_services_total{status=\"succeeded\"}", 1.0),
        ("slipway_build_duration_seconds_count", 1.0),
        ("slipway_push_duration_seconds_count", 1.0),
    ] {
        assert_eq!(
            metric(&after, series) - metric(&before, series),
            delta,
            "{series}\n{after}"
        );
    }
    assert!(metric(&after, "slipway_pushed_bytes_total") > 0.0);
    assert_eq!(metric(&after, "slipway_builds_running"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_guards_everything_but_the_webhook_and_health() {
    let (github, _registry, slipway) = start_stack(&[("SLIPWAY_API_TOKEN", "let-me-in-7")]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for path in ["/builds", "/metrics", "/", "/builds/x/log"] {
        let resp = client
            .get(format!("{}{path}", slipway.url))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let resp = client
            .get(format!("{}{path}", slipway.url))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 401, "{path} with a wrong token");
    }
    let ok = client
        .get(format!("{}/builds", slipway.url))
        .bearer_auth("let-me-in-7")
        .send()
        .await
        .expect("answered");
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(
        client
            .get(format!("{}/healthz", slipway.url))
            .send()
            .await
            .expect("answered")
            .status()
            .as_u16(),
        200
    );
    let sha = sha();
    ticking_commit(&github, &sha, "guarded", 1);
    let body = merged_pr_payload(REPO, &sha, 7, "main").to_string();
    assert_eq!(
        slipway
            .deliver("pull_request", &uuid(), body.as_bytes())
            .await
            .0,
        202
    );

    // A browser opens a page once with ?token= and keeps a cookie.
    let login = client
        .get(format!("{}/?token=let-me-in-7", slipway.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(login.status().as_u16(), 303);
    assert_eq!(login.headers()["location"], "/");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"));
    let pair = cookie.split(';').next().expect("pair").to_string();
    let page = client
        .get(format!("{}/", slipway.url))
        .header("cookie", pair)
        .send()
        .await
        .expect("answered");
    assert_eq!(page.status().as_u16(), 200);
    let bad = client
        .get(format!("{}/?token=nope", slipway.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(bad.status().as_u16(), 401);
}
