//! A local directory as an object store (`file:///path`).
//!
//! Layout under the root: objects at `<root>/<key>`; their metadata (hashes, generation, content
//! type, custom metadata) in `<root>/.lifeboat-meta/<key>.json`; writes in progress in
//! `<root>/.lifeboat-tmp/`. A write goes to a temp file, is fsynced, then published with a hard
//! link, which fails atomically when the name is taken: create-only with no window in which a
//! half-written file is visible. Keys are checked so nothing escapes the root.
//!
//! Checksums: the sidecar records the MD5 and CRC32C computed while lifeboat wrote the file. A
//! listing reports those recorded values (as written; listing a store never reads every file),
//! but [`ObjectStore::stat`] never reports a checksum it has not verified: it reads the file and
//! computes its CRC32C (hardware-accelerated; one sequential read of the object), reports that,
//! and reports the recorded MD5 only when the recorded CRC32C matches the computed one. So a
//! stat's CRC32C is that of the bytes present now, as GCS's is, and a file changed behind
//! lifeboat's back shows a CRC32C other than the one recorded.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use md5::Digest as _;

use super::{
    Abandoned, ByteStream, CopyOptions, KeyRange, ListPage, Location, ObjectMeta, ObjectRef, ObjectStore, ObjectWriter,
    Precondition, PutOptions, StoreError, check_key, crc32c_base64, md5_base64,
};

const META_DIR: &str = ".lifeboat-meta";
const TMP_DIR: &str = ".lifeboat-tmp";

/// A directory-backed store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    location: Location,
    root: PathBuf,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Sidecar {
    generation: i64,
    size: u64,
    md5: String,
    crc32c: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    cache_control: Option<String>,
    #[serde(default)]
    content_disposition: Option<String>,
    #[serde(default)]
    content_language: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl LocalStore {
    /// Opens (and creates) the directory of a `file://` location.
    pub fn open(location: Location) -> Result<Self, StoreError> {
        let Location::Local { root } = &location else {
            return Err(StoreError::Other {
                location: location.to_string(),
                operation: "open",
                key: String::new(),
                message: "not a file:// location".into(),
            });
        };
        let root = root.clone();
        for dir in [root.clone(), root.join(META_DIR), root.join(TMP_DIR)] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| io_error(&location, "create directory", &dir.display().to_string(), &e))?;
        }
        Ok(Self { location, root })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        let bad = |reason| Err(StoreError::InvalidName { key: key.to_owned(), reason });
        if key.starts_with('/') {
            return bad("absolute path");
        }
        if key.ends_with('/') {
            return bad("ends with '/'");
        }
        for seg in key.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return bad("has an empty, '.' or '..' path segment");
            }
            if seg.len() > 255 {
                return bad("has a path segment longer than 255 bytes");
            }
        }
        if key.starts_with(META_DIR) || key.starts_with(TMP_DIR) {
            return bad("uses a name reserved by the local store");
        }
        if key.split('/').any(|seg| seg.ends_with(".lifeboat-meta.json")) {
            return bad("uses a suffix reserved by the local store");
        }
        Ok(self.root.join(key))
    }

    fn sidecar_path(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(format!("{key}.lifeboat-meta.json"))
    }

    fn read_sidecar(&self, key: &str) -> Option<Sidecar> {
        let bytes = std::fs::read(self.sidecar_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// [`Self::meta_of`] with the checksums verified: the CRC32C computed from the file's bytes,
    /// the recorded MD5 only when the recorded CRC32C is the computed one.
    fn verified_meta_of(&self, key: &str, path: &Path) -> Result<ObjectMeta, StoreError> {
        let mut meta = self.meta_of(key, path)?;
        let computed = crc32c_of_file(path).map_err(|e| io_error(&self.location, "stat", key, &e))?;
        let computed = crc32c_base64(computed);
        if meta.crc32c.as_deref() != Some(computed.as_str()) {
            meta.md5 = None;
        }
        meta.crc32c = Some(computed);
        Ok(meta)
    }

    fn meta_of(&self, key: &str, path: &Path) -> Result<ObjectMeta, StoreError> {
        let md = match std::fs::metadata(path) {
            Ok(md) if md.is_file() => md,
            Ok(_) => return Err(self.not_found(key)),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.not_found(key)),
            Err(e) => return Err(io_error(&self.location, "stat", key, &e)),
        };
        let updated: DateTime<Utc> = md.modified().map(DateTime::<Utc>::from).unwrap_or_default();
        let side = self.read_sidecar(key).filter(|s| s.size == md.len());
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: md.len(),
            generation: side.as_ref().map_or(updated.timestamp_micros(), |s| s.generation),
            md5: side.as_ref().map(|s| s.md5.clone()),
            crc32c: side.as_ref().map(|s| s.crc32c.clone()),
            updated,
            content_type: side.as_ref().and_then(|s| s.content_type.clone()),
            content_encoding: side.as_ref().and_then(|s| s.content_encoding.clone()),
            cache_control: side.as_ref().and_then(|s| s.cache_control.clone()),
            content_disposition: side.as_ref().and_then(|s| s.content_disposition.clone()),
            content_language: side.as_ref().and_then(|s| s.content_language.clone()),
            metadata: side.map(|s| s.metadata).unwrap_or_default(),
        })
    }

    /// Temp files of writes that never finished (the process was killed: a finished or failed
    /// write removes its own), not modified since `cutoff`: the data files of streamed writes in
    /// `.lifeboat-tmp/` and the half-written metadata files (`*.tmp-<id>`) in `.lifeboat-meta/`.
    fn collect_abandoned_blocking(&self, cutoff: DateTime<Utc>, dry_run: bool) -> Result<Abandoned, StoreError> {
        let mut found = Abandoned::default();
        let mut dirs = vec![self.root.join(TMP_DIR), self.root.join(META_DIR)];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&self.location, "list temp files", &dir.display().to_string(), &e)),
            };
            for entry in entries {
                let entry =
                    entry.map_err(|e| io_error(&self.location, "list temp files", &dir.display().to_string(), &e))?;
                let path = entry.path();
                let Ok(md) = std::fs::symlink_metadata(&path) else { continue }; // removed meanwhile
                if md.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if !md.is_file() || !is_temp_name(&name) {
                    continue;
                }
                let modified = md.modified().map(DateTime::<Utc>::from).unwrap_or(cutoff);
                if modified >= cutoff {
                    continue; // young: a write may still be going on
                }
                if !dry_run {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        Err(e) => {
                            return Err(io_error(&self.location, "delete temp file", &path.display().to_string(), &e));
                        }
                    }
                }
                tracing::info!(file = %path.display(), modified = %modified, dry_run, "abandoned temp file collected");
                found.files += 1;
                found.bytes += md.len();
            }
        }
        Ok(found)
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound { location: self.location.to_string(), key: key.to_owned() }
    }

    fn new_temp(&self) -> Result<(std::fs::File, PathBuf), StoreError> {
        let path = self.root.join(TMP_DIR).join(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(&self.location, "create temp file", &path.display().to_string(), &e))?;
        Ok((file, path))
    }

    /// Publishes a fully written temp file under `key` according to `options.precondition`.
    fn commit(
        &self,
        key: &str,
        temp: &Path,
        size: u64,
        md5: String,
        crc32c: String,
        options: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        let path = self.path_of(key)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(&self.location, "create directory", key, &e))?;
        }
        // One lock serialises commits so generations are unique and compare-and-swap is atomic.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(META_DIR).join(".lock"))
            .map_err(|e| io_error(&self.location, "lock", key, &e))?;
        lock.lock().map_err(|e| io_error(&self.location, "lock", key, &e))?;
        let previous = self.read_sidecar(key).map(|s| s.generation);
        let generation = Utc::now().timestamp_micros().max(previous.unwrap_or(0) + 1);
        match options.precondition {
            Precondition::DoesNotExist => match std::fs::hard_link(temp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(StoreError::AlreadyExists { location: self.location.to_string(), key: key.to_owned() });
                }
                Err(e) => return Err(io_error(&self.location, "publish", key, &e)),
            },
            Precondition::GenerationMatches(expected) => {
                let current = match std::fs::metadata(&path) {
                    Ok(_) => self.meta_of(key, &path)?.generation,
                    Err(e) if e.kind() == ErrorKind::NotFound => 0,
                    Err(e) => return Err(io_error(&self.location, "stat", key, &e)),
                };
                if current != expected {
                    return Err(StoreError::PreconditionFailed {
                        location: self.location.to_string(),
                        key: key.to_owned(),
                    });
                }
                std::fs::rename(temp, &path).map_err(|e| io_error(&self.location, "publish", key, &e))?;
            }
        }
        let side = Sidecar {
            generation,
            size,
            md5,
            crc32c,
            content_type: options.content_type.clone(),
            content_encoding: options.content_encoding.clone(),
            cache_control: options.cache_control.clone(),
            content_disposition: options.content_disposition.clone(),
            content_language: options.content_language.clone(),
            metadata: options.metadata.clone(),
        };
        let side_path = self.sidecar_path(key);
        write_atomically(&side_path, &serde_json::to_vec(&side).unwrap_or_default())
            .map_err(|e| io_error(&self.location, "write metadata", key, &e))?;
        let _ = std::fs::remove_file(temp);
        drop(lock);
        self.meta_of(key, &path)
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Start the walk at the deepest directory the prefix names, so a listing of one series
        // does not walk the whole tree.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir_part).unwrap_or_else(|_| self.root.join("\0"))
        };
        let mut keys = Vec::new();
        let mut stack = vec![(start, dir_part.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                    continue;
                }
                Err(e) => return Err(io_error(&self.location, "list", prefix, &e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error(&self.location, "list", prefix, &e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if rel.is_empty() && (name == META_DIR || name == TMP_DIR) {
                    continue;
                }
                let key = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                let ft = entry.file_type().map_err(|e| io_error(&self.location, "list", prefix, &e))?;
                if ft.is_dir() {
                    if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                        stack.push((entry.path(), key));
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }
}

/// A temp file's name: `<32 hex>.tmp` (streamed writes, [`LocalStore::new_temp`]) or
/// `….tmp-<32 hex>` (metadata files, [`write_atomically`]).
fn is_temp_name(name: &str) -> bool {
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    name.strip_suffix(".tmp").is_some_and(hex32) || name.rsplit_once(".tmp-").is_some_and(|(_, id)| hex32(id))
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn io_error(location: &Location, operation: &'static str, key: &str, e: &std::io::Error) -> StoreError {
    let location = location.to_string();
    let key = key.to_owned();
    match e.kind() {
        ErrorKind::PermissionDenied => StoreError::PermissionDenied { location, key, message: e.to_string() },
        ErrorKind::NotFound => StoreError::NotFound { location, key },
        _ => StoreError::Other { location, operation, key, message: e.to_string() },
    }
}

/// A write in progress: bytes go to a temp file while MD5 and CRC32C are computed.
struct LocalWriter {
    store: LocalStore,
    key: String,
    options: PutOptions,
    file: Option<std::fs::File>,
    temp: PathBuf,
    size: u64,
    md5: md5::Md5,
    crc: u32,
}

impl std::fmt::Debug for LocalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWriter").field("key", &self.key).field("size", &self.size).finish_non_exhaustive()
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Whatever happened, the temp file never outlives the writer.
        let _ = std::fs::remove_file(&self.temp);
    }
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let Some(mut file) = self.file.take() else {
            return Err(StoreError::Other {
                location: self.store.location.to_string(),
                operation: "write",
                key: self.key.clone(),
                message: "writer already failed".into(),
            });
        };
        self.md5.update(&data);
        self.crc = crc32c::crc32c_append(self.crc, &data);
        self.size += data.len() as u64;
        let file = tokio::task::spawn_blocking(move || file.write_all(&data).map(|()| file))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| io_error(&self.store.location, "write", &self.key, &e))?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let file = self.file.take().ok_or_else(|| StoreError::Other {
            location: self.store.location.to_string(),
            operation: "finish",
            key: self.key.clone(),
            message: "writer already failed".into(),
        })?;
        let md5 = md5_base64(&std::mem::take(&mut self.md5).finalize());
        let crc = crc32c_base64(self.crc);
        let this = *self;
        tokio::task::spawn_blocking(move || {
            file.sync_all().map_err(|e| io_error(&this.store.location, "sync", &this.key, &e))?;
            drop(file);
            this.store.commit(&this.key, &this.temp, this.size, md5, crc, &this.options)
        })
        .await
        .map_err(|e| StoreError::Other {
            location: String::new(),
            operation: "finish",
            key: String::new(),
            message: e.to_string(),
        })?
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        Ok(()) // Drop removes the temp file.
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn location(&self) -> &Location {
        &self.location
    }

    fn object_ref(&self, key: &str) -> ObjectRef {
        ObjectRef { bucket: self.root.display().to_string(), name: key.to_owned(), generation: None }
    }

    async fn create(&self, key: &str, options: PutOptions) -> Result<Box<dyn ObjectWriter>, StoreError> {
        self.path_of(key)?;
        let (file, temp) = self.new_temp()?;
        Ok(Box::new(LocalWriter {
            store: self.clone(),
            key: key.to_owned(),
            options,
            file: Some(file),
            temp,
            size: 0,
            md5: md5::Md5::new(),
            crc: 0,
        }))
    }

    async fn put(&self, key: &str, data: Bytes, options: PutOptions) -> Result<ObjectMeta, StoreError> {
        let mut w = self.create(key, options).await?;
        w.write(data).await?;
        w.finish().await
    }

    async fn read(&self, key: &str) -> Result<ByteStream, StoreError> {
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| io_error(&self.location, "read", key, &e))?;
        let location = self.location.clone();
        let key = key.to_owned();
        Ok(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .map(move |r| r.map_err(|e| io_error(&location, "read", &key, &e)))
            .boxed())
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path_of(key)?;
        let this = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || this.verified_meta_of(&key, &path)).await.map_err(|e| {
            StoreError::Other {
                location: self.location.to_string(),
                operation: "stat",
                key: String::new(),
                message: e.to_string(),
            }
        })?
    }

    async fn list_range_page(
        &self,
        prefix: &str,
        range: &KeyRange,
        page_token: Option<String>,
        page_size: u32,
    ) -> Result<ListPage, StoreError> {
        let this = self.clone();
        let prefix = prefix.to_owned();
        let page_size = page_size.clamp(1, 5000) as usize;
        let range = range.clone();
        tokio::task::spawn_blocking(move || {
            let mut keys = this.list_keys(&prefix)?;
            keys.retain(|k| range.contains(k));
            let start = page_token.as_ref().map_or(0, |t| keys.partition_point(|k| k <= t));
            let mut objects = Vec::new();
            let mut last = None;
            for key in keys.iter().skip(start).take(page_size) {
                last = Some(key.clone());
                match this.meta_of(key, &this.root.join(key)) {
                    Ok(m) => objects.push(m),
                    Err(e) if e.is_not_found() => {} // deleted meanwhile
                    Err(e) => return Err(e),
                }
            }
            let more = start + page_size < keys.len();
            Ok(ListPage { objects, next_page_token: if more { last } else { None } })
        })
        .await
        .map_err(|e| StoreError::Other {
            location: self.location.to_string(),
            operation: "list",
            key: String::new(),
            message: e.to_string(),
        })?
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        let removed = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(io_error(&self.location, "delete", key, &e)),
        };
        let _ = std::fs::remove_file(self.sidecar_path(key));
        // Tidy empty directories up to the root, as a bucket has no directories.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(removed)
    }

    async fn copy_from(&self, source: &ObjectRef, key: &str, options: CopyOptions) -> Result<ObjectMeta, StoreError> {
        let src = LocalStore::open(Location::Local { root: PathBuf::from(&source.bucket) })?;
        let src_path = src.path_of(&source.name)?;
        let meta = src.stat(&source.name).await?;
        if source.generation.is_some_and(|g| g != meta.generation) {
            return Err(src.not_found(&source.name));
        }
        self.path_of(key)?;
        let put = options.metadata.unwrap_or(PutOptions {
            precondition: Precondition::DoesNotExist,
            content_type: meta.content_type.clone(),
            content_encoding: meta.content_encoding.clone(),
            cache_control: meta.cache_control.clone(),
            content_disposition: meta.content_disposition.clone(),
            content_language: meta.content_language.clone(),
            metadata: meta.metadata.clone(),
        });
        let this = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let (_file, temp) = this.new_temp()?;
            let guard = TempGuard(temp.clone());
            let (size, md5, crc) =
                copy_hashing(&src_path, &temp).map_err(|e| io_error(&this.location, "copy", &key, &e))?;
            let result = this.commit(&key, &temp, size, md5, crc, &put);
            drop(guard);
            result
        })
        .await
        .map_err(|e| StoreError::Other {
            location: self.location.to_string(),
            operation: "copy",
            key: String::new(),
            message: e.to_string(),
        })?
    }

    async fn collect_abandoned(&self, cutoff: DateTime<Utc>, dry_run: bool) -> Result<Abandoned, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.collect_abandoned_blocking(cutoff, dry_run)).await.map_err(|e| {
            StoreError::Other {
                location: self.location.to_string(),
                operation: "collect temp files",
                key: String::new(),
                message: e.to_string(),
            }
        })?
    }
}

/// The CRC32C of a file's bytes, read in bounded memory.
fn crc32c_of_file(path: &Path) -> std::io::Result<u32> {
    use std::io::Read as _;
    let mut input = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut crc = 0u32;
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(crc),
            Ok(n) => crc = crc32c::crc32c_append(crc, &buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copies `from` to `to` in bounded memory, returning size, MD5 and CRC32C of the bytes.
fn copy_hashing(from: &Path, to: &Path) -> std::io::Result<(u64, String, String)> {
    use std::io::Read as _;
    let mut input = std::fs::File::open(from)?;
    let mut output = std::fs::File::create(to)?;
    let mut buf = vec![0u8; 1024 * 1024];
    let (mut size, mut md5, mut crc) = (0u64, md5::Md5::new(), 0u32);
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        output.write_all(&buf[..n])?;
        size += n as u64;
    }
    output.sync_all()?;
    Ok((size, md5_base64(&md5.finalize()), crc32c_base64(crc)))
}

struct TempGuard(PathBuf);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let loc = Location::Local { root: dir.path().to_path_buf() };
        (dir, LocalStore::open(loc).expect("open"))
    }

    #[tokio::test]
    async fn abandoned_temp_files_are_collected_once_old() {
        let (d, s) = store();
        let aged = |path: &Path, hours: u64| {
            let f = std::fs::OpenOptions::new().write(true).open(path).expect("open");
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3600)).expect("mtime");
        };
        let (_f, old) = s.new_temp().expect("temp");
        std::fs::write(&old, b"half a dump").expect("write");
        aged(&old, 72);
        let (_f, young) = s.new_temp().expect("temp");
        let meta_dir = d.path().join(META_DIR).join("db/x");
        std::fs::create_dir_all(&meta_dir).expect("mkdir");
        let old_meta = meta_dir.join(format!("m.lifeboat-meta.tmp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&old_meta, b"{").expect("write");
        aged(&old_meta, 72);
        // Not ours: stays, however old.
        let foreign = d.path().join(TMP_DIR).join("notes.txt");
        std::fs::write(&foreign, b"x").expect("write");
        aged(&foreign, 72);
        let cutoff = Utc::now() - chrono::Duration::hours(48);

        let dry = s.collect_abandoned(cutoff, true).await.expect("dry run");
        assert_eq!(dry, Abandoned { files: 2, bytes: 12 });
        assert!(old.exists() && old_meta.exists(), "a dry run deletes nothing");
        let done = s.collect_abandoned(cutoff, false).await.expect("collect");
        assert_eq!(done, Abandoned { files: 2, bytes: 12 });
        assert!(!old.exists() && !old_meta.exists());
        assert!(young.exists() && foreign.exists(), "young and foreign files stay");
        assert_eq!(s.collect_abandoned(cutoff, false).await.expect("again"), Abandoned::default());
    }

    #[test]
    fn names_cannot_escape_the_root() {
        let (_d, s) = store();
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a\0b",
            "",
            "a/",
            ".lifeboat-meta/x",
            "a/b.lifeboat-meta.json",
        ] {
            assert!(matches!(s.path_of(bad), Err(StoreError::InvalidName { .. })), "{bad:?} accepted");
        }
        assert!(s.path_of("db/main/x/manifest.json").is_ok());
        assert!(s.path_of("name with spaces #?%/ünïcode").is_ok());
    }

    #[tokio::test]
    async fn stat_reports_only_checksums_it_verified() {
        let (d, s) = store();
        let written = s.put("k", Bytes::from_static(b"original bytes"), PutOptions::default()).await.expect("put");
        let stat = s.stat("k").await.expect("stat");
        assert_eq!((stat.crc32c.as_ref(), stat.md5.as_ref()), (written.crc32c.as_ref(), written.md5.as_ref()));
        // Changed behind the store's back, same size: the sidecar still records the old checksums.
        std::fs::write(d.path().join("k"), b"ORIGINAL bytes").expect("rot");
        let listed = s.list_page("", None, 10).await.expect("list").objects.remove(0);
        assert_eq!(listed.crc32c, written.crc32c, "a listing reports what was recorded");
        let stat = s.stat("k").await.expect("stat");
        assert_eq!(stat.crc32c, Some(crc32c_base64(crc32c::crc32c(b"ORIGINAL bytes"))), "the bytes present");
        assert_ne!(stat.crc32c, written.crc32c);
        assert_eq!(stat.md5, None, "the recorded MD5 is no longer known to describe the bytes");
        // A file lifeboat did not write: no sidecar, still a verified CRC32C.
        std::fs::write(d.path().join("foreign"), b"x").expect("foreign");
        let stat = s.stat("foreign").await.expect("stat");
        assert_eq!((stat.crc32c, stat.md5), (Some(crc32c_base64(crc32c::crc32c(b"x"))), None));
    }

    #[tokio::test]
    async fn aborted_and_dropped_writes_leave_nothing() {
        let (d, s) = store();
        let mut w = s.create("a/b", PutOptions::default()).await.expect("create");
        w.write(Bytes::from_static(b"partial")).await.expect("write");
        w.abort().await.expect("abort");
        let mut w = s.create("a/c", PutOptions::default()).await.expect("create");
        w.write(Bytes::from_static(b"partial")).await.expect("write");
        drop(w);
        assert!(s.list_page("", None, 100).await.expect("list").objects.is_empty());
        assert_eq!(std::fs::read_dir(d.path().join(TMP_DIR)).expect("tmp").count(), 0);
    }
}
