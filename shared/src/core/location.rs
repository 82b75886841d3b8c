//! Where a store lives: `gs://bucket/prefix` or `file:///absolute/path`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A GCS bucket and an optional prefix (without leading or trailing `/`).
    Gcs {
        /// Bucket name.
        bucket: String,
        /// Prefix inside the bucket, `""` for none.
        prefix: String,
    },
    /// A local directory.
    Local {
        /// Absolute path of the root directory.
        root: PathBuf,
    },
}

/// Why a text is not a location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// Not `gs://` nor `file://`.
    #[error("{0:?} is not a destination URL: use gs://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH")]
    Scheme(String),
    /// The bucket name breaks GCS's rules.
    #[error("{0:?} is not a valid bucket name (3-63 characters: lower-case letters, digits, '-', '_', '.')")]
    Bucket(String),
    /// A relative or odd local path.
    #[error("{0:?} must be an absolute path without '..' (file:///var/backups/lifeboat)")]
    Path(String),
}

impl crate::error::Classify for LocationError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

impl Location {
    /// `file://<home>/.local/share/lifeboat/backups`, the embedded default (`/tmp` without a home).
    pub fn embedded_default(home: Option<&str>) -> Self {
        Self::Local { root: PathBuf::from(home.unwrap_or("/tmp")).join(".local/share/lifeboat/backups") }
    }

    /// The same location with `sub` appended to its prefix/path.
    #[must_use]
    pub fn join(&self, sub: &str) -> Self {
        let sub = sub.trim_matches('/');
        match self {
            Self::Gcs { bucket, prefix } if prefix.is_empty() => {
                Self::Gcs { bucket: bucket.clone(), prefix: sub.to_owned() }
            }
            Self::Gcs { bucket, prefix } => Self::Gcs { bucket: bucket.clone(), prefix: format!("{prefix}/{sub}") },
            Self::Local { root } => Self::Local { root: root.join(sub) },
        }
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.'))
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

impl FromStr for Location {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(LocationError::Bucket(bucket.to_owned()));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|seg| seg == ".." || seg == ".") || prefix.contains("//") {
                return Err(LocationError::Scheme(s.to_owned()));
            }
            return Ok(Self::Gcs { bucket: bucket.to_owned(), prefix: prefix.to_owned() });
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') || path.split('/').any(|seg| seg == "..") || path.contains('\0') {
                return Err(LocationError::Path(path.to_owned()));
            }
            let trimmed = path.trim_end_matches('/');
            return Ok(Self::Local { root: PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed }) });
        }
        Err(LocationError::Scheme(s.to_owned()))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            Self::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            Self::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for ok in ["gs://my-backups", "gs://my-backups/prod/db", "file:///var/backups", "file:///"] {
            assert_eq!(ok.parse::<Location>().expect(ok).to_string(), ok);
        }
        assert_eq!("gs://b-1/p/".parse::<Location>().expect("ok").to_string(), "gs://b-1/p");
    }

    #[test]
    fn rejects_bad_locations() {
        assert!(matches!("s3://x".parse::<Location>(), Err(LocationError::Scheme(_))));
        assert!(matches!("gs://UPPER".parse::<Location>(), Err(LocationError::Bucket(_))));
        assert!(matches!("gs://ab".parse::<Location>(), Err(LocationError::Bucket(_))));
        assert!(matches!("file://relative/x".parse::<Location>(), Err(LocationError::Path(_))));
        assert!(matches!("file:///a/../etc".parse::<Location>(), Err(LocationError::Path(_))));
        assert!("gs://b-1/a/../b".parse::<Location>().is_err());
    }

    #[test]
    fn join_appends() {
        let l: Location = "gs://b-1".parse().expect("ok");
        assert_eq!(l.join("x/y").to_string(), "gs://b-1/x/y");
        assert_eq!(l.join("x").join("y").to_string(), "gs://b-1/x/y");
    }
}
