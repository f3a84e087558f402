//! The node's persistent state. The only module that touches sled.
//!
//! The interface is small and speaks the domain (channels, envelopes,
//! cursors) so that another engine can replace sled behind it. Writes are
//! staged with [`Store::append`] (atomic per call) and made durable only by
//! [`Store::flush`]; the node acknowledges nothing before that.

mod keys;

use std::ops::Bound;
use std::path::{Path, PathBuf};

use prost::Message as _;

use crate::model::{ChannelId, Cursor, EnvelopeHash, Hlc, OrgId, chain_hash};
use crate::proto::{ChannelRecord, Envelope};

/// The layout version this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

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
    #[error("data dir {path} holds data but no schema version; it was not written by samband")]
    Foreign { path: PathBuf },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
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

/// The end of one origin's hash chain in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: EnvelopeHash,
    pub hlc: Hlc,
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

/// Handle to the open store; cheap to clone (sled trees are shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    channels: sled::Tree,
    log: sled::Tree,
}

fn lossy(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn decode<M: prost::Message + Default>(key: &[u8], bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|source| StoreError::Corrupt {
        key: lossy(key),
        source,
    })
}

// === impl Store ===

impl Store {
    /// Opens (or creates) the store in `path` for `org`, checking schema and owner.
    pub fn open(path: &Path, org: &OrgId, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked(path.to_owned())
                }
                other => StoreError::Sled(other),
            })?;
        let meta = db.open_tree("meta")?;
        let store = Self {
            channels: db.open_tree("channels")?,
            log: db.open_tree("log")?,
            db,
        };
        match meta.get(META_SCHEMA)? {
            None if store.channels.is_empty() && store.log.is_empty() => {
                meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                meta.insert(META_ORG, org.as_str().as_bytes())?;
                store.db.flush()?;
            }
            None => {
                return Err(StoreError::Foreign {
                    path: path.to_owned(),
                });
            }
            Some(v) if v.as_ref() != SCHEMA_VERSION.to_be_bytes() => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(|b| u32::from_be_bytes(b).to_string())
                    .unwrap_or_else(|_| format!("{:?}", v.as_ref()));
                return Err(StoreError::Schema {
                    path: path.to_owned(),
                    found,
                });
            }
            Some(_) => {
                let found = meta
                    .get(META_ORG)?
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                if found != org.as_str() {
                    return Err(StoreError::WrongOrg {
                        path: path.to_owned(),
                        found,
                        expected: org.to_string(),
                    });
                }
            }
        }
        Ok(store)
    }

    /// Records a new channel durably. `false` if one with that id exists.
    pub fn create_channel(&self, record: &ChannelRecord) -> Result<bool, StoreError> {
        let created = self
            .channels
            .compare_and_swap(
                record.id.as_bytes(),
                None as Option<&[u8]>,
                Some(record.encode_to_vec()),
            )?
            .is_ok();
        if created {
            self.db.flush()?;
        }
        Ok(created)
    }

    pub fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let key = id.to_string();
        self.channels
            .get(key.as_bytes())?
            .map(|v| decode(key.as_bytes(), &v))
            .transpose()
    }

    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.channels
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// The last envelope `origin` has in `channel`.
    pub fn chain_head(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
    ) -> Result<Option<ChainHead>, StoreError> {
        let Some((key, hlc)) = self
            .log
            .scan_prefix(keys::identity_prefix(channel, origin))
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let seq = keys::seq_of_identity(&key).unwrap_or_default();
        let hlc: [u8; 8] = hlc.as_ref().try_into().unwrap_or_default();
        let cursor = Cursor {
            hlc: Hlc(u64::from_be_bytes(hlc)),
            origin: origin.clone(),
            seq,
        };
        let hkey = keys::history_key(channel, &cursor);
        let env: Envelope = match self.log.get(&hkey)? {
            Some(bytes) => decode(&hkey, &bytes)?,
            None => {
                return Err(StoreError::Inconsistent {
                    key: lossy(&key),
                    why: "identity entry without its envelope",
                });
            }
        };
        Ok(Some(ChainHead {
            seq,
            hash: chain_hash(&env),
            hlc: cursor.hlc,
        }))
    }

    /// Stages envelopes, all or none. Durable only after [`Store::flush`].
    /// Envelope fields must already be validated (channel and origin parse).
    pub fn append(&self, envelopes: &[(ChannelId, Cursor, &Envelope)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (channel, cursor, env) in envelopes {
            batch.insert(keys::history_key(channel, cursor), env.encode_to_vec());
            batch.insert(
                keys::identity_key(channel, &cursor.origin, cursor.seq),
                &cursor.hlc.0.to_be_bytes(),
            );
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// Makes everything staged so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Up to `limit` messages of a page, oldest first, and whether more lie
    /// beyond it in the direction read.
    pub fn history(
        &self,
        channel: &ChannelId,
        page: &Page,
        limit: usize,
    ) -> Result<(Vec<Stored>, bool), StoreError> {
        let prefix = keys::history_prefix(channel);
        let end = keys::prefix_end(&prefix);
        let (lower, upper, backward) = match page {
            Page::Beginning => (Bound::Included(prefix.clone()), Bound::Excluded(end), false),
            Page::Newest => (Bound::Included(prefix.clone()), Bound::Excluded(end), true),
            Page::Before(c) => (
                Bound::Included(prefix.clone()),
                Bound::Excluded(keys::history_key(channel, c)),
                true,
            ),
            Page::After(c) => (
                Bound::Excluded(keys::history_key(channel, c)),
                Bound::Excluded(end),
                false,
            ),
        };
        let range = self.log.range::<Vec<u8>, _>((lower, upper));
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if backward {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        for kv in iter {
            let (k, v) = kv?;
            if out.len() == limit {
                more = true;
                break;
            }
            let cursor =
                keys::cursor_of(prefix.len(), &k).ok_or_else(|| StoreError::Inconsistent {
                    key: lossy(&k),
                    why: "malformed history key",
                })?;
            out.push(Stored {
                cursor,
                envelope: decode(&k, &v)?,
            });
        }
        if backward {
            out.reverse();
        }
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChannelName;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    #[test]
    fn refuses_other_org_and_other_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        drop(Store::open(&path, &org("police.example"), 1 << 20).unwrap());
        let err = Store::open(&path, &org("rescue.example"), 1 << 20).unwrap_err();
        assert!(
            err.to_string().contains("belongs to org police.example"),
            "{err}"
        );
        {
            let db = sled::open(&path).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(META_SCHEMA, &7u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(&path, &org("police.example"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("schema version 7"), "{err}");
    }

    #[test]
    fn second_open_is_refused_as_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = Store::open(tmp.path(), &org("a"), 1 << 20).unwrap();
        assert!(matches!(
            Store::open(tmp.path(), &org("a"), 1 << 20),
            Err(StoreError::Locked(_))
        ));
    }

    #[test]
    fn history_pages_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::open(tmp.path(), &home, 1 << 20).unwrap();
        let ch = ChannelId::new(home.clone(), ChannelName::parse("ops").unwrap());
        let envs: Vec<Envelope> = (1..=10u64)
            .map(|seq| Envelope {
                origin_seq: seq,
                body: vec![seq as u8],
                ..Default::default()
            })
            .collect();
        let staged: Vec<_> = envs
            .iter()
            .map(|e| {
                (
                    ch.clone(),
                    Cursor {
                        hlc: Hlc(100 + e.origin_seq),
                        origin: home.clone(),
                        seq: e.origin_seq,
                    },
                    e,
                )
            })
            .collect();
        store.append(&staged).unwrap();
        let seqs = |v: &[Stored]| v.iter().map(|s| s.cursor.seq).collect::<Vec<_>>();

        let (newest, more) = store.history(&ch, &Page::Newest, 3).unwrap();
        assert_eq!((seqs(&newest), more), (vec![8, 9, 10], true));
        let (older, more) = store
            .history(&ch, &Page::Before(newest[0].cursor.clone()), 5)
            .unwrap();
        assert_eq!((seqs(&older), more), (vec![3, 4, 5, 6, 7], true));
        let (rest, more) = store
            .history(&ch, &Page::Before(older[0].cursor.clone()), 5)
            .unwrap();
        assert_eq!((seqs(&rest), more), (vec![1, 2], false));
        let (after, more) = store
            .history(&ch, &Page::After(rest[1].cursor.clone()), 100)
            .unwrap();
        assert_eq!((seqs(&after).len(), more), (8, false));
        assert_eq!(
            store.chain_head(&ch, &home).unwrap().map(|h| h.seq),
            Some(10)
        );
        assert_eq!(store.chain_head(&ch, &org("rescue.example")).unwrap(), None);
    }
}
