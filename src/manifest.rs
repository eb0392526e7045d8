//! The service manifest (`dockerInfo.json`): its three accepted shapes, and
//! the rules each service must follow. A service that breaks a rule fails on
//! its own; the others still build.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::platform::{Platform, PlatformError};
use crate::tags::MovingTag;
use crate::types::{ImageName, Version};

/// Larger manifests are refused whole: they are far more likely a mistake
/// than a monorepo, and each service costs an engine build.
pub const MAX_SERVICES: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("manifest shape not recognised: expected {{\"services\": [...]}}, a list of {{\"service_name\", \"version\"}} entries, or one such entry")]
    UnknownShape,
    #[error("manifest lists no services")]
    Empty,
    #[error("manifest lists {0} services; at most {MAX_SERVICES} are built per merge")]
    TooManyServices(usize),
}

/// A path inside the repository: relative, '/'-separated, with no `.` or `..`
/// parts. The empty path is the repository root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(String);

impl RepoPath {
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Cleans `raw` lexically and refuses anything that leaves `base`.
    fn resolve(base: &RepoPath, raw: &str, what: &str) -> Result<Self, String> {
        if raw.chars().any(char::is_control) {
            return Err(format!("{what} contains control characters"));
        }
        if raw.starts_with('/') || raw.contains('\\') {
            return Err(format!(
                "{what} `{raw}` must be a relative path inside the repository"
            ));
        }
        let mut parts: Vec<&str> = base.parts().collect();
        let floor = parts.len();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." if parts.len() > floor => {
                    parts.pop();
                }
                ".." => return Err(format!("{what} `{raw}` leaves {}", base.describe())),
                _ => parts.push(part),
            }
        }
        Ok(Self(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|p| !p.is_empty())
    }

    /// This path relative to `ancestor`, which it must lie within.
    pub fn relative_to(&self, ancestor: &RepoPath) -> Option<&str> {
        if ancestor.0.is_empty() {
            return Some(&self.0);
        }
        self.0
            .strip_prefix(&ancestor.0)
            .and_then(|rest| rest.strip_prefix('/'))
    }

    fn describe(&self) -> String {
        if self.0.is_empty() {
            "the repository".to_string()
        } else {
            format!("the context `{}`", self.0)
        }
    }
}

/// One service to build, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: ImageName,
    pub version: Version,
    /// Folder in the repository sent as the build context.
    pub context: RepoPath,
    /// The Dockerfile, inside `context`.
    pub dockerfile: RepoPath,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// The other tags it sets (full shape only), without repeats.
    pub tags: Vec<MovingTag>,
    /// The platforms it is built for (full shape only), without repeats;
    /// empty: `--platforms`, else the engine's own.
    pub platforms: Vec<Platform>,
}

impl ServiceSpec {
    /// The Dockerfile's path relative to the context, as the engine wants it.
    pub fn dockerfile_in_context(&self) -> &str {
        self.dockerfile
            .relative_to(&self.context)
            .unwrap_or("Dockerfile")
    }
}

/// One manifest entry: its raw name and version (for the record) and either
/// a buildable spec or the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub name: String,
    pub version: String,
    pub spec: Result<ServiceSpec, String>,
}

/// Parses a manifest in any of the three shapes.
pub fn parse(bytes: &[u8]) -> Result<Vec<ServiceEntry>, ManifestError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| ManifestError::InvalidJson(e.to_string().chars().take(200).collect()))?;
    let entries: Vec<ServiceEntry> = match &doc {
        Value::Object(obj) if obj.contains_key("services") => match &obj["services"] {
            Value::Array(list) => list.iter().map(full_entry).collect(),
            _ => return Err(ManifestError::UnknownShape),
        },
        Value::Object(obj) if obj.contains_key("service_name") => vec![short_entry(obj, false)],
        Value::Array(list) => list
            .iter()
            .map(|item| match item {
                Value::Object(obj) => short_entry(obj, true),
                _ => broken_entry("each list entry must be an object"),
            })
            .collect(),
        _ => return Err(ManifestError::UnknownShape),
    };
    match entries.len() {
        0 => Err(ManifestError::Empty),
        n if n > MAX_SERVICES => Err(ManifestError::TooManyServices(n)),
        _ => Ok(reject_duplicates(entries)),
    }
}

fn broken_entry(reason: &str) -> ServiceEntry {
    ServiceEntry {
        name: String::new(),
        version: String::new(),
        spec: Err(reason.to_string()),
    }
}

/// `{"name", "version", "context", "dockerfile", "build_args", "target", "tags", "platforms"}`.
fn full_entry(item: &Value) -> ServiceEntry {
    let Value::Object(obj) = item else {
        return broken_entry("each entry of `services` must be an object");
    };
    let name = text_field(obj, "name");
    let version = text_field(obj, "version");
    let spec = (|| {
        let context = optional_string(obj, "context")?.unwrap_or_default();
        let context = RepoPath::resolve(&RepoPath::root(), &context, "context")?;
        let dockerfile = optional_string(obj, "dockerfile")?.unwrap_or_else(|| "Dockerfile".into());
        let dockerfile = RepoPath::resolve(&context, &dockerfile, "dockerfile")?;
        if dockerfile == context {
            return Err(
                "`dockerfile` must name a file inside the context, not the context itself".into(),
            );
        }
        let name = image_name(obj, "name")?;
        let version = version_field(obj)?;
        Ok(ServiceSpec {
            name,
            tags: tags(obj, &version)?,
            version,
            context,
            dockerfile,
            build_args: build_args(obj)?,
            target: target(obj)?,
            platforms: platforms(obj)?,
        })
    })();
    ServiceEntry {
        name,
        version,
        spec,
    }
}

/// `{"service_name", "version", "type"}`; in a list, the context is the
/// folder named after the service, alone it is the repository root.
fn short_entry(obj: &Map<String, Value>, in_list: bool) -> ServiceEntry {
    let name = text_field(obj, "service_name");
    let version = text_field(obj, "version");
    let spec = (|| {
        check_type(obj)?;
        let name = image_name(obj, "service_name")?;
        let context = if in_list {
            RepoPath::resolve(&RepoPath::root(), name.as_str(), "context")?
        } else {
            RepoPath::root()
        };
        let dockerfile = RepoPath::resolve(&context, "Dockerfile", "dockerfile")?;
        Ok(ServiceSpec {
            name,
            version: version_field(obj)?,
            context,
            dockerfile,
            build_args: BTreeMap::new(),
            target: None,
            tags: Vec::new(),
            platforms: Vec::new(),
        })
    })();
    ServiceEntry {
        name,
        version,
        spec,
    }
}

fn check_type(obj: &Map<String, Value>) -> Result<(), String> {
    match obj.get("type") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(t)) if t == "Docker" => Ok(()),
        Some(other) => Err(format!(
            "type {} is not supported: only services of type `Docker` are built",
            short_json(other)
        )),
    }
}

fn text_field(obj: &Map<String, Value>, key: &str) -> String {
    match obj.get(key) {
        Some(Value::String(s)) => s.chars().take(200).collect(),
        Some(Value::Null) | None => String::new(),
        Some(other) => short_json(other),
    }
}

fn required_string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(format!("`{key}` is required")),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn image_name(obj: &Map<String, Value>, key: &str) -> Result<ImageName, String> {
    ImageName::parse(required_string(obj, key)?).map_err(|e| e.to_string())
}

fn version_field(obj: &Map<String, Value>) -> Result<Version, String> {
    Version::parse(required_string(obj, "version")?).map_err(|e| e.to_string())
}

fn build_args(obj: &Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    let args = match obj.get("build_args") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(args)) => args,
        Some(_) => return Err("`build_args` must be an object of strings".into()),
    };
    args.iter()
        .map(|(key, value)| {
            let valid_key = !key.is_empty() && !key.contains('=') && !key.contains('\0');
            if !valid_key {
                return Err(format!("build arg name `{key}` is invalid"));
            }
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("build arg `{key}` must be a string")),
            };
            Ok((key.clone(), value))
        })
        .collect()
}

fn target(obj: &Map<String, Value>) -> Result<Option<String>, String> {
    let target = optional_string(obj, "target")?;
    match target {
        Some(t) if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(format!("target `{t}` is not a stage name"))
        }
        other => Ok(other),
    }
}

fn tags(obj: &Map<String, Value>, version: &Version) -> Result<Vec<MovingTag>, String> {
    let raw = string_list(obj, "tags", crate::tags::TagError::NotAList.to_string())?;
    MovingTag::parse_list(&raw, version).map_err(|e| e.to_string())
}

fn platforms(obj: &Map<String, Value>) -> Result<Vec<Platform>, String> {
    let raw = string_list(obj, "platforms", PlatformError::NotAList.to_string())?;
    Platform::parse_list(raw).map_err(|e| e.to_string())
}

/// The strings of list `key`, empty when it is absent; `not_a_list` when
/// it is something else.
fn string_list<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    not_a_list: String,
) -> Result<Vec<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|item| item.as_str().ok_or_else(|| not_a_list.clone()))
            .collect(),
        Some(_) => Err(not_a_list),
    }
}

fn reject_duplicates(mut entries: Vec<ServiceEntry>) -> Vec<ServiceEntry> {
    let mut seen = std::collections::HashSet::new();
    for entry in &mut entries {
        let Ok(spec) = &entry.spec else { continue };
        if !seen.insert(spec.name.clone()) {
            entry.spec = Err(format!(
                "service `{}` is listed more than once: names must be unique",
                spec.name
            ));
        }
    }
    entries
}

fn short_json(value: &Value) -> String {
    value.to_string().chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_spec(json: &str) -> ServiceSpec {
        let entries = parse(json.as_bytes()).expect("parses");
        assert_eq!(entries.len(), 1);
        entries[0].spec.clone().expect("valid")
    }

    fn rule_broken(json: &str) -> String {
        let entries = parse(json.as_bytes()).expect("parses");
        entries[0].spec.clone().expect_err("invalid")
    }

    #[test]
    fn full_shape_with_every_field() {
        let spec = only_spec(
            r#"{"services":[{"name":"api","version":"1.4.0","context":"services/api","dockerfile":"docker/Dockerfile.prod","build_args":{"RUST_LOG":"info","N":3},"target":"runtime"}]}"#,
        );
        assert_eq!(spec.name.as_str(), "api");
        assert_eq!(spec.context.as_str(), "services/api");
        assert_eq!(
            spec.dockerfile.as_str(),
            "services/api/docker/Dockerfile.prod"
        );
        assert_eq!(spec.dockerfile_in_context(), "docker/Dockerfile.prod");
        assert_eq!(spec.build_args.get("N").map(String::as_str), Some("3"));
        assert_eq!(spec.target.as_deref(), Some("runtime"));
    }

    #[test]
    fn full_shape_tags() {
        let spec = only_spec(
            r#"{"services":[{"name":"api","version":"1.4.0","tags":["semver","latest","sha","stable"]}]}"#,
        );
        let version = Version::parse("1.4.0").expect("valid");
        let stable = MovingTag::parse("stable", &version).expect("literal");
        assert_eq!(
            spec.tags,
            [MovingTag::Semver, MovingTag::Latest, MovingTag::Sha, stable]
        );
        let broken =
            rule_broken(r#"{"services":[{"name":"a","version":"1.0.0","tags":"latest"}]}"#);
        assert!(
            broken.contains("`tags` must be a list of strings"),
            "{broken}"
        );
        let broken = rule_broken(r#"{"services":[{"name":"a","version":"1.0.0","tags":[1]}]}"#);
        assert!(
            broken.contains("`tags` must be a list of strings"),
            "{broken}"
        );
        let broken =
            rule_broken(r#"{"services":[{"name":"a","version":"1.0.0","tags":["no good"]}]}"#);
        assert!(broken.contains("is not a valid tag"), "{broken}");
        let broken =
            rule_broken(r#"{"services":[{"name":"a","version":"1.0.0","tags":["1.2.0"]}]}"#);
        assert!(broken.contains("immutable"), "{broken}");
    }

    #[test]
    fn full_shape_platforms() {
        let spec = only_spec(
            r#"{"services":[{"name":"api","version":"1.4.0","platforms":["linux/amd64","linux/arm64","linux/amd64"]}]}"#,
        );
        let shown: Vec<String> = spec.platforms.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64"]);
        let broken =
            rule_broken(r#"{"services":[{"name":"a","version":"1","platforms":"linux/arm64"}]}"#);
        assert!(broken.contains("`platforms` must be a list"), "{broken}");
        let broken =
            rule_broken(r#"{"services":[{"name":"a","version":"1","platforms":["arm64"]}]}"#);
        assert!(broken.contains("platform `arm64` is not"), "{broken}");
    }

    #[test]
    fn full_shape_defaults() {
        let spec = only_spec(r#"{"services":[{"name":"api","version":"1"}]}"#);
        assert_eq!(spec.context, RepoPath::root());
        assert_eq!(spec.dockerfile_in_context(), "Dockerfile");
        assert!(spec.tags.is_empty());
        assert!(spec.platforms.is_empty());
    }

    #[test]
    fn list_shape_uses_the_folder_named_after_the_service() {
        let entries = parse(br#"[{"service_name":"web","version":"0.2.0","type":"Docker"},{"service_name":"db","version":"1","type":"Helm"}]"#)
            .expect("parses");
        let web = entries[0].spec.clone().expect("valid");
        assert_eq!(web.context.as_str(), "web");
        assert_eq!(web.dockerfile.as_str(), "web/Dockerfile");
        let helm = entries[1].spec.clone().expect_err("not docker");
        assert!(helm.contains("Docker"), "{helm}");
        assert_eq!(entries[1].name, "db");
    }

    #[test]
    fn single_shape_builds_from_the_root() {
        let spec = only_spec(r#"{"service_name":"web","version":"0.2.0"}"#);
        assert_eq!(spec.context, RepoPath::root());
        assert_eq!(spec.dockerfile.as_str(), "Dockerfile");
    }

    #[test]
    fn whole_manifest_errors() {
        assert!(matches!(parse(b"{"), Err(ManifestError::InvalidJson(_))));
        assert_eq!(parse(b"[]"), Err(ManifestError::Empty));
        assert_eq!(parse(br#"{"services":[]}"#), Err(ManifestError::Empty));
        assert_eq!(parse(br#"{"other":1}"#), Err(ManifestError::UnknownShape));
        assert_eq!(parse(b"42"), Err(ManifestError::UnknownShape));
        let many: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"service_name":"s{i}","version":"1"}}"#))
            .collect();
        let json = format!("[{}]", many.join(","));
        assert_eq!(
            parse(json.as_bytes()),
            Err(ManifestError::TooManyServices(1000))
        );
    }

    #[test]
    fn service_rules_name_what_is_wrong() {
        assert!(rule_broken(r#"{"service_name":"Web","version":"1"}"#).contains("image name"));
        assert!(rule_broken(r#"{"service_name":"web","version":"1/2"}"#).contains("version"));
        assert!(rule_broken(r#"{"service_name":"web"}"#).contains("`version` is required"));
        assert!(rule_broken(r#"{"service_name":"web","version":1}"#).contains("must be a string"));
        let escape = rule_broken(r#"{"services":[{"name":"a","version":"1","context":"../.."}]}"#);
        assert!(escape.contains("leaves the repository"), "{escape}");
        let absolute = rule_broken(r#"{"services":[{"name":"a","version":"1","context":"/etc"}]}"#);
        assert!(absolute.contains("relative path"), "{absolute}");
        let outside = rule_broken(
            r#"{"services":[{"name":"a","version":"1","context":"svc","dockerfile":"../Dockerfile"}]}"#,
        );
        assert!(outside.contains("leaves the context"), "{outside}");
        let itself = rule_broken(
            r#"{"services":[{"name":"a","version":"1","context":"svc","dockerfile":"."}]}"#,
        );
        assert!(itself.contains("not the context itself"), "{itself}");
        let control =
            rule_broken(r#"{"services":[{"name":"a","version":"1","context":"a\u0001b"}]}"#);
        assert!(control.contains("control characters"), "{control}");
    }

    #[test]
    fn inner_dotdot_that_stays_inside_is_fine() {
        let spec = only_spec(
            r#"{"services":[{"name":"a","version":"1","context":"x/../svc","dockerfile":"d/../Dockerfile"}]}"#,
        );
        assert_eq!(spec.context.as_str(), "svc");
        assert_eq!(spec.dockerfile.as_str(), "svc/Dockerfile");
    }

    #[test]
    fn duplicate_names_fail_the_repeat_only() {
        let entries = parse(
            br#"[{"service_name":"web","version":"1"},{"service_name":"web","version":"2"}]"#,
        )
        .expect("parses");
        assert!(entries[0].spec.is_ok());
        assert!(entries[1]
            .spec
            .clone()
            .expect_err("dup")
            .contains("more than once"));
    }
}
