//! Benchmark 2: from the merge to the image in the registry, Slipway against
//! what teams run instead, on the same engine (the one DOCKER_HOST names) and
//! the same TLS registry: `docker buildx build --push` (what
//! build-push-action runs) and `docker build` + `docker push` of the same
//! contexts, with both of Slipway's builders, next to the limit this machine
//! sets (the engine's build plus the new bytes at the upload rate). The
//! targets (issue 20) hold Slipway to the faster of buildx and the CLI,
//! round by round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{io::Write as _, process::Command, process::Stdio};

use serde_json::{json, Value};

use super::common::*;
use super::memory::MemoryReport;
use super::upload::RegistryClient;
use super::workloads::*;
use crate::support::{self, FakeEntry, FakeGitHub, Slipway, SlipwayOptions, TestRegistry};

const REPO: &str = "bench/monorepo";
/// What the CLI side runs at once for the monorepo, as Slipway does with
/// SLIPWAY_MAX_CONCURRENT_BUILDS=2.
const CLI_PARALLEL: usize = 2;
/// The text a build log holds when the engine pushed through Slipway's
/// loopback registry relay instead of `docker save`.
const RELAY_MARK: &str = "loopback relay";
/// Where scripts/engines.sh unpacks Debian 13's docker-buildx plugin (0.13);
/// SLIPWAY_BENCH_BUILDX=<path> names another.
const BUILDX_PLUGIN: &str = "/opt/slipway-trixie/docker-config/cli-plugins/docker-buildx";
/// Issue 20: Slipway / the faster of buildx and the CLI, on every workload.
const ANCHOR_TARGET: f64 = 1.0;

/// What one Slipway build took, seen from outside.
pub struct SlipwayRun {
    pub total: Duration,
    pub record: Value,
    /// (arrival after the 202, line) of every log line.
    pub lines: Vec<(Duration, String)>,
}

impl SlipwayRun {
    /// When the first line containing `needle` arrived.
    pub fn first(&self, needle: &str) -> Option<Duration> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// When the last line containing `needle` arrived.
    pub fn last(&self, needle: &str) -> Option<Duration> {
        self.lines
            .iter()
            .rev()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    pub fn matching(&self, needle: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(_, l)| l.as_str())
            .collect()
    }

    /// The "downloaded N KiB of sources in D" line's duration.
    pub fn download(&self) -> Option<Duration> {
        let line = self.matching("downloaded ").into_iter().next()?;
        let (_, after) = line.rsplit_once(" in ")?;
        parse_debug_duration(after)
    }
}

/// Merges a commit of `files` and waits (polling every `poll`) for the end
/// of its build, following its log meanwhile.
pub async fn slipway_run(
    slipway: &Slipway,
    github: &FakeGitHub,
    repository: &str,
    files: Vec<(String, FakeEntry)>,
    poll: Duration,
) -> SlipwayRun {
    let sha = support::sha();
    github.add_commit(repository, &sha, files);
    let id = slipway.merge(repository, &sha).await;
    let accepted = Instant::now();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let lines = lines.clone();
        let url = format!("{}/builds/{id}/log", slipway.url);
        tokio::spawn(async move {
            let mut on_line = |line: &str| {
                let mut lines = lines.lock().expect("lines");
                lines.push((accepted.elapsed(), line.to_string()));
            };
            support::sse_events(&url, Some(&mut on_line)).await;
        })
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = accepted + Duration::from_secs(900);
    let (total, record) = loop {
        let record: Value = client
            .get(format!("{}/builds/{id}", slipway.url))
            .send()
            .await
            .expect("GET /builds/<id> answered")
            .json()
            .await
            .expect("a build record");
        if matches!(record["status"].as_str(), Some("succeeded" | "failed")) {
            break (accepted.elapsed(), record);
        }
        assert!(
            Instant::now() < deadline,
            "build {id} did not finish: {record}"
        );
        tokio::time::sleep(poll).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), watcher).await;
    let lines = std::mem::take(&mut *lines.lock().expect("lines"));
    SlipwayRun {
        total,
        record,
        lines,
    }
}

/// Panics with the build log and the service log unless the build succeeded.
pub async fn assert_succeeded(slipway: &Slipway, run: &SlipwayRun) {
    if run.record["status"] != "succeeded" {
        let id = run.record["id"].as_str().unwrap_or_default();
        panic!(
            "build failed: {}\nbuild log:\n{}\nslipway log (tail):\n{}",
            run.record,
            slipway.build_log(id).await,
            tail(&slipway.log(), 60)
        );
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl SlipwayRun {
    /// When the first line containing any of `needles` arrived.
    pub fn first_of(&self, needles: &[&str]) -> Option<Duration> {
        self.lines
            .iter()
            .find(|(_, l)| needles.iter().any(|n| l.contains(n)))
            .map(|(t, _)| *t)
    }

    /// The engine's wall time building this merge's services: from the
    /// earliest build start to the last `built … in D` line, each start being
    /// that line's arrival less D.
    pub fn engine_build(&self) -> Option<Duration> {
        let builds: Vec<(Duration, Duration)> = self
            .lines
            .iter()
            .filter(|(_, l)| l.contains("] built "))
            .filter_map(|(at, l)| {
                let (_, took) = l.rsplit_once(" in ")?;
                Some((*at, parse_debug_duration(took)?))
            })
            .collect();
        let end = builds.iter().map(|(at, _)| *at).max()?;
        let start = builds
            .iter()
            .map(|(at, took)| at.saturating_sub(*took))
            .min()?;
        Some(end.saturating_sub(start))
    }

    /// Whether a service's log says the engine pushed through the relay.
    pub fn used_relay(&self) -> bool {
        self.first(RELAY_MARK).is_some()
    }
}

/// What the CLI side took.
#[derive(Default)]
struct CliRun {
    total: Duration,
    build: Duration,
    push: Duration,
    layers_pushed: usize,
    layers_existing: usize,
}

/// Writes each service's context to a temp folder; returns the folder and
/// (context, tag) of each service, tagged with `name_of` the service.
fn write_contexts(
    services: &[ServiceFiles],
    registry: &str,
    version: &str,
    name_of: impl Fn(&ServiceFiles) -> &str,
) -> (tempfile::TempDir, Vec<(PathBuf, String)>) {
    let dir = tempfile::Builder::new()
        .prefix("slipway-bench-cli-")
        .tempdir()
        .expect("tempdir");
    let jobs = services
        .iter()
        .map(|service| {
            let context = dir.path().join(&service.dir);
            for (path, contents) in &service.files {
                let path = context.join(path);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, contents).expect("write context file");
            }
            (
                context,
                format!("{registry}/{}:{version}", name_of(service)),
            )
        })
        .collect();
    (dir, jobs)
}

/// Runs `work` on every job, up to `parallel` at once; returns the wall time
/// and the results.
fn run_jobs<R: Send>(
    jobs: &[(PathBuf, String)],
    parallel: usize,
    work: impl Fn(&Path, &str) -> R + Sync,
) -> (Duration, Vec<R>) {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((context, tag)) = jobs.get(i) else {
                    break;
                };
                let result = work(context, tag);
                results.lock().expect("results").push(result);
            });
        }
    });
    (started.elapsed(), results.into_inner().expect("results"))
}

/// Writes each service's context to a temp folder, then `docker build` and
/// `docker push` them, up to `parallel` services at once.
fn cli_run(
    services: &[ServiceFiles],
    registry: &str,
    version: &str,
    parallel: usize,
    buildkit: bool,
) -> CliRun {
    let (_dir, jobs) = write_contexts(services, registry, version, |s| &s.cli_name);
    let (total, results) = run_jobs(&jobs, parallel, |context, tag| {
        build_and_push(context, tag, buildkit)
    });
    let mut run = CliRun {
        total,
        ..Default::default()
    };
    for (build, push, pushed, existing) in results {
        run.build += build;
        run.push += push;
        run.layers_pushed += pushed;
        run.layers_existing += existing;
    }
    run
}

fn build_and_push(context: &Path, tag: &str, buildkit: bool) -> (Duration, Duration, usize, usize) {
    let started = Instant::now();
    let context = context.display().to_string();
    docker_ok_with(
        &["build", "--network", "none", "-t", tag, &context],
        buildkit,
    );
    let built = started.elapsed();
    let started = Instant::now();
    let output = docker_ok(&["push", tag]);
    let pushed = started.elapsed();
    let count = |needle: &str| output.lines().filter(|l| l.contains(needle)).count();
    (
        built,
        pushed,
        count(": Pushed"),
        count("Layer already exists") + count("Mounted from"),
    )
}

/// `docker buildx build --push`, as build-push-action runs it, from a
/// DOCKER_CONFIG of its own: the plugin in its cli-plugins and its own
/// `docker login` to the bench's registry. With the default (docker) driver
/// buildx builds on the engine DOCKER_HOST names, with the engine's BuildKit,
/// and the engine pushes, trusting the registry's CA from
/// /etc/docker/certs.d as for `docker push`.
pub struct Buildx {
    config: tempfile::TempDir,
    /// `docker buildx version`, e.g. "github.com/docker/buildx 0.13.1+ds1-3".
    pub version: String,
}

impl Buildx {
    /// Sets buildx up for `registry`; Err says why it cannot run here.
    pub fn setup(registry: &TestRegistry) -> Result<Buildx, String> {
        let plugin = std::env::var_os("SLIPWAY_BENCH_BUILDX")
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(BUILDX_PLUGIN), PathBuf::from);
        if !plugin.is_file() {
            return Err(format!(
                "no docker-buildx plugin at {} (scripts/engines.sh unpacks Debian 13's there; \
                 SLIPWAY_BENCH_BUILDX=<path> names another)",
                plugin.display()
            ));
        }
        let config = tempfile::Builder::new()
            .prefix("slipway-bench-buildx-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let plugins = config.path().join("cli-plugins");
        std::fs::create_dir(&plugins).map_err(|e| format!("mkdir cli-plugins: {e}"))?;
        std::os::unix::fs::symlink(&plugin, plugins.join("docker-buildx"))
            .map_err(|e| format!("link the plugin: {e}"))?;
        let buildx = Buildx {
            config,
            version: String::new(),
        };
        let mut login = buildx
            .command(&[
                "login",
                &registry.host,
                "--username",
                &registry.user,
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("run docker login: {e}"))?;
        login
            .stdin
            .take()
            .expect("stdin")
            .write_all(registry.password.as_bytes())
            .map_err(|e| format!("docker login's stdin: {e}"))?;
        let out = login
            .wait_with_output()
            .map_err(|e| format!("docker login: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker login with buildx's DOCKER_CONFIG failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let (ok, version) = buildx.run(&["buildx", "version"]);
        if !ok {
            return Err(format!(
                "`docker buildx version` failed: {}",
                version.trim()
            ));
        }
        let version = version
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Buildx { version, ..buildx })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command.args(args).env("DOCKER_CONFIG", self.config.path());
        command
    }

    /// Runs `docker ARGS` with buildx's DOCKER_CONFIG; (success, stdout+stderr).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = self.command(args).output().expect("run the docker CLI");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// `docker buildx build --push` of one context; panics with the output
    /// when it fails.
    fn build_push(&self, context: &Path, tag: &str) {
        let context = context.display().to_string();
        let args = [
            "buildx",
            "build",
            "--push",
            "--provenance=false",
            "--network",
            "none",
            "-t",
            tag,
            &context,
        ];
        let (ok, text) = self.run(&args);
        assert!(ok, "docker {args:?} failed:\n{text}");
    }
}

/// Writes each service's context to a temp folder, then `docker buildx build
/// --push` them, up to `parallel` services at once; returns the wall time.
fn buildx_run(
    buildx: &Buildx,
    services: &[ServiceFiles],
    registry: &str,
    version: &str,
    parallel: usize,
) -> Duration {
    let (_dir, jobs) = write_contexts(services, registry, version, |s| &s.buildx_name);
    run_jobs(&jobs, parallel, |context, tag| {
        buildx.build_push(context, tag)
    })
    .0
}

/// Which runs a figure covers: (d) reports its first publish apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    All,
    First,
    Later,
}

/// Per-run figures of one workload.
#[derive(Default)]
struct Runs {
    slipway: Vec<f64>,
    cli: Vec<f64>,
    /// `docker buildx build --push`; empty when buildx cannot run here.
    buildx: Vec<f64>,
    /// The engine's build plus the new bytes at the upload rate.
    limit: Vec<f64>,
    engine: Vec<f64>,
    new_bytes: Vec<f64>,
    /// Slipway's export+push of its first service.
    export_push: Vec<f64>,
    /// Of the runs `record_phases` saw (for (d): the later ones).
    phases: BTreeMap<&'static str, Vec<f64>>,
    cli_build: Vec<f64>,
    cli_push: Vec<f64>,
    slipway_blobs: Vec<String>,
    cli_layers: Vec<String>,
    relay_runs: usize,
}

impl Runs {
    fn phase(&mut self, name: &'static str, value: Option<Duration>) {
        if let Some(value) = value {
            self.phases.entry(name).or_default().push(secs(value));
        }
    }

    fn phase_median(&self, name: &str) -> Option<f64> {
        self.phases.get(name).map(|v| median(v))
    }

    fn of(values: &[f64], which: Which) -> f64 {
        match which {
            Which::All => median(values),
            Which::First => values.first().copied().unwrap_or(0.0),
            Which::Later => median(values.get(1..).unwrap_or_default()),
        }
    }

    fn slipway(&self, which: Which) -> f64 {
        Self::of(&self.slipway, which)
    }

    fn cli(&self, which: Which) -> f64 {
        Self::of(&self.cli, which)
    }

    fn limit(&self, which: Which) -> f64 {
        Self::of(&self.limit, which)
    }

    fn has_buildx(&self) -> bool {
        !self.buildx.is_empty()
    }

    /// The median buildx time, "-" without buildx.
    fn buildx_cell(&self, which: Which) -> String {
        if self.has_buildx() {
            fmt_s(Self::of(&self.buildx, which))
        } else {
            "-".into()
        }
    }

    fn vs_buildx_cell(&self, which: Which) -> String {
        if self.has_buildx() {
            fmt_ratio(self.slipway(which) / Self::of(&self.buildx, which))
        } else {
            "-".into()
        }
    }

    /// The faster of buildx and the CLI in each round (the CLI alone
    /// without buildx).
    fn faster_each(&self) -> Vec<f64> {
        self.cli
            .iter()
            .enumerate()
            .map(|(i, c)| self.buildx.get(i).map_or(*c, |b| b.min(*c)))
            .collect()
    }

    fn faster(&self, which: Which) -> f64 {
        Self::of(&self.faster_each(), which)
    }

    /// Slipway / the faster of buildx and the CLI, round by round.
    fn anchor_ratios(&self, which: Which) -> Vec<f64> {
        let all: Vec<f64> = self
            .slipway
            .iter()
            .zip(self.faster_each())
            .map(|(s, f)| s / f)
            .collect();
        match which {
            Which::All => all,
            Which::First => all.into_iter().take(1).collect(),
            Which::Later => all.into_iter().skip(1).collect(),
        }
    }

    /// The median of the per-round anchored ratios: the issue-20 target's figure.
    fn vs_anchor(&self, which: Which) -> f64 {
        median(&self.anchor_ratios(which))
    }

    /// Which side was the faster, per round: "buildx 3, CLI 2".
    fn faster_sides(&self, which: Which) -> String {
        if !self.has_buildx() {
            return "CLI (no buildx)".into();
        }
        let rounds: Vec<usize> = match which {
            Which::All => (0..self.cli.len()).collect(),
            Which::First => (0..self.cli.len().min(1)).collect(),
            Which::Later => (1..self.cli.len()).collect(),
        };
        let buildx = rounds
            .iter()
            .filter(|&&i| self.buildx.get(i).is_some_and(|b| *b < self.cli[i]))
            .count();
        format!("buildx {buildx}, CLI {}", rounds.len() - buildx)
    }

    fn vs_cli(&self, which: Which) -> f64 {
        self.slipway(which) / self.cli(which)
    }

    fn vs_limit(&self, which: Which) -> f64 {
        self.slipway(which) / self.limit(which)
    }

    /// How Slipway published: the export path, the relay, or both.
    fn publish_path(&self) -> String {
        match (self.relay_runs, self.slipway.len()) {
            (0, _) => "export (`docker save`)".into(),
            (r, n) if r == n => format!("loopback relay (all {n} runs)"),
            (r, n) => format!("loopback relay in {r} of {n} runs, export in the others"),
        }
    }
}

/// Slipway's phases, from when its log lines arrived: the span before the
/// first build starts, the builds, and export+push.
fn record_phases(runs: &mut Runs, run: &SlipwayRun) {
    let unpacked = run.first("unpacked ");
    let contexts = run.last("context: ");
    // The classic builder's first line is `Step 1/N`, BuildKit's `#1 …`.
    let first_step = run.first_of(&["] Step 1/", "] #1 "]);
    let first_built = run.first("] built ");
    let last_built = run.last("] built ");
    let last_published = run.last("] published ");
    runs.phase("1 download", run.download());
    runs.phase("2 to unpacked", unpacked);
    runs.phase("3 contexts ready", contexts);
    runs.phase("3b first step", first_step);
    runs.phase("4 first built", first_built);
    runs.phase("5 last built", last_built);
    runs.phase("6 last published", last_published);
    runs.phase("7 recorded", Some(run.total));
    // Per-run spans, whose medians the gap analysis compares.
    runs.phase("span: before the engine", first_step);
    if let (Some(step), Some(built)) = (first_step, last_built) {
        runs.phase("span: engine", built.checked_sub(step));
    }
    if let Some(built) = last_built {
        runs.phase("span: after the last build", run.total.checked_sub(built));
    }
    if let (Some(published), Some(built)) = (last_published, last_built) {
        runs.phase(
            "span: export+push after the last build",
            published.checked_sub(built),
        );
    }
    runs.phase("export+push of first service", first_export_push(run));
    if let (Some(built), Some(exported)) = (first_built, run.first("] exported ")) {
        runs.phase("export of first service", exported.checked_sub(built));
    }
}

/// From the first service's `built` line to its `published` line.
fn first_export_push(run: &SlipwayRun) -> Option<Duration> {
    let built = run.first("] built ")?;
    run.first("] published ")?.checked_sub(built)
}

/// "3 blobs pushed (2 KiB), …" of the run's published lines.
fn pushed_blobs(run: &SlipwayRun) -> String {
    let blobs: Vec<String> = run
        .matching("] published ")
        .iter()
        .filter_map(|l| l.split_once("): ").map(|(_, rest)| rest.to_string()))
        .collect();
    match blobs.as_slice() {
        [] => "-".into(),
        [one] => one.clone(),
        [first, ..] => format!("{} services; first: {first}", blobs.len()),
    }
}

/// What every run of a builder's round shares.
struct Bench<'a> {
    slipway: &'a Slipway,
    github: &'a FakeGitHub,
    registry: &'a TestRegistry,
    client: &'a RegistryClient,
    pid: Option<u32>,
    /// Loopback upload rate to the registry, bytes per second.
    upload_rate: f64,
    /// The third side; None when buildx cannot run here.
    buildx: Option<&'a Buildx>,
}

/// Peak and starting RSS of slipway over a workload's runs.
#[derive(Default)]
struct Memory {
    peak: Option<u64>,
    before: Option<u64>,
}

/// The sides of a round.
#[derive(Clone, Copy)]
enum Side {
    Slipway,
    Cli,
    Buildx,
}

/// The order of round `rep`: with buildx the three sides rotate (Slipway,
/// CLI, buildx; then CLI, buildx, Slipway; then buildx, Slipway, CLI), so
/// each goes first, second and last equally often; without it Slipway and
/// the CLI alternate.
fn order(rep: usize, with_buildx: bool) -> Vec<Side> {
    if with_buildx {
        let sides = [Side::Slipway, Side::Cli, Side::Buildx];
        (0..3).map(|i| sides[(rep + i) % 3]).collect()
    } else if rep.is_multiple_of(2) {
        vec![Side::Slipway, Side::Cli]
    } else {
        vec![Side::Cli, Side::Slipway]
    }
}

/// Runs a workload `reps` times, rotating which side goes first.
async fn measure(bench: &Bench<'_>, workload: &Workload) -> (Runs, Memory) {
    let base = workload.base.clone();
    let base_layers = tokio::task::spawn_blocking(move || layer_count(&base))
        .await
        .expect("layer count");
    let mut runs = Runs::default();
    let mut memory = Memory::default();
    for rep in 0..workload.reps {
        let version = format!("r{rep}-{}", nonce());
        let (mut sw, mut cli, mut bx) = (None, None, None);
        for side in order(rep, bench.buildx.is_some()) {
            match side {
                Side::Slipway => {
                    sw = Some(slipway_side(bench, workload, &version, &mut memory).await);
                }
                Side::Cli => cli = Some(cli_side(bench, workload, &version).await),
                Side::Buildx => bx = buildx_side(bench, workload, &version).await,
            }
        }
        let (sw, cli) = (sw.expect("Slipway ran"), cli.expect("the CLI ran"));
        let mut new_bytes = 0;
        for service in workload.services("names") {
            new_bytes += bench
                .client
                .bytes_above_base(&service.slipway_name, &version, base_layers)
                .await;
        }
        // A publish path without `built … in D` lines leaves the CLI's build
        // of the same context on the same engine as the build time.
        let engine = secs(sw.engine_build().unwrap_or(cli.build));
        let limit = engine + new_bytes as f64 / bench.upload_rate;
        println!(
            "  merge ({}, {}) run {}: slipway {:.2} s, buildx {}, CLI {:.2} s (build {:.2} s, \
             push {:.2} s), limit {:.2} s (engine {:.2} s + {:.1} MB){}",
            workload.key,
            workload.builder.label(),
            rep + 1,
            secs(sw.total),
            bx.map_or("-".into(), |b| format!("{:.2} s", secs(b))),
            secs(cli.total),
            secs(cli.build),
            secs(cli.push),
            limit,
            engine,
            new_bytes as f64 / 1e6,
            if sw.used_relay() {
                ", loopback relay"
            } else {
                ""
            }
        );
        runs.slipway.push(secs(sw.total));
        runs.cli.push(secs(cli.total));
        if let Some(bx) = bx {
            runs.buildx.push(secs(bx));
        }
        runs.limit.push(limit);
        runs.engine.push(engine);
        runs.new_bytes.push(new_bytes as f64);
        runs.export_push
            .push(first_export_push(&sw).map_or(0.0, secs));
        runs.cli_build.push(secs(cli.build));
        runs.cli_push.push(secs(cli.push));
        runs.relay_runs += usize::from(sw.used_relay());
        runs.slipway_blobs.push(pushed_blobs(&sw));
        runs.cli_layers.push(format!(
            "{} layer(s) pushed, {} already there or mounted",
            cli.layers_pushed, cli.layers_existing
        ));
        if !(workload.first_apart() && rep == 0) {
            record_phases(&mut runs, &sw);
        }
        cleanup(workload, bench.registry, &version);
    }
    (runs, memory)
}

async fn slipway_side(
    bench: &Bench<'_>,
    workload: &Workload,
    version: &str,
    memory: &mut Memory,
) -> SlipwayRun {
    let services = workload.services(&nonce());
    let watch = MemoryWatch::start(bench.pid);
    let run = slipway_run(
        bench.slipway,
        bench.github,
        REPO,
        commit_files(&services, version),
        Duration::from_millis(20),
    )
    .await;
    let (rss, start) = watch.finish_with_start();
    assert_succeeded(bench.slipway, &run).await;
    memory.peak = memory.peak.max(rss);
    memory.before = memory.before.or(start);
    run
}

async fn cli_side(bench: &Bench<'_>, workload: &Workload, version: &str) -> CliRun {
    let services = workload.services(&nonce());
    let host = bench.registry.host.clone();
    let version = version.to_string();
    let parallel = if matches!(workload.kind, Kind::Mono { .. }) {
        CLI_PARALLEL
    } else {
        1
    };
    let buildkit = workload.cli_buildkit;
    tokio::task::spawn_blocking(move || cli_run(&services, &host, &version, parallel, buildkit))
        .await
        .expect("CLI run")
}

/// `docker buildx build --push` of the workload's services (2 at a time for
/// the monorepo, as the CLI); None without buildx.
async fn buildx_side(bench: &Bench<'_>, workload: &Workload, version: &str) -> Option<Duration> {
    let buildx = bench.buildx?;
    let services = workload.services(&nonce());
    let parallel = if matches!(workload.kind, Kind::Mono { .. }) {
        CLI_PARALLEL
    } else {
        1
    };
    let host = &bench.registry.host;
    // Scoped threads in a blocking section: `buildx` is borrowed, not owned.
    Some(tokio::task::block_in_place(|| {
        buildx_run(buildx, &services, host, version, parallel)
    }))
}

/// The workloads of one builder's round.
fn workloads(mode: Mode, builder: Builder, cli_buildkit: bool, bases: &Bases) -> Vec<Workload> {
    let big_bytes: u64 = mode.pick(300_000_000, 5_000_000);
    let mono: usize = mode.pick(10, 3);
    let cli_buildkit = cli_buildkit && builder == Builder::BuildKit;
    let workload = |key: String, label: String, kind: Kind, base: &str, target, reps| Workload {
        key,
        label,
        kind,
        base: base.to_string(),
        target,
        reps,
        builder,
        cli_buildkit,
    };
    let mut out = vec![
        workload(
            "a".into(),
            "(a) small image, base layers already in the registry".into(),
            Kind::Small,
            support::BASE_IMAGE,
            Some(1.0),
            mode.pick(5, 1),
        ),
        workload(
            "b".into(),
            format!("(b) {} layer of random data", size_label(big_bytes)),
            Kind::Big { bytes: big_bytes },
            support::BASE_IMAGE,
            Some(1.1),
            mode.reps(),
        ),
        workload(
            "c".into(),
            format!("(c) monorepo, {mono} services sharing a base (CLI: {CLI_PARALLEL} at a time)"),
            Kind::Mono { services: mono },
            support::BASE_IMAGE,
            Some(1.0),
            mode.reps(),
        ),
    ];
    if !mode.full() && builder == Builder::Classic {
        // The smoke checks the builder switch with one small workload only.
        out.truncate(1);
        return out;
    }
    if quick() {
        // (a) and the (d) workloads; `run` made only the 200 MB bases.
        out.truncate(1);
    }
    for (bytes, pushed_by, base) in &bases.images {
        let (who, short) = match pushed_by {
            BasePusher::Slipway => ("pushed before by Slipway", "Slipway's"),
            BasePusher::DockerCli => ("pushed by `docker push` (mirrored)", "mirrored"),
        };
        // The 1 GB runs are few: each costs a whole-image export.
        let reps = if *bytes >= 1_000_000_000 {
            3
        } else {
            mode.pick(4, 2)
        };
        out.push(workload(
            format!("d {}, {short} base", size_label(*bytes)),
            format!(
                "(d) small change on a base with a {} layer, {who}",
                size_label(*bytes)
            ),
            Kind::OnBigBase {
                base_bytes: *bytes,
                pushed_by: *pushed_by,
            },
            base,
            Some(1.0),
            reps,
        ));
    }
    out
}

/// The tables of the merge section, filled a workload at a time.
struct Tables {
    results: Table,
    first: Table,
    limit: Table,
    breakdown: Table,
    pushes: Table,
}

impl Tables {
    fn new(upload_rate: f64, engine: &str) -> Self {
        Self {
            results: Table::new(
                &format!(
                    "Merge to image, {engine} (medians of rounds; for (d) of the publishes after \
                     the first)"
                ),
                &[
                    "workload",
                    "builder",
                    "Slipway",
                    "buildx --push",
                    "docker CLI",
                    "limit",
                    "Slipway / buildx",
                    "Slipway / CLI",
                    "Slipway / faster of buildx and CLI (median of rounds)",
                    "Slipway / limit",
                    "target (Slipway / faster)",
                    "Slipway / faster per round",
                    "faster side (rounds)",
                ],
            ),
            first: Table::new(
                &format!(
                    "(d) The first publish on a base new to the registry, and the later ones, \
                     {engine}"
                ),
                &[
                    "workload",
                    "builder",
                    "first: Slipway",
                    "first: buildx --push",
                    "first: docker CLI",
                    "first: limit",
                    "first: Slipway / faster",
                    "first: Slipway / limit",
                    "first: Slipway export+push",
                    "first: Slipway pushed",
                    "later (median): Slipway / faster",
                    "later: Slipway / limit",
                    "target",
                ],
            ),
            limit: Table::new(
                &format!(
                    "Limit: the engine's build plus the new bytes at {} (medians; for (d) of the \
                     later publishes), {engine}",
                    fmt_upload_rate(upload_rate)
                ),
                &[
                    "workload",
                    "builder",
                    "engine build",
                    "new compressed bytes",
                    "upload at the loopback rate",
                    "limit",
                    "Slipway",
                    "Slipway / limit",
                ],
            ),
            breakdown: Table::new(
                &format!(
                    "Where the time goes (medians; for (d) of the later publishes; Slipway times \
                     are when its log lines arrived, counted from the 202), {engine}"
                ),
                &[
                    "workload",
                    "builder",
                    "Slipway: download",
                    "unpacked",
                    "contexts ready",
                    "first engine step",
                    "first built",
                    "last built",
                    "last published",
                    "recorded",
                    "export+push (1st service)",
                    "of which export",
                    "CLI: build",
                    "CLI: push",
                ],
            ),
            pushes: Table::new(
                &format!("What was pushed (last run), and how, {engine}"),
                &[
                    "workload",
                    "builder",
                    "Slipway",
                    "docker CLI",
                    "Slipway's publish path",
                ],
            ),
        }
    }

    fn add(&mut self, workload: &Workload, runs: &Runs, upload_rate: f64) {
        let which = if workload.first_apart() {
            Which::Later
        } else {
            Which::All
        };
        let builder = workload.builder.label().to_string();
        let key = workload.key.clone();
        self.results.row(vec![
            workload.label.clone(),
            builder.clone(),
            fmt_s(runs.slipway(which)),
            runs.buildx_cell(which),
            fmt_s(runs.cli(which)),
            fmt_s(runs.limit(which)),
            runs.vs_buildx_cell(which),
            fmt_ratio(runs.vs_cli(which)),
            fmt_ratio(runs.vs_anchor(which)),
            fmt_ratio(runs.vs_limit(which)),
            target_cell(workload, runs),
            each(&runs.anchor_ratios(which), fmt_ratio),
            runs.faster_sides(which),
        ]);
        if workload.first_apart() {
            self.add_first(workload, runs);
        }
        let new_bytes = Runs::of(&runs.new_bytes, which);
        self.limit.row(vec![
            key.clone(),
            builder.clone(),
            fmt_s(Runs::of(&runs.engine, which)),
            fmt_bytes(new_bytes),
            fmt_s(new_bytes / upload_rate),
            fmt_s(runs.limit(which)),
            fmt_s(runs.slipway(which)),
            fmt_ratio(runs.vs_limit(which)),
        ]);
        let p = |name: &str| runs.phase_median(name).map_or("-".into(), fmt_s);
        self.breakdown.row(vec![
            key.clone(),
            builder.clone(),
            p("1 download"),
            p("2 to unpacked"),
            p("3 contexts ready"),
            p("3b first step"),
            p("4 first built"),
            p("5 last built"),
            p("6 last published"),
            p("7 recorded"),
            p("export+push of first service"),
            p("export of first service"),
            fmt_s(Runs::of(&runs.cli_build, which)),
            fmt_s(Runs::of(&runs.cli_push, which)),
        ]);
        self.pushes.row(vec![
            key,
            builder,
            runs.slipway_blobs.last().cloned().unwrap_or_default(),
            runs.cli_layers.last().cloned().unwrap_or_default(),
            runs.publish_path(),
        ]);
    }

    fn add_first(&mut self, workload: &Workload, runs: &Runs) {
        let first = Which::First;
        self.first.row(vec![
            workload.key.clone(),
            workload.builder.label().to_string(),
            fmt_s(runs.slipway(first)),
            runs.buildx_cell(first),
            fmt_s(runs.cli(first)),
            fmt_s(runs.limit(first)),
            fmt_ratio(runs.vs_anchor(first)),
            fmt_ratio(runs.vs_limit(first)),
            fmt_s(Runs::of(&runs.export_push, first)),
            runs.slipway_blobs.first().cloned().unwrap_or_default(),
            fmt_ratio(runs.vs_anchor(Which::Later)),
            fmt_ratio(runs.vs_limit(Which::Later)),
            target_cell(workload, runs),
        ]);
    }

    fn into_section(self, section: &mut Section) {
        section.tables.extend([
            self.results,
            self.first,
            self.limit,
            self.breakdown,
            self.pushes,
        ]);
    }
}

/// The target column: against the faster of buildx and the CLI when buildx
/// ran, else the CLI target of issue 6.
fn target_cell(workload: &Workload, runs: &Runs) -> String {
    match workload.target {
        None => "-".into(),
        Some(_) if runs.has_buildx() => format!("≤ {ANCHOR_TARGET:.1}"),
        Some(t) => format!("≤ {t:.1} (vs CLI)"),
    }
}

/// Decimal kB below a megabyte, MB above.
fn fmt_bytes(bytes: f64) -> String {
    if bytes < 1e6 {
        format!("{:.1} kB", bytes / 1e3)
    } else {
        fmt_mb(bytes)
    }
}

fn fmt_upload_rate(bytes_per_second: f64) -> String {
    format!("{:.0} MB/s", bytes_per_second / 1e6)
}

/// The loopback upload rate (best of a few uploads of one random blob) and
/// a note on how it was measured.
async fn upload_rate(mode: Mode, client: &RegistryClient) -> (f64, String) {
    let bytes: usize = mode.pick(256 << 20, 16 << 20);
    let tries = mode.pick(3, 1);
    let rates = client.upload_rates(bytes, tries).await;
    let best = rates.iter().copied().fold(0.0, f64::max);
    let note = format!(
        "Loopback upload rate: {} (the best of {tries} upload(s) of {} MiB of random data as \
         one blob to the same TLS registry, with the same client library and monolithic \
         upload as Slipway: {}). The limit column is the engine's build time as Slipway \
         drives it (from the earliest build start to the last `built … in D` line, each start \
         being that line's arrival less D) plus the compressed bytes Slipway's pushed \
         manifests hold above the base (new layers and config) at that rate: no publish path \
         can beat it without building faster or uploading less.",
        fmt_upload_rate(best),
        bytes >> 20,
        each(&rates, fmt_upload_rate)
    );
    (best, note)
}

pub async fn run(
    mode: Mode,
    github: &FakeGitHub,
    registry: &TestRegistry,
    memory: &mut MemoryReport,
) -> Section {
    let engine = engine_label();
    let mut section = Section::new(
        &format!("2. Merge to image: Slipway vs buildx and docker CLI, {engine}"),
        HOW,
    );
    let client = RegistryClient::new(registry);
    let (rate, rate_note) = upload_rate(mode, &client).await;
    println!("  {rate_note}");
    let cli_buildkit = tokio::task::spawn_blocking(cli_buildkit)
        .await
        .expect("probe the CLI's BuildKit");
    section.notes.push(cli_builder_note(&cli_buildkit));
    let buildx = Buildx::setup(registry);
    let buildx_note = buildx_note(&buildx, &engine);
    println!("  {buildx_note}");
    section.notes.push(buildx_note);
    let buildx = buildx.ok();
    let sizes: Vec<u64> = if quick() {
        mode.pick(vec![200_000_000], vec![5_000_000])
    } else {
        mode.pick(vec![200_000_000, 1_000_000_000], vec![5_000_000])
    };
    let host = registry.host.clone();
    let bases = tokio::task::spawn_blocking(move || Bases::make(&sizes, &host))
        .await
        .expect("the bases of (d)");
    println!("  {}", bases.note);
    section.notes.push(bases.note.clone());
    section.notes.push(rate_note);
    let mut tables = Tables::new(rate, &engine);
    // Quick: the BuildKit builder only (buildx builds with BuildKit anyway).
    let builders: &[Builder] = if quick() {
        &[Builder::BuildKit]
    } else {
        &Builder::ALL
    };
    for &builder in builders {
        let workloads = workloads(mode, builder, cli_buildkit.is_ok(), &bases);
        let slipway = Slipway::start(
            SlipwayOptions::new(github, registry)
                .env("SLIPWAY_MAX_CONCURRENT_BUILDS", "2")
                .env("SLIPWAY_BUILDER", builder.flag()),
        )
        .await;
        let primed = prime(&slipway, github, registry, &workloads, buildx.is_some()).await;
        println!("  {primed}");
        section.notes.push(primed);
        let bench = Bench {
            slipway: &slipway,
            github,
            registry,
            client: &client,
            pid: slipway_pid(&slipway),
            upload_rate: rate,
            buildx: buildx.as_ref(),
        };
        for workload in &workloads {
            let (runs, peak) = measure(&bench, workload).await;
            remember_memory(memory, workload, &peak);
            tables.add(workload, &runs, rate);
            add_targets(&mut section, workload, &runs, &engine);
        }
        unprime_cli(registry, &workloads);
        keep_log(&slipway, &format!("merge-{}", builder.flag()));
    }
    docker_rmi(&bases.tags);
    tables.breakdown.note(BREAKDOWN_NOTE);
    tables.into_section(&mut section);
    section.notes.push(reps_note(mode));
    section
}

/// What the buildx side runs, or why it does not run.
fn buildx_note(buildx: &Result<Buildx, String>, engine: &str) -> String {
    match buildx {
        Ok(buildx) => format!(
            "buildx: `docker buildx build --push --provenance=false --network none -t TAG \
             CONTEXT` ({}, Debian 13's docker-buildx plugin; the command build-push-action \
             runs), with the default docker driver on the same engine ({engine}) and into the \
             same registry, from a DOCKER_CONFIG of its own that holds the plugin and its own \
             `docker login`. `--provenance=false` makes it push a plain image like the other \
             two sides (buildx would otherwise add a provenance attestation where the engine \
             can store one); `--network none` as for the CLI. buildx always builds with the \
             engine's BuildKit, so in the classic-builder rows it is the same command as in \
             the BuildKit rows. The targets compare Slipway with the faster of buildx and the \
             CLI in each round (issue 20) and take the median of those per-round ratios.",
            buildx.version
        ),
        Err(why) => format!(
            "buildx: not run ({why}); the buildx columns are empty and the targets compare \
             Slipway with the CLI alone."
        ),
    }
}

const HOW: &str = "Slipway: time from the 202 to the record's `succeeded` (GET /builds/<id> \
every 20 ms); it downloads the commit's tarball from the stand-in GitHub, builds on the engine \
(SLIPWAY_MAX_CONCURRENT_BUILDS=2) and pushes itself. CLI: `docker build --network none` of the \
same context written to a local folder, then `docker push`, to the same TLS registry on \
loopback. Every workload runs twice: with Slipway's BuildKit builder (`--builder buildkit`, the \
default; CLI `DOCKER_BUILDKIT=1` where the CLI can) and with the classic builder (`--builder \
classic`; CLI `DOCKER_BUILDKIT=0`), each builder with its own Slipway process and its own \
repositories. Every run starts with a fresh nonce as the first step (`RUN echo <nonce>`), so \
no side reuses a cached layer, and a fresh tag, so every push is real. For (a) to (c) and \
the (d) bases pushed by Slipway, both sides push into repositories primed with the base image by \
themselves (Slipway: a service `FROM <base>`; CLI: `docker push` of the base), so both find the \
base layers present; the two sides compress the base differently, so each primes its own \
repositories. The mirrored (d) bases were pushed once by `docker push` into a repository of \
their own, and both sides build `FROM` that registry reference into repositories new to them, \
so their first publish is a team's first publish on a mirrored base. Each (d) base has its own \
random layer. buildx: `docker buildx build --push --provenance=false --network none` of the same \
context written to a local folder (see the buildx note below); its repositories are its own and \
are primed with `docker push` of the base, as the CLI's (its docker driver pushes through the \
same engine). The three sides rotate which goes first in each round (Slipway, CLI, buildx; then \
CLI, buildx, Slipway; then buildx, Slipway, CLI; without buildx Slipway and the CLI alternate); \
images are removed after each round. The engine is the one DOCKER_HOST names, for all three \
sides; it labels this section.";

const BREAKDOWN_NOTE: &str = "Slipway columns are points in time after the 202: `download` is \
the duration its log reports for the tarball; `unpacked`, `contexts ready` (last service), \
`first engine step` (the engine's first `Step 1/N` or `#1` line, so the build has begun), \
`first/last built` (engine build done), `last published` (push done) and `recorded` (the \
record says succeeded) are when those log lines / that status arrived. `export+push` is from \
the first service's `built` to its `published` (the whole publish: `docker save`, gzip and \
upload, or the engine's push through the loopback relay), `of which export` to its `exported` \
line (\"-\" when the build log has none, as on the relay path). CLI columns are durations \
summed over services (with 2 at a time for (c) the sum exceeds the wall time). Slipway hands \
its log to watchers in batches, one every 250 ms (`BATCH_WINDOW` in src/log.rs, since issue 13), \
so the times of log lines (every Slipway column but `recorded`, which is polled, and so the \
engine-build part of the limit) can be late by up to 250 ms and bunch on multiples of it.";

fn reps_note(mode: Mode) -> String {
    if quick() {
        return format!(
            "Quick run (`--quick`): the BuildKit builder only, workloads (a) ({} rounds) and (d) \
             on the 200 MB bases ({} rounds: the first publish and {} later ones).",
            mode.pick(5, 1),
            mode.pick(4, 2),
            mode.pick(3, 1)
        );
    }
    format!(
        "Runs per builder: (a) {}, (b) and (c) {}, (d) with the 200 MB bases {} (the first \
         publish and {} later ones), (d) with the 1 GB bases 3 (the first and 2 later: each \
         costs a whole-image export, and the full run must stay near 30 minutes).",
        mode.pick(5, 1),
        mode.reps(),
        mode.pick(4, 2),
        mode.pick(3, 1)
    )
}

fn cli_builder_note(probe: &Result<(), String>) -> String {
    match probe {
        Ok(()) => "The docker CLI here builds with BuildKit (`DOCKER_BUILDKIT=1 docker build` \
                   works), so the BuildKit rows compare like with like."
            .into(),
        Err(said) => format!(
            "The Docker Engine here (20.10) builds with BuildKit through its API (Slipway's \
             BuildKit rows use it), but the docker CLI here cannot: `DOCKER_BUILDKIT=1 docker \
             build` answers \"{said}\" (the CLI needs the buildx plugin for BuildKit, and it is \
             not installed). The CLI side of the BuildKit rows therefore builds with the \
             classic builder (DOCKER_BUILDKIT=0), as in the classic rows."
        ),
    }
}

/// Memory rows for the workloads the issue watches: (b) and the 1 GB (d).
fn remember_memory(memory: &mut MemoryReport, workload: &Workload, peak: &Memory) {
    let watched = match workload.kind {
        Kind::Big { .. } => true,
        Kind::OnBigBase { base_bytes, .. } => base_bytes >= 1_000_000_000,
        _ => false,
    };
    if watched {
        memory.add(
            &format!(
                "publishing workload {}, {} builder",
                workload.label,
                workload.builder.label()
            ),
            peak.peak,
            peak.before,
        );
    }
}

fn add_targets(section: &mut Section, workload: &Workload, runs: &Runs, engine: &str) {
    let Some(target) = workload.target else {
        return;
    };
    // Issue 20: against the faster of buildx and the CLI, Slipway ≤ 1.0 on
    // every workload; without buildx, the CLI targets of issue 6.
    let target = if runs.has_buildx() {
        ANCHOR_TARGET
    } else {
        target
    };
    let whiches: &[Which] = if workload.first_apart() {
        &[Which::First, Which::Later]
    } else {
        &[Which::All]
    };
    for &which in whiches {
        section
            .targets
            .push(merge_target(workload, target, runs, which, engine));
    }
}

fn merge_target(
    workload: &Workload,
    target: f64,
    runs: &Runs,
    which: Which,
    engine: &str,
) -> Target {
    let ratio = runs.vs_anchor(which);
    let s = runs.slipway(which);
    let c = runs.cli(which);
    let build_cli = Runs::of(&runs.cli_build, which);
    let push_cli = Runs::of(&runs.cli_push, which);
    let mut evidence = vec![
        format!(
            "Slipway {} in all, buildx --push {}, docker CLI {} (build {}, push {}); the faster \
             of the two per round: {}; Slipway / buildx {}, Slipway / CLI {} (ratios of \
             medians). Limit {} (engine build {} + {} at the loopback rate), Slipway / limit {}.",
            fmt_s(s),
            runs.buildx_cell(which),
            fmt_s(c),
            fmt_s(build_cli),
            fmt_s(push_cli),
            runs.faster_sides(which),
            runs.vs_buildx_cell(which),
            fmt_ratio(runs.vs_cli(which)),
            fmt_s(runs.limit(which)),
            fmt_s(Runs::of(&runs.engine, which)),
            fmt_bytes(Runs::of(&runs.new_bytes, which)),
            fmt_ratio(runs.vs_limit(which))
        ),
        format!(
            "Slipway's export+push of its first service: {}; publish path: {}.",
            fmt_s(Runs::of(&runs.export_push, which)),
            runs.publish_path()
        ),
    ];
    let (slipway_pushed, cli_pushed) = match which {
        Which::First => (runs.slipway_blobs.first(), runs.cli_layers.first()),
        _ => (runs.slipway_blobs.last(), runs.cli_layers.last()),
    };
    evidence.push(format!(
        "Pushed: Slipway {}; CLI {}.",
        slipway_pushed.map_or("-", String::as_str),
        cli_pushed.map_or("-", String::as_str)
    ));
    let closing = if which == Which::First {
        Vec::new()
    } else {
        closing_lines(workload, target, runs, which)
    };
    let suffix = match which {
        Which::All => "",
        Which::First => ": first publish",
        Which::Later => ": later publishes (median)",
    };
    let measured = if which == Which::First {
        format!("{ratio:.3}")
    } else {
        format!(
            "{ratio:.3} (per round {})",
            each(&runs.anchor_ratios(which), fmt_ratio)
        )
    };
    let against = if runs.has_buildx() {
        "faster of buildx and CLI"
    } else {
        "CLI"
    };
    Target {
        name: format!(
            "merge to image {}, {} builder{suffix}, {engine}",
            workload.label,
            workload.builder.label()
        ),
        target: format!("Slipway / {against} ≤ {target:.1} (median of per-round ratios)"),
        measured,
        met: ratio <= target,
        evidence,
        closing,
    }
}

fn closing_lines(workload: &Workload, target: f64, runs: &Runs, which: Which) -> Vec<String> {
    let mut closing = Vec::new();
    let ratios = runs.anchor_ratios(which);
    let (low, high) = (
        ratios.iter().copied().fold(f64::MAX, f64::min),
        max(&ratios),
    );
    let (s, c, f) = (runs.slipway(which), runs.cli(which), runs.faster(which));
    if low <= target {
        closing.push(format!(
            "Per-round ratios range from {low:.2} to {high:.2}: some rounds meet the target, so \
             the gap ({}) is within run-to-run noise on this machine; more runs on a quiet \
             machine would settle it.",
            fmt_s(s - f)
        ));
    }
    let span = |name: &str| runs.phase_median(name).unwrap_or(0.0);
    let push_cli = Runs::of(&runs.cli_push, which);
    if matches!(workload.kind, Kind::Mono { .. }) {
        let built = span("5 last built");
        closing.push(format!(
            "Slipway's builds were all done {} after the 202 and the CLI finished building and \
             pushing at {}; Slipway's pushes after its last build took {}. The engine's build \
             time dominates both sides.",
            fmt_s(built),
            fmt_s(c),
            fmt_s(s - built)
        ));
    } else {
        closing.push(format!(
            "Gap by phase (medians of per-run spans, Slipway vs CLI): before the engine's first \
             step {} (the CLI's start and context upload are inside its build time); engine \
             build {} vs `docker build` {}; export + push {} and record {} after the last \
             build vs `docker push` {}. The record is polled every 20 ms, which adds about 10 ms \
             on average.",
            fmt_s(span("span: before the engine")),
            fmt_s(span("span: engine")),
            fmt_s(Runs::of(&runs.cli_build, which)),
            fmt_s(span("span: export+push after the last build")),
            fmt_s(
                span("span: after the last build") - span("span: export+push after the last build")
            ),
            fmt_s(push_cli)
        ));
    }
    if runs.has_buildx() {
        closing.push(format!(
            "`docker buildx build --push` took {} in all (one command: context upload, build, \
             export and push through the engine); the faster of buildx and the CLI, round by \
             round: {} ({}).",
            runs.buildx_cell(which),
            fmt_s(f),
            runs.faster_sides(which)
        ));
    }
    closing
}

/// Puts the base layer into every repository each side pushes to (for the
/// workloads that want it); returns what that took each side, as a note: a
/// first push into a new repository.
async fn prime(
    slipway: &Slipway,
    github: &FakeGitHub,
    registry: &TestRegistry,
    workloads: &[Workload],
    with_buildx: bool,
) -> String {
    let primed: Vec<&Workload> = workloads.iter().filter(|w| w.primed()).collect();
    // (service, the base to prime it with, the folder whose Dockerfile is FROM it)
    let mut services = Vec::new();
    for (i, workload) in primed.iter().enumerate() {
        for service in workload.services("prime") {
            services.push((service, workload.base.clone(), format!("prime/w{i}")));
        }
    }
    let manifest: Vec<Value> = services
        .iter()
        .map(|(s, _, dir)| json!({"name": s.slipway_name, "version": "prime", "context": dir}))
        .collect();
    let mut files = vec![(
        "dockerInfo.json".to_string(),
        file(json!({ "services": manifest }).to_string().into_bytes()),
    )];
    for (i, workload) in primed.iter().enumerate() {
        files.push((
            format!("prime/w{i}/Dockerfile"),
            file(format!("FROM {}\n", workload.base).into_bytes()),
        ));
    }
    let run = slipway_run(slipway, github, REPO, files, Duration::from_millis(50)).await;
    assert_succeeded(slipway, &run).await;
    let (blobs, kib) = published_totals(&run);
    let host = registry.host.clone();
    let count = services.len();
    // buildx's repositories too: its docker driver pushes through the engine,
    // as `docker push` does.
    let names: Vec<(String, String)> = services
        .iter()
        .flat_map(|(s, base, _)| {
            let mut names = vec![(s.cli_name.clone(), base.clone())];
            if with_buildx {
                names.push((s.buildx_name.clone(), base.clone()));
            }
            names
        })
        .collect();
    let (pushed, mounted) = tokio::task::spawn_blocking(move || cli_prime(&host, names))
        .await
        .expect("priming the CLI's repositories");
    let builder = primed.first().map_or("", |w| w.builder.label());
    format!(
        "Priming ({builder} builder), a first push of the base images into {count} new \
         repositories per side: Slipway took {} and pushed {blobs} blobs ({kib} KiB), mounting \
         the layers it had pushed before into the other repositories; the docker CLI uploaded \
         {pushed} layer(s) and mounted or found {mounted} (cross-repository blob mount from \
         another repository of the registry){}.",
        fmt_s(secs(run.total)),
        if with_buildx {
            ", priming buildx's repositories as well as its own"
        } else {
            ""
        }
    )
}

/// Blobs and KiB pushed over the run's "… : 2 blobs pushed (1234 KiB), …" lines.
fn published_totals(run: &SlipwayRun) -> (u64, u64) {
    let (mut blobs, mut kib) = (0u64, 0u64);
    for line in run.matching("] published ") {
        let Some((_, stats)) = line.rsplit_once("): ") else {
            continue;
        };
        let mut words = stats.split_whitespace();
        blobs += words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        kib += stats
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(" KiB"))
            .and_then(|(n, _)| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (blobs, kib)
}

/// `docker push` of each base under the CLI's service names; returns the
/// layers uploaded and the layers mounted or found.
fn cli_prime(host: &str, names: Vec<(String, String)>) -> (usize, usize) {
    let (mut pushed, mut mounted) = (0, 0);
    for (name, base) in names {
        let tag = format!("{host}/{name}:prime");
        docker_ok(&["tag", &base, &tag]);
        let output = docker_ok(&["push", &tag]);
        pushed += output.lines().filter(|l| l.contains(": Pushed")).count();
        mounted += output
            .lines()
            .filter(|l| l.contains("Mounted from") || l.contains("already exists"))
            .count();
    }
    (pushed, mounted)
}

/// Removes the CLI's priming tags, so that the next builder's Slipway does
/// not find Slipway's own bases in the registry through them.
fn unprime_cli(registry: &TestRegistry, workloads: &[Workload]) {
    let tags: Vec<String> = workloads
        .iter()
        .filter(|w| w.primed())
        .flat_map(|w| w.services("prime"))
        .flat_map(|s| {
            [
                format!("{}/{}:prime", registry.host, s.cli_name),
                format!("{}/{}:prime", registry.host, s.buildx_name),
            ]
        })
        .collect();
    docker_rmi(&tags);
}

fn cleanup(workload: &Workload, registry: &TestRegistry, version: &str) {
    let images: Vec<String> = workload
        .services("cleanup")
        .iter()
        .flat_map(|s| {
            [
                format!("{}/{}:{version}", registry.host, s.slipway_name),
                format!("{}/{}:{version}", registry.host, s.cli_name),
                format!("{}/{}:{version}", registry.host, s.buildx_name),
            ]
        })
        .collect();
    docker_rmi(&images);
}
