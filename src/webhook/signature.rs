//! Each forge's proof that a delivery is theirs, checked in constant time
//! before anything in the body is looked at: GitHub's `X-Hub-Signature-256`
//! (`sha256=` and the HMAC-SHA256 of the exact body bytes), Gitea's and
//! Forgejo's bare hex HMAC, GitLab's `X-Gitlab-Token` (the secret itself).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("X-Hub-Signature-256 header missing: configure the webhook secret in GitHub")]
    Missing,
    #[error("X-Hub-Signature-256 malformed: expected `sha256=` and 64 hexadecimal digits")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body: check the webhook secret")]
    Mismatch,
    #[error("{0} header missing: set the webhook's secret on the forge")]
    HeaderMissing(&'static str),
    #[error("{0} malformed: expected 64 hexadecimal digits")]
    HeaderMalformed(&'static str),
    #[error("{0} does not match the body: check the webhook secret")]
    HeaderMismatch(&'static str),
    #[error("X-Gitlab-Token is not the webhook secret: set the hook's secret token in GitLab")]
    WrongToken,
}

/// Checks `header` (the raw `X-Hub-Signature-256` value) against `body`.
pub fn verify(secret: &[u8], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(b"sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks Gitea's or Forgejo's `header` (named `name`): the bare hex HMAC-SHA256 of `body`.
pub fn verify_hex(
    secret: &[u8],
    name: &'static str,
    header: Option<&[u8]>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::HeaderMissing(name))?;
    if header.len() != 64 {
        return Err(SignatureError::HeaderMalformed(name));
    }
    let expected = hex::decode(header).map_err(|_| SignatureError::HeaderMalformed(name))?;
    let mut mac =
        HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::HeaderMismatch(name))?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::HeaderMismatch(name))
}

/// Checks GitLab's `X-Gitlab-Token`, which carries the secret itself.
pub fn verify_token(secret: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
    use subtle::ConstantTimeEq;
    let header = header.ok_or(SignatureError::HeaderMissing("X-Gitlab-Token"))?;
    // Lengths are compared openly, as every constant-time compare of
    // unequal lengths does; the content is not.
    if header.len() == secret.len() && bool::from(header.ct_eq(secret)) {
        Ok(())
    } else {
        Err(SignatureError::WrongToken)
    }
}

/// The header value GitHub would send for `body`; used by tests and tools.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors listed in the shared fixtures' SOURCES.md.
    const VECTORS: [(&str, &str, &str); 4] = [
        (
            "It's a Secret to Everybody",
            "Hello, World!",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ),
        (
            "mysecret",
            "{\"foo\":\"bar\"}",
            "4864d2759938a15468b5df9ade20bf161da9b4f737ea61794142f3484236bda3",
        ),
        (
            "secret",
            "{\"a\": \"z\"}",
            "f417af3a21bd70379b5796d5f013915e7029f62c580fb0f500f59a35a6f04c89",
        ),
        (
            "secret",
            "",
            "f9e66e179b6747ae54108f82f8ade8b3c25d76fd30afde6c395822c530196169",
        ),
    ];

    #[test]
    fn published_vectors_verify() {
        for (secret, body, hex) in VECTORS {
            let header = format!("sha256={hex}");
            assert_eq!(
                verify(secret.as_bytes(), Some(header.as_bytes()), body.as_bytes()),
                Ok(())
            );
            assert_eq!(sign(secret.as_bytes(), body.as_bytes()), header);
        }
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let (secret, body, hex) = VECTORS[0];
        let header = format!("sha256={}", hex.to_uppercase());
        assert_eq!(
            verify(secret.as_bytes(), Some(header.as_bytes()), body.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn bad_headers_are_told_apart() {
        let (secret, body, hex) = VECTORS[0];
        let check = |h: &str| verify(secret.as_bytes(), Some(h.as_bytes()), body.as_bytes());
        assert_eq!(
            verify(secret.as_bytes(), None, body.as_bytes()),
            Err(SignatureError::Missing)
        );
        assert_eq!(check(""), Err(SignatureError::Malformed));
        assert_eq!(check(hex), Err(SignatureError::Malformed));
        assert_eq!(
            check(&format!("sha1={hex}")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(&format!("sha256={}", &hex[..63])),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(&format!("sha256={}z", &hex[..63])),
            Err(SignatureError::Malformed)
        );
        let other = format!("sha256={}", "0".repeat(64));
        assert_eq!(check(&other), Err(SignatureError::Mismatch));
        let header = format!("sha256={hex}");
        assert_eq!(
            verify(secret.as_bytes(), Some(header.as_bytes()), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn gitea_signatures_are_bare_hex() {
        const NAME: &str = "X-Gitea-Signature";
        for (secret, body, hex) in VECTORS {
            let check =
                |h: &str| verify_hex(secret.as_bytes(), NAME, Some(h.as_bytes()), body.as_bytes());
            assert_eq!(check(hex), Ok(()));
            assert_eq!(check(&hex.to_uppercase()), Ok(()));
            assert_eq!(
                check(&format!("sha256={hex}")),
                Err(SignatureError::HeaderMalformed(NAME))
            );
            assert_eq!(
                check(&"0".repeat(64)),
                Err(SignatureError::HeaderMismatch(NAME))
            );
            // Gitea sends the header empty when the hook has no secret.
            assert_eq!(check(""), Err(SignatureError::HeaderMissing(NAME)));
        }
    }

    #[test]
    fn gitlab_tokens_must_equal_the_secret() {
        assert_eq!(verify_token(b"s3cret", Some(b"s3cret")), Ok(()));
        assert_eq!(
            verify_token(b"s3cret", Some(b"s3cre")),
            Err(SignatureError::WrongToken)
        );
        assert_eq!(
            verify_token(b"s3cret", Some(b"s3creT")),
            Err(SignatureError::WrongToken)
        );
        assert_eq!(
            verify_token(b"s3cret", None),
            Err(SignatureError::HeaderMissing("X-Gitlab-Token"))
        );
    }
}
