//! Helper of `bench/storage-backup.sh`: fills a bucket fast, lists it (the benchmark's floor),
//! changes a share of it, and reads what a snapshot recorded. Prints one JSON line per command.
//!
//! ```text
//! bucket_bench seed URL COUNT [small|mixed]   COUNT objects of mixed sizes (or all ≤ 1 KiB)
//! bucket_bench list URL                       a bare listing through the library
//! bucket_bench mutate URL EVERY OFFSET        rewrite objects whose index ≡ OFFSET (mod EVERY)
//! bucket_bench header DEST BUCKET             totals of the newest complete snapshot of BUCKET
//! bucket_bench blobs DEST BUCKET CONCURRENCY  time a listing of the blobs and a stat of each
//! bucket_bench pin SRC D1 D2 D3 COUNT CONCURRENCY  time COUNT create-only copies held to the
//!                                             listed generation by ifSourceGenerationMatch (as
//!                                             snapshots) into D1, pinned by sourceGeneration into
//!                                             D2, and with neither into D3
//! bucket_bench names SRC DEST COUNT CONCURRENCY  what the emulator charges a copy to a new name
//!                                             against one onto a name DEST already holds: COUNT
//!                                             objects of SRC (spread over its listing) copied
//!                                             into DEST, which holds SRC's objects under the same
//!                                             names (an rclone copy), onto those names and to new
//!                                             blob names, in turns; and the same for the objects
//!                                             `mutate URL 100 0` rewrites
//! ```
//!
//! URL/DEST are gs://bucket[/prefix] (the emulator from STORAGE_EMULATOR_HOST; buckets are
//! created) or file:///path.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lifeboat_core::bucket::blob::blob_key;
use lifeboat_core::bucket::read::{Selector, find};
use lifeboat_core::config::Env;
use lifeboat_core::core::naming::SnapshotPath;
use lifeboat_core::store::{self, DynStore, Location, ObjectStore, ObjectStoreExt, Precondition, PutOptions};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn open(url: &str) -> Result<DynStore, Error> {
    let location: Location = url.parse()?;
    let env = Env::from_process();
    if let (Location::Gcs { .. }, Some(host)) = (&location, env.get("STORAGE_EMULATOR_HOST")) {
        let gcs = store::gcs::GcsStore::connect(location.clone(), Some(host), 8 << 20).await?;
        gcs.create_bucket("lifeboat-local").await?;
    }
    Ok(store::open(&location, &env, 8 << 20, &Default::default()).await?)
}

/// Deterministic pseudo-random numbers (xorshift).
fn mix(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The size of object `i`: mostly small, some medium, a few large ("mixed"), or ≤ 1 KiB ("small").
fn size_of(i: u64, profile: &str) -> usize {
    let r = mix(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let bucket = r % 100;
    let jitter = (r >> 8) as usize;
    if profile == "small" {
        return jitter % 1024;
    }
    match bucket {
        0..=69 => jitter % 4096,                 // 70 %: up to 4 KiB
        70..=96 => 4096 + jitter % (60 * 1024),  // 27 %: 4–64 KiB
        _ => 256 * 1024 + jitter % (768 * 1024), // 3 %: 256 KiB – 1 MiB
    }
}

fn body(i: u64, version: u64, len: usize) -> Bytes {
    let mut x = mix((i << 16) ^ version ^ 0xA5A5_5A5A) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = mix(x);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn name(i: u64) -> String {
    format!("bench/dir-{:02}/object-{i:07}.bin", i % 50)
}

async fn seed(url: &str, count: u64, profile: &str) -> Result<serde_json::Value, Error> {
    let store = open(url).await?;
    let start = Instant::now();
    let bytes: u64 = futures::stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            let profile = profile.to_owned();
            async move {
                let len = size_of(i, &profile);
                let options =
                    PutOptions { content_type: Some("application/octet-stream".into()), ..PutOptions::default() };
                store.put(&name(i), body(i, 0, len), options).await.map(|_| len as u64)
            }
        })
        .buffer_unordered(32)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    Ok(serde_json::json!({"objects": count, "bytes": bytes, "seconds": start.elapsed().as_secs_f64()}))
}

async fn list(url: &str) -> Result<serde_json::Value, Error> {
    let store = open(url).await?;
    let start = Instant::now();
    let (objects, bytes) =
        store.list_all("").try_fold((0u64, 0u64), |(n, b), o| async move { Ok((n + 1, b + o.size)) }).await?;
    Ok(serde_json::json!({
        "objects": objects, "bytes": bytes, "seconds": start.elapsed().as_secs_f64(), "peak_rss_kib": peak_rss_kib(),
    }))
}

/// The index `seed` gave an object, from its key.
fn object_index(key: &str) -> Option<u64> {
    key.rsplit('-').next()?.trim_end_matches(".bin").parse().ok()
}

async fn mutate(url: &str, every: u64, offset: u64) -> Result<serde_json::Value, Error> {
    let store = open(url).await?;
    let objects: Vec<_> = store.list_all("").try_collect().await?;
    let chosen: Vec<_> = objects
        .into_iter()
        .filter_map(|o| {
            let i = object_index(&o.key)?;
            (i % every == offset).then_some((i, o))
        })
        .collect();
    let changed = chosen.len();
    futures::stream::iter(chosen)
        .map(|(i, o)| {
            let store = store.clone();
            async move {
                let options = PutOptions {
                    precondition: Precondition::GenerationMatches(o.generation),
                    content_type: o.content_type.clone(),
                    ..PutOptions::default()
                };
                store.put(&o.key, body(i, o.generation.unsigned_abs(), o.size as usize + 1), options).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(serde_json::json!({"changed": changed}))
}

async fn header(dest: &str, bucket: &str) -> Result<serde_json::Value, Error> {
    let store = open(dest).await?;
    let (_, h) = find(&*store, bucket, &Selector::Latest).await?;
    Ok(serde_json::to_value(&h)?)
}

async fn blobs(dest: &str, bucket: &str, concurrency: usize) -> Result<serde_json::Value, Error> {
    let store: Arc<dyn ObjectStore> = open(dest).await?;
    let start = Instant::now();
    let keys: Vec<String> = store.list_all(&SnapshotPath::blobs_prefix(bucket)).map_ok(|o| o.key).try_collect().await?;
    let listing = start.elapsed().as_secs_f64();
    let start = Instant::now();
    futures::stream::iter(keys.iter())
        .map(|k| {
            let store = store.clone();
            async move { store.stat(k).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(serde_json::json!({
        "blobs": keys.len(), "list_seconds": listing, "stat_each_seconds": start.elapsed().as_secs_f64(),
        "concurrency": concurrency,
    }))
}

/// What holding a create-only copy to the listed source generation costs, by how: `count`
/// objects of `src` copied into three fresh stores alike (the emulator's cost per request grows
/// with the objects a bucket holds): with `ifSourceGenerationMatch` (what snapshots send) into
/// `guarded_dest`, pinned with `sourceGeneration` into `pinned_dest`, and with neither into
/// `unguarded_dest`.
async fn pin(
    src: &str,
    [guarded_dest, pinned_dest, unguarded_dest]: [&str; 3],
    count: usize,
    concurrency: usize,
) -> Result<serde_json::Value, Error> {
    let source = open(src).await?;
    let objects: Vec<_> = source.list_all("").take(count).try_collect().await?;
    let mut out = serde_json::json!({"copies": objects.len(), "concurrency": concurrency});
    for (label, dest, generation, pinned) in [
        ("guarded_seconds", guarded_dest, true, false),
        ("pinned_seconds", pinned_dest, true, true),
        ("unguarded_seconds", unguarded_dest, false, false),
    ] {
        open(dest).await?; // creates the bucket
        let location: Location = dest.parse()?;
        let env = Env::from_process();
        let host = env.get("STORAGE_EMULATOR_HOST").ok_or("pin needs STORAGE_EMULATOR_HOST")?;
        let backup = store::gcs::GcsStore::connect(location, Some(host), 8 << 20).await?.with_pinned_copies(pinned);
        let backup: DynStore = Arc::new(backup);
        let start = Instant::now();
        futures::stream::iter(objects.iter().enumerate())
            .map(|(i, o)| {
                let (source, backup) = (source.clone(), backup.clone());
                async move {
                    let mut from = source.object_ref(&o.key);
                    from.generation = generation.then_some(o.generation);
                    backup.copy_create_only(&from, &format!("pin-bench/{i:07}")).await
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        out[label] = start.elapsed().as_secs_f64().into();
    }
    Ok(out)
}

/// What a copy costs the emulator by whether its name is new. A snapshot's copies always go to
/// new names (blobs are content-addressed); rclone's copy of a changed object goes onto the name
/// it copied before. The requests are the same create-only rewrite (fake-gcs-server ignores
/// `ifGenerationMatch` on rewrites, so onto a held name it overwrites); only the destination
/// name differs. Two selections of `count` objects: spread evenly over the listing, and those
/// `mutate SRC 100 0` rewrites (index ≡ 0 mod 100: the benchmark's 1 % change). Each is copied
/// twice onto its names and twice to new names, in turns (the bucket grows by `count` objects
/// with each new-name round).
async fn names(src: &str, dest: &str, count: usize, concurrency: usize) -> Result<serde_json::Value, Error> {
    // It overwrites objects of DEST: never anywhere but on the emulator.
    Env::from_process()
        .get("STORAGE_EMULATOR_HOST")
        .ok_or("names overwrites objects: it needs STORAGE_EMULATOR_HOST")?;
    let source = open(src).await?;
    let all: Vec<_> = source.list_all("").try_collect().await?;
    let step = (all.len() / count.max(1)).max(1);
    let spread: Vec<_> = all.iter().step_by(step).take(count).cloned().collect();
    let changed: Vec<_> =
        all.iter().filter(|o| object_index(&o.key).is_some_and(|i| i % 100 == 0)).take(count).cloned().collect();
    let bucket = source.object_ref("").bucket;
    let backup = open(dest).await?;
    // Each held name with its content's hash: only an exact copy of the source is overwritten.
    let held: std::collections::HashMap<String, Option<String>> =
        backup.list_all("").map_ok(|o| (o.key, o.md5)).try_collect().await?;
    let mut out = serde_json::json!({"concurrency": concurrency, "bucket_objects": held.len()});
    for (label, objects) in [("spread", spread), ("as_the_1_percent_change", changed)] {
        if let Some(o) = objects.iter().find(|o| o.md5.is_none() || held.get(&o.key) != Some(&o.md5)) {
            return Err(
                format!("{dest} does not hold {:?} as {src} does: names needs a copy of {src} in it", o.key).into()
            );
        }
        let mut overwrite = Vec::new();
        let mut new_name = Vec::new();
        for round in 0..4 {
            let onto_held = round % 2 == 0;
            let start = Instant::now();
            futures::stream::iter(objects.iter())
                .map(|o| {
                    let (source, backup) = (source.clone(), backup.clone());
                    let key = if onto_held {
                        o.key.clone()
                    } else {
                        format!("backups/{}.{label}{round}", blob_key(&bucket, o))
                    };
                    async move {
                        match backup.copy_create_only(&source.object_ref(&o.key), &key).await {
                            Err(store::StoreError::AlreadyExists { .. }) => Err(Error::from(
                                "the emulator refused to overwrite (it honours ifGenerationMatch on rewrites now): \
                                 this measurement needs another way to overwrite",
                            )),
                            other => other.map_err(Error::from),
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .try_collect::<Vec<_>>()
                .await?;
            let seconds = start.elapsed().as_secs_f64();
            if onto_held { overwrite.push(seconds) } else { new_name.push(seconds) }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        out[label] = serde_json::json!({
            "copies": objects.len(), "overwrite_seconds": overwrite, "new_name_seconds": new_name,
            "new_over_overwrite": (mean(&new_name) / mean(&overwrite) * 100.0).round() / 100.0,
        });
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or_else(|| Error::from("missing argument; see the source"));
    let out = match arg(0)? {
        "seed" => seed(arg(1)?, arg(2)?.parse()?, args.get(3).map_or("mixed", String::as_str)).await?,
        "list" => list(arg(1)?).await?,
        "mutate" => mutate(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?).await?,
        "header" => header(arg(1)?, arg(2)?).await?,
        "blobs" => blobs(arg(1)?, arg(2)?, arg(3)?.parse()?).await?,
        "pin" => pin(arg(1)?, [arg(2)?, arg(3)?, arg(4)?], arg(5)?.parse()?, arg(6)?.parse()?).await?,
        "names" => names(arg(1)?, arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?).await?,
        other => return Err(format!("unknown command {other:?}").into()),
    };
    println!("{out}");
    Ok(())
}
