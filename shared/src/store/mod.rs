//! The object store: one small trait, two implementations.
//!
//! - [`gcs::GcsStore`]: Google Cloud Storage through the JSON API (`gcloud-storage`), or an
//!   emulator when `STORAGE_EMULATOR_HOST` is set.
//! - [`local::LocalStore`]: a directory (`file:///path`), the embedded default. Just as safe:
//!   create-only writes through an atomic link of a fully written temp file.
//!
//! A GCS request that fails for a passing reason is retried per [`retry::RetrySettings`]
//! (exponential backoff with jitter); [`StoreError`] says which failures those are
//! ([`Classify`]).
//!
//! A store is opened on a [`Location`] (`gs://bucket/prefix` or `file:///path`); keys are
//! relative to it. Every write is create-only unless the caller passes an explicit generation
//! precondition, so nothing lifeboat wrote is ever silently replaced.

pub mod gcs;
pub mod local;
pub mod retry;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

pub use crate::core::location::{Location, LocationError};
pub use crate::core::object::ObjectMeta;
use crate::error::{Classify, ErrorKind};

/// What went wrong with a store operation. Each backend maps its own errors into these kinds.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{location}: object {key:?} not found")]
    NotFound {
        /// The store.
        location: String,
        /// The key.
        key: String,
    },
    /// A create-only write found the name taken.
    #[error("{location}: object {key:?} already exists; lifeboat never overwrites an object")]
    AlreadyExists {
        /// The store.
        location: String,
        /// The key.
        key: String,
    },
    /// A generation precondition did not hold (somebody changed the object meanwhile).
    #[error("{location}: object {key:?} changed concurrently (generation precondition failed)")]
    PreconditionFailed {
        /// The store.
        location: String,
        /// The key.
        key: String,
    },
    /// The credentials may not do this.
    #[error("{location}: permission denied for {key:?}: {message}; check the service account's roles")]
    PermissionDenied {
        /// The store.
        location: String,
        /// The key.
        key: String,
        /// The service's words.
        message: String,
    },
    /// A retention policy (or a hold) protects the object: it cannot be deleted or replaced
    /// before it is old enough. Not a misconfiguration of lifeboat's rights: the backup bucket is
    /// write-once for the retention period on purpose.
    #[error(
        "{location}: object {key:?} is protected by the bucket's retention policy (or a hold) and cannot be deleted or replaced yet: {message}"
    )]
    Retained {
        /// The store.
        location: String,
        /// The key.
        key: String,
        /// The service's words (they say until when).
        message: String,
    },
    /// The name cannot be stored safely.
    #[error("invalid object name {key:?}: {reason}")]
    InvalidName {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The operation failed in a way that a retry may fix (network, 429, 5xx).
    #[error("{location}: temporary failure on {key:?}: {message}")]
    Transient {
        /// The store.
        location: String,
        /// The key.
        key: String,
        /// What happened.
        message: String,
    },
    /// The service refused the request for good (a 4xx status not named above).
    #[error("{location}: {operation} {key:?} failed: {message}")]
    Refused {
        /// The store.
        location: String,
        /// What was attempted.
        operation: &'static str,
        /// The key.
        key: String,
        /// The service's words.
        message: String,
    },
    /// What the store holds is not what was sent or expected (size, checksum).
    #[error("{location}: {operation} {key:?} failed: {message}")]
    Integrity {
        /// The store.
        location: String,
        /// What was attempted.
        operation: &'static str,
        /// The key.
        key: String,
        /// What differs.
        message: String,
    },
    /// Anything else: a local failure (disk, a task) or an answer that cannot be.
    #[error("{location}: {operation} {key:?} failed: {message}")]
    Other {
        /// The store.
        location: String,
        /// What was attempted.
        operation: &'static str,
        /// The key.
        key: String,
        /// What happened.
        message: String,
    },
}

impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } | Self::PreconditionFailed { .. } => ErrorKind::Conflict,
            Self::PermissionDenied { .. } | Self::Retained { .. } | Self::InvalidName { .. } | Self::Refused { .. } => {
                ErrorKind::Refused
            }
            Self::Transient { .. } => ErrorKind::Transient,
            Self::Integrity { .. } => ErrorKind::Integrity,
            Self::Other { .. } => ErrorKind::Internal,
        }
    }
}

impl StoreError {
    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True for [`StoreError::Retained`]: the object is too young to be deleted or replaced.
    pub fn is_retained(&self) -> bool {
        matches!(self, Self::Retained { .. })
    }
}

/// A write's precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// The name must be free (`ifGenerationMatch=0`). The default: lifeboat never overwrites.
    #[default]
    DoesNotExist,
    /// The object must currently have this generation (compare-and-swap updates of state).
    GenerationMatches(i64),
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// The precondition.
    pub precondition: Precondition,
    /// Content type.
    pub content_type: Option<String>,
    /// Content encoding.
    pub content_encoding: Option<String>,
    /// Cache control.
    pub cache_control: Option<String>,
    /// Content disposition.
    pub content_disposition: Option<String>,
    /// Content language.
    pub content_language: Option<String>,
    /// Custom metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A server-side copy's options.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Replace the destination's metadata with this (restores); `None` keeps the source's.
    pub metadata: Option<PutOptions>,
}

/// An object addressed across stores of one backend (the source of a server-side copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// GCS bucket name, or the local root directory.
    pub bucket: String,
    /// Full object name within that bucket.
    pub name: String,
    /// Copy this generation only: a copy fails with "not found" once the object is another
    /// generation or gone (a create-only copy on GCS guards with `ifSourceGenerationMatch`, a
    /// replacing copy pins `sourceGeneration`).
    pub generation: Option<i64>,
}

/// Keys from `start` (inclusive) to `end` (exclusive); `None` leaves that side open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key in the range.
    pub start: Option<String>,
    /// The first key after the range.
    pub end: Option<String>,
}

impl KeyRange {
    /// Every key.
    pub const ALL: Self = Self { start: None, end: None };

    /// True when `key` lies in the range.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.start.as_deref().is_none_or(|s| key >= s) && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects, in lexicographic key order.
    pub objects: Vec<ObjectMeta>,
    /// Pass to the next call to continue; `None` at the end.
    pub next_page_token: Option<String>,
}

/// A stream of object bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// A streaming, create-only writer. Nothing is visible under the key before [`ObjectWriter::finish`]
/// succeeds; dropping or aborting a writer leaves no object behind.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes. Memory use stays bounded by the store's chunk size.
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError>;
    /// Commits the object and returns its metadata.
    async fn finish(self: Box<Self>) -> Result<ObjectMeta, StoreError>;
    /// Abandons the write; no object is left under the key.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// The operations lifeboat needs from an object store.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// The location this store is opened on.
    fn location(&self) -> &Location;

    /// How another store of the same backend names `key` of this store (server-side copies).
    fn object_ref(&self, key: &str) -> ObjectRef;

    /// Starts a streaming write.
    async fn create(&self, key: &str, options: PutOptions) -> Result<Box<dyn ObjectWriter>, StoreError>;

    /// Writes a small object in one request.
    async fn put(&self, key: &str, data: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError>;

    /// Streams an object's bytes.
    async fn read(&self, key: &str) -> Result<ByteStream, StoreError>;

    /// An object's metadata.
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// One page of the objects whose keys start with `prefix`, in key order.
    async fn list_page(
        &self,
        prefix: &str,
        page_token: Option<String>,
        page_size: u32,
    ) -> Result<ListPage, StoreError> {
        self.list_range_page(prefix, &KeyRange::ALL, page_token, page_size).await
    }

    /// One page of the objects whose keys start with `prefix` and lie in `range`, in key order.
    /// Several ranges of one prefix can be listed at once (GCS: `startOffset`/`endOffset`).
    async fn list_range_page(
        &self,
        prefix: &str,
        range: &KeyRange,
        page_token: Option<String>,
        page_size: u32,
    ) -> Result<ListPage, StoreError>;

    /// Deletes an object; `Ok(false)` when it was already gone (deletes are idempotent).
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Server-side copy of `source` (in this backend) to `key` of this store, create-only.
    async fn copy_from(&self, source: &ObjectRef, key: &str, options: CopyOptions) -> Result<ObjectMeta, StoreError>;

    /// Server-side copy of `source` to `key`, create-only, keeping the source's metadata, in as
    /// few requests as the backend allows: for content-addressed keys (snapshot blobs), where a
    /// taken name means the content is stored already. [`StoreError::AlreadyExists`] when `key`
    /// exists; it is never replaced. On GCS this is one rewrite request that carries
    /// `ifGenerationMatch=0` (a 412 is the answer "already exists") instead of a lookup and a copy.
    async fn copy_create_only(&self, source: &ObjectRef, key: &str) -> Result<ObjectMeta, StoreError> {
        self.copy_from(source, key, CopyOptions::default()).await
    }

    /// Removes what writes of killed runs left behind outside the object namespace and nothing
    /// has touched since `cutoff` (temp files of a local store), or only counts it when
    /// `dry_run`. A store whose unfinished writes leave nothing behind (GCS: an unfinished
    /// resumable upload is no object, and expires by itself) has nothing to collect.
    async fn collect_abandoned(&self, cutoff: DateTime<Utc>, dry_run: bool) -> Result<Abandoned, StoreError> {
        let _ = (cutoff, dry_run);
        Ok(Abandoned::default())
    }
}

/// What [`ObjectStore::collect_abandoned`] found (and removed unless it was a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// Files.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// A shared store handle.
pub type DynStore = Arc<dyn ObjectStore>;

/// Convenience operations on any store.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Reads a whole object into memory, refusing objects larger than `limit` bytes.
    async fn read_all(&self, key: &str, limit: u64) -> Result<Bytes, StoreError> {
        let meta = self.stat(key).await?;
        if meta.size > limit {
            return Err(StoreError::Integrity {
                location: self.location().to_string(),
                operation: "read",
                key: key.to_owned(),
                message: format!("object is {} bytes, more than the {limit} expected", meta.size),
            });
        }
        let chunks: Vec<Bytes> = self.read(key).await?.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// Streams every object under `prefix`, page after page.
    fn list_all<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta, StoreError>>
    where
        Self: Sync,
    {
        futures::stream::try_unfold((Some(None::<String>), prefix), move |(token, prefix)| async move {
            let Some(token) = token else { return Ok(None) };
            let page = self.list_page(prefix, token, 1000).await?;
            let next = page.next_page_token.map(Some);
            Ok(Some((futures::stream::iter(page.objects.into_iter().map(Ok)), (next, prefix))))
        })
        .try_flatten()
        .boxed()
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

/// Opens a store on `location`, reading emulator settings from `env`; every request of a GCS
/// store obeys `net` (timeouts, attempts).
pub async fn open(
    location: &Location,
    env: &crate::config::Env,
    chunk_bytes: usize,
    net: &crate::core::net::NetLimits,
) -> Result<DynStore, StoreError> {
    match location {
        Location::Local { .. } => Ok(Arc::new(local::LocalStore::open(location.clone())?)),
        Location::Gcs { .. } => Ok(Arc::new(
            gcs::GcsStore::connect_with(location.clone(), env.get("STORAGE_EMULATOR_HOST"), chunk_bytes, net).await?,
        )),
    }
}

/// Checks a key against the rules every backend shares (GCS object-name rules).
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| Err(StoreError::InvalidName { key: key.to_owned(), reason });
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if key.contains('\0') || key.contains('\r') || key.contains('\n') {
        return bad("contains NUL, CR or LF");
    }
    if key == "." || key == ".." {
        return bad("is . or ..");
    }
    Ok(())
}

/// CRC32C as GCS reports it: base64 of the big-endian value.
pub fn crc32c_base64(crc: u32) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// MD5 as GCS reports it: base64 of the digest.
pub fn md5_base64(digest: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(digest)
}
