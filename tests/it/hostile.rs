//! Bad input from the internet and from repositories: every case gets the
//! contract's answer or a failed build with a clear error, the service stays
//! up, nothing is written outside its temp space, and memory stays bounded.

use std::io::Write;

use crate::support::*;
use serde_json::{json, Value};

const REPO: &str = "acme/hostile";

/// (what, method, X-GitHub-Event, body, expected status)
type DeliveryCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
);
/// (what, the tarball for a commit, expected words in the build error)
type TarballCase<'a> = (
    &'static str,
    Box<dyn Fn(&str) -> Vec<u8> + 'a>,
    &'static str,
);

/// Slipway with a registry where nothing listens: only answers matter here.
async fn webhook_only() -> (FakeGitHub, Slipway) {
    let github = FakeGitHub::start().await;
    let slipway = Slipway::start(SlipwayOptions::without_registry(&github)).await;
    (github, slipway)
}

async fn send(slipway: &Slipway, method: &str, event: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/webhook", slipway.url))
        .header("content-type", "application/json")
        .header("x-github-delivery", uuid())
        .header("x-hub-signature-256", sign(&body));
    if let Some(event) = event {
        req = req.header("x-github-event", event);
    }
    let resp = req.body(body).send().await.expect("answered");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn without(path: &[&str]) -> Vec<u8> {
    let mut payload = merged_pr_payload(REPO, &sha(), 1, "main");
    let (last, parents) = path.split_last().expect("path");
    let mut node = &mut payload;
    for p in parents {
        node = &mut node[*p];
    }
    if let Some(obj) = node.as_object_mut() {
        obj.remove(*last);
    }
    payload.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_delivery_gets_its_answer_and_causes_no_work() {
    let (github, slipway) = webhook_only().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let mut null_sha = merged_pr_payload(REPO, &sha(), 1, "main");
    null_sha["pull_request"]["merge_commit_sha"] = Value::Null;
    let mut dotdot = merged_pr_payload(REPO, &sha(), 1, "main");
    dotdot["repository"]["full_name"] = json!("acme/..");
    let cases: Vec<DeliveryCase> = vec![
        (
            "invalid UTF-8",
            "POST",
            Some("pull_request"),
            b"{\"action\":\"\xff\xfe\"}".to_vec(),
            400,
        ),
        (
            "JSON nested 10,000 deep",
            "POST",
            Some("pull_request"),
            deep.clone(),
            400,
        ),
        (
            "deep JSON in another event",
            "POST",
            Some("issues"),
            deep,
            400,
        ),
        (
            "no pull_request",
            "POST",
            Some("pull_request"),
            without(&["pull_request"]),
            400,
        ),
        (
            "no merged",
            "POST",
            Some("pull_request"),
            without(&["pull_request", "merged"]),
            400,
        ),
        (
            "no merge_commit_sha",
            "POST",
            Some("pull_request"),
            without(&["pull_request", "merge_commit_sha"]),
            400,
        ),
        (
            "no repository",
            "POST",
            Some("pull_request"),
            without(&["repository"]),
            400,
        ),
        (
            "merge_commit_sha null",
            "POST",
            Some("pull_request"),
            null_sha.to_string().into_bytes(),
            400,
        ),
        (
            "repository with ..",
            "POST",
            Some("pull_request"),
            dotdot.to_string().into_bytes(),
            400,
        ),
        ("no event header", "POST", None, b"{}".to_vec(), 400),
        (
            "unknown event",
            "POST",
            Some("deployment_status"),
            b"{}".to_vec(),
            200,
        ),
        (
            "made-up event",
            "POST",
            Some("x-made-up"),
            b"{}".to_vec(),
            200,
        ),
        (
            "event not ASCII",
            "POST",
            Some("\u{1F4A3}-bomb"),
            b"{}".to_vec(),
            400,
        ),
        ("PUT", "PUT", Some("pull_request"), b"{}".to_vec(), 405),
        (
            "DELETE",
            "DELETE",
            Some("pull_request"),
            b"{}".to_vec(),
            405,
        ),
        ("PATCH", "PATCH", Some("pull_request"), b"{}".to_vec(), 405),
        ("GET", "GET", Some("pull_request"), Vec::new(), 405),
    ];
    for (name, method, event, body, expected) in cases {
        let (status, answer) = send(&slipway, method, event, body).await;
        assert_eq!(status, expected, "{name}: {answer}");
        if expected >= 400 {
            assert!(
                answer["error"].is_string(),
                "{name}: errors are JSON: {answer}"
            );
        }
    }
    let (_, builds) = slipway.get_json("/builds").await;
    assert_eq!(
        builds["builds"].as_array().map(Vec::len),
        Some(0),
        "no bad delivery made a build"
    );
    assert!(
        github.requests().is_empty(),
        "no bad delivery reached GitHub"
    );
    let good = merged_pr_payload(REPO, &sha(), 2, "main")
        .to_string()
        .into_bytes();
    assert_eq!(
        send(&slipway, "POST", Some("pull_request"), good).await.0,
        202,
        "still up and taking deliveries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_fail_with_the_rule_they_break() {
    let (github, _registry, slipway) = start_stack(&[]).await;
    let thousand: Vec<Value> = (0..1000)
        .map(|i| json!({"service_name": format!("s{i}"), "version": "1"}))
        .collect();
    let cases: Vec<(&str, String, &str)> = vec![
        ("invalid JSON", "{\"services\": [".into(), "not valid JSON"),
        ("wrong shape", r#"{"images": []}"#.into(), "shape not recognised"),
        ("empty list", "[]".into(), "lists no services"),
        ("1,000 services", Value::Array(thousand).to_string(), "at most 256"),
        ("duplicate names", r#"[{"service_name":"dup","version":"1"},{"service_name":"dup","version":"2"}]"#.into(), "more than once"),
        ("uppercase name", r#"{"service_name":"Shouty","version":"1"}"#.into(), "not a valid image name"),
        ("version with /", r#"{"service_name":"slash","version":"1/2"}"#.into(), "not a valid version"),
        ("context ../..", r#"{"services":[{"name":"up","version":"1","context":"../.."}]}"#.into(), "leaves the repository"),
        ("context /etc", r#"{"services":[{"name":"etc","version":"1","context":"/etc"}]}"#.into(), "relative path"),
        ("dockerfile outside", r#"{"services":[{"name":"out","version":"1","context":"svc","dockerfile":"../../Dockerfile"}]}"#.into(), "leaves the context"),
    ];
    let mut builds = Vec::new();
    for (name, manifest, expected) in &cases {
        let commit = sha();
        github.add_commit_files(
            REPO,
            &commit,
            &[
                ("dockerInfo.json", manifest),
                ("Dockerfile", "FROM slipway-test-base:1\n"),
                ("dup/Dockerfile", "FROM slipway-test-base:1\n"),
            ],
        );
        builds.push((name, expected, slipway.merge(REPO, &commit).await));
    }
    for (name, expected, id) in builds {
        let record = slipway.wait_for(&id).await;
        assert_eq!(record["status"], "failed", "{name}: {record}");
        let errors: Vec<String> = std::iter::once(&record["error"])
            .chain(
                record["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| &s["error"]),
            )
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{name}: expected `{expected}` in {errors:?}"
        );
    }
}

/// A raw tar header, written by hand so hostile names and types survive.
fn raw_entry(
    out: &mut Vec<u8>,
    name: &str,
    kind: tar::EntryType,
    data: &[u8],
    claimed: Option<u64>,
    link: Option<&str>,
) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(claimed.unwrap_or(data.len() as u64));
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

fn pax_global(out: &mut Vec<u8>, commit: &str) {
    let body = format!(" comment={commit}\n");
    let record = format!("{}{body}", body.len() + 2);
    raw_entry(
        out,
        "pax_global_header",
        tar::EntryType::XGlobalHeader,
        record.as_bytes(),
        None,
        None,
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

/// A GitHub-like tarball with a valid manifest and Dockerfile, plus `extra`.
fn tarball_with(commit: &str, extra: impl FnOnce(&mut Vec<u8>, &str)) -> Vec<u8> {
    let top = format!("acme-hostile-{}", &commit[..7]);
    let mut tar = Vec::new();
    pax_global(&mut tar, commit);
    raw_entry(
        &mut tar,
        &format!("{top}/"),
        tar::EntryType::Directory,
        b"",
        None,
        None,
    );
    raw_entry(
        &mut tar,
        &format!("{top}/dockerInfo.json"),
        tar::EntryType::Regular,
        br#"{"service_name":"victim","version":"1"}"#,
        None,
        None,
    );
    raw_entry(
        &mut tar,
        &format!("{top}/Dockerfile"),
        tar::EntryType::Regular,
        b"FROM slipway-test-base:1\nCOPY . /src/\n",
        None,
        None,
    );
    extra(&mut tar, &top);
    tar.extend_from_slice(&[0u8; 1024]);
    gzip(&tar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tarballs_fail_the_build_and_nothing_escapes() {
    let (github, registry, slipway) = start_stack(&[("SLIPWAY_MAX_SOURCE_BYTES", "64M")]).await;
    let escape_name = format!("slipway-escape-{}", &sha()[..12]);
    let escape_target = std::path::Path::new("/tmp").join(&escape_name);
    let manifest = r#"{"service_name":"victim","version":"1"}"#;
    let other_commit = "f".repeat(40);
    let up = format!("../../../../../../tmp/{escape_name}");
    let cases: Vec<TarballCase> = vec![
        (
            "`..` entry",
            Box::new(|c: &str| {
                tarball_with(c, |t, top| {
                    raw_entry(
                        t,
                        &format!("{top}/{up}"),
                        tar::EntryType::Regular,
                        b"pwned",
                        None,
                        None,
                    )
                })
            }),
            "contains `..`",
        ),
        (
            "absolute path",
            Box::new(|c: &str| {
                tarball_with(c, |t, _| {
                    raw_entry(
                        t,
                        &format!("/tmp/{escape_name}"),
                        tar::EntryType::Regular,
                        b"pwned",
                        None,
                        None,
                    )
                })
            }),
            "absolute path",
        ),
        (
            "hardlink out",
            Box::new(|c: &str| {
                tarball_with(c, |t, top| {
                    raw_entry(
                        t,
                        &format!("{top}/passwd"),
                        tar::EntryType::Link,
                        b"",
                        None,
                        Some("/etc/passwd"),
                    )
                })
            }),
            "hardlink",
        ),
        (
            "FIFO",
            Box::new(|c: &str| {
                tarball_with(c, |t, top| {
                    raw_entry(
                        t,
                        &format!("{top}/pipe"),
                        tar::EntryType::Fifo,
                        b"",
                        None,
                        None,
                    )
                })
            }),
            "FIFOs",
        ),
        (
            "10 GB sparse claim",
            Box::new(|c: &str| {
                tarball_with(c, |t, top| {
                    raw_entry(
                        t,
                        &format!("{top}/huge"),
                        tar::EntryType::Regular,
                        b"",
                        Some(10 << 30),
                        None,
                    )
                })
            }),
            "more than",
        ),
        (
            "gzip bomb",
            Box::new(|c: &str| {
                let zeros = vec![0u8; 16 << 20];
                tarball_with(c, |t, top| {
                    for i in 0..8 {
                        raw_entry(
                            t,
                            &format!("{top}/bomb{i}"),
                            tar::EntryType::Regular,
                            &zeros,
                            None,
                            None,
                        );
                    }
                })
            }),
            "more than",
        ),
        (
            "not gzip",
            Box::new(|_: &str| b"PK\x03\x04 this is a zip, not a gzip tarball".to_vec()),
            "not a readable gzip tar",
        ),
        (
            "truncated",
            Box::new(|c: &str| {
                let full = tarball_with(c, |t, top| {
                    raw_entry(
                        t,
                        &format!("{top}/data"),
                        tar::EntryType::Regular,
                        &[7u8; 200_000],
                        None,
                        None,
                    )
                });
                full[..full.len() / 2].to_vec()
            }),
            "truncated or corrupt",
        ),
        (
            "pax comment of another commit",
            Box::new(move |_: &str| tarball_with(&other_commit, |_, _| {})),
            "not of the merge commit",
        ),
    ];
    let mut builds = Vec::new();
    for (name, make, expected) in &cases {
        let commit = sha();
        github.add_commit_files(REPO, &commit, &[("dockerInfo.json", manifest)]);
        let bytes = make(&commit);
        github.set_raw_tarball(REPO, &commit, bytes);
        builds.push((name, expected, slipway.merge(REPO, &commit).await));
    }
    for (name, expected, id) in builds {
        let record = slipway.wait_for(&id).await;
        assert_eq!(record["status"], "failed", "{name}: {record}");
        let error = record["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{name}: expected `{expected}` in `{error}`"
        );
        assert_eq!(record["services"][0]["status"], "failed", "{name}");
    }
    assert!(
        !escape_target.exists(),
        "an entry escaped to {}",
        escape_target.display()
    );
    assert!(registry.tags("victim").is_empty(), "nothing was published");
    let peak = slipway.peak_rss_kib().expect("peak RSS");
    println!("peak RSS of slipway after {} hostile tarballs (incl. a 128 MiB gzip bomb, a 10 GB claim): {} MiB", cases.len(), peak / 1024);
    assert!(peak < 300 * 1024, "memory stays bounded: {peak} KiB");
    // The temp space is cleaned after each build.
    let leftovers = std::fs::read_dir(slipway.data_dir.join("work"))
        .expect("work dir")
        .count();
    assert_eq!(leftovers, 0, "temp space left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_get_no_network_and_syntax_lines_are_refused() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let isolated = sha();
    github.add_commit_files(
        REPO,
        &isolated,
        &[
            ("dockerInfo.json", r#"{"service_name":"isolated","version":"1"}"#),
            ("Dockerfile", &format!("FROM slipway-test-base:1\nRUN echo {isolated} && echo \"interfaces: $(ls /sys/class/net | tr '\\n' ' ')\"\n")),
        ],
    );
    let frontend = sha();
    let syntax_files = [
        (
            "dockerInfo.json",
            r#"{"service_name":"frontend","version":"1"}"#,
        ),
        (
            "Dockerfile",
            "# syntax=docker/dockerfile:1.7\nFROM slipway-test-base:1\n",
        ),
    ];
    github.add_commit_files(REPO, &frontend, &syntax_files);
    let isolated_id = slipway.merge(REPO, &isolated).await;
    let frontend_id = slipway.merge(REPO, &frontend).await;
    assert_eq!(slipway.wait_for(&isolated_id).await["status"], "succeeded");
    let log = slipway.build_log(&isolated_id).await;
    assert!(
        log.lines()
            .any(|l| l.starts_with("[isolated] ") && l.ends_with(" interfaces: lo")),
        "--build-network none leaves only loopback:\n{log}"
    );
    let record = slipway.wait_for(&frontend_id).await;
    let error = record["services"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("# syntax=") && error.contains("--allow-syntax-directive"),
        "{error}"
    );

    // Allowed, BuildKit does what the line asks: it fetches the frontend
    // (which fails here, offline); the classic builder ignores the line.
    let allowed = Slipway::start(
        SlipwayOptions::new(&github, &registry).env("SLIPWAY_ALLOW_SYNTAX_DIRECTIVE", "true"),
    )
    .await;
    let again = sha();
    github.add_commit_files(REPO, &again, &syntax_files);
    let record = allowed.wait_for(&allowed.merge(REPO, &again).await).await;
    let error = record["services"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("docker/dockerfile") && !error.contains("--allow-syntax-directive"),
        "the engine, not Slipway, went for the frontend: {record}"
    );
    let classic = Slipway::start(SlipwayOptions::new(&github, &registry).envs(&[
        ("SLIPWAY_ALLOW_SYNTAX_DIRECTIVE", "true"),
        ("SLIPWAY_BUILDER", "classic"),
    ]))
    .await;
    let classic_sha = sha();
    github.add_commit_files(REPO, &classic_sha, &syntax_files);
    let record = classic
        .wait_for(&classic.merge(REPO, &classic_sha).await)
        .await;
    assert_eq!(
        record["status"], "succeeded",
        "allowed by the operator: {record}"
    );
}
