//! `samband.v1.Incidents`: incidents (opened and closed by this org's
//! admins), their situational picture, and CAP 1.2 alerts in and out.
//!
//! An incident is run in a channel of its home named after it; its state
//! travels in the home's roster snapshots (`rules::incident`). A picture
//! entry is a `Kind::Picture` envelope of its owner in that channel, so
//! containment, signatures, relaying and catch-up are the channel's; the
//! picture shown is the fold `rules::picture` defines over the store's
//! index of each entry's latest statement.
//!
//! May use: `model`, `proto`, `rules`, `store`, `engine` (through
//! [`ApiContext`]).

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::messaging::{caller, existing_channel};
use super::{ApiContext, ApiError};
use crate::audit::Actor;
use crate::engine::{Content, NewPost, RosterChange, Start};
use crate::federation::Federation;
use crate::identity::Member;
use crate::model::{ChannelId, Cursor, Hlc, Priority, Role, unix_ms};
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

/// What members see of the incident run in `record`'s channel at
/// `now_unix_ms`, if it runs one: its state and every agency that took
/// part (the home first; those removed when it closed included).
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
        id: record.id.clone(),
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
    })
}

/// The incident's channel and record, by `home/name` or (this org's) `name`.
fn incident(shared: &ApiContext, given: &str) -> Result<(ChannelId, ChannelRecord), ApiError> {
    let id = existing_channel(shared, given).map_err(|_| {
        ApiError::NotFound(format!(
            "no incident {given} on this node (samband incident list shows them)"
        ))
    })?;
    let record = shared
        .store
        .channel(&id)?
        .filter(|r| r.incident.is_some())
        .ok_or_else(|| ApiError::FailedPrecondition(format!("channel {id} runs no incident")))?;
    Ok((id, record))
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
            body: prost::Message::decode(r.body.as_slice()).ok()?,
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

/// Sets (or removes) entry `body.key` of this org as `member`.
async fn state_entry(
    shared: &ApiContext,
    member: &Member,
    channel: ChannelId,
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
    let exercise = shared
        .store
        .channel(&channel)?
        .and_then(|r| r.incident)
        .is_some_and(|i| i.exercise);
    let stated = stated(&stored.envelope)
        .ok_or_else(|| ApiError::Internal("the stored entry does not read back".into()))?;
    Ok(entry_message(&stated, exercise))
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
        if member.role != Role::Admin {
            return Err(ApiError::PermissionDenied(format!(
                "opening and closing incidents needs the admin role; {} is a member",
                member.name
            )));
        }
        let actor = Actor::Member(member.name.to_string());
        Ok((member, actor))
    }

    fn info_now(&self, record: &ChannelRecord) -> Result<proto::IncidentInfo, ApiError> {
        info(record, unix_ms())
            .ok_or_else(|| ApiError::Internal("the incident's record has no incident".into()))
    }
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
        let orgs = super::admin::partners(&self.shared, &req.with)?;
        let record = super::messaging::create_channel(&self.shared, &member, &req.name)?;
        let channel = ChannelId::parse(&record.id).map_err(ApiError::from)?;
        let incident = Incident {
            name: req.name.clone(),
            exercise: req.exercise,
            opened_unix_ms: now,
            until_unix_ms: req.until_unix_ms,
            closed_unix_ms: 0,
        };
        let change = RosterChange::OpenIncident { orgs, incident };
        let record = self
            .shared
            .writer
            .roster(channel.clone(), change, actor)
            .await
            .map_err(ApiError::from)?;
        self.fed.rehello();
        tracing::info!(%channel, exercise = req.exercise, with = ?req.with, "incident opened");
        Ok(Response::new(self.info_now(&record)?))
    }

    async fn close_incident(
        &self,
        request: Request<proto::CloseIncidentRequest>,
    ) -> Result<Response<proto::IncidentInfo>, Status> {
        let (_, actor) = self.operator(&request)?;
        let (channel, record) = incident(&self.shared, &request.get_ref().incident)?;
        if record.home != self.shared.org.as_str() {
            return Err(ApiError::PermissionDenied(format!(
                "incident {channel} is run by {}; only its home closes it",
                record.home
            ))
            .into());
        }
        let change = RosterChange::CloseIncident {
            at_unix_ms: unix_ms(),
        };
        let record = self
            .shared
            .writer
            .roster(channel.clone(), change, actor)
            .await
            .map_err(ApiError::from)?;
        self.fed.rehello();
        tracing::info!(%channel, "incident closed");
        Ok(Response::new(self.info_now(&record)?))
    }

    async fn list_incidents(
        &self,
        request: Request<proto::ListIncidentsRequest>,
    ) -> Result<Response<proto::ListIncidentsResponse>, Status> {
        caller(&request, &self.shared)?;
        let now = unix_ms();
        let incidents = self
            .shared
            .store
            .channels()
            .map_err(ApiError::from)?
            .iter()
            .filter_map(|r| info(r, now))
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
        let (channel, _) = incident(&self.shared, &req.incident)?;
        let body = PictureBody {
            key: req.key,
            kind: req.kind,
            status: req.status,
            geometry: req.geometry,
            fields: req.fields,
            removed: false,
        };
        Ok(Response::new(
            state_entry(&self.shared, &member, channel, body).await?,
        ))
    }

    async fn remove_entry(
        &self,
        request: Request<proto::RemoveEntryRequest>,
    ) -> Result<Response<proto::PictureEntry>, Status> {
        let member = caller(&request, &self.shared)?;
        let req = request.into_inner();
        own_entry(&self.shared, &req.owner, &req.key)?;
        let (channel, _) = incident(&self.shared, &req.incident)?;
        let picture = picture_of(&self.shared, &channel)?;
        let Some(held) = picture
            .get(self.shared.org.as_str(), &req.key)
            .filter(|s| !s.body.removed)
        else {
            return Err(ApiError::NotFound(format!(
                "{} has no entry {} in {channel}'s picture",
                self.shared.org, req.key
            ))
            .into());
        };
        let body = PictureBody {
            key: req.key,
            kind: held.body.kind.clone(),
            removed: true,
            ..Default::default()
        };
        Ok(Response::new(
            state_entry(&self.shared, &member, channel, body).await?,
        ))
    }

    async fn import_cap(
        &self,
        request: Request<proto::ImportCapRequest>,
    ) -> Result<Response<proto::ImportCapResponse>, Status> {
        caller(&request, &self.shared)?;
        Err(Status::unimplemented("CAP import is not built yet"))
    }

    async fn export_cap(
        &self,
        request: Request<proto::ExportCapRequest>,
    ) -> Result<Response<proto::ExportCapResponse>, Status> {
        caller(&request, &self.shared)?;
        Err(Status::unimplemented("CAP export is not built yet"))
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
