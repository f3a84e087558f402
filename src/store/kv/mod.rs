//! The storage engine seam: ordered byte trees with the few operations the
//! store needs (get, insert, remove, ranges both ways, compare-and-swap, an
//! atomic batch) and one flush that makes every write before it durable.
//!
//! Owns nothing of samband's data model: keys and values are bytes, their
//! layouts are [`super::keys`]'s. What an engine makes visible before a
//! flush, and what its flush leaves to the page cache, is this module's
//! business alone: callers may rely only on "durable after [`Engine::flush`]
//! returned". sled 0.34 is the engine ([`sled_engine`]); another one
//! replaces it by implementing these two traits.
//!
//! May use: `crate::locks`, and [`super::StoreError`] for its errors.

mod disk;
mod sled_engine;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

pub(super) use sled_engine::Value;

use super::StoreError;

/// One key and its value.
pub(super) type Pair = (Value, Value);

/// Entries of a range, in key order; reversible.
pub(super) type Entries<'a> =
    Box<dyn DoubleEndedIterator<Item = Result<Pair, StoreError>> + Send + 'a>;

/// One write of an atomic batch ([`Tree::apply`]).
#[derive(Debug)]
pub(super) enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// How large a tree's values may grow: an engine may treat trees of large
/// values differently (sled writes a value of over 128 KiB to a file of its
/// own, which its flush must then also sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Values {
    /// At most a few KiB (records, cursors, audit entries).
    Small,
    /// Up to the largest envelope run ([`super::runs`]) or channel record.
    Large,
}

/// An ordered map of byte keys to byte values.
pub(super) trait Tree: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError>;
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// `true` if the key was there.
    fn remove(&self, key: &[u8]) -> Result<bool, StoreError>;
    /// The entries with keys in `from..to`, in key order.
    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Entries<'_>;
    /// Applies every write or none, in order (a later write of a key wins).
    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError>;

    /// The entries whose keys start with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Entries<'_> {
        let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        self.range(Bound::Included(prefix.to_vec()), end)
    }
    /// Every entry, in key order.
    fn iter(&self) -> Entries<'_> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }
    fn last(&self) -> Result<Option<Pair>, StoreError> {
        self.iter().next_back().transpose()
    }
    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.iter().next().transpose()?.is_none())
    }
    fn contains_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get(key)?.is_some())
    }
}

/// A set of named trees, made durable together.
pub(super) trait Engine: Send + Sync + std::fmt::Debug {
    fn tree(&self, name: &str, values: Values) -> Result<Arc<dyn Tree>, StoreError>;
    /// Makes every write applied before the call durable, also across a
    /// power cut; the node acknowledges nothing before this returned.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Opens the engine's files in `dir`; `Err(Locked)` if another process holds them.
pub(super) fn open(dir: &Path, cache_bytes: u64) -> Result<Arc<dyn Engine>, StoreError> {
    Ok(Arc::new(sled_engine::SledEngine::open(dir, cache_bytes)?))
}

/// Whether `dir` holds an engine's files at all (a store may be in it).
pub(super) fn exists(dir: &Path) -> bool {
    sled_engine::exists(dir)
}

/// The smallest key after every key that starts with `prefix`; `None` if
/// there is none (the prefix is all 0xFF).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `fdatasync` of a directory: its new entries survive a power cut.
pub(super) use disk::sync_path as sync_dir;
