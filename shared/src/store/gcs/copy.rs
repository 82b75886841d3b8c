//! Server-side copies: the rewrite API, called again with the token it answers until the copy
//! is done (large objects, or objects moving between locations or storage classes, take several
//! calls).
//!
//! A copy that replaces the metadata (a restore) states every field explicitly, absent ones
//! as empty values and the custom metadata as a map even when it is empty: a field left out
//! may keep the source's value, and the source of a restore is a content-addressed blob that
//! other objects with the same bytes but other metadata share. A store that still keeps one of
//! the source's values (fake-gcs-server keeps it for every empty field of a rewrite, and no
//! metadata request of it can empty a field again; GCS replaces them) gets the object again
//! through this program instead: the copy is deleted and the source's bytes are streamed into
//! a create-only upload that carries exactly the metadata asked for.

use std::collections::HashMap;

use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::rewrite::{RewriteObjectRequest, RewriteObjectResponse};

use super::GcsStore;
use crate::store::{
    CopyOptions, ObjectMeta, ObjectRef, ObjectStore as _, Precondition, PutOptions, StoreError, check_key,
};

impl GcsStore {
    /// Copies `source` to `key`, create-only.
    pub(super) async fn copy(
        &self,
        source: &ObjectRef,
        key: &str,
        options: CopyOptions,
    ) -> Result<ObjectMeta, StoreError> {
        check_key(&self.full_name(key))?;
        // The rewrite API of the client has no destination ifGenerationMatch; a stat first keeps
        // the create-only promise for everything but a race, where both writers copy identical
        // content-addressed bytes.
        self.check_absent(key).await?;
        let req = RewriteObjectRequest {
            destination_bucket: self.bucket.clone(),
            destination_object: self.full_name(key),
            source_bucket: source.bucket.clone(),
            source_object: source.name.clone(),
            source_generation: source.generation,
            max_bytes_rewritten_per_call: self.rewrite_bytes_per_call,
            destination_metadata: options.metadata.as_ref().map(|m| self.replacement_resource(key, m)),
            ..Default::default()
        };
        let (object, calls) = rewrite_loop(|token| {
            let mut req = req.clone();
            req.rewrite_token = token;
            async move {
                let resp = self
                    .retry
                    .retry("copy", || async {
                        self.client
                            .rewrite_object(&req)
                            .await
                            .map_err(|e| missing_source(self.error(e, "copy", key, false), source))
                    })
                    .await?;
                self.rewrite_step(key, resp)
            }
        })
        .await?;
        tracing::debug!(key, calls, "server-side copy done");
        let copied = self.meta(object);
        match &options.metadata {
            Some(wanted) if !carries(&copied, wanted) => {
                tracing::warn!(
                    key,
                    "the store kept some of the source's metadata on a server-side copy; copying through this program instead"
                );
                self.delete_copy(key).await?;
                self.stream_copy(source, key, wanted).await
            }
            _ => Ok(copied),
        }
    }

    /// The destination resource of a copy that replaces the metadata: every field present,
    /// absent ones empty.
    fn replacement_resource(&self, key: &str, m: &PutOptions) -> Object {
        let explicit = |v: &Option<String>| Some(v.clone().unwrap_or_default());
        Object {
            name: self.full_name(key),
            bucket: self.bucket.clone(),
            content_type: explicit(&m.content_type),
            content_encoding: explicit(&m.content_encoding),
            cache_control: explicit(&m.cache_control),
            content_disposition: explicit(&m.content_disposition),
            content_language: explicit(&m.content_language),
            metadata: Some(m.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()),
            ..Object::default()
        }
    }

    async fn delete_copy(&self, key: &str) -> Result<(), StoreError> {
        self.delete(key).await.map(|_| ())
    }

    /// Copies `source` to `key` through this program: its bytes (the generation of `source`,
    /// when set) streamed into a create-only upload with the `wanted` metadata.
    async fn stream_copy(&self, source: &ObjectRef, key: &str, wanted: &PutOptions) -> Result<ObjectMeta, StoreError> {
        use futures::TryStreamExt as _;
        use gcloud_storage::http::objects::download::Range;
        use gcloud_storage::http::objects::get::GetObjectRequest;
        let req = GetObjectRequest {
            bucket: source.bucket.clone(),
            object: source.name.clone(),
            generation: source.generation,
            ..Default::default()
        };
        let source_location = crate::store::Location::Gcs { bucket: source.bucket.clone(), prefix: String::new() };
        let mut bytes = self
            .retry
            .retry("read", || async {
                self.client
                    .download_streamed_object(&req, &Range::default())
                    .await
                    .map_err(|e| super::error::map_error(&source_location, e, "read", &source.name, false))
            })
            .await?;
        let options = PutOptions { precondition: Precondition::DoesNotExist, ..wanted.clone() };
        let mut writer = self.create(key, options).await?;
        loop {
            match bytes.try_next().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = writer.write(chunk).await {
                        let _ = writer.abort().await;
                        return Err(e);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(super::error::map_error(&source_location, e, "read", &source.name, false));
                }
            }
        }
        writer.finish().await
    }
}

/// True when `object` carries exactly the metadata `wanted` asks for.
fn carries(object: &ObjectMeta, wanted: &PutOptions) -> bool {
    let same = |stored: &Option<String>, asked: &Option<String>| {
        stored.as_deref().unwrap_or_default() == asked.as_deref().unwrap_or_default()
    };
    same(&object.content_type, &wanted.content_type)
        && same(&object.content_encoding, &wanted.content_encoding)
        && same(&object.cache_control, &wanted.cache_control)
        && same(&object.content_disposition, &wanted.content_disposition)
        && same(&object.content_language, &wanted.content_language)
        && object.metadata == wanted.metadata
}

impl GcsStore {
    /// One rewrite answer as a step of [`rewrite_loop`] (both kinds of copy).
    pub(super) fn rewrite_step(&self, key: &str, resp: RewriteObjectResponse) -> Result<RewriteStep, StoreError> {
        match (resp.done, resp.resource, resp.rewrite_token) {
            (true, Some(object), _) => Ok(RewriteStep::Done(Box::new(object))),
            (false, _, Some(token)) if !token.is_empty() => Ok(RewriteStep::Continue(token)),
            _ => Err(StoreError::Other {
                location: self.location.to_string(),
                operation: "copy",
                key: key.to_owned(),
                message: "rewrite answered neither an object nor a token to continue with".into(),
            }),
        }
    }
}

/// A rewrite's "not found" is about the source object (gone or rewritten since it was listed),
/// not about the destination key.
pub(super) fn missing_source(e: StoreError, source: &ObjectRef) -> StoreError {
    match e {
        StoreError::NotFound { .. } => {
            StoreError::NotFound { location: format!("gs://{}", source.bucket), key: source.name.clone() }
        }
        other => other,
    }
}

/// One step of a server-side copy: either done with the object, or a token to continue with.
#[derive(Debug)]
pub(super) enum RewriteStep {
    Done(Box<Object>),
    Continue(String),
}

/// Loops a rewrite until it is done, feeding each call the token of the previous one.
/// Returns the object and the number of calls.
pub(super) async fn rewrite_loop<F, Fut>(mut call: F) -> Result<(Object, u32), StoreError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<RewriteStep, StoreError>>,
{
    let mut token = None;
    let mut calls = 0;
    loop {
        calls += 1;
        match call(token.take()).await? {
            RewriteStep::Done(object) => return Ok((*object, calls)),
            RewriteStep::Continue(next) => token = Some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewrite_loop_feeds_each_token_to_the_next_call() {
        let mut seen = Vec::new();
        let (object, calls) = rewrite_loop(|token| {
            seen.push(token.clone());
            let step = match token.as_deref() {
                None => RewriteStep::Continue("t1".into()),
                Some("t1") => RewriteStep::Continue("t2".into()),
                Some(_) => RewriteStep::Done(Box::new(Object { name: "done".into(), ..Object::default() })),
            };
            async move { Ok(step) }
        })
        .await
        .expect("loop");
        assert_eq!(calls, 3);
        assert_eq!(object.name, "done");
        assert_eq!(seen, [None, Some("t1".to_owned()), Some("t2".to_owned())]);
    }

    #[tokio::test]
    async fn rewrite_loop_stops_at_the_first_error() {
        let mut calls = 0;
        let err = rewrite_loop(|_| {
            calls += 1;
            async { Err::<RewriteStep, _>(StoreError::InvalidName { key: "k".into(), reason: "test" }) }
        })
        .await
        .expect_err("error");
        assert!(matches!(err, StoreError::InvalidName { .. }));
        assert_eq!(calls, 1);
    }
}
