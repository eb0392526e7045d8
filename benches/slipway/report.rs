//! Writes docs/performance.md from a full run, keeping the hand-written
//! analysis block of the previous file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::common::{Machine, Mode, Section};

const ANALYSIS_START: &str = "<!-- analysis:start -->";
const ANALYSIS_END: &str = "<!-- analysis:end -->";

const DEFAULT_ANALYSIS: &str = "_LEAD: add the analysis of the missed targets here (causes, \
fixes, issues filed). This block, between the analysis markers, is kept when the bench \
rewrites this file._\n";

/// The analysis block of an existing file, markers excluded.
fn previous_analysis(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find(ANALYSIS_START)? + ANALYSIS_START.len();
    let end = text[start..].find(ANALYSIS_END)? + start;
    Some(text[start..end].trim_matches('\n').to_string() + "\n")
}

pub fn write(path: &Path, mode: Mode, machine: &Machine, sections: &[Section], elapsed: Duration) {
    let analysis = previous_analysis(path).unwrap_or_else(|| DEFAULT_ANALYSIS.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Performance\n\n\
         <!-- Written by `cargo bench --bench slipway` (benches/slipway.rs). Everything but the \
         analysis block is regenerated on every full run. -->\n\n\
         Measured on {} by a {} run of the benchmark suite, which took {:.1} minutes.\n",
        machine.date,
        if mode.full() {
            "full"
        } else {
            "SMOKE (tiny sizes, debug build: not for comparison)"
        },
        elapsed.as_secs_f64() / 60.0
    );
    out.push_str(
        "## How to run\n\n\
         ```sh\n\
         scripts/bench                      # test environment, then the full suite; rewrites this file\n\
         scripts/bench webhook              # only one of: webhook, merge, noop, context, instances (this file is left alone)\n\
         scripts/bench -- noop context      # several\n\
         SLIPWAY_BENCH_REPORT=/tmp/p.md scripts/bench merge   # write the report of a partial run elsewhere\n\
         scripts/bench -- merge --quick     # merge to image, only (a) and (d) on the 200 MB bases, BuildKit builder\n\
         scripts/bench --engines all -- merge --quick   # the same on Engine 20.10 and both Engine 26 (scripts/engines.sh); reports in target/bench-reports/\n\
         cargo test --release --bench slipway   # the smoke version (also part of `cargo test --all-targets`)\n\
         ```\n\n\
         The full suite runs in release mode, repeats each measurement (3 runs; 5 for the no-op \
         merge and merge workload (a); for the large-base merge workload (d) the first publish \
         and 3 later ones on the 200 MB bases, 2 later ones on the 1 GB bases) and reports \
         medians. A full run takes about 25 to 30 minutes on this 2-core machine. Everything runs on this machine: the real `slipway` binary \
         (started by the integration-test harness, tests/support), the stand-in GitHub in the \
         bench process, a real TLS registry with basic auth (Debian's docker-registry) and the \
         machine's Docker Engine, all on loopback. Compare ratios rather than absolute times: \
         the machine is small and shared, and the CLI baseline runs on the same engine and \
         registry as Slipway.\n\n",
    );
    let _ = writeln!(
        out,
        "## Machine\n\n\
         | | |\n| --- | --- |\n\
         | CPUs (nproc) | {} ({}) |\n\
         | memory | {} |\n\
         | kernel | {} |\n\
         | Docker Engine | {} (`docker version` {}, storage driver {}; merge to image with both builders) |\n\
         | date (UTC) | {} |\n\
         | load average at the start | {} |\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.engine,
        machine.docker,
        machine.storage_driver,
        machine.date,
        machine.load
    );

    out.push_str("## Targets\n\n| benchmark | target | measured | |\n| --- | --- | --- | --- |\n");
    for section in sections {
        for target in &section.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                target.name,
                target.target,
                target.measured,
                if target.met { "met" } else { "**missed**" }
            );
        }
    }
    out.push('\n');

    for section in sections {
        let _ = writeln!(out, "## {}\n\n{}\n", section.title, section.how);
        for table in &section.tables {
            out.push_str(&table.markdown());
            out.push('\n');
        }
        for note in &section.notes {
            let _ = writeln!(out, "{note}\n");
        }
    }

    out.push_str("## Missed targets: what was measured\n\n");
    let mut any = false;
    for section in sections {
        for target in section.targets.iter().filter(|t| !t.met) {
            any = true;
            let _ = writeln!(
                out,
                "### {}: {} (target {})\n",
                target.name, target.measured, target.target
            );
            for line in &target.evidence {
                let _ = writeln!(out, "- {line}");
            }
            if !target.closing.is_empty() {
                out.push_str("\nWhat would close the gap, from these measurements:\n\n");
                for line in &target.closing {
                    let _ = writeln!(out, "- {line}");
                }
            }
            out.push('\n');
        }
    }
    if !any {
        out.push_str("None: every target was met in this run.\n\n");
    }
    let _ = writeln!(
        out,
        "## Analysis\n\n{ANALYSIS_START}\n{}{ANALYSIS_END}",
        analysis
    );
    std::fs::write(path, out).expect("write docs/performance.md");
}
