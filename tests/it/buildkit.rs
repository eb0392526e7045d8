//! BuildKit, for real: what today's Dockerfiles use (mounts of every type,
//! `COPY --chmod`, skipped stages, build secrets), live progress, and the
//! engine's work stopped when Slipway stops following a build.

use std::time::{Duration, Instant};

use crate::support::engine_proxy::EngineWithoutSessions;
use crate::support::*;
use serde_json::json;
use sha2::{Digest, Sha256};

const REPO: &str = "acme/kit";

fn manifest(name: &str, version: &str) -> String {
    json!({"services": [{"name": name, "version": version}]}).to_string()
}

/// One Dockerfile with each feature the classic builder refuses or gets wrong.
fn modern_dockerfile(cache_id: &str) -> String {
    format!(
        "FROM slipway-test-base:1 AS unused\n\
         RUN false\n\
         FROM slipway-test-base:1\n\
         COPY round.txt /round.txt\n\
         RUN --mount=type=cache,id={cache_id},target=/cache \\\n    \
             (cat /cache/stamp 2>/dev/null || echo none) > /seen && cp /round.txt /cache/stamp\n\
         RUN --mount=type=bind,source=bound.txt,target=/mnt/bound.txt cp /mnt/bound.txt /bound-copy\n\
         RUN --mount=type=tmpfs,target=/scratch \\\n    \
             grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /scratch-type && touch /scratch/left-behind\n\
         COPY --chmod=755 tool.sh /tool.sh\n\
         CMD [\"/tool.sh\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_dockerfile_publishes_and_its_cache_mount_persists() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let cache_id = format!("slipway-test-{}", uuid());
    let dockerfile = modern_dockerfile(&cache_id);
    let files = |version: &str, round: &str| {
        vec![
            ("dockerInfo.json".to_string(), manifest("modern", version)),
            ("Dockerfile".to_string(), dockerfile.clone()),
            ("round.txt".to_string(), round.to_string()),
            (
                "bound.txt".to_string(),
                "bound from the context".to_string(),
            ),
            ("tool.sh".to_string(), "#!/bin/sh\necho tool\n".to_string()),
        ]
    };
    let first = sha();
    add_files(&github, &first, &files("1.0.0", "round-one"));
    let id = slipway.merge(REPO, &first).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    assert!(
        !log.contains("classic builder"),
        "built with BuildKit:\n{log}"
    );
    assert!(
        !log.contains("[unused"),
        "the stage the target does not need is skipped:\n{log}"
    );

    let image = format!("{}/modern:1.0.0", registry.host);
    pull_fresh(&image);
    let shows = |path: &str| docker_run(&image, &["cat", path]).trim().to_string();
    assert_eq!(shows("/seen"), "none", "the cache starts empty");
    assert_eq!(shows("/bound-copy"), "bound from the context");
    assert_eq!(shows("/scratch-type"), "tmpfs");
    assert_eq!(
        docker_run(&image, &["stat", "-c", "%a", "/tool.sh"]).trim(),
        "755"
    );
    assert_eq!(docker_run(&image, &[]).trim(), "tool");
    assert!(
        docker_run(&image, &["sh", "-c", "ls /cache 2>/dev/null | wc -l"]).trim() == "0",
        "the cache mount's content stays out of the image"
    );
    assert!(
        docker_run(&image, &["sh", "-c", "ls /scratch 2>/dev/null | wc -l"]).trim() == "0",
        "nothing written to the tmpfs stays in the image"
    );

    // The next merge sees what the first left in the cache mount.
    let second = sha();
    add_files(&github, &second, &files("1.0.1", "round-two"));
    let record = slipway.wait_for(&slipway.merge(REPO, &second).await).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let image = format!("{}/modern:1.0.1", registry.host);
    pull_fresh(&image);
    assert_eq!(
        docker_run(&image, &["cat", "/seen"]).trim(),
        "round-one",
        "cache mounts persist between builds on the same engine"
    );
}

fn add_files(github: &FakeGitHub, sha: &str, files: &[(String, String)]) {
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    github.add_commit_files(REPO, sha, &files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_output_reaches_watchers_before_the_step_ends() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let sha = sha();
    // The run's own sha keeps the engine's cache from answering for the step.
    let dockerfile = format!(
        "FROM slipway-test-base:1\nRUN echo {sha} >/dev/null && echo live-marker-early && sleep 4 && echo live-marker-late\n"
    );
    github.add_commit_files(
        REPO,
        &sha,
        &[
            ("dockerInfo.json", &manifest("live", "1.0.0")),
            ("Dockerfile", &dockerfile),
        ],
    );
    let id = slipway.merge(REPO, &sha).await;
    let started = Instant::now();
    let mut arrivals: Vec<(Duration, String)> = Vec::new();
    let mut note = |line: &str| arrivals.push((started.elapsed(), line.to_string()));
    sse_events(&format!("{}/builds/{id}/log", slipway.url), Some(&mut note)).await;
    let at = |marker: &str| {
        arrivals
            .iter()
            .find(|(_, l)| l.ends_with(marker) && !l.contains("RUN "))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no {marker} line in {arrivals:?}"))
    };
    let (early, late) = (at("live-marker-early"), at("live-marker-late"));
    assert!(
        late - early >= Duration::from_secs(3),
        "the early line came {early:?}, the late one {late:?}: output must stream as printed"
    );
    let step = arrivals
        .iter()
        .position(|(_, l)| l.contains("] RUN echo ") && l.contains("live-marker-early"))
        .expect("a line when the step starts");
    let output = arrivals
        .iter()
        .position(|(_, l)| l.ends_with("live-marker-early") && !l.contains("RUN "))
        .expect("output");
    assert!(step < output, "{arrivals:?}");
    assert!(
        arrivals.iter().any(|(_, l)| l.contains(" DONE ")),
        "{arrivals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_secrets_reach_run_steps_and_nothing_else() {
    let secret = format!("npm-token-{}", uuid());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, &secret).expect("write secret");
    let spec = format!("token={}", path.display());
    let (github, registry, slipway) = start_stack(&[("SLIPWAY_BUILD_SECRETS", &spec)]).await;
    let sha = sha();
    let manifest = json!({"services": [
        {"name": "uses-secret", "version": "1.0.0", "context": "uses"},
        {"name": "wants-missing", "version": "1.0.0", "context": "missing"}
    ]});
    // BuildKit's cache keys leave secrets out: the sha keeps a step from
    // answering from an earlier run's cache.
    let uses = format!(
        "FROM slipway-test-base:1\n\
         RUN --mount=type=secret,id=token echo {sha} >/dev/null \\\n    \
             && sha256sum /run/secrets/token | cut -d' ' -f1 > /secret-sha256 \\\n    \
             && wc -c < /run/secrets/token > /secret-length \\\n    \
             && echo \"printed: $(cat /run/secrets/token)\"\n"
    );
    let wants_missing = format!(
        "FROM slipway-test-base:1\nRUN --mount=type=secret,id=npmrc echo {sha} && cat /run/secrets/npmrc || true\n"
    );
    github.add_commit_files(
        REPO,
        &sha,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            ("uses/Dockerfile", &uses),
            ("missing/Dockerfile", &wants_missing),
        ],
    );
    let id = slipway.merge(REPO, &sha).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    println!("build log:\n{log}");

    let uses = service(&record, "uses-secret");
    assert_eq!(uses["status"], "succeeded", "{record}");
    let image = format!("{}/uses-secret:1.0.0", registry.host);
    pull_fresh(&image);
    let expected = hex::encode(Sha256::digest(secret.as_bytes()));
    assert_eq!(
        docker_run(&image, &["cat", "/secret-sha256"]).trim(),
        expected
    );
    assert_eq!(
        docker_run(&image, &["cat", "/secret-length"]).trim(),
        secret.len().to_string()
    );
    let saved = std::process::Command::new("docker")
        .args(["save", &image])
        .output()
        .expect("docker save");
    assert!(saved.status.success());
    assert!(
        !contains(&saved.stdout, secret.as_bytes()),
        "the secret is in no layer of the image"
    );
    assert!(
        log.contains("printed: ***"),
        "a step that prints the secret shows it masked:\n{log}"
    );

    let missing = service(&record, "wants-missing");
    assert_eq!(missing["status"], "failed", "{record}");
    let error = missing["error"].as_str().unwrap_or("");
    assert!(
        error.contains("build secret `npmrc`") && error.contains("--build-secret npmrc="),
        "{error}"
    );
    assert!(registry.tags("wants-missing").is_empty());

    assert!(!log.contains(&secret), "{log}");
    assert!(!record.to_string().contains(&secret));
    assert!(!slipway.log().contains(&secret));
    let db = std::fs::read(slipway.data_dir.join("slipway.db")).unwrap_or_default();
    assert!(!contains(&db, secret.as_bytes()));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Process ids whose command line is exactly `sleep SECONDS`.
fn sleepers(seconds: &str) -> Vec<String> {
    processes(|args| args.len() == 2 && args[0].ends_with("sleep") && args[1] == seconds)
}

fn sleeping(seconds: &str) -> usize {
    sleepers(seconds).len()
}

/// Waits up to `within` for `sleep SECONDS` to be running (or gone).
async fn wait_until_sleeping(seconds: &str, running: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if (sleeping(seconds) > 0) == running {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A step that outlives the limit, with a sleep length unique to the test.
fn stuck_build(github: &FakeGitHub, seconds: &str) -> String {
    let sha = sha();
    github.add_commit_files(
        REPO,
        &sha,
        &[
            (
                "dockerInfo.json",
                &manifest(&format!("stuck{seconds}"), "1.0.0"),
            ),
            (
                "Dockerfile",
                &format!("FROM slipway-test-base:1\nRUN sleep {seconds}\n"),
            ),
        ],
    );
    sha
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_build_stops_in_the_engine() {
    let (github, _registry, slipway) = start_stack(&[("SLIPWAY_BUILD_TIMEOUT", "6s")]).await;
    let seconds = "3171";
    let sha = stuck_build(&github, seconds);
    let id = slipway.merge(REPO, &sha).await;
    assert!(
        wait_until_sleeping(seconds, true, Duration::from_secs(60)).await,
        "the step started"
    );
    let record = slipway.wait_for(&id).await;
    let error = record["services"][0]["error"].as_str().unwrap_or("");
    assert!(error.contains("timed out after 6s"), "{record}");
    assert!(
        wait_until_sleeping(seconds, false, Duration::from_secs(20)).await,
        "the engine stopped the step after the time-out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_step_fails_its_service_with_the_engines_message() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let seconds = "3173";
    let sha = stuck_build(&github, seconds);
    let id = slipway.merge(REPO, &sha).await;
    assert!(
        wait_until_sleeping(seconds, true, Duration::from_secs(60)).await,
        "the step started"
    );
    for pid in sleepers(seconds) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
    }
    let record = slipway.wait_for(&id).await;
    let error = record["services"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("build failed:") && error.contains("exit code: 137"),
        "the engine's message: {record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_build_stream_trips_the_watchdog() {
    let (github, _registry, slipway) = start_stack(&[("SLIPWAY_BUILD_STALL_TIMEOUT", "3s")]).await;
    let seconds = "3172";
    let sha = stuck_build(&github, seconds);
    let id = slipway.merge(REPO, &sha).await;
    let record = slipway.wait_for(&id).await;
    let error = record["services"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("no build progress for 3s") && error.contains("--build-stall-timeout"),
        "{record}"
    );
    assert!(
        wait_until_sleeping(seconds, false, Duration::from_secs(20)).await,
        "the engine stopped the step after the watchdog fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_without_buildkit_sessions_gets_the_classic_builder() {
    let engine = EngineWithoutSessions::start().await;
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry).env("DOCKER_HOST", &engine.docker_host),
    )
    .await;
    for version in ["1.0.0", "1.0.1"] {
        let sha = sha();
        github.add_commit_files(
            REPO,
            &sha,
            &[
                ("dockerInfo.json", &manifest("fallback", version)),
                (
                    "Dockerfile",
                    "FROM slipway-test-base:1\nRUN echo built-here > /where\n",
                ),
            ],
        );
        let id = slipway.merge(REPO, &sha).await;
        let record = slipway.wait_for(&id).await;
        let log = slipway.build_log(&id).await;
        assert_eq!(record["status"], "succeeded", "{record}\n{log}");
        assert!(
            log.contains("this engine cannot build with BuildKit (POST /session answered 404")
                && log.contains("building with the classic builder instead"),
            "{log}"
        );
        assert!(
            log.contains("Step 2/2 : RUN echo built-here"),
            "classic output:\n{log}"
        );
    }
    assert_eq!(
        engine.refused_sessions(),
        1,
        "the engine is asked once, then remembered"
    );
    let image = format!("{}/fallback:1.0.1", registry.host);
    pull_fresh(&image);
    assert_eq!(docker_run(&image, &["cat", "/where"]).trim(), "built-here");
}

/// The buildx plugin the tests use as the reference (scripts/engines.sh
/// puts Debian 13's `docker-buildx` there).
fn buildx_config() -> std::path::PathBuf {
    let dir = std::env::var_os("SLIPWAY_TEST_BUILDX_CONFIG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/opt/slipway-trixie/docker-config".into());
    assert!(
        dir.join("cli-plugins/docker-buildx").exists(),
        "no docker-buildx plugin in {}: run scripts/engines.sh",
        dir.display()
    );
    dir
}

/// Every entry of a context with what `.dockerignore` and BuildKit make of
/// it: ignored files, exceptions, an excluded folder with a kept file, a
/// link, the Dockerfile and `.dockerignore` themselves ignored.
fn context_files() -> Vec<(&'static str, FakeEntry)> {
    let file = |text: &str| FakeEntry::File {
        contents: text.as_bytes().to_vec(),
        executable: false,
    };
    vec![
        (
            "svc/Dockerfile",
            file(
                "FROM slipway-test-base:1\nCOPY . /ctx\n\
                 RUN cd /ctx && (find . -type d -exec stat -c '%F %n ' {} + ; \
                 find . ! -type d -exec stat -c '%F %n %s %a' {} +) | sort > /listing\n",
            ),
        ),
        (
            "svc/.dockerignore",
            file("Dockerfile\n.dockerignore\n*.log\n!keep.log\ndocs\n!docs/keep\nnode_modules\n**/*.tmp\n"),
        ),
        ("svc/app.py", file("print('hi')\n")),
        ("svc/a.log", file("ignored\n")),
        ("svc/keep.log", file("kept\n")),
        ("svc/docs/x.md", file("ignored\n")),
        ("svc/docs/keep/y.md", file("kept by an exception\n")),
        ("svc/node_modules/m/index.js", file("ignored\n")),
        ("svc/src/a/b.txt", file("deep\n")),
        ("svc/src/a/c.tmp", file("ignored\n")),
        ("svc/src/a.txt", file("beside a folder of the same stem\n")),
        ("svc/src/a-b.txt", file("sorted between\n")),
        (
            "svc/tool.sh",
            FakeEntry::File {
                contents: b"#!/bin/sh\necho tool\n".to_vec(),
                executable: true,
            },
        ),
        (
            "svc/link",
            FakeEntry::Symlink {
                target: "src/a.txt".into(),
            },
        ),
        ("outside.txt", file("not in the context\n")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_is_what_buildx_sends() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let commit = sha();
    let mut files = context_files();
    let manifest = json!({"services": [{"name": "ctx", "version": "1.0.0", "context": "svc"}]});
    files.push((
        "dockerInfo.json",
        FakeEntry::File {
            contents: manifest.to_string().into_bytes(),
            executable: false,
        },
    ));
    let folder = tempfile::tempdir().expect("tempdir");
    for (path, entry) in &files {
        let target = folder.path().join(path);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        match entry {
            FakeEntry::File {
                contents,
                executable,
            } => {
                std::fs::write(&target, contents).expect("write");
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(
                    &target,
                    std::os::unix::fs::PermissionsExt::from_mode(mode),
                )
                .expect("chmod");
            }
            FakeEntry::Symlink { target: to } => {
                std::os::unix::fs::symlink(to, &target).expect("symlink")
            }
        }
    }
    github.add_commit(
        REPO,
        &commit,
        files
            .into_iter()
            .map(|(path, entry)| (path.to_string(), entry))
            .collect(),
    );
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    assert!(!log.contains("classic builder"), "{log}");
    let image = format!("{}/ctx:1.0.0", registry.host);
    pull_fresh(&image);
    let slipways = docker_run(&image, &["cat", "/listing"]);

    let reference = format!("slipway-test-buildx-ctx:{}", uuid());
    let built = std::process::Command::new("docker")
        .env("DOCKER_CONFIG", buildx_config())
        .args([
            "buildx",
            "build",
            "--load",
            "--progress",
            "plain",
            "-t",
            &reference,
        ])
        .arg(folder.path().join("svc"))
        .output()
        .expect("docker buildx build");
    assert!(
        built.status.success(),
        "buildx failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let buildxs = docker_run(&reference, &["cat", "/listing"]);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &reference])
        .output();
    assert_eq!(slipways, buildxs, "Slipway's context and buildx's differ");
    for gone in [
        "./Dockerfile",
        "./.dockerignore",
        "./a.log",
        "./docs/x.md",
        "./src/a/c.tmp",
    ] {
        assert!(
            !slipways.contains(&format!(" {gone} ")),
            "{gone} was sent:\n{slipways}"
        );
    }
    for kept in ["./keep.log", "./docs/keep/y.md", "./link", "./src/a-b.txt"] {
        assert!(
            slipways.contains(&format!(" {kept} ")),
            "{kept} is missing:\n{slipways}"
        );
    }
}
