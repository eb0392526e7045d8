//! The whole path, for real: a signed merged-PR delivery, the stand-in
//! GitHub, the machine's Docker Engine, and a TLS registry with basic auth.

use crate::support::*;
use serde_json::json;

const REPO: &str = "acme/shop";

fn api_dockerfile() -> &'static str {
    "FROM slipway-test-base:1 AS build\n\
     ARG GREETING=unset\n\
     RUN echo \"$GREETING\" > /greeting\n\
     FROM slipway-test-base:1 AS runtime\n\
     COPY --from=build /greeting /greeting\n\
     COPY . /app/\n\
     CMD [\"cat\", \"/greeting\"]\n\
     FROM runtime AS broken\n\
     RUN false\n"
}

/// The core publish tests, once on each builder (both pushing through the
/// loopback relay, the default), and once on BuildKit with the export path.
macro_rules! on_both_builders {
    ($($test:ident),* $(,)?) => {
        mod buildkit {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Builder::BuildKit).await
            })*
        }
        mod classic {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Builder::Classic).await
            })*
        }
        mod export {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Builder::BuildKitExporting).await
            })*
        }
    };
}

on_both_builders!(
    merged_pr_publishes_two_services_that_pull_and_run,
    failing_dockerfile_fails_its_service_only,
    published_versions_are_immutable,
);

#[derive(Clone, Copy, PartialEq)]
enum Builder {
    BuildKit,
    Classic,
    /// BuildKit, with `docker save` and Slipway's own upload.
    BuildKitExporting,
}

impl Builder {
    fn env(self) -> [(&'static str, &'static str); 2] {
        let (builder, push_path) = match self {
            Builder::BuildKit => ("buildkit", "relay"),
            Builder::Classic => ("classic", "relay"),
            Builder::BuildKitExporting => ("buildkit", "export"),
        };
        [
            ("SLIPWAY_BUILDER", builder),
            ("SLIPWAY_PUSH_PATH", push_path),
        ]
    }
}

async fn merged_pr_publishes_two_services_that_pull_and_run(builder: Builder) {
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    github.require_token("gh-token-xyz");
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry)
            .env("SLIPWAY_GITHUB_TOKEN", "gh-token-xyz")
            .envs(&builder.env()),
    )
    .await;
    let sha = sha();
    let manifest = json!({"services": [
        {"name": "api", "version": "1.4.0", "context": "services/api", "dockerfile": "docker/Dockerfile",
         "build_args": {"GREETING": "hello-from-args"}, "target": "runtime"},
        {"name": "web", "version": "0.2.0", "context": "web"}
    ]});
    github.add_commit_files(
        REPO,
        &sha,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            ("services/api/docker/Dockerfile", api_dockerfile()),
            ("services/api/app.txt", "api app"),
            ("services/api/secret.env", "TOKEN=do-not-ship"),
            ("services/api/docs/guide.md", "guide"),
            ("services/api/docs/KEEP.md", "kept"),
            ("services/api/.dockerignore", "# comments are fine\n*.env\ndocs\n!docs/KEEP.md\n"),
            ("web/Dockerfile", "FROM slipway-test-base:1\nCOPY index.html /www/index.html\nCMD [\"cat\", \"/www/index.html\"]\n"),
            ("web/index.html", "<h1>shop</h1>"),
        ],
    );
    let id = slipway.merge(REPO, &sha).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    println!("build log:\n{log}");
    assert_eq!(record["status"], "succeeded", "{record}\n{}", slipway.log());
    let push_path_line = match builder {
        Builder::BuildKitExporting => "[api] exported ",
        _ => "[api] pushed by the engine through the loopback relay",
    };
    assert!(log.contains(push_path_line), "{log}");
    assert_eq!(record["commit"], sha);
    assert_eq!(record["repository"], REPO);
    assert_eq!(record["trigger"], "webhook");
    assert!(
        record["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "the instance that ran it (the host name by default): {record}"
    );

    let api = service(&record, "api");
    let api_image = format!("{}/api:1.4.0", registry.host);
    assert_eq!(api["image"], api_image.as_str());
    assert_eq!(api["status"], "succeeded");
    assert!(api["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    let web_image = format!("{}/web:0.2.0", registry.host);
    assert_eq!(service(&record, "web")["status"], "succeeded");
    assert_eq!(registry.tags("api"), vec!["1.4.0"]);

    pull_fresh(&api_image);
    pull_fresh(&web_image);
    assert_eq!(docker_run(&api_image, &[]).trim(), "hello-from-args");
    assert_eq!(docker_run(&web_image, &[]).trim(), "<h1>shop</h1>");
    let files = docker_run(&api_image, &["find", "/app"]);
    assert!(files.contains("/app/app.txt"), "{files}");
    assert!(
        files.contains("/app/docs/KEEP.md"),
        "exception re-includes: {files}"
    );
    assert!(
        !files.contains("secret.env"),
        ".dockerignore honoured: {files}"
    );
    assert!(
        !files.contains("guide.md"),
        ".dockerignore honoured: {files}"
    );

    let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", &api_image]);
    let labels: serde_json::Value = serde_json::from_str(&labels).expect("labels");
    assert_eq!(labels["org.opencontainers.image.revision"], sha.as_str());
    assert_eq!(
        labels["org.opencontainers.image.source"],
        format!("https://github.com/{REPO}")
    );
    assert_eq!(labels["org.opencontainers.image.version"], "1.4.0");
    assert_eq!(labels["org.opencontainers.image.title"], "api");
    assert!(labels["org.opencontainers.image.created"].is_string());
    assert!(labels["io.slipway.inputs"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    let digest = docker(&[
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &api_image,
    ]);
    assert!(
        digest
            .trim()
            .ends_with(api["digest"].as_str().unwrap_or("?")),
        "{digest} vs {api}"
    );

    let requests = github.requests();
    let contents = requests
        .iter()
        .find(|r| r.path_and_query.contains("/contents/dockerInfo.json"))
        .expect("manifest read");
    assert!(contents.path_and_query.contains(&format!("ref={sha}")));
    assert_eq!(
        contents.authorization.as_deref(),
        Some("Bearer gh-token-xyz")
    );
    assert!(contents
        .accept
        .as_deref()
        .unwrap_or("")
        .contains("application/vnd.github.raw"));
    let tarballs: Vec<_> = requests
        .iter()
        .filter(|r| r.path_and_query.contains("tarball") || r.listener == "codeload")
        .collect();
    assert_eq!(
        tarballs.len(),
        2,
        "one download per build, shared by its services: {tarballs:?}"
    );
    let codeload = requests
        .iter()
        .find(|r| r.listener == "codeload")
        .expect("redirect followed");
    assert_eq!(
        codeload.authorization, None,
        "token must not follow the redirect"
    );
    assert!(!slipway.log().contains("gh-token-xyz"));
    assert!(!slipway.log().contains(&registry.password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_single_manifest_shapes_build() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let list_sha = sha();
    github.add_commit_files(
        REPO,
        &list_sha,
        &[
            (
                "dockerInfo.json",
                r#"[{"service_name":"front","version":"2.0.0","type":"Docker"},{"service_name":"chart","version":"1.0.0","type":"Helm"}]"#,
            ),
            ("front/Dockerfile", "FROM slipway-test-base:1\nCOPY hello.txt /hello.txt\n"),
            ("front/hello.txt", "hi"),
        ],
    );
    let single_sha = sha();
    github.add_commit_files(
        "acme/solo",
        &single_sha,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"solo","version":"0.0.1"}"#,
            ),
            (
                "Dockerfile",
                "FROM slipway-test-base:1\nCOPY x.txt /x.txt\n",
            ),
            ("x.txt", "x"),
        ],
    );
    let list_id = slipway.merge(REPO, &list_sha).await;
    let single_id = slipway.merge("acme/solo", &single_sha).await;
    let list = slipway.wait_for(&list_id).await;
    let single = slipway.wait_for(&single_id).await;

    assert_eq!(service(&list, "front")["status"], "succeeded", "{list}");
    let chart = service(&list, "chart");
    assert_eq!(chart["status"], "failed");
    assert!(
        chart["error"].as_str().unwrap_or("").contains("Docker"),
        "{chart}"
    );
    assert_eq!(
        list["status"], "failed",
        "one failed service fails the build"
    );
    assert_eq!(single["status"], "succeeded", "{single}");
    assert_eq!(registry.tags("front"), vec!["2.0.0"]);
    assert_eq!(registry.tags("solo"), vec!["0.0.1"]);
}

async fn failing_dockerfile_fails_its_service_only(builder: Builder) {
    let (github, registry, slipway) = start_stack(&builder.env()).await;
    let sha = sha();
    github.add_commit_files(
        REPO,
        &sha,
        &[
            (
                "dockerInfo.json",
                r#"{"services":[{"name":"bad","version":"1","context":"bad"},{"name":"good","version":"1","context":"good"},{"name":"nodockerfile","version":"1","context":"good/sub"}]}"#,
            ),
            ("bad/Dockerfile", "FROM slipway-test-base:1\nRUN echo about to fail && exit 3\n"),
            ("good/Dockerfile", "FROM slipway-test-base:1\nRUN echo fine\n"),
            ("good/sub/readme.txt", "no dockerfile here"),
        ],
    );
    let id = slipway.merge(REPO, &sha).await;
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "failed");
    let bad = service(&record, "bad");
    assert_eq!(bad["status"], "failed");
    let error = bad["error"].as_str().unwrap_or("");
    let engine_says = match builder {
        Builder::BuildKit | Builder::BuildKitExporting => "exit code: 3",
        Builder::Classic => "returned a non-zero code: 3",
    };
    assert!(error.contains(engine_says), "engine's message: {error}");
    assert_eq!(service(&record, "good")["status"], "succeeded");
    let missing = service(&record, "nodockerfile");
    assert!(
        missing["error"]
            .as_str()
            .unwrap_or("")
            .contains("Dockerfile `good/sub/Dockerfile` does not exist"),
        "{missing}"
    );
    assert!(registry.tags("bad").is_empty());
    let log = slipway.build_log(&id).await;
    assert!(
        log.lines()
            .any(|l| l.starts_with("[bad] ") && l.ends_with(" about to fail")),
        "engine output streamed to the log:\n{log}"
    );
}

async fn published_versions_are_immutable(builder: Builder) {
    let (github, registry, slipway) = start_stack(&builder.env()).await;
    let files = [
        (
            "dockerInfo.json",
            r#"{"service_name":"stable","version":"1.0.0"}"#,
        ),
        ("Dockerfile", "FROM slipway-test-base:1\nCOPY . /src/\n"),
        ("v.txt", "one"),
        (".dockerignore", "README.md\n"),
    ];
    let first = sha();
    github.add_commit_files(REPO, &first, &files);
    let record = slipway.wait_for(&slipway.merge(REPO, &first).await).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let digest = service(&record, "stable")["digest"].clone();

    // A later merge that changes only what .dockerignore leaves out: skipped.
    let unchanged = sha();
    let mut docs_only = files.to_vec();
    docs_only.push(("README.md", "docs only"));
    github.add_commit_files(REPO, &unchanged, &docs_only);
    let record = slipway
        .wait_for(&slipway.merge(REPO, &unchanged).await)
        .await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let stable = service(&record, "stable");
    assert_eq!(stable["status"], "skipped");
    assert_eq!(stable["digest"], digest);

    // Changed sources at the same version: refused, registry untouched.
    let changed = sha();
    github.add_commit_files(
        REPO,
        &changed,
        &[files[0], files[1], ("v.txt", "two"), files[3]],
    );
    let record = slipway.wait_for(&slipway.merge(REPO, &changed).await).await;
    assert_eq!(record["status"], "failed");
    let stable = service(&record, "stable");
    assert_eq!(stable["status"], "failed");
    assert!(
        stable["error"]
            .as_str()
            .unwrap_or("")
            .contains("bump `version`"),
        "{stable}"
    );
    let image = format!("{}/stable:1.0.0", registry.host);
    pull_fresh(&image);
    assert_eq!(docker_run(&image, &["cat", "/src/v.txt"]).trim(), "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_manifest_fails_the_build_naming_path_and_commit() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let sha = sha();
    github.add_commit_files(REPO, &sha, &[("Dockerfile", "FROM slipway-test-base:1\n")]);
    let record = slipway.wait_for(&slipway.merge(REPO, &sha).await).await;
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().unwrap_or("");
    assert!(
        error.contains("dockerInfo.json") && error.contains(&sha),
        "{error}"
    );
    assert_eq!(record["services"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_registry_password_is_a_clear_error_without_the_password() {
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let mut options = SlipwayOptions::new(&github, &registry);
    options.registry_password = Some("not-the-password-42".into());
    let slipway = Slipway::start(options).await;
    let sha = sha();
    github.add_commit_files(
        REPO,
        &sha,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"locked","version":"1"}"#,
            ),
            ("Dockerfile", "FROM slipway-test-base:1\n"),
        ],
    );
    let record = slipway.wait_for(&slipway.merge(REPO, &sha).await).await;
    let locked = service(&record, "locked");
    assert_eq!(locked["status"], "failed");
    let error = locked["error"].as_str().unwrap_or("");
    assert!(
        error.contains("401") && error.contains("--registry-password"),
        "{error}"
    );
    let everything = format!(
        "{record}{}{}",
        slipway.build_log(record["id"].as_str().unwrap_or("")).await,
        slipway.log()
    );
    assert!(!everything.contains("not-the-password-42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_fails_with_unreachable() {
    let (github, mut registry, slipway) = start_stack(&[]).await;
    registry.stop();
    let sha = sha();
    github.add_commit_files(
        REPO,
        &sha,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"offline","version":"1"}"#,
            ),
            ("Dockerfile", "FROM slipway-test-base:1\n"),
        ],
    );
    let record = slipway.wait_for(&slipway.merge(REPO, &sha).await).await;
    let offline = service(&record, "offline");
    assert_eq!(offline["status"], "failed");
    let error = offline["error"].as_str().unwrap_or("");
    assert!(
        error.contains("unreachable") && error.contains(&registry.host),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_hiccups_are_retried_and_rate_limits_explained() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let commit = sha();
    github.add_commit_files(
        REPO,
        &commit,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"flaky","version":"1"}"#,
            ),
            ("Dockerfile", "FROM slipway-test-base:1\n"),
        ],
    );
    github.inject_fault("/contents/", Fault::Status(502), 2);
    github.inject_fault("legacy.tar.gz", Fault::Status(500), 1);
    let record = slipway.wait_for(&slipway.merge(REPO, &commit).await).await;
    assert_eq!(record["status"], "succeeded", "{record}");

    let limited = sha();
    github.add_commit_files(REPO, &limited, &[("dockerInfo.json", "{}")]);
    github.inject_fault(&limited, Fault::RateLimited, 1);
    let record = slipway.wait_for(&slipway.merge(REPO, &limited).await).await;
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().unwrap_or("");
    assert!(
        error.contains("rate limit") && error.contains("--github-token"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_the_context_fail_their_service() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let sha = sha();
    let file = |text: &str| FakeEntry::File {
        contents: text.as_bytes().to_vec(),
        executable: false,
    };
    github.add_commit(
        REPO,
        &sha,
        vec![
            (
                "dockerInfo.json".into(),
                file(r#"[{"service_name":"leaky","version":"1"},{"service_name":"tidy","version":"1"}]"#),
            ),
            ("leaky/Dockerfile".into(), file("FROM slipway-test-base:1\nCOPY passwd /stolen\n")),
            ("leaky/passwd".into(), FakeEntry::Symlink { target: "/etc/passwd".into() }),
            ("tidy/Dockerfile".into(), file("FROM slipway-test-base:1\nCOPY link /inside\n")),
            ("tidy/real.txt".into(), file("inside")),
            ("tidy/link".into(), FakeEntry::Symlink { target: "real.txt".into() }),
        ],
    );
    let record = slipway.wait_for(&slipway.merge(REPO, &sha).await).await;
    let leaky = service(&record, "leaky");
    assert_eq!(leaky["status"], "failed");
    assert!(
        leaky["error"]
            .as_str()
            .unwrap_or("")
            .contains("points outside the build context"),
        "{leaky}"
    );
    assert_eq!(service(&record, "tidy")["status"], "succeeded", "{record}");
    assert!(registry.tags("leaky").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_namespace_prefixes_every_image() {
    let (github, registry, slipway) = start_stack(&[("SLIPWAY_REGISTRY_NAMESPACE", "team")]).await;
    let sha = sha();
    github.add_commit_files(
        REPO,
        &sha,
        &[
            (
                "dockerInfo.json",
                r#"{"service_name":"spaced","version":"2.0.1"}"#,
            ),
            (
                "Dockerfile",
                "FROM slipway-test-base:1\nCMD [\"echo\", \"namespaced\"]\n",
            ),
        ],
    );
    let record = slipway.wait_for(&slipway.merge(REPO, &sha).await).await;
    let image = format!("{}/team/spaced:2.0.1", registry.host);
    assert_eq!(
        service(&record, "spaced")["image"],
        image.as_str(),
        "{record}"
    );
    assert_eq!(registry.tags("team/spaced"), vec!["2.0.1"]);
    pull_fresh(&image);
    assert_eq!(docker_run(&image, &[]).trim(), "namespaced");
}
