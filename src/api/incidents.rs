//! `samband.v1.Incidents`: incidents (opened and closed by this org's
//! admins), their situational picture, and CAP 1.2 alerts in and out.
//!
//! An incident is run in one or more channels of its home (one named after
//! it unless others are given), opened and closed together in one writer
//! round; its state travels in the home's roster snapshots of each
//! (`rules::incident`), and this node shows the channels of one home's
//! incident as one ([`HeldIncident`]). A picture entry is a `Kind::Picture`
//! envelope of its owner in the incident's first channel, so containment,
//! signatures, relaying and catch-up are the channel's; the picture shown
//! is the fold `rules::picture` defines over the store's index of each
//! entry's latest statement.
//!
//! May use: `model`, `proto`, `rules`, `store`, `engine` (through
//! [`ApiContext`]).

use std::collections::HashSet;
use std::pin::Pin;

use prost::Message as _;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::messaging::caller;
use super::{ApiContext, ApiError};
use crate::audit::Actor;
use crate::engine::{Content, NewPost, RosterChange, Start};
use crate::federation::Federation;
use crate::identity::Member;
use crate::model::{ChannelId, Cursor, Hlc, Priority, unix_ms};
use crate::proto::{self, ChannelRecord, Incident, PictureBody, incidents_server};
use crate::rules::picture::{self, Picture, Stated};

#[derive(Debug)]
pub(crate) struct Incidents {
    shared: Arc<ApiContext>,
    fed: Arc<Federation>,
}

impl Incidents {
    pub(crate) fn new(shared: Arc<ApiContext>, fed: Arc<Federation>) -> Self {
        Self { shared, fed }
    }
}

/// One home's incident as this node holds it.
#[derive(Debug, Clone)]
pub(crate) struct HeldIncident {
    /// The record whose statement of the incident is shown: its first
    /// channel's where held here, else one of its held channels'.
    stated: ChannelRecord,
    /// Each of its channels, in the order its home stated them, with the
    /// channel's record where this node holds it.
    channels: Vec<(ChannelId, Option<ChannelRecord>)>,
}

impl HeldIncident {
    /// Its first channel, which carries its situational picture (and its
    /// imported CAP alerts); FAILED_PRECONDITION while this node does not
    /// hold it.
    pub(crate) fn picture_channel(&self) -> Result<(ChannelId, ChannelRecord), ApiError> {
        match self.channels.first() {
            Some((id, Some(record))) if record.state == proto::ChannelState::Pending as i32 => {
                Err(ApiError::FailedPrecondition(format!(
                    "the picture of this incident is kept in its first channel {id}, which is \
                     offered to this node but not accepted yet: accept it first \
                     (samband channel accept {id})"
                )))
            }
            Some((id, Some(record))) => Ok((id.clone(), record.clone())),
            Some((id, None)) => Err(ApiError::FailedPrecondition(format!(
                "the picture of this incident is kept in its first channel {id}, which has not \
                 been offered to this node (yet)"
            ))),
            None => Err(ApiError::Internal("an incident without channels".into())),
        }
    }

    /// Its channels this node holds, in order, with their records.
    pub(crate) fn held(&self) -> impl Iterator<Item = (&ChannelId, &ChannelRecord)> {
        self.channels
            .iter()
            .filter_map(|(id, r)| Some((id, r.as_ref()?)))
    }

    /// Its name, as its home stated it.
    fn name(&self) -> &str {
        self.stated
            .incident
            .as_ref()
            .map_or("", |i| i.name.as_str())
    }

    /// Whether it is `home`'s incident `name`.
    fn is(&self, home: &str, name: &str) -> bool {
        self.stated.home == home && self.name() == name
    }
}

/// `home`'s incident `name` among `records`' incidents.
fn find_incident(records: &[ChannelRecord], home: &str, name: &str) -> Option<HeldIncident> {
    incidents_among(records)
        .into_iter()
        .find(|h| h.is(home, name))
}

/// The incidents run in `records`' channels, each once with all of its
/// channels, in the order their first channel comes in `records`.
pub(crate) fn incidents_among(records: &[ChannelRecord]) -> Vec<HeldIncident> {
    let mut groups: Vec<Vec<&ChannelRecord>> = Vec::new();
    for record in records {
        let Some(incident) = &record.incident else {
            continue;
        };
        let same = |r: &&ChannelRecord| {
            r.home == record.home && r.incident.as_ref().is_some_and(|i| i.name == incident.name)
        };
        match groups.iter_mut().find(|g| g.first().is_some_and(same)) {
            Some(group) => group.push(record),
            None => groups.push(vec![record]),
        }
    }
    groups.into_iter().map(assemble).collect()
}

/// One home's incident from the records of its channels held here
/// (`group`, at least one, each stating it).
fn assemble(group: Vec<&ChannelRecord>) -> HeldIncident {
    // Every channel states the same incident; the picture's
    // channel is believed where they differ (a hostile home).
    let stated = group
        .iter()
        .find(|r| crate::rules::carries_picture(r))
        .unwrap_or(&group[0]);
    let incident = stated.incident.clone().unwrap_or_default();
    // Its home closes all of its channels at once, but a channel
    // offered and not accepted here keeps the statement of its
    // offer: closed once any of them says so.
    let closed_unix_ms = group
        .iter()
        .filter_map(|r| r.incident.as_ref())
        .map(|i| i.closed_unix_ms)
        .max()
        .unwrap_or(0);
    let mut stated = (*stated).clone();
    if let Some(i) = stated.incident.as_mut() {
        i.closed_unix_ms = i.closed_unix_ms.max(closed_unix_ms);
    }
    let mut channels: Vec<(ChannelId, Option<ChannelRecord>)> =
        crate::rules::channels_of(&incident)
            .into_iter()
            .filter_map(|name| ChannelId::parse(&format!("{}/{name}", stated.home)).ok())
            .map(|id| {
                let held = group.iter().find(|r| r.id == id.to_string());
                (id, held.map(|r| (*r).clone()))
            })
            .collect();
    // Nothing held is hidden, even a channel its statement leaves out.
    for r in &group {
        if !channels.iter().any(|(id, _)| id.to_string() == r.id)
            && let Ok(id) = ChannelId::parse(&r.id)
        {
            channels.push((id, Some((*r).clone())));
        }
    }
    HeldIncident { stated, channels }
}

/// The incident that `record`'s channel runs, if it runs one: its other
/// channels read by their ids, as its statement names them (no scan of
/// every channel).
fn incident_at(
    shared: &ApiContext,
    record: ChannelRecord,
) -> Result<Option<HeldIncident>, ApiError> {
    let Some(incident) = record.incident.clone() else {
        return Ok(None);
    };
    let mut group = Vec::new();
    for name in crate::rules::channels_of(&incident) {
        if name == record.name {
            continue;
        }
        let Ok(id) = ChannelId::parse(&format!("{}/{name}", record.home)) else {
            continue;
        };
        if let Some(other) = shared.store.channel(&id)?
            && other
                .incident
                .as_ref()
                .is_some_and(|i| i.name == incident.name)
        {
            group.push(other);
        }
    }
    let mut group: Vec<&ChannelRecord> = group.iter().collect();
    group.insert(0, &record);
    Ok(Some(assemble(group)))
}

/// What members see of the incident that `record`'s channel runs, at
/// `now_unix_ms`, if it runs one: its state and every agency that took
/// part (the home first; those removed when it closed included). Its
/// `channels` are left empty: they take the other channels' records
/// ([`held_info`]).
pub(super) fn info(record: &ChannelRecord, now_unix_ms: u64) -> Option<proto::IncidentInfo> {
    let incident = record.incident.as_ref()?;
    let participants = std::iter::once(record.home.clone())
        .chain(
            record
                .participants
                .iter()
                .filter(|p| p.active || p.removed_at >= record.roster_seq)
                .map(|p| p.org.clone()),
        )
        .collect();
    Some(proto::IncidentInfo {
        id: incident_id(record, incident),
        name: incident.name.clone(),
        home: record.home.clone(),
        state: crate::rules::incident_state(incident, now_unix_ms)
            .as_str()
            .to_owned(),
        exercise: incident.exercise,
        opened_unix_ms: incident.opened_unix_ms,
        until_unix_ms: incident.until_unix_ms,
        closed_unix_ms: incident.closed_unix_ms,
        participants,
        channels: Vec::new(),
    })
}

/// How members name `incident`, stated in `record`'s channel: `home/name`.
fn incident_id(record: &ChannelRecord, incident: &Incident) -> String {
    format!("{}/{}", record.home, incident.name)
}

/// What members see of `held` at `now_unix_ms`: [`info`], with each of
/// its channels and the state this node holds it in.
pub(crate) fn held_info(held: &HeldIncident, now_unix_ms: u64) -> proto::IncidentInfo {
    let mut info = info(&held.stated, now_unix_ms).unwrap_or_default();
    info.channels = held
        .channels
        .iter()
        .map(|(id, record)| proto::IncidentChannel {
            id: id.to_string(),
            state: record
                .as_ref()
                .map_or("not held", |r| {
                    super::messaging::Standing::of(r, now_unix_ms).word()
                })
                .to_owned(),
        })
        .collect();
    info
}

/// The incident `given` names, as this node holds it: by `home/name` or
/// (this org's) `name`, or by one of its channels.
pub(crate) fn held_incident(shared: &ApiContext, given: &str) -> Result<HeldIncident, ApiError> {
    let not_found = || {
        // Another agency's incident of that name, given without its home.
        let theirs: Vec<String> = if given.contains('/') {
            Vec::new()
        } else {
            let records = shared.store.channels().unwrap_or_default();
            let mut ids: Vec<String> = records
                .iter()
                .filter_map(|r| Some(incident_id(r, r.incident.as_ref()?)))
                .filter(|id| id.split_once('/').is_some_and(|(_, name)| name == given))
                .collect();
            ids.sort();
            ids.dedup();
            ids
        };
        let hint = match theirs.as_slice() {
            [] if given.contains('/') => String::new(),
            [] => "; another agency's incident is named home/name".to_owned(),
            ids => format!("; did you mean {}?", ids.join(" or ")),
        };
        ApiError::NotFound(format!(
            "no incident {given} on this node{hint} (samband incident list shows them)"
        ))
    };
    let id = ChannelId::parse_or_local(given, &shared.org).map_err(|_| not_found())?;
    // Most often a channel of it has that name (its only one, by default):
    // read by id. A name never means both a channel and another incident
    // (`Writer::check_incident_names`).
    if let Some(record) = shared.store.channel(&id)? {
        return incident_at(shared, record)?.ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
                "channel {id} runs no incident (samband incident list shows the incidents)"
            ))
        });
    }
    let records = shared.store.channels()?;
    find_incident(&records, id.home().as_str(), id.name().as_str()).ok_or_else(not_found)
}

/// The channels (`home/name`, comma-separated) of the incident that `id`
/// names among `records`' incidents, if it names one: to tell a person who
/// gave an incident where a channel was meant.
pub(super) fn channels_of_named(records: &[ChannelRecord], id: &ChannelId) -> Option<String> {
    let held = find_incident(records, id.home().as_str(), id.name().as_str())?;
    Some(
        held.channels
            .iter()
            .map(|(c, _)| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// [`held_incident`], named by its own name only (not by a channel): what
/// closing takes, so that a channel's name closes nothing by mistake.
fn incident_named(shared: &ApiContext, given: &str) -> Result<HeldIncident, ApiError> {
    let held = held_incident(shared, given)?;
    let name = held.name();
    let id = format!("{}/{name}", held.stated.home);
    if given == id || (given == name && held.stated.home == shared.org.as_str()) {
        return Ok(held);
    }
    Err(ApiError::FailedPrecondition(format!(
        "{given} is a channel of incident {id}: name the incident itself ({name})"
    )))
}

/// The incident that channel `id` runs, as this node holds it.
pub(crate) fn incident_of_channel(
    shared: &ApiContext,
    id: &ChannelId,
) -> Result<HeldIncident, ApiError> {
    let runs_none = || ApiError::FailedPrecondition(format!("channel {id} runs no incident"));
    let record = shared.store.channel(id)?.ok_or_else(runs_none)?;
    incident_at(shared, record)?.ok_or_else(runs_none)
}

/// The channels of this org (`home`) named `names` for a new incident:
/// INVALID_ARGUMENT unless each is a channel name, named once, and there
/// are at most [`crate::rules::MAX_INCIDENT_CHANNELS`].
fn incident_channels(
    home: &crate::model::OrgId,
    names: &[String],
) -> Result<Vec<ChannelId>, ApiError> {
    let most = crate::rules::MAX_INCIDENT_CHANNELS;
    if names.len() > most {
        return Err(ApiError::InvalidArgument(format!(
            "{} channels given; an incident runs in at most {most}",
            names.len()
        )));
    }
    let mut channels: Vec<ChannelId> = Vec::with_capacity(names.len());
    for name in names {
        let id = ChannelId::new(home.clone(), crate::model::ChannelName::parse(name)?);
        if channels.contains(&id) {
            return Err(ApiError::InvalidArgument(format!(
                "channel {name} is given twice"
            )));
        }
        channels.push(id);
    }
    Ok(channels)
}

/// The channel that carries the picture of the incident `given` names
/// ([`held_incident`]), and its record.
fn incident(shared: &ApiContext, given: &str) -> Result<(ChannelId, ChannelRecord), ApiError> {
    held_incident(shared, given)?.picture_channel()
}

/// The wire form of one statement of an entry.
fn entry_message(stated: &Stated, exercise: bool) -> proto::PictureEntry {
    let b = &stated.body;
    let cursor = crate::model::OrgId::parse(&stated.owner)
        .ok()
        .map(|origin| Cursor {
            hlc: Hlc(stated.hlc),
            origin,
            seq: stated.seq,
        });
    proto::PictureEntry {
        owner: stated.owner.clone(),
        key: b.key.clone(),
        kind: b.kind.clone(),
        status: b.status.clone(),
        geometry: b.geometry.clone(),
        fields: b.fields.clone(),
        author: stated.author.clone(),
        unix_ms: Hlc(stated.hlc).unix_ms(),
        removed: b.removed,
        exercise,
        cursor: cursor.map(|c| c.encode()).unwrap_or_default(),
    }
}

/// The picture of the incident in `channel`, as the store's index holds it.
pub(super) fn picture_of(shared: &ApiContext, channel: &ChannelId) -> Result<Picture, ApiError> {
    let records = shared.store.picture(channel)?;
    Ok(Picture::fold(records.into_iter().filter_map(|r| {
        Some(Stated {
            owner: r.owner.to_string(),
            seq: r.seq,
            hlc: r.hlc,
            author: r.author,
            body: PictureBody::decode(r.body.as_slice()).ok()?,
        })
    })))
}

/// The statement an envelope makes, if it is a picture entry.
pub(super) fn stated(env: &proto::Envelope) -> Option<Stated> {
    Some(Stated {
        owner: env.origin.clone(),
        seq: env.origin_seq,
        hlc: env.hlc,
        author: env.author.clone(),
        body: picture::entry_of(env)?,
    })
}

/// A member's message `env` of an incident's channel, as members see its
/// picture entry.
pub(super) fn entry_of_message(
    record: Option<&ChannelRecord>,
    env: &proto::Envelope,
) -> Option<proto::PictureEntry> {
    let exercise = record
        .and_then(|r| r.incident.as_ref())
        .is_some_and(|i| i.exercise);
    stated(env).map(|s| entry_message(&s, exercise))
}

/// Sets (or removes) entry `body.key` of this org as `member`, in the
/// incident of `record`.
async fn state_entry(
    shared: &ApiContext,
    member: &Member,
    channel: ChannelId,
    record: &ChannelRecord,
    body: PictureBody,
) -> Result<proto::PictureEntry, ApiError> {
    picture::check_entry(&body).map_err(ApiError::InvalidArgument)?;
    let post = NewPost {
        channel: channel.clone(),
        author: member.name.clone(),
        priority: Priority::Normal,
        content: Content::Picture(body),
    };
    let stored = shared.writer.post(post).await?;
    let exercise = record.incident.as_ref().is_some_and(|i| i.exercise);
    let stated = stated(&stored.envelope)
        .ok_or_else(|| ApiError::Internal("the stored entry does not read back".into()))?;
    Ok(entry_message(&stated, exercise))
}

/// The geometry as it is signed: checked, and only the geometry itself
/// (no `bbox`, no `crs` or other foreign members, which RFC 7946 does not
/// give a meaning), in the `geojson` crate's form.
fn canonical_geometry(given: &str) -> Result<String, ApiError> {
    if given.is_empty() {
        return Ok(String::new());
    }
    let checked = picture::check_geometry(given).map_err(ApiError::InvalidArgument)?;
    Ok(geojson::Geometry::new(checked.value).to_string())
}

/// Refused unless `owner` (if given) is this org: only an entry's owner
/// changes it; others comment in the channel.
fn own_entry(shared: &ApiContext, owner: &str, key: &str) -> Result<(), ApiError> {
    if owner.is_empty() || owner == shared.org.as_str() {
        return Ok(());
    }
    Err(ApiError::PermissionDenied(format!(
        "entry {key} belongs to {owner}: only its owner changes or removes it; \
         post a message in the incident's channel to comment on it"
    )))
}

type PictureStream = Pin<Box<dyn Stream<Item = Result<proto::PictureUpdate, Status>> + Send>>;

impl Incidents {
    fn operator<T>(&self, request: &Request<T>) -> Result<(Member, Actor), ApiError> {
        let member = caller(request, &self.shared)?;
        super::messaging::admin_only(&member, "opening and closing incidents")?;
        let actor = Actor::Member(member.name.to_string());
        Ok((member, actor))
    }

    /// This org's incident `name` as it stands now.
    fn info_now(&self, name: &str) -> Result<proto::IncidentInfo, ApiError> {
        Ok(held_info(&held_incident(&self.shared, name)?, unix_ms()))
    }
}

/// Closes this org's incident `given` (its own name, or home/name) for
/// `actor` (an admin: the caller checks), all its channels in one writer
/// round, and tells the partners: every participant's copy becomes
/// read-only. PERMISSION_DENIED for another org's incident,
/// FAILED_PRECONDITION when it is closed already.
pub(crate) async fn close(
    shared: &ApiContext,
    fed: &Federation,
    actor: Actor,
    given: &str,
) -> Result<proto::IncidentInfo, ApiError> {
    let held = incident_named(shared, given)?;
    let name = held.name().to_owned();
    if held.stated.home != shared.org.as_str() {
        return Err(ApiError::PermissionDenied(format!(
            "incident {}/{name} is run by {}; only its home closes it",
            held.stated.home, held.stated.home
        )));
    }
    let channels: Vec<ChannelId> = held.held().map(|(id, _)| id.clone()).collect();
    let change = RosterChange::CloseIncident {
        at_unix_ms: unix_ms(),
    };
    shared
        .writer
        .rosters(channels, change, actor)
        .await
        .map_err(|e| match e {
            crate::engine::WriteError::AlreadyClosed(_) => {
                ApiError::FailedPrecondition(format!("incident {name} is closed already"))
            }
            other => other.into(),
        })?;
    fed.rehello();
    tracing::info!(incident = %name, "incident closed");
    Ok(held_info(&held_incident(shared, &name)?, unix_ms()))
}

#[tonic::async_trait]
impl incidents_server::Incidents for Incidents {
    async fn open_incident(
        &self,
        request: Request<proto::OpenIncidentRequest>,
    ) -> Result<Response<proto::IncidentInfo>, Status> {
        let (member, actor) = self.operator(&request)?;
        let req = request.into_inner();
        let now = unix_ms();
        if req.until_unix_ms > 0 && req.until_unix_ms <= now {
            return Err(ApiError::InvalidArgument(format!(
                "until {} lies in the past (now is {}); give a time ahead, or none",
                crate::model::rfc3339_ms(req.until_unix_ms),
                crate::model::rfc3339_ms(now)
            ))
            .into());
        }
        // Ten years: an incident that must outlive that is closed by hand.
        const LONGEST_MS: u64 = 10 * 366 * 24 * 3_600_000;
        if req.until_unix_ms > now.saturating_add(LONGEST_MS) {
            return Err(ApiError::InvalidArgument(format!(
                "until {} lies more than ten years ahead; give a nearer end, or none (close it by hand)",
                match crate::model::rfc3339_ms(req.until_unix_ms) {
                    shown if shown.is_empty() => format!("{} ms after 1970", req.until_unix_ms),
                    shown => shown,
                }
            ))
            .into());
        }
        let orgs = super::admin::partners(&self.shared, &req.with)?;
        crate::model::ChannelName::parse(&req.name).map_err(|e| {
            ApiError::InvalidArgument(format!(
                "incident name {:?} is not valid: {}",
                req.name,
                e.reason()
            ))
        })?;
        let names = if req.channels.is_empty() {
            vec![req.name.clone()]
        } else {
            req.channels.clone()
        };
        let channels = incident_channels(&self.shared.org, &names)?;
        let incident = Incident {
            name: req.name.clone(),
            exercise: req.exercise,
            opened_unix_ms: now,
            until_unix_ms: req.until_unix_ms,
            closed_unix_ms: 0,
            channels: req.channels.clone(),
        };
        let change = RosterChange::OpenIncident { orgs, incident };
        let records = self
            .shared
            .writer
            .rosters(channels, change, actor)
            .await
            .map_err(ApiError::from)?;
        self.fed.rehello();
        tracing::info!(incident = %req.name, channels = records.len(), exercise = req.exercise, with = ?req.with, by = %member.name, "incident opened");
        Ok(Response::new(self.info_now(&req.name)?))
    }

    async fn close_incident(
        &self,
        request: Request<proto::CloseIncidentRequest>,
    ) -> Result<Response<proto::IncidentInfo>, Status> {
        let (_, actor) = self.operator(&request)?;
        let given = &request.get_ref().incident;
        Ok(Response::new(
            close(&self.shared, &self.fed, actor, given).await?,
        ))
    }

    async fn list_incidents(
        &self,
        request: Request<proto::ListIncidentsRequest>,
    ) -> Result<Response<proto::ListIncidentsResponse>, Status> {
        caller(&request, &self.shared)?;
        let now = unix_ms();
        let records = self.shared.store.channels().map_err(ApiError::from)?;
        let incidents = incidents_among(&records)
            .iter()
            .map(|held| held_info(held, now))
            .collect();
        Ok(Response::new(proto::ListIncidentsResponse { incidents }))
    }

    async fn picture(
        &self,
        request: Request<proto::PictureRequest>,
    ) -> Result<Response<proto::PictureResponse>, Status> {
        caller(&request, &self.shared)?;
        let (channel, record) = incident(&self.shared, &request.get_ref().incident)?;
        Ok(Response::new(snapshot(&self.shared, &channel, &record)?))
    }

    type WatchPictureStream = PictureStream;

    async fn watch_picture(
        &self,
        request: Request<proto::PictureRequest>,
    ) -> Result<Response<Self::WatchPictureStream>, Status> {
        let member = caller(&request, &self.shared)?;
        let (channel, record) = incident(&self.shared, &request.get_ref().incident)?;
        // Subscribed before the snapshot is read: a change in between is
        // sent twice, never missed.
        let Some(mut subscription) = self
            .shared
            .subscribe(&channel, Start::Live)
            .map_err(ApiError::from)?
        else {
            return Err(ApiError::ResourceExhausted(
                "this channel has as many live readers as the node allows".into(),
            )
            .into());
        };
        let first = snapshot(&self.shared, &channel, &record)?;
        let exercise = first.exercise;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            let update = |u| Ok(proto::PictureUpdate { update: Some(u) });
            if tx
                .send(update(proto::picture_update::Update::Snapshot(first)))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let next = tokio::select! {
                    () = tx.closed() => return,
                    () = shared.runtime.shutdown().cancelled() => return,
                    () = shared.revocations.until_revoked(&member) => return,
                    next = subscription.next() => next,
                };
                let Some(Ok(delivery)) = next else { return };
                for stored in &delivery.messages {
                    let Some(s) = stated(&stored.envelope) else {
                        continue;
                    };
                    let changed = entry_message(&s, exercise);
                    let sent = tx
                        .send(update(proto::picture_update::Update::Changed(changed)))
                        .await;
                    if sent.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn set_entry(
        &self,
        request: Request<proto::SetEntryRequest>,
    ) -> Result<Response<proto::PictureEntry>, Status> {
        let member = caller(&request, &self.shared)?;
        let req = request.into_inner();
        own_entry(&self.shared, &req.owner, &req.key)?;
        let (channel, record) = incident(&self.shared, &req.incident)?;
        let body = PictureBody {
            key: req.key,
            kind: req.kind,
            status: req.status,
            geometry: canonical_geometry(&req.geometry)?,
            fields: req.fields,
            removed: false,
        };
        Ok(Response::new(
            state_entry(&self.shared, &member, channel, &record, body).await?,
        ))
    }

    async fn remove_entry(
        &self,
        request: Request<proto::RemoveEntryRequest>,
    ) -> Result<Response<proto::PictureEntry>, Status> {
        let member = caller(&request, &self.shared)?;
        let req = request.into_inner();
        own_entry(&self.shared, &req.owner, &req.key)?;
        let (channel, record) = incident(&self.shared, &req.incident)?;
        let held = self
            .shared
            .store
            .picture_entry(&channel, &self.shared.org, &req.key)
            .map_err(ApiError::from)?
            .and_then(|r| PictureBody::decode(r.body.as_slice()).ok())
            .filter(|body| !body.removed);
        let Some(held) = held else {
            return Err(ApiError::NotFound(format!(
                "{} has no entry {} in the picture of incident {}",
                self.shared.org,
                req.key,
                record
                    .incident
                    .as_ref()
                    .map_or(channel.to_string(), |i| incident_id(&record, i))
            ))
            .into());
        };
        let body = PictureBody {
            key: req.key,
            kind: held.kind,
            removed: true,
            ..Default::default()
        };
        Ok(Response::new(
            state_entry(&self.shared, &member, channel, &record, body).await?,
        ))
    }

    async fn import_cap(
        &self,
        request: Request<proto::ImportCapRequest>,
    ) -> Result<Response<proto::ImportCapResponse>, Status> {
        let member = caller(&request, &self.shared)?;
        let req = request.into_inner();
        let (channel, record) = incident(&self.shared, &req.incident)?;
        Ok(Response::new(
            import(&self.shared, &member, channel, &record, &req.alert).await?,
        ))
    }

    async fn export_cap(
        &self,
        request: Request<proto::ExportCapRequest>,
    ) -> Result<Response<proto::ExportCapResponse>, Status> {
        caller(&request, &self.shared)?;
        let held = held_incident(&self.shared, &request.get_ref().incident)?;
        let id = held_info(&held, unix_ms()).id;
        let channels: Vec<(ChannelId, ChannelRecord)> = held
            .held()
            .filter(|(_, record)| record.state != proto::ChannelState::Pending as i32)
            .map(|(id, record)| (id.clone(), record.clone()))
            .collect();
        if channels.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "this node holds none of incident {id}'s channels yet: accept them first \
                 (samband channel accept CHANNEL; samband incident show {id} lists them)"
            ))
            .into());
        }
        let shared = self.shared.clone();
        let alerts = tokio::task::spawn_blocking(move || export(&shared, &channels))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(Response::new(proto::ExportCapResponse {
            alerts,
            incident: id,
        }))
    }
}

/// The picture now: every entry that stands.
fn snapshot(
    shared: &ApiContext,
    channel: &ChannelId,
    record: &ChannelRecord,
) -> Result<proto::PictureResponse, ApiError> {
    let exercise = record.incident.as_ref().is_some_and(|i| i.exercise);
    let picture = picture_of(shared, channel)?;
    Ok(proto::PictureResponse {
        entries: picture
            .standing()
            .map(|s| entry_message(s, exercise))
            .collect(),
        exercise,
    })
}

impl From<crate::cap::CapError> for ApiError {
    fn from(e: crate::cap::CapError) -> Self {
        match e {
            crate::cap::CapError::WrongStatus { .. } => ApiError::FailedPrecondition(e.to_string()),
            crate::cap::CapError::TooLarge { .. } => ApiError::ResourceExhausted(e.to_string()),
            _ => ApiError::InvalidArgument(e.to_string()),
        }
    }
}

/// Stores `bytes` as an upload of `member` (as `Messaging.Upload` would),
/// and names it for a post.
async fn upload_bytes(
    shared: &ApiContext,
    member: &Member,
    name: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> Result<proto::AttachmentRef, ApiError> {
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    let announced = super::files::Announced {
        sha256: sha256.clone(),
        size: bytes.len() as u64,
        offset: 0,
    };
    let mut chunks: Vec<Vec<u8>> = bytes
        .chunks(crate::model::CHUNK_BYTES)
        .map(<[u8]>::to_vec)
        .collect();
    let first = if chunks.is_empty() {
        Vec::new()
    } else {
        chunks.remove(0)
    };
    let rest = tokio_stream::iter(chunks.into_iter().map(Ok));
    super::files::receive_file(shared, member, announced, first, Box::pin(rest)).await?;
    Ok(proto::AttachmentRef {
        sha256,
        name: name.to_owned(),
        media_type: media_type.to_owned(),
    })
}

/// A file name for an alert's XML: its identifier, kept to file-name
/// characters.
fn alert_file_name(identifier: &str) -> String {
    format!("{}.cap.xml", crate::cap::file_name(identifier))
}

/// ImportCap: the alert as a message of the incident's channel carrying
/// its XML (as it came) and its embedded resources as files, and its
/// areas as this org's picture entries; an Update or Cancel first removes
/// the entries of the alerts it references.
async fn import(
    shared: &ApiContext,
    member: &Member,
    channel: ChannelId,
    record: &ChannelRecord,
    xml: &str,
) -> Result<proto::ImportCapResponse, ApiError> {
    use oasiscap::v1dot2::{MessageType, Severity, Urgency};
    let alert = crate::cap::parse(xml)?;
    let exercise = record.incident.as_ref().is_some_and(|i| i.exercise);
    crate::cap::check_status(&alert.status, exercise)?;
    if let Some(at) = imported_already(shared, &channel, &alert)? {
        return Err(ApiError::AlreadyExists(format!(
            "alert {} of {} was imported into {channel} by this agency already (as {}#{}); \
             an agency imports an alert once",
            alert.identifier, alert.sender, at.origin, at.seq
        )));
    }
    if crate::rules::is_over(record, unix_ms()) {
        return Err(ApiError::FailedPrecondition(format!(
            "incident {channel} is closed or past its end: nothing new goes into it"
        )));
    }
    let mut attachments = vec![
        upload_bytes(
            shared,
            member,
            &alert_file_name(alert.identifier.as_str()),
            "application/xml",
            xml.as_bytes().to_vec(),
        )
        .await?,
    ];
    let xml_sha256 = hex::decode(&attachments[0].sha256).unwrap_or_default();
    for e in crate::cap::embedded(&alert) {
        attachments.push(upload_bytes(shared, member, &e.name, &e.media_type, e.bytes).await?);
    }
    let attached: Vec<String> = attachments[1..].iter().map(|a| a.name.clone()).collect();
    let info = alert.info.first();
    let what = info
        .and_then(|i| i.headline.clone())
        .or_else(|| info.map(|i| i.event.clone()))
        .unwrap_or_default();
    let msg_type = crate::cap::msg_type_word(&alert.message_type);
    let priority = match info.map(|i| (&i.urgency, &i.severity)) {
        Some((Urgency::Immediate, Severity::Extreme | Severity::Severe)) => Priority::Flash,
        Some((Urgency::Immediate, _)) => Priority::Urgent,
        _ => Priority::Normal,
    };
    let req = proto::PostRequest {
        channel: channel.to_string(),
        text: format!("CAP {msg_type} from {}: {what}", alert.sender),
        priority: priority as i32,
        attachments,
        ..Default::default()
    };
    let cap = proto::CapAlert {
        identifier: alert.identifier.to_string(),
        sender: alert.sender.to_string(),
        sent: alert.sent.to_string(),
        status: crate::cap::status_word(&alert.status).to_owned(),
        msg_type: msg_type.to_owned(),
        sha256: xml_sha256,
    };
    let stored = super::messaging::post_carrying(shared, member, req, Some(cap)).await?;
    // What it replaces or cancels goes first, then what it states.
    let mut removed = Vec::new();
    if matches!(
        alert.message_type,
        MessageType::Update | MessageType::Cancel
    ) {
        let prefixes = crate::cap::referenced(&alert);
        let picture = picture_of(shared, &channel)?;
        let own: Vec<String> = picture
            .standing()
            .filter(|s| s.owner == shared.org.as_str())
            .filter(|s| prefixes.iter().any(|p| s.body.key.starts_with(p.as_str())))
            .map(|s| s.body.key.clone())
            .collect();
        for key in own {
            let body = PictureBody {
                key: key.clone(),
                kind: "area".into(),
                removed: true,
                ..Default::default()
            };
            state_entry(shared, member, channel.clone(), record, body).await?;
            removed.push(key);
        }
    }
    let mut entries = Vec::new();
    if !matches!(alert.message_type, MessageType::Cancel) {
        for body in crate::cap::entries(&alert) {
            let key = body.key.clone();
            state_entry(shared, member, channel.clone(), record, body).await?;
            entries.push(key);
        }
    }
    tracing::info!(%channel, identifier = %alert.identifier, msg_type, "CAP alert imported");
    Ok(proto::ImportCapResponse {
        cursor: stored.cursor.encode(),
        channel: channel.to_string(),
        entries,
        removed,
        attachments: attached,
    })
}

/// The messages of `channel` that carry a CAP alert, oldest first.
fn alert_messages(
    shared: &ApiContext,
    channel: &ChannelId,
) -> Result<Vec<(crate::store::Stored, proto::CapAlert)>, ApiError> {
    let mut out = Vec::new();
    each_message(shared, channel, |s| {
        if let Some(cap) = crate::rules::post_of(&s.envelope).and_then(|p| p.cap) {
            out.push((s.clone(), cap));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Where this org imported `alert` (by sender and identifier, CAP 1.2
/// §3.2.1) into `channel` before, if it did. Each agency imports an alert
/// once: its areas become that agency's entries, and only its own import
/// of an Update or Cancel changes them.
fn imported_already(
    shared: &ApiContext,
    channel: &ChannelId,
    alert: &oasiscap::v1dot2::Alert,
) -> Result<Option<crate::proto::MessageId>, ApiError> {
    Ok(alert_messages(shared, channel)?
        .into_iter()
        .find(|(s, cap)| {
            s.envelope.origin == shared.org.as_str()
                && cap.sender == alert.sender.as_str()
                && cap.identifier == alert.identifier.as_str()
        })
        .map(|(s, _)| crate::proto::MessageId {
            origin: s.envelope.origin,
            seq: s.envelope.origin_seq,
        }))
}

/// ExportCap: every imported alert held here in the incident's
/// `channels`, byte for byte as it came (a signature in it still
/// verifies), and every other message as an alert of its origin org,
/// oldest first (by hlc) across the channels.
fn export(
    shared: &ApiContext,
    channels: &[(ChannelId, ChannelRecord)],
) -> Result<Vec<proto::ExportedAlert>, ApiError> {
    let mut out = Vec::new();
    // An alert several agencies imported is exported once.
    let mut imported = HashSet::new();
    for (channel, record) in channels {
        let incident = record.incident.clone().unwrap_or_default();
        each_message(shared, channel, |s| {
            if let Some(alert) = exported(shared, channel, &incident, s)?
                && (!alert.imported
                    || imported.insert((alert.sender.clone(), alert.identifier.clone())))
            {
                out.push((s.envelope.hlc, alert));
            }
            Ok(())
        })?;
    }
    // Stable: within a channel, its order stands.
    out.sort_by_key(|(hlc, _)| *hlc);
    Ok(out.into_iter().map(|(_, alert)| alert).collect())
}

/// One message as the export gives it: an imported alert as it came, any
/// other message as an alert of its origin org, or nothing (not a
/// member's text, retracted, or an alert not held here).
fn exported(
    shared: &ApiContext,
    channel: &ChannelId,
    incident: &Incident,
    s: &crate::store::Stored,
) -> Result<Option<proto::ExportedAlert>, ApiError> {
    let env = &s.envelope;
    let post = crate::rules::post_of(env);
    if let Some(cap) = post.as_ref().and_then(|p| p.cap.as_ref()) {
        let Some(hash) = crate::model::FileHash::from_bytes(&cap.sha256) else {
            return Ok(None);
        };
        let Some(size) = shared.store.files().held(&hash) else {
            tracing::warn!(%channel, identifier = %cap.identifier, "the alert's XML has not arrived here yet; left out of the export");
            return Ok(None);
        };
        let bytes = shared
            .store
            .read_file(&hash, 0, size as usize)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // A partner's post may name any of its files as the alert:
        // what does not read as CAP 1.2 is left out, not sent on.
        let Some(xml) = String::from_utf8(bytes)
            .ok()
            .filter(|xml| crate::cap::parse(xml).is_ok())
        else {
            tracing::warn!(%channel, origin = %env.origin, seq = env.origin_seq, "a message's CAP alert does not read as CAP 1.2; left out of the export");
            return Ok(None);
        };
        return Ok(Some(proto::ExportedAlert {
            identifier: cap.identifier.clone(),
            sender: cap.sender.clone(),
            xml,
            imported: true,
        }));
    }
    let text = match proto::Kind::try_from(env.kind) {
        Ok(proto::Kind::Text) if !env.withheld => String::from_utf8_lossy(&env.body).into_owned(),
        Ok(proto::Kind::Post) => match &post {
            Some(p) if !p.text.is_empty() => p.text.clone(),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    // Unique per sender: the channel (its home and name) and the
    // message's place in its origin's chain.
    let identifier = format!("{channel}/{}", env.origin_seq);
    let author = format!("{}@{}", env.author, env.origin);
    let urgency = match Priority::from_i32(env.priority) {
        Some(Priority::Flash) => oasiscap::v1dot2::Urgency::Immediate,
        Some(Priority::Urgent) => oasiscap::v1dot2::Urgency::Expected,
        _ => oasiscap::v1dot2::Urgency::Unknown,
    };
    let xml = crate::cap::message_alert(&crate::cap::AsAlert {
        identifier: &identifier,
        sender: &env.origin,
        sent_unix_ms: Hlc(env.hlc).unix_ms(),
        exercise: incident.exercise,
        incident: &incident.name,
        channel: &channel.to_string(),
        author: &author,
        text: &text,
        urgency,
    })?;
    Ok(Some(proto::ExportedAlert {
        identifier,
        sender: env.origin.clone(),
        xml,
        imported: false,
    }))
}

/// Calls `each` with every message of `channel`, oldest first, a page at a
/// time.
fn each_message(
    shared: &ApiContext,
    channel: &ChannelId,
    mut each: impl FnMut(&crate::store::Stored) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    use crate::store::Page;
    let mut page = Page::Beginning;
    loop {
        let (stored, more) = shared.store.history(channel, &page, 500, 4 << 20)?;
        for s in &stored {
            each(s)?;
        }
        match (more, stored.last()) {
            (true, Some(last)) => page = Page::After(last.cursor.clone()),
            _ => return Ok(()),
        }
    }
}
