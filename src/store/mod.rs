//! The node's persistent state. The only module that touches sled.
//!
//! The interface is small and speaks the domain (channels, envelopes,
//! cursors) so that another engine can replace sled behind it. The writer
//! stages a round's writes in a [`StoreBatch`], applies it atomically with
//! [`Store::apply`] and makes it durable with [`Store::flush`]; the node
//! acknowledges nothing before that.

mod audit;
mod disk;
pub mod keys;
mod migrate;
mod runs;

pub use audit::{Revoked, now_rfc3339};

use std::path::{Path, PathBuf};

use prost::Message as _;

use crate::model::{ChainHead, ChannelId, Cursor, Hlc, OrgId, Vector, chain_hash};
use crate::proto::{ChannelRecord, ChannelVector, Envelope, PeerRecord, VectorEntry};

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
    #[error("data dir {path} holds data but no schema version; it was not written by samband")]
    Foreign { path: PathBuf },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
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

/// Handle to the open store; cheap to clone (sled trees are shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    /// What sled's flush leaves unsynced (see [`Store::flush`]).
    durability: std::sync::Arc<disk::Durability>,
    log: sled::Tree,
    peers: sled::Tree,
    cursors: sled::Tree,
    audit: sled::Tree,
    revoked: sled::Tree,
    /// The audit log's last entry; appends take this lock.
    audit_head: std::sync::Arc<std::sync::Mutex<crate::audit::Head>>,
}

/// Writes staged together and applied atomically by [`Store::apply`].
#[derive(Debug, Default)]
pub struct StoreBatch {
    /// (key, value) in the `log` tree, in staging order (a later write of
    /// the same key wins).
    log: Vec<(Vec<u8>, Vec<u8>)>,
    /// Message runs, in the order they were started.
    runs: Vec<runs::RunBuilder>,
    /// Each (channel, origin)'s latest run.
    latest: std::collections::HashMap<(ChannelId, OrgId), usize>,
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

/// One origin's messages of a history page, in reading order, with the
/// next one decoded.
struct OriginPage {
    /// The stored runs that hold the page's seqs, in reading order.
    rest: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>,
    seqs: std::ops::RangeInclusive<u64>,
    backward: bool,
    /// What is left of the stored run being read, the next one last.
    buffered: Vec<Stored>,
    head: Option<Stored>,
}

impl OriginPage {
    fn new(
        rest: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>,
        seqs: std::ops::RangeInclusive<u64>,
        backward: bool,
    ) -> Result<Self, StoreError> {
        let mut page = Self {
            rest,
            seqs,
            backward,
            buffered: Vec::new(),
            head: None,
        };
        page.head = page.read()?;
        Ok(page)
    }

    fn read(&mut self) -> Result<Option<Stored>, StoreError> {
        loop {
            if let Some(next) = self.buffered.pop() {
                return Ok(Some(next));
            }
            let Some((key, bytes)) = self.rest.next().transpose()? else {
                return Ok(None);
            };
            let mut stored = runs::decode(&key, &bytes)?
                .into_iter()
                .filter(|e| self.seqs.contains(&e.origin_seq))
                .map(|envelope| {
                    let origin =
                        OrgId::parse(&envelope.origin).map_err(|_| StoreError::Inconsistent {
                            key: lossy(&key),
                            why: "stored envelope with a malformed origin",
                        })?;
                    Ok(Stored {
                        cursor: Cursor {
                            hlc: Hlc(envelope.hlc),
                            origin,
                            seq: envelope.origin_seq,
                        },
                        envelope,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            if !self.backward {
                stored.reverse();
            }
            self.buffered = stored;
        }
    }

    /// Takes the head and reads the next one.
    fn advance(&mut self) -> Result<Option<Stored>, StoreError> {
        let next = self.read()?;
        Ok(std::mem::replace(&mut self.head, next))
    }
}

// === impl StoreBatch ===

impl StoreBatch {
    /// Stages an envelope; consecutive ones of an origin in a channel share
    /// a stored run ([`runs`]).
    pub fn put_envelope(&mut self, channel: &ChannelId, cursor: &Cursor, env: &Envelope) {
        // The run to extend is usually the last one; else look it up.
        let latest = match self.runs.last() {
            Some(last) if last.is_of(channel, &cursor.origin) => Some(self.runs.len() - 1),
            _ => self
                .latest
                .get(&(channel.clone(), cursor.origin.clone()))
                .copied(),
        };
        if latest.is_some_and(|i| self.runs[i].push(cursor.seq, env)) {
            return;
        }
        self.latest
            .insert((channel.clone(), cursor.origin.clone()), self.runs.len());
        self.runs.push(runs::RunBuilder::new(
            channel,
            &cursor.origin,
            cursor.seq,
            env,
        ));
    }

    pub fn put_channel(&mut self, record: &ChannelRecord) {
        self.log
            .push((keys::channel_key(&record.id), record.encode_to_vec()));
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.runs.is_empty()
    }
}

// === impl Store ===

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

    /// Opens sled, waiting briefly for a lock that is being released: sled
    /// lets go of its lock file a moment after the last handle is dropped (a
    /// node restarting in the same process, or `init` followed by `serve`).
    fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
        const ATTEMPTS: u32 = 20;
        let locked = |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
        let mut attempt = 1;
        loop {
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
                Ok(db) => return Ok(db),
                Err(e) if locked(&e) && attempt < ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) if locked(&e) => return Err(StoreError::Locked(path.to_owned())),
                Err(e) => return Err(StoreError::Sled(e)),
            }
        }
    }

    fn open_mode(
        path: &Path,
        org: &OrgId,
        cache_bytes: u64,
        create: bool,
    ) -> Result<Self, StoreError> {
        if !create && !path.join("conf").is_file() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        let db = Self::open_sled(path, cache_bytes)?;
        let durability = std::sync::Arc::new(disk::Durability::open(path)?);
        let meta = db.open_tree("meta")?;
        let audit = db.open_tree("audit")?;
        let store = Self {
            log: db.open_tree("log")?,
            peers: db.open_tree("peers")?,
            cursors: db.open_tree("cursors")?,
            revoked: db.open_tree("revoked")?,
            audit_head: std::sync::Arc::new(std::sync::Mutex::new(Self::load_audit_head(&audit)?)),
            audit,
            db,
            durability,
        };
        match meta.get(META_SCHEMA)? {
            None if create && store.log.is_empty() && store.peers.is_empty() => {
                meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                meta.insert(META_ORG, org.as_str().as_bytes())?;
                store.flush()?;
                // The new files' directory entries, so the store survives a power cut.
                disk::sync_path(path)?;
            }
            None if store.log.is_empty() && store.peers.is_empty() => {
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
                    Ok(2 | SCHEMA_VERSION) if migrate::is_unfinished(&meta)? => {
                        tracing::info!(path = %path.display(), "finishing an upgrade of the store from schema version 1");
                        migrate::begin(&store, &meta)?;
                        migrate::finish(&store, &meta)?;
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
                        migrate::begin(&store, &meta)?;
                        migrate::finish(&store, &meta)?;
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

    // --- channels ---

    /// Records a new channel durably. `false` if one with that id exists.
    pub fn create_channel(&self, record: &ChannelRecord) -> Result<bool, StoreError> {
        let key = keys::channel_key(&record.id);
        let guard = self.lock_log();
        let created = self
            .log
            .compare_and_swap(key, None as Option<&[u8]>, Some(record.encode_to_vec()))?
            .is_ok();
        drop(guard);
        if created {
            self.flush()?;
        }
        Ok(created)
    }

    pub fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let key = keys::channel_key(&id.to_string());
        self.log.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// The ids of the channels homed at `home`, from the keys alone.
    pub fn channel_ids_of(
        &self,
        home: &OrgId,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let prefix = keys::channel_key(&format!("{home}/"));
        self.log
            .scan_prefix(&prefix)
            .keys()
            .map(|key| Ok(lossy(&key?[keys::CHANNEL_PREFIX.len()..])))
            .collect()
    }

    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.log
            .scan_prefix(keys::CHANNEL_PREFIX)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    // --- messages ---

    /// The last envelope `origin` has in `channel`.
    pub fn chain_head(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
    ) -> Result<Option<ChainHead>, StoreError> {
        let Some((key, bytes)) = self
            .log
            .scan_prefix(keys::origin_messages_prefix(channel, origin))
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let Some(env) = runs::decode(&key, &bytes)?.pop() else {
            return Err(StoreError::Inconsistent {
                key: lossy(&key),
                why: "an empty message run",
            });
        };
        Ok(Some(ChainHead::after(&env, chain_hash(&env))))
    }

    /// The stored run of `origin` in `channel` that holds `seq`, if any:
    /// runs are keyed by their last seq, so it is the first at or after it.
    fn run_holding(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        seq: u64,
    ) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
        let start = keys::message_key(channel, origin, seq);
        let end = keys::prefix_end(&keys::origin_messages_prefix(channel, origin));
        Ok(self.log.range(start..end).next().transpose()?)
    }

    /// The envelope `(channel, origin, seq)`, if held.
    pub fn envelope(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        seq: u64,
    ) -> Result<Option<Envelope>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        let Some((key, bytes)) = self.run_holding(channel, origin, seq)? else {
            return Ok(None);
        };
        runs::get(&key, &bytes, seq)
    }

    /// Up to `limit` envelopes of `origin` in `channel` from `from_seq` on, in seq order.
    pub fn envelopes_from(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let start = keys::message_key(channel, origin, from_seq);
        let end = keys::prefix_end(&keys::origin_messages_prefix(channel, origin));
        let mut out = Vec::new();
        for kv in self.log.range(start..end) {
            let (key, bytes) = kv?;
            let run = runs::decode(&key, &bytes)?;
            out.extend(run.into_iter().filter(|e| e.origin_seq >= from_seq));
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        Ok(out)
    }

    /// The highest seq in `1..=head` of `origin` in `channel` whose history
    /// position is at or before `cursor` (0 if none); `head` is the origin's
    /// entry in [`Store::vector`].
    pub fn seq_at_or_before(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        head: u64,
        cursor: &Cursor,
    ) -> Result<u64, StoreError> {
        self.last_seq_where(channel, origin, head, |at| at <= cursor)
    }

    /// The highest seq in `1..=head` of `origin` whose history position
    /// satisfies `wanted` (0 if none), where `wanted` holds for a prefix of
    /// the origin's messages. An origin's timestamps grow with its seq, so
    /// "at or before a cursor" is such a prefix, and this is a binary search
    /// over stored runs that decodes one run's timestamps per step.
    fn last_seq_where(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        head: u64,
        wanted: impl Fn(&Cursor) -> bool,
    ) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (0u64, head); // answer in lo..=hi
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let Some((key, bytes)) = self.run_holding(channel, origin, mid)? else {
                return Err(StoreError::Inconsistent {
                    key: lossy(&keys::message_key(channel, origin, mid)),
                    why: "gap in an origin's messages",
                });
            };
            let hlcs = runs::hlcs(&key, &bytes)?;
            let first = runs::first_seq(&key, hlcs.len())?;
            if first > mid {
                return Err(StoreError::Inconsistent {
                    key: lossy(&key),
                    why: "gap in an origin's messages",
                });
            }
            // The wanted ones of this run, a prefix of it.
            let wanted_here = (first..)
                .zip(&hlcs)
                .take_while(|&(seq, &hlc)| {
                    wanted(&Cursor {
                        hlc: Hlc(hlc),
                        origin: origin.clone(),
                        seq,
                    })
                })
                .count() as u64;
            if wanted_here == 0 {
                hi = first - 1;
            } else if wanted_here < hlcs.len() as u64 {
                return Ok((first + wanted_here - 1).min(hi));
            } else {
                lo = (first + wanted_here - 1).min(hi);
            }
        }
        Ok(lo)
    }

    /// The channel's version vector: per origin, the highest seq held
    /// (seqs are stored gap-free, so the highest is the contiguous one).
    pub fn vector(&self, channel: &ChannelId) -> Result<Vector, StoreError> {
        let prefix = keys::channel_messages_prefix(channel);
        let end = keys::prefix_end(&prefix);
        let mut vector = Vector::new();
        let mut from = prefix.clone();
        // One seek per origin: find the next origin, then its last key.
        while let Some((k, _)) = self.log.range(from..end.clone()).next().transpose()? {
            let Some(origin) = keys::origin_of_message(prefix.len(), &k) else {
                return Err(StoreError::Inconsistent {
                    key: lossy(&k),
                    why: "malformed message key",
                });
            };
            let origin_prefix = keys::origin_messages_prefix(channel, &origin);
            if let Some((last, _)) = self
                .log
                .scan_prefix(&origin_prefix)
                .next_back()
                .transpose()?
            {
                vector.insert(origin, keys::seq_of_message(&last).unwrap_or_default());
            }
            from = keys::prefix_end(&origin_prefix);
        }
        Ok(vector)
    }

    /// Applies a batch atomically. Durable only after [`Store::flush`].
    ///
    /// A batch of one write is a plain insert, which is atomic by itself:
    /// sled writes a batch's manifest to the log apart from its data, so
    /// with one post per round (a lone poster) `apply_batch` would cost a
    /// second log write and sync.
    pub fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        let _guard = self.lock_log();
        let mut writes = batch.log;
        writes.extend(batch.runs.into_iter().map(runs::RunBuilder::finish));
        if writes.len() > 1 {
            let mut sled_batch = sled::Batch::default();
            for (key, value) in writes {
                sled_batch.insert(key, value);
            }
            self.log.apply_batch(sled_batch)?;
        } else if let Some((key, value)) = writes.pop() {
            self.log.insert(key, value)?;
        }
        Ok(())
    }

    /// Makes everything applied so far durable, also across a power cut:
    /// sled's flush, then what it leaves unsynced ([`disk`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut guard = self.lock_log();
        self.durability.sync_blobs(&mut guard)?;
        self.db.flush()?;
        self.durability.sync_log()
    }

    /// Held by every write to the `log` tree and by every flush, so a flush
    /// never looks at a blob file that sled is still writing ([`disk`]):
    /// only the `log` tree holds values large enough for blobs.
    fn lock_log(&self) -> disk::LogGuard<'_> {
        self.durability.lock()
    }

    /// Up to `limit` messages of a page, oldest first, and whether more lie
    /// beyond it in the direction read. A page also stops before its
    /// messages would pass `max_bytes` (each counted as its envelope plus
    /// [`MESSAGE_OVERHEAD_BYTES`]), but always holds at least one, so that
    /// no page is too large to send and none is read into memory whole.
    ///
    /// Each origin's messages are stored in seq order, which is also their
    /// history order; a page is a merge of the origins' messages.
    pub fn history(
        &self,
        channel: &ChannelId,
        page: &Page,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Stored>, bool), StoreError> {
        let backward = matches!(page, Page::Newest | Page::Before(_));
        let mut origins = Vec::new();
        for (origin, head) in self.vector(channel)? {
            let (first, last) = match page {
                Page::Beginning | Page::Newest => (1, head),
                Page::Before(c) => (1, self.last_seq_where(channel, &origin, head, |at| at < c)?),
                Page::After(c) => (self.seq_at_or_before(channel, &origin, head, c)? + 1, head),
            };
            if first > last {
                continue;
            }
            let Some((last_run, _)) = self.run_holding(channel, &origin, last)? else {
                continue;
            };
            let range = self
                .log
                .range(keys::message_key(channel, &origin, first)..=last_run.to_vec());
            let rest: Box<dyn Iterator<Item = _>> = if backward {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            origins.push(OriginPage::new(rest, first..=last, backward)?);
        }
        let mut out = Vec::with_capacity(limit.min(1024));
        // The next message in reading order is the smallest (or, reading
        // backward, the largest) head among the origins.
        let next = |origins: &[OriginPage]| {
            let heads = origins
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.head.as_ref().map(|h| (i, &h.cursor)));
            if backward {
                heads.max_by(|a, b| a.1.cmp(b.1)).map(|(i, _)| i)
            } else {
                heads.min_by(|a, b| a.1.cmp(b.1)).map(|(i, _)| i)
            }
        };
        let mut bytes = 0;
        while let Some(i) = next(&origins) {
            let size = origins[i]
                .head
                .as_ref()
                .map_or(0, |h| h.envelope.encoded_len() + MESSAGE_OVERHEAD_BYTES);
            if out.len() == limit || (!out.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            out.extend(origins[i].advance()?);
        }
        let more = next(&origins).is_some();
        if backward {
            out.reverse();
        }
        Ok((out, more))
    }

    // --- peers ---

    pub fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.peers
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    pub fn peer(&self, org: &OrgId) -> Result<Option<PeerRecord>, StoreError> {
        let key = org.as_str().as_bytes();
        self.peers.get(key)?.map(|v| decode(key, &v)).transpose()
    }

    /// Adds or replaces a peer, durably, and records it in the audit log.
    pub fn put_peer(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        let key = peer.org.as_bytes();
        let sha256 = |bytes: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
        // The entry first: a crash in between leaves a recorded change that
        // did not land, never a trusted peer without its entry.
        self.audit(
            crate::audit::Event::new(if self.peers.contains_key(key)? {
                "peer.replaced"
            } else {
                "peer.added"
            })
            .with("org", &peer.org)
            .with("ca_sha256", sha256(&peer.ca_der))
            .with("signing_key_sha256", sha256(&peer.signing_key))
            .with("endpoint", &peer.endpoint)
            .with(
                "accept",
                if peer.accept == crate::proto::AcceptPolicy::Manual as i32 {
                    "manual"
                } else {
                    "auto"
                },
            ),
        )?;
        self.peers.insert(key, peer.encode_to_vec())?;
        self.flush()?;
        Ok(())
    }

    /// Removes a peer durably; `false` if it was not configured.
    pub fn remove_peer(&self, org: &OrgId) -> Result<bool, StoreError> {
        let key = org.as_str().as_bytes();
        if self.peers.contains_key(key)? {
            self.audit(crate::audit::Event::new("peer.removed").with("org", org))?;
        }
        let removed = self.peers.remove(key)?.is_some();
        let prefix = keys::cursor_key(org, "");
        for key in self.cursors.scan_prefix(&prefix).keys() {
            self.cursors.remove(key?)?;
        }
        self.flush()?;
        Ok(removed)
    }

    // --- per-peer cursors ---

    /// Records what `peer` acknowledged of `channel` (made durable by the next flush).
    pub fn put_cursor(
        &self,
        peer: &OrgId,
        channel: &str,
        vector: &Vector,
    ) -> Result<(), StoreError> {
        let entries = vector
            .iter()
            .map(|(o, s)| VectorEntry {
                origin: o.to_string(),
                seq: *s,
            })
            .collect();
        let value = ChannelVector {
            channel: channel.to_owned(),
            entries,
        };
        self.cursors
            .insert(keys::cursor_key(peer, channel), value.encode_to_vec())?;
        Ok(())
    }

    /// Removes `peer`'s records of every channel for which `keep(channel)`
    /// is false; returns how many went. Durable with the next flush.
    pub fn retain_cursors(
        &self,
        peer: &OrgId,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<usize, StoreError> {
        let prefix = keys::cursor_key(peer, "");
        let mut removed = 0;
        for key in self.cursors.scan_prefix(&prefix).keys() {
            let key = key?;
            let channel = String::from_utf8_lossy(&key[prefix.len()..]);
            if !keep(&channel) {
                self.cursors.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// What `peer` last acknowledged of `channel`.
    pub fn cursor(&self, peer: &OrgId, channel: &str) -> Result<Vector, StoreError> {
        let key = keys::cursor_key(peer, channel);
        let Some(v) = self.cursors.get(&key)? else {
            return Ok(Vector::new());
        };
        let cv: ChannelVector = decode(&key, &v)?;
        Ok(cv
            .entries
            .into_iter()
            .filter_map(|e| Some((OrgId::parse(&e.origin).ok()?, e.seq)))
            .collect())
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
        drop(Store::create(&path, &org("police.example"), 1 << 20).unwrap());
        let err = Store::open(&path, &org("rescue.example"), 1 << 20).unwrap_err();
        assert!(
            err.to_string().contains("belongs to org police.example"),
            "{err}"
        );
        {
            // No background flusher: it would hold the lock past the drop.
            let db = sled::Config::new()
                .path(&path)
                .flush_every_ms(None)
                .open()
                .unwrap();
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
        let _first = Store::create(tmp.path(), &org("a"), 1 << 20).unwrap();
        assert!(matches!(
            Store::open(tmp.path(), &org("a"), 1 << 20),
            Err(StoreError::Locked(_))
        ));
    }

    /// A batch of one write (a plain insert) and of several (sled's batch)
    /// both land; within a batch the later write of a key wins.
    #[test]
    fn batches_of_one_and_of_many_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let record = |name: &str, roster_seq| ChannelRecord {
            id: format!("police.example/{name}"),
            home: home.to_string(),
            roster_seq,
            ..Default::default()
        };
        let mut one = StoreBatch::default();
        one.put_channel(&record("a", 1));
        store.apply(one).unwrap();
        let mut many = StoreBatch::default();
        many.put_channel(&record("b", 1));
        many.put_channel(&record("a", 2));
        many.put_channel(&record("a", 3));
        store.apply(many).unwrap();
        store.apply(StoreBatch::default()).unwrap();
        let held: Vec<_> = store
            .channels()
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.roster_seq))
            .collect();
        assert_eq!(
            held,
            [
                ("police.example/a".to_string(), 3),
                ("police.example/b".to_string(), 1)
            ]
        );
        // Channels by home, from the keys: another org's whose name extends
        // this one's is not among them.
        let mut other = StoreBatch::default();
        other.put_channel(&ChannelRecord {
            id: "police.examples/c".into(),
            home: "police.examples".into(),
            ..Default::default()
        });
        store.apply(other).unwrap();
        let ids = store.channel_ids_of(&home).unwrap();
        assert_eq!(
            ids,
            ["police.example/a", "police.example/b"]
                .map(String::from)
                .into()
        );
    }

    /// Stages an envelope of `origin` with that seq, hlc and body size;
    /// returns its cursor.
    fn stage(
        batch: &mut StoreBatch,
        ch: &ChannelId,
        origin: &OrgId,
        seq: u64,
        hlc: u64,
        body: usize,
    ) -> Cursor {
        let envelope = Envelope {
            origin: origin.to_string(),
            origin_seq: seq,
            hlc,
            body: vec![seq as u8; body],
            ..Default::default()
        };
        let cursor = Cursor {
            hlc: Hlc(hlc),
            origin: origin.clone(),
            seq,
        };
        batch.put_envelope(ch, &cursor, &envelope);
        cursor
    }

    /// A store with a gap in an origin's seqs (which the writer never
    /// writes) answers a positioned page with an error, not a wrong page or
    /// a search that never ends.
    #[test]
    fn a_gap_in_an_origins_seqs_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let ch = ChannelId::new(home.clone(), ChannelName::parse("ops").unwrap());
        let mut batch = StoreBatch::default();
        let cursors: Vec<Cursor> = [1, 2, 3, 7, 8]
            .into_iter()
            .map(|seq| stage(&mut batch, &ch, &home, seq, 100 + seq, 0))
            .collect();
        store.apply(batch).unwrap();
        for page in [
            Page::Before(cursors[4].clone()),
            Page::After(cursors[1].clone()),
        ] {
            assert!(
                matches!(
                    store.history(&ch, &page, 10, usize::MAX),
                    Err(StoreError::Inconsistent { .. })
                ),
                "{page:?}"
            );
        }
    }

    /// A page stops before its messages pass the byte budget, keeping those
    /// nearest where it starts, and always holds at least one.
    #[test]
    fn history_pages_are_bounded_by_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let ch = ChannelId::new(home.clone(), ChannelName::parse("ops").unwrap());
        let mut batch = StoreBatch::default();
        let all: Vec<Cursor> = (1..=5)
            .map(|seq| stage(&mut batch, &ch, &home, seq, 100 + seq, 1000))
            .collect();
        store.apply(batch).unwrap();
        let page = |p: Page, max_bytes| {
            let (got, more) = store.history(&ch, &p, 10, max_bytes).unwrap();
            (got.into_iter().map(|s| s.cursor).collect::<Vec<_>>(), more)
        };
        // Two messages of about 1,000 bytes and their overhead fit in 2,600.
        assert_eq!(page(Page::Beginning, 2600), (all[..2].to_vec(), true));
        assert_eq!(page(Page::Newest, 2600), (all[3..].to_vec(), true));
        assert_eq!(
            page(Page::After(all[1].clone()), 2600),
            (all[2..4].to_vec(), true)
        );
        assert_eq!(page(Page::Beginning, 1), (all[..1].to_vec(), true));
        assert_eq!(page(Page::Beginning, usize::MAX), (all.clone(), false));
    }

    /// Three origins whose timestamps interleave (with ties across origins):
    /// every page, read either way from anywhere, is the matching slice of
    /// all messages sorted by (hlc, origin, seq).
    #[test]
    fn history_pages_merge_the_origins_in_cursor_order() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let ch = ChannelId::new(home.clone(), ChannelName::parse("ops").unwrap());
        let origins = [home.clone(), org("rescue.example"), org("health.example")];
        let mut all = Vec::new();
        let mut batch = StoreBatch::default();
        for (i, origin) in origins.iter().enumerate() {
            // Strictly growing per origin; equal across origins now and then.
            let mut hlc = 100;
            for seq in 1..=(7 + 3 * i as u64) {
                hlc += 1 + (seq * (i as u64 + 2)) % 3;
                // Bodies of 0 to 4,200 bytes, so some runs end at their size.
                let body = (seq as usize % 7) * 700;
                all.push(stage(&mut batch, &ch, origin, seq, hlc, body));
                // Several rounds, so runs end at rounds too.
                if seq % 5 == 0 {
                    store.apply(std::mem::take(&mut batch)).unwrap();
                }
            }
        }
        store.apply(batch).unwrap();
        all.sort();
        let page = |p: Page, limit| {
            let (got, more) = store.history(&ch, &p, limit, usize::MAX).unwrap();
            (got.into_iter().map(|s| s.cursor).collect::<Vec<_>>(), more)
        };
        let n = all.len();
        assert_eq!(page(Page::Beginning, n), (all.clone(), false));
        assert_eq!(page(Page::Newest, 4), (all[n - 4..].to_vec(), true));
        for (i, c) in all.iter().enumerate() {
            for limit in [1, 3, n] {
                let before = &all[i.saturating_sub(limit)..i];
                assert_eq!(
                    page(Page::Before(c.clone()), limit),
                    (before.to_vec(), i > limit),
                    "before {c:?}, limit {limit}"
                );
                let after = &all[i + 1..(i + 1 + limit).min(n)];
                assert_eq!(
                    page(Page::After(c.clone()), limit),
                    (after.to_vec(), i + 1 + limit < n),
                    "after {c:?}, limit {limit}"
                );
            }
        }
        // Cursors that name no stored message, as a client may send: one
        // between messages (an origin that sorts after all at the same hlc),
        // one with seq 0, one whose hlc does not match its (origin, seq).
        let strays = [
            Cursor {
                hlc: Hlc(all[5].hlc.0),
                origin: org("zz.example"),
                seq: 1,
            },
            Cursor {
                hlc: Hlc(all[5].hlc.0),
                origin: home.clone(),
                seq: 0,
            },
            Cursor {
                hlc: Hlc(all[8].hlc.0),
                origin: all[3].origin.clone(),
                seq: all[3].seq,
            },
            Cursor {
                hlc: Hlc(0),
                origin: home.clone(),
                seq: 0,
            },
        ];
        for stray in strays {
            let before: Vec<_> = all.iter().filter(|c| **c < stray).cloned().collect();
            let after: Vec<_> = all.iter().filter(|c| **c > stray).cloned().collect();
            assert_eq!(page(Page::Before(stray.clone()), n).0, before, "{stray:?}");
            assert_eq!(page(Page::After(stray.clone()), n).0, after, "{stray:?}");
        }

        assert_eq!(
            store.chain_head(&ch, &home).unwrap().map(|h| h.seq),
            Some(7)
        );
        assert_eq!(store.chain_head(&ch, &org("x.example")).unwrap(), None);
        assert_eq!(
            store.vector(&ch).unwrap(),
            Vector::from([
                (origins[0].clone(), 7),
                (origins[1].clone(), 10),
                (origins[2].clone(), 13)
            ])
        );
        let from = store.envelopes_from(&ch, &origins[1], 4, 3).unwrap();
        assert_eq!(
            from.iter().map(|e| e.origin_seq).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(
            store.envelope(&ch, &home, 7).unwrap().map(|e| e.origin_seq),
            Some(7)
        );
        assert_eq!(store.envelope(&ch, &home, 8).unwrap(), None);
    }
}
