//! FileSync's `DiffCopy` on Slipway's side of the build session: the engine
//! asks for a folder (`context` or `dockerfile`) with its patterns, and gets
//! fsutil's packet stream, as `docker buildx build` sends it: every entry's
//! stat in walk order, an empty stat, then the bytes of each file the engine
//! requests by id, until it says FIN. File bytes are read from the unpacked
//! commit as they are asked for; nothing is copied whole into memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;

use bollard_buildkit_proto::fsutil::types::packet::PacketType;
use bollard_buildkit_proto::fsutil::types::{Packet, Stat};
use bollard_buildkit_proto::moby::filesync::packet::file_sync_server::FileSync;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::context::{SourceEntry, SyncDir, SyncEntry};

/// Go's `os.FileMode` type bits, which fsutil's stats carry.
const MODE_DIR: u32 = 1 << 31;
const MODE_SYMLINK: u32 = 1 << 27;
/// fsutil sends files in 32 KiB pieces.
const CHUNK: usize = 32 << 10;
/// Packets waiting for the engine to read them.
const QUEUED_PACKETS: usize = 64;

/// The gRPC path the engine calls, announced when the session opens.
pub const DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";

/// The folders one build may read: the context under both names BuildKit
/// asks for, since the Dockerfile is looked up by its path in the context.
pub struct ContextSync {
    dir: SyncDir,
}

impl ContextSync {
    pub fn new(dir: SyncDir) -> Self {
        Self { dir }
    }
}

/// What the engine put in the call's metadata (BuildKit's `filesync.go`).
#[derive(Debug, Default)]
struct SyncOptions {
    dir_name: String,
    includes: Vec<String>,
    excludes: Vec<String>,
    follow_paths: Vec<String>,
}

impl SyncOptions {
    fn from_metadata(metadata: &MetadataMap) -> Self {
        let values = |key: &str| -> Vec<String> {
            let encoded = metadata
                .get(format!("{key}-encoded"))
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
            metadata
                .get_all(key)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| {
                    if encoded {
                        query_unescape(v)
                    } else {
                        v.to_string()
                    }
                })
                .collect()
        };
        Self {
            dir_name: values("dir-name").into_iter().next().unwrap_or_default(),
            includes: values("include-patterns"),
            excludes: values("exclude-patterns"),
            follow_paths: values("followpaths"),
        }
    }
}

/// Go's `url.QueryUnescape`, keeping the text as it is where it is invalid.
fn query_unescape(text: &str) -> String {
    let plus_as_space = text.replace('+', " ");
    match percent_decode(&plus_as_space) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => text.to_string(),
    }
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

type PacketStream = Pin<Box<dyn futures::Stream<Item = Result<Packet, Status>> + Send>>;

#[tonic::async_trait]
impl FileSync for ContextSync {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let options = SyncOptions::from_metadata(request.metadata());
        if !matches!(options.dir_name.as_str(), "context" | "dockerfile") {
            return Err(Status::not_found(format!(
                "no access allowed to dir {:?}",
                options.dir_name
            )));
        }
        let filter = self
            .dir
            .filter(&options.includes, &options.excludes, &options.follow_paths)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dir = self.dir.clone();
        let entries = tokio::task::spawn_blocking(move || dir.walk(&filter))
            .await
            .map_err(|e| Status::internal(format!("walking the context failed: {e}")))?;
        let (packets, queued) = mpsc::channel(QUEUED_PACKETS);
        tokio::spawn(send_entries(entries, request.into_inner(), packets));
        Ok(Response::new(Box::pin(ReceiverStream::new(queued))))
    }

    type TarStreamStream = PacketStream;

    async fn tar_stream(
        &self,
        _: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented("only DiffCopy is served"))
    }
}

type Outbox = mpsc::Sender<Result<Packet, Status>>;

/// fsutil's sender: the stats, then the files the engine asks for.
async fn send_entries(entries: Vec<SyncEntry>, mut incoming: Streaming<Packet>, out: Outbox) {
    let mut files = HashMap::new();
    let mut stats = Vec::with_capacity(entries.len());
    for (id, entry) in (0u32..).zip(entries) {
        if let SourceEntry::File { blob, .. } = &entry.entry {
            files.insert(id, blob.clone());
        }
        stats.push(stat_packet(entry));
    }
    let stats_out = out.clone();
    let sending_stats = tokio::spawn(async move {
        for packet in stats.into_iter().chain([stat_end()]) {
            if stats_out.send(Ok(packet)).await.is_err() {
                return;
            }
        }
    });
    let answered = answer_requests(&mut incoming, files, &out).await;
    sending_stats.abort();
    if let Err(status) = answered {
        tracing::debug!(%status, "the engine's context transfer ended early");
        let _ = out.send(Err(status)).await;
    }
}

async fn answer_requests(
    incoming: &mut Streaming<Packet>,
    mut files: HashMap<u32, PathBuf>,
    out: &Outbox,
) -> Result<(), Status> {
    while let Some(packet) = incoming.message().await? {
        match PacketType::try_from(packet.r#type) {
            Ok(PacketType::PacketReq) => {
                let blob = files.remove(&packet.id).ok_or_else(|| {
                    Status::invalid_argument(format!("invalid file id {}", packet.id))
                })?;
                send_file(packet.id, &blob, out).await?;
            }
            Ok(PacketType::PacketFin) => {
                let _ = out.send(Ok(control(PacketType::PacketFin))).await;
                return Ok(());
            }
            Ok(PacketType::PacketErr) => {
                return Err(Status::aborted(format!(
                    "error from receiver: {}",
                    String::from_utf8_lossy(&packet.data)
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

async fn send_file(id: u32, blob: &std::path::Path, out: &Outbox) -> Result<(), Status> {
    let mut file = tokio::fs::File::open(blob)
        .await
        .map_err(|e| Status::internal(format!("could not read a context file: {e}")))?;
    loop {
        let mut data = vec![0; CHUNK];
        let read = file
            .read(&mut data)
            .await
            .map_err(|e| Status::internal(format!("could not read a context file: {e}")))?;
        data.truncate(read);
        let last = read == 0;
        let packet = Packet {
            r#type: PacketType::PacketData as i32,
            stat: None,
            id,
            data,
        };
        if out.send(Ok(packet)).await.is_err() {
            return Err(Status::cancelled("the engine stopped reading"));
        }
        if last {
            return Ok(());
        }
    }
}

fn stat_packet(entry: SyncEntry) -> Packet {
    let (mode, size, linkname) = match entry.entry {
        SourceEntry::Dir { mode } => (MODE_DIR | mode, 0, String::new()),
        SourceEntry::File { mode, size, .. } => (mode, size, String::new()),
        SourceEntry::Symlink { target } => (MODE_SYMLINK | 0o777, target.len() as u64, target),
    };
    Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: entry.path,
            mode,
            uid: 0,
            gid: 0,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            // Fixed like the classic builder's context tar: layers come out the same each time.
            mod_time: 0,
            linkname,
            ..Stat::default()
        }),
        id: 0,
        data: Vec::new(),
    }
}

fn stat_end() -> Packet {
    control(PacketType::PacketStat)
}

fn control(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Packet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_patterns_are_unescaped_as_go_does() {
        assert_eq!(query_unescape("caf%C3%A9+x"), "café x");
        assert_eq!(query_unescape("bad%zz"), "bad%zz");
    }
}
