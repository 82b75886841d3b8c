//! A store that counts the requests it passes on to a real one (fake-gcs-server or a directory):
//! to measure how many requests a reader makes, not to stand in for the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use lifeboat_core::core::location::Location;
use lifeboat_core::store::{
    ByteStream, CopyOptions, DynStore, KeyRange, ListPage, ObjectMeta, ObjectRef, ObjectStore, ObjectWriter,
    PutOptions, StoreError,
};

/// Requests made through a [`Counting`] store, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    /// Listing pages.
    pub lists: AtomicUsize,
    /// Reads and stats.
    pub reads: AtomicUsize,
    /// Writes, deletes, copies.
    pub writes: AtomicUsize,
}

impl Counts {
    /// (lists, reads, writes) so far.
    pub fn get(&self) -> (usize, usize, usize) {
        (self.lists.load(Ordering::SeqCst), self.reads.load(Ordering::SeqCst), self.writes.load(Ordering::SeqCst))
    }
}

/// A real store, counted.
#[derive(Debug)]
pub struct Counting {
    inner: DynStore,
    /// What went through.
    pub counts: Arc<Counts>,
}

impl Counting {
    /// Counts the requests to `inner`.
    pub fn new(inner: DynStore) -> Self {
        Self { inner, counts: Arc::new(Counts::default()) }
    }
}

fn bump(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::SeqCst);
}

#[async_trait]
impl ObjectStore for Counting {
    fn location(&self) -> &Location {
        self.inner.location()
    }

    fn object_ref(&self, key: &str) -> ObjectRef {
        self.inner.object_ref(key)
    }

    async fn create(&self, key: &str, options: PutOptions) -> Result<Box<dyn ObjectWriter>, StoreError> {
        bump(&self.counts.writes);
        self.inner.create(key, options).await
    }

    async fn put(&self, key: &str, data: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError> {
        bump(&self.counts.writes);
        self.inner.put(key, data, options).await
    }

    async fn read(&self, key: &str) -> Result<ByteStream, StoreError> {
        bump(&self.counts.reads);
        self.inner.read(key).await
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        bump(&self.counts.reads);
        self.inner.stat(key).await
    }

    async fn list_range_page(
        &self,
        prefix: &str,
        range: &KeyRange,
        page_token: Option<String>,
        page_size: u32,
    ) -> Result<ListPage, StoreError> {
        bump(&self.counts.lists);
        self.inner.list_range_page(prefix, range, page_token, page_size).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        bump(&self.counts.writes);
        self.inner.delete(key).await
    }

    async fn copy_from(&self, source: &ObjectRef, key: &str, options: CopyOptions) -> Result<ObjectMeta, StoreError> {
        bump(&self.counts.writes);
        self.inner.copy_from(source, key, options).await
    }
}
