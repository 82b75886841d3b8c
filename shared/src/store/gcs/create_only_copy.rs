//! The create-only copy of a content-addressed object: one rewrite request per call of the
//! rewrite-token loop (one in all for objects that GCS copies in one go, i.e. within a location
//! and storage class), carrying `ifGenerationMatch=0` for the destination and, when the caller
//! pins one, the source generation. A 412 answers "the name is taken", which for a
//! content-addressed name means the content is stored already.
//!
//! Why the source stays pinned (`sourceGeneration`) although that makes each request name a
//! generation: the destination's name is computed from the listed content (MD5 and size). An
//! unpinned copy of an object rewritten since it was listed would put other bytes under that
//! name; the answer would show it, but removing the wrong blob is not always possible (the
//! backups bucket's retention policy forbids deletes), and a later snapshot finding the name
//! taken would trust it. With the pin, a rewritten object answers "not found" and the snapshot
//! reads it again. A source precondition (`ifSourceGenerationMatch`) would guard as well, but
//! its failure is the same 412 as a taken destination, and telling the two apart costs a request.

use super::GcsStore;
use super::copy::{missing_source, rewrite_loop};
use super::json::CreateOnlyRewrite;
use crate::store::{ObjectMeta, ObjectRef, StoreError, check_key};

impl GcsStore {
    /// Copies `source` to `key` unless `key` exists ([`StoreError::AlreadyExists`]).
    pub(super) async fn create_only_copy(&self, source: &ObjectRef, key: &str) -> Result<ObjectMeta, StoreError> {
        let destination = self.full_name(key);
        check_key(&destination)?;
        if self.lookup_before_copy {
            self.check_absent(key).await?;
        }
        let (object, calls) = rewrite_loop(|token| {
            let destination = &destination;
            async move {
                let call = CreateOnlyRewrite {
                    source_bucket: &source.bucket,
                    source_object: &source.name,
                    source_generation: source.generation,
                    destination_bucket: &self.bucket,
                    destination_object: destination,
                    max_bytes_per_call: self.rewrite_bytes_per_call,
                    rewrite_token: token.as_deref(),
                };
                let resp = self
                    .retry
                    .retry("copy", || async {
                        self.json
                            .rewrite_create_only(&call)
                            .await
                            .map_err(|e| missing_source(self.error(e, "copy", key, true), source))
                    })
                    .await?;
                self.rewrite_step(key, resp)
            }
        })
        .await?;
        tracing::debug!(key, calls, "create-only server-side copy done");
        Ok(self.meta(object))
    }
}
