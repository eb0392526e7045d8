//! Tags beside `NAME:VERSION`, for real: `semver`, `latest`, `sha` and
//! literal tags on a TLS registry, decided from its tag list whatever order
//! the merges come in, each a manifest PUT of the version's own bytes.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::*;
use serde_json::{json, Value};

const REPO: &str = "acme/shop";

/// The digest `repository:tag` names in the registry, or `None` (404).
fn digest_of(registry: &TestRegistry, repository: &str, tag: &str) -> Option<String> {
    let url = format!("https://{}/v2/{repository}/manifests/{tag}", registry.host);
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10", "--head"])
        .arg("--cacert")
        .arg(&registry.ca_pem)
        .arg("--user")
        .arg(format!("{}:{}", registry.user, registry.password))
        .args([
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        ])
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "HEAD {url}: {out:?}");
    let head = String::from_utf8_lossy(&out.stdout).to_string();
    if head.starts_with("HTTP/1.1 404") || head.starts_with("HTTP/2 404") {
        return None;
    }
    assert!(head.contains(" 200"), "HEAD {url}: {head}");
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_string())
        })
        .or_else(|| panic!("no digest for {url}: {head}"))
}

fn record_tags(service: &Value) -> Vec<String> {
    service["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("a published service has `tags`: {service}"))
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_string())
        .collect()
}

/// One commit publishing `api` at `version`, with `tags`; its sources
/// differ by version, so each version is a new image.
pub(crate) fn api_commit(github: &FakeGitHub, version: &str, tags: &[&str]) -> String {
    let commit = sha();
    let manifest = json!({"services": [
        {"name": "api", "version": version, "context": "api", "tags": tags}
    ]});
    github.add_commit_files(
        REPO,
        &commit,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            (
                "api/Dockerfile",
                "FROM slipway-test-base:1\nCOPY version.txt /version.txt\n",
            ),
            ("api/version.txt", version),
        ],
    );
    commit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semver_sequence_out_of_order_moves_tags_only_forward() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let all = ["semver", "latest", "sha", "stable"];
    let sequence = [
        ("1.4.0", vec!["1.4", "1", "latest", "sha", "stable"]),
        ("1.3.9", vec!["1.3", "sha", "stable"]),
        ("2.0.0-rc.1", vec!["sha", "stable"]),
        ("1.4.1", vec!["1.4", "1", "latest", "sha", "stable"]),
        ("0.3.0", vec!["0.3", "sha", "stable"]),
    ];
    let mut digests = BTreeMap::new();
    let mut commits = BTreeMap::new();
    for (version, expected) in &sequence {
        let commit = api_commit(&github, version, &all);
        let id = slipway.merge(REPO, &commit).await;
        let record = slipway.wait_for(&id).await;
        assert_eq!(
            record["status"],
            "succeeded",
            "{record}\n{}",
            slipway.build_log(&id).await
        );
        let api = service(&record, "api");
        let sha_tag = format!("sha-{}", &commit[..7]);
        let expected: Vec<String> = expected
            .iter()
            .map(|t| {
                if *t == "sha" {
                    sha_tag.clone()
                } else {
                    t.to_string()
                }
            })
            .collect();
        assert_eq!(record_tags(api), expected, "{version}: {api}");
        let digest = api["digest"].as_str().expect("digest").to_string();
        assert_eq!(
            digest_of(&registry, "api", version).as_deref(),
            Some(digest.as_str())
        );
        digests.insert(version.to_string(), digest);
        commits.insert(version.to_string(), sha_tag);
    }

    let at = |tag: &str| digest_of(&registry, "api", tag);
    let of = |version: &str| Some(digests[version].clone());
    assert_eq!(at("latest"), of("1.4.1"), "latest never moves back");
    assert_eq!(at("1"), of("1.4.1"));
    assert_eq!(at("1.4"), of("1.4.1"));
    assert_eq!(at("1.3"), of("1.3.9"));
    assert_eq!(at("0.3"), of("0.3.0"));
    assert_eq!(at("stable"), of("0.3.0"), "a literal tag moves every time");
    for (version, sha_tag) in &commits {
        assert_eq!(at(sha_tag), of(version), "{sha_tag}");
    }
    let tags = registry.tags("api");
    for absent in ["0", "2", "2.0"] {
        assert!(!tags.contains(&absent.to_string()), "{absent}: {tags:?}");
    }

    // The page shows them.
    let page = slipway.get_text("/").await;
    assert!(page.contains("also tagged"), "{page}");
}

/// On both push paths: the engine's push through the relay, and Slipway's
/// own upload of the exported image (its manifest is Docker's media type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_pushes_upload_no_blob_and_a_skipped_remerge_sets_a_new_tag() {
    tag_pushes_and_skipped_remerge("relay").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_pushes_upload_no_blob_and_a_skipped_remerge_sets_a_new_tag_on_export() {
    tag_pushes_and_skipped_remerge("export").await
}

async fn tag_pushes_and_skipped_remerge(push_path: &str) {
    let (github, registry, slipway) = start_stack(&[("SLIPWAY_PUSH_PATH", push_path)]).await;
    let first = api_commit(&github, "1.0.0", &["latest"]);
    let record = slipway.wait_for(&slipway.merge(REPO, &first).await).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let digest = service(&record, "api")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_eq!(record_tags(service(&record, "api")), ["latest"]);

    // The same sources, a tag more: the version is skipped, the tags set.
    let uploads_before = blob_uploads(&registry);
    assert!(
        uploads_before > 0,
        "the registry's log shows the first push's uploads"
    );
    let again = api_commit(&github, "1.0.0", &["latest", "sha", "candidate"]);
    let id = slipway.merge(REPO, &again).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    let api = service(&record, "api");
    assert_eq!(api["status"], "skipped");
    let sha_tag = format!("sha-{}", &again[..7]);
    assert_eq!(record_tags(api), ["latest", sha_tag.as_str(), "candidate"]);
    for tag in ["1.0.0", "latest", &sha_tag, "candidate"] {
        assert_eq!(
            digest_of(&registry, "api", tag).as_deref(),
            Some(digest.as_str()),
            "{tag}"
        );
    }
    assert_eq!(
        blob_uploads(&registry),
        uploads_before,
        "tags are manifest PUTs only:\n{log}"
    );
    assert!(log.contains("also as latest"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tags_fail_their_service_with_the_rule() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let commit = sha();
    let manifest = json!({"services": [
        {"name": "bad", "version": "1.0.0", "context": "svc", "tags": ["no good"]},
        {"name": "versiony", "version": "1.0.0", "context": "svc", "tags": ["2.0.0"]},
        {"name": "good", "version": "1.0.0", "context": "svc", "tags": ["edge"]}
    ]});
    github.add_commit_files(
        REPO,
        &commit,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            (
                "svc/Dockerfile",
                "FROM slipway-test-base:1\nCOPY Dockerfile /\n",
            ),
        ],
    );
    let record = slipway.wait_for(&slipway.merge(REPO, &commit).await).await;
    assert_eq!(record["status"], "failed");
    let error = |name: &str| {
        service(&record, name)["error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(error("bad").contains("is not a valid tag"), "{record}");
    assert!(error("versiony").contains("immutable"), "{record}");
    assert_eq!(service(&record, "good")["status"], "succeeded", "{record}");
    assert_eq!(record_tags(service(&record, "good")), ["edge"]);
    assert!(registry.tags("bad").is_empty());
    assert_eq!(registry.tags("good"), ["1.0.0", "edge"]);
}

/// Blob uploads the registry finished so far, from its own log.
fn blob_uploads(registry: &TestRegistry) -> usize {
    let log = registry_log(registry);
    log.lines()
        .filter(|l| l.contains("/blobs/uploads/"))
        .count()
}

fn registry_log(registry: &TestRegistry) -> String {
    std::fs::read_to_string(registry.storage_dir().with_file_name("registry.log"))
        .unwrap_or_default()
}

/// Two instances on one PostgreSQL, each given one of two merges at once:
/// whichever finishes last, `latest` and the major alias end on the higher
/// version, since each decides under the image's moving-tags lease from the
/// tag list, after its own version is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_end_with_the_higher_version_under_latest() {
    let database = crate::support::postgres::database();
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let mut instances = Vec::new();
    for name in ["node-0", "node-1"] {
        let options = SlipwayOptions::new(&github, &registry).envs(&[
            ("SLIPWAY_DATABASE", database.as_str()),
            ("SLIPWAY_INSTANCE_ID", name),
            ("SLIPWAY_QUEUE_POLL", "100ms"),
        ]);
        instances.push(Slipway::start(options).await);
    }
    let rounds = [("1.1.0", "1.0.0"), ("1.2.0", "1.1.1"), ("2.0.0", "1.9.0")];
    for (round, (higher, lower)) in rounds.iter().enumerate() {
        let tags = ["semver", "latest"];
        let (high_commit, low_commit) = (
            api_commit(&github, higher, &tags),
            api_commit(&github, lower, &tags),
        );
        // Alternate which instance gets the higher one.
        let (a, b) = (round % 2, (round + 1) % 2);
        let (high_id, low_id) = tokio::join!(
            instances[a].merge(REPO, &high_commit),
            instances[b].merge(REPO, &low_commit)
        );
        let high = instances[b].wait_for(&high_id).await;
        let low = instances[a].wait_for(&low_id).await;
        println!(
            "round {round}: {higher} on {}, {lower} on {}",
            high["instance"], low["instance"]
        );
        assert_eq!(high["status"], "succeeded", "{high}");
        assert_eq!(low["status"], "succeeded", "{low}");
        let high_digest = service(&high, "api")["digest"].as_str().map(str::to_string);
        assert_eq!(
            digest_of(&registry, "api", "latest"),
            high_digest,
            "round {round}: latest on {higher}, not {lower}\n{}\n{}",
            instances[a].build_log(&high_id).await,
            instances[a].build_log(&low_id).await
        );
        let major = &higher[..1];
        assert_eq!(digest_of(&registry, "api", major), high_digest, "{major}");
        assert!(
            record_tags(service(&high, "api")).contains(&"latest".to_string()),
            "the higher one set latest: {high}"
        );
    }
    // 1.1 stays on 1.1.1, whatever order its round ran in.
    let one_one = instances[0].get_json("/builds?limit=100").await.1["builds"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["services"].as_array().cloned().unwrap_or_default())
        .find(|s| s["version"] == "1.1.1")
        .and_then(|s| s["digest"].as_str().map(str::to_string));
    assert_eq!(digest_of(&registry, "api", "1.1"), one_one);
}

/// A version published before the team took up `semver` (`1.4`), or one
/// named like a literal tag (`nightly`), is immutable: no tag moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_never_overwrites_a_published_version() {
    let (github, registry, slipway) = start_stack(&[]).await;
    let mut digests = BTreeMap::new();
    for version in ["1.4", "nightly"] {
        let commit = api_commit(&github, version, &[]);
        let record = slipway.wait_for(&slipway.merge(REPO, &commit).await).await;
        assert_eq!(record["status"], "succeeded", "{record}");
        assert_eq!(record_tags(service(&record, "api")), Vec::<String>::new());
        let digest = service(&record, "api")["digest"].clone();
        digests.insert(version, digest.as_str().map(str::to_string));
    }
    let commit = api_commit(&github, "1.4.0", &["semver", "nightly"]);
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}\n{log}");
    let api = service(&record, "api");
    assert_eq!(record_tags(api), ["1"], "{log}");
    assert!(
        log.contains("`1.4` stays: it is the published version"),
        "{log}"
    );
    assert!(log.contains("`nightly` stays"), "{log}");
    assert_eq!(digest_of(&registry, "api", "1.4"), digests["1.4"]);
    assert_eq!(digest_of(&registry, "api", "nightly"), digests["nightly"]);
    assert_eq!(
        digest_of(&registry, "api", "1"),
        api["digest"].as_str().map(str::to_string)
    );
}

/// With `--signing-key`, every tag's reference is signed in the image's
/// `.sig` before the tag goes up, beside the version's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tag_is_signed_before_it_goes_up() {
    let keys = tempfile::tempdir().expect("tempdir");
    let made = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["keygen", "--out"])
        .arg(keys.path())
        .output()
        .expect("slipway keygen runs");
    assert!(made.status.success(), "{made:?}");
    let key = keys.path().join("cosign.key").display().to_string();
    let (github, registry, slipway) = start_stack(&[("SLIPWAY_SIGNING_KEY", &key)]).await;
    let commit = api_commit(&github, "1.0.0", &["latest", "stable"]);
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    assert_eq!(
        record["status"],
        "succeeded",
        "{record}\n{}",
        slipway.build_log(&id).await
    );
    let api = service(&record, "api");
    let digest = api["digest"].as_str().expect("digest");
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    assert_eq!(
        digest_of(&registry, "api", &sig_tag).as_deref(),
        api["signature"].as_str(),
        "the record names the .sig with every tag's signature"
    );
    let sig = registry_get(&registry, &format!("api/manifests/{sig_tag}"));
    let sig: Value = serde_json::from_slice(&sig).expect("sig manifest");
    let mut signed: Vec<String> = sig["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|layer| {
            let blob = layer["digest"].as_str().expect("layer digest");
            let payload = registry_get(&registry, &format!("api/blobs/{blob}"));
            let payload: Value = serde_json::from_slice(&payload).expect("payload");
            assert_eq!(
                payload["critical"]["image"]["docker-manifest-digest"],
                digest
            );
            payload["critical"]["identity"]["docker-reference"]
                .as_str()
                .expect("reference")
                .to_string()
        })
        .collect();
    signed.sort();
    let host = &registry.host;
    assert_eq!(
        signed,
        [
            format!("{host}/api:1.0.0"),
            format!("{host}/api:latest"),
            format!("{host}/api:stable")
        ]
    );
}

/// GET `https://HOST/v2/{path}` with the registry's credentials.
fn registry_get(registry: &TestRegistry, path: &str) -> Vec<u8> {
    let url = format!("https://{}/v2/{path}", registry.host);
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--location"])
        .args(["--max-time", "10", "--cacert"])
        .arg(&registry.ca_pem)
        .arg("--user")
        .arg(format!("{}:{}", registry.user, registry.password))
        .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "GET {url}: {out:?}");
    out.stdout
}

/// The read-decide-write of an image's moving tags is under a lease in the
/// shared database: while another build holds it, the version goes up and
/// its tags wait; they follow as soon as it is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_tags_wait_for_the_images_lease_in_the_shared_database() {
    let database = crate::support::postgres::database();
    let name = database
        .rsplit('/')
        .next()
        .expect("a database name")
        .to_string();
    let github = FakeGitHub::start().await;
    let registry = TestRegistry::start();
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry).envs(&[("SLIPWAY_DATABASE", database.as_str())]),
    )
    .await;
    let pg = crate::support::postgres::server();
    let key = format!("{}/api#moving-tags", registry.host);
    pg.sql(
        &name,
        &format!(
            "INSERT INTO tag_leases (tag, holder, lease_until) VALUES ('{key}', 'another-build#1', now() + interval '1 hour')"
        ),
    )
    .expect("lease taken");
    let commit = api_commit(&github, "1.0.0", &["latest"]);
    let id = slipway.merge(REPO, &commit).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !registry.tags("api").contains(&"1.0.0".to_string()) {
        assert!(std::time::Instant::now() < deadline, "1.0.0 never went up");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        registry.tags("api"),
        ["1.0.0"],
        "latest waits for the lease"
    );
    let (_, running) = slipway.get_json(&format!("/builds/{id}")).await;
    assert_eq!(running["status"], "running", "{running}");

    pg.sql(
        &name,
        &format!("DELETE FROM tag_leases WHERE tag = '{key}'"),
    )
    .expect("lease given back");
    let record = slipway.wait_for(&id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let api = service(&record, "api");
    assert_eq!(record_tags(api), ["latest"]);
    assert_eq!(
        digest_of(&registry, "api", "latest").as_deref(),
        api["digest"].as_str()
    );
}
