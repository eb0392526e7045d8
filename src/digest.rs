//! Hashing what is written, as it is written: every blob Slipway spills to
//! disk (sources, layers, compressed layers) is digested on the way.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// A writer that hashes (SHA-256) and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

/// What a [`HashingWriter`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub sha256: [u8; 32],
    pub size: u64,
}

impl Digested {
    /// `sha256:<hex>`, as registries name blobs.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.sha256))
    }
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the inner writer and returns what was written.
    pub fn finish(mut self) -> io::Result<Digested> {
        self.inner.flush()?;
        Ok(Digested {
            sha256: self.hasher.finalize().into(),
            size: self.size,
        })
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_counts() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"abc").expect("write");
        let digested = writer.finish().expect("finish");
        assert_eq!(digested.size, 3);
        assert_eq!(
            digested.digest(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
