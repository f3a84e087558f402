//! Configured peers (the `peers` tree) and what each acknowledged of each
//! channel (the `cursors` tree).

use prost::Message as _;

use super::{Store, StoreError, decode, keys};
use crate::audit::Actor;
use crate::model::{OrgId, VersionVector};
use crate::proto::{ChannelVector, PeerRecord, VectorEntry};

impl Store {
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
    pub fn put_peer(&self, peer: &PeerRecord, actor: &Actor) -> Result<(), StoreError> {
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
            )
            .by(actor),
        )?;
        self.peers.insert(key, &peer.encode_to_vec())?;
        self.flush()?;
        Ok(())
    }

    /// Removes a peer durably; `false` if it was not configured.
    pub fn remove_peer(&self, org: &OrgId, actor: &Actor) -> Result<bool, StoreError> {
        let key = org.as_str().as_bytes();
        if self.peers.contains_key(key)? {
            self.audit(
                crate::audit::Event::new("peer.removed")
                    .with("org", org)
                    .by(actor),
            )?;
        }
        let removed = self.peers.remove(key)?;
        let prefix = keys::cursor_key(org, "");
        for kv in self.cursors.scan_prefix(&prefix) {
            self.cursors.remove(&kv?.0)?;
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
        vector: &VersionVector,
    ) -> Result<(), StoreError> {
        self.cursors.insert(
            &keys::cursor_key(peer, channel),
            &encode_vector(channel, vector),
        )
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
        for kv in self.cursors.scan_prefix(&prefix) {
            let (key, _) = kv?;
            let channel = String::from_utf8_lossy(&key[prefix.len()..]);
            if !keep(&channel) {
                self.cursors.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// What `peer` last acknowledged of `channel`.
    pub fn cursor(&self, peer: &OrgId, channel: &str) -> Result<VersionVector, StoreError> {
        let key = keys::cursor_key(peer, channel);
        let Some(v) = self.cursors.get(&key)? else {
            return Ok(VersionVector::new());
        };
        decode_vector(&key, &v)
    }

    /// Whether `peer` ever stated what it holds of `channel` (in a hello or
    /// progress), even nothing: whether it took the channel.
    pub fn stated(&self, peer: &OrgId, channel: &str) -> Result<bool, StoreError> {
        Ok(self
            .cursors
            .get(&keys::cursor_key(peer, channel))?
            .is_some())
    }
}

/// A channel's version vector as stored (a `ChannelVector`).
pub(super) fn encode_vector(channel: &str, vector: &VersionVector) -> Vec<u8> {
    let entries = vector
        .iter()
        .map(|(o, s)| VectorEntry {
            origin: o.to_string(),
            seq: *s,
        })
        .collect();
    ChannelVector {
        channel: channel.to_owned(),
        entries,
    }
    .encode_to_vec()
}

/// The version vector stored under `key` (entries naming no valid org are
/// dropped).
pub(super) fn decode_vector(key: &[u8], bytes: &[u8]) -> Result<VersionVector, StoreError> {
    let cv: ChannelVector = decode(key, bytes)?;
    Ok(cv
        .entries
        .into_iter()
        .filter_map(|e| Some((OrgId::parse(&e.origin).ok()?, e.seq)))
        .collect())
}
