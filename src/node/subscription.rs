//! One subscriber's view of a channel: replay from the store, then live
//! messages from the fan-out, with no gap and no duplicate at the hand-over.
//!
//! The broadcast receiver is created *before* the store is read, so nothing
//! committed in between is missed; what arrives both ways is dropped by
//! remembering, per origin, the highest seq delivered (each origin's
//! messages are committed in seq order). A subscriber that falls more than
//! the broadcast capacity behind is not cut off and never slows posters: it
//! is switched back to reading the store from where it was.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::model::{ChannelId, Cursor, OrgId};
use crate::store::{Page, Store, StoreError, Stored};

/// How many messages one store read returns while catching up.
const REPLAY_PAGE: usize = 256;

/// Where a subscription starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// Only messages committed from now on.
    Live,
    /// Everything after this position, then live.
    After(Cursor),
    /// The whole channel, then live.
    Beginning,
}

#[derive(Debug)]
pub struct Subscription {
    store: Store,
    channel: ChannelId,
    rx: broadcast::Receiver<Arc<Stored>>,
    /// Read the store from here (exclusive) before going live; `None` with
    /// `replaying` means from the beginning.
    position: Option<Cursor>,
    replaying: bool,
    delivered: HashMap<OrgId, u64>,
}

impl Subscription {
    pub(super) fn new(
        store: Store,
        channel: ChannelId,
        rx: broadcast::Receiver<Arc<Stored>>,
        start: Start,
    ) -> Result<Self, StoreError> {
        let (position, replaying) = match start {
            Start::Beginning => (None, true),
            Start::After(c) => (Some(c), true),
            // Live: a lag must re-read from the newest message that existed
            // when the receiver was made, not from the beginning.
            Start::Live => {
                let (newest, _) = store.history(&channel, &Page::Newest, 1)?;
                (newest.into_iter().next().map(|s| s.cursor), false)
            }
        };
        Ok(Self {
            store,
            channel,
            rx,
            position,
            replaying,
            delivered: HashMap::new(),
        })
    }

    /// The next messages in order; `None` when the node stops publishing.
    pub async fn next(&mut self) -> Option<Result<Vec<Arc<Stored>>, StoreError>> {
        loop {
            if self.replaying {
                let page = match &self.position {
                    Some(c) => Page::After(c.clone()),
                    None => Page::Beginning,
                };
                let (messages, more) = match self.store.history(&self.channel, &page, REPLAY_PAGE) {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                self.replaying = more;
                // Advance past the page even if all of it was delivered live already.
                if let Some(last) = messages.last() {
                    self.position = Some(last.cursor.clone());
                }
                let fresh: Vec<_> = messages
                    .into_iter()
                    .map(Arc::new)
                    .filter(|m| self.take(m))
                    .collect();
                if !fresh.is_empty() {
                    return Some(Ok(fresh));
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(m) if self.take(&m) => return Some(Ok(vec![m])),
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(channel = %self.channel, missed, "subscriber lagged; re-reading from the store");
                    self.replaying = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Whether `m` is new to this subscriber; if so, marks it delivered.
    fn take(&mut self, m: &Stored) -> bool {
        let seen = self.delivered.entry(m.cursor.origin.clone()).or_default();
        if m.cursor.seq <= *seen {
            return false;
        }
        *seen = m.cursor.seq;
        if self.position.as_ref().is_none_or(|p| m.cursor > *p) {
            self.position = Some(m.cursor.clone());
        }
        true
    }
}
