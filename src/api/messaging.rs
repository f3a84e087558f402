//! `samband.v1.Messaging`: what members do.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ApiContext;
use super::ApiError;
use crate::engine::{Content, NewPost, Reply, Start, Subscription};
use crate::identity::{IdentityError, Member, MemberIdentity, Verified};
use crate::model::{ChannelId, ChannelName, Cursor, Priority, Role};
use crate::proto::{self, messaging_server};
use crate::rules::{OriginKey, Pinned};
use crate::store::{Page, Stored};

/// Default and largest page sizes of History.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;
/// Most bytes of messages in one History page: under the 4 MiB that stock
/// gRPC clients decode by default, with room for the rest of the answer.
/// A page that would be larger ends early with `more` set; it always holds
/// at least one message, which the body ceiling keeps under that limit too.
const MAX_PAGE_BYTES: usize = (4 << 20) - (64 << 10);
/// Posts one Publish stream may have in flight.
const PUBLISH_WINDOW: usize = 1024;
/// How often a WatchReceipts stream looks again.
const RECEIPTS_EVERY: Duration = Duration::from_millis(500);
/// Messages buffered per subscriber stream before it reads from the store instead.
const STREAM_BUFFER: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct Messaging {
    shared: Arc<ApiContext>,
    /// For receipts: the links' states and the peers' durable progress.
    fed: Arc<crate::federation::Federation>,
}

/// The keys this node pinned: its partners' (its own is known by name), for
/// telling members whose word each message's origin rests on.
fn pinned(shared: &ApiContext) -> Result<Pinned, ApiError> {
    Ok(Pinned::from_peers(&shared.store.peers()?))
}

/// Stored messages of `channel` as `me` sees them: the pinned keys and
/// the channel's record are read once for all of them.
pub(super) fn shown<'a>(
    api: &ApiContext,
    channel: &ChannelId,
    stored: impl IntoIterator<Item = &'a Stored>,
    me: &Member,
) -> Result<Vec<proto::Message>, ApiError> {
    let pinned = pinned(api)?;
    let record = api.store.channel(channel)?;
    let removals = record.as_ref().map_or_else(Default::default, |r| {
        super::acks::Removals::of(api, channel, r)
    });
    Ok(stored
        .into_iter()
        .map(|s| message(s, api, &pinned, record.as_ref(), &removals, me))
        .collect())
}

/// The wire form of a stored message; `pinned` says how its origin's key
/// is known, `record` (its channel's) whether it is an exercise's and with
/// `removals` who is asked to acknowledge it, `api` which partners refused
/// it.
fn message(
    stored: &Stored,
    api: &ApiContext,
    pinned: &Pinned,
    record: Option<&proto::ChannelRecord>,
    removals: &super::acks::Removals,
    me: &Member,
) -> proto::Message {
    let local = &api.org;
    let env = &stored.envelope;
    // A post with files is decoded once, for its text and its files.
    let post = crate::rules::post_of(env);
    let entry = super::incidents::entry_of_message(record, env);
    let (kind, text) = match proto::Kind::try_from(env.kind) {
        Ok(proto::Kind::Control) => ("roster", roster_text(env)),
        Ok(proto::Kind::Picture) => ("picture", picture_text(entry.as_ref())),
        Ok(proto::Kind::Post) => (
            "text",
            post.as_ref().map(|p| p.text.clone()).unwrap_or_default(),
        ),
        _ => ("text", String::from_utf8_lossy(&env.body).into_owned()),
    };
    let mut message = proto::Message {
        cursor: stored.cursor.encode(),
        channel: env.channel.clone(),
        origin: env.origin.clone(),
        origin_seq: env.origin_seq,
        author: env.author.clone(),
        hlc: env.hlc,
        unix_ms: stored.cursor.hlc.unix_ms(),
        priority: env.priority,
        text,
        kind: kind.to_owned(),
        origin_key: match pinned.origin_key(local, &env.origin) {
            OriginKey::Own => proto::OriginKey::Own,
            OriginKey::Pinned => proto::OriginKey::Pinned,
            OriginKey::VouchedByHome => proto::OriginKey::VouchedByHome,
        } as i32,
        withheld: env.withheld,
        attachments: super::files::shown(
            api,
            env,
            post.as_ref().map(|p| p.files.clone()).unwrap_or_default(),
        ),
        exercise: record
            .and_then(|r| r.incident.as_ref())
            .is_some_and(|i| i.exercise),
        cap: post
            .as_ref()
            .and_then(|p| p.cap.as_ref())
            .map(|c| proto::CapInfo {
                identifier: c.identifier.clone(),
                sender: c.sender.clone(),
                sent: c.sent.clone(),
                status: c.status.clone(),
                msg_type: c.msg_type.clone(),
                sha256: hex::encode(&c.sha256),
            }),
        entry,
        refused_by: api
            .refusals
            .of(&env.channel, &stored.cursor.origin, env.origin_seq)
            .into_iter()
            .map(|r| proto::PartnerRefusal {
                org: r.by.to_string(),
                reason: r.reason,
                retrying: r.retrying,
            })
            .collect(),
        ..Default::default()
    };
    super::acks::show(
        api,
        stored,
        post.as_ref(),
        record,
        removals,
        me,
        &mut message,
    );
    message
}

/// How a picture entry's message reads in a channel's history.
fn picture_text(entry: Option<&proto::PictureEntry>) -> String {
    match entry {
        Some(e) if e.removed => format!("removed {} from the picture", e.key),
        Some(e) if e.status.is_empty() => format!("picture: {} {}", e.kind, e.key),
        Some(e) => format!("picture: {} {} ({})", e.kind, e.key, e.status),
        None => String::new(),
    }
}

/// The answer to a durable post.
pub(super) fn posted(stored: &Stored) -> proto::PostResponse {
    proto::PostResponse {
        cursor: stored.cursor.encode(),
        origin: stored.envelope.origin.clone(),
        origin_seq: stored.envelope.origin_seq,
        hlc: stored.envelope.hlc,
    }
}

/// A roster change in words, e.g. "shared with rescue.example; removed: x.example".
fn roster_text(env: &proto::Envelope) -> String {
    let Ok(snapshot) = crate::rules::snapshot_of(env) else {
        return "sent a roster change that does not read".to_owned();
    };
    let roster = snapshot.participants;
    if let Some(incident) = &snapshot.incident {
        let exercise = if incident.exercise { "exercise " } else { "" };
        if incident.closed_unix_ms > 0 {
            return format!(
                "closed the {exercise}incident {}: read-only for every agency from here on",
                incident.name
            );
        }
        if env.origin_seq == 1 {
            let with: Vec<&str> = roster.iter().map(|p| p.org.as_str()).collect();
            return format!(
                "opened the {exercise}incident {} with {}",
                incident.name,
                with.join(", ")
            );
        }
    }
    let names = |active: bool| {
        roster
            .iter()
            .filter(|p| p.active == active)
            .map(|p| p.org.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (with, removed) = (names(true), names(false));
    let mut text = if with.is_empty() {
        "changed the roster: shared with nobody".to_owned()
    } else {
        format!("changed the roster: shared with {with}")
    };
    if !removed.is_empty() {
        text.push_str(&format!("; removed: {removed}"));
    }
    text
}

/// Where a channel stands for this node's members: the one decision
/// behind `Channel.state`, the incident's channel list and whether the
/// console offers a form to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Offered by its home, not accepted here yet.
    Offered,
    /// This org was removed from it (or the offer withdrawn).
    Removed,
    /// Its incident is closed or past its end.
    Over,
    /// Shared with at least one partner still in it.
    Shared,
    /// This org's own, shared with nobody.
    Internal,
}

impl Standing {
    /// The standing of the channel of `record` at `now_unix_ms`.
    pub(super) fn of(record: &proto::ChannelRecord, now_unix_ms: u64) -> Self {
        match proto::ChannelState::try_from(record.state) {
            Ok(proto::ChannelState::Pending) => Self::Offered,
            // Closing removes everyone: a partner's copy of a closed
            // incident is archived, and over is what happened to it.
            _ if crate::rules::is_over(record, now_unix_ms) => Self::Over,
            Ok(proto::ChannelState::Archived) => Self::Removed,
            _ if record.participants.iter().any(|p| p.active) => Self::Shared,
            _ => Self::Internal,
        }
    }

    /// The word members are told (`Channel.state`): "pending",
    /// "archived" (removed, or its incident over), "shared" or "internal".
    pub(super) fn word(self) -> &'static str {
        match self {
            Self::Offered => "pending",
            Self::Removed | Self::Over => "archived",
            Self::Shared => "shared",
            Self::Internal => "internal",
        }
    }

    /// Whether the channel takes posts and acknowledgements.
    pub(super) fn takes_posts(self) -> bool {
        self.read_only().is_none()
    }

    /// Why nothing can be posted to the channel, or `None` when it takes
    /// posts: what a member is told in place of a form.
    pub(super) fn read_only(self) -> Option<&'static str> {
        match self {
            Self::Offered => Some(
                "This channel is offered but not accepted yet: an operator accepts it on the Operations page.",
            ),
            Self::Removed => Some(
                "This channel is archived: this agency was removed from it, so it is read-only.",
            ),
            Self::Over => Some(
                "This incident is closed or past its end: its channel is read-only, with everything received kept.",
            ),
            Self::Shared | Self::Internal => None,
        }
    }
}

/// The wire form of a channel record.
pub(super) fn channel_message(record: proto::ChannelRecord) -> proto::Channel {
    let shared = !record.participants.is_empty();
    let now = crate::model::unix_ms();
    let incident = super::incidents::info(&record, now);
    let state = Standing::of(&record, now).word();
    let mut participants = Vec::new();
    if shared {
        participants.push(record.home.clone());
        participants.extend(
            record
                .participants
                .iter()
                .filter(|p| p.active)
                .map(|p| p.org.clone()),
        );
    }
    proto::Channel {
        id: record.id,
        home: record.home,
        name: record.name,
        shared,
        created_unix_ms: record.created_unix_ms,
        participants,
        state: state.to_owned(),
        incident,
    }
}

/// Refused (PERMISSION_DENIED) unless `member` has the admin role: `what`
/// ("creating a channel") names what needs it.
pub(super) fn admin_only(member: &Member, what: &str) -> Result<(), ApiError> {
    if member.role == Role::Admin {
        return Ok(());
    }
    Err(ApiError::PermissionDenied(format!(
        "{what} needs the admin role; {} is a member",
        member.name
    )))
}

/// The calling member, as the connection's handshake identified it, unless
/// its certificate was revoked or expired since.
pub(super) fn caller<T>(request: &Request<T>, shared: &ApiContext) -> Result<Member, ApiError> {
    identified(Verified::<MemberIdentity>::of(request), shared)
}

/// [`caller`], from the identity the connection's handshake gave (`None`:
/// the connection presented no certificate).
pub(super) fn identified(
    identity: Option<&MemberIdentity>,
    shared: &ApiContext,
) -> Result<Member, ApiError> {
    let member = identity.ok_or(IdentityError::NoCertificate)?.clone()?;
    if shared.revocations.is_revoked(&member) {
        return Err(revoked(&member));
    }
    if member.expired() {
        // The handshake checked validity; this connection outlived it.
        tracing::info!(member = %member.name, serial = %member.serial, "call with an expired certificate refused");
        return Err(ApiError::Unauthenticated(format!(
            "the certificate of {} expired; renew it (samband user add)",
            member.name
        )));
    }
    Ok(member)
}

fn revoked(member: &Member) -> ApiError {
    tracing::info!(member = %member.name, serial = %member.serial, "call with a revoked certificate refused");
    ApiError::Unauthenticated(format!(
        "the certificate of {} (serial {}) is revoked on this node",
        member.name, member.serial
    ))
}

fn cursor(s: &str) -> Result<Cursor, ApiError> {
    Ok(Cursor::decode(s)?)
}

type Outgoing = mpsc::Sender<Result<proto::Message, Status>>;

/// Feeds `subscription` into `tx` until the client leaves (`None`) or the
/// node ends the stream (the status to send): shutdown, revocation, a
/// store error, or a client that left its buffer unread too long.
async fn follow(
    shared: &ApiContext,
    member: &Member,
    subscription: &mut Subscription,
    tx: &Outgoing,
) -> Option<Status> {
    let stall = Duration::from_secs(shared.limits.subscriber_stall_seconds);
    let shutting_down = || Status::unavailable("the node is shutting down");
    loop {
        let next = tokio::select! {
            () = shared.runtime.shutdown().cancelled() => return Some(shutting_down()),
            () = shared.revocations.until_revoked(member) => return Some(revoked(member).into()),
            () = tx.closed() => return None,
            next = subscription.next() => next,
        };
        let batch = match next? {
            Ok(batch) => batch,
            Err(e) => return Some(ApiError::from(e).into()),
        };
        let shown = match shown(
            shared,
            subscription.channel(),
            batch.messages.iter().map(AsRef::as_ref),
            member,
        ) {
            Ok(shown) => shown,
            Err(e) => return Some(e.into()),
        };
        for mut message in shown {
            message.ahead = batch.ahead;
            tokio::select! {
                sent = tokio::time::timeout(stall, tx.send(Ok(message))) => match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => return Some(ApiError::ResourceExhausted(format!(
                        "this subscriber left its buffer ({STREAM_BUFFER} messages) unread for {}s \
                         (limits.subscriber_stall_seconds); subscribe again after the last cursor received",
                        stall.as_secs()
                    )).into()),
                },
                () = shared.runtime.shutdown().cancelled() => return Some(shutting_down()),
                () = shared.revocations.until_revoked(member) => return Some(revoked(member).into()),
            }
        }
    }
}

// === impl Messaging ===

impl Messaging {
    pub(crate) fn new(shared: Arc<ApiContext>, fed: Arc<crate::federation::Federation>) -> Self {
        Self { shared, fed }
    }

    /// A member's post, checked against this node's limits.
    fn new_post(&self, member: &Member, req: proto::PostRequest) -> Result<NewPost, ApiError> {
        new_post(&self.shared, member, req)
    }

    /// For a post with files: the sweep's shared lock, held until the post
    /// is durable, so that no file it references is swept meanwhile.
    async fn files_held(&self, req: &proto::PostRequest) -> Option<FilesHeld> {
        if req.attachments.is_empty() {
            return None;
        }
        Some(self.shared.store.files().posting().await)
    }

    fn member<T>(&self, request: &Request<T>) -> Result<Member, ApiError> {
        caller(request, &self.shared)
    }

    /// A channel this node holds, by `home/name` or (for this org) `name`.
    fn existing_channel(&self, given: &str) -> Result<ChannelId, ApiError> {
        existing_channel(&self.shared, given)
    }
}

/// A member's post, checked against this node's limits.
pub(super) fn new_post(
    shared: &ApiContext,
    member: &Member,
    req: proto::PostRequest,
) -> Result<NewPost, ApiError> {
    let channel = existing_channel(shared, &req.channel)?;
    let limit = shared.limits.max_body_bytes;
    if req.text.trim().is_empty() && req.attachments.is_empty() {
        return Err(ApiError::InvalidArgument(
            "message text is empty or only whitespace (and no file is attached)".into(),
        ));
    }
    if req.text.len() > limit {
        return Err(ApiError::InvalidArgument(format!(
            "message text is {} bytes; this node accepts at most {limit} (limits.max_body_bytes)",
            req.text.len()
        )));
    }
    let priority = Priority::from_i32(req.priority)
        .ok_or_else(|| ApiError::InvalidArgument(format!("unknown priority {}", req.priority)))?;
    if !shared.may_post(&member.name) {
        let l = &shared.limits;
        return Err(ApiError::ResourceExhausted(format!(
            "{} posts faster than this node allows a member ({} per second, {} at once: \
             limits.member_posts_per_second and limits.member_post_burst); retry shortly",
            member.name, l.member_posts_per_second, l.member_post_burst
        )));
    }
    let files = super::files::attachments(shared, member, &req.attachments)?;
    let body = proto::PostBody {
        reply_to: super::acks::reply_to(shared, &channel, &req.reply_to)?,
        ack: super::acks::ack_request(&req, priority)?,
        text: req.text,
        files,
        cap: None,
    };
    Ok(NewPost {
        channel,
        author: member.name.clone(),
        priority,
        content: Content::Message(body),
    })
}

/// Creates channel `name` of this org, as `member` (the caller checked
/// the role), audited as `channel.created`; ALREADY_EXISTS if it does.
pub(super) async fn create_channel(
    shared: &ApiContext,
    member: &Member,
    name: &str,
) -> Result<proto::ChannelRecord, ApiError> {
    let name = ChannelName::parse(name)?;
    let id = ChannelId::new(shared.org.clone(), name.clone());
    let record = proto::ChannelRecord {
        id: id.to_string(),
        home: shared.org.to_string(),
        name: name.to_string(),
        created_unix_ms: crate::model::unix_ms(),
        ..Default::default()
    };
    // In the writer, as every channel record is: decided against what an
    // incident opened in the same round makes, and durable with its entry.
    let actor = crate::audit::Actor::Member(member.name.to_string());
    let record = shared.writer.create(record, actor).await?;
    tracing::info!(channel = %id, by = %member.name, "channel created");
    Ok(record)
}

/// Posts `req` as `member` and returns it once durable: checked as
/// [`new_post`] says, its files kept from the sweep until then.
pub(super) async fn post(
    shared: &ApiContext,
    member: &Member,
    req: proto::PostRequest,
) -> Result<Arc<Stored>, ApiError> {
    post_carrying(shared, member, req, None).await
}

/// [`post`], for a message that carries the CAP alert `cap` (its XML
/// among `req`'s attachments).
pub(super) async fn post_carrying(
    shared: &ApiContext,
    member: &Member,
    req: proto::PostRequest,
    cap: Option<proto::CapAlert>,
) -> Result<Arc<Stored>, ApiError> {
    let _files = if req.attachments.is_empty() {
        None
    } else {
        Some(shared.store.files().posting().await)
    };
    let mut post = new_post(shared, member, req)?;
    if let crate::engine::Content::Message(body) = &mut post.content {
        body.cap = cap;
    }
    Ok(shared.writer.post(post).await?)
}

/// A channel this node holds, by `home/name` or (for this org) `name`.
pub(super) fn existing_channel(shared: &ApiContext, given: &str) -> Result<ChannelId, ApiError> {
    let id = ChannelId::parse_or_local(given, &shared.org)?;
    if shared.store.channel(&id)?.is_some() {
        return Ok(id);
    }
    // An incident's name, where a channel was meant: say where to post.
    let channels = super::incidents::channels_of_named(&shared.store.channels()?, &id);
    Err(ApiError::NotFound(match channels {
        Some(channels) => {
            format!("{id} is an incident, not a channel: use one of its channels ({channels})")
        }
        None => format!("channel {id} does not exist on this node"),
    }))
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<proto::Message, Status>> + Send>>;

/// Held by a post with files until it is durable ([`crate::store::Files::posting`]).
type FilesHeld = tokio::sync::OwnedRwLockReadGuard<()>;

#[tonic::async_trait]
impl messaging_server::Messaging for Messaging {
    async fn upload(
        &self,
        request: Request<Streaming<proto::UploadChunk>>,
    ) -> Result<Response<proto::UploadResponse>, Status> {
        let member = self.member(&request)?;
        let uploaded = super::files::upload(&self.shared, &member, request.into_inner()).await?;
        Ok(Response::new(uploaded))
    }

    async fn upload_status(
        &self,
        request: Request<proto::UploadStatusRequest>,
    ) -> Result<Response<proto::UploadStatusResponse>, Status> {
        let member = self.member(&request)?;
        let status = super::files::upload_status(&self.shared, &member, request.get_ref())?;
        Ok(Response::new(status))
    }

    type DownloadStream = super::files::DownloadStream;

    async fn download(
        &self,
        request: Request<proto::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let member = self.member(&request)?;
        let req = request.into_inner();
        let channel = self.existing_channel(&req.channel)?;
        let stream = super::files::download(&self.shared, &member, &channel, &req)?;
        Ok(Response::new(stream))
    }

    async fn receipts(
        &self,
        request: Request<proto::ReceiptsRequest>,
    ) -> Result<Response<proto::ReceiptsResponse>, Status> {
        self.member(&request)?;
        let req = request.into_inner();
        let channel = self.existing_channel(&req.channel)?;
        let at = cursor(&req.cursor)?;
        Ok(Response::new(super::acks::receipts(
            &self.shared,
            &self.fed,
            &channel,
            &at,
        )?))
    }

    type WatchReceiptsStream =
        Pin<Box<dyn Stream<Item = Result<proto::ReceiptsResponse, Status>> + Send>>;

    async fn watch_receipts(
        &self,
        request: Request<proto::ReceiptsRequest>,
    ) -> Result<Response<Self::WatchReceiptsStream>, Status> {
        let member = self.member(&request)?;
        let req = request.into_inner();
        let channel = self.existing_channel(&req.channel)?;
        let at = cursor(&req.cursor)?;
        let first = super::acks::receipts(&self.shared, &self.fed, &channel, &at)?;
        let (tx, rx) = mpsc::channel(4);
        let (shared, fed) = (self.shared.clone(), self.fed.clone());
        self.shared.runtime.spawn(async move {
            // Compared without the time waited, which changes every tick.
            let settled = |r: &proto::ReceiptsResponse| {
                let mut r = r.clone();
                r.agencies.iter_mut().for_each(|a| a.waiting_ms = 0);
                r
            };
            let mut last = settled(&first);
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = shared.runtime.shutdown().cancelled() => return,
                    () = shared.revocations.until_revoked(&member) => {
                        let _ = tx.send(Err(revoked(&member).into())).await;
                        return;
                    }
                    () = tokio::time::sleep(RECEIPTS_EVERY) => {}
                }
                match super::acks::receipts(&shared, &fed, &channel, &at) {
                    Ok(now) if settled(&now) != last => {
                        last = settled(&now);
                        if tx.send(Ok(now)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn acknowledge(
        &self,
        request: Request<proto::AcknowledgeRequest>,
    ) -> Result<Response<proto::AcknowledgeResponse>, Status> {
        let member = self.member(&request)?;
        let req = request.into_inner();
        let channel = self.existing_channel(&req.channel)?;
        if !self.shared.may_post(&member.name) {
            return Err(ApiError::ResourceExhausted(format!(
                "{} posts faster than this node allows a member \
                 (limits.member_posts_per_second); retry shortly",
                member.name
            ))
            .into());
        }
        let answer = super::acks::acknowledge(&self.shared, &member, channel, &req.cursor).await?;
        Ok(Response::new(answer))
    }

    async fn retract(
        &self,
        request: Request<proto::RetractRequest>,
    ) -> Result<Response<proto::RetractResponse>, Status> {
        let member = self.member(&request)?;
        let req = request.into_inner();
        let channel = self.existing_channel(&req.channel)?;
        let answer = super::acks::retract(&self.shared, &member, channel, &req.cursor).await?;
        Ok(Response::new(answer))
    }

    async fn overdue(
        &self,
        request: Request<proto::OverdueRequest>,
    ) -> Result<Response<proto::OverdueResponse>, Status> {
        let member = self.member(&request)?;
        let req = request.into_inner();
        let channels = if req.channel.is_empty() {
            self.shared
                .store
                .channels()
                .map_err(ApiError::from)?
                .iter()
                .filter_map(|r| ChannelId::parse(&r.id).ok())
                .collect()
        } else {
            vec![self.existing_channel(&req.channel)?]
        };
        let mut messages = Vec::new();
        for (stored, agencies) in super::acks::overdue(&self.shared, &channels)? {
            let channel = ChannelId::parse(&stored.envelope.channel).map_err(ApiError::from)?;
            messages.push(proto::OverdueMessage {
                message: shown(&self.shared, &channel, [&stored], &member)?.pop(),
                agencies,
            });
        }
        Ok(Response::new(proto::OverdueResponse { messages }))
    }

    async fn create_channel(
        &self,
        request: Request<proto::CreateChannelRequest>,
    ) -> Result<Response<proto::Channel>, Status> {
        let member = self.member(&request)?;
        admin_only(&member, "creating a channel")?;
        let record = create_channel(&self.shared, &member, &request.get_ref().name).await?;
        Ok(Response::new(channel_message(record)))
    }

    async fn list_channels(
        &self,
        request: Request<proto::ListChannelsRequest>,
    ) -> Result<Response<proto::ListChannelsResponse>, Status> {
        self.member(&request)?;
        let channels = self.shared.store.channels().map_err(ApiError::from)?;
        Ok(Response::new(proto::ListChannelsResponse {
            channels: channels.into_iter().map(channel_message).collect(),
        }))
    }

    async fn post(
        &self,
        request: Request<proto::PostRequest>,
    ) -> Result<Response<proto::PostResponse>, Status> {
        let member = self.member(&request)?;
        let stored = post(&self.shared, &member, request.into_inner()).await?;
        Ok(Response::new(posted(&stored)))
    }

    type PublishStream = Pin<Box<dyn Stream<Item = Result<proto::PublishAck, Status>> + Send>>;

    async fn publish(
        &self,
        request: Request<Streaming<proto::PostRequest>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        let member = self.member(&request)?;
        let mut posts = request.into_inner();
        let this = self.clone();
        // Posts go to the writer as they arrive; acks go back in order as
        // each one's batch is durable. The bounded queue between the two is
        // the stream's in-flight window.
        let (pending_tx, mut pending_rx) =
            mpsc::channel::<(u64, Result<Reply<Arc<Stored>>, ApiError>, Option<FilesHeld>)>(
                PUBLISH_WINDOW,
            );
        let (ack_tx, ack_rx) = mpsc::channel(PUBLISH_WINDOW);
        let (shared, publisher) = (self.shared.clone(), member.clone());
        self.shared.runtime.spawn(async move {
            let mut index = 0;
            loop {
                let next = tokio::select! {
                    biased;
                    // Revoked: read no more; the acks end with the reason.
                    () = this.shared.revocations.until_revoked(&member) => break,
                    next = posts.next() => next,
                };
                let Some(Ok(req)) = next else { break };
                let files = this.files_held(&req).await;
                let submitted = match this.new_post(&member, req) {
                    Ok(post) => this
                        .shared
                        .writer
                        .submit_post(post)
                        .await
                        .map_err(ApiError::from),
                    Err(e) => Err(e),
                };
                if pending_tx.send((index, submitted, files)).await.is_err() {
                    break;
                }
                index += 1;
            }
        });
        self.shared.runtime.spawn(async move {
            while let Some((index, submitted, files)) = pending_rx.recv().await {
                let outcome = match submitted {
                    Ok(pending) => pending.wait().await.map_err(ApiError::from),
                    Err(e) => Err(e),
                };
                drop(files);
                let outcome = match outcome {
                    Ok(stored) => proto::publish_ack::Outcome::Posted(posted(&stored)),
                    Err(e) => {
                        let status = Status::from(e);
                        proto::publish_ack::Outcome::Refused(proto::Refusal {
                            code: status.code() as i32,
                            message: status.message().to_owned(),
                        })
                    }
                };
                if ack_tx
                    .send(Ok(proto::PublishAck {
                        index,
                        outcome: Some(outcome),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if shared.revocations.is_revoked(&publisher) {
                let _ = ack_tx.send(Err(revoked(&publisher).into())).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(ack_rx))))
    }

    async fn history(
        &self,
        request: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let member = self.member(&request)?;
        let req = request.into_inner();
        let channel = self.existing_channel(&req.channel)?;
        let limit = match req.limit {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(ApiError::InvalidArgument(format!(
                    "limit {n} is above the maximum page of {MAX_PAGE}"
                ))
                .into());
            }
            n => n,
        };
        let page = match req.position {
            None => Page::Newest,
            Some(proto::history_request::Position::Before(c)) => Page::Before(cursor(&c)?),
            Some(proto::history_request::Position::After(c)) => Page::After(cursor(&c)?),
        };
        let (stored, more) = self
            .shared
            .store
            .history(&channel, &page, limit as usize, MAX_PAGE_BYTES)
            .map_err(ApiError::from)?;
        let messages = shown(&self.shared, &channel, &stored, &member)?;
        Ok(Response::new(proto::HistoryResponse { messages, more }))
    }

    type SubscribeStream = MessageStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let member = self.member(&request)?;
        let req = request.into_inner();
        let channel = self.existing_channel(&req.channel)?;
        let start = match req.start {
            None | Some(proto::subscribe_request::Start::FromBeginning(false)) => Start::Live,
            Some(proto::subscribe_request::Start::FromBeginning(true)) => Start::Beginning,
            Some(proto::subscribe_request::Start::After(c)) => Start::After(cursor(&c)?),
        };
        let Some(mut subscription) = self
            .shared
            .subscribe(&channel, start)
            .map_err(ApiError::from)?
        else {
            let limit = self.shared.limits.subscribers_per_channel;
            return Err(ApiError::ResourceExhausted(format!(
                "channel {channel} has {limit} live subscribers on this node, its limit (limits.subscribers_per_channel)"
            ))
            .into());
        };
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tracing::debug!(%channel, member = %member.name, "subscriber joined");
        self.shared.runtime.spawn(async move {
            // One slot is kept for the status that ends the stream, so that a
            // stalled client still learns why once it reads again.
            let Ok(last) = tx.clone().reserve_owned().await else {
                return;
            };
            if let Some(status) = follow(&shared, &member, &mut subscription, &tx).await {
                tracing::info!(%channel, member = %member.name, code = ?status.code(), reason = status.message(), "subscription ended by the node");
                last.send(Err(status));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let member = self.member(&request)?;
        let channels = self.shared.store.channels().map_err(ApiError::from)?;
        Ok(Response::new(proto::StatusResponse {
            org: self.shared.org.to_string(),
            member: member.name.to_string(),
            role: match member.role {
                Role::Member => proto::Role::Member,
                Role::Admin => proto::Role::Admin,
            } as i32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.shared.started.elapsed().as_secs(),
            channels: channels.len() as u32,
            workers: match member.role {
                Role::Admin => self
                    .shared
                    .runtime
                    .workers()
                    .into_iter()
                    .map(|w| proto::BackgroundWorker {
                        name: w.name,
                        state: w.state.as_str().to_owned(),
                        runs: w.runs,
                        status: w.status,
                    })
                    .collect(),
                Role::Member => Vec::new(),
            },
            certificate_not_after: time::OffsetDateTime::from_unix_timestamp(member.not_after)
                .map(crate::model::rfc3339)
                .unwrap_or_default(),
            certificates: match member.role {
                Role::Admin => self.shared.expiries().map_err(ApiError::from)?,
                Role::Member => Vec::new(),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::Standing;
    use crate::proto::{ChannelRecord, ChannelState, Incident, Participant};

    fn record(state: ChannelState, partner: bool, closed_unix_ms: u64) -> ChannelRecord {
        ChannelRecord {
            state: state as i32,
            participants: vec![Participant {
                org: "rescue.example".into(),
                active: partner,
                ..Default::default()
            }],
            incident: Some(Incident {
                name: "storm".into(),
                opened_unix_ms: 1_000,
                closed_unix_ms,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_word_shown_and_the_form_follow_one_standing() {
        let now = 10_000;
        for (record, standing, word, takes_posts) in [
            (
                record(ChannelState::Active, true, 0),
                Standing::Shared,
                "shared",
                true,
            ),
            (
                record(ChannelState::Active, false, 0),
                Standing::Internal,
                "internal",
                true,
            ),
            (
                record(ChannelState::Active, true, 5_000),
                Standing::Over,
                "archived",
                false,
            ),
            (
                record(ChannelState::Archived, true, 0),
                Standing::Removed,
                "archived",
                false,
            ),
            // A partner's copy of a closed incident: archived by the close.
            (
                record(ChannelState::Archived, false, 5_000),
                Standing::Over,
                "archived",
                false,
            ),
            // An offer of an incident closed meanwhile is still an offer:
            // told so, and what to do about it, not that it is closed.
            (
                record(ChannelState::Pending, true, 5_000),
                Standing::Offered,
                "pending",
                false,
            ),
        ] {
            let got = Standing::of(&record, now);
            assert_eq!(got, standing, "{record:?}");
            assert_eq!(got.word(), word, "{record:?}");
            assert_eq!(got.read_only().is_none(), takes_posts, "{record:?}");
        }
        assert!(
            Standing::Offered
                .read_only()
                .unwrap()
                .contains("Operations page"),
            "an offer says where it is accepted"
        );
    }
}
