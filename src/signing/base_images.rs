//! Which images a Dockerfile builds on: the `FROM` lines of the stages up to
//! the target, with global `ARG`s substituted, less `scratch` and earlier
//! stages. Their digests come from the engine, which holds them after the build.

use std::collections::{BTreeMap, HashSet};

/// The external images of `dockerfile`'s stages up to `target` (all when none).
pub fn from_images(
    dockerfile: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Vec<String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: HashSet<String> = HashSet::new();
    let mut images: Vec<String> = Vec::new();
    let mut seen_from = false;
    for line in logical_lines(dockerfile) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        if instruction.eq_ignore_ascii_case("ARG") && !seen_from {
            for decl in words {
                let (name, default) = decl.split_once('=').unwrap_or((decl, ""));
                let value = build_args
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| unquote(default));
                args.insert(name.to_string(), value);
            }
            continue;
        }
        if !instruction.eq_ignore_ascii_case("FROM") {
            continue;
        }
        seen_from = true;
        let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let Some(image) = rest.first().map(|i| substitute(i, &args)) else {
            continue;
        };
        let stage = match rest.as_slice() {
            [_, as_word, name, ..] if as_word.eq_ignore_ascii_case("AS") => {
                Some(name.to_ascii_lowercase())
            }
            _ => None,
        };
        let external =
            !image.eq_ignore_ascii_case("scratch") && !stages.contains(&image.to_ascii_lowercase());
        if external && !images.contains(&image) {
            images.push(image);
        }
        if let Some(stage) = stage {
            let is_target = target.is_some_and(|t| t.eq_ignore_ascii_case(&stage));
            stages.insert(stage);
            if is_target {
                break;
            }
        }
    }
    images
}

/// Lines joined at a trailing backslash, comments dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') && current.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

fn unquote(value: &str) -> String {
    value.trim_matches(|c| c == '"' || c == '\'').to_string()
}

/// `$NAME` and `${NAME}` (and `${NAME:-default}`) from the global args.
fn substitute(word: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (expr, after) = if let Some(inner) = rest.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => (inner, ""),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let (name, default) = expr.split_once(":-").unwrap_or((expr, ""));
        let value = args.get(name).filter(|v| !v.is_empty());
        out.push_str(value.map(String::as_str).unwrap_or(default));
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_scratch_args_and_target() {
        let dockerfile = "# syntax comment\nARG BASE=alpine:3\nARG TAG\n\
            FROM --platform=linux/amd64 ${BASE} AS build\nRUN make\n\
            FROM build AS test\n\
            FROM scratch AS empty\n\
            FROM busybox:${TAG:-1.36} \\\n  AS runtime\nCOPY --from=build / /\n\
            FROM other:1 AS later\n";
        let args = BTreeMap::new();
        assert_eq!(
            from_images(dockerfile, &args, Some("runtime")),
            vec!["alpine:3", "busybox:1.36"]
        );
        let args = BTreeMap::from([("BASE".to_string(), "debian:12".to_string())]);
        assert_eq!(
            from_images(dockerfile, &args, None),
            vec!["debian:12", "busybox:1.36", "other:1"]
        );
    }
}
