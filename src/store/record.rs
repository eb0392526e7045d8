//! Build records, as the results API shows them.

use serde::{Deserialize, Serialize};

pub use crate::types::Forge;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::Running => "running",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, BuildStatus::Succeeded | BuildStatus::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    Pending,
    Building,
    Pushing,
    Succeeded,
    Skipped,
    Failed,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Pending => "pending",
            ServiceStatus::Building => "building",
            ServiceStatus::Pushing => "pushing",
            ServiceStatus::Succeeded => "succeeded",
            ServiceStatus::Skipped => "skipped",
            ServiceStatus::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ServiceStatus::Succeeded | ServiceStatus::Skipped | ServiceStatus::Failed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub version: String,
    /// `REGISTRY[/NAMESPACE]/NAME:VERSION`, or null when the name or version is invalid.
    pub image: Option<String>,
    pub status: ServiceStatus,
    pub digest: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    /// With `--signing-key`: the digest of the image's `.sig` manifest.
    #[serde(default)]
    pub signature: Option<String>,
    /// With `--signing-key`: the digest of the image's `.att` manifest.
    #[serde(default)]
    pub attestation: Option<String>,
    /// The tags it set beside `VERSION` (`latest`, `1.4`, `sha-…`, literal
    /// ones); present, possibly empty, once the service is published or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// With several platforms: each platform's manifest, which the index
    /// `digest` lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformRecord>,
}

/// One platform's manifest of a multi-platform image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformRecord {
    /// `os/arch[/variant]`.
    pub platform: String,
    pub digest: String,
    /// With `--signing-key`: the digest of this manifest's `.att` manifest,
    /// when this build attested it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub id: String,
    pub status: BuildStatus,
    pub repository: String,
    pub pull_request: u64,
    pub commit: String,
    pub base_ref: String,
    pub delivery: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub services: Vec<ServiceRecord>,
    /// The repository's web URL (image label `org.opencontainers.image.source`).
    pub source_url: String,
    /// The build this one retries, if any.
    #[serde(default)]
    pub retry_of: Option<String>,
    /// What started it.
    #[serde(default)]
    pub trigger: Trigger,
    /// The `--instance-id` that runs or ran it; null while queued.
    #[serde(default)]
    pub instance: Option<String>,
    /// Which claim of the build this record belongs to: raised each time an
    /// instance takes the build (a takeover, a restart). Every write for a
    /// running build names it, so a superseded instance writes nothing.
    #[serde(default)]
    pub attempt: u32,
    /// The forge the merge came from.
    #[serde(default)]
    pub forge: Forge,
    /// The id of the `slipway` check run (GitHub App); a retry inherits
    /// it, so the same check run is updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_run: Option<u64>,
    /// The id of the sticky comment on the pull request (`--pr-comment`);
    /// a retry inherits it, so the same comment is updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_comment: Option<u64>,
}

/// What started a build: a delivery, `POST /builds/<id>/retry`, or the
/// catch-up of a merge whose delivery never arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    #[default]
    Webhook,
    Retry,
    CatchUp,
    /// The check run's "Re-run" on GitHub.
    Rerun,
}

impl BuildRecord {
    /// `succeeded` when every service succeeded or was skipped.
    pub fn outcome(&self) -> BuildStatus {
        let all_good = self.error.is_none()
            && self
                .services
                .iter()
                .all(|s| matches!(s.status, ServiceStatus::Succeeded | ServiceStatus::Skipped));
        if all_good {
            BuildStatus::Succeeded
        } else {
            BuildStatus::Failed
        }
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(tags: Option<Vec<String>>) -> ServiceRecord {
        ServiceRecord {
            name: "api".into(),
            version: "1.4.0".into(),
            image: None,
            status: ServiceStatus::Succeeded,
            digest: None,
            error: None,
            duration_ms: None,
            signature: None,
            attestation: None,
            tags,
            platforms: Vec::new(),
        }
    }

    #[test]
    fn tags_show_once_published_and_records_without_them_still_read() {
        let unpublished = serde_json::to_value(service(None)).expect("json");
        assert!(unpublished.get("tags").is_none(), "{unpublished}");
        let none_set = serde_json::to_value(service(Some(vec![]))).expect("json");
        assert_eq!(none_set["tags"], serde_json::json!([]));
        let set = service(Some(vec!["latest".into(), "1".into()]));
        let json = serde_json::to_string(&set).expect("json");
        assert_eq!(
            serde_json::from_str::<ServiceRecord>(&json).expect("reads"),
            set
        );
        // A record written before tags existed.
        let old = r#"{"name":"api","version":"1","image":null,"status":"failed","digest":null,"error":"x","duration_ms":null}"#;
        let old: ServiceRecord = serde_json::from_str(old).expect("reads");
        assert_eq!(old.tags, None);
        assert!(old.platforms.is_empty());
        assert!(unpublished.get("platforms").is_none(), "{unpublished}");
        let mut two = service(Some(vec![]));
        two.platforms = vec![PlatformRecord {
            platform: "linux/arm64".into(),
            digest: "sha256:aa".into(),
            attestation: None,
        }];
        let json = serde_json::to_value(&two).expect("json");
        assert_eq!(
            json["platforms"],
            serde_json::json!([{"platform": "linux/arm64", "digest": "sha256:aa"}])
        );
    }
}
