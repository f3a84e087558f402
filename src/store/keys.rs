//! Every key layout of the store, in one place.
//!
//! Keys are byte strings whose order is the logical order: strings are
//! NUL-terminated (ids never contain NUL, and NUL sorts before every other
//! byte, so `a` < `ab`), numbers are big-endian.
//!
//! In the `log` tree (one tree, so one batch updates all of it atomically):
//! * `c` channel                    → ChannelRecord
//! * `h` channel 0 hlc origin 0 seq → envelope   (history order)
//! * `e` channel 0 origin 0 seq     → hlc        (identity index)
//!
//! In the `cursors` tree: peer 0 channel → what the peer acknowledged.

use crate::model::{ChannelId, Cursor, Hlc, OrgId};

const CHANNEL: u8 = b'c';
const HISTORY: u8 = b'h';
const IDENTITY: u8 = b'e';

fn push_str(key: &mut Vec<u8>, s: &str) {
    key.extend_from_slice(s.as_bytes());
    key.push(0);
}

pub fn channel_key(channel: &str) -> Vec<u8> {
    let mut key = vec![CHANNEL];
    key.extend_from_slice(channel.as_bytes());
    key
}

pub const CHANNEL_PREFIX: &[u8] = &[CHANNEL];

/// All identity keys of one channel start with this.
pub fn identity_channel_prefix(channel: &ChannelId) -> Vec<u8> {
    let mut key = vec![IDENTITY];
    push_str(&mut key, &channel.to_string());
    key
}

/// The origin named in an identity key under `channel_prefix`.
pub fn origin_of_identity(channel_prefix_len: usize, key: &[u8]) -> Option<OrgId> {
    let rest = key.get(channel_prefix_len..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    OrgId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()
}

pub fn cursor_key(peer: &OrgId, channel: &str) -> Vec<u8> {
    let mut key = Vec::new();
    push_str(&mut key, peer.as_str());
    key.extend_from_slice(channel.as_bytes());
    key
}

/// All history keys of one channel start with this.
pub fn history_prefix(channel: &ChannelId) -> Vec<u8> {
    let mut key = vec![HISTORY];
    push_str(&mut key, &channel.to_string());
    key
}

pub fn history_key(channel: &ChannelId, at: &Cursor) -> Vec<u8> {
    let mut key = history_prefix(channel);
    key.extend_from_slice(&at.hlc.0.to_be_bytes());
    push_str(&mut key, at.origin.as_str());
    key.extend_from_slice(&at.seq.to_be_bytes());
    key
}

/// The cursor of a history key of `channel`; `None` if the key is not one.
pub fn cursor_of(channel_prefix_len: usize, key: &[u8]) -> Option<Cursor> {
    let rest = key.get(channel_prefix_len..)?;
    let (hlc, rest) = rest.split_at_checked(8)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let origin = OrgId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let seq: [u8; 8] = rest.get(nul + 1..)?.try_into().ok()?;
    Some(Cursor {
        hlc: Hlc(u64::from_be_bytes(hlc.try_into().ok()?)),
        origin,
        seq: u64::from_be_bytes(seq),
    })
}

/// All identity keys of one origin in one channel start with this.
pub fn identity_prefix(channel: &ChannelId, origin: &OrgId) -> Vec<u8> {
    let mut key = identity_channel_prefix(channel);
    push_str(&mut key, origin.as_str());
    key
}

pub fn identity_key(channel: &ChannelId, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = identity_prefix(channel, origin);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq at the end of an identity key.
pub fn seq_of_identity(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    // Prefixes here end in NUL, so incrementing the last byte never overflows.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChannelName;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    #[test]
    fn history_keys_sort_like_cursors_and_round_trip() {
        let ch = ChannelId::new(org("police.example"), ChannelName::parse("ops").unwrap());
        let cursors = [
            Cursor {
                hlc: Hlc(1),
                origin: org("b"),
                seq: 9,
            },
            Cursor {
                hlc: Hlc(2),
                origin: org("a"),
                seq: 1,
            },
            Cursor {
                hlc: Hlc(2),
                origin: org("ab"),
                seq: 1,
            },
            Cursor {
                hlc: Hlc(2),
                origin: org("ab"),
                seq: 2,
            },
            Cursor {
                hlc: Hlc(256),
                origin: org("a"),
                seq: 1,
            },
        ];
        let keys: Vec<_> = cursors.iter().map(|c| history_key(&ch, c)).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "byte order must equal cursor order"
        );
        let plen = history_prefix(&ch).len();
        for (c, k) in cursors.iter().zip(&keys) {
            assert_eq!(cursor_of(plen, k).as_ref(), Some(c));
        }
        // A channel whose name extends another's never shares its prefix range.
        let longer = ChannelId::new(org("police.example"), ChannelName::parse("ops2").unwrap());
        let other = history_key(&longer, &cursors[0]);
        let p = history_prefix(&ch);
        assert!(!(other.as_slice() >= p.as_slice() && other < prefix_end(&p)));
    }

    #[test]
    fn identity_keys() {
        let ch = ChannelId::new(org("police.example"), ChannelName::parse("ops").unwrap());
        let k = identity_key(&ch, &org("police.example"), 258);
        assert_eq!(seq_of_identity(&k), Some(258));
        assert!(identity_key(&ch, &org("a"), 2) < identity_key(&ch, &org("a"), 256));
    }
}
