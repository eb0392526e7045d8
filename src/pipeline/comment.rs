//! `--pr-comment`: the finished build, summed up on its pull request.

use std::fmt::Write;

use super::{save, Pipeline};
use crate::store::{BuildRecord, ServiceStatus};

/// Marks Slipway's comment for people reading the thread's source.
const MARKER: &str = "<!-- slipway:build-summary -->";

impl Pipeline {
    /// Creates or updates the sticky comment; a failure is logged, never
    /// fails the build.
    pub(super) async fn update_pr_comment(&self, record: &mut BuildRecord) {
        if !self.settings.pr_comment {
            return;
        }
        let Some(forge) = self.forges.client(record.forge).filter(|f| f.has_token()) else {
            return;
        };
        let Ok(repo) = super::record_repository(record) else {
            return;
        };
        let body = render(record, self.settings.public_url.as_deref());
        let written = forge
            .upsert_pr_comment(&repo, record.pull_request, record.pr_comment, &body)
            .await;
        match written {
            Ok(id) if record.pr_comment != Some(id) => {
                record.pr_comment = Some(id);
                save(&self.store, record).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "could not write the pull request comment"),
        }
    }
}

fn render(record: &BuildRecord, public_url: Option<&str>) -> String {
    let mut out = format!(
        "{MARKER}\n**Slipway** build of `{}`: **{}**",
        record.commit.get(..12).unwrap_or(&record.commit),
        record.status.as_str()
    );
    if let Some(base) = public_url {
        let _ = write!(
            out,
            " ([build page]({}/builds/{}/page))",
            base.trim_end_matches('/'),
            record.id
        );
    }
    out.push_str("\n\n");
    if let Some(error) = &record.error {
        let _ = writeln!(out, "The build failed: {}\n", one_line(error));
    }
    out.push_str(&images_table(record));
    out
}

/// One row a service: its image, other tags, and result (digest or error).
/// The PR comment and the check run's summary both show it.
pub(super) fn images_table(record: &BuildRecord) -> String {
    let mut out = String::new();
    if !record.services.is_empty() {
        out.push_str("| service | image | result |\n| --- | --- | --- |\n");
    }
    for service in &record.services {
        let image = service.image.as_deref().unwrap_or("—");
        let result = match (&service.status, &service.digest, &service.error) {
            (ServiceStatus::Failed, _, Some(error)) => format!("failed: {}", one_line(error)),
            (status, Some(digest), _) => format!("{} `{digest}`", status.as_str()),
            (status, None, _) => status.as_str().to_string(),
        };
        let also = match service.tags.as_deref() {
            Some(tags) if !tags.is_empty() => {
                let tags: Vec<String> = tags.iter().map(|t| format!("`{t}`")).collect();
                format!(", also {}", one_line(&tags.join(" ")))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} {} | `{image}`{also} | {result} |",
            service.name, service.version
        );
    }
    out
}

/// Keeps a message inside its table cell.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BuildStatus, ServiceRecord};

    #[test]
    fn the_comment_lists_images_digests_and_errors() {
        let service =
            |name: &str, status, digest: Option<&str>, error: Option<&str>| ServiceRecord {
                name: name.into(),
                version: "1.0.0".into(),
                image: Some(format!("reg:5443/{name}:1.0.0")),
                status,
                digest: digest.map(Into::into),
                error: error.map(Into::into),
                duration_ms: None,
                signature: None,
                attestation: None,
                tags: None,
                platforms: Vec::new(),
            };
        let merge = crate::trigger::MergedPullRequest {
            repository: crate::types::Repository::parse("o/r").expect("a repository"),
            number: 3,
            commit: crate::types::CommitSha::parse(&"a".repeat(40)).expect("a commit"),
            base_ref: "main".into(),
            source_url: String::new(),
            forge: Default::default(),
        };
        let mut record = BuildRecord {
            id: "b1".into(),
            status: BuildStatus::Failed,
            services: vec![
                service("api", ServiceStatus::Succeeded, Some("sha256:abc"), None),
                service(
                    "web",
                    ServiceStatus::Failed,
                    None,
                    Some("bad | thing\nhere"),
                ),
            ],
            ..BuildRecord::queued(merge, None, Default::default())
        };
        record.services.push(ServiceRecord {
            tags: Some(vec!["1.0".into(), "latest".into()]),
            platforms: Vec::new(),
            ..service("tagged", ServiceStatus::Skipped, Some("sha256:def"), None)
        });
        let text = render(&record, Some("https://x.example/"));
        assert!(text.contains(
            "| tagged 1.0.0 | `reg:5443/tagged:1.0.0`, also `1.0` `latest` | skipped `sha256:def` |"
        ));
        assert!(text.starts_with(MARKER));
        assert!(text.contains("| api 1.0.0 | `reg:5443/api:1.0.0` | succeeded `sha256:abc` |"));
        assert!(text.contains("failed: bad \\| thing here"));
        assert!(text.contains("https://x.example/builds/b1/page"));
    }
}
