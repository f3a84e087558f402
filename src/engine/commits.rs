//! Which channels durable commits changed, for the links, which push only
//! what changed instead of looking at every channel on every commit.
//!
//! Each link subscribes and gets its own set of changed channels: the writer
//! adds a commit's channels to every subscriber's set after the commit is
//! durable, and the link takes the whole set when it wakes. A set holds each
//! channel at most once, so it never outgrows the channels in the store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::locks::lock;
use crate::model::ChannelId;

#[derive(Debug, Default)]
pub struct Commits {
    subscribers: Mutex<Vec<Weak<Changes>>>,
}

/// One subscriber's channels changed since it last took them.
#[derive(Debug, Default)]
pub struct Changes {
    changed: Mutex<HashSet<ChannelId>>,
    notify: Notify,
}

impl Commits {
    /// Records a durable commit that changed `channels`.
    pub(super) fn record(&self, channels: &HashSet<ChannelId>) {
        lock(&self.subscribers).retain(|weak| {
            let Some(changes) = weak.upgrade() else {
                return false; // its link has ended
            };
            lock(&changes.changed).extend(channels.iter().cloned());
            changes.notify.notify_one();
            true
        });
    }

    /// Channels changed by commits from now on.
    pub fn subscribe(&self) -> Arc<Changes> {
        let changes = Arc::new(Changes::default());
        lock(&self.subscribers).push(Arc::downgrade(&changes));
        changes
    }
}

impl Changes {
    /// Waits until a commit has changed a channel, and takes every channel
    /// changed since the last call. Cancel-safe: nothing is taken until it
    /// is returned.
    pub async fn next(&self) -> HashSet<ChannelId> {
        loop {
            let taken = std::mem::take(&mut *lock(&self.changed));
            if !taken.is_empty() {
                return taken;
            }
            // A commit recorded after the take left a permit: no wake is lost.
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_subscriber_gets_every_channel_changed_since_it_last_took_them() {
        let commits = Commits::default();
        let ch = |s: &str| ChannelId::parse(s).unwrap();
        let set = |v: &[&str]| v.iter().map(|s| ch(s)).collect::<HashSet<_>>();
        let early = commits.subscribe();
        commits.record(&set(&["a.example/x", "a.example/y"]));
        let late = commits.subscribe();
        commits.record(&set(&["a.example/y"]));
        assert_eq!(early.next().await, set(&["a.example/x", "a.example/y"]));
        assert_eq!(late.next().await, set(&["a.example/y"]));
        // Nothing more until the next commit, which then wakes the waiter.
        let waiting = tokio::spawn({
            let early = early.clone();
            async move { early.next().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        commits.record(&set(&["a.example/z"]));
        assert_eq!(waiting.await.unwrap(), set(&["a.example/z"]));
        // A dropped subscriber is forgotten.
        drop(late);
        commits.record(&set(&["a.example/x"]));
        assert_eq!(lock(&commits.subscribers).len(), 1);
    }
}
