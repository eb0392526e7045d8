//! Signatures and provenance, checked by code that is not Slipway's:
//! sigstore-rs's cosign verification (tests/cosign-verify, a test-only
//! crate), the cosign layout read back over the registry API with ECDSA
//! verified by `ring` (Slipway signs with `p256`), DSSE's encoding written out
//! here from its spec, and Debian's skopeo copying the signature as
//! containers/image does.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine as _;
use serde_json::{json, Value};

const REPO: &str = "acme/shop";

/// The fixed DER header of a P-256 SubjectPublicKeyInfo; the point follows.
const P256_SPKI_HEADER: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `slipway keygen --out DIR`, as a user runs it.
pub(super) fn keygen(dir: &Path, force: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.args(["keygen", "--out"]).arg(dir);
    if force {
        cmd.arg("--force");
    }
    cmd.output().expect("slipway keygen runs")
}

/// The uncompressed EC point of a PKIX PEM public key.
pub(crate) fn public_point(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = b64().decode(body).expect("PEM body is base64");
    let header = hex::decode(P256_SPKI_HEADER).expect("hex");
    assert!(
        der.starts_with(&header),
        "a P-256 SPKI: {}",
        hex::encode(&der)
    );
    assert_eq!(der.len(), header.len() + 65);
    der[header.len()..].to_vec()
}

fn ecdsa_ok(public: &[u8], message: &[u8], der_signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public)
        .verify(message, der_signature)
        .is_ok()
}

/// The registry API over curl, as any client sees it.
pub(crate) struct Oci<'a> {
    pub(crate) registry: &'a TestRegistry,
}

impl Oci<'_> {
    fn curl(&self, args: &[&str]) -> (u16, Vec<u8>) {
        let out = Command::new("curl")
            .args(["--silent", "--max-time", "10", "--cacert"])
            .arg(&self.registry.ca_pem)
            .args([
                "--user",
                &format!("{}:{}", self.registry.user, self.registry.password),
            ])
            .args(["--write-out", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl");
        let mut body = out.stdout;
        let split = body.iter().rposition(|b| *b == b'\n').expect("status line");
        let status = String::from_utf8_lossy(&body[split + 1..])
            .trim()
            .parse()
            .unwrap_or(0);
        body.truncate(split);
        (status, body)
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}/v2/{path}", self.registry.host)
    }

    /// The manifest at `repo:reference`, if there is one.
    pub(crate) fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let accept = "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
        let (status, body) = self.curl(&[
            "-H",
            accept,
            &self.url(&format!("{repo}/manifests/{reference}")),
        ]);
        match status {
            200 => Some(body),
            404 => None,
            other => panic!("manifest {repo}:{reference} answered {other}"),
        }
    }

    fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let (status, body) = self.curl(&["-L", &self.url(&format!("{repo}/blobs/{digest}"))]);
        assert_eq!(status, 200, "blob {digest}");
        body
    }

    pub(crate) fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
        let file = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(file.path(), body).expect("write");
        let (status, text) = self.curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            "--data-binary",
            &format!("@{}", file.path().display()),
            &self.url(&format!("{repo}/manifests/{tag}")),
        ]);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&text));
    }

    /// The `.sig` or `.att` manifest of `digest`.
    pub(crate) fn attachment(&self, repo: &str, digest: &str, suffix: &str) -> Option<Value> {
        let tag = format!("{}.{suffix}", digest.replace(':', "-"));
        self.manifest(repo, &tag)
            .map(|m| serde_json::from_slice(&m).expect("attachment manifest is JSON"))
    }
}

/// sigstore-rs's cosign verification (the test-only crate in
/// tests/cosign-verify): the references it verified `image`'s signatures
/// for with `public_key`, or its refusal.
pub(super) fn sigstore_verify(
    registry: &TestRegistry,
    image: &str,
    public_key: &Path,
) -> Result<Vec<String>, String> {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let binary = BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cosign-verify");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(dir.join("target"))
            .status()
            .expect("cargo builds the verifier");
        assert!(status.success(), "tests/cosign-verify builds");
        dir.join("target/debug/cosign-verify")
    });
    let out = Command::new(binary)
        .arg(image)
        .arg(&registry.ca_pem)
        .arg(public_key)
        .env("REGISTRY_USER", &registry.user)
        .env("REGISTRY_PASSWORD", &registry.password)
        .output()
        .expect("cosign-verify runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut references: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("verified "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    references.sort();
    Ok(references)
}

pub(crate) fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// What `cosign verify --key` checks, written from cosign's documented
/// layout: each simple-signing layer of `sha256-<hex>.sig` whose signature
/// verifies and whose payload names `image_digest`. Returns the references
/// the verified signatures are for.
pub(crate) fn cosign_verify(
    oci: &Oci,
    repo: &str,
    image_digest: &str,
    public: &[u8],
) -> Result<Vec<String>, String> {
    let sig = oci
        .attachment(repo, image_digest, "sig")
        .ok_or("no signature manifest")?;
    assert_eq!(
        sig["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let mut references = Vec::new();
    for layer in sig["layers"].as_array().ok_or("no layers")? {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        let digest = layer["digest"].as_str().ok_or("layer digest")?;
        let payload = oci.blob(repo, digest);
        assert_eq!(digest_of(&payload), digest);
        let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .ok_or("no signature annotation")?;
        references.push(verify_simple_signing(
            &payload,
            signature,
            public,
            image_digest,
        )?);
    }
    if references.is_empty() {
        return Err("no signature".into());
    }
    Ok(references)
}

fn verify_simple_signing(
    payload: &[u8],
    signature_b64: &str,
    public: &[u8],
    image_digest: &str,
) -> Result<String, String> {
    let der = b64().decode(signature_b64).map_err(|e| e.to_string())?;
    if !ecdsa_ok(public, payload, &der) {
        return Err("signature does not verify".into());
    }
    let payload: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let critical = &payload["critical"];
    if critical["type"] != "cosign container image signature" {
        return Err("not a cosign signature".into());
    }
    if critical["image"]["docker-manifest-digest"] != image_digest {
        return Err(format!(
            "signature is for {}, not {image_digest}",
            critical["image"]["docker-manifest-digest"]
        ));
    }
    Ok(critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// DSSE v1 pre-authentication encoding, from the DSSE protocol document.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// What `cosign verify-attestation --type slsaprovenance1` checks: the DSSE
/// envelope's signature, and a statement about `image_digest`. Returns the
/// statement.
fn verify_attestation(
    oci: &Oci,
    repo: &str,
    image_digest: &str,
    public: &[u8],
) -> Result<Value, String> {
    let att = oci
        .attachment(repo, image_digest, "att")
        .ok_or("no attestation manifest")?;
    let layers = att["layers"].as_array().ok_or("no layers")?;
    assert_eq!(layers.len(), 1, "{att}");
    let layer = &layers[0];
    assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(
        layer["annotations"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    let envelope: Value =
        serde_json::from_slice(&oci.blob(repo, layer["digest"].as_str().ok_or("digest")?))
            .map_err(|e| e.to_string())?;
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    let payload = b64()
        .decode(envelope["payload"].as_str().ok_or("payload")?)
        .map_err(|e| e.to_string())?;
    let signatures = envelope["signatures"].as_array().ok_or("signatures")?;
    let verified = signatures.iter().any(|s| {
        let der = b64()
            .decode(s["sig"].as_str().unwrap_or_default())
            .unwrap_or_default();
        ecdsa_ok(public, &pae("application/vnd.in-toto+json", &payload), &der)
    });
    if !verified {
        return Err("envelope signature does not verify".into());
    }
    let statement: Value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    let hex = image_digest.trim_start_matches("sha256:");
    if statement["subject"][0]["digest"]["sha256"] != hex {
        return Err("statement is about another image".into());
    }
    Ok(statement)
}

fn api_dockerfile() -> &'static str {
    "ARG BASE=slipway-test-base:1\n\
     FROM ${BASE} AS build\n\
     ARG GREETING=unset\n\
     RUN echo \"$GREETING\" > /greeting\n\
     FROM slipway-test-base:1 AS runtime\n\
     COPY --from=build /greeting /greeting\n\
     CMD [\"cat\", \"/greeting\"]\n"
}

fn commit_files(github: &FakeGitHub, sha: &str, api_version: &str) {
    let manifest = json!({"services": [
        {"name": "api", "version": api_version, "context": "services/api", "dockerfile": "docker/Dockerfile",
         "build_args": {"GREETING": "signed-hello"}, "target": "runtime"},
        {"name": "team/web", "version": "0.2.0", "context": "web"}
    ]});
    github.add_commit_files(
        REPO,
        sha,
        &[
            ("dockerInfo.json", &manifest.to_string()),
            ("services/api/docker/Dockerfile", api_dockerfile()),
            (
                "web/Dockerfile",
                "FROM slipway-test-base:1\nCOPY index.html /www/index.html\n",
            ),
            ("web/index.html", "<h1>signed</h1>"),
        ],
    );
}

/// Polls `repo:tag` and, the moment it first answers, asks for the `.sig`
/// of what it names. Returns whether the signature was there.
fn watch_first_answer(oci: &Oci, repo: &str, tag: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(manifest) = oci.manifest(repo, tag) {
            return oci.attachment(repo, &digest_of(&manifest), "sig").is_some();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{repo}:{tag} never answered");
}

/// Signing times the build log reports, in ms.
fn signing_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("signed ") && l.contains(", provenance "))
        .filter_map(|l| l.rsplit("in ").next())
        .filter_map(|t| t.trim().trim_end_matches(" ms").parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_images_are_signed_with_provenance_that_verifies() {
    let keys = tempfile::tempdir().expect("tempdir");
    let made = keygen(keys.path(), false);
    assert!(made.status.success(), "{made:?}");
    let key_path = keys.path().join("cosign.key");
    let key_before = std::fs::read(&key_path).expect("cosign.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "cosign.key is private");
    }
    let again = keygen(keys.path(), false);
    assert!(
        !again.status.success(),
        "refuses to overwrite without --force"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read(&key_path).expect("key"), key_before);
    let public_pem = std::fs::read_to_string(keys.path().join("cosign.pub")).expect("cosign.pub");
    let public = public_point(&public_pem);

    let key_env = key_path.display().to_string();
    let (github, registry, slipway) = start_stack(&[
        ("SLIPWAY_SIGNING_KEY", &key_env),
        ("SLIPWAY_INSTANCE_ID", "builder-7"),
    ])
    .await;
    let oci = Oci {
        registry: &registry,
    };
    let sha = sha();
    commit_files(&github, &sha, "1.0.0");
    let id = slipway.merge(REPO, &sha).await;
    // Watched from outside while the build runs: the tag never answers
    // before its signature is there.
    let (api_signed_first, web_signed_first) = std::thread::scope(|scope| {
        let api =
            scope.spawn(|| watch_first_answer(&oci, "api", "1.0.0", Duration::from_secs(240)));
        let web =
            scope.spawn(|| watch_first_answer(&oci, "team/web", "0.2.0", Duration::from_secs(240)));
        (
            api.join().expect("api watcher"),
            web.join().expect("web watcher"),
        )
    });
    assert!(
        api_signed_first,
        "api:1.0.0 answered before its .sig existed"
    );
    assert!(
        web_signed_first,
        "team/web:0.2.0 answered before its .sig existed"
    );
    let record = slipway.wait_for(&id).await;
    let log = slipway.build_log(&id).await;
    println!("build log:\n{log}");
    assert_eq!(record["status"], "succeeded", "{record}");
    let costs = signing_ms(&log);
    assert_eq!(costs.len(), 2, "{log}");
    println!("signing cost per image (sign + attest, registry round trips included): {costs:?} ms");

    let mut digests = Vec::new();
    for (name, repo, reference) in [
        ("api", "api", format!("{}/api:1.0.0", registry.host)),
        (
            "team/web",
            "team/web",
            format!("{}/team/web:0.2.0", registry.host),
        ),
    ] {
        let service = service(&record, name);
        let digest = service["digest"].as_str().expect("digest").to_string();
        let references = cosign_verify(&oci, repo, &digest, &public).expect("signature verifies");
        assert_eq!(references, vec![reference.clone()]);
        let public_file = keys.path().join("cosign.pub");
        assert_eq!(
            sigstore_verify(&registry, &reference, &public_file),
            Ok(vec![reference.clone()]),
            "sigstore-rs verifies {reference}"
        );
        let sig_manifest = oci
            .manifest(repo, &format!("{}.sig", digest.replace(':', "-")))
            .expect("sig");
        assert_eq!(service["signature"], digest_of(&sig_manifest).as_str());
        let att_manifest = oci
            .manifest(repo, &format!("{}.att", digest.replace(':', "-")))
            .expect("att");
        assert_eq!(service["attestation"], digest_of(&att_manifest).as_str());
        // The image itself is untouched: the tag names the digest recorded.
        let tagged = oci
            .manifest(repo, reference.rsplit(':').next().unwrap_or(""))
            .expect("tag");
        assert_eq!(digest_of(&tagged), digest);
        digests.push((repo, digest, reference));
    }

    // The provenance of api.
    let (_, api_digest, api_reference) = &digests[0];
    let statement = verify_attestation(&oci, "api", api_digest, &public).expect("attestation");
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["name"], api_reference.as_str());
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(
        definition["buildType"],
        "urn:slipway:build-type:merged-pull-request:v1"
    );
    let params = &definition["externalParameters"];
    assert_eq!(params["repository"], REPO);
    assert_eq!(params["pullRequest"], 7);
    assert_eq!(params["baseBranch"], "main");
    assert_eq!(params["manifest"], "dockerInfo.json");
    assert_eq!(params["service"], "api");
    assert_eq!(params["version"], "1.0.0");
    assert_eq!(params["context"], "services/api");
    assert_eq!(params["dockerfile"], "services/api/docker/Dockerfile");
    assert_eq!(params["target"], "runtime");
    assert_eq!(params["buildArgs"], json!({"GREETING": "signed-hello"}));
    let deps = definition["resolvedDependencies"].as_array().expect("deps");
    assert_eq!(deps[0]["digest"]["gitCommit"], sha.as_str());
    assert!(deps[0]["uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("git+https://github.com/acme/shop")));
    let base_id = docker(&["image", "inspect", "--format", "{{.Id}}", BASE_IMAGE]);
    let base_hex = base_id.trim().trim_start_matches("sha256:");
    assert_eq!(
        deps.len(),
        2,
        "one base image (the ARG resolves to it): {deps:?}"
    );
    assert_eq!(deps[1]["uri"], format!("pkg:docker/{BASE_IMAGE}"));
    assert_eq!(deps[1]["digest"]["sha256"], base_hex);
    let run = &statement["predicate"]["runDetails"];
    assert_eq!(run["builder"]["id"], "urn:slipway:instance:builder-7");
    assert_eq!(
        run["builder"]["version"]["slipway"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(run["metadata"]["invocationId"], id.as_str());
    assert_eq!(run["metadata"]["startedOn"], record["started_at"]);
    assert!(run["metadata"]["finishedOn"].is_string());
    let text = statement.to_string();
    for secret in [registry.password.as_str(), SECRET] {
        assert!(!text.contains(secret), "a secret in the provenance");
    }

    // What a verifier must refuse.
    let (_, web_digest, _) = &digests[1];
    let other = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .expect("other key");
    let other = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        other.as_ref(),
        &ring::rand::SystemRandom::new(),
    )
    .expect("other key pair");
    let other_public = ring::signature::KeyPair::public_key(&other)
        .as_ref()
        .to_vec();
    assert!(cosign_verify(&oci, "api", api_digest, &other_public).is_err());
    let other_keys = tempfile::tempdir().expect("tempdir");
    assert!(keygen(other_keys.path(), false).status.success());
    assert!(
        sigstore_verify(
            &registry,
            api_reference,
            &other_keys.path().join("cosign.pub")
        )
        .is_err(),
        "sigstore-rs refuses another key"
    );
    assert!(verify_attestation(&oci, "api", api_digest, &other_public).is_err());
    let sig = oci.attachment("api", api_digest, "sig").expect("sig");
    let layer = &sig["layers"][0];
    let payload = oci.blob("api", layer["digest"].as_str().expect("digest"));
    let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .expect("annotation");
    assert!(verify_simple_signing(&payload, signature, &public, api_digest).is_ok());
    let tampered = String::from_utf8_lossy(&payload)
        .replace("api:1.0.0", "api:6.6.6")
        .into_bytes();
    assert!(verify_simple_signing(&tampered, signature, &public, api_digest).is_err());
    assert!(
        verify_simple_signing(&payload, signature, &public, web_digest).is_err(),
        "a signature of api is no signature of web"
    );
    assert!(cosign_verify(&oci, "api", web_digest, &public).is_err());

    let (_, page) = {
        let resp = reqwest::get(format!("{}/builds/{id}/page", slipway.url))
            .await
            .expect("page");
        (resp.status(), resp.text().await.expect("html"))
    };
    assert!(page.contains(">signed<"), "{page}");
    let metrics = slipway.get_text("/metrics").await;
    assert!(
        metrics.contains("slipway_signatures_total{kind=\"signature\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slipway_signatures_total{kind=\"attestation\"} 2"),
        "{metrics}"
    );

    // The same sources merged again: skipped, and the signature kept as it is.
    let again_sha = support::sha();
    commit_files(&github, &again_sha, "1.0.0");
    let again = slipway
        .wait_for(&slipway.merge(REPO, &again_sha).await)
        .await;
    let api = service(&again, "api");
    assert_eq!(api["status"], "skipped", "{again}");
    assert_eq!(api["signature"], service(&record, "api")["signature"]);
    assert_eq!(api["attestation"], service(&record, "api")["attestation"]);

    // The same image under a new version: tagged outside Slipway, then
    // merged with that version from the same sources. The .sig gains a
    // layer for the new reference and keeps the first.
    let manifest = oci.manifest("api", "1.0.0").expect("api");
    oci.put_manifest(
        "api",
        "1.1.0",
        "application/vnd.docker.distribution.manifest.v2+json",
        &manifest,
    );
    let bump_sha = support::sha();
    commit_files(&github, &bump_sha, "1.1.0");
    let bumped = slipway
        .wait_for(&slipway.merge(REPO, &bump_sha).await)
        .await;
    let api = service(&bumped, "api");
    assert_eq!(api["status"], "skipped", "{bumped}");
    assert_eq!(api["digest"], api_digest.as_str());
    let references: BTreeSet<String> = cosign_verify(&oci, "api", api_digest, &public)
        .expect("both verify")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = [
        format!("{}/api:1.0.0", registry.host),
        format!("{}/api:1.1.0", registry.host),
    ]
    .into();
    assert_eq!(references, expected);
    let new_reference = format!("{}/api:1.1.0", registry.host);
    assert_eq!(
        sigstore_verify(&registry, &new_reference, &keys.path().join("cosign.pub")),
        Ok(expected.iter().cloned().collect()),
        "sigstore-rs verifies both references"
    );
    assert_ne!(api["signature"], service(&record, "api")["signature"]);
    let sig = oci.attachment("api", api_digest, "sig").expect("sig");
    assert_eq!(
        sig["layers"][0],
        layer.clone(),
        "the first signature stays first, as it was"
    );
    drop(slipway);
    assert_no_key_material(&key_path, &registry);
}

/// The key's PEM lines appear nowhere Slipway wrote, nor in the registry.
fn assert_no_key_material(key_path: &Path, registry: &TestRegistry) {
    let key = std::fs::read_to_string(key_path).expect("key");
    let storage = registry_storage_files(registry);
    for line in key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
    {
        for file in &storage {
            let bytes = std::fs::read(file).unwrap_or_default();
            assert!(
                !bytes.windows(line.len()).any(|w| w == line.as_bytes()),
                "key material in {}",
                file.display()
            );
        }
    }
}

fn registry_storage_files(registry: &TestRegistry) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(registry.storage_dir(), &mut files);
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_image_gets_signed_and_skopeo_copies_the_signature() {
    let keys = tempfile::tempdir().expect("tempdir");
    assert!(keygen(keys.path(), false).status.success());
    let public =
        public_point(&std::fs::read_to_string(keys.path().join("cosign.pub")).expect("cosign.pub"));
    let (github, registry, unsigned) = start_stack(&[]).await;
    let oci = Oci {
        registry: &registry,
    };
    let sha = sha();
    commit_files(&github, &sha, "1.0.0");
    let first = unsigned.wait_for(&unsigned.merge(REPO, &sha).await).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let digest = service(&first, "api")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert!(service(&first, "api")["signature"].is_null());
    assert!(
        oci.attachment("api", &digest, "sig").is_none(),
        "no key, no signature"
    );
    drop(unsigned);

    let key_env = keys.path().join("cosign.key").display().to_string();
    let slipway = Slipway::start(
        SlipwayOptions::new(&github, &registry).env("SLIPWAY_SIGNING_KEY", &key_env),
    )
    .await;
    let again_sha = support::sha();
    commit_files(&github, &again_sha, "1.0.0");
    let again = slipway
        .wait_for(&slipway.merge(REPO, &again_sha).await)
        .await;
    let api = service(&again, "api");
    assert_eq!(api["status"], "skipped", "{again}");
    assert!(api["signature"].is_string(), "{api}");
    assert!(
        api["attestation"].is_null(),
        "no provenance is made up for a build that did not run: {api}"
    );
    assert_eq!(
        cosign_verify(&oci, "api", &digest, &public).expect("verifies"),
        vec![format!("{}/api:1.0.0", registry.host)]
    );

    // containers/image (here Debian's skopeo) reads and writes the same layout.
    let config = tempfile::tempdir().expect("tempdir");
    let registries_d = config.path().join("registries.d");
    std::fs::create_dir(&registries_d).expect("registries.d");
    std::fs::write(
        registries_d.join("slipway.yaml"),
        format!(
            "docker:\n  {}:\n    use-sigstore-attachments: true\n",
            registry.host
        ),
    )
    .expect("registries.d");
    let policy = config.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("policy");
    let certs = config.path().join("certs");
    std::fs::create_dir(&certs).expect("certs");
    std::fs::copy(&registry.ca_pem, certs.join("ca.crt")).expect("ca");
    let creds = format!("{}:{}", registry.user, registry.password);
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .arg("--registries.d")
        .arg(&registries_d)
        .args(["copy", "--src-creds", &creds, "--dest-creds", &creds])
        .arg("--src-cert-dir")
        .arg(&certs)
        .arg("--dest-cert-dir")
        .arg(&certs)
        .arg(format!("docker://{}/api:1.0.0", registry.host))
        .arg(format!("docker://{}/copied/api:1.0.0", registry.host))
        .output()
        .expect("skopeo (scripts/test-env.sh installs it)");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = oci.attachment("api", &digest, "sig").expect("sig");
    let copied = oci
        .attachment("copied/api", &digest, "sig")
        .expect("skopeo copied the signature");
    assert_eq!(
        copied["layers"], original["layers"],
        "same layers, same annotations"
    );
    let layer_digest = original["layers"][0]["digest"].as_str().expect("digest");
    assert_eq!(
        oci.blob("copied/api", layer_digest),
        oci.blob("api", layer_digest),
        "the copied signature layer is byte for byte the same"
    );
    assert!(cosign_verify(&oci, "copied/api", &digest, &public).is_ok());
    assert_eq!(
        sigstore_verify(
            &registry,
            &format!("{}/copied/api:1.0.0", registry.host),
            &keys.path().join("cosign.pub")
        ),
        Ok(vec![format!("{}/api:1.0.0", registry.host)]),
        "sigstore-rs verifies the copy"
    );
}

fn serve_with_key(key: &Path) -> std::process::Output {
    let data = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("serve")
        .env_clear()
        .env("SLIPWAY_WEBHOOK_SECRET", SECRET)
        .env("SLIPWAY_REGISTRY", "127.0.0.1:1")
        .env("SLIPWAY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SLIPWAY_DATA_DIR", data.path())
        .env("SLIPWAY_SIGNING_KEY", key)
        .output()
        .expect("slipway runs")
}

#[test]
fn a_key_that_cannot_sign_refuses_the_start_without_showing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hidden = "c2VjcmV0LWtleS1ieXRlcy10aGF0LW11c3Qtc3RheS1oaWRkZW4=";
    let cases = [
        ("missing.key", None),
        (
            "garbage.key",
            Some(format!("-----BEGIN PRIVATE KEY-----\n{hidden}\n-----END PRIVATE KEY-----\n")),
        ),
        (
            "cosign-encrypted.key",
            Some(format!(
                "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{hidden}\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
            )),
        ),
        ("empty.key", Some(String::new())),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).expect("write");
        }
        let out = serve_with_key(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{name}: one line: {stderr}"
        );
        assert!(stderr.contains(name), "{name}: names the file: {stderr}");
        assert!(stderr.contains("--signing-key"), "{stderr}");
        assert!(!stderr.contains(hidden), "{name}: the key shows: {stderr}");
    }
}

#[test]
fn signing_cost_without_the_registry() {
    use slipway::signing::provenance::{BaseImage, Provenance};
    let signer = slipway::signing::Signer::new(slipway::signing::SigningKey::generate());
    let args = std::collections::BTreeMap::from([("A".to_string(), "1".to_string())]);
    let bases = [BaseImage {
        reference: BASE_IMAGE.into(),
        repo_digest: None,
        image_id: Some(format!("sha256:{}", "b".repeat(64))),
    }];
    let digest = format!("sha256:{}", "a".repeat(64));
    let provenance = Provenance {
        image: "registry:5443/api:1.0.0",
        digest: &digest,
        repository: REPO,
        source_url: "https://github.com/acme/shop",
        pull_request: 7,
        base_ref: "main",
        commit: "c0ffee",
        manifest_path: "dockerInfo.json",
        service: "api",
        version: "1.0.0",
        context: "api",
        dockerfile: "api/Dockerfile",
        target: None,
        build_args: &args,
        base_images: &bases,
        instance: "bench",
        build_id: "b",
        started_on: "2026-01-01T00:00:00Z",
        finished_on: "2026-01-01T00:00:01Z",
    };
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = signer.signature_layer("registry:5443/api:1.0.0", &digest, &json!({}));
        let _ = signer.attestation_layer(&provenance);
    }
    let each = started.elapsed() / rounds;
    println!("signature + attestation, crypto and encoding only: {each:?} per image");
}
