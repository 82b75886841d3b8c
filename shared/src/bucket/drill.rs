//! Bucket drills: the newest complete snapshot of a source is checked without copying it back.
//!
//! - Every entry's blob is looked up by its metadata (one `stat` each, no download): it must
//!   exist with the entry's size and checksums (MD5, CRC32C, as the store computed them).
//! - A random sample of entries (reservoir sampling over the one streaming pass, so memory holds
//!   only the sample) is read back in full from the backup store and hashed: the bytes must have
//!   the MD5 and CRC32C the source object had. This is what a restore would copy.
//!
//! Sampled blobs are compared by streaming rather than restored into a scratch prefix of the
//! backup bucket: a retention policy (or soft delete) on that bucket would keep the scratch
//! copies, and the drill's account would need delete rights there.

use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::stream::{StreamExt as _, TryStreamExt as _};
use md5::Digest as _;
use tokio_util::sync::CancellationToken;

use super::SnapshotError;
use super::blob::{Expected, verify_content};
use super::read::{Selector, choose, entries, list_snapshots, read_header};
use crate::core::drill::{DrillKind, DrillOutcome, DrillRecord, snapshot_record_key};
use crate::core::naming::SnapshotPath;
use crate::core::snapshot_manifest::SnapshotEntry;
use crate::core::source::SourceSpec;
use crate::store::{ObjectMeta, ObjectStore, crc32c_base64, md5_base64};

/// Problems kept word for word in a record (the rest are counted).
const PROBLEMS_KEPT: usize = 5;

/// How many entries a drill reads back in full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// This many (all when the snapshot has fewer).
    Count(u64),
    /// This percentage of the snapshot's entries (rounded up, at least one).
    Percent(f64),
}

impl Sample {
    /// The sample size for a snapshot of `total` entries.
    pub fn size(self, total: u64) -> u64 {
        match self {
            Self::Count(n) => n.min(total),
            Self::Percent(p) => {
                let n = (total as f64 * p / 100.0).ceil() as u64;
                n.clamp(u64::from(total > 0 && p > 0.0), total)
            }
        }
    }
}

impl std::str::FromStr for Sample {
    type Err = String;

    /// `20` (objects) or `1%` (of the snapshot's objects, more than 0 and at most 100).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Self::Percent(p)),
                _ => Err(format!("{s:?} is not a percentage above 0 and at most 100 (like 1%)")),
            };
        }
        s.parse::<u64>()
            .map(Self::Count)
            .map_err(|_| format!("{s:?} is not a number of objects (like 20) or a percentage (like 1%)"))
    }
}

/// What a bucket drill needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketDrillSettings {
    /// Entries read back in full.
    pub sample: Sample,
    /// Metadata lookups (and sample reads) in flight.
    pub concurrency: usize,
}

/// Reservoir sampling (Algorithm R): after `n` offers, each offered item is held with
/// probability `capacity / n`, in memory for `capacity` items only.
#[derive(Debug)]
pub struct Reservoir<T> {
    capacity: usize,
    seen: u64,
    items: Vec<T>,
    rng: fastrand::Rng,
}

impl<T> Reservoir<T> {
    /// A reservoir of `capacity` items drawing from `rng`.
    pub fn new(capacity: usize, rng: fastrand::Rng) -> Self {
        Self { capacity, seen: 0, items: Vec::with_capacity(capacity.min(1 << 16)), rng }
    }

    /// Offers one item.
    pub fn offer(&mut self, item: T) {
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push(item);
            return;
        }
        let j = self.rng.u64(0..self.seen);
        if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.items.get_mut(j)) {
            *slot = item;
        }
    }

    /// The sample.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

/// One drilled snapshot: where its record goes, and the record (with the figures the record
/// has no field for).
#[derive(Debug, Clone)]
pub struct Drilled {
    /// `…/drills/<ts>.json` inside the snapshot's folder.
    pub key: String,
    /// The record.
    pub record: DrillRecord,
    /// Bytes of every entry checked by metadata.
    pub bytes_checked: u64,
}

/// Drills the newest complete snapshot of `spec`. `Err` only when there is none (or the listing
/// failed): then no record can be written. Every failure after a snapshot was chosen is a failed
/// record.
pub async fn drill_snapshot(
    store: &dyn ObjectStore,
    spec: &SourceSpec,
    settings: BucketDrillSettings,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Drilled, SnapshotError> {
    let snapshots = list_snapshots(store, &spec.bucket).await?;
    let chosen = choose(&snapshots, &Selector::Latest).ok_or_else(|| SnapshotError::NoSnapshot {
        bucket: spec.bucket.clone(),
        matching: "at all".into(),
        location: store.location().to_string(),
    })?;
    let path = SnapshotPath { bucket: spec.bucket.clone(), run: chosen.run.clone() };
    let key = snapshot_record_key(&path, now);
    let name = if spec.prefix.is_empty() { spec.bucket.clone() } else { format!("{}/{}", spec.bucket, spec.prefix) };
    let mut record = DrillRecord::started(DrillKind::Bucket, spec.bucket.clone(), name, path.run.clone(), now);
    let clock = Instant::now();
    tracing::info!(bucket = spec.bucket, snapshot = %path.run, "drill: checking the snapshot's blobs");
    let checked = check(store, &path, settings, cancel).await;
    let mut bytes_checked = 0;
    match checked {
        Ok(c) => {
            record.objects_checked = Some(c.checked);
            record.objects_sampled = Some(c.sampled);
            record.bytes = c.sampled_bytes;
            bytes_checked = c.checked_bytes;
            if c.problems == 0 {
                record.outcome = DrillOutcome::Passed;
                tracing::info!(
                    bucket = spec.bucket,
                    checked = c.checked,
                    sampled = c.sampled,
                    secs = clock.elapsed().as_secs_f64(),
                    "drill passed"
                );
            } else {
                let more = c.problems.saturating_sub(c.first.len() as u64);
                record.error = Some(format!(
                    "{} of {} objects do not restore: {}{}",
                    c.problems,
                    c.checked,
                    c.first.join("; "),
                    if more > 0 { format!("; and {more} more") } else { String::new() }
                ));
            }
        }
        Err(e) => record.error = Some(e.to_string()),
    }
    if let Some(e) = &record.error {
        tracing::error!(bucket = spec.bucket, error = e, "drill failed");
    }
    record.finished_at = Utc::now();
    Ok(Drilled { key, record, bytes_checked })
}

/// What the checks found.
#[derive(Debug, Default)]
struct Checked {
    checked: u64,
    checked_bytes: u64,
    sampled: u64,
    sampled_bytes: u64,
    problems: u64,
    first: Vec<String>,
    /// Names found bad (an object is counted once, though the sample may find it again).
    bad: std::collections::HashSet<String>,
}

impl Checked {
    fn problem(&mut self, name: &str, text: String) {
        if !self.bad.insert(name.to_owned()) {
            return;
        }
        self.problems += 1;
        if self.first.len() < PROBLEMS_KEPT {
            self.first.push(text);
        }
    }
}

async fn check(
    store: &dyn ObjectStore,
    path: &SnapshotPath,
    settings: BucketDrillSettings,
    cancel: &CancellationToken,
) -> Result<Checked, SnapshotError> {
    let header = read_header(store, path).await?;
    let wanted = usize::try_from(settings.sample.size(header.totals.objects)).unwrap_or(usize::MAX);
    let mut reservoir = Reservoir::new(wanted, fastrand::Rng::new());
    let mut out = Checked::default();
    let concurrency = settings.concurrency.max(1);
    {
        let stats = entries(store, path, &header)
            .map_ok(|entry| {
                reservoir.offer(entry.clone());
                async move {
                    let found = store.stat(&entry.blob).await;
                    Ok::<_, SnapshotError>((entry, found))
                }
            })
            .try_buffer_unordered(concurrency);
        let mut stats = std::pin::pin!(stats);
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(SnapshotError::Cancelled),
                next = stats.next() => next,
            };
            let Some(next) = next else { break };
            let (entry, found) = next?;
            out.checked += 1;
            out.checked_bytes += entry.size;
            match found {
                Ok(meta) => {
                    if let Err(detail) = matches_entry(&entry, &meta) {
                        out.problem(&entry.name, format!("{:?}: blob {:?} has {detail}", entry.name, entry.blob));
                    }
                }
                Err(e) if e.is_not_found() => {
                    out.problem(&entry.name, format!("{:?}: blob {:?} is missing", entry.name, entry.blob))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if out.checked != header.totals.objects {
        out.problem(
            "",
            format!("the snapshot lists {} entries but its header counts {}", out.checked, header.totals.objects),
        );
    }
    let sample = reservoir.into_items();
    tracing::info!(snapshot = %path.run, checked = out.checked, sampled = sample.len(), "metadata checked; reading the sample back");
    let reads = futures::stream::iter(sample)
        .map(|entry| async move {
            let r = read_back(store, &entry).await;
            (entry, r)
        })
        .buffer_unordered(concurrency);
    let mut reads = std::pin::pin!(reads);
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(SnapshotError::Cancelled),
            next = reads.next() => next,
        };
        let Some((entry, read)) = next else { break };
        out.sampled += 1;
        match read {
            Ok((len, md5, crc)) => {
                out.sampled_bytes += len;
                let got = ObjectMeta {
                    key: entry.blob.clone(),
                    size: len,
                    md5: Some(md5),
                    crc32c: Some(crc),
                    ..ObjectMeta::default()
                };
                if let Err(detail) = verify_content(Expected::of_entry(&entry), &got) {
                    out.problem(
                        &entry.name,
                        format!("{:?}: the bytes of blob {:?} have {detail}", entry.name, entry.blob),
                    );
                }
            }
            Err(e) if e.is_not_found() => {
                out.problem(&entry.name, format!("{:?}: blob {:?} is missing", entry.name, entry.blob))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Checks a blob's metadata against its entry: the size, and every checksum both know. A store
/// that reports no checksum (a `file://` store that does not vouch for one) is checked by size.
fn matches_entry(entry: &SnapshotEntry, meta: &ObjectMeta) -> Result<(), String> {
    if meta.md5.is_none() && meta.crc32c.is_none() {
        if meta.size != entry.size {
            return Err(format!("size {} instead of {}", meta.size, entry.size));
        }
        return Ok(());
    }
    verify_content(Expected::of_entry(entry), meta)
}

/// Reads a blob in full: its length, MD5 and CRC32C (base64, as the store reports them).
async fn read_back(
    store: &dyn ObjectStore,
    entry: &SnapshotEntry,
) -> Result<(u64, String, String), crate::store::StoreError> {
    let mut stream = store.read(&entry.blob).await?;
    let mut md5 = md5::Md5::new();
    let mut crc = 0u32;
    let mut len = 0u64;
    while let Some(chunk) = stream.try_next().await? {
        md5.update(&chunk);
        crc = crc32c::crc32c_append(crc, &chunk);
        len += chunk.len() as u64;
    }
    Ok((len, md5_base64(&md5.finalize()), crc32c_base64(crc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_sizes() {
        assert_eq!(Sample::Count(20).size(1000), 20);
        assert_eq!(Sample::Count(20).size(7), 7);
        assert_eq!(Sample::Count(0).size(7), 0);
        assert_eq!(Sample::Percent(1.0).size(1000), 10);
        assert_eq!(Sample::Percent(1.0).size(5), 1, "at least one");
        assert_eq!(Sample::Percent(1.0).size(0), 0);
        assert_eq!(Sample::Percent(100.0).size(33), 33);
        assert_eq!(Sample::Percent(0.5).size(1001), 6, "rounded up");
    }

    #[test]
    fn sample_settings_parse() {
        assert_eq!("20".parse::<Sample>(), Ok(Sample::Count(20)));
        assert_eq!(" 1% ".parse::<Sample>(), Ok(Sample::Percent(1.0)));
        assert_eq!("0.5%".parse::<Sample>(), Ok(Sample::Percent(0.5)));
        for bad in ["", "-1", "0%", "101%", "x%", "1.5", "ten"] {
            assert!(bad.parse::<Sample>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_reservoir_keeps_capacity_items_and_draws_uniformly() {
        let mut r = Reservoir::new(3, fastrand::Rng::with_seed(7));
        for i in 0..2 {
            r.offer(i);
        }
        assert_eq!(r.into_items(), vec![0, 1], "fewer offers than capacity: all of them");
        // Each of 10 items must be drawn about 3/10 of the time.
        let mut counts = [0u32; 10];
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..20_000 {
            let mut r = Reservoir::new(3, rng.fork());
            for i in 0..10 {
                r.offer(i);
            }
            let items = r.into_items();
            assert_eq!(items.len(), 3);
            for i in items {
                counts[i] += 1;
            }
        }
        for c in counts {
            assert!((5_400..6_600).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn metadata_without_checksums_is_checked_by_size() {
        let entry = crate::bucket::blob::entry_of(
            ObjectMeta {
                key: "a".into(),
                size: 5,
                md5: Some("XUFAKrxLKna5cZ2REBfFkg==".into()),
                ..ObjectMeta::default()
            },
            "storage/b/blobs/x".into(),
        );
        let bare = |size| ObjectMeta { key: "x".into(), size, ..ObjectMeta::default() };
        assert_eq!(matches_entry(&entry, &bare(5)), Ok(()));
        assert!(matches_entry(&entry, &bare(4)).is_err());
        let wrong = ObjectMeta { md5: Some("AAAAAAAAAAAAAAAAAAAAAA==".into()), ..bare(5) };
        assert!(matches_entry(&entry, &wrong).expect_err("md5").contains("MD5"));
    }
}
