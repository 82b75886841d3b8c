//! Compression, decompression and the streaming hashes of stored bytes.
//!
//! Compression runs on a blocking thread: the encoder writes into a [`Sealed`] writer (age
//! encryption when recipients are configured, see [`super::encryption`], else a pass-through),
//! which writes into a [`ChunkSink`], which hashes the stored bytes (SHA-256 and CRC32C, as the
//! manifest records them) and hands them on in chunks of [`CHUNK`] bytes through a bounded
//! channel. zstd runs multi-threaded (`zstdmt`) with a bounded job size, so its memory does not
//! grow with the dump. Reading back is the same stack upside down ([`open_dump`]): decryption,
//! then decompression.

use std::io::{self, Read, Write};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::encryption::{Identities, Recipients};
use crate::core::db_manifest::{Compression, DumpObject};
use crate::store::crc32c_base64;

/// Size of the chunks handed between threads (and read from `pg_dump`).
pub const CHUNK: usize = 1024 * 1024;

/// Default zstd level, chosen by measurement (`bench/db-backup.sh`, section "compression": a
/// table of level × job size on the large benchmark database, 2.33 GB). Database dumps are
/// repetitive enough that level 1 stores no more than 3: 323.3 MiB at level 1, 322.1–322.5 at 2,
/// 326.3–327.6 at 3 (zstd's faster levels search less but its level 3 window suits dumps no
/// better), while level 1 costs about a third less CPU (6.7–7.9 s of db-backup + pg_dump CPU
/// against 10.8–12.2 s at level 3, 7.6–10.2 at 2). On two cores the backup shares the machine with
/// the server's dump backend, so CPU is wall time: level 1 ran at 1.03× the raw `pg_dump` rate
/// where level 3 took 1.26× (quiet machine, issue 13).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Default zstd job size in MiB (`BACKUP_COMPRESSION_JOB_MIB`): each worker compresses this much
/// at a time, and memory grows with it: peak RSS of db-backup 25 / 31 / 46 / 73 MiB at 1 / 2 / 4 /
/// 8 MiB, for the same output (323.1–323.4 MiB) and CPU. 2 MiB is zstd's own job size at level 1
/// (four times its 512 KiB window) and the setting the 1.03× above was measured with; 1 MiB saves
/// 6 MiB more if a quiet run shows it as fast.
pub const DEFAULT_ZSTD_JOB_MIB: u32 = 2;

/// How to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressSpec {
    /// Algorithm.
    pub compression: Compression,
    /// Level.
    pub level: i32,
    /// zstd worker threads (0 = compress on the calling thread).
    pub threads: u32,
    /// zstd job size in MiB (multi-threaded only): each worker compresses this much at a time;
    /// encoder memory is about `threads × 3 ×` this.
    pub job_mib: u32,
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
                    e.set_parameter(zstd::zstd_safe::CParameter::JobSize(spec.job_mib.max(1) * 1024 * 1024))?;
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

/// The encryption stage of a backup: age encryption to the recipients, or a pass-through.
pub enum Sealed<W: Write> {
    /// Stored as compressed.
    Plain(W),
    /// Encrypted with age.
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> std::fmt::Debug for Sealed<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Sealed::Plain",
            Self::Age(_) => "Sealed::Age",
        })
    }
}

impl<W: Write> Sealed<W> {
    /// Encrypts to `recipients` when there are some; writes the age header into `inner`.
    pub fn new(recipients: Option<&Recipients>, inner: W) -> io::Result<Self> {
        Ok(match recipients {
            Some(r) => Self::Age(r.seal(inner)?),
            None => Self::Plain(inner),
        })
    }

    /// Ends the stream (age: writes the last chunk) and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(data),
            Self::Age(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Age(w) => w.flush(),
        }
    }
}

/// How stored bytes turn back into the archive: decryption when the dump is encrypted, then
/// decompression.
#[derive(Debug, Clone)]
pub struct DecodeSpec {
    /// Compression of the dump.
    pub compression: Compression,
    /// The dump is encrypted (age).
    pub encrypted: bool,
    /// The identities to decrypt it with (checked beforehand by
    /// [`super::encryption::check_key`]); only kept when the dump is encrypted.
    pub identities: Option<Identities>,
}

impl DecodeSpec {
    /// The decoding of `dump`, with `identities` when it is encrypted.
    pub fn new(dump: &DumpObject, identities: Option<&Identities>) -> Self {
        let encrypted = dump.encryption.is_some();
        Self { compression: dump.compression, encrypted, identities: identities.filter(|_| encrypted).cloned() }
    }
}

/// Turns a reader of stored bytes into a reader of the archive: decrypts (age) when `spec` says
/// so, then decompresses. A decryption failure (a changed, missing or extra byte) is a read error
/// of the returned reader, so nothing downstream sees a clean end of a damaged dump.
pub fn open_dump<'a, R: Read + Send + 'a>(spec: &DecodeSpec, inner: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    if !spec.encrypted {
        return decoder(spec.compression, inner);
    }
    let Some(identities) = &spec.identities else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the dump is encrypted and no identity is set"));
    };
    let plain = super::encryption::open(inner, identities)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("age: {e}")))?;
    decoder(spec.compression, Decrypted(plain))
}

/// Says "decryption failed" on the errors of the age reader (a chunk whose tag does not match).
struct Decrypted<R>(age::stream::StreamReader<R>);

impl<R: Read> Read for Decrypted<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.read(out).map_err(|e| io::Error::new(e.kind(), format!("age decryption failed: {e}")))
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
        round_trip_sealed(spec, None);
    }

    /// Compresses (and encrypts to `keys` when given) through the channel, checks the hashes of
    /// what was stored, decodes it back; returns the stored bytes.
    fn round_trip_sealed(spec: CompressSpec, keys: Option<&Identities>) -> Vec<u8> {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| ((i * 7) % 251) as u8).collect();
        let recipients = keys.map(|k| Recipients::parse(&k.recipients().join(",")).expect("keys").expect("some"));
        let (tx, mut rx) = mpsc::channel(4);
        let writer = std::thread::spawn({
            let data = data.clone();
            move || {
                let sealed = Sealed::new(recipients.as_ref(), ChunkSink::new(tx)).expect("sealed");
                let mut enc = Encoder::new(spec, sealed).expect("encoder");
                for piece in data.chunks(100_000) {
                    enc.write_all(piece).expect("write");
                }
                enc.finish().expect("finish").finish().expect("seal").finish().expect("sink")
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

        let decode = DecodeSpec { compression: spec.compression, encrypted: keys.is_some(), identities: keys.cloned() };
        let (ftx, frx) = mpsc::channel(2);
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            open_dump(&decode, FeedReader::new(frx)).expect("decoder").read_to_end(&mut out).map(|_| out)
        });
        for piece in stored.chunks(70_000) {
            ftx.blocking_send(Feed::Data(Bytes::copy_from_slice(piece))).expect("send");
        }
        ftx.blocking_send(Feed::Verified).expect("send");
        assert_eq!(reader.join().expect("thread").expect("decoded"), data);
        stored
    }

    #[test]
    fn encrypted_round_trip_stores_no_readable_compressed_stream() {
        let keys = Identities::generate();
        let zstd_spec = CompressSpec { compression: Compression::Zstd, level: 1, threads: 2, job_mib: 1 };
        let stored = round_trip_sealed(zstd_spec, Some(&keys));
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        assert!(zstd::decode_all(&stored[..]).is_err(), "not a zstd stream");
        let gzip_spec = CompressSpec { compression: Compression::Gzip, level: 1, threads: 0, job_mib: 1 };
        let stored = round_trip_sealed(gzip_spec, Some(&keys));
        let mut out = Vec::new();
        assert!(flate2::read::MultiGzDecoder::new(&stored[..]).read_to_end(&mut out).is_err(), "not a gzip stream");
    }

    #[test]
    fn a_flipped_bit_fails_decoding_with_a_decryption_error() {
        let keys = Identities::generate();
        let spec = CompressSpec { compression: Compression::Zstd, level: 1, threads: 0, job_mib: 1 };
        let mut stored = round_trip_sealed(spec, Some(&keys));
        let at = stored.len() / 2;
        stored[at] ^= 0x10;
        let decode = DecodeSpec { compression: Compression::Zstd, encrypted: true, identities: Some(keys) };
        let mut out = Vec::new();
        let e = open_dump(&decode, &stored[..]).expect("header intact").read_to_end(&mut out).expect_err("flipped");
        assert!(e.to_string().contains("age decryption failed"), "{e}");
        assert!(out.len() < 3 * CHUNK, "nothing past the damaged chunk is handed on");
    }

    #[test]
    fn zstd_multithreaded_round_trip() {
        round_trip(CompressSpec { compression: Compression::Zstd, level: 3, threads: 2, job_mib: 2 });
    }

    #[test]
    fn zstd_single_threaded_round_trip() {
        round_trip(CompressSpec { compression: Compression::Zstd, level: 1, threads: 0, job_mib: 2 });
    }

    #[test]
    fn gzip_round_trip() {
        round_trip(CompressSpec { compression: Compression::Gzip, level: 6, threads: 2, job_mib: 2 });
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
