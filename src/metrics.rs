//! Counters, gauges and histograms for `/metrics`, in Prometheus text format.
//! Hand-rolled: a dozen series do not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds, in seconds, for build and push durations.
const BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Default)]
struct Series {
    deliveries: BTreeMap<&'static str, u64>,
    builds: BTreeMap<&'static str, u64>,
    services: BTreeMap<&'static str, u64>,
    signatures: BTreeMap<&'static str, u64>,
    /// By (kind, dry run).
    retention_deleted: BTreeMap<(&'static str, bool), u64>,
    build_seconds: Histogram,
    push_seconds: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    series: Mutex<Series>,
    running_builds: AtomicI64,
    bytes_pushed: AtomicU64,
    blobs_pushed: AtomicU64,
    blobs_present: AtomicU64,
    catch_up_builds: AtomicU64,
    claims: AtomicU64,
    takeovers: AtomicU64,
    lease_losses: AtomicU64,
}

impl Metrics {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a webhook delivery by outcome: accepted, ignored, duplicate, rejected_*.
    pub fn delivery(&self, outcome: &'static str) {
        *self.series().deliveries.entry(outcome).or_default() += 1;
    }

    /// Counts a build admitted for a merge whose delivery never arrived.
    pub fn catch_up_build(&self) {
        self.catch_up_builds.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a build this instance claimed from the queue; a takeover when
    /// another instance's lease on it had run out.
    pub fn claimed(&self, takeover: bool) {
        self.claims.fetch_add(1, Ordering::Relaxed);
        if takeover {
            self.takeovers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a build this instance stopped because its lease was lost.
    pub fn lease_lost(&self) {
        self.lease_losses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn build_started(&self) {
        self.running_builds.fetch_add(1, Ordering::Relaxed);
    }

    /// A build this instance stopped unfinished (its lease was lost).
    pub fn build_stopped(&self) {
        self.running_builds.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn build_finished(&self, status: &'static str, took: Duration) {
        self.running_builds.fetch_sub(1, Ordering::Relaxed);
        let mut series = self.series();
        *series.builds.entry(status).or_default() += 1;
        series.build_seconds.observe(took.as_secs_f64());
    }

    pub fn service_finished(&self, status: &'static str) {
        *self.series().services.entry(status).or_default() += 1;
    }

    /// Counts a signature or an attestation pushed to the registry.
    pub fn signed(&self, kind: &'static str) {
        *self.series().signatures.entry(kind).or_default() += 1;
    }

    /// Counts a manifest retention deleted, or in a dry run would have.
    pub fn retention_deleted(&self, kind: &'static str, dry_run: bool) {
        *self
            .series()
            .retention_deleted
            .entry((kind, dry_run))
            .or_default() += 1;
    }

    pub fn pushed(&self, took: Duration, bytes: u64, blobs_pushed: u64, blobs_present: u64) {
        self.series().push_seconds.observe(took.as_secs_f64());
        self.bytes_pushed.fetch_add(bytes, Ordering::Relaxed);
        self.blobs_pushed.fetch_add(blobs_pushed, Ordering::Relaxed);
        self.blobs_present
            .fetch_add(blobs_present, Ordering::Relaxed);
    }

    /// The text exposition; `queued` is read from the store by the caller,
    /// `instance` (`--instance-id`) labels what this instance alone counts.
    pub fn render(&self, queued: u64, instance: &str) -> String {
        let series = self.series();
        let mut out = String::new();
        labelled(
            &mut out,
            "slipway_webhook_deliveries_total",
            "Webhook deliveries by outcome.",
            "outcome",
            &series.deliveries,
        );
        labelled(
            &mut out,
            "slipway_builds_total",
            "Finished builds by status.",
            "status",
            &series.builds,
        );
        labelled(
            &mut out,
            "slipway_services_total",
            "Finished services by status.",
            "status",
            &series.services,
        );
        labelled(
            &mut out,
            "slipway_signatures_total",
            "Signatures and provenance attestations pushed, by kind.",
            "kind",
            &series.signatures,
        );
        let name = "slipway_retention_deleted_total";
        let _ = writeln!(out, "# HELP {name} Manifests retention deleted (dry_run=\"true\": would have deleted), by kind.\n# TYPE {name} counter");
        for ((kind, dry_run), count) in &series.retention_deleted {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{kind}\",dry_run=\"{dry_run}\"}} {count}"
            );
        }
        series.build_seconds.render(
            &mut out,
            "slipway_build_duration_seconds",
            "Time from a build's start to its end.",
        );
        series.push_seconds.render(
            &mut out,
            "slipway_push_duration_seconds",
            "Time to export and push one image.",
        );
        single(
            &mut out,
            "slipway_queue_depth",
            "gauge",
            "Builds waiting to start.",
            queued,
        );
        let running = self.running_builds.load(Ordering::Relaxed).max(0) as u64;
        single(
            &mut out,
            "slipway_builds_running",
            "gauge",
            "Builds running now.",
            running,
        );
        let bytes = self.bytes_pushed.load(Ordering::Relaxed);
        single(
            &mut out,
            "slipway_pushed_bytes_total",
            "counter",
            "Bytes of blobs uploaded to the registry.",
            bytes,
        );
        let pushed = self.blobs_pushed.load(Ordering::Relaxed);
        single(
            &mut out,
            "slipway_blobs_pushed_total",
            "counter",
            "Blobs uploaded to the registry.",
            pushed,
        );
        let present = self.blobs_present.load(Ordering::Relaxed);
        single(
            &mut out,
            "slipway_blobs_present_total",
            "counter",
            "Blobs skipped because the registry had them.",
            present,
        );
        single(
            &mut out,
            "slipway_catch_up_builds_total",
            "counter",
            "Builds of merges found by the catch-up, whose delivery never arrived.",
            self.catch_up_builds.load(Ordering::Relaxed),
        );
        let instance = label_value(instance);
        for (name, help, counter) in [
            (
                "slipway_claims_total",
                "Builds this instance claimed from the queue.",
                &self.claims,
            ),
            (
                "slipway_takeovers_total",
                "Builds this instance took over from an instance whose lease ran out.",
                &self.takeovers,
            ),
            (
                "slipway_lease_losses_total",
                "Builds this instance stopped because another instance took them over.",
                &self.lease_losses,
            ),
        ] {
            let value = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{instance=\"{instance}\"}} {value}"
            );
        }
        out
    }
}

fn labelled(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<&'static str, u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, count) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
    }
}

/// A label value as Prometheus' text format quotes it.
fn label_value(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.delivery("accepted");
        metrics.delivery("accepted");
        metrics.build_started();
        metrics.build_finished("succeeded", Duration::from_secs(3));
        metrics.pushed(Duration::from_millis(700), 1024, 2, 1);
        metrics.signed("signature");
        metrics.retention_deleted("version", false);
        metrics.retention_deleted("signature", true);
        let text = metrics.render(4, "a\"b");
        assert!(text.contains("slipway_webhook_deliveries_total{outcome=\"accepted\"} 2"));
        assert!(text.contains("slipway_build_duration_seconds_bucket{le=\"5\"} 1"));
        assert!(text.contains("slipway_build_duration_seconds_bucket{le=\"2.5\"} 0"));
        assert!(text.contains("slipway_queue_depth 4"));
        assert!(text.contains("slipway_builds_running 0"));
        assert!(text.contains("slipway_pushed_bytes_total 1024"));
        assert!(text.contains("slipway_signatures_total{kind=\"signature\"} 1"));
        assert!(
            text.contains("slipway_retention_deleted_total{kind=\"version\",dry_run=\"false\"} 1")
        );
        assert!(
            text.contains("slipway_retention_deleted_total{kind=\"signature\",dry_run=\"true\"} 1")
        );
        assert!(text.contains("slipway_claims_total{instance=\"a\\\"b\"} 0"));
    }
}
