//! How messages are stored (schema 3): one key of the `log` tree per *run*,
//! a few consecutive envelopes of one origin in one channel, keyed by the
//! run's last seq (`m` channel 0 origin 0 last-seq, see [`super::keys`]).
//!
//! sled's cost is per key: one key per message capped a catch-up's inserts
//! at about 60,000 messages/s here, and runs of four made the same inserts
//! three times faster. Runs stay under [`RUN_BYTES`] because sled writes a
//! tree node of over 128 KiB to a blob file of its own, which every flush
//! must then also sync: with 8 KiB runs it already did so.
//!
//! A run of one envelope is its plain encoding, so a schema-2 store (one
//! envelope per key) reads as schema 3 unchanged. A longer run is
//! [`RUN_MARK`] and then each envelope length-delimited; no envelope
//! encoding starts with that byte (it would be wire type 7, which protobuf
//! does not have).

use prost::Message as _;

use super::{HlcOnly, StoreError, keys, lossy};
use crate::model::{ChannelId, OrgId};
use crate::proto::Envelope;

const RUN_MARK: u8 = 0xFF;
/// A run takes no envelope that would carry it over this many bytes (one
/// envelope may be larger, alone).
pub(super) const RUN_BYTES: usize = 6 * 1024;

/// One run being staged: its envelopes, encoded.
#[derive(Debug)]
pub(super) struct RunBuilder {
    channel: ChannelId,
    origin: OrgId,
    last_seq: u64,
    encoded: Vec<Vec<u8>>,
    bytes: usize,
}

impl RunBuilder {
    pub(super) fn new(channel: &ChannelId, origin: &OrgId, seq: u64, envelope: &Envelope) -> Self {
        let encoded = envelope.encode_to_vec();
        Self {
            channel: channel.clone(),
            origin: origin.clone(),
            last_seq: seq,
            bytes: encoded.len(),
            encoded: vec![encoded],
        }
    }

    pub(super) fn is_of(&self, channel: &ChannelId, origin: &OrgId) -> bool {
        self.channel == *channel && self.origin == *origin
    }

    /// Adds the envelope if it continues this run and fits; `false` if not.
    pub(super) fn push(&mut self, seq: u64, envelope: &Envelope) -> bool {
        let len = envelope.encoded_len();
        if seq != self.last_seq + 1 || self.bytes + len > RUN_BYTES {
            return false;
        }
        self.encoded.push(envelope.encode_to_vec());
        self.last_seq = seq;
        self.bytes += len;
        true
    }

    /// Replaces envelope `seq` of this run by `with(it)`: the envelope it
    /// replaced, or `None` if the run does not hold `seq`.
    pub(super) fn replace(
        &mut self,
        seq: u64,
        with: impl FnOnce(&Envelope) -> Envelope,
    ) -> Result<Option<Envelope>, StoreError> {
        let first = self.last_seq + 1 - self.encoded.len() as u64;
        let Some(slot) = seq
            .checked_sub(first)
            .and_then(|i| self.encoded.get_mut(usize::try_from(i).ok()?))
        else {
            return Ok(None);
        };
        let key = keys::message_key(&self.channel, &self.origin, self.last_seq);
        let old: Envelope = super::decode(&key, slot)?;
        let new = with(&old).encode_to_vec();
        self.bytes = self.bytes + new.len() - slot.len();
        *slot = new;
        Ok(Some(old))
    }

    /// A builder holding the stored run `envelopes` (consecutive seqs of
    /// one origin), to change and write back under the same key.
    pub(super) fn of_stored(
        channel: &ChannelId,
        origin: &OrgId,
        envelopes: &[Envelope],
    ) -> Option<Self> {
        let (first, rest) = envelopes.split_first()?;
        let mut run = Self::new(channel, origin, first.origin_seq, first);
        for env in rest {
            run.encoded.push(env.encode_to_vec());
            run.last_seq = env.origin_seq;
            run.bytes += env.encoded_len();
        }
        Some(run)
    }

    /// Whether this run holds `seq`.
    pub(super) fn holds(&self, seq: u64) -> bool {
        seq <= self.last_seq && seq + self.encoded.len() as u64 > self.last_seq
    }

    /// The run's key and value.
    pub(super) fn finish(self) -> (Vec<u8>, Vec<u8>) {
        let key = keys::message_key(&self.channel, &self.origin, self.last_seq);
        let mut encoded = self.encoded;
        if encoded.len() == 1 {
            return (key, encoded.swap_remove(0));
        }
        let mut value = Vec::with_capacity(1 + self.bytes + 4 * encoded.len());
        value.push(RUN_MARK);
        for envelope in &encoded {
            prost::encoding::encode_varint(envelope.len() as u64, &mut value);
            value.extend_from_slice(envelope);
        }
        (key, value)
    }
}

/// The envelopes of the run stored under `key`, in seq order, checked to be
/// the consecutive seqs that end at the key's.
pub(super) fn decode(key: &[u8], value: &[u8]) -> Result<Vec<Envelope>, StoreError> {
    let envelopes: Vec<Envelope> = each(key, value)?;
    let first = first_seq(key, envelopes.len())?;
    if !envelopes
        .iter()
        .map(|e| e.origin_seq)
        .eq(first..first + envelopes.len() as u64)
    {
        return Err(inconsistent(
            key,
            "a stored message run whose seqs do not end at its key",
        ));
    }
    Ok(envelopes)
}

/// The envelope `seq` of the run stored under `key`, decoding only it.
pub(super) fn get(key: &[u8], value: &[u8], seq: u64) -> Result<Option<Envelope>, StoreError> {
    let entries = entries(key, value)?;
    let first = first_seq(key, entries.len())?;
    let Some(bytes) = seq
        .checked_sub(first)
        .and_then(|i| entries.get(usize::try_from(i).ok()?))
    else {
        return Ok(None);
    };
    let envelope: Envelope = super::decode(key, bytes)?;
    if envelope.origin_seq != seq {
        return Err(inconsistent(
            key,
            "a stored message run whose seqs do not end at its key",
        ));
    }
    Ok(Some(envelope))
}

/// The timestamps of the run stored under `key`, in seq order: decoding
/// only them skips the bodies.
pub(super) fn hlcs(key: &[u8], value: &[u8]) -> Result<Vec<u64>, StoreError> {
    Ok(each::<HlcOnly>(key, value)?
        .into_iter()
        .map(|h| h.hlc)
        .collect())
}

/// The seq of the run's first envelope, given its length.
pub(super) fn first_seq(key: &[u8], len: usize) -> Result<u64, StoreError> {
    keys::seq_of_message(key)
        .and_then(|last| (last + 1).checked_sub(len as u64))
        .filter(|&first| first >= 1)
        .ok_or_else(|| inconsistent(key, "a message run longer than its last seq"))
}

fn each<M: prost::Message + Default>(key: &[u8], value: &[u8]) -> Result<Vec<M>, StoreError> {
    entries(key, value)?
        .into_iter()
        .map(|bytes| super::decode(key, bytes))
        .collect()
}

/// The encoded envelopes of a stored run, without decoding them.
fn entries<'a>(key: &[u8], value: &'a [u8]) -> Result<Vec<&'a [u8]>, StoreError> {
    let Some(mut rest) = value.strip_prefix(&[RUN_MARK]) else {
        return Ok(vec![value]); // a run of one
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = prost::encoding::decode_varint(&mut rest).ok();
        let Some(len) = len
            .and_then(|len| usize::try_from(len).ok())
            .filter(|&len| len <= rest.len())
        else {
            return Err(inconsistent(
                key,
                "a message run whose entries run past its end",
            ));
        };
        let (entry, tail) = rest.split_at(len);
        out.push(entry);
        rest = tail;
    }
    if out.is_empty() {
        return Err(inconsistent(key, "an empty message run"));
    }
    Ok(out)
}

fn inconsistent(key: &[u8], why: &'static str) -> StoreError {
    StoreError::Inconsistent {
        key: lossy(key),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(seq: u64, body: usize) -> Envelope {
        Envelope {
            origin: "police.example".into(),
            origin_seq: seq,
            hlc: 1000 + seq,
            body: vec![7; body],
            ..Envelope::default()
        }
    }

    #[test]
    fn runs_round_trip_and_stay_under_their_size() {
        let ch = ChannelId::parse("police.example/ops").unwrap();
        let origin = OrgId::parse("police.example").unwrap();
        let mut run = RunBuilder::new(&ch, &origin, 4, &envelope(4, 1000));
        assert!(!run.push(6, &envelope(6, 1000)), "only the next seq");
        let mut n = 1;
        while run.push(4 + n, &envelope(4 + n, 1000)) {
            n += 1;
        }
        assert!(n > 1 && n as usize * 1000 <= RUN_BYTES, "{n} envelopes");
        let (key, value) = run.finish();
        assert_eq!(keys::seq_of_message(&key), Some(3 + n));
        let back = decode(&key, &value).unwrap();
        assert_eq!(
            back,
            (4..4 + n).map(|s| envelope(s, 1000)).collect::<Vec<_>>()
        );
        assert_eq!(
            hlcs(&key, &value).unwrap(),
            (1004..1004 + n).collect::<Vec<_>>()
        );
        for seq in 4..4 + n {
            assert_eq!(get(&key, &value, seq).unwrap(), Some(envelope(seq, 1000)));
        }
        assert_eq!(get(&key, &value, 3).unwrap(), None);
        assert_eq!(get(&key, &value, 4 + n).unwrap(), None);
        // Nothing but the mark is no run at all.
        assert!(matches!(
            decode(&key, &[RUN_MARK]),
            Err(StoreError::Inconsistent { .. })
        ));
        // A run whose seqs do not end at its key is refused.
        let other = keys::message_key(&ch, &origin, 3 + n + 1);
        assert!(matches!(
            decode(&other, &value),
            Err(StoreError::Inconsistent { .. })
        ));
    }

    #[test]
    fn a_run_of_one_is_the_plain_envelope_as_schema_2_stored_it() {
        let ch = ChannelId::parse("police.example/ops").unwrap();
        let origin = OrgId::parse("police.example").unwrap();
        let alone = envelope(9, 10_000);
        let (key, value) = RunBuilder::new(&ch, &origin, 9, &alone).finish();
        assert_eq!(value, alone.encode_to_vec());
        assert_eq!(decode(&key, &value).unwrap(), vec![alone]);
    }
}
