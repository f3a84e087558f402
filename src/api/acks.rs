//! Acknowledgements, replies, retractions and receipts in
//! `samband.v1.Messaging`: Acknowledge, Retract, Receipts, Overdue, and
//! what a message shows of them.
//!
//! An acknowledgement is a signed `Kind::Ack` envelope of the member's org
//! in the same channel: it federates, relays and catches up exactly like a
//! message. The store indexes them as they are written (`a` keys) and the
//! deadlines of the messages that ask for them (`d` keys); what is overdue
//! is decided by `rules::overdue` from those and the channel's agencies.
//! A retraction is a signed `Kind::Retract` envelope of the message's own
//! org; every node that stores it drops the message's body (the store keeps
//! its withheld copy, `r` keys say who retracted it).
//!
//! May use: `model`, `proto`, `rules`, `store`, `engine`, `federation`
//! (through [`ApiContext`] and the link states).

use std::collections::{HashMap, HashSet};

use super::messaging::Standing;
use super::{ApiContext, ApiError};
use crate::engine::{Content, NewPost};
use crate::federation::{Federation, LinkState};
use crate::identity::Member;
use crate::model::{ChannelId, Cursor, Hlc, OrgId, Priority, unix_ms};
use crate::proto::{self, AckRequest, Envelope, Kind, MessageId, PostBody};
use crate::rules;
use crate::store::{Acknowledged, Stored};

/// Shortest and longest acknowledgement deadlines, ms: one shorter is
/// overdue before anyone could read it, one longer is no deadline.
const MIN_DEADLINE_MS: u64 = 10_000;
const MAX_DEADLINE_MS: u64 = 30 * 24 * 3600 * 1000;

/// The acknowledgement request of a post: asked for when `ack_required`
/// says so, or, unset, for FLASH. INVALID_ARGUMENT for a deadline without it.
pub(super) fn ack_request(
    req: &proto::PostRequest,
    priority: Priority,
) -> Result<Option<AckRequest>, ApiError> {
    let required = req.ack_required.unwrap_or(priority == Priority::Flash);
    if !required && req.ack_deadline_ms > 0 {
        return Err(ApiError::InvalidArgument(
            "ack_deadline_ms is set but the post does not ask for acknowledgement \
             (set ack_required, or --ack-required)"
                .into(),
        ));
    }
    let deadline = req.ack_deadline_ms;
    if required && deadline > 0 && !(MIN_DEADLINE_MS..=MAX_DEADLINE_MS).contains(&deadline) {
        return Err(ApiError::InvalidArgument(format!(
            "ack_deadline_ms is {deadline}; a deadline lies between 10 s and 30 days \
             ({MIN_DEADLINE_MS}-{MAX_DEADLINE_MS} ms)"
        )));
    }
    Ok(required.then_some(AckRequest {
        deadline_ms: deadline,
    }))
}

/// The message a reply answers, from its cursor: NOT_FOUND when `channel`
/// holds no message there.
pub(super) fn reply_to(
    api: &ApiContext,
    channel: &ChannelId,
    cursor: &str,
) -> Result<Option<MessageId>, ApiError> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let at = Cursor::decode(cursor)?;
    readable(api, channel, &at)?;
    Ok(Some(MessageId {
        origin: at.origin.to_string(),
        seq: at.seq,
    }))
}

/// The member's message at `at` in `channel`: NOT_FOUND when there is
/// none; FAILED_PRECONDITION, saying what it is, for a roster change, an
/// acknowledgement or a retraction.
fn readable(api: &ApiContext, channel: &ChannelId, at: &Cursor) -> Result<Envelope, ApiError> {
    let Some(env) = api
        .store
        .envelope(channel, &at.origin, at.seq)?
        .filter(|e| e.hlc == at.hlc.0)
    else {
        return Err(ApiError::NotFound(format!(
            "no message at that cursor in {channel}"
        )));
    };
    let what = match Kind::try_from(env.kind) {
        Ok(Kind::Text | Kind::Post) => return Ok(env),
        Ok(Kind::Control) => "a change of who the channel is shared with",
        Ok(Kind::Ack) => "an acknowledgement",
        Ok(Kind::Retract) => "a retraction",
        _ => "not a message",
    };
    Err(ApiError::FailedPrecondition(format!(
        "{}#{} is {what}, not a member's message: it cannot be acknowledged, answered or retracted",
        at.origin, at.seq
    )))
}

/// The cursor of message `id` of `channel`, if this node holds it.
fn cursor_of(api: &ApiContext, channel: &ChannelId, id: &MessageId) -> Option<Cursor> {
    let origin = OrgId::parse(&id.origin).ok()?;
    let env = api.store.envelope(channel, &origin, id.seq).ok()??;
    Some(Cursor {
        hlc: Hlc(env.hlc),
        origin,
        seq: id.seq,
    })
}

fn shown_ref(api: &ApiContext, channel: &ChannelId, id: MessageId) -> proto::MessageRef {
    proto::MessageRef {
        cursor: cursor_of(api, channel, &id)
            .map(|c| c.encode())
            .unwrap_or_default(),
        origin: id.origin,
        seq: id.seq,
    }
}

/// Fills in what `message` shows of replies, acknowledgements and
/// retractions, for the member `me`: the message it answers, acknowledges
/// or retracts, who retracted it, whether it asks for acknowledgement and
/// by when, and whether `me` is still asked.
/// `record` is the message's channel's and `removals` its [`Removals`],
/// both read once for a page of messages.
pub(super) fn show(
    api: &ApiContext,
    stored: &Stored,
    post: Option<&PostBody>,
    record: Option<&proto::ChannelRecord>,
    removals: &Removals,
    me: &Member,
    message: &mut proto::Message,
) {
    let env = &stored.envelope;
    let Ok(channel) = ChannelId::parse(&env.channel) else {
        return;
    };
    if let Some(id) = rules::ack_of(env) {
        message.kind = "ack".into();
        message.text = String::new();
        message.acknowledges = Some(shown_ref(api, &channel, id));
        return;
    }
    if let Some(id) = rules::retraction_of(env) {
        message.kind = "retraction".into();
        message.text = String::new();
        message.retracts = Some(shown_ref(api, &channel, id));
        return;
    }
    let retracted = api
        .store
        .retraction(&channel, &stored.cursor.origin, stored.cursor.seq)
        .ok()
        .flatten();
    if let Some(r) = retracted {
        message.retracted = Some(proto::Retracted {
            member: r.author,
            org: stored.cursor.origin.to_string(),
            unix_ms: r.cursor.hlc.unix_ms(),
        });
        message.text = String::new();
        message.attachments.clear();
        message.withheld = true;
        return;
    }
    let Some(post) = post else {
        return;
    };
    message.reply_to = post.reply_to.clone().map(|id| shown_ref(api, &channel, id));
    if let Some(ack) = &post.ack {
        message.ack_required = true;
        message.ack_deadline_unix_ms = due(stored.cursor.hlc, ack);
        let mine = me.org == stored.cursor.origin && me.name.as_str() == env.author;
        // Asked of the agencies expected to answer (not the author's own
        // when the channel is shared: the order goes to the partners), and
        // only while the channel takes acknowledgements.
        let asked = record.is_some_and(|record| {
            Standing::of(record, unix_ms()).takes_posts()
                && rules::expected_to_acknowledge(
                    &removals.shared_with(record, stored.cursor.hlc),
                    stored.cursor.origin.as_str(),
                )
                .iter()
                .any(|org| org == me.org.as_str())
        });
        message.needs_my_ack = asked
            && !mine
            && !api
                .store
                .acks(&channel, &stored.cursor.origin, stored.cursor.seq)
                .unwrap_or_default()
                .iter()
                .any(|a| a.org == me.org && a.member == me.name.as_str());
    }
}

/// When the home's rosters that removed a channel's former participants
/// were stamped (hlc, by org): what `rules::agencies_of_message` asks of
/// each message, read once per page or channel rather than per message.
/// An org whose removal roster this node does not hold is not in it.
#[derive(Debug, Default)]
pub(super) struct Removals(HashMap<String, u64>);

impl Removals {
    /// The removals of the channel `channel` of `record`: one envelope
    /// read per removed participant.
    pub(super) fn of(api: &ApiContext, channel: &ChannelId, record: &proto::ChannelRecord) -> Self {
        let Ok(home) = OrgId::parse(&record.home) else {
            return Self::default();
        };
        Self(
            record
                .participants
                .iter()
                .filter(|p| !p.active)
                .filter_map(|p| {
                    let roster = api.store.envelope(channel, &home, p.removed_at).ok()??;
                    Some((p.org.clone(), roster.hlc))
                })
                .collect(),
        )
    }

    /// The agencies a message stamped `stamped` in the channel of `record`
    /// was shared with (`rules::agencies_of_message`).
    fn shared_with(&self, record: &proto::ChannelRecord, stamped: Hlc) -> Vec<String> {
        rules::agencies_of_message(record, stamped.0, |p| self.0.get(&p.org).copied())
    }
}

/// When acknowledgements of a message stamped `hlc` are due (0: no deadline).
fn due(hlc: Hlc, ack: &AckRequest) -> u64 {
    if ack.deadline_ms == 0 {
        0
    } else {
        hlc.unix_ms().saturating_add(ack.deadline_ms)
    }
}

/// `member`'s acknowledgement of the message at `cursor` in `channel`:
/// written once, durable before the answer; a second call answers the
/// first (`already`).
pub(super) async fn acknowledge(
    api: &ApiContext,
    member: &Member,
    channel: ChannelId,
    cursor: &str,
) -> Result<proto::AcknowledgeResponse, ApiError> {
    let at = Cursor::decode(cursor)?;
    let env = readable(api, &channel, &at)?;
    if api
        .store
        .retraction(&channel, &at.origin, at.seq)?
        .is_some()
    {
        return Err(ApiError::FailedPrecondition(format!(
            "{}#{} was retracted by its org; there is nothing to acknowledge",
            at.origin, at.seq
        )));
    }
    let previous = api
        .store
        .acks(&channel, &at.origin, at.seq)?
        .into_iter()
        .find(|a| a.org == member.org && a.member == member.name.as_str());
    if let Some(Acknowledged { cursor, .. }) = previous {
        let env = api.store.envelope(&channel, &cursor.origin, cursor.seq)?;
        return Ok(proto::AcknowledgeResponse {
            acknowledgement: Some(proto::PostResponse {
                cursor: cursor.encode(),
                origin: cursor.origin.to_string(),
                origin_seq: cursor.seq,
                hlc: env.map_or(cursor.hlc.0, |e| e.hlc),
            }),
            already: true,
        });
    }
    // As urgent as what it confirms: a FLASH order's confirmation goes
    // ahead of routine traffic too.
    let priority = Priority::from_i32(env.priority).unwrap_or(Priority::Normal);
    let post = NewPost {
        channel,
        author: member.name.clone(),
        priority,
        content: Content::Ack(MessageId {
            origin: at.origin.to_string(),
            seq: at.seq,
        }),
    };
    let stored = api.writer.post(post).await?;
    Ok(proto::AcknowledgeResponse {
        acknowledgement: Some(super::messaging::posted(&stored)),
        already: false,
    })
}

/// Takes back the message at `cursor` in `channel` as `member`: its
/// author or an admin, of the org whose message it is. Durable before the
/// answer; a second call answers the first retraction (`already`).
pub(super) async fn retract(
    api: &ApiContext,
    member: &Member,
    channel: ChannelId,
    cursor: &str,
) -> Result<proto::RetractResponse, ApiError> {
    let at = Cursor::decode(cursor)?;
    let env = readable(api, &channel, &at)?;
    if at.origin != api.org {
        return Err(ApiError::PermissionDenied(format!(
            "only {} can retract its messages; ask one of its members",
            at.origin
        )));
    }
    if member.role != crate::model::Role::Admin && member.name.as_str() != env.author {
        return Err(ApiError::PermissionDenied(format!(
            "only its author ({}) or an admin of {} can retract it",
            env.author, api.org
        )));
    }
    if let Some(r) = api.store.retraction(&channel, &at.origin, at.seq)? {
        return Ok(proto::RetractResponse {
            retraction: Some(proto::PostResponse {
                cursor: r.cursor.encode(),
                origin: r.cursor.origin.to_string(),
                origin_seq: r.cursor.seq,
                hlc: r.cursor.hlc.0,
            }),
            already: true,
        });
    }
    let post = NewPost {
        channel,
        author: member.name.clone(),
        priority: Priority::from_i32(env.priority).unwrap_or(Priority::Normal),
        content: Content::Retract(MessageId {
            origin: at.origin.to_string(),
            seq: at.seq,
        }),
    };
    let stored = api.writer.post(post).await?;
    Ok(proto::RetractResponse {
        retraction: Some(super::messaging::posted(&stored)),
        already: false,
    })
}

/// Each agency's state of the message at `at` in `channel` (this org's
/// too), who of its members acknowledged it, and whether it is overdue.
pub(super) fn receipts(
    api: &ApiContext,
    fed: &Federation,
    channel: &ChannelId,
    at: &Cursor,
) -> Result<proto::ReceiptsResponse, ApiError> {
    let store = &api.store;
    let Some(record) = store.channel(channel)? else {
        return Err(ApiError::NotFound(format!(
            "channel {channel} does not exist on this node"
        )));
    };
    let env = readable(api, channel, at)?;
    let ack = rules::post_of(&env).and_then(|p| p.ack);
    let due = ack.as_ref().map_or(0, |a| due(at.hlc, a));
    let shared_with = Removals::of(api, channel, &record).shared_with(&record, at.hlc);
    let expected = rules::expected_to_acknowledge(&shared_with, at.origin.as_str());
    let acks = store.acks(channel, &at.origin, at.seq)?;
    let retraction = store.retraction(channel, &at.origin, at.seq)?;
    let refusals = api.refusals.of(&record.id, &at.origin, at.seq);
    let now = unix_ms();
    let mut agencies = Vec::new();
    for org in shared_with {
        let Ok(id) = OrgId::parse(&org) else {
            continue;
        };
        let own = id == api.org;
        let link = fed.link_state(&id);
        let mut receipt = proto::AgencyReceipt {
            org: org.clone(),
            link: if own {
                "this node"
            } else {
                link.map_or("none", LinkState::as_str)
            }
            .to_owned(),
            acknowledged_by: acks
                .iter()
                .filter(|a| a.org == id && !(id == at.origin && a.member == env.author))
                .map(|a| proto::MemberAck {
                    member: a.member.clone(),
                    unix_ms: a.cursor.hlc.unix_ms(),
                })
                .collect(),
            ..Default::default()
        };
        receipt.overdue = ack.is_some()
            && expected.contains(&org)
            && rules::overdue(due, now, !receipt.acknowledged_by.is_empty());
        // This node, the agency's own messages, what its durable progress
        // on the link covers, and what one of its members acknowledged (its
        // org signed that, wherever it came through).
        let progress = store.cursor(&id, &record.id)?;
        let holds = |seq: u64| {
            own || id == at.origin || progress.get(&at.origin).is_some_and(|&s| s >= seq)
        };
        let held = holds(at.seq) || acks.iter().any(|a| a.org == id);
        receipt.retraction_applied = retraction.as_ref().is_some_and(|r| holds(r.cursor.seq));
        if held {
            receipt.state = "delivered".into();
            let first_ack = acks
                .iter()
                .filter(|a| a.org == id)
                .map(|a| a.cursor.hlc.unix_ms())
                .min();
            let seen = fed
                .deliveries
                .held_since(&id, &record.id, &at.origin, at.seq);
            receipt.delivered_unix_ms = if id == at.origin {
                at.hlc.unix_ms()
            } else {
                [seen, first_ack.unwrap_or(0)]
                    .into_iter()
                    .filter(|&t| t > 0)
                    .min()
                    .unwrap_or(0)
            };
        } else if let Some(r) = refusals.iter().find(|r| r.by == id) {
            receipt.state = "refused".into();
            receipt.reason = r.reason.clone();
            receipt.retrying = r.retrying;
        } else if !record.participants.iter().any(|p| p.org == org && p.active) {
            receipt.state = "removed".into();
        } else if link.is_none() {
            receipt.state = "not linked".into();
        } else if matches!(link, Some(LinkState::Connected)) && !store.stated(&id, &record.id)? {
            // Connected, and its node states nothing of the channel: it has
            // not taken it (its operator accepts it, where its policy asks).
            receipt.state = "offered".into();
        } else {
            receipt.state = "waiting".into();
            receipt.waiting_ms = now.saturating_sub(at.hlc.unix_ms());
        }
        agencies.push(receipt);
    }
    Ok(proto::ReceiptsResponse {
        agencies,
        ack_required: ack.is_some(),
        ack_deadline_unix_ms: due,
    })
}

/// The messages of `channels` whose acknowledgement deadline passed before
/// now without one from some expected agency: each with those agencies.
pub(super) fn overdue(
    api: &ApiContext,
    channels: &[ChannelId],
) -> Result<Vec<(Stored, Vec<String>)>, ApiError> {
    let now = unix_ms();
    let mut out = Vec::new();
    for channel in channels {
        // A channel that takes no acknowledgement any more has nothing to
        // chase; its receipts still say who was late.
        let Some(record) = api
            .store
            .channel(channel)?
            .filter(|r| Standing::of(r, now).takes_posts())
        else {
            continue;
        };
        let removals = Removals::of(api, channel, &record);
        for (due, origin, seq) in api.store.due_before(channel, now)? {
            let Some(env) = api.store.envelope(channel, &origin, seq)? else {
                continue;
            };
            let acked: HashSet<OrgId> = api
                .store
                .acks(channel, &origin, seq)?
                .into_iter()
                .filter(|a| !(a.org == origin && a.member == env.author))
                .map(|a| a.org)
                .collect();
            let shared_with = removals.shared_with(&record, Hlc(env.hlc));
            let late: Vec<String> = rules::expected_to_acknowledge(&shared_with, origin.as_str())
                .into_iter()
                .filter(|org| rules::overdue(due, now, acked.iter().any(|a| a.as_str() == org)))
                .collect();
            if !late.is_empty() {
                let cursor = Cursor {
                    hlc: Hlc(env.hlc),
                    origin,
                    seq,
                };
                out.push((
                    Stored {
                        cursor,
                        envelope: env,
                    },
                    late,
                ));
            }
        }
    }
    Ok(out)
}

/// Says in the log, once each, every message whose acknowledgement
/// deadline passed without one from some agency (target
/// `samband::overdue`), and keeps how many are overdue for `status`.
/// Reads the past-due deadlines of every channel each round (a few per
/// message that asks for acknowledgement with a deadline).
#[derive(Debug)]
pub(crate) struct OverdueWatch {
    api: std::sync::Arc<ApiContext>,
    /// The overdue messages said in the log: (channel, origin, seq).
    said: HashSet<(String, OrgId, u64)>,
    last: String,
}

/// How often deadlines are looked at.
const OVERDUE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl OverdueWatch {
    pub(crate) fn new(api: std::sync::Arc<ApiContext>) -> Self {
        Self {
            api,
            said: HashSet::new(),
            last: "not run yet".to_owned(),
        }
    }
}

impl crate::runtime::Worker for OverdueWatch {
    fn name(&self) -> String {
        "overdue watch".to_owned()
    }

    async fn work(&mut self) -> crate::runtime::WorkerState {
        let channels: Result<Vec<ChannelId>, ApiError> = self
            .api
            .store
            .channels()
            .map(|records| {
                records
                    .iter()
                    .filter_map(|r| ChannelId::parse(&r.id).ok())
                    .collect()
            })
            .map_err(ApiError::from);
        self.last = match channels.and_then(|channels| overdue(&self.api, &channels)) {
            Ok(late) => {
                let mut now_late = HashSet::new();
                for (stored, agencies) in &late {
                    let env = &stored.envelope;
                    let key = (
                        env.channel.clone(),
                        stored.cursor.origin.clone(),
                        env.origin_seq,
                    );
                    if !self.said.contains(&key) {
                        tracing::warn!(
                            target: "samband::overdue",
                            channel = %env.channel,
                            origin = %stored.cursor.origin,
                            seq = env.origin_seq,
                            author = %env.author,
                            agencies = %agencies.join(","),
                            "no acknowledgement from these agencies by the message's deadline"
                        );
                    }
                    now_late.insert(key);
                }
                self.said = now_late;
                format!("overdue now: {} messages", late.len())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the acknowledgement deadlines");
                format!("failed: {e}")
            }
        };
        crate::runtime::WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(OVERDUE_EVERY).await;
    }

    fn status(&self) -> String {
        self.last.clone()
    }
}
