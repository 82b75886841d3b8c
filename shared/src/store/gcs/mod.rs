//! Google Cloud Storage through its JSON API (`gcloud-storage`), split the way Apache
//! `object_store` splits a cloud backend:
//!
//! - this file: [`GcsStore`] and its [`ObjectStore`] implementation (reads, stats, listings,
//!   deletes, each retried on transient failures per [`RetrySettings`]);
//! - `client`: building the client (emulator or Application Default Credentials, TLS provider);
//! - `upload`: single-request and resumable, double-buffered uploads, create-only, verified
//!   against the MD5 and CRC32C computed while streaming (and the fake-gcs-server quirks);
//! - `copy`: server-side copies through the rewrite-token loop;
//! - `create_only_copy`: the one-request create-only copy of content-addressed objects (snapshot
//!   blobs), sent through `json`, our own call of the JSON API on the crate's client;
//! - `error`: the client's errors mapped into [`StoreError`].

mod client;
mod copy;
mod create_only_copy;
mod error;
mod json;
mod upload;

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::DateTime;
use futures::{StreamExt, TryStreamExt};
use gcloud_storage::client::Client;
use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::UploadObjectRequest;

use self::error::map_error;
use self::upload::GcsWriter;
use super::retry::RetrySettings;
use super::{
    ByteStream, CopyOptions, KeyRange, ListPage, Location, ObjectMeta, ObjectRef, ObjectStore, ObjectWriter,
    Precondition, PutOptions, StoreError, check_key,
};
use crate::core::net::NetLimits;

/// Resumable upload chunks must be multiples of this.
const CHUNK_QUANTUM: usize = 256 * 1024;

/// A GCS bucket (and prefix) as an object store.
#[derive(Clone)]
pub struct GcsStore {
    client: Client,
    location: Location,
    bucket: String,
    prefix: String,
    chunk_bytes: usize,
    rewrite_bytes_per_call: Option<i64>,
    emulator: bool,
    retry: RetrySettings,
    json: json::JsonApi,
    /// Look the destination up before a create-only copy ([`GcsStore::with_lookup_before_copy`]).
    lookup_before_copy: bool,
    /// Pin create-only copies to the source generation ([`GcsStore::with_pinned_copies`]).
    pinned_copies: bool,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStore").field("location", &self.location).field("chunk_bytes", &self.chunk_bytes).finish()
    }
}

impl GcsStore {
    /// Connects to GCS (Application Default Credentials, or the metadata server on Cloud Run),
    /// or to an emulator at `emulator` with anonymous credentials. `chunk_bytes` is rounded to
    /// the 256 KiB quantum of resumable uploads (at least one quantum).
    pub async fn connect(location: Location, emulator: Option<&str>, chunk_bytes: usize) -> Result<Self, StoreError> {
        Self::connect_with(location, emulator, chunk_bytes, &NetLimits::default()).await
    }

    /// [`GcsStore::connect`] with the connect and stall timeouts and the attempts of `net` on
    /// every request (instead of [`NetLimits::default`]).
    pub async fn connect_with(
        location: Location,
        emulator: Option<&str>,
        chunk_bytes: usize,
        net: &NetLimits,
    ) -> Result<Self, StoreError> {
        let Location::Gcs { bucket, prefix } = &location else {
            return Err(StoreError::Other {
                location: location.to_string(),
                operation: "open",
                key: String::new(),
                message: "not a gs:// location".into(),
            });
        };
        let chunk_bytes = chunk_bytes.max(CHUNK_QUANTUM) / CHUNK_QUANTUM * CHUNK_QUANTUM;
        let (client, json) = client::build(&location, emulator, net).await?;
        Ok(Self {
            client,
            json,
            lookup_before_copy: false,
            pinned_copies: false,
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            location,
            chunk_bytes,
            rewrite_bytes_per_call: None,
            emulator: emulator.is_some(),
            retry: RetrySettings { max_attempts: net.attempts, ..RetrySettings::default() },
        })
    }

    /// Retries transient failures per `retry` instead of [`RetrySettings::default`].
    #[must_use]
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// Caps the bytes one rewrite call may copy (a multiple of 1 MiB), forcing the rewrite-token loop.
    #[must_use]
    pub fn with_rewrite_bytes_per_call(mut self, bytes: i64) -> Self {
        self.rewrite_bytes_per_call = Some(bytes);
        self
    }

    /// Checks by lookups, before each [`ObjectStore::copy_create_only`], what the copy's
    /// preconditions ask GCS to check: the destination is absent ([`StoreError::AlreadyExists`]
    /// otherwise, without copying), and the source is still the generation named
    /// ([`StoreError::NotFound`] otherwise). One or two more requests per copy.
    ///
    /// Not needed against GCS, which enforces `ifGenerationMatch=0` and `ifSourceGenerationMatch`.
    /// fake-gcs-server (1.54 and later) ignores both on rewrites: it replaces the destination and
    /// copies whatever the source holds. Tests against the emulator turn this on so that a
    /// store behaves as on GCS; the programs and the benchmarks do not.
    #[must_use]
    pub fn with_lookup_before_copy(mut self, on: bool) -> Self {
        self.lookup_before_copy = on;
        self
    }

    /// Pins each [`ObjectStore::copy_create_only`] that names a source generation to it
    /// (`sourceGeneration`) instead of guarding the copy with `ifSourceGenerationMatch`: for
    /// `bench/storage-backup.sh`, which measures what the pin would cost (see `create_only_copy`).
    #[must_use]
    pub fn with_pinned_copies(mut self, on: bool) -> Self {
        self.pinned_copies = on;
        self
    }

    /// Creates a bucket (emulator and test setup).
    pub async fn create_bucket(&self, project: &str) -> Result<(), StoreError> {
        use gcloud_storage::http::buckets::insert::{BucketCreationConfig, InsertBucketParam, InsertBucketRequest};
        let req = InsertBucketRequest {
            name: self.bucket.clone(),
            param: InsertBucketParam { project: project.to_owned(), ..Default::default() },
            bucket: BucketCreationConfig::default(),
        };
        match self.client.insert_bucket(&req).await {
            Ok(_) => Ok(()),
            Err(GcsError::Response(r)) if r.code == 409 => Ok(()),
            Err(e) => Err(self.error(e, "create bucket", "", false)),
        }
    }

    /// [`StoreError::AlreadyExists`] when `key` exists: the early check of a create-only write
    /// whose request alone cannot say so before the work is done (a resumable upload, a copy).
    async fn check_absent(&self, key: &str) -> Result<(), StoreError> {
        match self.stat(key).await {
            Ok(_) => Err(StoreError::AlreadyExists { location: self.location.to_string(), key: key.to_owned() }),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn full_name(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.prefix) }
    }

    fn strip(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            name.strip_prefix(&self.prefix).and_then(|n| n.strip_prefix('/')).unwrap_or(name).to_owned()
        }
    }

    fn error(&self, e: GcsError, operation: &'static str, key: &str, create_only: bool) -> StoreError {
        map_error(&self.location, e, operation, key, create_only)
    }

    fn meta(&self, o: Object) -> ObjectMeta {
        ObjectMeta {
            key: self.strip(&o.name),
            size: u64::try_from(o.size).unwrap_or(0),
            generation: o.generation,
            md5: o.md5_hash,
            crc32c: o.crc32c,
            updated: o
                .updated
                .or(o.time_created)
                .and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()))
                .unwrap_or_default(),
            // An empty value is no value (what a copy that empties a field leaves).
            content_type: o.content_type.filter(|v| !v.is_empty()),
            content_encoding: o.content_encoding.filter(|v| !v.is_empty()),
            cache_control: o.cache_control.filter(|v| !v.is_empty()),
            content_disposition: o.content_disposition.filter(|v| !v.is_empty()),
            content_language: o.content_language.filter(|v| !v.is_empty()),
            metadata: o.metadata.unwrap_or_default().into_iter().collect(),
        }
    }

    fn object_resource(&self, key: &str, options: &PutOptions) -> Object {
        Object {
            name: self.full_name(key),
            bucket: self.bucket.clone(),
            content_type: options.content_type.clone(),
            content_encoding: options.content_encoding.clone(),
            cache_control: options.cache_control.clone(),
            content_disposition: options.content_disposition.clone(),
            content_language: options.content_language.clone(),
            metadata: (!options.metadata.is_empty())
                .then(|| options.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()),
            ..Object::default()
        }
    }

    fn upload_request(&self, options: &PutOptions) -> UploadObjectRequest {
        UploadObjectRequest {
            bucket: self.bucket.clone(),
            if_generation_match: Some(match options.precondition {
                Precondition::DoesNotExist => 0,
                Precondition::GenerationMatches(g) => g,
            }),
            ..Default::default()
        }
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    fn location(&self) -> &Location {
        &self.location
    }

    fn object_ref(&self, key: &str) -> ObjectRef {
        ObjectRef { bucket: self.bucket.clone(), name: self.full_name(key), generation: None }
    }

    async fn create(&self, key: &str, options: PutOptions) -> Result<Box<dyn ObjectWriter>, StoreError> {
        check_key(&self.full_name(key))?;
        Ok(Box::new(GcsWriter::new(self.clone(), key, options)))
    }

    async fn put(&self, key: &str, data: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError> {
        check_key(&self.full_name(key))?;
        let object = self.put_object(key, data, &options).await?;
        Ok(self.meta(object))
    }

    async fn read(&self, key: &str) -> Result<ByteStream, StoreError> {
        let req = GetObjectRequest { bucket: self.bucket.clone(), object: self.full_name(key), ..Default::default() };
        // Opening the download is retried; its body is a stream whose every read obeys the stall
        // timeout (a stalled body fails the read, and the run, instead of hanging).
        let stream = self
            .retry
            .retry("read", || async {
                self.client
                    .download_streamed_object(&req, &Range::default())
                    .await
                    .map_err(|e| self.error(e, "read", key, false))
            })
            .await?;
        let location = self.location.clone();
        let key = key.to_owned();
        Ok(stream.map_err(move |e| map_error(&location, e, "read", &key, false)).boxed())
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let req = GetObjectRequest { bucket: self.bucket.clone(), object: self.full_name(key), ..Default::default() };
        let object = self
            .retry
            .retry("stat", || async {
                self.client.get_object(&req).await.map_err(|e| self.error(e, "stat", key, false))
            })
            .await?;
        Ok(self.meta(object))
    }

    async fn list_range_page(
        &self,
        prefix: &str,
        range: &KeyRange,
        page_token: Option<String>,
        page_size: u32,
    ) -> Result<ListPage, StoreError> {
        let full_prefix = self.full_name(prefix);
        let req = ListObjectsRequest {
            bucket: self.bucket.clone(),
            prefix: (!full_prefix.is_empty()).then_some(full_prefix),
            page_token,
            max_results: Some(i32::try_from(page_size.clamp(1, 1000)).unwrap_or(1000)),
            start_offset: range.start.as_deref().map(|k| self.full_name(k)),
            end_offset: range.end.as_deref().map(|k| self.full_name(k)),
            ..Default::default()
        };
        let resp = self
            .retry
            .retry("list", || async {
                self.client.list_objects(&req).await.map_err(|e| self.error(e, "list", prefix, false))
            })
            .await?;
        Ok(ListPage {
            objects: resp.items.unwrap_or_default().into_iter().map(|o| self.meta(o)).collect(),
            next_page_token: resp.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let req =
            DeleteObjectRequest { bucket: self.bucket.clone(), object: self.full_name(key), ..Default::default() };
        let deleted = self
            .retry
            .retry("delete", || async {
                self.client.delete_object(&req).await.map_err(|e| self.error(e, "delete", key, false))
            })
            .await;
        match deleted {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn copy_from(&self, source: &ObjectRef, key: &str, options: CopyOptions) -> Result<ObjectMeta, StoreError> {
        self.copy(source, key, options).await
    }

    async fn copy_create_only(&self, source: &ObjectRef, key: &str) -> Result<ObjectMeta, StoreError> {
        self.create_only_copy(source, key).await
    }
}
