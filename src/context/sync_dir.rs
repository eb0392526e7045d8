//! A service's context folder as BuildKit's build session reads it: the
//! entries that `docker buildx build` would send for the same folder, in the
//! order and with the filters of fsutil's walker (tonistiigi/fsutil
//! `filter.go`), which the engine asks for through FileSync.
//!
//! The walk follows today's fsutil: an entry is sent when it (or a parent)
//! matches the include patterns, if any, and neither it nor a parent is
//! excluded; a folder that is left out itself is still sent, just before the
//! first entry inside it that is kept. Entries come depth first, each
//! folder's entries sorted by name, as Go's `WalkDir` gives them and as the
//! engine's receiver checks.

use std::cmp::Ordering;
use std::sync::Arc;

use super::dockerignore::{DockerIgnore, DockerIgnoreError};
use super::source::{resolve_link, SourceEntry, SourceTree};

/// How many links one follow path may go through before it is given up on,
/// as the kernel's limit for nested links.
const MAX_LINK_HOPS: usize = 40;

/// One folder of a commit, served to the engine under a session name.
#[derive(Debug, Clone)]
pub struct SyncDir {
    tree: Arc<SourceTree>,
    /// Repository path of the folder; empty for the repository root.
    root: String,
}

/// What the engine asked for: fsutil's `FilterOpt`.
#[derive(Debug, Default)]
pub struct WalkFilter {
    includes: Option<DockerIgnore>,
    excludes: Option<DockerIgnore>,
}

/// One entry the walk sends, its path relative to the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEntry {
    pub path: String,
    pub entry: SourceEntry,
}

impl SyncDir {
    pub fn new(tree: Arc<SourceTree>, root: &str) -> Self {
        Self {
            tree,
            root: root.trim_matches('/').to_string(),
        }
    }

    /// The filter for the engine's patterns; `follow_paths` are kept with
    /// the targets of the links on them, as fsutil's `FollowLinks` does.
    pub fn filter(
        &self,
        includes: &[String],
        excludes: &[String],
        follow_paths: &[String],
    ) -> Result<WalkFilter, DockerIgnoreError> {
        let mut includes = includes.to_vec();
        for path in follow_paths {
            includes.extend(self.follow_links(path));
        }
        includes.sort();
        includes.dedup();
        Ok(WalkFilter {
            includes: patterns(&includes)?,
            excludes: patterns(excludes)?,
        })
    }

    /// The entries the engine receives, in the order it expects them.
    pub fn walk(&self, filter: &WalkFilter) -> Vec<SyncEntry> {
        let mut candidates: Vec<(&str, &SourceEntry)> = self.entries().collect();
        candidates.sort_by(|a, b| walk_order(a.0, b.0));
        let mut sent = Vec::new();
        // Folders on the way to the current entry, with whether they were sent.
        let mut open: Vec<(&str, bool)> = Vec::new();
        let mut pruned: Option<&str> = None;
        for (path, entry) in candidates {
            if pruned.is_some_and(|dir| is_inside(path, dir)) {
                continue;
            }
            pruned = None;
            while open.last().is_some_and(|(dir, _)| !is_inside(path, dir)) {
                open.pop();
            }
            let is_dir = matches!(entry, SourceEntry::Dir { .. });
            let excluded = filter
                .excludes
                .as_ref()
                .is_some_and(|m| m.is_excluded(path));
            let included = filter.includes.as_ref().is_none_or(|m| m.is_excluded(path));
            if excluded && is_dir && !filter.may_keep_inside(path) {
                pruned = Some(path);
                continue;
            }
            if included && !excluded {
                for (dir, was_sent) in open.iter_mut().filter(|(_, s)| !*s) {
                    sent.push(self.entry_at(dir));
                    *was_sent = true;
                }
                sent.push(SyncEntry {
                    path: path.to_string(),
                    entry: entry.clone(),
                });
            }
            if is_dir {
                open.push((path, included && !excluded));
            }
        }
        sent
    }

    /// Entries below the folder, with paths relative to it; a folder the
    /// tarball only implies gets an entry of its own.
    fn entries(&self) -> impl Iterator<Item = (&str, &SourceEntry)> {
        let root = self.root.as_str();
        self.tree.entries().iter().filter_map(move |(path, entry)| {
            let rel = if root.is_empty() {
                path.as_str()
            } else {
                path.strip_prefix(root)?.strip_prefix('/')?
            };
            (!rel.is_empty()).then_some((rel, entry))
        })
    }

    fn entry_at(&self, rel: &str) -> SyncEntry {
        let entry = self
            .tree
            .get(&self.repo_path(rel))
            .cloned()
            .unwrap_or(SourceEntry::Dir { mode: 0o755 });
        SyncEntry {
            path: rel.to_string(),
            entry,
        }
    }

    fn repo_path(&self, rel: &str) -> String {
        if self.root.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.root)
        }
    }

    /// `path` and every link target reached from it, inside the folder.
    fn follow_links(&self, path: &str) -> Vec<String> {
        let mut found = vec![path.trim_matches('/').to_string()];
        for _ in 0..MAX_LINK_HOPS {
            let Some(last) = found.last() else { break };
            let Some(SourceEntry::Symlink { target }) = self.tree.get(&self.repo_path(last)) else {
                break;
            };
            match resolve_link(last, target) {
                Some(next) if !found.contains(&next) => found.push(next),
                _ => break,
            }
        }
        found
    }
}

impl WalkFilter {
    /// Whether an excluded folder may still hold an entry an exception
    /// (`!pattern`) brings back; when not, the walk skips what is inside.
    fn may_keep_inside(&self, dir: &str) -> bool {
        self.excludes
            .as_ref()
            .is_some_and(|m| m.has_exceptions_within(dir))
    }
}

fn patterns(patterns: &[String]) -> Result<Option<DockerIgnore>, DockerIgnoreError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    DockerIgnore::from_patterns(patterns).map(Some)
}

fn is_inside(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Depth first, each folder's names in byte order: `a`, `a/b`, `a.txt`.
fn walk_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_is_depth_first_by_name() {
        let mut paths = vec!["a.txt", "a/b", "a", "b", "a/b/c", "a-b", "A"];
        paths.sort_by(|a, b| walk_order(a, b));
        assert_eq!(paths, vec!["A", "a", "a/b", "a/b/c", "a-b", "a.txt", "b"]);
    }
}
