//! Domain types that cannot hold invalid data. Everything that comes from a
//! webhook, a repository or the command line is checked once, here, at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidValue {
    #[error("`{0}` is not a commit SHA: expected 40 hexadecimal characters")]
    CommitSha(String),
    #[error(
        "`{0}` is not a repository: expected `owner/name` with letters, digits, `-`, `_` or `.`"
    )]
    Repository(String),
    #[error(
        "`{0}` is not a valid image name: lowercase `[a-z0-9]+` parts joined by `.`, `_`, `__` or `-`, with `/` between path components"
    )]
    ImageName(String),
    #[error("`{0}` is not a valid version: a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}`")]
    Version(String),
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A full 40-character git commit SHA, lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitSha(String);
string_newtype!(CommitSha);

impl CommitSha {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let valid = raw.len() == 40 && raw.bytes().all(|b| b.is_ascii_hexdigit());
        if valid {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(InvalidValue::CommitSha(truncate(raw)))
        }
    }

    /// The seven-character abbreviation GitHub uses in tarball folder names.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

/// A GitHub repository, `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository(String);
string_newtype!(Repository);

impl Repository {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let err = || InvalidValue::Repository(truncate(raw));
        let (owner, name) = raw.split_once('/').ok_or_else(err)?;
        if is_github_slug(owner) && is_github_slug(name) {
            Ok(Self(raw.to_string()))
        } else {
            Err(err())
        }
    }

    /// GitLab's project paths: a group, any subgroups, then the project.
    pub fn parse_nested(raw: &str) -> Result<Self, InvalidValue> {
        let parts: Vec<&str> = raw.split('/').collect();
        if parts.len() >= 2 && raw.len() <= 255 && parts.iter().all(|p| is_github_slug(p)) {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidValue::Repository(truncate(raw)))
        }
    }

    pub fn owner(&self) -> &str {
        self.split().0
    }

    pub fn name(&self) -> &str {
        self.split().1
    }

    fn split(&self) -> (&str, &str) {
        // parse() guarantees one '/'; parse_nested() at least one, and the
        // owner of a nested path is its groups.
        self.0.rsplit_once('/').unwrap_or((&self.0, ""))
    }
}

fn is_github_slug(part: &str) -> bool {
    // "." and ".." would turn URL paths built from the name into traversals.
    !part.is_empty()
        && part.len() <= 100
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An image repository path as the distribution reference grammar allows it
/// (without registry host): `team/api`, `web`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageName(String);
string_newtype!(ImageName);

impl ImageName {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let valid = !raw.is_empty() && raw.len() <= 255 && raw.split('/').all(is_path_component);
        if valid {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidValue::ImageName(truncate(raw)))
        }
    }

    /// `namespace/name`, for `--registry-namespace`.
    pub fn within(namespace: Option<&ImageName>, name: &ImageName) -> ImageName {
        match namespace {
            Some(ns) => ImageName(format!("{ns}/{name}")),
            None => name.clone(),
        }
    }
}

/// `[a-z0-9]+` parts joined by one separator: `.`, `_`, `__`, or one or more `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(dashes || separator == "." || separator == "_" || separator == "__") {
            return false;
        }
    }
    true
}

/// An image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);
string_newtype!(Version);

impl Version {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let bytes = raw.as_bytes();
        let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
        let valid = matches!(bytes.first(), Some(b) if word(b))
            && bytes.len() <= 128
            && bytes[1..]
                .iter()
                .all(|b| word(b) || *b == b'.' || *b == b'-');
        if valid {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidValue::Version(truncate(raw)))
        }
    }
}

/// Keeps error messages about hostile input short.
fn truncate(raw: &str) -> String {
    const MAX: usize = 80;
    if raw.chars().count() <= MAX {
        raw.to_string()
    } else {
        let head: String = raw.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// The name of Slipway's check run and commit status on the forges.
pub const CHECK_RUN_NAME: &str = "slipway";

/// The forge a merge came from: where its sources are read and its statuses go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    #[default]
    GitHub,
    Gitea,
    Forgejo,
    GitLab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
            Forge::GitLab => "gitlab",
        }
    }

    /// The forge's name as people write it, for messages.
    pub fn title(self) -> &'static str {
        match self {
            Forge::GitHub => "GitHub",
            Forge::Gitea => "Gitea",
            Forge::Forgejo => "Forgejo",
            Forge::GitLab => "GitLab",
        }
    }

    /// The option that gives Slipway this forge's API.
    pub fn api_option(self) -> &'static str {
        match self {
            Forge::GitHub => "--github-api",
            Forge::Gitea | Forge::Forgejo => "--gitea-api",
            Forge::GitLab => "--gitlab-api",
        }
    }

    /// The option that gives Slipway a token for this forge.
    pub fn token_option(self) -> &'static str {
        match self {
            Forge::GitHub => "--github-token",
            Forge::Gitea | Forge::Forgejo => "--gitea-token",
            Forge::GitLab => "--gitlab-token",
        }
    }
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_sha_needs_forty_hex_digits() {
        let sha = CommitSha::parse("C1A2B3c4d5e6f708192a3b4c5d6e7f8091a2b3c4").expect("valid");
        assert_eq!(sha.as_str(), "c1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4");
        assert_eq!(sha.short(), "c1a2b3c");
        assert!(CommitSha::parse("abc").is_err());
        assert!(CommitSha::parse("g1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4").is_err());
    }

    #[test]
    fn repository_rejects_traversal_and_odd_characters() {
        assert!(Repository::parse("octo-org/hello.world_2").is_ok());
        for bad in [
            "..", "a/..", "../b", "a/b/c", "a", "/b", "a/", "a b/c", "a/b?x",
        ] {
            assert!(Repository::parse(bad).is_err(), "{bad}");
        }
        let repo = Repository::parse("owner/name").expect("valid");
        assert_eq!((repo.owner(), repo.name()), ("owner", "name"));
    }

    #[test]
    fn image_name_follows_the_reference_grammar() {
        for good in [
            "api",
            "team/api",
            "a.b_c__d-e--f",
            "x/y/z",
            "0abc",
            "my-app.v2",
        ] {
            assert!(ImageName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "API", "a..b", "a___b", "-a", "a-", "a/", "/a", "a//b", "a b", "a:b", "a._b",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_follows_the_tag_grammar() {
        for good in ["1.4.0", "v1", "_x", "1.0.0-rc.1", &"a".repeat(128)] {
            assert!(Version::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".1", "-1", "1/2", "1:2", "1+build", &"a".repeat(129)] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespace_prefixes_the_name() {
        let ns = ImageName::parse("team").expect("valid");
        let name = ImageName::parse("api").expect("valid");
        assert_eq!(ImageName::within(Some(&ns), &name).as_str(), "team/api");
        assert_eq!(ImageName::within(None, &name).as_str(), "api");
    }
}
