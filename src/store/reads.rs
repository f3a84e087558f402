//! What each member has seen of each channel: the channel's version vector
//! when they last looked at it, to count what is new for them (unread) and
//! whether any of that is FLASH or URGENT.
//!
//! Read marks are this node's own bookkeeping: never sent to a partner,
//! never part of a message. They are durable with the next flush; a mark
//! lost in a crash only shows some messages as unread again.

use super::{Store, StoreError, keys};
use crate::model::{ChannelId, MemberName, OrgId, Priority, VersionVector};
use crate::proto::Kind;

/// Messages of one origin [`Store::unread`] reads at most, so that a
/// channel list stays cheap however far behind a member is.
const SCAN_PER_ORIGIN: usize = 1000;

/// What is new in a channel for one member: posts of others, not retracted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    pub messages: usize,
    /// Of those, FLASH ones.
    pub flash: usize,
    /// Of those, URGENT ones.
    pub urgent: usize,
    /// More lie beyond what was counted ([`SCAN_PER_ORIGIN`] per origin).
    pub more: bool,
}

impl Store {
    /// What `member` has seen of `channel` (empty if never opened).
    pub fn read_mark(
        &self,
        member: &MemberName,
        channel: &ChannelId,
    ) -> Result<VersionVector, StoreError> {
        let key = keys::read_key(member, channel);
        match self.reads.get(&key)? {
            Some(bytes) => super::peers::decode_vector(&key, &bytes),
            None => Ok(VersionVector::new()),
        }
    }

    /// Records that `member` has seen `channel` up to `seen` (per origin,
    /// the higher of this and what was recorded: two open pages never move
    /// a mark back).
    pub fn mark_read(
        &self,
        member: &MemberName,
        channel: &ChannelId,
        seen: &VersionVector,
    ) -> Result<(), StoreError> {
        let mut mark = self.read_mark(member, channel)?;
        let mut moved = false;
        for (origin, &seq) in seen {
            let held = mark.entry(origin.clone()).or_default();
            if seq > *held {
                *held = seq;
                moved = true;
            }
        }
        if moved {
            let channel_text = channel.to_string();
            self.reads.insert(
                &keys::read_key(member, channel),
                &super::peers::encode_vector(&channel_text, &mark),
            )?;
        }
        Ok(())
    }

    /// Posts in `channel` that `member` of `org` has not seen: not their
    /// own, not retracted.
    pub fn unread(
        &self,
        member: &MemberName,
        org: &OrgId,
        channel: &ChannelId,
    ) -> Result<Unread, StoreError> {
        let seen = self.read_mark(member, channel)?;
        let mut unread = Unread::default();
        for (origin, head) in self.vector(channel)? {
            let from = seen.get(&origin).copied().unwrap_or(0) + 1;
            if from > head {
                continue;
            }
            let envelopes = self.envelopes_from(channel, &origin, from, SCAN_PER_ORIGIN)?;
            unread.more |=
                envelopes.len() == SCAN_PER_ORIGIN && head >= from + SCAN_PER_ORIGIN as u64;
            let own = &origin == org;
            for env in envelopes {
                let message = env.kind == Kind::Text as i32 || env.kind == Kind::Post as i32;
                if !message || env.withheld || (own && env.author == member.as_str()) {
                    continue;
                }
                unread.messages += 1;
                match Priority::from_i32(env.priority) {
                    Some(Priority::Flash) => unread.flash += 1,
                    Some(Priority::Urgent) => unread.urgent += 1,
                    _ => {}
                }
            }
        }
        Ok(unread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cursor, Hlc};
    use crate::proto::Envelope;
    use crate::store::StoreBatch;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    /// Puts one envelope of `origin` at `seq` with that kind, author and
    /// priority.
    fn put(
        store: &Store,
        ch: &ChannelId,
        origin: &OrgId,
        seq: u64,
        (kind, author, priority): (Kind, &str, Priority),
    ) {
        let envelope = Envelope {
            channel: ch.to_string(),
            origin: origin.to_string(),
            origin_seq: seq,
            hlc: seq << 16,
            kind: kind as i32,
            author: author.into(),
            priority: priority as i32,
            ..Default::default()
        };
        let cursor = Cursor {
            hlc: Hlc(seq << 16),
            origin: origin.clone(),
            seq,
        };
        let mut batch = StoreBatch::default();
        batch.put_envelope(ch, &cursor, &envelope);
        store.apply(batch).unwrap();
    }

    #[test]
    fn unread_counts_others_messages_since_the_mark_and_marks_never_move_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (police, rescue) = (org("police.example"), org("rescue.example"));
        let store = Store::create(tmp.path(), &rescue, 1 << 20).unwrap();
        let ch = ChannelId::parse("police.example/flood").unwrap();
        let bo = MemberName::parse("bo").unwrap();
        put(
            &store,
            &ch,
            &police,
            1,
            (Kind::Control, "", Priority::Normal),
        );
        put(
            &store,
            &ch,
            &police,
            2,
            (Kind::Text, "alice", Priority::Flash),
        );
        put(
            &store,
            &ch,
            &police,
            3,
            (Kind::Post, "alice", Priority::Urgent),
        );
        put(
            &store,
            &ch,
            &rescue,
            1,
            (Kind::Text, "bo", Priority::Normal),
        );
        put(&store, &ch, &rescue, 2, (Kind::Ack, "bo", Priority::Normal));
        put(
            &store,
            &ch,
            &rescue,
            3,
            (Kind::Text, "cy", Priority::Normal),
        );
        let unread = store.unread(&bo, &rescue, &ch).unwrap();
        // Not the roster change, not bo's own message or acknowledgement.
        let expected = Unread {
            messages: 3,
            flash: 1,
            urgent: 1,
            more: false,
        };
        assert_eq!(unread, expected);
        let seen = store.vector(&ch).unwrap();
        store.mark_read(&bo, &ch, &seen).unwrap();
        assert_eq!(store.unread(&bo, &rescue, &ch).unwrap(), Unread::default());
        // A page opened earlier reports less: the mark stays.
        let earlier = [(police.clone(), 1)].into_iter().collect();
        store.mark_read(&bo, &ch, &earlier).unwrap();
        assert_eq!(store.read_mark(&bo, &ch).unwrap(), seen);
        put(
            &store,
            &ch,
            &police,
            4,
            (Kind::Text, "alice", Priority::Normal),
        );
        assert_eq!(store.unread(&bo, &rescue, &ch).unwrap().messages, 1);
        // Another member's marks are their own.
        let cy = MemberName::parse("cy").unwrap();
        assert_eq!(store.unread(&cy, &rescue, &ch).unwrap().messages, 4);
    }
}
