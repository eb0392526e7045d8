//! The signing key: made by `slipway keygen`, loaded by `--signing-key`.
//! cosign reads both files as they are: `cosign verify --key cosign.pub`.

use std::path::{Path, PathBuf};

use p256::ecdsa::{signature::Signer as _, DerSignature, SigningKey as EcKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};

pub const PRIVATE_KEY_FILE: &str = "cosign.key";
pub const PUBLIC_KEY_FILE: &str = "cosign.pub";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0} exists already; pass --force to replace the key pair")]
    Exists(PathBuf),
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not encode the key: {0}")]
    Encode(String),
    #[error("cannot read the signing key {path} (--signing-key): {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    // The parser's own message is left out: it is not needed to fix the
    // file, and nothing of the file's content may reach a log.
    #[error(
        "the signing key {path} (--signing-key) is not {expected}; make one with `slipway keygen`"
    )]
    Malformed { path: PathBuf, expected: String },
}

/// An ECDSA P-256 private key. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey {
    key: EcKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    pub fn generate() -> Self {
        Self {
            key: EcKey::random(&mut rand_core::OsRng),
        }
    }

    /// Reads a PKCS#8 PEM (`BEGIN PRIVATE KEY`) P-256 key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = |expected: &str| KeyError::Malformed {
            path: path.to_path_buf(),
            expected: expected.to_string(),
        };
        if text.contains("ENCRYPTED SIGSTORE PRIVATE KEY") {
            return Err(malformed(
                "an unencrypted key (cosign's encrypted format is not read)",
            ));
        }
        EcKey::from_pkcs8_pem(text.trim())
            .map(|key| Self { key })
            .map_err(|_| malformed("a PKCS#8 PEM ECDSA P-256 private key"))
    }

    /// ECDSA over SHA-256 of `message`, DER-encoded, as cosign writes it.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: DerSignature = self.key.sign(message);
        signature.as_bytes().to_vec()
    }

    /// The public key as PKIX PEM (`BEGIN PUBLIC KEY`).
    pub fn public_pem(&self) -> Result<String, KeyError> {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    fn private_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Encode(e.to_string()))
    }
}

/// `slipway keygen`: writes `cosign.key` (mode 0600) and `cosign.pub` into `out`.
pub fn write_pair(out: &Path, force: bool) -> Result<Vec<PathBuf>, KeyError> {
    let private = out.join(PRIVATE_KEY_FILE);
    let public = out.join(PUBLIC_KEY_FILE);
    if !force {
        if let Some(existing) = [&private, &public].into_iter().find(|p| p.exists()) {
            return Err(KeyError::Exists(existing.clone()));
        }
    }
    let key = SigningKey::generate();
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let contents = [
        (&private, key.private_pem()?, 0o600),
        (&public, key.public_pem()?, 0o644),
    ];
    for (path, pem, mode) in &contents {
        crate::setup::certs::write_file(path, pem.as_bytes(), *mode).map_err(write_err(path))?;
    }
    Ok(vec![private, public])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_loadable_pair_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pair(dir.path(), false).expect("first");
        let key_path = dir.path().join(PRIVATE_KEY_FILE);
        let before = std::fs::read(&key_path).expect("key");
        assert!(matches!(
            write_pair(dir.path(), false),
            Err(KeyError::Exists(_))
        ));
        assert_eq!(std::fs::read(&key_path).expect("key"), before);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = SigningKey::load(&key_path).expect("loads");
        let public = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).expect("pub");
        assert_eq!(key.public_pem().expect("pem"), public);
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        write_pair(dir.path(), true).expect("forced");
        assert_ne!(std::fs::read(&key_path).expect("key"), before);
    }

    #[test]
    fn a_bad_key_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.key");
        let body = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        std::fs::write(&path, body).expect("write");
        let err = SigningKey::load(&path).expect_err("refused").to_string();
        assert!(err.contains("not a PKCS#8"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let missing = SigningKey::load(&dir.path().join("none")).expect_err("refused");
        assert!(matches!(missing, KeyError::Read { .. }));
        assert!(!format!("{:?}", SigningKey::generate()).contains("BEGIN"));
    }
}
