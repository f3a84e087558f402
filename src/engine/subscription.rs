//! One subscriber's view of a channel: replay from the store, then live
//! messages from the fan-out, with no gap and no duplicate at the hand-over.
//!
//! The broadcast receiver is created *before* the store is read, so nothing
//! committed in between is missed. The subscription remembers, per origin,
//! the highest seq delivered: what arrives twice is dropped, and a message
//! whose origin has earlier ones not delivered yet (a relayed message can be
//! committed after newer ones of other origins) is preceded by them, read
//! from the store. A subscriber that falls more than the broadcast capacity
//! behind is not cut off and never slows posters: it catches up from the
//! store, origin by origin.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::fanout::Live;
use crate::model::{ChannelId, Cursor, Hlc, OrgId};
use crate::store::{Page, Store, StoreError, Stored};

/// How many messages one store read returns while catching up.
const REPLAY_PAGE: usize = 256;
/// Most bytes of messages read from the store per replay step (at least one).
const REPLAY_PAGE_BYTES: usize = 8 << 20;

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

/// What a subscription delivers next.
#[derive(Debug)]
pub struct Delivery {
    pub messages: Vec<Arc<Stored>>,
    /// The messages are shown ahead of their run: they come again in order.
    pub ahead: bool,
}

#[derive(Debug)]
pub struct Subscription {
    store: Store,
    channel: ChannelId,
    rx: broadcast::Receiver<Live>,
    /// Messages delivered ahead of their run, by (origin, seq): once each.
    shown_ahead: HashSet<(OrgId, u64)>,
    /// Read the store from here (exclusive) before going live; `None` with
    /// `replaying` means from the beginning.
    position: Option<Cursor>,
    replaying: bool,
    delivered: HashMap<OrgId, u64>,
}

impl Subscription {
    /// The channel it follows.
    pub fn channel(&self) -> &ChannelId {
        &self.channel
    }

    pub fn new(
        store: Store,
        channel: ChannelId,
        rx: broadcast::Receiver<Live>,
        start: Start,
    ) -> Result<Self, StoreError> {
        let (position, replaying, delivered) = match start {
            Start::Beginning => (None, true, HashMap::new()),
            Start::After(c) => {
                // Per origin, what the cursor already covers.
                let mut delivered = HashMap::new();
                for (origin, head) in store.vector(&channel)? {
                    let seq = store.seq_at_or_before(&channel, &origin, head, &c)?;
                    delivered.insert(origin, seq);
                }
                (Some(c), true, delivered)
            }
            // Live: everything held now counts as seen.
            Start::Live => (None, false, store.vector(&channel)?.into_iter().collect()),
        };
        Ok(Self {
            store,
            channel,
            rx,
            shown_ahead: HashSet::new(),
            position,
            replaying,
            delivered,
        })
    }

    /// The next messages; `None` when the node stops publishing. Each
    /// origin's messages come in seq order, none twice, none left out;
    /// apart from them, messages shown ahead of their run, each once.
    pub async fn next(&mut self) -> Option<Result<Delivery, StoreError>> {
        loop {
            let (batch, ahead) = if self.replaying {
                (self.replay_page(), false)
            } else {
                match self.rx.recv().await {
                    Ok(Live::Stored(m)) => (self.admit(m), false),
                    Ok(Live::Ahead(m)) => (Ok(self.ahead(m)), true),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(channel = %self.channel, missed, "subscriber lagged; catching up from the store");
                        (self.catch_up(), false)
                    }
                    Err(RecvError::Closed) => return None,
                }
            };
            match batch {
                Ok(b) if b.is_empty() => continue,
                Ok(messages) => return Some(Ok(Delivery { messages, ahead })),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// `m`, shown ahead, unless delivered already (ahead or in order).
    fn ahead(&mut self, m: Arc<Stored>) -> Vec<Arc<Stored>> {
        let seen = self.delivered.get(&m.cursor.origin).copied().unwrap_or(0);
        let key = (m.cursor.origin.clone(), m.cursor.seq);
        if m.cursor.seq <= seen || !self.shown_ahead.insert(key) {
            return Vec::new();
        }
        vec![m]
    }

    /// The next page of the initial replay, in history order.
    fn replay_page(&mut self) -> Result<Vec<Arc<Stored>>, StoreError> {
        let page = match &self.position {
            Some(c) => Page::After(c.clone()),
            None => Page::Beginning,
        };
        let (messages, more) =
            self.store
                .history(&self.channel, &page, REPLAY_PAGE, REPLAY_PAGE_BYTES)?;
        self.replaying = more;
        if let Some(last) = messages.last() {
            self.position = Some(last.cursor.clone());
        }
        let mut out = Vec::new();
        for m in messages {
            out.extend(self.admit(Arc::new(m))?);
        }
        Ok(out)
    }

    /// Everything of every origin not delivered yet, per origin in seq order.
    fn catch_up(&mut self) -> Result<Vec<Arc<Stored>>, StoreError> {
        let mut out = Vec::new();
        for (origin, held) in self.store.vector(&self.channel)? {
            out.extend(self.fill(&origin, held)?);
        }
        Ok(out)
    }

    /// `m` if it is new, preceded by whatever of its origin was missed (a
    /// relayed message can arrive later than newer ones of other origins).
    fn admit(&mut self, m: Arc<Stored>) -> Result<Vec<Arc<Stored>>, StoreError> {
        let seen = self.delivered.get(&m.cursor.origin).copied().unwrap_or(0);
        if m.cursor.seq <= seen {
            return Ok(Vec::new());
        }
        let mut out = self.fill(&m.cursor.origin, m.cursor.seq - 1)?;
        self.delivered.insert(m.cursor.origin.clone(), m.cursor.seq);
        out.push(m);
        Ok(out)
    }

    /// The messages of `origin` after the last delivered one, up to `until`.
    fn fill(&mut self, origin: &OrgId, until: u64) -> Result<Vec<Arc<Stored>>, StoreError> {
        let seen = self.delivered.get(origin).copied().unwrap_or(0);
        if until <= seen {
            return Ok(Vec::new());
        }
        let missing = usize::try_from(until - seen).unwrap_or(usize::MAX);
        let envelopes = self
            .store
            .envelopes_from(&self.channel, origin, seen + 1, missing)?;
        let out: Vec<Arc<Stored>> = envelopes
            .into_iter()
            .map(|envelope| {
                let cursor = Cursor {
                    hlc: Hlc(envelope.hlc),
                    origin: origin.clone(),
                    seq: envelope.origin_seq,
                };
                Arc::new(Stored { cursor, envelope })
            })
            .collect();
        if let Some(last) = out.last() {
            self.delivered.insert(origin.clone(), last.cursor.seq);
        }
        Ok(out)
    }
}
