//! What the backup store holds, read from the store itself: the listing behind every freshness
//! figure (`health`, `monitor`, `console`) and every retention plan (`prune`).
//!
//! The model and the judgement are pure and live in the core ([`crate::core::series`],
//! [`crate::core::freshness`]); this module only takes the listing and hands it over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;

use crate::core::freshness::{Freshness, evaluate};
use crate::core::object::ObjectMeta;
use crate::core::series::{Kind, Series, series_from_listing};
use crate::store::{ObjectStore, ObjectStoreExt as _, StoreError};

/// Lists the database backups of `source` and every bucket snapshot in the store.
pub async fn load(store: &dyn ObjectStore, source: &str) -> Result<Vec<Series>, StoreError> {
    let db_prefix = format!("db/{}/", crate::core::naming::encode_segment(source));
    let mut objects: Vec<ObjectMeta> = store.list_all(&db_prefix).try_collect().await?;
    let storage = store.list_all("storage/").try_filter(|o| futures::future::ready(o.key.contains("/snapshots/")));
    objects.extend(storage.try_collect::<Vec<_>>().await?);
    Ok(series_from_listing(objects))
}

/// Lists the store and evaluates freshness at `now` (shared by `health`, `monitor` and `console`).
/// `encryption_required`: this deployment has `BACKUP_ENCRYPTION_RECIPIENTS` set (see
/// [`evaluate`]).
pub async fn assess(
    store: &dyn ObjectStore,
    source: &str,
    expected: &[(Kind, String, String)],
    now: DateTime<Utc>,
    max_age: Duration,
    encryption_required: bool,
) -> Result<Vec<Freshness>, StoreError> {
    let series = load(store, source).await?;
    Ok(evaluate(&series, expected, now, max_age, encryption_required))
}
