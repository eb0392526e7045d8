//! Reading a commit's tarball as GitHub serves it, treating every byte as
//! hostile: paths are checked, links are recorded but never created on disk,
//! devices are refused, and sizes are capped before they are read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::digest::HashingWriter;
use crate::types::CommitSha;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("tarball entry `{path}` is refused: {reason}")]
    UnsafeEntry { path: String, reason: &'static str },
    #[error("tarball holds more than {limit} entries; raise --max-source-entries if this repository really is that large")]
    TooManyEntries { limit: u64 },
    #[error("tarball unpacks to more than {limit} bytes; raise --max-source-bytes if this repository really is that large")]
    TooLarge { limit: u64 },
    #[error("tarball is of commit {found}, not of the merge commit {expected}")]
    WrongCommit { expected: String, found: String },
    #[error("tarball has entries outside a single top folder (`{0}`)")]
    NoSingleTopFolder(String),
    #[error("tarball is not a readable gzip tar (truncated or corrupt?): {0}")]
    Corrupt(String),
    #[error("could not write the commit's files to temporary space: {0}")]
    Disk(io::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEntry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        size: u64,
        sha256: [u8; 32],
        blob: PathBuf,
    },
    Symlink {
        target: String,
    },
}

/// The files of one commit, unpacked into temporary space. Paths are
/// repository-relative with '/' separators.
#[derive(Debug)]
pub struct SourceTree {
    entries: BTreeMap<String, SourceEntry>,
    _dir: tempfile::TempDir,
}

impl SourceTree {
    pub fn entries(&self) -> &BTreeMap<String, SourceEntry> {
        &self.entries
    }

    pub fn get(&self, path: &str) -> Option<&SourceEntry> {
        self.entries.get(path)
    }

    /// Whether `path` is a directory of the tree (the root always is).
    pub fn is_dir(&self, path: &str) -> bool {
        path.is_empty()
            || matches!(self.entries.get(path), Some(SourceEntry::Dir { .. }))
            || self
                .entries
                .keys()
                .any(|k| k.starts_with(path) && k[path.len()..].starts_with('/'))
    }

    pub fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        match self.entries.get(path) {
            Some(SourceEntry::File { blob, .. }) => std::fs::read(blob),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file `{path}`"),
            )),
        }
    }
}

/// Unpacks a gzip tarball from `reader` into a fresh temporary folder under `temp_root`.
pub fn unpack(
    reader: impl Read,
    commit: &CommitSha,
    limits: Limits,
    temp_root: &Path,
) -> Result<SourceTree, SourceError> {
    let dir = tempfile::Builder::new()
        .prefix("source-")
        .tempdir_in(temp_root)
        .map_err(SourceError::Disk)?;
    let decoded = CappedReader::new(
        flate2::read::GzDecoder::new(BufReader::new(reader)),
        limits.max_bytes,
    );
    let mut unpacker = Unpacker {
        commit,
        limits,
        blob_dir: dir.path(),
        entries: BTreeMap::new(),
        top: None,
        bytes: 0,
        count: 0,
    };
    let mut archive = tar::Archive::new(decoded);
    let iter = archive.entries().map_err(corrupt)?;
    for entry in iter {
        let entry = entry.map_err(|e| cap_or_corrupt(e, limits))?;
        unpacker.add(entry)?;
    }
    Ok(SourceTree {
        entries: unpacker.entries,
        _dir: dir,
    })
}

struct Unpacker<'a> {
    commit: &'a CommitSha,
    limits: Limits,
    blob_dir: &'a Path,
    entries: BTreeMap<String, SourceEntry>,
    top: Option<String>,
    bytes: u64,
    count: u64,
}

impl Unpacker<'_> {
    fn add<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), SourceError> {
        self.count += 1;
        if self.count > self.limits.max_entries {
            return Err(SourceError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return self.check_global_header(&mut entry);
        }
        let raw_path = entry.path_bytes().into_owned();
        let path = self.repo_path(&raw_path)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let item = match kind {
            EntryType::Directory => SourceEntry::Dir { mode },
            EntryType::Regular | EntryType::Continuous => {
                self.store_file(&mut entry, &path, mode)?
            }
            EntryType::Symlink => SourceEntry::Symlink {
                target: link_target(&entry, &path)?,
            },
            EntryType::Link => self.hardlink(&entry, &path)?,
            EntryType::GNUSparse => return Err(refuse(&path, "sparse files are not accepted")),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(refuse(&path, "device files and FIFOs are not accepted"))
            }
            _ => return Ok(()),
        };
        if path.is_empty() {
            return Ok(()); // the top folder itself
        }
        self.entries.insert(path, item);
        Ok(())
    }

    fn check_global_header<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), SourceError> {
        let Some(extensions) = entry.pax_extensions().map_err(corrupt)? else {
            return Ok(());
        };
        for ext in extensions {
            let ext = ext.map_err(corrupt)?;
            if ext.key_bytes() == b"comment" {
                let found = String::from_utf8_lossy(ext.value_bytes())
                    .trim()
                    .to_string();
                if !found.eq_ignore_ascii_case(self.commit.as_str()) {
                    return Err(SourceError::WrongCommit {
                        expected: self.commit.to_string(),
                        found: found.chars().take(64).collect(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks a raw tar path and strips GitHub's single top folder.
    fn repo_path(&mut self, raw: &[u8]) -> Result<String, SourceError> {
        let shown = String::from_utf8_lossy(raw)
            .chars()
            .take(200)
            .collect::<String>();
        let text = std::str::from_utf8(raw).map_err(|_| refuse(&shown, "path is not UTF-8"))?;
        if text.starts_with('/') {
            return Err(refuse(&shown, "absolute path"));
        }
        let parts: Vec<&str> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(refuse(&shown, "path contains `..`"));
        }
        if text.contains('\\') || text.contains('\0') {
            return Err(refuse(&shown, "path contains a backslash or NUL"));
        }
        let Some((top, rest)) = parts.split_first() else {
            return Err(refuse(&shown, "empty path"));
        };
        match &self.top {
            None => self.top = Some(top.to_string()),
            Some(existing) if existing == top => {}
            Some(_) => return Err(SourceError::NoSingleTopFolder(shown)),
        }
        Ok(rest.join("/"))
    }

    fn store_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &str,
        mode: u32,
    ) -> Result<SourceEntry, SourceError> {
        let size = entry.header().size().map_err(corrupt)?;
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.limits.max_bytes {
            return Err(SourceError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        let blob = self.blob_dir.join(format!("{}", self.count));
        let mut out = HashingWriter::new(File::create(&blob).map_err(SourceError::Disk)?);
        let copied = io::copy(entry, &mut out).map_err(|e| cap_or_corrupt(e, self.limits))?;
        if copied != size {
            return Err(SourceError::Corrupt(format!("`{path}` is truncated")));
        }
        let sha256 = out.finish().map_err(SourceError::Disk)?.sha256;
        Ok(SourceEntry::File {
            mode,
            size,
            sha256,
            blob,
        })
    }

    fn hardlink<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        path: &str,
    ) -> Result<SourceEntry, SourceError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| refuse(path, "hardlink without a target"))?;
        let target = String::from_utf8_lossy(&target).to_string();
        let normalized: Vec<&str> = target
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let inside = !target.starts_with('/') && !normalized.contains(&"..");
        let top_matches = self.top.as_deref() == normalized.first().copied();
        let linked = (inside && top_matches)
            .then(|| normalized[1..].join("/"))
            .and_then(|p| self.entries.get(&p));
        match linked {
            Some(file @ SourceEntry::File { .. }) => Ok(file.clone()),
            _ => Err(refuse(
                path,
                "hardlink to something that is not an earlier file of the archive",
            )),
        }
    }
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, path: &str) -> Result<String, SourceError> {
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| refuse(path, "symlink without a target"))?;
    String::from_utf8(target.into_owned()).map_err(|_| refuse(path, "symlink target is not UTF-8"))
}

fn refuse(path: &str, reason: &'static str) -> SourceError {
    SourceError::UnsafeEntry {
        path: path.to_string(),
        reason,
    }
}

fn corrupt(err: io::Error) -> SourceError {
    SourceError::Corrupt(err.to_string())
}

fn cap_or_corrupt(err: io::Error, limits: Limits) -> SourceError {
    if err.get_ref().is_some_and(|inner| inner.is::<CapExceeded>()) {
        SourceError::TooLarge {
            limit: limits.max_bytes,
        }
    } else {
        corrupt(err)
    }
}

#[derive(Debug)]
struct CapExceeded;

impl std::fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed size cap exceeded")
    }
}

impl std::error::Error for CapExceeded {}

/// Stops a decompression bomb early: errors once more than `cap` bytes (plus
/// room for tar headers and padding) come out of the decoder.
struct CappedReader<R> {
    inner: R,
    remaining: u64,
}

impl<R> CappedReader<R> {
    fn new(inner: R, cap: u64) -> Self {
        // Headers and padding add at most ~1.5 KiB per entry on top of file
        // data; a fixed headroom keeps the check simple and still bounded.
        let headroom = 64 << 20;
        Self {
            inner,
            remaining: cap.saturating_add(headroom),
        }
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.remaining = self
            .remaining
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::other(CapExceeded))?;
        Ok(n)
    }
}

/// Resolves a symlink's target lexically from the link's own folder; None
/// when it leaves the context root.
pub fn resolve_link(link_rel: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link_rel.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_lexically_within_the_context() {
        assert_eq!(resolve_link("a/link", "b").as_deref(), Some("a/b"));
        assert_eq!(resolve_link("a/link", "../b").as_deref(), Some("b"));
        assert_eq!(resolve_link("a/link", "../../b"), None);
        assert_eq!(resolve_link("link", "/etc/passwd"), None);
        assert_eq!(resolve_link("link", "./x/./y").as_deref(), Some("x/y"));
    }

    use flate2::write::GzEncoder;
    use std::io::Write;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const TOP: &str = "acme-shop-0123456";

    /// A raw tar header, written by hand so hostile names survive.
    fn header(name: &str, kind: EntryType, size: u64, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_old();
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn tarball(
        entries: &[(&str, EntryType, &[u8], Option<&str>)],
        comment: Option<&str>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(comment) = comment {
            let record = pax_record("comment", comment);
            let h = header(
                "pax_global_header",
                EntryType::XGlobalHeader,
                record.len() as u64,
                None,
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&record);
            pad(&mut out);
        }
        for (name, kind, data, link) in entries {
            let h = header(name, *kind, data.len() as u64, *link);
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            pad(&mut out);
        }
        out.extend_from_slice(&[0u8; 1024]);
        gzip(&out)
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 2;
        if format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn limits() -> Limits {
        Limits {
            max_bytes: 1 << 20,
            max_entries: 100,
        }
    }

    fn read(bytes: &[u8]) -> Result<SourceTree, SourceError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let sha = CommitSha::parse(SHA).expect("sha");
        let tree = unpack(bytes, &sha, limits(), dir.path());
        // The tree owns its own temp folder inside `dir`; keep `dir` alive
        // only as long as the call needs it.
        std::mem::forget(dir);
        tree
    }

    fn path(rel: &str) -> String {
        format!("{TOP}/{rel}")
    }

    #[test]
    fn github_layout_is_read() {
        let d = path("");
        let f = path("web/index.html");
        let l = path("web/link");
        let h = path("web/hard");
        let tar = tarball(
            &[
                (&d, EntryType::Directory, b"", None),
                (&f, EntryType::Regular, b"<h1>", None),
                (&l, EntryType::Symlink, b"", Some("index.html")),
                (&h, EntryType::Link, b"", Some(&f)),
            ],
            Some(SHA),
        );
        let tree = read(&tar).expect("reads");
        assert_eq!(tree.read_file("web/index.html").expect("file"), b"<h1>");
        assert_eq!(tree.read_file("web/hard").expect("hardlink copy"), b"<h1>");
        assert_eq!(
            tree.get("web/link"),
            Some(&SourceEntry::Symlink {
                target: "index.html".into()
            })
        );
        assert!(tree.is_dir("web"));
        assert!(!tree.is_dir("we"));
    }

    fn refused(name: &str, kind: EntryType, link: Option<&str>) -> SourceError {
        let tar = tarball(&[(name, kind, b"", link)], Some(SHA));
        read(&tar).expect_err("refused")
    }

    #[test]
    fn hostile_entries_are_refused() {
        assert!(matches!(
            refused(&path("../../etc/x"), EntryType::Regular, None),
            SourceError::UnsafeEntry { .. }
        ));
        assert!(matches!(
            refused("/etc/passwd", EntryType::Regular, None),
            SourceError::UnsafeEntry { .. }
        ));
        assert!(matches!(
            refused(&path("dev"), EntryType::Char, None),
            SourceError::UnsafeEntry { .. }
        ));
        assert!(matches!(
            refused(&path("fifo"), EntryType::Fifo, None),
            SourceError::UnsafeEntry { .. }
        ));
        let out = refused(&path("h"), EntryType::Link, Some("/etc/passwd"));
        assert!(matches!(out, SourceError::UnsafeEntry { .. }), "{out}");
        let out = refused(&path("h"), EntryType::Link, Some(&path("../../etc/passwd")));
        assert!(matches!(out, SourceError::UnsafeEntry { .. }), "{out}");
    }

    #[test]
    fn escaping_symlinks_are_kept_as_data_not_followed() {
        // Refused later, when a context would include them; never created on disk.
        let tar = tarball(
            &[(&path("pw"), EntryType::Symlink, b"", Some("/etc/passwd"))],
            Some(SHA),
        );
        let tree = read(&tar).expect("reads");
        assert!(tree.read_file("pw").is_err());
    }

    #[test]
    fn another_commit_is_refused() {
        let other = "ffffffffffffffffffffffffffffffffffffffff";
        let tar = tarball(&[(&path("a"), EntryType::Regular, b"x", None)], Some(other));
        assert!(matches!(read(&tar), Err(SourceError::WrongCommit { .. })));
    }

    #[test]
    fn entries_outside_one_top_folder_are_refused() {
        let tar = tarball(
            &[
                (&path("a"), EntryType::Regular, b"x", None),
                ("other/b", EntryType::Regular, b"y", None),
            ],
            Some(SHA),
        );
        assert!(matches!(read(&tar), Err(SourceError::NoSingleTopFolder(_))));
    }

    #[test]
    fn caps_stop_bombs_early() {
        // 64 MiB of zeros compresses to ~64 KiB; the cap is 1 MiB.
        let big = vec![0u8; 64 << 20];
        let tar = tarball(
            &[(&path("bomb"), EntryType::Regular, &big, None)],
            Some(SHA),
        );
        assert!(tar.len() < 1 << 20);
        assert!(matches!(read(&tar), Err(SourceError::TooLarge { .. })));
        let many: Vec<String> = (0..101).map(|i| path(&format!("f{i}"))).collect();
        let entries: Vec<_> = many
            .iter()
            .map(|p| (p.as_str(), EntryType::Regular, &b""[..], None))
            .collect();
        assert!(matches!(
            read(&tarball(&entries, Some(SHA))),
            Err(SourceError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn a_huge_claimed_size_is_refused_before_reading() {
        let mut raw = Vec::new();
        let h = header(&path("sparse"), EntryType::Regular, 10 << 30, None);
        raw.extend_from_slice(h.as_bytes());
        raw.extend_from_slice(&[0u8; 1024]);
        assert!(matches!(
            read(&gzip(&raw)),
            Err(SourceError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_and_truncation_are_corrupt() {
        assert!(matches!(
            read(b"this is not gzip"),
            Err(SourceError::Corrupt(_))
        ));
        let tar = tarball(
            &[(&path("a"), EntryType::Regular, &[1u8; 5000], None)],
            Some(SHA),
        );
        assert!(read(&tar[..tar.len() / 2]).is_err());
    }
}
