//! Benchmark 1: how fast `POST /webhook` answers, idle and while builds run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use super::common::*;
use super::load::{self, Delivery, Generator, LoadResult};
use super::memory::MemoryReport;
use crate::support::{self, FakeGitHub, Slipway, SlipwayOptions, TestRegistry};

/// GitHub's deliveries of a PR event are about this large.
const BODY_BYTES: usize = 25_000;
const PLACEHOLDER_SHA: &str = "fedcba9876543210fedcba9876543210fedcba98";
const CONNECTIONS: [usize; 3] = [1, 16, 128];
const FIXED_RATE: f64 = 1000.0;
const FIXED_RATE_WORKERS: usize = 64;

/// Pads `pull_request.body` so the compact JSON is exactly `BODY_BYTES`.
fn padded(mut value: Value) -> Vec<u8> {
    value["pull_request"]["body"] = json!("");
    let bare = serde_json::to_vec(&value).expect("json").len();
    let pad = BODY_BYTES.saturating_sub(bare);
    value["pull_request"]["body"] = json!("x".repeat(pad));
    serde_json::to_vec(&value).expect("json")
}

/// Signed ~25 KB merged-PR deliveries, each of its own merge commit, of a
/// repository the stand-in GitHub does not know (so the builds fail fast).
pub(super) fn merged_generator() -> Generator {
    let value = support::merged_pr_payload("bench/hooks", PLACEHOLDER_SHA, 7, "main");
    let template = padded(value);
    let offsets: Vec<usize> = template
        .windows(PLACEHOLDER_SHA.len())
        .enumerate()
        .filter(|(_, w)| *w == PLACEHOLDER_SHA.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(offsets.len(), 1, "the placeholder sha occurs once");
    let offset = offsets[0];
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let run = u32::from_str_radix(run, 16).expect("hex");
    Arc::new(move |n: u64| {
        let mut body = template.clone();
        let sha = format!("{run:08x}{n:032x}");
        body[offset..offset + 40].copy_from_slice(sha.as_bytes());
        let signature = support::sign(&body);
        Delivery {
            event: "pull_request",
            body: Bytes::from(body),
            signature,
        }
    })
}

/// The real `opened` fixture, ~25 KB: answered 200 `ignored`.
fn ignored_generator() -> Generator {
    let path = format!(
        "{}/tests/fixtures/pull_request.opened.octokit-webhooks.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let value: Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
    let body = Bytes::from(padded(value));
    let signature = support::sign(&body);
    Arc::new(move |_| Delivery {
        event: "pull_request",
        body: body.clone(),
        signature: signature.clone(),
    })
}

/// CPU time (user + system) of a process so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

pub(super) struct Cell {
    pub(super) rates: Vec<f64>,
    pub(super) p50: Vec<f64>,
    pub(super) p99: Vec<f64>,
    pub(super) p999: Vec<f64>,
    pub(super) max: Vec<f64>,
    pub(super) unexpected: u64,
    pub(super) slipway_cpu_us: Vec<f64>,
    pub(super) bench_cpu_us: Vec<f64>,
}

impl Cell {
    pub(super) fn new() -> Self {
        Self {
            rates: vec![],
            p50: vec![],
            p99: vec![],
            p999: vec![],
            max: vec![],
            unexpected: 0,
            slipway_cpu_us: vec![],
            bench_cpu_us: vec![],
        }
    }

    pub(super) fn add(&mut self, result: &LoadResult, expected: u16, cpu: (Duration, Duration)) {
        self.rates.push(result.rate());
        self.p50.push(result.percentile_us(50.0));
        self.p99.push(result.percentile_us(99.0));
        self.p999.push(result.percentile_us(99.9));
        self.max.push(result.max_us());
        self.unexpected += result.unexpected(expected);
        let n = result.answered().max(1) as f64;
        self.slipway_cpu_us.push(cpu.0.as_secs_f64() * 1e6 / n);
        self.bench_cpu_us.push(cpu.1.as_secs_f64() * 1e6 / n);
    }
}

/// Runs `f` and returns its result with the CPU time slipway and this
/// process spent meanwhile.
pub(super) async fn with_cpu<F: std::future::Future<Output = LoadResult>>(
    pid: Option<u32>,
    f: F,
) -> (LoadResult, (Duration, Duration)) {
    let me = std::process::id();
    let (s0, b0) = (pid.map(cpu_time).unwrap_or_default(), cpu_time(me));
    let result = f.await;
    let (s1, b1) = (pid.map(cpu_time).unwrap_or_default(), cpu_time(me));
    (result, (s1.saturating_sub(s0), b1.saturating_sub(b0)))
}

pub(super) fn check(mode: Mode, what: &str, result: &LoadResult, expected: u16) {
    let unexpected = result.unexpected(expected);
    let line = format!(
        "{what}: {} answered, statuses {:?}",
        result.answered(),
        result.statuses
    );
    println!("  {line}");
    if mode == Mode::Smoke {
        assert!(result.answered() > 0, "{line}");
        assert_eq!(unexpected, 0, "every request answered {expected}: {line}");
    }
}

pub async fn run(
    mode: Mode,
    github: &FakeGitHub,
    registry: &TestRegistry,
    memory: &mut MemoryReport,
) -> Section {
    let mut section = Section::new(
        "1. Webhook answer",
        "Signed 25,000-byte deliveries over keep-alive HTTP/1.1 connections on loopback \
         (reqwest, one client per connection) from this process. `merged`: the merged-PR \
         fixture, each delivery with its own merge_commit_sha, so each is admitted as a new \
         build (SLIPWAY_MAX_QUEUED_BUILDS=1000000000); the stand-in GitHub does not know the \
         commits, so those builds fail fast in the background. `ignored`: the `opened` fixture \
         (200 `ignored`). Closed loop: each connection sends its next request when the answer \
         is in. Latency is from sending to the last byte of the answer.",
    );
    let warmup = Duration::from_secs_f64(mode.pick(1.0, 0.2));
    let duration = Duration::from_secs_f64(mode.pick(5.0, 1.0));
    let slipway = Slipway::start(
        SlipwayOptions::new(github, registry)
            .env("SLIPWAY_MAX_QUEUED_BUILDS", "1000000000")
            .env("SLIPWAY_MAX_CONCURRENT_BUILDS", "2"),
    )
    .await;
    let url = format!("{}/webhook", slipway.url);
    let pid = slipway_pid(&slipway);
    if pid.is_none() {
        section
            .notes
            .push("could not find the slipway pid: no CPU or memory figures".into());
    }
    let watch = MemoryWatch::start(pid);

    let mut table = Table::new(
        "Closed loop: requests/s and latency (medians of runs)",
        &[
            "event",
            "connections",
            "requests/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "slipway CPU/request",
            "bench CPU/request",
            "requests/s per run",
            "not 2xx",
        ],
    );
    let mut drained = Drained::default();
    let mut best_ignored = 0.0f64;
    let mut ignored_cells = Vec::new();
    for (kind, expected) in [("merged", 202u16), ("ignored", 200u16)] {
        for connections in CONNECTIONS {
            let mut cell = Cell::new();
            for rep in 0..mode.reps() {
                drain(&slipway, &mut drained).await;
                let generator = if kind == "merged" {
                    merged_generator()
                } else {
                    ignored_generator()
                };
                let (result, cpu) = with_cpu(
                    pid,
                    load::closed_loop(&url, connections, warmup, duration, generator),
                )
                .await;
                check(
                    mode,
                    &format!("{kind} x{connections} run {}", rep + 1),
                    &result,
                    expected,
                );
                cell.add(&result, expected, cpu);
            }
            let rate = median(&cell.rates);
            if kind == "ignored" {
                best_ignored = best_ignored.max(rate);
                ignored_cells.push((connections, rate));
            }
            table.row(vec![
                kind.to_string(),
                connections.to_string(),
                fmt_rate(rate),
                fmt_us(median(&cell.p50)),
                fmt_us(median(&cell.p99)),
                fmt_us(median(&cell.p999)),
                fmt_us(max(&cell.max)),
                format!("{:.0} µs", median(&cell.slipway_cpu_us)),
                format!("{:.0} µs", median(&cell.bench_cpu_us)),
                each(&cell.rates, |r| format!("{r:.0}")),
                cell.unexpected.to_string(),
            ]);
        }
    }
    table.note(drained.describe());
    table.note(format!(
        "{} run(s) of {:.1} s per row after {:.1} s of warm-up. CPU per request is the \
         process's user+system time over the run divided by the requests answered; \
         \"bench\" is this process (load generator, signing, the stand-in GitHub the \
         failing builds call).",
        mode.reps(),
        duration.as_secs_f64(),
        warmup.as_secs_f64()
    ));
    section.tables.push(table);

    // Fixed rate, idle server.
    let rate = mode.pick(FIXED_RATE, 200.0);
    let fixed_duration = Duration::from_secs_f64(mode.pick(10.0, 1.0));
    let mut fixed = Table::new(
        "Fixed rate (medians of runs)",
        &[
            "while",
            "offered",
            "answered",
            "p50",
            "p99",
            "p99.9",
            "max",
            "p99 per run",
            "not 202",
        ],
    );
    let mut drained = Drained::default();
    let mut idle = Cell::new();
    for rep in 0..mode.reps() {
        drain(&slipway, &mut drained).await;
        let (result, cpu) = with_cpu(
            pid,
            load::fixed_rate(
                &url,
                rate,
                FIXED_RATE_WORKERS,
                warmup,
                fixed_duration,
                merged_generator(),
            ),
        )
        .await;
        check(
            mode,
            &format!("fixed {rate}/s run {}", rep + 1),
            &result,
            202,
        );
        idle.add(&result, 202, cpu);
    }
    // Control: ignored events at the same rate, which touch no store and
    // start no build, tell the server's own tail from the machine's.
    let mut control = Cell::new();
    for rep in 0..mode.reps() {
        drain(&slipway, &mut drained).await;
        let (result, cpu) = with_cpu(
            pid,
            load::fixed_rate(
                &url,
                rate,
                FIXED_RATE_WORKERS,
                warmup,
                fixed_duration,
                ignored_generator(),
            ),
        )
        .await;
        check(
            mode,
            &format!("fixed {rate}/s ignored run {}", rep + 1),
            &result,
            200,
        );
        control.add(&result, 200, cpu);
    }
    let (webhook_peak, webhook_before) = watch.finish_with_start();
    memory.add(
        "answering the webhook load above (closed loop and fixed rate)",
        webhook_peak,
        webhook_before,
    );
    fixed_row(
        &mut fixed,
        "idle (failing builds drain, 2 at a time)",
        rate,
        &idle,
    );
    fixed_row(
        &mut fixed,
        "idle, ignored events instead (control)",
        rate,
        &control,
    );
    fixed.note(drained.describe());
    let (queued, total) = queue_depth(&slipway).await;
    keep_log(&slipway, "webhook");
    drop(slipway);

    // Fixed rate while 4 slow builds run.
    let busy = with_builds(mode, github, registry, rate, warmup, fixed_duration).await;
    if let Some((cell, still_running)) = &busy {
        fixed_row(&mut fixed, "4 builds running (4 build slots)", rate, cell);
        if !still_running {
            fixed.note("WARNING: not all 4 builds were still running at the end of the load.");
        }
    }
    fixed.note(format!(
        "Open loop: request i is due at start + i/{rate:.0} s, spread over {FIXED_RATE_WORKERS} \
         connections; {} run(s) of {:.0} s after {:.1} s warm-up. A request that goes out late \
         because its connection is still busy counts from when it was due. The slow builds: 4 \
         merged commits, one service each, whose RUN prints a line every 200 ms, with \
         SLIPWAY_MAX_CONCURRENT_BUILDS=4; the load starts once all 4 print, and with every build \
         slot taken the merged deliveries only queue then (in the idle rows their builds run \
         and fail meanwhile, 2 at a time). At the end of the idle runs slipway had {queued} queued build(s) of {total} in the store.",
        mode.reps(),
        fixed_duration.as_secs_f64(),
        warmup.as_secs_f64(),
    ));
    section.tables.push(fixed);

    // Targets.
    let idle_p99 = median(&idle.p99) / 1000.0;
    section.targets.push(Target {
        name: "merged deliveries at 1,000/s: p99".into(),
        target: "< 5 ms".into(),
        measured: format!("{idle_p99:.2} ms"),
        met: idle_p99 < 5.0,
        evidence: vec![
            format!(
                "p50 {}, p99.9 {}, max {}; slipway CPU {:.0} µs per merged delivery",
                fmt_us(median(&idle.p50)),
                fmt_us(median(&idle.p999)),
                fmt_us(max(&idle.max)),
                median(&idle.slipway_cpu_us)
            ),
            format!(
                "control, ignored events at the same rate on the same server: p50 {}, p99 {}, \
                 p99.9 {}; slipway CPU {:.0} µs per ignored delivery",
                fmt_us(median(&control.p50)),
                fmt_us(median(&control.p99)),
                fmt_us(median(&control.p999)),
                median(&control.slipway_cpu_us)
            ),
        ],
        closing: fixed_rate_closing(&idle, &control),
    });
    let best = ignored_cells
        .iter()
        .map(|(c, r)| format!("{} at {c}", fmt_rate(*r)))
        .collect::<Vec<_>>()
        .join(", ");
    section.targets.push(Target {
        name: "ignored events: max throughput".into(),
        target: "> 10,000/s".into(),
        measured: fmt_rate(best_ignored),
        met: best_ignored > 10_000.0,
        evidence: vec![format!("requests/s by connections: {best}")],
        closing: vec![],
    });
    if let Some((cell, _)) = &busy {
        let p99 = median(&cell.p99) / 1000.0;
        section.targets.push(Target {
            name: "p99 while 4 builds run".into(),
            target: "< 20 ms".into(),
            measured: format!("{p99:.2} ms"),
            met: p99 < 20.0,
            evidence: vec![format!(
                "merged deliveries at {rate:.0}/s: p50 {}, p99.9 {}, max {}",
                fmt_us(median(&cell.p50)),
                fmt_us(median(&cell.p999)),
                fmt_us(max(&cell.max))
            )],
            closing: vec![],
        });
    }
    section
}

/// How long the waits for the failing builds to drain took.
#[derive(Default)]
struct Drained {
    waits: Vec<Duration>,
    gave_up: usize,
}

impl Drained {
    fn describe(&self) -> String {
        let longest = self.waits.iter().max().copied().unwrap_or_default();
        let mut text = format!(
            "Before every run the bench waits until slipway has no build queued or running \
             (the builds that merged rows queue fail fast, 2 at a time), so that no row pays \
             for the previous one's builds: {} wait(s), the longest {:.1} s.",
            self.waits.len(),
            longest.as_secs_f64()
        );
        if self.gave_up > 0 {
            text.push_str(&format!(
                " WARNING: {} wait(s) gave up after {} s with builds still queued.",
                self.gave_up,
                DRAIN_LIMIT.as_secs()
            ));
        }
        text
    }
}

const DRAIN_LIMIT: Duration = Duration::from_secs(300);

async fn drain(slipway: &Slipway, drained: &mut Drained) {
    match wait_until_drained(slipway, DRAIN_LIMIT).await {
        Some(took) => drained.waits.push(took),
        None => drained.gave_up += 1,
    }
}

fn fixed_row(table: &mut Table, label: &str, rate: f64, cell: &Cell) {
    table.row(vec![
        label.to_string(),
        fmt_rate(rate),
        fmt_rate(median(&cell.rates)),
        fmt_us(median(&cell.p50)),
        fmt_us(median(&cell.p99)),
        fmt_us(median(&cell.p999)),
        fmt_us(max(&cell.max)),
        each(&cell.p99, |us| format!("{:.2}", us / 1000.0)),
        cell.unexpected.to_string(),
    ]);
}

async fn metrics_text(slipway: &Slipway) -> String {
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}/metrics", slipway.url))
        .send()
        .await;
    match metrics {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the first sample whose line starts with `prefix` and holds
/// `containing`.
fn sample(text: &str, prefix: &str, containing: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l.contains(containing))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_string)
}

/// (queued builds, accepted deliveries) per the metrics.
async fn queue_depth(slipway: &Slipway) -> (String, String) {
    let text = metrics_text(slipway).await;
    let accepted = sample(&text, "slipway_webhook_deliveries_total", "\"accepted\"");
    let queued = sample(&text, "slipway_queue_depth", "");
    (
        queued.unwrap_or_else(|| "?".into()),
        accepted.unwrap_or_else(|| "?".into()),
    )
}

/// Waits until no build is queued or running, so that the failing builds a
/// row of merged deliveries leaves behind do not run (and use the CPU) during
/// the next row. Returns how long it took, or None past `limit`.
async fn wait_until_drained(slipway: &Slipway, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let text = metrics_text(slipway).await;
        let idle = ["slipway_queue_depth", "slipway_builds_running"]
            .iter()
            .all(|name| sample(&text, name, "").as_deref() == Some("0"));
        if idle {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fixed-rate runs while 4 slow builds hold all 4 build slots; returns the
/// figures and whether the builds were all still running at the end.
async fn with_builds(
    mode: Mode,
    github: &FakeGitHub,
    registry: &TestRegistry,
    rate: f64,
    warmup: Duration,
    duration: Duration,
) -> Option<(Cell, bool)> {
    let slipway = Slipway::start(
        SlipwayOptions::new(github, registry)
            .env("SLIPWAY_MAX_QUEUED_BUILDS", "1000000000")
            .env("SLIPWAY_MAX_CONCURRENT_BUILDS", "4"),
    )
    .await;
    let pid = slipway_pid(&slipway);
    let load_time = (warmup + duration).as_secs_f64() * mode.reps() as f64;
    let ticks = ((load_time + 60.0) / 0.2).ceil() as u64;
    let nonce = nonce();
    let mut ids = Vec::new();
    for k in 0..4 {
        let sha = support::sha();
        let dockerfile = format!(
            "FROM {}\nRUN echo {nonce}-{k}\n\
             RUN : slow-{nonce}; for i in $(seq 1 {ticks}); do echo \"tick $i\"; sleep 0.2; done\n",
            support::BASE_IMAGE
        );
        let manifest = format!(r#"{{"service_name":"ticker{k}","version":"{nonce}"}}"#);
        github.add_commit_files(
            "bench/slow",
            &sha,
            &[("dockerInfo.json", &manifest), ("Dockerfile", &dockerfile)],
        );
        ids.push(slipway.merge("bench/slow", &sha).await);
    }
    // Wait until every build's RUN prints.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut ticking = 0;
        for id in &ids {
            if slipway.build_log(id).await.contains("tick 2") {
                ticking += 1;
            }
        }
        if ticking == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            println!("  the 4 slow builds did not all start:\n{}", slipway.log());
            assert!(mode.full(), "the 4 slow builds did not all start");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = format!("{}/webhook", slipway.url);
    let mut cell = Cell::new();
    for rep in 0..mode.reps() {
        let (result, cpu) = with_cpu(
            pid,
            load::fixed_rate(
                &url,
                rate,
                FIXED_RATE_WORKERS,
                warmup,
                duration,
                merged_generator(),
            ),
        )
        .await;
        check(
            mode,
            &format!("fixed {rate}/s with 4 builds, run {}", rep + 1),
            &result,
            202,
        );
        cell.add(&result, 202, cpu);
    }
    let mut still_running = true;
    for id in &ids {
        let (_, record) = slipway.get_json(&format!("/builds/{id}")).await;
        still_running &= record["status"] == "running";
    }
    keep_log(&slipway, "webhook-4-builds");
    drop(slipway);
    remove_containers(&nonce);
    Some((cell, still_running))
}

/// Removes the build containers whose command mentions `marker` (the slow
/// builds' RUN), in case the engine keeps them after slipway is gone.
pub fn remove_containers(marker: &str) {
    let (_, listing) = docker_cli(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"]);
    let ids: Vec<String> = listing
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        let _ = docker_cli(&args);
    }
}

/// Where the fixed-rate tail comes from, judged against the control run.
fn fixed_rate_closing(merged: &Cell, control: &Cell) -> Vec<String> {
    let (m, c) = (median(&merged.p99) / 1000.0, median(&control.p99) / 1000.0);
    let mut lines = Vec::new();
    if c >= 5.0 {
        lines.push(format!(
            "The control (ignored events: no store write, no build) has a p99 of {c:.2} ms too, \
             so much of the tail is the machine: 2 cores shared by slipway, the load generator, \
             the stand-in GitHub and anything else running. A quieter machine, or the load \
             generator on other cores, would show how much is left."
        ));
    }
    if m > c {
        lines.push(format!(
            "Merged deliveries' p99 exceeds the control's by {:.2} ms: that part is the \
             admission path (signature, parse, the store transaction) and the failing builds \
             running meanwhile ({:.0} µs of slipway CPU per merged delivery against {:.0} µs \
             per ignored one).",
            m - c,
            median(&merged.slipway_cpu_us),
            median(&control.slipway_cpu_us)
        ));
    }
    lines
}
