//! The federation's decisions, as plain functions over values: who may
//! receive what, and whether a received envelope is accepted. No I/O; the
//! writer and the links call these and only move bytes.
//!
//! The roster of a channel is carried in control envelopes of its home:
//! each is a full snapshot (`Control.roster`), so any one of them, verified
//! against the home's key, says who participates.

use prost::Message as _;

use crate::model::{ChainHead, ChannelId, EnvelopeHash, OrgId, Vector, chain_hash, verify};
use crate::proto::{ChannelRecord, ChannelState, Control, Envelope, Kind, Participant, control};

/// What a peer may receive of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Nothing: internal channel, not a participant, or not active here.
    None,
    /// Everything.
    Full,
    /// The peer was removed by the home's control envelope `home_seq`: it
    /// gets the home's envelopes up to that one (so it learns of its
    /// removal), and nothing else.
    UntilRemoval { home_seq: u64 },
}

/// Why a received envelope was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("envelope of {size} bytes is over the limit of {limit}")]
    Oversized { size: usize, limit: usize },
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("channel is not shared with the sending org")]
    NotSharedWithSender,
    #[error("channel is unknown here and the envelope is not an offer of it")]
    UnknownChannel,
    #[error("origin {0} is not a participant of the channel")]
    OriginNotParticipant(String),
    #[error("control envelope not from the channel's home")]
    ControlNotFromHome,
    #[error("signature does not verify against the origin's key")]
    BadSignature,
    #[error("gap in origin_seq: expected {expected}, got {got}")]
    Gap { expected: u64, got: u64 },
    #[error("rewind: origin_seq {seq} is held here with different content")]
    Rewind { seq: u64 },
    #[error("prev does not match the hash of the origin's previous envelope")]
    BrokenChain,
    #[error("this org was removed from the channel; it is read-only here")]
    Archived,
    #[error("channel offer is not valid: {0}")]
    BadOffer(&'static str),
    #[error("unsigned, and no signed envelope (seal) of the same origin followed it in the batch")]
    Unsealed,
    #[error("timestamp lies too far in the future")]
    FromTheFuture,
    #[error("timestamp is not later than that of the origin's previous envelope")]
    TimeWentBack,
}

impl Reject {
    /// Whether honest peers cause this too: an envelope that arrived ahead
    /// of its predecessors or of its seal (a batch cut short, a relay, a
    /// resend). The sender is told what is held and sends it again; nothing
    /// was wrong with it, so it is counted but not audited.
    pub fn is_out_of_order(&self) -> bool {
        matches!(self, Reject::Gap { .. } | Reject::Unsealed)
    }
}

/// The outcome of checking one received envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and signed: a seal, which also authenticates the chained,
    /// unsigned envelopes of the same origin just before it.
    Accept,
    /// Valid and chained to what is held (or pending), but unsigned: it may
    /// be stored only once a seal later in the same batch verifies.
    Chained,
    /// Held already, byte for byte: a no-op.
    Duplicate,
    Reject(Reject),
}

/// What the checker needs to know about the state of the receiving node.
#[derive(Debug)]
pub struct Context<'a> {
    pub local: &'a OrgId,
    pub sender: &'a OrgId,
    pub channel: &'a ChannelId,
    pub record: &'a ChannelRecord,
    /// The end of the envelope's origin's chain in this channel here.
    pub head: ChainHead,
    /// The home's signing key, from this node's own peer table (or its own key).
    pub home_key: Option<&'a [u8]>,
    /// Hash of the held envelope at the same seq, when `seq <= head`.
    pub held: Option<EnvelopeHash>,
    pub max_envelope_bytes: usize,
    /// Timestamps above this are refused (the receiver's clock plus the
    /// drift it tolerates), so a peer cannot drag every clock into the future.
    pub max_hlc: u64,
}

/// The roster snapshot carried by a control envelope.
pub fn roster_of(env: &Envelope) -> Result<Vec<Participant>, Reject> {
    let control =
        Control::decode(env.body.as_slice()).map_err(|e| Reject::Malformed(e.to_string()))?;
    match control.action {
        Some(control::Action::Roster(r)) => Ok(r.participants),
        None => Err(Reject::Malformed(
            "control envelope without an action".into(),
        )),
    }
}

fn participant<'a>(record: &'a ChannelRecord, org: &OrgId) -> Option<&'a Participant> {
    record.participants.iter().find(|p| p.org == org.as_str())
}

/// Whether `org` may write to the channel: the home, or an active participant.
fn is_active(record: &ChannelRecord, org: &OrgId) -> bool {
    record.home == org.as_str() || participant(record, org).is_some_and(|p| p.active)
}

/// Whether the channel is shared at all.
pub fn is_shared(record: &ChannelRecord) -> bool {
    !record.participants.is_empty()
}

/// What `peer` may receive of `record` from this node.
pub fn eligibility(record: &ChannelRecord, local: &OrgId, peer: &OrgId) -> Eligibility {
    if record.state != ChannelState::Active as i32
        || !is_shared(record)
        || !is_active(record, local)
    {
        return Eligibility::None;
    }
    if is_active(record, peer) {
        return Eligibility::Full;
    }
    match participant(record, peer) {
        Some(p) if p.removed_at > 0 => Eligibility::UntilRemoval {
            home_seq: p.removed_at,
        },
        _ => Eligibility::None,
    }
}

/// What a peer that holds `theirs` lacks of what this node holds (`mine`),
/// as (origin, first seq, last seq) ranges, oldest first per origin, within
/// what `eligibility` allows it to see.
pub fn to_send(
    eligibility: Eligibility,
    home: &OrgId,
    mine: &Vector,
    theirs: &Vector,
) -> Vec<(OrgId, u64, u64)> {
    let mut out = Vec::new();
    for (origin, &held) in mine {
        let last = match eligibility {
            Eligibility::None => return Vec::new(),
            Eligibility::Full => held,
            Eligibility::UntilRemoval { home_seq } if origin == home => held.min(home_seq),
            Eligibility::UntilRemoval { .. } => continue,
        };
        let first = theirs.get(origin).copied().unwrap_or(0).saturating_add(1);
        if first <= last {
            out.push((origin.clone(), first, last));
        }
    }
    out
}

/// Checks an envelope for a channel this node holds (`ctx.record`).
pub fn check(env: &Envelope, ctx: &Context<'_>) -> Verdict {
    match check_inner(env, ctx) {
        Ok(v) => v,
        Err(r) => Verdict::Reject(r),
    }
}

fn check_inner(env: &Envelope, ctx: &Context<'_>) -> Result<Verdict, Reject> {
    let size = env.encoded_len();
    if size > ctx.max_envelope_bytes {
        return Err(Reject::Oversized {
            size,
            limit: ctx.max_envelope_bytes,
        });
    }
    let origin = OrgId::parse(&env.origin).map_err(|e| Reject::Malformed(e.to_string()))?;
    if env.hlc > ctx.max_hlc {
        return Err(Reject::FromTheFuture);
    }
    let record = ctx.record;
    let is_control = env.kind == Kind::Control as i32;
    if is_control && origin.as_str() != record.home {
        return Err(Reject::ControlNotFromHome);
    }
    if record.state == ChannelState::Archived as i32 && !is_control {
        return Err(Reject::Archived);
    }
    if !is_shared(record) {
        return Err(Reject::NotSharedWithSender);
    }
    // The sender must be in the channel, or be the home telling a removed org so.
    let removal_notice =
        is_control && participant(record, ctx.local).is_some_and(|p| p.removed_at > 0);
    if !is_active(record, ctx.sender) && !removal_notice {
        return Err(Reject::NotSharedWithSender);
    }
    if !is_active(record, &origin) && origin != *ctx.local {
        return Err(Reject::OriginNotParticipant(origin.to_string()));
    }
    let ChainHead {
        seq: head_seq,
        hash: head_hash,
        hlc: head_hlc,
    } = ctx.head;
    if env.origin_seq <= head_seq {
        return match ctx.held {
            Some(h) if h == chain_hash(env) => Ok(Verdict::Duplicate),
            _ => Err(Reject::Rewind {
                seq: env.origin_seq,
            }),
        };
    }
    if env.origin_seq != head_seq + 1 {
        return Err(Reject::Gap {
            expected: head_seq + 1,
            got: env.origin_seq,
        });
    }
    if env.prev.as_slice() != head_hash.as_slice() {
        return Err(Reject::BrokenChain);
    }
    // History is read as a merge of the origins' runs in seq order, which
    // holds only while each origin's timestamps grow with its seq.
    if env.hlc <= head_hlc.0 {
        return Err(Reject::TimeWentBack);
    }
    if is_control {
        roster_of(env)?;
    }
    if env.signature.is_empty() {
        // Roster changes stand alone (they are also offers): always signed.
        return if is_control {
            Err(Reject::BadSignature)
        } else {
            Ok(Verdict::Chained)
        };
    }
    let key = if origin.as_str() == record.home {
        ctx.home_key
    } else {
        participant(record, &origin).map(|p| p.signing_key.as_slice())
    };
    if !key.is_some_and(|k| verify(env, k)) {
        return Err(Reject::BadSignature);
    }
    Ok(Verdict::Accept)
}

/// Checks an offer: the home's latest control envelope for a channel this
/// node does not hold yet. On success, the channel record to create.
pub fn check_offer(
    env: &Envelope,
    local: &OrgId,
    sender: &OrgId,
    home_key: Option<&[u8]>,
    created_unix_ms: u64,
) -> Result<ChannelRecord, Reject> {
    let channel = ChannelId::parse(&env.channel).map_err(|e| Reject::Malformed(e.to_string()))?;
    if env.kind != Kind::Control as i32 || env.origin != channel.home().as_str() {
        return Err(Reject::BadOffer(
            "an offer is a control envelope of the channel's home",
        ));
    }
    let key = home_key.ok_or(Reject::BadOffer(
        "the channel's home is not a configured peer",
    ))?;
    if !verify(env, key) {
        return Err(Reject::BadSignature);
    }
    let participants = roster_of(env)?;
    let record = ChannelRecord {
        id: channel.to_string(),
        home: channel.home().to_string(),
        name: channel.name().to_string(),
        created_unix_ms,
        state: ChannelState::Active as i32,
        participants,
        roster_seq: env.origin_seq,
    };
    if !is_active(&record, local) {
        return Err(Reject::BadOffer("the roster does not include this org"));
    }
    if !is_active(&record, sender) {
        return Err(Reject::NotSharedWithSender);
    }
    Ok(record)
}

/// Applies an accepted control envelope to the local record.
pub fn apply_control(
    record: &mut ChannelRecord,
    env: &Envelope,
    local: &OrgId,
) -> Result<(), Reject> {
    if env.origin_seq <= record.roster_seq {
        return Ok(()); // an older snapshot than the one held (e.g. the offer)
    }
    record.participants = roster_of(env)?;
    record.roster_seq = env.origin_seq;
    if record.home != local.as_str() {
        record.state = if is_active(record, local) {
            ChannelState::Active
        } else {
            ChannelState::Archived
        } as i32;
    }
    Ok(())
}

/// The roster after sharing with `org` (key `signing_key`) or removing it;
/// `home_seq` is the seq the control envelope carrying it will have.
pub fn changed_roster(
    roster: &[Participant],
    org: &OrgId,
    signing_key: Option<&[u8]>,
    home_seq: u64,
) -> Vec<Participant> {
    let mut roster = roster.to_vec();
    match (
        roster.iter_mut().find(|p| p.org == org.as_str()),
        signing_key,
    ) {
        (Some(p), Some(key)) => {
            p.active = true;
            p.removed_at = 0;
            p.signing_key = key.to_vec();
        }
        (Some(p), None) => {
            p.active = false;
            p.removed_at = home_seq;
        }
        (None, Some(key)) => roster.push(Participant {
            org: org.to_string(),
            signing_key: key.to_vec(),
            active: true,
            removed_at: 0,
        }),
        (None, None) => {}
    }
    roster
}

/// The control envelope body for a roster snapshot.
pub fn control_body(participants: Vec<Participant>) -> Vec<u8> {
    Control {
        action: Some(control::Action::Roster(crate::proto::Roster {
            participants,
        })),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests;
