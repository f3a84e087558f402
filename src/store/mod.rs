//! The node's persistent state, and the only module that touches the
//! storage engine (sled).
//!
//! The interface is small and speaks the domain (channels, envelopes,
//! cursors) over an engine seam ([`kv`]) that another engine can fill.
//! The writer stages a round's writes in a [`StoreBatch`], applies it
//! atomically with [`Store::apply`] and makes it durable with
//! [`Store::flush`]; the node acknowledges nothing before that.
//!
//! Split by concern: opening, schema and upgrades here and in [`migrate`];
//! channels, messages and history in [`messages`]; peers and cursors in
//! [`peers`]; the audit log and revocations in [`audit`]; file bytes and
//! uploads in [`files`]. Key layouts are [`keys`]'s alone.
//!
//! May use: `model`, `proto`, `audit` (entry shapes), `sync`.

mod audit;
mod files;
pub mod keys;
mod kv;
mod messages;
mod migrate;
mod peers;
mod reads;
mod runs;

pub use audit::{IssuedCert, Revoked, now_rfc3339};
pub use files::{FileError, Files, Partial, PartialOf, PartialWriter, Upload, Wanted, Writing};
pub use messages::{Acknowledged, PictureRecord, Retracted, StoreBatch};
pub use reads::Unread;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv::{Engine, Tree, Values};

use crate::model::{Cursor, OrgId};
use crate::proto::Envelope;

/// The layout version this code reads and writes.
pub const SCHEMA_VERSION: u32 = 3;

const META_SCHEMA: &[u8] = b"schema_version";
const META_ORG: &[u8] = b"org";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data dir {0} is in use by another samband process (only one node may open it)")]
    Locked(PathBuf),
    #[error(
        "data dir {path} has store schema version {found}; this samband reads version {SCHEMA_VERSION}"
    )]
    Schema { path: PathBuf, found: String },
    #[error("data dir {path} belongs to org {found}, not {expected}")]
    WrongOrg {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "data dir {path} holds no samband store (missing, emptied or damaged); restore it from a backup, \
         or create a new node with `samband init`"
    )]
    Missing { path: PathBuf },
    #[error(
        "data dir {path} cannot be read: permission denied; run samband as the user that owns it, \
         or fix its ownership (chown -R)"
    )]
    PermissionDenied { path: PathBuf },
    #[error("data dir {path} holds data but no schema version; it was not written by samband")]
    Foreign { path: PathBuf },
    #[error("store: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("store: syncing {path} to disk: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store holds an undecodable record under {key}: {source}")]
    Corrupt {
        key: String,
        source: prost::DecodeError,
    },
    #[error("store is inconsistent at {key}: {why}")]
    Inconsistent { key: String, why: &'static str },
}

/// One stored message and its place in history.
#[derive(Debug, Clone)]
pub struct Stored {
    pub cursor: Cursor,
    pub envelope: Envelope,
}

/// Which page of history to read.
#[derive(Debug, Clone)]
pub enum Page {
    /// The oldest messages.
    Beginning,
    /// The newest messages.
    Newest,
    Before(Cursor),
    After(Cursor),
}

/// What a message costs in a page besides its envelope (its cursor and the
/// fields a client sees), in bytes: an upper bound.
pub const MESSAGE_OVERHEAD_BYTES: usize = 256;

/// Handle to the open store; cheap to clone (the trees are shared).
#[derive(Clone, Debug)]
pub struct Store {
    engine: Arc<dyn Engine>,
    /// Schema version and owner.
    meta: Arc<dyn Tree>,
    /// Channels and messages ([`keys`]): one tree, so one batch updates
    /// all of it atomically.
    log: Arc<dyn Tree>,
    peers: Arc<dyn Tree>,
    cursors: Arc<dyn Tree>,
    audit: Arc<dyn Tree>,
    revoked: Arc<dyn Tree>,
    /// Serials of member certificates whose issue the audit log records.
    issued: Arc<dyn Tree>,
    /// Members' finished uploads ([`files`]).
    uploads: Arc<dyn Tree>,
    /// What each member has seen of each channel ([`reads`]).
    reads: Arc<dyn Tree>,
    /// File bytes, beside the engine's files.
    files: Arc<Files>,
    /// The audit log's last entry; appends take this lock.
    audit_head: std::sync::Arc<std::sync::Mutex<crate::audit::Head>>,
}

fn lossy(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// An envelope's timestamp alone (field 5 of `Envelope`); decoding it skips
/// the body.
#[derive(Clone, PartialEq, prost::Message)]
struct HlcOnly {
    #[prost(uint64, tag = "5")]
    hlc: u64,
}

fn decode<M: prost::Message + Default>(key: &[u8], bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|source| StoreError::Corrupt {
        key: lossy(key),
        source,
    })
}

impl Store {
    /// Opens the existing store in `path` for `org`, checking schema and owner.
    /// A directory without a samband store (missing, emptied or damaged
    /// beyond what sled recovers) is an error, never a fresh empty store.
    pub fn open(path: &Path, org: &OrgId, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_mode(path, org, cache_bytes, false)
    }

    /// Creates the store in `path` for `org` (or opens it if it exists).
    pub fn create(path: &Path, org: &OrgId, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_mode(path, org, cache_bytes, true)
    }

    /// Makes everything applied so far durable, also across a power cut.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.engine.flush()
    }

    fn open_mode(
        path: &Path,
        org: &OrgId,
        cache_bytes: u64,
        create: bool,
    ) -> Result<Self, StoreError> {
        // Unreadable is not missing: say which, before anything else.
        if let Err(e) = std::fs::read_dir(path)
            && e.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Err(StoreError::PermissionDenied {
                path: path.to_owned(),
            });
        }
        if !create && !kv::exists(path) {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        let engine = kv::open(path, cache_bytes)?;
        let audit = engine.tree("audit", Values::Small)?;
        let store = Self {
            meta: engine.tree("meta", Values::Small)?,
            log: engine.tree("log", Values::Large)?,
            peers: engine.tree("peers", Values::Small)?,
            cursors: engine.tree("cursors", Values::Small)?,
            revoked: engine.tree("revoked", Values::Small)?,
            issued: engine.tree("issued", Values::Small)?,
            uploads: engine.tree("uploads", Values::Small)?,
            reads: engine.tree("reads", Values::Small)?,
            files: Arc::new(Files::open(path)?),
            audit_head: Arc::new(std::sync::Mutex::new(Self::load_audit_head(&*audit)?)),
            audit,
            engine,
        };
        let meta = &*store.meta;
        let empty = store.log.is_empty()? && store.peers.is_empty()?;
        match meta.get(META_SCHEMA)? {
            None if create && empty => {
                meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                meta.insert(META_ORG, org.as_str().as_bytes())?;
                store.flush()?;
                // The new files' directory entries, so the store survives a power cut.
                kv::sync_dir(path)?;
            }
            None if empty => {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
            None => {
                return Err(StoreError::Foreign {
                    path: path.to_owned(),
                });
            }
            Some(version) => {
                let found = meta.get(META_ORG)?.map(|v| lossy(&v)).unwrap_or_default();
                if found != org.as_str() {
                    return Err(StoreError::WrongOrg {
                        path: path.to_owned(),
                        found,
                        expected: org.to_string(),
                    });
                }
                match <[u8; 4]>::try_from(version.as_ref()).map(u32::from_be_bytes) {
                    // Cut short by this samband, or by one of version 2.
                    Ok(2 | SCHEMA_VERSION) if migrate::is_unfinished(meta)? => {
                        tracing::info!(path = %path.display(), "finishing an upgrade of the store from schema version 1");
                        migrate::begin(&store)?;
                        migrate::finish(&store)?;
                    }
                    Ok(SCHEMA_VERSION) => {}
                    // Version 3 reads every version-2 message as a run of one.
                    Ok(2) => {
                        meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                        store.flush()?;
                        tracing::info!(path = %path.display(), "store upgraded from schema version 2 to {SCHEMA_VERSION} (nothing to move)");
                    }
                    Ok(1) => {
                        tracing::info!(path = %path.display(), "upgrading the store from schema version 1 to {SCHEMA_VERSION}");
                        migrate::begin(&store)?;
                        migrate::finish(&store)?;
                    }
                    other => {
                        return Err(StoreError::Schema {
                            path: path.to_owned(),
                            found: other.map_or_else(
                                |_| format!("{:?}", version.as_ref()),
                                |v| v.to_string(),
                            ),
                        });
                    }
                }
            }
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    #[test]
    fn refuses_other_org_and_other_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        drop(Store::create(&path, &org("police.example"), 1 << 20).unwrap());
        let err = Store::open(&path, &org("rescue.example"), 1 << 20).unwrap_err();
        assert!(
            err.to_string().contains("belongs to org police.example"),
            "{err}"
        );
        {
            let engine = kv::open(&path, 1 << 20).unwrap();
            let meta = engine.tree("meta", Values::Small).unwrap();
            meta.insert(META_SCHEMA, &7u32.to_be_bytes()).unwrap();
            engine.flush().unwrap();
        }
        let err = Store::open(&path, &org("police.example"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("schema version 7"), "{err}");
    }

    #[test]
    fn second_open_is_refused_as_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = Store::create(tmp.path(), &org("a"), 1 << 20).unwrap();
        assert!(matches!(
            Store::open(tmp.path(), &org("a"), 1 << 20),
            Err(StoreError::Locked(_))
        ));
    }
}
