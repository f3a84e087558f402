//! A member's post: chained after this node's last envelope in the
//! channel, stamped with the hybrid clock, staged, and sealed when its run
//! must end here (else at commit).

use prost::Message as _;

use super::{Content, NewPost, Round, SEAL_BYTES, SEAL_EVERY, WriteError, Writer};
use crate::model::{ChainHead, ChannelId, Priority, body_digest, chain_hash, sign, unix_ms};
use crate::proto::{Ack, Envelope, Kind, Retraction};
use crate::rules;
use crate::store::StoreError;

impl Writer {
    /// Stages `post` if its channel is writable here; its index in the round.
    /// A channel whose home is no longer a peer is cut off: a post would be
    /// acknowledged and then reach no one, so it is refused.
    pub(super) fn post(&mut self, round: &mut Round, post: NewPost) -> Result<usize, WriteError> {
        let record = self.writable(&post.channel)?;
        self.refresh_pinned()?;
        if self.pinned.key(&record.home).is_none() {
            return Err(WriteError::HomeNotPeer {
                channel: post.channel.to_string(),
                home: record.home,
            });
        }
        // Judged by the timestamp the message will carry, as every
        // participant judges it (`rules::stamped_after_end`).
        if rules::is_over(&record, self.clock.next_unix_ms(unix_ms())) {
            return Err(WriteError::IncidentOver(post.channel.to_string()));
        }
        let author = post.author.to_string();
        let (kind, body) = match post.content {
            Content::Message(body)
                if body.files.is_empty()
                    && body.reply_to.is_none()
                    && body.ack.is_none()
                    && body.cap.is_none() =>
            {
                (Kind::Text, body.text.into_bytes())
            }
            Content::Message(body) => (Kind::Post, body.encode_to_vec()),
            Content::Ack(message) => {
                let ack = Ack {
                    message: Some(message),
                };
                (Kind::Ack, ack.encode_to_vec())
            }
            Content::Picture(_) if !rules::carries_picture(&record) => {
                return Err(WriteError::NoPicture(post.channel.to_string()));
            }
            Content::Picture(entry) => (Kind::Picture, entry.encode_to_vec()),
            Content::Retract(message) => {
                let retraction = Retraction {
                    message: Some(message),
                };
                (Kind::Retract, retraction.encode_to_vec())
            }
        };
        Ok(self.originate(
            round,
            &post.channel,
            &author,
            kind,
            post.priority as i32,
            body,
        )?)
    }

    /// Creates, chains and stages an envelope originated here; it is signed
    /// now if it must be a seal, else at commit if it ends the round's run.
    pub(super) fn originate(
        &mut self,
        round: &mut Round,
        channel: &ChannelId,
        author: &str,
        kind: Kind,
        priority: i32,
        body: Vec<u8>,
    ) -> Result<usize, StoreError> {
        let org = self.settings.org.clone();
        let ChainHead {
            seq, hash: prev, ..
        } = self.head(channel, &org)?;
        let hlc = self.clock.tick(unix_ms());
        let envelope = Envelope {
            channel: channel.to_string(),
            origin: org.to_string(),
            origin_seq: seq + 1,
            author: author.to_owned(),
            hlc: hlc.0,
            kind: kind as i32,
            priority,
            body_sha256: body_digest(&body),
            body,
            prev: prev.to_vec(),
            signature: Vec::new(),
            withheld: false,
        };
        let size = envelope.body.len();
        let hash = chain_hash(&envelope);
        // Seal the run before it would outgrow SEAL_BYTES, so that a run
        // between seals always fits one link frame.
        if let Some(&(previous, _, bytes)) = round.open_runs.get(channel)
            && bytes + size > SEAL_BYTES
        {
            sign(&mut round.envelopes[previous].2, &self.key);
            round.open_runs.remove(channel);
        }
        let index = self.stage(round, channel, envelope, hash)?;
        let run = round
            .open_runs
            .entry(channel.clone())
            .or_insert((index, 0, 0));
        *run = (index, run.1 + 1, run.2 + size);
        // Roster changes and retractions stand alone (offers, proofs), and
        // FLASH and URGENT messages may be sent ahead of their run after an
        // outage (`rules::check_ahead`): always sealed.
        let alone =
            matches!(kind, Kind::Control | Kind::Retract) || priority >= Priority::Urgent as i32;
        if alone || run.1 >= SEAL_EVERY || run.2 >= SEAL_BYTES {
            round.open_runs.remove(channel);
            sign(&mut round.envelopes[index].2, &self.key);
        }
        Ok(index)
    }
}
