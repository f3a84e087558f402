//! Which channels each durable commit changed, for the links, which push
//! only what changed instead of looking at every channel on every commit.
//!
//! The writer records a commit's channels under the next commit number and
//! only then publishes that number; a link that has handled everything up
//! to commit `seen` asks which channels changed after it. A channel may be
//! reported twice (a commit recorded while the link was reading); never not
//! at all.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::model::ChannelId;

#[derive(Debug)]
pub struct Commits {
    number: watch::Sender<u64>,
    /// Per channel, the number of the last commit that changed it.
    changed: Mutex<HashMap<ChannelId, u64>>,
}

impl Default for Commits {
    fn default() -> Self {
        Self {
            number: watch::channel(0).0,
            changed: Mutex::default(),
        }
    }
}

impl Commits {
    /// Records a durable commit that changed `channels`.
    pub(super) fn record(&self, channels: impl IntoIterator<Item = ChannelId>) {
        let mut changed = self.lock();
        let next = *self.number.borrow() + 1;
        for channel in channels {
            changed.insert(channel, next);
        }
        drop(changed);
        self.number.send_replace(next);
    }

    /// Wakes on every commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.number.subscribe()
    }

    /// The newest commit number, and the channels changed after commit `seen`.
    pub fn changed_since(&self, seen: u64) -> (u64, Vec<ChannelId>) {
        // The number first: whatever it covers is in the map already.
        let newest = *self.number.borrow();
        let changed = self
            .lock()
            .iter()
            .filter(|(_, n)| **n > seen)
            .map(|(channel, _)| channel.clone())
            .collect();
        (newest, changed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, u64>> {
        self.changed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_learns_every_channel_changed_after_what_it_has_seen() {
        let commits = Commits::default();
        let ch = |s: &str| ChannelId::parse(s).unwrap();
        let (seen, changed) = commits.changed_since(0);
        assert_eq!((seen, changed), (0, vec![]));
        commits.record([ch("a.example/x"), ch("a.example/y")]);
        commits.record([ch("a.example/y")]);
        let (newest, mut changed) = commits.changed_since(0);
        changed.sort();
        assert_eq!(
            (newest, changed),
            (2, vec![ch("a.example/x"), ch("a.example/y")])
        );
        assert_eq!(commits.changed_since(1), (2, vec![ch("a.example/y")]));
        assert_eq!(commits.changed_since(2), (2, vec![]));
    }
}
