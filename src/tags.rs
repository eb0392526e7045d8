//! The tags a service sets beside its immutable `NAME:VERSION`: `semver`,
//! `latest`, `sha` and literal tags, and the decision of which of them this
//! publish moves. The decision is pure: it reads the repository's tag list
//! (what the registry holds), never the order merges arrive in.

use std::cmp::Ordering;
use std::fmt;

use crate::types::{CommitSha, Version};

/// More is a mistake rather than a release process; each costs a PUT.
pub const MAX_TAGS: usize = 32;

/// One entry of a service's `tags`, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MovingTag {
    /// `MAJOR.MINOR` and `MAJOR`, each moved forward only.
    Semver,
    /// `latest`, moved forward only.
    Latest,
    /// `sha-` and the merge commit's first seven characters.
    Sha,
    /// A tag moved by every publish that names it.
    Literal(Version),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagError {
    #[error("`tags` must be a list of strings")]
    NotAList,
    #[error("`tags` lists {0} tags; at most {MAX_TAGS} are allowed")]
    TooMany(usize),
    #[error("tag `{0}` is not a valid tag: a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}`")]
    Invalid(String),
    #[error("tag `{0}` is a version: published versions are immutable, so a version is only ever published as a service's `version`")]
    LooksLikeVersion(String),
    #[error("tag `{0}` is a semver alias: list `semver` to have `MAJOR.MINOR` and `MAJOR` moved forward only")]
    LooksLikeAlias(String),
    #[error("tag `{0}` is reserved for signatures and attestations (`sha256-…`)")]
    Reserved(String),
    #[error("tag `{0}` is the service's own version")]
    OwnVersion(String),
}

impl MovingTag {
    /// One entry of `tags`, for a service publishing `version`.
    pub fn parse(raw: &str, version: &Version) -> Result<Self, TagError> {
        match raw {
            "semver" => return Ok(MovingTag::Semver),
            "latest" => return Ok(MovingTag::Latest),
            "sha" => return Ok(MovingTag::Sha),
            _ => {}
        }
        let shown = || raw.chars().take(80).collect::<String>();
        let tag = Version::parse(raw).map_err(|_| TagError::Invalid(shown()))?;
        if raw == version.as_str() {
            return Err(TagError::OwnVersion(shown()));
        }
        // A literal that reads as a version would be taken for a published
        // version by every later `latest` and `semver` decision, and could
        // overwrite one.
        if SemVer::parse(raw).is_some() {
            return Err(TagError::LooksLikeVersion(shown()));
        }
        if is_alias(raw) {
            return Err(TagError::LooksLikeAlias(shown()));
        }
        if raw.starts_with("sha256-") {
            return Err(TagError::Reserved(shown()));
        }
        Ok(MovingTag::Literal(tag))
    }

    /// The manifest's `tags` list, without repeats, in its order.
    pub fn parse_list(raw: &[&str], version: &Version) -> Result<Vec<Self>, TagError> {
        if raw.len() > MAX_TAGS {
            return Err(TagError::TooMany(raw.len()));
        }
        let mut tags: Vec<MovingTag> = Vec::with_capacity(raw.len());
        for entry in raw {
            let tag = MovingTag::parse(entry, version)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Ok(tags)
    }
}

impl fmt::Display for MovingTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MovingTag::Semver => f.write_str("semver"),
            MovingTag::Latest => f.write_str("latest"),
            MovingTag::Sha => f.write_str("sha"),
            MovingTag::Literal(tag) => f.write_str(tag.as_str()),
        }
    }
}

/// `1` or `1.4` (with an optional `v`): what `semver` moves.
fn is_alias(raw: &str) -> bool {
    let raw = raw.strip_prefix('v').unwrap_or(raw);
    let parts: Vec<&str> = raw.split('.').collect();
    parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A semantic version as semver.org 2.0.0 defines it, with an optional
/// leading `v`; build metadata cannot occur in a tag (`+` is not allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemVer {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Vec<Identifier>,
}

/// One dot-separated part of a pre-release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    Numeric(u64),
    Alphanumeric(String),
}

impl SemVer {
    pub fn parse(raw: &str) -> Option<SemVer> {
        let raw = raw.strip_prefix('v').unwrap_or(raw);
        let (core, pre) = match raw.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (raw, None),
        };
        let mut numbers = core.split('.').map(numeric);
        let (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) = (
            numbers.next(),
            numbers.next(),
            numbers.next(),
            numbers.next(),
        ) else {
            return None;
        };
        let pre = match pre {
            None => Vec::new(),
            Some(pre) => pre.split('.').map(identifier).collect::<Option<_>>()?,
        };
        Some(SemVer {
            major,
            minor,
            patch,
            pre,
        })
    }

    pub fn is_release(&self) -> bool {
        self.pre.is_empty()
    }
}

/// A numeric identifier: digits, no leading zero (but `0` itself).
fn numeric(part: &str) -> Option<u64> {
    let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits || (part.len() > 1 && part.starts_with('0')) {
        return None;
    }
    part.parse().ok()
}

fn identifier(part: &str) -> Option<Identifier> {
    let valid = !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return None;
    }
    if part.bytes().all(|b| b.is_ascii_digit()) {
        return numeric(part).map(Identifier::Numeric);
    }
    Some(Identifier::Alphanumeric(part.to_string()))
}

/// Precedence, semver.org §11: numbers first, then a pre-release below its
/// release, then identifiers left to right.
impl Ord for SemVer {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for SemVer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// §11.4: numeric identifiers below alphanumeric ones; numbers compared as
/// numbers, the others in ASCII order. A shorter list is lower when all the
/// identifiers before its end are equal, which `Vec`'s order gives.
impl Ord for Identifier {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Identifier::Numeric(a), Identifier::Numeric(b)) => a.cmp(b),
            (Identifier::Numeric(_), Identifier::Alphanumeric(_)) => Ordering::Less,
            (Identifier::Alphanumeric(_), Identifier::Numeric(_)) => Ordering::Greater,
            (Identifier::Alphanumeric(a), Identifier::Alphanumeric(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Identifier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which tags one publish moves, and why it leaves the others.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the order the manifest lists them.
    pub tags: Vec<Version>,
    /// One line per tag held back, for the build's log.
    pub held: Vec<String>,
}

/// Decides the tags `version` gets, given `existing`, the repository's tag
/// list (which holds `version` itself once it is pushed). `latest` and the
/// semver aliases go to the highest release, never back: a version below
/// one already published leaves them where they are. Pre-releases never
/// move them, and are not counted against a release either (`1.4.1` takes
/// `latest` over a published `2.0.0-rc.1`).
pub fn plan(
    version: &Version,
    wanted: &[MovingTag],
    commit: &CommitSha,
    existing: &[String],
) -> Plan {
    let this = SemVer::parse(version.as_str());
    let releases: Vec<SemVer> = existing
        .iter()
        .filter_map(|tag| SemVer::parse(tag))
        .filter(SemVer::is_release)
        .collect();
    let mut plan = Plan::default();
    let add = |plan: &mut Plan, tag: String| {
        // Every tag built here is valid; a repeat (a literal equal to the
        // `sha` tag) is set once.
        if let Ok(tag) = Version::parse(&tag) {
            if !plan.tags.contains(&tag) {
                plan.tags.push(tag);
            }
        }
    };
    let not_release = |what: &str| match &this {
        None => format!("{what}: `{version}` is not a semantic version"),
        Some(_) => format!("{what}: `{version}` is a pre-release"),
    };
    for tag in wanted {
        match tag {
            MovingTag::Literal(literal) => add(&mut plan, literal.to_string()),
            MovingTag::Sha => add(&mut plan, format!("sha-{}", commit.short())),
            MovingTag::Latest => match this.as_ref().filter(|v| v.is_release()) {
                None => plan.held.push(not_release("`latest` stays")),
                Some(this) => match highest(&releases, |_| true).filter(|h| *h > this) {
                    None => add(&mut plan, "latest".into()),
                    Some(higher) => plan.held.push(format!(
                        "`latest` stays: {} is higher than {version}",
                        shown(higher)
                    )),
                },
            },
            MovingTag::Semver => match this.as_ref().filter(|v| v.is_release()) {
                None => plan.held.push(not_release("no semver tags")),
                Some(this) => {
                    let minor = format!("{}.{}", this.major, this.minor);
                    let same_minor = |v: &SemVer| (v.major, v.minor) == (this.major, this.minor);
                    match highest(&releases, same_minor).filter(|h| *h > this) {
                        None => add(&mut plan, minor),
                        Some(higher) => plan
                            .held
                            .push(format!("`{minor}` stays: {} is higher", shown(higher))),
                    }
                    let major = this.major.to_string();
                    if this.major == 0 {
                        plan.held.push(
                            "`0` is never moved: major version zero is for initial development"
                                .to_string(),
                        );
                    } else {
                        match highest(&releases, |v| v.major == this.major).filter(|h| *h > this) {
                            None => add(&mut plan, major),
                            Some(higher) => plan
                                .held
                                .push(format!("`{major}` stays: {} is higher", shown(higher))),
                        }
                    }
                }
            },
        }
    }
    plan
}

fn highest(versions: &[SemVer], within: impl Fn(&SemVer) -> bool) -> Option<&SemVer> {
    versions.iter().filter(|v| within(v)).max()
}

fn shown(version: &SemVer) -> String {
    format!("{}.{}.{}", version.major, version.minor, version.patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(raw: &str) -> Version {
        Version::parse(raw).expect("valid version")
    }

    fn sv(raw: &str) -> SemVer {
        SemVer::parse(raw).unwrap_or_else(|| panic!("{raw} is semver"))
    }

    fn commit() -> CommitSha {
        CommitSha::parse("abcdef0123456789abcdef0123456789abcdef01").expect("sha")
    }

    fn tags(plan: &Plan) -> Vec<&str> {
        plan.tags.iter().map(Version::as_str).collect()
    }

    const ALL: [MovingTag; 3] = [MovingTag::Semver, MovingTag::Latest, MovingTag::Sha];

    #[test]
    fn semver_parses_the_grammar_and_nothing_else() {
        assert_eq!(
            sv("v1.2.3-rc.1"),
            SemVer {
                major: 1,
                minor: 2,
                patch: 3,
                pre: vec![
                    Identifier::Alphanumeric("rc".into()),
                    Identifier::Numeric(1)
                ],
            }
        );
        assert!(sv("1.0.0-x-y.0a").pre.len() == 2);
        for bad in [
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "1.2.3-",
            "1.2.3-a..b",
            "1.2.3-01",
            "V1.2.3",
            "vv1.2.3",
            "1.2.x",
            "",
            "latest",
            "sha256-abc.sig",
        ] {
            assert_eq!(SemVer::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn precedence_follows_semver_org_section_11() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "1.10.0",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(sv(pair[0]) < sv(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(sv("v1.4.0").cmp(&sv("1.4.0")), Ordering::Equal);
    }

    /// The sequence, merged out of order: each step sees the tag
    /// list as the registry would hold it after its own version went up.
    #[test]
    fn out_of_order_sequence_moves_only_forward() {
        let mut registry: Vec<String> = Vec::new();
        let mut points: std::collections::BTreeMap<String, String> = Default::default();
        for version in ["1.4.0", "1.3.9", "2.0.0-rc.1", "1.4.1", "0.3.0"] {
            registry.push(version.to_string());
            let plan = plan(&v(version), &ALL, &commit(), &registry);
            for tag in &plan.tags {
                points.insert(tag.to_string(), version.to_string());
                if !registry.contains(&tag.to_string()) {
                    registry.push(tag.to_string());
                }
            }
        }
        let at = |tag: &str| points.get(tag).map(String::as_str);
        assert_eq!(at("latest"), Some("1.4.1"));
        assert_eq!(at("1"), Some("1.4.1"));
        assert_eq!(at("1.4"), Some("1.4.1"));
        assert_eq!(at("1.3"), Some("1.3.9"));
        assert_eq!(at("0.3"), Some("0.3.0"));
        assert_eq!(at("0"), None);
        assert_eq!(at("2"), None);
        assert_eq!(at("2.0"), None);
        assert_eq!(at("sha-abcdef0"), Some("0.3.0"));
    }

    #[test]
    fn an_older_line_patched_keeps_latest_and_major() {
        let existing = ["1.4.0", "1.3.9", "1.3.10", "1", "1.4", "latest"].map(String::from);
        let plan = plan(&v("1.3.10"), &ALL, &commit(), &existing);
        assert_eq!(tags(&plan), ["1.3", "sha-abcdef0"]);
        assert!(
            plan.held.iter().any(|h| h.contains("`latest` stays")),
            "{plan:?}"
        );
    }

    #[test]
    fn pre_releases_and_non_semver_move_no_ordered_tag() {
        let existing = ["1.0.0", "2.0.0-rc.1"].map(String::from);
        let plan = plan(&v("2.0.0-rc.1"), &ALL, &commit(), &existing);
        assert_eq!(tags(&plan), ["sha-abcdef0"]);
        assert!(plan.held.iter().any(|h| h.contains("pre-release")));
        let plan = super::plan(&v("nightly"), &ALL, &commit(), &[]);
        assert_eq!(tags(&plan), ["sha-abcdef0"]);
        assert!(plan
            .held
            .iter()
            .any(|h| h.contains("not a semantic version")));
    }

    #[test]
    fn a_leading_v_is_the_same_version() {
        let existing = ["v1.2.0", "1.1.0", "v1.3.0-beta"].map(String::from);
        let plan = plan(&v("v1.2.0"), &ALL, &commit(), &existing);
        assert_eq!(tags(&plan), ["1.2", "1", "latest", "sha-abcdef0"]);
        let plan = super::plan(&v("1.1.0"), &ALL, &commit(), &existing);
        assert_eq!(tags(&plan), ["1.1", "sha-abcdef0"]);
    }

    #[test]
    fn tags_that_are_not_versions_are_ignored() {
        let existing = ["9", "9.9", "latest", "sha256-aa.sig", "stable", "1.0.0"].map(String::from);
        let plan = plan(&v("1.0.0"), &ALL, &commit(), &existing);
        assert_eq!(tags(&plan), ["1.0", "1", "latest", "sha-abcdef0"]);
    }

    #[test]
    fn literal_tags_always_move() {
        let stable = MovingTag::parse("stable", &v("1.0.0")).expect("literal");
        let existing = ["2.0.0", "1.0.0"].map(String::from);
        let plan = plan(&v("1.0.0"), &[stable], &commit(), &existing);
        assert_eq!(tags(&plan), ["stable"]);
    }

    #[test]
    fn manifest_entries_are_checked() {
        let version = v("1.4.0");
        let list =
            MovingTag::parse_list(&["semver", "latest", "sha", "stable", "latest"], &version)
                .expect("valid");
        assert_eq!(list.len(), 4, "repeats dropped: {list:?}");
        let err = |raw: &str| MovingTag::parse(raw, &version).expect_err(raw);
        assert!(matches!(err("a/b"), TagError::Invalid(_)));
        assert!(matches!(err(""), TagError::Invalid(_)));
        assert!(matches!(err("2.0.0"), TagError::LooksLikeVersion(_)));
        assert!(matches!(err("v2.0.0-rc.1"), TagError::LooksLikeVersion(_)));
        assert!(matches!(err("1.4"), TagError::LooksLikeAlias(_)));
        assert!(matches!(err("v2"), TagError::LooksLikeAlias(_)));
        assert!(matches!(err("sha256-abc.sig"), TagError::Reserved(_)));
        assert!(matches!(err("1.4.0"), TagError::OwnVersion(_)));
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            MovingTag::parse_list(&many, &version),
            Err(TagError::TooMany(MAX_TAGS + 1))
        );
        assert!(err("a/b").to_string().contains("[A-Za-z0-9_]"));
    }
}
