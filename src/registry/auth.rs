//! Credentials. oci-client runs the registry's token dance for its own calls
//! (`authenticate` keeps that fresh per repository); raw requests (the
//! relay's, deletes) follow the same protocol here: a 401 whose
//! `WWW-Authenticate` is a `Bearer` challenge names the token service and the
//! scope it wants, the token is fetched with the basic credentials and kept
//! until it expires; a registry with basic auth gets the basic credentials.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_client::{Reference, RegistryOperation};

use super::{Registry, RegistryError};
use crate::secret::Secret;

impl Registry {
    /// Each auth costs round trips; the client keeps what it learns (basic
    /// credentials for good, bearer tokens until they expire, 60 s at the
    /// least), so a repository is authenticated again only after a while.
    pub(super) async fn authenticate(&self, reference: &Reference) -> Result<(), RegistryError> {
        const FRESH: Duration = Duration::from_secs(45);
        let repository = reference.repository().to_string();
        let fresh = |at: &Instant| at.elapsed() < FRESH;
        if self
            .authenticated
            .lock()
            .ok()
            .and_then(|m| m.get(&repository).copied())
            .is_some_and(|at| fresh(&at))
        {
            return Ok(());
        }
        for op in [RegistryOperation::Pull, RegistryOperation::Push] {
            self.client
                .auth(reference, &self.auth, op)
                .await
                .map_err(|e| self.classify(e, reference.repository()))?;
        }
        if let Ok(mut map) = self.authenticated.lock() {
            map.insert(repository, Instant::now());
        }
        Ok(())
    }
}

pub(super) fn read_ca(path: &Path) -> Result<oci_client::client::Certificate, RegistryError> {
    Ok(oci_client::client::Certificate {
        encoding: oci_client::client::CertificateEncoding::Pem,
        data: read_ca_pem(path)?,
    })
}

pub(super) fn read_ca_pem(path: &Path) -> Result<Vec<u8>, RegistryError> {
    let bad = |reason: String| RegistryError::BadCa {
        path: path.display().to_string(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(data)
}

/// A `WWW-Authenticate` challenge of a registry's 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// Space-separated scopes, as distribution joins them.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"` (scope values hold
    /// commas, so quoted strings are read as such) or `Basic realm="…"`.
    pub(super) fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = auth_params(params);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `key="value", key=value` pairs; a quoted value may hold commas and `\"`.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return params;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                value.push(c);
                chars.next();
            }
        }
        params.push((key.trim().to_string(), value.trim().to_string()));
    }
}

/// The token service's answer (distribution's token spec).
#[derive(serde::Deserialize)]
pub(super) struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Seconds; the spec's default is 60.
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Bearer tokens per repository, each until shortly before it expires.
#[derive(Default)]
pub(super) struct Tokens(Mutex<HashMap<String, (Secret, Instant)>>);

impl Tokens {
    /// Renewed this long before the registry would refuse it, so a request
    /// that starts with a token does not meet its expiry half way.
    const MARGIN: Duration = Duration::from_secs(15);

    pub(super) fn get(&self, repository: &str) -> Option<Secret> {
        let tokens = self.0.lock().ok()?;
        let (token, until) = tokens.get(repository)?;
        (Instant::now() < *until).then(|| token.clone())
    }

    /// Keeps the token of `reply`; the `Authorization` value it makes.
    pub(super) fn keep(&self, repository: &str, reply: TokenReply) -> Option<Secret> {
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())?;
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(60));
        let header = Secret::new(format!("Bearer {token}"));
        if let Ok(mut tokens) = self.0.lock() {
            let until = Instant::now() + lifetime.saturating_sub(Self::MARGIN);
            tokens.insert(repository.to_string(), (header.clone(), until));
        }
        Some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_is_read_with_commas_inside_its_scope() {
        let header = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/api:pull,push repository:team/base:pull""#;
        assert_eq!(
            Challenge::parse(header),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:team/api:pull,push repository:team/base:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(
            Challenge::parse(r#"bearer realm=http://t/token, service="a\"b""#),
            Some(Challenge::Bearer {
                realm: "http://t/token".into(),
                service: Some("a\"b".into()),
                scope: None,
            })
        );
    }

    #[test]
    fn a_token_is_kept_until_shortly_before_it_expires() {
        let tokens = Tokens::default();
        let reply = |expires_in| TokenReply {
            token: Some("t".into()),
            access_token: None,
            expires_in,
        };
        assert!(tokens.keep("a", reply(Some(300))).is_some());
        assert_eq!(
            tokens.get("a").map(|s| s.expose().to_string()),
            Some("Bearer t".into())
        );
        assert!(tokens.keep("b", reply(Some(10))).is_some());
        assert!(
            tokens.get("b").is_none(),
            "a token about to expire is not reused"
        );
        assert!(tokens.get("c").is_none());
        let empty = TokenReply {
            token: Some(String::new()),
            access_token: None,
            expires_in: None,
        };
        assert!(tokens.keep("d", empty).is_none());
    }
}
