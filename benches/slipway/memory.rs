//! Benchmark 4: the slipway process's peak memory, gathered while the other
//! benchmarks run.

use super::common::*;

const TARGET_BYTES: f64 = 150e6;

#[derive(Default)]
pub struct MemoryReport {
    /// (phase, peak, RSS when it began)
    rows: Vec<(String, Option<u64>, Option<u64>)>,
}

impl MemoryReport {
    pub fn add(&mut self, phase: &str, peak: Option<u64>, before: Option<u64>) {
        self.rows.push((phase.to_string(), peak, before));
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn section(&self) -> Section {
        let mut section = Section::new(
            "4. Memory",
            "Peak resident set size of the `slipway serve` process (VmHWM from \
             /proc/PID/status, reset with `echo 5 > /proc/PID/clear_refs` when the phase \
             starts; VmRSS is also sampled every 50 ms as a fallback), with the pid from \
             `support::Slipway::pid()`.",
        );
        let mut table = Table::new(
            "Peak RSS of slipway",
            &["while", "peak RSS", "RSS when it began", "target"],
        );
        for (phase, peak, before) in &self.rows {
            table.row(vec![
                phase.clone(),
                peak.map_or("not measured".into(), |b| fmt_mb(b as f64)),
                before.map_or("-".into(), |b| fmt_mb(b as f64)),
                "< 150 MB".into(),
            ]);
            if let Some(peak) = peak {
                section.targets.push(Target {
                    name: format!("peak RSS {phase}"),
                    target: "< 150 MB".into(),
                    measured: fmt_mb(*peak as f64),
                    met: (*peak as f64) < TARGET_BYTES,
                    evidence: vec![],
                    closing: vec![],
                });
            }
        }
        section.tables.push(table);
        section
    }
}
