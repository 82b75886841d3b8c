//! A database backup's manifest as read from the store (anyone with write access to the bucket,
//! or a torn write, decides its bytes): refused or read; what is read writes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_core::core::db_manifest::DbManifest;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(m) = DbManifest::from_json(bytes) {
        let again = DbManifest::from_json(&m.to_json()).expect("a manifest read back from its own JSON");
        assert_eq!(again, m);
    }
});
