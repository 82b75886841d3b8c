//! What `SOURCE_BUCKETS` names: a bucket (and a name prefix) to snapshot. One parser for every
//! program: `storage-backup` snapshots these sources, `health` and `monitor` expect their
//! snapshots (the name in the backup layout is [`SourceSpec::bucket`] for all three).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::core::location::{Location, check_bucket};
use crate::core::naming::is_valid_segment;

/// One source to snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The name in the backup layout (`storage/<bucket>/…`): the GCS bucket, or the last segment
    /// of a local directory.
    pub bucket: String,
    /// Only names starting with this (as given: `photos/` is a folder, `photos` also matches `photos2`).
    pub prefix: String,
    /// Where the source store is opened: the bucket's root (names are full object names).
    pub location: Location,
}

/// Why a text is not a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a source: use BUCKET, BUCKET/PREFIX, gs://BUCKET[/PREFIX] or file:///DIR ({1})")]
pub struct BadSource(pub String, pub String);

/// Longest source prefix, in bytes: GCS object names are at most 1024 bytes.
const MAX_SOURCE_PREFIX_BYTES: usize = 1024;

impl FromStr for SourceSpec {
    type Err = BadSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| BadSource(s.to_owned(), why.to_owned());
        if s.starts_with("file://") {
            let location: Location = s.parse().map_err(|_| bad("not an absolute path"))?;
            let Location::Local { root } = &location else { return Err(bad("not a directory")) };
            let bucket = root.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if !is_valid_segment(&bucket) {
                return Err(bad("the directory's name must be letters, digits, '-', '_' or '.'"));
            }
            return Ok(Self { bucket, prefix: String::new(), location: Location::Local { root: PathBuf::from(root) } });
        }
        let rest = s.strip_prefix("gs://").unwrap_or(s);
        if rest.contains("://") {
            return Err(bad("unknown scheme"));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(|rule| bad(&format!("invalid bucket name: {rule}")))?;
        // Any object name prefix is allowed (`..` included: GCS names are not paths), except
        // control characters, which no object name of a sane bucket holds and which break logs.
        if prefix.chars().any(char::is_control) {
            return Err(bad("the prefix contains a control character"));
        }
        if prefix.len() > MAX_SOURCE_PREFIX_BYTES {
            return Err(bad("the prefix is longer than an object name can be (1024 bytes)"));
        }
        let location = Location::Gcs { bucket: bucket.to_owned(), prefix: String::new() };
        Ok(Self { bucket: bucket.to_owned(), prefix: prefix.to_owned(), location })
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, self.prefix.is_empty()) {
            (Location::Gcs { .. }, true) => write!(f, "gs://{}", self.bucket),
            (Location::Gcs { .. }, false) => write!(f, "gs://{}/{}", self.bucket, self.prefix),
            (Location::Local { .. }, _) => write!(f, "{}", self.location),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        let s: SourceSpec = "media-prod".parse().expect("bucket");
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("media-prod", ""));
        assert_eq!(s.location.to_string(), "gs://media-prod");
        let s: SourceSpec = "media-prod/photos/".parse().expect("prefix");
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("media-prod", "photos/"));
        assert_eq!(s.to_string(), "gs://media-prod/photos/");
        let s: SourceSpec = "gs://media-prod/a b".parse().expect("url");
        assert_eq!(s.prefix, "a b");
        let s: SourceSpec = "file:///srv/data/uploads".parse().expect("local");
        assert_eq!(s.bucket, "uploads");
        assert_eq!(s.to_string(), "file:///srv/data/uploads");
        for bad in
            ["UPPER", "ab", "s3://x", "file://relative", "file:///srv/we ird", "b-1/x\ny", "b-1/x\ty", "a..b", "goog1"]
        {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad:?} accepted");
        }
    }
}
