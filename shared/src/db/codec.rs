//! Compression, decompression and the streaming hashes of stored bytes.
//!
//! Compression runs on a blocking thread: the encoder writes into a [`ChunkSink`], which hashes
//! the compressed bytes (SHA-256 and CRC32C, as the manifest records them) and hands them on in
//! chunks of [`CHUNK`] bytes through a bounded channel. zstd runs multi-threaded (`zstdmt`) with a
//! bounded job size, so its memory does not grow with the dump.

use std::io::{self, Read, Write};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::core::db_manifest::Compression;
use crate::store::crc32c_base64;

/// Size of the chunks handed between threads (and read from `pg_dump`).
pub const CHUNK: usize = 1024 * 1024;

/// zstd job size: each worker compresses this much at a time. zstd's default for level 3 is
/// 8 MiB, which costs ~58 MiB of encoder memory at two workers; 2 MiB costs ~18 MiB for the same
/// ratio (measured on a 1.9 GB pgbench dump: 342.2 MB at 8 MiB, 342.4 MB at 2 MiB) and speed.
const ZSTD_JOB_BYTES: u32 = 2 * 1024 * 1024;

/// How to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressSpec {
    /// Algorithm.
    pub compression: Compression,
    /// Level.
    pub level: i32,
    /// zstd worker threads (0 = compress on the calling thread).
    pub threads: u32,
}

/// Running SHA-256 and CRC32C of a byte stream, and its length.
#[derive(Debug, Clone, Default)]
pub struct StreamHash {
    sha: Sha256,
    crc: u32,
    len: u64,
}

impl StreamHash {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.len += data.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(length, SHA-256 hex, CRC32C base64)`.
    pub fn finish(self) -> (u64, String, String) {
        (self.len, hex::encode(self.sha.finalize()), crc32c_base64(self.crc))
    }
}

/// Where compressed bytes go: hashed, gathered into chunks, sent to the uploader.
#[derive(Debug)]
pub struct ChunkSink {
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
    hash: StreamHash,
}

impl ChunkSink {
    /// A sink sending to `tx`.
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self { buf: Vec::with_capacity(CHUNK), tx, hash: StreamHash::default() }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left and returns the hash of everything written.
    pub fn finish(mut self) -> io::Result<StreamHash> {
        self.send()?;
        Ok(self.hash)
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hash.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A streaming compressor around a writer.
pub enum Encoder<W: Write> {
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Zstd(_) => "Encoder::Zstd",
            Self::Gzip(_) => "Encoder::Gzip",
        })
    }
}

impl<W: Write> Encoder<W> {
    /// A compressor writing to `inner`.
    pub fn new(spec: CompressSpec, inner: W) -> io::Result<Self> {
        Ok(match spec.compression {
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(inner, spec.level)?;
                e.include_checksum(true)?;
                if spec.threads > 0 {
                    e.multithread(spec.threads)?;
                    e.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_BYTES))?;
                }
                Self::Zstd(e)
            }
            Compression::Gzip => {
                let level = u32::try_from(spec.level.clamp(1, 9)).unwrap_or(6);
                Self::Gzip(flate2::write::GzEncoder::new(inner, flate2::Compression::new(level)))
            }
        })
    }

    /// Ends the stream and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Self::Zstd(e) => e.finish(),
            Self::Gzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Self::Zstd(e) => e.write(data),
            Self::Gzip(e) => e.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Zstd(e) => e.flush(),
            Self::Gzip(e) => e.flush(),
        }
    }
}

/// A streaming decompressor around a reader.
pub fn decoder<'a, R: Read + Send + 'a>(compression: Compression, inner: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        Compression::Gzip => {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(256 * 1024, inner)))
        }
    })
}

/// What the download side sends to the decompressing thread.
#[derive(Debug)]
pub enum Feed {
    /// More compressed bytes.
    Data(Bytes),
    /// The download is complete and verified: end of input.
    Verified,
}

/// A blocking [`Read`] over chunks from the async side. End of input is only reported after
/// [`Feed::Verified`]; a closed channel without it is an error, so nothing downstream ever sees
/// a clean end of an unverified stream.
#[derive(Debug)]
pub struct FeedReader {
    rx: mpsc::Receiver<Feed>,
    current: Bytes,
    done: bool,
}

impl FeedReader {
    /// Reads from `rx`.
    pub fn new(rx: mpsc::Receiver<Feed>) -> Self {
        Self { rx, current: Bytes::new(), done: false }
    }
}

impl Read for FeedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Feed::Data(b)) => self.current = b,
                Some(Feed::Verified) => self.done = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the download stopped before it was verified",
                    ));
                }
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(spec: CompressSpec) {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| ((i * 7) % 251) as u8).collect();
        let (tx, mut rx) = mpsc::channel(4);
        let writer = std::thread::spawn({
            let data = data.clone();
            move || {
                let mut enc = Encoder::new(spec, ChunkSink::new(tx)).expect("encoder");
                for piece in data.chunks(100_000) {
                    enc.write_all(piece).expect("write");
                }
                enc.finish().expect("finish").finish().expect("sink")
            }
        });
        let mut stored = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            assert!(chunk.len() <= 2 * CHUNK);
            stored.extend_from_slice(&chunk);
        }
        let hash = writer.join().expect("thread");
        let (len, sha, crc) = hash.finish();
        assert_eq!(len, stored.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&stored)));
        assert_eq!(crc, crc32c_base64(crc32c::crc32c(&stored)));

        let (ftx, frx) = mpsc::channel(2);
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            decoder(spec.compression, FeedReader::new(frx)).expect("decoder").read_to_end(&mut out).map(|_| out)
        });
        for piece in stored.chunks(70_000) {
            ftx.blocking_send(Feed::Data(Bytes::copy_from_slice(piece))).expect("send");
        }
        ftx.blocking_send(Feed::Verified).expect("send");
        assert_eq!(reader.join().expect("thread").expect("decoded"), data);
    }

    #[test]
    fn zstd_multithreaded_round_trip() {
        round_trip(CompressSpec { compression: Compression::Zstd, level: 3, threads: 2 });
    }

    #[test]
    fn zstd_single_threaded_round_trip() {
        round_trip(CompressSpec { compression: Compression::Zstd, level: 1, threads: 0 });
    }

    #[test]
    fn gzip_round_trip() {
        round_trip(CompressSpec { compression: Compression::Gzip, level: 6, threads: 2 });
    }

    #[test]
    fn unverified_end_is_an_error() {
        let (tx, rx) = mpsc::channel(2);
        tx.blocking_send(Feed::Data(Bytes::from_static(b"abc"))).expect("send");
        drop(tx);
        let mut r = FeedReader::new(rx);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).expect_err("no verification");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out, b"abc");
    }
}
