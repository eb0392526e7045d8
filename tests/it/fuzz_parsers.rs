//! Property tests: the parsers that read what a stranger sends (webhook
//! bodies and headers, the manifest and `.dockerignore` of a repository) never
//! panic, and what they accept keeps the invariants the rest of Slipway
//! relies on. Only the crate's public API is used.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use slipway::context::dockerignore::DockerIgnore;
use slipway::manifest::{self, ManifestError, RepoPath, ServiceEntry, MAX_SERVICES};
use slipway::trigger::{decide, Decision};
use slipway::types::{Forge, ImageName, Repository, Version};
use slipway::webhook::payload::{json_body, PayloadError};
use slipway::webhook::signature::{sign, verify, SignatureError};

/// `cases` runs, and no regression file written into the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generic hostile input
// ---------------------------------------------------------------------------

/// Strings chosen to break parsers: traversal, separators, control and
/// bidi characters, byte order marks, confusables.
const NASTY: &[&str] = &[
    "",
    " ",
    ".",
    "..",
    "...",
    "/",
    "//",
    "./",
    "../",
    "../..",
    "a/..",
    "../a",
    "a/../..",
    "/etc/passwd",
    "C:\\Windows",
    "\\",
    "..\\..",
    "\0",
    "a\0b",
    "\n",
    "\r\n",
    "\t",
    "é",
    "ß",
    "İ",
    "\u{202e}",
    "\u{200b}",
    "\u{feff}",
    "\u{10ffff}",
    "🦀",
    "%2e%2e",
    "%00",
    "a b",
    "null",
    "true",
    "0",
    "-1",
    "closed",
    "Dockerfile",
];

fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<String>(),
        2 => prop::collection::vec(any::<char>(), 0..16).prop_map(String::from_iter),
        3 => "[a-zA-Z0-9._/ -]{0,12}",
        3 => select(NASTY).prop_map(String::from),
        1 => (select(&["a", ".", "/", "..", "é", "../"][..]), 100usize..1200)
            .prop_map(|(unit, n)| unit.repeat(n)),
    ]
    .boxed()
}

fn hostile_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..256),
        2 => hostile_string().prop_map(String::into_bytes),
        3 => json_ish_bytes(),
    ]
    .boxed()
}

/// Byte soup made of JSON tokens, so that the parser gets past its first byte.
fn json_ish_bytes() -> BoxedStrategy<Vec<u8>> {
    const TOKENS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\"",
        b"\\",
        b"\\u",
        b"\\ud800",
        b"\\u0000",
        b"0",
        b"-",
        b"1e999",
        b"-0",
        b"1.5",
        b"18446744073709551616",
        b"true",
        b"false",
        b"null",
        b" ",
        b"\n",
        b"\"action\"",
        b"\"closed\"",
        b"\"pull_request\"",
        b"\"merged\"",
        b"\"services\"",
        b"\"service_name\"",
        b"\"version\"",
        b"\"name\"",
        b"\xff",
        b"\xef\xbb\xbf",
        b"\xed\xa0\x80",
    ];
    prop::collection::vec(
        prop_oneof![
            6 => select(TOKENS).prop_map(<[u8]>::to_vec),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
    .boxed()
}

/// Keys that the parsers look for, so random documents hit real code paths.
const KEYS: &[&str] = &[
    "action",
    "pull_request",
    "merged",
    "merge_commit_sha",
    "number",
    "base",
    "ref",
    "repository",
    "full_name",
    "html_url",
    "services",
    "service_name",
    "name",
    "version",
    "type",
    "context",
    "dockerfile",
    "build_args",
    "target",
    "payload",
];

fn json_key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(KEYS).prop_map(String::from),
        1 => hostile_string(),
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ]
    .boxed()
}

/// Any JSON value, at most a few levels deep and a few dozen nodes large.
fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((json_key(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
        .boxed()
}

/// `depth` nested arrays and objects around `1`, in an order set by `shape`.
fn nested(depth: usize, shape: u64, closed: bool) -> String {
    let mut open = String::new();
    let mut close = String::new();
    for level in 0..depth {
        if (shape >> (level % 64)) & 1 == 1 {
            open.push('[');
            close.push(']');
        } else {
            open.push_str("{\"action\":");
            close.push('}');
        }
    }
    let close: String = close.chars().rev().collect();
    if closed {
        format!("{open}1{close}")
    } else {
        format!("{open}1")
    }
}

// ---------------------------------------------------------------------------
// Webhook: content types, form bodies, pull_request payloads
// ---------------------------------------------------------------------------

const JSON_TYPES: &[&str] = &[
    "application/json",
    "Application/JSON",
    "application/json; charset=utf-8",
    "  application/json  ;x=y",
];
const FORM_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8",
    " application/x-www-form-urlencoded ;",
];

fn content_type() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        1 => Just(None),
        2 => select(JSON_TYPES).prop_map(|t| Some(t.to_string())),
        2 => select(FORM_TYPES).prop_map(|t| Some(t.to_string())),
        1 => select(&["text/plain", "application/json5", "json", "", ";", "application/jsonx"][..])
            .prop_map(|t| Some(t.to_string())),
        2 => hostile_string().prop_map(Some),
    ]
    .boxed()
}

/// What `json_body` should consider the media type, written independently.
fn media_type(content_type: Option<&str>) -> String {
    let Some(ct) = content_type else {
        return String::new();
    };
    let end = ct.find(';').unwrap_or(ct.len());
    ct[..end].trim().to_ascii_lowercase()
}

fn form_bytes() -> BoxedStrategy<Vec<u8>> {
    const TOKENS: &[&str] = &[
        "payload",
        "=",
        "&",
        ";",
        "+",
        "%",
        "%7B",
        "%7D",
        "%22",
        "%3A",
        "%2",
        "%zz",
        "%FF",
        "%F0%9F",
        "%C3",
        "%00",
        "%25",
        "a",
        "payload=",
        "&payload=",
        "\u{e9}",
    ];
    prop::collection::vec(
        prop_oneof![
            6 => select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
    .boxed()
}

/// The fields of a `pull_request` delivery that `decide` reads.
#[derive(Debug, Clone)]
struct PrFields {
    action: String,
    merged: bool,
    sha: String,
    number: u64,
    base_ref: String,
    full_name: String,
    html_url: String,
}

fn pr_fields() -> impl Strategy<Value = PrFields> {
    let action = prop_oneof![
        10 => Just("closed".to_string()),
        2 => select(&["opened", "synchronize", "Closed", " closed", "closed\0", "reopened"][..])
            .prop_map(String::from),
        1 => hostile_string(),
    ];
    let sha = prop_oneof![
        12 => "[0-9a-fA-F]{40}",
        1 => "[0-9a-f]{39}|[0-9a-f]{41}|[0-9a-f]{38}é|[0-9a-g]{40}| [0-9a-f]{39}",
        1 => hostile_string(),
    ];
    let base_ref = prop_oneof![
        3 => select(&["main", "master", "release/1.0"][..]).prop_map(String::from),
        1 => hostile_string(),
    ];
    let full_name = prop_oneof![
        12 => "[A-Za-z0-9._-]{1,12}/[A-Za-z0-9._-]{1,12}",
        2 => select(&[
            "../../etc", "a/..", "../b", "./.", ".././x", "a/b/c", "a/.", "/b", "a/", "/",
            "a..b/c..d", "é/x", "a/b\n", "a b/c", "a/b?x", "a/b#x", "a%2F..",
        ][..])
        .prop_map(String::from),
        1 => "[a-z]{98,102}/[a-z]{98,102}",
        1 => hostile_string(),
    ];
    let html_url = prop_oneof![
        3 => "https://github.com/[a-z]{1,8}/[a-z]{1,8}",
        1 => select(&["http://x", "javascript:alert(1)", "ftp://x", "HTTPS://X", "//x", ""][..])
            .prop_map(String::from),
        1 => hostile_string(),
    ];
    (
        action,
        prop::bool::weighted(0.8),
        sha,
        any::<u64>(),
        base_ref,
        full_name,
        html_url,
    )
        .prop_map(
            |(action, merged, sha, number, base_ref, full_name, html_url)| PrFields {
                action,
                merged,
                sha,
                number,
                base_ref,
                full_name,
                html_url,
            },
        )
}

impl PrFields {
    fn to_json(&self) -> Value {
        json!({
            "action": self.action,
            "number": self.number,
            "pull_request": {
                "number": self.number,
                "merged": self.merged,
                "merge_commit_sha": self.sha,
                "head": { "sha": "0000000000000000000000000000000000000000" },
                "base": { "ref": self.base_ref, "sha": "1111111111111111111111111111111111111111" },
            },
            "repository": {
                "full_name": self.full_name,
                "html_url": self.html_url,
            },
            "sender": { "login": "octocat" },
        })
    }
}

/// A field removed, nulled, or replaced by a value of any type.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Remove,
    Null,
    Replace(Value),
}

fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        1 => Just(Edit::Keep),
        2 => Just(Edit::Remove),
        2 => Just(Edit::Null),
        4 => json_value().prop_map(Edit::Replace),
    ]
    .boxed()
}

/// No edit a quarter of the time, else up to three, each on one of [`EDITED`].
fn edits() -> BoxedStrategy<Vec<(usize, Edit)>> {
    prop::collection::vec((0..EDITED.len(), edit()), 0..4)
        .prop_map(|mut edits| {
            // Leaves first, so that an edited parent is not undone by its child's edit.
            edits.sort_by_key(|(field, _)| *field);
            edits
        })
        .boxed()
}

/// The fields that are edited, leaves before the objects holding them.
const EDITED: [&[&str]; 10] = [
    &["action"],
    &["pull_request", "merged"],
    &["pull_request", "merge_commit_sha"],
    &["pull_request", "number"],
    &["pull_request", "base", "ref"],
    &["repository", "full_name"],
    &["repository", "html_url"],
    &["pull_request", "base"],
    &["pull_request"],
    &["repository"],
];

fn apply(doc: &mut Value, path: &[&str], edit: &Edit) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for key in parents {
        match node.get_mut(*key) {
            Some(child) => node = child,
            None => return,
        }
    }
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    match edit {
        Edit::Keep => {}
        Edit::Remove => {
            obj.remove(*last);
        }
        Edit::Null => {
            obj.insert((*last).to_string(), Value::Null);
        }
        Edit::Replace(value) => {
            obj.insert((*last).to_string(), value.clone());
        }
    }
}

fn branches() -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(
            prop_oneof![
                3 => select(&["main", "master"][..]).prop_map(String::from),
                1 => hostile_string(),
            ],
            0..4,
        ),
    ]
    .boxed()
}

fn event_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just("pull_request".to_string()),
        2 => select(&[
            "ping", "push", "PULL_REQUEST", "pull_request ", " pull_request", "pull_request\0",
            "pull_request_review", "", "issues", "check_run", "check_suite",
        ][..])
        .prop_map(String::from),
        2 => hostile_string(),
    ]
    .boxed()
}

/// The outcome `decide` must reach for an unedited delivery.
#[derive(Debug, PartialEq)]
enum Expected {
    Build,
    Ignore,
    Error,
}

fn expected(fields: &PrFields, branches: &[String]) -> Expected {
    let valid_sha = fields.sha.len() == 40 && fields.sha.bytes().all(|b| b.is_ascii_hexdigit());
    if fields.action != "closed" || !fields.merged {
        Expected::Ignore
    } else if Repository::parse(&fields.full_name).is_err() || !valid_sha {
        Expected::Error
    } else if !branches.is_empty() && !branches.contains(&fields.base_ref) {
        Expected::Ignore
    } else {
        Expected::Build
    }
}

/// What every answer of `decide` must satisfy, whatever the input.
fn check_decision(decision: &Result<Decision, PayloadError>) {
    match decision {
        Ok(Decision::Build(pr)) => {
            let commit = pr.commit.as_str();
            assert_eq!(commit.len(), 40, "commit {commit:?}");
            assert!(
                commit
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "commit {commit:?} is not 40 lowercase hex digits"
            );
            let repo = pr.repository.as_str();
            let parts: Vec<&str> = repo.split('/').collect();
            // GitHub's are owner/name; GitLab's may have subgroups.
            if pr.forge == Forge::GitHub {
                assert_eq!(parts.len(), 2, "repository {repo:?} is not owner/name");
            } else {
                assert!(parts.len() >= 2, "repository {repo:?} has no group");
            }
            for part in &parts {
                assert!(!part.is_empty() && part.len() <= 100, "repository {repo:?}");
                assert!(
                    *part != "." && *part != "..",
                    "repository {repo:?} traverses"
                );
                assert!(
                    part.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                    "repository {repo:?} has an odd character"
                );
            }
            let (owner, name) = repo.rsplit_once('/').unwrap_or((repo, ""));
            assert_eq!(pr.repository.owner(), owner);
            assert_eq!(pr.repository.name(), name);
            assert!(
                pr.source_url.starts_with("https://") || pr.source_url.starts_with("http://"),
                "source_url {:?}",
                pr.source_url
            );
        }
        Ok(Decision::Rerun(rerun)) => {
            let commit = rerun.commit.as_str();
            assert!(
                commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
                "commit {commit:?}"
            );
            assert_eq!(rerun.repository.as_str().matches('/').count(), 1);
            assert!(rerun.build.as_ref().is_none_or(|id| id.len() <= 100));
        }
        Ok(Decision::Ignore(reason)) => {
            assert!(
                reason.chars().count() <= 128,
                "ignore reason echoes too much: {reason:?}"
            );
        }
        Err(err) => {
            // Display must not panic either: the message becomes the 400 body.
            let _ = err.to_string();
        }
    }
}

/// Whether the webhook must take `json` as JSON: serde_json's own parse,
/// which refuses nesting past 128 as Slipway does. Its full parse also
/// refuses what the JSON grammar allows but a reader may not represent:
/// numbers beyond f64 such as `1e999`, and lone surrogates such as
/// `"\ud800"` (RFC 8259, sections 6 and 8.2). Slipway skips the fields it
/// does not read without decoding them, so those count as JSON when the
/// syntax is right.
fn is_json(json: &[u8]) -> bool {
    const REPRESENTATION_ONLY: [&str; 4] = [
        "number out of range",
        "lone leading surrogate in hex escape",
        "unexpected end of hex escape",
        "invalid unicode code point",
    ];
    match serde_json::from_slice::<Value>(json) {
        Ok(_) => true,
        Err(err)
            if REPRESENTATION_ONLY
                .iter()
                .any(|m| err.to_string().starts_with(m)) =>
        {
            // Text that is not UTF-8 is not JSON (RFC 8259, section 8.1).
            std::str::from_utf8(json).is_ok()
                && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
        }
        Err(_) => false,
    }
}

/// `decide` for an event that is not `pull_request` only checks the JSON.
fn check_other_event(event: &str, json: &[u8], decision: &Result<Decision, PayloadError>) {
    // Checks' deliveries are read (a rerun), not only checked for JSON.
    if matches!(event, "pull_request" | "check_run" | "check_suite") {
        return;
    }
    let is_json = is_json(json);
    match decision {
        Ok(Decision::Ignore(_)) => assert!(is_json, "{event:?}: non-JSON body accepted"),
        Ok(Decision::Build(_)) => panic!("{event:?} is not a pull_request but builds"),
        Ok(Decision::Rerun(_)) => panic!("{event:?} is not a check but reruns"),
        Err(_) => assert!(!is_json, "{event:?}: valid JSON refused"),
    }
}

// ---------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------

fn image_name_str() -> BoxedStrategy<String> {
    prop_oneof![
        10 => "[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}){0,2}",
        1 => "[a-z0-9]{1,4}(__|---|[.]|/)[a-z0-9]{1,4}",
        2 => select(&[
            "web", "api", "team/api", "..", "../web", "a/..", "/web", "web/", "a//b", "Web",
            "a..b", "a___b", "-a", "a-", "a._b", "a:b", "é", ".", "a/./b",
        ][..])
        .prop_map(String::from),
        1 => "[a-z]{250,260}",
        1 => "([a-z]{1,3}/){80,90}[a-z]",
        2 => hostile_string(),
    ]
    .boxed()
}

fn version_str() -> BoxedStrategy<String> {
    prop_oneof![
        10 => "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        1 => "[A-Za-z0-9_][A-Za-z0-9_.-]{125,130}",
        1 => select(&[".1", "-1", "1/2", "1:2", "1+build", "../1", "1\n", "v1..2", "é"][..])
            .prop_map(String::from),
        2 => hostile_string(),
    ]
    .boxed()
}

/// Paths for `context` and `dockerfile`: relative, absolute, escaping, odd.
fn path_str() -> BoxedStrategy<String> {
    let component = prop_oneof![
        6 => "[a-zA-Z0-9_.-]{1,8}",
        3 => select(&[
            "..", ".", "", "Dockerfile", "é", "\u{202e}", "\\", "..\\..", "\0", "~", "*", " ",
            "svc", "web",
        ][..])
        .prop_map(String::from),
        1 => hostile_string(),
    ];
    prop_oneof![
        10 => (
            select(&["", "", "", "", "/", "./", "../", "//", "\\"][..]),
            prop::collection::vec(component, 0..6),
        )
            .prop_map(|(prefix, parts)| format!("{prefix}{}", parts.join("/"))),
        2 => hostile_string(),
        1 => (0usize..40, 0usize..40)
            .prop_map(|(down, up)| format!("{}{}Dockerfile", "d/".repeat(down), "../".repeat(up))),
        1 => ("[a-z]{1,3}", 100usize..800).prop_map(|(part, n)| format!("{part}/").repeat(n)),
    ]
    .boxed()
}

/// A manifest field: usually a string from `value`, sometimes absent, null,
/// or a value of another type.
fn field(value: BoxedStrategy<String>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        14 => value.prop_map(|s| Some(Value::String(s))),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        2 => json_value().prop_map(Some),
    ]
    .boxed()
}

fn extras() -> BoxedStrategy<Vec<(String, Value)>> {
    prop::collection::vec((json_key(), json_value()), 0..2).boxed()
}

fn object(extras: Vec<(String, Value)>, fields: Vec<(&str, Option<Value>)>) -> Value {
    let mut obj: Map<String, Value> = extras.into_iter().collect();
    for (key, value) in fields {
        match value {
            Some(value) => {
                obj.insert(key.to_string(), value);
            }
            None => {
                obj.remove(key);
            }
        }
    }
    Value::Object(obj)
}

/// `{"name", "version", "context", "dockerfile", "build_args", "target"}`.
fn full_entry() -> BoxedStrategy<Value> {
    let build_args = prop_oneof![
        3 => Just(None),
        3 => prop::collection::vec(
            (
                prop_oneof![
                    3 => "[A-Z_]{1,8}",
                    1 => select(&["", "=", "A=B", "\0", "é"][..]).prop_map(String::from),
                    1 => hostile_string(),
                ],
                json_leaf(),
            ),
            0..4,
        )
        .prop_map(|args| Some(Value::Object(args.into_iter().collect()))),
        1 => json_value().prop_map(Some),
    ];
    let target = prop_oneof![
        3 => Just(None),
        2 => "[a-z]{1,8}".prop_map(|t| Some(Value::String(t))),
        2 => select(&["", " ", "a b", "\n", "a\tb", "\u{85}"][..])
            .prop_map(|t| Some(Value::String(t.to_string()))),
        1 => json_value().prop_map(Some),
    ];
    (
        field(image_name_str()),
        field(version_str()),
        prop_oneof![1 => Just(None), 3 => field(path_str())],
        prop_oneof![1 => Just(None), 3 => field(path_str())],
        build_args,
        target,
        extras(),
    )
        .prop_map(
            |(name, version, context, dockerfile, build_args, target, extras)| {
                object(
                    extras,
                    vec![
                        ("name", name),
                        ("version", version),
                        ("context", context),
                        ("dockerfile", dockerfile),
                        ("build_args", build_args),
                        ("target", target),
                    ],
                )
            },
        )
        .boxed()
}

/// `{"service_name", "version", "type"}`.
fn short_entry() -> BoxedStrategy<Value> {
    let kind = prop_oneof![
        3 => Just(None),
        3 => Just(Some(json!("Docker"))),
        1 => select(&["docker", "Helm", "", "Docker "][..]).prop_map(|t| Some(json!(t))),
        1 => Just(Some(Value::Null)),
        1 => json_value().prop_map(Some),
    ];
    (
        field(image_name_str()),
        field(version_str()),
        kind,
        extras(),
    )
        .prop_map(|(name, version, kind, extras)| {
            object(
                extras,
                vec![("service_name", name), ("version", version), ("type", kind)],
            )
        })
        .boxed()
}

/// Lists of entries, now and then one of any value, and now and then longer
/// than [`MAX_SERVICES`].
fn entry_list(entry: BoxedStrategy<Value>) -> BoxedStrategy<Vec<Value>> {
    prop_oneof![
        24 => prop::collection::vec(
            prop_oneof![19 => entry.clone(), 1 => json_value()],
            0..7,
        ),
        1 => prop::collection::vec(entry, 250..262),
    ]
    .boxed()
}

/// Documents in the manifest's three shapes, and near misses.
fn manifest_doc() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (entry_list(full_entry()), extras())
            .prop_map(|(list, extras)| object(extras, vec![("services", Some(Value::Array(list)))])),
        1 => json_value().prop_map(|v| json!({ "services": v })),
        3 => entry_list(short_entry()).prop_map(Value::Array),
        2 => short_entry(),
    ]
    .boxed()
}

/// How many entries `parse` must return for `doc`, or why it must refuse it.
fn expected_entries(doc: &Value) -> Result<usize, ManifestError> {
    let count = match doc {
        Value::Object(obj) if obj.contains_key("services") => match &obj["services"] {
            Value::Array(list) => list.len(),
            _ => return Err(ManifestError::UnknownShape),
        },
        Value::Object(obj) if obj.contains_key("service_name") => 1,
        Value::Array(list) => list.len(),
        _ => return Err(ManifestError::UnknownShape),
    };
    match count {
        0 => Err(ManifestError::Empty),
        n if n > MAX_SERVICES => Err(ManifestError::TooManyServices(n)),
        n => Ok(n),
    }
}

/// A [`RepoPath`] is relative, clean, and free of `..`.
fn check_repo_path(path: &RepoPath, what: &str) {
    let text = path.as_str();
    assert!(!text.starts_with('/'), "{what} {text:?} is absolute");
    assert!(
        !text.contains('\\') && !text.contains('\0'),
        "{what} {text:?} has a backslash or NUL"
    );
    if !text.is_empty() {
        for part in text.split('/') {
            assert!(
                !part.is_empty() && part != "." && part != "..",
                "{what} {text:?} is not clean"
            );
        }
    }
    let parts: Vec<&str> = path.parts().collect();
    assert_eq!(parts.join("/"), text, "{what} {text:?}: parts disagree");
}

/// What every accepted manifest must satisfy.
fn check_manifest(result: &Result<Vec<ServiceEntry>, ManifestError>) {
    let Ok(entries) = result else {
        return;
    };
    assert!(!entries.is_empty() && entries.len() <= MAX_SERVICES);
    let mut names = HashSet::new();
    for entry in entries {
        assert!(entry.name.chars().count() <= 200, "name echoes too much");
        assert!(
            entry.version.chars().count() <= 200,
            "version echoes too much"
        );
        let Ok(spec) = &entry.spec else {
            continue;
        };
        let name = spec.name.as_str();
        assert!(ImageName::parse(name).is_ok(), "name {name:?} accepted");
        assert!(
            name.starts_with(&entry.name),
            "{name:?} vs {:?}",
            entry.name
        );
        let version = spec.version.as_str();
        assert!(
            Version::parse(version).is_ok(),
            "version {version:?} accepted"
        );
        check_repo_path(&spec.context, "context");
        check_repo_path(&spec.dockerfile, "dockerfile");
        let context: Vec<&str> = spec.context.parts().collect();
        let dockerfile: Vec<&str> = spec.dockerfile.parts().collect();
        assert!(
            dockerfile.starts_with(&context),
            "dockerfile {:?} lies outside context {:?}",
            spec.dockerfile,
            spec.context
        );
        let relative = spec.dockerfile_in_context();
        assert!(
            !relative.starts_with('/') && !relative.split('/').any(|p| p == ".."),
            "dockerfile_in_context {relative:?}"
        );
        if let Some(target) = &spec.target {
            assert!(!target.is_empty() && !target.chars().any(char::is_whitespace));
        }
        for key in spec.build_args.keys() {
            assert!(!key.is_empty() && !key.contains('=') && !key.contains('\0'));
        }
        assert!(names.insert(name.to_string()), "{name:?} accepted twice");
    }
}

// ---------------------------------------------------------------------------
// .dockerignore
// ---------------------------------------------------------------------------

/// Pattern files made of glob and Go-regexp fragments, which is where the
/// translation to the `regex` crate could go wrong.
fn dockerignore_text() -> BoxedStrategy<String> {
    const TOKENS: &[&str] = &[
        "*",
        "**",
        "**/",
        "/**",
        "?",
        "[",
        "]",
        "[^",
        "[!",
        "[]",
        "[^]",
        "[a-",
        "-",
        "\\",
        "\\\\",
        "\\*",
        "!",
        "#",
        "^",
        "$",
        ".",
        "..",
        "./",
        "+",
        "(",
        ")",
        "(?",
        "{",
        "}",
        "{2}",
        "{1,3}",
        "{0,}",
        "{1001}",
        "{2,1}",
        "{01}",
        ",",
        "|",
        "/",
        ":",
        "[:alpha:]",
        "[:^digit:]",
        "[:nope:]",
        "[[:",
        ":]",
        "\\p{L}",
        "\\pL",
        "\\PN",
        "\\p{^Greek}",
        "\\p{Foo}",
        "\\p{",
        "\\p",
        "\\Q",
        "\\E",
        "\\x41",
        "\\x{1F600}",
        "\\x{110000}",
        "\\x{",
        "\\xZ",
        "\\0",
        "\\07",
        "\\377",
        "\\8",
        "\\d",
        "\\W",
        "\\s",
        "\\b",
        "\\B",
        "\\A",
        "\\z",
        "\\C",
        "\\n",
        "\\é",
        "a",
        "b",
        "z",
        "0",
        "9",
        "é",
        "\u{feff}",
        "\u{10ffff}",
        " ",
        "\t",
        "\r",
    ];
    let line = prop_oneof![
        8 => prop::collection::vec(
            prop_oneof![
                8 => select(TOKENS).prop_map(String::from),
                1 => any::<char>().prop_map(String::from),
            ],
            0..10,
        )
        .prop_map(|parts| parts.concat()),
        1 => hostile_string(),
    ];
    (
        prop::collection::vec(line, 0..8),
        select(&["\n", "\r\n"][..]),
    )
        .prop_map(|(lines, newline)| lines.join(newline))
        .boxed()
}

fn context_path() -> BoxedStrategy<String> {
    let component = prop_oneof![
        4 => "[a-z0-9.]{1,6}",
        2 => select(&[
            "a", "b", "x.go", "README.md", ".", "..", "", "*", "[", "\\", "é", "\u{feff}", "#x",
            "!x", " ",
        ][..])
        .prop_map(String::from),
        1 => hostile_string(),
    ];
    prop_oneof![
        4 => prop::collection::vec(component, 1..5).prop_map(|parts| parts.join("/")),
        1 => hostile_string(),
    ]
    .boxed()
}

/// Parses `text` and asks about every path: none of it may panic.
fn exercise_dockerignore(text: &str, paths: &[String]) {
    let Ok(rules) = DockerIgnore::parse(text) else {
        return;
    };
    for path in paths {
        let _ = rules.is_excluded(path);
    }
    // An empty file and comments exclude nothing.
    if text
        .lines()
        .all(|line| line.trim().is_empty() || line.starts_with('#'))
    {
        for path in paths {
            assert!(!rules.is_excluded(path), "{text:?} excludes {path:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

fn signature_header() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        2 => hostile_bytes().prop_map(Some),
        2 => prop::collection::vec(any::<u8>(), 0..80).prop_map(|rest| {
            let mut header = b"sha256=".to_vec();
            header.extend(rest);
            Some(header)
        }),
        3 => "sha256=[0-9a-fA-F]{62,66}".prop_map(|h| Some(h.into_bytes())),
        1 => "sha256=[0-9a-fA-Fg-zé ]{64}".prop_map(|h| Some(h.into_bytes())),
        1 => "(sha1|SHA256|sha256 |sha256:)=?[0-9a-f]{64}".prop_map(|h| Some(h.into_bytes())),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

// Cheap, byte-level properties.
proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn json_body_never_panics(ct in content_type(), body in hostile_bytes()) {
        let result = json_body(ct.as_deref(), &body);
        match media_type(ct.as_deref()).as_str() {
            "application/json" => {
                let json = result.expect("a JSON body is taken as it is");
                prop_assert_eq!(json.bytes(), &body[..]);
            }
            "application/x-www-form-urlencoded" => {
                prop_assert!(!matches!(result, Err(PayloadError::UnsupportedContentType(_))));
            }
            _ => match result {
                Err(PayloadError::UnsupportedContentType(echo)) => {
                    prop_assert!(echo.chars().count() <= 100, "echo {:?}", echo);
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
                Ok(_) => prop_assert!(false, "{:?} accepted", ct),
            },
        }
    }

    #[test]
    fn raw_form_bodies_never_panic(ct in select(FORM_TYPES), body in form_bytes()) {
        match json_body(Some(ct), &body) {
            Ok(json) => {
                prop_assert!(std::str::from_utf8(json.bytes()).is_ok());
                check_decision(&decide(Forge::GitHub, "pull_request", json.bytes(), &[]));
            }
            Err(err) => prop_assert_eq!(err, PayloadError::MissingFormPayload),
        }
    }

    #[test]
    fn decide_never_panics_on_random_bytes(
        event in event_name(),
        json in hostile_bytes(),
        branches in branches(),
    ) {
        let decision = decide(Forge::GitHub, &event, &json, &branches);
        check_decision(&decision);
        check_other_event(&event, &json, &decision);
    }

    #[test]
    fn gitlab_decisions_never_panic_on_random_bytes(
        json in hostile_bytes(),
        branches in branches(),
    ) {
        check_decision(&decide(Forge::GitLab, "Merge Request Hook", &json, &branches));
    }

    #[test]
    fn manifest_never_panics_on_random_bytes(bytes in hostile_bytes()) {
        let result = manifest::parse(&bytes);
        check_manifest(&result);
        if serde_json::from_slice::<Value>(&bytes).is_err() {
            prop_assert!(matches!(result, Err(ManifestError::InvalidJson(_))));
        }
    }

    #[test]
    fn signature_verify_never_panics_on_random_headers(
        secret in prop::collection::vec(any::<u8>(), 0..80),
        header in signature_header(),
        body in hostile_bytes(),
    ) {
        let result = verify(&secret, header.as_deref(), &body);
        match (&header, &result) {
            (None, _) => prop_assert_eq!(&result, &Err(SignatureError::Missing)),
            (Some(header), Ok(())) => {
                // Only the right digest passes: HMAC collisions do not happen here.
                prop_assert_eq!(header.to_ascii_lowercase(), sign(&secret, &body).into_bytes());
            }
            (Some(_), Err(err)) => prop_assert_ne!(err, &SignatureError::Missing),
        }
    }

    #[test]
    fn signature_of_the_body_always_verifies(
        secret in prop::collection::vec(any::<u8>(), 0..200),
        body in hostile_bytes(),
        flip in 7usize..71,
    ) {
        let header = sign(&secret, &body);
        prop_assert_eq!(header.len(), 71);
        prop_assert_eq!(verify(&secret, Some(header.as_bytes()), &body), Ok(()));
        let upper = format!("sha256={}", header["sha256=".len()..].to_ascii_uppercase());
        prop_assert_eq!(verify(&secret, Some(upper.as_bytes()), &body), Ok(()));
        // Any single changed digit is a mismatch, not a crash or a pass.
        let mut wrong = header.into_bytes();
        wrong[flip] = if wrong[flip] == b'0' { b'1' } else { b'0' };
        prop_assert_eq!(
            verify(&secret, Some(&wrong), &body),
            Err(SignatureError::Mismatch)
        );
        let mut longer = body.clone();
        longer.push(0);
        let header = sign(&secret, &body);
        prop_assert_eq!(
            verify(&secret, Some(header.as_bytes()), &longer),
            Err(SignatureError::Mismatch)
        );
    }
}

// Properties that build structured documents.
proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn form_bodies_yield_their_payload_field(
        ct in select(FORM_TYPES),
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    2 => Just("payload".to_string()),
                    1 => select(&["Payload", "payload ", "", "other"][..]).prop_map(String::from),
                    1 => hostile_string(),
                ],
                hostile_string(),
            ),
            0..5,
        ),
    ) {
        let body = serde_urlencoded::to_string(&pairs).expect("pairs encode");
        let first = pairs.iter().find(|(key, _)| key == "payload").map(|(_, v)| v);
        match (json_body(Some(ct), body.as_bytes()), first) {
            (Ok(json), Some(value)) => prop_assert_eq!(json.bytes(), value.as_bytes()),
            (Err(PayloadError::MissingFormPayload), None) => {}
            (Ok(_), None) => prop_assert!(false, "{:?} has no payload field", body),
            (Err(err), _) => prop_assert!(false, "{:?}: {}", body, err),
        }
    }

    #[test]
    fn decide_never_panics_on_random_json(
        event in event_name(),
        doc in json_value(),
        branches in branches(),
    ) {
        let json = serde_json::to_vec(&doc).expect("a Value serialises");
        let decision = decide(Forge::GitHub, &event, &json, &branches);
        check_decision(&decision);
        check_other_event(&event, &json, &decision);
    }

    #[test]
    fn decide_on_mutilated_pull_request_payloads(
        fields in pr_fields(),
        edits in edits(),
        branches in branches(),
        include_base in any::<bool>(),
        form in any::<bool>(),
        ct_index in 0usize..3,
    ) {
        let mut branches = branches;
        if include_base && !branches.is_empty() {
            branches.push(fields.base_ref.clone());
        }
        let mut doc = fields.to_json();
        for (field, edit) in &edits {
            apply(&mut doc, EDITED[*field], edit);
        }
        let text = doc.to_string();

        // Through the content-type layer as GitHub would send it.
        let (ct, body) = if form {
            let pairs = [("other", "1"), ("payload", text.as_str())];
            let body = serde_urlencoded::to_string(pairs).expect("pairs encode");
            (FORM_TYPES[ct_index % FORM_TYPES.len()], body.into_bytes())
        } else {
            (JSON_TYPES[ct_index % JSON_TYPES.len()], text.clone().into_bytes())
        };
        let json = json_body(Some(ct), &body).expect("a supported content type");
        prop_assert_eq!(json.bytes(), text.as_bytes());

        let decision = decide(Forge::GitHub, "pull_request", json.bytes(), &branches);
        check_decision(&decision);

        if edits.iter().all(|(_, e)| matches!(e, Edit::Keep)) {
            prop_assert!(!matches!(decision, Ok(Decision::Rerun(_))));
            let outcome = match &decision {
                Ok(Decision::Rerun(_)) => Expected::Error,
                Ok(Decision::Build(_)) => Expected::Build,
                Ok(Decision::Ignore(_)) => Expected::Ignore,
                Err(_) => Expected::Error,
            };
            prop_assert_eq!(outcome, expected(&fields, &branches), "{:?}", decision);
            if let Ok(Decision::Build(pr)) = &decision {
                prop_assert_eq!(pr.commit.as_str(), fields.sha.to_ascii_lowercase());
                prop_assert_eq!(pr.repository.as_str(), fields.full_name.as_str());
                prop_assert_eq!(pr.number, fields.number);
                prop_assert_eq!(&pr.base_ref, &fields.base_ref);
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash(
        depth in 0usize..3000,
        shape in any::<u64>(),
        closed in any::<bool>(),
        event in select(&["pull_request", "push"][..]),
    ) {
        let text = nested(depth, shape, closed);
        let wrapped = format!("{{\"action\":\"closed\",\"pull_request\":{text}}}");
        for json in [text.as_bytes(), wrapped.as_bytes()] {
            let decision = decide(Forge::GitHub, event, json, &[]);
            check_decision(&decision);
            let manifest = manifest::parse(json);
            check_manifest(&manifest);
            if depth > 200 {
                prop_assert!(decision.is_err(), "depth {} accepted", depth);
                prop_assert!(matches!(manifest, Err(ManifestError::InvalidJson(_))));
            }
        }
    }

    #[test]
    fn manifest_never_panics_on_random_json(doc in json_value()) {
        let json = serde_json::to_vec(&doc).expect("a Value serialises");
        let result = manifest::parse(&json);
        check_manifest(&result);
        match (expected_entries(&doc), &result) {
            (Ok(n), Ok(entries)) => prop_assert_eq!(n, entries.len()),
            (Err(want), Err(got)) => prop_assert_eq!(&want, got),
            (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
        }
    }

    #[test]
    fn manifest_like_json_yields_only_safe_specs(doc in manifest_doc(), pretty in any::<bool>()) {
        let json = if pretty {
            serde_json::to_vec_pretty(&doc)
        } else {
            serde_json::to_vec(&doc)
        }
        .expect("a Value serialises");
        let result = manifest::parse(&json);
        check_manifest(&result);
        match (expected_entries(&doc), &result) {
            (Ok(n), Ok(entries)) => prop_assert_eq!(n, entries.len()),
            (Err(want), Err(got)) => prop_assert_eq!(&want, got),
            (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
        }
    }

    #[test]
    fn dockerignore_never_panics(
        text in dockerignore_text(),
        paths in prop::collection::vec(context_path(), 0..8),
    ) {
        exercise_dockerignore(&text, &paths);
        // One bad line fails the whole file; each line alone gets further.
        if text.contains('\n') {
            for line in text.split('\n') {
                exercise_dockerignore(line, &paths);
            }
        }
    }

    #[test]
    fn dockerignore_literal_patterns_exclude_their_path(
        dir in "[a-z0-9_]{1,6}(/[a-z0-9_]{1,6}){0,3}",
        child in "[a-z0-9_]{1,6}",
        prefix in select(&["", "/", "./", "  "][..]),
    ) {
        let pattern = format!("{prefix}{dir}");
        let rules = DockerIgnore::parse(&pattern).expect("a plain path is a pattern");
        let below = format!("{dir}/{child}");
        let sibling = format!("{dir}{child}");
        prop_assert!(rules.is_excluded(&dir));
        prop_assert!(rules.is_excluded(&below));
        prop_assert!(!rules.is_excluded(&sibling));

        let rules = DockerIgnore::parse(&format!("{pattern}\n!{dir}")).expect("parses");
        prop_assert!(!rules.is_excluded(&dir));
        prop_assert!(!rules.is_excluded(&below));
    }
}
