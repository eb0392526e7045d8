//! Slipway's benchmark suite (issue 6).
//!
//! `cargo bench --bench slipway` (or `scripts/bench`) runs the full suite in
//! release mode, prints every table and writes docs/performance.md. Without
//! `--bench` in its arguments (as when `cargo test --all-targets` runs this
//! target in debug mode) it runs a smoke version: tiny sizes, a few seconds
//! per benchmark, no timing assertions, only that everything works.
//!
//! Positional arguments select benchmarks by name: webhook, merge, noop,
//! context, instances (memory is measured during webhook and merge). An argument that
//! names none of them (e.g. a test filter given to `cargo test`) runs none.
//! `SLIPWAY_BENCH_REPORT=<path>` writes the markdown report to that path
//! instead, in any mode and for any selection. `--quick` makes the merge
//! benchmark run only workloads (a) and (d) on the 200 MB bases, BuildKit
//! builder only.
//!
//! Every benchmark talks to the Docker Engine that DOCKER_HOST names (the
//! machine's own without it): Slipway, the docker CLI and buildx alike; the
//! merge tables are labelled with that engine (`scripts/bench --engines`
//! runs the suite once per engine).

// The bench uses part of the tests' harness; tests/it/ uses all of it.
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

#[path = "slipway/common.rs"]
mod common;
#[path = "slipway/context.rs"]
mod context;
#[path = "slipway/instances.rs"]
mod instances;
#[path = "slipway/load.rs"]
mod load;
#[path = "slipway/memory.rs"]
mod memory;
#[path = "slipway/merge.rs"]
mod merge;
#[path = "slipway/noop.rs"]
mod noop;
#[path = "slipway/report.rs"]
mod report;
#[path = "slipway/upload.rs"]
mod upload;
#[path = "slipway/webhook.rs"]
mod webhook;
#[path = "slipway/workloads.rs"]
mod workloads;

use std::time::Instant;

use common::{Machine, Mode, Section};

const BENCHMARKS: [&str; 5] = ["webhook", "merge", "noop", "context", "instances"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = if args.iter().any(|a| a == "--bench") {
        Mode::Full
    } else {
        Mode::Smoke
    };
    let filters: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&str> = BENCHMARKS
        .iter()
        .copied()
        .filter(|b| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| b.contains(f) || (*f == "memory" && matches!(*b, "webhook" | "merge")))
        })
        .collect();
    if selected.is_empty() {
        println!("slipway bench: no benchmark matches {filters:?}; running none");
        return;
    }
    let started = Instant::now();
    let machine = Machine::describe();
    println!(
        "slipway bench ({} mode{}): {} on {} CPUs, {} memory, kernel {}, {}, load {}",
        if mode.full() { "full" } else { "smoke" },
        if common::quick() { ", quick" } else { "" },
        selected.join(", "),
        machine.cpus,
        machine.memory,
        machine.kernel,
        machine.engine,
        machine.load
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sections = runtime.block_on(run(mode, &selected));
    let elapsed = started.elapsed();
    println!(
        "\nslipway bench: {} mode took {:.0} s (load at the end {})",
        if mode.full() { "full" } else { "smoke" },
        elapsed.as_secs_f64(),
        common::loadavg()
    );
    // SLIPWAY_BENCH_REPORT=<path> writes the report there, in any mode.
    let requested = std::env::var_os("SLIPWAY_BENCH_REPORT").filter(|p| !p.is_empty());
    if let Some(path) = requested {
        let path = std::path::PathBuf::from(path);
        report::write(&path, mode, &machine, &sections, elapsed);
        println!("slipway bench: wrote {}", path.display());
    } else if mode.full() {
        if selected.len() == BENCHMARKS.len() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/performance.md");
            report::write(path.as_ref(), mode, &machine, &sections, elapsed);
            println!("slipway bench: wrote {path}");
        } else {
            println!(
                "slipway bench: only some benchmarks ran; docs/performance.md left as it is \
                 (set SLIPWAY_BENCH_REPORT=<path> to write their report elsewhere)"
            );
        }
    }
    if !mode.full() {
        // Any failure above panics; reaching here means every smoke benchmark worked.
        println!("smoke: {} passed, 0 failed", selected.len());
    }
}

async fn run(mode: Mode, selected: &[&str]) -> Vec<Section> {
    let wants = |name: &str| selected.contains(&name);
    let mut sections = Vec::new();
    let mut memory = memory::MemoryReport::default();
    let needs_stack = ["webhook", "merge", "noop", "instances"]
        .iter()
        .any(|b| wants(b));
    let stack = if needs_stack {
        let github = support::FakeGitHub::start().await;
        let registry = tokio::task::spawn_blocking(support::TestRegistry::start)
            .await
            .expect("test registry");
        Some((github, registry))
    } else {
        None
    };
    if let Some((github, registry)) = &stack {
        if wants("webhook") {
            let section = timed("webhook", webhook::run(mode, github, registry, &mut memory)).await;
            sections.push(section);
        }
        if wants("merge") {
            let section = timed("merge", merge::run(mode, github, registry, &mut memory)).await;
            sections.push(section);
        }
        if wants("noop") {
            sections.push(timed("noop", noop::run(mode, github, registry)).await);
        }
        if wants("instances") {
            sections.push(timed("instances", instances::run(mode, github, registry)).await);
        }
        remove_images_of(&registry.host);
    }
    if !memory.is_empty() {
        let section = memory.section();
        section.print();
        sections.push(section);
    }
    if wants("context") {
        let started = Instant::now();
        println!("\n### context");
        let section = tokio::task::spawn_blocking(move || context::run(mode))
            .await
            .expect("context benchmark");
        section.print();
        println!("  (context took {:.0} s)", started.elapsed().as_secs_f64());
        sections.push(section);
    }
    sections.sort_by(|a, b| a.title.cmp(&b.title));
    sections
}

async fn timed(name: &str, section: impl std::future::Future<Output = Section>) -> Section {
    let started = Instant::now();
    println!("\n### {name}");
    let section = section.await;
    section.print();
    println!("  ({name} took {:.0} s)", started.elapsed().as_secs_f64());
    section
}

/// Removes the local images tagged for this run's registry (its port is new
/// to every run), so runs do not pile images up on the engine.
fn remove_images_of(host: &str) {
    let (_, listing) = common::docker_cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let prefix = format!("{host}/");
    let images: Vec<String> = listing
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    common::docker_rmi(&images);
}
