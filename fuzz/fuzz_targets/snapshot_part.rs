//! The snapshot files as read from the store: the header (JSON) and the parts (zstd-compressed
//! JSON lines), the latter by both readers — the whole-part one and the streaming one a download
//! feeds in chunks, which must agree whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_core::bucket::read::decode_chunks;
use lifeboat_core::core::snapshot_manifest::{SnapshotEntry, SnapshotHeader, decode_part};

fuzz_target!(|bytes: &[u8]| {
    let _ = SnapshotHeader::from_json(bytes);
    let Some((&chunk, part)) = bytes.split_first() else { return };
    let mut whole = Vec::new();
    let whole_ok = decode_part(part, |e| {
        whole.push(e);
        Ok(())
    })
    .is_ok();
    let streamed = decode_chunks::<SnapshotEntry>(part.chunks(usize::from(chunk).max(1)));
    if let (true, Ok(streamed)) = (whole_ok, streamed) {
        assert_eq!(streamed, whole, "the two readers disagree");
    }
});
