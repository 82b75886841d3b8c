//! Uploads: one multipart request for what fits in a chunk, a resumable session in chunks for
//! the rest.
//!
//! Streaming writes are resumable uploads in chunks of a fixed size (a multiple of 256 KiB): a
//! chunk that fails with a transient error is re-sent alone after asking the server how much of it
//! arrived. Two chunk buffers exist per writer (one uploading, one filling), allocated once and
//! recycled, so memory is bounded by twice the chunk size. Objects smaller than one chunk go up
//! in a single multipart request. Every write carries `ifGenerationMatch` (0 = create-only); the
//! MD5 and CRC32C computed while streaming are compared with what the server stored.
//!
//! fake-gcs-server quirks, handled here and nowhere else (real GCS needs none of this):
//! - it treats the resumable status query `bytes */*` as a final empty chunk and finalizes a
//!   truncated object, so against an emulator a failed chunk is re-sent whole instead of asking;
//! - it takes a multipart upload's content type from the media part instead of the metadata part,
//!   so the metadata is checked after the upload and patched when it differs;
//! - it answers that PATCH with a body the client cannot decode, although the patch was applied,
//!   so the object is read again to check.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::patch::PatchObjectRequest;
use gcloud_storage::http::objects::upload::UploadType;
use gcloud_storage::http::resumable_upload_client::{ChunkSize, ResumableUploadClient, UploadStatus};
use md5::Digest as _;

use super::GcsStore;
use super::error::map_error;
use crate::error::Classify as _;
use crate::store::retry::RetrySettings;
use crate::store::{
    Location, ObjectMeta, ObjectStore as _, ObjectWriter, Precondition, PutOptions, StoreError, crc32c_base64,
    md5_base64,
};

/// What every chunk of one upload shares.
#[derive(Clone)]
struct UploadSession {
    client: ResumableUploadClient,
    location: Location,
    key: String,
    create_only: bool,
    /// Ask the server how much arrived after a failure (real GCS). fake-gcs-server 1.54 treats
    /// the status query `bytes */*` as a final empty chunk and finalizes a truncated object, so
    /// against an emulator the whole chunk is re-sent instead.
    ask_status: bool,
    /// How often a chunk is sent again, and the waits in between.
    retry: RetrySettings,
}

impl UploadSession {
    fn fail(&self, message: impl Into<String>) -> StoreError {
        StoreError::Other {
            location: self.location.to_string(),
            operation: "upload",
            key: self.key.clone(),
            message: message.into(),
        }
    }

    /// Sends one chunk (`data`, starting at byte `first_byte` of the object) and re-sends what
    /// the server did not persist. `total` is set on the last chunk, which returns the object.
    /// A transient failure waits per the retry settings before sending again; an answer that
    /// shows no progress is sent again at once; both use up one of the chunk's attempts.
    async fn upload_chunk(
        self,
        data: Bytes,
        first_byte: u64,
        total: Option<u64>,
    ) -> Result<Option<Object>, StoreError> {
        let end = first_byte + data.len() as u64; // exclusive
        let mut from = first_byte;
        let mut waits = self.retry.backoff();
        loop {
            let slice = data.slice(usize::try_from(from - first_byte).unwrap_or(0)..);
            let size = ChunkSize::new(from, end.saturating_sub(1).max(from), total);
            let status = match self.client.upload_multiple_chunk(slice, &size).await {
                Ok(status) => status,
                Err(e) => {
                    let err = map_error(&self.location, e, "upload", &self.key, self.create_only);
                    let wait = match waits.next() {
                        Some(wait) if err.is_retryable() => wait,
                        _ => return Err(err),
                    };
                    tracing::warn!(key = self.key, wait_ms = wait.as_millis(), error = %err, "upload chunk failed; resending it");
                    tokio::time::sleep(wait).await;
                    if !self.ask_status {
                        from = first_byte;
                        continue;
                    }
                    match self.client.status(None).await {
                        Ok(status) => status,
                        Err(_) => {
                            from = first_byte;
                            continue;
                        }
                    }
                }
            };
            match status {
                UploadStatus::Ok(object) if total.is_some() => return Ok(Some(object)),
                UploadStatus::Ok(_) => return Err(self.fail("the server finalized the upload before its last chunk")),
                UploadStatus::ResumeIncomplete(range) => {
                    let persisted = range.last_byte + 1;
                    if persisted < first_byte {
                        return Err(self.fail(format!(
                            "the server lost data: it holds {persisted} bytes, {first_byte} were confirmed"
                        )));
                    }
                    if total.is_none() && persisted >= end {
                        return Ok(None);
                    }
                    if persisted <= from && waits.next().is_none() {
                        return Err(self.fail("the server keeps refusing the chunk"));
                    }
                    from = persisted.min(end);
                }
                UploadStatus::NotStarted if first_byte == 0 => from = 0,
                UploadStatus::NotStarted => return Err(self.fail("the server lost the upload session")),
            }
        }
    }
}

/// What uploading one chunk gives: the finished object after the last chunk.
type ChunkResult = Result<Option<Object>, StoreError>;

/// A streaming upload in progress: one multipart request at [`ObjectWriter::finish`] when
/// everything fit in one chunk, else a resumable session opened at the first full chunk.
pub(super) struct GcsWriter {
    store: GcsStore,
    key: String,
    options: PutOptions,
    buf: BytesMut,
    session: Option<UploadSession>,
    sent: u64,
    /// The chunk being uploaded, and its bytes (handed back so the buffer is reused).
    inflight: Option<tokio::task::JoinHandle<(ChunkResult, Bytes)>>,
    /// The buffer of the last uploaded chunk, for the next one: two buffers in all, allocated
    /// once (allocating one per chunk fragments glibc's heap, which then grows with the object).
    spare: Option<BytesMut>,
    md5: md5::Md5,
    crc: u32,
}

impl std::fmt::Debug for GcsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsWriter").field("key", &self.key).field("sent", &self.sent).finish_non_exhaustive()
    }
}

impl GcsWriter {
    pub(super) fn new(store: GcsStore, key: &str, options: PutOptions) -> Self {
        Self {
            buf: BytesMut::with_capacity(store.chunk_bytes),
            store,
            key: key.to_owned(),
            options,
            session: None,
            sent: 0,
            inflight: None,
            spare: None,
            md5: md5::Md5::new(),
            crc: 0,
        }
    }

    fn create_only(&self) -> bool {
        self.options.precondition == Precondition::DoesNotExist
    }

    async fn wait_inflight(&mut self) -> Result<Option<Object>, StoreError> {
        match self.inflight.take() {
            None => Ok(None),
            Some(h) => {
                let (result, chunk) = h.await.map_err(|e| StoreError::Other {
                    location: self.store.location.to_string(),
                    operation: "upload",
                    key: self.key.clone(),
                    message: e.to_string(),
                })?;
                self.spare = chunk.try_into_mut().ok().map(|mut b| {
                    b.clear();
                    b
                });
                result
            }
        }
    }

    async fn session(&mut self) -> Result<UploadSession, StoreError> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        if self.create_only() {
            // Fail before sending data when the name is taken; the precondition below is what
            // GCS enforces at the end, this check saves the upload.
            self.store.check_absent(&self.key).await?;
        }
        let req = self.store.upload_request(&self.options);
        let meta = UploadType::Multipart(Box::new(self.store.object_resource(&self.key, &self.options)));
        let create_only = self.create_only();
        let store = &self.store;
        let session = store
            .retry
            .retry("start upload", || async {
                store
                    .client
                    .prepare_resumable_upload(&req, &meta)
                    .await
                    .map_err(|e| store.error(e, "start upload", &self.key, create_only))
            })
            .await?;
        let session = UploadSession {
            client: session,
            location: self.store.location.clone(),
            key: self.key.clone(),
            create_only,
            ask_status: !self.store.emulator,
            retry: self.store.retry,
        };
        self.session = Some(session.clone());
        Ok(session)
    }

    async fn send_full_chunk(&mut self) -> Result<(), StoreError> {
        let session = self.session().await?;
        self.wait_inflight().await?;
        let next = self.spare.take().unwrap_or_else(|| BytesMut::with_capacity(self.store.chunk_bytes));
        let chunk = std::mem::replace(&mut self.buf, next).freeze();
        let first = self.sent;
        self.sent += chunk.len() as u64;
        let keep = chunk.clone();
        self.inflight = Some(tokio::spawn(async move { (session.upload_chunk(chunk, first, None).await, keep) }));
        Ok(())
    }

    fn verify(&self, object: Object) -> Result<ObjectMeta, StoreError> {
        let meta = self.store.meta(object);
        let md5 = md5_base64(&self.md5.clone().finalize());
        let crc = crc32c_base64(self.crc);
        let size = self.sent;
        let mismatch = meta.size != size
            || meta.crc32c.as_ref().is_some_and(|c| c != &crc)
            || meta.md5.as_ref().is_some_and(|m| m != &md5);
        if mismatch {
            return Err(StoreError::Integrity {
                location: self.store.location.to_string(),
                operation: "verify upload",
                key: self.key.clone(),
                message: format!(
                    "stored object differs from what was sent (size {} vs {size}, crc32c {:?} vs {crc})",
                    meta.size, meta.crc32c
                ),
            });
        }
        Ok(meta)
    }
}

#[async_trait]
impl ObjectWriter for GcsWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.md5.update(&data);
        self.crc = crc32c::crc32c_append(self.crc, &data);
        // Fill the chunk buffer up to its capacity, never past it: each chunk is one allocation
        // of exactly the chunk size, so memory stays at two chunks instead of growing through
        // reallocations (which, with glibc's malloc, also left the heap fragmented and growing).
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = (self.store.chunk_bytes - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() >= self.store.chunk_bytes {
                self.send_full_chunk().await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        if self.session.is_none() {
            // Everything fits in one request: a multipart upload, whose precondition every
            // GCS implementation honours.
            let data = self.buf.split().freeze();
            self.sent = data.len() as u64;
            let object = self.store.put_object(&self.key, data, &self.options).await?;
            return self.verify(object);
        }
        self.wait_inflight().await?;
        let last = self.buf.split().freeze();
        let first = self.sent;
        self.sent += last.len() as u64;
        let session = self.session().await?;
        let object = session.upload_chunk(last, first, Some(self.sent)).await?.ok_or_else(|| StoreError::Other {
            location: self.store.location.to_string(),
            operation: "finish upload",
            key: self.key.clone(),
            message: "the server did not confirm the finished object".into(),
        })?;
        match self.verify(object) {
            Ok(meta) => Ok(meta),
            Err(e) => {
                let _ = self.store.delete(&self.key).await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        if let Some(h) = self.inflight.take() {
            h.abort();
        }
        if let Some(session) = self.session.take() {
            let _ = session.client.cancel().await;
        }
        Ok(())
    }
}

impl GcsStore {
    /// Some GCS implementations (fake-gcs-server) take a multipart upload's content type from
    /// the media part instead of the metadata part; real GCS does not. When the stored object's
    /// metadata differs from what was asked, it is patched (generation unchanged).
    async fn ensure_metadata(&self, object: Object, options: &PutOptions) -> Result<Object, StoreError> {
        let wanted = self.object_resource(&self.strip(&object.name), options);
        let stored_meta: BTreeMap<String, String> = object.metadata.clone().unwrap_or_default().into_iter().collect();
        let differs = wanted.content_type.is_some() && wanted.content_type != object.content_type
            || wanted.cache_control.is_some() && wanted.cache_control != object.cache_control
            || wanted.content_encoding.is_some() && wanted.content_encoding != object.content_encoding
            || wanted.content_disposition.is_some() && wanted.content_disposition != object.content_disposition
            || wanted.content_language.is_some() && wanted.content_language != object.content_language
            || options.metadata.iter().any(|(k, v)| stored_meta.get(k) != Some(v));
        if !differs {
            return Ok(object);
        }
        let req = PatchObjectRequest {
            bucket: self.bucket.clone(),
            object: object.name.clone(),
            if_generation_match: Some(object.generation),
            metadata: Some(Object {
                content_type: wanted.content_type,
                cache_control: wanted.cache_control,
                content_encoding: wanted.content_encoding,
                content_disposition: wanted.content_disposition,
                content_language: wanted.content_language,
                metadata: wanted.metadata,
                ..Object::default()
            }),
            ..Default::default()
        };
        let key = self.strip(&object.name);
        match self.client.patch_object(&req).await {
            Ok(patched) => Ok(patched),
            // fake-gcs-server answers a PATCH with a body the client cannot decode although the
            // patch was applied: read the object again and check.
            Err(e) => {
                let fresh = self.stat(&key).await?;
                let applied = fresh.content_type == object_ct(&req)
                    && options.metadata.iter().all(|(k, v)| fresh.metadata.get(k) == Some(v));
                if applied {
                    let get = GetObjectRequest {
                        bucket: self.bucket.clone(),
                        object: object.name.clone(),
                        ..Default::default()
                    };
                    self.client.get_object(&get).await.map_err(|e| self.error(e, "stat", &key, false))
                } else {
                    Err(self.error(e, "set metadata", &key, false))
                }
            }
        }
    }

    /// Uploads `data` in one multipart request, retried on transient failures, and makes sure
    /// the stored metadata is what was asked.
    pub(super) async fn put_object(&self, key: &str, data: Bytes, options: &PutOptions) -> Result<Object, StoreError> {
        let req = self.upload_request(options);
        let meta = UploadType::Multipart(Box::new(self.object_resource(key, options)));
        let create_only = options.precondition == Precondition::DoesNotExist;
        let object = self
            .retry
            .retry("put", || async {
                self.client
                    .upload_object(&req, data.clone(), &meta)
                    .await
                    .map_err(|e| self.error(e, "put", key, create_only))
            })
            .await?;
        self.ensure_metadata(object, options).await
    }
}

fn object_ct(req: &PatchObjectRequest) -> Option<String> {
    req.metadata.as_ref().and_then(|m| m.content_type.clone())
}
