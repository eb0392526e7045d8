//! What every benchmark shares: the run mode, statistics, tables, targets,
//! the machine description and the slipway process's memory.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Full (`cargo bench`, release) or smoke (`cargo test --all-targets`, debug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Smoke,
}

impl Mode {
    pub fn full(self) -> bool {
        self == Mode::Full
    }

    /// Repetitions of each measurement (medians are reported).
    pub fn reps(self) -> usize {
        match self {
            Mode::Full => 3,
            Mode::Smoke => 1,
        }
    }

    /// `full` in a full run, `smoke` otherwise.
    pub fn pick<T>(self, full: T, smoke: T) -> T {
        match self {
            Mode::Full => full,
            Mode::Smoke => smoke,
        }
    }
}

// ===== statistics =====

/// The median (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=100); 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Microseconds as milliseconds, e.g. `1.23 ms`.
pub fn fmt_us(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub fn fmt_s(seconds: f64) -> String {
    fmt_ms(seconds * 1000.0)
}

pub fn fmt_rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        format!("{per_second:.0}/s")
    } else {
        format!("{per_second:.1}/s")
    }
}

/// Decimal megabytes, as the targets are written.
pub fn fmt_mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

pub fn fmt_ratio(ratio: f64) -> String {
    format!("{ratio:.2}")
}

/// Every value, for "per run" columns: `1.2 / 1.3 / 1.1`.
pub fn each(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    values
        .iter()
        .map(|v| fmt(*v))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Parses Rust's `Debug` form of a `Duration` ("1.5s", "12.3ms", "80µs", "5ns").
pub fn parse_debug_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let units: [(&str, f64); 5] = [
        ("ns", 1e-9),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
    ];
    for (suffix, scale) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            if let Ok(value) = number.parse::<f64>() {
                return Some(Duration::from_secs_f64(value * scale));
            }
        }
    }
    None
}

// ===== report =====

pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "#### {}\n", self.title);
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.header.iter().map(|_| " --- |").collect::<String>()
        );
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        out
    }

    /// Plain text with aligned columns, for the terminal.
    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths.get(i).copied().unwrap_or(0);
                    format!("{c:<pad$}")
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = format!("\n== {}\n{}\n", self.title, line(&self.header));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}

/// A target from the issue and what was measured against it.
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
    /// What the run measured that explains the result (phases, logs).
    pub evidence: Vec<String>,
    /// What would likely close the gap, from the measurements.
    pub closing: Vec<String>,
}

pub struct Section {
    pub title: String,
    pub how: String,
    pub tables: Vec<Table>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str, how: &str) -> Self {
        Self {
            title: title.to_string(),
            how: how.to_string(),
            tables: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn print(&self) {
        for table in &self.tables {
            println!("{}", table.text());
        }
        for target in &self.targets {
            println!(
                "  target {}: {} (measured {}) -> {}",
                target.name,
                target.target,
                target.measured,
                if target.met { "met" } else { "MISSED" }
            );
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
    }
}

// ===== machine =====

pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub docker: String,
    pub storage_driver: String,
    /// "Engine 26.1.5 (overlay2)", "Engine 26.1.5 (containerd image store,
    /// overlayfs snapshotter)": the engine DOCKER_HOST names, for titles.
    pub engine: String,
    pub date: String,
    pub load: String,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            docker: command_text("docker", &["version", "--format", "{{.Server.Version}}"]),
            storage_driver: command_text("docker", &["info", "--format", "{{.Driver}}"]),
            engine: engine_label(),
            date,
            load: loadavg(),
        }
    }
}

/// The engine DOCKER_HOST names (the machine's own without it), from
/// `docker info`: its version and its storage, "containerd image store" when
/// it keeps images in containerd (then `Driver` names the snapshotter).
pub fn engine_label() -> String {
    let info = command_text(
        "docker",
        &[
            "info",
            "--format",
            "{{.ServerVersion}}|{{.Driver}}|{{range .DriverStatus}}{{index . 0}}={{index . 1}};{{end}}",
        ],
    );
    let mut parts = info.splitn(3, '|');
    let (version, driver, status) = (
        parts.next().unwrap_or("unknown"),
        parts.next().unwrap_or("unknown"),
        parts.next().unwrap_or(""),
    );
    // Debian's "26.1.5+dfsg1": the upstream version is what readers compare.
    let version = version.split('+').next().unwrap_or(version);
    if status.contains("io.containerd.snapshotter") {
        format!("Engine {version} (containerd image store, {driver} snapshotter)")
    } else {
        format!("Engine {version} ({driver})")
    }
}

/// Whether the bench runs quick (`--quick` among its arguments): the merge
/// benchmark then runs only workloads (a) and (d) on the 200 MB bases, with
/// the BuildKit builder.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

pub fn loadavg() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn command_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

// ===== the slipway process =====

/// The pid of a running `slipway serve`: from the harness, else found by the
/// SLIPWAY_DATA_DIR in its environment (for a harness without `pid()`).
pub fn slipway_pid(slipway: &crate::support::Slipway) -> Option<u32> {
    slipway.pid().or_else(|| pid_by_data_dir(&slipway.data_dir))
}

fn pid_by_data_dir(data_dir: &Path) -> Option<u32> {
    let needle = format!("SLIPWAY_DATA_DIR={}", data_dir.display());
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "slipway" {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size (VmRSS) in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`), so a
/// later `peak_rss` covers only what happened since. False if refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Watches a process's memory from now on: the peak over a phase.
pub struct MemoryWatch {
    pid: Option<u32>,
    /// RSS when the watch started, in bytes.
    pub start_rss: Option<u64>,
    reset: bool,
    sampled: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl MemoryWatch {
    pub fn start(pid: Option<u32>) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let start_rss = pid.and_then(rss);
        let reset = pid.is_some_and(reset_peak_rss);
        let sampled = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = pid.map(|pid| {
            let (sampled, stop) = (sampled.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(now) = rss(pid) {
                        sampled.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        Self {
            pid,
            start_rss,
            reset,
            sampled,
            stop,
            sampler,
        }
    }

    /// The peak in bytes since `start`: VmHWM if it could be reset, else
    /// the highest VmRSS sampled every 50 ms; and the RSS when it started.
    pub fn finish_with_start(mut self) -> (Option<u64>, Option<u64>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let sampled = self.sampled.load(Ordering::Relaxed);
        let hwm = self.pid.and_then(peak_rss);
        let peak = match (self.reset, hwm) {
            (true, Some(hwm)) => Some(hwm.max(sampled)),
            _ => (sampled > 0).then_some(sampled),
        };
        (peak, self.start_rss)
    }
}

/// With SLIPWAY_BENCH_KEEP_LOGS=<dir>, copies the service log of `slipway`
/// (tracing output, RUST_LOG=info,slipway=debug) to `<dir>/<name>.log`
/// before the harness deletes it with its temp dir.
pub fn keep_log(slipway: &crate::support::Slipway, name: &str) {
    let Some(dir) = std::env::var_os("SLIPWAY_BENCH_KEEP_LOGS").filter(|d| !d.is_empty()) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let copied = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::copy(&slipway.log_path, dir.join(format!("{name}.log"))));
    match copied {
        Ok(_) => println!(
            "  kept the slipway log as {}",
            dir.join(format!("{name}.log")).display()
        ),
        Err(err) => println!("  could not keep the slipway log: {err}"),
    }
}

/// A unique lowercase nonce (12 hex digits).
pub fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Runs `docker` with the classic builder; returns (success, stdout+stderr).
pub fn docker_cli(args: &[&str]) -> (bool, String) {
    docker_cli_with(args, false)
}

/// Runs `docker` with BuildKit (`DOCKER_BUILDKIT=1`) or the classic builder.
pub fn docker_cli_with(args: &[&str], buildkit: bool) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })
        .output()
        .expect("run the docker CLI");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Like `docker_cli` but panics with the output on failure.
pub fn docker_ok(args: &[&str]) -> String {
    docker_ok_with(args, false)
}

/// Like `docker_cli_with` but panics with the output on failure.
pub fn docker_ok_with(args: &[&str], buildkit: bool) -> String {
    let (ok, text) = docker_cli_with(args, buildkit);
    assert!(ok, "docker {args:?} failed:\n{text}");
    text
}

/// Removes images, ignoring ones already gone.
pub fn docker_rmi(images: &[String]) {
    if images.is_empty() {
        return;
    }
    let mut args = vec!["rmi", "-f"];
    args.extend(images.iter().map(String::as_str));
    let _ = docker_cli(&args);
}
