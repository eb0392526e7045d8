//! `X-Hub-Signature-256`: HMAC-SHA256 of the exact body bytes, checked in
//! constant time before anything in the body is looked at.

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
}
