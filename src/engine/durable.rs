//! How far each origin's log is durable, for readers that must not pass on
//! what a crash could still take back.
//!
//! sled shows a write to readers as soon as it is applied, before the flush
//! that makes it durable. A link that forwarded such an envelope and then saw
//! this node crash would hold an envelope this node no longer has, and the
//! seq would be issued again with other content: a fork. So the writer marks,
//! before staging, the durable head of every (channel, origin) it touches,
//! and moves the mark after each flush; link senders cap what they read at
//! the marks. Entries exist only for what the writer touched since start;
//! everything else in the store was durable when the node opened it.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::model::{ChannelId, OrgId, VersionVector};

#[derive(Debug, Default)]
pub struct DurableMarks {
    marks: RwLock<HashMap<(ChannelId, OrgId), u64>>,
}

impl DurableMarks {
    /// `vector` (read from the store) cut back to what is durable.
    pub fn cap(&self, channel: &ChannelId, mut vector: VersionVector) -> VersionVector {
        let marks = crate::locks::read(&self.marks);
        for (origin, seq) in vector.iter_mut() {
            if let Some(&durable) = marks.get(&(channel.clone(), origin.clone())) {
                *seq = (*seq).min(durable);
            }
        }
        vector
    }

    /// Before staging for (channel, origin): its durable head is `seq`.
    pub(super) fn hold(&self, channel: &ChannelId, origin: &OrgId, seq: u64) {
        let mut marks = crate::locks::write(&self.marks);
        marks
            .entry((channel.clone(), origin.clone()))
            .or_insert(seq);
    }

    /// After a flush: everything up to each `(channel, origin, seq)` is
    /// durable. One round's marks move together, so a reader never sees a
    /// mark inside a run whose seal is not yet visible to it.
    pub(super) fn advance<'a>(
        &self,
        round: impl IntoIterator<Item = (&'a ChannelId, &'a OrgId, u64)>,
    ) {
        let mut marks = crate::locks::write(&self.marks);
        for (channel, origin, seq) in round {
            let mark = marks
                .entry((channel.clone(), origin.clone()))
                .or_insert(seq);
            *mark = (*mark).max(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_but_unflushed_is_hidden_until_advanced() {
        let marks = DurableMarks::default();
        let ch = ChannelId::parse("police.example/ops").unwrap();
        let (a, b) = (
            OrgId::parse("police.example").unwrap(),
            OrgId::parse("rescue.example").unwrap(),
        );
        let read = || VersionVector::from([(a.clone(), 7), (b.clone(), 3)]);
        // Untouched since start: what the store holds is durable.
        assert_eq!(marks.cap(&ch, read()), read());
        // The writer staged a:6 and a:7 on top of a durable a:5.
        marks.hold(&ch, &a, 5);
        marks.hold(&ch, &a, 6); // a later stage in the same round does not move it
        assert_eq!(
            marks.cap(&ch, read()),
            VersionVector::from([(a.clone(), 5), (b.clone(), 3)])
        );
        // Flushed.
        marks.advance([(&ch, &a, 7)]);
        assert_eq!(marks.cap(&ch, read()), read());
        // A mark never moves back.
        marks.advance([(&ch, &a, 6)]);
        assert_eq!(marks.cap(&ch, read()), read());
    }
}
