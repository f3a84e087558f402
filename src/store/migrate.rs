//! Upgrades a store written by an older samband, in place, when it is opened.
//!
//! Schema version 1 kept every message under two keys in the `log` tree:
//! * `h` channel 0 hlc origin 0 seq → envelope (history order)
//! * `e` channel 0 origin 0 seq     → hlc      (identity index)
//!
//! Version 2 keeps one, `m` channel 0 origin 0 seq → envelope, and reads
//! history as a merge of the origins' runs (see [`super::keys`]).

use prost::Message as _;

use super::{StoreError, keys, lossy};
use crate::model::{ChannelId, OrgId};
use crate::proto::Envelope;

const V1_HISTORY: u8 = b'h';
const V1_IDENTITY: u8 = b'e';
const BATCH: usize = 1024;

/// Moves every version-1 message to its version-2 key; returns how many.
///
/// Each batch writes the new keys and removes the old ones of the same
/// messages atomically, and the caller records version 2 only after the
/// last batch. So an upgrade cut short (a crash, a full disk) leaves a store
/// that is still version 1 for the messages not moved yet, and the next open
/// carries on from there.
pub(super) fn v1_to_v2(log: &sled::Tree) -> Result<u64, StoreError> {
    let mut moved = 0u64;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in log.scan_prefix([V1_HISTORY]).take(BATCH) {
            let (key, value) = kv?;
            let (old_identity, new_key) = keys_of(&key, &value)?;
            batch.insert(new_key, value);
            batch.remove(old_identity);
            batch.remove(key);
            n += 1;
        }
        if n == 0 {
            break;
        }
        log.apply_batch(batch)?;
        moved += n;
    }
    // Every identity entry went with its history entry; any left is stray.
    for key in log.scan_prefix([V1_IDENTITY]).keys() {
        log.remove(key?)?;
    }
    Ok(moved)
}

/// The version-1 identity key and the version-2 key of the message stored
/// under the version-1 history key `key`.
fn keys_of(key: &[u8], value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
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
    let new_key = keys::message_key(&channel, &origin, envelope.origin_seq);
    // Version 1's identity key differed from it only in its first byte.
    let mut old_identity = new_key.clone();
    old_identity[0] = V1_IDENTITY;
    Ok((old_identity, new_key))
}
