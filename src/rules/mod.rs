//! The federation's decisions, as plain functions over values: who may
//! receive what, whether a received envelope or roster is accepted, and
//! which keys count. No I/O, no clock: the writer, the links, the API and
//! the fuzz entry points call these and only move bytes. May use `model`
//! and `proto` only.
//!
//! The roster of a channel is carried in control envelopes of its home:
//! each is a full snapshot (`Control.roster`), so any one of them, verified
//! against the home's key, says who participates.

mod incident;
pub mod picture;

pub use incident::{
    IncidentState, MAX_CHANNELS as MAX_INCIDENT_CHANNELS, carries_picture, channels_of, is_over,
    stamped_after_end, state as incident_state,
};

use std::collections::{HashMap, HashSet};

use prost::Message as _;

use crate::model::{
    ChainHead, ChannelId, EnvelopeHash, FileHash, MAX_FILES_PER_POST, MemberName, OrgId, Priority,
    VersionVector, body_matches, chain_hash, check_file_name, check_media_type, verify,
    withheld_copy,
};
use crate::proto::{
    Ack, ChannelRecord, ChannelState, Control, Envelope, FileRef, Incident, Kind, MessageId,
    OriginSeq, Participant, PeerRecord, PostBody, Retraction, Roster, control,
};

/// Most participants a roster may list (the home excluded). Mutual aid in
/// one incident is dozens of agencies; the bound keeps what one roster
/// costs to check and store small.
pub const MAX_PARTICIPANTS: usize = 256;
/// Largest encoded roster, in bytes: [`MAX_PARTICIPANTS`] entries of a
/// 253-byte org id, a 32-byte key and their tags fit with room to spare.
pub const MAX_ROSTER_BYTES: usize = 128 << 10;
/// Length of an Ed25519 public key and signature (RFC 8032), and of a
/// SHA-256 chain hash, in bytes.
const KEY_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;
const HASH_BYTES: usize = 32;

/// Message-signing keys this node pinned itself: its own, and each peer's
/// from the trust bundle an operator imported after checking its
/// fingerprint. The key of an org listed here comes only from here, never
/// from a roster a partner signed: a home vouches only for the keys of
/// orgs this node has not pinned.
#[derive(Debug, Clone, Default)]
pub struct Pinned(HashMap<String, Vec<u8>>);

/// Whose word a message's origin key rests on, for showing to members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKey {
    /// This node's own org.
    Own,
    /// A peer whose trust bundle this node's operator imported.
    Pinned,
    /// An org this node has not pinned: its key is the one the channel's
    /// home listed in its signed roster.
    VouchedByHome,
}

/// What a partner gets of what a channel holds when it is shared with it
/// (`channel share --history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Every message, as a participant from the start would have.
    All,
    /// Messages posted from the share on; earlier ones it does not hold
    /// reach it withheld.
    FromNow,
}

/// The orgs among `orgs` that were in the channel and were removed: sharing
/// with them again must say what they get of what was posted meanwhile.
pub fn reshared<'a>(
    record: &ChannelRecord,
    orgs: impl IntoIterator<Item = &'a OrgId>,
) -> Vec<&'a OrgId> {
    orgs.into_iter()
        .filter(|org| participant(record, org).is_some_and(|p| !p.active))
        .collect()
}

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
    /// An envelope of a channel this org was removed from: an honest
    /// participant sends it only if the roster it holds shares the channel
    /// here again, and that roster (an offer from the home) is on its way;
    /// or it has not learnt of the removal yet, and soon will.
    #[error(
        "this org was removed from the channel; what arrives of it waits for the roster that shares it again"
    )]
    BeforeReshare,
    #[error("channel offer is not valid: {0}")]
    BadOffer(&'static str),
    #[error("unsigned, and no signed envelope (seal) of the same origin followed it in the batch")]
    Unsealed,
    #[error("timestamp lies too far in the future")]
    FromTheFuture,
    #[error("timestamp is not later than that of the origin's previous envelope")]
    TimeWentBack,
    #[error("roster lists {org} with a signing key other than the one pinned here")]
    RosterKeyMismatch { org: String },
    #[error("the channel's home is no longer a peer of this node; its copy here is cut off")]
    HomeNotPeer,
    /// A sender withholds a body only from an org the roster withholds it
    /// from; an honest one never sends this org a withheld copy of a
    /// message it may read.
    #[error("a withheld copy of a message this org may read in full")]
    WithheldNotForUs,
    #[error("the home's roster changes what the incident is: {0}")]
    IncidentChanged(&'static str),
    #[error("stamped at or after the end (until) of the channel's incident")]
    IncidentEnded,
}

impl Reject {
    /// Whether honest peers cause this too: an envelope that arrived ahead
    /// of its predecessors or of its seal (a batch cut short, a relay, a
    /// resend). The sender is told what is held and sends it again; nothing
    /// was wrong with it, so it is counted but not audited.
    pub fn is_out_of_order(&self) -> bool {
        self.resend() == Some(Resend::Soon)
    }

    /// Whether, and how soon, the sender should be told again what this
    /// node holds, so that it sends the envelope again: soon when it came
    /// out of order; later when time will cure it (a timestamp ahead of
    /// this node's clock is taken once the clocks agree, which takes
    /// minutes, so asking every second would only resend the same frames).
    pub fn resend(&self) -> Option<Resend> {
        match self {
            Reject::Gap { .. } | Reject::Unsealed | Reject::BeforeReshare => Some(Resend::Soon),
            Reject::FromTheFuture => Some(Resend::Later),
            _ => None,
        }
    }
}

/// How soon a sender is asked to send again what was refused
/// ([`Reject::resend`]). `Soon` outranks `Later`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resend {
    Later,
    Soon,
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

// === impl Pinned ===

impl Pinned {
    /// This node's own key and its peers' keys, as (org, raw Ed25519 public key).
    pub fn new<'k>(keys: impl IntoIterator<Item = (&'k str, &'k [u8])>) -> Self {
        Self(
            keys.into_iter()
                .map(|(org, key)| (org.to_owned(), key.to_vec()))
                .collect(),
        )
    }

    /// The keys of the peer table's records.
    pub fn from_peers(peers: &[PeerRecord]) -> Self {
        Self::new(
            peers
                .iter()
                .map(|p| (p.org.as_str(), p.signing_key.as_slice())),
        )
    }

    /// The same, with this node's own key.
    pub fn with_own(mut self, org: &OrgId, key: &[u8]) -> Self {
        self.0.insert(org.to_string(), key.to_vec());
        self
    }

    /// The pinned key of `org`, if this node pinned one.
    pub fn key(&self, org: &str) -> Option<&[u8]> {
        self.0.get(org).map(Vec::as_slice)
    }

    /// Whose word the key of `origin` rests on, as seen from `local`.
    pub fn origin_key(&self, local: &OrgId, origin: &str) -> OriginKey {
        if origin == local.as_str() {
            OriginKey::Own
        } else if self.0.contains_key(origin) {
            OriginKey::Pinned
        } else {
            OriginKey::VouchedByHome
        }
    }
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
    /// Keys this node pinned (its own and its peers'): they take precedence
    /// over any key a roster lists.
    pub pinned: &'a Pinned,
    /// Hash of the held envelope at the same seq, when `seq <= head`.
    pub held: Option<EnvelopeHash>,
    pub max_envelope_bytes: usize,
    /// Timestamps above this are refused (the receiver's clock plus the
    /// drift it tolerates), so a peer cannot drag every clock into the future.
    pub max_hlc: u64,
    /// The signed retractions that came with the envelope's batch: each
    /// lets a withheld copy of the message it retracts in.
    pub retractions: &'a [Envelope],
}

/// The roster snapshot carried by a control envelope. A body larger than
/// [`MAX_ROSTER_BYTES`] is refused before it is decoded, so a partner's
/// roster cannot cost more memory than a roster of the largest allowed size.
pub fn roster_of(env: &Envelope) -> Result<Vec<Participant>, Reject> {
    snapshot_of(env).map(|r| r.participants)
}

/// The whole snapshot a control envelope carries: the roster and, for an
/// incident's channel, the incident ([`roster_of`]'s bound applies).
pub fn snapshot_of(env: &Envelope) -> Result<Roster, Reject> {
    if env.body.len() > MAX_ROSTER_BYTES {
        return Err(Reject::Malformed(format!(
            "roster of {} bytes; the limit is {MAX_ROSTER_BYTES}",
            env.body.len()
        )));
    }
    let control =
        Control::decode(env.body.as_slice()).map_err(|e| Reject::Malformed(e.to_string()))?;
    match control.action {
        Some(control::Action::Roster(r)) => Ok(r),
        None => Err(Reject::Malformed(
            "control envelope without an action".into(),
        )),
    }
}

/// Checks a roster snapshot of a channel homed at `home` before anything
/// of it is believed: at most [`MAX_PARTICIPANTS`] distinct orgs, none the
/// home, each with a key of the right length, and for every org this node
/// pinned (itself included) exactly the pinned key. A home that lists a
/// known org with another key is trying to speak for it.
pub fn check_roster(
    participants: &[Participant],
    home: &str,
    pinned: &Pinned,
) -> Result<(), Reject> {
    if participants.len() > MAX_PARTICIPANTS {
        return Err(Reject::Malformed(format!(
            "roster lists {} participants; the limit is {MAX_PARTICIPANTS}",
            participants.len()
        )));
    }
    let mut seen = HashSet::new();
    for p in participants {
        OrgId::parse(&p.org).map_err(|e| Reject::Malformed(format!("roster: {e}")))?;
        if p.org == home || !seen.insert(p.org.as_str()) {
            return Err(Reject::Malformed(
                "roster lists an org twice, or the home itself".into(),
            ));
        }
        if p.signing_key.len() != KEY_BYTES {
            return Err(Reject::Malformed(
                "roster holds a signing key that is not 32 bytes".into(),
            ));
        }
        if pinned
            .key(&p.org)
            .is_some_and(|k| k != p.signing_key.as_slice())
        {
            return Err(Reject::RosterKeyMismatch { org: p.org.clone() });
        }
    }
    Ok(())
}

/// Checks every field of a received envelope against the set or range a
/// local post of the same kind would have: a known kind; for text, an
/// author that is a member name, a known priority and a UTF-8 body; for a
/// roster change, no author and no priority; seq from 1; a 32-byte `prev`;
/// no signature or a 64-byte one; a body that is the one its origin signed
/// (or, withheld, none). What passes may be stored, relayed and shown; what
/// does not never is.
pub fn check_fields(env: &Envelope) -> Result<(), Reject> {
    let bad = |what: String| Err(Reject::Malformed(what));
    if env.origin_seq == 0 {
        return bad("origin_seq is 0; sequences start at 1".into());
    }
    if env.prev.len() != HASH_BYTES {
        return bad(format!(
            "prev is {} bytes, not {HASH_BYTES}",
            env.prev.len()
        ));
    }
    if !env.signature.is_empty() && env.signature.len() != SIGNATURE_BYTES {
        return bad(format!(
            "signature is {} bytes, not {SIGNATURE_BYTES}",
            env.signature.len()
        ));
    }
    if !env.body_sha256.is_empty() && env.body_sha256.len() != HASH_BYTES {
        return bad(format!(
            "body_sha256 is {} bytes, not {HASH_BYTES}",
            env.body_sha256.len()
        ));
    }
    if !body_matches(env) {
        return bad(if env.withheld {
            "withheld, yet it carries a body or its body is signed as is".into()
        } else {
            "body does not match its signed SHA-256".into()
        });
    }
    match Kind::try_from(env.kind) {
        Ok(Kind::Control) if env.withheld => bad("a roster change is never withheld".into()),
        // A member's message: its author and priority, then its body
        // (none to check when withheld).
        Ok(kind @ (Kind::Text | Kind::Post | Kind::Ack | Kind::Retract | Kind::Picture)) => {
            if MemberName::parse(&env.author).is_err() {
                return bad("author is not a member name".into());
            }
            if Priority::from_i32(env.priority).is_none() {
                return bad(format!("unknown priority {}", env.priority));
            }
            match kind {
                _ if env.withheld => Ok(()),
                Kind::Post => check_post_body(env).map(|_| ()),
                Kind::Ack => check_ack_body(env).map(|_| ()),
                Kind::Retract => check_retraction_body(env).map(|_| ()),
                Kind::Picture => picture::check_picture_body(env).map(|_| ()),
                _ if env.body.is_empty() => bad("text is empty".into()),
                _ if std::str::from_utf8(&env.body).is_err() => bad("text is not UTF-8".into()),
                _ => Ok(()),
            }
        }
        Ok(Kind::Control) if env.author.is_empty() && env.priority == 0 => Ok(()),
        Ok(Kind::Control) => bad("a roster change carries no author or priority".into()),
        _ => bad(format!("unknown kind {}", env.kind)),
    }
}

/// The body of a `Kind::Post` message, checked: text, or 1 to
/// [`MAX_FILES_PER_POST`] files, or both, each file with a 32-byte SHA-256,
/// a file name that stays inside a directory and a media type; the message
/// it answers, if any, named well.
pub fn check_post_body(env: &Envelope) -> Result<PostBody, Reject> {
    let bad = |what: String| Reject::Malformed(what);
    let body = PostBody::decode(env.body.as_slice())
        .map_err(|e| bad(format!("post body does not decode: {e}")))?;
    if body.files.len() > MAX_FILES_PER_POST {
        return Err(bad(format!(
            "a post references at most {MAX_FILES_PER_POST} files, not {}",
            body.files.len()
        )));
    }
    if body.files.is_empty() && body.text.is_empty() {
        return Err(bad(
            "a post has text, files or both; this has neither".into()
        ));
    }
    for file in &body.files {
        if FileHash::from_bytes(&file.sha256).is_none() {
            return Err(bad(format!(
                "a file's sha256 is {} bytes, not 32",
                file.sha256.len()
            )));
        }
        check_file_name(&file.name).map_err(bad)?;
        check_media_type(&file.media_type).map_err(bad)?;
    }
    if let Some(to) = &body.reply_to {
        check_message_id(to, "reply_to")?;
    }
    if let Some(cap) = &body.cap {
        check_cap_alert(cap, &body.files).map_err(bad)?;
    }
    Ok(body)
}

/// Longest field of a [`CapAlert`] reference, in bytes.
const MAX_CAP_FIELD_BYTES: usize = 256;

/// A post's reference to the CAP alert it carries: short printable fields,
/// and the alert's XML among the post's own files.
fn check_cap_alert(cap: &crate::proto::CapAlert, files: &[FileRef]) -> Result<(), String> {
    for (what, text) in [
        ("identifier", &cap.identifier),
        ("sender", &cap.sender),
        ("sent", &cap.sent),
        ("status", &cap.status),
        ("msgType", &cap.msg_type),
    ] {
        if text.len() > MAX_CAP_FIELD_BYTES || text.chars().any(char::is_control) {
            return Err(format!(
                "the CAP alert's {what} is over {MAX_CAP_FIELD_BYTES} bytes or holds control characters"
            ));
        }
    }
    if !files.iter().any(|f| f.sha256 == cap.sha256) {
        return Err("the CAP alert's XML is not one of the post's files".into());
    }
    Ok(())
}

/// The body of an acknowledgement (`Kind::Ack`), checked: the message it
/// confirms, named well. That message may not have arrived yet: an
/// origin's envelopes come in order, different origins' do not.
pub fn check_ack_body(env: &Envelope) -> Result<MessageId, Reject> {
    let bad = |what: String| Reject::Malformed(what);
    let ack = Ack::decode(env.body.as_slice())
        .map_err(|e| bad(format!("acknowledgement does not decode: {e}")))?;
    let message = ack
        .message
        .ok_or_else(|| bad("an acknowledgement names no message".into()))?;
    check_message_id(&message, "the acknowledged message")?;
    Ok(message)
}

/// The body of a retraction (`Kind::Retract`), checked: it names an
/// earlier message of its own origin. No one retracts another org's.
pub fn check_retraction_body(env: &Envelope) -> Result<MessageId, Reject> {
    let bad = |what: String| Reject::Malformed(what);
    let retraction = Retraction::decode(env.body.as_slice())
        .map_err(|e| bad(format!("retraction does not decode: {e}")))?;
    let message = retraction
        .message
        .ok_or_else(|| bad("a retraction names no message".into()))?;
    check_message_id(&message, "the retracted message")?;
    if message.origin != env.origin || message.seq >= env.origin_seq {
        return Err(bad(format!(
            "a retraction by {} names {}#{}: an org retracts only its own earlier messages",
            env.origin, message.origin, message.seq
        )));
    }
    Ok(message)
}

/// The message a stored retraction takes back (`None` for other kinds).
pub fn retraction_of(env: &Envelope) -> Option<MessageId> {
    if env.kind != Kind::Retract as i32 || env.withheld {
        return None;
    }
    Retraction::decode(env.body.as_slice()).ok()?.message
}

/// Whether one of `ctx.retractions` proves that `env`, a withheld copy,
/// was retracted by its origin: a retraction of the same channel and
/// origin that names it, signed by the origin's key.
fn proven_retracted(env: &Envelope, origin: &OrgId, ctx: &Context<'_>) -> bool {
    ctx.retractions.iter().any(|proof| {
        proof.channel == env.channel
            && proof.origin == env.origin
            && check_fields(proof).is_ok()
            && check_retraction_body(proof).is_ok_and(|m| m.seq == env.origin_seq)
            && !proof.signature.is_empty()
            && check_signature(proof, origin, ctx).is_ok()
    })
}

fn check_message_id(id: &MessageId, what: &str) -> Result<(), Reject> {
    if OrgId::parse(&id.origin).is_err() || id.seq == 0 {
        return Err(Reject::Malformed(format!(
            "{what} is not a message: origin {:?}, seq {}",
            id.origin, id.seq
        )));
    }
    Ok(())
}

/// The message a stored acknowledgement confirms (`None` for other kinds
/// and withheld copies).
pub fn ack_of(env: &Envelope) -> Option<MessageId> {
    if env.kind != Kind::Ack as i32 || env.withheld {
        return None;
    }
    Ack::decode(env.body.as_slice()).ok()?.message
}

/// The body of a stored `Kind::Post` message: its text, files, reply and
/// acknowledgement request (`None` for other kinds and withheld copies).
pub fn post_of(env: &Envelope) -> Option<PostBody> {
    if env.kind != Kind::Post as i32 || env.withheld {
        return None;
    }
    PostBody::decode(env.body.as_slice()).ok()
}

/// The files a stored message references (none for text, rosters and
/// withheld copies).
pub fn files_of(env: &Envelope) -> Vec<FileRef> {
    post_of(env).map_or_else(Vec::new, |b| b.files)
}

fn participant<'a>(record: &'a ChannelRecord, org: &OrgId) -> Option<&'a Participant> {
    record.participants.iter().find(|p| p.org == org.as_str())
}

/// Whether `org` may write to the channel: the home, or an active participant.
fn is_active(record: &ChannelRecord, org: &OrgId) -> bool {
    record.home == org.as_str() || participant(record, org).is_some_and(|p| p.active)
}

/// Channels homed at `local` among `records` in which `org` participates:
/// those a removal of `org` as a peer must end first.
pub fn shared_from_here_with<'a>(
    records: &'a [ChannelRecord],
    local: &OrgId,
    org: &OrgId,
) -> Vec<&'a ChannelRecord> {
    records
        .iter()
        .filter(|r| r.home == local.as_str() && participant(r, org).is_some_and(|p| p.active))
        .collect()
}

/// Whether `origin`'s message `seq` may be in the channel: the home's and an
/// active participant's, and a removed org's up to the last seq the home
/// held when it removed it, so every participant, early or late, draws the
/// same line.
fn may_write(record: &ChannelRecord, origin: &OrgId, seq: u64) -> bool {
    is_active(record, origin)
        || participant(record, origin).is_some_and(|p| p.removed_at > 0 && seq <= p.last_seq)
}

/// Whether `org` gets `origin`'s envelope `seq` of the channel withheld:
/// the home shared the channel with it `--history from-now`, drawing a line
/// at what it held of `origin` then, and `seq` is at or below that line.
/// An org's own messages are never withheld from it.
pub fn withheld_from(record: &ChannelRecord, org: &OrgId, origin: &str, seq: u64) -> bool {
    origin != org.as_str()
        && participant(record, org).is_some_and(|p| {
            p.withheld_through
                .iter()
                .any(|line| line.origin == origin && seq <= line.seq)
        })
}

/// Readies `envelopes` (one origin's run, in seq order, as held here) to be
/// sent to `peer`: each as held, or as its withheld copy where the roster
/// withholds its body from `peer`. Cuts the run before the first one that
/// cannot go as `peer` may have it: held here only withheld while `peer`
/// may read it (another participant holds it whole and sends it), or
/// written before the digest form while its body is withheld from `peer`.
/// A message its origin retracted (its seq in `retracted`: the sender has
/// the signed retraction to send with it) goes withheld. Returns whether
/// it cut.
pub fn ready_for(
    record: &ChannelRecord,
    peer: &OrgId,
    envelopes: &mut Vec<Envelope>,
    retracted: &HashSet<u64>,
) -> bool {
    for i in 0..envelopes.len() {
        let env = &envelopes[i];
        let ready = if body_withheld(record, peer, env) {
            withheld_copy(env)
        } else if retracted.contains(&env.origin_seq) {
            withheld_copy(env).or_else(|| env.withheld.then(|| env.clone()))
        } else {
            (!env.withheld).then(|| env.clone())
        };
        match ready {
            Some(ready) => envelopes[i] = ready,
            None => {
                envelopes.truncate(i);
                return true;
            }
        }
    }
    false
}

/// The copy of a received envelope this node keeps: as received, or its
/// withheld copy when the roster withholds its body from this node (a
/// sender that sent it whole anyway does not make it readable here).
pub fn as_kept(record: &ChannelRecord, local: &OrgId, env: Envelope) -> Envelope {
    if env.withheld || !body_withheld(record, local, &env) {
        return env;
    }
    withheld_copy(&env).unwrap_or(env)
}

/// Whether `org` gets `env` withheld ([`withheld_from`]): never a roster
/// change, which every participant needs whole (the home's roster at each
/// step decides what stands), whatever line a `--history from-now` drew.
fn body_withheld(record: &ChannelRecord, org: &OrgId, env: &Envelope) -> bool {
    env.kind != Kind::Control as i32 && withheld_from(record, org, &env.origin, env.origin_seq)
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

/// What a peer may be told this node holds of a channel (`mine`): all of
/// it when it participates; when it was removed, only the home's entry up
/// to its removal (what it is still sent), so it learns nothing of who
/// joined or wrote since.
///
/// Of a removed org, only its messages up to the line its removal drew
/// (`last_seq`) count: one taken here beyond it before the removal arrived
/// is neither stated nor sent, since every other participant refuses it.
pub fn visible_vector(
    record: &ChannelRecord,
    eligibility: Eligibility,
    mine: &VersionVector,
) -> VersionVector {
    let home = record.home.as_str();
    match eligibility {
        Eligibility::None => VersionVector::new(),
        Eligibility::Full => mine
            .iter()
            .filter_map(|(origin, &held)| {
                let last = match participant(record, origin) {
                    Some(p) if !p.active && p.removed_at > 0 => held.min(p.last_seq),
                    _ => held,
                };
                (last > 0).then(|| (origin.clone(), last))
            })
            .collect(),
        Eligibility::UntilRemoval { home_seq } => mine
            .iter()
            .filter(|(origin, _)| origin.as_str() == home)
            .map(|(origin, &held)| (origin.clone(), held.min(home_seq)))
            .collect(),
    }
}

/// Keeps of a vector a partner stated only the origins that may have
/// written to the channel: its home and the orgs its roster lists. What a
/// partner states of other origins is not kept, so it costs nothing here.
pub fn roster_origins(record: &ChannelRecord, mut theirs: VersionVector) -> VersionVector {
    theirs.retain(|origin, _| {
        record.home == origin.as_str() || participant(record, origin).is_some()
    });
    theirs
}

/// What a peer that holds `theirs` lacks of what this node holds (`mine`),
/// as (origin, first seq, last seq) ranges, oldest first per origin, within
/// what `eligibility` allows it to see.
pub fn to_send(
    record: &ChannelRecord,
    eligibility: Eligibility,
    mine: &VersionVector,
    theirs: &VersionVector,
) -> Vec<(OrgId, u64, u64)> {
    let mut out = Vec::new();
    for (origin, last) in visible_vector(record, eligibility, mine) {
        let last = last.min(mine.get(&origin).copied().unwrap_or(0));
        let first = theirs.get(&origin).copied().unwrap_or(0).saturating_add(1);
        if first <= last {
            out.push((origin, first, last));
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
    check_fields(env)?;
    if env.hlc > ctx.max_hlc {
        return Err(Reject::FromTheFuture);
    }
    let record = ctx.record;
    let is_control = env.kind == Kind::Control as i32;
    // Rosters and retractions stand alone (offers, proofs): always signed.
    let alone = is_control || env.kind == Kind::Retract as i32;
    if is_control && origin.as_str() != record.home {
        return Err(Reject::ControlNotFromHome);
    }
    if record.state == ChannelState::Archived as i32 && !is_control {
        return Err(Reject::BeforeReshare);
    }
    if !is_control && stamped_after_end(record, crate::model::Hlc(env.hlc).unix_ms()) {
        return Err(Reject::IncidentEnded);
    }
    if env.kind == Kind::Picture as i32 && !carries_picture(record) {
        return Err(Reject::Malformed(
            "a picture entry in a channel that does not carry an incident's picture".into(),
        ));
    }
    if env.withheld
        && !withheld_from(record, ctx.local, origin.as_str(), env.origin_seq)
        && !proven_retracted(env, &origin, ctx)
    {
        return Err(Reject::WithheldNotForUs);
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
    if !may_write(record, &origin, env.origin_seq) && origin != *ctx.local {
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
        let snapshot = snapshot_of(env)?;
        check_roster(&snapshot.participants, &record.home, ctx.pinned)?;
        if let Some(stated) = &snapshot.incident {
            incident::check_stated(&record.name, stated)?;
        }
        if env.origin_seq > record.roster_seq {
            incident::check_change(record.incident.as_ref(), snapshot.incident.as_ref())?;
        }
    }
    if env.signature.is_empty() {
        return if alone {
            Err(Reject::BadSignature)
        } else {
            Ok(Verdict::Chained)
        };
    }
    check_signature(env, &origin, ctx)?;
    Ok(Verdict::Accept)
}

/// Whether `env` verifies with its origin's key: a pinned key (this node's
/// own, a peer's, the home's) is the only one that counts for its org; the
/// roster speaks only for orgs not pinned.
fn check_signature(env: &Envelope, origin: &OrgId, ctx: &Context<'_>) -> Result<(), Reject> {
    let key = match ctx.pinned.key(origin.as_str()) {
        Some(pinned) => Some(pinned),
        None => participant(ctx.record, origin).map(|p| p.signing_key.as_slice()),
    };
    if !key.is_some_and(|k| verify(env, k)) {
        return Err(Reject::BadSignature);
    }
    Ok(())
}

/// What became of an envelope a peer sent ahead of its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ahead {
    /// Show it to members now; it is stored when its run arrives.
    Show,
    /// Held here already, in order: nothing to do.
    Held,
}

/// Checks an envelope sent ahead of older ones of its origin (a FLASH or
/// URGENT member's message after an outage): everything [`check`] checks
/// but its place in the chain, which cannot be checked before its run
/// arrives; so it must carry its own signature, by its origin's key. It is
/// shown, never stored: the ordered envelope that follows is checked whole.
pub fn check_ahead(env: &Envelope, ctx: &Context<'_>) -> Result<Ahead, Reject> {
    let size = env.encoded_len();
    if size > ctx.max_envelope_bytes {
        return Err(Reject::Oversized {
            size,
            limit: ctx.max_envelope_bytes,
        });
    }
    let origin = OrgId::parse(&env.origin).map_err(|e| Reject::Malformed(e.to_string()))?;
    check_fields(env)?;
    let member_message = matches!(
        Kind::try_from(env.kind),
        Ok(Kind::Text | Kind::Post | Kind::Ack)
    );
    if !member_message || env.withheld || env.priority < Priority::Urgent as i32 {
        return Err(Reject::Malformed(
            "only FLASH and URGENT members' messages, whole, go ahead of their run".into(),
        ));
    }
    if env.hlc > ctx.max_hlc {
        return Err(Reject::FromTheFuture);
    }
    let record = ctx.record;
    if record.state != ChannelState::Active as i32 || !is_shared(record) {
        return Err(Reject::NotSharedWithSender);
    }
    if !is_active(record, ctx.sender) {
        return Err(Reject::NotSharedWithSender);
    }
    if !may_write(record, &origin, env.origin_seq) && origin != *ctx.local {
        return Err(Reject::OriginNotParticipant(origin.to_string()));
    }
    if withheld_from(record, ctx.local, origin.as_str(), env.origin_seq) {
        return Err(Reject::Malformed(
            "a message withheld from this org was sent ahead whole".into(),
        ));
    }
    if env.origin_seq <= ctx.head.seq {
        return Ok(Ahead::Held);
    }
    if env.signature.is_empty() {
        return Err(Reject::BadSignature);
    }
    check_signature(env, &origin, ctx)?;
    Ok(Ahead::Show)
}

/// Checks an offer: the home's latest control envelope for a channel this
/// node does not hold yet, verified against the home's pinned key. On
/// success, the channel record to create.
pub fn check_offer(
    env: &Envelope,
    local: &OrgId,
    sender: &OrgId,
    pinned: &Pinned,
    created_unix_ms: u64,
) -> Result<ChannelRecord, Reject> {
    let record = verified_roster(env, pinned, created_unix_ms)?;
    if !is_active(&record, local) {
        return Err(Reject::BadOffer("the roster does not include this org"));
    }
    if !is_active(&record, sender) {
        return Err(Reject::NotSharedWithSender);
    }
    Ok(record)
}

/// Whether `org` is or was a participant of the channel of `record` (the
/// home excluded).
pub fn took_part(record: &ChannelRecord, org: &OrgId) -> bool {
    participant(record, org).is_some()
}

/// Whether an offer from `sender` of the home's roster envelope
/// `roster_seq`, for a channel held here as `record`, only lags behind:
/// the roster is no newer than the one held, and `sender` was in the
/// channel and has since been removed from it. Such a sender offers what
/// it held before its removal reached it; nothing about it is hostile.
pub fn lags_behind(record: &ChannelRecord, sender: &OrgId, roster_seq: u64) -> bool {
    roster_seq <= record.roster_seq
        && participant(record, sender).is_some_and(|p| !p.active && p.removed_at > 0)
}

/// Which of the home's roster envelopes (its seq) to offer a peer that
/// does not hold the channel, given what it may receive (`eligibility`):
/// the latest while it participates; the one that removed it when it was
/// removed before it acknowledged anything of the channel (asked of
/// `acknowledged` only then), sent by the home alone. That one withdraws an
/// offer the peer may hold for its operator ([`removal_of`]) and shows it
/// nothing of who joined since. `None`: nothing to offer.
pub fn roster_to_offer<E>(
    record: &ChannelRecord,
    eligibility: Eligibility,
    is_home: bool,
    acknowledged: impl FnOnce() -> Result<bool, E>,
) -> Result<Option<u64>, E> {
    Ok(match eligibility {
        Eligibility::Full => Some(record.roster_seq),
        Eligibility::UntilRemoval { home_seq } if is_home && !acknowledged()? => Some(home_seq),
        _ => None,
    })
}

/// An offer whose roster shows `local` removed from the channel: what the
/// home sends an org it removed before that org took the channel, so that
/// an offer held there for acceptance is withdrawn. `None` when the roster
/// does not remove `local` (an offer to check with [`check_offer`]);
/// otherwise the record it states, `Archived`, once verified against the
/// home's pinned key. The roster is decoded before its signature is
/// checked only to tell the two apart.
pub fn removal_of(
    env: &Envelope,
    local: &OrgId,
    pinned: &Pinned,
    created_unix_ms: u64,
) -> Option<Result<ChannelRecord, Reject>> {
    if env.kind != Kind::Control as i32 || env.body.len() > MAX_ROSTER_BYTES {
        return None;
    }
    let snapshot = snapshot_of(env).ok()?;
    let removed = snapshot
        .participants
        .iter()
        .any(|p| p.org == local.as_str() && !p.active);
    if !removed {
        return None;
    }
    Some(
        verified_roster(env, pinned, created_unix_ms).map(|record| ChannelRecord {
            state: ChannelState::Archived as i32,
            ..record
        }),
    )
}

/// The channel record a home's roster envelope states, verified against
/// the home's pinned key, its roster and incident checked on their own.
fn verified_roster(
    env: &Envelope,
    pinned: &Pinned,
    created_unix_ms: u64,
) -> Result<ChannelRecord, Reject> {
    let channel = ChannelId::parse(&env.channel).map_err(|e| Reject::Malformed(e.to_string()))?;
    if env.kind != Kind::Control as i32 || env.origin != channel.home().as_str() {
        return Err(Reject::BadOffer(
            "an offer is a control envelope of the channel's home",
        ));
    }
    check_fields(env)?;
    // Bounded before the signature is checked over it (or the roster decoded).
    if env.body.len() > MAX_ROSTER_BYTES {
        return Err(Reject::Malformed(format!(
            "roster of {} bytes; the limit is {MAX_ROSTER_BYTES}",
            env.body.len()
        )));
    }
    let key = pinned.key(channel.home().as_str()).ok_or(Reject::BadOffer(
        "the channel's home is not a configured peer",
    ))?;
    if !verify(env, key) {
        return Err(Reject::BadSignature);
    }
    let snapshot = snapshot_of(env)?;
    check_roster(&snapshot.participants, channel.home().as_str(), pinned)?;
    if let Some(stated) = &snapshot.incident {
        incident::check_stated(channel.name().as_str(), stated)?;
    }
    Ok(ChannelRecord {
        id: channel.to_string(),
        home: channel.home().to_string(),
        name: channel.name().to_string(),
        created_unix_ms,
        state: ChannelState::Active as i32,
        participants: snapshot.participants,
        roster_seq: env.origin_seq,
        incident: snapshot.incident,
    })
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
    let snapshot = snapshot_of(env)?;
    record.participants = snapshot.participants;
    record.incident = snapshot.incident;
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
    edit: RosterEdit<'_>,
) -> Vec<Participant> {
    let mut roster = roster.to_vec();
    let (signing_key, withheld_through) = match edit {
        RosterEdit::Share {
            signing_key,
            withheld_through,
        } => (Some(signing_key), withheld_through),
        RosterEdit::Remove { .. } => (None, &[][..]),
    };
    let withheld_through: Vec<OriginSeq> = withheld_through
        .iter()
        .filter(|line| line.origin != org.as_str() && line.seq > 0)
        .cloned()
        .collect();
    match (
        roster.iter_mut().find(|p| p.org == org.as_str()),
        signing_key,
    ) {
        // Already in: a new key, nothing else.
        (Some(p), Some(key)) if p.active => p.signing_key = key.to_vec(),
        (Some(p), Some(key)) => {
            p.active = true;
            p.removed_at = 0;
            p.last_seq = 0;
            p.signing_key = key.to_vec();
            p.withheld_through = withheld_through;
        }
        (Some(p), None) => {
            if let RosterEdit::Remove { home_seq, last_seq } = edit {
                p.active = false;
                p.removed_at = home_seq;
                p.last_seq = last_seq;
            }
        }
        (None, Some(key)) => roster.push(Participant {
            org: org.to_string(),
            signing_key: key.to_vec(),
            active: true,
            removed_at: 0,
            last_seq: 0,
            withheld_through,
        }),
        (None, None) => {}
    }
    roster
}

/// A change to one org's place in a roster.
#[derive(Debug, Clone, Copy)]
pub enum RosterEdit<'a> {
    /// Share with the org, whose message-signing key this is; of each origin
    /// in `withheld_through`, the envelopes up to its seq reach the org
    /// withheld (empty: all history). An org already in keeps its lines.
    Share {
        signing_key: &'a [u8],
        withheld_through: &'a [OriginSeq],
    },
    /// Remove it by the home's control envelope `home_seq`; the org's own
    /// messages up to `last_seq` (what the home holds of it) stand.
    Remove { home_seq: u64, last_seq: u64 },
}

/// The control envelope body for a roster snapshot.
pub fn control_body(participants: Vec<Participant>) -> Vec<u8> {
    snapshot_body(participants, None)
}

/// The control envelope body for a roster snapshot of an incident's
/// channel (`incident`: what the home states of it).
pub fn snapshot_body(participants: Vec<Participant>, incident: Option<Incident>) -> Vec<u8> {
    Control {
        action: Some(control::Action::Roster(Roster {
            participants,
            incident,
        })),
    }
    .encode_to_vec()
}

/// One received batch being admitted, envelope by envelope, in the
/// batch's order, with the rule that a seal vouches for the chained,
/// unsigned envelopes of its origin before it in the same batch. The
/// writer, the property test and the fuzz entry point all admit batches
/// through it. Callers look up the stored state past what waits here
/// ([`Admission::head`], [`Admission::held`]), [`check`] the envelope, and
/// hand the verdict to [`Admission::admit`], which says what to store;
/// [`Admission::finish`] gives one verdict per envelope.
#[derive(Debug, Default)]
pub struct Admission {
    /// Per (channel, origin): the chained envelopes waiting for a seal.
    waiting: HashMap<(String, String), Vec<Waiting>>,
    verdicts: Vec<Verdict>,
}

/// A chained, unsigned envelope waiting for its seal.
#[derive(Debug)]
pub struct Waiting {
    /// Its position in the batch.
    index: usize,
    pub envelope: Envelope,
    pub hash: EnvelopeHash,
}

// === impl Admission ===

impl Admission {
    fn key(env: &Envelope) -> (String, String) {
        (env.channel.clone(), env.origin.clone())
    }

    /// The head of `env`'s origin past what waits in this batch, if
    /// anything of it waits (else the caller's stored head holds).
    pub fn head(&self, env: &Envelope) -> Option<ChainHead> {
        let last = self.waiting.get(&Self::key(env))?.last()?;
        Some(ChainHead::after(&last.envelope, last.hash))
    }

    /// The hash of the waiting envelope at `env`'s seq, if one waits.
    pub fn held(&self, env: &Envelope) -> Option<EnvelopeHash> {
        self.waiting
            .get(&Self::key(env))?
            .iter()
            .find(|w| w.envelope.origin_seq == env.origin_seq)
            .map(|w| w.hash)
    }

    /// Records the verdict of an envelope decided without [`check`] (an
    /// unknown channel, say) or one that is not to be stored.
    pub fn decided(&mut self, verdict: Verdict) {
        self.verdicts.push(verdict);
    }

    /// Takes `verdict`, the result of [`check`] for the batch's next
    /// envelope. A seal (Accept) gives the envelopes to store, in order: the
    /// run it vouches for, then itself, all answered Accept. A chained one
    /// waits. Anything else is stored nowhere.
    pub fn admit(&mut self, envelope: Envelope, verdict: Verdict) -> Vec<(Envelope, EnvelopeHash)> {
        let index = self.verdicts.len();
        let store = match verdict {
            Verdict::Chained => {
                let hash = chain_hash(&envelope);
                self.waiting
                    .entry(Self::key(&envelope))
                    .or_default()
                    .push(Waiting {
                        index,
                        envelope,
                        hash,
                    });
                Vec::new()
            }
            Verdict::Accept => {
                let run = self
                    .waiting
                    .remove(&Self::key(&envelope))
                    .unwrap_or_default();
                let mut store = Vec::with_capacity(run.len() + 1);
                for waiting in run {
                    self.verdicts[waiting.index] = Verdict::Accept;
                    store.push((waiting.envelope, waiting.hash));
                }
                let hash = chain_hash(&envelope);
                store.push((envelope, hash));
                store
            }
            Verdict::Duplicate | Verdict::Reject(_) => Vec::new(),
        };
        self.verdicts.push(verdict);
        store
    }

    /// The batch is over: one verdict per envelope, in order. What no seal
    /// vouched for is not stored and is answered [`Reject::Unsealed`] (it
    /// comes again with a later batch).
    pub fn finish(mut self) -> Vec<Verdict> {
        for waiting in self.waiting.into_values().flatten() {
            self.verdicts[waiting.index] = Verdict::Reject(Reject::Unsealed);
        }
        self.verdicts
    }
}

#[cfg(test)]
mod tests;

/// The agencies a message stamped `stamped` (its hlc) in the channel of
/// `record` was shared with: the home, every participant still in it, and
/// each one removed by a roster stamped after the message. Closing an
/// incident removes everyone; what was posted before was theirs all the
/// same, and its receipts say so. `removal_stamp(p)` gives the hlc of the
/// home's roster that removed `p`, `None` when this node does not hold it
/// (`p` is then left out).
pub fn agencies_of_message(
    record: &ChannelRecord,
    stamped: u64,
    removal_stamp: impl Fn(&Participant) -> Option<u64>,
) -> Vec<String> {
    let mut out: Vec<String> = record
        .participants
        .iter()
        .filter(|p| p.active || removal_stamp(p).is_some_and(|removed| removed > stamped))
        .map(|p| p.org.clone())
        .collect();
    out.push(record.home.clone());
    out.sort();
    out.dedup();
    out
}

/// Of the `agencies` a message of `origin` was shared with
/// ([`agencies_of_message`]), those expected to acknowledge it: every one
/// but the origin's, or, in a channel of the origin's alone, the origin's
/// (its members other than the author).
pub fn expected_to_acknowledge(agencies: &[String], origin: &str) -> Vec<String> {
    let mut out: Vec<String> = agencies
        .iter()
        .filter(|org| *org != origin)
        .cloned()
        .collect();
    if out.is_empty() {
        out.push(origin.to_owned());
    }
    out
}

/// Whether an agency is overdue on a message due at `due_unix_ms` (0: no
/// deadline) at `now_unix_ms`: the deadline passed and none of its members
/// acknowledged it (the author's own acknowledgement does not count).
pub fn overdue(due_unix_ms: u64, now_unix_ms: u64, acknowledged: bool) -> bool {
    due_unix_ms != 0 && now_unix_ms >= due_unix_ms && !acknowledged
}
