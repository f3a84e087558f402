//! FLASH and URGENT envelopes a partner sent ahead of their run (after an
//! outage): each checked by [`rules::check_ahead`] and, when it passes,
//! shown to subscribers once the round commits; never stored from here
//! (the ordered envelope that follows is decided whole). Rejections are
//! audited within the sender's budget, as for ordered envelopes.

use std::sync::Arc;

use super::{MAX_DRIFT_MS, Round, Writer};
use crate::model::{ChannelId, Cursor, Hlc, OrgId, unix_ms};
use crate::proto::{ChannelState, Envelope};
use crate::rules::{self, Ahead, Reject};
use crate::store::{StoreError, Stored};

impl Writer {
    /// The envelopes of `envelopes` to show ahead, with their channels.
    pub(super) fn ahead(
        &mut self,
        round: &mut Round,
        from: &OrgId,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<(ChannelId, Arc<Stored>)>, StoreError> {
        let mut shown = Vec::new();
        for envelope in envelopes {
            let (Ok(channel), Ok(origin)) = (
                ChannelId::parse(&envelope.channel),
                OrgId::parse(&envelope.origin),
            ) else {
                let reason = Reject::Malformed("channel or origin is not a valid id".into());
                self.audit_rejection(round, from, &envelope, &reason);
                continue;
            };
            let Some(record) = self.record(&channel)? else {
                self.audit_rejection(round, from, &envelope, &Reject::UnknownChannel);
                continue;
            };
            if record.state == ChannelState::Pending as i32 {
                continue;
            }
            self.refresh_pinned()?;
            let head = self.head(&channel, &origin)?;
            let ctx = rules::Context {
                local: &self.settings.org,
                sender: from,
                channel: &channel,
                record: &record,
                head,
                pinned: &self.pinned,
                held: None,
                max_envelope_bytes: self.settings.max_envelope_bytes,
                max_hlc: Hlc::at(unix_ms() + MAX_DRIFT_MS).0,
                retractions: &[],
            };
            match rules::check_ahead(&envelope, &ctx) {
                Ok(Ahead::Show) => {
                    let cursor = Cursor {
                        hlc: Hlc(envelope.hlc),
                        origin,
                        seq: envelope.origin_seq,
                    };
                    shown.push((channel, Arc::new(Stored { cursor, envelope })));
                }
                Ok(Ahead::Held) => {}
                Err(reason) => self.audit_rejection(round, from, &envelope, &reason),
            }
        }
        Ok(shown)
    }
}
