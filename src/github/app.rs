//! GitHub App authentication: a JWT signed with the App's private key
//! (RS256, `iat` 60 s in the past for clock drift, `exp` 9 minutes on, under
//! GitHub's 10), the installation of each repository, and installation access
//! tokens cached per installation and renewed 5 minutes before `expires_at`.
//! The key and the tokens are secrets: no message here carries them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use reqwest::{header, Method, Url};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use time::OffsetDateTime;

use crate::secret::Secret;
use crate::types::Repository;

/// Renewed this long before GitHub says it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
const JWT_BACKDATE_SECS: i64 = 60;
const JWT_LIFETIME_SECS: i64 = 540;

#[derive(Debug, thiserror::Error)]
pub enum AppKeyError {
    #[error("--github-app-key `{path}` cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("--github-app-key `{0}` is not an RSA private key in PEM (GitHub's `BEGIN RSA PRIVATE KEY`, or PKCS#8)")]
    NotRsa(String),
}

/// Why an installation token could not be had. Never carries the key, the
/// JWT or a token.
#[derive(Debug, thiserror::Error)]
pub enum AppTokenError {
    #[error("the GitHub App is not installed on {0}: install it on the repository (or its organisation)")]
    NotInstalled(String),
    #[error("GitHub refused the App's JWT ({status}): check --github-app-id and --github-app-key, and the machine's clock")]
    Refused { status: u16 },
    #[error("GitHub answered {status} for {what}")]
    Http { status: u16, what: String },
    #[error("GitHub unreachable for {what}: {reason}")]
    Unreachable { what: String, reason: String },
    #[error("could not sign the App's JWT")]
    Signing,
}

struct CachedToken {
    token: Secret,
    expires_at: OffsetDateTime,
}

pub struct AppAuth {
    app_id: u64,
    key: RsaKeyPair,
    /// Installation id per repository (lowercase `owner/name`).
    installations: Mutex<HashMap<String, u64>>,
    tokens: Mutex<HashMap<u64, CachedToken>>,
}

impl std::fmt::Debug for AppAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppAuth")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl AppAuth {
    pub fn load(app_id: u64, key_path: &std::path::Path) -> Result<Self, AppKeyError> {
        let path = key_path.display().to_string();
        let text = std::fs::read_to_string(key_path).map_err(|e| AppKeyError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let key = rsa_key(&text).ok_or(AppKeyError::NotRsa(path))?;
        Ok(Self {
            app_id,
            key,
            installations: Mutex::default(),
            tokens: Mutex::default(),
        })
    }

    /// The App's JWT at `now`.
    pub fn jwt(&self, now: OffsetDateTime) -> Result<Secret, AppTokenError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
        let iat = now.unix_timestamp() - JWT_BACKDATE_SECS;
        let claims = serde_json::json!({
            "iat": iat,
            "exp": iat + JWT_LIFETIME_SECS,
            "iss": self.app_id.to_string(),
        });
        let signing_input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AppTokenError::Signing)?;
        Ok(Secret::new(format!("{signing_input}.{}", b64(&signature))))
    }

    /// An installation token for `repo`, from the cache while it has more
    /// than [`RENEW_BEFORE`] to live.
    pub async fn token_for(
        &self,
        http: &reqwest::Client,
        api: &Url,
        repo: &Repository,
    ) -> Result<Secret, AppTokenError> {
        let installation = self.installation(http, api, repo).await?;
        self.installation_token(http, api, installation).await
    }

    /// A token for `installation`, from the cache while it has more than
    /// [`RENEW_BEFORE`] to live.
    pub async fn installation_token(
        &self,
        http: &reqwest::Client,
        api: &Url,
        installation: u64,
    ) -> Result<Secret, AppTokenError> {
        let now = OffsetDateTime::now_utc();
        if let Some(cached) = self.lock_tokens().get(&installation) {
            if cached.expires_at - RENEW_BEFORE > now {
                return Ok(cached.token.clone());
            }
        }
        let url = join(
            api,
            &[
                "app",
                "installations",
                &installation.to_string(),
                "access_tokens",
            ],
        );
        let answer = self
            .as_app(http, Method::POST, url, "an installation token")
            .await?;
        let token = answer["token"].as_str().map(Secret::new);
        let expires_at = answer["expires_at"].as_str().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        let (Some(token), Some(expires_at)) = (token, expires_at) else {
            return Err(AppTokenError::Http {
                status: 201,
                what: "an installation token (no token or expires_at in the answer)".into(),
            });
        };
        self.lock_tokens().insert(
            installation,
            CachedToken {
                token: token.clone(),
                expires_at,
            },
        );
        Ok(token)
    }

    /// The App's installations (`GET /app/installations`, as the App).
    pub async fn installations(
        &self,
        http: &reqwest::Client,
        api: &Url,
    ) -> Result<Vec<u64>, AppTokenError> {
        let mut url = join(api, &["app", "installations"]);
        url.query_pairs_mut().append_pair("per_page", "100");
        let answer = self
            .as_app(http, Method::GET, url, "the App's installations")
            .await?;
        Ok(answer
            .as_array()
            .map(|list| list.iter().filter_map(|i| i["id"].as_u64()).collect())
            .unwrap_or_default())
    }

    /// Remembers which installation serves `repo` (learnt from a listing).
    pub fn remember(&self, repo: &Repository, installation: u64) {
        self.installations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key(repo), installation);
    }

    /// Forgets `repo`'s token, so the next call gets a new one (after a 401).
    pub fn forget(&self, repo: &Repository) {
        let installation = self
            .installations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(repo))
            .copied();
        if let Some(installation) = installation {
            self.lock_tokens().remove(&installation);
        }
    }

    async fn installation(
        &self,
        http: &reqwest::Client,
        api: &Url,
        repo: &Repository,
    ) -> Result<u64, AppTokenError> {
        if let Some(id) = self
            .installations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(repo))
        {
            return Ok(*id);
        }
        let url = join(api, &["repos", repo.owner(), repo.name(), "installation"]);
        let answer = self
            .as_app(
                http,
                Method::GET,
                url,
                &format!("the App's installation on {repo}"),
            )
            .await
            .map_err(|e| match e {
                AppTokenError::Http { status: 404, .. } => {
                    AppTokenError::NotInstalled(repo.to_string())
                }
                other => other,
            })?;
        let id = answer["id"].as_u64().ok_or_else(|| AppTokenError::Http {
            status: 200,
            what: format!("the App's installation on {repo} (no id)"),
        })?;
        self.installations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key(repo), id);
        Ok(id)
    }

    /// A call authenticated as the App itself (its JWT).
    async fn as_app(
        &self,
        http: &reqwest::Client,
        method: Method,
        url: Url,
        what: &str,
    ) -> Result<serde_json::Value, AppTokenError> {
        let jwt = self.jwt(OffsetDateTime::now_utc())?;
        let response = http
            .request(method, url)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .bearer_auth(jwt.expose())
            .send()
            .await
            .map_err(|e| AppTokenError::Unreachable {
                what: what.to_string(),
                reason: if e.is_timeout() {
                    "timed out".into()
                } else {
                    "could not connect".into()
                },
            })?;
        let status = response.status().as_u16();
        if status == 401 {
            return Err(AppTokenError::Refused { status });
        }
        if !response.status().is_success() {
            return Err(AppTokenError::Http {
                status,
                what: what.to_string(),
            });
        }
        response.json().await.map_err(|_| AppTokenError::Http {
            status,
            what: format!("{what} (answer is not JSON)"),
        })
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CachedToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(repo: &Repository) -> String {
    repo.as_str().to_ascii_lowercase()
}

fn join(api: &Url, segments: &[&str]) -> Url {
    let mut url = api.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// GitHub hands out PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`); PKCS#8 is taken too.
fn rsa_key(text: &str) -> Option<RsaKeyPair> {
    let pem = pem::parse(text.trim()).ok()?;
    match pem.tag() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(pem.contents()).ok(),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(pem.contents()).ok(),
        _ => None,
    }
}

/// The repository a GitHub API URL is about (`…/repos/OWNER/NAME/…`), which
/// decides the installation whose token it needs.
pub fn repository_of(api: &Url, url: &Url) -> Option<Repository> {
    let base: Vec<&str> = api.path_segments()?.filter(|s| !s.is_empty()).collect();
    let mut segments = url.path_segments()?.skip(base.len());
    match (segments.next(), segments.next(), segments.next()) {
        (Some("repos"), Some(owner), Some(name)) => {
            Repository::parse(&format!("{owner}/{name}")).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_name_their_repository() {
        let api = Url::parse("https://ghe.example/api/v3").expect("url");
        let url = Url::parse("https://ghe.example/api/v3/repos/o/r/contents/x").expect("url");
        assert_eq!(
            repository_of(&api, &url).map(|r| r.to_string()),
            Some("o/r".into())
        );
        let other = Url::parse("https://ghe.example/api/v3/app/installations").expect("url");
        assert!(repository_of(&api, &other).is_none());
    }
}
