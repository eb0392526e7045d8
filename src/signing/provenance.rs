//! SLSA provenance v1: an in-toto v1 statement about one image, in a DSSE
//! envelope. The build type is documented in docs/provenance.md.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};

use super::keys::SigningKey;

/// Slipway's build type: what `externalParameters` and the dependencies mean.
pub const BUILD_TYPE: &str = "urn:slipway:build-type:merged-pull-request:v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A base image of the build, as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// As written in the Dockerfile's `FROM` (build args substituted).
    pub reference: String,
    /// The registry manifest digest the engine pulled it by, when it was pulled.
    pub repo_digest: Option<String>,
    /// The image id (digest of its config), when the engine has the image.
    pub image_id: Option<String>,
}

/// Everything the provenance says. Only what is in the merge commit or in
/// the build record goes in: never a secret.
#[derive(Debug, Clone)]
pub struct Provenance<'a> {
    /// `HOST[/NAMESPACE]/NAME:VERSION`.
    pub image: &'a str,
    pub digest: &'a str,
    pub repository: &'a str,
    /// The repository's web URL.
    pub source_url: &'a str,
    pub pull_request: u64,
    pub base_ref: &'a str,
    pub commit: &'a str,
    pub manifest_path: &'a str,
    pub service: &'a str,
    pub version: &'a str,
    pub context: &'a str,
    pub dockerfile: &'a str,
    pub target: Option<&'a str>,
    pub build_args: &'a BTreeMap<String, String>,
    pub base_images: &'a [BaseImage],
    pub instance: &'a str,
    pub build_id: &'a str,
    pub started_on: &'a str,
    pub finished_on: &'a str,
}

impl Provenance<'_> {
    pub fn statement(&self) -> Value {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(self.digest);
        json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.image, "digest": {"sha256": hex}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": {
                        "repository": self.repository,
                        "pullRequest": self.pull_request,
                        "baseBranch": self.base_ref,
                        "manifest": self.manifest_path,
                        "service": self.service,
                        "version": self.version,
                        "context": self.context,
                        "dockerfile": self.dockerfile,
                        "target": self.target,
                        "buildArgs": self.build_args,
                    },
                    "resolvedDependencies": self.dependencies(),
                },
                "runDetails": {
                    "builder": {
                        "id": format!("urn:slipway:instance:{}", self.instance),
                        "version": {"slipway": env!("CARGO_PKG_VERSION")},
                    },
                    "metadata": {
                        "invocationId": self.build_id,
                        "startedOn": self.started_on,
                        "finishedOn": self.finished_on,
                    },
                },
            },
        })
    }

    fn dependencies(&self) -> Vec<Value> {
        let source = json!({
            "uri": format!("git+{}@refs/pull/{}/merge", self.source_url, self.pull_request),
            "digest": {"gitCommit": self.commit},
        });
        let bases = self.base_images.iter().map(|base| {
            let uri = format!("pkg:docker/{}", base.reference);
            let found = match (&base.repo_digest, &base.image_id) {
                (Some(d), _) => Some((d, "manifest")),
                (None, Some(id)) => Some((id, "image-id")),
                (None, None) => None,
            };
            match found {
                Some((digest, kind)) => json!({
                    "uri": uri,
                    "digest": {"sha256": digest.strip_prefix("sha256:").unwrap_or(digest)},
                    "annotations": {"digestOf": kind, "imageId": base.image_id},
                }),
                None => {
                    json!({"uri": uri, "annotations": {"digestOf": "unknown: not in the engine"}})
                }
            }
        });
        std::iter::once(source).chain(bases).collect()
    }
}

/// DSSE's pre-authentication encoding: what is actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope holding `statement`, signed with `key`.
pub fn envelope(key: &SigningKey, statement: &Value) -> Vec<u8> {
    let payload = statement.to_string().into_bytes();
    let signature = key.sign(&pae(PAYLOAD_TYPE, &payload));
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "payloadType": PAYLOAD_TYPE,
        "payload": b64.encode(&payload),
        "signatures": [{"keyid": "", "sig": b64.encode(signature)}],
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_as_the_dsse_spec_gives_it() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn statement_names_the_commit_and_the_bases() {
        let args = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let bases = [BaseImage {
            reference: "base:1".into(),
            repo_digest: None,
            image_id: Some("sha256:beef".into()),
        }];
        let provenance = Provenance {
            image: "reg/api:1",
            digest: "sha256:abcd",
            repository: "acme/shop",
            source_url: "https://github.com/acme/shop",
            pull_request: 7,
            base_ref: "main",
            commit: "c0ffee",
            manifest_path: "dockerInfo.json",
            service: "api",
            version: "1",
            context: "api",
            dockerfile: "api/Dockerfile",
            target: None,
            build_args: &args,
            base_images: &bases,
            instance: "host-1",
            build_id: "b1",
            started_on: "2026-01-01T00:00:00Z",
            finished_on: "2026-01-01T00:01:00Z",
        };
        let statement = provenance.statement();
        assert_eq!(statement["subject"][0]["digest"]["sha256"], "abcd");
        let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
        assert_eq!(deps[0]["digest"]["gitCommit"], "c0ffee");
        assert_eq!(deps[1]["digest"]["sha256"], "beef");
        assert_eq!(deps[1]["annotations"]["digestOf"], "image-id");
        let envelope: Value =
            serde_json::from_slice(&envelope(&SigningKey::generate(), &statement)).expect("json");
        assert_eq!(envelope["payloadType"], PAYLOAD_TYPE);
    }
}
