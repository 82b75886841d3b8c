//! Pure naming and checks: where an object's content lives among the blobs, which task owns a
//! name, and whether an object holds the content a snapshot recorded.
//!
//! Blob names (under `storage/<bucket>/blobs/`):
//!
//! - `<md5 hex>-<size>` when the object has an MD5 (every non-composite GCS object): the same
//!   bytes under any name or in any snapshot share one blob.
//! - `<crc32c hex>-<size>-g<generation>` for composite objects (no MD5): CRC32C alone is too weak
//!   to identify content, so the generation is part of the name; a composite object is copied again
//!   only when it is rewritten.
//! - `x-<size>-g<generation>-<name hash>` when a store reports no checksum at all (a local file
//!   lifeboat did not write).

use base64::Engine as _;

use crate::core::naming::SnapshotPath;
use crate::core::snapshot_manifest::SnapshotEntry;
use crate::store::ObjectMeta;

fn decode_b64(s: &str, len: usize) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok().filter(|b| b.len() == len)
}

/// The name of the blob holding `object`'s content, relative to the blobs prefix.
pub fn blob_name(object: &ObjectMeta) -> String {
    if let Some(md5) = object.md5.as_deref().and_then(|m| decode_b64(m, 16)) {
        return format!("{}-{}", hex::encode(md5), object.size);
    }
    if let Some(crc) = object.crc32c.as_deref().and_then(|c| decode_b64(c, 4)) {
        return format!("{}-{}-g{}", hex::encode(crc), object.size, object.generation);
    }
    format!("x-{}-g{}-{:016x}", object.size, object.generation, fnv1a(object.key.as_bytes()))
}

/// The key of the blob holding `object`'s content in the backup store.
pub fn blob_key(bucket: &str, object: &ObjectMeta) -> String {
    format!("{}{}", SnapshotPath::blobs_prefix(bucket), blob_name(object))
}

/// 64-bit FNV-1a: tiny, stable across versions and platforms (the shard of a name must never
/// change between the tasks of a run, nor between releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The task (of `count`) that snapshots the object called `name`.
pub fn shard_of(name: &str, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    u32::try_from(fnv1a(name.as_bytes()) % u64::from(count)).unwrap_or(0)
}

/// The snapshot entry of `object`, whose content is in `blob`.
pub fn entry_of(object: ObjectMeta, blob: String) -> SnapshotEntry {
    SnapshotEntry {
        name: object.key,
        size: object.size,
        generation: object.generation,
        md5: object.md5,
        crc32c: object.crc32c,
        content_type: object.content_type,
        content_encoding: object.content_encoding,
        cache_control: object.cache_control,
        content_disposition: object.content_disposition,
        content_language: object.content_language,
        metadata: object.metadata,
        blob,
    }
}

/// The content an object is expected to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// Size.
    pub size: u64,
    /// MD5, base64.
    pub md5: Option<&'a str>,
    /// CRC32C, base64.
    pub crc32c: Option<&'a str>,
}

impl<'a> Expected<'a> {
    /// What a snapshot entry recorded.
    pub fn of_entry(e: &'a SnapshotEntry) -> Self {
        Self { size: e.size, md5: e.md5.as_deref(), crc32c: e.crc32c.as_deref() }
    }

    /// What a listing reported.
    pub fn of_object(o: &'a ObjectMeta) -> Self {
        Self { size: o.size, md5: o.md5.as_deref(), crc32c: o.crc32c.as_deref() }
    }
}

/// Checks that `actual` has the expected size and checksums. Every checksum both sides know is
/// compared; when the expectation has checksums, at least one must be comparable.
pub fn verify_content(expected: Expected<'_>, actual: &ObjectMeta) -> Result<(), String> {
    if actual.size != expected.size {
        return Err(format!("size {} instead of {}", actual.size, expected.size));
    }
    let mut compared = false;
    if let (Some(want), Some(got)) = (expected.md5, actual.md5.as_deref()) {
        if want != got {
            return Err(format!("MD5 {got} instead of {want}"));
        }
        compared = true;
    }
    if let (Some(want), Some(got)) = (expected.crc32c, actual.crc32c.as_deref()) {
        if want != got {
            return Err(format!("CRC32C {got} instead of {want}"));
        }
        compared = true;
    }
    if !compared && (expected.md5.is_some() || expected.crc32c.is_some()) {
        return Err("the store reported no checksum to compare".into());
    }
    Ok(())
}

/// True when `object` carries exactly the metadata `entry` recorded.
pub fn same_metadata(entry: &SnapshotEntry, object: &ObjectMeta) -> bool {
    metadata_differences(entry, object).is_empty()
}

/// The metadata fields in which `object` differs from what `entry` recorded, one text per field
/// naming both values (`content type "text/plain" in the snapshot, "image/png" stored`; an
/// absent value is `none`), for error messages.
pub fn metadata_differences(entry: &SnapshotEntry, object: &ObjectMeta) -> Vec<String> {
    fn shown(v: Option<&String>) -> String {
        v.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"))
    }
    let mut out = Vec::new();
    for (field, want, got) in [
        ("content type", &entry.content_type, &object.content_type),
        ("content encoding", &entry.content_encoding, &object.content_encoding),
        ("cache control", &entry.cache_control, &object.cache_control),
        ("content disposition", &entry.content_disposition, &object.content_disposition),
        ("content language", &entry.content_language, &object.content_language),
    ] {
        if want != got {
            out.push(format!("{field} {} in the snapshot, {} stored", shown(want.as_ref()), shown(got.as_ref())));
        }
    }
    let keys: std::collections::BTreeSet<&String> = entry.metadata.keys().chain(object.metadata.keys()).collect();
    for k in keys {
        let (want, got) = (entry.metadata.get(k), object.metadata.get(k));
        if want != got {
            out.push(format!("metadata {k:?} {} in the snapshot, {} stored", shown(want), shown(got)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(key: &str, size: u64, md5: Option<&str>, crc: Option<&str>, generation: i64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            generation,
            md5: md5.map(str::to_owned),
            crc32c: crc.map(str::to_owned),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn blob_names_are_content_addressed() {
        // MD5 of "hello": 5d41402abc4b2a76b9719d911017c592
        let a = meta("a", 5, Some("XUFAKrxLKna5cZ2REBfFkg=="), Some("mnG7TA=="), 1);
        let b = meta("other/name", 5, Some("XUFAKrxLKna5cZ2REBfFkg=="), Some("mnG7TA=="), 99);
        assert_eq!(blob_name(&a), "5d41402abc4b2a76b9719d911017c592-5");
        assert_eq!(blob_name(&a), blob_name(&b), "same bytes, same blob, whatever the name or generation");
        assert_eq!(blob_key("media", &a), "storage/media/blobs/5d41402abc4b2a76b9719d911017c592-5");
        // Composite: no MD5, so CRC32C, size and generation.
        let c = meta("c", 5, None, Some("mnG7TA=="), 1_700_000_000_000_001);
        assert_eq!(blob_name(&c), "9a71bb4c-5-g1700000000000001");
        let c2 = ObjectMeta { generation: 2, ..c.clone() };
        assert_ne!(blob_name(&c), blob_name(&c2));
        // A malformed MD5 falls back to the next rule instead of producing a wrong name.
        let bad = meta("d", 5, Some("not base64!"), Some("mnG7TA=="), 3);
        assert_eq!(blob_name(&bad), "9a71bb4c-5-g3");
        let none = meta("e", 0, None, None, 4);
        assert!(blob_name(&none).starts_with("x-0-g4-"), "{}", blob_name(&none));
        assert_ne!(blob_name(&none), blob_name(&meta("f", 0, None, None, 4)));
    }

    #[test]
    fn shards_are_stable_and_cover_every_task() {
        // Pinned values: changing the hash would move names between tasks across releases.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let s = shard_of(&format!("photos/{i}.jpg"), 4);
            counts[s as usize] += 1;
            assert_eq!(s, shard_of(&format!("photos/{i}.jpg"), 4));
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn content_verification() {
        let entry = entry_of(meta("a", 5, Some("XUFAKrxLKna5cZ2REBfFkg=="), Some("mnG7TA=="), 1), "b".into());
        let exp = Expected::of_entry(&entry);
        assert_eq!(verify_content(exp, &meta("x", 5, Some("XUFAKrxLKna5cZ2REBfFkg=="), Some("mnG7TA=="), 9)), Ok(()));
        assert_eq!(verify_content(exp, &meta("x", 5, None, Some("mnG7TA=="), 9)), Ok(()), "CRC32C suffices");
        assert!(verify_content(exp, &meta("x", 6, None, None, 9)).expect_err("size").contains("size 6"));
        assert!(verify_content(exp, &meta("x", 5, Some("AAAAAAAAAAAAAAAAAAAAAA=="), None, 9)).is_err());
        assert!(verify_content(exp, &meta("x", 5, None, Some("AAAAAA=="), 9)).is_err());
        assert!(verify_content(exp, &meta("x", 5, None, None, 9)).expect_err("nothing").contains("no checksum"));
        let bare = Expected { size: 3, md5: None, crc32c: None };
        assert_eq!(verify_content(bare, &meta("x", 3, None, None, 1)), Ok(()));
    }

    #[test]
    fn metadata_comparison() {
        let mut o = meta("a", 1, None, None, 1);
        o.content_type = Some("text/plain".into());
        o.metadata = BTreeMap::from([("k".into(), "v".into())]);
        let e = entry_of(o.clone(), "b".into());
        assert!(same_metadata(&e, &o));
        let mut o2 = o.clone();
        o2.cache_control = Some("no-store".into());
        assert!(!same_metadata(&e, &o2));
        let mut o3 = o.clone();
        o3.metadata.insert("k2".into(), "v".into());
        assert!(!same_metadata(&e, &o3));
        let mut o4 = o;
        o4.content_language = Some("fr".into());
        assert!(!same_metadata(&e, &o4), "language counts");
    }

    #[test]
    fn metadata_differences_are_shown_as_values() {
        let mut o = meta("a", 1, None, None, 1);
        o.content_type = Some("text/plain".into());
        o.metadata = BTreeMap::from([("owner".into(), "alice".into())]);
        let e = entry_of(o.clone(), "b".into());
        assert!(metadata_differences(&e, &o).is_empty());
        let mut stored = o;
        stored.content_type = Some("image/png".into());
        stored.content_disposition = Some("inline".into());
        stored.metadata = BTreeMap::from([("extra".into(), "x".into())]);
        let text = metadata_differences(&e, &stored).join("; ");
        assert_eq!(
            text,
            "content type \"text/plain\" in the snapshot, \"image/png\" stored; \
             content disposition none in the snapshot, \"inline\" stored; \
             metadata \"extra\" none in the snapshot, \"x\" stored; \
             metadata \"owner\" \"alice\" in the snapshot, none stored"
        );
        assert!(!text.contains("Some("), "{text}");
    }
}
