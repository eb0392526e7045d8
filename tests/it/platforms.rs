//! Multi-platform images, for real: a service built for linux/amd64 and
//! linux/arm64 (arm64 under QEMU's binfmt handler, which scripts/test-env.sh
//! sets up) is published as an OCI image index, signed, and verified as
//! users do: `skopeo inspect --raw`, `docker pull --platform`, `docker run`,
//! and cosign's verification (sigstore-rs) of the tags.
//!
//! The Dockerfiles' base is a two-platform index in a plain (HTTP, no
//! auth) registry of each test's own, made from the engine's
//! slipway-test-base-amd64:1 and slipway-test-base-arm64:1 (images of their
//! own, so pushing them leaves slipway-test-base:1 as other tests know it). Engine 20.10's
//! image store holds one platform per name and its Dockerfile frontend has no
//! `TARGETARCH` for `FROM` lines, so one name for both platforms can only be
//! in a registry: BuildKit picks each platform's manifest from the index.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::signing::{keygen, sigstore_verify};
use crate::support::*;
use serde_json::{json, Value};

const REPO: &str = "acme/shop";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A throwaway registry on loopback, plain HTTP and no auth: the engine
/// treats 127.0.0.0/8 as an insecure registry and pulls its bases anonymously.
struct PlainRegistry {
    host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PlainRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (scripts/test-env.sh installs it)");
        let registry = Self {
            host,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while registry.curl(&["/v2/"]).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "{} never answered",
                registry.host
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn curl(&self, args: &[&str]) -> (u16, String) {
        let (path, rest) = args.split_first().expect("a path");
        let out = Command::new("curl")
            .args([
                "--silent",
                "--max-time",
                "10",
                "--write-out",
                "\n%{http_code}",
            ])
            .args(rest)
            .arg(format!("http://{}{path}", self.host))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Pushes the engine's local `image` as `base:TAG`; answers the
    /// manifest's digest and size.
    fn push(&self, image: &str, tag: &str) -> (String, usize) {
        let name = format!("{}/base:{tag}", self.host);
        docker(&["tag", image, &name]);
        docker(&["push", "--quiet", &name]);
        // The engine keeps no name of this registry's, which ends with the test.
        docker(&["rmi", &name]);
        let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
        let (status, body) = self.curl(&[&format!("/v2/base/manifests/{tag}"), "-H", accept]);
        assert_eq!(status, 200, "{name}: {body}");
        let digest = {
            use sha2::Digest;
            format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(body.as_bytes()))
            )
        };
        (digest, body.len())
    }

    /// An index `base:TAG` of `entries` (platform, digest, size); answers
    /// its reference.
    fn put_index(&self, tag: &str, entries: &[(&str, &(String, usize))]) -> String {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(arch, (digest, size))| {
                json!({
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": digest,
                    "size": size,
                    "platform": {"os": "linux", "architecture": arch},
                })
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
        let (status, body) = self.curl(&[
            &format!("/v2/base/manifests/{tag}"),
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {INDEX}"),
            "--data-binary",
            &index.to_string(),
        ]);
        assert_eq!(status, 201, "index {tag}: {body}");
        format!("{}/base:{tag}", self.host)
    }

    /// `base:1`, both platforms; and `base:amd64-only`, an index without arm64.
    fn bases(&self) -> (String, String) {
        let amd64 = self.push("slipway-test-base-amd64:1", "amd64");
        let arm64 = self.push("slipway-test-base-arm64:1", "arm64");
        let both = self.put_index("1", &[("amd64", &amd64), ("arm64", &arm64)]);
        let amd64_only = self.put_index("amd64-only", &[("amd64", &amd64)]);
        (both, amd64_only)
    }
}

impl Drop for PlainRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One commit of service `multi` built for amd64 and arm64 from `dockerfile`.
fn multi_commit(github: &FakeGitHub, dockerfile: &str, content: &str) -> String {
    commit_for(github, &["linux/amd64", "linux/arm64"], dockerfile, content)
}

fn commit_for(github: &FakeGitHub, platforms: &[&str], dockerfile: &str, content: &str) -> String {
    let commit = sha();
    let manifest = json!({"services": [{
        "name": "multi", "version": "1.0.0", "context": "multi",
        "tags": ["latest"], "platforms": platforms,
    }]});
    github.add_commit_files(
        REPO,
        &commit,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            ("multi/Dockerfile", dockerfile),
            ("multi/app.txt", content),
        ],
    );
    commit
}

/// `skopeo inspect --raw` of `image`, as a user checks what a tag names.
fn skopeo_raw(registry: &TestRegistry, image: &str) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--creds"])
        .arg(format!("{}:{}", registry.user, registry.password))
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo runs (scripts/test-env.sh installs it)");
    assert!(out.status.success(), "skopeo inspect {image}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("a manifest")
}

/// The digest `repository:reference` names in the registry, or `None`.
fn head_digest(registry: &TestRegistry, repository: &str, reference: &str) -> Option<String> {
    let url = format!(
        "https://{}/v2/{repository}/manifests/{reference}",
        registry.host
    );
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "10", "--head", "--cacert"])
        .arg(&registry.ca_pem)
        .arg("--user")
        .arg(format!("{}:{}", registry.user, registry.password))
        .args(["-H", &format!("Accept: {INDEX}, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")])
        .arg(&url)
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_string();
    if !head.contains(" 200") {
        return None;
    }
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("docker-content-digest")
            .then(|| value.trim().to_string())
    })
}

fn platforms_of(service: &Value) -> Vec<(String, String)> {
    service["platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("no platforms in {service}"))
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap_or_default().to_string(),
                p["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_two_platforms_is_published_signed_and_runs_under_emulation() {
    two_platforms_published("relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_two_platforms_is_published_when_exported() {
    two_platforms_published("export").await;
}

async fn two_platforms_published(push_path: &str) {
    let mirror = PlainRegistry::start();
    let (base, _) = mirror.bases();
    let keys = tempfile::tempdir().expect("tempdir");
    let made = keygen(keys.path(), false);
    assert!(made.status.success(), "{made:?}");
    let key = keys.path().join("cosign.key").display().to_string();
    let (github, registry, slipway) = start_stack(&[
        ("SLIPWAY_SIGNING_KEY", &key),
        ("SLIPWAY_PUSH_PATH", push_path),
    ])
    .await;
    let dockerfile = format!("FROM {base}\nRUN uname -m > /built-on\nCOPY app.txt /app.txt\n");
    let commit = multi_commit(&github, &dockerfile, "two platforms");
    let started = Instant::now();
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    println!(
        "two-platform publish ({push_path}) in {:?}\n{log}",
        started.elapsed()
    );
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    let path_line = match push_path {
        "export" => "exported ",
        _ => "pushed by the engine through the loopback relay",
    };
    assert_eq!(
        log.matches(path_line).count(),
        2,
        "each platform by {push_path}:\n{log}"
    );
    let multi = service(&record, "multi");
    let index_digest = multi["digest"].as_str().expect("digest").to_string();
    let platforms = platforms_of(multi);
    let names: Vec<&str> = platforms.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["linux/amd64", "linux/arm64"], "{multi}");

    // What the tag names, as skopeo shows it: the index, each platform's
    // manifest with its platform.
    let image = format!("{}/multi:1.0.0", registry.host);
    let raw = skopeo_raw(&registry, &image);
    assert_eq!(raw["mediaType"], INDEX, "{raw}");
    let listed: Vec<(String, String)> = raw["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap_or_default(),
                    m["platform"]["architecture"].as_str().unwrap_or_default()
                ),
                m["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, platforms, "{raw}");
    assert_eq!(
        head_digest(&registry, "multi", "1.0.0").as_deref(),
        Some(index_digest.as_str())
    );
    assert_eq!(
        head_digest(&registry, "multi", "latest").as_deref(),
        Some(index_digest.as_str()),
        "`latest` names the index"
    );

    // Signed: cosign's verification accepts the version and the tag, both
    // naming the index; each platform's manifest has its provenance.
    let public = keys.path().join("cosign.pub");
    let latest = format!("{}/multi:latest", registry.host);
    for reference in [&image, &latest] {
        let verified = sigstore_verify(&registry, reference, &public)
            .unwrap_or_else(|e| panic!("{reference} verifies: {e}"));
        assert!(verified.contains(reference), "{reference}: {verified:?}");
    }
    for entry in multi["platforms"].as_array().expect("platforms") {
        let digest = entry["digest"].as_str().expect("digest");
        let att = head_digest(
            &registry,
            "multi",
            &format!("{}.att", digest.replace(':', "-")),
        );
        assert!(att.is_some(), "provenance of {entry}");
        assert_eq!(entry["attestation"].as_str(), att.as_deref(), "{entry}");
    }

    // Pulled and run as users do, arm64 under emulation.
    for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
        docker(&["pull", "--quiet", "--platform", platform, &image]);
        let run = |command: &[&str]| {
            let mut args = vec![
                "run",
                "--rm",
                "--network",
                "none",
                "--platform",
                platform,
                &image,
            ];
            args.extend_from_slice(command);
            docker(&args).trim().to_string()
        };
        assert_eq!(run(&["uname", "-m"]), machine, "{platform}");
        assert_eq!(
            run(&["cat", "/built-on"]),
            machine,
            "{platform} was built as itself"
        );
        assert_eq!(run(&["cat", "/app.txt"]), "two platforms");
    }
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();

    let page = slipway.get_text(&format!("/builds/{id}")).await;
    assert!(page.contains("linux/arm64"), "the page shows the platforms");

    // The same inputs merged again: skipped, the index as it was.
    let again = multi_commit(&github, &dockerfile, "two platforms");
    let id = slipway.merge(REPO, &again).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    let multi = service(&record, "multi");
    assert_eq!(multi["status"], "skipped", "{multi}\n{log}");
    assert_eq!(multi["digest"], index_digest.as_str());
    assert_eq!(platforms_of(multi), platforms);
    assert!(!log.contains("built sha256"), "nothing was built:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_platform_fails_the_service_and_tags_nothing() {
    let mirror = PlainRegistry::start();
    let (base, _) = mirror.bases();
    let (github, registry, slipway) = start_stack(&[]).await;
    // Fails on arm64 only.
    let dockerfile =
        format!("FROM {base}\nRUN test \"$(uname -m)\" = x86_64\nCOPY app.txt /app.txt\n");
    let commit = multi_commit(&github, &dockerfile, "amd64 only");
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "failed", "{record}\n{log}");
    let multi = service(&record, "multi");
    assert_eq!(multi["status"], "failed", "{multi}");
    let error = multi["error"].as_str().expect("error");
    assert!(
        error.starts_with("linux/arm64: "),
        "names the platform: {error}"
    );
    assert_eq!(
        head_digest(&registry, "multi", "1.0.0"),
        None,
        "no index tagged"
    );
    assert_eq!(
        head_digest(&registry, "multi", "latest"),
        None,
        "no tag at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_arm64_base_names_the_platform() {
    let mirror = PlainRegistry::start();
    let (_, amd64_only) = mirror.bases();
    let (github, registry, slipway) = start_stack(&[]).await;
    let dockerfile = format!("FROM {amd64_only}\nCOPY app.txt /app.txt\n");
    let commit = multi_commit(&github, &dockerfile, "no arm64 base");
    let started = Instant::now();
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    let multi = service(&record, "multi");
    assert_eq!(multi["status"], "failed", "{multi}\n{log}");
    let error = multi["error"].as_str().expect("error");
    assert!(
        error.contains("the base image (FROM) is missing for linux/arm64"),
        "{error}"
    );
    assert_eq!(head_digest(&registry, "multi", "1.0.0"), None);
    println!("failed in {:?}: {error}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_the_machine_cannot_run_fails_at_once_naming_it() {
    let (github, registry, slipway) = start_stack(&[]).await;
    // For ia64, a program the kernel cannot run and no binfmt handler takes
    // (QEMU has no ia64): the engine's busybox with its ELF machine made
    // IA-64's (50), named `true` as busybox takes its applet from its name.
    // The tools stage runs natively on the build platform.
    let dockerfile = "FROM --platform=$BUILDPLATFORM slipway-test-base:1 AS tools\n\
        ARG TARGETARCH\n\
        RUN cp /bin/busybox /true && if [ \"$TARGETARCH\" = ia64 ]; then printf '\\062\\000' | dd of=/true bs=1 seek=18 conv=notrunc; fi\n\
        FROM scratch\n\
        COPY --from=tools /true /true\n\
        RUN [\"/true\"]\n";
    let commit = commit_for(&github, &["linux/amd64", "linux/ia64"], dockerfile, "x");
    let started = Instant::now();
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    let elapsed = started.elapsed();
    let log = slipway.build_log(&id).await;
    let multi = service(&record, "multi");
    assert_eq!(multi["status"], "failed", "{multi}\n{log}");
    let error = multi["error"].as_str().expect("error");
    assert!(
        error.contains("linux/ia64 programs cannot run on the engine's machine")
            && error.contains("qemu-user-static"),
        "names the platform and what to install: {error}"
    );
    assert!(elapsed < Duration::from_secs(60), "at once: {elapsed:?}");
    assert_eq!(head_digest(&registry, "multi", "1.0.0"), None);
    println!("failed in {elapsed:?}: {error}");
}
