//! Live fan-out of committed messages to subscribers: one broadcast channel
//! per channel id, created on first subscription, dropped with its last
//! subscriber. Publishing never waits for a subscriber. Messages shown
//! ahead of their run ([`Live::Ahead`]) go the same way, marked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::ChannelId;
use crate::store::Stored;

/// How many messages a subscriber may fall behind before it is told it lagged
/// (it then re-reads what it missed from the store).
const CAPACITY: usize = 1024;

/// What a subscriber hears.
#[derive(Debug, Clone)]
pub enum Live {
    /// A committed message.
    Stored(Arc<Stored>),
    /// A FLASH or URGENT message a partner sent ahead of older ones of its
    /// origin that have not arrived: checked, not stored yet.
    Ahead(Arc<Stored>),
}

#[derive(Debug, Default)]
pub struct Fanout {
    senders: Mutex<HashMap<ChannelId, broadcast::Sender<Live>>>,
}

impl Fanout {
    /// A receiver for `channel`, unless it has `max` live subscribers already.
    pub fn subscribe(&self, channel: &ChannelId, max: usize) -> Option<broadcast::Receiver<Live>> {
        let mut senders = crate::locks::lock(&self.senders);
        let sender = senders
            .entry(channel.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0);
        (sender.receiver_count() < max).then(|| sender.subscribe())
    }

    pub(crate) fn publish(&self, channel: &ChannelId, message: Arc<Stored>) {
        self.send(channel, Live::Stored(message));
    }

    pub(crate) fn publish_ahead(&self, channel: &ChannelId, message: Arc<Stored>) {
        self.send(channel, Live::Ahead(message));
    }

    fn send(&self, channel: &ChannelId, message: Live) {
        let mut senders = crate::locks::lock(&self.senders);
        if let Some(tx) = senders.get(channel)
            && tx.send(message).is_err()
        {
            // No receiver is left: forget the channel until someone subscribes again.
            senders.remove(channel);
        }
    }
}
