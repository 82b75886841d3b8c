//! Object naming: the backup bucket layout every program shares (see DESIGN.md).
//!
//! ```text
//! db/<source>/<database>/<ts>-<id>/dump.pgc.<zst|gz>[.age]   .age: encrypted (age) after compression
//! db/<source>/<database>/<ts>-<id>/manifest.json      written last: its existence = complete
//! db/<source>/<database>/<ts>-<id>/drills/<ts>.json   a drill's outcome (create-only)
//! storage/<source-bucket>/snapshots/<ts>-<id>/…      (drills/<ts>.json too)
//! storage/<source-bucket>/blobs/…
//! state/…
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The sortable UTC timestamp format of object names (ISO 8601 basic).
pub const TS_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A run's identity inside a series: `<ts>-<id>`, sortable by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId {
    /// When the run started (second precision).
    pub started: DateTime<Utc>,
    /// Eight lower-case hex characters that make concurrent runs distinct.
    pub suffix: String,
}

impl RunId {
    /// A new id for a run starting at `started`.
    pub fn new(started: DateTime<Utc>) -> Self {
        let suffix = format!("{:08x}", uuid::Uuid::new_v4().as_fields().0); // 32 random bits of a v4 UUID
        Self { started: trunc_seconds(started), suffix }
    }
}

fn trunc_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.started.format(TS_FORMAT), self.suffix)
    }
}

/// Why a text is not a [`RunId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a backup id like 20261126T020000Z-1a2b3c4d")]
pub struct BadRunId(pub String);

impl FromStr for RunId {
    type Err = BadRunId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRunId(s.to_owned());
        let (ts, suffix) = s.split_once('-').ok_or_else(bad)?;
        let started = NaiveDateTime::parse_from_str(ts, TS_FORMAT).map_err(|_| bad())?.and_utc();
        if suffix.len() != 8 || !suffix.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(bad());
        }
        Ok(Self { started, suffix: suffix.to_owned() })
    }
}

/// True for a name usable as one path segment of our layout (source, database, bucket names).
pub fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The bytes [`encode_segment`] escapes: all but ASCII letters, digits, `-` and `_` (so `.`, `%`,
/// `/`, spaces, quotes and every non-ASCII byte become `%XX`, upper-case hex). Object names are a
/// storage contract: changing this set would hide every backup written before.
const SEGMENT_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// Encodes an arbitrary name (a database may be called `Sales "EU"`) into one safe segment:
/// safe names stay as they are, others are percent-encoded, reversibly.
pub fn encode_segment(name: &str) -> String {
    if is_valid_segment(name) {
        return name.to_owned();
    }
    utf8_percent_encode(name, SEGMENT_ESCAPES).to_string()
}

/// Percent-decoding (reverses [`encode_segment`], and any `%XX` escape); `None` for a broken
/// escape (`%` not followed by two hex digits) or invalid UTF-8. Strict where the
/// `percent-encoding` crate is lenient (it keeps a broken escape as it is), so a name that was
/// not written by [`encode_segment`] is not taken for one; `postgres::connection` decodes the
/// parts of a `DATABASE_URL` with it for the same reason.
pub fn decode_segment(seg: &str) -> Option<String> {
    let well_formed = seg
        .split('%')
        .skip(1)
        .all(|after| after.as_bytes().get(..2).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return None;
    }
    percent_decode_str(seg).decode_utf8().ok().map(std::borrow::Cow::into_owned)
}

/// Where one database backup lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbBackupPath {
    /// Logical source.
    pub source: String,
    /// Database name (unencoded).
    pub database: String,
    /// The run.
    pub run: RunId,
}

impl DbBackupPath {
    /// `db/<source>/<database>/` — the series of one database.
    pub fn series_prefix(source: &str, database: &str) -> String {
        format!("db/{}/{}/", encode_segment(source), encode_segment(database))
    }

    /// `db/<source>/<database>/<ts>-<id>/`.
    pub fn prefix(&self) -> String {
        format!("{}{}/", Self::series_prefix(&self.source, &self.database), self.run)
    }

    /// The dump object, e.g. `…/dump.pgc.zst` (`extension` `zst.age` for an encrypted one).
    pub fn dump_key(&self, extension: &str) -> String {
        format!("{}dump.pgc.{extension}", self.prefix())
    }

    /// The manifest, written last.
    pub fn manifest_key(&self) -> String {
        format!("{}manifest.json", self.prefix())
    }

    /// Parses a key under `db/` back into its parts and the file name within the backup.
    pub fn parse_key(key: &str) -> Option<(Self, &str)> {
        let rest = key.strip_prefix("db/")?;
        let mut parts = rest.splitn(4, '/');
        let source = decode_segment(parts.next()?)?;
        let database = decode_segment(parts.next()?)?;
        let run: RunId = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        Some((Self { source, database, run }, file))
    }
}

/// Where one bucket snapshot lives: `storage/<bucket>/snapshots/<ts>-<id>/`.
///
/// Its manifest is made of parts (one per task of a sharded run), and `header.json`, written
/// last, makes it complete. A suspicious snapshot's header carries the custom metadata
/// [`SUSPICIOUS_METADATA`] = `true`, so a listing alone tells it apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPath {
    /// Source bucket.
    pub bucket: String,
    /// The run.
    pub run: RunId,
}

/// Custom metadata key set to `true` on the completion object of a suspicious backup.
pub const SUSPICIOUS_METADATA: &str = "lifeboat-suspicious";

/// Custom metadata key on a drill record (`<backup>/drills/<ts>.json`): `passed` or `failed`, the
/// record's `outcome`, so a listing alone tells a verified backup apart (readers fall back to
/// reading the record when it is absent).
pub const DRILL_OUTCOME_METADATA: &str = "lifeboat-drill-outcome";

impl SnapshotPath {
    /// `storage/<bucket>/` — everything stored for one source bucket.
    pub fn bucket_prefix(bucket: &str) -> String {
        format!("storage/{}/", encode_segment(bucket))
    }

    /// `storage/<bucket>/snapshots/` — the series of snapshots.
    pub fn series_prefix(bucket: &str) -> String {
        format!("{}snapshots/", Self::bucket_prefix(bucket))
    }

    /// `storage/<bucket>/blobs/` — content-addressed copies shared by all snapshots.
    pub fn blobs_prefix(bucket: &str) -> String {
        format!("{}blobs/", Self::bucket_prefix(bucket))
    }

    /// `storage/<bucket>/snapshots/<ts>-<id>/`.
    pub fn prefix(&self) -> String {
        format!("{}{}/", Self::series_prefix(&self.bucket), self.run)
    }

    /// The completion marker, written last.
    pub fn header_key(&self) -> String {
        format!("{}header.json", self.prefix())
    }

    /// Parses a key under `storage/<bucket>/snapshots/` into its parts and the file name.
    pub fn parse_key(key: &str) -> Option<(Self, &str)> {
        let rest = key.strip_prefix("storage/")?;
        let mut parts = rest.splitn(4, '/');
        let bucket = decode_segment(parts.next()?)?;
        if parts.next()? != "snapshots" {
            return None;
        }
        let run: RunId = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        Some((Self { bucket, run }, file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn run_id_round_trips_and_sorts_by_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-26T02:00:00.750Z").expect("valid").to_utc();
        let id = RunId { started: trunc_seconds(t), suffix: "1a2b3c4d".into() };
        assert_eq!(id.to_string(), "20261126T020000Z-1a2b3c4d");
        assert_eq!(id.to_string().parse::<RunId>(), Ok(id.clone()));
        let later = RunId { started: id.started + chrono::Duration::seconds(1), suffix: "00000000".into() };
        assert!(later.to_string() > id.to_string());
        assert!("20261126T020000Z-1A2B3C4D".parse::<RunId>().is_err());
        assert!("2026-11-26-1a2b3c4d".parse::<RunId>().is_err());
    }

    #[test]
    fn db_keys_follow_the_layout() {
        let p = DbBackupPath {
            source: "main".into(),
            database: "Sales \"EU\"".into(),
            run: "20261126T020000Z-1a2b3c4d".parse().expect("valid"),
        };
        assert_eq!(p.dump_key("zst"), "db/main/Sales%20%22EU%22/20261126T020000Z-1a2b3c4d/dump.pgc.zst");
        assert_eq!(p.manifest_key(), "db/main/Sales%20%22EU%22/20261126T020000Z-1a2b3c4d/manifest.json");
        assert_eq!(DbBackupPath::parse_key(&p.manifest_key()), Some((p, "manifest.json")));
        assert_eq!(DbBackupPath::parse_key("db/main/x/not-an-id/manifest.json"), None);
    }

    #[test]
    fn snapshot_keys_follow_the_layout() {
        let p = SnapshotPath { bucket: "media-prod".into(), run: "20261126T030000Z-0000abcd".parse().expect("id") };
        assert_eq!(p.header_key(), "storage/media-prod/snapshots/20261126T030000Z-0000abcd/header.json");
        assert_eq!(SnapshotPath::parse_key(&p.header_key()), Some((p, "header.json")));
        assert_eq!(SnapshotPath::parse_key("storage/media-prod/blobs/abc"), None);
        assert_eq!(SnapshotPath::blobs_prefix("media-prod"), "storage/media-prod/blobs/");
    }

    /// Names written by every version so far; a change here hides existing backups.
    #[test]
    fn segment_encodings_are_pinned() {
        let long_safe = "x".repeat(101);
        let cases: &[(&str, &str)] = &[
            ("main", "main"),
            ("media-prod.v2_x", "media-prod.v2_x"),
            ("Sales \"EU\"", "Sales%20%22EU%22"),
            ("it's", "it%27s"),
            ("a b", "a%20b"),
            ("a.b c", "a%2Eb%20c"),
            ("50%", "50%25"),
            ("%41", "%2541"),
            ("a/b", "a%2Fb"),
            ("../etc", "%2E%2E%2Fetc"),
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("ünïcødé", "%C3%BCn%C3%AFc%C3%B8d%C3%A9"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
            ("tab\there", "tab%09here"),
            ("a+b=c&d?e#f", "a%2Bb%3Dc%26d%3Fe%23f"),
            ("~tilde*", "%7Etilde%2A"),
            (&long_safe, &long_safe),
        ];
        for (name, encoded) in cases {
            assert_eq!(encode_segment(name), *encoded, "{name:?}");
            assert_eq!(decode_segment(encoded).as_deref(), Some(*name), "{encoded:?}");
        }
        assert_eq!(encode_segment(&"x y".repeat(40)).len(), 40 * 5, "a long unsafe name is escaped, not cut");
    }

    #[test]
    fn decoding_accepts_any_escape_but_refuses_broken_ones() {
        assert_eq!(decode_segment("My.DB%20x").as_deref(), Some("My.DB x"));
        assert_eq!(decode_segment("%2f%2F").as_deref(), Some("//"));
        assert_eq!(decode_segment("plain").as_deref(), Some("plain"));
        for broken in ["%", "a%", "%4", "%zz", "%%41", "a%2", "%+1", "%C3"] {
            assert_eq!(decode_segment(broken), None, "{broken:?}");
        }
    }

    /// The hand-written encoder this module used before the `percent-encoding` crate, kept as
    /// the oracle that the crate produces the very same names.
    fn encode_before_the_crate(name: &str) -> String {
        if is_valid_segment(name) {
            return name.to_owned();
        }
        name.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn segment_encoding_round_trips(name in "\\PC{1,40}") {
            let enc = encode_segment(&name);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.%".contains(&b)), "{enc}");
            prop_assert!(enc != "." && enc != "..");
            prop_assert_eq!(&enc, &encode_before_the_crate(&name));
            prop_assert_eq!(decode_segment(&enc), Some(name));
        }
    }
}
