//! The create-only copy of a content-addressed object: one rewrite request per call of the
//! rewrite-token loop (one in all for objects that GCS copies in one go, i.e. within a location
//! and storage class), carrying `ifGenerationMatch=0` for the destination and, when the caller
//! names the listed generation, `ifSourceGenerationMatch` for the source. A 412 answers "the
//! name is taken" (for a content-addressed name: the content is stored already) or "the source
//! is no longer the listed generation".
//!
//! Why the source generation is guarded at all: the destination's name is computed from the
//! listed content (MD5 and size). A copy of an object rewritten since it was listed would put
//! other bytes under that name; the answer would show it, but removing the wrong blob is not
//! always possible (the backups bucket's retention policy forbids deletes), and a later snapshot
//! finding the name taken would trust it.
//!
//! Why a precondition and not a pin (`sourceGeneration`), which guards as well and never answers
//! 412 for the source: both cost GCS the same, but a request naming a generation makes
//! fake-gcs-server (where the benchmarks run) scan every object of the source bucket with
//! twice the work of a lookup by name: 5.9 s against 3.4 s for 2,000 copies, the largest part
//! of a first snapshot's time (`bench/storage-backup.sh` measures it in every run). The price of
//! the precondition: its 412 is ambiguous, so a 412 is asked again once, pinned, which can only
//! answer 412 for a taken destination (already exists) or 404 for a source rewritten since it
//! was listed. That second request happens only for content stored already under another name
//! (a rename, a duplicate, a revert), or for an object rewritten during the run.
//!
//! fake-gcs-server ignores both preconditions on rewrites; see
//! [`GcsStore::with_lookup_before_copy`] for the tests, and the snapshot's check of every copied
//! blob against the listing (`bucket::backup`), which removes other bytes should they arrive.

use std::future::Future;

use super::GcsStore;
use super::copy::{missing_source, rewrite_loop};
use super::json::{CreateOnlyRewrite, SourceGuard};
use crate::store::{ObjectMeta, ObjectRef, StoreError, check_key};

impl GcsStore {
    /// Copies `source` to `key` unless `key` exists ([`StoreError::AlreadyExists`]); with a
    /// source generation, only that generation ([`StoreError::NotFound`] for the source once the
    /// object is another generation or gone).
    pub(super) async fn create_only_copy(&self, source: &ObjectRef, key: &str) -> Result<ObjectMeta, StoreError> {
        let destination = self.full_name(key);
        check_key(&destination)?;
        if self.lookup_before_copy {
            self.check_absent(key).await?;
            if let Some(generation) = source.generation {
                self.check_source_generation(source, generation).await?;
            }
        }
        let guarded = match source.generation {
            Some(g) if self.pinned_copies => SourceGuard::Pin(g),
            Some(g) => SourceGuard::Precondition(g),
            None => SourceGuard::None,
        };
        settle_precondition(guarded, |guard| self.rewrite_create_only(source, key, &destination, guard)).await
    }

    /// The rewrite-token loop of one create-only copy.
    async fn rewrite_create_only(
        &self,
        source: &ObjectRef,
        key: &str,
        destination: &str,
        guard: SourceGuard,
    ) -> Result<ObjectMeta, StoreError> {
        let (object, calls) = rewrite_loop(|token| async move {
            let call = CreateOnlyRewrite {
                source_bucket: &source.bucket,
                source_object: &source.name,
                source: guard,
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
        })
        .await?;
        tracing::debug!(key, calls, ?guard, "create-only server-side copy done");
        Ok(self.meta(object))
    }

    /// What GCS checks with `ifSourceGenerationMatch`, by a lookup (emulator tests only).
    async fn check_source_generation(&self, source: &ObjectRef, generation: i64) -> Result<(), StoreError> {
        use gcloud_storage::http::objects::get::GetObjectRequest;
        let req = GetObjectRequest { bucket: source.bucket.clone(), object: source.name.clone(), ..Default::default() };
        let source_location = crate::store::Location::Gcs { bucket: source.bucket.clone(), prefix: String::new() };
        let live = self
            .retry
            .retry("stat", || async {
                self.client
                    .get_object(&req)
                    .await
                    .map_err(|e| super::error::map_error(&source_location, e, "stat", &source.name, false))
            })
            .await?;
        if live.generation == generation {
            Ok(())
        } else {
            Err(StoreError::NotFound { location: format!("gs://{}", source.bucket), key: source.name.clone() })
        }
    }
}

/// Runs a create-only copy guarded by a source precondition, and settles a 412 (a taken
/// destination, or a source that is no longer the listed generation) by asking once more,
/// pinned to that generation: a pinned copy answers "already exists" only for a taken
/// destination and "not found" for a source rewritten or deleted since it was listed (or copies
/// the listed bytes, should the destination have been freed in between).
async fn settle_precondition<F, Fut>(guard: SourceGuard, mut copy: F) -> Result<ObjectMeta, StoreError>
where
    F: FnMut(SourceGuard) -> Fut,
    Fut: Future<Output = Result<ObjectMeta, StoreError>>,
{
    match (copy(guard).await, guard) {
        (Err(StoreError::AlreadyExists { .. }), SourceGuard::Precondition(g)) => copy(SourceGuard::Pin(g)).await,
        (result, _) => result,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn taken() -> StoreError {
        StoreError::AlreadyExists { location: "gs://b".into(), key: "blobs/x".into() }
    }

    fn gone() -> StoreError {
        StoreError::NotFound { location: "gs://src".into(), key: "a".into() }
    }

    fn copied() -> ObjectMeta {
        ObjectMeta { key: "blobs/x".into(), size: 3, generation: 9, ..ObjectMeta::default() }
    }

    /// Runs `settle_precondition` against answers given per guard; returns the result and the guards asked.
    async fn settle(
        guard: SourceGuard,
        answer: impl Fn(SourceGuard) -> Result<ObjectMeta, StoreError>,
    ) -> (Result<ObjectMeta, StoreError>, Vec<SourceGuard>) {
        let asked = RefCell::new(Vec::new());
        let result = settle_precondition(guard, |g| {
            asked.borrow_mut().push(g);
            let r = answer(g);
            async move { r }
        })
        .await;
        (result, asked.into_inner())
    }

    #[tokio::test]
    async fn a_copy_that_succeeds_or_fails_otherwise_is_one_request() {
        let (r, asked) = settle(SourceGuard::Precondition(7), |_| Ok(copied())).await;
        assert_eq!((r.expect("copied").generation, asked), (9, vec![SourceGuard::Precondition(7)]));
        let (r, asked) = settle(SourceGuard::Precondition(7), |_| Err(gone())).await;
        assert!(r.expect_err("gone").is_not_found());
        assert_eq!(asked.len(), 1);
        let (r, asked) = settle(SourceGuard::None, |_| Err(taken())).await;
        assert!(matches!(r, Err(StoreError::AlreadyExists { .. })), "without a guard a 412 is a taken name");
        assert_eq!(asked, vec![SourceGuard::None]);
    }

    #[tokio::test]
    async fn a_412_is_asked_again_pinned_to_tell_a_taken_name_from_a_rewritten_source() {
        // The destination exists: the pinned request says so too.
        let (r, asked) = settle(SourceGuard::Precondition(7), |_| Err(taken())).await;
        assert!(matches!(r, Err(StoreError::AlreadyExists { .. })), "{r:?}");
        assert_eq!(asked, vec![SourceGuard::Precondition(7), SourceGuard::Pin(7)]);
        // The source was rewritten (unversioned bucket): the pinned generation is gone.
        let (r, _) = settle(SourceGuard::Precondition(7), |g| match g {
            SourceGuard::Precondition(_) => Err(taken()),
            _ => Err(gone()),
        })
        .await;
        assert!(r.expect_err("rewritten").is_not_found());
        // The listed generation is still readable (a versioned bucket): the pin copies exactly it.
        let (r, _) = settle(SourceGuard::Precondition(7), |g| match g {
            SourceGuard::Precondition(_) => Err(taken()),
            _ => Ok(copied()),
        })
        .await;
        assert_eq!(r.expect("copied").key, "blobs/x");
    }
}
