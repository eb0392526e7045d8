//! The parts of GitHub's `pull_request` payload that Slipway reads. Every field
//! is optional here so that a missing one becomes a clear 400, not a serde
//! message about struct layout.

use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("unsupported content type `{0}`: configure the webhook with application/json or application/x-www-form-urlencoded")]
    UnsupportedContentType(String),
    #[error("form-encoded body has no `payload` field")]
    MissingFormPayload,
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("payload is missing `{0}`")]
    MissingField(&'static str),
    #[error("payload has an invalid `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

#[derive(Debug, Deserialize)]
pub struct PullRequestEvent {
    pub action: Option<String>,
    pub pull_request: Option<PullRequest>,
    pub repository: Option<RepositoryPayload>,
}

#[derive(Debug, Deserialize)]
pub struct PullRequest {
    pub number: Option<u64>,
    pub merged: Option<bool>,
    pub merge_commit_sha: Option<String>,
    pub base: Option<Base>,
}

#[derive(Debug, Deserialize)]
pub struct Base {
    #[serde(rename = "ref")]
    pub branch: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RepositoryPayload {
    pub full_name: Option<String>,
    pub html_url: Option<String>,
}

/// The parts of GitLab's `Merge Request Hook` payload that Slipway reads.
#[derive(Debug, Deserialize)]
pub struct MergeRequestEvent {
    pub object_attributes: Option<MergeRequestAttributes>,
    pub project: Option<GitLabProject>,
}

#[derive(Debug, Deserialize)]
pub struct MergeRequestAttributes {
    pub action: Option<String>,
    pub iid: Option<u64>,
    pub target_branch: Option<String>,
    pub merge_commit_sha: Option<String>,
    pub squash_commit_sha: Option<String>,
    pub last_commit: Option<LastCommit>,
}

#[derive(Debug, Deserialize)]
pub struct LastCommit {
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct GitLabProject {
    pub path_with_namespace: Option<String>,
    pub web_url: Option<String>,
}

/// Extracts the JSON document from a body as GitHub sends it, given the
/// request's `Content-Type`.
pub fn json_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<JsonBody<'a>, PayloadError> {
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media_type.as_str() {
        "application/json" => Ok(JsonBody::Raw(body)),
        "application/x-www-form-urlencoded" => form_payload(body).map(JsonBody::Owned),
        _ => Err(PayloadError::UnsupportedContentType(
            content_type.unwrap_or("none").chars().take(100).collect(),
        )),
    }
}

pub enum JsonBody<'a> {
    Raw(&'a [u8]),
    Owned(String),
}

impl JsonBody<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            JsonBody::Raw(bytes) => bytes,
            JsonBody::Owned(text) => text.as_bytes(),
        }
    }
}

fn form_payload(body: &[u8]) -> Result<String, PayloadError> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .find_map(|(key, value)| (key == "payload").then_some(value))
        .ok_or(PayloadError::MissingFormPayload)
}

/// serde_json's own limit, which it applies only to values it builds.
const MAX_DEPTH: usize = 128;

/// The document as text, checked for what skipping unread fields would not
/// check: that it is UTF-8 throughout, and nested at most `MAX_DEPTH` deep.
/// Building the whole document as a `serde_json::Value` would check both, but
/// it was most of the CPU an ignored delivery cost.
fn checked_text(json: &[u8]) -> Result<&str, PayloadError> {
    let text = std::str::from_utf8(json)
        .map_err(|err| PayloadError::InvalidJson(format!("body is not UTF-8: {err}")))?;
    if nesting_exceeds(text, MAX_DEPTH) {
        return Err(PayloadError::InvalidJson(format!(
            "nested more than {MAX_DEPTH} levels deep"
        )));
    }
    Ok(text)
}

/// Whether brackets outside strings nest deeper than `limit`. The parse that
/// follows checks the syntax, so this scan only has to be right for valid JSON.
fn nesting_exceeds(text: &str, limit: usize) -> bool {
    let bytes = text.as_bytes();
    let (mut depth, mut at) = (0usize, 0usize);
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => match string_end(bytes, at + 1) {
                Some(end) => {
                    at = end;
                    continue;
                }
                None => return false,
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    false
}

/// The index just past the quote that closes the string whose text starts
/// at `from`; None when it never closes. Strings are most of a payload's
/// bytes, so they are skipped a chunk at a time.
fn string_end(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let offset = memchr::memchr2(b'"', b'\\', bytes.get(from..)?)?;
        let found = from + offset;
        if bytes[found] == b'"' {
            return Some(found + 1);
        }
        from = found + 2;
    }
}

/// serde's messages can quote the offending value whole; keep them short.
fn invalid_json(err: serde_json::Error) -> PayloadError {
    PayloadError::InvalidJson(err.to_string().chars().take(200).collect())
}

/// Checks that the document is JSON at all, for events whose content Slipway ignores.
pub fn check_json(json: &[u8]) -> Result<(), PayloadError> {
    serde_json::from_str::<serde::de::IgnoredAny>(checked_text(json)?)
        .map(|_| ())
        .map_err(invalid_json)
}

pub fn parse_pull_request_event(json: &[u8]) -> Result<PullRequestEvent, PayloadError> {
    serde_json::from_str(checked_text(json)?).map_err(invalid_json)
}

pub fn parse_value(json: &[u8]) -> Result<serde_json::Value, PayloadError> {
    serde_json::from_str(checked_text(json)?).map_err(invalid_json)
}

pub fn parse_merge_request_event(json: &[u8]) -> Result<MergeRequestEvent, PayloadError> {
    serde_json::from_str(checked_text(json)?).map_err(invalid_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_carry_json_in_payload() {
        let body = b"payload=%7B%22zen%22%3A%22hi%22%7D&other=1";
        let json = json_body(Some("application/x-www-form-urlencoded"), body).expect("form");
        assert_eq!(json.bytes(), br#"{"zen":"hi"}"#);
        assert!(matches!(
            json_body(Some("application/x-www-form-urlencoded"), b"x=1"),
            Err(PayloadError::MissingFormPayload)
        ));
    }

    #[test]
    fn content_types_are_matched_without_parameters() {
        assert!(json_body(Some("application/json; charset=utf-8"), b"{}").is_ok());
        assert!(json_body(Some("Application/JSON"), b"{}").is_ok());
        assert!(matches!(
            json_body(Some("text/plain"), b"{}"),
            Err(PayloadError::UnsupportedContentType(_))
        ));
        assert!(matches!(
            json_body(None, b"{}"),
            Err(PayloadError::UnsupportedContentType(_))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(check_json(deep.as_bytes()).is_err());
        assert!(parse_pull_request_event(format!("{{\"action\":{deep}}}").as_bytes()).is_err());
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(check_json(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(check_json(nested(MAX_DEPTH + 1).as_bytes()).is_err());
        // Brackets in strings, after escaped quotes and backslashes, are text.
        let text = format!(r#"{{"a":"\\\"{}","b":[1]}}"#, "[".repeat(500));
        assert!(check_json(text.as_bytes()).is_ok());
        let event = format!(r#"{{"action":"closed","x":"{}\\"}}"#, "{".repeat(500));
        let parsed = parse_pull_request_event(event.as_bytes()).expect("parses");
        assert_eq!(parsed.action.as_deref(), Some("closed"));
    }

    #[test]
    fn unread_fields_are_still_checked_for_syntax() {
        assert!(check_json(br#"{"a":[1,2,}"#).is_err());
        assert!(parse_pull_request_event(br#"{"action":"closed","x":[tru]}"#).is_err());
        assert!(parse_pull_request_event(br#"{"action":"closed"} x"#).is_err());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert!(check_json(b"{\"a\":\"\xff\"}").is_err());
    }
}
