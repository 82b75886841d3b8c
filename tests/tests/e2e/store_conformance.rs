//! One conformance suite for the `ObjectStore` trait, run against every implementation:
//! the local directory store and GCS on a real fake-gcs-server.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::TryStreamExt;
use lifeboat_core::store::{
    CopyOptions, DynStore, KeyRange, ObjectStore, ObjectStoreExt, Precondition, PutOptions, StoreError, crc32c_base64,
};
use md5::Digest as _;

use crate::support::gcs::{Backend, CountingProxy, PrivateGcs, fresh_bucket_as_deployed, gcs_store_with};
use crate::support::stack::local_store;

/// Deterministic pseudo-random bytes (incompressible, cheap).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn md5_b64(data: &[u8]) -> String {
    lifeboat_core::store::md5_base64(&md5::Md5::digest(data))
}

async fn read_back(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    let chunks: Vec<Bytes> = store.read(key).await.expect("read").try_collect().await.expect("read stream");
    chunks.concat()
}

fn opts() -> PutOptions {
    PutOptions {
        content_type: Some("application/json".into()),
        cache_control: Some("no-store".into()),
        metadata: BTreeMap::from([("lifeboat-test".into(), "yes".into())]),
        ..PutOptions::default()
    }
}

async fn put_stat_read(store: &dyn ObjectStore) {
    let data = Bytes::from_static(br#"{"hello":"world"}"#);
    let meta = store.put("a/b/put.json", data.clone(), opts()).await.expect("put");
    assert_eq!(meta.key, "a/b/put.json");
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.crc32c.as_deref(), Some(crc32c_base64(crc32c::crc32c(&data)).as_str()));
    assert_eq!(meta.md5.as_deref(), Some(md5_b64(&data).as_str()));
    let stat = store.stat("a/b/put.json").await.expect("stat");
    assert_eq!(stat.size, meta.size);
    assert_eq!(stat.generation, meta.generation);
    assert_eq!(stat.content_type.as_deref(), Some("application/json"));
    assert_eq!(stat.cache_control.as_deref(), Some("no-store"));
    assert_eq!(stat.metadata.get("lifeboat-test").map(String::as_str), Some("yes"));
    assert_eq!(read_back(store, "a/b/put.json").await, data);
    assert_eq!(store.read_all("a/b/put.json", 1024).await.expect("read_all"), data);
    assert!(store.read_all("a/b/put.json", 3).await.is_err(), "read_all must refuse objects over its limit");
    // Zero-byte objects are objects too.
    let empty = store.put("empty", Bytes::new(), PutOptions::default()).await.expect("empty put");
    assert_eq!(empty.size, 0);
    assert!(read_back(store, "empty").await.is_empty());
}

async fn create_only(store: &dyn ObjectStore, chunk: usize) {
    store.put("once", Bytes::from_static(b"first"), PutOptions::default()).await.expect("first put");
    let err = store.put("once", Bytes::from_static(b"second"), PutOptions::default()).await.expect_err("second put");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(read_back(store, "once").await, b"first");

    // A streamed, multi-chunk write to a taken name fails too and leaves the original intact.
    let big = noise(chunk * 2 + 1000, 7);
    let mut w = store.create("stream-once", PutOptions::default()).await.expect("create");
    w.write(Bytes::from(big.clone())).await.expect("write");
    w.finish().await.expect("finish");
    let second = async {
        let mut w = store.create("stream-once", PutOptions::default()).await?;
        w.write(Bytes::from(noise(chunk * 2, 8))).await?;
        w.finish().await
    };
    let err = second.await.expect_err("second streamed write");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(read_back(store, "stream-once").await, big);
}

async fn streamed_write_in_chunks(store: &dyn ObjectStore, chunk: usize) {
    let data = noise(chunk * 3 + chunk / 2 + 17, 1);
    let mut w = store.create("streamed/obj.bin", opts()).await.expect("create");
    // Uneven writes across chunk boundaries.
    for piece in data.chunks(chunk / 3 + 5) {
        w.write(Bytes::copy_from_slice(piece)).await.expect("write");
    }
    assert!(store.stat("streamed/obj.bin").await.expect_err("not visible before finish").is_not_found());
    let meta = w.finish().await.expect("finish");
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.crc32c.as_deref(), Some(crc32c_base64(crc32c::crc32c(&data)).as_str()));
    assert_eq!(
        store.stat("streamed/obj.bin").await.expect("stat").metadata.get("lifeboat-test").map(String::as_str),
        Some("yes")
    );
    assert_eq!(read_back(store, "streamed/obj.bin").await, data);

    // A write that ends exactly on a chunk boundary.
    let exact = noise(chunk * 2, 2);
    let mut w = store.create("streamed/exact.bin", PutOptions::default()).await.expect("create");
    w.write(Bytes::from(exact.clone())).await.expect("write");
    assert_eq!(w.finish().await.expect("finish").size, exact.len() as u64);
    assert_eq!(read_back(store, "streamed/exact.bin").await, exact);
}

async fn abort_leaves_nothing(store: &dyn ObjectStore, chunk: usize) {
    let mut w = store.create("aborted", PutOptions::default()).await.expect("create");
    w.write(Bytes::from(noise(chunk + 10, 3))).await.expect("write");
    w.abort().await.expect("abort");
    assert!(store.stat("aborted").await.expect_err("gone").is_not_found());
    let mut w = store.create("dropped", PutOptions::default()).await.expect("create");
    w.write(Bytes::from(noise(100, 3))).await.expect("write");
    drop(w);
    assert!(store.stat("dropped").await.expect_err("gone").is_not_found());
}

async fn listing_paginates(store: &dyn ObjectStore) {
    for i in 0..25 {
        store.put(&format!("list/{i:03}"), Bytes::from(vec![b'x'; i]), PutOptions::default()).await.expect("put");
    }
    store.put("listing-not-under-prefix", Bytes::new(), PutOptions::default()).await.expect("put");
    let mut pages = 0;
    let mut token = None;
    let mut keys = Vec::new();
    loop {
        let page = store.list_page("list/", token, 10).await.expect("list page");
        pages += 1;
        assert!(page.objects.len() <= 10);
        keys.extend(page.objects.iter().map(|o| o.key.clone()));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3, "25 objects in pages of 10");
    let expected: Vec<String> = (0..25).map(|i| format!("list/{i:03}")).collect();
    assert_eq!(keys, expected);
    let all: Vec<_> = store.list_all("list/").try_collect().await.expect("list_all");
    assert_eq!(all.len(), 25);
    assert_eq!(all[7].size, 7);
    assert!(store.list_page("nothing-here/", None, 10).await.expect("empty list").objects.is_empty());
    listing_by_range(store).await;
}

/// Ranges of one prefix (what a snapshot lists side by side): from the start key, inclusive, to
/// the end key, exclusive, paginated within the range; open ends; bounds between keys.
async fn listing_by_range(store: &dyn ObjectStore) {
    let in_range = |range: KeyRange| async move {
        let (mut token, mut keys, mut pages) = (None, Vec::new(), 0);
        loop {
            let page = store.list_range_page("list/", &range, token, 4).await.expect("list range page");
            pages += 1;
            keys.extend(page.objects.iter().map(|o| o.key.clone()));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break (keys, pages),
            }
        }
    };
    let names = |r: std::ops::Range<usize>| r.map(|i| format!("list/{i:03}")).collect::<Vec<_>>();
    let range = |start: Option<&str>, end: Option<&str>| KeyRange {
        start: start.map(str::to_owned),
        end: end.map(str::to_owned),
    };
    let (keys, pages) = in_range(range(Some("list/005"), Some("list/015"))).await;
    assert_eq!(keys, names(5..15), "start inclusive, end exclusive");
    assert_eq!(pages, 3, "10 objects in pages of 4");
    assert_eq!(in_range(range(None, Some("list/003"))).await.0, names(0..3));
    assert_eq!(in_range(range(Some("list/020"), None)).await.0, names(20..25));
    assert_eq!(in_range(range(Some("list/0045"), Some("list/0065"))).await.0, names(5..7), "bounds between keys");
    assert_eq!(in_range(range(Some("a"), Some("z"))).await.0, names(0..25), "bounds beyond the prefix");
    assert!(in_range(range(Some("list/010"), Some("list/010"))).await.0.is_empty(), "an empty range");
}

async fn missing_and_delete(store: &dyn ObjectStore) {
    assert!(store.stat("missing").await.expect_err("missing").is_not_found());
    assert!(store.read("missing").await.err().expect("missing read").is_not_found());
    store.put("del/x", Bytes::from_static(b"x"), PutOptions::default()).await.expect("put");
    assert!(store.delete("del/x").await.expect("delete"));
    assert!(!store.delete("del/x").await.expect("second delete is a no-op"));
    assert!(store.stat("del/x").await.expect_err("deleted").is_not_found());
}

async fn generation_preconditions(store: &dyn ObjectStore) {
    let first = store.put("state/s.json", Bytes::from_static(b"1"), PutOptions::default()).await.expect("create");
    let stale = PutOptions {
        precondition: Precondition::GenerationMatches(first.generation + 12_345),
        ..PutOptions::default()
    };
    let err = store.put("state/s.json", Bytes::from_static(b"2"), stale).await.expect_err("wrong generation");
    assert!(matches!(err, StoreError::PreconditionFailed { .. }), "{err:?}");
    let cas = PutOptions { precondition: Precondition::GenerationMatches(first.generation), ..PutOptions::default() };
    let second = store.put("state/s.json", Bytes::from_static(b"2"), cas.clone()).await.expect("compare and swap");
    assert_ne!(second.generation, first.generation);
    assert_eq!(read_back(store, "state/s.json").await, b"2");
    // The same old generation no longer matches: two writers can never both win.
    let err = store.put("state/s.json", Bytes::from_static(b"3"), cas).await.expect_err("lost race");
    assert!(matches!(err, StoreError::PreconditionFailed { .. }), "{err:?}");
}

async fn cross_store_copy(dst: &dyn ObjectStore, src: &dyn ObjectStore) {
    let data = noise(3 * 1024 * 1024 + 123, 4);
    let put = src.put("src/obj", Bytes::from(data.clone()), opts()).await.expect("source put");
    let mut source = src.object_ref("src/obj");
    source.generation = Some(put.generation);
    let copied = dst.copy_from(&source, "copies/obj", CopyOptions::default()).await.expect("copy");
    assert_eq!(copied.size, data.len() as u64);
    assert_eq!(copied.crc32c, put.crc32c);
    assert_eq!(read_back(dst, "copies/obj").await, data);
    let stat = dst.stat("copies/obj").await.expect("stat copy");
    assert_eq!(stat.content_type.as_deref(), Some("application/json"), "metadata travels with the copy");
    assert_eq!(stat.metadata.get("lifeboat-test").map(String::as_str), Some("yes"));

    // Metadata can be replaced on copy (restores recreate the original object's metadata).
    let replace = PutOptions { content_type: Some("text/plain".into()), ..PutOptions::default() };
    dst.copy_from(&source, "copies/relabelled", CopyOptions { metadata: Some(replace) })
        .await
        .expect("copy with metadata");
    assert_eq!(dst.stat("copies/relabelled").await.expect("stat").content_type.as_deref(), Some("text/plain"));

    let err = dst.copy_from(&source, "copies/obj", CopyOptions::default()).await.expect_err("copy onto existing");
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    let mut gone = src.object_ref("src/does-not-exist");
    gone.generation = None;
    assert!(
        dst.copy_from(&gone, "copies/none", CopyOptions::default()).await.expect_err("missing source").is_not_found()
    );
    let mut old = source.clone();
    old.generation = Some(put.generation + 1);
    assert!(
        dst.copy_from(&old, "copies/old", CopyOptions::default()).await.is_err(),
        "a vanished generation is not copied"
    );
}

/// The create-only copy of content-addressed blobs: copied with the source's bytes and metadata;
/// onto a taken name "already exists" and the name keeps its bytes and generation; a source
/// generation that is no longer the object's is "not found" and writes nothing.
async fn create_only_copies(dst: &dyn ObjectStore, src: &dyn ObjectStore) {
    let data = noise(300 * 1024 + 5, 21);
    let first = src.put("cc/first", Bytes::from(data.clone()), opts()).await.expect("source put");
    let mut from = src.object_ref("cc/first");
    from.generation = Some(first.generation);
    let copied = dst.copy_create_only(&from, "blobs/first").await.expect("create-only copy");
    assert_eq!((copied.size, &copied.md5, &copied.crc32c), (first.size, &first.md5, &first.crc32c));
    let stat = dst.stat("blobs/first").await.expect("stat copy");
    assert_eq!(stat.content_type.as_deref(), Some("application/json"), "the source's metadata travels");
    assert_eq!(read_back(dst, "blobs/first").await, data);

    let other = src.put("cc/other", Bytes::from_static(b"other bytes"), PutOptions::default()).await.expect("put");
    let mut from_other = src.object_ref("cc/other");
    from_other.generation = Some(other.generation);
    for source in [&from, &from_other] {
        let err = dst.copy_create_only(source, "blobs/first").await.expect_err("copy onto a taken name");
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    }
    assert_eq!(read_back(dst, "blobs/first").await, data, "the taken name keeps its bytes");
    assert_eq!(dst.stat("blobs/first").await.expect("stat").generation, copied.generation, "and is not rewritten");

    let mut gone = from.clone();
    gone.generation = Some(first.generation + 1);
    let err = dst.copy_create_only(&gone, "blobs/gone").await.expect_err("a vanished generation");
    assert!(err.is_not_found(), "{err:?}");
    assert!(dst.stat("blobs/gone").await.expect_err("nothing written").is_not_found());
}

/// Runs every conformance check against `store`; `other` is a second store of the same backend.
async fn conformance(store: DynStore, other: DynStore, chunk: usize) {
    put_stat_read(&*store).await;
    create_only(&*store, chunk).await;
    streamed_write_in_chunks(&*store, chunk).await;
    abort_leaves_nothing(&*store, chunk).await;
    listing_paginates(&*store).await;
    missing_and_delete(&*store).await;
    generation_preconditions(&*store).await;
    cross_store_copy(&*store, &*other).await;
    create_only_copies(&*store, &*other).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let (_a, store) = local_store();
    let (_b, other) = local_store();
    conformance(store, other, 256 * 1024).await;
}

#[tokio::test]
async fn gcs_store_conforms_on_fake_gcs_server() {
    let chunk = 256 * 1024; // the smallest legal chunk, so every path sees several chunks
    let store = gcs_store_with(chunk, "prefix/inside").await;
    let other = gcs_store_with(chunk, "").await;
    conformance(std::sync::Arc::new(store), std::sync::Arc::new(other), chunk).await;
}

/// The create-only copy of a store opened as the programs open it, counted at a real HTTP proxy
/// in front of the emulator: one request, a rewrite that carries the destination precondition
/// (`ifGenerationMatch=0`) and the source precondition (`ifSourceGenerationMatch`); no lookup first.
///
/// GCS answers that request with 412 when the name is taken, and the store asks once more,
/// pinned, to tell a taken name from a rewritten source (unit tests of `store::gcs::
/// create_only_copy`); fake-gcs-server ignores both preconditions on rewrites and replaces the
/// blob, with the same bytes for a content-addressed name. So the second copy here may answer
/// either way, and is one request here, but it carries the preconditions, and the bytes stay.
#[tokio::test]
async fn gcs_create_only_copy_is_one_request_with_its_preconditions() {
    let proxy = CountingProxy::start(&crate::support::require_env("STORAGE_EMULATOR_HOST")).await;
    let src = gcs_store_with(1024 * 1024, "").await;
    let dst = fresh_bucket_as_deployed(&proxy.url, "backups").await;
    let data = noise(70_000, 31);
    let put = src.put("photos/a b.jpg", Bytes::from(data.clone()), PutOptions::default()).await.expect("put");
    let mut from = src.object_ref("photos/a b.jpg");
    from.generation = Some(put.generation);
    for attempt in ["first", "onto the taken name"] {
        proxy.reset();
        let result = dst.copy_create_only(&from, "blobs/abc-70000").await;
        assert!(matches!(result, Ok(_) | Err(StoreError::AlreadyExists { .. })), "{attempt}: {result:?}");
        let requests = proxy.requests();
        assert_eq!(requests.len(), 1, "{attempt}: {requests:?}");
        let copy = &requests[0];
        assert!(copy.is_rewrite(), "{attempt}: {copy:?}");
        assert!(copy.path.ends_with("/o/backups%2Fblobs%2Fabc-70000"), "{copy:?}");
        assert!(copy.has_param("ifGenerationMatch", "0"), "{attempt}: {copy:?}");
        assert!(copy.has_param("ifSourceGenerationMatch", &put.generation.to_string()), "{attempt}: {copy:?}");
        assert!(!copy.has_param("sourceGeneration", &put.generation.to_string()), "not pinned: {copy:?}");
    }
    assert_eq!(read_back(&dst, "blobs/abc-70000").await, data);
}

/// fake-gcs-server ignores `maxBytesRewrittenPerCall` and finishes every rewrite in one call, so
/// the token loop itself is covered by unit tests in `store::gcs`; this checks the capped request
/// is accepted and copies a multi-MiB object intact.
#[tokio::test]
async fn gcs_copy_with_capped_rewrite_bytes_per_call() {
    let store = gcs_store_with(1024 * 1024, "").await.with_rewrite_bytes_per_call(1024 * 1024);
    let src = gcs_store_with(1024 * 1024, "").await;
    let data = noise(5 * 1024 * 1024 + 7, 9);
    src.put("big", Bytes::from(data.clone()), PutOptions::default()).await.expect("put");
    let copied = store.copy_from(&src.object_ref("big"), "big-copy", CopyOptions::default()).await.expect("copy");
    assert_eq!(copied.size, data.len() as u64);
    assert_eq!(read_back(&store, "big-copy").await, data);
}

#[tokio::test]
async fn local_store_refuses_names_that_escape_the_root() {
    let (dir, store) = local_store();
    for bad in ["../escape", "a/../../escape", "/etc/passwd", "a//b", "nul\0byte", ""] {
        let err = store.put(bad, Bytes::from_static(b"x"), PutOptions::default()).await.expect_err(bad);
        assert!(matches!(err, StoreError::InvalidName { .. }), "{bad:?}: {err:?}");
    }
    assert!(!dir.path().parent().expect("parent").join("escape").exists());
}

fn run_stream_write(url: &str, mib: u32) -> serde_json::Value {
    let exe = crate::support::binaries::binary("examples/stream_write");
    let out = std::process::Command::new(exe).args([url, &mib.to_string(), "8"]).output().expect("run stream_write");
    assert!(out.status.success(), "stream_write failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json line")
}

/// A 200 MiB streamed write keeps the writer's memory bounded (two 8 MiB chunks plus overhead).
#[test]
fn streamed_200_mib_write_has_bounded_memory() {
    let host = crate::support::require_env("STORAGE_EMULATOR_HOST");
    let dir = tempfile::tempdir().expect("tempdir");
    for url in [format!("file://{}", dir.path().display()), format!("gs://{}/big", crate::support::unique("lb-stream"))]
    {
        let report = run_stream_write(&url, 200);
        eprintln!("stream_write 200 MiB ({host}): {report}");
        assert_eq!(report["verified"], true);
        assert_eq!(report["bytes"], 200u64 << 20);
        let peak_mib = report["peak_rss_kib"].as_u64().expect("rss") / 1024;
        assert!(peak_mib < 64, "peak RSS {peak_mib} MiB for {url} is over the 64 MiB target");
    }
}

/// A connection cut in the middle of a chunk costs one chunk, not the upload: the writer asks
/// the server how much arrived and re-sends the rest.
#[tokio::test]
async fn resumable_upload_survives_a_connection_cut_mid_chunk() {
    let gcs = PrivateGcs::start(Backend::Memory).await;
    let chunk = 1024 * 1024;
    let store = gcs.store("lb-faulty", "x", chunk).await;
    let data = noise(chunk * 4 + 333, 11);
    let mut w = store.create("resumed.bin", PutOptions::default()).await.expect("create");
    w.write(Bytes::copy_from_slice(&data[..chunk + 10])).await.expect("first chunk");
    // The next connection (the second chunk's PUT) dies half-way through its body.
    gcs.proxy().cut_next_after(chunk as u64 / 2);
    w.write(Bytes::copy_from_slice(&data[chunk + 10..])).await.expect("rest");
    let meta = w.finish().await.expect("upload completes despite the cut");
    assert!(gcs.proxy().cuts() >= 1, "the fault was injected");
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(read_back(&store, "resumed.bin").await, data);
}
