//! `samband.v1.Admin`: what operators do. Admin role only.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::ApiError;
use super::context::ReloadError;
use super::messaging::{caller, channel_message};
use crate::audit::Actor;
use crate::engine::{RevokeError, RosterChange};
use crate::federation::{self, Federation, FederationError};
use crate::model::MemberName;
use crate::model::{ChannelId, OrgId};
use crate::proto::{self, admin_server};
use crate::rules::History;

#[derive(Debug)]
pub(crate) struct Admin {
    shared: Arc<ApiContext>,
    fed: Arc<Federation>,
}

/// How long `peer remove --unshare` waits for the partner to acknowledge
/// the roster changes that remove it, before it stops trusting it.
const REMOVAL_NOTICE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl From<FederationError> for ApiError {
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::Store(e) => ApiError::from(e),
            FederationError::Pki(e) => ApiError::Internal(e.to_string()),
            FederationError::UnknownPeer(_) => ApiError::NotFound(e.to_string()),
            FederationError::StillShared { .. } => ApiError::FailedPrecondition(e.to_string()),
            other => ApiError::InvalidArgument(other.to_string()),
        }
    }
}

impl From<RevokeError> for ApiError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::NoneIssued(_) => ApiError::NotFound(e.to_string()),
            RevokeError::Operator(_) => ApiError::FailedPrecondition(e.to_string()),
            RevokeError::Pki(_) | RevokeError::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// The partners named in `given`, each with its pinned message-signing
/// key, to share with; all checked before any is used, so that a typo
/// shares with nobody rather than with some.
pub(super) fn partners(
    api: &ApiContext,
    given: &[String],
) -> Result<Vec<(OrgId, Vec<u8>)>, ApiError> {
    if given.is_empty() {
        return Err(ApiError::InvalidArgument(
            "name at least one org to share with".into(),
        ));
    }
    let mut shares: Vec<(OrgId, Vec<u8>)> = Vec::new();
    for given in given {
        let org = OrgId::parse(given)?;
        if org == api.org {
            return Err(ApiError::InvalidArgument(format!(
                "{org} is this org; a channel is always shared with its home"
            )));
        }
        let Some(peer) = api.store.peer(&org)? else {
            // A short name of a partner ("rescue" for rescue.example).
            let meant: Vec<String> = api
                .store
                .peers()?
                .into_iter()
                .map(|p| p.org)
                .filter(|p| p.starts_with(&format!("{org}.")))
                .collect();
            let hint = match meant.as_slice() {
                [one] => format!("; did you mean {one}?"),
                _ => "; import its trust bundle first (samband peer add)".to_owned(),
            };
            return Err(ApiError::FailedPrecondition(format!(
                "{org} is not a configured peer{hint}"
            )));
        };
        if !shares.iter().any(|(o, _)| *o == org) {
            shares.push((org, peer.signing_key));
        }
    }
    Ok(shares)
}

/// Accepts an offered channel (audited as `channel.accepted`) and tells
/// the partners; the channel's record after it.
pub(super) async fn accept(
    api: &ApiContext,
    fed: &Federation,
    channel: ChannelId,
    actor: Actor,
) -> Result<proto::ChannelRecord, ApiError> {
    let record = api.writer.accept(channel.clone(), actor).await?;
    fed.rehello();
    tracing::info!(%channel, "channel accepted");
    Ok(record)
}

/// Revokes every certificate issued to `member` (audited as
/// `member.revoked`), ending their open calls; all their revocations.
pub(super) fn revoke(
    api: &ApiContext,
    member: &MemberName,
    actor: &Actor,
) -> Result<Vec<crate::store::Revoked>, ApiError> {
    let revoked = crate::engine::revoke_member(&api.pki, &api.store, member, actor)?;
    api.revocations.add(&revoked);
    tracing::info!(%member, certificates = revoked.len(), "member revoked");
    Ok(revoked)
}

impl Admin {
    pub(crate) fn new(shared: Arc<ApiContext>, fed: Arc<Federation>) -> Self {
        Self { shared, fed }
    }

    /// The calling admin, as the audit log names them; refused unless admin.
    fn operator<T>(&self, request: &Request<T>) -> Result<Actor, ApiError> {
        let member = caller(request, &self.shared)?;
        super::messaging::admin_only(&member, "this")?;
        Ok(Actor::Member(member.name.to_string()))
    }

    fn home_channel(&self, given: &str) -> Result<ChannelId, ApiError> {
        Ok(ChannelId::parse_or_local(given, &self.shared.org)?)
    }

    fn org(given: &str) -> Result<OrgId, ApiError> {
        Ok(OrgId::parse(given)?)
    }

    /// Has the writer change the roster of a channel homed here.
    async fn change_roster(
        &self,
        channel: &ChannelId,
        change: RosterChange,
        actor: Actor,
    ) -> Result<proto::ChannelRecord, ApiError> {
        Ok(self
            .shared
            .writer
            .roster(channel.clone(), change, actor)
            .await?)
    }
}

#[tonic::async_trait]
impl admin_server::Admin for Admin {
    async fn export_trust(
        &self,
        request: Request<proto::ExportTrustRequest>,
    ) -> Result<Response<proto::TrustBundle>, Status> {
        self.operator(&request)?;
        let bundle = self
            .fed
            .trust_bundle()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Response::new(proto::TrustBundle {
            text: bundle.to_text(),
            fingerprint: bundle.fingerprint(),
        }))
    }

    async fn add_peer(
        &self,
        request: Request<proto::AddPeerRequest>,
    ) -> Result<Response<proto::Peer>, Status> {
        let actor = self.operator(&request)?;
        let req = request.into_inner();
        let endpoint = (!req.endpoint.is_empty()).then_some(req.endpoint.as_str());
        let accept = proto::AcceptPolicy::try_from(req.accept).unwrap_or(proto::AcceptPolicy::Auto);
        let record = federation::peer_record(
            &self.shared.org,
            &req.bundle,
            &req.fingerprint,
            endpoint,
            accept,
        )
        .map_err(ApiError::from)?;
        let org = record.org.clone();
        self.fed.add_peer(record, &actor).map_err(ApiError::from)?;
        let peer = self
            .fed
            .peers()
            .map_err(ApiError::from)?
            .into_iter()
            .find(|p| p.org == org);
        peer.map(Response::new)
            .ok_or_else(|| ApiError::Internal("peer vanished after adding".into()).into())
    }

    async fn remove_peer(
        &self,
        request: Request<proto::RemovePeerRequest>,
    ) -> Result<Response<proto::RemovePeerResponse>, Status> {
        let actor = self.operator(&request)?;
        let org = Self::org(&request.get_ref().org)?;
        if request.get_ref().unshare {
            let mut removals = Vec::new();
            for id in self
                .fed
                .shared_from_here_with(&org)
                .map_err(ApiError::from)?
            {
                let channel = ChannelId::parse(&id).map_err(ApiError::from)?;
                let change = RosterChange::Unshare { org: org.clone() };
                let record = self.change_roster(&channel, change, actor.clone()).await?;
                tracing::info!(%channel, %org, "channel unshared: the peer is being removed");
                removals.push((channel, record.roster_seq));
            }
            // Give the partner a moment to learn of its removal, so that its
            // copies become read-only instead of taking posts that go nowhere.
            let told = self
                .fed
                .told_of(&org, &removals, REMOVAL_NOTICE_WAIT)
                .await
                .map_err(ApiError::from)?;
            if !told {
                tracing::warn!(%org, "the partner did not confirm its removal in time; its copies stay writable there until it links again, which it no longer can");
            }
        }
        self.fed.remove_peer(&org, &actor).map_err(ApiError::from)?;
        Ok(Response::new(proto::RemovePeerResponse {}))
    }

    async fn list_peers(
        &self,
        request: Request<proto::ListPeersRequest>,
    ) -> Result<Response<proto::ListPeersResponse>, Status> {
        self.operator(&request)?;
        Ok(Response::new(proto::ListPeersResponse {
            peers: self.fed.peers().map_err(ApiError::from)?,
        }))
    }

    async fn share_channel(
        &self,
        request: Request<proto::ShareChannelRequest>,
    ) -> Result<Response<proto::Channel>, Status> {
        let actor = self.operator(&request)?;
        let req = request.into_inner();
        let channel = self.home_channel(&req.channel)?;
        if req.orgs.is_empty() {
            return Err(
                ApiError::InvalidArgument("name at least one org to share with".into()).into(),
            );
        }
        let shares = partners(&self.shared, &req.orgs)?;
        let history = match proto::ShareHistory::try_from(req.history) {
            Ok(proto::ShareHistory::Unspecified) => None,
            Ok(proto::ShareHistory::All) => Some(History::All),
            Ok(proto::ShareHistory::FromNow) => Some(History::FromNow),
            Err(_) => {
                return Err(ApiError::InvalidArgument(format!(
                    "unknown history {}; use SHARE_HISTORY_ALL or SHARE_HISTORY_FROM_NOW",
                    req.history
                ))
                .into());
            }
        };
        let change = RosterChange::Share {
            orgs: shares,
            history,
        };
        let record = self.change_roster(&channel, change, actor.clone()).await?;
        tracing::info!(%channel, orgs = ?req.orgs, "channel shared");
        Ok(Response::new(channel_message(record)))
    }

    async fn unshare_channel(
        &self,
        request: Request<proto::UnshareChannelRequest>,
    ) -> Result<Response<proto::Channel>, Status> {
        let actor = self.operator(&request)?;
        let req = request.into_inner();
        let channel = self.home_channel(&req.channel)?;
        let org = Self::org(&req.org)?;
        let change = RosterChange::Unshare { org: org.clone() };
        let record = self.change_roster(&channel, change, actor.clone()).await?;
        tracing::info!(%channel, %org, "channel unshared");
        Ok(Response::new(channel_message(record)))
    }

    async fn accept_channel(
        &self,
        request: Request<proto::AcceptChannelRequest>,
    ) -> Result<Response<proto::Channel>, Status> {
        let actor = self.operator(&request)?;
        let channel = ChannelId::parse(&request.get_ref().channel).map_err(ApiError::from)?;
        let record = accept(&self.shared, &self.fed, channel, actor).await?;
        Ok(Response::new(channel_message(record)))
    }

    async fn revoke_member(
        &self,
        request: Request<proto::RevokeMemberRequest>,
    ) -> Result<Response<proto::RevokeMemberResponse>, Status> {
        let actor = self.operator(&request)?;
        let member = MemberName::parse(&request.get_ref().member).map_err(ApiError::from)?;
        let revoked = revoke(&self.shared, &member, &actor)?;
        Ok(Response::new(proto::RevokeMemberResponse {
            certificates: revoked
                .into_iter()
                .map(|r| proto::RevokedCertificate {
                    member: r.member,
                    serial: r.serial,
                    revoked_at: r.at,
                })
                .collect(),
        }))
    }

    async fn reload(
        &self,
        request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let actor = self.operator(&request)?;
        let cert = super::reload(&self.shared, &self.fed, &actor).map_err(|e| match e {
            // Unreadable or mismatched files: the operator can fix those.
            ReloadError::Pki(e) => ApiError::FailedPrecondition(format!("reload failed: {e}")),
            other => ApiError::Internal(format!("reload failed: {other}")),
        })?;
        Ok(Response::new(proto::ReloadResponse {
            node_cert_serial: cert.serial,
            node_cert_not_after: crate::model::rfc3339(cert.not_after),
        }))
    }

    type ExportAuditStream = ReceiverStream<Result<proto::AuditEntry, Status>>;

    async fn export_audit(
        &self,
        request: Request<proto::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        self.operator(&request)?;
        let mut from = request.get_ref().from_seq;
        let store = self.shared.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Read in chunks off the runtime, send between them: a slow reader
        // holds only this task, not a blocking thread.
        self.shared.runtime.spawn(async move {
            const CHUNK: usize = 256;
            loop {
                let store = store.clone();
                let chunk = tokio::task::spawn_blocking(move || {
                    store
                        .audit_entries(from)
                        .take(CHUNK)
                        .collect::<Result<Vec<_>, _>>()
                })
                .await;
                let entries = match chunk {
                    Ok(Ok(entries)) => entries,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::from(ApiError::Internal(e.to_string()))))
                            .await;
                        return;
                    }
                };
                let last = entries.len() < CHUNK;
                for entry in entries {
                    from = entry.seq + 1;
                    if tx.send(Ok(entry.into())).await.is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
