//! A channel offered by a partner: its home's latest roster envelope,
//! checked against the pinned keys; the channel is joined, held for an
//! operator, or (held here already) the partner is told, when it may see it.
//! A roster that removes this org withdraws an offer held for an operator.

use super::{Offered, Round, Writer};
use crate::audit::Event;
use crate::model::{ChannelId, OrgId, unix_ms};
use crate::proto::{ChannelRecord, ChannelState, Envelope};
use crate::rules::{self, Reject};
use crate::store::StoreError;

impl Writer {
    pub(super) fn offer(
        &mut self,
        round: &mut Round,
        from: &OrgId,
        envelope: &Envelope,
        hold: bool,
    ) -> Result<Result<Offered, Reject>, StoreError> {
        let Ok(channel) = ChannelId::parse(&envelope.channel) else {
            return Ok(Err(Reject::Malformed("channel is not a valid id".into())));
        };
        let existing = self.record(&channel)?;
        if let Some(withdrawn) =
            self.withdrawal(round, from, &channel, envelope, existing.as_ref())?
        {
            return Ok(withdrawn);
        }
        match existing.as_ref().map(|r| ChannelState::try_from(r.state)) {
            None => {}
            Some(Ok(ChannelState::Pending)) => return Ok(Ok(Offered::AwaitingAccept)),
            // Re-shared after a removal: a newer roster that includes us again.
            Some(Ok(ChannelState::Archived))
                if existing
                    .as_ref()
                    .is_some_and(|r| envelope.origin_seq > r.roster_seq) => {}
            // Held here: the peer is told only if it may see the channel, so
            // what it observes never depends on channels not shared with it
            // (an internal one answers exactly like one that does not exist).
            // A channel whose home is no longer a peer is cut off here: not
            // answered either (the answer would only bring the offer back).
            Some(_) => {
                self.refresh_pinned()?;
                let eligible = existing.as_ref().is_some_and(|r| {
                    rules::eligibility(r, &self.settings.org, from) != rules::Eligibility::None
                        && self.pinned.key(&r.home).is_some()
                });
                if eligible {
                    return Ok(Ok(Offered::AlreadyHeld));
                }
                if existing
                    .as_ref()
                    .is_some_and(|r| rules::lags_behind(r, from, envelope.origin_seq))
                {
                    return Ok(Ok(Offered::Outdated));
                }
                let reject = Reject::NotSharedWithSender;
                self.audit_rejection(round, from, envelope, &reject);
                return Ok(Err(reject));
            }
        }
        let mut record = match self.check_offer(&channel, existing.is_none(), from, envelope)? {
            Ok(r) => r,
            Err(reject) => {
                self.audit_rejection(round, from, envelope, &reject);
                return Ok(Err(reject));
            }
        };
        if let Some(old) = existing {
            record.created_unix_ms = old.created_unix_ms;
        }
        // A re-share is an offer like the first: the accept policy for the
        // home applies again.
        if hold {
            record.state = ChannelState::Pending as i32;
        }
        let pending = record.state == ChannelState::Pending as i32;
        self.audit_from(
            round,
            from,
            Event::new(if pending {
                "channel.offered"
            } else {
                "channel.joined"
            })
            .with("channel", &channel)
            .with("from", from)
            .with("roster_seq", record.roster_seq),
        );
        round.put_channel(&channel, &record);
        self.records.insert(channel, record.clone());
        Ok(Ok(if record.state == ChannelState::Pending as i32 {
            Offered::AwaitingAccept
        } else {
            Offered::Joined(record)
        }))
    }

    /// An offer whose roster removes this org (`rules::removal_of`): an
    /// offer held here for an operator, older than it, is withdrawn — kept
    /// archived with that roster, read-only and empty, so that it can no
    /// longer be accepted and its incident shows as its home left it.
    /// Nothing else is kept or audited: the home sends it to every org it
    /// removed before that org took anything of the channel. `None` when
    /// the roster does not remove this org.
    fn withdrawal(
        &mut self,
        round: &mut Round,
        from: &OrgId,
        channel: &ChannelId,
        envelope: &Envelope,
        existing: Option<&ChannelRecord>,
    ) -> Result<Option<Result<Offered, Reject>>, StoreError> {
        self.refresh_pinned()?;
        let Some(stated) = rules::removal_of(envelope, &self.settings.org, &self.pinned, unix_ms())
        else {
            return Ok(None);
        };
        let record = match stated {
            Ok(record) => record,
            Err(reject) => {
                self.audit_rejection(round, from, envelope, &reject);
                return Ok(Some(Err(reject)));
            }
        };
        let Some(held) = existing.filter(|held| {
            held.state == ChannelState::Pending as i32 && record.roster_seq > held.roster_seq
        }) else {
            return Ok(Some(Ok(Offered::Withdrawn { archived: false })));
        };
        let record = ChannelRecord {
            created_unix_ms: held.created_unix_ms,
            ..record
        };
        self.audit_from(
            round,
            from,
            Event::new("channel.withdrawn")
                .with("channel", &record.id)
                .with("from", from)
                .with("roster_seq", record.roster_seq),
        );
        round.put_channel(channel, &record);
        self.records.insert(channel.clone(), record);
        Ok(Some(Ok(Offered::Withdrawn { archived: true })))
    }

    /// Whether this node's operator accepts `home`'s channels by hand
    /// (`peer add --accept manual`).
    pub(super) fn holds_offers_of(&self, home: &str) -> Result<bool, StoreError> {
        let Ok(home) = OrgId::parse(home) else {
            return Ok(false);
        };
        Ok(self
            .store
            .peer(&home)?
            .is_some_and(|p| p.accept == crate::proto::AcceptPolicy::Manual as i32))
    }

    /// The record an offer of a channel would make, or why it is refused.
    pub(super) fn check_offer(
        &mut self,
        channel: &ChannelId,
        new: bool,
        from: &OrgId,
        envelope: &Envelope,
    ) -> Result<Result<ChannelRecord, Reject>, StoreError> {
        if new && self.channels_of(channel.home())? >= self.settings.channels_per_partner {
            return Ok(Err(Reject::BadOffer(
                "its home has limits.channels_per_partner channels here",
            )));
        }
        self.refresh_pinned()?;
        Ok(rules::check_offer(
            envelope,
            &self.settings.org,
            from,
            &self.pinned,
            unix_ms(),
        ))
    }

    /// Channels homed at `home` held here (stored, or staged this round).
    pub(super) fn channels_of(&self, home: &OrgId) -> Result<usize, StoreError> {
        let stored = self.store.channel_ids_of(home)?;
        let staged = self
            .records
            .values()
            .filter(|r| r.home == home.as_str() && !stored.contains(&r.id))
            .count();
        Ok(stored.len() + staged)
    }
}
