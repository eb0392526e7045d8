//! Build secrets (`--build-secret ID=PATH`): read once at start, offered to
//! `RUN --mount=type=secret,id=ID` through the BuildKit session, and masked in
//! the build log should a step print one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// BuildKit refuses larger secrets; refusing them at start says so sooner.
const MAX_SECRET_BYTES: u64 = 500 * 1024;
/// Shorter values are too common in ordinary output to mask usefully.
const MIN_MASKED_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("--build-secret `{0}` is not ID=PATH (e.g. npmrc=/run/secrets/npmrc)")]
    Syntax(String),
    #[error("--build-secret id `{0}` may hold only letters, digits, `.`, `_` and `-`")]
    BadId(String),
    #[error("--build-secret `{id}` is given twice")]
    Twice { id: String },
    #[error("--build-secret `{id}`: cannot read {path}: {source}")]
    Unreadable {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--build-secret `{id}`: {path} is larger than 500 KiB, BuildKit's limit for a secret")]
    TooLarge { id: String, path: PathBuf },
}

/// One `ID=PATH` as given on the command line; the content is read by [`BuildSecrets::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub path: PathBuf,
}

impl std::str::FromStr for SecretSpec {
    type Err = SecretError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (id, path) = raw
            .trim()
            .split_once('=')
            .ok_or_else(|| SecretError::Syntax(raw.to_string()))?;
        if path.is_empty() {
            return Err(SecretError::Syntax(raw.to_string()));
        }
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(SecretError::BadId(id.to_string()));
        }
        Ok(Self {
            id: id.to_string(),
            path: PathBuf::from(path),
        })
    }
}

/// The secrets' contents, which never leave this type except to the engine.
#[derive(Default)]
pub struct BuildSecrets {
    values: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for BuildSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl BuildSecrets {
    /// Reads every file now, so a wrong path stops the start rather than a build.
    pub fn load(specs: &[SecretSpec]) -> Result<Self, SecretError> {
        let mut values = BTreeMap::new();
        for spec in specs {
            let content = read_secret(&spec.id, &spec.path)?;
            if values.insert(spec.id.clone(), content).is_some() {
                return Err(SecretError::Twice {
                    id: spec.id.clone(),
                });
            }
        }
        Ok(Self { values })
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&[u8]> {
        self.values.get(id).map(Vec::as_slice)
    }

    /// The line with every secret value in it replaced by `***`.
    pub fn mask(&self, line: &str) -> String {
        let mut line = line.to_string();
        for value in self.values.values() {
            let Ok(text) = std::str::from_utf8(value) else {
                continue;
            };
            for part in text.lines().map(str::trim) {
                if part.len() >= MIN_MASKED_LEN && line.contains(part) {
                    line = line.replace(part, "***");
                }
            }
        }
        line
    }
}

fn read_secret(id: &str, path: &Path) -> Result<Vec<u8>, SecretError> {
    let unreadable = |source| SecretError::Unreadable {
        id: id.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            id: id.to_string(),
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_bad_ids() {
        let spec: SecretSpec = "npmrc=/run/npmrc".parse().expect("parses");
        assert_eq!(spec.id, "npmrc");
        assert_eq!(spec.path, PathBuf::from("/run/npmrc"));
        assert!("npmrc".parse::<SecretSpec>().is_err());
        assert!("=/x".parse::<SecretSpec>().is_err());
        assert!("a b=/x".parse::<SecretSpec>().is_err());
        assert!("id=".parse::<SecretSpec>().is_err());
    }

    #[test]
    fn values_are_masked_and_never_debug_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t-value\n").expect("write");
        let secrets = BuildSecrets::load(&[SecretSpec {
            id: "token".into(),
            path,
        }])
        .expect("loads");
        assert_eq!(secrets.get("token"), Some(&b"s3cr3t-value\n"[..]));
        assert_eq!(secrets.mask("#7 0.1 got s3cr3t-value!"), "#7 0.1 got ***!");
        assert!(!format!("{secrets:?}").contains("s3cr3t"));
    }

    #[test]
    fn missing_file_and_duplicates_are_refused() {
        let missing = SecretSpec {
            id: "x".into(),
            path: "/nonexistent/slipway-secret".into(),
        };
        let err = BuildSecrets::load(&[missing]).expect_err("refused");
        assert!(err.to_string().contains("cannot read"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        std::fs::write(&path, "aaaa").expect("write");
        let spec = SecretSpec {
            id: "a".into(),
            path,
        };
        let err = BuildSecrets::load(&[spec.clone(), spec]).expect_err("refused");
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
