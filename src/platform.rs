//! A target platform of an image (`os/arch[/variant]`, as OCI's image
//! index and the engine's `platform` build option spell it), valid by
//! construction; and a service's list of them.

use std::fmt;

/// More is a mistake: each platform is a whole engine build.
pub const MAX_PLATFORMS: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("platform `{0}` is not `OS/ARCH` or `OS/ARCH/VARIANT` (e.g. linux/amd64, linux/arm64, linux/arm/v7)")]
    Invalid(String),
    #[error("`platforms` must be a list of strings")]
    NotAList,
    #[error("`platforms` lists {0} platforms; at most {MAX_PLATFORMS} are allowed")]
    TooMany(usize),
}

/// One platform: lower-case `[a-z0-9_]` words, as the OCI image spec's
/// `os`, `architecture` and `variant` values are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    pub fn parse(raw: &str) -> Result<Self, PlatformError> {
        let invalid = || PlatformError::Invalid(raw.chars().take(80).collect());
        let word = |part: &str| {
            let ok = !part.is_empty()
                && part.len() <= 32
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            ok.then(|| part.to_string())
        };
        let parts: Vec<&str> = raw.trim().split('/').collect();
        match parts.as_slice() {
            [os, arch] => Ok(Self {
                os: word(os).ok_or_else(invalid)?,
                arch: word(arch).ok_or_else(invalid)?,
                variant: None,
            }),
            [os, arch, variant] => Ok(Self {
                os: word(os).ok_or_else(invalid)?,
                arch: word(arch).ok_or_else(invalid)?,
                variant: Some(word(variant).ok_or_else(invalid)?),
            }),
            _ => Err(invalid()),
        }
    }

    /// A list without repeats, in the order given.
    pub fn parse_list<'a>(
        raw: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Self>, PlatformError> {
        let mut list: Vec<Self> = Vec::new();
        for entry in raw {
            let platform = Self::parse(entry)?;
            if !list.contains(&platform) {
                list.push(platform);
            }
        }
        if list.len() > MAX_PLATFORMS {
            return Err(PlatformError::TooMany(list.len()));
        }
        Ok(list)
    }

    pub fn os(&self) -> &str {
        &self.os
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The `platform` object of an OCI image index entry.
    pub fn to_oci(&self) -> serde_json::Value {
        let mut platform = serde_json::json!({ "os": self.os, "architecture": self.arch });
        if let Some(variant) = &self.variant {
            platform["variant"] = variant.clone().into();
        }
        platform
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// `--platforms`: comma-separated; empty (from an empty variable) means the
/// engine's own platform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformList(pub Vec<Platform>);

impl std::str::FromStr for PlatformList {
    type Err = PlatformError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Platform::parse_list(raw.split(',').filter(|p| !p.trim().is_empty())).map(PlatformList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print_as_written() {
        for raw in [
            "linux/amd64",
            "linux/arm64",
            "linux/arm/v7",
            "windows/amd64",
        ] {
            let platform = Platform::parse(raw).expect("valid");
            assert_eq!(platform.to_string(), raw);
        }
        let arm = Platform::parse("linux/arm/v7").expect("valid");
        assert_eq!(
            arm.to_oci(),
            serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"})
        );
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "Linux/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
        ] {
            assert!(
                matches!(Platform::parse(bad), Err(PlatformError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn lists_drop_repeats_and_stay_short() {
        let list: PlatformList = "linux/amd64, linux/arm64,linux/amd64,"
            .parse()
            .expect("valid");
        let shown: Vec<String> = list.0.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64"]);
        assert_eq!("".parse::<PlatformList>(), Ok(PlatformList::default()));
        let many: Vec<String> = (0..9).map(|i| format!("linux/a{i}")).collect();
        assert_eq!(
            Platform::parse_list(many.iter().map(String::as_str)),
            Err(PlatformError::TooMany(9))
        );
    }
}
