//! The retention decision for one image repository, from what the registry
//! holds: its tags, the manifest each names, and what those manifests say.
//! Pure: no clock, no network; [`super::run`] reads the registry and acts.
//!
//! The rules, safest first:
//! - only a *version* is ever deleted: a tag whose image Slipway built (its
//!   config carries `io.slipway.inputs`) and whose version label is the tag
//!   itself. Every other tag (`latest`, the semver aliases, literal tags,
//!   tags pushed by hand) is kept, and so is every manifest it reaches;
//! - a `sha-<7 hex>` tag on a version's manifest goes with that version: it
//!   names the commit a version came from, not a release channel;
//! - the `keep` most recently published versions are kept (published when:
//!   the `org.opencontainers.image.created` label Slipway sets at publish,
//!   else the config's `created`); with `max-age`, so is every version
//!   younger than it, or whose age cannot be told;
//! - an index keeps its platform manifests; a kept manifest keeps its
//!   `.sig` and `.att`; nothing a kept tag reaches is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::RetentionPolicy;
use crate::tags::SemVer;

/// What Slipway read of one manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// An index's platform manifests; empty for an image.
    pub children: Vec<String>,
    /// The `org.opencontainers.image.version` label.
    pub version: Option<String>,
    /// Whether Slipway built it (the `io.slipway.inputs` label).
    pub slipway: bool,
    pub created: Option<OffsetDateTime>,
}

/// One repository as the registry holds it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Every tag, with the digest of the manifest it names.
    pub tags: BTreeMap<String, String>,
    /// The manifests the tags name (and an index's children), by digest.
    /// A tag whose manifest is missing here counts as a tag pushed by hand.
    pub manifests: BTreeMap<String, Manifest>,
    /// Digests that `.sig`/`.att` tags name whose manifest is gone (a run
    /// stopped between deleting an image and its signature).
    pub gone: BTreeSet<String>,
}

/// Why a version stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Among the `keep` most recently published (1 is the newest).
    Newest(usize),
    /// Published less than `max-age` ago.
    Young,
    /// With `max-age`, a version whose publish time is unknown is kept.
    AgeUnknown,
    /// Another kept tag reaches its manifest.
    Reached(String),
}

/// What one deletion removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A version's manifest (its other tags go with it).
    Version(String),
    /// A platform manifest of the index a version named.
    Platform { version: String },
    /// The `.sig` of `subject`.
    Signature { subject: String },
    /// The `.att` of `subject`.
    Attestation { subject: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub digest: String,
    pub target: Target,
}

/// The decision for one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Each version kept, newest first, and why.
    pub kept: Vec<(String, Kept)>,
    /// In the order to delete: each manifest before what hangs off it, so an
    /// interrupted run leaves no tag naming a half-deleted image.
    pub deletions: Vec<Deletion>,
}

impl Plan {
    /// The versions whose manifests are deleted.
    pub fn deleted_versions(&self) -> Vec<&str> {
        self.deletions
            .iter()
            .filter_map(|d| match &d.target {
                Target::Version(tag) => Some(tag.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Which of an attachment's two kinds a tag is, and of what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attachment {
    Signature,
    Attestation,
}

/// `sha256-<64 hex>.sig` / `.att` → the subject's digest and the kind.
fn attachment(tag: &str) -> Option<(String, Attachment)> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, suffix) = rest.split_once('.')?;
    let kind = match suffix {
        "sig" => Attachment::Signature,
        "att" => Attachment::Attestation,
        _ => return None,
    };
    let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| (format!("sha256:{hex}"), kind))
}

fn attachment_tag(subject: &str, kind: Attachment) -> Option<String> {
    let hex = subject.strip_prefix("sha256:")?;
    let suffix = match kind {
        Attachment::Signature => "sig",
        Attachment::Attestation => "att",
    };
    Some(format!("sha256-{hex}.{suffix}"))
}

/// `sha-` and seven hex characters, as `tags: [sha]` names a commit.
fn is_sha_tag(tag: &str) -> bool {
    tag.strip_prefix("sha-")
        .is_some_and(|hex| hex.len() == 7 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

struct Version<'a> {
    tag: &'a str,
    digest: &'a str,
    created: Option<OffsetDateTime>,
}

/// Newest first: by publish time (unknown last), then by semantic version,
/// then by tag, so the order never depends on the listing's.
fn newest_first(a: &Version, b: &Version) -> std::cmp::Ordering {
    b.created
        .cmp(&a.created)
        .then_with(|| SemVer::parse(b.tag).cmp(&SemVer::parse(a.tag)))
        .then_with(|| b.tag.cmp(a.tag))
}

/// Decides what `policy` keeps and deletes in `listing`, at `now`.
pub fn plan(listing: &Listing, policy: &RetentionPolicy, now: OffsetDateTime) -> Plan {
    let versions = versions(listing);
    let mut roots = other_tags(listing, &versions);
    let mut kept = Vec::new();
    let mut candidates = Vec::new();
    for (rank, version) in versions.iter().enumerate() {
        let why = if rank < policy.keep.get() {
            Some(Kept::Newest(rank + 1))
        } else {
            young(version.created, policy.max_age, now)
        };
        match why {
            Some(why) => {
                roots.entry(version.digest).or_insert(version.tag);
                kept.push((version.tag.to_string(), why));
            }
            None => candidates.push(version),
        }
    }
    let reached = reach(listing, &roots);
    let mut pruner = Pruner {
        listing,
        protected: attachments_of(listing, reached.keys().copied()),
        reached: &reached,
        deleted: BTreeSet::new(),
        deletions: Vec::new(),
    };
    for version in candidates {
        match reached.get(version.digest) {
            Some(by) => kept.push((version.tag.to_string(), Kept::Reached(by.to_string()))),
            None => pruner.version(version),
        }
    }
    pruner.orphans();
    Plan {
        kept,
        deletions: pruner.deletions,
    }
}

/// Slipway's versions in the listing, newest first.
fn versions(listing: &Listing) -> Vec<Version<'_>> {
    let mut versions: Vec<Version> = listing
        .tags
        .iter()
        .filter(|(tag, digest)| is_version(listing, tag, digest))
        .map(|(tag, digest)| Version {
            tag,
            digest,
            created: listing.manifests.get(digest).and_then(|m| m.created),
        })
        .collect();
    versions.sort_by(newest_first);
    versions
}

/// A tag whose image Slipway built with that tag as its version label.
fn is_version(listing: &Listing, tag: &str, digest: &str) -> bool {
    listing
        .manifests
        .get(digest)
        .is_some_and(|m| m.slipway && m.version.as_deref() == Some(tag))
}

/// Every tag that is neither a version, an attachment, nor a version's
/// `sha-` tag, by the digest it keeps.
fn other_tags<'a>(listing: &'a Listing, versions: &[Version<'a>]) -> BTreeMap<&'a str, &'a str> {
    let version_digests: BTreeSet<&str> = versions.iter().map(|v| v.digest).collect();
    let mut roots = BTreeMap::new();
    for (tag, digest) in &listing.tags {
        let follows_version = is_sha_tag(tag) && version_digests.contains(digest.as_str());
        if !is_version(listing, tag, digest) && attachment(tag).is_none() && !follows_version {
            roots.entry(digest.as_str()).or_insert(tag.as_str());
        }
    }
    roots
}

/// Collects the deletions, each manifest once, none that is kept.
struct Pruner<'a> {
    listing: &'a Listing,
    reached: &'a BTreeMap<&'a str, &'a str>,
    /// The `.sig`/`.att` manifests of reached digests.
    protected: BTreeSet<&'a str>,
    deleted: BTreeSet<String>,
    deletions: Vec<Deletion>,
}

impl Pruner<'_> {
    fn add(&mut self, digest: &str, target: Target) {
        let kept = self.reached.contains_key(digest) || self.protected.contains(digest);
        if !kept && self.deleted.insert(digest.to_string()) {
            self.deletions.push(Deletion {
                digest: digest.to_string(),
                target,
            });
        }
    }

    /// The version's manifest, its platform manifests, then the `.sig` and
    /// `.att` of each.
    fn version(&mut self, version: &Version) {
        let listing = self.listing;
        self.add(version.digest, Target::Version(version.tag.to_string()));
        let children = listing
            .manifests
            .get(version.digest)
            .map(|m| m.children.as_slice())
            .unwrap_or_default();
        for child in children {
            let target = Target::Platform {
                version: version.tag.to_string(),
            };
            self.add(child, target);
        }
        for subject in std::iter::once(version.digest).chain(children.iter().map(String::as_str)) {
            for (digest, target) in attachments_found(listing, subject) {
                self.add(&digest, target);
            }
        }
    }

    /// The `.sig`/`.att` of manifests already gone.
    fn orphans(&mut self) {
        let listing = self.listing;
        for subject in &listing.gone {
            if self.reached.contains_key(subject.as_str()) {
                continue;
            }
            for (digest, target) in attachments_found(listing, subject) {
                self.add(&digest, target);
            }
        }
    }
}

/// Why a version past the `keep` newest stays, if it does.
fn young(
    created: Option<OffsetDateTime>,
    max_age: Option<Duration>,
    now: OffsetDateTime,
) -> Option<Kept> {
    let max_age = max_age?;
    let Some(created) = created else {
        return Some(Kept::AgeUnknown);
    };
    let age = now - created;
    (age < max_age).then_some(Kept::Young)
}

/// Every manifest the roots reach (an index its platforms, recursively),
/// each with the first tag that reaches it.
fn reach<'a>(
    listing: &'a Listing,
    roots: &BTreeMap<&'a str, &'a str>,
) -> BTreeMap<&'a str, &'a str> {
    let mut reached: BTreeMap<&str, &str> = BTreeMap::new();
    let mut stack: Vec<(&str, &str)> = roots.iter().map(|(d, t)| (*d, *t)).collect();
    while let Some((digest, tag)) = stack.pop() {
        if reached.insert(digest, tag).is_some() {
            continue;
        }
        if let Some(manifest) = listing.manifests.get(digest) {
            stack.extend(manifest.children.iter().map(|c| (c.as_str(), tag)));
        }
    }
    reached
}

/// The digests of the `.sig`/`.att` manifests of `subjects`: kept with them.
fn attachments_of<'a>(
    listing: &'a Listing,
    subjects: impl Iterator<Item = &'a str>,
) -> BTreeSet<&'a str> {
    let mut kept = BTreeSet::new();
    for subject in subjects {
        for kind in [Attachment::Signature, Attachment::Attestation] {
            let digest = attachment_tag(subject, kind).and_then(|tag| listing.tags.get(&tag));
            if let Some(digest) = digest {
                kept.insert(digest.as_str());
            }
        }
    }
    kept
}

/// The `.sig` and `.att` of `subject` that the listing holds.
fn attachments_found(listing: &Listing, subject: &str) -> Vec<(String, Target)> {
    [Attachment::Signature, Attachment::Attestation]
        .into_iter()
        .filter_map(|kind| {
            let tag = attachment_tag(subject, kind)?;
            let digest = listing.tags.get(&tag)?.clone();
            let subject = subject.to_string();
            let target = match kind {
                Attachment::Signature => Target::Signature { subject },
                Attachment::Attestation => Target::Attestation { subject },
            };
            Some((digest, target))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    const NOW: i64 = 1_800_000_000;

    fn digest(n: &str) -> String {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(n.as_bytes())))
    }

    fn at(days_ago: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW - days_ago * 86400).expect("time")
    }

    fn now() -> OffsetDateTime {
        at(0)
    }

    fn keep(n: usize, max_age_days: Option<u64>) -> RetentionPolicy {
        RetentionPolicy {
            keep: NonZeroUsize::new(n).expect("non-zero"),
            max_age: max_age_days.map(|d| Duration::from_secs(d * 86400)),
        }
    }

    /// A repository built up as Slipway would fill it.
    #[derive(Default)]
    struct Repo(Listing);

    impl Repo {
        /// `version` published `days_ago`, signed and attested.
        fn version(mut self, version: &str, days_ago: i64) -> Self {
            let d = digest(version);
            self.0.manifests.insert(
                d.clone(),
                Manifest {
                    children: vec![],
                    version: Some(version.into()),
                    slipway: true,
                    created: Some(at(days_ago)),
                },
            );
            self.0.tags.insert(version.into(), d.clone());
            self.signed(&d)
        }

        fn signed(mut self, subject: &str) -> Self {
            for kind in [Attachment::Signature, Attachment::Attestation] {
                let tag = attachment_tag(subject, kind).expect("digest");
                self.0.tags.insert(tag.clone(), digest(&tag));
            }
            self
        }

        /// `version` as an index of two platform images, each signed.
        fn index(mut self, version: &str, days_ago: i64) -> Self {
            self = self.version(version, days_ago);
            let children: Vec<String> = ["amd64", "arm64"]
                .iter()
                .map(|p| digest(&format!("{version}/{p}")))
                .collect();
            for child in &children {
                self.0.manifests.insert(child.clone(), Manifest::default());
                self = self.signed(child);
            }
            let d = digest(version);
            if let Some(m) = self.0.manifests.get_mut(&d) {
                m.children = children;
            }
            self
        }

        fn tag(mut self, tag: &str, on_version: &str) -> Self {
            self.0.tags.insert(tag.into(), digest(on_version));
            self
        }

        fn plan(&self, policy: RetentionPolicy) -> Plan {
            plan(&self.0, &policy, now())
        }
    }

    fn ten() -> Repo {
        (0..10).fold(Repo::default(), |repo, i| {
            repo.version(&format!("1.{}.0", i), 10 - i as i64)
        })
    }

    fn deleted_digests(plan: &Plan) -> BTreeSet<String> {
        plan.deletions.iter().map(|d| d.digest.clone()).collect()
    }

    #[test]
    fn keeps_the_newest_and_deletes_the_rest_with_their_signatures() {
        let plan = ten().plan(keep(3, None));
        let kept: Vec<&str> = plan.kept.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(kept, ["1.9.0", "1.8.0", "1.7.0"]);
        assert_eq!(plan.kept[0].1, Kept::Newest(1));
        assert_eq!(
            plan.deleted_versions(),
            ["1.6.0", "1.5.0", "1.4.0", "1.3.0", "1.2.0", "1.1.0", "1.0.0"]
        );
        assert_eq!(plan.deletions.len(), 7 * 3);
        // Each version's manifest goes before its signature and attestation.
        assert_eq!(plan.deletions[0].target, Target::Version("1.6.0".into()));
        assert_eq!(
            plan.deletions[1].target,
            Target::Signature {
                subject: digest("1.6.0")
            }
        );
        assert_eq!(
            plan.deletions[1].digest,
            digest(&format!("sha256-{}.sig", &digest("1.6.0")[7..]))
        );
        assert_eq!(
            plan.deletions[2].target,
            Target::Attestation {
                subject: digest("1.6.0")
            }
        );
    }

    #[test]
    fn moving_tags_keep_what_they_point_at() {
        let repo = ten()
            .tag("latest", "1.2.0")
            .tag("1", "1.2.0")
            .tag("1.4", "1.4.0")
            .tag("stable", "1.1.0");
        let plan = repo.plan(keep(3, None));
        assert_eq!(
            plan.deleted_versions(),
            ["1.6.0", "1.5.0", "1.3.0", "1.0.0"]
        );
        let why = |v: &str| {
            plan.kept
                .iter()
                .find(|(t, _)| t == v)
                .map(|(_, k)| k.clone())
        };
        assert_eq!(why("1.2.0"), Some(Kept::Reached("1".into())));
        assert_eq!(why("1.4.0"), Some(Kept::Reached("1.4".into())));
        assert_eq!(why("1.1.0"), Some(Kept::Reached("stable".into())));
        let gone = deleted_digests(&plan);
        for v in ["1.2.0", "1.4.0", "1.1.0"] {
            assert!(!gone.contains(&digest(v)), "{v}");
            let sig = attachment_tag(&digest(v), Attachment::Signature).expect("tag");
            assert!(!gone.contains(&digest(&sig)), "the .sig of {v}");
        }
    }

    #[test]
    fn a_sha_tag_goes_with_its_version_but_an_unknown_tag_keeps() {
        let repo = ten()
            .tag("sha-abc1234", "1.0.0")
            .tag("sha-notsha", "1.1.0")
            .tag("debug", "1.2.0");
        let plan = repo.plan(keep(3, None));
        let deleted = plan.deleted_versions();
        assert!(deleted.contains(&"1.0.0"), "{deleted:?}");
        assert!(!deleted.contains(&"1.1.0"), "`sha-notsha` is no sha tag");
        assert!(!deleted.contains(&"1.2.0"), "`debug` was pushed by hand");
    }

    #[test]
    fn only_slipways_own_versions_are_deleted() {
        let mut repo = ten();
        // Pushed by hand: no Slipway label, or a label that is not its tag.
        let foreign = digest("foreign");
        repo.0.manifests.insert(
            foreign.clone(),
            Manifest {
                version: Some("0.1.0".into()),
                slipway: false,
                created: Some(at(400)),
                ..Manifest::default()
            },
        );
        repo.0.tags.insert("0.1.0".into(), foreign.clone());
        repo.0.tags.insert("copy-of-1.0.0".into(), digest("1.3.0"));
        // A tag whose manifest could not be read at all.
        repo.0.tags.insert("mystery".into(), digest("1.5.0"));
        let plan = repo.plan(keep(3, None));
        let deleted = deleted_digests(&plan);
        assert!(!deleted.contains(&foreign));
        assert!(!deleted.contains(&digest("1.3.0")));
        assert!(!deleted.contains(&digest("1.5.0")));
        assert_eq!(
            plan.deleted_versions(),
            ["1.6.0", "1.4.0", "1.2.0", "1.1.0", "1.0.0"]
        );
    }

    #[test]
    fn max_age_keeps_the_young_and_the_undated() {
        let mut repo = ten();
        if let Some(m) = repo.0.manifests.get_mut(&digest("1.0.0")) {
            m.created = None;
        }
        let plan = repo.plan(keep(3, Some(5)));
        // 1.x.0 was published 10 - x days ago: 1.6.0 is younger than 5 days.
        assert_eq!(
            plan.deleted_versions(),
            ["1.5.0", "1.4.0", "1.3.0", "1.2.0", "1.1.0"]
        );
        let why = |v: &str| {
            plan.kept
                .iter()
                .find(|(t, _)| t == v)
                .map(|(_, k)| k.clone())
        };
        assert_eq!(why("1.6.0"), Some(Kept::Young));
        assert_eq!(why("1.0.0"), Some(Kept::AgeUnknown));
        // Without max-age, an undated version is the oldest.
        assert_eq!(repo.plan(keep(9, None)).deleted_versions(), ["1.0.0"]);
    }

    #[test]
    fn ties_and_fewer_versions_than_keep() {
        let repo = ["1.10.0", "1.9.0", "1.2.0"]
            .iter()
            .fold(Repo::default(), |r, v| r.version(v, 1));
        let plan = repo.plan(keep(2, None));
        assert_eq!(plan.deleted_versions(), ["1.2.0"], "semver breaks the tie");
        assert!(repo.plan(keep(5, None)).deletions.is_empty());
        assert!(Repo::default().plan(keep(1, None)).deletions.is_empty());
    }

    #[test]
    fn an_index_takes_its_platforms_and_their_signatures_along() {
        let repo = Repo::default()
            .index("1.0.0", 3)
            .index("1.1.0", 2)
            .version("1.2.0", 1);
        let plan = repo.plan(keep(2, None));
        let targets: Vec<&Target> = plan.deletions.iter().map(|d| &d.target).collect();
        assert_eq!(targets.len(), 1 + 2 + 2 + 2 * 2, "{targets:#?}");
        assert_eq!(plan.deletions[0].target, Target::Version("1.0.0".into()));
        assert!(matches!(plan.deletions[1].target, Target::Platform { .. }));
        assert!(matches!(plan.deletions[2].target, Target::Platform { .. }));
        let deleted = deleted_digests(&plan);
        assert!(deleted.contains(&digest("1.0.0/arm64")));
        assert!(
            !deleted.contains(&digest("1.1.0/arm64")),
            "kept index keeps its platforms"
        );
    }

    #[test]
    fn a_platform_shared_with_a_kept_index_stays() {
        let mut repo = Repo::default().index("1.0.0", 3).index("1.1.0", 2);
        let shared = digest("1.0.0/amd64");
        if let Some(m) = repo.0.manifests.get_mut(&digest("1.1.0")) {
            m.children[0] = shared.clone();
        }
        let plan = repo.plan(keep(1, None));
        let deleted = deleted_digests(&plan);
        assert!(deleted.contains(&digest("1.0.0")));
        assert!(!deleted.contains(&shared));
        let sig = attachment_tag(&shared, Attachment::Signature).expect("tag");
        assert!(!deleted.contains(&digest(&sig)), "its signature stays too");
    }

    #[test]
    fn a_signature_shared_with_a_kept_digest_stays() {
        let mut repo = ten();
        // The old version's `.sig` tag names the same manifest as a kept one's.
        let kept_sig = attachment_tag(&digest("1.9.0"), Attachment::Signature).expect("tag");
        let old_sig = attachment_tag(&digest("1.0.0"), Attachment::Signature).expect("tag");
        repo.0.tags.insert(old_sig, digest(&kept_sig));
        let plan = repo.plan(keep(3, None));
        assert!(plan.deleted_versions().contains(&"1.0.0"));
        assert!(!deleted_digests(&plan).contains(&digest(&kept_sig)));
    }

    #[test]
    fn attachments_of_a_gone_manifest_are_cleaned_up() {
        let mut repo = Repo::default().version("1.0.0", 1);
        let orphan = digest("deleted before");
        repo = repo.signed(&orphan);
        repo.0.gone.insert(orphan.clone());
        let plan = repo.plan(keep(1, None));
        assert_eq!(plan.deletions.len(), 2, "{plan:#?}");
        assert!(plan
            .deletions
            .iter()
            .all(|d| matches!(&d.target, Target::Signature { subject } | Target::Attestation { subject } if *subject == orphan)));
    }

    #[test]
    fn attachment_tags_are_recognised_exactly() {
        let hex = "a".repeat(64);
        assert_eq!(
            attachment(&format!("sha256-{hex}.sig")),
            Some((format!("sha256:{hex}"), Attachment::Signature))
        );
        assert!(attachment(&format!("sha256-{hex}.sbom")).is_none());
        assert!(attachment("sha256-abc.sig").is_none());
        assert!(is_sha_tag("sha-abc1234"));
        assert!(!is_sha_tag("sha-abc12345"));
        assert!(!is_sha_tag("sha-ghijklm"));
    }
}
