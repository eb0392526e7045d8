//! Gzip for layers, on every core: the layer is cut into chunks, each
//! compressed as its own gzip member, and the members are written in order.
//! A multi-member gzip stream is plain gzip to every reader (Go's included),
//! and the same bytes in always give the same bytes out, so an unchanged
//! layer keeps its digest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::mpsc;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use crate::digest::HashingWriter;

const CHUNK: usize = 4 << 20;

/// Digest and size of a blob written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub digest: String,
    pub size: u64,
}

/// Compresses `src` into `dest`; returns the digest of what was written.
pub fn gzip_file(src: &Path, dest: &Path) -> io::Result<Written> {
    let file = BufWriter::with_capacity(1 << 20, File::create(dest)?);
    gzip_into(src, file)
}

/// Compresses `src` into `sink` (a file, or an upload under way), member by
/// member in order; returns the digest of what was written.
pub fn gzip_into(src: &Path, sink: impl Write + Send) -> io::Result<Written> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let reader = BufReader::with_capacity(CHUNK, File::open(src)?);
    let mut out = HashingSink(HashingWriter::new(sink));
    if threads == 1 {
        compress_serially(reader, &mut out)?;
    } else {
        compress_in_parallel(reader, &mut out, threads)?;
    }
    out.finish()
}

/// Whether the file at `path` starts with the gzip magic number.
pub fn is_gzip(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// Digest and size of a file as it is.
pub fn digest_file(path: &Path) -> io::Result<Written> {
    let mut reader = BufReader::with_capacity(CHUNK, File::open(path)?);
    let mut hasher = Sha256::new();
    let size = io::copy(&mut reader, &mut HashSink(&mut hasher))?;
    Ok(Written {
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
    })
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn compress_chunk(chunk: &[u8]) -> io::Result<Vec<u8>> {
    // Fast compression: pushing is usually CPU-bound here, not network-bound.
    let mut gz = GzEncoder::new(
        Vec::with_capacity(chunk.len() / 2 + 64),
        Compression::fast(),
    );
    gz.write_all(chunk)?;
    gz.finish()
}

fn read_chunk(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(CHUNK);
    reader.take(CHUNK as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

fn compress_serially<W: Write>(mut reader: impl Read, out: &mut HashingSink<W>) -> io::Result<()> {
    loop {
        let chunk = read_chunk(&mut reader)?;
        if chunk.is_empty() && out.size() > 0 {
            return Ok(());
        }
        out.write_all(&compress_chunk(&chunk)?)?;
        if chunk.len() < CHUNK {
            return Ok(());
        }
    }
}

/// Reads chunks here, compresses them on `threads` workers, and writes them
/// back in order. At most about 3 × `threads` chunks are in memory at once.
fn compress_in_parallel<W: Write + Send>(
    mut reader: impl Read,
    out: &mut HashingSink<W>,
    threads: usize,
) -> io::Result<()> {
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(threads);
        let work_rx = std::sync::Arc::new(std::sync::Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::sync_channel::<(usize, io::Result<Vec<u8>>)>(threads);
        for _ in 0..threads {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            scope.spawn(move || loop {
                let next = work_rx.lock().map(|rx| rx.recv());
                let Ok(Ok((index, chunk))) = next else { return };
                if done_tx.send((index, compress_chunk(&chunk))).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let writer = scope.spawn(move || write_in_order(done_rx, out));
        let read = feed_chunks(&mut reader, &work_tx);
        drop(work_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("compression writer panicked")));
        read.and(written)
    })
}

fn feed_chunks(
    reader: &mut impl Read,
    work: &mpsc::SyncSender<(usize, Vec<u8>)>,
) -> io::Result<()> {
    let mut index = 0;
    loop {
        let chunk = read_chunk(reader)?;
        let last = chunk.len() < CHUNK;
        // An empty file still becomes one (empty) gzip member.
        if !chunk.is_empty() || index == 0 {
            if work.send((index, chunk)).is_err() {
                return Ok(()); // the writer failed; its error is reported
            }
            index += 1;
        }
        if last {
            return Ok(());
        }
    }
}

fn write_in_order<W: Write>(
    done: mpsc::Receiver<(usize, io::Result<Vec<u8>>)>,
    out: &mut HashingSink<W>,
) -> io::Result<()> {
    let mut pending = BTreeMap::new();
    let mut next = 0;
    for (index, member) in done {
        pending.insert(index, member?);
        while let Some(member) = pending.remove(&next) {
            out.write_all(&member)?;
            next += 1;
        }
    }
    Ok(())
}

/// The compressed layer, hashed as it is written.
struct HashingSink<W: Write>(HashingWriter<W>);

impl<W: Write> HashingSink<W> {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn finish(self) -> io::Result<Written> {
        let digested = self.0.finish()?;
        Ok(Written {
            digest: digested.digest(),
            size: digested.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) -> (Vec<u8>, Written) {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("raw");
        let dest = dir.path().join("raw.gz");
        std::fs::write(&src, data).expect("write");
        let written = gzip_file(&src, &dest).expect("gzip");
        let gz = std::fs::read(&dest).expect("read");
        assert_eq!(written.size, gz.len() as u64);
        assert_eq!(written, digest_file(&dest).expect("digest"));
        assert!(is_gzip(&dest).expect("magic"));
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(gz.as_slice())
            .read_to_end(&mut plain)
            .expect("gunzip");
        (plain, written)
    }

    #[test]
    fn multi_member_output_decompresses_to_the_input_and_is_deterministic() {
        let data: Vec<u8> = (0..(CHUNK * 3 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (plain, first) = roundtrip(&data);
        assert_eq!(plain, data);
        let (_, second) = roundtrip(&data);
        assert_eq!(first, second, "same input, same digest");
    }

    #[test]
    fn empty_and_small_files_work() {
        assert_eq!(roundtrip(b"").0, b"");
        assert_eq!(roundtrip(b"tiny").0, b"tiny");
        let exact = vec![1u8; CHUNK];
        assert_eq!(roundtrip(&exact).0, exact);
    }

    #[test]
    fn serial_and_parallel_agree() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 7)).map(|i| (i % 13) as u8).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let serial = dir.path().join("serial.gz");
        let parallel = dir.path().join("parallel.gz");
        let create =
            |path: &Path| HashingSink(HashingWriter::new(File::create(path).expect("create")));
        let mut a = create(&serial);
        compress_serially(data.as_slice(), &mut a).expect("serial");
        let a = a.finish().expect("finish");
        let mut b = create(&parallel);
        compress_in_parallel(data.as_slice(), &mut b, 3).expect("parallel");
        let b = b.finish().expect("finish");
        assert_eq!(a, b);
    }
}
