//! Several Slipway instances sharing one PostgreSQL, one engine and one
//! registry: every merge built once, a stopped instance's build taken over,
//! a frozen one fenced out, the log followed from any instance.

use crate::support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::partition::Partition;
use crate::support::postgres::PgServer;
use crate::support::{FakeGitHub, Slipway, SlipwayOptions, TestRegistry};
use serde_json::Value;

/// Short, so that takeovers happen within a test's patience.
const LEASE: &str = "3s";
const LEASE_SECS: u64 = 3;
const POLL: &str = "200ms";

struct Cluster {
    github: FakeGitHub,
    registry: TestRegistry,
    instances: Vec<Slipway>,
}

impl Cluster {
    async fn start(count: usize, database: &str) -> Self {
        let mut cluster = Self::empty().await;
        for _ in 0..count {
            cluster.add(database).await;
        }
        cluster
    }

    async fn empty() -> Self {
        Self {
            github: FakeGitHub::start().await,
            registry: TestRegistry::start(),
            instances: Vec::new(),
        }
    }

    /// Starts instance `node-N`, N the next index, on `database`.
    async fn add(&mut self, database: &str) {
        let name = format!("node-{}", self.instances.len());
        let options = SlipwayOptions::new(&self.github, &self.registry).envs(&[
            ("SLIPWAY_DATABASE", database),
            ("SLIPWAY_INSTANCE_ID", &name),
            ("SLIPWAY_LEASE", LEASE),
            ("SLIPWAY_QUEUE_POLL", POLL),
            ("SLIPWAY_SHUTDOWN_GRACE", "2s"),
        ]);
        self.instances.push(Slipway::start(options).await);
    }

    /// The instance named in a build record.
    fn index_of(&self, record: &Value) -> usize {
        let name = record["instance"].as_str().expect("an instance runs it");
        name.strip_prefix("node-")
            .and_then(|n| n.parse().ok())
            .expect("node-N")
    }

    /// Waits until `id` runs, on any instance; returns its record.
    async fn wait_running(&self, via: usize, id: &str) -> Value {
        self.wait_until(via, id, "to start", |r| r["status"] == "running")
            .await
    }

    async fn wait_until(
        &self,
        via: usize,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.instances[via]
            .record_when(id, Duration::from_secs(120), done)
            .await
            .unwrap_or_else(|record| panic!("build {id} did not {what}: {record}"))
    }
}

/// A service whose build takes a few seconds, so an instance can be
/// stopped in the middle of it.
fn slow_service(github: &FakeGitHub, repository: &str, commit: &str, name: &str) {
    // The commit in the step keeps the engine from reusing a cached one.
    let dockerfile = format!(
        "FROM {}\nRUN echo {commit} && for i in 1 2 3 4 5 6; do echo step $i; sleep 1; done\nCOPY Dockerfile /\n",
        support::BASE_IMAGE
    );
    github.add_commit_files(
        repository,
        commit,
        &[
            (
                "dockerInfo.json",
                &format!(r#"{{"service_name":"{name}","version":"1.0.0"}}"#),
            ),
            ("Dockerfile", &dockerfile),
        ],
    );
}

fn signal(slipway: &Slipway, name: &str) {
    let pid = slipway.pid().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Hundreds of deliveries to random instances, a third redelivered to
/// another instance and a third resent under a new delivery id: one build
/// per merge, one push per tag, and the same `GET /builds` everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_to_any_instance_build_each_merge_once() {
    let database = support::postgres::database();
    let cluster = Cluster::start(3, &database).await;
    const MERGES: usize = 120;
    // The same sources in every merge: the first build publishes the tag,
    // the others find it published and skip it.
    let files = [
        (
            "dockerInfo.json",
            r#"{"service_name":"shared","version":"1.0.0"}"#,
        ),
        (
            "Dockerfile",
            "FROM slipway-test-base:1\nCOPY Dockerfile /\n",
        ),
    ];
    let mut sends = Vec::new();
    for i in 0..MERGES {
        let commit = support::sha();
        cluster
            .github
            .add_commit_files("acme/many", &commit, &files);
        let body = support::merged_pr_payload("acme/many", &commit, i as u64 + 1, "main");
        let delivery = support::uuid();
        sends.push((i % 3, delivery.clone(), body.clone()));
        match i % 3 {
            0 => sends.push(((i + 1) % 3, delivery, body)),
            1 => sends.push(((i + 2) % 3, support::uuid(), body)),
            _ => {}
        }
    }
    let sent_at = Instant::now();
    let mut ids: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let answers = futures::future::join_all(sends.iter().map(|(to, delivery, body)| {
        let slipway = &cluster.instances[*to];
        let body = body.to_string();
        async move {
            let (status, json) = slipway
                .deliver("pull_request", delivery, body.as_bytes())
                .await;
            (status, json, body)
        }
    }))
    .await;
    for (status, json, body) in answers {
        // 202 for the delivery that created the build, 200 for a duplicate.
        let refusals: Vec<String> = cluster
            .instances
            .iter()
            .flat_map(|i| {
                i.log()
                    .lines()
                    .filter(|l| l.contains("could not store the delivery"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            status == 202 || (status == 200 && json["duplicate"] == true),
            "{status} {json}: {refusals:#?}"
        );
        let commit = serde_json::from_str::<Value>(&body).expect("json")["pull_request"]
            ["merge_commit_sha"]
            .as_str()
            .expect("sha")
            .to_string();
        ids.entry(commit)
            .or_default()
            .insert(json["build_id"].as_str().expect("build id").to_string());
    }
    println!(
        "{} deliveries answered in {:?}",
        sends.len(),
        sent_at.elapsed()
    );
    assert_eq!(ids.len(), MERGES);
    for (commit, builds) in &ids {
        assert_eq!(builds.len(), 1, "merge {commit} got builds {builds:?}");
    }
    for builds in ids.values() {
        let id = builds.iter().next().expect("one");
        let record = cluster.instances[0].wait_for(id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }
    let (_, listed) = cluster.instances[0].get_json("/builds?limit=1000").await;
    let builds = listed["builds"].as_array().expect("builds").clone();
    assert_eq!(builds.len(), MERGES);
    let published = builds
        .iter()
        .filter(|b| support::service(b, "shared")["status"] == "succeeded")
        .count();
    assert_eq!(published, 1, "one push of the tag, the rest skipped");
    assert_eq!(cluster.registry.tags("shared"), vec!["1.0.0"]);
    let ran_on: HashSet<String> = builds
        .iter()
        .filter_map(|b| b["instance"].as_str().map(str::to_string))
        .collect();
    assert!(
        ran_on.len() > 1,
        "the instances shared the work: {ran_on:?}"
    );
    let per_instance: BTreeMap<&str, usize> = builds
        .iter()
        .filter_map(|b| b["instance"].as_str())
        .fold(BTreeMap::new(), |mut counts, name| {
            *counts.entry(name).or_default() += 1;
            counts
        });
    println!(
        "{MERGES} builds, all done {:?} after the first delivery: {per_instance:?}",
        sent_at.elapsed()
    );
    for other in &cluster.instances[1..] {
        let (_, theirs) = other.get_json("/builds?limit=1000").await;
        assert_eq!(theirs, listed, "every instance answers the same");
    }
}

/// SIGKILL of the instance running a build: another takes it over within
/// the lease and a poll, and publishes one tag; a watcher on a third
/// instance sees every line of both attempts, in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_build_is_taken_over_and_followed_from_another() {
    let database = support::postgres::database();
    let mut cluster = Cluster::start(3, &database).await;
    let commit = support::sha();
    slow_service(&cluster.github, "acme/kill", &commit, "taken-over");
    let id = cluster.instances[0].merge("acme/kill", &commit).await;
    let running = cluster.wait_running(0, &id).await;
    let victim = cluster.index_of(&running);
    let watcher = (victim + 1) % 3;
    let watched = {
        let url = format!("{}/builds/{id}/log", cluster.instances[watcher].url);
        tokio::spawn(async move { support::sse_events(&url, None).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    cluster.instances[victim].kill();
    let survivor = (victim + 2) % 3;
    let taken = cluster
        .wait_until(survivor, &id, "to be taken over", |r| {
            r["attempt"].as_u64() == Some(2) && r["status"] == "running"
        })
        .await;
    let took = killed_at.elapsed();
    assert_ne!(cluster.index_of(&taken), victim);
    assert!(
        took < Duration::from_secs(LEASE_SECS) + Duration::from_secs(2),
        "taken over after {took:?}"
    );
    println!("taken over {took:?} after the SIGKILL (lease {LEASE}, poll {POLL})");
    let record = cluster.instances[survivor].wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(cluster.registry.tags("taken-over"), vec!["1.0.0"]);

    let events = tokio::time::timeout(Duration::from_secs(60), watched)
        .await
        .expect("the stream ends")
        .expect("watcher");
    let (end, lines): (Vec<_>, Vec<_>) = events.into_iter().partition(|(e, _)| e.is_some());
    assert_eq!(end.len(), 1, "{end:?}");
    assert!(end[0].1.contains("succeeded"), "{end:?}");
    let streamed: Vec<String> = lines.into_iter().map(|(_, data)| data).collect();
    let stored: Vec<String> = cluster.instances[watcher]
        .build_log(&id)
        .await
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(streamed, stored, "every stored line, once, in order");
    println!(
        "{} lines streamed from a third instance across the takeover",
        streamed.len()
    );
    assert!(
        stored
            .iter()
            .any(|l| l.contains("stopped answering during this build")),
        "{stored:#?}"
    );
}

/// SIGSTOP of the running instance past its lease, then SIGCONT: it finds
/// itself fenced out, and neither pushes nor rewrites the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_instance_is_fenced_out_when_it_wakes() {
    let database = support::postgres::database();
    let cluster = Cluster::start(2, &database).await;
    let commit = support::sha();
    slow_service(&cluster.github, "acme/frozen", &commit, "fenced");
    let id = cluster.instances[0].merge("acme/frozen", &commit).await;
    let running = cluster.wait_running(0, &id).await;
    let frozen = cluster.index_of(&running);
    let other = 1 - frozen;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    signal(&cluster.instances[frozen], "STOP");
    let record = cluster
        .wait_until(other, &id, "to finish on the other instance", |r| {
            r["status"] == "succeeded" || r["status"] == "failed"
        })
        .await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(cluster.index_of(&record), other);
    signal(&cluster.instances[frozen], "CONT");
    // Long enough for the woken instance to notice, and to do harm if it could.
    tokio::time::sleep(Duration::from_secs(LEASE_SECS + 3)).await;
    let (_, after) = cluster.instances[other]
        .get_json(&format!("/builds/{id}"))
        .await;
    assert_eq!(after, record, "the fenced instance changed nothing");
    assert_eq!(cluster.registry.tags("fenced"), vec!["1.0.0"]);
    let log = cluster.instances[frozen].log();
    assert!(
        log.contains("lease lost") || log.contains("no longer holds it"),
        "the woken instance saw it was fenced out: {log}"
    );
    let pushed_after_wake = log
        .lines()
        .any(|l| l.contains(&id) && l.contains("published"));
    assert!(!pushed_after_wake, "{log}");
}

/// A network cut between one instance and PostgreSQL (its connections stay
/// open and nothing gets through, which SIGSTOP cannot show: the process
/// keeps running). It stops its build by itself once no renewal went through
/// for a whole lease, another instance takes the build over, and what the
/// cut-off instance had sent arrives when the line heals, and is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_cut_off_from_postgres_stops_its_build_and_is_fenced() {
    let database = support::postgres::database();
    let (target, via) = partitioned(&database);
    let partition = Partition::start(target).await;
    let via = via.replace("{port}", &partition.port.to_string());
    let mut cluster = Cluster::empty().await;
    cluster.add(&via).await;
    let commit = support::sha();
    slow_service(&cluster.github, "acme/cut", &commit, "cut-off");
    let id = cluster.instances[0].merge("acme/cut", &commit).await;
    let running = cluster.wait_running(0, &id).await;
    assert_eq!(cluster.index_of(&running), 0);
    cluster.add(&database).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    partition.cut();
    let cut_at = Instant::now();
    let taken = cluster
        .wait_until(1, &id, "to be taken over", |r| {
            r["attempt"].as_u64() == Some(2)
        })
        .await;
    assert_eq!(cluster.index_of(&taken), 1, "{taken}");
    let took = cut_at.elapsed();
    let record = cluster.instances[1].wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let stopped_alone = cluster.instances[0].log();
    assert!(
        stopped_alone.contains("lease not renewed for a whole lease"),
        "the cut-off instance stopped its build by itself: {stopped_alone}"
    );
    partition.heal();
    tokio::time::sleep(Duration::from_secs(LEASE_SECS + 3)).await;
    let (_, after) = cluster.instances[1]
        .get_json(&format!("/builds/{id}"))
        .await;
    assert_eq!(
        after, record,
        "what the cut-off instance sent changed nothing"
    );
    assert_eq!(cluster.registry.tags("cut-off"), vec!["1.0.0"]);
    let (status, health) = cluster.instances[0].get_json("/healthz").await;
    assert_eq!(status, 200, "the cut-off instance recovered: {health}");
    println!("taken over {took:?} after the cut");
}

/// The database's address, and the same URL with `{port}` for the relay's.
fn partitioned(database: &str) -> (std::net::SocketAddr, String) {
    let (head, rest) = database.split_once("@127.0.0.1:").expect("a loopback URL");
    let (port, tail) = rest.split_once('/').expect("a database name");
    let target = format!("127.0.0.1:{port}").parse().expect("address");
    (target, format!("{head}@127.0.0.1:{{port}}/{tail}"))
}

/// PostgreSQL restarted while builds run and deliveries arrive: every
/// delivery answered 202 is built, none is lost; the instances recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarting_loses_no_accepted_delivery() {
    let server = PgServer::private();
    let database = server.database();
    let cluster = Cluster::start(2, &database).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for round in 0..3 {
        for i in 0..4 {
            let commit = support::sha();
            cluster.github.add_commit_files(
                "acme/restart",
                &commit,
                &[
                    (
                        "dockerInfo.json",
                        &format!(r#"{{"service_name":"restart-{round}-{i}","version":"1.0.0"}}"#),
                    ),
                    ("Dockerfile", "FROM slipway-test-base:1\nRUN sleep 1\n"),
                ],
            );
            let body = support::merged_pr_payload("acme/restart", &commit, 1, "main").to_string();
            let (status, json) = cluster.instances[i % 2]
                .deliver("pull_request", &support::uuid(), body.as_bytes())
                .await;
            match status {
                202 => accepted.push(json["build_id"].as_str().expect("id").to_string()),
                503 => refused += 1,
                other => panic!("answered {other}: {json}"),
            }
        }
        if round == 0 {
            server.stop();
        }
        if round == 1 {
            server.start_again();
        }
    }
    println!(
        "{} accepted, {refused} refused with 503 while PostgreSQL was down",
        accepted.len()
    );
    assert!(
        refused > 0,
        "deliveries while PostgreSQL was down were refused, to be redelivered"
    );
    assert!(accepted.len() >= 8, "{accepted:?}");
    for id in &accepted {
        let record = cluster.instances[0].wait_for(id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }
    let (status, health) = cluster.instances[1].get_json("/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["database"], "postgresql");
}
