//! Benchmark 5: turning a commit's tarball into build contexts, with the
//! library directly (`slipway::context::unpack` + `prepare`), against
//! `tar -xzf` of the same tarball.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use slipway::context::{self, ContextPolicy, Limits};
use slipway::manifest;
use slipway::types::CommitSha;

use super::common::*;
use crate::support::{self, FakeEntry};

const SERVICES: usize = 10;
const REPO: &str = "bench/context";

/// splitmix64: fast, incompressible filler.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn source_text(seed: usize, bytes: usize) -> Vec<u8> {
    let mut out = String::with_capacity(bytes + 80);
    let mut i = 0usize;
    while out.len() < bytes {
        out.push_str(&format!(
            "pub fn handler_{seed}_{i}(input: &str) -> usize {{ input.len() * {} + {i} }}\n",
            (seed * 31 + i * 7) % 1000
        ));
        i += 1;
    }
    out.truncate(bytes);
    out.into_bytes()
}

struct Sizes {
    text_files: usize,
    text_bytes: usize,
    binary_files: usize,
    binary_bytes: usize,
}

/// A repository of `SERVICES` services: source text, binary assets, and
/// files their `.dockerignore` leaves out.
fn repository(sizes: &Sizes) -> (Vec<(String, FakeEntry)>, Vec<u8>) {
    let file = |contents: Vec<u8>| FakeEntry::File {
        contents,
        executable: false,
    };
    let mut noise = Noise(0x5eed);
    let mut files = Vec::new();
    let mut manifest = Vec::new();
    for s in 0..SERVICES {
        let dir = format!("services/s{s}");
        manifest
            .push(serde_json::json!({"name": format!("ctx-s{s}"), "version": "1", "context": dir}));
        files.push((
            format!("{dir}/Dockerfile"),
            file(format!("FROM {}\nCOPY . /app/\n", support::BASE_IMAGE).into_bytes()),
        ));
        files.push((
            format!("{dir}/.dockerignore"),
            file(b"*.log\ntmp\n**/*.tmp\n".to_vec()),
        ));
        for t in 0..sizes.text_files {
            files.push((
                format!("{dir}/src/m{}/f{t}.rs", t % 20),
                file(source_text(s * 100_000 + t, sizes.text_bytes)),
            ));
        }
        for b in 0..sizes.binary_files {
            let mut blob = vec![0u8; sizes.binary_bytes];
            noise.fill(&mut blob);
            files.push((format!("{dir}/assets/blob{b}.bin"), file(blob)));
        }
        for l in 0..5 {
            files.push((format!("{dir}/logs/run{l}.log"), file(source_text(l, 4096))));
            files.push((
                format!("{dir}/tmp/scratch{l}.tmp"),
                file(source_text(l, 4096)),
            ));
        }
    }
    files.push((
        "README.md".to_string(),
        file(b"# a monorepo for benchmarks\n".to_vec()),
    ));
    let manifest = serde_json::json!({ "services": manifest }).to_string();
    files.push((
        "dockerInfo.json".to_string(),
        file(manifest.clone().into_bytes()),
    ));
    (files, manifest.into_bytes())
}

/// Flushes dirty pages (untimed), so one step's writeback does not land
/// in the next one's time.
fn settle() {
    let _ = Command::new("sync").status();
}

fn tar_extract(tarball: &Path, scratch: &Path) -> Duration {
    settle();
    let dest = tempfile::Builder::new()
        .prefix("tar-")
        .tempdir_in(scratch)
        .expect("tempdir");
    let started = Instant::now();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(dest.path())
        .status()
        .expect("run tar");
    let elapsed = started.elapsed();
    assert!(status.success(), "tar -xzf failed");
    elapsed
}

struct SlipwaySide {
    unpack: Duration,
    prepare: Duration,
    files: usize,
    context_bytes: u64,
}

fn slipway_prepare(
    tarball: &Path,
    commit: &CommitSha,
    specs: &[manifest::ServiceSpec],
    scratch: &Path,
) -> SlipwaySide {
    let limits = Limits {
        max_bytes: 2 << 30,
        max_entries: 200_000,
    };
    let out = tempfile::Builder::new()
        .prefix("contexts-")
        .tempdir_in(scratch)
        .expect("tempdir");
    settle();
    let started = Instant::now();
    let file = std::fs::File::open(tarball).expect("tarball");
    let tree = context::unpack(file, commit, limits, scratch).expect("unpack");
    let unpack = started.elapsed();
    let started = Instant::now();
    // One thread per service, as the pipeline prepares them (spawn_blocking).
    let prepared: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let dir = out.path().join(format!("s{i}"));
                let tree = &tree;
                scope.spawn(move || {
                    std::fs::create_dir_all(&dir).expect("mkdir");
                    context::prepare(
                        tree,
                        spec,
                        ContextPolicy {
                            allow_syntax_directive: false,
                        },
                    )
                    .expect("prepare")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("prepare thread"))
            .collect()
    });
    let prepare = started.elapsed();
    let files = prepared.iter().map(|p| p.files).sum();
    let context_bytes = prepared.iter().map(|p| p.bytes).sum();
    drop(tree);
    SlipwaySide {
        unpack,
        prepare,
        files,
        context_bytes,
    }
}

pub fn run(mode: Mode) -> Section {
    let sizes = Sizes {
        text_files: mode.pick(2000, 40),
        text_bytes: 5000,
        binary_files: mode.pick(45, 1),
        binary_bytes: mode.pick(1 << 20, 400_000),
    };
    let mut section = Section::new(
        "5. Context preparation",
        "A GitHub-style tarball (`support::github::github_tarball`: pax header, one top folder, \
         gzip) of a monorepo with 10 services, each with source text, 1 MiB binary assets of \
         random data, and files its `.dockerignore` leaves out. Slipway: \
         `slipway::context::unpack` of the tarball file, then `slipway::context::prepare` of the \
         10 services, one thread each as the pipeline does. Baseline: `tar -xzf` of the same \
         file. Both write to the same file system; the tarball is read once before, so it is in \
         the page cache for both, and `sync` runs (untimed) before each step. MB/s is tarball megabytes per second.",
    );
    let scratch = tempfile::Builder::new()
        .prefix("slipway-bench-context-")
        .tempdir()
        .expect("tempdir");
    let started = Instant::now();
    let (files, manifest_bytes) = repository(&sizes);
    let unpacked_bytes: u64 = files
        .iter()
        .map(|(_, e)| match e {
            FakeEntry::File { contents, .. } => contents.len() as u64,
            FakeEntry::Symlink { .. } => 0,
        })
        .sum();
    let entries = files.len();
    let sha = support::sha();
    let tarball_bytes = support::github::github_tarball(REPO, &sha, &files);
    drop(files);
    let tarball = scratch.path().join("source.tar.gz");
    std::fs::write(&tarball, &tarball_bytes).expect("write tarball");
    let tarball_size = tarball_bytes.len() as f64;
    drop(tarball_bytes);
    println!(
        "  context: made a {} tarball ({} unpacked, {entries} files) in {:.1} s",
        fmt_mb(tarball_size),
        fmt_mb(unpacked_bytes as f64),
        secs(started.elapsed())
    );
    let _ = std::fs::read(&tarball); // into the page cache
    let commit = CommitSha::parse(&sha).expect("sha");
    let specs: Vec<_> = manifest::parse(&manifest_bytes)
        .expect("manifest")
        .into_iter()
        .map(|e| e.spec.expect("valid service"))
        .collect();

    let mut tar_times = Vec::new();
    let mut unpack_times = Vec::new();
    let mut prepare_times = Vec::new();
    let mut totals = Vec::new();
    let mut ratios = Vec::new();
    let mut context_files = 0;
    let mut context_bytes = 0;
    for rep in 0..mode.reps() {
        let (tar, side) = if rep % 2 == 0 {
            let tar = tar_extract(&tarball, scratch.path());
            (
                tar,
                slipway_prepare(&tarball, &commit, &specs, scratch.path()),
            )
        } else {
            let side = slipway_prepare(&tarball, &commit, &specs, scratch.path());
            (tar_extract(&tarball, scratch.path()), side)
        };
        let total = side.unpack + side.prepare;
        println!(
            "  context run {}: tar -xzf {:.2} s, slipway unpack {:.2} s + prepare {:.2} s",
            rep + 1,
            secs(tar),
            secs(side.unpack),
            secs(side.prepare)
        );
        assert!(side.files > 0, "contexts hold files");
        context_files = side.files;
        context_bytes = side.context_bytes;
        tar_times.push(secs(tar));
        unpack_times.push(secs(side.unpack));
        prepare_times.push(secs(side.prepare));
        totals.push(secs(total));
        ratios.push(secs(total) / secs(tar));
    }
    let mbps = |seconds: f64| format!("{:.0} MB/s", tarball_size / 1e6 / seconds);
    let mut table = Table::new(
        &format!(
            "Tarball of {} ({} unpacked, {entries} files) → {SERVICES} build contexts (medians of runs)",
            fmt_mb(tarball_size),
            fmt_mb(unpacked_bytes as f64)
        ),
        &["step", "time", "tarball MB/s", "vs tar -xzf", "per run"],
    );
    let tar = median(&tar_times);
    let rows = [
        ("tar -xzf (baseline)", &tar_times),
        ("slipway unpack", &unpack_times),
        ("slipway prepare (10 services)", &prepare_times),
        ("slipway unpack + prepare", &totals),
    ];
    for (step, values) in rows {
        let m = median(values);
        table.row(vec![
            step.to_string(),
            fmt_s(m),
            mbps(m),
            fmt_ratio(m / tar),
            each(values, |v| format!("{v:.2} s")),
        ]);
    }
    table.note(format!(
        "The 10 contexts hold {context_files} files, {} of context tars in all; the issue sets \
         no target here, the ratio to `tar -xzf` is the figure to watch.",
        fmt_mb(context_bytes as f64)
    ));
    section.tables.push(table);
    section.notes.push(format!(
        "unpack + prepare / tar -xzf: {} (per run {})",
        fmt_ratio(median(&ratios)),
        each(&ratios, fmt_ratio)
    ));
    section
}
