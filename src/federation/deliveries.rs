//! When this node learned that a partner's node holds an envelope: from
//! the partner's own hello and progress frames (its durable state), kept in
//! memory per (partner, channel, origin) as a few (seq, time) marks.
//!
//! A mark is added when the partner's seq for an origin grows, at most one
//! per [`GRAIN_MS`] (a later one moves the last mark's seq and time up
//! instead), so a time read back is when the partner was known to hold
//! that seq, at most that grain late and never early: never before the
//! envelope was sent. What a partner's first hello after this node
//! starts states gets time 0: it held those envelopes before this node
//! could see it happen.
//! At most [`MARKS`] marks per key; the oldest go first.
//!
//! Uses only `model` and `locks`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::model::{OrgId, VersionVector};

/// Marks closer together than this merge.
const GRAIN_MS: u64 = 1_000;
/// Marks kept per (partner, channel, origin).
const MARKS: usize = 4_096;

/// (partner, channel, origin).
type Key = (OrgId, String, OrgId);

/// One mark: the partner holds up to `seq`, known at `at_ms`; marks made
/// from `opened_ms` on, within the grain, merged into it.
#[derive(Debug, Clone, Copy)]
struct Mark {
    seq: u64,
    opened_ms: u64,
    at_ms: u64,
}

/// Oldest first.
type Marks = VecDeque<Mark>;

#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    marks: Mutex<HashMap<Key, Marks>>,
}

impl Deliveries {
    /// The partner `peer` holds `vector` of `channel` durably, as of
    /// `now_ms`; `hello`: as its hello states it (a first mark then has
    /// time 0), else as its progress after envelopes this node sent.
    pub(crate) fn held(
        &self,
        peer: &OrgId,
        channel: &str,
        vector: &VersionVector,
        now_ms: u64,
        hello: bool,
    ) {
        let mut marks = crate::locks::lock(&self.marks);
        for (origin, &seq) in vector {
            let key = (peer.clone(), channel.to_owned(), origin.clone());
            let list = marks.entry(key).or_default();
            let at_ms = if hello && list.is_empty() { 0 } else { now_ms };
            let mark = Mark {
                seq,
                opened_ms: at_ms,
                at_ms,
            };
            match list.back_mut() {
                None => list.push_back(mark),
                Some(last) if seq <= last.seq => {}
                Some(last)
                    if last.opened_ms != 0 && now_ms.saturating_sub(last.opened_ms) < GRAIN_MS =>
                {
                    last.seq = seq;
                    last.at_ms = now_ms;
                }
                Some(_) => {
                    if list.len() == MARKS {
                        list.pop_front();
                    }
                    list.push_back(mark);
                }
            }
        }
    }

    /// When `peer` was known to hold `origin`'s envelope `seq` of
    /// `channel` (Unix ms, at most [`GRAIN_MS`] late; 0: before this node
    /// started, or not recorded).
    pub(crate) fn held_since(&self, peer: &OrgId, channel: &str, origin: &OrgId, seq: u64) -> u64 {
        let marks = crate::locks::lock(&self.marks);
        let key = (peer.clone(), channel.to_owned(), origin.clone());
        marks
            .get(&key)
            .and_then(|list| list.iter().find(|m| m.seq >= seq))
            .map_or(0, |m| m.at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_when_the_partner_was_first_seen_holding_it() {
        let d = Deliveries::default();
        let (peer, origin) = (
            OrgId::parse("b.example").unwrap(),
            OrgId::parse("a.example").unwrap(),
        );
        let v = |seq| VersionVector::from([(origin.clone(), seq)]);
        d.held(&peer, "a.example/x", &v(3), 10_000, true);
        d.held(&peer, "a.example/x", &v(5), 20_000, false);
        d.held(&peer, "a.example/x", &v(6), 20_500, false);
        d.held(&peer, "a.example/x", &v(9), 30_000, true);
        // Held when first seen: before this node could tell.
        assert_eq!(d.held_since(&peer, "a.example/x", &origin, 2), 0);
        // Within the grain of the mark before it: the mark's latest time,
        // late by at most the grain, never before the partner held it.
        assert_eq!(d.held_since(&peer, "a.example/x", &origin, 4), 20_500);
        assert_eq!(d.held_since(&peer, "a.example/x", &origin, 6), 20_500);
        assert_eq!(d.held_since(&peer, "a.example/x", &origin, 7), 30_000);
        // Not held yet, or another partner.
        assert_eq!(d.held_since(&peer, "a.example/x", &origin, 10), 0);
        let other = OrgId::parse("c.example").unwrap();
        assert_eq!(d.held_since(&other, "a.example/x", &origin, 4), 0);
        // First seen through progress: that is when it was delivered.
        d.held(&other, "a.example/x", &v(2), 40_000, false);
        assert_eq!(d.held_since(&other, "a.example/x", &origin, 1), 40_000);
    }
}
