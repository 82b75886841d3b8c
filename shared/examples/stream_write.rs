//! Streams N MiB of incompressible bytes into a store with the library's create-only writer and
//! prints one JSON line: bytes, seconds, MiB/s and the process's peak RSS. Used by the e2e test
//! that checks the writer's memory bound and by `bench/store-stream.sh`.
//!
//! `stream_write URL MIB [CHUNK_MIB]` — URL is gs://bucket/prefix (emulator via
//! STORAGE_EMULATOR_HOST; the bucket is created) or file:///path.

use std::time::Instant;

use bytes::Bytes;
use lifeboat_core::config::Env;
use lifeboat_core::store::{self, Location, PutOptions};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(mib)) = (args.get(1), args.get(2)) else {
        return Err("usage: stream_write URL MIB [CHUNK_MIB]".into());
    };
    let mib: usize = mib.parse()?;
    let chunk_mib: usize = args.get(3).map_or(Ok(8), |c| c.parse())?;
    let location: Location = url.parse()?;
    let env = Env::from_process();
    if let (Location::Gcs { .. }, Some(host)) = (&location, env.get("STORAGE_EMULATOR_HOST")) {
        let gcs = store::gcs::GcsStore::connect(location.clone(), Some(host), chunk_mib << 20).await?;
        gcs.create_bucket("lifeboat-local").await?;
    }
    let store = store::open(&location, &env, chunk_mib << 20, &Default::default()).await?;
    let key = format!("stream-{}", uuid::Uuid::new_v4().simple());
    let start = Instant::now();
    let mut writer = store.create(&key, PutOptions::default()).await?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut crc = 0u32;
    for _ in 0..mib {
        let mut block = Vec::with_capacity(1 << 20);
        while block.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block.extend_from_slice(&x.to_le_bytes());
        }
        crc = crc32c::crc32c_append(crc, &block);
        writer.write(Bytes::from(block)).await?;
    }
    let meta = writer.finish().await?;
    let seconds = start.elapsed().as_secs_f64();
    let stat = store.stat(&key).await?;
    let ok = meta.size == (mib as u64) << 20 && stat.crc32c.as_deref() == Some(store::crc32c_base64(crc).as_str());
    let peak = peak_rss_kib();
    store.delete(&key).await?;
    println!(
        "{}",
        serde_json::json!({
            "url": url, "bytes": meta.size, "seconds": seconds,
            "mib_per_s": mib as f64 / seconds, "chunk_mib": chunk_mib,
            "peak_rss_kib": peak, "verified": ok,
        })
    );
    if !ok {
        return Err("stored object does not match what was written".into());
    }
    Ok(())
}
