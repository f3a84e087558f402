//! Upgrades a store written by an older samband, in place, when it is opened.
//!
//! Schema version 1 kept every message under two keys in the `log` tree:
//! * `h` channel 0 hlc origin 0 seq → envelope (history order)
//! * `e` channel 0 origin 0 seq     → hlc      (identity index)
//!
//! Version 2 kept one, `m` channel 0 origin 0 seq → envelope, and read
//! history as a merge of the origins' runs (see [`super::keys`]). Version 3
//! (now) stores a few consecutive envelopes under the key of the last
//! ([`super::runs`]), and reads a version-2 value as a run of one: so an
//! upgrade from version 1 moves each message to its version-2 key, and one
//! from version 2 only changes the version.

use std::collections::HashMap;

use prost::Message as _;

use super::kv::{Tree, Write};
use super::{META_SCHEMA, SCHEMA_VERSION, Store, StoreError, keys, lossy};
use crate::model::{ChannelId, OrgId};
use crate::proto::Envelope;

const V1_IDENTITY: u8 = b'e';
const V1_HISTORY: u8 = b'h';
const BATCH: usize = 1024;
/// In `meta` while an upgrade from version 1 is under way.
const META_UPGRADING: &[u8] = b"upgrading_from_schema_1";

/// Whether an upgrade was cut short and must be finished.
pub(super) fn is_unfinished(meta: &dyn Tree) -> Result<bool, StoreError> {
    meta.contains_key(META_UPGRADING)
}

/// Marks a version-1 store as being upgraded, durably, before anything
/// moves: it says the current version from then on, so a samband that reads only
/// version 1 refuses it instead of writing to a half-moved store.
pub(super) fn begin(store: &Store) -> Result<(), StoreError> {
    mark(&*store.meta)?;
    store.flush()
}

/// The current version and "upgrading", in one atomic write to `meta`.
fn mark(meta: &dyn Tree) -> Result<(), StoreError> {
    meta.apply(vec![
        Write::Put(META_SCHEMA.to_vec(), SCHEMA_VERSION.to_be_bytes().to_vec()),
        Write::Put(META_UPGRADING.to_vec(), vec![1]),
    ])
}

/// Moves what is left of version 1, then clears the mark.
pub(super) fn finish(store: &Store) -> Result<(), StoreError> {
    let moved = move_messages(&*store.log, BATCH, usize::MAX)?;
    store.meta.remove(META_UPGRADING)?;
    store.flush()?;
    tracing::info!(
        messages = moved,
        "store upgraded to schema version {SCHEMA_VERSION}"
    );
    Ok(())
}

/// Moves version-1 messages to their version-2 keys, `batch` at a time, at
/// most `max_batches` batches; returns how many.
///
/// Each batch writes the new keys and removes the old ones of the same
/// messages atomically, so an upgrade cut short (a crash, a full disk)
/// carries on from where it stopped at the next open. Version 1 accepted
/// timestamps that go back within an origin's chain, which history reading
/// now assumes never happens; such origins are reported, not refused.
fn move_messages(log: &dyn Tree, batch: usize, max_batches: usize) -> Result<u64, StoreError> {
    let mut moved = 0u64;
    // Per (channel, origin): the last seq seen, in history (hlc) order.
    let mut last_seq: HashMap<(ChannelId, OrgId), u64> = HashMap::new();
    let mut out_of_order: HashMap<(ChannelId, OrgId), u64> = HashMap::new();
    for _ in 0..max_batches {
        let mut writes = Vec::new();
        let mut n = 0;
        for kv in log.scan_prefix(&[V1_HISTORY]).take(batch) {
            let (key, value) = kv?;
            let (channel, origin, seq) = message_of(&key, &value)?;
            let new_key = keys::message_key(&channel, &origin, seq);
            // Version 1's identity key differed from it only in its first byte.
            let mut old_identity = new_key.clone();
            old_identity[0] = V1_IDENTITY;
            let id = (channel, origin);
            if last_seq.get(&id).is_some_and(|&last| last > seq) {
                *out_of_order.entry(id.clone()).or_default() += 1;
            }
            last_seq.insert(id, seq);
            writes.push(Write::Put(new_key, value.to_vec()));
            writes.push(Write::Delete(old_identity));
            writes.push(Write::Delete(key.to_vec()));
            n += 1;
        }
        if n == 0 {
            // Every identity entry went with its history entry; any left is stray.
            for kv in log.scan_prefix(&[V1_IDENTITY]) {
                log.remove(&kv?.0)?;
            }
            break;
        }
        log.apply(writes)?;
        moved += n;
    }
    for ((channel, origin), n) in out_of_order {
        tracing::warn!(
            %channel, %origin, messages = n,
            "this origin's timestamps go back within its chain (accepted before schema version 2); \
             history pages before or after a cursor may skip or repeat its messages"
        );
    }
    Ok(moved)
}

/// The channel, origin and seq of the message under version-1 history key `key`.
fn message_of(key: &[u8], value: &[u8]) -> Result<(ChannelId, OrgId, u64), StoreError> {
    let inconsistent = |why| StoreError::Inconsistent {
        key: lossy(key),
        why,
    };
    let channel = key
        .get(1..)
        .and_then(|rest| rest.split(|b| *b == 0).next())
        .and_then(|name| std::str::from_utf8(name).ok())
        .and_then(|name| ChannelId::parse(name).ok())
        .ok_or_else(|| inconsistent("malformed version-1 history key"))?;
    let envelope = Envelope::decode(value).map_err(|source| StoreError::Corrupt {
        key: lossy(key),
        source,
    })?;
    let origin = OrgId::parse(&envelope.origin)
        .map_err(|_| inconsistent("version-1 envelope with a malformed origin"))?;
    Ok((channel, origin, envelope.origin_seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Page;
    use crate::store::kv::Values;

    /// The data dir of a schema-1 node (see `tests/upgrade.rs`), unpacked.
    fn schema_1_store() -> tempfile::TempDir {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/store-schema1.tar.gz"
        );
        let tmp = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("tar")
            .args(["xzf", fixture, "-C"])
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(status.success());
        tmp
    }

    fn everything(store: &Store) -> Vec<(String, Vec<(String, u64)>)> {
        let mut out = Vec::new();
        for record in store.channels().unwrap() {
            let id = ChannelId::parse(&record.id).unwrap();
            let (page, more) = store
                .history(&id, &Page::Beginning, 1000, usize::MAX)
                .unwrap();
            assert!(!more);
            let ids = page
                .iter()
                .map(|m| (m.cursor.origin.to_string(), m.cursor.seq))
                .collect();
            out.push((record.id, ids));
        }
        out
    }

    /// An upgrade cut short after its first batch: the store already says
    /// the current version, or 2 if a samband of schema version 2 was
    /// upgrading it (so a samband that reads only version 1 refuses it), and
    /// the next open finishes the move with every message in place.
    #[test]
    fn an_upgrade_cut_short_is_refused_by_old_readers_and_finished_on_open() {
        let org = OrgId::parse("police.example").unwrap();
        let whole = schema_1_store();
        let expected = everything(&Store::open(&whole.path().join("data"), &org, 1 << 20).unwrap());
        assert_eq!(expected.iter().map(|(_, m)| m.len()).sum::<usize>(), 37);

        for marked_as in [SCHEMA_VERSION, 2] {
            let cut = schema_1_store();
            let data = cut.path().join("data");
            {
                let engine = crate::store::kv::open(&data, 1 << 20).unwrap();
                let meta = engine.tree("meta", Values::Small).unwrap();
                let log = engine.tree("log", Values::Large).unwrap();
                mark(&*meta).unwrap();
                let schema = meta.get(META_SCHEMA).unwrap().unwrap();
                assert_ne!(&*schema, 1u32.to_be_bytes(), "old readers refuse it");
                meta.insert(META_SCHEMA, &marked_as.to_be_bytes()).unwrap();
                assert_eq!(move_messages(&*log, 5, 1).unwrap(), 5);
                assert!(log.scan_prefix(&[V1_HISTORY]).next().is_some(), "cut short");
                engine.flush().unwrap();
            }
            let store = Store::open(&data, &org, 1 << 20).unwrap();
            assert_eq!(everything(&store), expected, "marked as {marked_as}");
            assert!(!is_unfinished(&*store.meta).unwrap());
            assert_eq!(
                &*store.meta.get(META_SCHEMA).unwrap().unwrap(),
                SCHEMA_VERSION.to_be_bytes()
            );
            assert!(store.log.scan_prefix(&[V1_HISTORY]).next().is_none());
            assert!(store.log.scan_prefix(&[V1_IDENTITY]).next().is_none());
        }
    }
}
