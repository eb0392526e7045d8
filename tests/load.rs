//! Load: thousands of deliveries from many clients, many builds against a
//! small concurrency limit, and the queue limit. Nothing is lost, nothing is
//! built twice, nothing is silently dropped.

// These tests use part of the shared harness; tests/it/ uses all of it.
#[allow(dead_code, unused_imports)]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const REPO: &str = "acme/load";

#[derive(Clone)]
struct Delivery {
    event: &'static str,
    id: String,
    body: Arc<Vec<u8>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_deliveries_from_fifty_clients_none_lost_none_twice() {
    const TOTAL: usize = 2000;
    const CLIENTS: usize = 50;
    let github = FakeGitHub::start().await;
    let options =
        SlipwayOptions::without_registry(&github).env("SLIPWAY_MAX_QUEUED_BUILDS", "100000");
    let slipway = Slipway::start(options).await;
    // A quarter are first deliveries of merged PRs, half are redeliveries of
    // those, a quarter are events to ignore.
    let mut deliveries = Vec::with_capacity(TOTAL);
    let opened = Arc::new(
        std::fs::read(format!(
            "{}/tests/fixtures/pull_request.opened.octokit-webhooks.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture"),
    );
    for i in 0..TOTAL / 4 {
        let body = Arc::new(
            merged_pr_payload(REPO, &sha(), i as u64, "main")
                .to_string()
                .into_bytes(),
        );
        let first = Delivery {
            event: "pull_request",
            id: uuid(),
            body,
        };
        deliveries.push(first.clone());
        deliveries.push(first.clone());
        // A redelivery GitHub made after a timeout has the same id; another
        // delivery for the same merge has a new one. Both are duplicates.
        deliveries.push(Delivery {
            id: uuid(),
            ..first
        });
        deliveries.push(Delivery {
            event: "pull_request",
            id: uuid(),
            body: opened.clone(),
        });
    }
    // Interleave deterministically so redeliveries race their originals.
    let mut order: Vec<usize> = (0..deliveries.len()).collect();
    order.sort_by_key(|i| (i * 7919) % deliveries.len());
    let queue = Arc::new(tokio::sync::Mutex::new(
        order
            .into_iter()
            .map(|i| deliveries[i].clone())
            .collect::<Vec<_>>(),
    ));
    let url = format!("{}/webhook", slipway.url);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let queue = queue.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut answers = Vec::new();
                loop {
                    let Some(delivery) = queue.lock().await.pop() else {
                        return answers;
                    };
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-github-event", delivery.event)
                        .header("x-github-delivery", &delivery.id)
                        .header("x-hub-signature-256", sign(&delivery.body))
                        .body(delivery.body.to_vec())
                        .send()
                        .await
                        .expect("every delivery is answered");
                    let status = resp.status().as_u16();
                    let json: Value = resp.json().await.unwrap_or(Value::Null);
                    answers.push((status, json));
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.expect("client"));
    }
    let elapsed = started.elapsed();
    assert_eq!(answers.len(), TOTAL, "every delivery answered");
    let mut by_kind: HashMap<&str, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (status, json) in &answers {
        let kind = match (status, json.get("duplicate"), json.get("ignored")) {
            (202, _, _) => "accepted",
            (200, Some(_), _) => "duplicate",
            (200, _, Some(_)) => "ignored",
            _ => panic!("unexpected answer {status} {json}"),
        };
        *by_kind.entry(kind).or_default() += 1;
        if let Some(id) = json["build_id"].as_str() {
            ids.insert(id.to_string());
        }
    }
    assert_eq!(by_kind.get("accepted"), Some(&(TOTAL / 4)));
    assert_eq!(by_kind.get("duplicate"), Some(&(TOTAL / 2)));
    assert_eq!(by_kind.get("ignored"), Some(&(TOTAL / 4)));
    assert_eq!(ids.len(), TOTAL / 4, "each merge has exactly one build");
    let (_, list) = slipway
        .get_json(&format!("/builds?repository={REPO}&limit=500"))
        .await;
    let stored: std::collections::HashSet<String> = list["builds"]
        .as_array()
        .expect("builds")
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        stored, ids,
        "every accepted delivery is stored, and nothing else"
    );
    println!(
        "{TOTAL} deliveries from {CLIENTS} clients answered in {elapsed:.2?} ({:.0}/s): {} accepted, {} duplicates, {} ignored, 0 lost",
        TOTAL as f64 / elapsed.as_secs_f64(),
        by_kind["accepted"],
        by_kind["duplicate"],
        by_kind["ignored"]
    );
}

/// The build steps running in the engine whose shell carries `marker`, each
/// named by its command line (marker, commit, service), with how many processes
/// carry it. Steps are counted by name, not by process: busybox's shell forks
/// before it execs `sleep`, and until the exec the child has the parent's
/// command line, so on a busy machine one step can show as two processes.
/// A scan of /proc is not one instant either: a step can end and the next
/// start while it runs, so the processes found are looked at again once the
/// scan is over, and only those still there count.
fn running_steps(marker: &str) -> (usize, usize) {
    let found = processes(|args| {
        args.first().is_some_and(|a| a.ends_with("sh")) && args.iter().any(|a| a.contains(marker))
    });
    let alive: Vec<Vec<u8>> = found
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .filter(|cmdline| !cmdline.is_empty())
        .collect();
    let steps: std::collections::HashSet<&Vec<u8>> = alive.iter().collect();
    (steps.len(), alive.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_merges_of_three_services_respect_the_concurrency_limit() {
    let (github, _registry, slipway) = start_stack(&[("SLIPWAY_MAX_CONCURRENT_BUILDS", "2")]).await;
    let marker = format!("limit-{}", &sha()[..10]);
    let mut ids = Vec::new();
    for pr in 0..20 {
        let commit = sha();
        // The shell outlives the sleep only when a command follows it, so the
        // marker stays visible for the whole step; each service's step is its
        // own, or BuildKit would run one step for all three.
        let dockerfile = |service: &str| {
            format!("FROM slipway-test-base:1\nRUN sleep 1 && echo {marker} {commit} {service}\n")
        };
        let manifest = format!(
            r#"[{{"service_name":"a{pr}","version":"1"}},{{"service_name":"b{pr}","version":"1"}},{{"service_name":"c{pr}","version":"1"}}]"#
        );
        github.add_commit_files(
            REPO,
            &commit,
            &[
                ("dockerInfo.json", &manifest),
                (&format!("a{pr}/Dockerfile"), &dockerfile("a")),
                (&format!("b{pr}/Dockerfile"), &dockerfile("b")),
                (&format!("c{pr}/Dockerfile"), &dockerfile("c")),
            ],
        );
        ids.push(slipway.merge(REPO, &commit).await);
    }
    let watcher = {
        let marker = marker.clone();
        tokio::task::spawn_blocking(move || {
            let (mut peak, mut doubled_polls) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut idle_polls = 0;
            while Instant::now() < deadline && idle_polls < 100 {
                let (steps, processes) = running_steps(&marker);
                peak = peak.max(steps);
                if processes > steps {
                    doubled_polls += 1;
                }
                // Idle only counts once builds were seen: a loaded machine may start them late.
                idle_polls = if steps == 0 && peak > 0 {
                    idle_polls + 1
                } else {
                    0
                };
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("polls where a step showed as more than one process: {doubled_polls}");
            peak
        })
    };
    // The webhook keeps answering while the builds run.
    let mut latencies = Vec::new();
    let ping = b"{\"zen\":\"Keep it logically awesome.\"}";
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(slipway.deliver("ping", &uuid(), ping).await.0, 200);
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        let record = slipway.wait_for(id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }
    let peak = watcher.await.expect("watcher");
    assert!(
        peak <= 2,
        "at most --max-concurrent-builds build steps at once, saw {peak}"
    );
    assert!(peak >= 1, "the watcher saw the builds");
    latencies.sort();
    println!(
        "20 merges × 3 services with --max-concurrent-builds 2: peak {peak} engine builds at once; webhook answer while building: p50 {:?}, p99 {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_queue_limit_merges_get_503_and_it_shows() {
    let limits = [
        ("SLIPWAY_MAX_CONCURRENT_BUILDS", "1"),
        ("SLIPWAY_MAX_QUEUED_BUILDS", "3"),
    ];
    let (github, _registry, slipway) = start_stack(&limits).await;
    let blocker = sha();
    github.add_commit_files(
        REPO,
        &blocker,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"blocker","version":"1"}"#,
            ),
            (
                "Dockerfile",
                &format!("FROM slipway-test-base:1\nRUN echo {blocker} && sleep 20\n"),
            ),
        ],
    );
    let first = slipway.merge(REPO, &blocker).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while slipway.get_json(&format!("/builds/{first}")).await.1["status"] != "running" {
        assert!(Instant::now() < deadline, "first build starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut statuses = Vec::new();
    for pr in 0..5 {
        let body = merged_pr_payload(REPO, &sha(), 100 + pr, "main").to_string();
        let resp = reqwest::Client::new()
            .post(format!("{}/webhook", slipway.url))
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", uuid())
            .header("x-hub-signature-256", sign(body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("answered");
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        statuses.push((resp.status().as_u16(), retry_after));
    }
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, vec![202, 202, 202, 503, 503]);
    assert!(
        statuses[3]
            .1
            .as_deref()
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "Retry-After on 503"
    );
    let metrics = slipway.get_text("/metrics").await;
    assert!(
        metrics.contains("slipway_webhook_deliveries_total{outcome=\"rejected_queue_full\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("slipway_queue_depth 3"), "{metrics}");
    assert!(slipway.log().contains("queue full"), "said in the log");
    let (_, list) = slipway.get_json("/builds?status=queued").await;
    assert_eq!(list["builds"].as_array().map(Vec::len), Some(3));
}
