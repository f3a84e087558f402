//! Envelopes a partner sent: each decided by [`rules::check`], admitted
//! through [`rules::Admission`] (a seal vouches for its run), staged with
//! the round; rejections audited within the sender's budget.

use super::{MAX_DRIFT_MS, Round, Writer};
use crate::audit::{Event, clip};
use crate::model::{ChannelId, Hlc, OrgId, chain_hash, unix_ms};
use crate::proto::{ChannelState, Envelope, EnvelopeBatch, Kind};
use crate::rules::{self, Admission, Reject, Verdict};
use crate::store::StoreError;

impl Writer {
    pub(super) fn apply(
        &mut self,
        round: &mut Round,
        from: &OrgId,
        batch: EnvelopeBatch,
    ) -> Result<Vec<Verdict>, StoreError> {
        let mut admission = Admission::default();
        for envelope in batch.envelopes {
            self.apply_one(round, from, envelope, &batch.retractions, &mut admission)?;
        }
        // Whatever no seal vouched for is not stored; a later batch brings it
        // again. Routine, so counted by the link, not audited.
        Ok(admission.finish())
    }

    /// Refuses a received envelope: the verdict, and an audit entry within
    /// the sender's budget.
    pub(super) fn refuse_envelope(
        &mut self,
        round: &mut Round,
        from: &OrgId,
        envelope: &Envelope,
        reason: Reject,
    ) -> Verdict {
        self.audit_rejection(round, from, envelope, &reason);
        Verdict::Reject(reason)
    }

    /// Records a rejected envelope in the audit log, within the sender's budget.
    pub(super) fn audit_rejection(
        &mut self,
        round: &mut Round,
        from: &OrgId,
        envelope: &Envelope,
        reason: &Reject,
    ) {
        if reason.is_out_of_order() {
            return;
        }
        let event = Event::new("federation.rejected")
            .with("peer", from)
            .with("channel", clip(&envelope.channel))
            .with("origin", clip(&envelope.origin))
            .with("seq", envelope.origin_seq)
            .with("reason", clip(&reason.to_string()));
        self.audit_from(round, from, event);
    }

    /// Records an event that `from`'s envelopes or offers caused, within
    /// its budget; the next admitted one says how many were left out.
    pub(super) fn audit_from(&mut self, round: &mut Round, from: &OrgId, mut event: Event) {
        let Some(left_out) = self.peer_audit.admit(from.as_str(), unix_ms()) else {
            return;
        };
        if left_out > 0 {
            event = event.with("left_out_before", left_out);
        }
        round
            .audit
            .push(event.by(&crate::audit::Actor::Peer(from.to_string())));
    }

    pub(super) fn apply_one(
        &mut self,
        round: &mut Round,
        from: &OrgId,
        envelope: Envelope,
        retractions: &[Envelope],
        admission: &mut Admission,
    ) -> Result<(), StoreError> {
        let (Ok(channel), Ok(origin)) = (
            ChannelId::parse(&envelope.channel),
            OrgId::parse(&envelope.origin),
        ) else {
            let reason = Reject::Malformed("channel or origin is not a valid id".into());
            admission.decided(self.refuse_envelope(round, from, &envelope, reason));
            return Ok(());
        };
        let Some(record) = self.record(&channel)? else {
            admission.decided(self.refuse_envelope(round, from, &envelope, Reject::UnknownChannel));
            return Ok(());
        };
        self.refresh_pinned()?;
        if self.pinned.key(&record.home).is_none() {
            // Its rosters cannot be checked here any more.
            admission.decided(self.refuse_envelope(round, from, &envelope, Reject::HomeNotPeer));
            return Ok(());
        }
        if record.state == ChannelState::Pending as i32 {
            // Offered, not accepted: nothing of it is stored.
            admission.decided(self.refuse_envelope(round, from, &envelope, Reject::UnknownChannel));
            return Ok(());
        }
        let head = match admission.head(&envelope) {
            Some(head) => head,
            None => self.head(&channel, &origin)?,
        };
        let held = if envelope.origin_seq <= head.seq {
            let staged = admission.held(&envelope).or_else(|| {
                round
                    .staged
                    .get(&(channel.clone(), origin.clone(), envelope.origin_seq))
                    .copied()
            });
            match staged {
                Some(hash) => Some(hash),
                None => self
                    .store
                    .envelope(&channel, &origin, envelope.origin_seq)?
                    .map(|e| chain_hash(&e)),
            }
        } else {
            None
        };
        let ctx = rules::Context {
            local: &self.settings.org,
            sender: from,
            channel: &channel,
            record: &record,
            head,
            pinned: &self.pinned,
            held,
            max_envelope_bytes: self.settings.max_envelope_bytes,
            max_hlc: Hlc::at(unix_ms() + MAX_DRIFT_MS).0,
            retractions,
        };
        let verdict = rules::check(&envelope, &ctx);
        if let Verdict::Reject(reason) = verdict {
            admission.decided(self.refuse_envelope(round, from, &envelope, reason));
            return Ok(());
        }
        if verdict == Verdict::Accept && envelope.kind == Kind::Control as i32 {
            let mut updated = record.clone();
            if let Err(r) = rules::apply_control(&mut updated, &envelope, &self.settings.org) {
                admission.decided(self.refuse_envelope(round, from, &envelope, r));
                return Ok(());
            }
            // Shared again after a removal: the accept policy for the home
            // applies as it did to the first share.
            let reshared = record.state == ChannelState::Archived as i32
                && updated.state == ChannelState::Active as i32;
            if reshared && self.holds_offers_of(&record.home)? {
                updated.state = ChannelState::Pending as i32;
            }
            // Audited as of this envelope's own roster: an older snapshot
            // than the one held (a late participant's catch-up) changes
            // nothing here, and is recorded with what it said, not today's.
            let listed = rules::roster_of(&envelope).unwrap_or_default();
            let event = Event::new("channel.roster_changed")
                .with("channel", &channel)
                .with("from", from)
                .with("roster_seq", envelope.origin_seq)
                .with(
                    "participants",
                    listed
                        .iter()
                        .filter(|p| p.active)
                        .map(|p| p.org.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            if envelope.origin_seq > record.roster_seq {
                let state =
                    ChannelState::try_from(updated.state).map_or("unknown", |s| s.as_str_name());
                self.audit_from(round, from, event.with("state", state));
            } else {
                self.audit_from(
                    round,
                    from,
                    event.with("state", "earlier roster, no change"),
                );
            }
            round.put_channel(&channel, &updated);
            self.records.insert(channel.clone(), updated);
        }
        // Kept withheld where the roster withholds its body from this org.
        let record = self.record(&channel)?.unwrap_or(record);
        let envelope = rules::as_kept(&record, &self.settings.org, envelope);
        // A seal vouches for the chained envelopes before it.
        for (envelope, hash) in admission.admit(envelope, verdict) {
            self.clock.observe(Hlc(envelope.hlc));
            self.stage(round, &channel, envelope, hash)?;
        }
        Ok(())
    }
}
