//! Files attached to posts: their bytes beside the store, content-addressed
//! by SHA-256, and the records about them.
//!
//! **Bytes** live in `DATA/files/`, not in sled, whose log would otherwise
//! carry every byte twice and keep it until a segment is rewritten:
//! * `objects/XX/<64 hex>`: a whole file, verified against its name;
//! * `partial/<name>`: a file while it arrives (a member's upload, a
//!   partner's transfer), resumable from its length.
//!
//! A file is whole under its hash or not there at all. [`Partial::finish`]
//! writes, `fdatasync`s, checks the hash, renames into `objects/` and
//! `fsync`s the directories before it returns, and only then is anything
//! that references the file committed: bytes before the reference, so after
//! a power cut no acknowledged message names bytes that are not on disk.
//! (The same order as git's loose objects and as media servers' stores.)
//!
//! **Records** (tree `files`, layouts in [`super::keys`]): each member's
//! finished uploads with their time, which are what a post may reference
//! (a member attaches only what they uploaded: knowing a hash is not
//! holding the file) and what the sweep removes once unposted for
//! `limits.unposted_upload_seconds`. Which messages reference a file is
//! written with the messages themselves ([`super::StoreBatch`]), in the
//! `log` tree, so the two never disagree; bytes a stored message references
//! are never removed.
//!
//! Blocking file I/O: async callers run these on the blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::kv::sync_dir;
use super::{Store, StoreError, keys};
use crate::model::{ChannelId, FileHash, MemberName, OrgId};

/// Where a file's bytes are, under `DATA/files`.
#[derive(Debug)]
pub struct Files {
    objects: PathBuf,
    partial: PathBuf,
    /// Held shared by a post from the moment it checks its files until it
    /// is durable, and exclusively by the sweep: an upload the sweep finds
    /// unposted cannot become posted while it removes it.
    sweep: Arc<tokio::sync::RwLock<()>>,
    pacer: Pacer,
    /// Partial files being written now: a second writer of the same one
    /// (a retry while the first upload still runs) is refused.
    writing: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// A partial file one writer holds; let go on drop.
#[derive(Debug)]
pub struct Writing {
    name: String,
    writing: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        crate::locks::lock(&self.writing).remove(&self.name);
    }
}

/// While messages are being written, file bytes are written at most at a
/// set rate, node-wide: every message waits for an `fdatasync`, and behind
/// a large backlog of file data the kernel is writing back, that wait grew
/// from about 2 ms to over 100 ms in `samband bench attach`
/// (`docs/BENCHMARKS.md`). When no message was written for
/// [`MESSAGES_WINDOW`], files go at full speed.
#[derive(Debug)]
struct Pacer {
    /// When a message was last written, µs after `since` (0: never).
    last_message_us: AtomicU64,
    since: Instant,
    /// Bytes per second while messages flow (0: no limit).
    rate: AtomicU64,
    /// When the paced writes reserved so far are done.
    next_free: Mutex<Instant>,
}

impl Pacer {
    /// Reserves `n` bytes of file writes at `now`: how long to wait first.
    fn reserve(&self, n: usize, now: Instant) -> Duration {
        let rate = self.rate.load(Ordering::Relaxed);
        let last = self.last_message_us.load(Ordering::Relaxed);
        let at = now.saturating_duration_since(self.since).as_micros() as u64;
        if rate == 0 || last == 0 || at > last + MESSAGES_WINDOW.as_micros() as u64 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(n as f64 / rate as f64);
        let mut next = crate::locks::lock(&self.next_free);
        let start = (*next).max(now);
        *next = start + cost;
        start.saturating_duration_since(now)
    }
}

/// How long after a message file writes are still paced.
const MESSAGES_WINDOW: Duration = Duration::from_secs(1);

/// Why a file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("writing file bytes to {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The bytes are not the ones named: nothing of them is kept.
    #[error("the bytes received have SHA-256 {actual}, not {expected}")]
    Mismatch {
        expected: FileHash,
        actual: FileHash,
    },
    /// A resume that does not start where the held bytes end.
    #[error("this node holds {held} bytes of it; send from offset {held}, not {offset}")]
    Offset { held: u64, offset: u64 },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whose bytes a partial file is: a member's upload, or a partner's
/// transfer of a file a message references.
#[derive(Debug, Clone)]
pub enum PartialOf<'a> {
    Upload(&'a MemberName, &'a FileHash),
    Transfer(&'a FileHash),
}

impl PartialOf<'_> {
    fn file_name(&self) -> String {
        match self {
            // Member names are a-z 0-9 . _ - (no `/`), so this stays inside.
            PartialOf::Upload(member, hash) => format!("u-{member}-{hash}"),
            PartialOf::Transfer(hash) => format!("t-{hash}"),
        }
    }
}

/// A file being written, with the SHA-256 of what it holds so far.
pub struct Partial {
    file: File,
    path: PathBuf,
    hasher: ring::digest::Context,
    len: u64,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl Files {
    pub(super) fn open(data: &Path) -> Result<Self, StoreError> {
        let root = data.join("files");
        let files = Self {
            objects: root.join("objects"),
            partial: root.join("partial"),
            sweep: Arc::default(),
            pacer: Pacer {
                last_message_us: AtomicU64::new(0),
                since: Instant::now(),
                rate: AtomicU64::new(0),
                next_free: Mutex::new(Instant::now()),
            },
            writing: Arc::default(),
        };
        if !files.objects.exists() {
            for dir in [&root, &files.objects, &files.partial] {
                fs::create_dir_all(dir).map_err(|source| StoreError::Sync {
                    path: dir.clone(),
                    source,
                })?;
            }
            // Their names, so that they survive a power cut.
            for dir in [data, root.as_path()] {
                sync_dir(dir)?;
            }
        }
        fs::create_dir_all(&files.partial).map_err(|source| StoreError::Sync {
            path: files.partial.clone(),
            source,
        })?;
        Ok(files)
    }

    fn object_path(&self, hash: &FileHash) -> PathBuf {
        let hex = hash.to_hex();
        self.objects.join(&hex[..2]).join(hex)
    }

    /// The size of the whole file named `hash`, if this node holds it.
    pub fn held(&self, hash: &FileHash) -> Option<u64> {
        fs::metadata(self.object_path(hash)).ok().map(|m| m.len())
    }

    /// The whole file named `hash`, opened for reading.
    pub fn open_object(&self, hash: &FileHash) -> io::Result<File> {
        File::open(self.object_path(hash))
    }

    /// How many bytes of a partial file are held (0 if none).
    pub fn partial_len(&self, of: &PartialOf<'_>) -> u64 {
        fs::metadata(self.partial.join(of.file_name())).map_or(0, |m| m.len())
    }

    /// Claims the partial file of `of` for one writer; `None` while
    /// another writes it.
    pub fn claim(&self, of: &PartialOf<'_>) -> Option<Writing> {
        let name = of.file_name();
        crate::locks::lock(&self.writing)
            .insert(name.clone())
            .then(|| Writing {
                name,
                writing: self.writing.clone(),
            })
    }

    /// Opens a partial file to go on at `offset`: 0 starts over; any other
    /// offset must be what is held ([`FileError::Offset`] otherwise). The
    /// bytes held are read once to resume their hash.
    pub fn partial(&self, of: &PartialOf<'_>, offset: u64) -> Result<Partial, FileError> {
        let path = self.partial.join(of.file_name());
        let held = fs::metadata(&path).map_or(0, |m| m.len());
        if offset != 0 && offset != held {
            return Err(FileError::Offset { held, offset });
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        if offset == 0 {
            file.set_len(0).map_err(io_error(&path))?;
        } else {
            let mut buf = vec![0; 1 << 16];
            let mut reader = File::open(&path).map_err(io_error(&path))?;
            loop {
                let n = reader.read(&mut buf).map_err(io_error(&path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            file.flush().map_err(io_error(&path))?;
        }
        Ok(Partial {
            file,
            path,
            hasher,
            len: offset,
        })
    }

    /// Removes a partial file (an upload given up, a transfer of bytes that
    /// did not match).
    pub fn remove_partial(&self, of: &PartialOf<'_>) {
        let _ = fs::remove_file(self.partial.join(of.file_name()));
    }

    /// Removes partial files not written to since `before`; how many.
    pub fn remove_partials_older_than(&self, before: SystemTime) -> usize {
        let Ok(entries) = fs::read_dir(&self.partial) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before)
            })
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Removes the bytes of `hash` (the sweep, once nothing references them).
    fn remove_object(&self, hash: &FileHash) -> io::Result<()> {
        let path = self.object_path(hash);
        fs::remove_file(&path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Held by a post while it checks its files and until it is durable.
    pub async fn posting(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.sweep.clone().read_owned().await
    }

    /// Sets how many bytes of files per second are written while messages
    /// are (`limits.file_bytes_per_second_during_messages`; 0: no limit).
    pub fn pace_during_messages(&self, bytes_per_second: u64) {
        self.pacer.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Notes that messages were written: file writes give way for a while.
    pub(super) fn messages_written(&self) {
        let now = self.pacer.since.elapsed().as_micros() as u64;
        self.pacer
            .last_message_us
            .store(now.max(1), Ordering::Relaxed);
    }

    /// Waits (blocking) until `n` more bytes of files may be written: at
    /// once unless messages were written within [`MESSAGES_WINDOW`]; then
    /// at the set rate, shared by every upload and transfer.
    pub fn pace(&self, n: usize) {
        let wait = self.pacer.reserve(n, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Bytes free for files on the file system that holds them.
    pub fn available_bytes(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.objects).map_err(io::Error::from)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
}

impl Partial {
    /// Bytes held so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data` (not yet durable).
    pub fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        self.file.write_all(data).map_err(io_error(&self.path))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Makes the file whole under `expected`: its bytes synced, their hash
    /// checked, renamed into `objects/` and the directories synced, in that
    /// order. On [`FileError::Mismatch`] the partial file is removed. If
    /// the file was held already (the same bytes uploaded before), the
    /// partial one is dropped and the held one kept.
    pub fn finish(self, files: &Files, expected: &FileHash) -> Result<u64, FileError> {
        let actual =
            FileHash::from_bytes(self.hasher.finish().as_ref()).unwrap_or(FileHash([0; 32]));
        if actual != *expected {
            drop(self.file);
            let _ = fs::remove_file(&self.path);
            return Err(FileError::Mismatch {
                expected: *expected,
                actual,
            });
        }
        self.file.sync_data().map_err(io_error(&self.path))?;
        drop(self.file);
        let target = files.object_path(expected);
        if target.exists() {
            let _ = fs::remove_file(&self.path);
            return Ok(self.len);
        }
        let dir = target.parent().unwrap_or(&files.objects).to_owned();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        fs::rename(&self.path, &target).map_err(io_error(&target))?;
        // The file's name, and the subdirectory's (another writer may have
        // just made it: both are synced every time, which is cheap).
        let sync = |d: &Path| sync_dir(d).map_err(|e| io_error(d)(io::Error::other(e)));
        sync(&dir)?;
        sync(&files.objects)?;
        Ok(self.len)
    }
}

/// Chunks queued to a [`PartialWriter`] before the sender waits.
const WRITER_QUEUE: usize = 4;

/// A [`Partial`] written on a thread of the blocking pool, so that the
/// caller receives the next chunk (network, TLS) while this one is hashed
/// and written.
#[derive(Debug)]
pub struct PartialWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<Result<Partial, FileError>>,
    len: u64,
}

impl Partial {
    /// Hands the file to a writer thread, which paces its writes as
    /// [`Files::pace`] says.
    pub fn into_writer(self, store: &Store) -> PartialWriter {
        let len = self.len;
        let files = store.files.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(WRITER_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut partial = self;
            while let Some(data) = rx.blocking_recv() {
                files.pace(data.len());
                partial.write(&data)?;
            }
            Ok(partial)
        });
        PartialWriter { tx, task, len }
    }
}

impl PartialWriter {
    /// Bytes handed over so far (written, or queued to be).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `data`; waits while the queue is full. When the writer
    /// stopped on an error, says so; [`PartialWriter::finish`] gives the error.
    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), FileError> {
        let n = data.len() as u64;
        if self.tx.send(data).await.is_err() {
            return Err(FileError::Io {
                path: PathBuf::new(),
                source: io::Error::other("the file writer stopped"),
            });
        }
        self.len += n;
        Ok(())
    }

    /// Waits until everything queued is written; the file, to finish.
    pub async fn finish(self) -> Result<Partial, FileError> {
        drop(self.tx);
        self.task.await.map_err(|e| FileError::Io {
            path: PathBuf::new(),
            source: io::Error::other(e),
        })?
    }
}

/// A member's finished upload, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upload {
    pub hash: FileHash,
    pub size: u64,
    /// When it finished, Unix ms.
    pub at_unix_ms: u64,
}

fn upload_value(u: &Upload) -> Vec<u8> {
    let mut v = u.at_unix_ms.to_be_bytes().to_vec();
    v.extend_from_slice(&u.size.to_be_bytes());
    v
}

fn upload_of(hash: FileHash, value: &[u8]) -> Option<Upload> {
    let at = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let size = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some(Upload {
        hash,
        size,
        at_unix_ms: at,
    })
}

impl Store {
    /// Where file bytes are.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// Records that `member` uploaded `upload` (durable after [`Store::flush`]).
    pub fn record_upload(&self, member: &MemberName, upload: &Upload) -> Result<(), StoreError> {
        self.uploads.insert(
            &keys::upload_key(member, &upload.hash),
            &upload_value(upload),
        )
    }

    /// `member`'s upload of `hash`, if recorded.
    pub fn upload(
        &self,
        member: &MemberName,
        hash: &FileHash,
    ) -> Result<Option<Upload>, StoreError> {
        let value = self.uploads.get(&keys::upload_key(member, hash))?;
        Ok(value.and_then(|v| upload_of(*hash, &v)))
    }

    /// Whether any stored message references `hash`.
    pub fn is_referenced(&self, hash: &FileHash) -> Result<bool, StoreError> {
        Ok(self
            .log
            .scan_prefix(&keys::file_refs_prefix(hash))
            .next()
            .transpose()?
            .is_some())
    }

    /// Removes the bytes of each of `hashes` that no stored message
    /// references any more (a retraction took the last reference), with
    /// every upload record of them. Does nothing, and keeps `hashes`, while
    /// a post with files is between checking its files and storing its
    /// message (the sweep lock): the caller tries again later. How many
    /// files it removed.
    pub fn remove_unreferenced(&self, hashes: &mut Vec<FileHash>) -> Result<usize, StoreError> {
        let Ok(_sweeping) = self.files.sweep.try_write() else {
            return Ok(0);
        };
        let mut removed = 0;
        for hash in std::mem::take(hashes) {
            if self.is_referenced(&hash)? {
                continue;
            }
            for entry in self.uploads.iter() {
                let (key, _) = entry?;
                if keys::hash_of_upload(&key) == Some(hash) {
                    self.uploads.remove(&key)?;
                }
            }
            if self.files.held(&hash).is_some() {
                match self.files.remove_object(&hash) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(%hash, error = %e, "cannot remove a retracted message's file")
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Whether message `seq` of `origin` in `channel` references `hash`.
    pub fn references(
        &self,
        hash: &FileHash,
        channel: &ChannelId,
        origin: &OrgId,
        seq: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .log
            .get(&keys::file_ref_key(hash, channel, origin, seq))?
            .is_some())
    }

    /// Removes uploads finished before `before_unix_ms` and the bytes of
    /// those no stored message references and no other upload holds;
    /// partial files idle as long go too. Takes the sweep lock, so no post
    /// is between checking its files and storing its message meanwhile.
    /// How many uploads and files it removed.
    pub async fn sweep_uploads(&self, before_unix_ms: u64) -> Result<(usize, usize), StoreError> {
        // Tried, not waited for: a waiting sweep would hold up every post
        // with files behind it; the next sweep comes soon enough.
        let Ok(_sweeping) = self.files.sweep.try_write() else {
            return Ok((0, 0));
        };
        let store = self.clone();
        let task = tokio::task::spawn_blocking(move || store.sweep_blocking(before_unix_ms));
        task.await.map_err(|e| StoreError::Engine(Box::new(e)))?
    }

    fn sweep_blocking(&self, before_unix_ms: u64) -> Result<(usize, usize), StoreError> {
        let mut expired = Vec::new();
        let mut kept = std::collections::HashSet::new();
        for entry in self.uploads.iter() {
            let (key, value) = entry?;
            let Some(hash) = keys::hash_of_upload(&key) else {
                continue;
            };
            match upload_of(hash, &value) {
                Some(u) if u.at_unix_ms < before_unix_ms => expired.push((key.to_vec(), hash)),
                _ => {
                    kept.insert(hash);
                }
            }
        }
        let mut removed_files = 0;
        for (key, hash) in &expired {
            self.uploads.remove(key)?;
            if !kept.contains(hash) && !self.is_referenced(hash)? && self.files.held(hash).is_some()
            {
                match self.files.remove_object(hash) {
                    Ok(()) => removed_files += 1,
                    Err(e) => {
                        tracing::warn!(%hash, error = %e, "cannot remove an unposted upload's file")
                    }
                }
                kept.insert(*hash);
            }
        }
        let before = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(before_unix_ms);
        self.files.remove_partials_older_than(before);
        self.flush()?;
        Ok((expired.len(), removed_files))
    }
}

/// A file a stored message references that may not be held here yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub hash: FileHash,
    pub channel: ChannelId,
    pub origin: OrgId,
    pub seq: u64,
    /// As the message's signed body gives it, bytes.
    pub size: u64,
}

impl Store {
    /// Up to `limit` files messages reference that may not be held here
    /// yet, by hash, after `after` (from the first when `None`): a caller
    /// goes on where it stopped, so entries it cannot take yet do not hide
    /// the ones after them.
    pub fn wanted(&self, after: Option<&Wanted>, limit: usize) -> Result<Vec<Wanted>, StoreError> {
        let from = match after {
            Some(w) => std::ops::Bound::Excluded(keys::file_wanted_key(
                &w.hash, &w.channel, &w.origin, w.seq,
            )),
            None => std::ops::Bound::Included(keys::FILE_WANTED_PREFIX.to_vec()),
        };
        let to = std::ops::Bound::Excluded(keys::prefix_end(keys::FILE_WANTED_PREFIX));
        let mut out = Vec::new();
        for entry in self.log.range(from, to).take(limit) {
            let (key, value) = entry?;
            let parsed = keys::parse_file_wanted(&key);
            let size = value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let (Some((hash, channel, origin, seq)), Some(size)) = (parsed, size) else {
                return Err(StoreError::Inconsistent {
                    key: super::lossy(&key),
                    why: "not a wanted-file key",
                });
            };
            out.push(Wanted {
                hash,
                channel,
                origin,
                seq,
                size,
            });
        }
        Ok(out)
    }

    /// The file `w` names is held here now (or never will be: its
    /// channel is gone): it is wanted no more.
    pub fn no_longer_wanted(&self, w: &Wanted) -> Result<(), StoreError> {
        self.log.remove(&keys::file_wanted_key(
            &w.hash, &w.channel, &w.origin, w.seq,
        ))?;
        Ok(())
    }

    /// Records that the bytes of `hash` held here came, verified, from a
    /// transfer for a message of `origin`.
    pub fn record_vouched(&self, hash: &FileHash, origin: &OrgId) -> Result<(), StoreError> {
        self.log.insert(&keys::file_vouched_key(hash, origin), &[])
    }

    /// The size of file `hash` as a message of `origin` may give it out:
    /// held, and either posted here (`origin` is `local`: its author
    /// uploaded it) or received for a message of `origin`. Bytes held for
    /// another reason (an internal channel's post, another origin's
    /// message) do not count: a partner that names a hash it does not have
    /// must not get the bytes through its own message.
    pub fn held_for(
        &self,
        hash: &FileHash,
        origin: &OrgId,
        local: &OrgId,
    ) -> Result<Option<u64>, StoreError> {
        if origin != local
            && self
                .log
                .get(&keys::file_vouched_key(hash, origin))?
                .is_none()
        {
            return Ok(None);
        }
        Ok(self.files.held(hash))
    }

    /// A chunk of at most `len` bytes of the whole file `hash`, from
    /// `offset` (blocking).
    pub fn read_file(&self, hash: &FileHash, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = self.files.open_object(hash)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, Files) {
        let tmp = tempfile::tempdir().unwrap();
        let files = Files::open(tmp.path()).unwrap();
        (tmp, files)
    }

    #[test]
    fn a_file_is_whole_under_its_hash_or_not_there() {
        let (_tmp, files) = files();
        let member = MemberName::parse("alice").unwrap();
        let data = vec![7u8; 300_000];
        let hash = FileHash::of(&data);
        let of = PartialOf::Upload(&member, &hash);
        let mut p = files.partial(&of, 0).unwrap();
        p.write(&data[..100_000]).unwrap();
        drop(p);
        assert_eq!(files.held(&hash), None, "not whole yet");
        assert_eq!(files.partial_len(&of), 100_000);
        // A resume starts where the held bytes end, nowhere else.
        assert!(matches!(
            files.partial(&of, 5),
            Err(FileError::Offset {
                held: 100_000,
                offset: 5
            })
        ));
        let mut p = files.partial(&of, 100_000).unwrap();
        p.write(&data[100_000..]).unwrap();
        assert_eq!(p.finish(&files, &hash).unwrap(), 300_000);
        assert_eq!(files.held(&hash), Some(300_000));
        assert_eq!(files.partial_len(&of), 0);
        let mut back = Vec::new();
        files
            .open_object(&hash)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn file_writes_are_paced_only_while_messages_are_written() {
        let (_tmp, files) = files();
        let now = Instant::now();
        files.pace_during_messages(10 << 20);
        assert_eq!(
            files.pacer.reserve(1 << 20, now),
            Duration::ZERO,
            "no message yet"
        );
        files.messages_written();
        // Shared by every writer: the second MiB waits for the first.
        assert_eq!(files.pacer.reserve(1 << 20, now), Duration::ZERO);
        let wait = files.pacer.reserve(1 << 20, now);
        assert_eq!(wait, Duration::from_millis(100), "1 MiB at 10 MiB/s");
        let later = now + MESSAGES_WINDOW + Duration::from_secs(1);
        assert_eq!(
            files.pacer.reserve(1 << 20, later),
            Duration::ZERO,
            "messages stopped"
        );
        files.pace_during_messages(0);
        files.messages_written();
        assert_eq!(
            files.pacer.reserve(1 << 20, now),
            Duration::ZERO,
            "no limit"
        );
    }

    #[test]
    fn bytes_that_do_not_match_their_name_are_not_kept() {
        let (_tmp, files) = files();
        let named = FileHash::of(b"the evacuation plan");
        let of = PartialOf::Transfer(&named);
        let mut p = files.partial(&of, 0).unwrap();
        p.write(b"something else").unwrap();
        assert!(matches!(
            p.finish(&files, &named),
            Err(FileError::Mismatch { .. })
        ));
        assert_eq!(files.held(&named), None);
        assert_eq!(files.partial_len(&of), 0);
    }
}
