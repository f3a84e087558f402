//! Every key layout of the store, in one place.
//!
//! Keys are byte strings whose order is the logical order: strings are
//! NUL-terminated (ids never contain NUL, and NUL sorts before every other
//! byte, so `a` < `ab`), numbers are big-endian.
//!
//! In the `log` tree (one tree, so one batch updates all of it atomically):
//! * `c` channel                    → ChannelRecord
//! * `m` channel 0 origin 0 seq     → a run of envelopes ending at seq
//!
//! One key per run of an origin's consecutive messages ([`super::runs`]), in
//! each origin's seq order. History order (hlc, origin, seq) is a merge of
//! the origins' messages: an origin's timestamps grow
//! with its seq (the federation core refuses an envelope whose hlc does not;
//! data from before schema 2 is checked by the upgrade, see `migrate`).
//!
//! * `f` sha256 channel 0 origin 0 seq → (nothing): that message
//!   references that file (written with the message, so the two agree)
//! * `w` sha256 channel 0 origin 0 seq → size (big-endian u64): that
//!   message's file may not be held here yet; the fetcher takes the key
//!   away once it is
//! * `v` sha256 origin 0 → (empty): the bytes held here came, verified,
//!   from a transfer for a message of that origin (its node had them)
//!
//! * `a` channel 0 origin 0 seq org 0 member → the acknowledgement's hlc
//!   and seq (big-endian u64 each): that member of that org acknowledged
//!   message (origin, seq) of the channel (written with the acknowledgement)
//! * `d` channel 0 due origin 0 seq → (nothing): message (origin, seq) asks
//!   for acknowledgement by `due` (Unix ms, big-endian u64)
//!
//! * `r` channel 0 origin 0 seq → the retraction's hlc and seq
//!   (big-endian u64 each) and its author: the origin retracted that message
//! * `u` channel 0 origin 0 seq → (nothing): that message is FLASH or
//!   URGENT (what a link may send ahead of a backlog)
//!
//! * `p` channel 0 owner 0 key → seq and hlc (big-endian u64 each), the
//!   author, NUL, and the entry's body (a `PictureBody`): the latest
//!   statement of that entry of the channel's situational picture (written
//!   with its envelope; an origin's envelopes are stored in seq order, which
//!   is its hlc order, so the last written is the latest)
//!
//! In the `cursors` tree: peer 0 channel → what the peer acknowledged.
//!
//! In the `uploads` tree: member 0 sha256 → finished (Unix ms) and size, each
//! a big-endian u64.
//!
//! In the `reads` tree: member 0 channel → the channel's version vector when
//! the member last saw it.

use crate::model::{ChannelId, FileHash, MemberName, OrgId};

const CHANNEL: u8 = b'c';
const MESSAGE: u8 = b'm';
const FILE_REF: u8 = b'f';
const FILE_WANTED: u8 = b'w';
const FILE_VOUCHED: u8 = b'v';
const ACK: u8 = b'a';
const DUE: u8 = b'd';
const URGENT: u8 = b'u';
const RETRACTED: u8 = b'r';
const PICTURE: u8 = b'p';

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

/// All message keys of one channel start with this.
pub fn channel_messages_prefix(channel: &ChannelId) -> Vec<u8> {
    let mut key = vec![MESSAGE];
    push_str(&mut key, &channel.to_string());
    key
}

/// The origin named in a message key under `channel_prefix`.
pub fn origin_of_message(channel_prefix_len: usize, key: &[u8]) -> Option<OrgId> {
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

pub fn read_key(member: &MemberName, channel: &ChannelId) -> Vec<u8> {
    let mut key = Vec::new();
    push_str(&mut key, member.as_str());
    key.extend_from_slice(channel.to_string().as_bytes());
    key
}

/// All message keys of one origin in one channel start with this.
pub fn origin_messages_prefix(channel: &ChannelId, origin: &OrgId) -> Vec<u8> {
    let mut key = channel_messages_prefix(channel);
    push_str(&mut key, origin.as_str());
    key
}

pub fn message_key(channel: &ChannelId, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = origin_messages_prefix(channel, origin);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq at the end of a message key.
pub fn seq_of_message(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// All references to one file start with this.
pub fn file_refs_prefix(hash: &FileHash) -> Vec<u8> {
    let mut key = vec![FILE_REF];
    key.extend_from_slice(&hash.0);
    key
}

/// Message `seq` of `origin` in `channel` references file `hash`.
pub fn file_ref_key(hash: &FileHash, channel: &ChannelId, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = file_refs_prefix(hash);
    push_str(&mut key, &channel.to_string());
    push_str(&mut key, origin.as_str());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Message `seq` of `origin` in `channel` references file `hash`, which
/// may not be held here yet.
pub fn file_wanted_key(hash: &FileHash, channel: &ChannelId, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = file_ref_key(hash, channel, origin, seq);
    key[0] = FILE_WANTED;
    key
}

pub const FILE_WANTED_PREFIX: &[u8] = &[FILE_WANTED];

/// The (file, channel, origin, seq) a wanted key names.
pub fn parse_file_wanted(key: &[u8]) -> Option<(FileHash, ChannelId, OrgId, u64)> {
    let rest = key.strip_prefix(FILE_WANTED_PREFIX)?;
    let hash = FileHash::from_bytes(rest.get(..32)?)?;
    let rest = &rest[32..];
    let seq = seq_of_message(rest)?;
    let names = rest.get(..rest.len() - 8)?;
    let mut parts = names.split(|b| *b == 0);
    let channel = ChannelId::parse(std::str::from_utf8(parts.next()?).ok()?).ok()?;
    let origin = OrgId::parse(std::str::from_utf8(parts.next()?).ok()?).ok()?;
    Some((hash, channel, origin, seq))
}

/// All acknowledgements of message (`origin`, `seq`) of `channel` start with this.
pub fn acks_prefix(channel: &ChannelId, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = vec![ACK];
    push_str(&mut key, &channel.to_string());
    push_str(&mut key, origin.as_str());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `member` of `org` acknowledged message (`origin`, `seq`) of `channel`.
pub fn ack_key(
    channel: &ChannelId,
    origin: &OrgId,
    seq: u64,
    org: &OrgId,
    member: &str,
) -> Vec<u8> {
    let mut key = acks_prefix(channel, origin, seq);
    push_str(&mut key, org.as_str());
    key.extend_from_slice(member.as_bytes());
    key
}

/// The (org, member) an acknowledgement key under `prefix` names.
pub fn parse_ack(prefix_len: usize, key: &[u8]) -> Option<(OrgId, String)> {
    let rest = key.get(prefix_len..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let org = OrgId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()?;
    let member = std::str::from_utf8(&rest[nul + 1..]).ok()?.to_owned();
    Some((org, member))
}

/// Message (`origin`, `seq`) of `channel` was retracted.
pub fn retracted_key(channel: &ChannelId, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = vec![RETRACTED];
    push_str(&mut key, &channel.to_string());
    push_str(&mut key, origin.as_str());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Every entry of `channel`'s picture starts with this.
pub fn picture_prefix(channel: &ChannelId) -> Vec<u8> {
    let mut key = vec![PICTURE];
    push_str(&mut key, &channel.to_string());
    key
}

/// Entry `key` of `owner` in `channel`'s picture.
pub fn picture_key(channel: &ChannelId, owner: &OrgId, key: &str) -> Vec<u8> {
    let mut k = picture_prefix(channel);
    push_str(&mut k, owner.as_str());
    k.extend_from_slice(key.as_bytes());
    k
}

/// The owner a picture key under `prefix` names.
pub fn parse_picture(prefix_len: usize, key: &[u8]) -> Option<OrgId> {
    let rest = key.get(prefix_len..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    OrgId::parse(std::str::from_utf8(&rest[..nul]).ok()?).ok()
}

/// All FLASH and URGENT messages of `origin` in `channel` start with this.
pub fn urgent_prefix(channel: &ChannelId, origin: &OrgId) -> Vec<u8> {
    let mut key = vec![URGENT];
    push_str(&mut key, &channel.to_string());
    push_str(&mut key, origin.as_str());
    key
}

/// Message (`origin`, `seq`) of `channel` is FLASH or URGENT.
pub fn urgent_key(channel: &ChannelId, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = urgent_prefix(channel, origin);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// All deadlines of `channel` start with this, in the order they fall due.
pub fn due_prefix(channel: &ChannelId) -> Vec<u8> {
    let mut key = vec![DUE];
    push_str(&mut key, &channel.to_string());
    key
}

/// Message (`origin`, `seq`) of `channel` asks for acknowledgement by `due_unix_ms`.
pub fn due_key(channel: &ChannelId, due_unix_ms: u64, origin: &OrgId, seq: u64) -> Vec<u8> {
    let mut key = due_prefix(channel);
    key.extend_from_slice(&due_unix_ms.to_be_bytes());
    push_str(&mut key, origin.as_str());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The (due, origin, seq) a deadline key under `prefix` names.
pub fn parse_due(prefix_len: usize, key: &[u8]) -> Option<(u64, OrgId, u64)> {
    let rest = key.get(prefix_len..)?;
    let due = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let seq = seq_of_message(rest)?;
    let origin = rest.get(8..rest.len().checked_sub(9)?)?;
    let origin = OrgId::parse(std::str::from_utf8(origin).ok()?).ok()?;
    Some((due, origin, seq))
}

/// The bytes of `hash` held here came from a transfer for a message of `origin`.
pub fn file_vouched_key(hash: &FileHash, origin: &OrgId) -> Vec<u8> {
    let mut key = vec![FILE_VOUCHED];
    key.extend_from_slice(&hash.0);
    push_str(&mut key, origin.as_str());
    key
}

pub fn upload_key(member: &MemberName, hash: &FileHash) -> Vec<u8> {
    let mut key = Vec::new();
    push_str(&mut key, member.as_str());
    key.extend_from_slice(&hash.0);
    key
}

/// The file an `uploads` key names.
pub fn hash_of_upload(key: &[u8]) -> Option<FileHash> {
    FileHash::from_bytes(key.get(key.len().checked_sub(32)?..)?)
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
    fn message_keys_sort_by_origin_then_seq_and_round_trip() {
        let ch = ChannelId::new(org("police.example"), ChannelName::parse("ops").unwrap());
        let keys = [
            message_key(&ch, &org("a"), 2),
            message_key(&ch, &org("a"), 256),
            message_key(&ch, &org("ab"), 1),
            message_key(&ch, &org("b"), 1),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let plen = channel_messages_prefix(&ch).len();
        assert_eq!(seq_of_message(&keys[1]), Some(256));
        assert_eq!(origin_of_message(plen, &keys[2]), Some(org("ab")));
        // A channel whose name extends another's never shares its prefix range.
        let longer = ChannelId::new(org("police.example"), ChannelName::parse("ops2").unwrap());
        let other = message_key(&longer, &org("a"), 1);
        let p = channel_messages_prefix(&ch);
        assert!(!(other.as_slice() >= p.as_slice() && other < prefix_end(&p)));
        // Nor does an origin whose name extends another's.
        let p = origin_messages_prefix(&ch, &org("a"));
        assert!(!(keys[2].as_slice() >= p.as_slice() && keys[2] < prefix_end(&p)));
    }
}
