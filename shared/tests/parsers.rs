//! Property tests of the parsers that read what others wrote (the same ones `fuzz/` fuzzes):
//! the Pub/Sub push envelope, the database manifest, the snapshot header and parts, and the
//! configuration. Arbitrary input never panics; what is written reads back the same.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lifeboat_core::bucket::read::decode_chunks;
use lifeboat_core::config::Env;
use lifeboat_core::core::db_manifest::DbManifest;
use lifeboat_core::core::snapshot_manifest::{PartEncoder, SnapshotEntry, SnapshotHeader, decode_part};
use lifeboat_core::programs::{db_backup, health, monitor, prune, restore, storage_backup};
use lifeboat_core::runtime::{configure, push};
use proptest::prelude::*;

/// A manifest as db-backup writes it.
fn manifest() -> Vec<u8> {
    use lifeboat_core::core::db_manifest::{Compression, DB_FORMAT, DB_FORMAT_VERSION_PLAIN, DumpObject};
    let t = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z").expect("t").to_utc();
    DbManifest {
        format: DB_FORMAT.into(),
        format_version: DB_FORMAT_VERSION_PLAIN,
        backup_id: "20261126T020000Z-1a2b3c4d".into(),
        source: "main".into(),
        database: "app".into(),
        server_version: "15.20".into(),
        pg_dump_version: "pg_dump (PostgreSQL) 15.20".into(),
        lifeboat_version: "0.1.0".into(),
        started_at: t,
        finished_at: t + chrono::Duration::seconds(12),
        dump: DumpObject {
            name: "dump.pgc.zst".into(),
            compression: Compression::Zstd,
            level: 3,
            uncompressed_bytes: 1000,
            stored_bytes: 300,
            sha256: "ab".repeat(32),
            crc32c: "AAAAAA==".into(),
            encryption: None,
        },
        row_counts: Some(BTreeMap::from([("public.t".into(), 3)])),
        table_checksums: None,
    }
    .to_json()
}

fn entry() -> impl Strategy<Value = SnapshotEntry> {
    let text = || proptest::option::of(".{0,12}");
    (
        ".{1,40}",
        any::<u64>(),
        any::<i64>(),
        proptest::option::of("[A-Za-z0-9+/]{22}=="),
        (text(), text(), text(), text(), text()),
        proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..3),
        "storage/[a-z]{1,8}/blobs/[a-f0-9]{1,32}",
    )
        .prop_map(|(name, size, generation, md5, (ct, ce, cc, cd, cl), metadata, blob)| SnapshotEntry {
            name,
            size,
            generation,
            md5,
            crc32c: None,
            content_type: ct,
            content_encoding: ce,
            cache_control: cc,
            content_disposition: cd,
            content_language: cl,
            metadata,
            blob,
        })
}

fn encode(entries: &[SnapshotEntry]) -> Vec<u8> {
    let mut enc = PartEncoder::new().expect("encoder");
    for e in entries {
        enc.push(e).expect("push");
    }
    enc.finish().expect("finish")
}

fn whole(bytes: &[u8]) -> Result<Vec<SnapshotEntry>, String> {
    let mut out = Vec::new();
    decode_part(bytes, |e| {
        out.push(e);
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any body: refused or parsed, never a panic.
    #[test]
    fn push_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = push::parse(&body);
    }

    /// What Pub/Sub pushes is read back exactly.
    #[test]
    fn push_envelopes_round_trip(
        data in proptest::collection::vec(any::<u8>(), 1..256),
        attributes in proptest::collection::btree_map(".{1,10}", ".{0,20}", 0..4),
        id in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,50}",
        secs in 0i64..4_000_000_000,
    ) {
        let time = DateTime::<Utc>::from_timestamp(secs, 0).expect("time");
        let body = push::envelope(&data, &attributes, &id, time, "projects/p/subscriptions/s");
        let m = push::parse(body.to_string().as_bytes()).expect("parse");
        prop_assert_eq!(m.data, data);
        prop_assert_eq!(m.attributes, attributes);
        prop_assert_eq!(m.message_id, id);
        prop_assert_eq!(m.publish_time, Some(time));
    }

    /// A manifest with any bytes changed or cut: refused or read, and what is read writes back
    /// to itself.
    #[test]
    fn damaged_manifests_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = manifest();
        let at = at.index(bytes.len());
        if cut { bytes.truncate(at) } else { bytes[at] = byte }
        if let Ok(m) = DbManifest::from_json(&bytes) {
            prop_assert_eq!(DbManifest::from_json(&m.to_json()).expect("own JSON"), m);
        }
    }

    /// Snapshot parts: what is written reads back the same through both readers, at any chunking.
    #[test]
    fn parts_round_trip_through_both_readers(
        entries in proptest::collection::vec(entry(), 0..20),
        chunk in 1usize..64,
    ) {
        let bytes = encode(&entries);
        prop_assert_eq!(whole(&bytes).expect("whole"), entries.clone());
        let streamed: Vec<SnapshotEntry> = decode_chunks(bytes.chunks(chunk)).expect("streamed");
        prop_assert_eq!(streamed, entries);
    }

    /// Arbitrary or damaged parts and headers: errors, never a panic; a truncated part is an
    /// error for the streaming reader.
    #[test]
    fn damaged_parts_never_panic(
        entries in proptest::collection::vec(entry(), 1..8),
        cut in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let bytes = encode(&entries);
        let at = cut.index(bytes.len());
        let streamed = decode_chunks::<SnapshotEntry>([&bytes[..at]]);
        prop_assert!(streamed.is_err(), "a part cut at {} of {} bytes must be refused", at, bytes.len());
        let _ = whole(&bytes[..at]);
        let _ = whole(&junk);
        let _ = decode_chunks::<SnapshotEntry>(junk.chunks(7));
        let _ = SnapshotHeader::from_json(&junk);
    }

    /// The configuration of every program, from any values of its variables: a configuration or
    /// problems that name variables, never a panic.
    #[test]
    fn configuration_never_panics(
        values in proptest::collection::vec((0usize..24, ".{0,24}"), 0..8),
        args in proptest::collection::vec("[-a-z0-9= ]{0,12}", 0..3),
    ) {
        const NAMES: [&str; 24] = [
            "LIFEBOAT_DESTINATION", "BACKUP_BUCKET_NAME", "BACKUP_SOURCE", "LIFEBOAT_RESULTS_TOPIC",
            "BACKUP_TIMEZONE", "BACKUP_RETENTION_DAYS", "BACKUP_SCHEDULE", "LIFEBOAT_UPLOAD_CHUNK_MIB",
            "LIFEBOAT_CONNECT_TIMEOUT", "LIFEBOAT_STALL_TIMEOUT", "LIFEBOAT_REQUEST_ATTEMPTS",
            "BACKUP_DATABASES", "SOURCE_BUCKETS", "BACKUP_MAX_AGE", "BACKUP_KEEP_LAST", "PRUNE_GRACE",
            "PRUNE_MAX_DELETE_FRACTION", "LIFEBOAT_API_TOKEN", "SENTRY_DSN", "PORT", "LIFEBOAT_BIND",
            "DATABASE_URL", "PGPORT", "BACKUP_ENCRYPTION_RECIPIENTS",
        ];
        let mut pairs: BTreeMap<String, String> = values.into_iter().map(|(i, v)| (NAMES[i].to_owned(), v)).collect();
        pairs.insert("HOME".into(), "/home/u".into());
        let env = Env::from_pairs(pairs);
        let mut argv = vec!["--once".to_owned()];
        argv.extend(args);
        let check = |r: Result<(), lifeboat_core::config::ConfigError>| match r {
            Ok(()) => Ok(()),
            Err(e) if !e.problems.is_empty() => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("an error without problems: {e}"))),
        };
        check(configure(&db_backup::SPEC, &argv, &env, db_backup::read).map(|_| ()))?;
        check(configure(&storage_backup::SPEC, &argv, &env, storage_backup::read).map(|_| ()))?;
        check(configure(&prune::SPEC, &argv, &env, prune::read).map(|_| ()))?;
        check(configure(&health::SPEC, &argv, &env, health::read).map(|_| ()))?;
        check(configure(&monitor::SPEC, &argv, &env, monitor::read).map(|_| ()))?;
        check(configure(&restore::SPEC, &argv, &env, restore::read).map(|_| ()))?;
    }
}
