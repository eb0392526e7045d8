//! The merge-to-image workloads (a) to (d), the builders they run with and
//! the large bases of (d).

use serde_json::{json, Value};

use super::common::*;
use crate::support::{self, FakeEntry};

/// Which builder both sides use: Slipway's `--builder`, the CLI's
/// `DOCKER_BUILDKIT`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    BuildKit,
    Classic,
}

impl Builder {
    pub const ALL: [Builder; 2] = [Builder::BuildKit, Builder::Classic];

    /// The value of Slipway's `--builder` / SLIPWAY_BUILDER.
    pub fn flag(self) -> &'static str {
        match self {
            Builder::BuildKit => "buildkit",
            Builder::Classic => "classic",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Builder::BuildKit => "BuildKit",
            Builder::Classic => "classic",
        }
    }

    /// Short, for repository names: each builder publishes into its own.
    fn key(self) -> &'static str {
        match self {
            Builder::BuildKit => "bk",
            Builder::Classic => "cl",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Small,
    Big {
        bytes: u64,
    },
    Mono {
        services: usize,
    },
    /// Like `Small`, on a base image with a large layer of its own.
    OnBigBase {
        base_bytes: u64,
        pushed_by: BasePusher,
    },
}

/// Who put the large base of (d) into the registry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BasePusher {
    /// Slipway, publishing a service `FROM` the base; the CLI side pushed
    /// the base into its own repositories with `docker push`.
    Slipway,
    /// `docker push` of the base into a repository of its own (a mirrored
    /// base); both sides build `FROM` that registry reference.
    DockerCli,
}

pub struct Workload {
    /// Short name for the tables: "a", "d 1 GB, mirrored".
    pub key: String,
    pub label: String,
    pub kind: Kind,
    /// The image its services start `FROM`.
    pub base: String,
    /// Slipway / CLI the issue asks for; None: informational.
    pub target: Option<f64>,
    pub reps: usize,
    pub builder: Builder,
    /// Whether the CLI side builds with BuildKit (false when the CLI here cannot).
    pub cli_buildkit: bool,
}

/// One service of a workload, as both sides build it.
pub struct ServiceFiles {
    /// Folder in the repository (the context).
    pub dir: String,
    pub slipway_name: String,
    pub cli_name: String,
    /// The repository `docker buildx build --push` publishes to.
    pub buildx_name: String,
    /// Paths relative to the context.
    pub files: Vec<(String, Vec<u8>)>,
}

fn text_file(seed: usize, bytes: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&format!(
            "line {i} of file {seed}: lorem ipsum dolor sit amet\n"
        ));
        i += 1;
    }
    out.truncate(bytes);
    out.into_bytes()
}

impl Workload {
    /// (d): who pushed its base; None for (a) to (c).
    pub fn base_pusher(&self) -> Option<BasePusher> {
        match self.kind {
            Kind::OnBigBase { pushed_by, .. } => Some(pushed_by),
            _ => None,
        }
    }

    /// (d) reports its first publish apart from the later ones.
    pub fn first_apart(&self) -> bool {
        self.base_pusher().is_some()
    }

    /// Whether each side primes its repositories with the base before the
    /// runs; a mirrored base is in the registry already.
    pub fn primed(&self) -> bool {
        self.base_pusher() != Some(BasePusher::DockerCli)
    }

    /// Repository-name stem of the workload's services.
    fn stem(&self) -> String {
        match self.kind {
            Kind::Small => "small".into(),
            Kind::Big { .. } => "big".into(),
            Kind::Mono { .. } => "mono".into(),
            Kind::OnBigBase {
                base_bytes,
                pushed_by,
            } => format!(
                "onbase-{}mb-{}",
                base_bytes / 1_000_000,
                match pushed_by {
                    BasePusher::Slipway => "sw",
                    BasePusher::DockerCli => "mirror",
                }
            ),
        }
    }

    fn service(&self, dir: &str, suffix: &str, files: Vec<(String, Vec<u8>)>) -> ServiceFiles {
        let (stem, builder) = (self.stem(), self.builder.key());
        ServiceFiles {
            dir: dir.to_string(),
            slipway_name: format!("bench-{stem}{suffix}-{builder}"),
            cli_name: format!("bench-{stem}{suffix}-cli-{builder}"),
            buildx_name: format!("bench-{stem}{suffix}-bx-{builder}"),
            files,
        }
    }

    pub fn services(&self, nonce: &str) -> Vec<ServiceFiles> {
        let base = &self.base;
        let dockerfile = |body: String| ("Dockerfile".to_string(), body.into_bytes());
        match self.kind {
            Kind::Small => vec![self.service(
                "small",
                "",
                vec![
                    dockerfile(format!(
                        "FROM {base}\nRUN echo {nonce} > /nonce\nCOPY . /app/\n\
                         CMD [\"cat\", \"/app/hello.txt\"]\n"
                    )),
                    ("hello.txt".into(), b"hello from the small image\n".to_vec()),
                ],
            )],
            Kind::OnBigBase { .. } => vec![self.service(
                "onbase",
                "",
                vec![
                    dockerfile(format!(
                        "FROM {base}\nRUN echo {nonce} > /nonce\nCOPY . /app/\n"
                    )),
                    (
                        "hello.txt".into(),
                        b"hello from above a big base\n".to_vec(),
                    ),
                ],
            )],
            Kind::Big { bytes } => vec![self.service(
                "big",
                "",
                vec![dockerfile(format!(
                    "FROM {base}\nRUN echo {nonce} > /nonce\n\
                     RUN head -c {bytes} /dev/urandom > /blob\n"
                ))],
            )],
            Kind::Mono { services } => (0..services)
                .map(|i| {
                    let mut files = vec![dockerfile(format!(
                        "FROM {base}\nRUN echo {nonce} > /nonce\nRUN echo s{i} > /name\n\
                         COPY . /app/\n"
                    ))];
                    for j in 0..20 {
                        files.push((format!("src/f{j}.txt"), text_file(i * 100 + j, 4096)));
                    }
                    self.service(&format!("services/s{i}"), &format!("-s{i}"), files)
                })
                .collect(),
        }
    }
}

/// A commit holding `services` at `version`, with its manifest.
pub fn commit_files(services: &[ServiceFiles], version: &str) -> Vec<(String, FakeEntry)> {
    let manifest: Vec<Value> = services
        .iter()
        .map(|s| json!({"name": s.slipway_name, "version": version, "context": s.dir}))
        .collect();
    let mut files = vec![(
        "dockerInfo.json".to_string(),
        file(json!({ "services": manifest }).to_string().into_bytes()),
    )];
    for service in services {
        for (path, contents) in &service.files {
            files.push((format!("{}/{path}", service.dir), file(contents.clone())));
        }
    }
    files
}

pub fn file(contents: Vec<u8>) -> FakeEntry {
    FakeEntry::File {
        contents,
        executable: false,
    }
}

/// Decimal size for labels: "200 MB", "1 GB".
pub fn size_label(bytes: u64) -> String {
    if bytes >= 1_000_000_000 && bytes.is_multiple_of(1_000_000_000) {
        format!("{} GB", bytes / 1_000_000_000)
    } else {
        format!("{} MB", bytes as f64 / 1e6)
    }
}

/// The large bases of (d): for each size, one that Slipway pushes and one
/// mirrored into the registry by `docker push`, each with its own random
/// layer so that neither side has seen the other's.
pub struct Bases {
    /// (layer bytes, who pushed it, the image to build `FROM`)
    pub images: Vec<(u64, BasePusher, String)>,
    /// Local tags to remove at the end.
    pub tags: Vec<String>,
    /// What building and mirroring them took.
    pub note: String,
}

impl Bases {
    pub fn make(sizes: &[u64], registry_host: &str) -> Self {
        let (mut images, mut tags, mut parts) = (Vec::new(), Vec::new(), Vec::new());
        for &bytes in sizes {
            let started = std::time::Instant::now();
            let own = make_big_base(bytes);
            let mirror = make_big_base(bytes);
            let built = started.elapsed();
            let remote = format!(
                "{registry_host}/bench/mirror-base-{}mb:1",
                bytes / 1_000_000
            );
            docker_ok(&["tag", &mirror, &remote]);
            let started = std::time::Instant::now();
            docker_ok(&["push", &remote]);
            parts.push(format!(
                "{}: two bases built in {}, one mirrored with `docker push` in {}",
                size_label(bytes),
                fmt_s(secs(built)),
                fmt_s(secs(started.elapsed()))
            ));
            images.push((bytes, BasePusher::Slipway, own.clone()));
            images.push((bytes, BasePusher::DockerCli, remote.clone()));
            tags.extend([own, mirror, remote]);
        }
        Self {
            images,
            tags,
            note: format!("Bases of (d): {}.", parts.join("; ")),
        }
    }
}

/// Builds a base image with a layer of `bytes` random bytes on top of the
/// test base; returns its tag.
fn make_big_base(bytes: u64) -> String {
    let tag = format!("slipway-bench-bigbase:{}", nonce());
    let dir = dockerfile_only(&format!(
        // The nonce keeps the builder's cache from handing back an earlier base.
        "FROM {}\nRUN head -c {bytes} /dev/urandom > /base-blob && echo {} > /base-nonce\n",
        support::BASE_IMAGE,
        nonce()
    ));
    let context = dir.path().display().to_string();
    docker_ok(&["build", "--network", "none", "-t", &tag, &context]);
    tag
}

/// The number of layers of a local image.
pub fn layer_count(image: &str) -> usize {
    docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        image,
    ])
    .trim()
    .parse()
    .unwrap_or_else(|_| panic!("layer count of {image}"))
}

/// Whether `DOCKER_BUILDKIT=1 docker build` works here; Err with what the
/// CLI said when it does not.
pub fn cli_buildkit() -> Result<(), String> {
    let dir = dockerfile_only(&format!("FROM {}\n", support::BASE_IMAGE));
    let tag = format!("slipway-bench-probe:{}", nonce());
    let context = dir.path().display().to_string();
    let (ok, text) = docker_cli_with(&["build", "-t", &tag, &context], true);
    docker_rmi(&[tag]);
    if ok {
        Ok(())
    } else {
        Err(text
            .lines()
            .next()
            .unwrap_or("no output")
            .trim()
            .to_string())
    }
}

/// A temporary build context holding only a Dockerfile.
fn dockerfile_only(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("slipway-bench-context-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    dir
}
