//! `--build-cache registry`, for real: an engine that never built a service
//! (its build cache for it pruned, its image removed: another machine with
//! the same BuildKit) builds the next version from the previous one's inline
//! cache in the TLS registry, read through Slipway's loopback relay with the
//! credentials its build session hands out. Whatever keeps the cache out, the
//! build runs cold and the log says why in one line.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use serde_json::{json, Value};

const REPO: &str = "acme/cached";
const NOT_USED: &str = "the registry cache was not used";

/// One test of this module at a time: on the containerd image store, a
/// prune (even of one record) can remove content a build of this module is
/// exporting at that moment, and that build fails with "not found".
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A commit of `api` at `version`: a dependency step whose output (not its
/// command line) names `marker`, then a source file that changes per version.
fn api_commit(github: &FakeGitHub, marker: &str, version: &str) -> String {
    let step = format!("echo \"deps-$((6*7))-{marker}\" && sleep 3 && echo {marker} > /deps");
    commit_with_step(github, &step, version)
}

/// A commit of `api` at `version` whose Dockerfile runs `step`, then copies
/// a source file that changes per version.
fn commit_with_step(github: &FakeGitHub, step: &str, version: &str) -> String {
    let commit = sha();
    let manifest = json!({"services": [{"name": "api", "version": version}]});
    let dockerfile = format!("FROM slipway-test-base:1\nRUN {step}\nCOPY src.txt /src.txt\n");
    github.add_commit_files(
        REPO,
        &commit,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            ("Dockerfile", &dockerfile),
            ("src.txt", version),
        ],
    );
    commit
}

/// What the dependency step prints when it runs.
fn step_ran(marker: &str) -> String {
    format!("deps-42-{marker}")
}

async fn publish(slipway: &Slipway, commit: &str) -> String {
    let id = slipway.merge(REPO, commit).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    log
}

/// Removes from the engine's build cache every record of the builds whose
/// steps name `marker`, and those built on them: the engine no longer knows
/// the steps, as one that never built them. Only these records go, so builds
/// of other tests keep their cache.
fn forget_builds_of(marker: &str) {
    let listed = docker(&["system", "df", "-v", "--format", "{{json .BuildCache}}"]);
    let records: Vec<Value> = serde_json::from_str(listed.trim()).unwrap_or_default();
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut doomed = Vec::new();
    for record in &records {
        let id = record["ID"].as_str().unwrap_or_default().to_string();
        if let Some(parent) = record["Parent"].as_str().filter(|p| !p.is_empty()) {
            children
                .entry(parent.to_string())
                .or_default()
                .push(id.clone());
        }
        if record["Description"]
            .as_str()
            .is_some_and(|d| d.contains(marker))
        {
            doomed.push(id);
        }
    }
    assert!(
        !doomed.is_empty(),
        "no build cache names {marker}: {listed}"
    );
    // Depth first, so each record goes after those built on it.
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    while let Some(id) = doomed.pop() {
        if seen.insert(id.clone()) {
            doomed.extend(children.get(&id).cloned().unwrap_or_default());
            order.push(id);
        }
    }
    for id in order.iter().rev() {
        docker(&["builder", "prune", "-af", "--filter", &format!("id={id}")]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_never_built_a_service_reuses_its_previous_version_from_the_registry() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (github, registry, slipway) = start_stack(&[]).await;
    let marker = uuid();
    let first = publish(&slipway, &api_commit(&github, &marker, "1.0.0")).await;
    assert!(
        first.contains(&step_ran(&marker)),
        "v1 runs the step:\n{first}"
    );
    assert!(
        !first.contains(NOT_USED),
        "a first version has no cache to miss:\n{first}"
    );

    docker(&["image", "rm", &format!("{}/api:1.0.0", registry.host)]);
    forget_builds_of(&marker);

    let second = publish(&slipway, &api_commit(&github, &marker, "1.1.0")).await;
    assert!(
        second.contains("build cache: 1.0.0, the previous version in the registry"),
        "{second}"
    );
    assert!(
        second.contains("importing cache manifest from 127.0.0.1:"),
        "{second}"
    );
    assert!(
        !second.contains(&step_ran(&marker)),
        "the dependency step came from the registry's cache, not a run:\n{second}"
    );
    assert!(!second.contains(NOT_USED), "{second}");
    assert!(
        !second.contains(&registry.password),
        "no credential in the log"
    );
    assert!(
        !slipway.log().contains(&registry.password),
        "no credential in Slipway's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_the_engine_cannot_import_leaves_a_cold_build_and_one_line() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let marker = uuid();
    let publisher = Slipway::start(SlipwayOptions::new(&github, &registry)).await;
    publish(&publisher, &api_commit(&github, &marker, "1.0.0")).await;
    // This instance tells the engine a relay address where nothing listens.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let lost = Slipway::start(
        SlipwayOptions::new(&github, &registry).env("SLIPWAY_RELAY_ADVERTISE", &nowhere),
    )
    .await;
    docker(&["image", "rm", &format!("{}/api:1.0.0", registry.host)]);
    forget_builds_of(&marker);

    let second = publish(&lost, &api_commit(&github, &marker, "1.1.0")).await;
    let said: Vec<&str> = second.lines().filter(|l| l.contains(NOT_USED)).collect();
    assert_eq!(said.len(), 1, "one line says why:\n{second}");
    assert!(said[0].contains("could not import it"), "{second}");
    assert!(
        second.contains(&step_ran(&marker)),
        "a cold build:\n{second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_relay_the_cache_is_not_used_and_the_log_says_so() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (github, registry, slipway) = start_stack(&[("SLIPWAY_PUSH_PATH", "export")]).await;
    let marker = uuid();
    publish(&slipway, &api_commit(&github, &marker, "1.0.0")).await;
    let second = publish(&slipway, &api_commit(&github, &marker, "1.1.0")).await;
    let said: Vec<&str> = second.lines().filter(|l| l.contains(NOT_USED)).collect();
    assert_eq!(said.len(), 1, "one line says why:\n{second}");
    assert!(said[0].contains("--push-path export"), "{second}");

    let local =
        Slipway::start(SlipwayOptions::new(&github, &registry).env("SLIPWAY_BUILD_CACHE", "local"))
            .await;
    let third = publish(&local, &api_commit(&github, &marker, "1.2.0")).await;
    assert!(!third.contains("importing cache manifest"), "{third}");
    assert!(!third.contains(NOT_USED), "{third}");
}

/// The figures of docs/performance.md, by hand on each engine:
/// `cargo test --test it -- --ignored --nocapture cache::figures`. A service
/// whose dependency step takes 20 s and writes 20 MB, built after a small
/// source change by an engine that never built it: from the registry's
/// cache, then cold (`--build-cache local`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures, by hand: about a minute a round"]
async fn figures() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (github, registry, shared) = start_stack(&[]).await;
    let local =
        Slipway::start(SlipwayOptions::new(&github, &registry).env("SLIPWAY_BUILD_CACHE", "local"))
            .await;
    let commit = |marker: &str, version: &str| {
        let step = format!("echo {marker} && sleep 20 && head -c 20000000 /dev/urandom > /deps");
        commit_with_step(&github, &step, version)
    };
    let built_in = |log: &str| -> String {
        let line = log
            .lines()
            .find(|l| l.contains("] built sha256:"))
            .unwrap_or_default();
        line.rsplit(" in ").next().unwrap_or_default().to_string()
    };
    let read = |log: &str| -> String {
        log.lines()
            .find(|l| l.contains("KiB of layers read from the registry"))
            .unwrap_or("none")
            .to_string()
    };
    for round in 1..=3 {
        let marker = uuid();
        let first = format!("1.{round}.0");
        publish(&shared, &commit(&marker, &first)).await;
        docker(&["image", "rm", &format!("{}/api:{first}", registry.host)]);
        forget_builds_of(&marker);
        let cached = publish(&shared, &commit(&marker, &format!("1.{round}.1"))).await;
        let hit = !cached.contains(&format!("{marker}\n")) && cached.contains(" CACHED");
        docker(&["image", "rm", &format!("{}/api:1.{round}.1", registry.host)]);
        forget_builds_of(&marker);
        let cold = publish(&local, &commit(&marker, &format!("1.{round}.2"))).await;
        eprintln!(
            "FIGURES round {round}: registry cache {} (hit: {hit}; {}), cold {}",
            built_in(&cached),
            read(&cached),
            built_in(&cold)
        );
    }
}
