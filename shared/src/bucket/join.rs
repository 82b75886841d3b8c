//! Streaming merge-join of two name-ordered streams, and order checks.
//!
//! Both sides are consumed one item at a time, so memory does not grow with their length. The
//! join is only correct on ordered input: [`strictly_ordered`] turns disorder into an error (for
//! streams whose order a decision depends on) and [`ordered_or_end`] ends a stream at the first
//! disorder (for hints, where stopping early only costs requests).

use std::cmp::Ordering;

use futures::stream::{BoxStream, Stream, StreamExt};

use super::SnapshotError;
use crate::core::snapshot_manifest::SnapshotEntry;
use crate::store::ObjectMeta;

/// Something with a name, the join key.
pub trait Named {
    /// The name.
    fn name(&self) -> &str;
}

impl Named for ObjectMeta {
    fn name(&self) -> &str {
        &self.key
    }
}

impl Named for SnapshotEntry {
    fn name(&self) -> &str {
        &self.name
    }
}

/// One step of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined<L, R> {
    /// Only on the left.
    Left(L),
    /// Only on the right.
    Right(R),
    /// The same name on both sides.
    Both(L, R),
}

struct JoinState<'a, L, R> {
    left: BoxStream<'a, Result<L, SnapshotError>>,
    right: BoxStream<'a, Result<R, SnapshotError>>,
    left_head: Option<L>,
    right_head: Option<R>,
    left_done: bool,
    right_done: bool,
}

async fn pull<'a, T>(
    stream: &mut BoxStream<'a, Result<T, SnapshotError>>,
    head: &mut Option<T>,
    done: &mut bool,
) -> Result<(), SnapshotError> {
    if head.is_none() && !*done {
        match stream.next().await {
            Some(item) => *head = Some(item?),
            None => *done = true,
        }
    }
    Ok(())
}

/// Full outer merge-join by name of two streams in strict name order.
pub fn merge_join<'a, L, R>(
    left: impl Stream<Item = Result<L, SnapshotError>> + Send + 'a,
    right: impl Stream<Item = Result<R, SnapshotError>> + Send + 'a,
) -> BoxStream<'a, Result<Joined<L, R>, SnapshotError>>
where
    L: Named + Send + 'a,
    R: Named + Send + 'a,
{
    let state = JoinState {
        left: left.boxed(),
        right: right.boxed(),
        left_head: None,
        right_head: None,
        left_done: false,
        right_done: false,
    };
    futures::stream::try_unfold(state, |mut s| async move {
        pull(&mut s.left, &mut s.left_head, &mut s.left_done).await?;
        pull(&mut s.right, &mut s.right_head, &mut s.right_done).await?;
        let step = match (s.left_head.take(), s.right_head.take()) {
            (None, None) => return Ok(None),
            (Some(l), None) => Joined::Left(l),
            (None, Some(r)) => Joined::Right(r),
            (Some(l), Some(r)) => match l.name().cmp(r.name()) {
                Ordering::Less => {
                    s.right_head = Some(r);
                    Joined::Left(l)
                }
                Ordering::Greater => {
                    s.left_head = Some(l);
                    Joined::Right(r)
                }
                Ordering::Equal => Joined::Both(l, r),
            },
        };
        Ok(Some((step, s)))
    })
    .boxed()
}

/// Passes `stream` through, failing with [`SnapshotError::OutOfOrder`] at the first name that is
/// not strictly greater than the one before.
pub fn strictly_ordered<'a, T: Named + Send + 'a>(
    stream: impl Stream<Item = Result<T, SnapshotError>> + Send + 'a,
    what: impl Into<String>,
) -> BoxStream<'a, Result<T, SnapshotError>> {
    let what = what.into();
    let mut last: Option<String> = None;
    stream
        .map(move |item| {
            let item = item?;
            if let Some(prev) = &last
                && item.name() <= prev.as_str()
            {
                return Err(SnapshotError::OutOfOrder {
                    what: what.clone(),
                    previous: prev.clone(),
                    next: item.name().to_owned(),
                });
            }
            last = Some(item.name().to_owned());
            Ok(item)
        })
        .boxed()
}

/// Passes `stream` through until its first name that is not strictly greater than the one
/// before; then it ends (with a warning). Errors end it too, also with a warning: for hints only.
pub fn ordered_or_end<'a, T: Named + Send + 'a>(
    stream: impl Stream<Item = Result<T, SnapshotError>> + Send + 'a,
    what: impl Into<String>,
) -> BoxStream<'a, Result<T, SnapshotError>> {
    let what = what.into();
    strictly_ordered(stream, what.clone())
        .take_while(move |item| {
            if let Err(e) = item {
                tracing::warn!(error = %e, "{what} ends here; later names are checked against the store instead");
            }
            futures::future::ready(item.is_ok())
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;

    use super::*;

    fn objects(names: &[&str]) -> Vec<Result<ObjectMeta, SnapshotError>> {
        names.iter().map(|n| Ok(ObjectMeta { key: (*n).into(), ..ObjectMeta::default() })).collect()
    }

    fn shape(j: &Joined<ObjectMeta, ObjectMeta>) -> String {
        match j {
            Joined::Left(l) => format!("L:{}", l.key),
            Joined::Right(r) => format!("R:{}", r.key),
            Joined::Both(l, r) => {
                assert_eq!(l.key, r.key);
                format!("B:{}", l.key)
            }
        }
    }

    async fn join(left: &[&str], right: &[&str]) -> Vec<String> {
        let l = futures::stream::iter(objects(left));
        let r = futures::stream::iter(objects(right));
        let out: Vec<_> = merge_join(l, r).try_collect().await.expect("join");
        out.iter().map(shape).collect()
    }

    #[tokio::test]
    async fn joins_like_a_full_outer_join() {
        assert_eq!(
            join(&["a", "b b", "c", "e"], &["b b", "d", "e", "f"]).await,
            ["L:a", "B:b b", "L:c", "R:d", "B:e", "R:f"]
        );
        assert_eq!(join(&[], &["x"]).await, ["R:x"]);
        assert_eq!(join(&["x"], &[]).await, ["L:x"]);
        assert!(join(&[], &[]).await.is_empty());
        // Byte order, as GCS lists: ' ' < '/' < '0' < 'A' < 'a' < non-ASCII.
        assert_eq!(
            join(&["a b", "a/b", "aB", "ab", "añ"], &["a/b", "añ"]).await,
            ["L:a b", "B:a/b", "L:aB", "L:ab", "B:añ"]
        );
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let l = futures::stream::iter(vec![
            Ok(ObjectMeta { key: "a".into(), ..ObjectMeta::default() }),
            Err(SnapshotError::Cancelled),
        ]);
        let r = futures::stream::iter(objects(&["a", "b"]));
        let out: Result<Vec<_>, _> = merge_join(l, r).try_collect().await;
        assert!(matches!(out, Err(SnapshotError::Cancelled)));
    }

    #[tokio::test]
    async fn disorder_is_an_error_or_an_end() {
        let s = strictly_ordered(futures::stream::iter(objects(&["a", "c", "b"])), "the listing");
        let err = s.try_collect::<Vec<_>>().await.expect_err("disorder");
        assert_eq!(err.to_string(), "the listing is not in name order: \"b\" came after \"c\"");
        let s = strictly_ordered(futures::stream::iter(objects(&["a", "a"])), "x");
        assert!(s.try_collect::<Vec<_>>().await.is_err(), "duplicates are disorder");
        let s = ordered_or_end(futures::stream::iter(objects(&["a", "c", "b", "d"])), "hint");
        let kept: Vec<_> = s.try_collect().await.expect("ends quietly");
        assert_eq!(kept.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }
}
