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

/// Longest prefix accepted, in bytes. GCS object names are at most 1024 bytes, and lifeboat appends
/// its own layout (`db/<source>/<database>/<ts>-<id>/manifest.json`: up to about 400 bytes with a
/// 100-character source and a 63-byte database name percent-encoded), so a longer prefix would
/// make some backups impossible to write, and fail only at run time.
pub const MAX_PREFIX_BYTES: usize = 512;

/// Why a text is not a location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// Not `gs://` nor `file://`.
    #[error("{0:?} is not a destination URL: use gs://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH")]
    Scheme(String),
    /// The bucket name breaks GCS's rules.
    #[error("{name:?} is not a valid bucket name: {why}")]
    Bucket {
        /// The name as given (control characters shown escaped).
        name: String,
        /// Which rule it breaks.
        why: BucketRule,
    },
    /// The prefix cannot be used as the start of object names.
    #[error("the prefix {prefix:?} cannot be used: {why}")]
    Prefix {
        /// The prefix as given (control characters shown escaped).
        prefix: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A relative or odd local path.
    #[error("{0:?} must be an absolute path without '..' or control characters (file:///var/backups/lifeboat)")]
    Path(String),
}

/// The GCS bucket naming rule a name breaks
/// (<https://cloud.google.com/storage/docs/buckets#naming>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BucketRule {
    /// 3-63 characters, or up to 222 with dots (each dot-separated part at most 63).
    #[error("it must be 3-63 characters long (up to 222 when it contains dots, at most 63 between two dots)")]
    Length,
    /// Lower-case letters, digits, `-`, `_` and `.` only.
    #[error("only lower-case letters, digits, '-', '_' and '.' are allowed")]
    Characters,
    /// First and last characters must be a letter or digit.
    #[error("it must start and end with a letter or a digit")]
    Ends,
    /// `..`, or a dot next to a dash (not a valid DNS name).
    #[error("dots must separate non-empty parts that start and end with a letter or a digit (no '..')")]
    Dots,
    /// `goog…` is reserved.
    #[error("names starting with \"goog\" are reserved by Google")]
    Goog,
    /// `google` and close misspellings are refused.
    #[error("names containing \"google\" or a close misspelling (like \"g00gle\") are refused by Google")]
    Google,
    /// Dotted-decimal IP addresses are refused.
    #[error("a name that looks like an IP address (like 192.168.5.4) is refused")]
    IpAddress,
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

/// Checks a bucket name against GCS's naming rules, so a wrong name is a configuration problem
/// (exit 2) reported with every other one, instead of a failed run the first night.
pub fn check_bucket(b: &str) -> Result<(), BucketRule> {
    let bytes = b.as_bytes();
    if !bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')) {
        return Err(BucketRule::Characters);
    }
    let dotted = b.contains('.');
    let longest_part = b.split('.').map(str::len).max().unwrap_or(0);
    if b.len() < 3 || b.len() > if dotted { 222 } else { 63 } || longest_part > 63 {
        return Err(BucketRule::Length);
    }
    if !bytes[0].is_ascii_alphanumeric() || !bytes[b.len() - 1].is_ascii_alphanumeric() {
        return Err(BucketRule::Ends);
    }
    if dotted && b.split('.').any(|part| part.is_empty() || part.starts_with('-') || part.ends_with('-')) {
        return Err(BucketRule::Dots);
    }
    if b.starts_with("goog") {
        return Err(BucketRule::Goog);
    }
    if looks_like_google(b) {
        return Err(BucketRule::Google);
    }
    if b.parse::<std::net::Ipv4Addr>().is_ok() || b.split('.').count() == 4 && b.split('.').all(is_number) {
        return Err(BucketRule::IpAddress);
    }
    Ok(())
}

fn is_number(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|c| c.is_ascii_digit())
}

/// "google" and the misspellings GCS refuses: digits for look-alike letters (`g00gle`, `goog1e`),
/// with `-`, `_` and `.` between the letters ignored (`goo-gle`).
fn looks_like_google(b: &str) -> bool {
    let folded: String = b
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .map(|c| match c {
            '0' => 'o',
            '1' | '!' => 'l',
            '3' => 'e',
            '6' | '9' => 'g',
            other => other,
        })
        .collect();
    folded.contains("google") || folded.contains("gogle") || folded.contains("googel")
}

/// Checks the prefix of a `gs://` location: no control character (a `\r\n` in an object name
/// breaks logs, headers and tools), no `.`, `..` or empty segment (GCS keeps them literally, but
/// every path-based tool and the file:// store read them as directory moves), and short enough
/// that lifeboat's own names still fit in GCS's 1024-byte limit.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.chars().any(char::is_control) {
        return Err("it contains a control character (such as a line break or a tab)");
    }
    if prefix.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err("'.' and '..' segments are not allowed");
    }
    if prefix.contains("//") {
        return Err("empty segments ('//') are not allowed");
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err("it is longer than 512 bytes (object names are at most 1024 bytes)");
    }
    Ok(())
}

impl FromStr for Location {
    type Err = LocationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(|why| LocationError::Bucket { name: bucket.to_owned(), why })?;
            let prefix = prefix.trim_matches('/');
            check_prefix(prefix).map_err(|why| LocationError::Prefix { prefix: prefix.to_owned(), why })?;
            return Ok(Self::Gcs { bucket: bucket.to_owned(), prefix: prefix.to_owned() });
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') || path.split('/').any(|seg| seg == "..") || path.chars().any(char::is_control) {
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
        assert!(matches!("gs://UPPER".parse::<Location>(), Err(LocationError::Bucket { .. })));
        assert!(matches!("gs://ab".parse::<Location>(), Err(LocationError::Bucket { .. })));
        assert!(matches!("file://relative/x".parse::<Location>(), Err(LocationError::Path(_))));
        assert!(matches!("file:///a/../etc".parse::<Location>(), Err(LocationError::Path(_))));
        assert!(matches!("file:///a/b\nc".parse::<Location>(), Err(LocationError::Path(_))));
        assert!(matches!("gs://b-1/a/../b".parse::<Location>(), Err(LocationError::Prefix { .. })));
    }

    #[test]
    fn gcs_bucket_rules() {
        let rule = |b: &str| check_bucket(b).err();
        for ok in ["my-backups", "a_b", "abc", "0ab", "backups.example.com", "a.b.c", &"x".repeat(63)] {
            assert_eq!(rule(ok), None, "{ok}");
        }
        assert_eq!(rule("a..b"), Some(BucketRule::Dots));
        assert_eq!(rule("a.-b"), Some(BucketRule::Dots));
        assert_eq!(rule("goog-backups"), Some(BucketRule::Goog));
        assert_eq!(rule("my-google-backups"), Some(BucketRule::Google));
        assert_eq!(rule("my-g00gle"), Some(BucketRule::Google));
        assert_eq!(rule("goo-gle-x"), Some(BucketRule::Google));
        assert_eq!(rule("192.168.5.4"), Some(BucketRule::IpAddress));
        assert_eq!(rule("999.1.1.1"), Some(BucketRule::IpAddress));
        assert_eq!(rule(&"x".repeat(64)), Some(BucketRule::Length));
        assert_eq!(rule(&format!("{}.b", "x".repeat(64))), Some(BucketRule::Length));
        assert_eq!(rule(&vec!["x".repeat(60); 3].join(".")), None, "dotted names may be longer than 63");
        assert_eq!(rule("ab"), Some(BucketRule::Length));
        assert_eq!(rule("-ab"), Some(BucketRule::Ends));
        assert_eq!(rule("ab_"), Some(BucketRule::Ends));
        assert_eq!(rule("a b"), Some(BucketRule::Characters));
        assert_eq!(rule("a\nb"), Some(BucketRule::Characters));
        assert_eq!(rule("Abc"), Some(BucketRule::Characters));
    }

    #[test]
    fn prefix_rules() {
        for ok in ["", "prod/db", "a b/ü", "x..y/z"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok:?}");
        }
        for bad in ["a\r\nb", "a\tb", "a\0", "a/../b", "./a", "a//b", &"p".repeat(513)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
            assert!(format!("gs://b-1/{bad}").parse::<Location>().is_err(), "{bad:?}");
        }
        let e = "gs://b-1/x\r\ny".parse::<Location>().expect_err("control");
        assert!(e.to_string().contains("\\r\\n") && e.to_string().contains("control character"), "{e}");
    }

    proptest::proptest! {
        /// Whatever is typed after `gs://`, parsing never panics, and what it accepts obeys the
        /// rules: a bucket of allowed characters and lengths, a prefix without control
        /// characters, dot segments or empty segments, and it prints back as it parses.
        #[test]
        fn accepted_locations_obey_the_rules(text in "[a-z0-9._/\\-\\x00-\\x1f goGOL]{0,80}") {
            if let Ok(l) = format!("gs://{text}").parse::<Location>() {
                let Location::Gcs { bucket, prefix } = &l else { panic!("gs:// parsed as {l:?}") };
                proptest::prop_assert!(check_bucket(bucket).is_ok() && !bucket.starts_with("goog"));
                proptest::prop_assert!(check_prefix(prefix).is_ok());
                proptest::prop_assert!(!prefix.chars().any(char::is_control));
                proptest::prop_assert_eq!(l.to_string().parse::<Location>().ok(), Some(l.clone()));
            }
        }
    }

    #[test]
    fn join_appends() {
        let l: Location = "gs://b-1".parse().expect("ok");
        assert_eq!(l.join("x/y").to_string(), "gs://b-1/x/y");
        assert_eq!(l.join("x").join("y").to_string(), "gs://b-1/x/y");
    }
}
