//! The [`Engine`] on sled 0.34: one sled database, a tree per name.
//!
//! sled's own flush is not enough for a power cut ([`super::disk`]): every
//! flush here also syncs what it leaves unsynced, and every write to a tree
//! of [`Values::Large`] holds the lock that flush holds, so a flush never
//! looks at a blob file sled is still writing.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::disk::Durability;
use super::{Engine, Entries, Tree, Values, Write};
use crate::store::StoreError;

/// A value as sled holds it (shared, not copied, when read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) struct Value(sled::IVec);

impl std::ops::Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Engine(Box::new(e))
    }
}

#[derive(Debug)]
pub(super) struct SledEngine {
    db: sled::Db,
    durability: Arc<Durability>,
}

#[derive(Debug)]
struct SledTree {
    tree: sled::Tree,
    /// Held over each write, when the tree's values may be large.
    durability: Option<Arc<Durability>>,
}

/// sled's configuration file, the first it writes.
pub(super) fn exists(dir: &Path) -> bool {
    dir.join("conf").is_file()
}

impl SledEngine {
    /// Opens sled, waiting briefly for a lock that is being released: sled
    /// lets go of its lock file a moment after the last handle is dropped (a
    /// node restarting in the same process, or `init` followed by `serve`).
    pub(super) fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        const ATTEMPTS: u32 = 20;
        let locked = |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
        let mut attempt = 1;
        let db = loop {
            let opened = sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                // Durability comes from our own flush before every acknowledgement;
                // a background flush would only hide a missing one from the tests.
                // sled's segment cleaning runs only in that background thread,
                // which would also write blobs outside the store's log lock.
                .flush_every_ms(None)
                .open();
            match opened {
                Ok(db) => break db,
                Err(e) if locked(&e) && attempt < ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) if locked(&e) => return Err(StoreError::Locked(path.to_owned())),
                Err(e) => return Err(e.into()),
            }
        };
        let durability = Arc::new(Durability::open(path)?);
        Ok(Self { db, durability })
    }
}

impl Engine for SledEngine {
    fn tree(&self, name: &str, values: Values) -> Result<Arc<dyn Tree>, StoreError> {
        Ok(Arc::new(SledTree {
            tree: self.db.open_tree(name)?,
            durability: (values == Values::Large).then(|| self.durability.clone()),
        }))
    }

    /// sled's flush, then what it leaves unsynced ([`super::disk`]).
    fn flush(&self) -> Result<(), StoreError> {
        let mut guard = self.durability.lock();
        self.durability.sync_blobs(&mut guard)?;
        self.db.flush()?;
        self.durability.sync_log()
    }
}

impl SledTree {
    fn lock(&self) -> Option<super::disk::LogGuard<'_>> {
        self.durability.as_ref().map(|d| d.lock())
    }
}

fn pair(kv: sled::Result<(sled::IVec, sled::IVec)>) -> Result<super::Pair, StoreError> {
    let (k, v) = kv?;
    Ok((Value(k), Value(v)))
}

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        Ok(self.tree.get(key)?.map(Value))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.tree.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<bool, StoreError> {
        let _guard = self.lock();
        Ok(self.tree.remove(key)?.is_some())
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Entries<'_> {
        Box::new(self.tree.range((from, to)).map(pair))
    }

    /// A batch of one write is a plain insert or remove, which is atomic
    /// by itself: sled writes a batch's manifest to its log apart from its
    /// data, so with one post per round (a lone poster) a batch would cost
    /// a second log write and sync.
    fn apply(&self, mut writes: Vec<Write>) -> Result<(), StoreError> {
        let _guard = self.lock();
        if writes.len() == 1 {
            match writes.pop() {
                Some(Write::Put(k, v)) => self.tree.insert(k, v).map(drop)?,
                Some(Write::Delete(k)) => self.tree.remove(k).map(drop)?,
                None => {}
            }
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for write in writes {
            match write {
                Write::Put(k, v) => batch.insert(k, v),
                Write::Delete(k) => batch.remove(k),
            }
        }
        Ok(self.tree.apply_batch(batch)?)
    }
}
