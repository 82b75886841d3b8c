//! What the store says about one object: a plain record, so the pure core (series, retention,
//! snapshot manifests) can reason about listings without touching a store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// Key relative to the store's location.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Generation (GCS) or creation time in microseconds (local); changes on every rewrite.
    pub generation: i64,
    /// MD5 of the content, base64 (absent for composite GCS objects).
    pub md5: Option<String>,
    /// CRC32C of the content, base64 of the big-endian value (as GCS reports it).
    pub crc32c: Option<String>,
    /// Last update.
    pub updated: DateTime<Utc>,
    /// Content type.
    pub content_type: Option<String>,
    /// Content encoding.
    pub content_encoding: Option<String>,
    /// Cache control.
    pub cache_control: Option<String>,
    /// Content disposition.
    #[serde(default)]
    pub content_disposition: Option<String>,
    /// Content language.
    #[serde(default)]
    pub content_language: Option<String>,
    /// Custom metadata.
    pub metadata: BTreeMap<String, String>,
}
