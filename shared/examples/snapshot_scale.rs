//! How the snapshot pipeline's memory grows with the number of objects, beyond what the
//! emulator can hold (fake-gcs-server's cost per request grows with the bucket, so 100k objects
//! take hours to load).
//!
//! `snapshot_scale N [CONCURRENCY]` takes two snapshots of a synthetic bucket of N objects with the
//! library's real pipeline ([`take_snapshot`]): the source is generated page by page (nothing is
//! held), the backup store is a local directory whose server-side copy is simulated (it answers
//! like a copy, without bytes). The first snapshot "copies" every object; the second finds every
//! object in the first's part (streamed back from disk). Prints one JSON line with the peak RSS
//! of each phase (the peak is reset between phases through /proc/self/clear_refs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use lifeboat_core::bucket::backup::{NoObserver, SnapshotSettings, Source, take_snapshot};
use lifeboat_core::core::naming::RunId;
use lifeboat_core::store::local::LocalStore;
use lifeboat_core::store::{
    ByteStream, CopyOptions, DynStore, KeyRange, ListPage, Location, ObjectMeta, ObjectRef, ObjectStore, ObjectWriter,
    PutOptions, StoreError,
};
use md5::Digest as _;
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS (Linux: `5` in clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A bucket of `count` objects, generated on demand in name order.
#[derive(Debug)]
struct Synthetic {
    location: Location,
    count: u64,
}

impl Synthetic {
    fn key(&self, i: u64) -> String {
        format!("synthetic/dir-{:03}/object-{i:09}.bin", i % 1000)
    }

    fn object(&self, i: u64) -> ObjectMeta {
        let digest = md5::Md5::digest(i.to_le_bytes());
        ObjectMeta {
            key: self.key(i),
            size: 1000 + i % 4096,
            generation: 1_700_000_000_000_000 + i as i64,
            md5: Some(lifeboat_core::store::md5_base64(&digest)),
            crc32c: Some(lifeboat_core::store::crc32c_base64(crc32c::crc32c(&digest))),
            updated: Utc::now(),
            content_type: Some("application/octet-stream".into()),
            content_encoding: None,
            cache_control: None,
            metadata: BTreeMap::new(),
            ..ObjectMeta::default()
        }
    }

    fn unsupported(&self, operation: &'static str) -> StoreError {
        StoreError::Other {
            location: self.location.to_string(),
            operation,
            key: String::new(),
            message: "the synthetic source is read-only".into(),
        }
    }
}

#[async_trait]
impl ObjectStore for Synthetic {
    fn location(&self) -> &Location {
        &self.location
    }

    fn object_ref(&self, key: &str) -> ObjectRef {
        ObjectRef { bucket: "synthetic".into(), name: key.to_owned(), generation: None }
    }

    async fn create(&self, _key: &str, _options: PutOptions) -> Result<Box<dyn ObjectWriter>, StoreError> {
        Err(self.unsupported("create"))
    }

    async fn put(&self, _key: &str, _data: Bytes, _options: PutOptions) -> Result<ObjectMeta, StoreError> {
        Err(self.unsupported("put"))
    }

    async fn read(&self, _key: &str) -> Result<ByteStream, StoreError> {
        Err(self.unsupported("read"))
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        Err(StoreError::NotFound { location: self.location.to_string(), key: key.to_owned() })
    }

    async fn list_range_page(
        &self,
        prefix: &str,
        range: &KeyRange,
        token: Option<String>,
        size: u32,
    ) -> Result<ListPage, StoreError> {
        // Names sort like their index (the index is zero-padded and dir-NNN follows i % 1000, so
        // order by (i % 1000, i)): walk that order, from the first position in the range (found
        // by bisection, as names grow with the position).
        let order = |n: u64| -> u64 {
            let per_dir = self.count.div_ceil(1000);
            (n / per_dir) + (n % per_dir) * 1000
        };
        let positions = self.count.div_ceil(1000) * 1000;
        let key_at = |n: u64| self.key(order(n));
        let first_in_range = match &range.start {
            None => 0,
            Some(start) => {
                let (mut lo, mut hi) = (0, positions);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if key_at(mid).as_str() < start.as_str() { lo = mid + 1 } else { hi = mid }
                }
                lo
            }
        };
        let start: u64 =
            token.as_deref().map_or(Ok(first_in_range), str::parse).map_err(|_| self.unsupported("list"))?;
        let mut objects = Vec::new();
        let mut n = start;
        while objects.len() < size as usize && n < positions {
            if range.end.as_deref().is_some_and(|end| key_at(n).as_str() >= end) {
                return Ok(ListPage { objects, next_page_token: None });
            }
            let i = order(n);
            n += 1;
            if i < self.count {
                let o = self.object(i);
                if o.key.starts_with(prefix) {
                    objects.push(o);
                }
            }
        }
        let more = n < positions;
        Ok(ListPage { objects, next_page_token: more.then(|| n.to_string()) })
    }

    async fn delete(&self, _key: &str) -> Result<bool, StoreError> {
        Err(self.unsupported("delete"))
    }

    async fn copy_from(&self, _s: &ObjectRef, _key: &str, _o: CopyOptions) -> Result<ObjectMeta, StoreError> {
        Err(self.unsupported("copy"))
    }
}

/// A local directory whose server-side copies from the synthetic bucket are simulated.
#[derive(Debug)]
struct Backup {
    local: LocalStore,
    source: Arc<Synthetic>,
}

#[async_trait]
impl ObjectStore for Backup {
    fn location(&self) -> &Location {
        self.local.location()
    }
    fn object_ref(&self, key: &str) -> ObjectRef {
        self.local.object_ref(key)
    }
    async fn create(&self, key: &str, options: PutOptions) -> Result<Box<dyn ObjectWriter>, StoreError> {
        self.local.create(key, options).await
    }
    async fn put(&self, key: &str, data: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError> {
        self.local.put(key, data, options).await
    }
    async fn read(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.local.read(key).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.local.stat(key).await
    }
    async fn list_range_page(
        &self,
        prefix: &str,
        range: &KeyRange,
        token: Option<String>,
        size: u32,
    ) -> Result<ListPage, StoreError> {
        self.local.list_range_page(prefix, range, token, size).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.local.delete(key).await
    }
    async fn copy_from(&self, source: &ObjectRef, key: &str, _o: CopyOptions) -> Result<ObjectMeta, StoreError> {
        let i: u64 = source.name.rsplit('-').next().and_then(|s| s.trim_end_matches(".bin").parse().ok()).unwrap_or(0);
        let mut meta = self.source.object(i);
        meta.key = key.to_owned();
        Ok(meta)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let count: u64 = args.get(1).ok_or("usage: snapshot_scale N [CONCURRENCY]")?.parse()?;
    let concurrency: usize = args.get(2).map_or(Ok(16), |c| c.parse())?;
    let dir = tempfile::tempdir()?;
    let synthetic = Arc::new(Synthetic { location: "gs://synthetic".parse()?, count });
    let backup: DynStore = Arc::new(Backup {
        local: LocalStore::open(Location::Local { root: dir.path().to_path_buf() })?,
        source: synthetic.clone(),
    });
    let source = Source { spec: "synthetic".parse()?, store: synthetic };
    let settings = SnapshotSettings { concurrency, ..SnapshotSettings::default() };
    let base_rss = status_kib("VmRSS:");
    let mut phases = serde_json::Map::new();
    for (i, phase) in ["first", "unchanged"].into_iter().enumerate() {
        reset_peak();
        let run = RunId { started: Utc::now() + chrono::Duration::seconds(i as i64), suffix: format!("{i:08x}") };
        let start = Instant::now();
        let outcome = take_snapshot(&backup, &source, &run, &settings, &NoObserver, &CancellationToken::new()).await?;
        phases.insert(
            phase.into(),
            serde_json::json!({
                "seconds": start.elapsed().as_secs_f64(),
                "objects": outcome.part.totals.objects,
                "new_objects": outcome.part.totals.new_objects,
                "known_from_previous": outcome.known,
                "part_bytes": outcome.part.part_bytes,
                "peak_rss_kib": status_kib("VmHWM:"),
            }),
        );
    }
    println!("{}", serde_json::json!({"objects": count, "rss_before_kib": base_rss, "phases": phases}));
    Ok(())
}
