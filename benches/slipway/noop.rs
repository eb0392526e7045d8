//! Benchmark 3: a merge that changes nothing any service is built from:
//! every service is `skipped`, and the time is Slipway's own overhead.

use std::time::Duration;

use super::common::*;
use super::merge::{assert_succeeded, slipway_run, SlipwayRun};
use crate::support::{self, FakeEntry, FakeGitHub, Slipway, SlipwayOptions, TestRegistry};

const REPO: &str = "bench/noop";
const TARGET_MS: f64 = 150.0;

fn commit_files(services: usize) -> Vec<(String, FakeEntry)> {
    let file = |text: String| FakeEntry::File {
        contents: text.into_bytes(),
        executable: false,
    };
    let manifest: Vec<serde_json::Value> = (0..services)
        .map(|i| serde_json::json!({"name": format!("noop-s{i}"), "version": "1.0.0", "context": format!("services/s{i}")}))
        .collect();
    let mut files = vec![(
        "dockerInfo.json".to_string(),
        file(serde_json::json!({ "services": manifest }).to_string()),
    )];
    for i in 0..services {
        files.push((
            format!("services/s{i}/Dockerfile"),
            file(format!(
                "FROM {}\nRUN echo s{i} > /name\nCOPY . /app/\n",
                support::BASE_IMAGE
            )),
        ));
        for j in 0..10 {
            files.push((
                format!("services/s{i}/src/f{j}.txt"),
                file(format!("service {i} file {j}\n").repeat(100)),
            ));
        }
    }
    files.push(("README.md".into(), file("docs\n".repeat(500))));
    files
}

pub async fn run(mode: Mode, github: &FakeGitHub, registry: &TestRegistry) -> Section {
    let services = mode.pick(10, 3);
    let reps = mode.pick(5, 1);
    let mut section = Section::new(
        "3. No-op merges",
        "A monorepo of services whose versions are all published already from the same \
         sources; another commit with the same sources is merged, and every service is \
         `skipped`. Time from the 202 to the record's `succeeded`, polling GET /builds/<id> \
         every 5 ms (20 ms would be too coarse for the target). The download time is the one \
         the build log reports (\"downloaded N KiB of sources in D\").",
    );
    let slipway = Slipway::start(
        SlipwayOptions::new(github, registry).env("SLIPWAY_MAX_CONCURRENT_BUILDS", "2"),
    )
    .await;
    // Publish them all once (names are fresh to this registry).
    let first = slipway_run(
        &slipway,
        github,
        REPO,
        commit_files(services),
        Duration::from_millis(50),
    )
    .await;
    assert_succeeded(&slipway, &first).await;

    let mut totals = Vec::new();
    let mut downloads = Vec::new();
    let mut unpacked = Vec::new();
    let mut first_contexts = Vec::new();
    let mut contexts = Vec::new();
    let mut last_skipped = Vec::new();
    let mut queue_wait = Vec::new();
    for rep in 0..reps {
        let run = slipway_run(
            &slipway,
            github,
            REPO,
            commit_files(services),
            Duration::from_millis(5),
        )
        .await;
        assert_succeeded(&slipway, &run).await;
        let skipped = run.record["services"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["status"] == "skipped").count());
        assert_eq!(skipped, services, "every service skipped: {}", run.record);
        println!(
            "  no-op run {}: {:.1} ms, download {:.1} ms",
            rep + 1,
            ms(run.total),
            run.download().map_or(f64::NAN, ms)
        );
        totals.push(ms(run.total));
        if let Some(d) = run.download() {
            downloads.push(ms(d));
        }
        push_ms(&mut unpacked, run.first("unpacked "));
        push_ms(&mut first_contexts, run.first("context: "));
        push_ms(&mut contexts, run.last("context: "));
        push_ms(&mut last_skipped, run.last("] skipped"));
        if let Some(wait) = queue_wait_ms(&run) {
            queue_wait.push(wait);
        }
    }
    let total = median(&totals);
    let download = median(&downloads);
    let excluding = total - download;
    let mut table = Table::new(
        "No-op merge: every service skipped (medians of runs)",
        &[
            "services",
            "202 → succeeded",
            "download",
            "excluding download",
            "target",
            "per run",
        ],
    );
    table.row(vec![
        services.to_string(),
        fmt_ms(total),
        fmt_ms(download),
        fmt_ms(excluding),
        format!("< {TARGET_MS:.0} ms"),
        each(&totals, |v| format!("{v:.0}")),
    ]);
    let mut phases = Table::new(
        "No-op merge: when things happened after the 202 (medians)",
        &[
            "queued → started (record)",
            "unpacked",
            "first context ready",
            "last context ready",
            "last skipped",
            "succeeded seen",
        ],
    );
    let fmt_opt = |v: &[f64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            fmt_ms(median(v))
        }
    };
    phases.row(vec![
        fmt_opt(&queue_wait),
        fmt_opt(&unpacked),
        fmt_opt(&first_contexts),
        fmt_opt(&contexts),
        fmt_opt(&last_skipped),
        fmt_ms(total),
    ]);
    phases.note(
        "Times are when the log lines arrived over the live log (SSE), counted from the 202; \
         `queued → started` is from the record's created_at and started_at.",
    );
    keep_log(&slipway, "noop");
    section.tables.push(table);
    section.tables.push(phases);
    section.targets.push(Target {
        name: format!("no-op merge of {services} services, excluding the download"),
        target: format!("< {TARGET_MS:.0} ms"),
        measured: fmt_ms(excluding),
        met: excluding < TARGET_MS,
        evidence: vec![format!(
            "202 → succeeded {} (download {}); unpacked at {}, contexts ready from {} to {}, \
             last `skipped` at {}, queued → started {}",
            fmt_ms(total),
            fmt_ms(download),
            fmt_opt(&unpacked),
            fmt_opt(&first_contexts),
            fmt_opt(&contexts),
            fmt_opt(&last_skipped),
            fmt_opt(&queue_wait)
        )],
        closing: vec![],
    });
    section
}

fn push_ms(values: &mut Vec<f64>, at: Option<Duration>) {
    if let Some(at) = at {
        values.push(ms(at));
    }
}

fn queue_wait_ms(run: &SlipwayRun) -> Option<f64> {
    let parse = |field: &str| {
        let text = run.record[field].as_str()?;
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    };
    let (created, started) = (parse("created_at")?, parse("started_at")?);
    Some((started - created).as_seconds_f64() * 1000.0)
}
