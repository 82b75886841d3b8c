//! Server-side copies: the rewrite API, called again with the token it answers until the copy
//! is done (large objects, or objects moving between locations or storage classes, take several
//! calls).

use gcloud_storage::http::objects::Object;
use gcloud_storage::http::objects::rewrite::RewriteObjectRequest;

use super::GcsStore;
use crate::store::{CopyOptions, ObjectMeta, ObjectRef, StoreError, check_key};

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
            destination_metadata: options.metadata.as_ref().map(|m| self.object_resource(key, m)),
            ..Default::default()
        };
        let (object, calls) = rewrite_loop(|token| {
            let mut req = req.clone();
            req.rewrite_token = token;
            async move {
                let resp = self
                    .retry
                    .retry("copy", || async {
                        self.client.rewrite_object(&req).await.map_err(|e| match self.error(e, "copy", key, false) {
                            StoreError::NotFound { .. } => StoreError::NotFound {
                                location: format!("gs://{}", source.bucket),
                                key: source.name.clone(),
                            },
                            other => other,
                        })
                    })
                    .await?;
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
        })
        .await?;
        tracing::debug!(key, calls, "server-side copy done");
        Ok(self.meta(object))
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
