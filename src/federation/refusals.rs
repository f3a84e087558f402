//! What partners refused of the envelopes this node sent them, and why.
//!
//! A partner that refuses an envelope says so in a `Refusals` frame. This
//! module keeps those refusals, for channels the partner may see and for
//! envelopes this node holds, until the partner's progress shows it holds
//! them after all: so a member sees which message did not reach whom
//! (`Message.refused_by`), and an operator why a partner is behind
//! (`LinkStatus.last_refusal`). Memory only: a partner refuses again what
//! it still lacks whenever a link starts and this node sends it again.
//!
//! Bounded per partner ([`MAX_PER_PEER`]) so that a partner cannot grow
//! it at will. May use: `model`, `locks`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::model::{OrgId, VersionVector};

/// Most refusals kept per partner; further ones are counted, not kept.
pub(crate) const MAX_PER_PEER: usize = 10_000;

/// One partner's refusal of one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) by: OrgId,
    /// The rule the envelope broke, in the partner's words.
    pub(crate) reason: String,
    /// Time may cure it: this node is asked for it again later.
    pub(crate) retrying: bool,
}

/// (channel id, origin) → seq → refusals.
type ByEnvelope = HashMap<(String, OrgId), BTreeMap<u64, Vec<Refused>>>;

/// (channel id, origin, seq) → (file SHA-256, refusal).
type ByFile = HashMap<(String, OrgId, u64), Vec<([u8; 32], Refused)>>;

/// One file refusal: channel id, origin, seq, file SHA-256, reason.
pub(crate) type FileRefusal = (String, OrgId, u64, [u8; 32], String);

#[derive(Debug, Default)]
pub(crate) struct Refusals {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    envelopes: ByEnvelope,
    /// Per partner: how many refusals are kept, and the latest reason.
    peers: HashMap<OrgId, PeerRefusals>,
    /// Files of envelopes that were taken, refused by a partner (or by
    /// this node): (channel, origin, seq) → (file SHA-256, refusal). Kept
    /// while the node runs, since the envelope's progress does not cure them.
    files: ByFile,
    /// Per partner: how many file refusals are kept.
    file_counts: HashMap<OrgId, usize>,
}

/// What a partner refused and still lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerRefusals {
    pub(crate) count: usize,
    pub(crate) last_reason: String,
}

impl Refusals {
    /// Records that `peer` refused `(channel, origin, seq)`; `false` if it
    /// was known already or `peer` is at its bound.
    pub(crate) fn record(
        &self,
        peer: &OrgId,
        channel: &str,
        origin: &OrgId,
        seq: u64,
        reason: &str,
        retrying: bool,
    ) -> bool {
        let mut inner = crate::locks::lock(&self.inner);
        let held = inner.peers.get(peer).map_or(0, |p| p.count);
        let known = inner
            .envelopes
            .get(&(channel.to_owned(), origin.clone()))
            .and_then(|by_seq| by_seq.get(&seq))
            .is_some_and(|r| r.iter().any(|r| r.by == *peer));
        if held >= MAX_PER_PEER && !known {
            return false;
        }
        let by_seq = inner
            .envelopes
            .entry((channel.to_owned(), origin.clone()))
            .or_default()
            .entry(seq)
            .or_default();
        let refused = Refused {
            by: peer.clone(),
            reason: reason.to_owned(),
            retrying,
        };
        let new = match by_seq.iter_mut().find(|r| r.by == *peer) {
            Some(known) => {
                *known = refused;
                false
            }
            None => {
                by_seq.push(refused);
                true
            }
        };
        let entry = inner.peers.entry(peer.clone()).or_default();
        entry.count += usize::from(new);
        entry.last_reason = reason.to_owned();
        new
    }

    /// Records that `by` refused file `sha256` of `(channel, origin, seq)`;
    /// `false` if it was known already or `by` is at its bound.
    pub(crate) fn record_file(
        &self,
        by: &OrgId,
        channel: &str,
        origin: &OrgId,
        seq: u64,
        sha256: [u8; 32],
        reason: &str,
    ) -> bool {
        let mut inner = crate::locks::lock(&self.inner);
        if inner.file_counts.get(by).copied().unwrap_or(0) >= MAX_PER_PEER {
            return false;
        }
        let files = inner
            .files
            .entry((channel.to_owned(), origin.clone(), seq))
            .or_default();
        if files.iter().any(|(h, r)| *h == sha256 && r.by == *by) {
            return false;
        }
        files.push((
            sha256,
            Refused {
                by: by.clone(),
                reason: reason.to_owned(),
                retrying: false,
            },
        ));
        *inner.file_counts.entry(by.clone()).or_default() += 1;
        true
    }

    /// Who refused file `sha256` of `(channel, origin, seq)`, and why.
    pub(crate) fn of_file(
        &self,
        channel: &str,
        origin: &OrgId,
        seq: u64,
        sha256: &[u8],
    ) -> Vec<Refused> {
        let inner = crate::locks::lock(&self.inner);
        if inner.files.is_empty() {
            return Vec::new();
        }
        inner
            .files
            .get(&(channel.to_owned(), origin.clone(), seq))
            .map(|files| {
                files
                    .iter()
                    .filter(|(h, _)| h.as_slice() == sha256)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every file refusal `by` made: what a link tells the partner.
    pub(crate) fn files_refused_by(&self, by: &OrgId) -> Vec<FileRefusal> {
        let inner = crate::locks::lock(&self.inner);
        let mut out = Vec::new();
        for ((channel, origin, seq), files) in &inner.files {
            for (hash, r) in files.iter().filter(|(_, r)| r.by == *by) {
                out.push((
                    channel.clone(),
                    origin.clone(),
                    *seq,
                    *hash,
                    r.reason.clone(),
                ));
            }
        }
        out
    }

    /// Forgets `peer`'s refusals of what `held` (its vector of `channel`)
    /// shows it holds now.
    pub(crate) fn held(&self, peer: &OrgId, channel: &str, held: &VersionVector) {
        let mut inner = crate::locks::lock(&self.inner);
        // Called for every channel of every hello and progress frame: most
        // often nothing of the peer's is kept, and there is nothing to do.
        if !inner.peers.contains_key(peer) {
            return;
        }
        let mut dropped = 0;
        for (origin, &seq) in held {
            let key = (channel.to_owned(), origin.clone());
            let Some(by_seq) = inner.envelopes.get_mut(&key) else {
                continue;
            };
            for refusals in by_seq.range_mut(..=seq).map(|(_, r)| r) {
                let before = refusals.len();
                refusals.retain(|r| r.by != *peer);
                dropped += before - refusals.len();
            }
            by_seq.retain(|_, r| !r.is_empty());
            if by_seq.is_empty() {
                inner.envelopes.remove(&key);
            }
        }
        if dropped > 0 {
            Self::uncount(&mut inner, peer, dropped);
        }
    }

    /// Forgets everything `peer` refused (it is no longer a peer).
    pub(crate) fn forget(&self, peer: &OrgId) {
        let mut inner = crate::locks::lock(&self.inner);
        inner.envelopes.retain(|_, by_seq| {
            by_seq.retain(|_, r| {
                r.retain(|r| r.by != *peer);
                !r.is_empty()
            });
            !by_seq.is_empty()
        });
        inner.peers.remove(peer);
        inner.files.retain(|_, files| {
            files.retain(|(_, r)| r.by != *peer);
            !files.is_empty()
        });
        inner.file_counts.remove(peer);
    }

    fn uncount(inner: &mut Inner, peer: &OrgId, n: usize) {
        if let Some(p) = inner.peers.get_mut(peer) {
            p.count = p.count.saturating_sub(n);
            if p.count == 0 {
                inner.peers.remove(peer);
            }
        }
    }

    /// Who refused `(channel, origin, seq)`, and why.
    pub(crate) fn of(&self, channel: &str, origin: &OrgId, seq: u64) -> Vec<Refused> {
        let inner = crate::locks::lock(&self.inner);
        // Asked for every message a member reads: most often none is kept.
        if inner.envelopes.is_empty() {
            return Vec::new();
        }
        inner
            .envelopes
            .get(&(channel.to_owned(), origin.clone()))
            .and_then(|by_seq| by_seq.get(&seq))
            .cloned()
            .unwrap_or_default()
    }

    /// What `peer` refused and still lacks.
    pub(crate) fn by_peer(&self, peer: &OrgId) -> PeerRefusals {
        crate::locks::lock(&self.inner)
            .peers
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    #[test]
    fn a_refusal_is_kept_until_the_partner_holds_the_envelope() {
        let r = Refusals::default();
        let (home, b, c) = (org("police.example"), org("b.example"), org("c.example"));
        assert!(r.record(&home, "b.example/ops", &b, 3, "timestamp ahead", true));
        assert!(!r.record(&home, "b.example/ops", &b, 3, "timestamp ahead", true));
        assert!(r.record(&c, "b.example/ops", &b, 3, "too large", false));
        assert_eq!(r.of("b.example/ops", &b, 3).len(), 2);
        assert_eq!(r.by_peer(&home).count, 1);
        // Progress below the seq changes nothing; at it, that partner's goes.
        r.held(&home, "b.example/ops", &[(b.clone(), 2)].into());
        assert_eq!(r.of("b.example/ops", &b, 3).len(), 2);
        r.held(&home, "b.example/ops", &[(b.clone(), 3)].into());
        let left = r.of("b.example/ops", &b, 3);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].by, c);
        assert_eq!(r.by_peer(&home), PeerRefusals::default());
        r.forget(&c);
        assert!(r.of("b.example/ops", &b, 3).is_empty());
    }

    #[test]
    fn a_partner_cannot_grow_it_past_its_bound() {
        let r = Refusals::default();
        let (home, b) = (org("police.example"), org("b.example"));
        for seq in 1..=(MAX_PER_PEER as u64 + 10) {
            r.record(&home, "b.example/ops", &b, seq, "x", false);
        }
        assert_eq!(r.by_peer(&home).count, MAX_PER_PEER);
        assert!(
            r.of("b.example/ops", &b, MAX_PER_PEER as u64 + 1)
                .is_empty()
        );
        // One it holds already may still change (its reason, say).
        r.record(&home, "b.example/ops", &b, 1, "y", true);
        assert_eq!(r.of("b.example/ops", &b, 1)[0].reason, "y");
        assert_eq!(r.by_peer(&home).count, MAX_PER_PEER);
    }
}
