//! One service's build context: the files of its folder that `.dockerignore`
//! keeps (streamed as a tar to the classic builder), and a digest of
//! everything that decides what the image will be (the "inputs digest").

use std::fs::File;
use std::io::{self, Write};

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};

use super::dockerignore::DockerIgnore;
use super::source::{resolve_link, SourceEntry, SourceTree};
use super::sync_dir::SyncEntry;
use crate::manifest::ServiceSpec;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("context folder `{0}` does not exist in the commit")]
    MissingContext(String),
    #[error("Dockerfile `{0}` does not exist in the commit")]
    MissingDockerfile(String),
    #[error("symlink `{path}` points outside the build context (to `{target}`); builds may only use files inside their context")]
    EscapingLink { path: String, target: String },
    #[error("{0}")]
    DockerIgnore(#[from] super::dockerignore::DockerIgnoreError),
    #[error("Dockerfile `{0}` starts with a `# syntax=` directive, which makes the engine fetch a frontend image; remove it or start Slipway with --allow-syntax-directive")]
    SyntaxDirective(String),
    #[error("could not write the build context: {0}")]
    Io(#[from] io::Error),
}

/// A build context ready for the engine.
#[derive(Debug)]
pub struct PreparedContext {
    /// `sha256:<hex>` of the context after `.dockerignore`, the Dockerfile path, build args and target.
    pub inputs_digest: String,
    pub files: usize,
    /// Bytes of the files in the context.
    pub bytes: u64,
    /// What the classic builder is sent, as `docker build` without BuildKit
    /// sends it: `.dockerignore` applied, but the Dockerfile and
    /// `.dockerignore` always in. BuildKit reads the folder itself instead.
    classic: Vec<SyncEntry>,
}

/// Options that are the operator's, not the repository's.
#[derive(Debug, Clone, Copy)]
pub struct ContextPolicy {
    pub allow_syntax_directive: bool,
}

pub fn prepare(
    tree: &SourceTree,
    spec: &ServiceSpec,
    policy: ContextPolicy,
) -> Result<PreparedContext, ContextError> {
    let context = spec.context.as_str();
    if !tree.is_dir(context) {
        return Err(ContextError::MissingContext(context.to_string()));
    }
    let dockerfile_rel = spec.dockerfile_in_context().to_string();
    let dockerfile_text = read_dockerfile(tree, context, &dockerfile_rel, spec)?;
    if !policy.allow_syntax_directive && has_syntax_directive(&dockerfile_text) {
        return Err(ContextError::SyntaxDirective(
            spec.dockerfile.as_str().to_string(),
        ));
    }
    let ignore = match tree.read_file(&join(context, ".dockerignore")) {
        Ok(bytes) => DockerIgnore::parse(&String::from_utf8_lossy(&bytes))?,
        Err(_) => DockerIgnore::default(),
    };
    let mut inputs = Inputs::new();
    let mut classic = Vec::new();
    for (rel, entry) in entries_under(tree, context) {
        let always_sent = rel == dockerfile_rel || rel == ".dockerignore";
        if !always_sent && ignore.is_excluded(rel) {
            continue;
        }
        inputs.add(rel, entry)?;
        classic.push(SyncEntry {
            path: rel.to_string(),
            entry: entry.clone(),
        });
    }
    let (files, bytes) = (inputs.files, inputs.bytes);
    let mut hasher = inputs.hasher;
    hash_line(&mut hasher, &("dockerfile", &dockerfile_rel));
    hash_line(&mut hasher, &("target", &spec.target));
    for (key, value) in &spec.build_args {
        hash_line(&mut hasher, &("arg", key, value));
    }
    Ok(PreparedContext {
        inputs_digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        files,
        bytes,
        classic,
    })
}

impl PreparedContext {
    /// The classic builder's context tar, written as it is read: owners
    /// and times fixed, so the same files always give the same tar.
    pub fn classic_tar(&self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let entries = self.classic.clone();
        let (sink, stream) = tokio::sync::mpsc::channel(TAR_CHUNKS_QUEUED);
        tokio::task::spawn_blocking(move || {
            let mut tar = tar::Builder::new(ChannelWriter::new(sink.clone()));
            let written = entries
                .iter()
                .try_for_each(|e| append(&mut tar, &e.path, &e.entry))
                .and_then(|()| tar.into_inner())
                .and_then(|mut writer| writer.flush_chunk());
            if let Err(err) = written {
                let _ = sink.blocking_send(Err(err));
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(stream)
    }
}

fn read_dockerfile(
    tree: &SourceTree,
    context: &str,
    rel: &str,
    spec: &ServiceSpec,
) -> Result<String, ContextError> {
    let path = join(context, rel);
    let resolved = match tree.get(&path) {
        Some(SourceEntry::Symlink { target }) => resolve_link(rel, target)
            .map(|inside| join(context, &inside))
            .ok_or_else(|| ContextError::EscapingLink {
                path: path.clone(),
                target: target.clone(),
            })?,
        _ => path,
    };
    tree.read_file(&resolved)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|_| ContextError::MissingDockerfile(spec.dockerfile.as_str().to_string()))
}

/// A `# syntax=` parser directive must come before any other line but comments.
fn has_syntax_directive(dockerfile: &str) -> bool {
    let dockerfile = dockerfile.strip_prefix('\u{feff}').unwrap_or(dockerfile);
    for line in dockerfile.lines() {
        let line = line.trim();
        let Some(comment) = line.strip_prefix('#') else {
            return false;
        };
        let Some((key, _)) = comment.split_once('=') else {
            return false;
        };
        if key.trim().eq_ignore_ascii_case("syntax") {
            return true;
        }
    }
    false
}

/// Entries inside `context`, with paths relative to it, in path order.
fn entries_under<'a>(
    tree: &'a SourceTree,
    context: &'a str,
) -> impl Iterator<Item = (&'a str, &'a SourceEntry)> {
    tree.entries().iter().filter_map(move |(path, entry)| {
        let rel = if context.is_empty() {
            Some(path.as_str())
        } else {
            path.strip_prefix(context).and_then(|r| r.strip_prefix('/'))
        };
        rel.filter(|r| !r.is_empty()).map(|r| (r, entry))
    })
}

fn join(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_string()
    } else {
        format!("{dir}/{rel}")
    }
}

fn hash_line(hasher: &mut Sha256, value: &impl serde::Serialize) {
    // One JSON document per line keeps the encoding unambiguous.
    if let Ok(line) = serde_json::to_string(value) {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
}

/// Pieces of the classic context tar waiting for the engine.
const TAR_CHUNKS_QUEUED: usize = 8;
const TAR_CHUNK: usize = 256 << 10;

/// The inputs digest, one line per entry kept.
struct Inputs {
    hasher: Sha256,
    files: usize,
    bytes: u64,
}

impl Inputs {
    fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"slipway-inputs-v1\n");
        Self {
            hasher,
            files: 0,
            bytes: 0,
        }
    }

    fn add(&mut self, rel: &str, entry: &SourceEntry) -> Result<(), ContextError> {
        match entry {
            SourceEntry::Dir { mode } => hash_line(&mut self.hasher, &("dir", rel, mode)),
            SourceEntry::File {
                mode, size, sha256, ..
            } => {
                hash_line(&mut self.hasher, &("file", rel, mode, hex::encode(sha256)));
                self.files += 1;
                self.bytes += size;
            }
            SourceEntry::Symlink { target } => {
                if resolve_link(rel, target).is_none() {
                    return Err(ContextError::EscapingLink {
                        path: rel.to_string(),
                        target: target.clone(),
                    });
                }
                hash_line(&mut self.hasher, &("symlink", rel, target));
            }
        }
        Ok(())
    }
}

fn append(tar: &mut tar::Builder<ChannelWriter>, rel: &str, entry: &SourceEntry) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    match entry {
        SourceEntry::Dir { mode } => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode | 0o700);
            header.set_size(0);
            tar.append_data(&mut header, rel, io::empty())
        }
        SourceEntry::File {
            mode, size, blob, ..
        } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
            header.set_size(*size);
            tar.append_data(&mut header, rel, File::open(blob)?)
        }
        SourceEntry::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, rel, target)
        }
    }
}

/// Hands what the tar writer writes to the engine's request body in
/// pieces; a closed body ends the writing.
struct ChannelWriter {
    sink: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    pending: Vec<u8>,
}

impl ChannelWriter {
    fn new(sink: tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            sink,
            pending: Vec::with_capacity(TAR_CHUNK),
        }
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(TAR_CHUNK),
        ));
        self.sink.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the context",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(data);
        if self.pending.len() >= TAR_CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_directives_are_spotted_only_at_the_top() {
        assert!(has_syntax_directive("# syntax=docker/dockerfile:1\nFROM x"));
        assert!(has_syntax_directive("#SYNTAX = x\nFROM x"));
        assert!(has_syntax_directive("# escape=`\n# syntax=x\nFROM x"));
        assert!(has_syntax_directive("\u{feff}# syntax=x\nFROM x"));
        assert!(!has_syntax_directive("FROM x\n# syntax=x"));
        assert!(!has_syntax_directive("# just a comment\nFROM x"));
    }
}
