//! Reading snapshots: which exist, choosing one, and streaming its entries in name order.
//!
//! Parts are decoded as their bytes arrive (a raw zstd decoder fed chunk by chunk, lines parsed as
//! they complete), and the parts of a sharded snapshot are merged by name. Memory holds one
//! download chunk and one pending line per part, whatever the size of the snapshot.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zstd::stream::raw::{Decoder, Operation as _};

use super::SnapshotError;
use super::blob::shard_of;
use super::join::{Named, strictly_ordered};
use crate::core::naming::{RunId, SnapshotPath};
use crate::core::series::{Backup, series_from_listing};
use crate::core::snapshot_manifest::{SnapshotEntry, SnapshotFormatError, SnapshotHeader, part_key};
use crate::store::{ByteStream, ObjectStore, ObjectStoreExt as _, StoreError};

/// Largest header accepted.
const HEADER_LIMIT: usize = 1024 * 1024;
/// Decompression output buffer.
const OUT_BUF: usize = 64 * 1024;

/// The snapshots of `bucket` in `store`, oldest first (complete or not).
pub async fn list_snapshots(store: &dyn ObjectStore, bucket: &str) -> Result<Vec<Backup>, SnapshotError> {
    let prefix = SnapshotPath::series_prefix(bucket);
    let objects: Vec<_> = store.list_all(&prefix).try_collect().await.map_err(|e| missing_bucket(store, e))?;
    Ok(series_from_listing(objects).into_iter().flat_map(|s| s.backups).collect())
}

/// A listing answers "not found" only when the bucket itself is missing: say so.
pub fn missing_bucket(store: &dyn ObjectStore, e: StoreError) -> SnapshotError {
    if e.is_not_found() {
        SnapshotError::Invalid(format!(
            "{}: the bucket does not exist (or is not visible to these credentials)",
            store.location()
        ))
    } else {
        e.into()
    }
}

/// Which snapshot to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest complete one.
    Latest,
    /// Exactly this one (it must be complete).
    Id(RunId),
    /// The newest complete one started at or before this time.
    Before(DateTime<Utc>),
}

impl Selector {
    fn describe(&self) -> String {
        match self {
            Self::Latest => "at all".into(),
            Self::Id(id) => format!("with id {id}"),
            Self::Before(t) => format!("started at or before {}", t.to_rfc3339()),
        }
    }
}

/// Picks a complete snapshot from `snapshots` (oldest first).
pub fn choose<'a>(snapshots: &'a [Backup], selector: &Selector) -> Option<&'a Backup> {
    let mut complete = snapshots.iter().rev().filter(|b| b.complete);
    match selector {
        Selector::Latest => complete.next(),
        Selector::Id(id) => complete.find(|b| &b.run == id),
        Selector::Before(t) => complete.find(|b| b.run.started <= *t),
    }
}

/// Finds and reads the snapshot `selector` names.
pub async fn find(
    store: &dyn ObjectStore,
    bucket: &str,
    selector: &Selector,
) -> Result<(SnapshotPath, SnapshotHeader), SnapshotError> {
    let snapshots = list_snapshots(store, bucket).await?;
    let chosen = choose(&snapshots, selector).ok_or_else(|| SnapshotError::NoSnapshot {
        bucket: bucket.to_owned(),
        matching: match selector {
            Selector::Id(id) if snapshots.iter().any(|b| &b.run == id) => {
                format!("with id {id} (it exists but has no header: it never completed)")
            }
            other => other.describe(),
        },
        location: store.location().to_string(),
    })?;
    let path = SnapshotPath { bucket: bucket.to_owned(), run: chosen.run.clone() };
    let header = read_header(store, &path).await?;
    Ok((path, header))
}

/// Reads and checks a snapshot's header.
pub async fn read_header(store: &dyn ObjectStore, path: &SnapshotPath) -> Result<SnapshotHeader, SnapshotError> {
    let bytes = super::read_small(store, &path.header_key(), HEADER_LIMIT).await?;
    let header = SnapshotHeader::from_json(&bytes)?;
    if header.snapshot_id != path.run.to_string() || header.bucket != path.bucket {
        return Err(SnapshotError::Inconsistent(format!(
            "header {} names snapshot {} of {:?}",
            path.header_key(),
            header.snapshot_id,
            header.bucket
        )));
    }
    Ok(header)
}

/// What a part's lines can be read as: the whole [`SnapshotEntry`], or a lighter view of it.
pub trait PartLine: DeserializeOwned + Named + Send + 'static {}

impl<T: DeserializeOwned + Named + Send + 'static> PartLine for T {}

/// What a new snapshot needs of the previous one: the blob holding a name's content. Reading
/// only this (the other fields are skipped, not allocated) makes the index cheaper to read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlobOfName {
    /// Object name.
    pub name: String,
    /// Size.
    pub size: u64,
    /// The blob's key.
    pub blob: String,
}

impl Named for BlobOfName {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Incremental decoder of one part: compressed chunks in, entries out.
struct PartDecoder {
    decoder: Decoder<'static>,
    out: Vec<u8>,
    pending: Vec<u8>,
    /// zstd's hint after the last step: 0 when a frame just ended.
    hint: usize,
}

impl PartDecoder {
    fn new() -> Result<Self, SnapshotError> {
        Ok(Self {
            decoder: Decoder::new().map_err(SnapshotFormatError::Io)?,
            out: vec![0; OUT_BUF],
            pending: Vec::new(),
            hint: 1,
        })
    }

    fn feed<E: PartLine>(&mut self, mut input: &[u8], entries: &mut VecDeque<E>) -> Result<(), SnapshotError> {
        loop {
            let status = self.decoder.run_on_buffers(input, &mut self.out).map_err(SnapshotFormatError::Io)?;
            self.pending.extend_from_slice(&self.out[..status.bytes_written]);
            self.hint = status.remaining;
            input = &input[status.bytes_read..];
            let output_full = status.bytes_written == self.out.len();
            if (input.is_empty() && !output_full) || (status.bytes_read == 0 && status.bytes_written == 0) {
                break;
            }
        }
        self.split_lines(entries)
    }

    fn split_lines<E: PartLine>(&mut self, entries: &mut VecDeque<E>) -> Result<(), SnapshotError> {
        let mut start = 0;
        while let Some(n) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + n];
            if !line.is_empty() {
                entries.push_back(serde_json::from_slice(line).map_err(SnapshotFormatError::Json)?);
            }
            start += n + 1;
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn finish<E: PartLine>(&mut self, entries: &mut VecDeque<E>) -> Result<(), SnapshotError> {
        if self.hint != 0 {
            return Err(SnapshotFormatError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the part ends in the middle of a zstd frame (truncated)",
            ))
            .into());
        }
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            self.split_lines(entries)?;
        }
        Ok(())
    }
}

/// Decodes a whole part handed over in `chunks` (as a download delivers it) with the streaming
/// decoder [`part_entries`] uses: the same answer at any chunking. For fuzzing and tests.
pub fn decode_chunks<'c, E: PartLine>(chunks: impl IntoIterator<Item = &'c [u8]>) -> Result<Vec<E>, SnapshotError> {
    let mut d = PartDecoder::new()?;
    let mut entries = VecDeque::new();
    for c in chunks {
        d.feed(c, &mut entries)?;
    }
    d.finish(&mut entries)?;
    Ok(entries.into_iter().collect())
}

struct PartState<'a, E> {
    store: &'a dyn ObjectStore,
    key: String,
    snapshot: String,
    bytes: Option<ByteStream>,
    decoder: PartDecoder,
    entries: VecDeque<E>,
    finished: bool,
}

/// The entries of one part, decoded while it downloads.
pub fn part_entries<'a, E: PartLine>(store: &'a dyn ObjectStore, key: String, snapshot: String) -> EntryStream<'a, E> {
    let decoder = match PartDecoder::new() {
        Ok(d) => d,
        Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
    };
    let state = PartState { store, key, snapshot, bytes: None, decoder, entries: VecDeque::new(), finished: false };
    futures::stream::try_unfold(state, |mut s| async move {
        loop {
            if let Some(entry) = s.entries.pop_front() {
                return Ok(Some((entry, s)));
            }
            if s.finished {
                return Ok(None);
            }
            if s.bytes.is_none() {
                s.bytes = Some(s.store.read(&s.key).await.map_err(|e| {
                    if e.is_not_found() {
                        SnapshotError::MissingPart { snapshot: s.snapshot.clone(), key: s.key.clone() }
                    } else {
                        e.into()
                    }
                })?);
            }
            let Some(bytes) = s.bytes.as_mut() else { continue };
            match bytes.next().await {
                Some(chunk) => s.decoder.feed(&chunk?, &mut s.entries)?,
                None => {
                    s.decoder.finish(&mut s.entries)?;
                    s.finished = true;
                }
            }
        }
    })
    .boxed()
}

/// A stream of snapshot entries (or of a lighter view of them).
pub type EntryStream<'a, E = SnapshotEntry> = BoxStream<'a, Result<E, SnapshotError>>;

/// One input of a merge: its stream, its next entry, and whether it ended.
struct MergeInput<'a, E> {
    stream: EntryStream<'a, E>,
    head: Option<E>,
    done: bool,
}

/// Merges name-ordered streams into one, by name.
pub fn merge_by_name<'a, E: PartLine>(parts: Vec<EntryStream<'a, E>>) -> EntryStream<'a, E> {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_else(|| futures::stream::empty().boxed());
    }
    let inputs: Vec<MergeInput<'a, E>> =
        parts.into_iter().map(|stream| MergeInput { stream, head: None, done: false }).collect();
    futures::stream::try_unfold(inputs, |mut inputs| async move {
        for input in &mut inputs {
            if input.head.is_none() && !input.done {
                match input.stream.next().await {
                    Some(entry) => input.head = Some(entry?),
                    None => input.done = true,
                }
            }
        }
        let smallest = inputs
            .iter()
            .enumerate()
            .filter_map(|(i, input)| input.head.as_ref().map(|e| (i, e.name())))
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        Ok(match smallest {
            Some(i) => inputs[i].head.take().map(|e| (e, inputs)),
            None => None,
        })
    })
    .boxed()
}

/// Every entry of a snapshot, in strict name order (disorder or a duplicate name is an error).
pub fn entries<'a>(store: &'a dyn ObjectStore, path: &SnapshotPath, header: &SnapshotHeader) -> EntryStream<'a> {
    entries_as(store, path, header)
}

/// [`entries`], read as `E`.
pub fn entries_as<'a, E: PartLine>(
    store: &'a dyn ObjectStore,
    path: &SnapshotPath,
    header: &SnapshotHeader,
) -> EntryStream<'a, E> {
    let id = path.run.to_string();
    let parts = (0..header.parts).map(|t| part_entries(store, part_key(path, t, header.parts), id.clone())).collect();
    strictly_ordered(merge_by_name(parts), format!("snapshot {id}"))
}

/// The entries of a snapshot that belong to task `task` of `tasks` (see [`shard_of`]). When the
/// snapshot was taken with as many tasks, that is exactly one part; otherwise every part is read.
pub fn shard_entries<'a, E: PartLine>(
    store: &'a dyn ObjectStore,
    path: &SnapshotPath,
    header: &SnapshotHeader,
    task: u32,
    tasks: u32,
) -> EntryStream<'a, E> {
    let id = path.run.to_string();
    if header.parts == tasks {
        let part = part_entries(store, part_key(path, task, tasks), id.clone());
        return strictly_ordered(part, format!("snapshot {id}"));
    }
    entries_as(store, path, header)
        .try_filter(move |e: &E| futures::future::ready(shard_of(e.name(), tasks) == task))
        .boxed()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::snapshot_manifest::PartEncoder;

    fn entry(name: &str) -> SnapshotEntry {
        SnapshotEntry {
            name: name.into(),
            size: 1,
            generation: 1,
            md5: None,
            crc32c: None,
            content_type: None,
            content_encoding: None,
            cache_control: None,
            content_disposition: None,
            content_language: None,
            metadata: BTreeMap::new(),
            blob: format!("storage/b/blobs/{name}"),
        }
    }

    fn encode(names: &[String]) -> Vec<u8> {
        let mut enc = PartEncoder::new().expect("encoder");
        let mut out = Vec::new();
        for n in names {
            enc.push(&entry(n)).expect("push");
            out.extend(enc.take_output());
        }
        out.extend(enc.finish().expect("finish"));
        out
    }

    fn decode_as<E: PartLine>(bytes: &[u8], chunk: usize) -> Result<Vec<E>, SnapshotError> {
        decode_chunks(bytes.chunks(chunk.max(1)))
    }

    fn decode_in_chunks(bytes: &[u8], chunk: usize) -> Result<Vec<String>, SnapshotError> {
        Ok(decode_as::<SnapshotEntry>(bytes, chunk)?.into_iter().map(|e| e.name).collect())
    }

    #[test]
    fn streaming_decoder_matches_the_format_at_any_chunking() {
        let names: Vec<String> = (0..5000).map(|i| format!("dir/{i:06} ünï #?%")).collect();
        let bytes = encode(&names);
        for chunk in [1, 7, 4096, 65_536, bytes.len()] {
            assert_eq!(decode_in_chunks(&bytes, chunk).expect("decode"), names, "chunk {chunk}");
        }
        // And agrees with the format module's reader.
        let mut back = Vec::new();
        crate::core::snapshot_manifest::decode_part(&bytes, |e| {
            back.push(e.name);
            Ok(())
        })
        .expect("decode_part");
        assert_eq!(back, names);
        assert!(decode_in_chunks(&encode(&[]), 3).expect("empty part").is_empty());
        // The light view the index reads.
        let light: Vec<BlobOfName> = decode_as(&bytes, 4096).expect("light");
        assert_eq!(
            light[7],
            BlobOfName { name: names[7].clone(), size: 1, blob: format!("storage/b/blobs/{}", names[7]) }
        );
    }

    #[test]
    fn truncated_or_corrupt_parts_are_errors() {
        let names: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
        let bytes = encode(&names);
        assert!(decode_in_chunks(&bytes[..bytes.len() - 3], 16).is_err(), "truncated");
        assert!(decode_in_chunks(&[], 16).is_err(), "empty object");
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        assert!(decode_in_chunks(&bad, 16).is_err(), "flipped byte");
    }

    fn stream(names: &[&str]) -> BoxStream<'static, Result<SnapshotEntry, SnapshotError>> {
        futures::stream::iter(names.iter().map(|n| Ok(entry(n))).collect::<Vec<_>>()).boxed()
    }

    #[tokio::test]
    async fn parts_merge_by_name() {
        let merged: Vec<_> = merge_by_name(vec![stream(&["a", "d", "e"]), stream(&[]), stream(&["b", "c", "f"])])
            .try_collect()
            .await
            .expect("merge");
        assert_eq!(merged.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d", "e", "f"]);
        // A name in two parts is caught by the order check on top.
        let dup = strictly_ordered(merge_by_name(vec![stream(&["a", "b"]), stream(&["b"])]), "s");
        assert!(dup.try_collect::<Vec<_>>().await.is_err());
    }

    fn backup(id: &str, complete: bool) -> Backup {
        Backup {
            run: id.parse().expect("id"),
            complete,
            suspicious: false,
            encrypted: false,
            bytes: 0,
            last_write: DateTime::<Utc>::default(),
            keys: Vec::new(),
            drills: Vec::new(),
        }
    }

    #[test]
    fn choosing_a_snapshot() {
        let all = [
            backup("20261124T030000Z-00000001", true),
            backup("20261125T030000Z-00000002", true),
            backup("20261126T030000Z-00000003", false),
        ];
        let pick = |s: &Selector| choose(&all, s).map(|b| b.run.suffix.clone());
        assert_eq!(pick(&Selector::Latest).as_deref(), Some("00000002"), "incomplete ones are skipped");
        let t = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").to_utc();
        assert_eq!(pick(&Selector::Before(t("2026-11-25T12:00:00Z"))).as_deref(), Some("00000002"));
        assert_eq!(pick(&Selector::Before(t("2026-11-25T03:00:00Z"))).as_deref(), Some("00000002"), "inclusive");
        assert_eq!(pick(&Selector::Before(t("2026-11-25T02:59:59Z"))).as_deref(), Some("00000001"));
        assert_eq!(pick(&Selector::Before(t("2026-01-01T00:00:00Z"))), None);
        assert_eq!(pick(&Selector::Id("20261124T030000Z-00000001".parse().expect("id"))).as_deref(), Some("00000001"));
        assert_eq!(pick(&Selector::Id("20261126T030000Z-00000003".parse().expect("id"))), None, "incomplete");
        assert_eq!(choose(&[], &Selector::Latest), None);
    }
}
