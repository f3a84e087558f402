//! What sled leaves to the page cache, forced to stable storage.
//!
//! sled 0.34's flush writes its log with `sync_file_range` on Linux, which
//! neither flushes the drive's write cache nor commits the log file's size
//! and extents (the file grows as sled adds segments). And a log item
//! larger than a quarter segment (128 KiB: a large message, or a tree node
//! holding several) goes to a file of its own under `blobs/`, written with
//! no sync at all; the log then only points to it. A process crash loses
//! none of that, the page cache survives it; a power cut can. So every
//! flush first `fdatasync`s each blob file not synced before and the
//! `blobs/` directory's entries ([`Durability::sync_blobs`]), then lets sled
//! write its log, then `fdatasync`s the log ([`Durability::sync_log`]): a
//! blob is on disk before the log entry that points to it.
//!
//! A blob file is synced once, by name. That is enough because one lock,
//! [`Durability::lock`], is held over every write to the tree whose values
//! can be that large and over every flush, so a flush never sees a blob
//! half written.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::store::StoreError;

/// The file in a data dir that holds sled's log (all trees, all data).
const SLED_LOG_FILE: &str = "db";
/// The directory where sled puts log items too large for a segment.
const SLED_BLOB_DIR: &str = "blobs";

#[derive(Debug)]
pub(super) struct Durability {
    log: File,
    log_path: PathBuf,
    blob_dir: PathBuf,
    /// Blob files synced already (sled never rewrites one, it writes a new
    /// one); its lock is also the store's log lock.
    synced_blobs: Mutex<HashSet<OsString>>,
}

/// Held by every write to the `log` tree and by every flush.
pub(super) struct LogGuard<'a>(MutexGuard<'a, HashSet<OsString>>);

fn sync_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Sync {
        path: path.to_owned(),
        source,
    }
}

/// `fdatasync` of `path`, which may be a directory.
pub(in crate::store) fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_data())
        .map_err(sync_error(path))
}

impl Durability {
    /// For the sled store in `data_dir`, which sled has opened.
    pub(super) fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let log_path = data_dir.join(SLED_LOG_FILE);
        let log = File::open(&log_path).map_err(sync_error(&log_path))?;
        Ok(Self {
            log,
            log_path,
            blob_dir: data_dir.join(SLED_BLOB_DIR),
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    /// Makes sled's log durable as far as its last flush wrote it.
    pub(super) fn sync_log(&self) -> Result<(), StoreError> {
        self.log.sync_data().map_err(sync_error(&self.log_path))
    }

    /// The lock over writes to the `log` tree and flushes.
    pub(super) fn lock(&self) -> LogGuard<'_> {
        LogGuard(crate::locks::lock(&self.synced_blobs))
    }

    /// Makes every blob file sled wrote since the last call durable.
    pub(super) fn sync_blobs(&self, LogGuard(synced): &mut LogGuard<'_>) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(sync_error(&self.blob_dir)(e)),
        };
        let mut present = HashSet::new();
        let mut added = false;
        for entry in entries {
            let name = entry.map_err(sync_error(&self.blob_dir))?.file_name();
            if !synced.contains(&name) {
                let path = self.blob_dir.join(&name);
                match File::open(&path).and_then(|f| f.sync_data()) {
                    Ok(()) => added = true,
                    // Collected by sled meanwhile: nothing left to make durable.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(sync_error(&path)(e)),
                }
            }
            present.insert(name);
        }
        if added {
            sync_path(&self.blob_dir)?;
        }
        **synced = present;
        Ok(())
    }
}
