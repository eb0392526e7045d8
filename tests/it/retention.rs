//! Retention on a real registry: versions published through Slipway (signed,
//! tagged `latest` and `semver`), and versions pushed straight to the
//! registry with Slipway's labels (ten in a second, for the runs that need
//! no build): what is kept verifies, what is deleted is gone with its
//! signature and attestation, tags pushed by hand stay, a dry run and
//! `slipway retention plan` change nothing, two instances at once delete
//! each manifest once, a registry that refuses deletes is said once, and
//! garbage collection afterwards frees the deleted versions' blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::signing::{cosign_verify, digest_of, keygen, public_point, Oci};
use crate::support::*;
use crate::tags::api_commit;
use serde_json::{json, Value};
use slipway::registry::{Deleted, Registry, RegistrySettings};
use slipway::retention::{Retention, RetentionSettings};
use slipway::types::{ImageName, Version};

const REPO: &str = "acme/shop";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Publishes `api:version` through Slipway; returns its digest.
async fn publish(github: &FakeGitHub, slipway: &Slipway, version: &str, tags: &[&str]) -> String {
    let commit = api_commit(github, version, tags);
    let id = slipway.merge(REPO, &commit).await;
    let record = slipway.wait_for(&id).await;
    assert_eq!(
        record["status"],
        "succeeded",
        "{record}\n{}",
        slipway.build_log(&id).await
    );
    service(&record, "api")["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

/// The digest `repo:reference` names, if anything.
fn digest_at(oci: &Oci, repo: &str, reference: &str) -> Option<String> {
    oci.manifest(repo, reference).map(|m| digest_of(&m))
}

/// Waits until `done` holds, or fails with `what` after `limit`.
async fn until(limit: Duration, what: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each version's manifest, `.sig` and `.att` are gone.
fn assert_deleted(oci: &Oci, digests: &BTreeMap<String, String>, versions: &[&str]) {
    for version in versions {
        let digest = &digests[*version];
        assert_eq!(oci.manifest("api", digest), None, "{version}'s manifest");
        for kind in ["sig", "att"] {
            let left = oci.attachment("api", digest, kind);
            assert!(left.is_none(), "{version}.{kind}");
        }
    }
}

/// Each version's tag still names its manifest, with its `.sig` and `.att`.
fn assert_kept(oci: &Oci, digests: &BTreeMap<String, String>, versions: &[&str]) {
    for version in versions {
        let digest = &digests[*version];
        let at = digest_at(oci, "api", version);
        assert_eq!(at.as_ref(), Some(digest), "{version}");
        for kind in ["sig", "att"] {
            let there = oci.attachment("api", digest, kind);
            assert!(there.is_some(), "{version}.{kind}");
        }
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_three_after_each_publish_keeps_what_tags_reach_and_their_signatures() {
    let keys = tempfile::tempdir().expect("tempdir");
    assert!(keygen(keys.path(), false).status.success());
    let public_pem = std::fs::read_to_string(keys.path().join("cosign.pub")).expect("pub");
    let public = public_point(&public_pem);
    let key = keys.path().join("cosign.key").display().to_string();
    // Its own database, so `retention plan` can read the same records.
    let database = on_postgres().then(postgres::database);
    let mut extra = vec![
        ("SLIPWAY_SIGNING_KEY", key.as_str()),
        ("SLIPWAY_RETENTION", "keep=3"),
    ];
    extra.extend(database.as_deref().map(|url| ("SLIPWAY_DATABASE", url)));
    let (github, registry, slipway) = start_stack(&extra).await;
    let oci = Oci {
        registry: &registry,
    };
    // 1.4.0 first takes `latest`, `1` and `1.4`; nine 1.3.x follow, each
    // moving `1.3` only: the moving tags keep the oldest version.
    let mut digests = BTreeMap::new();
    digests.insert(
        "1.4.0".to_string(),
        publish(&github, &slipway, "1.4.0", &["semver", "latest"]).await,
    );
    for patch in 0..9 {
        let version = format!("1.3.{patch}");
        let digest = publish(&github, &slipway, &version, &["semver"]).await;
        if patch == 1 {
            // Pushed by hand: never deleted, nor what it names.
            let bytes = oci.manifest("api", &digest).expect("1.3.1 is up");
            let manifest: Value = serde_json::from_slice(&bytes).expect("json");
            let media_type = manifest["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
            oci.put_manifest("api", "debug", media_type, &bytes);
        }
        digests.insert(version, digest);
    }
    let deleted = ["1.3.0", "1.3.2", "1.3.3", "1.3.4", "1.3.5"];
    let kept = ["1.3.8", "1.3.7", "1.3.6", "1.4.0", "1.3.1"];
    let gone = |version: &str| !registry.tags("api").contains(&version.to_string());
    let sig_gone = |version: &str| oci.attachment("api", &digests[version], "att").is_none();
    until(
        Duration::from_secs(60),
        || {
            format!(
                "retention did not delete {deleted:?}: {:?}\n{}",
                registry.tags("api"),
                slipway.log()
            )
        },
        // The registry answers 404 a moment before Slipway logs the delete.
        || {
            deleted.iter().all(|v| gone(v) && sig_gone(v))
                && count(&slipway.log(), "retention deleted ") == 15
        },
    )
    .await;

    assert_deleted(&oci, &digests, &deleted);
    assert_kept(&oci, &digests, &kept);
    for version in kept {
        let digest = &digests[version];
        let signed = cosign_verify(&oci, "api", digest, &public)
            .unwrap_or_else(|e| panic!("{version}'s signature: {e}"));
        assert!(
            signed
                .iter()
                .any(|r| r.ends_with(&format!("/api:{version}"))),
            "{version}: {signed:?}"
        );
    }
    for (tag, version) in [
        ("latest", "1.4.0"),
        ("1", "1.4.0"),
        ("1.4", "1.4.0"),
        ("1.3", "1.3.8"),
        ("debug", "1.3.1"),
    ] {
        assert_eq!(
            digest_at(&oci, "api", tag).as_ref(),
            Some(&digests[version]),
            "{tag}"
        );
    }
    // The records name `api`: the plan finds it, with nothing left to delete.
    let store = (slipway.data_dir.as_path(), database.as_deref());
    let text = plan_text(&registry, store, &[]);
    assert!(
        text.contains("/api: keeps 5 versions, deletes 0 (0 manifests)"),
        "{text}"
    );
    let log = slipway.log();
    assert_eq!(count(&log, "retention deleted version"), 5, "{log}");
    assert!(log.contains("retention deleted version 1.3.0"), "{log}");
    let metrics = slipway.get_text("/metrics").await;
    for kind in ["version", "signature", "attestation"] {
        let line =
            format!("slipway_retention_deleted_total{{kind=\"{kind}\",dry_run=\"false\"}} 5");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
}

/// Ten versions pushed as Slipway labels them, a day apart, each with a
/// layer of its own, a `.sig` and an `.att`; `latest` on the oldest but
/// one, `debug` (by hand) on the third.
struct Pushed {
    registry: Registry,
    name: ImageName,
    digests: BTreeMap<String, String>,
    layers: BTreeMap<String, String>,
}

/// Slipway's registry client for the test registry.
fn client(registry: &TestRegistry) -> Registry {
    let password = slipway::secret::Secret::new(registry.password.clone());
    let settings = RegistrySettings {
        host: &registry.host,
        ca_file: Some(&registry.ca_pem),
        user: Some(&registry.user),
        password: Some(&password),
        namespace: None,
        plain_http: false,
    };
    Registry::new(&settings).expect("registry client")
}

async fn push_ten(test_registry: &TestRegistry) -> Pushed {
    let registry = client(test_registry);
    let name = ImageName::parse("api").expect("name");
    let signer = slipway::signing::Signer::new(slipway::signing::SigningKey::generate());
    let mut pushed = Pushed {
        registry,
        name,
        digests: BTreeMap::new(),
        layers: BTreeMap::new(),
    };
    for day in 1..=10 {
        let version = format!("1.0.{day}");
        let digest = push_version(&pushed, &version, day).await;
        let reference = format!("{}/api:{version}", test_registry.host);
        signer
            .sign(
                &pushed.registry,
                &pushed.name,
                &reference,
                &digest.0,
                &json!({}),
            )
            .await
            .expect("signed");
        put_attestation(&pushed, &digest.0).await;
        pushed.digests.insert(version.clone(), digest.0);
        pushed.layers.insert(version, digest.1);
    }
    for (tag, version) in [("latest", "1.0.2"), ("debug", "1.0.3")] {
        let tag = Version::parse(tag).expect("tag");
        let untagged = pushed
            .registry
            .tagged(&pushed.name, &Version::parse(version).expect("v"))
            .await
            .expect("read")
            .expect("there");
        pushed
            .registry
            .tag(&pushed.name, &tag, &untagged)
            .await
            .expect("tagged");
    }
    pushed
}

/// Returns the manifest's digest and its layer's.
async fn push_version(pushed: &Pushed, version: &str, day: u32) -> (String, String) {
    let layer = format!("the layer of {version}").into_bytes();
    let config = labelled_config(version, day, "amd64", &layer);
    let digest = put_image(
        pushed,
        version,
        &config,
        &layer,
        "application/vnd.oci.image.layer.v1.tar",
    )
    .await;
    (digest, digest_of(&layer))
}

/// An image config with the labels Slipway sets, published on January `day`.
fn labelled_config(version: &str, day: u32, arch: &str, layer: &[u8]) -> Vec<u8> {
    json!({
        "architecture": arch, "os": "linux",
        "config": {"Labels": {
            "org.opencontainers.image.version": version,
            "io.slipway.inputs": format!("sha256:{}", "0".repeat(64)),
            "org.opencontainers.image.created": format!("2026-01-{day:02}T00:00:00Z"),
        }},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
    })
    .to_string()
    .into_bytes()
}

/// `version` as an OCI index of two platform images pushed by digest, the
/// index signed and each platform attested, as multi-platform publishes
/// are; returns the index's digest and the platforms'.
async fn push_index(
    pushed: &Pushed,
    oci: &Oci<'_>,
    version: &str,
    day: u32,
) -> (String, Vec<String>) {
    let mut platforms = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = format!("the {arch} layer of {version}").into_bytes();
        let config = labelled_config(version, day, arch, &layer);
        let manifest = image_manifest(
            pushed,
            &config,
            &layer,
            "application/vnd.oci.image.layer.v1.tar",
        )
        .await;
        let digest = digest_of(&manifest);
        oci.put_manifest("api", &digest, OCI_MANIFEST, &manifest);
        put_attestation(pushed, &digest).await;
        platforms.push(
            json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
            "platform": {"os": "linux", "architecture": arch}}),
        );
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms})
        .to_string()
        .into_bytes();
    oci.put_manifest("api", version, OCI_INDEX, &index);
    let digest = digest_of(&index);
    let signer = slipway::signing::Signer::new(slipway::signing::SigningKey::generate());
    let reference = format!("{}/api:{version}", oci.registry.host);
    signer
        .sign(
            &pushed.registry,
            &pushed.name,
            &reference,
            &digest,
            &json!({}),
        )
        .await
        .expect("signed");
    let children = platforms
        .iter()
        .filter_map(|p| p["digest"].as_str().map(str::to_string))
        .collect();
    (digest, children)
}

async fn put_attestation(pushed: &Pushed, subject: &str) {
    let statement = format!("attests {subject}").into_bytes();
    let config = b"{}".to_vec();
    let tag = format!("{}.att", subject.replace(':', "-"));
    put_image(
        pushed,
        &tag,
        &config,
        &statement,
        "application/vnd.dsse.envelope.v1+json",
    )
    .await;
}

/// Pushes `config` and one layer, then an OCI manifest of them under `tag`.
async fn put_image(
    pushed: &Pushed,
    tag: &str,
    config: &[u8],
    layer: &[u8],
    layer_type: &str,
) -> String {
    let manifest = image_manifest(pushed, config, layer, layer_type).await;
    let tag = Version::parse(tag).expect("tag");
    pushed
        .registry
        .put_manifest(&pushed.name, &tag, &manifest, OCI_MANIFEST)
        .await
        .expect("manifest")
}

/// Pushes `config` and one layer; returns the OCI manifest naming them.
async fn image_manifest(pushed: &Pushed, config: &[u8], layer: &[u8], layer_type: &str) -> Vec<u8> {
    let (registry, name) = (&pushed.registry, &pushed.name);
    registry.put_blob(name, layer).await.expect("layer");
    registry.put_blob(name, config).await.expect("config");
    json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": digest_of(layer), "size": layer.len()}],
    })
    .to_string()
    .into_bytes()
}

/// A retention run as an instance runs it, on `store`.
fn instance(
    test_registry: &TestRegistry,
    store: Arc<dyn slipway::store::Store>,
    dry_run: bool,
    keep: usize,
) -> (Retention, Arc<slipway::metrics::Metrics>) {
    let registry = client(test_registry);
    let metrics = Arc::new(slipway::metrics::Metrics::default());
    let policy = slipway::config::RetentionPolicy {
        keep: std::num::NonZeroUsize::new(keep).expect("keep"),
        max_age: None,
    };
    let retention = Retention::new(
        RetentionSettings {
            policy,
            dry_run,
            lease: Duration::from_secs(5),
        },
        registry,
        store,
        metrics.clone(),
    );
    (retention, metrics)
}

/// Every tag and the manifest each names, as the registry answers.
fn snapshot(registry: &TestRegistry) -> BTreeMap<String, Option<String>> {
    let oci = Oci { registry };
    registry
        .tags("api")
        .into_iter()
        .map(|tag| {
            let digest = digest_at(&oci, "api", &tag);
            (tag, digest)
        })
        .collect()
}

/// `slipway retention plan IMAGES…` with `store`'s records: a data dir, and
/// the database when there is one.
fn plan_cli(
    registry: &TestRegistry,
    store: (&Path, Option<&str>),
    retention: &str,
    images: &[&str],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["retention", "plan"])
        .args(images)
        .env_clear()
        .envs(store.1.map(|url| ("SLIPWAY_DATABASE", url)))
        .env("SLIPWAY_REGISTRY", &registry.host)
        .env("SLIPWAY_REGISTRY_CA", &registry.ca_pem)
        .env("SLIPWAY_REGISTRY_USER", &registry.user)
        .env("SLIPWAY_REGISTRY_PASSWORD", &registry.password)
        .env("SLIPWAY_DATA_DIR", store.0)
        .env("SLIPWAY_RETENTION", retention)
        .output()
        .expect("slipway retention plan runs")
}

/// What `slipway retention plan` with keep=3 prints, once it succeeded.
fn plan_text(registry: &TestRegistry, store: (&Path, Option<&str>), images: &[&str]) -> String {
    let out = plan_cli(registry, store, "keep=3", images);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{stderr}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_dry_run_change_nothing_two_instances_delete_once_and_gc_frees_blobs() {
    let mut registry = TestRegistry::start();
    let pushed = push_ten(&registry).await;
    let oci = Oci {
        registry: &registry,
    };
    let before = snapshot(&registry);
    assert_eq!(before.len(), 10 * 3 + 2, "{before:?}");
    // keep=3: 1.0.10, 1.0.9, 1.0.8; `latest` keeps 1.0.2, `debug` 1.0.3.
    let deleted = ["1.0.1", "1.0.4", "1.0.5", "1.0.6", "1.0.7"];
    let kept = ["1.0.10", "1.0.9", "1.0.8", "1.0.2", "1.0.3"];

    let data = tempfile::tempdir().expect("tempdir");
    let text = plan_text(&registry, (data.path(), None), &["api"]);
    assert!(
        text.contains("keeps 5 versions, deletes 5 (15 manifests)"),
        "{text}"
    );
    assert!(
        text.contains("keep    1.0.2  (tag `latest` points at it)"),
        "{text}"
    );
    assert!(
        text.contains("keep    1.0.3  (tag `debug` points at it)"),
        "{text}"
    );
    for version in deleted {
        assert!(
            text.contains(&format!(
                "delete  version {version}  {}",
                pushed.digests[version]
            )),
            "{text}"
        );
    }
    let refused = plan_cli(&registry, (data.path(), None), "keep=0", &["api"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("keep at least 1"));

    let store = slipway::store::open(None, data.path())
        .await
        .expect("store");
    let (dry, dry_metrics) = instance(&registry, store.clone(), true, 3);
    let would = dry.run(&pushed.name).await.expect("dry run");
    assert_eq!(would.len(), 15, "{would:#?}");
    let rendered = dry_metrics.render(0, "test");
    assert!(
        rendered.contains("slipway_retention_deleted_total{kind=\"version\",dry_run=\"true\"} 5"),
        "{rendered}"
    );
    assert_eq!(
        snapshot(&registry),
        before,
        "the plan and the dry run changed nothing"
    );

    // Two instances at once, each with its own store connection and client.
    let other_store = slipway::store::open(None, data.path())
        .await
        .expect("store");
    let (a, a_metrics) = instance(&registry, store, false, 3);
    let (b, b_metrics) = instance(&registry, other_store, false, 3);
    let (ran_a, ran_b) = tokio::join!(a.run(&pushed.name), b.run(&pushed.name));
    let (ran_a, ran_b) = (ran_a.expect("instance a"), ran_b.expect("instance b"));
    let mut all: Vec<String> = ran_a
        .iter()
        .chain(&ran_b)
        .map(|d| d.digest.clone())
        .collect();
    assert_eq!(all.len(), 15, "a: {ran_a:#?}\nb: {ran_b:#?}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 15, "each manifest deleted once");
    let counted = |m: &slipway::metrics::Metrics| {
        let text = m.render(0, "t");
        ["version", "signature", "attestation"]
            .iter()
            .map(|k| {
                let prefix =
                    format!("slipway_retention_deleted_total{{kind=\"{k}\",dry_run=\"false\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .map_or(0, |n| n.parse::<usize>().expect("count"))
            })
            .sum::<usize>()
    };
    assert_eq!(counted(&a_metrics) + counted(&b_metrics), 15);
    // A manifest someone else deleted first is no error.
    assert_eq!(
        pushed
            .registry
            .delete_manifest(&pushed.name, &pushed.digests["1.0.1"])
            .await
            .expect("delete"),
        Deleted::Absent
    );

    assert_deleted(&oci, &pushed.digests, &deleted);
    assert_kept(&oci, &pushed.digests, &kept);
    assert_eq!(
        digest_at(&oci, "api", "debug").as_ref(),
        Some(&pushed.digests["1.0.3"])
    );
    let again = a.run(&pushed.name).await.expect("third run");
    assert!(again.is_empty(), "nothing more to delete: {again:#?}");

    // The registry's own garbage collection, with the registry stopped,
    // frees the deleted versions' layers and keeps the others'.
    registry.stop();
    let gc = Command::new("docker-registry")
        .arg("garbage-collect")
        .arg(registry.config_path())
        .output()
        .expect("docker-registry garbage-collect runs");
    assert!(gc.status.success(), "{gc:?}");
    let blob = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        registry
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
    };
    for version in deleted {
        assert!(
            !blob(&pushed.layers[version]).exists(),
            "{version}'s layer freed"
        );
    }
    for version in kept {
        assert!(
            blob(&pushed.layers[version]).exists(),
            "{version}'s layer kept"
        );
    }
}

/// Slipway with `keep=1`, its periodic run every second.
async fn keep_one_every_second(registry: &TestRegistry) -> (FakeGitHub, Slipway) {
    let github = FakeGitHub::start().await;
    let slipway = Slipway::start(SlipwayOptions::new(&github, registry).envs(&[
        ("SLIPWAY_RETENTION", "keep=1"),
        ("SLIPWAY_RETENTION_INTERVAL", "1s"),
    ]))
    .await;
    (github, slipway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_refuses_deletes_is_said_once_with_what_to_change() {
    let registry = TestRegistry::start_without_deletes();
    let (github, slipway) = keep_one_every_second(&registry).await;
    publish(&github, &slipway, "1.0.0", &[]).await;
    publish(&github, &slipway, "1.0.1", &[]).await;
    let said = "the registry refuses to delete manifests";
    until(
        Duration::from_secs(30),
        || format!("no refusal logged:\n{}", slipway.log()),
        || slipway.log().contains(said),
    )
    .await;
    // Hourly runs (every second here) do not try again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = slipway.log();
    assert_eq!(count(&log, said), 1, "{log}");
    assert!(log.contains("storage: delete: enabled: true"), "{log}");
    let tags: BTreeSet<String> = registry.tags("api").into_iter().collect();
    assert!(tags.contains("1.0.0") && tags.contains("1.0.1"), "{tags:?}");
}

#[test]
fn retention_values_that_do_not_parse_refuse_the_start() {
    for (value, why) in [
        ("keep=0", "keep at least 1"),
        ("keep=three", "not a whole number"),
        ("max-age=30d", "names no keep"),
        ("keep=3,max-age=forever", "not a duration"),
        ("keep=3,older=1d", "unknown retention setting"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("serve")
            .env_clear()
            .env("SLIPWAY_WEBHOOK_SECRET", "s")
            .env("SLIPWAY_REGISTRY", "127.0.0.1:1")
            .env("SLIPWAY_RETENTION", value)
            .output()
            .expect("slipway runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{value}: {stderr}");
        assert!(stderr.contains("--retention"), "{value}: {stderr}");
        assert!(stderr.contains(why), "{value}: {stderr}");
    }
}

/// The periodic run (every second here, hourly by default) on the images
/// Slipway's records name: a version another instance pushed counts, and
/// goes when it is not among the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_run_counts_versions_published_elsewhere() {
    let test_registry = TestRegistry::start();
    let (github, slipway) = keep_one_every_second(&test_registry).await;
    let published = publish(&github, &slipway, "2.0.0", &[]).await;
    // The run after the publish found one version; the next ones are the
    // periodic runs'.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let registry = client(&test_registry);
    let pushed = Pushed {
        registry,
        name: ImageName::parse("api").expect("name"),
        digests: BTreeMap::new(),
        layers: BTreeMap::new(),
    };
    // Published elsewhere in January: older than 2.0.0.
    let (elsewhere, _) = push_version(&pushed, "1.9.0", 15).await;
    let oci = Oci {
        registry: &test_registry,
    };
    until(
        Duration::from_secs(30),
        || format!("1.9.0 not deleted:\n{}", slipway.log()),
        || slipway.log().contains("retention deleted version 1.9.0"),
    )
    .await;
    assert_eq!(oci.manifest("api", &elsewhere), None);
    assert_eq!(digest_at(&oci, "api", "2.0.0"), Some(published));
}

/// Whether the registry still has the manifest `digest` (index or image).
async fn there(pushed: &Pushed, digest: &str) -> bool {
    let found = pushed
        .registry
        .manifest_by_digest(&pushed.name, digest)
        .await;
    found.expect("read").is_some()
}

/// A multi-platform version: its index, both platform manifests, the
/// index's signature and each platform's attestation go; the kept index
/// keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_goes_with_its_platform_manifests_and_their_attachments() {
    let registry = TestRegistry::start();
    let oci = Oci {
        registry: &registry,
    };
    let pushed = Pushed {
        registry: client(&registry),
        name: ImageName::parse("api").expect("name"),
        digests: BTreeMap::new(),
        layers: BTreeMap::new(),
    };
    let (old, old_platforms) = push_index(&pushed, &oci, "2.0.0", 1).await;
    let (new, new_platforms) = push_index(&pushed, &oci, "2.0.1", 2).await;
    let data = tempfile::tempdir().expect("tempdir");
    let store = slipway::store::open(None, data.path())
        .await
        .expect("store");
    let (retention, _) = instance(&registry, store, false, 1);
    let deleted = retention.run(&pushed.name).await.expect("run");
    let kinds: Vec<&str> = deleted.iter().map(|d| d.target.kind()).collect();
    assert_eq!(
        kinds,
        [
            "version",
            "platform",
            "platform",
            "signature",
            "attestation",
            "attestation"
        ]
    );
    for digest in std::iter::once(&old).chain(&old_platforms) {
        assert!(!there(&pushed, digest).await, "{digest} deleted");
    }
    assert!(oci.attachment("api", &old, "sig").is_none());
    for digest in std::iter::once(&new).chain(&new_platforms) {
        assert!(there(&pushed, digest).await, "{digest} kept");
    }
    assert!(oci.attachment("api", &new, "sig").is_some());
    for platform in &new_platforms {
        assert!(oci.attachment("api", platform, "att").is_some());
    }
    assert_eq!(
        registry
            .tags("api")
            .iter()
            .filter(|t| t.starts_with("2.0"))
            .count(),
        1
    );
}
